"""The paper's Table 1 layout for a sweep on two-agent matrix games (``report --table1``).

Per game (environment of the sweep): its payoff, then per algorithm the learned Q_tot table of
its **median run**, agent 1's utilities on the rows and agent 2's on the columns (the learner's
last ``q_tot_<i>_<j>`` and ``q_agent_<i>_<a>`` diagnostics), the paper's values in parentheses
where it reports them, and how many seeds **matched the paper's outcome**.

* Median run: of the finished runs that record ``payoff_max_abs_error``, the one whose final
  value is the median; with an even count the lower of the two middle runs (ties: lower seed).
  It is a run that exists, so its table, margins and greedy action belong together.
* Matched, for an algorithm compared with the paper's non-monotonic QMIX (which the paper
  reports recovering the payoff exactly): the final greedy joint action is optimal **and** the
  final max |Q_tot − payoff| <= ``tolerance`` (default 0.5, ``--table1-tolerance``). For one
  compared with its QMIX (whose Q_tot the paper gives only roughly): the final greedy joint
  action is one that the paper's QMIX Q_tot table maximises.
* Which paper method a row is compared with: by its mixer (``mixer`` of the run's config:
  ``nonmono_qmix`` or ``qmix``); where the config cannot be read (MongoDB), by its label
  (``nonmono_qmix`` or ``qmix``, alone or followed by ``_``). Which paper game: the run's payoff
  (from ``env_args`` of its config, or an environment label that names a preset) equal to
  Game A's or Game B's, so ``pymarl2_hard`` runs meet Game A's values too.

The paper's values are :data:`PAPER_TABLE1`, the one place they are written down.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

from ..envs.matrix import PRESETS, resolve_payoff
from ..errors import ConfigError
from .recovery import PAYOFF_ERROR
from .report import RunRecord, _count_notes, classify

log = logging.getLogger(__name__)

GREEDY_INDEX = "greedy_joint_index"
GREEDY_OPTIMAL = "greedy_optimal"
METRICS = (PAYOFF_ERROR, GREEDY_INDEX, GREEDY_OPTIMAL)
DEFAULT_TOLERANCE = 0.5
EXACT, GREEDY = "exact", "greedy"  # what "matched the paper's outcome" means for an entry
_MAX_ACTIONS = 8  # two agents with up to 8 actions: 64 Q_tot entries, the diagnostics' table cap


@dataclass(frozen=True)
class PaperEntry:
    """One algorithm's result on one game as the paper's Table 1 reports it."""

    label: str                                     # how the paper names the method
    q_tot: tuple[tuple[float, ...], ...]           # [A_1][A_2]: agent 1's actions are the rows
    utilities: Optional[tuple[tuple[float, ...], tuple[float, ...]]]   # (Q1, Q2); None: not reported
    outcome: str                                   # EXACT or GREEDY: how a run matches it
    note: str = ""


PAPER_SOURCE = "arXiv 2511.09792 (AAAI 2026, pp. 21876-21884), Table 1"
# (preset of the game, method) -> what the paper reports. Non-monotonic QMIX: "recovers the payoff
# exactly", so its Q_tot is the payoff itself. QMIX on Game A: "-12 on row and column A, ~0
# elsewhere" (written here as 0). No utilities are reported for QMIX.
PAPER_TABLE1: dict[tuple[str, str], PaperEntry] = {
    ("paper_a", "nonmono_qmix"): PaperEntry(
        "non-monotonic QMIX", ((12, -12, -12), (-12, 0, 0), (-12, 0, 0)),
        ((8.1, -4.3, -4.3), (7.4, -4.0, -4.1)), EXACT, "exact recovery: Q_tot equals the payoff"),
    ("paper_a", "qmix"): PaperEntry(
        "QMIX", ((-12, -12, -12), (-12, 0, 0), (-12, 0, 0)), None, GREEDY,
        "Q_tot −12 on row and column A, ≈0 elsewhere; no utilities reported"),
    ("paper_b", "nonmono_qmix"): PaperEntry(
        "non-monotonic QMIX", ((12, 0, 10), (0, 0, 10), (10, 10, 10)),
        ((6.2, -4.4, 1.7), (6.0, -3.7, 2.5)), EXACT, "exact recovery: Q_tot equals the payoff"),
    ("paper_b", "qmix"): PaperEntry(
        "QMIX", ((0.1, 0.1, 4.1), (0.1, 0.1, 4.1), (5.6, 5.6, 10.0)), None, GREEDY, "no utilities reported"),
}
PAPER_GAMES = ("paper_a", "paper_b")
METHOD_OF_MIXER = {"nonmono_qmix": "nonmono_qmix", "qmix": "qmix"}


def paper_game_of(payoff: Optional[np.ndarray]) -> Optional[str]:
    """``paper_a`` or ``paper_b`` when ``payoff`` is that game, else None."""
    if payoff is None:
        return None
    for game in PAPER_GAMES:
        ref = resolve_payoff(game)
        if payoff.shape == ref.shape and np.array_equal(payoff, ref):
            return game
    return None


def method_of(mixer: Optional[str], label: str) -> Optional[str]:
    """The paper method a row is compared with: by mixer when known, else by label."""
    if mixer is not None:
        return METHOD_OF_MIXER.get(mixer)
    for method in sorted(set(METHOD_OF_MIXER.values()), key=len, reverse=True):
        if label == method or label.startswith(method + "_"):
            return method
    return None


def metric_names(max_actions: int = _MAX_ACTIONS) -> list[str]:
    """Every statistic the layout can use, for sources that load metrics by name (MongoDB)."""
    names = list(METRICS)
    names += [f"q_tot_{i}_{j}" for i in range(max_actions) for j in range(max_actions)]
    names += [f"q_agent_{i}_{a}" for i in range(2) for a in range(max_actions)]
    return names


# --------------------------------------------------------------------------- what each run is


def _payoff_from_config(config: Mapping) -> Optional[np.ndarray]:
    """The payoff of a run of our ``matrix_game`` or PyMARL2's ``one_step_matrix_game``; else None."""
    if config.get("env") == "one_step_matrix_game":
        return resolve_payoff("pymarl2")  # the payoff PyMARL2 hard-codes
    if config.get("env") != "matrix_game":
        return None
    env_args = config.get("env_args") or {}
    try:
        return resolve_payoff(**{k: env_args.get(k) for k in ("preset", "payoff", "penalty_k")})
    except ConfigError:
        return None


def describe_runs(records: Sequence[RunRecord]) -> tuple[dict[str, Optional[np.ndarray]], dict[str, Optional[str]]]:
    """(payoff per environment label, paper method per algorithm label) of a sweep's runs.

    From each run's ``config.json`` where the run is a FileStorage folder; otherwise from the
    labels (an environment label that names a preset; see :func:`method_of`).
    """
    payoffs: dict[str, Optional[np.ndarray]] = {}
    mixers: dict[str, Optional[str]] = {}
    for r in records:
        config = _read_config(Path(r.ref) / "config.json")
        if config is not None:
            if payoffs.get(r.env) is None:
                payoffs[r.env] = _payoff_from_config(config)
            if isinstance(config.get("mixer"), str):
                mixers.setdefault(r.alg, config["mixer"])
    for r in records:
        if payoffs.get(r.env) is None:
            payoffs[r.env] = resolve_payoff(r.env) if r.env in PRESETS and r.env != "penalty" else None
    methods = {alg: method_of(mixers.get(alg), alg) for alg in sorted({r.alg for r in records})}
    return payoffs, methods


def _read_config(path: Path) -> Optional[dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# --------------------------------------------------------------------------- the tables


def _table_shape(records: Sequence[RunRecord]) -> Optional[tuple[int, int]]:
    """(A_1, A_2) from the ``q_tot_<i>_<j>`` names the runs record; None without a two-agent table."""
    cells = [name.split("_")[2:] for r in records for name in r.series if name.startswith("q_tot_")]
    cells = [c for c in cells if all(x.isdigit() for x in c)]
    if not cells or any(len(c) != 2 for c in cells):
        return None
    return 1 + max(int(c[0]) for c in cells), 1 + max(int(c[1]) for c in cells)


@dataclass
class MedianRun:
    seed: Optional[int]
    ref: str
    error: float                          # final max |Q_tot - payoff|
    greedy: Optional[tuple[int, int]]     # final greedy joint action
    optimal: Optional[bool]
    q_tot: np.ndarray                     # [A_1, A_2], nan where not recorded
    utilities: tuple[np.ndarray, np.ndarray]   # [A_1], [A_2], nan where not recorded


@dataclass
class AlgTable:
    alg: str
    method: Optional[str]                 # the paper method it is compared with
    paper: Optional[PaperEntry]
    n: int                                # finished runs with the diagnostics
    matched: Optional[int]                # None: nothing in the paper to match
    median: Optional[MedianRun]
    excluded: list[RunRecord] = field(default_factory=list)


@dataclass
class GameTable:
    env: str
    payoff: Optional[np.ndarray]
    paper_game: Optional[str]
    shape: Optional[tuple[int, int]]
    rows: list[AlgTable]


def _greedy(record: RunRecord, shape: tuple[int, int]) -> Optional[tuple[int, int]]:
    index = record.final(GREEDY_INDEX)
    if index is None:
        return None
    base = max(shape)  # the diagnostics index the full [A]^N table, A the largest action count
    return int(index) // base, int(index) % base


def matches(record: RunRecord, entry: PaperEntry, shape: tuple[int, int], tolerance: float) -> bool:
    """Whether a run's final diagnostics match the paper's outcome (module docstring)."""
    if entry.outcome == EXACT:
        error, optimal = record.final(PAYOFF_ERROR), record.final(GREEDY_OPTIMAL)
        return error is not None and optimal is not None and optimal >= 1.0 - 1e-9 and error <= tolerance
    greedy = _greedy(record, shape)
    paper = np.asarray(entry.q_tot, dtype=float)
    if greedy is None or not all(g < s for g, s in zip(greedy, paper.shape)):
        return False
    return bool(paper[greedy] >= paper.max() - 1e-9)


def median_run(runs: Sequence[RunRecord]) -> Optional[RunRecord]:
    """The run with the median final ``payoff_max_abs_error`` (the lower middle one for an even count)."""
    scored = [(e, r.seed if r.seed is not None else math.inf, r.ref, r) for r in runs
              if (e := r.final(PAYOFF_ERROR)) is not None]
    if not scored:
        return None
    scored.sort(key=lambda t: t[:3])
    return scored[(len(scored) - 1) // 2][3]


def _median_of(record: RunRecord, shape: tuple[int, int]) -> MedianRun:
    q_tot = np.full(shape, np.nan)
    for i in range(shape[0]):
        for j in range(shape[1]):
            if (v := record.final(f"q_tot_{i}_{j}")) is not None:
                q_tot[i, j] = v
    utilities = tuple(np.array([v if (v := record.final(f"q_agent_{k}_{a}")) is not None else np.nan
                                for a in range(shape[k])]) for k in range(2))
    optimal = record.final(GREEDY_OPTIMAL)
    return MedianRun(record.seed, record.ref, float(record.final(PAYOFF_ERROR)), _greedy(record, shape),
                     None if optimal is None else optimal >= 1.0 - 1e-9, q_tot, utilities)


def build_table1(records: Sequence[RunRecord], payoffs: Mapping[str, Optional[np.ndarray]],
                 methods: Mapping[str, Optional[str]], tolerance: float = DEFAULT_TOLERANCE) -> list[GameTable]:
    """Per environment of ``records``: the payoff and one :class:`AlgTable` per algorithm.

    ``payoffs``: the payoff of each environment label (None: unknown); ``methods``: the paper
    method each algorithm label is compared with (None: the paper has no such row).
    """
    if not tolerance >= 0:
        raise ValueError(f"table1 tolerance must be >= 0, got {tolerance!r}")
    included, excluded = classify(records, PAYOFF_ERROR)
    games = []
    for env in sorted({r.env for r in records}):
        payoff = payoffs.get(env)
        game = paper_game_of(payoff)
        runs_here = [r for r in included if r.env == env]
        shape = _table_shape(runs_here)
        rows = []
        for alg in sorted({r.alg for r in records if r.env == env}):
            runs = [r for r in runs_here if r.alg == alg]
            method = methods.get(alg)
            entry = PAPER_TABLE1.get((game, method)) if game and method else None
            matched = sum(matches(r, entry, shape, tolerance) for r in runs) if entry and shape else None
            median = median_run(runs)
            rows.append(AlgTable(alg, method, entry, len(runs), matched,
                                 _median_of(median, shape) if median is not None and shape else None,
                                 [r for r in excluded if r.env == env and r.alg == alg]))
        games.append(GameTable(env, payoff, game, shape, rows))
    return games


# --------------------------------------------------------------------------- Markdown

_GAME_NAMES = {"paper_a": "Game A", "paper_b": "Game B"}


def _action(a: int) -> str:
    return chr(ord("A") + a) if a < 26 else str(a)


def _v(x: float) -> str:
    if x is None or math.isnan(x):
        return "–"
    text = f"{x:.1f}"
    return "0.0" if text == "-0.0" else text  # -0.04 is no negative value worth a sign


def _with_paper(ours: float, paper: Optional[float]) -> str:
    return _v(ours) + (f" *({paper:.1f})*" if paper is not None else "")


def payoff_markdown(payoff: np.ndarray) -> str:
    a1, a2 = payoff.shape
    lines = ["| agent 1 \\ agent 2 | " + " | ".join(_action(j) for j in range(a2)) + " |", "|---" * (a2 + 1) + "|"]
    lines += [f"| **{_action(i)}** | " + " | ".join(f"{payoff[i, j]:g}" for j in range(a2)) + " |" for i in range(a1)]
    return "\n".join(lines) + "\n"


def layout_markdown(median: MedianRun, paper: Optional[PaperEntry]) -> str:
    """Q_tot with agent 1's utilities on the rows and agent 2's on the columns; paper in parentheses."""
    a1, a2 = median.q_tot.shape
    pq = np.asarray(paper.q_tot, dtype=float) if paper is not None else None
    pu = paper.utilities if paper is not None else None

    def paper_util(k: int, a: int) -> Optional[float]:
        return pu[k][a] if pu is not None and a < len(pu[k]) else None

    def paper_cell(i: int, j: int) -> Optional[float]:
        return float(pq[i, j]) if pq is not None and i < pq.shape[0] and j < pq.shape[1] else None

    head = "| Q1 \\ Q2 | " + " | ".join(f"**{_action(j)}**: {_with_paper(median.utilities[1][j], paper_util(1, j))}"
                                        for j in range(a2)) + " |"
    lines = [head, "|---" * (a2 + 1) + "|"]
    for i in range(a1):
        cells = []
        for j in range(a2):
            cell = _with_paper(median.q_tot[i, j], paper_cell(i, j))
            cells.append(f"**{cell}**" if median.greedy == (i, j) else cell)
        lines.append(f"| **{_action(i)}**: {_with_paper(median.utilities[0][i], paper_util(0, i))} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def summary_markdown(game: GameTable) -> str:
    lines = ["| algorithm | compared with the paper's | runs | median run | its max \\|Q_tot − payoff\\| | "
             "its greedy joint action | matched the paper's outcome | not included |", "|---" * 8 + "|"]
    for row in game.rows:
        m = row.median
        greedy = ("–" if m is None or m.greedy is None else
                  f"({_action(m.greedy[0])}, {_action(m.greedy[1])})" + (" optimal" if m.optimal else ""))
        lines.append(f"| {row.alg} | {row.paper.label if row.paper else '–'} | {row.n} | "
                     f"{'–' if m is None else f'seed {m.seed}'} | {'–' if m is None else f'{m.error:.3f}'} | {greedy} | "
                     f"{'–' if row.matched is None or not row.n else f'{row.matched}/{row.n}'} | "
                     f"{_count_notes(row.excluded) or '–'} |")
    return "\n".join(lines) + "\n"


def markdown(games: Sequence[GameTable], source: str, sweep: Optional[str], tolerance: float = DEFAULT_TOLERANCE) -> str:
    out = ["# The paper's Table 1" + (f" — sweep `{sweep}`" if sweep else ""), "",
           f"Source: {source}. Paper values ({PAPER_SOURCE}) in parentheses and italics. Per algorithm: the "
           f"final Q_tot of its **median run** (the finished run whose final max |Q_tot − payoff| is the median; "
           f"the lower middle one for an even count, ties by seed), agent 1's utilities Q1 on the rows and agent "
           f"2's Q2 on the columns, the agents' greedy joint action in bold. **Matched the paper's outcome**: "
           f"compared with its non-monotonic QMIX (exact recovery), greedy joint action optimal and max "
           f"|Q_tot − payoff| ≤ {tolerance:g}; compared with its QMIX, a greedy joint action its QMIX Q_tot "
           f"table maximises. Utilities of a factorisation are not unique (adding c to Q1 and −c to Q2 leaves "
           f"a sum unchanged, and a non-monotonic mixer allows much more), so ours and the paper's need only "
           f"agree in which action each agent prefers.", ""]
    for game in games:
        title = f"## {game.env}" + (f" ({_GAME_NAMES[game.paper_game]} of the paper)" if game.paper_game else "")
        out += [title, ""]
        if game.payoff is not None and game.payoff.ndim == 2:
            out += ["Payoff:", "", payoff_markdown(game.payoff)]
        elif game.payoff is None:
            out += ["Payoff: not known (no run config and no preset label).", ""]
        if game.shape is None:
            out += ["No finished run records a two-agent Q_tot table (`q_tot_<i>_<j>`) here: nothing to lay out.", ""]
        out += [summary_markdown(game)]
        for row in game.rows:
            out += [f"### {row.alg}", ""]
            if row.median is None:
                if row.n:
                    why = "no two-agent Q_tot table recorded"
                elif any(r.note.startswith("finished without") for r in row.excluded):
                    why = ("its runs finished without the IGM diagnostics (QTRAN's joint network has no Q_tot of "
                           "agent values)")
                else:
                    why = "no finished run (see Not included)"
                out += [f"No table: {why}.", ""]
                continue
            said = (f"Median of {row.n} run{'' if row.n == 1 else 's'}: seed {row.median.seed}, max |Q_tot − payoff| {row.median.error:.3f}"
                    + (f"; compared with the paper's {row.paper.label} ({row.paper.note}): matched "
                       f"{row.matched}/{row.n}" if row.paper is not None else "; the paper reports no such row")
                    + ".")
            out += [said, "", layout_markdown(row.median, row.paper)]
        gone = [r for row in game.rows for r in row.excluded]
        if gone:
            out += ["Not included:", ""] + [f"- {r.label()}: {r.note} ({r.ref})" for r in gone] + [""]
    return "\n".join(out)
