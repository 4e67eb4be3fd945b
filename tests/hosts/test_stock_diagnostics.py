"""IGM diagnostics computed from outside a stock learner (fake host objects)."""

import logging
from types import SimpleNamespace

import pytest
import torch

from pymarl_nonmono.envs.matrix import resolve_payoff
from pymarl_nonmono.hosts.pymarl2 import diagnostics as diag

from fake_host import FakeBatch, RecordingLogger

# Agent utilities whose greedy joint action is (0, 0), the optimum of QTRAN's game.
AGENT_Q = torch.tensor([[3.0, 1.0, 0.0], [2.0, 0.5, 0.0]])


class VDNMixer(torch.nn.Module):  # named as PyMARL2's, so the registry finds it
    def forward(self, qs, states):
        return qs.sum(-1, keepdim=True)


class QTranBase(torch.nn.Module):  # a joint network with no Q_tot of agent values
    pass


class FixedMAC:
    def __init__(self):
        self.hidden_inits = []

    def init_hidden(self, batch_size):
        self.hidden_inits.append(batch_size)

    def forward(self, batch, t):
        return AGENT_Q.expand(batch.batch_size, -1, -1)


class StockLearner:
    def __init__(self, mac, scheme, logger, args, mixer=None):
        self.mac, self.logger, self.args = mac, logger, args
        self.mixer = VDNMixer() if mixer is None else mixer
        self.trained = []

    def train(self, batch, t_env, episode_num):
        self.trained.append(t_env)
        return "trained"


def one_step_batch(b=2):
    return FakeBatch({"state": torch.ones(b, 2, 1), "avail_actions": torch.ones(b, 2, 2, 3)}, b, 2)


def args(env="matrix_game", interval=100):
    return SimpleNamespace(env=env, env_args={"preset": "qtran"}, learner_log_interval=interval)


def test_stock_learner_logs_payoff_statistics_at_the_log_interval():
    make = diag.with_stock_diagnostics(StockLearner)
    logger = RecordingLogger()
    learner = make(FixedMAC(), {}, logger, args())
    for t in (10, 50, 120, 150):
        assert learner.train(one_step_batch(), t, 0) == "trained"
    assert learner.trained == [10, 50, 120, 150]
    assert [t for t, _ in logger.stats["payoff_max_abs_error"]] == [10, 120]
    payoff = torch.as_tensor(resolve_payoff("qtran"))
    vdn_table = AGENT_Q[0].view(3, 1) + AGENT_Q[1].view(1, 3)
    assert logger.stats["payoff_max_abs_error"][0][1] == pytest.approx(float((vdn_table - payoff).abs().max()))
    assert logger.stats["q_tot_0_1"][0][1] == pytest.approx(3.5)
    assert logger.stats["greedy_optimal"][0][1] == 1.0
    assert logger.stats["igm_consistent"][0][1] == 1.0  # VDN is IGM by construction
    assert logger.stats["greedy_joint_index"][0][1] == 0.0


def test_no_known_payoff_leaves_the_learner_alone():
    learner = diag.with_stock_diagnostics(StockLearner)(FixedMAC(), {}, RecordingLogger(), args(env="sc2"))
    assert learner.train.__func__ is StockLearner.train


def test_mixer_without_q_tot_of_agent_values_is_named_in_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        learner = diag.attach_to_stock_learner(
            StockLearner(FixedMAC(), {}, RecordingLogger(), args(), mixer=QTranBase()), args())
    assert learner.train.__func__ is StockLearner.train
    assert "QTranBase" in caplog.text and "StockLearner" in caplog.text


def test_wrapping_twice_is_harmless():
    make = diag.with_stock_diagnostics(StockLearner)
    assert diag.with_stock_diagnostics(make) is make


def test_dueling_q_tot_adds_value_and_advantage():
    calls = []

    class DMAQer(torch.nn.Module):
        def forward(self, qs, states, actions=None, max_q_i=None, is_v=False):
            calls.append(is_v)
            if is_v:
                return qs.sum(-1).view(qs.shape[0], -1, 1)
            # advantage: each agent's gap to its max, weighted 2, only where action 0 is chosen
            return (2 * (qs - max_q_i) * actions[..., 0]).sum(-1).view(qs.shape[0], -1, 1)

    joint = torch.tensor([[0, 0], [1, 2]])
    qs = AGENT_Q[torch.arange(2), joint].unsqueeze(0)
    out = diag.STOCK_Q_TOT.get("DMAQer")(DMAQer(), qs, torch.ones(1, 2, 1), joint, AGENT_Q)
    assert calls == [True, False]
    # (0,0): V = 5, A = 0; (1,2): V = 1, no action 0 chosen so A = 0
    assert out.view(-1).tolist() == pytest.approx([5.0, 1.0])
