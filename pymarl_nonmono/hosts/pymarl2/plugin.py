"""Entry point (group ``pymarl2.plugins``) called by PyMARL2's patched ``main.py``.

``activate()`` registers our components into the host's registries and returns the
folder holding our ``algs/`` and ``envs/`` configs. Nothing is registered at import.
"""

from __future__ import annotations

import functools
import logging
from importlib import resources
from pathlib import Path

from ...errors import ConfigError
from .preflight import PreflightError, check_config, check_environment

log = logging.getLogger(__name__)

LEARNER = "nonmono_learner"
MAC = "nonmono_mac"
SELECTOR = "softmax"


def config_root() -> Path:
    return Path(str(resources.files("pymarl_nonmono.config")))


def host_config_dir() -> Path:
    import learners  # the host's package; its parent is PyMARL2's src/

    return Path(learners.__file__).resolve().parents[1] / "config"


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
        return run_fn(_run, _config, _log)

    run._nonmono_preflight = True
    return run


def activate() -> list[str]:
    import controllers
    import envs
    import learners
    import run as host_run
    from components import action_selectors

    from ...envs.football import make_football_env
    from ...envs.matrix import make_matrix_game
    from .controller import NonMonoMAC
    from .diagnostics import with_stock_diagnostics
    from .learner import NonMonoLearner
    from .selectors import HostSelector

    for name, cls in list(learners.REGISTRY.items()):
        if name != LEARNER:
            learners.REGISTRY[name] = with_stock_diagnostics(cls)
    learners.REGISTRY[LEARNER] = NonMonoLearner
    controllers.REGISTRY[MAC] = NonMonoMAC
    action_selectors.REGISTRY.setdefault(SELECTOR, HostSelector)
    # Host env registry values are factories called with **env_args.
    envs.REGISTRY.setdefault("matrix_game", make_matrix_game)
    envs.REGISTRY.setdefault("grf", make_football_env)
    for name, fn in list(host_run.REGISTRY.items()):
        host_run.REGISTRY[name] = _with_preflight(fn)
    log.debug("pymarl-nonmono registered %s, %s, %s, envs matrix_game and grf", LEARNER, MAC, SELECTOR)
    return [str(config_root())]
