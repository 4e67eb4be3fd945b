"""Unit tests of the EPyMARL adapter: agent protocol against EPyMARL's own controllers, the env
adapter, the start-up checks and the shipped EPyMARL configs.

Controller tests import EPyMARL's ``controllers`` and ``modules.agents`` from conftest's
epymarl_pristine (read only) and take them out of ``sys.modules`` again afterwards.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from fake_host import RecordingLogger, random_batch, scheme
from pymarl_nonmono.envs.matrix import make_matrix_game
from pymarl_nonmono.errors import ConfigError
from pymarl_nonmono.hosts.epymarl import plugin
from pymarl_nonmono.hosts.epymarl.agents import NonMonoMAC
from pymarl_nonmono.hosts.epymarl.envs import EPyMARLEnv, for_epymarl
from pymarl_nonmono.hosts.epymarl.settings import our_keys
from pymarl_nonmono.hosts.pymarl_family import preflight
from pymarl_nonmono.hosts.pymarl_family.batch import episode_lengths
from pymarl_nonmono.numerics.recurrent import zero_padding
from pymarl_nonmono.hosts.pymarl_family.learner import PymarlFamilyLearner as NonMonoLearner
from pymarl_nonmono.numerics.mixers import MIXERS
from pymarl_nonmono.numerics.schedules import SCHEDULES
from pymarl_nonmono.numerics.selection import SELECTORS
from pymarl_nonmono.numerics.targets import BOOTSTRAPS

EPYMARL_CONFIG = Path(__file__).resolve().parents[2] / "config" / "hosts" / "epymarl"
ALGS = sorted(p.stem for p in (EPYMARL_CONFIG / "algs").glob("*.yaml"))
# Keys of EPyMARL's default.yaml / qmix.yaml (commit cbc38c0) that our EPyMARL configs also set.
HOST_KEYS = {"agent_output_type", "runner", "buffer_size", "batch_size", "learner", "mac", "use_rnn",
             "hidden_dim", "name"}
# Keys our learner reads from EPyMARL's default.yaml, with its values there.
HOST_DEFAULTS = dict(gamma=0.99, grad_norm_clip=10, optim_alpha=0.99, optim_eps=1e-5, learner_log_interval=0,
                     common_reward=True, env="fake_env", env_args={}, seed=0)
HOST_PACKAGES = ("modules", "utils", "components", "controllers")


def epymarl_args(alg="nonmono_qmix", n_agents=3, n_actions=4, **overrides) -> SimpleNamespace:
    cfg = yaml.safe_load((EPYMARL_CONFIG / "algs" / f"{alg}.yaml").read_text())
    cfg.update(HOST_DEFAULTS, n_agents=n_agents, n_actions=n_actions, hidden_dim=8, **overrides)
    return SimpleNamespace(**cfg)


@contextlib.contextmanager
def epymarl_modules(root: Path, *modules: str):
    """EPyMARL's ``modules`` imported from ``root/src``; its generic package names removed after."""
    host_names = lambda: [n for n in sys.modules if n.split(".")[0] in HOST_PACKAGES]  # noqa: E731
    others = {n: sys.modules.pop(n) for n in host_names()}
    sys.path.insert(0, str(root / "src"))
    try:
        yield [importlib.import_module(m) for m in modules]
    finally:
        sys.path.remove(str(root / "src"))
        for name in host_names():
            del sys.modules[name]
        sys.modules.update(others)


@pytest.fixture(scope="module")
def host(epymarl_pristine):
    with epymarl_modules(epymarl_pristine, "controllers") as (controllers,):
        yield controllers


def pair(host, stock: str, **overrides):
    """Our controller and EPyMARL's ``stock`` controller with the same agent weights."""
    args = epymarl_args(**overrides)
    torch.manual_seed(0)
    ours = NonMonoMAC(scheme(), {"agents": 3}, args)
    theirs = host.REGISTRY[stock](scheme(), {"agents": 3}, args)
    theirs.load_state(ours)
    return ours, theirs


@pytest.mark.parametrize("last_action, agent_id", [(False, True), (True, True), (True, False)])
def test_flat_inputs_equal_epymarl_build_inputs(host, last_action, agent_id):
    ours, theirs = pair(host, "basic_mac", obs_last_action=last_action, obs_agent_id=agent_id)
    batch = random_batch(seed=1)
    for t in (0, 2):
        torch.testing.assert_close(ours._inputs(batch, t), theirs._build_inputs(batch, t))


@pytest.mark.parametrize("use_rnn", [True, False])
def test_unroll_equals_epymarl_basic_mac_step_by_step(host, use_rnn):
    # use_rnn False: EPyMARL's rnn agent is feed-forward (its rnn an nn.Linear), not a GRU.
    ours, theirs = pair(host, "basic_mac", use_rnn=use_rnn)
    assert (ours._unroll_parts is not None) is use_rnn
    batch = random_batch(seed=2)
    q = ours.unroll(batch)
    theirs.init_hidden(batch.batch_size)
    reference = torch.stack([theirs.forward(batch, t) for t in range(batch.max_seq_length)], dim=1)
    # Padding rows are skipped (0); the batch has some, so the skipping is exercised.
    lengths = episode_lengths(batch)
    assert lengths is not None and int(lengths.min()) < batch.max_seq_length
    torch.testing.assert_close(q, zero_padding(reference, lengths if use_rnn else None))


def test_non_shared_agents_equal_epymarl_non_shared_mac(host):
    ours, theirs = pair(host, "non_shared_mac", agent="rnn_ns", obs_agent_id=False)
    batch = random_batch(seed=3)
    theirs.init_hidden(batch.batch_size)
    reference = torch.stack([theirs.forward(batch, t) for t in range(batch.max_seq_length)], dim=1)
    torch.testing.assert_close(ours.unroll(batch), reference)
    one = random_batch(B=1, seed=4)  # acting: one episode, rnn_ns routes row i to agent i
    ours.init_hidden(1)
    theirs.init_hidden(1)
    torch.testing.assert_close(ours.forward(one, 0), theirs.forward(one, 0))


def test_learner_trains_on_epymarl_agents(host):
    args = epymarl_args("nonmono_qmix_rnd")
    mac = NonMonoMAC(scheme(), {"agents": 3}, args)
    logger = RecordingLogger()
    NonMonoLearner(mac, scheme(), logger, args).train(random_batch(seed=5), t_env=10, episode_num=1)
    assert {"loss_td", "rnd_loss", "igm_violation_rate"} <= set(logger.stats)


def test_per_agent_rewards_are_refused_naming_the_key():
    batch = random_batch(seed=6)
    batch.data["reward"] = batch.data["reward"].expand(-1, -1, 3).clone()  # EPyMARL, common_reward=False
    args = epymarl_args(use_rnn=False)
    learner = NonMonoLearner(NonMonoMAC(scheme(), {"agents": 3}, args, agent_builder=_FlatAgent), scheme(),
                             RecordingLogger(), args)
    with pytest.raises(ValueError, match="common_reward=True"):
        learner.train(batch, t_env=0, episode_num=1)


class _FlatAgent(torch.nn.Module):
    """An agent on EPyMARL's protocol: forward(inputs [B*N, D], h) -> (q [B*N, A], h)."""

    def __init__(self, input_shape, args):
        super().__init__()
        self.fc = torch.nn.Linear(input_shape, args.n_actions)

    def init_hidden(self):
        return self.fc.weight.new_zeros(1, 1)

    def forward(self, inputs, hidden):
        assert inputs.dim() == 2
        return self.fc(inputs), hidden


# ----------------------------------------------------------------------------- env adapter

class _TimedEnv:
    """PyMARL2's env protocol: step -> (reward, terminated, info), a time-out in info["episode_limit"]."""

    episode_limit = 2

    def __init__(self, **env_args):
        self.env_args, self.t = env_args, 0

    def reset(self):
        self.t = 0

    def step(self, actions):
        self.t += 1
        timed_out = self.t >= self.episode_limit
        return 1.0, timed_out, {"episode_limit": True} if timed_out else {}

    def get_obs(self):
        return [[float(self.t)]]


def test_env_adapter_speaks_epymarls_protocol_and_a_time_out_is_truncation():
    make = for_epymarl(_TimedEnv)
    env = make(size=3, common_reward=True, reward_scalarisation="sum")
    assert isinstance(env, EPyMARLEnv) and env.env_args == {"size": 3} and env.episode_limit == 2
    assert env.reset() == ([[0.0]], {})
    assert env.step([0]) == ([[1.0]], 1.0, False, False, {})
    obs, reward, terminated, truncated, info = env.step([0])
    assert (obs, reward, terminated, truncated) == ([[2.0]], 1.0, False, True)
    # EPyMARL's runners store `(terminated or truncated) != info["episode_limit"]`: not terminated.
    assert ((terminated or truncated) != info.get("episode_limit", False)) is False


def test_env_adapter_passes_a_real_termination():
    env = for_epymarl(make_matrix_game)(preset="qtran", common_reward=True, reward_scalarisation="sum")
    env.reset()
    _, reward, terminated, truncated, info = env.step([0, 0])
    assert reward == 8 and terminated is True and truncated is False
    assert ((terminated or truncated) != info.get("episode_limit", False)) is True


def test_env_adapter_refuses_per_agent_rewards_naming_the_key():
    with pytest.raises(ConfigError, match="common_reward=False.*set common_reward=True"):
        for_epymarl(make_matrix_game)(preset="qtran", common_reward=False, reward_scalarisation="sum")


# ----------------------------------------------------------------------------- start-up checks

def merged_config(epymarl_root: Path, alg: str) -> dict:
    """EPyMARL's default.yaml, our default.yaml (setdefault), the env and alg YAMLs, as main.py merges
    them; ``alg`` is one of ours or, if EPyMARL has it, EPyMARL's."""
    host_config = epymarl_root / "src" / "config"
    config = yaml.safe_load((host_config / "default.yaml").read_text())
    for key, value in yaml.safe_load((EPYMARL_CONFIG / "default.yaml").read_text()).items():
        config.setdefault(key, value)
    alg_yaml = host_config / "algs" / f"{alg}.yaml"
    for part in (EPYMARL_CONFIG / "envs" / "matrix_game.yaml",
                 alg_yaml if alg_yaml.is_file() else EPYMARL_CONFIG / "algs" / f"{alg}.yaml"):
        config.update(yaml.safe_load(part.read_text()))
    return config


@pytest.fixture
def checked(epymarl_pristine, monkeypatch):
    monkeypatch.setattr(preflight, "host_config_dir", lambda: epymarl_pristine / "src" / "config")
    return lambda alg, *updates: plugin.check_command_line(merged_config(epymarl_pristine, alg), list(updates))


@pytest.mark.parametrize("alg", ALGS)
def test_shipped_configs_pass_the_start_up_checks(checked, alg):
    checked(alg, "use_cuda=False", "td_bootstrap=expected_sarsa")


@pytest.mark.parametrize("updates, message", [
    (["td_lamda=0.3"], r"unknown config key\(s\): 'td_lamda' \(did you mean 'td_lambda'\?\)"),
    (["common_reward=False"], r"^pymarl-nonmono: common_reward=False: .* set common_reward=True"),
    (["td_lambda=2"], r"td_lambda"),
])
def test_bad_configs_stop_with_one_message_naming_the_key(checked, updates, message):
    with pytest.raises(SystemExit, match=message):
        checked("nonmono_qmix", *updates)


def test_stock_qmix_on_our_env_needs_a_team_reward_too(checked):
    checked("qmix", "action_selector=softmax", "temperature_start=0.5")
    with pytest.raises(SystemExit, match="common_reward=False"):
        checked("qmix", "common_reward=False")


def test_with_updates_applies_dotted_and_dict_words():
    config = {"a": 1, "env_args": {"key": None, "time_limit": 100}}
    out = preflight.with_updates(config, ["a=2", "env_args.key=lbforaging:Foraging-8x8-2p-3f-v3",
                                          "env_args={'time_limit': 50}", "print_config"])
    assert out == {"a": 2, "env_args": {"key": "lbforaging:Foraging-8x8-2p-3f-v3", "time_limit": 50}}
    assert config["env_args"]["time_limit"] == 100


# ----------------------------------------------------------------------------- shipped configs

def test_shipped_epymarl_algs_are_the_papers_three_with_and_without_parameter_sharing():
    assert ALGS == ["nonmono_qmix", "nonmono_qmix_ns", "nonmono_qmix_rnd", "nonmono_qmix_rnd_ns",
                    "nonmono_qmix_sarsa", "nonmono_qmix_sarsa_ns"]


@pytest.mark.parametrize("alg", ALGS)
def test_every_shipped_epymarl_yaml_resolves_to_registered_names_and_known_keys(alg):
    cfg = yaml.safe_load((EPYMARL_CONFIG / "algs" / f"{alg}.yaml").read_text())
    assert cfg["mixer"] in MIXERS and cfg["td_bootstrap"] in BOOTSTRAPS
    assert cfg["action_selector"] in SELECTORS and cfg["selector_schedule"] in SCHEDULES
    assert cfg["learner"] == plugin.LEARNER and cfg["mac"] == plugin.MAC
    assert cfg["agent"] == ("rnn_ns" if alg.endswith("_ns") else "rnn") and cfg["use_rnn"] is True
    assert cfg["obs_agent_id"] is not alg.endswith("_ns")
    assert cfg["name"] == alg
    # Every key we read is set in the file, except EPyMARL's default.yaml ones.
    assert our_keys() - {"gamma", "grad_norm_clip", "optim_alpha", "optim_eps", "learner_log_interval",
                         "common_reward"} <= set(cfg)
    assert set(cfg) <= our_keys() | HOST_KEYS


def test_host_keys_are_epymarls(epymarl_pristine):
    config = epymarl_pristine / "src" / "config"
    assert HOST_KEYS <= preflight.yaml_keys([config])
    with epymarl_modules(epymarl_pristine, "modules.agents") as (agents,):
        assert {"rnn", "rnn_ns"} <= set(agents.REGISTRY)


def test_every_epymarl_yaml_line_with_a_key_is_commented():
    for path in sorted(EPYMARL_CONFIG.rglob("*.yaml")):
        for line in path.read_text().splitlines():
            if line.strip() and not line.lstrip().startswith("#") and not line.rstrip().endswith(":"):
                assert "#" in line, f"{path.relative_to(EPYMARL_CONFIG)}: uncommented key line {line!r}"
