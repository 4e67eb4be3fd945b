"""``pymarl-nonmono dynamics``: the paper's single-state gradient-flow analysis.

Wired into :mod:`pymarl_nonmono.cli` as a subcommand through :func:`add_arguments` and
:func:`run`. Writes ``outcomes.png``, ``eigenvalues.png``, ``trajectories.png``,
``summary.json`` and ``summary.md`` to ``--out``; see docs/dynamics.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path
from typing import Optional

import torch

from ..envs.matrix import PRESETS
from ..errors import ConfigError, check_range
from .dynamics import (GRADIENTS, OUTCOMES, POLICIES, Analysis, AnalysisConfig, Stability, advantage_coordinates,
                       analyse, load_payoff)

log = logging.getLogger(__name__)

PROG = "pymarl-nonmono"
EXIT_ERROR = 2
DEFAULT_GAME = "qtran"
DEFAULT_TAU = 0.5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Integrate the gradient flow of sum_a mu(a) (y(a) - Q_tot(a))^2 over the agents' local Q-tables and a "
        "non-monotonic mixer from random starts on a single-state game; report how many end IGM-consistent and "
        "optimal; find zero-loss points and classify them by the spectrum on the normal space of the zero-loss set. "
        "See docs/dynamics.md.")
    g = parser.add_mutually_exclusive_group()
    g.add_argument("--game", metavar="NAME", help=f"preset payoff: {', '.join(PRESETS.names())} (default: {DEFAULT_GAME})")
    g.add_argument("--payoff", metavar="JSON",
                   help="payoff as a JSON nested list, one dimension per agent, e.g. '[[8,-12],[-12,0]]'")
    parser.add_argument("--penalty-k", type=float, metavar="K", help="k of --game penalty")
    parser.add_argument("--mu", choices=POLICIES, default="uniform",
                        help="behaviour policy: uniform (Theorem 1) or softmax of the local Q-values (Theorems 2-3)")
    parser.add_argument("--tau", type=float, metavar="T", help=f"softmax temperature, > 0 (default: {DEFAULT_TAU})")
    parser.add_argument("--gradient", choices=GRADIENTS, default="full",
                        help="full: -grad L, through mu's dependence on q (the paper's eq. 16); "
                             "semi: mu not differentiated (what Q-learning does)")
    parser.add_argument("--starts", type=int, default=64, metavar="N", help="random initial points (default: 64)")
    parser.add_argument("--steps", type=int, default=600, metavar="N",
                        help="integrator iterations per start, accepted or rejected (default: 600)")
    parser.add_argument("--t-max", type=float, default=1e6, metavar="T", help="flow time to integrate to (default: 1e6)")
    parser.add_argument("--hidden", type=int, default=16, metavar="H", help="hidden units of the mixer (default: 16)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the starts and constructed points (default: 0)")
    parser.add_argument("--out", metavar="DIR", help="output folder (default: ./dynamics-GAME-MU[-tauT]-GRADIENT, e.g. dynamics-qtran-softmax-tau0.3-full)")


def _out(line: str = "") -> None:
    sys.stdout.write(line + "\n")


class ProgressLine:
    """``progress(phase, done, total)`` shown on one line of ``stream``: redrawn in place on a
    terminal, a line per tenth of each phase otherwise (a log file)."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.last = None

    def __call__(self, phase: str, done: int, total: int) -> None:
        tenth = 10 * (done + 1) // max(total, 1)
        if self.tty:
            self.stream.write(f"\r{phase}: {done + 1}/{total}" + ("\n" if done + 1 == total else ""))
        elif (phase, tenth) != self.last:
            self.stream.write(f"{phase}: {done + 1}/{total}\n")
        self.last = (phase, tenth)
        self.stream.flush()


def _config(args) -> tuple[AnalysisConfig, str]:
    if args.payoff is not None:
        try:
            payoff = json.loads(args.payoff)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--payoff is not valid JSON ({exc.msg} at character {exc.pos}): {args.payoff!r}") from None
        table, name = load_payoff(payoff=payoff), "custom"
    else:
        name = args.game or DEFAULT_GAME
        table = load_payoff(game=name, penalty_k=args.penalty_k)
    for option, value in (("--starts", args.starts), ("--steps", args.steps), ("--hidden", args.hidden)):
        check_range(option, value, low=1)
    check_range("--t-max", args.t_max, low=0.0, high=math.inf, low_open=True, high_open=True)
    tau = DEFAULT_TAU if args.tau is None else args.tau
    check_range("--tau", tau, low=0.0, high=math.inf, low_open=True, high_open=True)
    cfg = AnalysisConfig(payoff=table, mu=args.mu, tau=tau, gradient=args.gradient, starts=args.starts,
                         steps=args.steps, seed=args.seed, hidden=args.hidden, t_max=args.t_max)
    return cfg, name


def run(args) -> int:
    try:
        cfg, name = _config(args)
    except ConfigError as exc:
        sys.stderr.write(f"{PROG}: error: {exc}\n")
        return EXIT_ERROR
    if args.mu == "uniform" and args.tau is not None:
        _out("note: --tau is unused with --mu uniform")
    # The flow is many tiny batched solves: extra threads only contend on a shared machine.
    torch.set_num_threads(1)
    out_dir = Path(args.out or f"dynamics-{name}-{cfg.mu}{'' if cfg.mu == 'uniform' else f'-tau{cfg.tau:g}'}-{cfg.gradient}")
    try:
        analysis = analyse(cfg, progress=ProgressLine(sys.stderr))
    except (ConfigError, RuntimeError) as exc:
        sys.stderr.write(f"{PROG}: error: {exc}\n")
        return EXIT_ERROR
    summary = analysis.summary()
    summary["game_name"] = name
    out_dir.mkdir(parents=True, exist_ok=True)
    for line in report_lines(analysis, name):
        _out(line)
    try:
        pngs = write_plots(analysis, out_dir, name)
    except ImportError as exc:
        sys.stderr.write(f"{PROG}: error: plots need matplotlib ({exc}): pip install matplotlib\n")
        return EXIT_ERROR
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    (out_dir / "summary.md").write_text("\n".join(markdown_lines(analysis, name)) + "\n", encoding="utf-8")
    for path in [*pngs, out_dir / "summary.json", out_dir / "summary.md"]:
        _out(f"wrote {path}")
    return 0


# --- text ---------------------------------------------------------------------------


def _fmt(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.3g}"


def _paper_cell(s: Stability) -> tuple[str, str]:
    """Most negative of the true quadratic forms along the paper's directions, and the
    paper's value for the same direction."""
    if not s.paper_checks:
        return "-", "-"
    c = min(s.paper_checks, key=lambda c: c["actual"])
    return _fmt(c["actual"]), _fmt(c["paper"])


def _verdicts(analysis: Analysis) -> list[str]:
    dyn = analysis.dynamics
    lines = []
    points = analysis.constructed + analysis.endpoint_points
    for label, want_igm in (("IGM-violating", False), ("IGM-consistent", True)):
        group = [s for s in points if s.igm_consistent == want_igm]
        if not group:
            continue
        kinds = {k: sum(1 for s in group if s.kind == k) for k in ("stable", "saddle", "marginal")}
        certified = sum(1 for s in group if s.kind == "stable" and not s.resolved)
        lines.append(f"  {label} zero-loss points: {len(group)} ({kinds['stable']} stable"
                     + (f", {certified} of them by the bound*" if certified else "")
                     + f", {kinds['saddle']} saddle, {kinds['marginal']} marginal); smallest normal eigenvalue "
                     f"{min(s.normal_eigs[0] for s in group):.3g}, smallest bound 2 min(mu) sigma_min(J)^2 "
                     f"{min(s.certified_lower_bound for s in group):.3g}")
    violating = [s for s in points if not s.igm_consistent]
    if dyn.mu == "softmax" and violating:
        worst = min(c["actual"] for s in violating for c in s.paper_checks)
        lines.append(f"  Theorem 3 predicts v^T H v ~ -(2/tau)(y(u*) - y(g)) < 0 along v = e[i,u*_i] - e[i,g_i]; "
                     f"smallest value found: {worst:.3g}" + (" (not reproduced)" if worst >= 0 else ""))
    if any(s.kind == "stable" and not s.resolved for s in points):
        lines.append("  * smallest eigenvalues below numerical resolution; stable because at an exact zero-loss point the "
                     "operator is 2 J^T diag(mu) J >= 2 min(mu) sigma_min(J)^2 > 0 on the normal space")
    return lines


def _kind(st: Stability) -> str:
    return st.kind + ("" if st.resolved else "*")


def report_lines(analysis: Analysis, name: str) -> list[str]:
    s = analysis.summary()
    cfg, game = analysis.config, analysis.game
    fr = s["fractions"]
    n = cfg.starts
    lines = [
        f"game {name} {game.payoff.tolist()}, optimum {s['optimum']} (y = {game.best:g}); mixer: one hidden layer of "
        f"{cfg.hidden} ({cfg.activation}), {s['mixer']['parameters']} parameters with the Q-tables",
        f"flow: {analysis.dynamics.describe()}; {n} starts (seed {cfg.seed}), up to {cfg.steps} steps, t_max {cfg.t_max:g} "
        f"(reached by {s['reached_t_max']}; median t {s['time_reached']['median']:.3g})",
        f"  IGM-consistent and optimal: {fr['igm_consistent_and_optimal']:.3f} "
        f"({round(fr['igm_consistent_and_optimal'] * n)}/{n})",
        f"  IGM-consistent {fr['igm_consistent']:.3f}, greedy optimal {fr['greedy_optimal']:.3f}, every joint action "
        f"fitted {fr['fitted_every_joint_action']:.3f}; greedy-optimal at the start {fr['initially_greedy_optimal']:.3f}, "
        f"greedy joint action unchanged {fr['kept_initial_greedy']:.3f}",
        "  outcomes: " + ", ".join(f"{k} {v}" for k, v in s["outcomes"].items()),
        "  final greedy joint actions: " + ", ".join(f"{k} {v}" for k, v in s["greedy_joint_actions"].items()),
    ]
    reached = s["zero_loss_points_reached"]
    if reached:
        lines.append(f"zero-loss points reached ({len(analysis.endpoint_points)} endpoints within reach, polished onto "
                     "the zero-loss set): " + "; ".join(
                         f"{k}: " + ", ".join(f"{c} {kind}" for kind, c in v.items()) for k, v in reached.items()))
    else:
        lines.append("zero-loss points reached: none (no endpoint had fitted every joint action)")
    first = analysis.constructed[0]
    lines.append(f"constructed zero-loss points, one per greedy joint action (normal space {first.normal_dim} of "
                 f"{first.normal_dim + first.tangent_dim} dimensions):")
    lines.append(f"  {'greedy':8} {'IGM':4} {'kind':8} {'min eig':>10} {'max eig':>10} {'min mu':>9}  "
                 f"{'v^T H v':>10} {'paper':>10}")
    for st in analysis.constructed:
        actual, paper = _paper_cell(st)
        lines.append(f"  {st.greedy_label:8} {'yes' if st.igm_consistent else 'no':4} {_kind(st):8} {st.normal_eigs[0]:10.3g} "
                     f"{st.normal_eigs[-1]:10.3g} {st.min_policy:9.2g}  {actual:>10} {paper:>10}")
    lines.append("verdict:")
    lines.extend(_verdicts(analysis))
    return lines


def markdown_lines(analysis: Analysis, name: str) -> list[str]:
    s = analysis.summary()
    cfg = analysis.config
    fr = s["fractions"]
    lines = [
        f"# Gradient-flow analysis: {name}, {analysis.dynamics.describe()}",
        "",
        f"Payoff `{analysis.game.payoff.tolist()}`, optimum {s['optimum']}. Mixer: one hidden layer of {cfg.hidden} "
        f"({cfg.activation}); {s['mixer']['parameters']} parameters with the Q-tables. {cfg.starts} starts (seed "
        f"{cfg.seed}), up to {cfg.steps} integrator steps, t_max {cfg.t_max:g} (reached by {s['reached_t_max']}).",
        "",
        "| fraction of starts | value |",
        "|---|---|",
    ]
    for key, value in fr.items():
        lines.append(f"| {key.replace('_', ' ')} | {value:.3f} |")
    lines += ["", "| outcome | starts |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in s["outcomes"].items()]
    lines += ["", "## Zero-loss points reached from the flow", ""]
    if s["zero_loss_points_reached"]:
        lines += ["| | stable | saddle | marginal |", "|---|---|---|---|"]
        for key, kinds in s["zero_loss_points_reached"].items():
            lines.append(f"| {key} | {kinds.get('stable', 0)} | {kinds.get('saddle', 0)} | {kinds.get('marginal', 0)} |")
    else:
        lines.append("None: no endpoint had fitted every joint action.")
    lines += ["", "## Constructed zero-loss points (one per greedy joint action)", "",
              "Eigenvalues of the Hessian (full) or minus the field's Jacobian (semi) on the normal space of the "
              "zero-loss set; `v^T H v` is the most negative true quadratic form along the paper's directions "
              "(Theorem 3: `e[i,u*_i] - e[i,g_i]`; Theorem 2: `e[i,u'] - e[i,u*_i]`), `paper` the paper's value "
              "for that direction (eq. 21 / eq. 19).", "",
              "| greedy | IGM | kind | min eig | max eig | min mu | v^T H v | paper |", "|---|---|---|---|---|---|---|---|"]
    for st in analysis.constructed:
        actual, paper = _paper_cell(st)
        lines.append(f"| {st.greedy_label} | {'yes' if st.igm_consistent else 'no'} | {_kind(st)} | {st.normal_eigs[0]:.3g} | "
                     f"{st.normal_eigs[-1]:.3g} | {st.min_policy:.2g} | {actual} | {paper} |")
    lines += ["", "## Verdict", ""] + ["- " + line.strip() for line in _verdicts(analysis)]
    return lines


# --- plots --------------------------------------------------------------------------


def symlog_ticks(linthresh: float, largest: float, most: int = 5) -> list[float]:
    """Ticks for a symlog axis: 0 and at most ``most`` decades each side, none within two
    decades of ``linthresh`` (matplotlib's own put ±linthresh beside 0, labels on top of each other)."""
    low = math.floor(math.log10(linthresh)) + 2
    high = max(low, math.ceil(math.log10(max(largest, linthresh))))
    stride = max(1, math.ceil((high - low + 1) / most))
    decades = [10.0 ** e for e in range(high, low - 1, -stride)]
    return sorted([-d for d in decades] + [0.0] + decades)


def write_plots(analysis: Analysis, out_dir: Path, name: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    title = f"{name}: {analysis.dynamics.describe()}"
    colours = {OUTCOMES[0]: "tab:green", OUTCOMES[1]: "tab:orange", OUTCOMES[2]: "tab:red"}
    paths = []

    fig, ax = plt.subplots(figsize=(7, 4))
    fitted = [sum(1 for o in analysis.outcomes if o["category"] == c and o["fitted"]) for c in OUTCOMES]
    unfitted = [sum(1 for o in analysis.outcomes if o["category"] == c and not o["fitted"]) for c in OUTCOMES]
    xs = range(len(OUTCOMES))
    ax.bar(xs, fitted, color=[colours[c] for c in OUTCOMES], label="every joint action fitted")
    ax.bar(xs, unfitted, bottom=fitted, color=[colours[c] for c in OUTCOMES], alpha=0.35, hatch="//",
           label="not every joint action fitted")
    for x, (f, u) in enumerate(zip(fitted, unfitted)):
        ax.text(x, f + u, f"{(f + u) / max(1, len(analysis.outcomes)):.2f}", ha="center", va="bottom")
    ax.set_xticks(list(xs), OUTCOMES)
    ax.set_ylabel(f"starts (of {len(analysis.outcomes)})")
    ax.set_title(f"Where the flow ends\n{title}", fontsize=10)
    ax.legend(handles=[plt.Rectangle((0, 0), 1, 1, color="grey", label="every joint action fitted"),
                       plt.Rectangle((0, 0), 1, 1, color="grey", alpha=0.35, hatch="//",
                                     label="not every joint action fitted")], fontsize=8)
    fig.tight_layout()
    paths.append(out_dir / "outcomes.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(10, 4.5))
    labels = [st.greedy_label for st in analysis.constructed]
    for x, st in enumerate(analysis.constructed):
        colour = "tab:green" if st.igm_consistent else "tab:red"
        ax.scatter([x] * len(st.normal_eigs), st.normal_eigs, s=14, color=colour, alpha=0.7)
        for c in st.paper_checks:
            ax.scatter([x + 0.2], [c["actual"]], marker="D", s=18, color="black")
            if c["paper"] is not None:
                ax.scatter([x + 0.2], [c["paper"]], marker="x", s=30, color="tab:purple")
    smallest = min(abs(e) for st in analysis.constructed for e in st.normal_eigs if e != 0.0)
    linthresh = max(smallest, 1e-12)
    ax.set_yscale("symlog", linthresh=linthresh)
    ax.set_yticks(symlog_ticks(linthresh, max(abs(e) for st in analysis.constructed for e in st.normal_eigs)))
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_xlabel("greedy joint action of the zero-loss point")
    ax.set_ylabel("eigenvalue on the normal space")
    handles = [plt.Line2D([], [], marker="o", ls="", color="tab:green", label="eigenvalues, IGM-consistent"),
               plt.Line2D([], [], marker="o", ls="", color="tab:red", label="eigenvalues, IGM-violating"),
               plt.Line2D([], [], marker="D", ls="", color="black", label="v^T H v along the paper's directions")]
    if analysis.dynamics.mu == "softmax":
        handles.append(plt.Line2D([], [], marker="x", ls="", color="tab:purple", label="the paper's value (eq. 19/21)"))
    ax.legend(handles=handles, fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_title(f"Spectra of constructed zero-loss points (positive = attracting)\n{title}", fontsize=10)
    fig.tight_layout()
    paths.append(out_dir / "eigenvalues.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 5.5))
    game, model = analysis.game, analysis.dynamics.model
    coords = advantage_coordinates(game, analysis.flow.q_path, model.q_offsets)  # [B, R, N]
    shown = min(40, coords.shape[0])
    for b in range(shown):
        c = coords[b]
        colour = colours[analysis.outcomes[b]["category"]]
        yy = c[:, 1] if game.n_agents > 1 else torch.log10(analysis.flow.times[b].clamp_min(1e-3))
        ax.plot(c[:, 0], yy, color=colour, lw=0.8, alpha=0.7)
        ax.scatter([c[0, 0]], [yy[0]], color=colour, s=10, marker="o")
        ax.scatter([c[-1, 0]], [yy[-1]], color=colour, s=25, marker="x")
    ax.axvline(0.0, color="grey", lw=0.8)
    if game.n_agents > 1:
        ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_xlabel("d_0 = Q_0(u*_0) - max_{b != u*_0} Q_0(b)")
    ax.set_ylabel("d_1 = Q_1(u*_1) - max_{b != u*_1} Q_1(b)" if game.n_agents > 1 else "log10 t")
    handles = [plt.Line2D([], [], color=colours[c], label=c) for c in OUTCOMES]
    ax.legend(handles=handles, fontsize=7, loc="best")
    ax.set_title(f"Trajectories ({shown} starts; o start, x end; upper right = greedy optimal)\n{title}", fontsize=9)
    fig.tight_layout()
    paths.append(out_dir / "trajectories.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths
