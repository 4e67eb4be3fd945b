"""Did each run end on the game's optimum? A table for matrix-game seed studies.

Per environment and algorithm, over the finished runs of a sweep:

* **recovered k/N** (with the 95% Wilson interval of the rate): runs whose last greedy test reached
  the optimum in every test episode (``test_optimal_mean`` == 1, logged by the ``matrix_game`` env for every algorithm, stock
  ones included);
* **episodes to recover**: for those runs, the first test step from which every later test
  was optimal (the step axis is environment steps; on a one-step game, episodes), as median
  and range — a run that touched the optimum and left it again counts from its last arrival;
* **IGM-consistent k/N** and **max |Q_tot − payoff|** at the end: from the learner's IGM
  diagnostics (``igm_consistent``, ``payoff_max_abs_error``), where the runs record them;
* **joint-greedy recovered k/N**: runs whose last joint-greedy test (``test_joint_greedy=True``:
  the agents act on the joint argmax of Q_tot) reached the optimum, where recorded. Against
  "recovered", it tells a value function that has the optimum from agents that act on it;
* **agents on their worst action**: the mean over runs of the last ``worst_greedy_action_rate``.

The same inclusion rules as the learning-curve report apply: only COMPLETED runs that record
``test_optimal_mean``; failed, unfinished and superseded runs are counted apart, never in N.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from .report import RunRecord, _count_notes, _fmt, classify, mean_ci, rate_ci

OPTIMAL = "test_optimal_mean"
JOINT_GREEDY_OPTIMAL = "test_joint_greedy_optimal_mean"
PAYOFF_ERROR = "payoff_max_abs_error"
IGM_CONSISTENT = "igm_consistent"
WORST_GREEDY = "worst_greedy_action_rate"
METRICS = (OPTIMAL, JOINT_GREEDY_OPTIMAL, PAYOFF_ERROR, IGM_CONSISTENT, WORST_GREEDY)
_ONE = 1.0 - 1e-9


def recovery_step(steps: np.ndarray, values: np.ndarray) -> Optional[float]:
    """First step from which every logged value is optimal (== 1); None if the last is not."""
    order = np.argsort(steps, kind="stable")
    steps, values = np.asarray(steps, dtype=float)[order], np.asarray(values, dtype=float)[order]
    if not len(values) or values[-1] < _ONE:
        return None
    bad = np.flatnonzero(values < _ONE)
    return float(steps[bad[-1] + 1]) if len(bad) else float(steps[0])


@dataclass
class RecoveryRow:
    alg: str
    n: int
    recovered: int
    steps_to_recover: list[float]
    igm: tuple[int, int]                       # (consistent, runs recording it)
    payoff_error: tuple[float, float, int]     # mean, 95% CI half-width, runs recording it
    excluded: list[RunRecord]
    joint_greedy: tuple[int, int] = (0, 0)     # (recovered, runs recording it)
    worst_greedy: tuple[float, float, int] = (math.nan, math.nan, 0)

    def cells(self) -> list[str]:
        if self.steps_to_recover:
            s = np.asarray(self.steps_to_recover)
            when = f"{np.median(s):,.0f} [{s.min():,.0f}–{s.max():,.0f}]"
        else:
            when = "–"
        igm = f"{self.igm[0]}/{self.igm[1]}" if self.igm[1] else "–"
        joint = _rate(*self.joint_greedy) if self.joint_greedy[1] else "–"
        worst = f"{self.worst_greedy[0]:.2f}" if self.worst_greedy[2] else "–"
        return [self.alg, _rate(self.recovered, self.n) if self.n else "0/0", joint, when, igm, worst,
                _fmt(self.payoff_error), _count_notes(self.excluded)]


def _rate(k: int, n: int) -> str:
    """k/n with the 95% Wilson interval of the rate: 20 seeds leave a wide one, and the table says so."""
    low, high = rate_ci(k, n)
    return f"{k}/{n} ({low:.2f}–{high:.2f})"


HEADER = ("algorithm", "optimum recovered (95% CI)", "joint-greedy recovered (95% CI)", "episodes to recover: median [range]",
          "IGM-consistent", "agents on their worst action", "max \\|Q_tot − payoff\\|", "not included")


def recovery_rows(records: Sequence[RunRecord]) -> dict[str, list[RecoveryRow]]:
    """Rows per environment, algorithms sorted by name."""
    included, excluded = classify(records, OPTIMAL)
    out: dict[str, list[RecoveryRow]] = {}
    for env in sorted({r.env for r in records}):
        rows = []
        for alg in sorted({r.alg for r in records if r.env == env}):
            runs = [r for r in included if r.env == env and r.alg == alg]
            gone = [r for r in excluded if r.env == env and r.alg == alg]
            when = [s for r in runs if (s := recovery_step(*r.series[OPTIMAL])) is not None]
            igm = [v for r in runs if (v := r.final(IGM_CONSISTENT)) is not None]
            err = [v for r in runs if (v := r.final(PAYOFF_ERROR)) is not None]
            joint = [v for r in runs if (v := r.final(JOINT_GREEDY_OPTIMAL)) is not None]
            worst = [v for r in runs if (v := r.final(WORST_GREEDY)) is not None]
            rows.append(RecoveryRow(alg, len(runs), len(when), when, _ones(igm), mean_ci(err), gone, _ones(joint),
                                    mean_ci(worst)))
        out[env] = rows
    return out


def _ones(values: Sequence[float]) -> tuple[int, int]:
    """(how many of ``values`` are 1, how many there are): a k/N of runs whose final flag was set."""
    return sum(v >= _ONE for v in values), len(values)


def markdown_table(rows: Sequence[RecoveryRow]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def markdown(tables: dict[str, list[RecoveryRow]], source: str, sweep: Optional[str]) -> str:
    out = ["# Optimum recovery" + (f" — sweep `{sweep}`" if sweep else ""), "",
           f"Source: {source}. A run recovers the optimum when its last greedy test reached it "
           f"(`{OPTIMAL}` = 1); joint-greedy recovered, when its last joint-greedy test did (`{JOINT_GREEDY_OPTIMAL}` "
           f"= 1: the agents acting on the joint argmax of Q_tot, a centralised upper bound); episodes to recover "
           f"count from its last arrival there. IGM-consistent, agents on their worst action (mean of the last "
           f"`{WORST_GREEDY}`) and max |Q_tot − payoff| (mean ± 95% CI) are the learner's last diagnostics, "
           f"where recorded. Rates carry their 95% Wilson interval: with 20 seeds, 10/20 is 0.30–0.70.", ""]
    for env, rows in tables.items():
        out += [f"## {env}", "", markdown_table(rows)]
        gone = [r for row in rows for r in row.excluded]
        if gone:
            out += ["Not included:", ""] + [f"- {r.label()}: {r.note} ({r.ref})" for r in gone] + [""]
    return "\n".join(out)
