"""Auxiliary losses that break the sign symmetry of an unconstrained mixer.

Without QMIX's ``abs``, Q_tot is unchanged when agent i's utilities change sign together
with the mixer's first-layer weights for agent i: the TD loss cannot tell a fit from its
mirror image, in which agent i's greedy action is its worst (docs/sign_symmetry.md). Each
function here is a penalty whose minimum excludes the mirror:

* :func:`monotonicity_hinge` asks for dQ_tot/dQ_i >= 0 where the TD loss is fitted (the soft
  constraint of R-QMIX, Robotics 2026 15(1):28): the mixer stays free, but is pushed to be
  monotonic;
* :func:`igm_hinge` asks for IGM itself, in the spirit of QTRAN's L_opt/L_nopt: no single
  agent's deviation from the agents' greedy joint action may raise Q_tot. Non-monotonic
  payoffs stay representable; only the agents' greedy point is constrained.

Both are pure functions of tensors with the shapes of the learner's batch (``[B, T, ...]``)
and return a scalar that is 0 when the condition holds everywhere.
"""

from __future__ import annotations

from typing import Optional

import torch

from ..errors import check_shape
from .igm import deviation_q_tot

#: At most this many valid states of a batch enter :func:`igm_hinge` (a uniform sample):
#: it scores N*A+1 joint actions per state, which bounds its cost on large maps.
IGM_HINGE_STATES = 4096


def _valid(mask: torch.Tensor) -> torch.Tensor:
    return mask.reshape(-1) > 0


def monotonicity_hinge(q_tot: torch.Tensor, agent_qs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``relu(-dQ_tot/dQ_i)`` over valid ``(b, t)`` and every agent ``i``.

    ``q_tot [B, T]`` must have been computed from ``agent_qs [B, T, N]`` (the utilities of
    the taken actions, as in the TD loss); ``mask [B, T]``. The derivative is taken with
    ``create_graph=True``, so the penalty trains the mixer (and, through the curvature of
    its ELU, the agents).
    """
    check_shape("agent_qs", agent_qs, (None, None, None))
    b, t, n = agent_qs.shape
    check_shape("q_tot", q_tot, (b, t))
    check_shape("mask", mask, (b, t))
    (grad,) = torch.autograd.grad(q_tot.sum(), agent_qs, create_graph=True)
    hinge = torch.relu(-grad) * mask.unsqueeze(-1)
    return hinge.sum() / (mask.sum() * n).clamp(min=1.0)


def igm_hinge(mixer, agent_q: torch.Tensor, states: torch.Tensor, avail: torch.Tensor, mask: torch.Tensor,
              max_states: Optional[int] = IGM_HINGE_STATES,
              generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Mean over valid states of ``relu(max_{i, a} Q_tot(a, greedy_{-i}) - Q_tot(greedy))``.

    ``agent_q [B, T, N, A]`` (differentiable), ``states [B, T, S]``, ``avail [B, T, N, A]``,
    ``mask [B, T]``; ``mixer`` a :class:`~.mixers.Mixer`. The max runs over every available
    single-agent deviation from the agents' greedy joint action (chosen without gradient):
    how much the best one raises Q_tot. Gradients reach both the mixer and the utilities.
    States: every valid one, or a uniform sample of ``max_states`` (drawn with ``generator``).
    """
    check_shape("agent_q", agent_q, (None, None, None, None))
    b, t, n, a = agent_q.shape
    check_shape("avail", avail, (b, t, n, a))
    check_shape("mask", mask, (b, t))
    idx = torch.nonzero(_valid(mask)).squeeze(-1)
    if idx.numel() == 0:
        return agent_q.sum() * 0.0
    if max_states is not None and idx.numel() > max_states:
        pick = torch.randperm(idx.numel(), generator=generator)[:max_states]
        idx = idx[pick.to(idx.device)]
    q = agent_q.reshape(b * t, n, a)[idx]
    s = states.reshape(b * t, -1)[idx]
    av = avail.reshape(b * t, n, a)[idx]
    greedy, dev = deviation_q_tot(mixer, q, s, av)
    best = dev.masked_fill(av == 0, float("-inf")).flatten(1).max(-1).values
    return torch.relu(best - greedy).mean()
