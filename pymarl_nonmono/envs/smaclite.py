"""SMAClite (SMAC re-implemented in Python, no StarCraft II) on PyMARL's MultiAgentEnv protocol.

``make_smaclite_env(**env_args)`` is the factory a host registers (PyMARL2: env name
``smaclite``). It wraps SMAClite's Gymnasium env (github uoe-agents/smaclite) and adds what
SMAClite leaves out of SMAC's contract: SMAC's per-map episode limit, reached as SMAC's env
reaches it (``terminated``, and ``info["episode_limit"]`` only with ``continuing_episode``),
SMAC's end-of-episode counters (``dead_allies``, ``dead_enemies``) and ``get_stats``.
Observations, state, available actions, ``battle_won`` and the reward (SMAC's, scaled to
0-20) are SMAClite's, passed through. docs/smaclite.md has the details and the differences
from SMAC.

SMAClite is imported only when an environment is built, so this module (and the validation
of map names and keys) works without it. SMAClite has no licence file: we never ship it.
"""

from __future__ import annotations

import difflib

import importlib
import logging
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from ..errors import ConfigError, check_bool, check_known_keys
from ..quiet import quiet
from .football import _process_identity

log = logging.getLogger(__name__)

SMACLITE_URL = "git+https://github.com/uoe-agents/smaclite"
SMACLITE_COMMIT = "0d6abbe"  # the commit this env and its tests were checked against
INSTALL_HINT = (
    f"`pip install --no-deps {SMACLITE_URL} && pip install gymnasium pygame scikit-learn rtree` "
    "(--no-deps: SMAClite pins Rtree==1.0.0, which has no wheel for Python >= 3.11; "
    "any recent rtree works). See docs/smaclite.md"
)
RVO2_HINT = (
    "use_cpp_rvo2=True needs SMAClite's C++ collision avoidance, the Python module `rvo2` from "
    "https://github.com/micadam/SMAClite-Python-RVO2 (build it as its README says), or set "
    "use_cpp_rvo2=False for the numpy port"
)

# SMAC's episode limits (oxwhirl/smac, smac/env/starcraft2/maps/smac_maps.py, "limit") for
# the maps SMAClite ships, under SMAC's names. Read from SMAC itself when StarCraft's smac is
# importable; kept here so that runs without it use the same limits (a test compares them).
SMAC_EPISODE_LIMITS: dict[str, int] = {
    "10m_vs_11m": 150,
    "27m_vs_30m": 180,
    "2c_vs_64zg": 400,
    "2s3z": 120,
    "2s_vs_1sc": 300,
    "3s5z": 150,
    "3s5z_vs_3s6z": 170,
    "3s_vs_5z": 250,
    "MMM": 150,
    "MMM2": 180,
    "bane_vs_bane": 200,
    "corridor": 400,
}

ENV_ARGS = {"map_name", "continuing_episode", "use_cpp_rvo2", "seed"}


def smac_episode_limits() -> tuple[dict[str, int], str]:
    """SMAC's episode limit of every SMAClite map, and where they were read."""
    try:
        with quiet("importing SMAC's map table", log):
            registry = importlib.import_module("smac.env.starcraft2.maps.smac_maps").map_param_registry
        limits = {name: int(registry[name]["limit"]) for name in SMAC_EPISODE_LIMITS}
    except Exception as exc:  # no smac, PyPI's SMAC3 under the same name, or a table without a map
        log.debug("SMAC's map table not readable (%s: %s); using our copy", type(exc).__name__, exc)
        return dict(SMAC_EPISODE_LIMITS), "pymarl_nonmono's copy of SMAC's table"
    return limits, "smac.env.starcraft2.maps.smac_maps"


@dataclass(frozen=True)
class SMACliteSettings:
    """Validated env_args of the SMAClite env (docs/smaclite.md, "env_args")."""

    map_name: str
    episode_limit: int  # SMAC's, for map_name; not an env_args key
    continuing_episode: bool = False
    use_cpp_rvo2: bool = False
    seed: int | None = None


def smaclite_settings(env_args: Mapping[str, Any]) -> SMACliteSettings:
    """Validate SMAClite env_args without SMAClite; a ConfigError (ValueError) names the key at fault."""
    try:
        check_known_keys("smaclite env_args", env_args, ENV_ARGS)
    except ConfigError as exc:
        raise ConfigError(f"{exc}; allowed: {', '.join(sorted(ENV_ARGS))}") from None
    map_name = env_args.get("map_name")
    if map_name is None:
        raise ConfigError(f"env_args.map_name is required, one of: {', '.join(SMAC_EPISODE_LIMITS)}")
    if map_name not in SMAC_EPISODE_LIMITS:
        hint = difflib.get_close_matches(str(map_name), list(SMAC_EPISODE_LIMITS), n=1)
        raise ConfigError(f"unknown SMAClite env_args.map_name={map_name!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                          + f"; SMAClite's maps: {', '.join(SMAC_EPISODE_LIMITS)}")
    seed = env_args.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
        raise ConfigError(f"seed={seed!r} must be a non-negative integer or None")
    limits, _ = smac_episode_limits()
    return SMACliteSettings(
        map_name=map_name,
        episode_limit=limits[map_name],
        continuing_episode=check_bool("continuing_episode", env_args.get("continuing_episode", False)),
        use_cpp_rvo2=check_bool("use_cpp_rvo2", env_args.get("use_cpp_rvo2", False)),
        seed=None if seed is None else int(seed),
    )


def _import_smaclite() -> Any:
    try:
        env_module = importlib.import_module("smaclite.env")
        maps = importlib.import_module("smaclite.env.maps.map")
    except ImportError as exc:
        raise ImportError(
            f"SMAClite is not usable here ({type(exc).__name__}: {exc}). To install it: {INSTALL_HINT}"
        ) from exc
    return env_module, maps


def smaclite_problems() -> list[str]:
    """What is missing for SMAClite runs, each with its fix; empty when the env can be built."""
    try:
        env_module, maps = _import_smaclite()
    except ImportError as exc:
        return [str(exc)]
    except Exception as exc:  # a broken dependency can fail with anything at import
        return [f"SMAClite fails at import ({type(exc).__name__}: {exc}). Reinstall: {INSTALL_HINT}"]
    if not hasattr(env_module, "SMACliteEnv") or not hasattr(maps, "MapPreset"):
        return [f"the installed smaclite lacks smaclite.env.SMACliteEnv or MapPreset (this env is written "
                f"against uoe-agents/smaclite {SMACLITE_COMMIT}). Fix: {INSTALL_HINT}"]
    shipped = {preset.value.name for preset in maps.MapPreset}
    missing = sorted(set(SMAC_EPISODE_LIMITS) - shipped)
    if missing:
        return [f"the installed smaclite lacks the maps {', '.join(missing)} (this env is written against "
                f"uoe-agents/smaclite {SMACLITE_COMMIT}). Fix: {INSTALL_HINT}"]
    return []


# A backend builds the Gymnasium-style SMAClite env: (map_name, seed, use_cpp_rvo2) -> env.
Backend = Callable[[str, "int | None", bool], Any]


def smaclite_backend(map_name: str, seed: int | None, use_cpp_rvo2: bool) -> Any:
    """The real SMAClite env for ``map_name``."""
    env_module, maps = _import_smaclite()
    if use_cpp_rvo2:
        try:
            importlib.import_module("rvo2")
        except ImportError as exc:
            raise ImportError(f"{RVO2_HINT} ({type(exc).__name__}: {exc})") from exc
    presets = {preset.value.name: preset.value for preset in maps.MapPreset}
    if map_name not in presets:
        raise ConfigError(f"the installed SMAClite has no map {map_name!r}; it has: {', '.join(sorted(presets))}")
    with quiet("creating SMAClite's env", log):
        return env_module.SMACliteEnv(map_info=presets[map_name], seed=seed, use_cpp_rvo2=use_cpp_rvo2)


class SMACliteEnv:
    """One SMAClite map with SMAC's episode limit, stats and PyMARL's method names."""

    def __init__(self, settings: SMACliteSettings, backend: Backend = smaclite_backend) -> None:
        self.settings = settings
        self.map_name = settings.map_name
        self.episode_limit = settings.episode_limit
        self.continuing_episode = settings.continuing_episode
        self._seed = settings.seed
        self._env = backend(settings.map_name, self._backend_seed(settings.seed), settings.use_cpp_rvo2)
        self.n_agents = int(self._env.n_agents)
        self.n_enemies = int(self._env.n_enemies)
        self.n_actions = int(self._env.n_actions)
        self._obs: list[np.ndarray] = [np.zeros(self._env.obs_size, dtype=np.float32) for _ in range(self.n_agents)]
        self._t = 0
        self._done = True
        # SMAC's counters, reported by get_stats()
        self.battles_won = 0
        self.battles_game = 0
        self.timeouts = 0
        self._episode_count = 0
        log.debug("SMAClite %s: %d agents, %d actions, episode limit %d",
                  self.map_name, self.n_agents, self.n_actions, self.episode_limit)

    @staticmethod
    def _backend_seed(seed: int | None) -> int | None:
        if seed is None:
            return None
        # PyMARL2's parallel runner gives every worker the same env_args.seed; mixing in the
        # worker's multiprocessing identity (its creation order, so the same in a rerun)
        # gives each worker its own stream. In the main process this is a function of seed alone.
        return int(np.random.SeedSequence([seed, *_process_identity()]).generate_state(1)[0])

    # --- episode -------------------------------------------------------------------

    def reset(self):
        obs, _ = self._env.reset()
        self._obs = [np.asarray(o, dtype=np.float32) for o in obs]
        self._t = 0
        self._done = False
        return self.get_obs(), self.get_state()

    def step(self, actions):
        """Returns reward, terminated, info, as SMAC's env does."""
        if self._done:
            raise RuntimeError("step() after the episode ended; call reset() first")
        chosen = self._action_list(actions)
        obs, reward, battle_over, _truncated, inner_info = self._env.step(chosen)
        self._obs = [np.asarray(o, dtype=np.float32) for o in obs]
        self._t += 1
        won = bool(inner_info.get("battle_won", False))
        info = {
            "battle_won": won,
            "dead_allies": self.n_agents - len(self._env.agents),
            "dead_enemies": self.n_enemies - len(self._env.enemies),
        }
        terminated = bool(battle_over)
        if terminated:
            self.battles_game += 1
            self.battles_won += int(won)
        elif self._t >= self.episode_limit:
            # SMAC ends the episode here too; only with continuing_episode does it say that
            # this end is a time limit (PyMARL's runners then do not treat it as terminal).
            terminated = True
            if self.continuing_episode:
                info["episode_limit"] = True
            self.battles_game += 1
            self.timeouts += 1
        if terminated:
            self._done = True
            self._episode_count += 1
        return float(reward), terminated, info

    def _action_list(self, actions) -> list[int]:
        if hasattr(actions, "detach"):  # a torch tensor, as PyMARL's episode runner passes
            actions = actions.detach().cpu().numpy()
        flat = np.asarray(actions).reshape(-1)
        if flat.shape[0] != self.n_agents:
            raise ValueError(f"expected {self.n_agents} actions, got {flat.shape[0]}")
        chosen = [int(a) for a in flat]
        # SMAClite raises on an unavailable action only after changing its state (its last
        # actions); checking first keeps the env usable and names the agent.
        avail = self._env.get_avail_actions()
        for agent, action in enumerate(chosen):
            if not 0 <= action < self.n_actions or not avail[agent][action]:
                allowed = [int(a) for a in np.flatnonzero(np.asarray(avail[agent]))]
                raise ValueError(f"agent {agent} chose action {action}, which is not available to it "
                                 f"(available: {allowed})")
        return chosen

    # --- observations and state ------------------------------------------------------

    def get_obs(self) -> list[np.ndarray]:
        return [o.copy() for o in self._obs]

    def get_obs_agent(self, agent_id: int) -> np.ndarray:
        return self._obs[agent_id].copy()

    def get_obs_size(self) -> int:
        return int(self._env.obs_size)

    def get_state(self) -> np.ndarray:
        return np.asarray(self._env.get_state(), dtype=np.float32)

    def get_state_size(self) -> int:
        return int(self._env.state_size)

    # --- actions -------------------------------------------------------------------

    def get_avail_actions(self) -> list[list[int]]:
        return [[int(a) for a in row] for row in self._env.get_avail_actions()]

    def get_avail_agent_actions(self, agent_id: int) -> list[int]:
        return self.get_avail_actions()[agent_id]

    def get_total_actions(self) -> int:
        return self.n_actions

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
        return {
            "battles_won": self.battles_won,
            "battles_game": self.battles_game,
            "battles_draw": self.timeouts,
            "win_rate": self.battles_won / self.battles_game if self.battles_game else 0.0,
            "timeouts": self.timeouts,
            "restarts": 0,
        }

    def seed(self) -> int | None:
        """The seed given in env_args (SMAC's ``seed()`` returns its seed too)."""
        return self._seed

    def render(self):
        return self._env.render()

    def save_replay(self) -> None:
        log.warning("save_replay() is not supported by the SMAClite env; nothing saved")

    def close(self) -> None:
        env, self._env = getattr(self, "_env", None), None
        if env is not None:
            env.close()


def make_smaclite_env(**env_args) -> SMACliteEnv:
    """Factory registered with the host (PyMARL2 env name ``smaclite``); see docs/smaclite.md."""
    return SMACliteEnv(smaclite_settings(env_args))
