"""Start-up checks on EPyMARL: the shared ones (:mod:`..pymarl_family.preflight`) with
EPyMARL's keys, one team reward for our envs, and the env_args of the envs that are ours here
(EPyMARL's own ``smaclite`` and ``gymma`` are its business)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from ..pymarl_family import preflight as _family
from ..pymarl_family.settings import check_host_values
from ..spec import EPYMARL
from .settings import SETTINGS_CLASSES, TeamRewardSettings

# Not "smaclite": EPyMARL has its own env and config of that name.
OUR_ENVS = ("matrix_game", "grf")


def check_values(config: Mapping, host_config_dir: Path) -> None:
    """Every check of a run's merged config that needs no env software. What the plugin runs
    before Sacred and `bench --dry-run` runs for each run of a sweep."""
    check_host_values(config)
    if config.get("env") in OUR_ENVS:
        TeamRewardSettings(common_reward=config.get("common_reward")).validate()
    _family.check_config(config, host_config_dir, [EPYMARL.our_configs()], settings_classes=SETTINGS_CLASSES,
                         runtime_keys=_family.SACRED_KEYS)
    _family.check_env_args(config, envs=OUR_ENVS)
