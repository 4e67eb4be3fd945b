"""IGM diagnostics computed from outside a stock learner (fake host objects)."""

import logging
from types import SimpleNamespace

import pytest
import torch

from pymarl_nonmono.envs.matrix import resolve_payoff
from pymarl_nonmono.hosts.pymarl_family import diagnostics as diag
from pymarl_nonmono.hosts.pymarl_family.registration import with_stock_additions

from fake_host import FakeBatch, RecordingLogger
from host_modules import imported_from_host

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
    return FakeBatch({"state": torch.ones(b, 2, 1), "avail_actions": torch.ones(b, 2, 2, 3),
                      "filled": torch.tensor([[1], [0]]).expand(b, 2, 1),
                      "terminated": torch.tensor([[1], [0]]).expand(b, 2, 1)}, b, 2)


def args(env="matrix_game", interval=100, output="q"):
    return SimpleNamespace(env=env, env_args={"preset": "qtran"}, learner_log_interval=interval, seed=0,
                           agent_output_type=output)


def test_stock_learner_logs_payoff_statistics_at_the_log_interval():
    make = with_stock_additions(StockLearner)
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


def test_without_a_known_payoff_a_plain_mixer_gets_the_batch_rates_only():
    logger = RecordingLogger()
    learner = with_stock_additions(StockLearner)(FixedMAC(), {}, logger, args(env="sc2"))
    learner.train(one_step_batch(), 0, 0)
    assert set(logger.stats) == {"igm_violation_rate", "igm_violation_rate_lower_bound",
                                 "negative_mixing_gradient_rate", "worst_greedy_action_rate"}
    # VDN: dQ_tot/dQ_i = 1 and IGM by construction.
    assert all(v[0][1] == 0.0 for v in logger.stats.values())


class QMixer(torch.nn.Module):  # named as PyMARL2's QMIX mixer; Q_tot = -sum_i Q_i (no abs)
    def forward(self, qs, states):
        return -qs.sum(-1, keepdim=True)


def test_stock_batch_rates_see_a_mirrored_mixer():
    logger = RecordingLogger()
    learner = diag.attach_to_stock_learner(
        StockLearner(FixedMAC(), {}, logger, args(env="sc2"), mixer=QMixer()), args(env="sc2"))
    learner.train(one_step_batch(), 0, 0)
    # Every agent's greedy action is the team's worst; every gradient is -1.
    assert {k: v[0][1] for k, v in logger.stats.items()} == {
        "igm_violation_rate": 1.0, "igm_violation_rate_lower_bound": 1.0,
        "negative_mixing_gradient_rate": 1.0, "worst_greedy_action_rate": 1.0}


def test_no_mixer_that_scores_joint_actions_leaves_the_learner_alone():
    learner = diag.attach_to_stock_learner(
        StockLearner(FixedMAC(), {}, RecordingLogger(), args(env="sc2"), mixer=QTranBase()), args(env="sc2"))
    assert learner.train.__func__ is StockLearner.train


def test_mixer_without_q_tot_of_agent_values_is_named_in_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        learner = diag.attach_to_stock_learner(
            StockLearner(FixedMAC(), {}, RecordingLogger(), args(), mixer=QTranBase()), args())
    assert learner.train.__func__ is StockLearner.train
    assert "QTranBase" in caplog.text and "StockLearner" in caplog.text


def test_wrapping_twice_is_harmless():
    make = with_stock_additions(StockLearner)
    assert with_stock_additions(make) is make


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
    out = diag.STOCK_Q_TOT.get("DMAQer")(DMAQer(), qs, torch.ones(1, 2, 1), joint, AGENT_Q,
                                         avail=torch.ones_like(AGENT_Q))
    assert calls == [True, False]
    # (0,0): V = 5, A = 0; (1,2): V = 1, no action 0 chosen so A = 0
    assert out.view(-1).tolist() == pytest.approx([5.0, 1.0])


# Each agent's best action is unavailable to it: the best available values are 1.0 and 0.5,
# the unmasked maxima 3.0 and 2.0.
MASKED_Q = torch.tensor([[3.0, 1.0, 0.0], [0.5, 0.0, 2.0]])
MASKED_AVAIL = torch.tensor([[0, 1, 1], [1, 1, 0]])


class DMAQer(torch.nn.Module):  # named as PyMARL2's QPLEX mixer
    """V = sum_i Q_i; A = 2 * sum_i (Q_i - max_q_i): the advantage shows which max was used."""

    def forward(self, qs, states, actions=None, max_q_i=None, is_v=False):
        out = qs.sum(-1) if is_v else 2 * (qs - max_q_i).sum(-1)
        return out.view(qs.shape[0], -1, 1)


def test_dueling_advantage_is_measured_from_the_best_available_action():
    joint = torch.tensor([[1, 0], [2, 1]])
    qs = MASKED_Q[torch.arange(2), joint].unsqueeze(0)
    out = diag.STOCK_Q_TOT.get("DMAQer")(DMAQer(), qs, torch.ones(1, 2, 1), joint, MASKED_Q, avail=MASKED_AVAIL)
    # (1,0): V = 1.5, A = 2 * ((1 - 1) + (0.5 - 0.5)) = 0; (2,1): V = 0, A = 2 * ((0 - 1) + (0 - 0.5)) = -3.
    # An unmasked max would give -5.5 and -10.
    assert out.view(-1).tolist() == pytest.approx([1.5, -3.0])


def test_stock_payoff_stats_hand_the_batch_avail_to_the_dueling_mixer():
    class MaskedMAC(FixedMAC):
        def forward(self, batch, t):
            return MASKED_Q.expand(batch.batch_size, -1, -1)

    batch = FakeBatch({"state": torch.ones(2, 2, 1), "avail_actions": MASKED_AVAIL.expand(2, 2, -1, -1).clone()}, 2, 2)
    learner = StockLearner(MaskedMAC(), {}, RecordingLogger(), args(), mixer=DMAQer())
    stats = diag.stock_payoff_stats(learner, batch, torch.as_tensor(resolve_payoff("qtran")))
    assert stats["q_tot_1_0"] == pytest.approx(1.5)
    assert stats["q_tot_2_1"] == pytest.approx(-3.0)


def test_dueling_rejects_avail_of_another_shape():
    joint = torch.tensor([[1, 0]])
    qs = MASKED_Q[torch.arange(2), joint].unsqueeze(0)
    with pytest.raises(ValueError, match=r"avail_actions has shape \[2, 2\], expected \[2, 3\]"):
        diag.STOCK_Q_TOT.get("DMAQer")(DMAQer(), qs, torch.ones(1, 1, 1), joint, MASKED_Q, avail=MASKED_AVAIL[:, :2])


@pytest.fixture
def stock_dmaqer(pymarl2_pristine):
    """PyMARL2's QPLEX mixer class, imported from the host checkout's src/."""
    # conftest's pymarl2_pristine: PYMARL2_DIR, else the suite's own clone (CI: the shared bundle).
    with imported_from_host(pymarl2_pristine, "modules.mixers.dmaq_general") as module:
        yield module.DMAQer


def test_dueling_q_tot_equals_the_qplex_learner_on_the_real_mixer(stock_dmaqer):
    # qplex.yaml's mixer settings, two agents with three actions, a 4-dim state.
    qplex = SimpleNamespace(n_agents=2, n_actions=3, state_shape=4, mixing_embed_dim=32, hypernet_embed=64,
                            adv_hypernet_layers=2, adv_hypernet_embed=64, num_kernel=4, is_minus_one=True,
                            weighted_head=True, is_adv_attention=True, is_stop_gradient=True)
    torch.manual_seed(0)
    mixer = stock_dmaqer(qplex)
    joint = torch.cartesian_prod(torch.arange(3), torch.arange(3))  # [9, 2]
    qs = MASKED_Q[torch.arange(2), joint].unsqueeze(0)  # [1, 9, 2]
    states = torch.randn(1, 1, 4).expand(1, 9, 4)
    onehot = torch.nn.functional.one_hot(joint, 3).float().unsqueeze(0)
    # dmaq_qatten_learner: unavailable actions set to -9999999 before the max over actions.
    masked = MASKED_Q.clone()
    masked[MASKED_AVAIL == 0] = -9999999
    max_q_i = masked.max(-1).values.expand(1, 9, 2)
    with torch.no_grad():
        learner_q_tot = mixer(qs, states, is_v=True) + mixer(qs, states, actions=onehot, max_q_i=max_q_i, is_v=False)
        ours = diag.STOCK_Q_TOT.get("DMAQer")(mixer, qs, states, joint, MASKED_Q, avail=MASKED_AVAIL)
        unmasked = mixer(qs, states, is_v=True) + mixer(
            qs, states, actions=onehot, max_q_i=MASKED_Q.max(-1).values.expand(1, 9, 2), is_v=False)
    torch.testing.assert_close(ours, learner_q_tot)
    assert (ours - unmasked).abs().max() > 0.1  # the mask matters for this mixer at this state


def test_stock_learner_logs_each_agents_utilities():
    logger = RecordingLogger()
    learner = with_stock_additions(StockLearner)(FixedMAC(), {}, logger, args())
    learner.train(one_step_batch(), 0, 0)
    # AGENT_Q row i is agent i's utilities at the game's state; the margins of the paper's Table 1.
    assert {k: v[0][1] for k, v in logger.stats.items() if k.startswith("q_agent_")} == {
        "q_agent_0_0": 3.0, "q_agent_0_1": 1.0, "q_agent_0_2": 0.0,
        "q_agent_1_0": 2.0, "q_agent_1_1": 0.5, "q_agent_1_2": 0.0}
    # VDN: each Q_tot cell is the sum of its margins.
    assert logger.stats["q_tot_2_1"][0][1] == pytest.approx(0.0 + 0.5)


def test_utilities_cover_the_payoffs_actions_only():
    # Agent 1 has two actions in this payoff; its third (unavailable) value is not a utility of the game.
    payoff = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
    stats = diag.payoff_stats(VDNMixer(), AGENT_Q, torch.ones(1), torch.tensor([[1, 1, 1], [1, 1, 0]]), payoff)
    assert sorted(k for k in stats if k.startswith("q_agent_")) == [
        "q_agent_0_0", "q_agent_0_1", "q_agent_0_2", "q_agent_1_0", "q_agent_1_1"]
    assert stats["q_agent_1_1"] == 0.5


@pytest.mark.parametrize("n_actions,logged", [(diag.MAX_UTILITY_ENTRIES // 2, True),
                                              (diag.MAX_UTILITY_ENTRIES // 2 + 1, False)])
def test_utilities_are_logged_up_to_the_size_cap(n_actions, logged):
    agent_q = torch.zeros(2, n_actions)
    payoff = torch.zeros(n_actions, n_actions)  # 2 agents, n_actions each: 2 * n_actions utilities
    stats = diag.payoff_stats(VDNMixer(), agent_q, torch.ones(1), torch.ones(2, n_actions), payoff)
    assert ("q_agent_1_0" in stats) is logged
    assert "payoff_max_abs_error" in stats  # the summary is logged at every size


def test_utilities_must_have_one_row_per_agent_of_the_payoff():
    with pytest.raises(ValueError, match=r"agent_q has shape \[2, 3\], expected \[3, \*\]"):
        diag.payoff_stats(VDNMixer(), AGENT_Q, torch.ones(1), torch.ones(2, 3), torch.zeros(3, 3, 3))


@pytest.mark.parametrize("output", ["pi_logits", None])
def test_a_learner_whose_agents_output_policies_gets_no_igm_diagnostics(output, caplog):
    # PyMARL2's VMIX: a QMIX mixer over critic values, a controller that returns (policy, value).
    config = args(output=output)
    if output is None:
        del config.agent_output_type
    with caplog.at_level(logging.INFO):
        learner = with_stock_additions(StockLearner)(FixedMAC(), {}, RecordingLogger(), config)
    assert learner.train.__func__ is StockLearner.train
    assert "not Q-values" in caplog.text and ("pi_logits" if output else "not set") in caplog.text
