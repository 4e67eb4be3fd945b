"""A tiny, deterministic stand-in with the interface of SMAClite's Gymnasium env.

Only what pymarl_nonmono.envs.smaclite uses of ``smaclite.env.SMACliteEnv`` (commit
0d6abbe) is here, with SMAClite's conventions: action 0 no-op (only for the dead), 1 stop,
2-5 move north/south/east/west, 6+j attack enemy j; ``reset(seed=None, options=None)`` ->
(obs tuple, info); ``step(list of int)`` -> (obs, reward, done, truncated=False, info with
``battle_won``), raising ValueError on an unavailable action; ``agents``/``enemies`` dicts of
the living units; the reward scaled by ``max_reward / 20``. It lets the contract tests of
tests/envs/test_smaclite.py run where SMAClite is not installed.

The game: every agent starts ``START_DISTANCE`` from the enemy line and can attack once it is
within range 1 (moving east closes in, west backs off). Attacks hit with probability
``HIT_P`` (drawn from the env's seeded generator, so the seed decides the trajectory); every
enemy in range of an agent hits it back with probability ``ENEMY_HIT_P``.
"""

from __future__ import annotations

import numpy as np

# name -> (agents, enemies), as the SMAC maps of that name
MAPS = {"3s_vs_5z": (3, 5), "corridor": (6, 24), "3s5z_vs_3s6z": (8, 9)}
AGENT_HP = 4
ENEMY_HP = 2
START_DISTANCE = 2
HIT_P = 0.9
ENEMY_HIT_P = 0.1
REWARD_WIN = 200
REWARD_KILL = 10
EAST, WEST = 4, 5


class _Unit:
    def __init__(self, hp: int, distance: int = 0) -> None:
        self.hp = hp
        self.distance = distance


class StandinSMAClite:
    def __init__(self, map_name: str, seed: int | None, use_cpp_rvo2: bool) -> None:
        self.map_name = map_name
        self.use_cpp_rvo2 = use_cpp_rvo2
        self.n_agents, self.n_enemies = MAPS[map_name]
        self.n_actions = 6 + self.n_enemies
        self.obs_size = 2 + 3 * self.n_enemies
        self.state_size = 2 * self.n_agents + self.n_enemies + self.n_agents * self.n_actions
        self._rng = np.random.default_rng(seed)
        self.agents: dict[int, _Unit] = {}
        self.enemies: dict[int, _Unit] = {}
        self.last_actions = np.zeros(self.n_agents * self.n_actions)
        self.max_reward = self.n_enemies * REWARD_KILL + REWARD_WIN + self.n_enemies * ENEMY_HP
        self.closed = False

    def reset(self, seed=None, options=None):
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self.agents = {i: _Unit(AGENT_HP, START_DISTANCE) for i in range(self.n_agents)}
        self.enemies = {j: _Unit(ENEMY_HP) for j in range(self.n_enemies)}
        self.last_actions = np.zeros(self.n_agents * self.n_actions)
        return self.get_obs(), {"battle_won": False}

    def _agent_avail(self, i: int) -> np.ndarray:
        avail = np.zeros(self.n_actions)
        if i not in self.agents:
            avail[0] = 1
            return avail
        unit = self.agents[i]
        avail[1:4] = 1  # stop, north, south
        avail[EAST] = unit.distance > 0
        avail[WEST] = unit.distance < START_DISTANCE
        if unit.distance <= 1:
            for j in self.enemies:
                avail[6 + j] = 1
        return avail

    def get_avail_actions(self):
        return [self._agent_avail(i) for i in range(self.n_agents)]

    def step(self, actions):
        assert len(actions) == self.n_agents
        assert all(type(a) == int for a in actions)
        self.last_actions = np.eye(self.n_actions)[np.array(actions)].flatten()
        avail = self.get_avail_actions()
        for i, a in enumerate(actions):
            if not avail[i][a]:
                raise ValueError(f"Invalid action for agent {i}: {a}")
        reward = 0.0
        for i, a in enumerate(actions):
            unit = self.agents.get(i)
            if unit is None:
                continue
            if a == EAST:
                unit.distance -= 1
            elif a == WEST:
                unit.distance += 1
            elif a >= 6 and (a - 6) in self.enemies and self._rng.random() < HIT_P:
                enemy = self.enemies[a - 6]
                enemy.hp -= 1
                reward += 1
                if enemy.hp == 0:
                    reward += REWARD_KILL
                    del self.enemies[a - 6]
        for i, unit in list(self.agents.items()):
            if unit.distance <= 1:
                hits = int((self._rng.random(len(self.enemies)) < ENEMY_HIT_P).sum())
                unit.hp = max(0, unit.hp - hits)
                if unit.hp == 0:
                    del self.agents[i]
        won = not self.enemies
        if won:
            reward += REWARD_WIN
        done = won or not self.agents
        return self.get_obs(), reward / (self.max_reward / 20), done, False, {"battle_won": won}

    def get_obs(self):
        obs = []
        for i in range(self.n_agents):
            o = np.zeros(self.obs_size, dtype=np.float32)
            unit = self.agents.get(i)
            if unit is not None:
                o[0] = unit.distance / START_DISTANCE
                o[1] = unit.hp / AGENT_HP
                for j, enemy in self.enemies.items():
                    o[2 + 3 * j: 5 + 3 * j] = (1, enemy.hp / ENEMY_HP, unit.distance <= 1)
            obs.append(o)
        return tuple(obs)

    def get_state(self):
        state = np.zeros(self.state_size, dtype=np.float32)
        for i, unit in self.agents.items():
            state[i] = unit.hp / AGENT_HP
            state[self.n_agents + i] = unit.distance / START_DISTANCE
        for j, enemy in self.enemies.items():
            state[2 * self.n_agents + j] = enemy.hp / ENEMY_HP
        state[2 * self.n_agents + self.n_enemies:] = self.last_actions
        return state

    def render(self):
        return None

    def close(self):
        self.closed = True


def make_standin(map_name: str, seed: int | None, use_cpp_rvo2: bool) -> StandinSMAClite:
    """A backend for pymarl_nonmono.envs.smaclite.SMACliteEnv."""
    return StandinSMAClite(map_name, seed, use_cpp_rvo2)
