"""The one-pass predator-prey observations and available actions against loop references that
draw each entity onto a padded world, one agent at a time (the env's own method, in outline)."""

from __future__ import annotations

import numpy as np
import pytest

from pymarl_nonmono.envs.stag_hunt import WALL, available_actions, local_views

MOVES = np.array([[0, 1], [1, 0], [0, -1], [-1, 0], [0, 0], [0, 0]])  # right, down, left, up, stay, catch


def views_by_loop(observers, targets, shape, radius, n_feats, walls):
    r0, r1 = radius
    out = []
    for me in observers:
        padded = np.zeros((shape[0] + 2 * r0, shape[1] + 2 * r1, n_feats), dtype=np.float32)
        if walls:
            padded[:, :, 0] = WALL
            padded[r0:r0 + shape[0], r1:r1 + shape[1], 0] = 0
        for positions, shown, channel in targets:
            for pos, on in zip(positions, shown):
                if on and abs(pos[0] - me[0]) <= r0 and abs(pos[1] - me[1]) <= r1:
                    padded[pos[0] + r0, pos[1] + r1, channel] = 1
        out.append(padded[me[0]:me[0] + 2 * r0 + 1, me[1]:me[1] + 2 * r1 + 1].reshape(-1))
    return np.array(out)


def avail_by_loop(positions, active, prey_at, moves, stay, catch):
    shape = prey_at.shape
    rows = []
    for pos, on in zip(positions, active):
        if not on:
            row = [0] * len(moves)
            row[stay] = 1
            rows.append(row)
            continue
        row = [int(0 <= pos[0] + m[0] < shape[0] and 0 <= pos[1] + m[1] < shape[1]) for m in moves]
        if catch is not None:
            row[catch] = 0
            for m in moves[:4]:
                r, c = min(max(pos[0] + m[0], 0), shape[0] - 1), min(max(pos[1] + m[1], 0), shape[1] - 1)
                if prey_at[r, c]:
                    row[catch] = 1
        rows.append(row)
    return np.array(rows)


def random_world(rng, shape, n_agents, n_prey):
    cells = rng.choice(shape[0] * shape[1], n_agents + n_prey, replace=False)
    pos = np.stack([cells // shape[1], cells % shape[1]], axis=1).astype(np.int16)
    return pos[:n_agents], pos[n_agents:], rng.random(n_agents) < 0.7, rng.random(n_prey) < 0.7


@pytest.mark.parametrize("walls", [False, True])
@pytest.mark.parametrize("shape,radius", [((10, 10), (2, 2)), ((5, 7), (1, 3)), ((3, 3), (0, 0))])
def test_views_equal_the_loop_reference_on_random_worlds(walls, shape, radius):
    rng = np.random.default_rng(0)
    for _ in range(200):
        agents, prey, active, alive = random_world(rng, shape, 4, 4)
        targets = [(agents, active, 0), (prey[:3], alive[:3], 1), (prey[3:], alive[3:], 2)]
        fast = local_views(agents, targets, shape, radius, 3, walls)
        assert fast.dtype == np.float32
        np.testing.assert_array_equal(fast, views_by_loop(agents, targets, shape, radius, 3, walls))


@pytest.mark.parametrize("catch", [5, None])
def test_available_actions_equal_the_loop_reference_on_random_worlds(catch):
    rng = np.random.default_rng(1)
    moves = MOVES if catch is not None else MOVES[:5]
    for _ in range(300):
        agents, prey, active, alive = random_world(rng, (6, 6), 5, 5)
        prey_at = np.zeros((6, 6), dtype=bool)
        prey_at[prey[alive, 0], prey[alive, 1]] = True
        np.testing.assert_array_equal(available_actions(agents, active, prey_at, moves, 4, catch),
                                      avail_by_loop(agents, active, prey_at, moves, 4, catch))


def test_catch_is_available_next_to_prey_only_and_a_frozen_agent_may_only_stay():
    prey_at = np.zeros((4, 4), dtype=bool)
    prey_at[0, 1] = True
    avail = available_actions(np.array([[0, 0], [3, 3], [1, 1]]), np.array([True, True, False]), prey_at, MOVES, 4, 5)
    assert avail.tolist() == [[1, 1, 0, 0, 1, 1],   # corner: no left or up; prey to its right
                              [0, 0, 1, 1, 1, 0],   # far corner, no prey near
                              [0, 0, 0, 0, 1, 0]]   # frozen


def test_inputs_of_the_wrong_shape_are_refused():
    with pytest.raises(ValueError, match=r"observers must be \[N, 2\]"):
        local_views(np.zeros(3, dtype=int), [], (4, 4), (1, 1), 3, False)
    with pytest.raises(ValueError, match="channel 1"):
        local_views(np.zeros((2, 2), dtype=int), [(np.zeros((3, 2), dtype=int), np.ones(2, bool), 1)], (4, 4), (1, 1), 3,
                    False)
