"""Aggregate statistics across seeds and tasks (Agarwal et al., NeurIPS 2021), computed with rliable.

Scores are arrays ``[R, T]``: one value per run (seed) ``r`` and task ``t`` (here a task is an
environment of the sweep; a single environment is ``T == 1``). Algorithms may have different
numbers of runs. Every interval is a stratified percentile bootstrap (runs resampled within
each task, each algorithm independently): rliable's ``get_interval_estimates`` with
``method="percentile"``. A percentile interval of the IQM, median or mean of resampled runs
always lies within [min, max] of the runs, so a band never claims values no run took.

Speed: rliable calls the statistic once per bootstrap replicate. Each function here
bootstraps all algorithms (or all pairs, or all curve points) in ONE call whose statistic is
vectorised over them, so a report costs a handful of bootstrap calls per environment
whatever the number of algorithms.

rliable is optional (``pip install rliable 'pandas<3'``) and imported on first use: rliable
1.2 requires ``arch<8``, and arch 7 fails to import on pandas 3.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np

from . import MissingDependency

INSTALL = "pip install rliable 'pandas<3'"
BOOTSTRAP_REPS = 2000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95
BANDS = ("iqr", "ci")


def rliable():
    """(rliable.library, rliable.metrics), or MissingDependency naming the install command."""
    try:
        from rliable import library, metrics
    except ImportError:
        raise MissingDependency(f"the report's statistics need rliable: {INSTALL}") from None
    except Exception as exc:  # arch<8 (rliable's pin) raises TypeError at import on pandas 3
        raise MissingDependency(f"rliable is installed but does not import ({type(exc).__name__}: {exc}); "
                                f"its arch<8 needs pandas<3: {INSTALL}") from None
    return library, metrics


@dataclass(frozen=True)
class Estimate:
    """A statistic and its 95% interval; ``low``/``high`` are NaN where resampling cannot say
    anything (:data:`MIN_RUNS_FOR_INTERVAL`): a bootstrap of one run has zero width."""
    point: float
    low: float
    high: float

    @property
    def has_interval(self) -> bool:
        return not (np.isnan(self.low) or np.isnan(self.high))


#: Fewest runs (per task, of every algorithm involved) for which an interval is reported: every
#: resample of a single run is that run, so its "interval" would be a point posing as a CI.
MIN_RUNS_FOR_INTERVAL = 2


def _estimate(point: float, low: float, high: float, runs: int) -> Estimate:
    if runs < MIN_RUNS_FOR_INTERVAL:
        return Estimate(float(point), math.nan, math.nan)
    return Estimate(float(point), float(low), float(high))


def check_scores(scores, name: str) -> np.ndarray:
    """A finite float array [R, T] with R >= 1 runs and T >= 1 tasks; the error names ``name``."""
    arr = np.asarray(scores, dtype=float)
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"scores of {name!r} must be [runs, tasks] with at least one of each, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"scores of {name!r} contain NaN or infinite values")
    return arr


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    # rliable's StratifiedBootstrap draws from numpy's global generator: seed it for
    # reproducible intervals and give the caller its state back.
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def _bootstrap(arrays: Sequence[np.ndarray], func: Callable[..., np.ndarray], reps: int, seed: int):
    """Point estimate and (low, high) of ``func(*arrays)``, each array resampled independently."""
    library, _ = rliable()
    with _seeded(seed):
        points, intervals = library.get_interval_estimates({"all": list(arrays)}, func, reps=reps,
                                                           confidence_interval_size=CONFIDENCE)
    ci = np.asarray(intervals["all"], dtype=float).reshape(2, -1)
    return np.asarray(points["all"], dtype=float).reshape(-1), ci[0], ci[1]


# --------------------------------------------------------------------------- aggregates

STATISTICS = ("IQM", "median", "mean")


def reference_statistics(scores: np.ndarray) -> np.ndarray:
    """[IQM, median, mean] of one [R, T] score array, straight from rliable (the loop reference).

    IQM and mean are rliable's ``aggregate_iqm`` / ``aggregate_mean``. Median: with one task,
    the median across seeds; with several, rliable's ``aggregate_median`` (median of the
    per-task means).
    """
    _, metrics = rliable()
    median = np.median(scores) if scores.shape[1] == 1 else metrics.aggregate_median(scores)
    return np.array([metrics.aggregate_iqm(scores), median, metrics.aggregate_mean(scores)], dtype=float)


def trimmed_mean(values: np.ndarray, axis: int) -> np.ndarray:
    """The 25%-trimmed (interquartile) mean along ``axis``, as scipy's ``trim_mean(values, 0.25)``:
    int(n / 4) values cut from each end. scipy's own wrapper costs ~1 ms a call, which a
    bootstrap repeats thousands of times."""
    values = np.sort(values, axis=axis)
    n = values.shape[axis]
    cut = int(0.25 * n)
    return np.take(values, np.arange(cut, n - cut), axis=axis).mean(axis=axis)


def batch_statistics(cube: np.ndarray) -> np.ndarray:
    """:func:`reference_statistics` of many same-shaped score arrays at once: [A, R, T] -> [A, 3]."""
    a, r, t = cube.shape
    iqm = trimmed_mean(cube.reshape(a, r * t), axis=1)
    task_means = cube.mean(axis=1)  # [A, T]
    median = np.median(cube[:, :, 0], axis=1) if t == 1 else np.median(task_means, axis=1)
    return np.stack([iqm, median, task_means.mean(axis=1)], axis=1)


def _shape_groups(arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
    groups: dict[tuple, list[int]] = {}
    for i, arr in enumerate(arrays):
        groups.setdefault(arr.shape, []).append(i)
    return [np.asarray(idx) for idx in groups.values()]


def _all_statistics(arrays: Sequence[np.ndarray], groups: Sequence[np.ndarray]) -> np.ndarray:
    out = np.empty((len(arrays), len(STATISTICS)))
    for idx in groups:
        out[idx] = batch_statistics(np.stack([arrays[i] for i in idx]))
    return out.reshape(-1)


def aggregates(scores: Mapping[str, np.ndarray], reps: int = BOOTSTRAP_REPS,
               seed: int = BOOTSTRAP_SEED) -> dict[str, dict[str, Estimate]]:
    """Per key (algorithm): IQM, median and mean of its [R, T] scores with 95% bootstrap CIs."""
    keys = list(scores)
    arrays = [check_scores(scores[k], k) for k in keys]
    if not keys:
        return {}
    groups = _shape_groups(arrays)
    point, low, high = _bootstrap(arrays, lambda *xs: _all_statistics(xs, groups), reps, seed)
    out, i = {}, 0
    for key, arr in zip(keys, arrays):
        out[key] = {}
        for name in STATISTICS:
            out[key][name] = _estimate(point[i], low[i], high[i], arr.shape[0])
            i += 1
    return out


# --------------------------------------------------------------------------- probability of improvement


def probability_of_improvement(x: np.ndarray, y: np.ndarray) -> float:
    """P(X > Y) + P(X = Y) / 2 over all run pairs, averaged over tasks; x [Rx, T], y [Ry, T].

    rliable's ``metrics.probability_of_improvement`` (Mann-Whitney U / (Rx Ry) per task)
    computed by broadcasting instead of one scipy call per task; the tests check they agree.
    """
    diff = x[:, None, :] - y[None, :, :]  # [Rx, Ry, T]
    per_task = np.mean(diff > 0, axis=(0, 1)) + 0.5 * np.mean(diff == 0, axis=(0, 1))
    return float(np.mean(per_task))


def _pair_probabilities(arrays: Sequence[np.ndarray], pairs: Sequence[tuple[int, int]]) -> np.ndarray:
    if len({a.shape for a in arrays}) == 1:
        cube = np.stack(arrays)  # [A, R, T]: every pair at once
        diff = cube[:, None, :, None, :] - cube[None, :, None, :, :]  # [A, A, R, R, T]
        p = (np.mean(diff > 0, axis=(2, 3)) + 0.5 * np.mean(diff == 0, axis=(2, 3))).mean(axis=-1)
        rows, cols = np.asarray(pairs).T
        return p[rows, cols]
    return np.array([probability_of_improvement(arrays[i], arrays[j]) for i, j in pairs])


def improvement_matrix(scores: Mapping[str, np.ndarray], reps: int = BOOTSTRAP_REPS,
                       seed: int = BOOTSTRAP_SEED) -> dict[tuple[str, str], Estimate]:
    """(x, y) -> P(x improves on y) with its 95% CI, for every ordered pair of distinct keys."""
    keys = list(scores)
    arrays = [check_scores(scores[k], k) for k in keys]
    tasks = {a.shape[1] for a in arrays}
    if len(tasks) > 1:
        raise ValueError(f"every algorithm needs the same tasks, got task counts {sorted(tasks)}")
    pairs = [(i, j) for i in range(len(keys)) for j in range(i + 1, len(keys))]
    if not pairs:
        return {}
    point, low, high = _bootstrap(arrays, lambda *xs: _pair_probabilities(xs, pairs), reps, seed)
    out = {}
    for k, (i, j) in enumerate(pairs):
        runs = min(arrays[i].shape[0], arrays[j].shape[0])
        out[(keys[i], keys[j])] = _estimate(point[k], low[k], high[k], runs)
        # P(y > x) = 1 - P(x > y) in every replicate, so its interval is the mirror image.
        out[(keys[j], keys[i])] = _estimate(1.0 - point[k], 1.0 - high[k], 1.0 - low[k], runs)
    return out


# --------------------------------------------------------------------------- performance profiles


def thresholds(scores: Mapping[str, np.ndarray], count: int = 101) -> np.ndarray:
    """``count`` evenly spaced thresholds from the lowest to the highest score of all keys."""
    values = np.concatenate([np.asarray(v, dtype=float).reshape(-1) for v in scores.values()])
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        hi = lo + 1.0
    return np.linspace(lo, hi, count)


def score_distribution(scores: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """Fraction of runs (over all runs and tasks) scoring above each tau: [K] for taus [K].

    rliable's run-score distribution (``library.run_score_deviation`` per tau), by broadcasting.
    """
    return np.mean(scores[..., None] > taus, axis=tuple(range(scores.ndim)))


def performance_profiles(scores: Mapping[str, np.ndarray], taus: np.ndarray, reps: int = BOOTSTRAP_REPS,
                         seed: int = BOOTSTRAP_SEED) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per key: (profile, low, high) at ``taus`` [K], each [K], with 95% bootstrap bands (NaN for
    a key with fewer than :data:`MIN_RUNS_FOR_INTERVAL` runs, as every interval here)."""
    keys = list(scores)
    arrays = [check_scores(scores[k], k) for k in keys]
    taus = np.asarray(taus, dtype=float)
    if not keys:
        return {}
    point, low, high = _bootstrap(arrays, lambda *xs: np.concatenate([score_distribution(x, taus) for x in xs]),
                                  reps, seed)
    k = len(taus)
    out = {}
    for i, (key, arr) in enumerate(zip(keys, arrays)):
        part = slice(i * k, (i + 1) * k)
        if arr.shape[0] < MIN_RUNS_FOR_INTERVAL:
            out[key] = (point[part], np.full(k, np.nan), np.full(k, np.nan))
        else:
            out[key] = (point[part], low[part], high[part])
    return out


# --------------------------------------------------------------------------- learning curves


def iqm_columns(values: np.ndarray) -> np.ndarray:
    """IQM across runs at each step: values [R, P] -> [P] (rliable's aggregate_iqm per column)."""
    return trimmed_mean(np.asarray(values, dtype=float), axis=0)


def curve_bands(curves: Mapping[str, np.ndarray], band: str, reps: int = BOOTSTRAP_REPS,
                seed: int = BOOTSTRAP_SEED) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per key: (IQM, low, high) across runs at each step of its curve values [R, P].

    ``band="iqr"``: the 25th and 75th percentiles across runs (the paper's shading).
    ``band="ci"``: the 95% stratified-bootstrap CI of the IQM, each step resampled on its own
    (as rliable's sample-efficiency curves). A single run has no band (low = high = the run).
    """
    if band not in BANDS:
        raise ValueError(f"band must be one of {', '.join(BANDS)}, got {band!r}")
    keys = list(curves)
    arrays = []
    for key in keys:
        arr = np.asarray(curves[key], dtype=float)
        if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1 or not np.all(np.isfinite(arr)):
            raise ValueError(f"curve values of {key!r} must be finite [runs, points], got shape {arr.shape}")
        arrays.append(arr)
    out = {}
    if band == "iqr":
        for key, arr in zip(keys, arrays):
            low, high = np.percentile(arr, [25.0, 75.0], axis=0)
            out[key] = (iqm_columns(arr), low, high)
        return out
    boot = [i for i, arr in enumerate(arrays) if arr.shape[0] > 1]
    for i, arr in enumerate(arrays):
        if arr.shape[0] == 1:
            out[keys[i]] = (arr[0].copy(), arr[0].copy(), arr[0].copy())
    if boot:
        # [R, 1, P]: rliable resamples the runs independently at every (task, step) cell.
        cubes = [arrays[i][:, None, :] for i in boot]
        point, low, high = _bootstrap(cubes, lambda *xs: np.concatenate([iqm_columns(x[:, 0, :]) for x in xs]),
                                      reps, seed)
        at = 0
        for i in boot:
            n = arrays[i].shape[1]
            out[keys[i]] = (point[at:at + n], low[at:at + n], high[at:at + n])
            at += n
    return {key: out[key] for key in keys}
