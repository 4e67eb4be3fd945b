"""The paper's Table 1 layout (report --table1) on hand-made run records."""

import json

import numpy as np
import pytest

from pymarl_nonmono.bench import table1
from pymarl_nonmono.bench.report import RunRecord
from pymarl_nonmono.envs.matrix import resolve_payoff


def record(alg, seed, env, error=None, greedy=None, optimal=None, q_tot=None, utilities=None, status="COMPLETED"):
    """A run whose last diagnostics (at step 4000; an earlier, different value at 2000) are given."""
    r = RunRecord(f"run-{alg}-{env}-{seed}", alg, env, seed, status, "2026-01-01")
    steps = np.array([2000.0, 4000.0])

    def put(name, value):
        r.series[name] = (steps, np.array([-99.0, value]))

    if error is not None:
        put("payoff_max_abs_error", error)
    if greedy is not None:
        put("greedy_joint_index", greedy[0] * 3 + greedy[1])
    if optimal is not None:
        put("greedy_optimal", float(optimal))
    for (i, j), v in np.ndenumerate(np.zeros((3, 3)) if q_tot is None else np.asarray(q_tot, dtype=float)):
        put(f"q_tot_{i}_{j}", v)
    for k, us in enumerate(utilities or ()):
        for a, v in enumerate(us):
            put(f"q_agent_{k}_{a}", v)
    r.metric_names = set(r.series)
    return r


B_FIT = [[12.1, 0.0, 9.8], [0.2, -0.1, 10.0], [10.0, 10.1, 10.0]]
PAYOFFS = {"paper_b": resolve_payoff("paper_b"), "paper_a": resolve_payoff("paper_a")}
METHODS = {"nonmono_qmix_sarsa": "nonmono_qmix", "qmix": "qmix", "qtran": None}


def sweep():
    return [
        # nonmono on Game B: errors 0.05, 0.3, 2.0, 0.2 -> sorted 0.05, 0.2, 0.3, 2.0; the lower middle is 0.2 (seed 4).
        record("nonmono_qmix_sarsa", 1, "paper_b", 0.05, (0, 0), True),
        record("nonmono_qmix_sarsa", 2, "paper_b", 0.3, (0, 0), True),
        record("nonmono_qmix_sarsa", 3, "paper_b", 2.0, (0, 0), True),
        record("nonmono_qmix_sarsa", 4, "paper_b", 0.2, (2, 2), False, B_FIT,
               ((5.0, -4.0, 2.0), (7.0, -3.0, 3.0))),
        # QMIX on Game B: the paper's QMIX is greedy on (C, C) = 10.
        record("qmix", 1, "paper_b", 8.0, (2, 2), False),
        record("qmix", 2, "paper_b", 9.0, (0, 0), True),
        # QMIX on Game A: the paper's QMIX maximises any of the four ~0 cells off row/column A.
        record("qmix", 1, "paper_a", 12.0, (1, 2), False),
        record("qmix", 2, "paper_a", 11.0, (0, 0), True),
        record("qmix", 3, "paper_a", 11.5, (0, 1), False),
        # QTRAN: finished without the diagnostics (no Q_tot of agent values); a failed nonmono run.
        RunRecord("run-qtran", "qtran", "paper_b", 1, "COMPLETED"),
        record("nonmono_qmix_sarsa", 5, "paper_b", 0.0, (0, 0), True, status="FAILED"),
    ]


def by_alg(games, env):
    return {row.alg: row for g in games if g.env == env for row in g.rows}


def test_median_run_is_the_lower_middle_of_the_final_payoff_errors():
    rows = by_alg(table1.build_table1(sweep(), PAYOFFS, METHODS), "paper_b")
    m = rows["nonmono_qmix_sarsa"].median
    assert m.seed == 4 and m.error == 0.2 and m.greedy == (2, 2) and m.optimal is False
    np.testing.assert_array_equal(m.q_tot, B_FIT)
    assert m.utilities[0].tolist() == [5.0, -4.0, 2.0] and m.utilities[1].tolist() == [7.0, -3.0, 3.0]
    assert rows["nonmono_qmix_sarsa"].n == 4  # the failed run is not counted


@pytest.mark.parametrize("tolerance,matched", [(0.5, 2), (0.1, 1), (2.0, 3)])
def test_matching_the_papers_exact_recovery_needs_the_optimum_and_the_tolerance(tolerance, matched):
    # Seeds 1 (0.05) and 2 (0.3) are optimal within 0.5; seed 3 only within 2.0; seed 4 is not optimal.
    rows = by_alg(table1.build_table1(sweep(), PAYOFFS, METHODS, tolerance), "paper_b")
    assert rows["nonmono_qmix_sarsa"].matched == matched


def test_matching_the_papers_qmix_is_its_greedy_outcome():
    games = table1.build_table1(sweep(), PAYOFFS, METHODS)
    assert by_alg(games, "paper_b")["qmix"].matched == 1   # (C, C) yes, (A, A) no
    assert by_alg(games, "paper_a")["qmix"].matched == 1   # (B, C) yes; (A, A), (A, B) no
    assert by_alg(games, "paper_a")["qmix"].median.seed == 3   # errors 11, 11.5, 12


def test_rows_without_diagnostics_or_paper_counterpart():
    rows = by_alg(table1.build_table1(sweep(), PAYOFFS, METHODS), "paper_b")
    assert rows["qtran"].n == 0 and rows["qtran"].median is None and rows["qtran"].matched is None
    assert [r.note for r in rows["qtran"].excluded] == ["finished without payoff_max_abs_error"]
    other = table1.build_table1(sweep(), {"paper_b": np.array([[1.0, 0.0], [0.0, 1.0]])}, METHODS)
    assert by_alg(other, "paper_b")["nonmono_qmix_sarsa"].matched is None  # not the paper's game


def test_markdown_puts_the_papers_values_beside_ours():
    text = table1.markdown(table1.build_table1(sweep(), PAYOFFS, METHODS), "hand-made", "s")
    assert "## paper_b (Game B of the paper)" in text
    # Agent 2's action A on the columns: ours 7.0, the paper's 6.0; agent 1's row C: ours 2.0, the paper's 1.7.
    assert "| Q1 \\ Q2 | **A**: 7.0 *(6.0)* | **B**: -3.0 *(-3.7)* | **C**: 3.0 *(2.5)* |" in text
    assert "| **C**: 2.0 *(1.7)* | 10.0 *(10.0)* | 10.1 *(10.0)* | **10.0 *(10.0)*** |" in text
    assert "| nonmono_qmix_sarsa | non-monotonic QMIX | 4 | seed 4 | 0.200 | (C, C) | 2/4 | 1 failed |" in text
    assert "| **A** | 12 | 0 | 10 |" in text  # the payoff


def test_paper_values_are_the_papers_games():
    for game in table1.PAPER_GAMES:
        exact = table1.PAPER_TABLE1[(game, "nonmono_qmix")]
        np.testing.assert_array_equal(exact.q_tot, resolve_payoff(game))
        assert table1.paper_game_of(resolve_payoff(game)) == game
    assert table1.paper_game_of(resolve_payoff("pymarl2_hard")) == "paper_a"  # the alias
    assert table1.PAPER_TABLE1[("paper_a", "nonmono_qmix")].utilities == ((8.1, -4.3, -4.3), (7.4, -4.0, -4.1))
    assert table1.PAPER_TABLE1[("paper_b", "qmix")].q_tot[2] == (5.6, 5.6, 10.0)


@pytest.mark.parametrize("mixer,label,method", [
    ("nonmono_qmix", "anything", "nonmono_qmix"), ("qmix", "x", "qmix"), ("dmaq", "qmix_like", None),
    (None, "nonmono_qmix_softmax_buffer5000", "nonmono_qmix"), (None, "qmix_buffer5000", "qmix"),
    (None, "qmixer", None), (None, "qplex", None),
])
def test_method_of(mixer, label, method):
    assert table1.method_of(mixer, label) == method


def test_describe_runs_reads_the_run_configs_and_falls_back_to_labels(tmp_path):
    folder = tmp_path / "1"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(
        {"env": "matrix_game", "mixer": "qmix", "env_args": {"preset": None, "payoff": [[1, 2], [3, 4]]}}))
    runs = [RunRecord(str(folder), "mine", "custom", 1, "COMPLETED"),
            RunRecord("MongoDB run 7", "nonmono_qmix_sarsa", "paper_b", 1, "COMPLETED"),
            RunRecord("MongoDB run 8", "qplex", "somewhere", 1, "COMPLETED")]
    payoffs, methods = table1.describe_runs(runs)
    assert payoffs["custom"].tolist() == [[1, 2], [3, 4]]
    np.testing.assert_array_equal(payoffs["paper_b"], resolve_payoff("paper_b"))
    assert payoffs["somewhere"] is None
    assert methods == {"mine": "qmix", "nonmono_qmix_sarsa": "nonmono_qmix", "qplex": None}


def test_cli_report_table1_from_file_storage(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="plots need matplotlib (pip install matplotlib)")
    pytest.importorskip("rliable", reason="report needs rliable (pip install rliable)")
    from pymarl_nonmono import cli

    root = tmp_path / "host" / "results" / "sacred"
    for i, (error, optimal) in enumerate([(0.1, 1.0), (3.0, 0.0)], 1):
        folder = root / "matrix_game" / "nm" / str(i)
        folder.mkdir(parents=True)
        # The label says nothing: the game and the paper method come from the run's config.
        (folder / "config.json").write_text(json.dumps(
            {"sweep_id": "s", "sweep_alg": "mine", "sweep_env": "game", "seed": i, "env": "matrix_game",
             "mixer": "nonmono_qmix", "env_args": {"preset": "paper_b", "payoff": None, "penalty_k": None}}))
        (folder / "run.json").write_text(json.dumps({"status": "COMPLETED", "start_time": f"2026-01-0{i}"}))
        last = {"payoff_max_abs_error": error, "greedy_optimal": optimal, "greedy_joint_index": 0.0,
                "test_return_mean": 12.0 * optimal, "q_agent_0_2": 1.5,
                **{f"q_tot_{a}_{b}": float(a + b) for a in range(3) for b in range(3)}}
        (folder / "metrics.json").write_text(json.dumps(
            {name: {"steps": [0, 100], "values": [0.0, v]} for name, v in last.items()}))
    out_dir = tmp_path / "r"
    code = cli.main(["report", str(tmp_path / "host"), "--sweep", "s", "--table1", "--table1-tolerance", "0.2",
                     "--reps", "100", "--out", str(out_dir)])
    out, err = capsys.readouterr()
    assert code == 0, err
    row = "| mine | non-monotonic QMIX | 2 | seed 1 | 0.100 | (A, A) optimal | 1/2 | – |"
    assert row in out
    text = (out_dir / "table1.md").read_text()
    assert "## game (Game B of the paper)" in text and row in text and "≤ 0.2;" in text
    assert "| **C**: 1.5 *(1.7)* | 2.0 *(10.0)* | 3.0 *(10.0)* | 4.0 *(10.0)* |" in text


def test_the_paper_study_shares_the_shipped_regime_and_pairs_every_row_with_a_buffer5000_row():
    from pymarl_nonmono.bench.spec import build_sweep, shipped_sweeps
    import yaml

    # matrix_qtran's `set` is tested (test_bench_spec) to be nonmono_qmix_matrix.yaml's regime.
    sets = {name: yaml.safe_load(shipped_sweeps()[name].read_text())["set"] for name in ("paper_matrix", "matrix_qtran")}
    assert sets["paper_matrix"] == sets["matrix_qtran"]
    sweep = build_sweep("paper_matrix")
    assert len(sweep.runs()) == 400 and sweep.seeds == tuple(range(201, 221))
    assert {e.label: dict(e.overrides) for e in sweep.envs} == {
        "paper_a": {"env_args.preset": "paper_a"}, "paper_b": {"env_args.preset": "paper_b"}}
    algs = {a.label: a for a in sweep.algs}
    base = [label for label in algs if not label.endswith("_buffer5000")]
    assert sorted(base) == ["nonmono_qmix_sarsa", "nonmono_qmix_softmax", "qmix", "qplex", "qtran"]
    for label in base:
        twin = algs[label + "_buffer5000"]
        assert twin.config == algs[label].config
        assert dict(twin.overrides) == {**dict(algs[label].overrides), "buffer_size": "5000"}


def test_values_are_shown_to_one_decimal_as_the_paper_without_a_negative_zero():
    assert [table1._v(x) for x in (-0.04, -0.06, 12.04, float("nan"))] == ["0.0", "-0.1", "12.0", "–"]


def test_a_row_whose_runs_have_not_finished_says_so():
    runs = [record("qmix", 1, "paper_b", 8.0, (2, 2), False, status="RUNNING"),
            record("nonmono_qmix_sarsa", 1, "paper_b", 0.1, (0, 0), True)]
    text = table1.markdown(table1.build_table1(runs, PAYOFFS, METHODS), "hand-made", "s")
    assert "No table: no finished run (see Not included)." in text
    assert "| qmix | QMIX | 0 | – | – | – | – | 1 unfinished |" in text
