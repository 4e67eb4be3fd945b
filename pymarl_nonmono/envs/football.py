"""Google Research Football (GRF) academy scenarios on PyMARL's MultiAgentEnv protocol.

``make_football_env(**env_args)`` is the factory a host registers (PyMARL2: env name
``grf``). Each agent controls one left-team player through gfootball's default 19-action
set and observes gfootball's ``simple115v2`` vector. The global state, the stats reported
at episode end and the seeding are documented in docs/football.md.

gfootball is imported only when an environment is built, so this module (and the
validation of scenario names and agent counts) works without it. We drive gfootball's
core environment and config objects directly instead of going through
``gfootball.env.create_environment``: its output wrappers are ``gym`` wrappers whose
reset/step contract changed in gym 0.26, and its seeding through ``env.seed`` never
reaches the game engine (see docs/football.md, "Seeding").
"""

from __future__ import annotations

import importlib
import logging
import math
import multiprocessing
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import ConfigError, check_choice, check_known_keys

log = logging.getLogger(__name__)

GFOOTBALL_VERSION = "2.10.2"
INSTALL_HINT = (
    "install the Debian packages git cmake build-essential libgl1-mesa-dev libsdl2-dev "
    "libsdl2-image-dev libsdl2-ttf-dev libsdl2-gfx-dev libboost-all-dev libdirectfb-dev, then run "
    '`pip install psutil wheel "setuptools<81" six && '
    f"pip install --no-build-isolation gfootball=={GFOOTBALL_VERSION} && pip install gym==0.25.2` "
    "(with your environment's bin/ first on PATH: the engine build calls plain `python3`; "
    "4-6 minutes on 2 cores). See docs/football.md"
)


@dataclass(frozen=True)
class AcademyScenario:
    left_players: int  # our team, keeper included: the most agents the scenario can have
    right_players: int
    game_duration: int  # steps after which gfootball itself ends the episode


# Read from gfootball 2.10.2's gfootball/scenarios/academy_*.py; tests compare this table
# with the installed package. Kept here so validation does not need gfootball.
ACADEMY_SCENARIOS: dict[str, AcademyScenario] = {
    "academy_empty_goal_close": AcademyScenario(2, 1, 400),
    "academy_empty_goal": AcademyScenario(2, 1, 400),
    "academy_run_to_score": AcademyScenario(2, 6, 400),
    "academy_run_to_score_with_keeper": AcademyScenario(2, 6, 400),
    "academy_pass_and_shoot_with_keeper": AcademyScenario(3, 2, 400),
    "academy_run_pass_and_shoot_with_keeper": AcademyScenario(3, 2, 400),
    "academy_3_vs_1_with_keeper": AcademyScenario(4, 2, 400),
    "academy_corner": AcademyScenario(11, 11, 400),
    "academy_counterattack_easy": AcademyScenario(11, 11, 400),
    "academy_counterattack_hard": AcademyScenario(11, 11, 400),
    "academy_single_goal_versus_lazy": AcademyScenario(11, 11, 3000),
}

N_ACTIONS = 19  # gfootball's "default" action set
OBS_SIZE = 115  # simple115v2
MAX_PLAYERS = 11  # simple115v2 always reserves 11 slots per team
# simple115v2 layout (gfootball 2.10.2, Simple115StateWrapper.convert_observation):
# [0:22) left positions, [22:44) left directions, [44:66) right positions,
# [66:88) right directions, [88:91) ball position, [91:94) ball direction,
# [94:97) ball owner one-hot (none, left, right), [97:108) active player one-hot,
# [108:115) game mode one-hot. Only the active-player one-hot differs between agents.
ACTIVE_SLICE = slice(97, 108)
TEAM_INDEX = np.r_[0:ACTIVE_SLICE.start, ACTIVE_SLICE.stop:OBS_SIZE]
TEAM_FEATURES = len(TEAM_INDEX)  # 104

STATE_REPRESENTATIONS = ("global", "concat_obs")
REWARD_AGGREGATIONS = ("sum", "mean")
REWARD_COMPONENTS = ("scoring", "checkpoints")



def _scenario_list() -> str:
    return ", ".join(f"{name} (1-{s.left_players} agents)" for name, s in ACADEMY_SCENARIOS.items())


def validate_football_args(scenario: Any, num_agents: Any, time_limit: Any) -> AcademyScenario:
    """Check the scenario name, agent count and time limit; needs no gfootball."""
    if scenario not in ACADEMY_SCENARIOS:
        raise ConfigError(f"unknown GRF scenario {scenario!r}; valid academy scenarios: {_scenario_list()}")
    spec = ACADEMY_SCENARIOS[scenario]
    if num_agents is None:
        raise ConfigError(f"num_agents is required: 1-{spec.left_players} for {scenario}")
    if isinstance(num_agents, bool) or not isinstance(num_agents, int) or not 1 <= num_agents <= spec.left_players:
        raise ConfigError(
            f"num_agents={num_agents!r} is not possible in {scenario}: its left team has "
            f"{spec.left_players} players (keeper included), so num_agents must be 1-{spec.left_players}. "
            f"Valid: {_scenario_list()}"
        )
    if isinstance(time_limit, bool) or not isinstance(time_limit, int) or not 1 <= time_limit < spec.game_duration:
        # At game_duration gfootball ends the episode itself, which we could not tell apart
        # from a real termination (goal, ball out, possession lost).
        raise ConfigError(
            f"time_limit={time_limit!r} must be an integer in [1, {spec.game_duration - 1}] for {scenario} "
            f"(gfootball ends it after {spec.game_duration} steps)"
        )
    return spec


def _parse_rewards(rewards: Any) -> tuple[str, ...]:
    parts = tuple(p.strip() for p in str(rewards).split(",") if p.strip())
    for part in parts:
        check_choice("rewards component", part, REWARD_COMPONENTS)
    if "scoring" not in parts or len(set(parts)) != len(parts):
        raise ConfigError(f"rewards={rewards!r} must be 'scoring' or 'scoring,checkpoints'")
    return parts


@dataclass(frozen=True)
class FootballSettings:
    """Validated env_args of the GRF env (docs/football.md, "env_args")."""

    scenario: str
    num_agents: int
    time_limit: int = 150
    rewards: tuple[str, ...] = ("scoring", "checkpoints")
    reward_aggregation: str = "sum"
    state_representation: str = "global"
    seed: int | None = None


# PyMARL's main.py needs env_args.map_name (it names the results folder); "scenario" is
# gfootball's word for the same thing. Either may be given.
ENV_ARGS = {
    "scenario", "map_name", "num_agents", "time_limit", "rewards", "reward_aggregation",
    "state_representation", "seed",
}


def football_settings(env_args: Mapping[str, Any]) -> FootballSettings:
    """Validate GRF env_args without gfootball; a ConfigError (ValueError) names the key at fault."""
    check_known_keys("GRF env_args", env_args, ENV_ARGS)
    scenario, map_name = env_args.get("scenario"), env_args.get("map_name")
    if scenario is not None and map_name is not None and scenario != map_name:
        raise ConfigError(f"scenario={scenario!r} and map_name={map_name!r} disagree; give one of them")
    scenario = scenario if scenario is not None else map_name
    num_agents = env_args.get("num_agents")
    time_limit = env_args.get("time_limit", FootballSettings.time_limit)
    validate_football_args(scenario, num_agents, time_limit)
    seed = env_args.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
        raise ConfigError(f"seed={seed!r} must be a non-negative integer or None")
    return FootballSettings(
        scenario=scenario,
        num_agents=num_agents,
        time_limit=time_limit,
        rewards=_parse_rewards(env_args.get("rewards", ",".join(FootballSettings.rewards))),
        reward_aggregation=check_choice(
            "reward_aggregation", env_args.get("reward_aggregation", FootballSettings.reward_aggregation),
            REWARD_AGGREGATIONS,
        ),
        state_representation=check_choice(
            "state_representation", env_args.get("state_representation", FootballSettings.state_representation),
            STATE_REPRESENTATIONS,
        ),
        seed=None if seed is None else int(seed),
    )


def _import_gfootball() -> dict[str, Any]:
    try:
        return {
            "config": importlib.import_module("gfootball.env.config"),
            "football_env": importlib.import_module("gfootball.env.football_env"),
            "wrappers": importlib.import_module("gfootball.env.wrappers"),
            "action_set": importlib.import_module("gfootball.env.football_action_set"),
        }
    except ImportError as exc:
        raise ImportError(
            f"Google Research Football (gfootball) is not usable here ({type(exc).__name__}: {exc}). "
            f"To install it: {INSTALL_HINT}"
        ) from exc


def football_problems() -> list[str]:
    """What is missing for GRF runs, each with its fix; empty when the env can be built."""
    try:
        modules = _import_gfootball()
    except ImportError as exc:
        return [str(exc)]
    except Exception as exc:  # a broken engine build can fail with anything at import
        return [f"gfootball fails at import ({type(exc).__name__}: {exc}). Reinstall: {INSTALL_HINT}"]
    needed = [
        ("config", "Config"), ("football_env", "FootballEnv"), ("wrappers", "Simple115StateWrapper"),
        ("action_set", "get_action_set"),
    ]
    missing = [f"gfootball.env.{mod}.{attr}" for mod, attr in needed if not hasattr(modules[mod], attr)]
    if missing:
        return [
            f"the installed gfootball lacks {', '.join(missing)} (this env is written against "
            f"gfootball {GFOOTBALL_VERSION}). Fix: {INSTALL_HINT}"
        ]
    return []


def _process_identity() -> tuple[int, ...]:
    """() in the main process, (k,) in the k-th child process it started, and so on."""
    return tuple(getattr(multiprocessing.current_process(), "_identity", ()))


class _CheckpointReward:
    """gfootball's dense "checkpoints" reward, kept per agent.

    Same rule as gfootball 2.10.2's CheckpointRewardWrapper (reimplemented so that no gym
    wrapper is involved; a test compares both): the field from distance 0.99 to 0.2 of the
    opponent goal holds 10 checkpoints of 0.1. An agent collects those it reaches while the
    player it controls has the ball; scoring pays all it has not collected yet.
    """

    COUNT = 10
    VALUE = 0.1

    def __init__(self, n_agents: int) -> None:
        self.collected = np.zeros(n_agents, dtype=np.int64)

    def reset(self) -> None:
        self.collected[:] = 0

    @classmethod
    def threshold(cls, collected: int) -> float:
        return 0.99 - 0.8 / (cls.COUNT - 1) * collected

    def __call__(self, raw_obs: Sequence[Mapping[str, Any]], scoring: np.ndarray) -> np.ndarray:
        bonus = np.zeros(len(raw_obs))
        for i, o in enumerate(raw_obs):
            if scoring[i] == 1:
                bonus[i] = self.VALUE * (self.COUNT - self.collected[i])
                self.collected[i] = self.COUNT
                continue
            if o["ball_owned_team"] != 0 or o["ball_owned_player"] != o["active"]:
                continue
            distance = math.hypot(o["ball"][0] - 1.0, o["ball"][1])
            while self.collected[i] < self.COUNT and distance <= self.threshold(int(self.collected[i])):
                bonus[i] += self.VALUE
                self.collected[i] += 1
        return bonus


class FootballAcademyEnv:
    """One GRF academy scenario; agents control left-team players (gfootball picks which).

    gfootball switches the player an agent controls during play (e.g. to the receiver of a
    pass), as a human player's controller would; the state's identity block says who is who.
    """

    def __init__(self, settings: FootballSettings) -> None:
        self.settings = settings
        self.spec = ACADEMY_SCENARIOS[settings.scenario]
        self.scenario = settings.scenario
        num_agents = settings.num_agents
        self.n_agents = num_agents
        self.episode_limit = settings.time_limit
        self.rewards = settings.rewards
        self.reward_aggregation = settings.reward_aggregation
        self.state_representation = settings.state_representation
        scenario, seed = settings.scenario, settings.seed

        gf = _import_gfootball()
        self._convert = gf["wrappers"].Simple115StateWrapper.convert_observation
        self._seed = None
        self.seed(seed)
        self.episode_seed = self._draw_seed()
        self._config = gf["config"].Config({
            "level": scenario,
            "players": [f"agent:left_players={num_agents},right_players=0"],
            "action_set": "default",
            "dump_full_episodes": False,
            "dump_scores": False,
            "write_video": False,
            "real_time": False,
            "game_engine_random_seed": self.episode_seed,
            "reverse_team_processing": bool(self.episode_seed % 2),
        })
        n_actions = len(gf["action_set"].get_action_set(self._config))
        if n_actions != N_ACTIONS:
            raise RuntimeError(f"gfootball's default action set has {n_actions} actions, expected {N_ACTIONS}")
        self._core = gf["football_env"].FootballEnv(self._config)
        self._checkpoints = _CheckpointReward(num_agents) if "checkpoints" in self.rewards else None
        self._obs = np.zeros((num_agents, OBS_SIZE), dtype=np.float32)
        self._raw: list = []
        self._t = 0
        self._score_sum = 0
        self._done = True
        self.episode_count = 0
        log.debug("GRF %s with %d agents, state=%s", scenario, num_agents, self.state_representation)

    # --- seeding -------------------------------------------------------------------

    def _draw_seed(self) -> int:
        # Same range gfootball draws from when no seed is configured.
        return int(self._rng.integers(0, 2_000_000_000, endpoint=True))

    def seed(self, seed: int | None = None) -> int | None:
        """With a seed, restart the per-episode engine seeds from it (from the next reset).

        Returns the seed in use (``None``: drawn from the operating system's entropy).
        """
        if seed is not None:
            self._seed = int(seed)
            # PyMARL2's parallel runner gives every worker the same env_args.seed; mixing in
            # the worker's multiprocessing identity (its creation order, so the same in a
            # rerun) keeps the workers from playing identical episodes.
            self._rng = np.random.default_rng(np.random.SeedSequence([self._seed, *_process_identity()]))
        elif not hasattr(self, "_rng"):
            self._rng = np.random.default_rng()
        return self._seed

    # --- episode -------------------------------------------------------------------

    def reset(self):
        # gfootball reads these at every reset, so each episode gets its own engine seed;
        # a fixed seed would replay the same episode for the same actions.
        self.episode_seed = self._draw_seed()
        self._config["game_engine_random_seed"] = self.episode_seed
        self._config["reverse_team_processing"] = bool(self.episode_seed % 2)
        self._set_observation(self._core.reset())
        if self._checkpoints is not None:
            self._checkpoints.reset()
        self._t = 0
        self._score_sum = 0
        self._done = False
        self.episode_count += 1
        return self.get_obs(), self.get_state()

    def step(self, actions):
        """Returns reward, terminated, info (stats in info only at the end of an episode)."""
        if self._done:
            raise RuntimeError("step() after the episode ended; call reset() first")
        raw, rewards, game_over, info = self._core.step(self._action_list(actions))
        self._t += 1
        self._set_observation(raw)
        scoring = np.asarray(rewards, dtype=np.float64).reshape(self.n_agents)
        per_agent = scoring if self._checkpoints is None else scoring + self._checkpoints(raw, scoring)
        reward = float(per_agent.sum() if self.reward_aggregation == "sum" else per_agent.mean())
        self._score_sum += int(info.get("score_reward", 0))

        truncated = not game_over and self._t >= self.episode_limit
        self._done = bool(game_over) or truncated
        if not self._done:
            return reward, False, {}
        ours, theirs = (int(g) for g in raw[0]["score"])
        stats = {
            "win": int(ours > theirs),
            "goal_diff": ours - theirs,
            "score_reward": self._score_sum,
            "episode_limit": truncated,
        }
        return reward, True, stats

    def _action_list(self, actions) -> list[int]:
        if hasattr(actions, "detach"):  # a torch tensor, as PyMARL's episode runner passes
            actions = actions.detach().cpu().numpy()
        flat = np.asarray(actions).reshape(-1)
        if flat.shape[0] != self.n_agents:
            raise ValueError(f"expected {self.n_agents} actions, got {flat.shape[0]}")
        out = [int(a) for a in flat]
        if any(not 0 <= a < N_ACTIONS for a in out):
            raise ValueError(f"actions must be in [0, {N_ACTIONS}), got {out}")
        return out

    def _set_observation(self, raw) -> None:
        self._raw = raw
        self._obs = self._convert(raw, True)

    # --- observations and state ------------------------------------------------------

    def get_obs(self):
        return self._obs.copy()

    def get_obs_agent(self, agent_id: int):
        return self._obs[agent_id].copy()

    def get_obs_size(self) -> int:
        return OBS_SIZE

    def get_state(self):
        if self.state_representation == "concat_obs":
            return self._obs.reshape(-1).copy()
        team = self._obs[0, TEAM_INDEX]
        identities = self._obs[:, ACTIVE_SLICE].reshape(-1)
        return np.concatenate([team, identities]).astype(np.float32)

    def get_state_size(self) -> int:
        if self.state_representation == "concat_obs":
            return OBS_SIZE * self.n_agents
        return TEAM_FEATURES + MAX_PLAYERS * self.n_agents

    def controlled_players(self) -> list[int]:
        """Left-team index of the player each agent controls now."""
        return [int(o["active"]) for o in self._raw]

    # --- actions -------------------------------------------------------------------

    def get_avail_actions(self):
        return [[1] * N_ACTIONS for _ in range(self.n_agents)]

    def get_avail_agent_actions(self, agent_id: int):
        return [1] * N_ACTIONS

    def get_total_actions(self) -> int:
        return N_ACTIONS

    # --- protocol odds and ends -----------------------------------------------------

    def get_env_info(self) -> dict:
        return {
            "state_shape": self.get_state_size(),
            "obs_shape": self.get_obs_size(),
            "n_actions": self.get_total_actions(),
            "n_agents": self.n_agents,
            "episode_limit": self.episode_limit,
        }

    def get_stats(self) -> dict:
        return {}

    def render(self) -> None:
        # gfootball renders only with its rendering engine switched on at creation.
        log.debug("render() is not supported by the GRF env; ignored")

    def save_replay(self) -> None:
        log.warning("save_replay() is not supported by the GRF env; nothing saved")

    def close(self) -> None:
        core, self._core = getattr(self, "_core", None), None
        if core is not None:
            core.close()


def make_football_env(**env_args) -> FootballAcademyEnv:
    """Factory registered with the host (PyMARL2 env name ``grf``); see docs/football.md."""
    return FootballAcademyEnv(football_settings(env_args))
