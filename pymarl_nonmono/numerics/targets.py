"""TD(lambda) targets and bootstrap utilities for value-factorisation learners.

Shapes: ``B`` batch, ``T`` transitions, ``N`` agents, ``A`` actions. Per-step tensors
(``rewards``, ``terminated``, ``mask``) are ``[B, T]``; state-indexed tensors (``values``,
``taken_values``) are ``[B, T + 1]`` and hold an estimate for every state ``s_0 .. s_T``.

Lambda-return
-------------
For a real transition ``t`` (``mask_t = 1``)::

    G_t = r_t + gamma * (1 - d_t) * [(1 - lambda * n_t) * V_{t+1} + lambda * n_t * G_{t+1}]

with ``n_t = mask_{t+1}`` for ``t < T - 1`` and ``n_{T-1} = 0``, and ``G_t = 0`` where
``mask_t = 0``. ``n_t`` says whether the return may continue past ``t``: when the next
transition is padding (the episode was cut short without terminating) or lies beyond
the horizon, the return bootstraps fully from ``V_{t+1}`` instead of borrowing a
(meaningless) ``G_{t+1}``. ``d_t = 1`` removes everything after a termination. Hence
``td_lambda = 0`` is one-step TD and ``td_lambda = 1`` the Monte-Carlo return that only
bootstraps at truncation or at the end of the horizon.

Values of states that are never reached by a real, non-terminating transition (padding,
the state after termination) are selected away with ``torch.where`` rather than
multiplied by zero, so even ``nan``/``inf`` garbage there cannot leak into a target.

Relation to PyMARL2: on batches where every episode either terminates or runs to the
last index, :func:`lambda_returns` equals PyMARL2's ``build_td_lambda_targets``, i.e. the
recursion ``ret_T = V_T * (1 - any(d))``,
``ret_t = lambda*gamma*ret_{t+1} + mask_t*(r_t + (1 - lambda)*gamma*V_{t+1}*(1 - d_t))``,
on every real step. On truncated episodes the two differ: that recursion weights the
last real bootstrap by ``(1 - lambda)`` and feeds in the padded ``V_T`` discounted by
``(lambda*gamma)^k``; here the last real step bootstraps fully from its successor.
:func:`q_lambda_returns` is the same recursion with PyMARL2's Q(lambda) off-policy
correction added to the reward.

Bootstraps (``td_bootstrap``)
-----------------------------
:func:`agent_bootstrap_utilities` gives each agent's utility at every state; feeding
them through the (target) mixer yields ``V`` for the targets above.

* ``"q"`` / ``"q_lambda"``: each agent's greedy available action (argmax of the online
  network with ``double_q``), evaluated by the target network.
* ``"sarsa"``: the action actually taken.
* ``"expected_sarsa"``: each agent's expectation ``sum_a pi(a) Q_i(a)`` under the
  behaviour policy. The expectation is taken per agent and then mixed, which is exact
  for a linear (VDN) mixer but only an approximation of ``E[Q_tot]`` for a non-linear
  mixer, since a non-linear mixer does not commute with the expectation.

SARSA is the paper's choice for non-monotonic mixers: the per-agent maximum is a valid
estimate of ``max Q_tot`` only when the factorisation satisfies IGM (the per-agent argmaxes
form the joint argmax). A non-monotonic mixer does not guarantee IGM, least of all early
in training, so bootstrapping from per-agent maxima evaluates a joint action that is
neither greedy for ``Q_tot`` nor the one the agents will play. SARSA bootstraps from
actions that were actually executed, which gives a consistent on-policy target whether
or not IGM holds yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor

from ..errors import check_range, check_shape
from ..registry import Registry

__all__ = [
    "BOOTSTRAPS",
    "Bootstrap",
    "BootstrapInputs",
    "agent_bootstrap_utilities",
    "lambda_returns",
    "needs_behaviour_probs",
    "q_lambda_returns",
    "uses_q_lambda_correction",
]


# --------------------------------------------------------------------------- validation


def _check_options(gamma: float, td_lambda: float) -> None:
    check_range("gamma", gamma, 0, 1, low_open=True)
    check_range("td_lambda", td_lambda, 0, 1)


def _prepare(
    rewards: Tensor, terminated: Tensor, mask: Tensor, values: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Check shapes; return ``rewards`` in ``values``' dtype and boolean valid/terminated."""
    check_shape("rewards", rewards, [None, None])
    batch, steps = rewards.shape
    check_shape("terminated", terminated, [batch, steps])
    check_shape("mask", mask, [batch, steps])
    check_shape("values", values, [batch, steps + 1])
    if not values.is_floating_point():
        raise ValueError(f"values must be a floating-point tensor, got dtype {values.dtype}")
    # Masks arrive as float, int or bool depending on the buffer; any non-zero is "set".
    return rewards.to(values.dtype), terminated != 0, mask != 0


def _q_lambda_rewards(
    rewards: Tensor, mask: Tensor, values: Tensor, taken_values: Tensor
) -> Tensor:
    check_shape("taken_values", taken_values, list(values.shape))
    steps = values.shape[1] - 1
    correction = values[:, :steps] - taken_values[:, :steps].to(values.dtype)
    # Padded steps may hold garbage in either estimate; they must not reach a target.
    correction = torch.where(mask != 0, correction, torch.zeros_like(correction))
    return rewards.to(values.dtype) + correction


# ----------------------------------------------------------------------- lambda returns


def lambda_returns_reference(
    rewards: Tensor,
    terminated: Tensor,
    mask: Tensor,
    values: Tensor,
    gamma: float,
    td_lambda: float,
) -> Tensor:
    """Lambda-returns ``[B, T]`` by a plain backwards loop; the specification of
    :func:`lambda_returns`, kept for testing and debugging."""
    _check_options(gamma, td_lambda)
    rewards, term, valid = _prepare(rewards, terminated, mask, values)
    batch, steps = rewards.shape
    zero = values.new_zeros(batch)
    returns = values.new_zeros(batch, steps)
    next_return = zero
    for t in reversed(range(steps)):
        if t < steps - 1:
            cont = valid[:, t + 1].to(values.dtype)
        else:
            cont = zero
        boot = (1 - td_lambda * cont) * values[:, t + 1] + td_lambda * cont * next_return
        boot = torch.where(term[:, t], zero, boot)
        ret = rewards[:, t] + gamma * boot
        ret = torch.where(valid[:, t], ret, zero)
        returns[:, t] = ret
        next_return = ret
    return returns


def lambda_returns(
    rewards: Tensor,
    terminated: Tensor,
    mask: Tensor,
    values: Tensor,
    gamma: float,
    td_lambda: float,
) -> Tensor:
    """Lambda-returns ``[B, T]`` (see the module docstring) in ``O(B T)`` memory.

    Args:
        rewards: ``[B, T]``.
        terminated: ``[B, T]``, non-zero where transition ``t`` ended the episode by
            termination (not by a time limit).
        mask: ``[B, T]``, non-zero where transition ``t`` is real data.
        values: ``[B, T + 1]`` bootstrap estimates ``V(s_0) .. V(s_T)``; entries of
            states no real transition continues into are ignored.
        gamma: discount in ``(0, 1]``.
        td_lambda: in ``[0, 1]``.

    The recursion is rewritten as ``G_t = a_t + c_t * G_{t+1}`` with ``a`` and ``c``
    computed for all steps at once (this is where garbage is selected away); only the
    remaining multiply-add runs as a backwards loop over ``T``, on ``[B]`` slices: one
    kernel per step where PyMARL2's ``build_td_lambda_targets`` issues eight, so it is
    faster than that loop at every horizon (``benchmarks/targets.py``) and stays
    differentiable. A log-depth parallel scan would be faster still at long horizons,
    at the price of a less obvious code path.
    """
    _check_options(gamma, td_lambda)
    rewards, term, valid = _prepare(rewards, terminated, mask, values)
    batch, steps = rewards.shape
    if steps == 0:
        return values.new_zeros(batch, 0)

    live = valid & ~term
    # cont_t: the return may continue into step t + 1 (real data there, inside the horizon).
    cont = torch.zeros_like(rewards)
    cont[:, :-1] = valid[:, 1:].to(values.dtype)
    zeros = torch.zeros_like(rewards)
    next_values = torch.where(live, values[:, 1:], zeros)
    discount = gamma * live.to(values.dtype)
    offset = torch.where(valid, rewards, zeros) + discount * (1 - td_lambda * cont) * next_values
    coeff = discount * td_lambda * cont

    offsets, coeffs = offset.unbind(1), coeff.unbind(1)
    returns: list[Tensor] = [zeros[:, 0]] * steps
    after = zeros[:, 0]
    for t in range(steps - 1, -1, -1):
        after = torch.addcmul(offsets[t], coeffs[t], after)
        returns[t] = after
    return torch.stack(returns, dim=1)


def q_lambda_returns_reference(
    rewards: Tensor,
    terminated: Tensor,
    mask: Tensor,
    values: Tensor,
    taken_values: Tensor,
    gamma: float,
    td_lambda: float,
) -> Tensor:
    """Loop version of :func:`q_lambda_returns`."""
    _check_options(gamma, td_lambda)
    _prepare(rewards, terminated, mask, values)
    corrected = _q_lambda_rewards(rewards, mask, values, taken_values)
    return lambda_returns_reference(corrected, terminated, mask, values, gamma, td_lambda)


def q_lambda_returns(
    rewards: Tensor,
    terminated: Tensor,
    mask: Tensor,
    values: Tensor,
    taken_values: Tensor,
    gamma: float,
    td_lambda: float,
) -> Tensor:
    """Q(lambda) returns ``[B, T]`` with PyMARL2's off-policy correction.

    Same as :func:`lambda_returns` with the reward at ``t`` replaced by
    ``r_t + values_t - taken_values_t``. ``values`` ``[B, T + 1]`` are the greedy
    bootstrap values, ``taken_values`` ``[B, T + 1]`` the target values of the taken
    joint actions; only their first ``T`` entries enter the correction, and only on
    real steps.
    """
    _check_options(gamma, td_lambda)
    _prepare(rewards, terminated, mask, values)
    corrected = _q_lambda_rewards(rewards, mask, values, taken_values)
    return lambda_returns(corrected, terminated, mask, values, gamma, td_lambda)


# ------------------------------------------------------------------ bootstrap utilities


@dataclass(frozen=True)
class BootstrapInputs:
    """What a bootstrap entry may read; ``avail`` is boolean and always present."""

    td_bootstrap: str
    target_q: Tensor
    avail: Tensor
    online_q: Optional[Tensor]
    actions: Optional[Tensor]
    probs: Optional[Tensor]
    double_q: bool

    def require(self, name: str, why: str = "") -> Tensor:
        value = getattr(self, name)
        if value is None:
            reason = f" ({why})" if why else ""
            raise ValueError(f"td_bootstrap={self.td_bootstrap!r} needs `{name}`{reason}, got None")
        return value


@dataclass(frozen=True)
class Bootstrap:
    """A ``td_bootstrap`` entry: per-agent utilities plus what the learner must supply."""

    utilities: Callable[[BootstrapInputs], Tensor]
    needs_behaviour_probs: bool = False
    q_lambda_correction: bool = False


BOOTSTRAPS: Registry[Bootstrap] = Registry("td_bootstrap")


def _greedy(inputs: BootstrapInputs) -> Tensor:
    if inputs.double_q:
        chooser = inputs.require("online_q", "double_q=True picks actions with the online network")
    else:
        chooser = inputs.target_q
    # -inf, not a large negative constant, so no finite utility can ever beat it.
    masked = chooser.masked_fill(~inputs.avail, float("-inf"))
    choice = masked.argmax(dim=-1, keepdim=True)
    utility = inputs.target_q.gather(-1, choice).squeeze(-1)
    # Rows with no available action only occur in padding; give them a defined 0.
    has_any = inputs.avail.any(dim=-1)
    return torch.where(has_any, utility, torch.zeros_like(utility))


def _taken(inputs: BootstrapInputs) -> Tensor:
    actions = inputs.require("actions", "SARSA evaluates the actions actually taken")
    target_q = inputs.target_q
    if actions.dtype.is_floating_point or actions.dtype == torch.bool or actions.is_complex():
        raise ValueError(f"actions must be an integer tensor, got dtype {actions.dtype}")
    lead = list(target_q.shape[:-1])
    if actions.dim() == len(lead):
        check_shape("actions", actions, lead)
        actions = actions.unsqueeze(-1)
    else:
        check_shape("actions", actions, lead + [1])
    n_actions = target_q.shape[-1]
    if actions.numel() and (actions.min() < 0 or actions.max() >= n_actions):
        raise ValueError(
            f"actions must lie in [0, {n_actions - 1}], got values in "
            f"[{int(actions.min())}, {int(actions.max())}]"
        )
    return target_q.gather(-1, actions.long()).squeeze(-1)


def _expected(inputs: BootstrapInputs) -> Tensor:
    probs = inputs.require("probs", "the behaviour policy's action probabilities")
    target_q = inputs.target_q
    check_shape("probs", probs, list(target_q.shape))
    probs = probs.to(target_q.dtype)
    if bool((probs < 0).any()):
        raise ValueError("probs must be non-negative")
    weights = torch.where(inputs.avail, probs, torch.zeros_like(probs))
    total = weights.sum(dim=-1, keepdim=True)
    # Padding rows have zero mass; dividing by 1 there keeps them at 0 without nan.
    safe_total = torch.where(total > 0, total, torch.ones_like(total))
    weights = weights / safe_total
    # Unavailable actions often carry -inf / -1e7 in target_q; 0 * -inf would be nan.
    q = torch.where(weights > 0, target_q, torch.zeros_like(target_q))
    return (weights * q).sum(dim=-1)


BOOTSTRAPS.register("q", Bootstrap(_greedy))
BOOTSTRAPS.register("q_lambda", Bootstrap(_greedy, q_lambda_correction=True))
BOOTSTRAPS.register("sarsa", Bootstrap(_taken))
BOOTSTRAPS.register("expected_sarsa", Bootstrap(_expected, needs_behaviour_probs=True))


def needs_behaviour_probs(td_bootstrap: str) -> bool:
    """Whether the learner must store the behaviour policy's probabilities."""
    return BOOTSTRAPS.get(td_bootstrap).needs_behaviour_probs


def uses_q_lambda_correction(td_bootstrap: str) -> bool:
    """Whether targets come from :func:`q_lambda_returns` instead of :func:`lambda_returns`."""
    return BOOTSTRAPS.get(td_bootstrap).q_lambda_correction


def agent_bootstrap_utilities(
    td_bootstrap: str,
    target_q: Tensor,
    *,
    online_q: Optional[Tensor] = None,
    actions: Optional[Tensor] = None,
    probs: Optional[Tensor] = None,
    avail_actions: Optional[Tensor] = None,
    double_q: bool = False,
) -> Tensor:
    """Per-agent utilities ``[B, T + 1, N]`` to feed the target mixer.

    Args:
        td_bootstrap: a name in :data:`BOOTSTRAPS`.
        target_q: target-network utilities ``[B, T + 1, N, A]``.
        online_q: online-network utilities ``[B, T + 1, N, A]``; needed by greedy
            bootstraps when ``double_q``.
        actions: taken actions ``[B, T + 1, N]`` or ``[B, T + 1, N, 1]``; needed by
            ``"sarsa"``.
        probs: behaviour-policy probabilities ``[B, T + 1, N, A]``; needed by
            ``"expected_sarsa"``. Renormalised over the available actions; an all-zero
            row gives utility 0.
        avail_actions: ``[B, T + 1, N, A]``, non-zero where an action is available;
            all actions are available when omitted.
        double_q: greedy bootstraps choose with ``online_q`` and evaluate with
            ``target_q``; ignored by the other bootstraps.
    """
    entry = BOOTSTRAPS.get(td_bootstrap)
    check_shape("target_q", target_q, [None, None, None, None])
    full = list(target_q.shape)
    if online_q is not None:
        check_shape("online_q", online_q, full)
    if avail_actions is None:
        avail = torch.ones(full, dtype=torch.bool, device=target_q.device)
    else:
        check_shape("avail_actions", avail_actions, full)
        avail = avail_actions != 0
    inputs = BootstrapInputs(
        td_bootstrap=td_bootstrap,
        target_q=target_q,
        avail=avail,
        online_q=online_q,
        actions=actions,
        probs=probs,
        double_q=bool(double_q),
    )
    return entry.utilities(inputs)
