"""Report numbers on hand-made Sacred records, from FileStorage folders and from MongoDB (nx-27017)."""

import datetime as dt
import json
import math

import numpy as np
import pytest

from pymarl_nonmono import cli
from pymarl_nonmono.bench import report as rep
from pymarl_nonmono.tracking.urls import resolve

METRIC = "test_return_mean"


def needs_rliable():
    from pymarl_nonmono.bench import MissingDependency, stats

    try:
        stats.rliable()
    except MissingDependency as exc:
        pytest.skip(str(exc))
NOW = dt.datetime.utcnow()


def run(alg, seed, steps=None, values=None, status="COMPLETED", env="m", sweep="s", start="2026-01-01T00:00:00",
        info_only=False, fail=None, heartbeat=None):
    return dict(alg=alg, seed=seed, steps=steps, values=values, status=status, env=env, sweep=sweep, start=start,
                info_only=info_only, fail=fail, heartbeat=heartbeat or NOW.isoformat())


def lin(k, steps):
    return [k * s / 100 for s in steps]


RUNS = [
    run("A", 1, [0, 100, 200, 300], lin(1, [0, 100, 200, 300])),
    run("A", 2, [0, 100, 200, 300], lin(2, [0, 100, 200, 300])),
    run("A", 3, [0, 100, 200, 300], lin(3, [0, 100, 200, 300])),
    run("A", 4, [0, 100], [0, 1], status="FAILED", fail=["Traceback (most recent call last):\n", "RuntimeError: boom\n"]),
    run("A", 5),  # finished, but never logged the metric
    run("B", 1, [0, 100, 200, 300, 400], [5] * 5, start="2026-01-02T00:00:00"),
    run("B", 1, [0, 100], [99, 99], start="2026-01-01T00:00:00"),  # an older run of the same seed
    run("B", 2, [0, 150, 250], [7, 7, 7]),
    run("B", 3, [0], [1], status="RUNNING", heartbeat=(NOW - dt.timedelta(hours=2)).isoformat()),
    run("C", 1, [0, 250], [1, 3], info_only=True),  # recorded before patch 0005: info only
    run("A", 1, [0, 100], [50, 50], sweep="other"),
    run("A", 1, [0, 100], [0, 0], env="n", status="FAILED", fail="KeyError: 'n'"),
    # Stopped before the finished C 1 was started: an attempt re-run to the end, not an open run.
    run("C", 1, [0, 50], [0, 0], status="INTERRUPTED", start="2025-12-31T00:00:00"),
    # Stopped after B 2 finished: a later attempt that did not end, still reported as unfinished.
    run("B", 2, [0, 50], [0, 0], status="INTERRUPTED", start="2026-01-05T00:00:00"),
]


def config(r):
    return {"sweep_id": r["sweep"], "sweep_alg": r["alg"], "sweep_env": r["env"], "seed": r["seed"], "name": "x",
            "env": "e", "env_args": {"map_name": r["env"]}}


def info(r):
    if r["steps"] is None:
        return {"episode": [1], "episode_T": [1]}
    return {METRIC: r["values"], f"{METRIC}_T": r["steps"]}


def write_file_storage(root):
    for i, r in enumerate(RUNS, 1):
        folder = root / r["env"] / r["alg"] / str(i)
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps(config(r)))
        run_json = {"status": r["status"], "start_time": r["start"], "heartbeat": r["heartbeat"]}
        if r["fail"]:
            run_json["fail_trace"] = r["fail"]
        (folder / "run.json").write_text(json.dumps(run_json))
        (folder / "info.json").write_text(json.dumps(info(r)))
        if r["steps"] is not None and not r["info_only"]:
            (folder / "metrics.json").write_text(json.dumps(
                {METRIC: {"steps": r["steps"], "values": r["values"], "timestamps": []},
                 "loss_td": {"steps": [1], "values": [0.5], "timestamps": []}}))
    (root / "_sources").mkdir()


def write_mongo(url, db_name):
    import pymongo

    client = pymongo.MongoClient(url, serverSelectionTimeoutMS=5000)
    db = client[db_name]
    for i, r in enumerate(RUNS, 1):
        doc = {"_id": i, "config": config(r), "status": r["status"], "start_time": dt.datetime.fromisoformat(r["start"]),
               "heartbeat": dt.datetime.fromisoformat(r["heartbeat"]), "info": info(r)}
        if r["fail"]:
            doc["fail_trace"] = r["fail"] if isinstance(r["fail"], list) else [r["fail"]]
        db.runs.insert_one(doc)
        if r["steps"] is not None and not r["info_only"]:
            db.metrics.insert_one({"run_id": i, "name": METRIC, "steps": r["steps"], "values": r["values"]})
            db.metrics.insert_one({"run_id": i, "name": "loss_td", "steps": [1], "values": [0.5]})
    client.close()


def check(report):
    envs = {e.env: e for e in report.envs}
    assert set(envs) == {"m", "n"}
    m = envs["m"]
    assert m.horizon == (0.0, 250.0)
    rows = {r.alg: r for r in m.rows}
    # Finals at step 250: A's runs are k * 2.5 (k = 1, 2, 3), B's 5 and 7, C's 3 (hand-computed).
    assert rows["A"].n == 3 and list(rows["A"].finals) == pytest.approx([2.5, 5.0, 7.5])
    iqm = rows["A"].final["IQM"]
    assert (iqm.point, iqm.low, iqm.high) == (pytest.approx(5.0), pytest.approx(2.5), pytest.approx(7.5))
    assert rows["A"].auc["IQM"].point == pytest.approx(2.5) and rows["A"].final["median"].point == pytest.approx(5.0)
    b = rows["B"].final["IQM"]
    assert (b.point, b.low, b.high) == (pytest.approx(6.0), pytest.approx(5.0), pytest.approx(7.0)) and rows["B"].n == 2
    c = rows["C"].final["IQM"]
    # One run: its value, and no interval (every resample of one run is that run).
    assert c.point == pytest.approx(3.0) and not c.has_interval and rows["C"].auc["IQM"].point == pytest.approx(2.0)
    assert iqm.has_interval and b.has_interval
    notes = {(r.alg, r.seed): r.note for r in m.excluded}
    assert notes[("C", 1)].startswith("superseded by a newer finished run of the same seed")
    assert notes[("C", 1)].endswith("; was unfinished: INTERRUPTED")
    assert notes[("B", 2)] == "unfinished: INTERRUPTED"
    assert notes[("A", 4)] == "failed: RuntimeError: boom"
    assert notes[("A", 5)] == f"finished without {METRIC}"
    assert notes[("B", 1)].startswith("superseded by a newer finished run of the same seed")
    assert notes[("B", 3)].startswith("unfinished: RUNNING but silent (last heartbeat")
    curves = {c.alg: c for c in m.curves}
    assert curves["A"].steps[-1] == 300 and curves["B"].steps[-1] == 250 and curves["B"].n == 2
    for curve in m.curves:  # the band never leaves the values the runs took
        assert np.all(curve.low >= curve.values.min(axis=0) - 1e-12) and np.all(curve.high <= curve.values.max(axis=0) + 1e-12)
        assert np.all(curve.low <= curve.centre + 1e-12) and np.all(curve.centre <= curve.high + 1e-12)
    # P(A > B): of A's (2.5, 5, 7.5) against B's (5, 7), 2 wins and 1 tie in 6 pairs.
    assert m.comparison.improvement[("A", "B")].point == pytest.approx(2.5 / 6)
    assert m.comparison.improvement[("B", "C")].point == pytest.approx(1.0)
    table = report.table(m)
    assert "| A | 5.000 [2.500, 7.500] | 2.500 [1.250, 3.750] | 3 | 1 failed, 1 finished without test_return_mean |" in table
    assert "| B | 6.000 [5.000, 7.000] | 6.000 [5.000, 7.000] | 2 | 1 superseded, 2 unfinished |" in table
    assert "| C | 3.000 [no interval: 1 run] | 2.000 [no interval: 1 run] | 1 | 1 superseded |" in table
    assert "| A | – | – | 0 | 1 failed |" in report.table(envs["n"])
    assert report.overall is None  # only one environment has finished runs
    return table


def test_file_storage_report(tmp_path):
    pytest.importorskip("matplotlib", reason="plots need matplotlib (pip install matplotlib)")
    needs_rliable()
    write_file_storage(tmp_path / "sacred")
    records = rep.load_file_storage([tmp_path / "sacred"], "s")
    assert len(records) == 13
    assert rep.choose_metric(records, None) == METRIC
    report = rep.build_report(records, METRIC, "files", "s", points=50)
    check(report)
    pngs = rep.plot(report, tmp_path / "out", pdf=True)
    assert [p.name for p in pngs] == [f"{METRIC}_m.png", f"{METRIC}_m.pdf", f"{METRIC}_m.txt",
                                      f"profile_{METRIC}_m.png", f"profile_{METRIC}_m.pdf", f"profile_{METRIC}_m.txt",
                                      f"{METRIC}_n.png", f"{METRIC}_n.pdf", f"{METRIC}_n.txt"]
    assert all(p.stat().st_size > 1000 for p in pngs if p.suffix != ".txt")
    assert "IQM across 1–3 seeds; band: 25–75% interquartile range" in (tmp_path / "out" / f"{METRIC}_m.txt").read_text()
    md = report.markdown()
    assert f"![{METRIC} on m]({METRIC}_m.png)" in md and "- A seed 4: failed: RuntimeError: boom" in md
    assert "| A | – | 0.42 [" in md and f"![performance profile on m](profile_{METRIC}_m.png)" in md
    csvs = {p.name: p.read_text() for p in report.write_csv(tmp_path / "out")}
    assert f"m,A,final,IQM,5.0,2.5,7.5,3,1" in csvs["aggregates.csv"].replace("\r", "")
    assert "m,B,C,1.0,nan,nan" in csvs["probability_of_improvement.csv"].replace("\r", "")  # C has one run
    curves = csvs["curves.csv"].replace("\r", "").splitlines()
    assert curves[0] == "env,algorithm,step,iqm,band_low,band_high,band,runs"
    assert "m,A,0.0,0.0,0.0,0.0,iqr,3" in curves[1:]
    assert "Final value at step 250, the common horizon" in md


def test_unknown_metric_and_no_runs(tmp_path):
    write_file_storage(tmp_path / "sacred")
    records = rep.load_file_storage([tmp_path / "sacred"], "s")
    with pytest.raises(rep.ReportError, match="no run records the metric 'test_battle_won_mean'; the runs record: "
                                              "episode, loss_td, test_return_mean"):
        rep.choose_metric(records, "test_battle_won_mean")
    with pytest.raises(rep.ReportError, match="no runs of sweep 'zzz'"):
        rep.build_report(rep.load_file_storage([tmp_path / "sacred"], "zzz"), METRIC, "files", "zzz")
    with pytest.raises(rep.ReportError, match="no FileStorage folder"):
        rep.load_file_storage([tmp_path / "nope"])


def test_battle_won_preferred_when_recorded():
    record = rep.RunRecord("r", "a", "e", 1, "COMPLETED", metric_names={"test_return_mean", "test_battle_won_mean"})
    assert rep.choose_metric([record], None) == "test_battle_won_mean"


def test_t_quantiles():
    assert rep.t95(1) == 12.706 and rep.t95(30) == 2.042
    assert abs(rep.t95(60) - 2.000) < 0.005 and abs(rep.t95(120) - 1.980) < 0.005
    assert rep.mean_ci([4.0]) [0] == 4.0 and math.isnan(rep.mean_ci([4.0])[1])


def test_cli_report_from_files(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="plots need matplotlib (pip install matplotlib)")
    needs_rliable()
    write_file_storage(tmp_path / "host" / "results" / "sacred")
    code = cli.main(["report", str(tmp_path / "host"), "--sweep", "s", "--out", str(tmp_path / "r")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "| A | 5.000 [2.500, 7.500] |" in out and "not included: A seed 4: failed: RuntimeError: boom" in out
    assert (tmp_path / "r" / "report.md").is_file() and (tmp_path / "r" / f"{METRIC}_m.png").is_file()
    code = cli.main(["report", str(tmp_path / "host"), "--sweep", "s", "--metric", "nope", "--out", str(tmp_path / "r2")])
    _, err = capsys.readouterr()
    assert code == 2 and err.startswith("pymarl-nonmono: error: no run records the metric 'nope'")
    assert not (tmp_path / "r2").exists()
    code = cli.main(["report", "--mongo-url", "mongodb://u:s3cr3t@h:99999"])
    _, err = capsys.readouterr()
    assert code == 2 and "port '99999'" in err and "s3cr3t" not in err


def test_report_on_an_unknown_sweep_lists_the_sweeps_there_with_a_did_you_mean(tmp_path, capsys):
    write_file_storage(tmp_path / "host" / "results" / "sacred")
    (tmp_path / "host" / "results" / "sweeps" / "matrix-3x3").mkdir(parents=True)  # bench's record, no run yet
    for command in (["report"], ["export", "--format", "marl-eval"]):
        code = cli.main([*command, str(tmp_path / "host"), "--sweep", "othr", "--out", str(tmp_path / command[0])])
        _, err = capsys.readouterr()
        assert code == 2, err
        assert "no runs of sweep 'othr'" in err and "(did you mean 'other'?)" in err
        assert "sweeps there: matrix-3x3, other, s" in err


def test_mongodb_report_matches_file_storage(tmp_path, mongo_url, capsys):
    pytest.importorskip("matplotlib", reason="plots need matplotlib (pip install matplotlib)")
    needs_rliable()
    write_mongo(mongo_url, "reptest")
    source = rep.MongoSource(resolve(mongo_url, "reptest", {}))
    try:
        records = source.runs("s")
        assert len(records) == 13
        source.load_metric(rep.choose_metric(records, None))
    finally:
        source.close()
    mongo_table = check(rep.build_report(records, METRIC, "mongo", "s", points=50))
    write_file_storage(tmp_path / "sacred")
    files_table = check(rep.build_report(rep.load_file_storage([tmp_path / "sacred"], "s"), METRIC, "files", "s", 50))
    assert mongo_table == files_table
    code = cli.main(["report", "--mongo-url", mongo_url, "--mongo-db", "reptest", "--sweep", "s", "--out", str(tmp_path / "m")])
    out, _ = capsys.readouterr()
    assert code == 0 and "| B | 6.000 [5.000, 7.000] |" in out


def record(alg, env, seed, steps, values):
    r = rep.RunRecord(f"{env}/{alg}/{seed}", alg, env, seed, "COMPLETED", started=f"2026-01-01T00:00:0{seed % 10}")
    r.series[METRIC] = (np.asarray(steps, dtype=float), np.asarray(values, dtype=float))
    r.metric_names = {METRIC}
    return r


@pytest.mark.parametrize("band", ["iqr", "ci"])
def test_two_seeds_of_a_bounded_metric_keep_the_band_inside_and_tasks_pool(band):
    needs_rliable()
    # The payoff is bounded in [0, 12]; with 2 seeds a Student-t band ran from -70 to +82.
    records = [record("A", "x", 1, [0, 100], [0, 0]), record("A", "x", 2, [0, 100], [12, 12]),
               record("A", "x", 3, [0, 100], [12, 12]),
               record("A", "y", 1, [0, 100], [0, 12]), record("A", "y", 2, [0, 100], [12, 12]),
               record("B", "x", 1, [0, 100], [12, 12]), record("B", "x", 2, [0, 100], [12, 12]),
               record("B", "y", 1, [0, 100], [0, 0]), record("B", "y", 2, [0, 100], [0, 12])]
    report = rep.build_report(records, METRIC, "mem", None, points=5, band=band, reps=500)
    for env in report.envs:
        for curve in env.curves:
            assert np.all(curve.low >= 0.0) and np.all(curve.high <= 12.0)
        for row in env.rows:
            e = row.final["IQM"]
            assert row.finals.min() <= e.low <= e.point <= e.high <= row.finals.max()
    y = {r.alg: r for r in report.envs[1].rows}
    assert y["A"].final["IQM"].point == pytest.approx(12.0) and y["B"].final["IQM"].point == pytest.approx(6.0)
    overall = report.overall
    assert overall is not None and overall.scores["A"].shape == (2, 2) and overall.scores["B"].shape == (2, 2)
    assert overall.dropped == ["A on x: seeds 3 (only 2 runs counted on another environment)"]
    # A: x (0, 12), y (12, 12); B: x (12, 12), y (12, 0): P(A > B) per task 0.25 and 0.75.
    assert overall.improvement[("A", "B")].point == pytest.approx(0.5)
    md = report.markdown()
    assert "## All 2 environments (tasks)" in md and "| A | 2 × 2 |" in md


def test_seeds_run_with_different_settings_are_never_pooled(tmp_path):
    # A sweep name reused with other settings: seed 1 ran with lr 0.005, seeds 2-3 with 0.001.
    root = tmp_path / "sacred"
    for seed, lr in ((1, 0.005), (2, 0.001), (3, 0.001)):
        folder = root / "m" / "A" / str(seed)
        folder.mkdir(parents=True)
        cfg = {"sweep_id": "s", "sweep_alg": "A", "sweep_env": "m", "seed": seed, "lr": lr,
               "env_args": {"map_name": "m", "seed": seed * 7}, "use_cuda": seed == 1}
        (folder / "config.json").write_text(json.dumps(cfg))
        (folder / "run.json").write_text(json.dumps({"status": "COMPLETED", "start_time": f"2026-01-0{seed}T00:00:00"}))
        (folder / "metrics.json").write_text(json.dumps({METRIC: {"steps": [0, 100], "values": [0, seed]}}))
    records = rep.load_file_storage([root], "s")
    with pytest.raises(rep.ReportError, match=r"A on m: A seed 1 .* and A seed 2 .* differ in lr: 0\.005 vs 0\.001"):
        rep.classify(records, METRIC)
    # The seed, the env's seed and the device are what seeds of one setting may differ in.
    cfg = json.loads((root / "m" / "A" / "1" / "config.json").read_text())
    (root / "m" / "A" / "1" / "config.json").write_text(json.dumps(dict(cfg, lr=0.001)))
    kept, _ = rep.classify(rep.load_file_storage([root], "s"), METRIC)
    assert len(kept) == 3


def test_recovery_on_runs_without_a_known_optimum_says_which_envs_have_one(tmp_path, capsys):
    needs_rliable()
    write_file_storage(tmp_path / "sacred")
    from pymarl_nonmono import cli

    code = cli.main(["report", "--results", str(tmp_path / "sacred"), "--sweep", "s", "--recovery",
                     "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "test_optimal_mean" in err and "--env-config=matrix_game" in err, err


# ------------------------------------------------------------------ figures, by what they draw

def _plotting():
    """pyplot and the class of a band's fill, or a skip saying what to install."""
    pytest.importorskip("matplotlib", reason="plots need matplotlib (pip install matplotlib)")
    needs_rliable()
    from matplotlib.collections import PolyCollection

    return rep._pyplot(), PolyCollection


def _figure_report(n_algs, seeds, band):
    records = [record(f"alg{a}", "m", s, [0, 100, 200, 300], [a + s, a + s + 1, a + s + 2, a + s + 3])
               for a in range(n_algs) for s in range(1, seeds + 1)]
    return rep.build_report(records, METRIC, "files", None, points=20, band=band, reps=200)


def test_overlaid_curves_have_distinct_colours_outlined_light_bands_and_the_legend_outside():
    plt, PolyCollection = _plotting()
    report = _figure_report(3, 3, "iqr")
    fig, caption = rep.curves_figure(plt, report.envs[0], METRIC, "iqr")
    ax = fig.axes[0]
    fills = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(fills) == 3 and all(f.get_alpha() <= 0.15 for f in fills)  # light fills ...
    centres = [line for line in ax.get_lines() if line.get_linewidth() > 1.5]
    edges = [line for line in ax.get_lines() if line.get_linewidth() < 1.0]
    assert len(centres) == 3 and len(edges) == 6  # ... each outlined by its low and high edge
    assert len({line.get_color() for line in centres}) == 3
    fig.canvas.draw()
    legend = ax.get_legend().get_window_extent()
    assert legend.x0 >= ax.get_window_extent().x1  # right of the data, not over it
    plt.close(fig)


def test_curves_of_one_run_are_drawn_without_a_band_and_the_caption_claims_none():
    # A first comparison of one seed each (smac_smoke) has no spread to draw; its caption said
    # "band: 25-75% interquartile range" over curves that had none.
    plt, PolyCollection = _plotting()
    fig, caption = rep.curves_figure(plt, _figure_report(2, 1, "iqr").envs[0], METRIC, "iqr")
    assert not any(isinstance(c, PolyCollection) for c in fig.axes[0].collections)
    assert "IQM across 1 seed; no band." in caption and "interquartile" not in caption
    plt.close(fig)
    mixed = rep.build_report([record("alg0", "m", s, [0, 100], [s, s + 1]) for s in (1, 2, 3)]
                             + [record("alg1", "m", 1, [0, 100], [0, 1])], METRIC, "files", None, points=20,
                             band="iqr", reps=200)
    fig, caption = rep.curves_figure(plt, mixed.envs[0], METRIC, "iqr")
    assert "band: 25–75% interquartile range across seeds. No band for alg1: one run." in caption
    plt.close(fig)


def test_profiles_of_a_progress_report_mark_the_unfinished_runs_in_legend_and_caption():
    # Their "final" values are of training in progress: a profile drawn from them said only "n=2".
    plt, _ = _plotting()
    records = [record(alg, env, seed, [0, 100, 200], [seed, seed + 1, seed + 2])
               for alg in ("A", "B") for env in ("x", "y") for seed in (1, 2)]
    stopped = next(r for r in records if (r.alg, r.env, r.seed) == ("A", "y", 2))
    stopped.status = "INTERRUPTED"
    report = rep.build_report(records, METRIC, "files", None, points=5, reps=200, include_unfinished=True)
    envs = {e.env: e for e in report.envs}
    assert envs["x"].comparison.unfinished == {} and envs["y"].comparison.unfinished == {"A": 1}
    assert report.overall.unfinished == {"A": 1}
    for comparison in (envs["y"].comparison, report.overall):
        fig, caption = rep.profile_figure(plt, comparison, "t", METRIC)
        assert fig.axes[0].get_legend_handles_labels()[1] == ["A (n=2, 1 unfinished)", "B (n=2)"]
        assert "Not finished yet: 1 of these runs" in caption
        plt.close(fig)
    fig, caption = rep.profile_figure(plt, envs["x"].comparison, "t", METRIC)
    assert fig.axes[0].get_legend_handles_labels()[1] == ["A (n=2)", "B (n=2)"] and "Not finished" not in caption
    plt.close(fig)


def test_many_algorithms_are_small_multiples_and_few_seeds_get_no_ci_band_but_a_note():
    plt, PolyCollection = _plotting()
    report = _figure_report(5, 3, "ci")
    fig, caption = rep.curves_figure(plt, report.envs[0], METRIC, "ci")
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 5
    assert not any(isinstance(c, PolyCollection) for ax in visible for c in ax.collections)
    assert "No CI band for alg0, alg1, alg2, alg3, alg4: fewer than 5 runs" in caption
    plt.close(fig)
    report = _figure_report(2, 3, "ci")
    fig, caption = rep.profile_figure(plt, report.envs[0].comparison, "t", METRIC)
    assert not any(isinstance(c, PolyCollection) for c in fig.axes[0].collections)
    # A profile without bands never says it has one.
    assert "fewer than 5 runs" in caption and "Bands:" not in caption
    plt.close(fig)
    report = _figure_report(2, 6, "ci")
    fig, caption = rep.profile_figure(plt, report.envs[0].comparison, "t", METRIC)
    assert sum(isinstance(c, PolyCollection) for c in fig.axes[0].collections) == 2
    assert "Bands: 95% stratified-bootstrap CI (alg0, alg1)" in caption
    plt.close(fig)


def test_figures_for_a_paper_take_labels_a_title_or_none_and_a_resolution(tmp_path):
    plt, _ = _plotting()
    report = _figure_report(2, 3, "iqr")
    style = rep.FigureStyle(labels={"alg0": "Non-monotonic QMIX", "m": "3s vs 5z", METRIC: "test return"}, title="",
                            dpi=300)
    fig, caption = rep.curves_figure(plt, report.envs[0], METRIC, "iqr", style)
    ax = fig.axes[0]
    assert ax.get_title() == "" and ax.get_ylabel() == "test return"
    # Legends hold names and n only; what was left out is in report.md.
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["Non-monotonic QMIX (n=3)", "alg1 (n=3)"]
    assert caption.startswith("3s vs 5z: test return against environment steps, IQM across 3 seeds")
    plt.close(fig)
    paths = rep.plot(report, tmp_path, style=rep.FigureStyle(title="Figure 2", dpi=300))
    from matplotlib import image

    png = next(p for p in paths if p.name == f"{METRIC}_m.png")
    small = rep.plot(report, tmp_path / "low", style=rep.FigureStyle(dpi=100))
    low = next(p for p in small if p.name == f"{METRIC}_m.png")
    assert image.imread(png).shape[1] > 2.5 * image.imread(low).shape[1]


def test_coinciding_lines_stay_visible():
    plt, _ = _plotting()
    records = [record(f"alg{a}", "m", s, [0, 100], [1, 2]) for a in range(3) for s in (1, 2)]  # three identical curves
    report = rep.build_report(records, METRIC, "files", None, points=10, reps=200)
    fig, _ = rep.curves_figure(plt, report.envs[0], METRIC, "iqr")
    centres = [line for line in fig.axes[0].get_lines() if line.get_linewidth() > 1.5]
    widths = [line.get_linewidth() for line in centres]
    assert widths == sorted(widths, reverse=True) and len(set(widths)) == 3  # each one narrower: all show
    assert len({line.get_linestyle() for line in centres}) == 3
    plt.close(fig)


def test_a_lower_is_better_metric_ranks_lower_values_first():
    needs_rliable()
    records = [record("low", "m", s, [0, 100], [0.1, 0.1]) for s in (1, 2, 3)]
    records += [record("high", "m", s, [0, 100], [0.9, 0.9]) for s in (1, 2, 3)]
    for r in records:
        r.series["worst_greedy_action_rate"] = r.series.pop(METRIC)
    report = rep.build_report(records, "worst_greedy_action_rate", "files", None, points=10, reps=200)
    comparison = report.envs[0].comparison
    assert comparison.lower_is_better
    assert comparison.improvement[("low", "high")].point == 1.0  # P(low < high)
    p_low = comparison.profiles["low"][0]
    assert p_low[np.argmin(np.abs(comparison.taus - 0.5))] == 1.0  # every "low" run is below 0.5
    assert "P(row < column): lower is better" in report.markdown()
    forced = rep.build_report(records, "worst_greedy_action_rate", "files", None, points=10, reps=200, lower=False)
    assert forced.envs[0].comparison.improvement[("high", "low")].point == 1.0


def test_a_win_rate_that_is_zero_everywhere_falls_back_to_the_return_and_says_so():
    won = [record("a", "m", s, [0, 100], [0, 0]) for s in (1, 2)]
    for r in won:
        r.series["test_battle_won_mean"] = r.series[METRIC]
    assert rep.fallback_metric(won, "test_battle_won_mean")[0] == METRIC
    assert "No run won a test battle" in rep.fallback_metric(won, "test_battle_won_mean")[1]
    won[0].series["test_battle_won_mean"] = (np.array([0.0, 100.0]), np.array([0.0, 0.25]))
    assert rep.fallback_metric(won, "test_battle_won_mean") == ("test_battle_won_mean", "")


def test_seed_counts_read_right():
    assert [rep._seeds_text(c) for c in ([1], [3, 3], [2, 3], [])] == ["1 seed", "3 seeds", "2–3 seeds", "no seeds"]


def test_a_resumed_run_is_one_run_joined_at_its_checkpoint(tmp_path):
    # One seed stopped twice: attempt 1 to step 250 (checkpoint at 200), attempt 2 resumed at 200 and
    # stopped at 420 (checkpoint at 400), attempt 3 resumed at 400 and finished; another seed plain.
    attempts = [
        (dict(status="INTERRUPTED", start="2026-01-01T00:00:00"), 0, [0, 100, 200, 250], [0, 1, 2, 99]),
        (dict(status="RUNNING", start="2026-01-01T01:00:00"), 200, [210, 300, 400, 420], [2.1, 3, 4, 99]),
        (dict(status="COMPLETED", start="2026-01-01T02:00:00"), 400, [410, 500], [4.1, 5]),
    ]
    root = tmp_path / "sacred"
    for i, (run_json, resume, steps, values) in enumerate(attempts, 1):
        folder = root / "m" / "A" / str(i)
        folder.mkdir(parents=True)
        cfg = {**config(run("A", 1)), "sweep_resume_step": resume, "checkpoint_path": f"/models/{i}", "load_step": resume}
        (folder / "config.json").write_text(json.dumps(cfg))
        (folder / "run.json").write_text(json.dumps({**run_json, "heartbeat": "2026-01-01T03:00:00"}))
        (folder / "metrics.json").write_text(json.dumps({METRIC: {"steps": steps, "values": values}}))
    plain = root / "m" / "A" / "4"
    plain.mkdir()
    (plain / "config.json").write_text(json.dumps(config(run("A", 2))))
    (plain / "run.json").write_text(json.dumps({"status": "COMPLETED", "start_time": "2026-01-01T00:00:00"}))
    (plain / "metrics.json").write_text(json.dumps({METRIC: {"steps": [0, 500], "values": [0, 1]}}))
    records = rep.load_file_storage([root], sweep="s")
    for _ in range(2):  # classified once per metric: joining twice must not repeat the earlier values
        included, excluded = rep.classify(records, METRIC)
    (resumed,) = [r for r in included if r.seed == 1]
    steps, values = resumed.series[METRIC]
    assert steps.tolist() == [0, 100, 200, 210, 300, 400, 410, 500]
    assert values.tolist() == [0, 1, 2, 2.1, 3, 4, 4.1, 5]
    assert sorted(r.note.split(":")[0] for r in excluded) == ["continued", "continued"]
    assert all("steps up to" in r.note for r in excluded)
    env = rep.env_report("m", METRIC, included, excluded)
    assert env.excluded == [] and all(row.excluded == [] for row in env.rows)  # the attempts are part of the run
    first, second = (root / "m" / "A" / str(i) for i in (1, 2))
    assert env.resumed == [f"A seed 1: resumed 2 times, from its checkpoints at steps 200 ({second}, continuing "
                           f"{first}) and 400 ({resumed.ref}, continuing {second})"]
    assert env.horizon == (0.0, 500.0)
    needs_rliable()
    text = rep.build_report(records, METRIC, "FileStorage", "s").markdown()
    assert "Resumed after an interruption" in text and "from its checkpoints at steps 200 (" in text
    assert "unfinished" not in text and "continued:" not in text and "Not included" not in text


def test_a_progress_report_counts_the_latest_unfinished_attempt_of_each_seed_and_marks_it(tmp_path):
    steps = [0, 100, 200, 300]
    runs = [
        run("A", 1, steps, lin(1, steps)),
        run("A", 2, [0, 50], [9, 9], status="INTERRUPTED", start="2026-01-01T00:00:00"),  # re-run from scratch...
        run("A", 2, [0, 100, 200], lin(2, [0, 100, 200]), status="INTERRUPTED", start="2026-01-02T00:00:00"),
        run("A", 3, [0, 100], [0, 1], status="FAILED", fail="RuntimeError: boom"),
        run("B", 1, steps, [5] * 4),
        run("B", 1, [0, 50], [0, 0], status="INTERRUPTED", start="2026-01-05T00:00:00"),  # after B 1 finished
        # Beating now (NOW is the module's import time, minutes ago in a long test session).
        run("B", 2, [0, 100, 150], [7, 7, 7], status="RUNNING", heartbeat=dt.datetime.utcnow().isoformat()),
    ]
    root = tmp_path / "sacred"
    for i, r in enumerate(runs, 1):
        folder = root / r["env"] / r["alg"] / str(i)
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps(config(r)))
        (folder / "run.json").write_text(json.dumps({"status": r["status"], "start_time": r["start"],
                                                     "heartbeat": r["heartbeat"]}))
        (folder / "metrics.json").write_text(json.dumps({METRIC: {"steps": r["steps"], "values": r["values"]}}))
    records = rep.load_file_storage([root], "s")

    included, _ = rep.classify(records, METRIC)
    assert sorted((r.alg, r.seed) for r in included) == [("A", 1), ("B", 1)]
    included, excluded = rep.classify(records, METRIC, include_unfinished=True)
    assert sorted((r.alg, r.seed, r.started[:10]) for r in included) == [
        ("A", 1, "2026-01-01"), ("A", 2, "2026-01-02"), ("B", 1, "2026-01-01"), ("B", 2, "2026-01-01")]
    notes = {(r.alg, r.seed, r.status): r.note for r in excluded}
    assert notes[("A", 2, "INTERRUPTED")].startswith("superseded by a newer unfinished run of the same seed")
    assert notes[("A", 3, "FAILED")].startswith("failed")
    assert notes[("B", 1, "INTERRUPTED")] == "unfinished: INTERRUPTED"  # the finished run of its seed counts

    needs_rliable()
    report = rep.build_report(records, METRIC, "files", "s", include_unfinished=True)
    (env,) = report.envs
    assert env.horizon == (0.0, 150.0)  # the last test of the shortest run, an unfinished one
    rows = {row.alg: row for row in env.rows}
    assert rows["A"].seeds == [1, 2] and rows["A"].unfinished == [2]
    assert list(rows["A"].finals) == pytest.approx([1.5, 3.0]) and list(rows["B"].finals) == pytest.approx([5, 7])
    assert {c.alg: c.legend for c in env.curves} == {"A": "n=2, 1 unfinished", "B": "n=2, 1 unfinished"}
    assert env.unfinished[0].startswith("A seed 2: INTERRUPTED, last logged at step 200 (")
    assert env.unfinished[1].startswith("B seed 2: still running, last logged at step 150 (")
    md = report.markdown()
    assert "**Progress report**" in md and "Only finished runs count" not in md
    assert "| 2 (1 unfinished) |" in report.table(env) and "the shortest included run here" in md
    assert "Not finished, included with their values up to their last test:" in md
    csv_rows = {p.name: p.read_text() for p in report.write_csv(tmp_path / "out")}["runs.csv"].replace("\r", "").splitlines()
    assert csv_rows[0] == "env,algorithm,seed,finished,step,value"
    assert "m,A,2,False,200,4.0" in csv_rows and "m,A,1,True,300,3.0" in csv_rows
    assert not any(line.startswith("m,A,3,") for line in csv_rows)  # failed: never counted

    finished_only = rep.build_report(records, METRIC, "files", "s")
    assert finished_only.envs[0].horizon == (0.0, 300.0) and "Only finished runs count" in finished_only.markdown()
    assert [c.legend for c in finished_only.envs[0].curves] == ["n=1", "n=1"]
    assert "unfinished" not in finished_only.table(finished_only.envs[0]).split("|")[8]


def test_steps_for_the_per_run_table_take_k_and_m_suffixes_and_refuse_what_is_not_a_step():
    assert rep.parse_steps("100k, 250000,1.5M") == (100_000, 250_000, 1_500_000)
    for bad, words in (("10x", "not a step"), ("0", "positive"), ("1.5", "whole"), ("200k,100k", "increase"),
                       ("100k,100k", "increase")):
        with pytest.raises(rep.ReportError, match=words):
            rep.parse_steps(bad)


def test_the_per_run_table_takes_the_first_value_at_or_after_each_step_and_the_last_with_its_step():
    a = record("qmix", "m", 2, [0, 20_000, 40_000, 61_000, 82_000], [0.0, -0.04, 3.25, 7.0, 9.0])
    b = record("qmix", "m", 1, [0, 30_000], [1.0, 2.0])  # stops before 60k: a blank cell, not a stale value
    c = record("gauge", "m", 1, [0, 60_000], [-12.0, 40.0])
    c.unfinished = "unfinished: INTERRUPTED"
    table = rep.run_table([a, b, c], METRIC, (20_000, 60_000))
    assert table.splitlines() == [
        "| run | 20k | 60k | last (step) |",
        "|---|---|---|---|",
        "| `gauge` s1 (not finished) | 40.0 | 40.0 | 40.0 (60k) |",
        "| `qmix` s1 | 2.0 |  | 2.0 (30k) |",
        "| `qmix` s2 | 0.0 | 7.0 | 9.0 (82k) |",  # -0.04 shows as 0.0, never "-0.0"
    ]
    rate = record("x", "m", 1, [0, 10], [0.444, 1.0])
    assert rep.run_table([rate], METRIC, (5,)).splitlines()[-1] == "| `x` s1 | 1.00 | 1.00 (10) |"


def test_cli_report_at_steps_adds_the_per_run_table_to_report_md(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="plots need matplotlib (pip install matplotlib)")
    needs_rliable()
    write_file_storage(tmp_path / "host" / "results" / "sacred")
    code = cli.main(["report", str(tmp_path / "host"), "--sweep", "s", "--at", "100,250", "--out", str(tmp_path / "r")])
    assert code == 0, capsys.readouterr().err
    md = (tmp_path / "r" / "report.md").read_text()
    assert "| run | 100 | 250 | last (step) |" in md and "| `A` s3 | 3.0 | 9.0 | 9.0 (300) |" in md
    code = cli.main(["report", str(tmp_path / "host"), "--sweep", "s", "--at", "1k,2x", "--out", str(tmp_path / "r2")])
    assert code == 2 and "--at: '2x'" in capsys.readouterr().err and not (tmp_path / "r2").exists()
