"""Checks run once at start-up, before PyMARL2 builds anything.

They turn the two ways a run usually goes wrong late (a typo in a config key, or an
environment whose software is missing) into one message at start-up that names the key
or the missing piece, where we looked, and how to fix it.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import yaml

from ...errors import ConfigError, check_known_keys
from ...registry import Registry
from .doctor import MISSING, sc2_check, sc2_root, smac_check
from .settings import SETTINGS_CLASSES, our_keys, read_settings

OUR_LEARNER = "nonmono_learner"
OUR_MAC = "nonmono_mac"

# Keys PyMARL2 adds to its config at run time (run.py and sacred), not found in any YAML.
HOST_RUNTIME_KEYS = {
    "seed", "device", "unique_token", "n_agents", "n_actions", "state_shape", "obs_shape",
    "episode_limit", "accumulated_episodes", "unit_dim", "agent_own_state_size",
}

# Keys Sacred adds to every config itself, so `with seed=N` is always accepted.
SACRED_KEYS = {"seed"}

class PreflightError(RuntimeError):
    """Something the run needs is missing; the message says what and how to get it."""


def yaml_keys(folders: Iterable[Path]) -> set[str]:
    """Top-level keys of the YAML files below ``folders``, except configs of our learner.

    Those are skipped so that a typo in a user's own ``nonmono_learner`` config cannot
    make itself "known"; stock configs define which host keys exist.
    """
    keys: set[str] = set()
    for folder in folders:
        for path in sorted(Path(folder).rglob("*.yaml")):
            with open(path, encoding="utf-8") as f:
                data = yaml.safe_load(f) or {}
            if isinstance(data, Mapping) and not {OUR_LEARNER, OUR_MAC} & {data.get("learner"), data.get("mac")}:
                keys.update(data)
    return keys


def check_config(config: Mapping, host_config_dir: Path, plugin_config_dirs: Iterable[Path]) -> None:
    """Validate a run that uses our learner or controller; other runs pass untouched."""
    if config.get("learner") != OUR_LEARNER and config.get("mac") != OUR_MAC:
        return
    if config.get("learner") == OUR_LEARNER and config.get("mac") != OUR_MAC:
        raise ConfigError(f"learner={OUR_LEARNER!r} needs mac={OUR_MAC!r}, got mac={config.get('mac')!r}")
    if config.get("q_lambda"):
        raise ConfigError("q_lambda=True is PyMARL2's nq_learner switch; with nonmono_learner use td_bootstrap=q_lambda")
    known = yaml_keys([host_config_dir, *plugin_config_dirs]) | our_keys() | HOST_RUNTIME_KEYS
    check_known_keys("config", config.keys(), known)
    for cls in SETTINGS_CLASSES:
        read_settings(cls, config, OUR_LEARNER)


def _dotted_paths(config: Mapping, prefix: str = "") -> set[str]:
    """Every key path of ``config``, nested ones dotted: {"env_args", "env_args.map_name", ...}."""
    paths: set[str] = set()
    for key, value in config.items():
        path = f"{prefix}{key}"
        paths.add(path)
        if isinstance(value, Mapping):
            paths |= _dotted_paths(value, f"{path}.")
    return paths


def update_paths(updates: Sequence[str]) -> list[str]:
    """The key paths that Sacred ``with`` words set: ``KEY=VALUE``, a dict VALUE per entry.

    Other words (named configs, options) are left to Sacred.
    """
    paths = []
    for word in updates:
        if word.startswith("-") or "=" not in word:
            continue
        key, text = (part.strip() for part in word.split("=", 1))
        try:
            value = ast.literal_eval(text)  # how Sacred reads values too
        except (ValueError, SyntaxError):
            value = text
        paths.extend(_leaf_paths(key, value))
    return paths


def _leaf_paths(path: str, value: object) -> list[str]:
    # Sacred checks a dict value's entries one by one, as if each were set with a dotted key.
    if isinstance(value, Mapping) and value:
        return [leaf for key, sub in value.items() for leaf in _leaf_paths(f"{path}.{key}", sub)]
    return [path]


def check_with_updates(config: Mapping, updates: Sequence[str]) -> None:
    """Refuse ``with`` keys that the merged YAML config lacks: Sacred would refuse them too."""
    check_known_keys("config", update_paths(updates), _dotted_paths(config) | SACRED_KEYS)


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


def _grf_problems(env_args: Mapping) -> list[str]:
    from ...envs.football import football_problems, football_settings

    football_settings(env_args)  # bad scenario / agent count: ConfigError naming the key
    return football_problems()


def _smaclite_problems(env_args: Mapping) -> list[str]:
    from ...envs.smaclite import smaclite_problems, smaclite_settings

    smaclite_settings(env_args)  # unknown key or map: ConfigError naming the allowed ones
    return smaclite_problems()


def _gfootball_problems(env_args: Mapping) -> list[str]:
    # PyMARL2's own GRF env imports gfootball only when it is created.
    from ...envs.football import football_problems

    return football_problems()


# What each env needs beyond PyMARL2 itself, checked before a run starts: env_args in, one
# problem (with its fix) per missing piece out. Envs not listed need nothing more.
ENV_REQUIREMENTS: Registry[Callable[[Mapping], list[str]]] = Registry("env with start-up requirements")
ENV_REQUIREMENTS.register("sc2", lambda env_args: starcraft_problems(env_args.get("map_name")))
ENV_REQUIREMENTS.register("grf", _grf_problems)
ENV_REQUIREMENTS.register("smaclite", _smaclite_problems)
ENV_REQUIREMENTS.register("gfootball", _gfootball_problems)


def check_environment(config: Mapping) -> None:
    env, env_args = config.get("env"), config.get("env_args") or {}
    problems = ENV_REQUIREMENTS.get(env)(env_args) if env in ENV_REQUIREMENTS else []
    if problems:
        raise PreflightError(f"cannot run env={env}: " + "; ".join(problems))
