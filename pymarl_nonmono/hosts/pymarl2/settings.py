"""Settings on PyMARL2: the PyMARL-family ones (:mod:`..pymarl_family.settings`) plus
prioritised replay, which only PyMARL2's ``per_run`` offers."""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import check_bool
from ..pymarl_family import settings as _family


@dataclass(frozen=True)
class PERSettings:
    """PyMARL2's prioritised replay: ``use_per`` makes the learner return one priority per episode."""

    use_per: bool
    return_priority: bool

    def validate(self) -> None:
        check_bool("use_per", self.use_per)
        check_bool("return_priority", self.return_priority)


SETTINGS_CLASSES = (*_family.SETTINGS_CLASSES, PERSettings)


def our_keys() -> set[str]:
    """Every config key our components read on PyMARL2."""
    return _family.our_keys(SETTINGS_CLASSES)
