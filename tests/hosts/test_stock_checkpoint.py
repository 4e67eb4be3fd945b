"""Complete checkpoints of the hosts' own learners (fake learners shaped like PyMARL2's)."""

import copy
import logging
import os
import random

import numpy as np
import pytest
import torch

from pymarl_nonmono.hosts.pymarl_family.registration import with_stock_additions
from pymarl_nonmono.hosts.pymarl_family.stock_checkpoint import STATE_FILE

from fake_host import RecordingLogger
from test_stock_diagnostics import args


class MAC:
    def __init__(self):
        self.agent = torch.nn.Linear(3, 2)


class CentralLearner:
    """Saves and loads as PyMARL2's max_q_learner does: the agent (also loaded as the target's),
    the mixer and the optimiser; not the target mixer, nor the central networks."""

    def __init__(self, mac, scheme, logger, args):
        self.mac, self.logger, self.args = mac, logger, args
        self.target_mac = copy.deepcopy(mac)
        self.mixer = torch.nn.Linear(2, 1)
        self.target_mixer = copy.deepcopy(self.mixer)
        self.central_mac = MAC()
        self.target_central_mac = copy.deepcopy(self.central_mac)
        self.central_mixer = torch.nn.Linear(4, 1)
        self.target_central_mixer = copy.deepcopy(self.central_mixer)
        params = [*self.mac.agent.parameters(), *self.mixer.parameters(), *self.central_mac.agent.parameters(),
                  *self.central_mixer.parameters()]
        self.optimiser = torch.optim.Adam(params, lr=0.1)
        self.last_target_update_episode = 0

    def train(self, batch, t_env, episode_num):
        pass

    def save_models(self, path):
        torch.save(self.mac.agent.state_dict(), os.path.join(path, "agent.th"))
        torch.save(self.mixer.state_dict(), os.path.join(path, "mixer.th"))
        torch.save(self.optimiser.state_dict(), os.path.join(path, "opt.th"))

    def load_models(self, path):
        self.mac.agent.load_state_dict(torch.load(os.path.join(path, "agent.th")))
        self.target_mac.agent.load_state_dict(torch.load(os.path.join(path, "agent.th")))
        self.mixer.load_state_dict(torch.load(os.path.join(path, "mixer.th")))
        self.optimiser.load_state_dict(torch.load(os.path.join(path, "opt.th")))


def make(seed):
    torch.manual_seed(seed)
    return with_stock_additions(CentralLearner)(MAC(), {}, RecordingLogger(), args(env="sc2"))


def networks(learner):
    return {name: [p.detach().clone() for p in net.parameters()] for name, net in (
        ("agent", learner.mac.agent), ("target_agent", learner.target_mac.agent), ("mixer", learner.mixer),
        ("target_mixer", learner.target_mixer), ("central_agent", learner.central_mac.agent),
        ("target_central_agent", learner.target_central_mac.agent), ("central_mixer", learner.central_mixer),
        ("target_central_mixer", learner.target_central_mixer))}


def trained(seed):
    """A learner whose every network differs from its target and from a fresh learner's, with an
    optimiser that has taken steps, and an episode counter as after 500 episodes."""
    learner = make(seed)
    for _ in range(3):
        learner.optimiser.zero_grad()
        loss = sum((p ** 2).sum() for group in learner.optimiser.param_groups for p in group["params"])
        loss.backward()
        learner.optimiser.step()
    learner.last_target_update_episode = 500
    return learner


def test_a_stock_learner_resumes_with_every_network_its_optimiser_and_the_random_streams(tmp_path):
    saved = trained(0)
    saved.save_models(str(tmp_path))
    assert (tmp_path / STATE_FILE).is_file()
    expected = networks(saved)
    draws = (torch.rand(3), np.random.rand(3), random.random())

    resumed = make(1)
    assert not torch.equal(networks(resumed)["central_mixer"][0], expected["central_mixer"][0])
    resumed.load_models(str(tmp_path))
    for name, params in networks(resumed).items():
        assert all(torch.equal(a, b) for a, b in zip(params, expected[name])), name
    assert str(resumed.optimiser.state_dict()) == str(saved.optimiser.state_dict())
    # The random streams continue where the saved run stood.
    assert torch.equal(torch.rand(3), draws[0]) and np.allclose(np.random.rand(3), draws[1]) and random.random() == draws[2]
    # Counters are the host's schedule: the episode counter restarts at 0 after a load.
    assert resumed.last_target_update_episode == 0


def test_a_checkpoint_saved_without_us_loads_as_the_host_loads_it_and_says_what_is_not_restored(tmp_path, caplog):
    saved = trained(0)
    CentralLearner.save_models(saved, str(tmp_path))  # the host's own save
    resumed = make(1)
    fresh = networks(resumed)["central_mixer"]
    with caplog.at_level(logging.WARNING):
        resumed.load_models(str(tmp_path))
    assert all(torch.equal(a, b) for a, b in zip(networks(resumed)["central_mixer"], fresh))
    assert all(torch.equal(a, b) for a, b in zip(networks(resumed)["mixer"], networks(saved)["mixer"]))
    assert STATE_FILE in caplog.text and "central_mixer" in caplog.text and "target_mixer" in caplog.text


def test_a_checkpoint_of_another_learner_is_refused_by_name(tmp_path):
    saved = trained(0)
    saved.save_models(str(tmp_path))
    state = torch.load(tmp_path / STATE_FILE)
    del state["networks"]["central_mixer"]
    state["networks"]["qtran_joint"] = {}
    torch.save(state, tmp_path / STATE_FILE)
    with pytest.raises(ValueError, match="not in it: central_mixer; not in the learner: qtran_joint"):
        make(1).load_models(str(tmp_path))


class RunningStatistic:
    """Shaped like EPyMARL's RunningMeanStd (components/standarize_stream.py): all it holds."""

    def __init__(self, shape=(1,), device="cpu"):
        self.mean = torch.zeros(shape, device=device)
        self.var = torch.ones(shape, device=device)
        self.count = 1e-4

    def update(self, values):
        total = self.count + values.numel()
        mean = (self.mean * self.count + values.sum()) / total
        self.var = (self.var * self.count + ((values - mean) ** 2).sum()) / total
        self.mean, self.count = mean, total


class StandardisingLearner(CentralLearner):
    """As EPyMARL's q_learner with standardise_rewards: a running statistic its own save omits."""

    def __init__(self, mac, scheme, logger, args, device="cpu"):
        super().__init__(mac, scheme, logger, args)
        self.rew_ms = RunningStatistic(device=device)


def make_standardising(seed, device="cpu"):
    torch.manual_seed(seed)
    return with_stock_additions(lambda *a: StandardisingLearner(*a, device=device))(MAC(), {}, RecordingLogger(),
                                                                                  args(env="sc2"))


def test_a_stock_learner_resumes_with_its_running_statistics(tmp_path):
    saved = make_standardising(0)
    saved.rew_ms.update(torch.tensor([3.0, 5.0, 10.0]))
    saved.save_models(str(tmp_path))
    resumed = make_standardising(1)
    resumed.load_models(str(tmp_path))
    assert torch.equal(resumed.rew_ms.mean, saved.rew_ms.mean) and torch.equal(resumed.rew_ms.var, saved.rew_ms.var)
    assert resumed.rew_ms.count == saved.rew_ms.count == 3.0001


def test_running_statistics_saved_on_a_gpu_come_back_to_it(monkeypatch):
    from pymarl_nonmono.hosts.pymarl_family.stock_checkpoint import learner_state, load_learner_state

    from fake_cuda import CUDA, fake_cuda

    state = learner_state(make_standardising(0))  # as torch.load(map_location="cpu") gives it back
    state["statistics"]["rew_ms"]["mean"] = torch.tensor([2.5])
    with fake_cuda(monkeypatch):
        resumed = make_standardising(1, device="cuda")
        load_learner_state(resumed, state)
        assert resumed.rew_ms.mean.device == CUDA and resumed.rew_ms.var.device == CUDA
        assert resumed.rew_ms.mean.tolist() == [2.5]


def test_a_state_file_without_running_statistics_loads_the_rest_and_says_which_start_afresh(tmp_path, caplog):
    saved = make_standardising(0)
    saved.rew_ms.update(torch.tensor([3.0, 5.0]))
    saved.save_models(str(tmp_path))
    state = torch.load(tmp_path / STATE_FILE)
    del state["statistics"]  # as an earlier pymarl-nonmono wrote it
    torch.save(state, tmp_path / STATE_FILE)
    resumed = make_standardising(1)
    with caplog.at_level(logging.WARNING):
        resumed.load_models(str(tmp_path))
    assert "rew_ms start afresh" in caplog.text
    assert resumed.rew_ms.count == 1e-4
    assert all(torch.equal(a, b) for a, b in zip(networks(resumed)["central_mixer"], networks(saved)["central_mixer"]))


def test_a_learner_that_never_checkpoints_is_left_as_it_is():
    class NoSave:
        def __init__(self, mac, scheme, logger, args):
            self.mac = mac

        def train(self, batch, t_env, episode_num):
            pass

    learner = with_stock_additions(NoSave)(MAC(), {}, RecordingLogger(), args(env="sc2"))
    assert not hasattr(learner, "save_models")
