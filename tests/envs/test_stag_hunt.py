"""The one-pass predator-prey observations and available actions against loop references that
draw each entity onto a padded world, one agent at a time (the env's own method, in outline); the
step on hand-made worlds whose outcome is known, with a scripted random generator."""

from __future__ import annotations

import numpy as np
import pytest

from pymarl_nonmono.envs.stag_hunt import WALL, HuntRules, HuntWorld, available_actions, hunt_step, local_views

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


RIGHT, DOWN, LEFT, UP, STAY, CATCH = range(6)


def study_rules(**changes):
    """The predator-prey study's rules (PyMARL2's stag_hunt.yaml at punishment -1)."""
    rules = dict(shape=(5, 5), moves=tuple(map(tuple, MOVES.tolist())), n_actions=6, agent_blockers=(0, 1, 2),
                 catch=CATCH, catchers_needed=(2, 1), free_cells_to_capture=(0, 1), capture_rewards=(10, 1),
                 miscapture_punishment=-1.0, collision_reward=0, prevent_cannibalism=True, capture_freezes=True,
                 remove_frozen=True, capture_terminal=False, mountain_slope=0.0, rest_probability=(0.0, 0.0))
    rules.update(changes)
    return HuntRules(**rules)


def world(shape, agents, prey, kinds=None):
    grid = [[[0.0, 0.0, 0.0] for _ in range(shape[1])] for _ in range(shape[0])]
    kinds = kinds or [1] * len(prey)
    for r, c in agents:
        grid[r][c][0] = 1.0
    for (r, c), k in zip(prey, kinds):
        grid[r][c][k] = 1.0
    return HuntWorld(grid=grid, agents=[list(a) for a in agents], active=[True] * len(agents),
                     prey=[list(p) for p in prey], alive=[True] * len(prey), kind=list(kinds))


class Script:
    """A generator that plays back given draws and records every call (name, argument)."""

    def __init__(self, permutations=(), uniforms=(), integers=()):
        self.queues = {"permutation": list(permutations), "rand": list(uniforms), "randint": list(integers)}
        self.calls = []

    def permutation(self, n):
        self.calls.append(("permutation", n))
        order = self.queues["permutation"].pop(0) if self.queues["permutation"] else list(range(n))
        return np.array(order)

    def rand(self):
        self.calls.append(("rand", None))
        return self.queues["rand"].pop(0) if self.queues["rand"] else 0.5

    def randint(self, n):
        self.calls.append(("randint", n))
        return self.queues["randint"].pop(0) if self.queues["randint"] else 0


def test_two_agents_catching_together_capture_the_stag_and_freeze_off_the_grid():
    w = world((5, 5), agents=[(1, 2), (2, 1), (4, 4)], prey=[(2, 2), (0, 0)])
    rng = Script()
    terms, done = hunt_step(w, [CATCH, CATCH, STAY], study_rules(), rng)
    assert w.alive == [False, True] and w.grid[2][2][1] == 0.0
    assert w.active == [False, False, True] and w.grid[1][2][0] == 0.0 and w.grid[2][1][0] == 0.0
    # every agent's move lands on itself (catch and stay do not move): 3 collisions worth 0, then the capture
    assert terms == [0, 0, 0, 10] and not done
    # one rand per active agent; the captured stag draws nothing, the other rests or moves (rand, randint, rand)
    assert rng.calls == [("permutation", 3), ("rand", None), ("rand", None), ("rand", None), ("permutation", 2),
                         ("rand", None), ("randint", 2), ("rand", None)]


def test_a_lone_catch_is_punished_and_the_stag_moves_to_a_free_cell():
    w = world((5, 5), agents=[(1, 2), (3, 3)], prey=[(2, 2)])
    terms, done = hunt_step(w, [CATCH, LEFT], study_rules(), Script(integers=[1]))
    assert w.agents[1] == [3, 2] and w.grid[3][3][0] == 0.0 and w.grid[3][2][0] == 1.0
    assert terms == [0, -1.0] and w.alive == [True] and w.active == [True, True]
    # free cells of the stag at (2, 2): right (2, 3), down is now the agent at (3, 2), left (2, 1), up is the
    # catcher: [RIGHT, LEFT], and the scripted draw 1 picks LEFT
    assert w.prey == [[2, 1]] and w.grid[2][2][1] == 0.0 and w.grid[2][1][1] == 1.0


def test_walls_and_other_agents_block_moves_and_count_as_collisions():
    w = world((3, 3), agents=[(0, 0), (0, 1)], prey=[(2, 2)])
    terms, _ = hunt_step(w, [UP, LEFT], study_rules(shape=(3, 3), collision_reward=-0.5), Script())
    assert w.agents == [[0, 0], [0, 1]] and terms == [-0.5, -0.5]


def test_uphill_moves_fail_with_the_mountain_slope_and_resting_prey_stay():
    w = world((5, 5), agents=[(2, 2)], prey=[(4, 4)])
    rng = Script(uniforms=[0.1, 0.2])
    terms, _ = hunt_step(w, [UP], study_rules(mountain_slope=0.5, rest_probability=(0.3, 0.0)), rng)
    assert w.agents == [[2, 2]] and terms == [] and w.prey == [[4, 4]]  # 0.1 < 0.5: no climb; 0.2 < 0.3: rest
    assert [name for name, _ in rng.calls] == ["permutation", "rand", "permutation", "rand"]


def test_without_a_catch_action_a_surrounded_prey_is_captured():
    w = world((3, 3), agents=[(0, 1), (1, 0), (1, 2), (2, 1)], prey=[(1, 1)])
    rules = study_rules(shape=(3, 3), catch=None, free_cells_to_capture=(0, 1))
    terms, done = hunt_step(w, [STAY] * 4, rules, Script())
    assert w.alive == [False] and terms[-1] == 10 and done  # all prey captured ends the episode
    assert w.active == [False] * 4  # every neighbour freezes (no catch action needed)


def test_cannibalism_prevention_needs_an_agent_next_to_the_prey():
    w = world((3, 3), agents=[(2, 2)], prey=[(0, 0), (0, 1), (1, 0)])  # the corner prey is boxed in by prey
    rules = study_rules(shape=(3, 3), catch=None, free_cells_to_capture=(0, 0))
    hunt_step(w, [STAY], rules, Script(permutations=[[0], [0, 1, 2]]))
    assert w.alive[0]
    w = world((3, 3), agents=[(2, 2)], prey=[(0, 0), (0, 1), (1, 0)])
    hunt_step(w, [STAY], study_rules(shape=(3, 3), catch=None, free_cells_to_capture=(0, 0),
                                     prevent_cannibalism=False), Script(permutations=[[0], [0, 1, 2]]))
    assert not w.alive[0]


def test_a_step_needs_one_action_per_agent():
    w = world((5, 5), agents=[(1, 2), (3, 3)], prey=[(2, 2)])
    with pytest.raises(ValueError, match="1 actions for 2 agents"):
        hunt_step(w, [STAY], study_rules(), Script())


def test_a_prey_under_an_agent_neither_rests_nor_feels_the_slope():
    # agents blocked by agents only can stand on prey; the env then skips the prey's rest draw and
    # its slope check (its `grid[..., 0] == 0` conditions)
    w = world((5, 5), agents=[(2, 2)], prey=[(2, 2)])
    rules = study_rules(agent_blockers=(0,), mountain_slope=0.99, rest_probability=(1.0, 1.0))
    rng = Script(uniforms=[0.5, 0.0], integers=[1])  # free: [RIGHT, DOWN, LEFT, UP]; 1 is DOWN, the stag's uphill
    hunt_step(w, [STAY], rules, rng)
    assert w.prey == [[3, 2]] and [name for name, _ in rng.calls] == ["permutation", "rand", "permutation",
                                                                      "randint", "rand"]
