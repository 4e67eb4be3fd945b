"""`export --format marl-eval`: the layout, checked against marl-eval's schema and loaded by marl-eval itself."""

import json

import numpy as np
import pytest

from pymarl_nonmono import cli
from pymarl_nonmono.bench import export as ex
from pymarl_nonmono.bench.report import ReportError, RunRecord

METRIC = "test_return_mean"


def record(alg, task, seed, steps, values, status="COMPLETED", suite="matrix_game"):
    r = RunRecord(f"{task}/{alg}/{seed}", alg, task, seed, status, started="2026-01-01", suite=suite)
    if steps is not None:
        r.series[METRIC] = (np.asarray(steps, dtype=float), np.asarray(values, dtype=float))
        r.metric_names = {METRIC}
    return r


def records():
    out = []
    for task, offset in (("qtran", 0.0), ("paper_b", 1.0)):
        for alg, slope in (("nonmono_qmix", 2.0), ("qmix", 1.0)):
            for seed in (1, 2, 3):
                out.append(record(alg, task, seed, [0, 50, 100, 110], [offset, offset + slope * seed / 2,
                                                                       offset + slope * seed, offset + slope * seed]))
    out = [r for r in out if (r.alg, r.env, r.seed) != ("qmix", "paper_b", 3)]
    out.append(record("qmix", "qtran", 4, [0, 100], [5, 5]))                 # no other algorithm has seed 4
    out.append(record("qmix", "paper_b", 3, [0, 50], [9, 9], status="FAILED"))  # qmix seed 3 unfinished on paper_b
    out.append(record("vdn", "qtran", 1, [0, 100], [1, 1]))                  # vdn never ran on paper_b
    return out


def test_layout_by_hand():
    export = ex.marl_eval_layout(records(), [METRIC], points=3)
    ex.check_layout(export.data, [METRIC])
    assert list(export.data) == ["matrix_game"]
    tasks = export.data["matrix_game"]
    assert sorted(tasks) == ["paper_b", "qtran"] and sorted(tasks["qtran"]) == ["nonmono_qmix", "qmix"]
    assert sorted(tasks["qtran"]["qmix"]) == ["seed_1", "seed_2"] and export.runs == 8
    run = tasks["qtran"]["nonmono_qmix"]["seed_2"]
    # Common steps 0..100 (seed 4 stops at 100 but is not exported; the grid still ends at the shortest run).
    assert [run[f"step_{k}"]["step_count"] for k in range(3)] == [0, 50, 100]
    assert run["step_1"][METRIC] == [2.0] and run["absolute_metrics"] == {METRIC: [4.0]}
    assert tasks["paper_b"]["qmix"]["seed_1"]["absolute_metrics"] == {METRIC: [2.0]}
    assert "matrix_game: algorithm vdn (not finished on every task: marl-eval needs the same everywhere)" in export.dropped
    assert "matrix_game/qtran/qmix: seeds 3, 4 (not finished by every algorithm on every task)" in export.dropped
    assert "paper_b/qmix seed 3: failed" in export.dropped


def test_layout_errors():
    with pytest.raises(ReportError, match="commas in algorithm names: 'a,b'"):
        ex.marl_eval_layout([record("a,b", "t", 1, [0, 1], [0, 1])], [METRIC])
    with pytest.raises(ReportError, match="nothing to export"):
        ex.marl_eval_layout([record("a", "t", 1, [0, 1], [0, 1], status="FAILED")], [METRIC])
    with pytest.raises(ValueError, match="numbers of runs differ"):
        data = ex.marl_eval_layout(records(), [METRIC], points=2).data
        del data["matrix_game"]["qtran"]["qmix"]["seed_1"]
        ex.check_layout(data)


def test_marl_eval_loads_the_export_and_computes_an_aggregate(tmp_path, monkeypatch):
    pytest.importorskip("marl_eval", reason="marl-eval is not installed (pip install --no-deps id-marl-eval, "
                                            "with rliable seaborn colorcet 'pandas<3')")
    from marl_eval.utils.data_processing_utils import create_matrices_for_rliable, data_process_pipeline

    data = json.loads(json.dumps(ex.marl_eval_layout(records(), [METRIC], points=3).data))  # through JSON
    processed = data_process_pipeline(raw_data=data, metrics_to_normalize=[])
    assert "extra" in processed, "marl-eval rejected the layout (it prints why and returns the input)"
    assert processed["extra"]["number_of_runs"] == 2 and processed["extra"]["number_of_steps"] == 3
    absolute, curves = create_matrices_for_rliable(processed, "matrix_game", [])
    scores = absolute[f"mean_{METRIC}"]
    # rows: seeds 1, 2; columns: tasks paper_b, qtran (hand-computed finals: offset + slope * seed).
    assert scores["qmix"] == pytest.approx(np.array([[2.0, 1.0], [3.0, 2.0]]))
    assert curves[f"mean_{METRIC}"]["nonmono_qmix"].shape == (2, 2, 3)
    try:
        from marl_eval.plotting_tools import plotting
    except Exception as exc:  # noqa: BLE001 - report what fails, whatever it is
        pytest.skip(f"marl-eval's aggregate metrics need rliable, which does not import here ({type(exc).__name__}: "
                    f"{exc}); rliable 1.2 pins arch<8 and arch 7 fails on pandas 3: pip install 'pandas<3'")
    # marl-eval asks for 50,000 resamples; 500 keep the test short and change no point estimate.
    real = plotting.rly.get_interval_estimates
    monkeypatch.setattr(plotting.rly, "get_interval_estimates", lambda d, f, reps=0, **kw: real(d, f, reps=500, **kw))
    monkeypatch.chdir(tmp_path)  # it writes aggregated_score_<metric>.csv to the working folder
    _, table, _ = plotting.aggregate_scores(absolute, METRIC, [], save_tabular_as_latex=False)
    # "estimate [CI]" strings. IQM of qmix's four finals (1, 2, 2, 3): 2; of nonmono_qmix's (2, 3, 4, 5): 3.5.
    assert table["QMIX"]["IQM"].startswith("2.0 [") and table["NONMONO_QMIX"]["IQM"].startswith("3.5 [")


def test_cli_export_from_file_storage(tmp_path, capsys):
    root = tmp_path / "host" / "results" / "sacred"
    for i, r in enumerate(records(), 1):
        folder = root / r.env / r.alg / str(i)
        folder.mkdir(parents=True)
        config = {"sweep_id": "s", "sweep_alg": r.alg, "sweep_env": r.env, "seed": r.seed, "env": r.suite}
        (folder / "config.json").write_text(json.dumps(config))
        (folder / "run.json").write_text(json.dumps({"status": r.status, "start_time": "2026-01-01T00:00:00"}))
        steps, values = r.series[METRIC]
        (folder / "metrics.json").write_text(json.dumps({METRIC: {"steps": steps.tolist(), "values": values.tolist()}}))
    out = tmp_path / "x" / "me.json"
    code = cli.main(["export", str(tmp_path / "host"), "--sweep", "s", "--format", "marl-eval", "--points", "3",
                     "--out", str(out)])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    assert f"wrote {out}: 8 runs of {METRIC}" in stdout and "not exported: matrix_game: algorithm vdn" in stdout
    assert json.loads(out.read_text()) == json.loads(json.dumps(ex.marl_eval_layout(records(), [METRIC], 3).data))
    code = cli.main(["export", str(tmp_path / "host"), "--sweep", "s", "--format", "csv"])
    _, err = capsys.readouterr()
    assert code == 2 and "invalid choice: 'csv'" in err
