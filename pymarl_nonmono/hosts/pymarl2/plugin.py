"""Entry point (group ``pymarl2.plugins``) called by PyMARL2's patched ``main.py``.

``activate()`` registers our components into the host's registries and returns the
folder holding our ``algs/`` and ``envs/`` configs. Nothing is registered at import.
``activate.check_config(config, updates)`` is then called with the merged config and the
words after ``with`` (patch 0003), before Sacred reads them.
"""

from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path

from ...errors import ConfigError
from ..pymarl_family.preflight import check_config_names, host_config_dir, stop_on_unknown_with_keys, with_updates
from ..pymarl_family.registration import (LEARNER, MAC, SELECTOR, register_learning, register_runners,
                                          set_our_log_level)
from ..pymarl_family.signals import record_sigterm_as_interrupt
from ..pymarl_family.workers import reporting_env_factory, stop_when_an_env_worker_fails
from ..spec import PYMARL2
from .preflight import PreflightError, check_config, check_environment, check_values
from .stag_hunt import accelerated_factory

log = logging.getLogger(__name__)



def config_root() -> Path:
    return PYMARL2.our_configs()


def _with_preflight(run_fn):
    """Wrap a host run function so bad configs and missing software stop it at once."""
    if getattr(run_fn, "_nonmono_preflight", False):
        return run_fn

    @functools.wraps(run_fn)
    def run(_run, _config, _log):
        try:
            check_config(_config, host_config_dir(), [config_root()])
            check_environment(_config)
        except (ConfigError, PreflightError) as exc:
            # SystemExit bypasses sacred's traceback printer: the user sees one message,
            # and sacred still records the run as failed, with the message.
            raise SystemExit(f"pymarl-nonmono: {exc}") from None
        try:
            return run_fn(_run, _config, _log)
        except ConfigError as exc:
            # Checks that need the env's sizes (e.g. test_joint_greedy) run once it is built.
            raise SystemExit(f"pymarl-nonmono: {exc}") from None

    run._nonmono_preflight = True
    return run


def activate() -> list[str]:
    import controllers
    import envs
    import learners
    import runners
    import run as host_run
    from components import action_selectors

    from ...envs.football import make_football_env
    from ...envs.matrix import make_matrix_game
    from ...envs.smaclite import make_smaclite_env
    from .controller import NonMonoMAC
    from .learner import NonMonoLearner

    set_our_log_level()
    register_learning(learners.REGISTRY, controllers.REGISTRY, action_selectors.REGISTRY, NonMonoLearner, NonMonoMAC)
    register_runners(runners.REGISTRY)
    record_sigterm_as_interrupt()
    # Host env registry values are factories called with **env_args.
    envs.REGISTRY.setdefault("matrix_game", make_matrix_game)
    envs.REGISTRY.setdefault("grf", make_football_env)
    envs.REGISTRY.setdefault("smaclite", make_smaclite_env)
    stop_when_an_env_worker_fails()
    if "stag_hunt" in envs.REGISTRY:
        envs.REGISTRY["stag_hunt"] = accelerated_factory(envs.REGISTRY["stag_hunt"])
    for name, factory in list(envs.REGISTRY.items()):
        envs.REGISTRY[name] = reporting_env_factory(factory)
    for name, fn in list(host_run.REGISTRY.items()):
        host_run.REGISTRY[name] = _with_preflight(fn)
    log.debug("pymarl-nonmono registered %s, %s, %s, envs matrix_game, grf and smaclite", LEARNER, MAC, SELECTOR)
    check_config_names(sys.argv[1:], host_config_dir(), [config_root()])
    return [str(config_root())]


def check_command_line(config: dict, updates: list[str]) -> None:
    """Stop at once, in one line, before Sacred creates a run: on a ``with`` key no config
    of the run has (every algorithm; Sacred would refuse it as a ConfigAddedError without
    saying what was meant), and on a value our learner, controller or envs cannot use, or
    an env whose software is missing (the same checks the run repeats at its start)."""
    stop_on_unknown_with_keys(config, updates)
    final = with_updates(config, updates)
    try:
        check_values(final, host_config_dir())
        check_environment(final)
    except (ConfigError, PreflightError) as exc:
        raise SystemExit(f"pymarl-nonmono: {exc}") from None


# The attribute patch 0003's main.py looks for on a loaded plugin.
activate.check_config = check_command_line
