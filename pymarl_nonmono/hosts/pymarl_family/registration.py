"""Registering our learner, controller and selector with a PyMARL-family host.

Both hosts keep plain dict registries under the same names; what differs (the controller
class with its agent protocol, envs, run wrapping) stays in each host's plugin.
"""

from __future__ import annotations

import logging
import os
from typing import MutableMapping

# The names our configs use (``learner:``, ``mac:``, ``action_selector:``).
LEARNER = "nonmono_learner"
MAC = "nonmono_mac"
SELECTOR = "softmax"
#: Set to 1 to see our DEBUG lines in a run's console.
DEBUG_ENV = "PYMARL_NONMONO_DEBUG"


def set_our_log_level() -> None:
    """The hosts' consoles show DEBUG; ours stay out of them (INFO and above) unless
    ``PYMARL_NONMONO_DEBUG=1`` asks for them."""
    wanted = os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")
    logging.getLogger("pymarl_nonmono").setLevel(logging.DEBUG if wanted else logging.INFO)


def register_learning(
    learners: MutableMapping[str, type],
    controllers: MutableMapping[str, type],
    selectors: MutableMapping[str, type],
    learner_cls: type,
    mac_cls: type,
) -> None:
    """Put ``learner_cls`` / ``mac_cls`` / our selector into the host's registries, and give
    every stock learner what :func:`with_stock_additions` adds."""
    from .selectors import HostSelector

    for name, cls in list(learners.items()):
        if name != LEARNER:
            learners[name] = with_stock_additions(cls)
    learners[LEARNER] = learner_cls
    controllers[MAC] = mac_cls
    # setdefault: a host that someday ships its own "softmax" keeps it.
    selectors.setdefault(SELECTOR, HostSelector)


def with_stock_additions(learner_cls):
    """A host learner-registry entry that builds ``learner_cls`` with our IGM diagnostics (stock
    runs log the same tables as ours) and complete checkpoints (a resumed stock run continues
    every network it trains)."""
    if getattr(learner_cls, "_nonmono_stock", False):
        return learner_cls
    from .diagnostics import attach_to_stock_learner
    from .stock_checkpoint import complete_checkpoints

    def make(mac, scheme, logger, args):
        return attach_to_stock_learner(complete_checkpoints(learner_cls(mac, scheme, logger, args)), args)

    make._nonmono_stock = True
    make.__name__ = getattr(learner_cls, "__name__", "learner")
    return make


def register_runners(runners: MutableMapping[str, type]) -> None:
    """Wrap every host runner so that ``test_joint_greedy=True`` adds joint-greedy test
    episodes (:mod:`.evaluation`); with the key off (the default) the runner is the host's."""
    from .evaluation import with_joint_greedy_tests

    for name, cls in list(runners.items()):
        runners[name] = with_joint_greedy_tests(cls)
