"""Action selection over per-agent Q-values: epsilon-greedy and softmax (Boltzmann).

Epsilon-greedy is the usual PyMARL behaviour policy. Softmax is offered because the
paper's analysis of non-monotonic factorisation needs a behaviour policy that is a
smooth function of the Q-values: epsilon-greedy jumps whenever the greedy action
changes, whereas a Boltzmann policy at low temperature stays differentiable and
tends to the greedy policy as the temperature goes to 0. The theory therefore uses
low-temperature softmax as the smooth stand-in for epsilon-greedy, and this module
lets experiments run with the policy the theory actually describes.

Shapes: ``q`` and ``avail_actions`` are ``[B, N, A]`` (batch, agents, actions);
``avail_actions`` is 1 (or True) for an available action. Every agent must have at
least one available action.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError, check_shape
from ..registry import Registry
from .schedules import Schedule, make_schedule

__all__ = [
    "ActionSelector",
    "EpsilonGreedy",
    "Softmax",
    "SELECTORS",
    "make_selector",
    "greedy_actions",
]


def _available_mask(q: torch.Tensor, avail_actions: torch.Tensor) -> torch.Tensor:
    """Validate ``q``/``avail_actions`` and return the availability as a bool tensor."""
    if not isinstance(q, torch.Tensor) or not q.is_floating_point():
        raise ValueError(f"q must be a floating-point tensor, got {getattr(q, 'dtype', type(q))}")
    check_shape("q", q, [None, None, None])
    check_shape("avail_actions", avail_actions, list(q.shape))
    avail = avail_actions != 0
    none_available = ~avail.any(dim=-1)
    if bool(none_available.any()):
        b, n = (int(i) for i in none_available.nonzero()[0])
        raise ValueError(
            f"avail_actions[{b}, {n}] has no available action; every agent needs at least one"
        )
    if bool(torch.isnan(q[avail]).any()):
        raise ValueError("q contains NaN for an available action")
    return avail


def _greedy(q: torch.Tensor, avail: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy action (lowest index among ties) and the mask of maximal available actions."""
    masked = q.masked_fill(~avail, float("-inf"))
    best = masked.max(dim=-1, keepdim=True).values
    # ``& avail`` keeps unavailable actions out even when every available Q is -inf
    # (then ``masked == best`` is true everywhere).
    is_max = (masked == best) & avail
    # argmax returns the first maximal index, which turns the tie-break into "lowest
    # index" without relying on float comparisons of the Q-values themselves.
    return is_max.to(torch.uint8).argmax(dim=-1), is_max


def greedy_actions(q: torch.Tensor, avail_actions: torch.Tensor) -> torch.Tensor:
    """``[B, N]`` argmax of ``q`` over available actions; ties go to the lowest index."""
    return _greedy(q, _available_mask(q, avail_actions))[0]


def _one_hot(actions: torch.Tensor, n_actions: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.nn.functional.one_hot(actions, n_actions).to(dtype)


class ActionSelector:
    """Shared ``select`` on top of a subclass's behaviour distribution ``probs``.

    ``epsilon`` always holds the schedule value at the latest ``t_env`` seen, so a host
    that logs ``selector.epsilon`` keeps working whichever selector is configured.
    """

    def __init__(self, schedule: Schedule) -> None:
        if not callable(getattr(schedule, "value", None)):
            raise ConfigError(f"schedule {schedule!r} has no value(t) method")
        self.schedule = schedule
        self.epsilon = float(schedule.value(0))

    def _current(self, t_env: int) -> float:
        self.epsilon = float(self.schedule.value(t_env))
        return self.epsilon

    def probs(
        self, q: torch.Tensor, avail_actions: torch.Tensor, t_env: int
    ) -> torch.Tensor:
        avail = _available_mask(q, avail_actions)
        return self._probs(q, avail, self._current(t_env))

    def _probs(self, q: torch.Tensor, avail: torch.Tensor, value: float) -> torch.Tensor:
        raise NotImplementedError

    def select(
        self,
        q: torch.Tensor,
        avail_actions: torch.Tensor,
        t_env: int,
        test_mode: bool = False,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(actions [B, N] long, probs [B, N, A])``.

        In ``test_mode`` the action is greedy and ``probs`` is its one-hot; otherwise the
        action is sampled from the behaviour distribution, which is returned as well
        (off-policy corrections need the exact probabilities used).
        """
        avail = _available_mask(q, avail_actions)
        value = self._current(t_env)
        n_actions = q.shape[-1]
        if test_mode:
            actions = _greedy(q, avail)[0]
            return actions, _one_hot(actions, n_actions, q.dtype)
        probs = self._probs(q, avail, value)
        flat = probs.reshape(-1, n_actions)
        if flat.dtype in (torch.float16, torch.bfloat16):
            flat = flat.float()
        # Unavailable actions carry probability exactly 0, so multinomial cannot draw them.
        actions = torch.multinomial(flat, 1, generator=generator).reshape(q.shape[:-1])
        return actions, probs


class EpsilonGreedy(ActionSelector):
    """``(1 - eps)`` on the greedy action plus ``eps`` spread uniformly over available ones."""

    def __init__(self, epsilon: Schedule) -> None:
        for which, value in _schedule_ends(epsilon):
            self.check_value(which, value)
        super().__init__(epsilon)

    @staticmethod
    def check_value(which: str, value: float) -> None:
        if not 0.0 <= value <= 1.0:  # also rejects NaN
            raise ConfigError(f"epsilon {which}={value!r} must be in [0, 1]")

    def _probs(self, q: torch.Tensor, avail: torch.Tensor, value: float) -> torch.Tensor:
        self.check_value("value", value)
        greedy = _one_hot(_greedy(q, avail)[0], q.shape[-1], q.dtype)
        avail_f = avail.to(q.dtype)
        uniform = avail_f / avail_f.sum(dim=-1, keepdim=True)
        return (1.0 - value) * greedy + value * uniform


class Softmax(ActionSelector):
    """Boltzmann policy over available actions, ``p ∝ exp(q / temperature)``.

    ``epsilon`` mirrors ``temperature`` (hosts log ``selector.epsilon``).
    """

    def __init__(self, temperature: Schedule) -> None:
        for which, value in _schedule_ends(temperature):
            self.check_value(which, value)
        super().__init__(temperature)

    @property
    def temperature(self) -> float:
        return self.epsilon

    @staticmethod
    def check_value(which: str, value: float) -> None:
        if not value > 0.0:  # also rejects NaN
            raise ConfigError(
                f"temperature {which}={value!r} must be > 0 "
                "(exp(q / temperature) is undefined at temperature <= 0)"
            )

    def _probs(self, q: torch.Tensor, avail: torch.Tensor, value: float) -> torch.Tensor:
        self.check_value("value", value)
        masked = q.masked_fill(~avail, float("-inf"))
        best = masked.max(dim=-1, keepdim=True).values
        is_max = (masked == best) & avail
        # Subtract the max *before* dividing: q / tiny_temperature would overflow to inf
        # and give inf - inf = NaN. Maximal entries are pinned to 0 so that infinite
        # Q-values cannot produce NaN either.
        scaled = torch.where(is_max, torch.zeros_like(q), (q - best) / value)
        weights = torch.exp(scaled.masked_fill(~avail, float("-inf")))
        # Every row has at least one maximal entry with weight exp(0) = 1: no 0/0.
        return weights / weights.sum(dim=-1, keepdim=True)


def _schedule_ends(schedule: Schedule) -> list[tuple[str, float]]:
    """The schedule's extreme values, for bound checks at construction time."""
    if hasattr(schedule, "start") and hasattr(schedule, "finish"):
        return [("start", float(schedule.start)), ("finish", float(schedule.finish))]
    return [("start", float(schedule.value(0)))]


SELECTORS: Registry[type] = Registry("action_selector")
SELECTORS.register("epsilon_greedy", EpsilonGreedy)
SELECTORS.register("softmax", Softmax)


def make_selector(
    name: str,
    *,
    schedule_kind: str,
    start: float,
    finish: float,
    anneal_steps: int,
) -> ActionSelector:
    """Build a selector by registry name with its schedule (epsilon or temperature)."""
    cls = SELECTORS.get(name)
    # Check the selector's own bounds first so a temperature of 0 is reported as a bad
    # temperature rather than as a generic schedule error.
    for which, value in (("start", start), ("finish", finish)):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            cls.check_value(which, float(value))
    return cls(make_schedule(schedule_kind, start, finish, anneal_steps))
