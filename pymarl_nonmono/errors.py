"""Validation helpers shared by every component.

Errors name the option at fault, the value received and what is allowed, so that a
typo in a YAML file is fixed from the message alone.
"""

from __future__ import annotations

import difflib
import math
from typing import Iterable, Sequence

import torch


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message names it."""


def check_choice(option: str, value: str, allowed: Iterable[str]) -> str:
    allowed = sorted(allowed)
    if value not in allowed:
        hint = difflib.get_close_matches(str(value), allowed, n=1)
        extra = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ConfigError(f"{option}={value!r} is not one of {allowed}{extra}")
    return value


def check_range(
    option: str,
    value: float,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Check ``low <= value <= high`` (``<`` where the bound is open) for a finite number.

    Infinity is refused as well as NaN: Sacred reads ``1e999`` as ``inf``, and no setting
    of ours means anything there (a learning rate of inf fails later, far from its cause).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ConfigError(f"{option}={value!r} must be a number")
    if math.isinf(value):
        raise ConfigError(f"{option}={value!r} must be a finite number")
    bad = (
        (low is not None and (value <= low if low_open else value < low))
        or (high is not None and (value >= high if high_open else value > high))
    )
    if bad:
        lo = "-inf" if low is None else str(low)
        hi = "inf" if high is None else str(high)
        interval = f"{'(' if low_open or low is None else '['}{lo}, {hi}{')' if high_open or high is None else ']'}"
        raise ConfigError(f"{option}={value!r} is outside the allowed range {interval}")
    return value


def check_int(option: str, value: object, low: int) -> int:
    """An integer (``bool`` is not one) that is at least ``low``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{option}={value!r} must be an integer >= {low}")
    return value


def check_bool(option: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{option}={value!r} must be true or false")
    return value


def check_shape(name: str, tensor: torch.Tensor, expected: Sequence[int | None]) -> None:
    """Check ``tensor.shape`` against ``expected``; ``None`` entries match any size."""
    shape = tuple(tensor.shape)
    ok = len(shape) == len(expected) and all(e is None or e == s for s, e in zip(shape, expected))
    if not ok:
        want = "[" + ", ".join("*" if e is None else str(e) for e in expected) + "]"
        raise ValueError(f"{name} has shape {list(shape)}, expected {want}")


def check_known_keys(what: str, given: Iterable[str], known: Iterable[str]) -> None:
    """Reject keys that are not in ``known``, suggesting the closest known key."""
    known = set(known)
    unknown = sorted(set(given) - known)
    if unknown:
        parts = []
        for key in unknown:
            hint = difflib.get_close_matches(key, sorted(known), n=1)
            parts.append(f"{key!r}" + (f" (did you mean {hint[0]!r}?)" if hint else ""))
        raise ConfigError(f"unknown {what} key(s): {', '.join(parts)}")
