"""A predator-prey grid world's step (PyMARL2's ``stag_hunt``) on plain lists, and its observations
and available actions for all agents at once, from the entities' positions.

PyMARL2's env draws every entity onto a padded copy of the world once per agent and per step,
entity by entity, to cut out each agent's window, and moves entities with numpy operations on
two-element arrays; observations, available actions and the step were nearly all of the env's
time (``benchmarks/stag_hunt_env.py``). These compute the same things: the arrays in one pass,
the step with Python scalars, drawing the same random numbers in the same order.
``hosts/pymarl2/stag_hunt.py`` puts them on the env for the settings they cover, and tests
compare them with the env's own methods on every step of random episodes. No host import here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

WALL = -1.0  # what the env writes in channel 0 of window cells outside the world (observe_walls)


def local_views(observers: np.ndarray, targets: Sequence[tuple[np.ndarray, np.ndarray, int]],
                world_shape: Sequence[int], radius: Sequence[int], n_feats: int, walls: bool,
                dtype=np.float32) -> np.ndarray:
    """Each observer's window of the world, flattened: ``[N, (2*r0+1) * (2*r1+1) * n_feats]``.

    ``observers``: int ``[N, 2]`` (row, column) positions; ``targets``: ``(positions [M, 2],
    shown [M] bool, channel)`` per kind of entity. A shown target within ``radius`` of an observer
    in both coordinates (the window, centred on the observer) puts 1 in its channel at its cell;
    with ``walls``, window cells outside the world hold :data:`WALL` in channel 0."""
    observers = np.asarray(observers)
    if observers.ndim != 2 or observers.shape[1] != 2:
        raise ValueError(f"observers must be [N, 2] positions, got shape {observers.shape}")
    r0, r1 = (int(r) for r in radius)
    n = len(observers)
    out = np.zeros((n, 2 * r0 + 1, 2 * r1 + 1, n_feats), dtype=dtype)
    if walls:
        rows = observers[:, :1].astype(np.int64) + np.arange(-r0, r0 + 1)
        cols = observers[:, 1:].astype(np.int64) + np.arange(-r1, r1 + 1)
        outside = ((rows < 0) | (rows >= world_shape[0]))[:, :, None] | ((cols < 0) | (cols >= world_shape[1]))[:, None, :]
        out[..., 0][outside] = WALL
    for positions, shown, channel in targets:
        positions = np.asarray(positions)
        if not len(positions):
            continue
        if positions.shape != (len(shown), 2):
            raise ValueError(f"targets of channel {channel}: positions {positions.shape} and shown {np.shape(shown)} "
                             "do not match")
        d = positions[None, :, :].astype(np.int64) - observers[:, None, :].astype(np.int64)  # [N, M, 2]
        seen = np.asarray(shown, dtype=bool)[None, :] & (np.abs(d[..., 0]) <= r0) & (np.abs(d[..., 1]) <= r1)
        i, m = np.nonzero(seen)
        out[i, d[i, m, 0] + r0, d[i, m, 1] + r1, channel] = 1
    return out.reshape(n, -1)


def available_actions(positions: np.ndarray, active: np.ndarray, prey_at: np.ndarray, moves: np.ndarray,
                      stay: int, catch: Optional[int]) -> np.ndarray:
    """``[N, A]`` 0/1: which of the ``A = len(moves)`` actions each agent may take in a bounded world.

    ``positions``: int ``[N, 2]``; ``active``: ``[N]`` bool (a frozen agent may only ``stay``);
    ``prey_at``: ``[H, W]`` bool, where prey stands; ``moves``: ``[A, 2]`` displacement of each
    action (the first four the moves). An action is available when it stays inside the world;
    ``catch`` (None: no catch action) only next to prey: when one of the four moves, kept inside
    the world, lands on it."""
    positions = np.asarray(positions).astype(np.int64)
    shape = np.asarray(prey_at.shape, dtype=np.int64)
    moves = np.asarray(moves).astype(np.int64)
    landing = positions[:, None, :] + moves[None, :, :]
    avail = np.all((landing >= 0) & (landing < shape), axis=2).astype(np.int64)
    if catch is not None:
        near = np.clip(positions[:, None, :] + moves[None, :4, :], 0, shape - 1)
        avail[:, catch] = prey_at[near[..., 0], near[..., 1]].any(axis=1)
    frozen = ~np.asarray(active, dtype=bool)
    avail[frozen] = 0
    avail[frozen, stay] = 1
    return avail


@dataclass(frozen=True)
class HuntRules:
    """What one step of a bounded predator-prey world does (PyMARL2's ``stag_hunt`` settings).

    Prey kinds are grid channels 1 (stag) and 2 (hare); per-kind tuples are indexed ``kind - 1``."""
    shape: tuple[int, int]
    moves: tuple[tuple[int, int], ...]  # displacement of each action; the first four are the moves
    n_actions: int
    agent_blockers: tuple[int, ...]  # channels whose occupants an agent cannot move onto
    catch: Optional[int]  # the catch action; None: a prey is captured when it has few free cells
    catchers_needed: tuple[int, ...]  # agents that must catch a prey together, per kind
    free_cells_to_capture: tuple[int, ...]  # without a catch action: captured with at most this many
    capture_rewards: tuple[float, ...]  # per kind
    miscapture_punishment: float
    collision_reward: float
    prevent_cannibalism: bool  # a capture needs an agent next to the prey
    capture_freezes: bool  # the catching agents stop for the rest of the episode
    remove_frozen: bool  # ... and leave the grid
    capture_terminal: bool
    mountain_slope: float  # probability that an uphill move is not made
    rest_probability: tuple[float, ...]  # per kind: a free prey stays put


#: Channels that block a prey's move, and the channel whose occupants a prey can be next to.
PREY_BLOCKERS, AGENTS = (0, 1, 2), (0,)
#: The uphill move of agents, and of each prey kind (``kind - 1``), for ``mountain_slope``.
AGENT_UPHILL, PREY_UPHILL = 3, (1, 3)


@dataclass
class HuntWorld:
    """A world's state as plain lists, changed in place by :func:`hunt_step`."""
    grid: list  # [H][W][C] occupancy: 1.0 where an entity of channel C stands
    agents: list  # [N] [row, column]
    active: list  # [N] bool: not frozen
    prey: list  # [M] [row, column]
    alive: list  # [M] bool
    kind: list  # [M] int: the prey's channel


def hunt_step(world: HuntWorld, actions: Sequence[int], rules: HuntRules, rng) -> tuple[list, bool]:
    """One step: agents move one by one in random order, then each living prey, in random order, is
    captured, or rests or moves to a random free neighbouring cell. Returns the step's reward terms
    in the order they arise (the env sums them in its own dtype) and whether the episode ends
    (all prey captured, all agents frozen, or a capture with ``capture_terminal``).

    ``rng`` is called exactly as PyMARL2's env calls numpy's global generator (``permutation``,
    ``rand``, ``randint``, in the same order and number), so a seeded run draws the same stream."""
    if len(actions) != len(world.agents):
        raise ValueError(f"{len(actions)} actions for {len(world.agents)} agents")
    grid, moves, (height, width) = world.grid, rules.moves, rules.shape
    reach = set(moves[:rules.n_actions - 1])  # where an agent's non-catch actions would take it, relative to it
    terms, terminated = [], False

    def landing(pos, u):
        return min(max(pos[0] + moves[u][0], 0), height - 1), min(max(pos[1] + moves[u][1], 0), width - 1)

    def occupied(cell, channels):
        here = grid[cell[0]][cell[1]]
        return sum(here[k] for k in channels) > 0

    def move(pos, cell, channel):
        grid[pos[0]][pos[1]][channel] = 0.0
        grid[cell[0]][cell[1]][channel] = 1.0
        return [cell[0], cell[1]]

    for a in rng.permutation(len(world.agents)).tolist():
        if not world.active[a]:
            continue
        if rng.rand() < rules.mountain_slope and actions[a] == AGENT_UPHILL:
            continue
        cell = landing(world.agents[a], actions[a])
        if occupied(cell, rules.agent_blockers):  # staying (or a wall) lands on the agent itself
            terms.append(rules.collision_reward)
        else:
            world.agents[a] = move(world.agents[a], cell, 0)

    for p in rng.permutation(len(world.prey)).tolist():
        if not world.alive[p]:
            continue
        pos, kind = world.prey[p], world.kind[p]
        cells = [landing(pos, u) for u in range(4)]
        free = [u for u in range(4) if not occupied(cells[u], PREY_BLOCKERS)]
        next_to_agent = any(occupied(cell, AGENTS) for cell in cells)
        if rules.catch is not None:
            # a catcher stands on one of the prey's four neighbouring cells, not kept inside the world
            around = {(pos[0] + dr, pos[1] + dc) for dr, dc in moves[:4]}
            catchers = sum(1 for a, at in enumerate(world.agents)
                           if actions[a] == rules.catch and world.active[a] and (at[0], at[1]) in around)
            captured = catchers >= rules.catchers_needed[kind - 1]
            if catchers and not captured:
                terms.append(rules.miscapture_punishment)
        else:
            captured = len(free) <= rules.free_cells_to_capture[kind - 1]
        if rules.prevent_cannibalism:
            captured = captured and next_to_agent
        if captured:
            world.alive[p] = False
            grid[pos[0]][pos[1]][kind] = 0.0
            terminated = terminated or rules.capture_terminal
            terms.append(rules.capture_rewards[kind - 1])
            if rules.capture_freezes:
                for a, at in enumerate(world.agents):
                    if (world.active[a] and (rules.catch is None or actions[a] == rules.catch)
                            and (pos[0] - at[0], pos[1] - at[1]) in reach):
                        world.active[a] = False
                        if rules.remove_frozen:
                            grid[at[0]][at[1]][0] = 0.0
            continue
        no_agent_here = grid[pos[0]][pos[1]][0] == 0
        if (no_agent_here and rng.rand() < rules.rest_probability[kind - 1]) or not free:
            continue
        u = free[rng.randint(len(free))]
        if rng.rand() < rules.mountain_slope and no_agent_here and u == PREY_UPHILL[kind - 1]:
            continue
        world.prey[p] = move(pos, cells[u], kind)  # free: nothing has moved since it was checked
    return terms, terminated or not any(world.alive) or not any(world.active)
