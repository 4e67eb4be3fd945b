"""The sign-symmetry options in our learner, the joint-greedy controller mode and the runner
wrapper that plays joint-greedy test episodes (fake host objects)."""

import copy
from types import SimpleNamespace

import pytest
import torch

from fake_host import CONFIG, RecordingLogger, TinyAgent, make_args, random_batch, scheme
from pymarl_nonmono.errors import ConfigError
from pymarl_nonmono.hosts.pymarl2.controller import NonMonoMAC
from pymarl_nonmono.hosts.pymarl2.learner import NonMonoLearner
from pymarl_nonmono.hosts.pymarl_family import learner as learner_module
from pymarl_nonmono.hosts.pymarl_family.evaluation import JOINT_GREEDY_PREFIX, with_joint_greedy_tests
from pymarl_nonmono.numerics.igm import igm_violation_rates, joint_greedy_actions

SYMMETRY_STATS = {"negative_mixing_gradient_rate", "worst_greedy_action_rate"}


def build(alg="nonmono_qmix_sarsa", seed=0, **overrides):
    torch.manual_seed(seed)
    args = make_args(alg, **overrides)
    mac = NonMonoMAC(scheme(), {"agents": 3}, args, agent_builder=TinyAgent)
    logger = RecordingLogger()
    return NonMonoLearner(mac, scheme(), logger, args), logger


def parameters(learner):
    return [p.detach().clone() for p in learner.params]


def test_every_update_logs_the_symmetry_diagnostics():
    learner, logger = build()
    learner.train(random_batch(), t_env=0, episode_num=0)
    assert SYMMETRY_STATS <= set(logger.stats)
    assert all(0.0 <= logger.stats[k][-1][1] <= 1.0 for k in SYMMETRY_STATS)


def test_with_every_option_off_no_penalty_or_init_runs_and_the_update_is_the_td_update(monkeypatch):
    reference, ref_log = build()
    for i in range(3):
        reference.train(random_batch(seed=i), t_env=i, episode_num=i)

    def forbidden(*args, **kwargs):
        raise AssertionError("a symmetry option ran while switched off")

    monkeypatch.setattr(learner_module, "monotonicity_hinge", forbidden)
    monkeypatch.setattr(learner_module, "igm_hinge", forbidden)
    learner, log = build()
    for i in range(3):
        learner.train(random_batch(seed=i), t_env=i, episode_num=i)
    assert all(torch.equal(a, b) for a, b in zip(parameters(reference), parameters(learner)))
    assert "loss_total" not in log.stats and "igm_hinge" not in log.stats
    assert [v for _, v in log.stats["loss_td"]] == [v for _, v in ref_log.stats["loss_td"]]


@pytest.mark.parametrize("key,stat", [("monotonicity_penalty", "monotonicity_hinge"), ("igm_penalty", "igm_hinge")])
def test_each_penalty_enters_the_loss_with_its_coefficient(key, stat):
    plain, plain_log = build()
    penalised, log = build(**{key: 2.0})
    batch = random_batch(seed=3)
    plain.train(batch, t_env=0, episode_num=0)
    penalised.train(batch, t_env=0, episode_num=0)
    hinge = log.stats[stat][-1][1]
    assert hinge > 0
    assert log.stats["loss_total"][-1][1] == pytest.approx(log.stats["loss_td"][-1][1] + 2.0 * hinge, rel=1e-5)
    assert log.stats["loss_td"][-1][1] == pytest.approx(plain_log.stats["loss_td"][-1][1], rel=1e-6)
    assert not all(torch.equal(a, b) for a, b in zip(parameters(plain), parameters(penalised)))


def test_positive_bias_init_reaches_the_learners_mixer_and_its_target():
    learner, _ = build(mixer_init="positive_bias", mixer_init_bias=0.25)
    for mixer in (learner.mixer, learner.target_mixer):
        assert bool((mixer.hyper_w1[-1].bias == 0.25).all()) and bool((mixer.hyper_w2[-1].bias == 0.25).all())


@pytest.mark.parametrize("overrides,match", [
    (dict(mixer_init="positve_bias"), "did you mean 'positive_bias'"),
    (dict(mixer_init_bias=0.0), r"mixer_init_bias=0\.0 is outside"),
    (dict(monotonicity_penalty=-1.0), r"monotonicity_penalty=-1\.0 is outside"),
    (dict(igm_penalty="1"), r"igm_penalty='1' must be a number"),
    (dict(mixer="vdn", mixer_init="positive_bias"), "mixer='vdn' has none"),
])
def test_bad_symmetry_options_name_the_key(overrides, match):
    with pytest.raises(ConfigError, match=match):
        build(**overrides)


def test_diagnostics_see_the_parameters_that_produced_the_loss():
    learner, logger = build()
    batch = random_batch(seed=4)
    before = copy.deepcopy(learner)
    learner.train(batch, t_env=0, episode_num=0)
    ep = learner_module.episodes_from_batch(batch)
    with torch.no_grad():
        q = before.mac.unroll(batch)
    expected = igm_violation_rates(before.mixer, q[:, :-1], ep.state[:, :-1], ep.avail_actions[:, :-1], ep.mask,
                                   generator=torch.Generator().manual_seed(0))
    assert logger.stats["igm_violation_rate"][-1][1] == expected.exact
    assert logger.stats["negative_mixing_gradient_rate"][-1][1] == expected.negative_gradient
    assert logger.stats["worst_greedy_action_rate"][-1][1] == expected.worst_greedy


# ---------------------------------------------------------------- joint-greedy acting and tests

def test_joint_greedy_mode_acts_on_the_learners_mixer_in_tests_only():
    learner, _ = build()
    mac = learner.mac
    batch = random_batch(seed=5)
    mac.joint_greedy = True
    mac.init_hidden(batch.batch_size)
    acted = mac.select_actions(batch, t_ep=0, t_env=0, test_mode=True)
    mac.init_hidden(batch.batch_size)
    q = mac.forward(batch, 0, test_mode=True)
    expected = joint_greedy_actions(learner.mixer, q.detach(), batch["state"][:, 0], batch["avail_actions"][:, 0])
    assert torch.equal(acted, expected)
    mac.init_hidden(batch.batch_size)
    behaviour = mac.select_actions(batch, t_ep=0, t_env=10**7, test_mode=False)  # epsilon at its floor
    assert behaviour.shape == acted.shape


def test_joint_greedy_mode_without_a_mixer_says_so():
    torch.manual_seed(0)
    mac = NonMonoMAC(scheme(), {"agents": 3}, make_args("nonmono_qmix"), agent_builder=TinyAgent)
    mac.joint_greedy = True
    batch = random_batch()
    mac.init_hidden(batch.batch_size)
    with pytest.raises(RuntimeError, match="need the learner's mixer"):
        mac.select_actions(batch, t_ep=0, t_env=0, test_mode=True)


class FakeRunner:
    """PyMARL2's runner protocol: a test set is logged with prefix 'test_' once test_nepisode
    test episodes are in; each run plays batch_size_run episodes."""

    def __init__(self, args, logger):
        self.args, self.logger = args, logger
        self.batch_size = args.batch_size_run
        self.test_returns, self.modes, self.t_env = [], [], 0

    def setup(self, scheme, groups, preprocess, mac):
        self.mac = mac

    def run(self, test_mode=False):
        self.modes.append(("test" if test_mode else "train", getattr(self.mac, "joint_greedy", None)))
        if test_mode:
            self.test_returns.extend([1.0] * self.batch_size)
            if len(self.test_returns) == self.args.test_nepisode:
                self._log(self.test_returns, {}, "test_")
        return "batch"

    def _log(self, returns, stats, prefix):
        self.logger.log_stat(prefix + "return_mean", sum(returns) / len(returns), self.t_env)
        returns.clear()


def runner_args(**overrides):
    values = dict(test_joint_greedy=True, test_nepisode=4, batch_size_run=2, n_agents=3, n_actions=4)
    values.update(overrides)
    return SimpleNamespace(**values)


def make_runner(mac, **overrides):
    logger = RecordingLogger()
    runner = with_joint_greedy_tests(FakeRunner)(args=runner_args(**overrides), logger=logger)
    runner.setup(None, None, None, mac)
    return runner, logger


def test_after_each_test_set_a_joint_greedy_set_is_played_and_logged_under_its_own_prefix():
    learner, _ = build()
    runner, logger = make_runner(learner.mac)
    assert runner.run(test_mode=False) == "batch"
    for _ in range(2):  # run.py: test_nepisode // batch_size_run test runs
        assert runner.run(test_mode=True) == "batch"
    assert runner.modes == [("train", False), ("test", False), ("test", False), ("test", True), ("test", True)]
    assert set(logger.stats) == {"test_return_mean", JOINT_GREEDY_PREFIX + "return_mean"}
    assert learner.mac.joint_greedy is False
    runner.run(test_mode=False)
    assert runner.modes[-1] == ("train", False)


def test_with_the_key_off_the_runner_is_the_hosts():
    runner = with_joint_greedy_tests(FakeRunner)(args=runner_args(test_joint_greedy=False), logger=RecordingLogger())
    assert type(runner).run is FakeRunner.run and "run" not in vars(runner)


def test_joint_greedy_tests_refuse_a_stock_controller_and_too_many_joint_actions():
    with pytest.raises(ConfigError, match="needs our controller.*SimpleNamespace"):
        make_runner(SimpleNamespace())
    learner, _ = build()
    with pytest.raises(ConfigError, match=r"11\^4 here, above the limit of 4096"):
        make_runner(learner.mac, n_agents=4, n_actions=11)
    with pytest.raises(ConfigError, match="test_joint_greedy='yes' must be true or false"):
        with_joint_greedy_tests(FakeRunner)(args=runner_args(test_joint_greedy="yes"), logger=None)


def _shipped_alg_yamls():
    return sorted((CONFIG / "algs").glob("*.yaml")) + sorted((CONFIG / "hosts" / "epymarl" / "algs").glob("*.yaml"))


PAPER_LITERAL = {"mixer_init": "default", "monotonicity_penalty": 0.0, "igm_penalty": 0.0, "sign_gauge": "off"}


@pytest.mark.parametrize("path", _shipped_alg_yamls(), ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_every_shipped_config_says_which_sign_symmetry_behaviour_it_has(path):
    # The study's verdict (docs/sign_symmetry.md) is stated in each file: changing a default without
    # changing the statement, or the reverse, fails here.
    import yaml

    text = path.read_text()
    cfg = yaml.safe_load(text)
    literal = {key: cfg[key] for key in PAPER_LITERAL} == PAPER_LITERAL
    assert ("# Sign symmetry: paper-literal" in text) == literal, path
    assert "# Sign symmetry:" in text and "docs/sign_symmetry.md" in text, f"{path}: no statement of its sign-symmetry behaviour"


def test_the_target_controller_holds_no_mixer_of_its_own():
    learner, _ = build()
    assert learner.mac.mixer is learner.mixer
    assert learner.target_mac.mixer is None
    # Every mixer module the learner reaches is one of the two it trains and copies.
    mixers = [m for m in (learner.mac.mixer, learner.target_mac.mixer, learner.mixer, learner.target_mixer) if m is not None]
    assert {id(m) for m in mixers} == {id(learner.mixer), id(learner.target_mixer)}
