"""What our components read on EPyMARL beyond the PyMARL-family settings."""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import ConfigError, check_bool
from ..pymarl_family import settings as _family


@dataclass(frozen=True)
class TeamRewardSettings:
    """EPyMARL can hand each agent its own reward (``common_reward: False``, a ``[B, T+1, N]``
    batch); our mixers regress Q_tot on one team reward, and our envs have only that."""

    common_reward: bool

    def validate(self) -> None:
        check_bool("common_reward", self.common_reward)
        if not self.common_reward:
            raise ConfigError("common_reward=False: pymarl-nonmono's learner and envs need one team reward; "
                              "set common_reward=True (EPyMARL sums per-agent rewards by reward_scalarisation)")


SETTINGS_CLASSES = (*_family.SETTINGS_CLASSES, TeamRewardSettings)


def our_keys() -> set[str]:
    """Every config key our components read on EPyMARL."""
    return _family.our_keys(SETTINGS_CLASSES)
