"""The report's statistics (pymarl_nonmono.bench.stats) on hand-computed cases and against rliable itself."""

import builtins

import numpy as np
import pytest

from pymarl_nonmono.bench import MissingDependency, stats


@pytest.fixture(autouse=True)
def _rliable():
    try:
        stats.rliable()
    except MissingDependency as exc:
        pytest.skip(str(exc))


def test_iqm_of_one_to_eight_is_the_mean_of_the_middle_half():
    one_task = np.arange(1.0, 9.0)[:, None]  # [8, 1]
    assert stats.reference_statistics(one_task) == pytest.approx([4.5, 4.5, 4.5])  # mean(3, 4, 5, 6)
    skewed = np.array([1.0, 2, 3, 4, 5, 6, 7, 100])[:, None]
    assert stats.reference_statistics(skewed)[0] == pytest.approx(4.5)  # the outlier is trimmed
    assert stats.reference_statistics(skewed)[1:] == pytest.approx([4.5, 16.0])
    two_tasks = np.stack([np.arange(1.0, 9.0), np.arange(11.0, 19.0)], axis=1)  # [8, 2]
    # 16 values, 4 cut at each end: 5..8 and 11..14; median and mean of the task means 4.5 and 14.5.
    assert stats.reference_statistics(two_tasks) == pytest.approx([9.5, 9.5, 9.5])
    est = stats.aggregates({"a": one_task, "b": two_tasks}, reps=500)
    assert est["a"]["IQM"].point == pytest.approx(4.5) and est["b"]["IQM"].point == pytest.approx(9.5)


@pytest.mark.parametrize("shape", [(1, 1), (2, 1), (3, 1), (5, 1), (8, 3), (20, 1), (7, 4)])
def test_vectorised_statistics_agree_with_rliable(shape):
    rng = np.random.default_rng(sum(shape))
    cube = rng.integers(0, 4, (3, *shape)).astype(float)  # ties on purpose
    fast = stats.batch_statistics(cube)
    for a in range(3):
        assert fast[a] == pytest.approx(stats.reference_statistics(cube[a]))
    _, metrics = stats.rliable()
    curves = rng.random((shape[0], 6))
    assert stats.iqm_columns(curves) == pytest.approx([metrics.aggregate_iqm(curves[:, [j]]) for j in range(6)])


def test_probability_of_improvement_by_hand_and_against_rliable():
    x, y = np.array([[3.0], [4.0]]), np.array([[1.0], [3.0], [5.0]])
    # 3 > 1, 3 = 3 (half), 3 < 5, 4 > 1, 4 > 3, 4 < 5: 3.5 of 6 pairs.
    assert stats.probability_of_improvement(x, y) == pytest.approx(3.5 / 6)
    _, metrics = stats.rliable()
    rng = np.random.default_rng(1)
    for _ in range(20):
        a, b = rng.integers(0, 3, (4, 3)).astype(float), rng.integers(0, 3, (6, 3)).astype(float)
        assert stats.probability_of_improvement(a, b) == pytest.approx(metrics.probability_of_improvement(a, b))
    a = rng.random((5, 2))
    assert stats.probability_of_improvement(a, a) == pytest.approx(0.5)


def test_improvement_matrix_pairs_mirror_and_stay_in_bounds():
    rng = np.random.default_rng(2)
    same = {k: rng.random((5, 1)) for k in "abc"}
    unequal = {"a": rng.random((5, 1)), "b": rng.random((3, 1)) + 0.5, "c": rng.random((2, 1))}
    for scores in (same, unequal):  # the stacked path and the per-pair path
        m = stats.improvement_matrix(scores, reps=400)
        assert len(m) == 6
        for (x, y), e in m.items():
            assert 0.0 <= e.low <= e.point <= e.high <= 1.0
            assert e.point == pytest.approx(stats.probability_of_improvement(scores[x], scores[y]))
            back = m[(y, x)]
            assert (back.point, back.low, back.high) == pytest.approx((1 - e.point, 1 - e.high, 1 - e.low))


def test_one_run_has_a_value_but_no_interval():
    scores = {"one": np.array([[3.0]]), "two": np.array([[1.0], [5.0]]), "three": np.array([[0.0], [2.0], [4.0]])}
    est = stats.aggregates(scores, reps=300)
    assert est["one"]["IQM"].point == 3.0 and not est["one"]["IQM"].has_interval
    assert all(est[k][name].has_interval for k in ("two", "three") for name in stats.STATISTICS)
    m = stats.improvement_matrix(scores, reps=300)
    assert m[("one", "two")].point == 0.5 and m[("one", "three")].point == pytest.approx(2 / 3)
    assert not any(m[p].has_interval for p in [("one", "two"), ("two", "one"), ("three", "one")])
    assert m[("two", "three")].has_interval and m[("three", "two")].has_interval
    profiles = stats.performance_profiles(scores, np.array([0.5, 2.5]), reps=300)
    assert list(profiles["one"][0]) == [1.0, 1.0] and np.isnan(profiles["one"][1:]).all()
    assert not np.isnan(profiles["three"][1:]).any()


@pytest.mark.parametrize("runs", [2, 20])
def test_bootstrap_interval_contains_the_estimate_and_stays_within_the_data(runs):
    rng = np.random.default_rng(runs)
    scores = {"bounded": rng.choice([0.0, 12.0], size=(runs, 1)), "spread": rng.normal(5, 3, (runs, 1))}
    scores["bounded"][:2, 0] = [0.0, 12.0]
    est = stats.aggregates(scores, reps=1000)
    for key, arr in scores.items():
        for name in stats.STATISTICS:
            e = est[key][name]
            assert arr.min() <= e.low <= e.point <= e.high <= arr.max(), (key, name, e)
    if runs == 2:  # resamples of (0, 12): 0, 6 or 12, so the 95% interval is the whole range
        assert (est["bounded"]["IQM"].low, est["bounded"]["IQM"].high) == (0.0, 12.0)


def test_intervals_are_reproducible_and_leave_numpy_global_state_alone():
    scores = {"a": np.arange(10.0)[:, None]}
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    first = stats.aggregates(scores, reps=300)
    assert np.array_equal(np.random.get_state()[1], before)
    assert stats.aggregates(scores, reps=300) == first


def test_performance_profile_by_hand_and_against_rliable():
    scores = np.array([[1.0], [2.0], [3.0], [4.0]])
    taus = np.array([0.0, 2.0, 4.0])
    assert stats.score_distribution(scores, taus) == pytest.approx([1.0, 0.5, 0.0])
    library, _ = stats.rliable()
    rng = np.random.default_rng(3)
    data = {"a": rng.random((6, 2)), "b": rng.random((4, 2))}
    taus = stats.thresholds(data, 11)
    ours = stats.performance_profiles(data, taus, reps=300)
    theirs, _ = library.create_performance_profile(data, taus, reps=50)
    for key in data:
        assert ours[key][0] == pytest.approx(theirs[key])
        assert np.all(ours[key][1] <= ours[key][0] + 1e-12) and np.all(ours[key][0] <= ours[key][2] + 1e-12)


def test_curve_bands_by_hand():
    values = np.array([[0.0, 10.0], [1.0, 10.0], [2.0, 10.0], [3.0, 10.0]])  # [R=4, P=2]
    centre, low, high = stats.curve_bands({"a": values}, "iqr")["a"]
    assert centre == pytest.approx([1.5, 10.0]) and low == pytest.approx([0.75, 10.0]) and high == pytest.approx([2.25, 10.0])
    two = np.array([[0.0, 0.0, 12.0], [12.0, 0.0, 12.0]])
    centre, low, high = stats.curve_bands({"two": two, "one": two[:1]}, "ci", reps=500)["two"]
    assert centre == pytest.approx([6.0, 0.0, 12.0]) and low == pytest.approx([0.0, 0.0, 12.0]) and high == pytest.approx([12.0, 0.0, 12.0])
    with pytest.raises(ValueError, match="band must be one of iqr, ci"):
        stats.curve_bands({"a": values}, "t")
    with pytest.raises(ValueError, match="'bad'"):
        stats.aggregates({"bad": np.array([[np.nan]])})


def test_missing_or_broken_rliable_is_one_line_naming_the_install(monkeypatch):
    real_import = builtins.__import__

    def no_rliable(name, *args, **kwargs):
        if name.startswith("rliable"):
            raise ImportError("No module named 'rliable'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_rliable)
    with pytest.raises(MissingDependency, match=r"^the report's statistics need rliable: pip install rliable 'pandas<3'$"):
        stats.rliable()

    def broken(name, *args, **kwargs):  # what arch 7 does on pandas 3
        if name.startswith("rliable"):
            raise TypeError("deprecate_kwarg() missing 1 required positional argument: 'new_arg_name'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", broken)
    with pytest.raises(MissingDependency, match=r"does not import \(TypeError: .*needs pandas<3"):
        stats.rliable()
