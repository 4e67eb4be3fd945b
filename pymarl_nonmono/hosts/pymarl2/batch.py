"""Moved to :mod:`..pymarl_family.batch` (shared with EPyMARL); kept for its import path."""

from ..pymarl_family.batch import Episodes, episodes_from_batch  # noqa: F401
