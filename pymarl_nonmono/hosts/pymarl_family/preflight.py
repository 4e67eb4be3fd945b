"""Start-up checks of config keys, the same on every PyMARL-family host.

They turn a typo in a config key into one message at start-up that names the key and
what was probably meant. Each host adds its own checks (PyMARL2: StarCraft II and
football software, nq_learner's ``q_lambda``; EPyMARL: ``common_reward``).
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import yaml

from ...errors import ConfigError, check_choice, check_known_keys
from ...registry import Registry
from .settings import our_keys, read_settings

OUR_LEARNER = "nonmono_learner"
OUR_MAC = "nonmono_mac"

# Keys Sacred adds to every config itself, so `with seed=N` is always accepted.
SACRED_KEYS = {"seed"}


class PreflightError(RuntimeError):
    """Something the run needs is missing; the message says what and how to get it."""


def host_config_dir() -> Path:
    """The running host's ``src/config`` (both hosts keep ``learners/`` beside it)."""
    import learners  # the host's package; its parent is the host's src/

    return Path(learners.__file__).resolve().parents[1] / "config"


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


def uses_our_components(config: Mapping) -> bool:
    return config.get("learner") == OUR_LEARNER or config.get("mac") == OUR_MAC


def check_config(config: Mapping, host_config_dir: Path, plugin_config_dirs: Iterable[Path], *,
                 settings_classes: Sequence[type], runtime_keys: set[str],
                 host_checks: Sequence[Callable[[Mapping], None]] = ()) -> None:
    """Validate a run that uses our learner or controller; other runs pass untouched.

    ``settings_classes``: what the host's learner and controller read; ``runtime_keys``:
    keys the host adds at run time, in no YAML; ``host_checks``: the host's own rules,
    each raising :class:`ConfigError`.
    """
    if not uses_our_components(config):
        return
    if config.get("learner") == OUR_LEARNER and config.get("mac") != OUR_MAC:
        raise ConfigError(f"learner={OUR_LEARNER!r} needs mac={OUR_MAC!r}, got mac={config.get('mac')!r}")
    for check in host_checks:
        check(config)
    known = yaml_keys([host_config_dir, *plugin_config_dirs]) | our_keys(settings_classes) | runtime_keys
    check_known_keys("config", config.keys(), known)
    for cls in settings_classes:
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


def _parsed_updates(updates: Sequence[str]) -> list[tuple[str, object]]:
    """``(KEY, VALUE)`` of the Sacred ``with`` words ``KEY=VALUE``, values read as Sacred does.

    Other words (named configs, options) are left to Sacred.
    """
    parsed = []
    for word in updates:
        if word.startswith("-") or "=" not in word:
            continue
        key, text = (part.strip() for part in word.split("=", 1))
        try:
            value = ast.literal_eval(text)  # how Sacred reads values too
        except (ValueError, SyntaxError):
            value = text
        parsed.append((key, value))
    return parsed


def update_paths(updates: Sequence[str]) -> list[str]:
    """The key paths that Sacred ``with`` words set: ``KEY=VALUE``, a dict VALUE per entry."""
    return [leaf for key, value in _parsed_updates(updates) for leaf in _leaf_paths(key, value)]


def _leaf_paths(path: str, value: object) -> list[str]:
    # Sacred checks a dict value's entries one by one, as if each were set with a dotted key.
    if isinstance(value, Mapping) and value:
        return [leaf for key, sub in value.items() for leaf in _leaf_paths(f"{path}.{key}", sub)]
    return [path]


def with_updates(config: Mapping, updates: Sequence[str]) -> dict:
    """A copy of ``config`` with the ``with`` words applied, as Sacred will apply them."""
    out = _copy(config)
    for key, value in _parsed_updates(updates):
        for leaf in _leaf_paths(key, value):
            *parents, last = leaf.split(".")
            node = out
            for part in parents:
                node = node.setdefault(part, {})
            sub = value
            for part in leaf.split(".")[len(key.split(".")):]:
                sub = sub[part]
            node[last] = sub
    return out


def _copy(config: Mapping) -> dict:
    return {k: _copy(v) if isinstance(v, Mapping) else v for k, v in config.items()}


def check_with_updates(config: Mapping, updates: Sequence[str]) -> None:
    """Refuse ``with`` keys that the merged YAML config lacks: Sacred would refuse them too."""
    check_known_keys("config", update_paths(updates), _dotted_paths(config) | SACRED_KEYS)


def stop_on_unknown_with_keys(config: Mapping, updates: Sequence[str]) -> None:
    """:func:`check_with_updates` for a plugin's ``check_config``: a bad key stops ``main.py``
    with one line (Sacred would raise a ConfigAddedError without saying what was meant)."""
    try:
        check_with_updates(config, updates)
    except ConfigError as exc:
        raise SystemExit(f"pymarl-nonmono: {exc}; `with` takes the keys of default.yaml and of the "
                         f"--config and --env-config YAMLs") from None


# ----------------------------------------------------------------- env_args values

def _sc2_map(env_args: Mapping) -> None:
    try:
        from smac.env.starcraft2.maps.smac_maps import map_param_registry
    except ImportError:
        return  # StarCraft's smac missing: the software check says so
    map_name = env_args.get("map_name")
    if map_name is None:
        raise ConfigError("env_args.map_name is null: SMAC needs a map, e.g. env_args.map_name=3s5z_vs_3s6z")
    if map_name not in map_param_registry:
        check_choice("env_args.map_name", str(map_name), sorted(map_param_registry))


def _matrix(env_args: Mapping) -> None:
    from ...envs.matrix import payoff_of_env_args

    payoff_of_env_args(env_args)


def _smaclite(env_args: Mapping) -> None:
    from ...envs.smaclite import smaclite_settings

    smaclite_settings(env_args)


def _football(env_args: Mapping) -> None:
    from ...envs.football import football_settings

    football_settings(env_args)


# The env_args values of each env that can be checked without its software (a bad preset, map or
# key), by env name: one ConfigError naming the value, before any env (or env worker) starts.
ENV_ARGS_CHECKS: Registry[Callable[[Mapping], None]] = Registry("env with checkable env_args")
ENV_ARGS_CHECKS.register("sc2", _sc2_map)
ENV_ARGS_CHECKS.register("matrix_game", _matrix)
ENV_ARGS_CHECKS.register("smaclite", _smaclite)
ENV_ARGS_CHECKS.register("grf", _football)


def check_env_args(config: Mapping, envs: Iterable[str] | None = None) -> None:
    """Check ``config``'s env_args where its env is in :data:`ENV_ARGS_CHECKS` (and in ``envs``,
    the names that are ours on this host, when given)."""
    env = config.get("env")
    if env in ENV_ARGS_CHECKS and (envs is None or env in envs):
        ENV_ARGS_CHECKS.get(env)(config.get("env_args") or {})


# ----------------------------------------------------------------- --config / --env-config names

def check_config_names(argv: Sequence[str], host_config_dir: Path, plugin_config_dirs: Iterable[Path]) -> None:
    """Stop with a 'did you mean' when ``--config=NAME`` or ``--env-config=NAME`` in ``argv`` (the
    host's main.py command line) names no YAML in the host's folders or ours. Called when the
    plugin is activated, before main.py looks the names up itself (it lists the paths it tried)."""
    import difflib

    for word in argv:
        for flag, sub in (("--config=", "algs"), ("--env-config=", "envs")):
            if not word.startswith(flag):
                continue
            name = word[len(flag):]
            folders = [Path(host_config_dir) / sub, *(Path(d) / sub for d in plugin_config_dirs)]
            known = sorted({p.stem for f in folders if f.is_dir() for p in f.glob("*.yaml")})
            if name not in known:
                hint = difflib.get_close_matches(name, known, n=1)
                raise SystemExit(f"pymarl-nonmono: {flag}{name}: no such config" +
                                 (f" (did you mean {flag}{hint[0]}?)" if hint else "") +
                                 f"; the {sub} configs: {', '.join(known)}")
