"""IGM diagnostics: do the agents' greedy actions agree with the greedy joint action?

IGM (individual-global-max) holds at a state when the joint action made of each agent's
greedy action maximises Q_tot. The paper's claim is that with approximately greedy
exploration, non-monotonic mixers end IGM-consistent anyway; these functions measure it.

Shapes: agent Q-values ``[N, A]`` at one state (``[B, T, N, A]`` for batches), states
``[S]`` (``[B, T, S]``), availability masks like the Q-values.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

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
        payoff = torch.as_tensor(payoff, dtype=q_table.dtype)
        sub = tuple(slice(0, s) for s in payoff.shape)
        out["payoff_max_abs_error"] = float((q_table[sub] - payoff).abs().max())
        out["greedy_optimal"] = bool(payoff[greedy] == payoff.max()) if all(
            g < s for g, s in zip(greedy, payoff.shape)) else False
    return out


def igm_violation_rate(
    mixer,
    agent_q: torch.Tensor,
    states: torch.Tensor,
    avail: torch.Tensor,
    mask: torch.Tensor,
    max_points: int = 256,
    exact_limit: int = 4096,
    tol: float = 1e-6,
    generator: Optional[torch.Generator] = None,
) -> float:
    """Fraction of (sampled) valid states where IGM fails.

    Exact over all joint actions when ``A^N <= exact_limit``; otherwise the greedy joint
    action is compared with every single-agent deviation from it (a necessary condition:
    cheap, and what gradient steps on one agent's utility can exploit). At most
    ``max_points`` valid states are sampled, so the cost is bounded on large batches.
    """
    b, t, n, a = agent_q.shape
    check_shape("states", states.reshape(b, t, -1), (b, t, None))
    check_shape("avail", avail, (b, t, n, a))
    check_shape("mask", mask, (b, t))
    flat_q = agent_q.reshape(b * t, n, a)
    flat_s = states.reshape(b * t, -1)
    flat_avail = avail.reshape(b * t, n, a)
    idx = torch.nonzero(mask.reshape(-1) > 0).squeeze(-1)
    if idx.numel() == 0:
        return 0.0
    if idx.numel() > max_points:
        pick = torch.randperm(idx.numel(), generator=generator)[:max_points]
        idx = idx[pick.to(idx.device)]
    q, s, av = flat_q[idx], flat_s[idx], flat_avail[idx]
    m = idx.numel()
    greedy = _greedy(q, av)  # [M, N]
    if math.pow(a, n) <= exact_limit:
        candidates = joint_actions(n, a, q.device).unsqueeze(0).expand(m, -1, -1)  # [M, K, N]
    else:
        # Single-agent deviations: K = N * A candidates, row k changes agent k // A.
        candidates = greedy.unsqueeze(1).repeat(1, n * a, 1)
        agents = torch.arange(n * a, device=q.device) // a
        actions = torch.arange(n * a, device=q.device) % a
        candidates[:, torch.arange(n * a), agents] = actions.expand(m, -1)
    k = candidates.shape[1]
    cand_avail = torch.gather(av, 2, candidates.transpose(1, 2)).transpose(1, 2).bool().all(-1)  # [M, K]
    cand_q = torch.gather(q, 2, candidates.transpose(1, 2)).transpose(1, 2)  # [M, K, N]
    with torch.no_grad():
        q_tot = mixer(cand_q, s.unsqueeze(1).expand(-1, k, -1))  # [M, K]
        greedy_q = mixer(torch.gather(q, 2, greedy.unsqueeze(-1)).transpose(1, 2), s.unsqueeze(1))  # [M, 1]
    best = q_tot.masked_fill(~cand_avail, NEG).max(-1).values
    violated = best > greedy_q.squeeze(-1) + tol * greedy_q.squeeze(-1).abs().clamp(min=1.0)
    return float(violated.float().mean())
