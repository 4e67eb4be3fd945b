"""Learning curves and a final-performance table from Sacred records (FileStorage or MongoDB).

For one metric (e.g. ``test_battle_won_mean``, ``test_return_mean``) against environment
steps: per environment, one PNG with each algorithm's mean curve and 95% confidence band
across seeds, and a Markdown table of final performance and area under the curve
(mean ± 95% CI, number of seeds).

Alignment: runs log their test statistics at slightly different steps and may have
different lengths, so each run is interpolated linearly onto a common step grid, never
extrapolated. A curve is drawn as far as every included run of that algorithm reaches; the
table is taken at the common horizon of the environment (the shortest included run) so
that all algorithms are compared over the same steps.

Only finished runs (Sacred status COMPLETED) that record the metric are averaged; failed,
unfinished and superseded runs are listed with their reason, never averaged in.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence

import numpy as np

from . import MissingDependency

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

    def label(self) -> str:
        return f"{self.alg} seed {self.seed}" if self.seed is not None else f"{self.alg} ({self.ref})"


def _labels(config: Mapping) -> tuple[str, str, Optional[int], str]:
    env_args = config.get("env_args") or {}
    env = config.get("sweep_env") or env_args.get("map_name") or config.get("env") or "?"
    alg = config.get("sweep_alg") or config.get("name") or "?"
    seed = config.get("seed")
    return str(alg), str(env), seed if isinstance(seed, int) else None, str(config.get("sweep_id") or "")


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


@dataclass
class Curve:
    alg: str
    steps: np.ndarray
    mean: np.ndarray
    half: np.ndarray               # CI half-width (nan where n < 2)
    n: int
    excluded: list[RunRecord]


@dataclass
class Row:
    alg: str
    final: tuple[float, float, int]
    auc: tuple[float, float, int]
    excluded: list[RunRecord]


@dataclass
class EnvReport:
    env: str
    metric: str
    curves: list[Curve]
    rows: list[Row]
    horizon: tuple[float, float]   # [start, end] of the common steps
    excluded: list[RunRecord]
    png: Optional[str] = None


def classify(records: Sequence[RunRecord], metric: str, now: Optional[_dt.datetime] = None) -> tuple[list, list]:
    """(included, excluded): finished runs with the metric, and the others with ``note`` set."""
    now = now or _dt.datetime.utcnow()
    included, excluded = [], []
    for r in records:
        r.note = ""  # decided afresh for this metric: a record may be classified once per metric
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
    kept = [r for r in included if not r.note]
    return kept, excluded


def _interp(record: RunRecord, metric: str, grid: np.ndarray) -> np.ndarray:
    steps, values = record.series[metric]
    order = np.argsort(steps, kind="stable")
    return np.interp(grid, steps[order], values[order])


def _span(record: RunRecord, metric: str) -> tuple[float, float]:
    steps = record.series[metric][0]
    return float(steps.min()), float(steps.max())


def _trapezoid(values: np.ndarray, steps: np.ndarray) -> float:
    return float(np.sum((values[1:] + values[:-1]) * np.diff(steps)) / 2.0)


def env_report(env: str, metric: str, included: Sequence[RunRecord], excluded: Sequence[RunRecord],
               points: int = DEFAULT_POINTS) -> EnvReport:
    algs = sorted({r.alg for r in list(included) + list(excluded)})
    if not included:
        rows = [Row(a, (math.nan, math.nan, 0), (math.nan, math.nan, 0), [r for r in excluded if r.alg == a]) for a in algs]
        return EnvReport(env, metric, [], rows, (math.nan, math.nan), list(excluded))
    spans = [_span(r, metric) for r in included]
    start = max(s for s, _ in spans)
    common_end = min(e for _, e in spans)
    if common_end < start:  # runs that do not overlap at all: compare where each ends
        common_end = start
    grid = np.linspace(start, max(e for _, e in spans), max(2, points))
    curves, rows = [], []
    for alg in algs:
        runs = [r for r in included if r.alg == alg]
        gone = [r for r in excluded if r.alg == alg]
        if not runs:
            rows.append(Row(alg, (math.nan, math.nan, 0), (math.nan, math.nan, 0), gone))
            continue
        end = max(start, min(_span(r, metric)[1] for r in runs))
        steps = np.union1d(grid[grid <= end], [end])
        values = np.stack([_interp(r, metric, steps) for r in runs])
        stats = [mean_ci(values[:, i]) for i in range(len(steps))]
        curves.append(Curve(alg, steps, np.array([s[0] for s in stats]), np.array([s[1] for s in stats]),
                            len(runs), gone))
        at = np.union1d(grid[grid <= common_end], [common_end])
        finals, aucs = [], []
        for r in runs:
            vals = _interp(r, metric, at)
            finals.append(float(vals[-1]))
            width = at[-1] - at[0]
            aucs.append(_trapezoid(vals, at) / width if width > 0 else float(vals[-1]))
        rows.append(Row(alg, mean_ci(finals), mean_ci(aucs), gone))
    return EnvReport(env, metric, curves, rows, (start, common_end), list(excluded))


@dataclass
class Report:
    metric: str
    source: str
    sweep: Optional[str]
    envs: list[EnvReport]
    n_runs: int

    def table(self, env: EnvReport) -> str:
        head = f"| algorithm | final {self.metric} | AUC | seeds | not included |\n|---|---|---|---|---|\n"
        lines = []
        for row in env.rows:
            gone = _count_notes(row.excluded)
            lines.append(f"| {row.alg} | {_fmt(row.final)} | {_fmt(row.auc)} | {row.final[2]} | {gone} |")
        return head + "\n".join(lines) + "\n"

    def markdown(self) -> str:
        title = f"# {self.metric}" + (f" — sweep `{self.sweep}`" if self.sweep else "")
        out = [title, "",
               f"Source: {self.source} ({self.n_runs} runs). Mean ± 95% confidence interval (Student t) across "
               f"seeds; AUC is the mean of the learning curve over the common steps (same unit as the metric). "
               f"Only finished runs are averaged; the others are listed under each table.", ""]
        for env in self.envs:
            out += [f"## {env.env}", ""]
            if env.png:
                out += [f"![{self.metric} on {env.env}]({Path(env.png).name})", ""]
            start, end = env.horizon
            if math.isnan(end):
                out += ["No finished run records this metric here.", ""]
            else:
                out += [f"Final value at step {end:,.0f}, the common horizon (the shortest finished run here); "
                        f"AUC over steps {start:,.0f}–{end:,.0f}.", ""]
            out += [self.table(env)]
            if env.excluded:
                out += ["Not included:", ""]
                out += [f"- {r.label()}: {r.note} ({r.ref})" for r in sorted(env.excluded, key=lambda r: (r.alg, r.seed or 0))]
                out += [""]
        return "\n".join(out)


def _count_notes(records: Sequence[RunRecord]) -> str:
    counts: dict[str, int] = {}
    for r in records:
        kind = r.note.split(":")[0].split(" (")[0]
        kind = "superseded" if kind.startswith("superseded") else kind
        counts[kind] = counts.get(kind, 0) + 1
    return ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))


def _num(x: float) -> str:
    return f"{x:.3f}" if abs(x) < 100 else f"{x:,.1f}"


def _fmt(stat: tuple[float, float, int]) -> str:
    mean, half, n = stat
    if n == 0 or math.isnan(mean):
        return "–"
    return _num(mean) if math.isnan(half) else f"{_num(mean)} ± {_num(half)}"


def build_report(records: Sequence[RunRecord], metric: str, source: str, sweep: Optional[str],
                 points: int = DEFAULT_POINTS) -> Report:
    if not records:
        raise ReportError(f"no runs{' of sweep ' + repr(sweep) if sweep else ''} in {source}")
    included, excluded = classify(records, metric)
    envs = []
    for env in sorted({r.env for r in records}):
        envs.append(env_report(env, metric, [r for r in included if r.env == env],
                               [r for r in excluded if r.env == env], points))
    return Report(metric, source, sweep, envs, len(records))


# --------------------------------------------------------------------------- plots


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+=-]+", "_", name) or "env"


_STYLES = ("-", "--", ":", "-.")


def plot(report: Report, out_dir: Path) -> list[Path]:
    """One PNG per environment in ``out_dir``; sets each EnvReport's ``png``."""
    try:
        import matplotlib
    except ImportError:
        raise MissingDependency("plots need matplotlib: pip install matplotlib") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for env in report.envs:
        fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
        for i, curve in enumerate(env.curves):
            label = f"{curve.alg} (n={curve.n}" + (f"; {_count_notes(curve.excluded)} not included" if curve.excluded else "") + ")"
            # Distinct dashes keep algorithms with identical curves (common on small games) visible.
            line, = ax.plot(curve.steps, curve.mean, label=label, linewidth=1.8, linestyle=_STYLES[i % len(_STYLES)])
            band = ~np.isnan(curve.half)
            if band.any():
                ax.fill_between(curve.steps, curve.mean - np.where(band, curve.half, 0),
                                curve.mean + np.where(band, curve.half, 0), where=band, alpha=0.2,
                                color=line.get_color(), linewidth=0)
        for row in env.rows:
            if row.final[2] == 0:
                ax.plot([], [], linestyle="none", label=f"{row.alg}: no finished run ({_count_notes(row.excluded) or 'none'})")
        ax.set_xlabel("environment steps")
        ax.set_ylabel(report.metric)
        ax.set_title(f"{env.env}: {report.metric} (mean, 95% CI across seeds)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
        fig.tight_layout()
        path = out_dir / f"{_safe(report.metric)}_{_safe(env.env)}.png"
        fig.savefig(path)
        plt.close(fig)
        env.png = str(path)
        paths.append(path)
    return paths
