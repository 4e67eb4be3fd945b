"""EPyMARL's entry point (group ``epymarl.plugins``), called by patch 0003's ``load_plugins()``.

``activate()`` registers our learner, controller, selector and envs into EPyMARL's
registries and returns the folder holding our EPyMARL configs (``config/hosts/epymarl``:
``default.yaml``, ``algs/``, ``envs/``). Nothing is registered at import.
``activate.check_config(config, updates)`` is then called with the merged YAML config and
the words after ``with``, before Sacred reads them: EPyMARL's ``main.py`` holds its own
reference to ``run``, so, unlike on PyMARL2, every start-up check happens here.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from ...errors import ConfigError
from ..pymarl_family import preflight
from ..pymarl_family.registration import (LEARNER, MAC, SELECTOR, register_learning, register_runners,
                                          set_our_log_level)
from ..pymarl_family.signals import record_sigterm_as_interrupt
from ..pymarl_family.workers import reporting_env_factory, stop_when_an_env_worker_fails
from ..spec import EPYMARL
from .preflight import OUR_ENVS as ENVS
from .preflight import check_values

log = logging.getLogger(__name__)

def config_root() -> Path:
    return EPYMARL.our_configs()


def activate() -> list[str]:
    import controllers
    import envs
    import learners
    import runners
    from components import action_selectors

    from ...envs.football import make_football_env
    from ...envs.matrix import make_matrix_game
    from ..pymarl_family.learner import PymarlFamilyLearner
    from .agents import NonMonoMAC
    from .envs import for_epymarl

    set_our_log_level()
    register_learning(learners.REGISTRY, controllers.REGISTRY, action_selectors.REGISTRY, PymarlFamilyLearner, NonMonoMAC)
    register_runners(runners.REGISTRY)
    record_sigterm_as_interrupt()
    for name, factory in zip(ENVS, (make_matrix_game, make_football_env)):
        envs.REGISTRY.setdefault(name, for_epymarl(factory))
    stop_when_an_env_worker_fails()
    for name, factory in list(envs.REGISTRY.items()):
        envs.REGISTRY[name] = reporting_env_factory(factory)
    log.debug("pymarl-nonmono registered %s, %s, %s, envs %s", LEARNER, MAC, SELECTOR, ", ".join(ENVS))
    preflight.check_config_names(sys.argv[1:], preflight.host_config_dir(), [config_root()])
    return [str(config_root())]


def check_command_line(config: dict, updates: list[str]) -> None:
    """Stop at once, in one line, on a ``with`` key no config of the run has (every algorithm),
    and on a config our learner, controller or envs cannot run."""
    preflight.stop_on_unknown_with_keys(config, updates)
    final = preflight.with_updates(config, updates)
    try:
        check_values(final, preflight.host_config_dir())
    except ConfigError as exc:
        raise SystemExit(f"pymarl-nonmono: {exc}") from None


# The attribute patch 0003's main.py looks for on a loaded plugin.
activate.check_config = check_command_line
