"""The optimum-recovery table on hand-made run records."""

import math

import numpy as np
import pytest

from pymarl_nonmono.bench import recovery, report
from pymarl_nonmono.bench.report import RunRecord


def record(alg, seed, optimal, igm=None, error=None, status="COMPLETED", env="qtran", start="2026-01-01",
           joint=None, worst=None):
    r = RunRecord(f"run-{alg}-{seed}", alg, env, seed, status, start)
    steps = np.arange(len(optimal)) * 100.0
    r.series[recovery.OPTIMAL] = (steps, np.asarray(optimal, dtype=float))
    if joint is not None:
        r.series[recovery.JOINT_GREEDY_OPTIMAL] = (steps, np.asarray(joint, dtype=float))
    if worst is not None:
        r.series[recovery.WORST_GREEDY] = (steps[-1:], np.asarray([worst], dtype=float))
    if igm is not None:
        r.series[recovery.IGM_CONSISTENT] = (steps[-1:], np.asarray([igm], dtype=float))
    if error is not None:
        r.series[recovery.PAYOFF_ERROR] = (steps[-1:], np.asarray([error], dtype=float))
    r.metric_names = set(r.series)
    return r


@pytest.mark.parametrize("values, expected", [
    ([0, 0, 1, 1], 200.0),
    ([1, 1, 1], 0.0),
    ([0, 1, 0, 1, 1], 300.0),   # left the optimum and came back: counts from the last arrival
    ([1, 1, 0], None),          # ended elsewhere
    ([0, 0.5, 1], 200.0),       # 0.5: one of two greedy test episodes optimal is not recovered
    ([], None),
])
def test_recovery_step(values, expected):
    steps = np.arange(len(values)) * 100.0
    assert recovery.recovery_step(steps, np.asarray(values, dtype=float)) == expected


def test_recovery_step_sorts_by_step():
    assert recovery.recovery_step(np.array([200.0, 0.0, 100.0]), np.array([1.0, 0.0, 1.0])) == 100.0


def test_rows_count_recovered_runs_and_summarise_diagnostics():
    records = [
        record("nm", 1, [0, 1, 1], igm=1, error=0.1),
        record("nm", 2, [0, 0, 1], igm=1, error=0.3),
        record("nm", 3, [0, 0, 0], igm=0, error=12.0),
        record("nm", 4, [0, 1], status="FAILED"),
        record("qmix", 1, [0, 0, 0]),
        record("qmix", 2, [1, 1, 1]),
        record("nm", 1, [0, 0, 0], env="climbing"),
    ]
    tables = recovery.recovery_rows(records)
    assert list(tables) == ["climbing", "qtran"]
    nm, qmix = tables["qtran"]
    assert (nm.alg, nm.n, nm.recovered, nm.steps_to_recover) == ("nm", 3, 2, [100.0, 200.0])
    assert nm.igm == (2, 3)
    mean, half, n = nm.payoff_error
    assert n == 3 and mean == pytest.approx(12.4 / 3) and half > 0
    assert [r.seed for r in nm.excluded] == [4]
    assert (qmix.n, qmix.recovered, qmix.igm) == (2, 1, (0, 0))
    assert math.isnan(qmix.payoff_error[0])
    cells = nm.cells()
    assert cells[1] == "2/3 (0.21–0.94)" and cells[3] == "150 [100–200]" and cells[4] == "2/3" and cells[7] == "1 failed"
    assert qmix.cells()[2] == "–" and qmix.cells()[4] == "–" and qmix.cells()[5] == "–" and qmix.cells()[6] == "–"
    md = recovery.markdown(tables, "FileStorage x", "s")
    assert "## qtran" in md and "| nm | 2/3 (0.21–0.94) |" in md and "nm seed 4: failed" in md


RUNS = [("nm", 1, [0, 1]), ("nm", 2, [0, 0]), ("qmix", 1, [0, 0])]


def run_metrics(alg, seed, optimal):
    metrics = {recovery.OPTIMAL: {"steps": [0, 100], "values": optimal}}
    if alg == "nm":
        metrics[recovery.PAYOFF_ERROR] = {"steps": [100], "values": [0.5 * seed]}
    return metrics


def run_config(alg, seed):
    return {"sweep_id": "s", "sweep_alg": alg, "sweep_env": "qtran", "seed": seed}


def check_cli_table(out):
    assert "| nm | 1/2 (0.09–0.91) | – | 100 [100–100] | – | – | 0.750 ± 3.176 |  |" in out
    assert "| qmix | 0/1 (0.00–0.79) | – | – | – | – | – |  |" in out


def test_cli_report_recovery_from_file_storage(tmp_path, capsys):
    import json

    pytest.importorskip("matplotlib", reason="plots need matplotlib (pip install matplotlib)")
    from pymarl_nonmono import cli

    root = tmp_path / "host" / "results" / "sacred"
    for i, (alg, seed, optimal) in enumerate(RUNS, 1):
        folder = root / "matrix_game" / alg / str(i)
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps(run_config(alg, seed)))
        (folder / "run.json").write_text(json.dumps({"status": "COMPLETED", "start_time": f"2026-01-0{i}"}))
        (folder / "metrics.json").write_text(json.dumps(run_metrics(alg, seed, optimal)))
    code = cli.main(["report", str(tmp_path / "host"), "--sweep", "s", "--recovery", "--out", str(tmp_path / "r")])
    out, err = capsys.readouterr()
    assert code == 0, err
    check_cli_table(out)
    assert "Optimum recovery" in (tmp_path / "r" / "recovery.md").read_text()
    assert (tmp_path / "r" / f"{recovery.OPTIMAL}_qtran.png").is_file()


def test_cli_report_recovery_from_mongodb(tmp_path, mongo_url, capsys):
    import datetime as dt

    pytest.importorskip("matplotlib", reason="plots need matplotlib (pip install matplotlib)")
    import pymongo

    from pymarl_nonmono import cli

    client = pymongo.MongoClient(mongo_url, serverSelectionTimeoutMS=5000)
    db = client["recoverytest"]
    for i, (alg, seed, optimal) in enumerate(RUNS, 1):
        db.runs.insert_one({"_id": i, "config": run_config(alg, seed), "status": "COMPLETED",
                            "start_time": dt.datetime(2026, 1, i), "heartbeat": dt.datetime(2026, 1, i)})
        for name, series in run_metrics(alg, seed, optimal).items():
            db.metrics.insert_one({"run_id": i, "name": name, **series})
    client.close()
    code = cli.main(["report", "--mongo-url", mongo_url, "--mongo-db", "recoverytest", "--sweep", "s", "--recovery",
                     "--out", str(tmp_path / "m")])
    out, err = capsys.readouterr()
    assert code == 0, err
    check_cli_table(out)


def test_recovery_after_a_report_on_another_metric_counts_every_run():
    # report --recovery --metric X classifies the same records twice: once by X, once by
    # test_optimal_mean. A run without X must not stay excluded from the second.
    from pymarl_nonmono.bench.report import classify

    records = [record("nm", 1, [0, 1]), record("nm", 2, [0, 0])]
    records[0].series["test_return_mean"] = (np.array([0.0]), np.array([8.0]))
    classify(records, "test_return_mean")
    assert records[1].note == "finished without test_return_mean"
    (nm,) = recovery.recovery_rows(records)["qtran"]
    assert (nm.n, nm.recovered, nm.excluded) == (2, 1, [])


def test_joint_greedy_recovery_and_agents_on_their_worst_action_are_counted_where_recorded():
    # The mirrored fit: the mixer's joint argmax reaches the optimum, the agents do not.
    records = [record("nm", s, [0, 0], joint=[0, 1], worst=w) for s, w in ((1, 1.0), (2, 0.5))]
    records += [record("fixed", 1, [0, 1], joint=[1, 1], worst=0.0)]
    fixed, nm = recovery.recovery_rows(records)["qtran"]
    assert (nm.recovered, nm.joint_greedy) == (0, (2, 2)) and nm.worst_greedy[0] == pytest.approx(0.75)
    assert nm.cells()[1:3] == ["0/2 (0.00–0.66)", "2/2 (0.34–1.00)"] and nm.cells()[5] == "0.75"
    assert (fixed.recovered, fixed.joint_greedy) == (1, (1, 1))


def _wilson_by_bisection(k, n, z=1.959963984540054):
    """The Wilson interval from its definition: the rates p with |k/n - p| <= z * sqrt(p (1 - p) / n)."""
    def inside(p):
        return abs(k / n - p) <= z * math.sqrt(p * (1 - p) / n)

    def edge(lo, hi):  # inside(lo) != inside(hi)
        for _ in range(200):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if inside(mid) == inside(lo) else (lo, mid)
        return (lo + hi) / 2

    return (edge(0.0, k / n) if k else 0.0), (edge(k / n, 1.0) if k < n else 1.0)


@pytest.mark.parametrize("k,n", [(0, 20), (3, 20), (10, 20), (17, 20), (20, 20), (1, 1), (2, 7)])
def test_rate_interval_is_the_wilson_interval(k, n):
    low, high = report.rate_ci(k, n)
    ref_low, ref_high = _wilson_by_bisection(k, n)
    assert low == pytest.approx(ref_low, abs=1e-9) and high == pytest.approx(ref_high, abs=1e-9)
    assert 0.0 <= low <= k / n <= high <= 1.0


def test_rate_interval_known_values_and_bad_counts():
    assert report.rate_ci(0, 20) == pytest.approx((0.0, 0.1611), abs=1e-4)     # z^2 / (n + z^2)
    assert report.rate_ci(10, 20) == pytest.approx((0.2993, 0.7007), abs=1e-4)
    for k, n in ((3, 2), (-1, 5), (0, 0), (1.5, 4)):
        with pytest.raises(ValueError, match="rate_ci"):
            report.rate_ci(k, n)
