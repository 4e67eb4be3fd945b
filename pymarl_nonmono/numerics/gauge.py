"""The sign gauge of an unconstrained mixer: which of two mirror images the agents act on.

Without QMIX's ``abs``, negating agent i's utilities together with the mixer's parameters that
multiply them (:meth:`~.mixers.Mixer.agent_mirror_rows`) leaves Q_tot unchanged for every state
and joint action: the same TD loss, gradients that map onto each other. In one of the two images
agent i's greedy action can be its *worst* (docs/sign_symmetry.md). The controller carries a
per-agent sign ``s_i`` (utilities ``s_i * net_i``), so the image can be *chosen* without touching
the function being learned -- gauge fixing:

* :func:`mirror_agent_` applies the symmetry to a mixer's parameters and, given its optimiser,
  to the optimiser's state (first moments are linear in the gradient and change sign; second
  moments are not), so training continues exactly as it would have in the other image;
* :class:`GreedyFlipGauge` decides when an agent should change sides: when the learned Q_tot
  says that the agent playing its argmin (what it would play after a flip), the others greedy,
  beats the greedy joint action, by a margin, on most sampled states, at several consecutive
  checks (:meth:`GreedyFlipGauge.decide`);
* :data:`SIGN_GAUGES` names the choices of the ``sign_gauge`` config key.

Shapes as in :mod:`.igm`: utilities ``q [M, N, A]`` at ``M`` states, ``states [M, S]``,
availability ``avail [M, N, A]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from ..errors import check_int, check_range, check_shape
from ..registry import Registry

#: Optimiser state entries that are linear in the gradient: they change sign with the mirrored
#: rows (Adam's and RMSprop's running first moments, SGD's and RMSprop's momentum).
FIRST_MOMENTS = frozenset({"exp_avg", "momentum_buffer", "grad_avg"})
#: Entries that are even in the gradient, or counters: unchanged by the mirror.
EVEN_STATE = frozenset({"step", "exp_avg_sq", "max_exp_avg_sq", "square_avg"})


@torch.no_grad()
def mirror_agent_(mixer, agent: int, optimiser: Optional[torch.optim.Optimizer] = None) -> None:
    """Negate ``mixer``'s parameters that multiply ``agent``'s utilities, in place, and the
    matching rows of ``optimiser``'s first moments (and of any gradient already computed).

    With the agent's utilities negated too (the controller's sign), Q_tot is unchanged, and the
    optimiser's next steps are the mirror images of the steps it would have taken. Raises for a
    mixer without the symmetry, and for optimiser state this function does not know how to
    mirror (it would otherwise carry momentum of the wrong sign).
    """
    for param, rows in mixer.agent_mirror_rows(agent):
        param[rows] = -param[rows]
        if param.grad is not None:
            param.grad[rows] = -param.grad[rows]
        if optimiser is None:
            continue
        for key, value in optimiser.state.get(param, {}).items():
            if key in FIRST_MOMENTS:
                value[rows] = -value[rows]
            elif key not in EVEN_STATE:
                raise ValueError(f"sign gauge: cannot mirror optimiser state {key!r} of "
                                 f"{type(optimiser).__name__} (known: {sorted(FIRST_MOMENTS | EVEN_STATE)})")


#: Gains in Q_tot below this fraction of |Q_tot| (at least 1) are ties, never evidence.
TIE_FRACTION = 0.01


def _masked_argext(q: torch.Tensor, avail: torch.Tensor, largest: bool) -> torch.Tensor:
    fill = float("-inf") if largest else float("inf")
    q = q.masked_fill(avail == 0, fill)
    return q.argmax(-1) if largest else q.argmin(-1)


def _q_tot(mixer, q: torch.Tensor, states: torch.Tensor, joint: torch.Tensor) -> torch.Tensor:
    """Q_tot of one joint action per state: ``joint [M, N]`` -> ``[M]``."""
    values = torch.gather(q, 2, joint.unsqueeze(-1)).transpose(1, 2)  # [M, 1, N]
    return mixer.q_tot_of_candidates(values, states).squeeze(-1)


@dataclass(frozen=True)
class FlipEvidence:
    """What one check saw of one agent: over the ``states`` sampled states where it has a choice
    of actions, the mean ``gain`` in Q_tot when it plays its available argmin instead of its greedy
    action (the others greedy, including earlier flips of the same check), and the ``share`` of
    those states where the argmin is strictly better. ``holds``: this check counts towards a flip."""

    agent: int
    gain: float
    share: float
    states: int
    threshold: float
    holds: bool


def scan_agents(mixer, q: torch.Tensor, states: torch.Tensor, avail: torch.Tensor, threshold: float,
                flip: Callable[[FlipEvidence], bool]) -> list[FlipEvidence]:
    """Each agent in turn: the evidence that it acts on its mirror image, and ``flip(evidence)``
    deciding whether it changes sides now. A flip changes nothing in Q_tot but the flipped agent's
    greedy action (its former argmin), so the later agents of the scan are judged against the
    greedy joint action *after* the earlier flips. Evidence ``holds`` when the mean gain exceeds
    ``threshold`` (and :data:`TIE_FRACTION` of the mean |Q_tot| of the greedy joint actions, or of
    1 if that is smaller) and the argmin is better on more than half of the states. Returns every
    agent's evidence, in order."""
    m, n, a = q.shape
    check_shape("states", states, (m, None))
    check_shape("avail", avail, (m, n, a))
    with torch.no_grad():
        acting = _masked_argext(q, avail, largest=True)  # [M, N]
        argmin = _masked_argext(q, avail, largest=False)
        has_choice = (avail != 0).sum(-1) >= 2  # [M, N]
        greedy_q = _q_tot(mixer, q, states, acting)
        # Differences below a small fraction of Q_tot's own size are ties: in a deterministic game
        # the TD error, and with it the threshold, goes to 0 while tied entries keep differing by
        # a little fitting noise.
        threshold = max(float(threshold), TIE_FRACTION * max(1.0, float(greedy_q.abs().mean())) if m else 0.0)
        evidence = []
        for i in range(n):
            rows = has_choice[:, i]
            count = int(rows.sum())
            if count == 0:
                ev = FlipEvidence(i, 0.0, 0.0, 0, threshold, False)
                flip(ev)
                evidence.append(ev)
                continue
            deviation = acting.clone()
            deviation[:, i] = argmin[:, i]
            deviation_q = _q_tot(mixer, q, states, deviation)
            gain = (deviation_q - greedy_q)[rows]
            mean_gain, share = float(gain.mean()), float((gain > 0).float().mean())
            ev = FlipEvidence(i, mean_gain, share, count, threshold, mean_gain > threshold and share > 0.5)
            evidence.append(ev)
            if flip(ev):
                acting, greedy_q = deviation, deviation_q
    return evidence


class GreedyFlipGauge:
    """Flip an agent when the learned Q_tot says its argmin beats its greedy action.

    Checked every ``interval`` updates (:meth:`due`) from the first update at ``start`` env steps
    on: a gauge that starts once exploration has annealed changes which side the agents act on
    without its flips steering most of what is explored. The threshold is ``margin`` times the scale
    of the TD error of the update (its root mean square): Q_tot is fitted no better than that, so
    a smaller difference between two joint actions is not evidence. An agent is flipped when the
    evidence held at ``patience * 2**k`` consecutive checks, ``k`` its flips so far: a payoff with
    near-equal entries, where the sign of a difference is noise, cannot make it flip back and
    forth, and every flip back needs twice the evidence of the previous one. A flip turns the
    agent's gain into its negative, so flipping back also needs the difference reversed by twice
    the threshold.
    """

    def __init__(self, n_agents: int, interval: int, margin: float, patience: int, start: int = 0) -> None:
        self.n_agents = check_int("n_agents", n_agents, 1)
        self.interval = check_int("sign_gauge_interval", interval, 1)
        self.margin = float(check_range("sign_gauge_margin", margin, low=0.0))
        self.patience = check_int("sign_gauge_patience", patience, 1)
        self.start = check_int("sign_gauge_start", start, 0)
        self.updates = 0
        self.streak = [0] * self.n_agents
        self.flips = [0] * self.n_agents
        self.last_evidence: list[FlipEvidence] = []  # of the latest check, for the learner's statistics

    def due(self, t_env: int) -> bool:
        """Counts one update at ``t_env`` env steps; True when this one is checked. Updates before
        ``start`` are not counted: the first one at ``start`` or later is checked."""
        if t_env < self.start:
            return False
        self.updates += 1
        return (self.updates - 1) % self.interval == 0

    def required(self, agent: int) -> int:
        """Consecutive checks of evidence that flip ``agent`` next."""
        return self.patience * 2 ** self.flips[agent]

    def decide(self, mixer, q: torch.Tensor, states: torch.Tensor, avail: torch.Tensor,
               td_scale: float) -> tuple[list[int], list[FlipEvidence]]:
        """Agents to flip now, in order, and every agent's evidence (see :func:`scan_agents`).

        ``td_scale``: the root mean square TD error of the update. Counts the flips it returns;
        the caller must apply them (controller signs, :func:`mirror_agent_` on online and target
        mixers)."""
        flipped = []

        def flip(ev: FlipEvidence) -> bool:
            self.streak[ev.agent] = self.streak[ev.agent] + 1 if ev.holds else 0
            if self.streak[ev.agent] < self.required(ev.agent):
                return False
            self.streak[ev.agent] = 0
            self.flips[ev.agent] += 1
            flipped.append(ev.agent)
            return True

        evidence = scan_agents(mixer, q, states, avail, self.margin * float(td_scale), flip)
        self.last_evidence = evidence
        return flipped, evidence

    @property
    def total_flips(self) -> int:
        return sum(self.flips)

    def state_dict(self) -> dict:
        return {"updates": self.updates, "streak": list(self.streak), "flips": list(self.flips)}

    def load_state_dict(self, state: dict) -> None:
        if len(state["flips"]) != self.n_agents:
            raise ValueError(f"sign gauge state is for {len(state['flips'])} agents, this run has {self.n_agents}")
        self.updates = int(state["updates"])
        self.streak = [int(x) for x in state["streak"]]
        self.flips = [int(x) for x in state["flips"]]


GaugeFactory = Callable[..., Optional[GreedyFlipGauge]]
#: The ``sign_gauge`` choices: ``off`` (the agents act on whichever image training reached) and
#: ``greedy_flip`` (:class:`GreedyFlipGauge`).
SIGN_GAUGES: Registry[GaugeFactory] = Registry("sign_gauge")
SIGN_GAUGES.register("off", lambda **kwargs: None)
SIGN_GAUGES.register("greedy_flip", lambda **kwargs: GreedyFlipGauge(**kwargs))


def make_sign_gauge(name: str, *, n_agents: int, interval: int, margin: float, patience: int,
                    start: int) -> Optional[GreedyFlipGauge]:
    """The gauge registered as ``name``; ``None`` for ``off``."""
    return SIGN_GAUGES.get(name)(n_agents=n_agents, interval=interval, margin=margin, patience=patience,
                                 start=start)
