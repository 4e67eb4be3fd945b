"""The whole path on a real PyMARL2: sweep -> MongoDB (nx-27017) and FileStorage -> report from either.

Slow (minutes): run with --runslow. Needs PyMARL2 (conftest's pymarl2_pristine; a copy is
installed) and nx-27017; skipped otherwise.
"""

import json

import pytest

from pymarl_nonmono import cli

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ALGS = ["nonmono_qmix", "nonmono_qmix_sarsa", "qmix"]
SHORT = ["use_cuda=False", "t_max=300", "test_interval=100", "test_nepisode=4", "log_interval=100",
         "runner_log_interval=100", "learner_log_interval=100", "batch_size=4", "buffer_size=32",
         "runner=episode", "batch_size_run=1"]


def sets(*extra):
    return [arg for item in [*SHORT, *extra] for arg in ("--set", item)]


def run_cli(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_matrix_sweep_into_mongodb_and_files_then_report_from_both(pymarl2_host, mongo_url, tmp_path, capsys, monkeypatch):
    import pymongo

    monkeypatch.delenv("PYMARL_NONMONO_MONGO_URL", raising=False)
    bench = ["bench", str(pymarl2_host), "--alg", ",".join(ALGS), "--env", "one_step_matrix_game", "--seeds", "1-3",
             *sets(), "--workers", "2", "--name", "matrix", "--mongo-url", mongo_url, "--mongo-db", "bench"]
    code, out, err = run_cli(capsys, *bench)
    assert code == 0, out + err
    assert "= 9 runs; 0 finished, 9 to run (2 workers, local)" in out and "done: 9 completed, 0 failed now" in out

    client = pymongo.MongoClient(mongo_url, serverSelectionTimeoutMS=5000)
    docs = list(client["bench"].runs.find({"config.sweep_id": "matrix"}, {"status": 1, "config": 1}))
    assert len(docs) == 9 and {d["status"] for d in docs} == {"COMPLETED"}
    assert {(d["config"]["sweep_alg"], d["config"]["seed"]) for d in docs} == {(a, s) for a in ALGS for s in (1, 2, 3)}
    assert all(client["bench"].metrics.find_one({"run_id": d["_id"], "name": "test_return_mean"}) for d in docs)
    client.close()
    configs = [json.loads(p.read_text()) for p in (pymarl2_host / "results" / "sacred").rglob("config.json")]
    assert sum(c.get("sweep_id") == "matrix" for c in configs) == 9

    code, out, _ = run_cli(capsys, "report", str(pymarl2_host), "--sweep", "matrix", "--out", str(tmp_path / "files"))
    assert code == 0
    files_md = (tmp_path / "files" / "report.md").read_text()
    code, out, _ = run_cli(capsys, "report", "--mongo-url", mongo_url, "--mongo-db", "bench", "--sweep", "matrix",
                           "--out", str(tmp_path / "mongo"))
    assert code == 0
    mongo_md = (tmp_path / "mongo" / "report.md").read_text()
    for md in (files_md, mongo_md):
        for alg in ALGS:
            assert f"| {alg} |" in md and md.split(f"| {alg} |")[1].split("\n")[0].count("| 3 |") == 1
    table = lambda md: md[md.index("| algorithm"):]
    assert table(files_md) == table(mongo_md)
    for folder in ("files", "mongo"):
        assert (tmp_path / folder / "test_return_mean_one_step_matrix_game.png").stat().st_size > 1000

    code, out, _ = run_cli(capsys, *bench)
    assert code == 0 and "9 finished, 0 to run" in out


def test_cluster_path_with_submitit_local_executor_and_a_failing_run(pymarl2_host, mongo_url, tmp_path, capsys, monkeypatch):
    pytest.importorskip("submitit", reason="submitit is not installed (pip install submitit)")
    import pymongo

    monkeypatch.delenv("PYMARL_NONMONO_MONGO_URL", raising=False)
    # qatten is StarCraft-only in PyMARL2: on the matrix game it fails at start (docs/install.md).
    code, out, err = run_cli(capsys, "bench", str(pymarl2_host), "--alg", "nonmono_qmix,qatten",
                             "--env", "one_step_matrix_game", "--seeds", "1-2", *sets(), "--workers", "2",
                             "--name", "cluster", "--executor", "submitit-local", "--timeout-min", "20",
                             "--mongo-url", mongo_url, "--mongo-db", "cluster", "--no-progress")
    assert code == 1, out + err
    assert "done: 2 completed, 2 failed now" in out
    assert "  qatten__one_step_matrix_game__seed1: KeyError: 'one_step_matrix_game'" in out
    states = [json.loads(p.read_text()) for p in (pymarl2_host / "results" / "sweeps" / "cluster" / "runs").glob("*.json")]
    assert all(s.get("job_id") for s in states)
    client = pymongo.MongoClient(mongo_url, serverSelectionTimeoutMS=5000)
    statuses = sorted((d["config"]["sweep_alg"], d["status"]) for d in client["cluster"].runs.find({}, {"status": 1, "config": 1}))
    client.close()
    assert statuses == [("nonmono_qmix", "COMPLETED")] * 2 + [("qatten", "FAILED")] * 2

    code, out, _ = run_cli(capsys, "report", "--mongo-url", mongo_url, "--mongo-db", "cluster", "--sweep", "cluster",
                           "--metric", "test_return_mean", "--out", str(tmp_path / "r"))
    assert code == 0
    assert "| qatten | – | – | 0 | 2 failed |" in out
    assert "not included: qatten seed 1: failed: KeyError: 'one_step_matrix_game'" in out
