"""Learning curves and statistics of final performance from Sacred records (FileStorage or MongoDB).

For one metric (e.g. ``test_battle_won_mean``, ``test_return_mean``) against environment
steps, per environment: the IQM curve of each algorithm across seeds with a band (the 25-75%
interquartile range across seeds, or the 95% bootstrap CI of the IQM), a table of final
performance and area under the curve (IQM, median and mean with 95% stratified-bootstrap
CIs, after Agarwal et al. 2021, computed by :mod:`.stats` with rliable), the probability of
improvement of every pair of algorithms and performance profiles; pooled over the
environments (tasks) too when there are several.

Alignment: runs log their test statistics at slightly different steps and may have
different lengths, so each run is interpolated linearly onto a common step grid, never
extrapolated. A curve is drawn as far as every included run of that algorithm reaches; a
run's final performance and AUC are taken at the common horizon of the environment (the
shortest included run) so that all algorithms are compared over the same steps.

Only finished runs (Sacred status COMPLETED) that record the metric count; failed,
unfinished and superseded runs are listed with their reason, never averaged in. A study that
runs for days can be looked at before it ends with ``include_unfinished``: then the latest
attempt of each seed that has no finished run counts too (stopped, still running or gone
silent, never failed), marked as unfinished wherever it appears, and the common horizon is
the last test of the shortest of all of them.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Iterable, Mapping, Optional, Sequence

import numpy as np

from . import MissingDependency, stats
from .spec import ENV_LABEL_KEYS, env_label

log = logging.getLogger(__name__)

METRICS_PREFERRED = ("test_battle_won_mean", "test_return_mean")
STALE_AFTER_S = 120  # Sacred beats every 10 s; a RUNNING run silent this long has died
DEFAULT_POINTS = 100

# Two-sided 95% Student t quantiles for 1..30 degrees of freedom.
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
        2.045, 2.042)


class ReportError(ValueError):
    """Nothing sensible to report (no runs, unknown metric); the message names it."""


def t95(df: int) -> float:
    if df < 1:
        return math.nan
    if df <= len(_T95):
        return _T95[df - 1]
    return 1.960 + 2.4 / df  # within 0.005 of the exact quantile above 30 degrees of freedom


def mean_ci(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, half-width of its 95% t confidence interval (nan for one value), and n."""
    arr = np.asarray(values, dtype=float)
    n = int(arr.size)
    if n == 0:
        return math.nan, math.nan, 0
    mean = float(arr.mean())
    if n == 1:
        return mean, math.nan, 1
    return mean, float(t95(n - 1) * arr.std(ddof=1) / math.sqrt(n)), n


def rate_ci(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a success rate k/n. Unlike the normal approximation it stays
    inside [0, 1] and is not empty at k = 0 or k = n, which is where seed studies often land."""
    if not (isinstance(k, (int, np.integer)) and isinstance(n, (int, np.integer)) and 0 <= k <= n and n >= 1):
        raise ValueError(f"rate_ci needs integers 0 <= k <= n and n >= 1, got k={k!r}, n={n!r}")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p, z2 = k / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    # exact ends at k = 0 and k = n (rounding would otherwise leave 1e-17 above 0 or below 1)
    return (0.0 if k == 0 else centre - half), (1.0 if k == n else centre + half)


# --------------------------------------------------------------------------- records


@dataclass
class RunRecord:
    """One Sacred run as the report sees it."""

    ref: str                       # where it is: a folder, or "MongoDB run <id>"
    alg: str
    env: str
    seed: Optional[int]
    status: str                    # Sacred's, e.g. COMPLETED, FAILED, RUNNING
    started: str = ""
    sweep_id: str = ""
    error: str = ""
    heartbeat: Optional[_dt.datetime] = None
    metric_names: set[str] = field(default_factory=set)
    series: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    note: str = ""                 # why it is not included, once decided
    suite: str = ""                # PyMARL2's env config (``env``: sc2, matrix_game, ...)
    settings: dict = field(default_factory=dict)  # its config without what differs between seeds
    resume_step: int = 0           # > 0: it continued an interrupted attempt from its checkpoint at this step
    continued_from: Optional["RunRecord"] = None  # that attempt, once found (join_resumed)
    continued_by: Optional["RunRecord"] = None
    joined: set[str] = field(default_factory=set)  # series already joined with the earlier attempt's
    unfinished: str = ""           # included although not finished (include_unfinished): why, as a note

    def label(self) -> str:
        return f"{self.alg} seed {self.seed}" if self.seed is not None else f"{self.alg} ({self.ref})"

    def final(self, name: str) -> Optional[float]:
        """The value of series ``name`` at its last logged step; None when not recorded."""
        pair = self.series.get(name)
        if pair is None or not len(pair[0]):
            return None
        steps, values = pair
        return float(values[int(np.argmax(steps))])


def _task(config: Mapping) -> Optional[str]:
    """The label a sweep gives a run's environment by default (spec.ENV_LABEL_KEYS), from its config."""
    for dotted in ENV_LABEL_KEYS:
        value = config
        for part in dotted.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        if value not in (None, ""):
            return env_label(value)
    return None


def _labels(config: Mapping) -> tuple[str, str, Optional[int], str]:
    env = config.get("sweep_env") or _task(config) or config.get("env") or "?"
    alg = config.get("sweep_alg") or config.get("name") or "?"
    seed = config.get("seed")
    return str(alg), str(env), seed if isinstance(seed, int) else None, str(config.get("sweep_id") or "")


# Config keys in which the seeds of one setting may differ: the seed itself, the sweep's own tags,
# where the run was recorded, and on which device it ran.
SEED_KEYS = {"seed", "env_args.seed", "sweep_id", "sweep_alg", "sweep_env", "mongo_url", "mongo_db", "use_cuda",
             "device", "buffer_cpu_only", "unique_token", "sweep_resume_step", "checkpoint_path", "load_step",
             "name"}  # name: the results folder, which bench gives a labelled variant (sweep_alg names it)


def _resume_step(config: Mapping) -> int:
    try:
        return max(0, int(config.get("sweep_resume_step") or 0))
    except (TypeError, ValueError):
        return 0


def _flat(config: Mapping, prefix: str = "") -> dict:
    out = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _settings(config: Mapping) -> dict:
    """What a run was run with, as the dotted keys of its config, except :data:`SEED_KEYS`."""
    return {k: v for k, v in _flat(config).items() if k not in SEED_KEYS}


def check_same_settings(records: Sequence[RunRecord]) -> None:
    """Refuse to pool the seeds of one algorithm on one environment when their configs differ
    in anything but :data:`SEED_KEYS` (e.g. a sweep name reused with other settings)."""
    groups: dict[tuple[str, str], list[RunRecord]] = {}
    for r in records:
        groups.setdefault((r.env, r.alg), []).append(r)
    problems = []
    for (env, alg), runs in sorted(groups.items()):
        first = runs[0]
        for other in runs[1:]:
            keys = sorted(k for k in set(first.settings) | set(other.settings)
                          if first.settings.get(k, "<absent>") != other.settings.get(k, "<absent>"))
            if keys:
                shown = ", ".join(f"{k}: {first.settings.get(k, '<absent>')!r} vs {other.settings.get(k, '<absent>')!r}"
                                  for k in keys[:4]) + (" ..." if len(keys) > 4 else "")
                problems.append(f"{alg} on {env}: {first.label()} ({first.ref}) and {other.label()} ({other.ref}) "
                                f"differ in {shown}")
                break
    if problems:
        raise ReportError("runs of one algorithm and environment were run with different settings, so they are not "
                          "seeds of one experiment: " + "; ".join(problems) + ". Report them under different sweep "
                          "names (bench --name), or move the runs you do not mean out of the results folder")


def _last_line(trace) -> str:
    if isinstance(trace, list):
        trace = "".join(trace)
    lines = [ln.strip() for ln in str(trace or "").splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


def _parse_time(value) -> Optional[_dt.datetime]:
    if isinstance(value, _dt.datetime):
        return value.replace(tzinfo=None)
    if isinstance(value, str) and value:
        try:
            return _dt.datetime.fromisoformat(value.replace("Z", "")).replace(tzinfo=None)
        except ValueError:
            return None
    return None


def _series_from_info(info: Mapping, name: str) -> Optional[tuple[np.ndarray, np.ndarray]]:
    steps, values = info.get(f"{name}_T"), info.get(name)
    if not isinstance(steps, list) or not isinstance(values, list) or not steps or len(steps) != len(values):
        return None
    try:
        return np.asarray(steps, dtype=float), np.asarray([float(v) for v in values], dtype=float)
    except (TypeError, ValueError):
        return None


def _info_metric_names(info: Mapping) -> set[str]:
    return {k for k in info if isinstance(info.get(k), list) and f"{k}_T" in info}


def load_file_storage(roots: Iterable[str | Path], sweep: Optional[str] = None) -> list[RunRecord]:
    """Runs under FileStorage folders (``results/sacred``), with every metric loaded."""
    records = []
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            raise ReportError(f"no FileStorage folder at {root}")
        for run_json in sorted(root.rglob("run.json")):
            folder = run_json.parent
            if "_sources" in folder.parts:
                continue
            try:
                run = json.loads(run_json.read_text(encoding="utf-8"))
                config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                log.warning("skipping %s: %s", folder, exc)
                continue
            alg, env, seed, sweep_id = _labels(config)
            if sweep and sweep_id != sweep:
                continue
            record = RunRecord(str(folder), alg, env, seed, str(run.get("status", "?")), str(run.get("start_time", "")),
                               sweep_id, _last_line(run.get("fail_trace")), _parse_time(run.get("heartbeat")))
            record.suite = str(config.get("env") or "")
            record.settings = _settings(config)
            record.resume_step = _resume_step(config)
            metrics = _read_json(folder / "metrics.json")
            for name, entry in metrics.items():
                if isinstance(entry, Mapping) and entry.get("steps"):
                    try:
                        record.series[name] = (np.asarray(entry["steps"], dtype=float),
                                               np.asarray(entry["values"], dtype=float))
                    except (TypeError, ValueError):
                        continue
            info = _read_json(folder / "info.json")
            for name in _info_metric_names(info) - set(record.series):
                # Runs recorded before patch 0005 have their statistics in info only.
                if (pair := _series_from_info(info, name)) is not None:
                    record.series[name] = pair
            record.metric_names = set(record.series)
            records.append(record)
    return records


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _projected_info(doc: Mapping) -> dict:
    # MongoDB nests projected sub-fields ({"info": {...}}); some wire-compatible servers
    # (nx-27017) return them as dotted top-level keys instead. Accept both.
    info = dict(doc.get("info") or {})
    info.update({key[5:]: value for key, value in doc.items() if key.startswith("info.")})
    return info


class MongoSource:
    """Runs in a Sacred MongoDB (``runs`` and ``metrics`` collections); metrics load on demand."""

    def __init__(self, target, timeout_ms: int = 5000):
        try:
            import pymongo
        except ImportError:
            raise MissingDependency("reading runs from MongoDB needs pymongo: pip install pymongo") from None
        self.target = target
        self.client = pymongo.MongoClient(target.url, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms)
        self.db = self.client[target.db]
        self._ids: dict[int, RunRecord] = {}

    def close(self) -> None:
        self.client.close()

    def runs(self, sweep: Optional[str] = None) -> list[RunRecord]:
        query = {"config.sweep_id": sweep} if sweep else {}
        fields = {"status": 1, "start_time": 1, "heartbeat": 1, "fail_trace": 1, "config": 1}
        records = []
        for doc in self.db.runs.find(query, fields):
            alg, env, seed, sweep_id = _labels(doc.get("config") or {})
            record = RunRecord(f"MongoDB run {doc['_id']}", alg, env, seed, str(doc.get("status", "?")),
                               str(doc.get("start_time", "")), sweep_id, _last_line(doc.get("fail_trace")),
                               _parse_time(doc.get("heartbeat")))
            record.suite = str((doc.get("config") or {}).get("env") or "")
            record.settings = _settings(doc.get("config") or {})
            record.resume_step = _resume_step(doc.get("config") or {})
            self._ids[doc["_id"]] = record
            records.append(record)
        if self._ids:
            for doc in self.db.metrics.find({"run_id": {"$in": list(self._ids)}}, {"run_id": 1, "name": 1}):
                if doc.get("run_id") in self._ids:
                    self._ids[doc["run_id"]].metric_names.add(str(doc.get("name")))
            # Runs recorded before patch 0005 have their statistics in the run's info only.
            bare = [i for i, r in self._ids.items() if not r.metric_names]
            if bare:
                for doc in self.db.runs.find({"_id": {"$in": bare}}, {"info": 1}):
                    self._ids[doc["_id"]].metric_names |= _info_metric_names(doc.get("info") or {})
        return records

    def load_metric(self, name: str) -> None:
        if not self._ids:
            return
        for doc in self.db.metrics.find({"run_id": {"$in": list(self._ids)}, "name": name},
                                        {"run_id": 1, "steps": 1, "values": 1}):
            record = self._ids.get(doc.get("run_id"))
            if record is not None and doc.get("steps"):
                record.series[name] = (np.asarray(doc["steps"], dtype=float), np.asarray(doc["values"], dtype=float))
        missing = [i for i, r in self._ids.items() if name in r.metric_names and name not in r.series]
        if missing:
            for doc in self.db.runs.find({"_id": {"$in": missing}}, {f"info.{name}": 1, f"info.{name}_T": 1}):
                pair = _series_from_info(_projected_info(doc), name)
                if pair is not None:
                    self._ids[doc["_id"]].series[name] = pair


# --------------------------------------------------------------------------- statistics


def choose_metric(records: Sequence[RunRecord], metric: Optional[str]) -> str:
    available = sorted(set().union(*(r.metric_names for r in records))) if records else []
    if metric:
        if metric not in available:
            shown = ", ".join(available[:40]) + (", ..." if len(available) > 40 else "")
            raise ReportError(f"no run records the metric {metric!r}; the runs record: {shown or 'nothing'}")
        return metric
    for name in METRICS_PREFERRED:
        if name in available:
            return name
    raise ReportError(f"the runs record neither {' nor '.join(METRICS_PREFERRED)}; choose one with --metric "
                      f"from: {', '.join(available[:40]) or 'nothing'}")


#: Metrics where a lower value is better (errors, losses, rates of failure): their performance
#: profiles count runs *below* each threshold and their probability of improvement is P(X < Y).
#: ``report --lower-is-better`` / ``--higher-is-better`` overrides this for the metric reported.
LOWER_IS_BETTER = frozenset({
    "worst_greedy_action_rate", "igm_violation_rate", "igm_violation_rate_lower_bound",
    "negative_mixing_gradient_rate", "payoff_max_abs_error", "loss_td", "loss_total", "td_error_abs",
    "td_error_abs_mean", "rnd_loss", "monotonicity_hinge", "igm_hinge",
})


def lower_is_better(metric: str, override: Optional[bool] = None) -> bool:
    return metric in LOWER_IS_BETTER if override is None else override


FALLBACK_METRIC = "test_return_mean"


def fallback_metric(records: Sequence[RunRecord], metric: str) -> tuple[str, str]:
    """The metric to report when none was asked for, and why, if it is not ``metric``: a win rate
    that is 0 in every run (no battle won yet, as in a short first SMAClite comparison) says
    nothing, and the return, which counts damage and kills, does."""
    if metric != "test_battle_won_mean":
        return metric, ""
    values = [v for r in records if (pair := r.series.get(metric)) is not None for v in pair[1]]
    if values and max(values) == 0 and any(FALLBACK_METRIC in r.series for r in records):
        return FALLBACK_METRIC, (f"No run won a test battle (test_battle_won_mean is 0 throughout), so this report "
                                 f"is of {FALLBACK_METRIC}; --metric test_battle_won_mean reports the win rate anyway.")
    return metric, ""


@dataclass
class Curve:
    alg: str
    steps: np.ndarray              # [P]
    values: np.ndarray             # [R, P]: each included run interpolated onto ``steps``
    seeds: list
    excluded: list[RunRecord]
    centre: Optional[np.ndarray] = None   # [P] IQM across runs
    low: Optional[np.ndarray] = None      # [P] lower edge of the band
    high: Optional[np.ndarray] = None     # [P] upper edge of the band
    unfinished: int = 0                   # how many of its runs have not finished

    @property
    def n(self) -> int:
        return int(self.values.shape[0])

    @property
    def legend(self) -> str:
        return _runs_label(self.n, self.unfinished)


def _runs_label(n: int, unfinished: int) -> str:
    """A number of runs, and of unfinished ones, for a legend: a figure may travel without its caption."""
    return f"n={n}" + (f", {unfinished} unfinished" if unfinished else "")


@dataclass
class Row:
    alg: str
    seeds: list
    finals: np.ndarray             # [R] final performance of each included run
    aucs: np.ndarray               # [R] area under its curve (mean of the curve)
    excluded: list[RunRecord]
    unfinished: list = field(default_factory=list)  # seeds among ``seeds`` whose run has not finished
    final: dict = field(default_factory=dict)   # statistic name -> stats.Estimate
    auc: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(len(self.finals))


@dataclass
class Comparison:
    """Between-algorithm statistics of final performance over one or several tasks."""

    scores: dict                   # alg -> [R, T] final values
    improvement: dict              # (x, y) -> stats.Estimate of P(x > y)
    taus: np.ndarray               # [K] thresholds of the performance profiles
    profiles: dict                 # alg -> (fraction above tau, low, high), each [K]
    aggregates: dict = field(default_factory=dict)   # alg -> statistic -> stats.Estimate
    dropped: list = field(default_factory=list)      # notes on runs left out to make [R, T] rectangular
    png: Optional[str] = None
    lower_is_better: bool = False  # profiles count runs below tau; improvement is P(X < Y)
    unfinished: dict = field(default_factory=dict)  # alg -> how many of its scores are of runs not finished


@dataclass
class EnvReport:
    env: str
    metric: str
    curves: list[Curve]
    rows: list[Row]
    horizon: tuple[float, float]   # [start, end] of the common steps
    excluded: list[RunRecord]
    png: Optional[str] = None
    resumed: list[str] = field(default_factory=list)  # included runs made of several attempts, as text
    runs: list[RunRecord] = field(default_factory=list)  # the included runs
    comparison: Optional[Comparison] = None

    @property
    def unfinished(self) -> list[str]:
        """The included runs not finished yet, as text."""
        return [f"{r.label()}: {r.unfinished} ({r.ref})" for r in self.runs if r.unfinished]


def join_resumed(records: Sequence[RunRecord]) -> None:
    """Make each resumed attempt the continuation of the one it resumed, in place.

    ``bench`` resumes an interrupted run from its checkpoint at step K as a new Sacred run tagged
    ``sweep_resume_step=K``. The attempt it continues is the newest earlier run of the same sweep,
    environment, algorithm and seed; its values up to step K (the state the checkpoint holds) are
    put in front of the resumed attempt's, which redoes everything after K. Chains of resumes join
    oldest first. Series loaded later (MongoDB loads a metric on demand) join when this is called
    again."""
    by_run: dict[tuple, list[RunRecord]] = {}
    for r in records:
        if r.seed is not None:
            by_run.setdefault((r.sweep_id, r.env, r.alg, r.seed), []).append(r)
    for attempts in by_run.values():
        attempts.sort(key=lambda r: r.started)
        for i, r in enumerate(attempts):
            if r.resume_step <= 0 or i == 0:
                continue
            earlier = attempts[i - 1]
            r.continued_from, earlier.continued_by = earlier, r
            for name, (steps, values) in list(r.series.items()):
                if name in r.joined or name not in earlier.series:
                    continue
                old_steps, old_values = earlier.series[name]
                keep = old_steps <= r.resume_step
                r.series[name] = (np.concatenate([old_steps[keep], steps]), np.concatenate([old_values[keep], values]))
                r.joined.add(name)
            r.metric_names |= earlier.metric_names


def classify(records: Sequence[RunRecord], metric: str, now: Optional[_dt.datetime] = None,
             include_unfinished: bool = False) -> tuple[list, list]:
    """(included, excluded): finished runs with the metric, and the others with ``note`` set.

    A resumed run is one run: its earlier attempts are joined into it (:func:`join_resumed`) and
    listed as continued, not as unfinished. With ``include_unfinished``, a seed with no finished
    run is represented by its newest unfinished attempt that logged the metric (``unfinished``
    says why it is not finished); failed runs stay out."""
    now = now or _dt.datetime.utcnow()
    join_resumed(records)
    included, excluded = [], []
    for r in records:
        r.note = ""  # decided afresh for this metric: a record may be classified once per metric
        r.unfinished = ""
        if r.continued_by is not None:
            later = r.continued_by
            r.note = (f"continued: its steps up to {later.resume_step:,} are the start of the resumed run "
                      f"({later.ref}, {later.status})")
            excluded.append(r)
            continue
        if r.status == "COMPLETED":
            pair = r.series.get(metric)
            if pair is None or not len(pair[0]):
                r.note = f"finished without {metric}"
                excluded.append(r)
            else:
                included.append(r)
            continue
        if r.status == "FAILED":
            r.note = "failed" + (f": {r.error}" if r.error else "")
        elif r.status == "RUNNING":
            age = (now - r.heartbeat).total_seconds() if r.heartbeat else None
            r.note = ("unfinished: still running" if age is not None and age < STALE_AFTER_S else
                      "unfinished: RUNNING but silent (" + (f"last heartbeat {int(age)} s ago" if age is not None
                                                             else "no heartbeat") + "; the process died?)")
        else:
            r.note = f"unfinished: {r.status}"
        excluded.append(r)
    # One run per (env, alg, seed): a repeated seed keeps its newest finished run.
    newest: dict[tuple, RunRecord] = {}
    for r in sorted(included, key=lambda r: r.started):
        if r.seed is not None:
            key = (r.env, r.alg, r.seed)
            if key in newest:
                old = newest[key]
                old.note = f"superseded by a newer finished run of the same seed ({r.ref})"
                excluded.append(old)
            newest[key] = r
    # An attempt that failed or was stopped and then re-run to the end is history, not an
    # open run: counted as superseded (its own note kept after the reference).
    for r in excluded:
        finished = newest.get((r.env, r.alg, r.seed)) if r.seed is not None else None
        if (finished is not None and finished is not r and r.started is not None and finished.started is not None
                and r.started < finished.started and not r.note.startswith(("superseded", "continued"))):
            r.note = f"superseded by a newer finished run of the same seed ({finished.ref}); was {r.note}"
    if include_unfinished:
        included += _latest_unfinished(excluded, metric, set(newest))
        excluded = [r for r in excluded if not r.unfinished]
    kept = [r for r in included if not r.note]
    check_same_settings(kept)
    return kept, excluded


def _latest_unfinished(excluded: Sequence[RunRecord], metric: str, finished: set) -> list[RunRecord]:
    """The newest unfinished attempt of each seed without a finished run (``finished``: the
    (env, alg, seed) that have one), with ``unfinished`` set and ``note`` cleared; an older
    unfinished attempt of the same seed gets a note saying so."""
    open_runs = [r for r in excluded if r.note.startswith("unfinished") and r.series.get(metric) is not None
                 and len(r.series[metric][0]) and (r.env, r.alg, r.seed) not in finished]
    newest: dict[tuple, RunRecord] = {}
    chosen = []
    for r in sorted(open_runs, key=lambda r: r.started or ""):
        if r.seed is None:
            chosen.append(r)
            continue
        key = (r.env, r.alg, r.seed)
        if key in newest:
            newest[key].note = f"superseded by a newer unfinished run of the same seed ({r.ref}); was {newest[key].note}"
        newest[key] = r
    chosen += newest.values()
    for r in chosen:
        last = float(r.series[metric][0].max())
        r.unfinished = f"{r.note.removeprefix('unfinished: ')}, last logged at step {last:,.0f}"
        r.note = ""
    return chosen


def _interp(record: RunRecord, metric: str, grid: np.ndarray) -> np.ndarray:
    steps, values = record.series[metric]
    order = np.argsort(steps, kind="stable")
    return np.interp(grid, steps[order], values[order])


def _span(record: RunRecord, metric: str) -> tuple[float, float]:
    steps = record.series[metric][0]
    return float(steps.min()), float(steps.max())


def _trapezoid(values: np.ndarray, steps: np.ndarray) -> float:
    return float(np.sum((values[1:] + values[:-1]) * np.diff(steps)) / 2.0)


def _last_attempt(r: RunRecord) -> RunRecord:
    """The attempt that ends the chain of resumes ``r`` belongs to (``r`` itself if not resumed)."""
    while r.continued_by is not None:
        r = r.continued_by
    return r


def _seed_key(seed) -> tuple:
    return (seed is None, seed if seed is not None else 0)


def env_report(env: str, metric: str, included: Sequence[RunRecord], excluded: Sequence[RunRecord],
               points: int = DEFAULT_POINTS) -> EnvReport:
    """Per-run curves on the common grid, and each run's final value and AUC (no statistics yet).

    The earlier attempts of an included resumed run are part of it (named in ``resumed``), not
    runs left out: they are not listed among the excluded."""
    algs = sorted({r.alg for r in list(included) + list(excluded)})
    counted = {id(r) for r in included}
    excluded = [r for r in excluded if id(_last_attempt(r)) not in counted]
    empty = np.zeros(0)
    if not included:
        rows = [Row(a, [], empty, empty, [r for r in excluded if r.alg == a]) for a in algs]
        return EnvReport(env, metric, [], rows, (math.nan, math.nan), list(excluded))
    spans = [_span(r, metric) for r in included]
    start = max(s for s, _ in spans)
    common_end = min(e for _, e in spans)
    if common_end < start:  # runs that do not overlap at all: compare where each ends
        common_end = start
    grid = np.linspace(start, max(e for _, e in spans), max(2, points))
    at = np.union1d(grid[grid <= common_end], [common_end])
    width = at[-1] - at[0]
    curves, rows = [], []
    for alg in algs:
        runs = sorted((r for r in included if r.alg == alg), key=lambda r: _seed_key(r.seed))
        gone = [r for r in excluded if r.alg == alg]
        if not runs:
            rows.append(Row(alg, [], empty, empty, gone))
            continue
        end = max(start, min(_span(r, metric)[1] for r in runs))
        steps = np.union1d(grid[grid <= end], [end])
        curves.append(Curve(alg, steps, np.stack([_interp(r, metric, steps) for r in runs]), [r.seed for r in runs], gone,
                            unfinished=sum(1 for r in runs if r.unfinished)))
        # Final performance of a run: its curve at the environment's common horizon, so that
        # every algorithm is compared at the same step; AUC: the mean of its curve up to there.
        vals = np.stack([_interp(r, metric, at) for r in runs])
        finals = vals[:, -1]
        aucs = (np.sum((vals[:, 1:] + vals[:, :-1]) * np.diff(at), axis=1) / 2.0 / width) if width > 0 else finals.copy()
        rows.append(Row(alg, [r.seed for r in runs], finals, aucs, gone, [r.seed for r in runs if r.unfinished]))
    return EnvReport(env, metric, curves, rows, (start, common_end), list(excluded), resumed=_resumed_text(included),
                     runs=sorted(included, key=lambda r: (r.alg, _seed_key(r.seed))))


def _resumed_text(included: Sequence[RunRecord]) -> list[str]:
    """One line per included run made of several attempts, naming every step it was resumed at."""
    out = []
    for r in sorted(included, key=lambda r: (r.alg, r.seed or 0)):
        joins = []  # (step, attempt, what it continues), newest first
        attempt = r
        while attempt is not None and attempt.resume_step > 0:
            before = (f"continuing {attempt.continued_from.ref}" if attempt.continued_from is not None else
                      "its earlier attempt was not found: the curve starts there")
            joins.append((attempt.resume_step, attempt.ref, before))
            attempt = attempt.continued_from
        if len(joins) == 1:
            step, ref, before = joins[0]
            out.append(f"{r.label()}: resumed from its checkpoint at step {step:,} ({ref}; {before})")
        elif joins:
            parts = [f"{step:,} ({ref}, {before})" for step, ref, before in reversed(joins)]
            out.append(f"{r.label()}: resumed {len(joins)} times, from its checkpoints at steps "
                       f"{', '.join(parts[:-1])} and {parts[-1]}")
    return out


def _compare(scores: dict, reps: int, seed: int, aggregated: Optional[dict] = None,
             lower: bool = False) -> Comparison:
    """Between-algorithm statistics; with ``lower`` (lower is better) the improvement and the
    profiles are those of the negated scores, and the profiles' thresholds are given back in the
    metric's own sign (each profile is then the fraction of runs below tau)."""
    ranked = {alg: -v for alg, v in scores.items()} if lower else scores
    taus = stats.thresholds(ranked)
    profiles = stats.performance_profiles(ranked, taus, reps, seed)
    return Comparison(scores, stats.improvement_matrix(ranked, reps, seed), -taus if lower else taus, profiles,
                      aggregated if aggregated is not None else stats.aggregates(scores, reps, seed),
                      lower_is_better=lower)


def add_statistics(env: EnvReport, band: str = "iqr", reps: int = stats.BOOTSTRAP_REPS,
                   seed: int = stats.BOOTSTRAP_SEED, lower: bool = False) -> None:
    """IQM/median/mean with bootstrap CIs per row, curve bands, and the comparison of algorithms."""
    rows = [row for row in env.rows if row.n]
    if not rows:
        return
    finals = stats.aggregates({row.alg: row.finals[:, None] for row in rows}, reps, seed)
    aucs = stats.aggregates({row.alg: row.aucs[:, None] for row in rows}, reps, seed)
    for row in rows:
        row.final, row.auc = finals[row.alg], aucs[row.alg]
    bands = stats.curve_bands({c.alg: c.values for c in env.curves}, band, reps, seed)
    for curve in env.curves:
        curve.centre, curve.low, curve.high = bands[curve.alg]
    env.comparison = _compare({row.alg: row.finals[:, None] for row in rows}, reps, seed, finals, lower)
    env.comparison.unfinished = {row.alg: len(row.unfinished) for row in rows if row.unfinished}


def across_tasks(envs: Sequence[EnvReport], reps: int = stats.BOOTSTRAP_REPS,
                 seed: int = stats.BOOTSTRAP_SEED, lower: bool = False) -> Optional[Comparison]:
    """Final performance pooled over the environments (tasks) every algorithm here ran on.

    rliable needs one [R, T] matrix per algorithm: with unequal numbers of finished runs per
    task, an algorithm keeps its first R (by seed) on every task, R its smallest count; the
    runs left out are listed. Values are pooled unnormalised: meaningful when the tasks share
    a scale (win rates, one game's payoffs).
    """
    envs = [e for e in envs if any(row.n for row in e.rows)]
    if len(envs) < 2:
        return None
    per_alg = [{row.alg: row for row in e.rows if row.n} for e in envs]
    common = sorted(set.intersection(*(set(d) for d in per_alg)))
    dropped = [f"{alg}: not run to the end on every environment" for alg in sorted(set().union(*per_alg)) if alg not in common]
    scores, unfinished = {}, {}
    for alg in common:
        rows = [d[alg] for d in per_alg]
        r = min(row.n for row in rows)
        for e, row in zip(envs, rows):
            if row.n > r:
                dropped.append(f"{alg} on {e.env}: seeds {', '.join(str(s) for s in row.seeds[r:])} "
                               f"(only {r} run{'' if r == 1 else 's'} counted on another environment)")
        scores[alg] = np.stack([row.finals[:r] for row in rows], axis=1)
        unfinished[alg] = sum(1 for row in rows for s in row.seeds[:r] if s in row.unfinished)
    if not scores:
        return None
    comparison = _compare(scores, reps, seed, lower=lower)
    comparison.dropped = dropped
    comparison.unfinished = {alg: k for alg, k in unfinished.items() if k}
    return comparison


_NO_INTERVAL = "[no interval: 1 run]"


def _est(e) -> str:
    if e is None or math.isnan(e.point):
        return "–"
    if not e.has_interval:
        return f"{_num(e.point)} {_NO_INTERVAL}"
    return f"{_num(e.point)} [{_num(e.low)}, {_num(e.high)}]"


def _prob(e) -> str:
    if not e.has_interval:
        return f"{e.point:.2f} {_NO_INTERVAL}"
    return f"{e.point:.2f} [{e.low:.2f}, {e.high:.2f}]"


@dataclass
class Report:
    metric: str
    source: str
    sweep: Optional[str]
    envs: list[EnvReport]
    n_runs: int
    band: str = "iqr"
    reps: int = stats.BOOTSTRAP_REPS
    overall: Optional[Comparison] = None
    note: str = ""
    include_unfinished: bool = False  # a progress report: unfinished runs count, marked
    at: tuple[int, ...] = ()  # steps of the per-run table (--at); none: no table

    def table(self, env: EnvReport) -> str:
        """Final performance and AUC: IQM [95% bootstrap CI] across seeds, seeds, runs not included."""
        head = (f"| algorithm | final {self.metric}: IQM [95% CI] | AUC: IQM [95% CI] | seeds | not included |\n"
                "|---|---|---|---|---|\n")
        lines = [f"| {row.alg} | {_est(row.final.get('IQM'))} | {_est(row.auc.get('IQM'))} | "
                 f"{row.n}{f' ({len(row.unfinished)} unfinished)' if row.unfinished else ''} | "
                 f"{_count_notes(row.excluded)} |" for row in env.rows]
        return head + "\n".join(lines) + "\n"

    def more_table(self, env: EnvReport) -> str:
        head = ("| algorithm | final: median [95% CI] | final: mean [95% CI] | AUC: median [95% CI] | AUC: mean [95% CI] |\n"
                "|---|---|---|---|---|\n")
        lines = [f"| {row.alg} | {_est(row.final.get('median'))} | {_est(row.final.get('mean'))} | "
                 f"{_est(row.auc.get('median'))} | {_est(row.auc.get('mean'))} |" for row in env.rows if row.n]
        return head + "\n".join(lines) + "\n"

    @staticmethod
    def improvement_table(comparison: Comparison) -> str:
        algs = list(comparison.scores)
        which = "P(row < column): lower is better" if comparison.lower_is_better else "P(row > column)"
        head = f"| {which} | " + " | ".join(algs) + " |\n|---|" + "---|" * len(algs) + "\n"
        lines = ["| " + x + " | " + " | ".join("–" if x == y else _prob(comparison.improvement[(x, y)]) for y in algs) + " |"
                 for x in algs]
        return head + "\n".join(lines) + "\n"

    @staticmethod
    def aggregate_table(comparison: Comparison) -> str:
        head = "| algorithm | runs × tasks | IQM [95% CI] | median of task means [95% CI] | mean [95% CI] |\n|---|---|---|---|---|\n"
        lines = [f"| {alg} | {s.shape[0]} × {s.shape[1]} | {_est(comparison.aggregates[alg]['IQM'])} | "
                 f"{_est(comparison.aggregates[alg]['median'])} | {_est(comparison.aggregates[alg]['mean'])} |"
                 for alg, s in comparison.scores.items()]
        return head + "\n".join(lines) + "\n"

    @property
    def _counted(self) -> str:
        return "included" if self.include_unfinished else "finished"

    def _counting_text(self) -> str:
        if not self.include_unfinished:
            return "Only finished runs count; the others are listed under each table."
        return ("**Progress report** (`--include-unfinished`): runs not finished yet count too, each seed by its "
                "latest attempt, so the values are those of training in progress and will change. They are marked "
                "in the seeds column and listed under each table; failed runs never count.")

    def _band_text(self) -> str:
        return ("25–75% interquartile range across seeds" if self.band == "iqr" else
                f"95% stratified-bootstrap CI of the IQM ({self.reps} resamples)")

    def markdown(self) -> str:
        title = f"# {self.metric}" + (f" — sweep `{self.sweep}`" if self.sweep else "")
        out = [title, "",
               f"Source: {self.source} ({self.n_runs} runs). Statistics after Agarwal et al. (NeurIPS 2021), computed "
               f"with rliable: interquartile mean (IQM: the mean of the middle 50% of runs), median and mean across "
               f"seeds, each with a 95% stratified-bootstrap percentile interval ({self.reps} resamples; none where an "
               f"algorithm has a single run, whose every resample is that run). A run's "
               f"**final** performance is its value at the environment's common horizon (the end of its shortest "
               f"{self._counted} run); **AUC** is the mean of its learning curve up to there (same unit as the metric). "
               f"Curves: IQM across seeds, band: {self._band_text()}. " + self._counting_text(), ""]
        out += [self.note, ""] if self.note else []
        for env in self.envs:
            out += [f"## {env.env}", ""]
            if env.png:
                out += [f"![{self.metric} on {env.env}]({Path(env.png).name})", ""]
            start, end = env.horizon
            if math.isnan(end):
                out += [f"No {self._counted} run records this metric here.", ""]
            else:
                out += [f"Final value at step {end:,.0f}, the common horizon (the shortest {self._counted} run here); "
                        f"AUC over steps {start:,.0f}–{end:,.0f}.", ""]
            out += [self.table(env)]
            if self.at and env.runs:
                out += ["Per run: the value first logged at or after each step, and the last:", "",
                        run_table(env.runs, self.metric, self.at)]
            if any(row.n for row in env.rows):
                out += [self.more_table(env)]
            if env.comparison is not None and len(env.comparison.scores) > 1:
                better = "X < Y: lower is better" if env.comparison.lower_is_better else "X > Y"
                out += [f"Probability of improvement of final performance (P({better}) + P(X = Y)/2 over pairs of runs):",
                        "", self.improvement_table(env.comparison)]
            if env.comparison is not None and env.comparison.png:
                out += [f"![performance profile on {env.env}]({Path(env.comparison.png).name})", ""]
            if env.unfinished:
                out += ["Not finished, included with their values up to their last test:", ""]
                out += [f"- {line}" for line in env.unfinished] + [""]
            if env.resumed:
                out += ["Resumed after an interruption (each one run, its attempts joined at the checkpoint's step):", ""]
                out += [f"- {line}" for line in env.resumed] + [""]
            if env.excluded:
                out += ["Not included:", ""]
                out += [f"- {r.label()}: {r.note} ({r.ref})" for r in sorted(env.excluded, key=lambda r: (r.alg, r.seed or 0))]
                out += [""]
        if self.overall is not None:
            tasks = next(iter(self.overall.scores.values())).shape[1]
            out += [f"## All {tasks} environments (tasks)", "",
                    "Final values pooled over the environments unnormalised (meaningful when they share a scale); "
                    "runs resampled within each environment.", "", self.aggregate_table(self.overall)]
            if len(self.overall.scores) > 1:
                out += ["Probability of improvement, averaged over environments:", "",
                        self.improvement_table(self.overall)]
            if self.overall.png:
                out += [f"![performance profile over all environments]({Path(self.overall.png).name})", ""]
            if self.overall.dropped:
                out += ["Left out of the pooled statistics:", ""] + [f"- {d}" for d in self.overall.dropped] + [""]
        return "\n".join(out)

    def _comparisons(self):
        for env in self.envs:
            if env.comparison is not None:
                yield env.env, env.comparison
        if self.overall is not None:
            yield "all", self.overall

    def write_csv(self, out_dir: Path) -> list[Path]:
        """aggregates.csv, probability_of_improvement.csv, performance_profiles.csv, curves.csv
        (the learning curves as plotted) and runs.csv (each included run's values as logged, attempts
        joined) in ``out_dir``."""
        out_dir.mkdir(parents=True, exist_ok=True)
        agg = [("scope", "algorithm", "quantity", "statistic", "estimate", "ci_low", "ci_high", "runs", "tasks")]
        for env in self.envs:
            for row in env.rows:
                for quantity, ests in (("final", row.final), ("auc", row.auc)):
                    for name, e in ests.items():
                        agg.append((env.env, row.alg, quantity, name, e.point, e.low, e.high, row.n, 1))
        if self.overall is not None:
            for alg, ests in self.overall.aggregates.items():
                shape = self.overall.scores[alg].shape
                for name, e in ests.items():
                    agg.append(("all", alg, "final", name, e.point, e.low, e.high, shape[0], shape[1]))
        poi = [("scope", "x", "y", "p_x_improves_on_y", "ci_low", "ci_high")]
        prof = [("scope", "algorithm", "tau", "fraction_above", "ci_low", "ci_high")]
        for scope, comp in self._comparisons():
            poi += [(scope, x, y, e.point, e.low, e.high) for (x, y), e in comp.improvement.items()]
            for alg, (p, lo, hi) in comp.profiles.items():
                prof += [(scope, alg, t, a, b, c) for t, a, b, c in zip(comp.taus, p, lo, hi)]
        # The learning curves as plotted: one row per algorithm, environment and step of the grid.
        curves = [("env", "algorithm", "step", "iqm", "band_low", "band_high", "band", "runs")]
        for env in self.envs:
            for c in env.curves:
                curves += [(env.env, c.alg, step, centre, low, high, self.band, c.n)
                           for step, centre, low, high in zip(c.steps, c.centre, c.low, c.high)]
        runs = [("env", "algorithm", "seed", "finished", "step", "value")]
        for env in self.envs:
            for r in env.runs:
                steps, values = r.series[self.metric]
                order = np.argsort(steps, kind="stable")
                runs += [(env.env, r.alg, r.seed, not r.unfinished, int(steps[i]) if float(steps[i]).is_integer()
                          else float(steps[i]), float(values[i])) for i in order]
        paths = []
        for name, table in (("aggregates.csv", agg), ("probability_of_improvement.csv", poi),
                            ("performance_profiles.csv", prof), ("curves.csv", curves), ("runs.csv", runs)):
            path = out_dir / name
            with path.open("w", newline="", encoding="utf-8") as f:
                csv.writer(f).writerows(table)
            paths.append(path)
        return paths


def _count_notes(records: Sequence[RunRecord]) -> str:
    counts: dict[str, int] = {}
    for r in records:
        kind = r.note.split(":")[0].split(" (")[0]
        kind = "superseded" if kind.startswith("superseded") else kind
        counts[kind] = counts.get(kind, 0) + 1
    return ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))


def parse_steps(text: str) -> tuple[int, ...]:
    """``--at``: env steps as a comma-separated list, each an integer or with a k/M suffix
    (``100k,200k,1.5M``); increasing, positive."""
    steps = []
    for item in (t.strip() for t in text.split(",")):
        scale = {"k": 1_000, "m": 1_000_000}.get(item[-1:].lower(), 1)
        try:
            value = float(item[:-1] if scale > 1 else item) * scale
        except ValueError:
            raise ReportError(f"--at: {item!r} is not a step (e.g. 100k, 250000, 1.5M)") from None
        if value <= 0 or not value.is_integer():
            raise ReportError(f"--at: {item!r} is not a positive whole number of steps")
        steps.append(int(value))
    if list(steps) != sorted(set(steps)):
        raise ReportError(f"--at: steps must increase, got {text!r}")
    return tuple(steps)


def value_at(steps: np.ndarray, values: np.ndarray, at: float) -> Optional[float]:
    """The value first logged at or after step ``at``; None if the run has none."""
    later = np.flatnonzero(steps >= at)
    return None if not len(later) else float(values[later[np.argmin(steps[later])]])


def _kilo(step: float) -> str:
    # Thousands where that loses nothing or little (894,012 -> 894k); small steps exactly.
    return f"{step / 1000:,.0f}k" if step >= 10_000 or step % 1000 == 0 else f"{step:,.0f}"


def run_table(runs: Sequence[RunRecord], metric: str, at: Sequence[int]) -> str:
    """One row per run (algorithm and seed): ``metric`` first logged at or after each step of ``at``
    (blank where the run stops before it) and its last value with the step it was logged at.
    Two decimals when every value lies in [-1, 1] (rates), else one."""
    shown = sorted((r for r in runs if r.final(metric) is not None), key=lambda r: (r.alg, _seed_key(r.seed)))
    digits = 2 if all(np.all(np.abs(r.series[metric][1]) <= 1) for r in shown) else 1

    def number(x: float) -> str:
        text = f"{x:.{digits}f}"
        return text[1:] if text.startswith("-") and not text.strip("-0.") else text  # no "-0.0"
    head = ("| run | " + " | ".join(_kilo(s) for s in at) + " | last (step) |\n|---|" + "---|" * (len(at) + 1) + "\n")
    lines = []
    for r in shown:
        steps, values = r.series[metric]
        cells = [number(v) if (v := value_at(steps, values, s)) is not None else "" for s in at]
        name = f"`{r.alg}` s{r.seed}" + (" (not finished)" if r.unfinished else "")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {number(r.final(metric))} ({_kilo(steps.max())}) |")
    return head + "\n".join(lines) + "\n"


def _num(x: float) -> str:
    return f"{x:.3f}" if abs(x) < 100 else f"{x:,.1f}"


def _fmt(stat: tuple[float, float, int]) -> str:
    mean, half, n = stat
    if n == 0 or math.isnan(mean):
        return "–"
    return _num(mean) if math.isnan(half) else f"{_num(mean)} ± {_num(half)}"


def build_report(records: Sequence[RunRecord], metric: str, source: str, sweep: Optional[str],
                 points: int = DEFAULT_POINTS, band: str = "iqr", reps: int = stats.BOOTSTRAP_REPS,
                 seed: int = stats.BOOTSTRAP_SEED, lower: Optional[bool] = None, note: str = "",
                 include_unfinished: bool = False, at: Sequence[int] = ()) -> Report:
    """``lower``: whether lower values of ``metric`` are better (default: :data:`LOWER_IS_BETTER`);
    ``note``: a sentence for the top of the Markdown (e.g. why this metric was chosen);
    ``include_unfinished``: a progress report, see :func:`classify`; ``at``: steps of a per-run
    table in each environment's section (:func:`run_table`)."""
    if not records:
        raise ReportError(f"no runs{' of sweep ' + repr(sweep) if sweep else ''} in {source}")
    if band not in stats.BANDS:
        raise ReportError(f"band must be one of {', '.join(stats.BANDS)}, got {band!r}")
    stats.rliable()  # fail before any work when the statistics cannot be computed
    included, excluded = classify(records, metric, include_unfinished=include_unfinished)
    envs = []
    for env in sorted({r.env for r in records}):
        report = env_report(env, metric, [r for r in included if r.env == env], [r for r in excluded if r.env == env],
                            points)
        add_statistics(report, band, reps, seed, lower_is_better(metric, lower))
        envs.append(report)
    return Report(metric, source, sweep, envs, len(records), band, reps,
                  across_tasks(envs, reps, seed, lower_is_better(metric, lower)), note=note,
                  include_unfinished=include_unfinished, at=tuple(at))


# --------------------------------------------------------------------------- plots


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+=-]+", "_", name) or "env"


_STYLES = ("-", "--", ":", "-.")


def _seeds_text(counts: Sequence[int]) -> str:
    """The number of seeds behind a curve or profile, in words: "1 seed", "3 seeds", "2–3 seeds"."""
    counts = [c for c in counts if c]
    if not counts:
        return "no seeds"
    lo, hi = min(counts), max(counts)
    return f"{lo} seed" if lo == hi == 1 else (f"{lo} seeds" if lo == hi else f"{lo}–{hi} seeds")


@dataclass(frozen=True)
class FigureStyle:
    """How figures read in a paper: display names for algorithms, environments and metrics
    (``labels``, raw name -> text), the title (None: "<environment>: <metric>"; "": none), and the
    resolution. Everything a title used to say beyond that goes to the caption file beside each
    figure (``<figure>.txt``)."""

    labels: Mapping[str, str] = field(default_factory=dict)
    title: Optional[str] = None
    dpi: int = 150

    def name(self, raw: str) -> str:
        return self.labels.get(raw, raw)

    def heading(self, default: str) -> Optional[str]:
        return default if self.title is None else (self.title or None)


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise MissingDependency("plots need matplotlib: pip install matplotlib") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path, pdf: bool, paths: list, dpi: int, caption: str) -> None:
    # "tight": the legend sits outside the axes, right of the data, and must be in the file.
    fig.savefig(path, bbox_inches="tight", dpi=dpi)
    paths.append(path)
    if pdf:
        fig.savefig(path.with_suffix(".pdf"), bbox_inches="tight")
        paths.append(path.with_suffix(".pdf"))
    text = path.with_suffix(".txt")
    text.write_text(caption + "\n", encoding="utf-8")
    paths.append(text)


# Okabe & Ito's colour-blind-safe qualitative palette, then matplotlib's tab10 beyond eight.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000",
           "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")
# Fewer runs than this and a bootstrap CI is mostly the range of the runs (with 3 seeds of a
# 0-or-12 outcome, the whole plot): no CI band is drawn, and the figure says why.
MIN_RUNS_FOR_CI = 5
BAND_FILL_ALPHA = 0.12
# Overlaid lines, each narrower and differently dashed than the one before: where two coincide
# (identical curves are common on small games) the one drawn first still shows around the other.
LINE_WIDTHS = (2.8, 2.2, 1.7)


def _colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _band(ax, x, low, high, colour: str, step: Optional[str] = None) -> None:
    """A light fill with its edges drawn: overlapping bands stay readable (translucent fills
    alone merge into one muddy area)."""
    ax.fill_between(x, low, high, alpha=BAND_FILL_ALPHA, color=colour, linewidth=0, step=step)
    draw = "steps-post" if step == "post" else "default"
    for edge in (low, high):
        ax.plot(x, edge, color=colour, linewidth=0.7, alpha=0.7, drawstyle=draw)


def _legend_outside(ax) -> None:
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False)


def _width(i: int) -> float:
    return LINE_WIDTHS[i % len(LINE_WIDTHS)]


def _band_note(too_few: Sequence[str], style: FigureStyle) -> str:
    return (f" No CI band for {', '.join(style.name(a) for a in too_few)}: fewer than {MIN_RUNS_FOR_CI} runs."
            if too_few else "")


def profile_figure(plt, comparison: Comparison, title: Optional[str], metric: str,
                   style: FigureStyle = FigureStyle()):
    """Performance profiles: overlaid up to :data:`MAX_OVERLAID` algorithms, else small multiples.
    Returns the figure and its caption."""
    algs = list(comparison.profiles)
    many = len(algs) > MAX_OVERLAID
    cols = min(3, len(algs)) if many else 1
    rows = -(-len(algs) // cols) if many else 1
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows + 0.8) if many else (7.5, 4),
                             sharex=True, sharey=True, squeeze=False)
    below = comparison.lower_is_better
    too_few = []
    for i, alg in enumerate(algs):
        p, lo, hi = comparison.profiles[alg]
        ax = axes[i // cols][i % cols] if many else axes[0][0]
        n = comparison.scores[alg].shape[0]
        label = f"{style.name(alg)} ({_runs_label(n, comparison.unfinished.get(alg, 0))})"
        colour = _colour(i)
        if many:
            for other in algs:
                if other != alg:
                    ax.plot(comparison.taus, comparison.profiles[other][0], color="0.75", linewidth=0.9,
                            drawstyle="steps-post")
            ax.set_title(label, fontsize=9, color=colour)
        ax.plot(comparison.taus, p, label=label, linewidth=1.6 if many else _width(i),
                color=colour, drawstyle="steps-post", linestyle="-" if many else _STYLES[i % len(_STYLES)])
        if n >= MIN_RUNS_FOR_CI:
            _band(ax, comparison.taus, lo, hi, colour, step="post")
        else:
            too_few.append(alg)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        if i % cols == 0:
            ax.set_ylabel(f"fraction of runs {'<' if below else '>'} τ", fontsize=8)
        if not many or i // cols == rows - 1 or i + cols >= len(algs):
            ax.set_xlabel(f"final {style.name(metric)} (τ)" + (", lower is better" if below else ""), fontsize=8)
            ax.xaxis.set_tick_params(labelbottom=True)
    if below and not many:
        axes[0][0].invert_xaxis()  # better to the right, as for every other profile
    for j in range(len(algs), rows * cols):
        axes[j // cols][j % cols].set_visible(False)
    drawn = [a for a in algs if a not in too_few]
    caption = ("Performance profile: for each threshold τ, the fraction of an algorithm's runs whose final "
               f"{style.name(metric)} is {'below' if below else 'above'} τ."
               + (f" Bands: 95% stratified-bootstrap CI ({', '.join(style.name(a) for a in drawn)})." if drawn else "")
               + _band_note(too_few, style) + (" Grey: the other algorithms." if many else "")
               + (f" Not finished yet: {sum(comparison.unfinished.values())} of these runs (values of training in "
                  "progress, to change)." if comparison.unfinished else ""))
    if many:
        if title:
            fig.suptitle(title, fontsize=10)
        fig.tight_layout()
    else:
        if title:
            axes[0][0].set_title(title, fontsize=10)
        _legend_outside(axes[0][0])
    return fig, caption


# More algorithms than this and the curves are drawn as small multiples: one panel each, the
# others' IQM curves in grey behind it (five overlapping bands cannot be read).
MAX_OVERLAID = 3


def _band_text(band: str) -> str:
    return ("band: 25–75% interquartile range across seeds" if band == "iqr" else
            "band: 95% stratified-bootstrap CI of the IQM")


def _has_band(curve: Curve, band: str) -> bool:
    """Whether a learning curve is drawn with its band: never for one run (no spread), and a
    bootstrap CI only from :data:`MIN_RUNS_FOR_CI` runs."""
    return curve.n > 1 and (band == "iqr" or curve.n >= MIN_RUNS_FOR_CI)


def _curves_caption(env: EnvReport, metric: str, band: str, too_few: Sequence[str], style: FigureStyle,
                    many: bool) -> str:
    missing = [style.name(row.alg) for row in env.rows if row.n == 0]
    # A single run has no spread: its curve is drawn without a band, and the caption must not claim one.
    single = [style.name(c.alg) for c in env.curves if c.n == 1]
    banded = any(_has_band(c, band) for c in env.curves)
    band_text = (f"{_band_text(band)}." if banded else "no band.") + (
        f" No band for {', '.join(single)}: one run." if single and banded else "")
    return (f"{style.name(env.env)}: {style.name(metric)} against environment steps, IQM across "
            f"{_seeds_text([c.n for c in env.curves])}; {band_text}" + _band_note(too_few, style)
            + (" Grey: the other algorithms." if many else "")
            + (f" Not finished yet: {len(env.unfinished)} of these runs (their curves end at their last test)."
               if env.unfinished else "")
            + (f" No finished run: {', '.join(missing)}." if missing else "")
            + (" Runs not included are listed in report.md." if env.excluded else ""))


def curves_figure(plt, env: EnvReport, metric: str, band: str, style: FigureStyle = FigureStyle()):
    """The learning curves of one environment: IQM across seeds, each with its band. Returns the
    figure and its caption."""
    if len(env.curves) > MAX_OVERLAID:
        return _small_multiples(plt, env, metric, band, style)
    fig, ax = plt.subplots(figsize=(8.5, 4.5))
    too_few = []
    for i, curve in enumerate(env.curves):
        colour = _colour(i)
        ax.plot(curve.steps, curve.centre, label=f"{style.name(curve.alg)} ({curve.legend})", linewidth=_width(i),
                linestyle=_STYLES[i % len(_STYLES)], color=colour)
        if _has_band(curve, band):
            _band(ax, curve.steps, curve.low, curve.high, colour)
        elif curve.n > 1:
            too_few.append(curve.alg)
    for row in env.rows:
        if row.n == 0:
            ax.plot([], [], linestyle="none", label=f"{style.name(row.alg)}: no finished run")
    title = style.heading(f"{style.name(env.env)}: {style.name(metric)}")
    if title:
        ax.set_title(title, fontsize=10)
    ax.set_xlabel("environment steps")
    ax.set_ylabel(style.name(metric))
    ax.grid(alpha=0.3)
    _legend_outside(ax)
    return fig, _curves_caption(env, metric, band, too_few, style, many=False)


def _small_multiples(plt, env: EnvReport, metric: str, band: str, style: FigureStyle):
    n = len(env.curves)
    cols = min(3, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows + 0.6), sharex=True, sharey=True,
                             squeeze=False)
    too_few = []
    for i, curve in enumerate(env.curves):
        ax = axes[i // cols][i % cols]
        for other in env.curves:
            if other is not curve:
                ax.plot(other.steps, other.centre, color="0.75", linewidth=0.9)
        colour = _colour(i)
        ax.plot(curve.steps, curve.centre, color=colour, linewidth=1.9)
        if _has_band(curve, band):
            _band(ax, curve.steps, curve.low, curve.high, colour)
        elif curve.n > 1:
            too_few.append(curve.alg)
        ax.set_title(f"{style.name(curve.alg)} ({curve.legend})", fontsize=9, color=colour)
        ax.grid(alpha=0.3)
        if i % cols == 0:
            ax.set_ylabel(style.name(metric), fontsize=8)
        if i // cols == rows - 1 or i + cols >= n:
            ax.set_xlabel("environment steps", fontsize=8)
            ax.xaxis.set_tick_params(labelbottom=True)
    for j in range(n, rows * cols):
        axes[j // cols][j % cols].set_visible(False)
    title = style.heading(f"{style.name(env.env)}: {style.name(metric)}")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig, _curves_caption(env, metric, band, too_few, style, many=True)


def plot(report: Report, out_dir: Path, pdf: bool = False, style: FigureStyle = FigureStyle()) -> list[Path]:
    """Per environment: learning curves and a performance profile (PNG at ``style.dpi``, and PDF
    with ``pdf``), each with its caption in a ``.txt`` beside it.

    Sets each EnvReport's ``png`` and each Comparison's ``png``.
    """
    plt = _pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for env in report.envs:
        fig, caption = curves_figure(plt, env, report.metric, report.band, style)
        path = out_dir / f"{_safe(report.metric)}_{_safe(env.env)}.png"
        _save(fig, path, pdf, paths, style.dpi, caption)
        plt.close(fig)
        env.png = str(path)
        if env.comparison is not None:
            path = out_dir / f"profile_{_safe(report.metric)}_{_safe(env.env)}.png"
            title = style.heading(f"{style.name(env.env)}: final {style.name(report.metric)}")
            fig, caption = profile_figure(plt, env.comparison, title, report.metric, style)
            seeds = _seeds_text([s.shape[0] for s in env.comparison.scores.values()])
            _save(fig, path, pdf, paths, style.dpi, f"{style.name(env.env)}, {seeds}. {caption}")
            plt.close(fig)
            env.comparison.png = str(path)
    if report.overall is not None:
        shapes = [s.shape for s in report.overall.scores.values()]
        path = out_dir / f"profile_{_safe(report.metric)}_all.png"
        title = style.heading(f"all {shapes[0][1]} environments: final {style.name(report.metric)}")
        fig, caption = profile_figure(plt, report.overall, title, report.metric, style)
        _save(fig, path, pdf, paths, style.dpi,
              f"All {shapes[0][1]} environments, {_seeds_text([s[0] for s in shapes])} per environment, final "
              f"values pooled. {caption}")
        plt.close(fig)
        report.overall.png = str(path)
    return paths
