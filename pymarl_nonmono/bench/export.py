"""A sweep's runs in marl-eval's JSON layout (Gorsane et al., NeurIPS 2022; PyPI ``id-marl-eval``).

The layout (marl-eval's README, "Data Structure for Raw Experiment data")::

    {environment_name: {task_name: {algorithm_name: {"seed_<s>": {
        "step_0": {"step_count": <int>, "<metric>": [<value>]}, ..., "step_<k>": {...},
        "absolute_metrics": {"<metric>": [<value>]}}}}}}

Here ``environment_name`` is the run's env config (``env``: ``sc2``, ``smaclite``, ``matrix_game``,
EPyMARL's ``gymma``, ...), ``task_name`` the sweep's environment label (the map name, the game preset) and
``algorithm_name`` the sweep's algorithm label; runs are named ``seed_<s>`` as marl-eval's own
``JsonLogger`` names them.

marl-eval stacks runs into numpy arrays, so within an environment every task must have the
same algorithms, runs and steps. Hence, with the report's alignment: each run is
interpolated onto ``points`` evenly spaced steps from its task's latest first evaluation to
its common horizon (the end of the shortest finished run), and only the algorithms that ran
on every task and the seeds every one of them finished on every task are written; the others
are listed in ``dropped``. Each metric is a list of one value (the hosts log the mean over the
test episodes). ``absolute_metrics`` holds the run's final performance as the report defines
it (its value at the common horizon): neither host runs marl-eval's re-evaluation of the
best policy over ten times the test episodes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from .report import ReportError, RunRecord, _interp, _span, classify

log = logging.getLogger(__name__)

FORMATS = ("marl-eval",)
DEFAULT_SUITE = "pymarl2"


@dataclass
class Export:
    data: dict
    runs: int
    dropped: list[str] = field(default_factory=list)


def _check_names(names: Sequence[str], what: str) -> None:
    # marl-eval lower-cases every key and forbids commas in algorithm names.
    seen: dict[str, str] = {}
    for name in names:
        if what == "algorithm" and "," in name:
            raise ReportError(f"marl-eval forbids commas in algorithm names: {name!r}")
        low = name.lower()
        if low in seen and seen[low] != name:
            raise ReportError(f"marl-eval lower-cases names, so the {what}s {seen[low]!r} and {name!r} would collide")
        seen[low] = name


def marl_eval_layout(records: Sequence[RunRecord], metrics: Sequence[str], points: int = 20) -> Export:
    """The finished runs of ``records`` that record every metric in ``metrics``, in marl-eval's layout."""
    if not metrics:
        raise ReportError("export needs at least one metric")
    if points < 2:
        raise ReportError(f"export needs at least 2 points per run, got {points}")
    included, excluded = classify(records, metrics[0])
    dropped = [f"{r.env}/{r.alg} seed {r.seed}: {r.note}" for r in excluded]
    runs = []
    for r in included:
        lacking = [m for m in metrics[1:] if not len(r.series.get(m, ((), ()))[0])]
        if lacking:
            dropped.append(f"{r.env}/{r.alg} seed {r.seed}: finished without {', '.join(lacking)}")
        elif r.seed is None:
            dropped.append(f"{r.env}/{r.alg} ({r.ref}): no seed in its config")
        else:
            runs.append(r)
    data: dict = {}
    written = 0
    for suite in sorted({r.suite or DEFAULT_SUITE for r in runs}):
        in_suite = [r for r in runs if (r.suite or DEFAULT_SUITE) == suite]
        tasks = sorted({r.env for r in in_suite})
        algs_per_task = [{r.alg for r in in_suite if r.env == t} for t in tasks]
        algs = sorted(set.intersection(*algs_per_task))
        for alg in sorted(set.union(*algs_per_task) - set(algs)):
            dropped.append(f"{suite}: algorithm {alg} (not finished on every task: marl-eval needs the same everywhere)")
        seeds_of = {(t, a): {r.seed for r in in_suite if r.env == t and r.alg == a} for t in tasks for a in algs}
        seeds = sorted(set.intersection(*seeds_of.values())) if algs else []
        for (t, a), have in sorted(seeds_of.items()):
            if have - set(seeds):
                dropped.append(f"{suite}/{t}/{a}: seeds {', '.join(str(s) for s in sorted(have - set(seeds)))} "
                               f"(not finished by every algorithm on every task)")
        if not seeds:
            continue
        _check_names(algs, "algorithm")
        _check_names(tasks, "task")
        data[suite] = {}
        for task in tasks:
            kept = [r for r in in_suite if r.env == task and r.alg in algs and r.seed in seeds]
            # The report's common horizon: over every finished run of the task, exported or not.
            spans = [_span(r, m) for r in in_suite if r.env == task for m in metrics]
            start, end = max(s for s, _ in spans), min(e for _, e in spans)
            grid = np.linspace(start, max(start, end), points)
            data[suite][task] = {}
            for alg in algs:
                data[suite][task][alg] = {}
                for r in sorted((r for r in kept if r.alg == alg), key=lambda r: r.seed):
                    values = {m: _interp(r, m, grid) for m in metrics}
                    run = {f"step_{k}": {"step_count": int(round(grid[k])), **{m: [float(v[k])] for m, v in values.items()}}
                           for k in range(points)}
                    run["absolute_metrics"] = {m: [float(v[-1])] for m, v in values.items()}
                    data[suite][task][alg][f"seed_{r.seed}"] = run
                    written += 1
    if not written:
        raise ReportError("nothing to export: no seed was finished by every algorithm on every task"
                          + (f" ({'; '.join(dropped[:5])}{' ...' if len(dropped) > 5 else ''})" if dropped else ""))
    return Export(data, written, dropped)


def check_layout(data: dict, metrics: Optional[Sequence[str]] = None) -> None:
    """Raise ValueError unless ``data`` follows marl-eval's documented schema (what DiagnoseData checks)."""
    if not isinstance(data, dict) or not data:
        raise ValueError("the export must be a non-empty object of environments")
    for env, tasks in data.items():
        alg_sets, run_counts, step_sets, metric_sets = set(), set(), set(), set()
        for task, algs in tasks.items():
            alg_sets.add(tuple(sorted(algs)))
            for alg, runs in algs.items():
                if "," in alg:
                    raise ValueError(f"{env}/{task}: algorithm name {alg!r} contains a comma")
                run_counts.add(len(runs))
                for run, steps in runs.items():
                    if "absolute_metrics" not in steps:
                        raise ValueError(f"{env}/{task}/{alg}/{run}: no absolute_metrics")
                    step_sets.add(tuple(sorted(steps)))
                    for step, values in steps.items():
                        if step != "absolute_metrics" and not isinstance(values.get("step_count"), int):
                            raise ValueError(f"{env}/{task}/{alg}/{run}/{step}: step_count must be an int")
                        names = tuple(sorted(k for k in values if k != "step_count"))
                        metric_sets.add(names)
                        for name in names:
                            if not isinstance(values[name], list) or not values[name]:
                                raise ValueError(f"{env}/{task}/{alg}/{run}/{step}/{name}: must be a non-empty list")
        for what, found in (("algorithms", alg_sets), ("numbers of runs", run_counts), ("steps", step_sets),
                            ("metrics", metric_sets)):
            if len(found) != 1:
                raise ValueError(f"{env}: the {what} differ between tasks or runs: {sorted(found)[:3]}")
        if metrics is not None and set(next(iter(metric_sets))) != set(metrics):
            raise ValueError(f"{env}: metrics {sorted(next(iter(metric_sets)))}, expected {sorted(metrics)}")
