"""Moved to :mod:`..pymarl_family.selectors` (shared with EPyMARL); kept for its import path."""

from ..pymarl_family.selectors import HostSelector  # noqa: F401
