"""PyMARL2's ``stag_hunt`` env with ``step``, ``get_obs`` and ``get_avail_actions`` from
:mod:`pymarl_nonmono.envs.stag_hunt`, for the settings that module covers; any other setting keeps
the env's own methods. What they return and do to the env's state, and the random numbers they
draw, are the env's own, value for value (tests/hosts/test_stag_hunt_env.py compares them on every
step of random episodes); only the time differs.
"""

from __future__ import annotations

import functools
import logging

import numpy as np

from ...envs.stag_hunt import HuntRules, HuntWorld, available_actions, hunt_step, local_views

log = logging.getLogger(__name__)

#: Settings (env attributes) under which the env's observations are something else than the
#: plain window of agents, stags and hares (and walls) around each agent.
OTHER_OBSERVATIONS = ("batch_mode", "toroidal", "observe_state", "directed_observations", "intersection_global_view",
                      "intersection_unknown", "random_ghosts", "observe_ids", "observe_one_hot", "state_as_graph")
#: Settings under which the env's step does more than :func:`hunt_step` (debug prints).
OTHER_STEPS = ("print_caught_prey", "print_frozen_agents")


def not_covered(env) -> list[str]:
    """The settings of ``env`` that our methods do not cover (empty: they apply)."""
    missing = [name for name in (*OTHER_OBSERVATIONS, *OTHER_STEPS, "n_feats", "agents", "prey", "grid", "args")
               if not hasattr(env, name)]
    if missing:
        return [f"no attribute {name}" for name in missing]
    return [name for name in (*OTHER_OBSERVATIONS, *OTHER_STEPS) if getattr(env, name)] + (
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


def rules(env) -> HuntRules:
    """The rules of ``env``'s step, as its settings are now."""
    kinds = (1, 2)
    return HuntRules(
        shape=tuple(int(n) for n in env.env_max), moves=tuple(map(tuple, env.actions.tolist())),
        n_actions=env.n_actions, agent_blockers=tuple(env.agent_move_block.tolist()),
        catch=env.action_labels["catch"] if env.capture_action else None,
        catchers_needed=tuple(env.capture_action_conditions), free_cells_to_capture=tuple(env.capture_conditions),
        # as the env adds them up: 0, plus the stag's reward for a stag, plus the hare's for a hare
        capture_rewards=tuple(0 + (env.capture_stag_reward if k == 1 else 0)
                              + (env.capture_hare_reward if k == 2 else 0) for k in kinds),
        miscapture_punishment=env.miscapture_punishment, collision_reward=env.collision_reward,
        prevent_cannibalism=bool(env.args.prevent_cannibalism), capture_freezes=bool(env.capture_freezes),
        remove_frozen=bool(env.remove_frozen), capture_terminal=bool(env.capture_terminal),
        mountain_slope=env.mountain_slope, rest_probability=(env.p_stags_rest, env.p_hare_rest))


def step(env, hunt: HuntRules, actions):
    """What ``env.step(actions)`` does and returns, for one env (not batch mode)."""
    actions = np.asarray(actions, dtype=env.agents.dtype)  # the env's own cast
    if actions.shape != (env.n_agents,):
        raise ValueError(f"stag_hunt takes one action per agent, shape ({env.n_agents},); got {actions.shape}")
    world = HuntWorld(grid=env.grid[0].tolist(), agents=env.agents[:, 0, :].tolist(),
                      active=(env.agents_not_frozen[:, 0] > 0).tolist(), prey=env.prey[:, 0, :].tolist(),
                      alive=(env.prey_alive[:, 0] > 0).tolist(), kind=env.prey_type[:, 0].tolist())
    terms, terminated = hunt_step(world, actions.tolist(), hunt, np.random)
    env.grid[0] = world.grid
    env.agents[:, 0, :] = world.agents
    env.prey[:, 0, :] = world.prey
    env.agents_not_frozen[~np.asarray(world.active), 0] = 0
    env.prey_alive[~np.asarray(world.alive), 0] = 0
    reward = np.ones(1, dtype=env.grid.dtype) * env.time_reward
    for term in terms:  # one by one in the env's dtype, as the env adds them
        reward[0] = reward[0] + term
    env.sum_rewards += reward[0]
    env.steps += 1
    info = {"episode_limit": env.truncate_episodes if env.steps >= env.episode_limit else False}
    return reward[0].item(), int(terminated or env.steps >= env.episode_limit), info


def accelerate(env) -> bool:
    """Give ``env`` our ``step``, ``get_obs`` and ``get_avail_actions`` when they cover its
    settings; True if they do. The step's rules are read from the env's settings here, once."""
    other = not_covered(env)
    if other:
        log.debug("stag_hunt keeps its own step, get_obs and get_avail_actions (settings %s)", ", ".join(other))
        return False
    env.step = functools.partial(step, env, rules(env))
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
