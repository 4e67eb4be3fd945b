"""IGM diagnostics: do the agents' greedy actions agree with the greedy joint action?

IGM (individual-global-max) holds at a state when the joint action made of each agent's
greedy action maximises Q_tot. The paper's claim is that with approximately greedy
exploration, non-monotonic mixers end IGM-consistent anyway; these functions measure it.

Shapes: agent Q-values ``[N, A]`` at one state (``[B, T, N, A]`` for batches), states
``[S]`` (``[B, T, S]``), availability masks like the Q-values.

Two violation rates, never to be confused: :func:`igm_violation_rate` compares the greedy
joint action with every joint action (exact, ``A^N`` mixer evaluations per state, so it
refuses ``A^N`` above a limit); :func:`igm_unilateral_violation_rate` only with the joint
actions one agent's deviation reaches (``N*A`` evaluations), a lower bound that cannot see
a failure needing several agents to change at once -- the coordinated failure the paper
is about.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from ..errors import check_shape

NEG = float("-inf")


def joint_actions(n_agents: int, n_actions: int, device=None) -> torch.Tensor:
    """All joint actions ``[A^N, N]`` in row-major order (agent 0 slowest)."""
    grids = torch.meshgrid(*[torch.arange(n_actions, device=device)] * n_agents, indexing="ij")
    return torch.stack([g.reshape(-1) for g in grids], dim=-1)


def joint_q_table(mixer, agent_q: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
    """Q_tot of every joint action at one state: ``[A] * N``."""
    n, a = agent_q.shape
    joint = joint_actions(n, a, agent_q.device)
    qs = agent_q[torch.arange(n, device=agent_q.device), joint]  # [A^N, N]
    with torch.no_grad():
        table = mixer(qs.unsqueeze(0), state.reshape(1, 1, -1).expand(1, qs.shape[0], -1))
    return table.view(*([a] * n))


def _greedy(agent_q: torch.Tensor, avail: Optional[torch.Tensor]) -> torch.Tensor:
    q = agent_q if avail is None else agent_q.masked_fill(avail == 0, NEG)
    return q.argmax(-1)


def igm_summary(
    q_table: torch.Tensor,
    agent_q: torch.Tensor,
    avail: Optional[torch.Tensor] = None,
    payoff: Optional[torch.Tensor] = None,
    tol: float = 1e-6,
) -> dict:
    """IGM facts of one state: the agents' greedy joint action, whether it maximises
    ``q_table`` (IGM-consistent), and with a ``payoff`` whether it is optimal and how far
    Q_tot is from the payoff."""
    n, a = agent_q.shape
    greedy = tuple(int(x) for x in _greedy(agent_q, avail))
    table = q_table
    if avail is not None:
        joint_ok = torch.ones_like(q_table, dtype=torch.bool)
        for i in range(n):
            shape = [1] * n
            shape[i] = a
            joint_ok = joint_ok & (avail[i] != 0).view(shape)
        table = q_table.masked_fill(~joint_ok, NEG)
    best = float(table.max())
    out = {
        "greedy_joint": greedy,
        "greedy_joint_index": int(sum(g * a ** (n - 1 - i) for i, g in enumerate(greedy))),
        "igm_consistent": float(table[greedy]) >= best - tol * max(1.0, abs(best)),
    }
    if payoff is not None:
        payoff = torch.as_tensor(payoff).to(device=q_table.device, dtype=q_table.dtype)
        sub = tuple(slice(0, s) for s in payoff.shape)
        out["payoff_max_abs_error"] = float((q_table[sub] - payoff).abs().max())
        out["greedy_optimal"] = bool(payoff[greedy] == payoff.max()) if all(
            g < s for g, s in zip(greedy, payoff.shape)) else False
    return out


# Largest A^N the exact check enumerates per sampled state (A^N mixer evaluations each).
EXACT_JOINT_ACTIONS = 4096


def exact_check_affordable(n_agents: int, n_actions: int, max_joint_actions: int = EXACT_JOINT_ACTIONS) -> bool:
    """Whether :func:`igm_violation_rate` may enumerate all ``n_actions ** n_agents`` joint actions."""
    return math.pow(n_actions, n_agents) <= max_joint_actions


@dataclass(frozen=True)
class IGMRates:
    """IGM diagnostics on one sample of states.

    ``exact``: fraction where some joint action beats the greedy one (``None`` when
    ``A^N`` is above the limit). ``unilateral``: fraction where a single agent's
    deviation beats it; a lower bound of ``exact``, blind to coordinated failures.
    ``negative_gradient``: fraction of (state, agent) pairs, among agents with a choice
    (two or more available actions), where dQ_tot/dQ_i < 0 at the greedy joint action.
    ``worst_greedy``: fraction of the same pairs where the agent's own greedy action is the
    one of its actions that gives the lowest Q_tot (the others held at their greedy actions):
    the mirror image of IGM that the sign symmetry of an unconstrained mixer allows.
    """

    exact: Optional[float]
    unilateral: float
    negative_gradient: float
    worst_greedy: float


def sample_states(agent_q, states, avail, mask, max_points, generator):
    """Up to ``max_points`` valid states, flattened: ``q [M, N, A]``, ``s [M, S]``, ``av [M, N, A]``."""
    b, t, n, a = agent_q.shape
    check_shape("states", states.reshape(b, t, -1), (b, t, None))
    check_shape("avail", avail, (b, t, n, a))
    check_shape("mask", mask, (b, t))
    idx = torch.nonzero(mask.reshape(-1) > 0).squeeze(-1)
    if max_points is not None and idx.numel() > max_points:
        pick = torch.randperm(idx.numel(), generator=generator)[:max_points]
        idx = idx[pick.to(idx.device)]
    return agent_q.reshape(b * t, n, a)[idx], states.reshape(b * t, -1)[idx], avail.reshape(b * t, n, a)[idx]


def _candidate_values(q: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """The agents' utilities of candidate joint actions: ``q [M, N, A]``, ``candidates
    [M, K, N]`` -> ``[M, K, N]``."""
    return torch.gather(q, 2, candidates.transpose(1, 2)).transpose(1, 2)


def _scale(x: torch.Tensor) -> torch.Tensor:
    """Tolerances are relative to |Q_tot| above 1, absolute below."""
    return x.detach().abs().clamp(min=1.0)


def _beaten(mixer, q: torch.Tensor, s: torch.Tensor, av: torch.Tensor, candidates: torch.Tensor,
            tol: float) -> torch.Tensor:
    """``[M]`` bool: some available candidate joint action ``[M, K, N]`` has a higher Q_tot
    than the agents' greedy joint action. ``mixer``: a :class:`~.mixers.Mixer`."""
    greedy = _greedy(q, av)  # [M, N]
    cand_avail = torch.gather(av, 2, candidates.transpose(1, 2)).transpose(1, 2).bool().all(-1)  # [M, K]
    with torch.no_grad():
        q_tot = mixer.q_tot_of_candidates(_candidate_values(q, candidates), s)  # [M, K]
        greedy_q = mixer.q_tot_of_candidates(_candidate_values(q, greedy.unsqueeze(1)), s).squeeze(-1)
    best = q_tot.masked_fill(~cand_avail, NEG).max(-1).values
    return best > greedy_q + tol * _scale(greedy_q)


def joint_violations(mixer, q: torch.Tensor, s: torch.Tensor, av: torch.Tensor, tol: float = 1e-6,
                     max_joint_actions: int = EXACT_JOINT_ACTIONS) -> torch.Tensor:
    """``[M]`` bool, IGM fails at each state (``q [M, N, A]``, ``s [M, S]``, ``av [M, N, A]``):
    checked against every joint action, so exact; refuses more than ``max_joint_actions``."""
    m, n, a = q.shape
    if not exact_check_affordable(n, a, max_joint_actions):
        raise ValueError(f"max_joint_actions={max_joint_actions} is below A^N = {a}^{n}: "
                         "the exact IGM check would enumerate every joint action")
    return _beaten(mixer, q, s, av, joint_actions(n, a, q.device).unsqueeze(0).expand(m, -1, -1), tol)


def deviation_q_tot(mixer, q: torch.Tensor, s: torch.Tensor, av: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Q_tot of the agents' greedy joint action and of every single-agent deviation from it.

    ``q [M, N, A]``, ``s [M, S]``, ``av [M, N, A]`` -> ``greedy [M]`` and ``deviations
    [M, N, A]``: entry ``(m, i, a)`` is Q_tot at state ``m`` when agent ``i`` takes ``a`` and
    every other agent its greedy action (so ``a`` = agent i's greedy action gives ``greedy``).
    Entries of unavailable actions are computed but meaningless: mask them with ``av``.
    The greedy actions are chosen without gradient; Q_tot stays differentiable in ``q`` and
    the mixer's parameters, so a penalty can train through it. N*A+1 candidates per state.
    """
    m, n, a = q.shape
    greedy = _greedy(q.detach(), av)  # [M, N]
    # Row k of the candidates changes agent k // A to action k % A; row 0 is the greedy one.
    candidates = greedy.unsqueeze(1).repeat(1, n * a + 1, 1)
    rows = torch.arange(n * a, device=q.device)
    candidates[:, rows + 1, rows // a] = (rows % a).expand(m, -1)
    q_tot = mixer.q_tot_of_candidates(_candidate_values(q, candidates), s)  # [M, 1 + N*A]
    return q_tot[:, 0], q_tot[:, 1:].reshape(m, n, a)


def _has_choice(av: torch.Tensor) -> torch.Tensor:
    """``[M, N]`` bool: the agent has two or more available actions."""
    return (av != 0).sum(-1) >= 2


def unilateral_violations(mixer, q: torch.Tensor, s: torch.Tensor, av: torch.Tensor,
                          tol: float = 1e-6) -> torch.Tensor:
    """``[M]`` bool, some single agent can raise Q_tot by leaving its greedy action.

    A necessary condition for IGM only: implies :func:`joint_violations`, never the
    converse (a change of several agents at once can beat the greedy joint action while
    no single change does). Costs N*A mixer evaluations per state instead of A^N.
    """
    with torch.no_grad():
        greedy_q, dev = deviation_q_tot(mixer, q, s, av)
    best = dev.masked_fill(av == 0, NEG).flatten(1).max(-1).values
    return best > greedy_q + tol * _scale(greedy_q)


def worst_greedy_actions(mixer, q: torch.Tensor, s: torch.Tensor, av: torch.Tensor,
                         tol: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """``([M, N] bool, [M, N] bool)``: whether agent i's greedy action gives a lower Q_tot
    than each of its other available actions (the others held at their greedy actions),
    and which (state, agent) pairs count (the agent has a choice)."""
    with torch.no_grad():
        greedy_q, dev = deviation_q_tot(mixer, q, s, av)
    own = F.one_hot(_greedy(q, av), q.shape[-1]).bool()
    others = dev.masked_fill((av == 0) | own, float("inf")).min(-1).values  # [M, N]
    worst = greedy_q.unsqueeze(-1) < others - tol * _scale(greedy_q).unsqueeze(-1)
    eligible = _has_choice(av)
    return worst & eligible, eligible


def greedy_mixing_gradients(mixer, q: torch.Tensor, s: torch.Tensor, av: torch.Tensor) -> torch.Tensor:
    """dQ_tot/dQ_i at the agents' greedy joint action: ``[M, N]`` (``q [M, N, A]``)."""
    greedy = _greedy(q, av)
    values = _candidate_values(q.detach(), greedy.unsqueeze(1)).clone().requires_grad_(True)  # [M, 1, N]
    with torch.enable_grad():
        q_tot = mixer.q_tot_of_candidates(values, s)
        if not q_tot.requires_grad:  # piecewise constant in q (a lookup table): zero a.e.
            return torch.zeros_like(values).squeeze(1)
        (grad,) = torch.autograd.grad(q_tot.sum(), values)
    return grad.squeeze(1)


def _fraction(violated: torch.Tensor, among: Optional[torch.Tensor] = None) -> float:
    if among is not None:
        violated = violated[among]
    return float(violated.float().mean()) if violated.numel() else 0.0


def igm_violation_rates(
    mixer,
    agent_q: torch.Tensor,
    states: torch.Tensor,
    avail: torch.Tensor,
    mask: torch.Tensor,
    max_points: int = 256,
    max_joint_actions: int = EXACT_JOINT_ACTIONS,
    tol: float = 1e-6,
    generator: Optional[torch.Generator] = None,
) -> IGMRates:
    """Every IGM diagnostic on the same (sampled) valid states, so ``unilateral <= exact``.

    ``agent_q`` ``[B, T, N, A]``, ``states`` ``[B, T, S]``, ``avail`` ``[B, T, N, A]``,
    ``mask`` ``[B, T]``. At most ``max_points`` valid states are sampled (with
    ``generator``), so the cost is bounded on large batches. ``exact`` is ``None`` when
    ``A^N > max_joint_actions``.
    """
    q, s, av = sample_states(agent_q, states, avail, mask, max_points, generator)
    _, n, a = q.shape
    exact = (_fraction(joint_violations(mixer, q, s, av, tol, max_joint_actions))
             if exact_check_affordable(n, a, max_joint_actions) else None)
    worst, eligible = worst_greedy_actions(mixer, q, s, av, tol)
    negative = greedy_mixing_gradients(mixer, q, s, av) < 0
    return IGMRates(
        exact=exact,
        unilateral=_fraction(unilateral_violations(mixer, q, s, av, tol)),
        negative_gradient=_fraction(negative, eligible),
        worst_greedy=_fraction(worst, eligible),
    )


def joint_greedy_actions(mixer, q: torch.Tensor, s: torch.Tensor, av: torch.Tensor,
                         max_joint_actions: int = EXACT_JOINT_ACTIONS) -> torch.Tensor:
    """The joint action that maximises Q_tot at each state, over every available joint action.

    ``q [M, N, A]``, ``s [M, S]``, ``av [M, N, A]`` -> ``[M, N]`` (long). A centralised
    policy: it needs the state and every agent's utilities, so it is an upper bound on
    what decentralised greedy agents can get from the same value function. Ties go to the
    first joint action in :func:`joint_actions` order. Refuses ``A^N > max_joint_actions``.
    """
    m, n, a = q.shape
    if not exact_check_affordable(n, a, max_joint_actions):
        raise ValueError(f"the joint argmax of Q_tot enumerates A^N = {a}^{n} joint actions, above "
                         f"the limit of {max_joint_actions}")
    joint = joint_actions(n, a, q.device)  # [K, N]
    candidates = joint.unsqueeze(0).expand(m, -1, -1)
    allowed = torch.gather(av, 2, candidates.transpose(1, 2)).transpose(1, 2).bool().all(-1)  # [M, K]
    with torch.no_grad():
        q_tot = mixer.q_tot_of_candidates(_candidate_values(q, candidates), s)
    best = q_tot.masked_fill(~allowed, NEG).argmax(-1)
    return joint[best]


def igm_violation_rate(
    mixer,
    agent_q: torch.Tensor,
    states: torch.Tensor,
    avail: torch.Tensor,
    mask: torch.Tensor,
    max_points: int = 256,
    max_joint_actions: int = EXACT_JOINT_ACTIONS,
    tol: float = 1e-6,
    generator: Optional[torch.Generator] = None,
) -> float:
    """Fraction of (sampled) valid states where IGM fails, exactly: the greedy joint action
    is compared with every joint action. Shapes as :func:`igm_violation_rates`; raises
    ``ValueError`` when ``A^N > max_joint_actions`` rather than silently checking less."""
    q, s, av = sample_states(agent_q, states, avail, mask, max_points, generator)
    return _fraction(joint_violations(mixer, q, s, av, tol, max_joint_actions))


def igm_unilateral_violation_rate(
    mixer,
    agent_q: torch.Tensor,
    states: torch.Tensor,
    avail: torch.Tensor,
    mask: torch.Tensor,
    max_points: int = 256,
    tol: float = 1e-6,
    generator: Optional[torch.Generator] = None,
) -> float:
    """Fraction of (sampled) valid states where a single agent's deviation from the greedy
    joint action raises Q_tot: a lower bound of :func:`igm_violation_rate`, affordable at
    any ``A^N``. Shapes as :func:`igm_violation_rates`."""
    q, s, av = sample_states(agent_q, states, avail, mask, max_points, generator)
    return _fraction(unilateral_violations(mixer, q, s, av, tol))
