"""One-step cooperative matrix games on PyMARL's environment protocol.

Every agent picks an action once; the team receives ``payoff[a_1, ..., a_N]`` and the
episode ends. Payoffs are a named preset (with its source below) or any N-dimensional
nested list given in the config (``env_args.payoff``): N agents, ``payoff.shape[i]``
actions for agent ``i`` (agents with fewer actions than the largest get the rest
marked unavailable). Observations and state are a constant 1: the game has one state.

Presets (sources):
  qtran          [[8,-12,-12],[-12,0,0],[-12,0,0]]        QTRAN, Son et al. 2019, Table 1
  pymarl2        [[12,-0.1,-0.1],[-0.1,0,0],[-0.1,0,0]]   PyMARL2 one_step_matrix_game (Hu et al. 2021)
  pymarl2_hard   [[12,-12,-12],[-12,0,0],[-12,0,0]]       PyMARL2 one_step_matrix_game, commented variant
  paper_a        [[12,-12,-12],[-12,0,0],[-12,0,0]]       arXiv 2511.09792 (AAAI 2026), Table 1, Game A;
                                                          the same payoff as pymarl2_hard (an alias)
  paper_b        [[12,0,10],[0,0,10],[10,10,10]]          arXiv 2511.09792 (AAAI 2026), Table 1, Game B
  qplex_a        [[10.4,0,10],[0,10,10],[10,10,10]]       QPLEX, Wang et al. 2021, matrix game
  qplex_b        [[8,-12,-12],[-12,6,0],[-12,0,6]]        QPLEX, Wang et al. 2021, matrix game
  climbing       [[11,-30,0],[-30,7,0],[0,6,5]]           Claus & Boutilier 1998
  penalty        [[-k,0,10],[0,2,0],[10,0,-k]]            Claus & Boutilier 1998 (penalty_k = k >= 0)
"""

from __future__ import annotations

import numbers
from typing import Any, Callable, Optional

import numpy as np

from ..errors import ConfigError, check_choice, check_known_keys, check_range
from ..registry import Registry

PayoffFn = Callable[[Optional[float]], list]
PRESETS: Registry[PayoffFn] = Registry("env_args.preset")
PRESETS.register("qtran", lambda k: [[8, -12, -12], [-12, 0, 0], [-12, 0, 0]])
PRESETS.register("pymarl2", lambda k: [[12, -0.1, -0.1], [-0.1, 0, 0], [-0.1, 0, 0]])
PRESETS.register("pymarl2_hard", lambda k: [[12, -12, -12], [-12, 0, 0], [-12, 0, 0]])
# The paper's Table 1 games. Game A is pymarl2_hard under the paper's name: both names stay, so
# studies can say which source they reproduce.
PRESETS.register("paper_a", PRESETS.get("pymarl2_hard"))
PRESETS.register("paper_b", lambda k: [[12, 0, 10], [0, 0, 10], [10, 10, 10]])
PRESETS.register("qplex_a", lambda k: [[10.4, 0, 10], [0, 10, 10], [10, 10, 10]])
PRESETS.register("qplex_b", lambda k: [[8, -12, -12], [-12, 6, 0], [-12, 0, 6]])
PRESETS.register("climbing", lambda k: [[11, -30, 0], [-30, 7, 0], [0, 6, 5]])


def _penalty(k: Optional[float]) -> list:
    if k is None:
        raise ConfigError("env_args.preset='penalty' needs env_args.penalty_k (the penalty k >= 0)")
    check_range("env_args.penalty_k", k, low=0.0)
    return [[-k, 0, 10], [0, 2, 0], [10, 0, -k]]


PRESETS.register("penalty", _penalty)


def _is_number(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _check_nested(value: Any, path: str = "env_args.payoff") -> tuple[int, ...]:
    """Shape of a rectangular nested list of numbers; errors name the offending entry."""
    if _is_number(value):
        return ()
    if not isinstance(value, (list, tuple)) or len(value) == 0:
        raise ConfigError(f"{path}={value!r} must be a number or a non-empty list")
    shapes = [_check_nested(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if any(s != shapes[0] for s in shapes):
        raise ConfigError(f"{path} is ragged: its entries have shapes {sorted(set(shapes))}")
    return (len(value), *shapes[0])


def resolve_payoff(
    preset: Optional[str] = None,
    payoff: Any = None,
    penalty_k: Optional[float] = None,
    n_agents: Optional[int] = None,
    n_actions: Optional[int] = None,
) -> np.ndarray:
    """The payoff tensor ``[A_1, ..., A_N]`` from a preset name or an explicit payoff."""
    if (preset is None) == (payoff is None):
        raise ConfigError(
            f"give exactly one of env_args.preset (one of {PRESETS.names()}) and env_args.payoff "
            f"(an N-dimensional nested list); got preset={preset!r}, payoff={payoff!r}"
        )
    if preset is not None:
        check_choice("env_args.preset", preset, PRESETS.names())
        payoff = PRESETS.get(preset)(penalty_k)
    elif penalty_k is not None:
        raise ConfigError("env_args.penalty_k applies only to preset='penalty'")
    shape = _check_nested(payoff)
    if len(shape) < 1:
        raise ConfigError(f"env_args.payoff={payoff!r} must have one dimension per agent")
    table = np.asarray(payoff, dtype=np.float64)
    if not np.isfinite(table).all():
        raise ConfigError("env_args.payoff has non-finite entries")
    if n_agents is not None and n_agents != table.ndim:
        raise ConfigError(f"env_args.n_agents={n_agents} but the payoff has {table.ndim} dimensions (one per agent)")
    if n_actions is not None and n_actions != max(table.shape):
        raise ConfigError(f"env_args.n_actions={n_actions} but the payoff's largest dimension is {max(table.shape)}")
    return table


class MatrixGame:
    """PyMARL environment protocol; see the module docstring."""

    def __init__(
        self,
        preset: Optional[str] = None,
        payoff: Any = None,
        penalty_k: Optional[float] = None,
        n_agents: Optional[int] = None,
        n_actions: Optional[int] = None,
        map_name: str = "matrix_game",
        seed: Optional[int] = None,
        state_last_action: bool = False,
    ) -> None:
        # Stock algorithm configs set it (PyMARL2's vmix: False); True would ask for a state
        # this one-step game cannot give.
        if state_last_action:
            raise ConfigError("env_args.state_last_action=True: the matrix game's state is a constant "
                              "(one step, no earlier actions); leave it False")
        self.payoff = resolve_payoff(preset, payoff, penalty_k, n_agents, n_actions)
        self.map_name = map_name
        self.n_agents = self.payoff.ndim
        self.n_actions = max(self.payoff.shape)
        self.episode_limit = 1
        self.best = float(self.payoff.max())
        self._avail = [[1] * a + [0] * (self.n_actions - a) for a in self.payoff.shape]
        self._done = False

    # -- protocol -----------------------------------------------------------------
    def reset(self):
        self._done = False
        return self.get_obs(), self.get_state()

    def step(self, actions):
        if self._done:
            raise RuntimeError("step() after the episode ended; call reset()")
        joint = tuple(int(a) for a in actions)
        for i, a in enumerate(joint):
            if not 0 <= a < self.payoff.shape[i]:
                raise ValueError(f"agent {i} took action {a}, which is not available (has {self.payoff.shape[i]})")
        reward = float(self.payoff[joint])
        self._done = True
        # Logged by the runners as <prefix>optimal_mean: the fraction of episodes that
        # reached the best payoff.
        return reward, True, {"optimal": float(reward == self.best)}

    def get_obs(self):
        return [self.get_obs_agent(i) for i in range(self.n_agents)]

    def get_obs_agent(self, agent_id):
        return np.ones(1, dtype=np.float32)

    def get_obs_size(self):
        return 1

    def get_state(self):
        return np.ones(1, dtype=np.float32)

    def get_state_size(self):
        return 1

    def get_avail_actions(self):
        return [self.get_avail_agent_actions(i) for i in range(self.n_agents)]

    def get_avail_agent_actions(self, agent_id):
        return list(self._avail[agent_id])

    def get_total_actions(self):
        return self.n_actions

    def get_stats(self):
        return {}

    def get_env_info(self):
        return {
            "state_shape": self.get_state_size(),
            "obs_shape": self.get_obs_size(),
            "n_actions": self.n_actions,
            "n_agents": self.n_agents,
            "episode_limit": self.episode_limit,
        }

    def render(self):
        pass

    def close(self):
        pass

    def seed(self):
        return None

    def save_replay(self):
        pass


PAYOFF_KEYS = ("preset", "payoff", "penalty_k", "n_agents", "n_actions")
ENV_ARGS = PAYOFF_KEYS + ("map_name", "seed", "state_last_action")


def payoff_of_env_args(env_args) -> np.ndarray:
    """The payoff ``env_args`` describe; unknown keys and bad values are a ConfigError naming them.
    What a run checks before it starts (no env is built)."""
    check_known_keys("env_args", env_args, ENV_ARGS)
    return resolve_payoff(**{k: env_args.get(k) for k in PAYOFF_KEYS})


def make_matrix_game(**env_args) -> MatrixGame:
    """Factory registered as ``matrix_game``: unknown ``env_args`` keys are an error."""
    check_known_keys("env_args", env_args, ENV_ARGS)
    return MatrixGame(**env_args)
