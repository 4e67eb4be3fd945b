"""The sign gauge in our learner and controller (fake host objects): a flip changes nothing the
loss or the optimiser sees and only which image the agents act on; checkpoints keep the signs;
with the gauge off nothing of it runs; ties do not make agents flip back and forth."""

import copy

import pytest
import torch

from fake_host import RecordingLogger, TinyAgent, make_args, matrix_batch, random_batch, scheme
from pymarl_nonmono.errors import ConfigError
from pymarl_nonmono.hosts.pymarl_family import controller as controller_module
from pymarl_nonmono.hosts.pymarl_family import learner as learner_module
from pymarl_nonmono.hosts.pymarl2.controller import NonMonoMAC
from pymarl_nonmono.hosts.pymarl2.learner import NonMonoLearner
from pymarl_nonmono.numerics import gauge as gauge_module
from pymarl_nonmono.numerics.igm import joint_actions

GAUGE = dict(sign_gauge="greedy_flip", sign_gauge_interval=1, sign_gauge_margin=1.0, sign_gauge_patience=3)


def build(alg="nonmono_qmix_sarsa", seed=0, n_agents=3, n_actions=4, sch=None, **overrides):
    torch.manual_seed(seed)
    args = make_args(alg, n_agents=n_agents, n_actions=n_actions, **overrides)
    sch = sch or scheme(n_actions=n_actions)
    mac = NonMonoMAC(sch, {"agents": n_agents}, args, agent_builder=TinyAgent)
    logger = RecordingLogger()
    return NonMonoLearner(mac, sch, logger, args), logger


def q_tot_table(learner, batch, t=0):
    """Q_tot of every joint action at step t of every episode, from the online and the target side."""
    out = []
    for mac, mixer in ((learner.mac, learner.mixer), (learner.target_mac, learner.target_mixer)):
        with torch.no_grad():
            q = mac.unroll(batch)[:, t]  # [B, N, A]
        b, n, a = q.shape
        joint = joint_actions(n, a)
        values = torch.gather(q.unsqueeze(1).expand(b, joint.shape[0], n, a), 3,
                              joint.view(1, -1, n, 1).expand(b, -1, n, 1)).squeeze(-1)
        out.append(mixer.q_tot_of_candidates(values, batch["state"][:, t]).detach())
    return out


def trained(**overrides):
    learner, logger = build(**{**GAUGE, **overrides})
    for i in range(3):
        learner.train(random_batch(seed=i), t_env=i, episode_num=i)
    return learner, logger


@pytest.mark.parametrize("agent", [0, 2])
def test_a_flip_leaves_every_q_tot_the_loss_and_the_course_of_training_unchanged(agent):
    learner, _ = trained(sign_gauge_interval=10**6)  # the gauge never checks: flips by hand only
    learner.mac.hidden_states = learner.target_mac.hidden_states = None  # graph tensors: not deep-copyable
    twin = copy.deepcopy(learner)
    twin.logger = RecordingLogger()
    learner.logger = RecordingLogger()
    batch = random_batch(seed=7)
    before = q_tot_table(learner, batch)
    twin.flip_agent(agent)
    for ours, theirs in zip(q_tot_table(twin, batch), before):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    # Two more updates, each logging the loss of the parameters before its step: equal losses, and
    # parameters that stay each other's mirror image (Adam's moments were mirrored too).
    for i in range(2):
        b = random_batch(seed=10 + i)
        learner.train(b, t_env=10 + i, episode_num=10 + i)
        twin.train(b, t_env=10 + i, episode_num=10 + i)
        assert twin.logger.stats["loss_td"][-1][1] == pytest.approx(learner.logger.stats["loss_td"][-1][1], rel=1e-5)
    for ours, theirs in zip(twin.mac.agent.parameters(), learner.mac.agent.parameters()):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    mirrored = {id(p) for p, _ in twin.mixer.agent_mirror_rows(agent)}
    for (name, ours), theirs in zip(twin.mixer.named_parameters(), learner.mixer.parameters()):
        if id(ours) in mirrored:
            rows = slice(agent * twin.mixer.embed_dim, (agent + 1) * twin.mixer.embed_dim)
            expected = theirs.detach().clone()
            expected[rows] = -expected[rows]
            torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6, msg=name)
        else:
            torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6, msg=name)


def test_the_flipped_agent_now_plays_its_former_argmin():
    learner, _ = trained(sign_gauge_interval=10**6)
    batch = random_batch(seed=2)
    batch.data["avail_actions"][:] = 1
    mac = learner.mac
    mac.init_hidden(batch.batch_size)
    q = mac.forward(batch, 0, test_mode=True).detach()
    learner.flip_agent(1)
    mac.init_hidden(batch.batch_size)
    flipped = mac.forward(batch, 0, test_mode=True).detach()
    assert torch.equal(flipped.argmax(-1)[:, 1], q.argmin(-1)[:, 1])
    assert torch.equal(flipped.argmax(-1)[:, [0, 2]], q.argmax(-1)[:, [0, 2]])
    acted = mac.select_actions(batch, t_ep=0, t_env=10**7, test_mode=True)
    mac.init_hidden(batch.batch_size)
    acted = mac.select_actions(batch, t_ep=0, t_env=10**7, test_mode=True)
    assert torch.equal(acted[:, 1], q.argmin(-1)[:, 1])


def train_on_matrix_game(payoff, seed, episodes, **overrides):
    """Our learner on a one-step matrix game, as the study's regime does it in miniature: one
    episode per update, epsilon-greedy acting annealed over half the run, a replay of the last 64
    episodes sampled 32 at a time. Returns the learner and its logger."""
    payoff = torch.as_tensor(payoff, dtype=torch.float32)
    n, a = payoff.dim(), payoff.shape[0]
    learner, logger = build(n_agents=n, n_actions=a, seed=seed, lr=0.005, epsilon_anneal_time=episodes // 2,
                            sch=scheme(n_actions=a), **overrides)
    g = torch.Generator().manual_seed(seed)
    replay = []
    for ep in range(episodes):
        one = matrix_batch(payoff, torch.zeros(1, n, dtype=torch.long), a)
        learner.mac.init_hidden(1)
        actions = learner.mac.select_actions(one, t_ep=0, t_env=ep).view(1, n)
        replay = (replay + [actions])[-64:]
        if len(replay) >= 32:
            pick = torch.randperm(len(replay), generator=g)[:32]
            batch = matrix_batch(payoff, torch.cat([replay[i] for i in pick.tolist()]), a)
            learner.train(batch, t_env=ep, episode_num=ep)
    return learner, logger


PAPER_B = [[12, 0, 10], [0, 0, 10], [10, 10, 10]]


@pytest.mark.parametrize("seed", [11, 12])
def test_a_payoff_with_ties_does_not_make_agents_flip_back_and_forth(seed, monkeypatch):
    """Game B: a row and a column of equal entries. A rule that flips on the sign of a difference
    between near-equal Q_tot values, at every check, flips agents back and forth for the whole run;
    with the shipped settings (no margin over the TD error: only the tie floor, patience and back-off)
    an agent changes sides at most twice."""
    learner, _ = train_on_matrix_game(PAPER_B, seed, episodes=600, sign_gauge="greedy_flip", sign_gauge_interval=5)
    assert learner.cfg.sign_gauge_margin == 0.0 and learner.cfg.sign_gauge_patience == 3  # as shipped
    assert max(learner.gauge.flips) <= 2, learner.gauge.flips
    monkeypatch.setattr(gauge_module.GreedyFlipGauge, "required", lambda self, agent: 1)
    naive, _ = train_on_matrix_game(PAPER_B, seed, episodes=600, **{**GAUGE, "sign_gauge_interval": 5,
                                                                     "sign_gauge_margin": 0.0})
    assert min(naive.gauge.flips) > 5, naive.gauge.flips


def test_the_learner_logs_the_gauge_and_a_real_mirror_is_flipped():
    """An additive game where every agent's best action is fixed: whichever image training reaches,
    the gauge ends with the agents on the optimum."""
    payoff = [[2, 0, 5], [6, 4, 9], [3, 1, 6]]  # best: (1, 2)
    learner, logger = train_on_matrix_game(payoff, 3, episodes=600, **{**GAUGE, "sign_gauge_interval": 5})
    assert {"sign_flips", "negative_sign_share", "sign_gauge_gain", "sign_gauge_threshold",
            "sign_gauge_share"} <= set(logger.stats)
    last = learner.gauge.last_evidence
    assert logger.stats["sign_gauge_gain"][-1][1] == max(ev.gain for ev in last)
    assert logger.stats["sign_gauge_threshold"][-1][1] == last[0].threshold > 0
    one = matrix_batch(torch.tensor(payoff, dtype=torch.float32), torch.zeros(1, 2, dtype=torch.long), 3)
    learner.mac.init_hidden(1)
    assert learner.mac.select_actions(one, t_ep=0, t_env=10**7, test_mode=True).view(-1).tolist() == [1, 2]
    assert logger.stats["sign_flips"][-1][1] == learner.gauge.total_flips
    assert logger.stats["negative_sign_share"][-1][1] == pytest.approx(float((learner.mac.agent_sign < 0).float().mean()))


@pytest.mark.parametrize("start", [0, 300, "epsilon_anneal_time"])
def test_a_gauge_with_a_start_flips_nothing_before_it(start, caplog):
    """The additive game above, where training reaches the mirror image early: with a start, the
    first flip comes after it, and the mirror is still repaired by the end. Named by the exploration
    key, the start is where epsilon reaches its floor (300 episodes in this miniature)."""
    payoff = [[2, 0, 5], [6, 4, 9], [3, 1, 6]]  # best: (1, 2)
    with caplog.at_level("INFO", logger="pymarl_nonmono.hosts.pymarl_family.learner"):
        learner, _ = train_on_matrix_game(payoff, 3, episodes=600,
                                          **{**GAUGE, "sign_gauge_interval": 5, "sign_gauge_start": start})
    flipped_at = [int(r.getMessage().split("t_env=")[1].split(" ")[0]) for r in caplog.records
                  if "changes sides" in r.getMessage()]
    assert learner.gauge.start == (300 if start == "epsilon_anneal_time" else start)
    assert flipped_at and min(flipped_at) >= learner.gauge.start
    if start == 0:
        assert min(flipped_at) < 300  # so the start of the other case is what holds the flips back
    one = matrix_batch(torch.tensor(payoff, dtype=torch.float32), torch.zeros(1, 2, dtype=torch.long), 3)
    learner.mac.init_hidden(1)
    assert learner.mac.select_actions(one, t_ep=0, t_env=10**7, test_mode=True).view(-1).tolist() == [1, 2]


def test_with_the_gauge_off_none_of_it_runs(monkeypatch, tmp_path):
    def forbidden(*args, **kwargs):
        raise AssertionError("sign-gauge code ran with sign_gauge=off")

    monkeypatch.setattr(learner_module, "mirror_agent_", forbidden)
    monkeypatch.setattr(gauge_module.GreedyFlipGauge, "decide", forbidden)
    learner, logger = build()
    assert learner.cfg.sign_gauge == "off" and learner.gauge is None
    for i in range(3):
        learner.train(random_batch(seed=i), t_env=i, episode_num=i)
    assert learner.mac.agent_sign is None and learner.target_mac.agent_sign is None
    q = torch.randn(2, 3, 3, 4)
    assert learner.mac._signed(q) is q  # not even a multiplication by one
    assert "sign_flips" not in logger.stats and "negative_sign_share" not in logger.stats
    learner.save_models(str(tmp_path))
    assert not (tmp_path / controller_module.AGENT_SIGN_FILE).exists()
    assert "sign_gauge" not in torch.load(tmp_path / "nonmono_learner.th")


def test_checkpoints_keep_signs_and_the_gauges_state(tmp_path):
    learner, _ = trained()
    learner.flip_agent(1)
    learner.gauge.streak[2] = 2
    learner.save_models(str(tmp_path))
    fresh, _ = build(**GAUGE, seed=5)
    fresh.load_models(str(tmp_path))
    assert fresh.mac.agent_sign.tolist() == fresh.target_mac.agent_sign.tolist() == [1.0, -1.0, 1.0]
    assert fresh.gauge.state_dict() == learner.gauge.state_dict()
    batch = random_batch(seed=9)
    for a, b in zip(q_tot_table(fresh, batch), q_tot_table(learner, batch)):
        torch.testing.assert_close(a, b)
    # A run with the gauge off acts on a checkpoint's signs too: without them it would play the mirror.
    off, _ = build(seed=6)
    off.load_models(str(tmp_path))
    assert off.mac.agent_sign.tolist() == [1.0, -1.0, 1.0]
    torch.testing.assert_close(q_tot_table(off, batch)[0], q_tot_table(learner, batch)[0])
    # A checkpoint from before the gauge (no sign file) has every sign +1.
    (tmp_path / controller_module.AGENT_SIGN_FILE).unlink()
    fresh.load_models(str(tmp_path))
    assert fresh.mac.agent_sign.tolist() == fresh.target_mac.agent_sign.tolist() == [1.0, 1.0, 1.0]


def test_target_copies_carry_the_signs():
    learner, _ = trained(sign_gauge_interval=10**6, target_update_interval=1)
    learner.mac.flip_agent_sign(0)  # the online side alone (not a flip): a copy must bring it over
    learner.train(random_batch(seed=4), t_env=4, episode_num=4)
    assert learner.target_mac.agent_sign.tolist() == learner.mac.agent_sign.tolist() == [-1.0, 1.0, 1.0]


@pytest.mark.parametrize("mixer", ["qmix", "softplus_qmix", "vdn"])
def test_mixers_without_the_symmetry_refuse_the_gauge(mixer):
    with pytest.raises(ConfigError, match="needs a mixer with the sign symmetry"):
        build(mixer=mixer, **GAUGE)


@pytest.mark.parametrize("overrides,match", [
    (dict(sign_gauge="greedy_flp"), "did you mean 'greedy_flip'"),
    (dict(sign_gauge_interval=0), "sign_gauge_interval"),
    (dict(sign_gauge_margin=-0.1), "sign_gauge_margin"),
    (dict(sign_gauge_patience=1.5), "sign_gauge_patience"),
    (dict(sign_gauge_start=-1), "sign_gauge_start"),
    (dict(sign_gauge_start="epsilon_anneal"), "or 'epsilon_anneal_time'"),
])
def test_bad_gauge_keys_name_the_key(overrides, match):
    with pytest.raises(ConfigError, match=match):
        build(**{**GAUGE, **overrides})


@pytest.mark.parametrize("gauge", [False, True])
def test_agents_on_their_worst_action_at_two_logs_in_a_row_get_one_warning(gauge, caplog):
    learner, _ = build(**(GAUGE if gauge else {}))
    rates = iter([0.9, 0.3, 0.8, 0.95, 0.99, 0.97])  # the warning is due at the 4th log, and only then
    learner.diagnostics = lambda mixer, q, ep: {"worst_greedy_action_rate": next(rates)}
    with caplog.at_level("WARNING", logger="pymarl_nonmono.hosts.pymarl_family.learner"):
        for i in range(6):
            learner.train(random_batch(seed=i), t_env=100 * i, episode_num=i)
    warnings = [r.getMessage() for r in caplog.records if "mirror image" in r.getMessage()]
    assert len(warnings) == 1 and "t_env=300" in warnings[0] and "95%" in warnings[0]
    assert ("has not changed their side yet" if gauge else "sign_gauge=greedy_flip") in warnings[0]
