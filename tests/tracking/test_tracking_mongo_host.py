"""A real PyMARL2 run recording into a real MongoDB-protocol server (nx-27017).

Needs PyMARL2 (conftest's pymarl2_pristine; a copy is installed) and nx-27017; skipped otherwise.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pymarl_nonmono import cli
from pymarl_nonmono.tracking.urls import MONGO_URL_ENV

pytestmark = pytest.mark.integration

SHORT = ["use_cuda=False", "t_max=200", "test_interval=100", "test_nepisode=4", "log_interval=100",
         "runner_log_interval=100", "learner_log_interval=100", "batch_size=4", "buffer_size=32",
         "runner=episode", "batch_size_run=1"]
PASSWORD = "hunter2-secret"


def run_main(root: Path, *with_args: str, env=None, alg="nonmono_qmix"):
    environ = {k: v for k, v in os.environ.items() if k not in (MONGO_URL_ENV, "PYMARL_NONMONO_MONGO_DB")}
    environ.update(env or {}, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "src/main.py", f"--config={alg}", "--env-config=one_step_matrix_game",
                           "with", *SHORT, *with_args], cwd=root, env=environ, capture_output=True, text=True,
                          timeout=600, stdin=subprocess.DEVNULL)


def run_dirs(root: Path, name="nonmono_qmix") -> set:
    folder = root / "results" / "sacred" / "one_step_matrix_game" / name
    return {p for p in folder.iterdir() if p.name.isdigit()} if folder.is_dir() else set()


def all_text(root: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in (root / "results").rglob("*") if p.is_file())


def test_run_records_document_metrics_and_files_in_mongodb(pymarl2_host, mongo_url, tmp_path):
    import gridfs
    import pymongo

    before = run_dirs(pymarl2_host)
    proc = run_main(pymarl2_host, "sweep_id=e2e", "sweep_alg=nonmono_qmix", "mongo_db=e2e",
                    env={MONGO_URL_ENV: mongo_url})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "recording to MongoDB at" in out and "did not answer" not in out
    assert "pymongo.command" not in out  # the driver's DEBUG chatter stays out of the console

    client = pymongo.MongoClient(mongo_url, serverSelectionTimeoutMS=5000)
    db = client["e2e"]
    docs = list(db.runs.find({"config.sweep_id": "e2e"}))
    assert len(docs) == 1
    doc = docs[0]
    assert doc["status"] == "COMPLETED" and doc["config"]["sweep_alg"] == "nonmono_qmix"
    assert {m["name"] for m in doc["info"]["metrics"]} >= {"test_return_mean", "loss_td"}
    curve = db.metrics.find_one({"run_id": doc["_id"], "name": "test_return_mean"})
    assert curve["steps"] and len(curve["steps"]) == len(curve["values"])
    assert any(name.endswith("src/main.py") for name in (f.filename for f in gridfs.GridFS(db).find()))

    (new,) = run_dirs(pymarl2_host) - before
    info = json.loads((new / "info.json").read_text())
    assert "metrics" not in info and "test_return_mean_T" in info  # the host's info record, unchanged
    files_metrics = json.loads((new / "metrics.json").read_text())
    assert files_metrics["test_return_mean"]["steps"] == curve["steps"]
    assert files_metrics["test_return_mean"]["values"] == pytest.approx(curve["values"])
    client.close()

    code = cli.main(["report", "--mongo-url", mongo_url, "--mongo-db", "e2e", "--sweep", "e2e",
                     "--out", str(tmp_path / "rep"), "--metric", "test_return_mean"])
    assert code == 0
    assert (tmp_path / "rep" / "test_return_mean_one_step_matrix_game.png").stat().st_size > 1000
    assert "| nonmono_qmix |" in (tmp_path / "rep" / "report.md").read_text()


def test_unreachable_server_one_warning_and_nothing_lost(pymarl2_host, tmp_path):
    from pymarl_nonmono.tracking.testserver import free_port

    before = run_dirs(pymarl2_host)
    url = f"mongodb://alice:{PASSWORD}@127.0.0.1:{free_port()}/"
    proc = run_main(pymarl2_host, env={MONGO_URL_ENV: url})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    warnings = [line for line in out.splitlines() if "WARNING" in line and "MongoDB" in line]
    assert len(warnings) == 1 and "FileStorage only" in warnings[0], warnings
    assert PASSWORD not in out and "alice" not in out
    (new,) = run_dirs(pymarl2_host) - before
    assert json.loads((new / "run.json").read_text())["status"] == "COMPLETED"
    assert "test_return_mean" in json.loads((new / "metrics.json").read_text())
    assert "test_return_mean" in json.loads((new / "info.json").read_text())
    assert PASSWORD not in all_text(pymarl2_host)


def test_credentials_in_the_config_stop_the_run_before_anything_is_recorded(pymarl2_host):
    before = run_dirs(pymarl2_host)
    proc = run_main(pymarl2_host, f"mongo_url=mongodb://alice:{PASSWORD}@127.0.0.1:1/")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "pymarl-nonmono: mongo_url=mongodb://***@127.0.0.1:1/ carries a user, password" in out
    assert PASSWORD not in out and "Traceback" not in out
    assert run_dirs(pymarl2_host) == before


def test_stock_algorithm_gets_metrics_and_mongo_off_records_files_only(pymarl2_host, mongo_url):
    import pymongo

    before = run_dirs(pymarl2_host, "qmix_env=8_adam_td_lambda")
    proc = run_main(pymarl2_host, "mongo_url=off", "mongo_db=off_check", alg="qmix", env={MONGO_URL_ENV: mongo_url})
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    (new,) = run_dirs(pymarl2_host, "qmix_env=8_adam_td_lambda") - before
    assert {"test_return_mean", "loss_td", "epsilon"} <= set(json.loads((new / "metrics.json").read_text()))
    client = pymongo.MongoClient(mongo_url, serverSelectionTimeoutMS=5000)
    assert client["off_check"].runs.count_documents({}) == 0
    client.close()
