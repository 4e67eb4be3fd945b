"""Our environments (PyMARL2's env protocol) behind EPyMARL's env protocol.

EPyMARL calls an env factory with ``**env_args, common_reward=..., reward_scalarisation=...``
(``episode_runner.py``, ``parallel_runner.py``), and its envs answer ``step(actions)`` with
``(obs, reward, terminated, truncated, info)`` and ``reset()`` with ``(obs, info)``. Ours
answer ``step`` with ``(reward, terminated, info)``, a time-out flagged by
``info["episode_limit"]``; here that flag becomes ``truncated`` and is left in ``info``,
so EPyMARL stores a time-out as not terminated and the TD targets bootstrap there.
"""

from __future__ import annotations

import functools
from typing import Callable

from .settings import TeamRewardSettings

EnvFactory = Callable[..., object]


class EPyMARLEnv:
    """One of our envs, seen through EPyMARL's env protocol; every other method is the env's own."""

    def __init__(self, env) -> None:
        self.env = env

    def step(self, actions):
        reward, terminated, info = self.env.step(actions)
        time_limit = bool(info.get("episode_limit", False))
        return self.env.get_obs(), reward, bool(terminated) and not time_limit, time_limit, info

    def reset(self, seed=None, options=None):
        # Our envs take no seed here: they are seeded from env_args at construction.
        self.env.reset()
        return self.env.get_obs(), {}

    def __getattr__(self, name):
        # Only reached for names this class lacks; "env" itself missing means a half-built object.
        if name == "env":
            raise AttributeError(name)
        return getattr(self.env, name)


def _make(factory: EnvFactory, *, common_reward, reward_scalarisation, **env_args) -> EPyMARLEnv:
    TeamRewardSettings(common_reward=common_reward).validate()
    return EPyMARLEnv(factory(**env_args))


def for_epymarl(factory: EnvFactory) -> EnvFactory:
    """An EPyMARL env-registry entry for our env ``factory`` (``factory(**env_args)``)."""
    # A partial, not a closure, so EPyMARL's parallel runner can send it to its workers.
    return functools.partial(_make, factory)
