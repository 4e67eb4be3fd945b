"""Joint-greedy test episodes: does the team act well when it acts on the learned Q_tot?

With ``test_joint_greedy=True``, every time the host's runner finishes its greedy test
episodes (the ones logged as ``test_*``), the same number of episodes is played again with
every agent taking its part of the joint action that maximises the mixer's Q_tot at the
state (our controller's ``joint_greedy`` mode), logged as ``test_joint_greedy_*``
(``test_joint_greedy_return_mean``, ``test_joint_greedy_battle_won_mean``, ...).

These episodes are a **centralised upper bound**, not a decentralised policy: they need the
global state and every agent's utilities, and are exact only because every joint action is
scored (A^N <= 4096). The gap between ``test_*`` and ``test_joint_greedy_*`` separates
"the value function was learned" from "the agents act on it". Test episodes add no env
steps to ``t_env`` and do not enter the replay buffer, so training is unchanged.

Both hosts' runners share the protocol this relies on: ``setup(..., mac=...)``,
``run(test_mode)``, and ``_log(returns, stats, prefix)`` called with ``"test_"`` once a
set of ``test_nepisode`` test episodes is complete.
"""

from __future__ import annotations

import functools
import logging

from ...errors import ConfigError, check_bool
from ...numerics.igm import EXACT_JOINT_ACTIONS, exact_check_affordable

log = logging.getLogger(__name__)

TEST_PREFIX = "test_"
JOINT_GREEDY_PREFIX = "test_joint_greedy_"
KEY = "test_joint_greedy"


def check_joint_greedy_setup(mac, n_agents: int, n_actions: int) -> None:
    """Refuse, naming the key, what joint-greedy tests cannot do."""
    if not hasattr(mac, "attach_mixer"):
        raise ConfigError(f"{KEY}=True needs our controller (mac='nonmono_mac', learner='nonmono_learner'), "
                          f"which can act on the mixer's joint argmax; {type(mac).__name__} acts on its "
                          f"agents' Q-values only")
    if not exact_check_affordable(n_agents, n_actions):
        raise ConfigError(f"{KEY}=True scores every joint action, {n_actions}^{n_agents} here, above the "
                          f"limit of {EXACT_JOINT_ACTIONS}; set {KEY}=False for this env")


class JointGreedyTests:
    """Wraps one runner instance (see module docstring)."""

    def __init__(self, runner) -> None:
        self.runner = runner
        self.pending = False   # a test set was just logged: play the joint-greedy set next
        self.active = False    # the joint-greedy set is being played
        self.logged = False

    def install(self) -> None:
        runner = self.runner
        setup, run, write_log = runner.setup, runner.run, runner._log

        @functools.wraps(setup)
        def checked_setup(*args, **kwargs):
            out = setup(*args, **kwargs)
            check_joint_greedy_setup(runner.mac, int(runner.args.n_agents), int(runner.args.n_actions))
            log.info("%s: after each set of greedy test episodes, %s more act on the joint argmax of "
                     "Q_tot (a centralised upper bound), logged as %s*", KEY, runner.args.test_nepisode,
                     JOINT_GREEDY_PREFIX)
            return out

        @functools.wraps(write_log)
        def relabelled_log(returns, stats, prefix):
            if prefix == TEST_PREFIX:
                if self.active:
                    prefix = JOINT_GREEDY_PREFIX
                    self.logged = True
                else:
                    self.pending = True
            return write_log(returns, stats, prefix)

        @functools.wraps(run)
        def run_then_joint_greedy(test_mode=False):
            batch = run(test_mode=test_mode)
            if self.pending:
                self.pending = False
                self._play(run)
            return batch

        runner.setup, runner.run, runner._log = checked_setup, run_then_joint_greedy, relabelled_log

    def _play(self, run) -> None:
        mac = self.runner.mac
        self.active, self.logged = True, False
        mac.joint_greedy = True
        try:
            # A set is logged once test_nepisode episodes are in; each run plays
            # batch_size_run of them, so this bound is never reached by a working runner.
            for _ in range(int(self.runner.args.test_nepisode) + 1):
                run(test_mode=True)
                if self.logged:
                    return
            raise RuntimeError(f"{KEY}: the runner never logged its joint-greedy test set")
        finally:
            mac.joint_greedy = False
            self.active = False


def with_joint_greedy_tests(runner_cls):
    """A host runner-registry entry that builds ``runner_cls`` and, when the run sets
    ``test_joint_greedy=True``, adds the joint-greedy test episodes."""
    if getattr(runner_cls, "_nonmono_joint_greedy", False):
        return runner_cls

    def make(args, logger):
        runner = runner_cls(args=args, logger=logger)
        if check_bool(KEY, args.test_joint_greedy):
            JointGreedyTests(runner).install()
        return runner

    make._nonmono_joint_greedy = True
    make.__name__ = getattr(runner_cls, "__name__", "runner")
    return make
