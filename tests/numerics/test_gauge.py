"""The sign gauge's numerics: the mirror is an exact symmetry of Q_tot and of the optimiser's
course, and the greedy-flip rule flips mirrored agents and only those (numerics/gauge.py)."""

import copy

import pytest
import torch

from pymarl_nonmono.numerics.gauge import (
    SIGN_GAUGES,
    GreedyFlipGauge,
    make_sign_gauge,
    mirror_agent_,
    scan_agents,
)
from pymarl_nonmono.numerics.igm import joint_actions, joint_greedy_actions, joint_q_table
from pymarl_nonmono.numerics.mixers import SIGN_SYMMETRIC_MIXERS, MIXERS, Mixer, VDNMixer
from small_mixers import hyper

N, A, S = 3, 4, 5


def states(m=16, seed=0, p_avail=1.0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(m, N, A, generator=g)
    av = (torch.rand(m, N, A, generator=g) < p_avail).int()
    av[..., 0] = 1
    return q, torch.randn(m, S, generator=g), av


def negated(q, agent):
    q = q.clone()
    q[:, agent] = -q[:, agent]
    return q


@pytest.mark.parametrize("agent", range(N))
def test_the_mirror_leaves_q_tot_of_every_joint_action_unchanged(agent):
    mixer = hyper(n=N, s=S)
    mirrored = copy.deepcopy(mixer)
    mirror_agent_(mirrored, agent)
    q, s, _ = states(m=8)
    for m in range(8):
        torch.testing.assert_close(joint_q_table(mirrored, negated(q, agent)[m], s[m]), joint_q_table(mixer, q[m], s[m]))
    # Without the utilities' sign, the mirrored mixer is a different function: the rows did move.
    assert not torch.allclose(joint_q_table(mirrored, q[0], s[0]), joint_q_table(mixer, q[0], s[0]))


@pytest.mark.parametrize("name", sorted(set(MIXERS.names()) - set(SIGN_SYMMETRIC_MIXERS)))
def test_mixers_without_the_symmetry_refuse_the_mirror(name):
    mixer = hyper(name, n=N, s=S) if name != "vdn" else VDNMixer(N, S)
    with pytest.raises(ValueError, match="nonmono_qmix"):
        mirror_agent_(mixer, 0)


def test_every_sign_symmetric_mixer_really_has_the_symmetry():
    for name in SIGN_SYMMETRIC_MIXERS:
        mixer = hyper(name, n=2, s=S)
        mirrored = copy.deepcopy(mixer)
        mirror_agent_(mirrored, 1)
        q, s, _ = states(m=4)
        q = q[:, :2]
        torch.testing.assert_close(mirrored(negated(q, 1).unsqueeze(1)[..., 0], s.unsqueeze(1)),
                                   mixer(q.unsqueeze(1)[..., 0], s.unsqueeze(1)))


def twin_training(optimiser_cls, flip_after, steps, mirror_state=True, **opt_kwargs):
    """Train agent utilities (a free tensor per agent) and a mixer on a fixed regression, twice:
    plainly, and with agent 1 mirrored after ``flip_after`` steps. Returns both sets of
    parameters after ``steps`` steps, the mirrored one mapped back through the mirror."""
    torch.manual_seed(3)
    q, s, _ = states(m=32, seed=1)
    target = torch.randn(32)
    runs = []
    for flip in (False, True):
        mixer = hyper(n=N, s=S, seed=5)
        utilities = torch.nn.Parameter(q.clone())
        sign = torch.ones(N)
        opt = optimiser_cls([utilities, *mixer.parameters()], **opt_kwargs)
        for step in range(steps):
            if flip and step == flip_after:
                sign[1] = -1
                with torch.no_grad():
                    utilities[:, 1] = -utilities[:, 1]  # what the controller's sign does to the output
                if mirror_state:
                    mirror_agent_(mixer, 1, opt)
                else:
                    mirror_agent_(mixer, 1)
                # The raw network is unchanged by a flip: undo the utilities' negation and carry the
                # sign instead, as the controller does.
                with torch.no_grad():
                    utilities[:, 1] = -utilities[:, 1]
            opt.zero_grad()
            values = utilities * sign.view(1, N, 1)
            q_tot = mixer(values[:, :, 0].unsqueeze(1), s.unsqueeze(1)).squeeze(1)
            ((q_tot - target) ** 2).mean().backward()
            opt.step()
        if flip:
            mirror_agent_(mixer, 1)  # map back, to compare parameter by parameter
        runs.append((utilities.detach().clone(), [p.detach().clone() for p in mixer.parameters()]))
    return runs


@pytest.mark.parametrize("optimiser_cls,kwargs", [
    (torch.optim.Adam, dict(lr=0.01)),
    (torch.optim.RMSprop, dict(lr=0.01, alpha=0.99, eps=1e-5)),
    (torch.optim.RMSprop, dict(lr=0.01, momentum=0.9, centered=True)),
    (torch.optim.SGD, dict(lr=0.01, momentum=0.9)),
])
def test_after_a_flip_the_optimiser_moves_every_parameter_as_it_would_have(optimiser_cls, kwargs):
    (plain_u, plain_p), (flip_u, flip_p) = twin_training(optimiser_cls, flip_after=3, steps=8, **kwargs)
    torch.testing.assert_close(flip_u, plain_u, rtol=1e-5, atol=1e-6)
    for a, b in zip(flip_p, plain_p):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_without_mirroring_the_first_moments_the_flipped_rows_go_astray():
    (_, plain_p), (_, flip_p) = twin_training(torch.optim.Adam, flip_after=3, steps=5, mirror_state=False, lr=0.01)
    assert not all(torch.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(flip_p, plain_p))


def test_optimiser_state_it_does_not_know_is_refused():
    mixer = hyper(n=N, s=S)
    opt = torch.optim.Adagrad(mixer.parameters(), lr=0.1)
    q, s, _ = states(m=4)
    mixer(q[:, :, 0].unsqueeze(1), s.unsqueeze(1)).sum().backward()
    opt.step()
    with pytest.raises(ValueError, match="cannot mirror optimiser state 'sum'"):
        mirror_agent_(mixer, 0, opt)


# ------------------------------------------------------------------ the greedy-flip rule

class TableMixer(Mixer):
    """Q_tot read from a payoff table: agent utilities are the action indices themselves
    (``q[i, a] = a`` up to a sign), so the mixer can recover the joint action from them.
    Mirroring agent i negates its utilities' decoding, as the HyperMixer's rows would."""

    def __init__(self, payoff):
        payoff = torch.as_tensor(payoff, dtype=torch.float32)
        super().__init__(payoff.dim(), 1)
        self.payoff = payoff
        self.decode = torch.ones(payoff.dim())

    def mix(self, agent_qs, states):
        joint = (agent_qs * self.decode).round().long()
        return self.payoff[tuple(joint.T)]


def table_utilities(n, a, mirrored=()):
    """``q [1, N, A]`` whose values are the action index; agents in ``mirrored`` negated (so their
    greedy action is the last index, their argmin the first) with the decoder to match."""
    q = torch.arange(a, dtype=torch.float32).repeat(n, 1)
    # Make each agent's greedy action 0 when not mirrored: utilities decreasing in the index.
    q = -q
    decode = -torch.ones(n)
    for i in mirrored:
        q[i] = -q[i]
        decode[i] = -decode[i]
    return q.unsqueeze(0), decode


def test_a_mirrored_agent_is_flipped_and_then_the_agents_play_the_joint_argmax():
    # Additive payoff: every agent's best action is 0.
    payoff = torch.tensor([[6.0, 4, 2], [3, 1, -1], [2, 0, -2]])
    mixer = TableMixer(payoff)
    q, decode = table_utilities(2, 3, mirrored=(1,))
    mixer.decode = decode
    s, av = torch.zeros(1, 1), torch.ones(1, 2, 3)
    assert q[0].argmax(-1).tolist() == [0, 2]  # agent 1 on its worst action
    gauge = GreedyFlipGauge(2, interval=1, margin=1.0, patience=2)
    assert gauge.decide(mixer, q, s, av, td_scale=0.5)[0] == []  # one check of evidence: not yet
    flips, evidence = gauge.decide(mixer, q, s, av, td_scale=0.5)
    assert flips == [1] and evidence[1].gain == pytest.approx(4.0) and evidence[1].share == 1.0
    assert evidence[0].gain < 0  # agent 0 is right where it is
    # The flip, as the learner applies it: the controller's sign and the mixer's rows.
    q[:, 1] = -q[:, 1]
    mixer.decode[1] = -mixer.decode[1]
    assert q[0].argmax(-1).tolist() == joint_greedy_actions(mixer, q, s, av)[0].tolist() == [0, 0]
    for _ in range(20):
        assert gauge.decide(mixer, q, s, av, td_scale=0.5)[0] == []


def test_a_correct_factorisation_is_never_flipped():
    mixer = hyper(n=N, s=S, name="qmix")  # monotonic: every agent's greedy action is its best
    gauge = GreedyFlipGauge(N, interval=1, margin=0.0, patience=1)
    for seed in range(30):
        q, s, av = states(m=32, seed=seed, p_avail=0.7)
        flips, evidence = gauge.decide(mixer, q, s, av, td_scale=0.0)
        assert flips == [] and all(ev.gain <= 0 for ev in evidence)


def test_the_scan_judges_later_agents_after_earlier_flips():
    # Both agents mirrored (greedy (2, 2)): agent 0's argmin raises Q_tot from 2 to 5 at (0, 2);
    # agent 1 must then be judged from (0, 2), where its argmin gives 9, not from (2, 2).
    payoff = torch.tensor([[9.0, 0, 5], [0, 1, 0], [5, 0, 2]])
    mixer = TableMixer(payoff)
    q, decode = table_utilities(2, 3, mirrored=(0, 1))
    mixer.decode = decode
    s, av = torch.zeros(1, 1), torch.ones(1, 2, 3)
    flips, evidence = GreedyFlipGauge(2, 1, 0.0, 1).decide(mixer, q, s, av, td_scale=0.0)
    assert flips == [0, 1]
    assert evidence[0].gain == pytest.approx(3.0)  # (2,2) -> (0,2): 2 -> 5
    assert evidence[1].gain == pytest.approx(4.0)  # judged from (0,2): 5 -> 9, not from (2,2): 2 -> 5


def test_agents_without_a_choice_give_no_evidence():
    mixer = hyper(n=N, s=S)
    q, s, av = states(m=8)
    av[:, 2] = 0
    av[:, 2, 0] = 1  # agent 2 can only no-op (dead, in SMAC)
    evidence = scan_agents(mixer, q, s, av, 0.0, lambda ev: False)
    assert evidence[2].states == 0 and not evidence[2].holds
    assert evidence[0].states == 8


class ScriptedMixer(Mixer):
    """Q_tot = sum_i w_i * q_i * s, with a weight per agent the test sets between checks and a
    one-feature state that scales it."""

    def __init__(self, n):
        super().__init__(n, 1)
        self.w = torch.ones(n)

    def mix(self, agent_qs, states):
        return (agent_qs * self.w).sum(-1) * states[:, 0]


def test_evidence_needs_most_states_not_only_a_large_mean():
    mixer = ScriptedMixer(1)
    mixer.w = torch.tensor([-1.0])
    q = torch.tensor([[[1.0, 0.0]]]).repeat(4, 1, 1)  # greedy action 0, argmin 1: gain = s per state
    av = torch.ones(4, 1, 2)
    everywhere = scan_agents(mixer, q, torch.tensor([[1.0], [1.0], [1.0], [1.0]]), av, 0.5, lambda ev: False)
    assert everywhere[0].holds and everywhere[0].share == 1.0
    one_state = scan_agents(mixer, q, torch.tensor([[100.0], [-1.0], [-1.0], [-1.0]]), av, 0.5, lambda ev: False)
    # A mean gain of (100 - 3) / 4, all of it from one state of four: not evidence.
    assert one_state[0].gain == pytest.approx(24.25) and one_state[0].share == 0.25 and not one_state[0].holds


def test_patience_ties_and_backoff():
    """Evidence must hold at consecutive checks; after each flip of an agent it must hold twice as long."""
    mixer = ScriptedMixer(1)
    q = torch.tensor([[[1.0, 0.0]]])  # greedy action 0, argmin 1
    s, av = torch.ones(1, 1), torch.ones(1, 1, 2)
    gauge = GreedyFlipGauge(1, interval=1, margin=1.0, patience=2)

    def check(weight, scale=0.1):
        mixer.w = torch.tensor([weight])
        return gauge.decide(mixer, q, s, av, td_scale=scale)[0]

    # A difference that changes sign from check to check (a tie up to noise) never flips.
    for k in range(20):
        assert check(-0.5 if k % 2 else 0.5) == []
    # Below the threshold (margin x TD scale) it is not evidence either: gain 0.5 < 1.0 x 1.0.
    for k in range(5):
        assert check(-0.5, scale=1.0) == []
    assert check(-1.0) == []
    assert check(-1.0) == [0]  # two consecutive checks
    # The flip: the controller negates the utilities, the mixer its weight (-1 -> 1): the same Q_tot,
    # on which the greedy action is now the better one.
    q = -q
    assert [check(1.0) for _ in range(3)] == [[], [], []]
    # To flip back it needs 4 consecutive checks of evidence.
    assert [check(-1.0) for _ in range(4)] == [[], [], [], [0]]
    assert gauge.flips == [2] and gauge.required(0) == 8


def test_checks_come_every_interval_updates():
    gauge = GreedyFlipGauge(2, interval=3, margin=1.0, patience=1)
    assert [gauge.due(t) for t in range(7)] == [True, False, False, True, False, False, True]


def test_no_check_before_the_start_and_the_interval_counts_from_it():
    gauge = GreedyFlipGauge(2, interval=3, margin=1.0, patience=1, start=100)
    assert [gauge.due(t) for t in (0, 40, 99)] == [False] * 3 and gauge.updates == 0
    assert [gauge.due(t) for t in (105, 110, 120, 130)] == [True, False, False, True]
    with pytest.raises(ValueError, match="sign_gauge_start"):
        GreedyFlipGauge(2, interval=3, margin=1.0, patience=1, start=-1)


def test_state_round_trip_and_agent_count_check():
    gauge = GreedyFlipGauge(2, interval=3, margin=1.0, patience=1)
    gauge.updates, gauge.streak, gauge.flips = 7, [1, 0], [0, 2]
    other = GreedyFlipGauge(2, interval=3, margin=1.0, patience=1)
    other.load_state_dict(gauge.state_dict())
    assert other.state_dict() == gauge.state_dict() == {"updates": 7, "streak": [1, 0], "flips": [0, 2]}
    with pytest.raises(ValueError, match="for 2 agents, this run has 3"):
        GreedyFlipGauge(3, 3, 1.0, 1).load_state_dict(gauge.state_dict())


def test_registry():
    assert SIGN_GAUGES.names() == ["greedy_flip", "off"]
    assert make_sign_gauge("off", n_agents=2, interval=1, margin=1.0, patience=1, start=0) is None
    gauge = make_sign_gauge("greedy_flip", n_agents=2, interval=4, margin=0.5, patience=3, start=7)
    assert (gauge.interval, gauge.margin, gauge.patience, gauge.start) == (4, 0.5, 3, 7)
    with pytest.raises(ValueError, match="did you mean 'greedy_flip'"):
        make_sign_gauge("greedy_flp", n_agents=2, interval=1, margin=1.0, patience=1, start=0)


def test_joint_actions_helper_is_consistent_with_the_table_mixer():
    payoff = torch.arange(9.0).view(3, 3)
    mixer = TableMixer(payoff)
    q, decode = table_utilities(2, 3)
    mixer.decode = decode
    values = torch.gather(q.expand(9, -1, -1), 2, joint_actions(2, 3).unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(mixer.mix(values, torch.zeros(9, 1)), payoff.view(-1))
