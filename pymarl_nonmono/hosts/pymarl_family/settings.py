"""Typed settings read from a PyMARL-family host's flat config namespace (PyMARL2, EPyMARL).

Every field must be present in the run's config (our YAMLs set them all): a missing
key is an error naming it, never a silent default. Values are validated here, once,
so the learner and controller receive settings that are known to be usable.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any, Callable, Mapping

from ...errors import ConfigError, check_bool, check_choice, check_int, check_range
from ...numerics.fused_gru import check_kernel
from ...numerics.gauge import SIGN_GAUGES
from ...numerics.mixers import (MIXERS, SIGN_SYMMETRIC_MIXERS, check_hypernet_layers, check_mixer_init,
                                 check_mixer_options)
from ...numerics.schedules import SCHEDULES
from ...numerics.selection import SELECTORS
from ...numerics.targets import BOOTSTRAPS

OPTIMIZERS = ("adam", "rmsprop")
#: ``sign_gauge_start`` may name this key instead of a number of env steps: the gauge's checks then
#: begin when epsilon reaches its floor, and follow the schedule when it is changed.
GAUGE_START_AT_ANNEAL = "epsilon_anneal_time"
RND_INPUTS = ("state", "obs")


def _positive(k, v):
    return check_range(k, v, low=0.0, low_open=True)


def _unit(k, v):
    return check_range(k, v, 0.0, 1.0)


#: Keys that stock algorithms read too, and the values they may take. Our settings check their
#: copies with these rules, and the start-up check applies them to every run where the key is set
#: (stock algorithms included: a negative lr or an empty batch otherwise fails far from its cause,
#: or trains on nonsense). Env-step counts are numbers (``t_max=1e6`` is a float to Sacred).
HOST_KEY_RULES: dict[str, Callable[[str, Any], Any]] = {
    "lr": _positive,
    "gamma": lambda k, v: check_range(k, v, 0.0, 1.0, low_open=True),
    "td_lambda": _unit,
    "grad_norm_clip": _positive,
    "optim_alpha": lambda k, v: check_range(k, v, 0.0, 1.0, high_open=True),
    "optim_eps": _positive,
    "epsilon_start": _unit,
    "epsilon_finish": _unit,
    "epsilon_anneal_time": lambda k, v: check_int(k, v, 0),
    "target_update_interval": lambda k, v: check_int(k, v, 1),
    "learner_log_interval": lambda k, v: check_int(k, v, 0),
    "batch_size": lambda k, v: check_int(k, v, 1),
    "batch_size_run": lambda k, v: check_int(k, v, 1),
    "buffer_size": lambda k, v: check_int(k, v, 1),
    "test_nepisode": lambda k, v: check_int(k, v, 1),
    "t_max": lambda k, v: check_range(k, v, low=1.0),
    "test_interval": _positive,
    "log_interval": lambda k, v: check_range(k, v, low=0.0),
    "runner_log_interval": lambda k, v: check_range(k, v, low=0.0),
}


def check_host_key(name: str, value: Any) -> Any:
    """``value`` checked by the rule of :data:`HOST_KEY_RULES` for ``name``."""
    return HOST_KEY_RULES[name](name, value)


def check_host_values(config: Mapping[str, Any]) -> None:
    """Every :data:`HOST_KEY_RULES` key the config sets, and a replay that can hold a batch."""
    for name in HOST_KEY_RULES:
        if name in config:
            check_host_key(name, config[name])
    buffer, batch = config.get("buffer_size"), config.get("batch_size")
    if isinstance(buffer, int) and isinstance(batch, int) and buffer < batch:
        raise ConfigError(f"buffer_size={buffer} holds fewer episodes than batch_size={batch}: the learner would "
                          f"never get a batch and never train")


def read_settings(cls, config: Mapping[str, Any] | Any, owner: str):
    """Build dataclass ``cls`` from a dict or namespace, requiring every field.

    ``owner`` names the component in the error, e.g. ``"nonmono_learner"``.
    """
    get = config.get if isinstance(config, Mapping) else (lambda k, d=None: getattr(config, k, d))
    missing = object()
    values = {}
    absent = []
    for f in fields(cls):
        v = get(f.name, missing)
        if v is missing:
            absent.append(f.name)
        else:
            values[f.name] = v
    if absent:
        raise ConfigError(
            f"{owner} needs config key(s) {absent}; set them in the algorithm YAML "
            f"(see pymarl-nonmono's config/algs/nonmono_qmix.yaml for documented defaults)"
        )
    obj = cls(**values)
    obj.validate()
    return obj


@dataclass(frozen=True)
class ExplorationSettings:
    """Behaviour policy of :class:`NonMonoMAC` (``action_selector`` picks which keys apply)."""

    action_selector: str
    selector_schedule: str
    epsilon_start: float
    epsilon_finish: float
    epsilon_anneal_time: int
    temperature_start: float
    temperature_finish: float
    temperature_anneal_time: int

    def validate(self) -> None:
        check_choice("action_selector", self.action_selector, SELECTORS.names())
        check_choice("selector_schedule", self.selector_schedule, SCHEDULES.names())
        for key in ("epsilon_start", "epsilon_finish", "epsilon_anneal_time"):
            check_host_key(key, getattr(self, key))
        check_range("temperature_start", self.temperature_start, low=0.0, low_open=True)
        check_range("temperature_finish", self.temperature_finish, low=0.0, low_open=True)
        check_int("temperature_anneal_time", self.temperature_anneal_time, 0)

    def schedule_args(self) -> dict:
        if self.action_selector == "softmax":
            return dict(start=self.temperature_start, finish=self.temperature_finish,
                        anneal_steps=self.temperature_anneal_time)
        return dict(start=self.epsilon_start, finish=self.epsilon_finish,
                    anneal_steps=self.epsilon_anneal_time)


@dataclass(frozen=True)
class ControllerSettings:
    agent: str
    obs_last_action: bool
    obs_agent_id: bool
    td_bootstrap: str
    gru_kernel: str

    def validate(self) -> None:
        check_bool("obs_last_action", self.obs_last_action)
        check_bool("obs_agent_id", self.obs_agent_id)
        # td_bootstrap is the learner's key (LearnerSettings); the controller only asks whether
        # it needs the behaviour's probabilities, which names the key when it is unknown.
        check_kernel(self.gru_kernel)


@dataclass(frozen=True)
class RNDSettings:
    use_rnd: bool
    rnd_input: str
    rnd_hidden_dim: int
    rnd_output_dim: int
    rnd_layers: int
    rnd_lr: float
    rnd_beta_start: float
    rnd_beta_finish: float
    rnd_beta_anneal_time: int

    def validate(self) -> None:
        check_bool("use_rnd", self.use_rnd)
        check_choice("rnd_input", self.rnd_input, RND_INPUTS)
        check_int("rnd_hidden_dim", self.rnd_hidden_dim, 1)
        check_int("rnd_output_dim", self.rnd_output_dim, 1)
        check_int("rnd_layers", self.rnd_layers, 1)
        check_range("rnd_lr", self.rnd_lr, low=0.0, low_open=True)
        check_range("rnd_beta_start", self.rnd_beta_start, low=0.0)
        check_range("rnd_beta_finish", self.rnd_beta_finish, low=0.0)
        check_int("rnd_beta_anneal_time", self.rnd_beta_anneal_time, 0)


@dataclass(frozen=True)
class LearnerSettings:
    mixer: str
    mixing_embed_dim: int
    hypernet_embed: int
    hypernet_layers: int
    qmix_pos_func: str
    qmix_pos_func_beta: float
    use_orthogonal: bool
    td_bootstrap: str
    td_lambda: float
    gamma: float
    double_q: bool
    optimizer: str
    lr: float
    optim_alpha: float
    optim_eps: float
    grad_norm_clip: float
    target_update_interval: int
    learner_log_interval: int
    # Breaking the sign symmetry of an unconstrained mixer (docs/sign_symmetry.md).
    mixer_init: str
    mixer_init_bias: float
    monotonicity_penalty: float
    igm_penalty: float
    # Choosing which mirror image the agents act on (numerics/gauge.py).
    sign_gauge: str
    sign_gauge_interval: int
    sign_gauge_margin: float
    sign_gauge_patience: int
    sign_gauge_start: int | str
    epsilon_anneal_time: int

    def validate(self) -> None:
        check_choice("mixer", self.mixer, MIXERS.names())
        check_mixer_init(self.mixer_init, self.mixer_init_bias)
        if self.mixer == "vdn" and self.mixer_init != "default":
            raise ConfigError(f"mixer_init={self.mixer_init!r} needs a mixer with mixing weights; "
                              f"mixer='vdn' has none (leave mixer_init at 'default')")
        check_range("monotonicity_penalty", self.monotonicity_penalty, low=0.0)
        check_range("igm_penalty", self.igm_penalty, low=0.0)
        check_choice("sign_gauge", self.sign_gauge, SIGN_GAUGES.names())
        if self.sign_gauge != "off" and self.mixer not in SIGN_SYMMETRIC_MIXERS:
            raise ConfigError(
                f"sign_gauge={self.sign_gauge!r} needs a mixer with the sign symmetry {list(SIGN_SYMMETRIC_MIXERS)}; "
                f"with mixer={self.mixer!r} negating an agent's utilities and its mixing weights changes Q_tot, "
                f"so a flip would change what was learned (leave sign_gauge at 'off')")
        check_int("sign_gauge_interval", self.sign_gauge_interval, 1)
        check_range("sign_gauge_margin", self.sign_gauge_margin, low=0.0)
        check_int("sign_gauge_patience", self.sign_gauge_patience, 1)
        if self.sign_gauge_start != GAUGE_START_AT_ANNEAL:
            if isinstance(self.sign_gauge_start, str):
                raise ConfigError(f"sign_gauge_start={self.sign_gauge_start!r}: give a number of env steps (>= 0) "
                                  f"or {GAUGE_START_AT_ANNEAL!r} (checks begin when epsilon reaches its floor)")
            check_int("sign_gauge_start", self.sign_gauge_start, 0)
        check_host_key("epsilon_anneal_time", self.epsilon_anneal_time)
        check_int("mixing_embed_dim", self.mixing_embed_dim, 1)
        check_int("hypernet_embed", self.hypernet_embed, 1)
        check_hypernet_layers(self.hypernet_layers)
        check_mixer_options(self.mixer, self.qmix_pos_func, self.qmix_pos_func_beta, self.use_orthogonal)
        check_choice("td_bootstrap", self.td_bootstrap, BOOTSTRAPS.names())
        check_host_key("td_lambda", self.td_lambda)
        check_host_key("gamma", self.gamma)
        check_bool("double_q", self.double_q)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        for key in ("lr", "grad_norm_clip", "optim_alpha", "optim_eps", "target_update_interval",
                    "learner_log_interval"):
            check_host_key(key, getattr(self, key))

    @property
    def gauge_start(self) -> int:
        """Env steps before the sign gauge's first check."""
        if self.sign_gauge_start == GAUGE_START_AT_ANNEAL:
            return int(self.epsilon_anneal_time)
        return int(self.sign_gauge_start)


#: What every host's learner and controller read; a host adds its own (PyMARL2: PER).
SETTINGS_CLASSES = (ExplorationSettings, ControllerSettings, RNDSettings, LearnerSettings)


def our_keys(classes=SETTINGS_CLASSES) -> set[str]:
    """Every config key the settings ``classes`` read."""
    return {f.name for cls in classes for f in dataclasses.fields(cls)}
