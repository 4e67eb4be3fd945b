"""PyMARL2's ``stag_hunt`` env with ``get_obs`` and ``get_avail_actions`` computed for all agents
at once (:mod:`pymarl_nonmono.envs.stag_hunt`), for the settings that module covers; any other
setting keeps the env's own methods. The arrays are the env's own, value for value (tests/hosts/
test_stag_hunt_env.py compares them on every step of random episodes); only the time differs.
"""

from __future__ import annotations

import functools
import logging

import numpy as np

from ...envs.stag_hunt import available_actions, local_views

log = logging.getLogger(__name__)

#: Settings (env attributes) under which the env's observations are something else than the
#: plain window of agents, stags and hares (and walls) around each agent.
OTHER_OBSERVATIONS = ("batch_mode", "toroidal", "observe_state", "directed_observations", "intersection_global_view",
                      "intersection_unknown", "random_ghosts", "observe_ids", "observe_one_hot", "state_as_graph")


def not_covered(env) -> list[str]:
    """The settings of ``env`` that the one-pass methods do not cover (empty: they apply)."""
    missing = [name for name in (*OTHER_OBSERVATIONS, "n_feats", "agents", "prey", "grid") if not hasattr(env, name)]
    if missing:
        return [f"no attribute {name}" for name in missing]
    return [name for name in OTHER_OBSERVATIONS if getattr(env, name)] + (
        [f"n_feats={env.n_feats}"] if env.n_feats != 3 else [])


def observations(env) -> list[np.ndarray]:
    """What ``env.get_obs()`` returns: one flat window per agent, blank for a removed frozen agent."""
    stags, agents, active = env.n_stags, env.agents[:, 0, :], env.agents_not_frozen[:, 0] > 0
    views = local_views(agents, [(agents, active, 0),
                                 (env.prey[:stags, 0, :], env.prey_alive[:stags, 0] > 0, 1),
                                 (env.prey[stags:, 0, :], env.prey_alive[stags:, 0] > 0, 2)],
                        env.grid_shape, env.agent_obs, env.n_feats, bool(env.observe_walls))
    if env.capture_freezes and env.remove_frozen:
        views[~active] *= 0  # as the env does (a wall's -1 becomes -0.0 there too)
    return list(views)


def avail_actions(env) -> list[list[int]]:
    """What ``env.get_avail_actions()`` returns."""
    prey_at = env.grid[0][:, :, 1:3].sum(axis=2) > 0  # stags and hares: what blocks nothing but can be caught
    catch = env.action_labels["catch"] if env.capture_action else None
    return available_actions(env.agents[:, 0, :], env.agents_not_frozen[:, 0] > 0, prey_at,
                             env.actions[:env.n_actions], env.action_labels["stay"], catch).tolist()


def accelerate(env) -> bool:
    """Give ``env`` the one-pass methods when they cover its settings; True if they do."""
    other = not_covered(env)
    if other:
        log.debug("stag_hunt keeps its own get_obs and get_avail_actions (settings %s)", ", ".join(other))
        return False
    env.get_obs = functools.partial(observations, env)
    env.get_avail_actions = functools.partial(avail_actions, env)
    return True


def accelerated_factory(factory):
    """The host's ``stag_hunt`` registry entry, whose envs get :func:`accelerate`."""
    if getattr(factory, "_nonmono_accelerated", False):
        return factory

    @functools.wraps(factory)
    def make(**env_args):
        env = factory(**env_args)
        accelerate(env)
        return env

    make._nonmono_accelerated = True
    return make
