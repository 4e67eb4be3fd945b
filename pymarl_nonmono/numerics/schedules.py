"""Scalar schedules over environment steps (exploration rate, temperature, RND beta).

A schedule is any object with ``value(t: int) -> float``; the classes here also expose
``start``, ``finish`` and ``anneal_steps`` so consumers can check bounds once, at
construction, instead of discovering a bad value mid-run.
"""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

from ..errors import ConfigError, check_range
from ..registry import Registry

__all__ = [
    "Schedule",
    "LinearSchedule",
    "ExponentialSchedule",
    "SCHEDULES",
    "make_schedule",
]


def _check_steps(value: object) -> int:
    # YAML readily turns ``50000`` into ``50000.0`` when written as ``5.0e4``; accept any
    # integral number but never silently truncate a fractional one.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"anneal_steps={value!r} must be an integer >= 0")
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        raise ConfigError(f"anneal_steps={value!r} must be an integer >= 0")
    if value < 0:
        raise ConfigError(f"anneal_steps={value!r} must be an integer >= 0")
    return int(value)


@runtime_checkable
class Schedule(Protocol):
    """What consumers rely on: a value for every environment step."""

    def value(self, t: int) -> float: ...


class _Annealed:
    start: float
    finish: float
    anneal_steps: int

    def _fraction(self, t: int) -> float:
        if self.anneal_steps == 0:
            return 1.0
        return min(max(t, 0) / self.anneal_steps, 1.0)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(start={self.start!r}, finish={self.finish!r}, "
            f"anneal_steps={self.anneal_steps!r})"
        )


class LinearSchedule(_Annealed):
    """``start`` at ``t <= 0``, ``finish`` at ``t >= anneal_steps``, linear between."""

    def __init__(self, start: float, finish: float, anneal_steps: int) -> None:
        self.start = float(check_range("start", start))
        self.finish = float(check_range("finish", finish))
        self.anneal_steps = _check_steps(anneal_steps)

    def value(self, t: int) -> float:
        frac = self._fraction(t)
        # Returning ``finish`` verbatim avoids a last-ulp miss from the interpolation,
        # which matters when finish is a bound such as epsilon = 0.
        if frac >= 1.0:
            return self.finish
        return self.start + frac * (self.finish - self.start)


class ExponentialSchedule(_Annealed):
    """Geometric interpolation: ``start * (finish / start) ** (t / anneal_steps)``.

    Equal ratios over equal step counts suit quantities such as a temperature that
    spans orders of magnitude; both ends must therefore be > 0.
    """

    def __init__(self, start: float, finish: float, anneal_steps: int) -> None:
        self.start = float(check_range("start", start, low=0.0, low_open=True))
        self.finish = float(check_range("finish", finish, low=0.0, low_open=True))
        self.anneal_steps = _check_steps(anneal_steps)

    def value(self, t: int) -> float:
        frac = self._fraction(t)
        if frac >= 1.0:
            return self.finish
        return self.start * (self.finish / self.start) ** frac


SCHEDULES: Registry[type] = Registry("schedule")
SCHEDULES.register("linear", LinearSchedule)
SCHEDULES.register("exp", ExponentialSchedule)


def make_schedule(kind: str, start: float, finish: float, anneal_steps: int) -> Schedule:
    return SCHEDULES.get(kind)(start, finish, anneal_steps)
