"""Checks run once at start-up, before PyMARL2 builds anything (config keys: the shared
:mod:`..pymarl_family.preflight`; here PyMARL2's own rules and environments).

They turn the two ways a run usually goes wrong late (a typo in a config key, or an
environment whose software is missing) into one message at start-up that names the key
or the missing piece, where we looked, and how to fix it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Mapping

from ...errors import ConfigError
from ...registry import Registry
from ..pymarl_family import preflight as _family
from ..pymarl_family.preflight import PreflightError
from ..spec import PYMARL2
from .doctor import MISSING, sc2_check, sc2_root, smac_check
from ..pymarl_family.settings import check_host_values
from .settings import SETTINGS_CLASSES

# Keys PyMARL2 adds to its config at run time (run.py and sacred), not found in any YAML.
HOST_RUNTIME_KEYS = {
    "seed", "device", "unique_token", "n_agents", "n_actions", "state_shape", "obs_shape",
    "episode_limit", "accumulated_episodes", "unit_dim", "agent_own_state_size",
}


def _no_q_lambda(config: Mapping) -> None:
    if config.get("q_lambda"):
        raise ConfigError("q_lambda=True is PyMARL2's nq_learner switch; with nonmono_learner use td_bootstrap=q_lambda")


def check_config(config: Mapping, host_config_dir: Path, plugin_config_dirs: Iterable[Path]) -> None:
    """Validate a run that uses our learner or controller; other runs pass untouched."""
    _family.check_config(config, host_config_dir, plugin_config_dirs, settings_classes=SETTINGS_CLASSES,
                         runtime_keys=HOST_RUNTIME_KEYS, host_checks=[_no_q_lambda])


def check_values(config: Mapping, host_config_dir: Path) -> None:
    """Every check of a run's merged config that needs no env software: the values of the keys
    every algorithm shares (stock ones too), our components' keys and values, and the env's
    env_args. What `main.py` and `bench --dry-run` both run."""
    check_host_values(config)
    check_config(config, host_config_dir, [PYMARL2.our_configs()])
    _family.check_env_args(config)


def starcraft_problems(map_name: str | None = None) -> list[str]:
    """What is missing for StarCraft II runs, each with its fix (``doctor``'s checks)."""
    problems = [f"{c.detail}. Fix: {c.fix}" for c in (smac_check(), sc2_check()) if c.status == MISSING]
    if not problems and map_name:
        maps = sc2_root() / "Maps"
        if not any(maps.rglob(f"{map_name}.SC2Map")):
            problems.append(f"map {map_name!r} not found under {maps}. Fix: copy SMAC's maps (SMAC_Maps) there")
    alternative = smaclite_alternative(map_name) if problems and map_name else None
    return problems + [alternative] if alternative else problems


def smaclite_alternative(map_name: str) -> str | None:
    """The SMAClite command that runs ``map_name`` without StarCraft II; None if SMAClite lacks the map."""
    from ...envs.smaclite import INSTALL_HINT, SMAC_EPISODE_LIMITS, smaclite_problems

    if map_name not in SMAC_EPISODE_LIMITS:
        return None
    text = (f"or run the same map without StarCraft II on SMAClite: `--env-config=smaclite with "
            f"env_args.map_name={map_name}` in place of `--env-config=sc2` (docs/smaclite.md)")
    return text if not smaclite_problems() else f"{text}; install SMAClite first: {INSTALL_HINT}"


def _football_problems(env_args: Mapping) -> list[str]:
    from ...envs.football import football_problems

    return football_problems()


def _smaclite_problems(env_args: Mapping) -> list[str]:
    from ...envs.smaclite import smaclite_problems

    return smaclite_problems()


# What each env needs beyond PyMARL2 itself, checked before a run starts: env_args in, one
# problem (with its fix) per missing piece out. Envs not listed need nothing more.
ENV_REQUIREMENTS: Registry[Callable[[Mapping], list[str]]] = Registry("env with start-up requirements")
ENV_REQUIREMENTS.register("sc2", lambda env_args: starcraft_problems(env_args.get("map_name")))
ENV_REQUIREMENTS.register("grf", _football_problems)
ENV_REQUIREMENTS.register("smaclite", _smaclite_problems)
# PyMARL2's own GRF env imports gfootball only when it is created.
ENV_REQUIREMENTS.register("gfootball", _football_problems)


def check_environment(config: Mapping) -> None:
    """The env's env_args values (:func:`..pymarl_family.preflight.check_env_args`), then its software."""
    _family.check_env_args(config)
    env, env_args = config.get("env"), config.get("env_args") or {}
    problems = ENV_REQUIREMENTS.get(env)(env_args) if env in ENV_REQUIREMENTS else []
    if problems:
        raise PreflightError(f"cannot run env={env}: " + "; ".join(problems))
