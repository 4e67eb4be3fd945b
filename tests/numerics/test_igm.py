import pytest
import torch

from pymarl_nonmono.numerics.igm import (
    EXACT_JOINT_ACTIONS,
    exact_check_affordable,
    igm_summary,
    igm_unilateral_violation_rate,
    igm_violation_rate,
    igm_violation_rates,
    joint_actions,
    joint_q_table,
)
from pymarl_nonmono.numerics.mixers import Mixer, VDNMixer

QTRAN = torch.tensor([[8.0, -12.0, -12.0], [-12.0, 0.0, 0.0], [-12.0, 0.0, 0.0]])


class NegatedSum(Mixer):
    """Q_tot = -sum_i Q_i: every agent's greedy action is the team's worst."""

    def mix(self, agent_qs, states):
        return -agent_qs.sum(-1)


class TableMixer(Mixer):
    """Two agents, two actions, utilities 1 (action 0) and 0 (action 1): Q_tot from a table."""

    def __init__(self, table):
        super().__init__(2, 1)
        self.table = table

    def mix(self, agent_qs, states):
        idx = (1 - agent_qs).round().long()
        return self.table[idx[:, 0], idx[:, 1]]


def test_joint_actions_row_major():
    assert joint_actions(2, 2).tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    assert joint_actions(3, 4).shape == (64, 3)


def test_vdn_table_is_the_outer_sum():
    q = torch.tensor([[1.0, 2.0, 3.0], [10.0, 20.0, 30.0]])
    table = joint_q_table(VDNMixer(2, 1), q, torch.ones(1))
    torch.testing.assert_close(table, q[0].view(3, 1) + q[1].view(1, 3))


def test_summary_of_an_igm_violating_fit_of_qtran():
    # Agent utilities whose greedy joint action is (1, 1), while Q_tot peaks at (0, 0).
    q_table = QTRAN.clone()
    s = igm_summary(q_table, torch.tensor([[0.0, 5.0, 1.0], [0.0, 5.0, 1.0]]), payoff=QTRAN)
    assert s["greedy_joint"] == (1, 1) and s["greedy_joint_index"] == 4
    assert s["igm_consistent"] is False and s["greedy_optimal"] is False
    assert s["payoff_max_abs_error"] == 0.0
    s = igm_summary(q_table, torch.tensor([[5.0, 0.0, 1.0], [5.0, 1.0, 0.0]]), payoff=QTRAN)
    assert s["igm_consistent"] is True and s["greedy_optimal"] is True


def test_summary_respects_availability():
    table = torch.tensor([[9.0, 0.0], [0.0, 1.0]])
    avail = torch.tensor([[0, 1], [0, 1]])
    s = igm_summary(table, torch.tensor([[5.0, 0.0], [5.0, 0.0]]), avail=avail)
    assert s["greedy_joint"] == (1, 1) and s["igm_consistent"] is True


RATES = {"exact": igm_violation_rate, "unilateral": igm_unilateral_violation_rate}


class Coupled(Mixer):
    """Positive state-dependent weights plus an interaction of the first and last agent:
    the interaction makes some violations need both agents to move at once."""

    def mix(self, agent_qs, states):
        n = agent_qs.shape[-1]
        return (agent_qs * states[:, :n].abs()).sum(-1) + 1.5 * agent_qs[:, 0] * agent_qs[:, -1]


def reference_rates(mixer, q, states, avail, mask, tol=1e-6):
    """Both rates over every valid state by plain loops: full table for the exact check,
    one agent's action changed at a time for the unilateral one."""
    b, t, n, a = q.shape
    exact, unilateral, count = 0, 0, 0
    for i in range(b):
        for j in range(t):
            if mask[i, j] == 0:
                continue
            count += 1
            av = avail[i, j]
            greedy = [int(x) for x in q[i, j].masked_fill(av == 0, float("-inf")).argmax(-1)]
            table = joint_q_table(mixer, q[i, j], states[i, j])
            g = float(table[tuple(greedy)])
            beats = lambda joint: all(av[k, x] for k, x in enumerate(joint)) and (  # noqa: E731
                float(table[tuple(joint)]) > g + tol * max(abs(g), 1.0))
            exact += any(beats(joint) for joint in joint_actions(n, a).tolist())
            unilateral += any(beats(greedy[:k] + [x] + greedy[k + 1:]) for k in range(n) for x in range(a))
    return exact / count, unilateral / count


@pytest.mark.parametrize("rate", sorted(RATES))
def test_violation_rate_extremes(rate):
    fn = RATES[rate]
    torch.manual_seed(0)
    q = torch.randn(4, 5, 3, 4)
    states = torch.zeros(4, 5, 1)
    avail = torch.ones(4, 5, 3, 4, dtype=torch.int)
    mask = torch.ones(4, 5)
    assert fn(VDNMixer(3, 1), q, states, avail, mask) == 0.0
    assert fn(NegatedSum(3, 1), q, states, avail, mask) == 1.0
    assert fn(NegatedSum(3, 1), q, states, avail, torch.zeros(4, 5)) == 0.0


def test_unilateral_check_misses_a_coordinated_violation_the_exact_check_sees():
    # Greedy (0, 0) scores 5; each single-agent deviation 0; only the joint change to
    # (1, 1) reaches 9: IGM fails, yet no agent alone can improve on the greedy action.
    mixer = TableMixer(torch.tensor([[5.0, 0.0], [0.0, 9.0]]))
    q = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])
    args = (mixer, q, torch.zeros(1, 1, 1), torch.ones(1, 1, 2, 2, dtype=torch.int), torch.ones(1, 1))
    assert igm_violation_rate(*args) == 1.0
    assert igm_unilateral_violation_rate(*args) == 0.0
    assert igm_violation_rates(*args).exact == 1.0 and igm_violation_rates(*args).unilateral == 0.0


def test_exact_rate_refuses_rather_than_checking_less():
    # Above the limit the exact rate must not quietly become the single-deviation check.
    q = torch.zeros(1, 1, 7, 4)  # 4^7 = 16384 joint actions
    args = (VDNMixer(7, 1), q, torch.zeros(1, 1, 1), torch.ones(1, 1, 7, 4, dtype=torch.int), torch.ones(1, 1))
    assert not exact_check_affordable(7, 4) and exact_check_affordable(6, 4) and EXACT_JOINT_ACTIONS == 4096
    with pytest.raises(ValueError, match="max_joint_actions=4096 is below A\\^N = 4\\^7"):
        igm_violation_rate(*args)
    rates = igm_violation_rates(*args)
    assert rates.exact is None and rates.unilateral == 0.0
    assert igm_violation_rates(*args, max_joint_actions=4**7).exact == 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rates_agree_with_the_loop_reference_and_bound_each_other(seed):
    g = torch.Generator().manual_seed(seed)
    b, t, n, a = 4, 8, 3, 3
    q = torch.randn(b, t, n, a, generator=g)
    states = torch.randn(b, t, n, generator=g)
    avail = (torch.rand(b, t, n, a, generator=g) > 0.25).int()
    avail[..., 1] = 1
    mask = (torch.rand(b, t, generator=g) > 0.2).float()
    mixer = Coupled(n, n)
    exact, unilateral = reference_rates(mixer, q, states, avail, mask)
    assert 0.0 < unilateral < exact < 1.0  # the sample has both kinds of failure, and passes
    assert igm_violation_rate(mixer, q, states, avail, mask) == pytest.approx(exact)
    assert igm_unilateral_violation_rate(mixer, q, states, avail, mask) == pytest.approx(unilateral)
    rates = igm_violation_rates(mixer, q, states, avail, mask)
    assert (rates.exact, rates.unilateral) == (pytest.approx(exact), pytest.approx(unilateral))


def test_both_rates_sample_the_same_states():
    # With fewer points than valid states, one generator draw serves both checks, so the
    # lower bound holds on every logged pair.
    g = torch.Generator().manual_seed(3)
    q = torch.randn(8, 20, 3, 3, generator=g)
    states = torch.randn(8, 20, 3, generator=g)
    avail, mask = torch.ones(8, 20, 3, 3, dtype=torch.int), torch.ones(8, 20)
    for seed in range(20):  # two separate draws of 3 states would break the bound at seeds 0, 12, 17
        rates = igm_violation_rates(Coupled(3, 3), q, states, avail, mask, max_points=3,
                                    generator=torch.Generator().manual_seed(seed))
        assert rates.unilateral <= rates.exact


def test_violation_rate_ignores_unavailable_joint_actions():
    q = torch.zeros(1, 1, 2, 3)
    q[..., 0] = 1.0  # greedy: action 0 for both
    avail = torch.tensor([[[[1, 0, 0], [1, 0, 0]]]], dtype=torch.int)
    # Negated sum would prefer actions 1/2, but they are unavailable: no violation.
    assert igm_violation_rate(NegatedSum(2, 1), q, torch.zeros(1, 1, 1), avail, torch.ones(1, 1)) == 0.0


# ------------------------------------------------------------- the sign symmetry, and its diagnostics

from itertools import product  # noqa: E402

from pymarl_nonmono.numerics.igm import (  # noqa: E402
    deviation_q_tot,
    greedy_mixing_gradients,
    joint_greedy_actions,
    worst_greedy_actions,
)
from small_mixers import hyper  # noqa: E402


def random_states(m=16, n=3, a=4, s=5, seed=0, p_avail=0.7):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(m, n, a, generator=g)
    av = (torch.rand(m, n, a, generator=g) < p_avail).int()
    av[..., 0] = 1
    return q, torch.randn(m, s, generator=g), av


def test_mirroring_an_agent_leaves_q_tot_unchanged_and_makes_its_greedy_action_the_worst():
    """The symmetry behind the failure: negate agent 0's utilities and its first-layer weights."""
    mixer = hyper(n=2, s=3)
    mirror = hyper(n=2, s=3)
    mirror.load_state_dict(mixer.state_dict())
    with torch.no_grad():
        rows = mirror.hyper_w1[-1]  # output [n_agents * embed] laid out agent-major
        rows.weight[:8].neg_()
        rows.bias[:8].neg_()
    q, s, av = random_states(m=32, n=2, a=3, s=3, p_avail=1.0)
    flipped = q.clone()
    flipped[:, 0] = -flipped[:, 0]
    joint = joint_actions(2, 3)
    for state in range(32):
        torch.testing.assert_close(joint_q_table(mixer, q[state], s[state]),
                                   joint_q_table(mirror, flipped[state], s[state]))
    # Where agent 0's greedy action was Q_tot's best deviation, its mirrored greedy is the worst.
    _, dev = deviation_q_tot(mixer, q, s, av)
    best_for_team = dev[:, 0].argmax(-1) == q[:, 0].argmax(-1)
    worst, _ = worst_greedy_actions(mirror, flipped, s, av)
    assert best_for_team.any()
    assert bool(worst[best_for_team, 0].all())
    assert joint.shape == (9, 2)


def test_deviations_agree_with_a_loop_over_single_agent_changes():
    mixer = hyper()
    q, s, av = random_states()
    greedy_q, dev = deviation_q_tot(mixer, q, s, av)
    greedy = q.masked_fill(av == 0, float("-inf")).argmax(-1)
    for m in range(q.shape[0]):
        base = greedy[m].clone()
        qs = q[m, torch.arange(3), base].view(1, 1, 3)
        torch.testing.assert_close(greedy_q[m], mixer(qs, s[m].view(1, 1, -1)).view(()))
        for i in range(3):
            for a in range(4):
                joint = base.clone()
                joint[i] = a
                qs = q[m, torch.arange(3), joint].view(1, 1, 3)
                torch.testing.assert_close(dev[m, i, a], mixer(qs, s[m].view(1, 1, -1)).view(()))


def test_deviations_are_differentiable_in_the_utilities_and_the_mixer():
    mixer = hyper()
    q, s, av = random_states()
    q.requires_grad_(True)
    greedy_q, dev = deviation_q_tot(mixer, q, s, av)
    (dev.sum() + greedy_q.sum()).backward()
    assert q.grad.abs().sum() > 0
    assert all(p.grad is not None for p in mixer.hyper_w1.parameters())


def test_negated_sum_has_every_agent_on_its_worst_action_and_every_gradient_negative():
    q, s, av = random_states(m=8, p_avail=1.0)
    mixer = NegatedSum(3, 5)
    worst, eligible = worst_greedy_actions(mixer, q, s, av)
    assert bool(eligible.all()) and bool(worst.all())
    torch.testing.assert_close(greedy_mixing_gradients(mixer, q, s, av), -torch.ones(8, 3))
    worst, _ = worst_greedy_actions(VDNMixer(3, 5), q, s, av)
    assert not bool(worst.any())


def test_worst_greedy_and_gradient_rates_count_only_agents_with_a_choice():
    b, t, n, a = 2, 3, 3, 4
    q = torch.randn(b, t, n, a)
    av = torch.ones(b, t, n, a, dtype=torch.int)
    av[..., 1:, 1:] = 0  # agents 1 and 2 have only action 0 (dead units' no-op)
    rates = igm_violation_rates(NegatedSum(3, 5), q, torch.randn(b, t, 5), av, torch.ones(b, t))
    assert rates.worst_greedy == 1.0 and rates.negative_gradient == 1.0
    av[..., 0, 1:] = 0  # nobody has a choice: nothing to count
    rates = igm_violation_rates(NegatedSum(3, 5), q, torch.randn(b, t, 5), av, torch.ones(b, t))
    assert rates.worst_greedy == 0.0 and rates.negative_gradient == 0.0


def test_monotonic_mixer_rates_are_zero_and_unconstrained_init_is_about_half():
    q, s, av = random_states(m=256, p_avail=1.0)
    grads = greedy_mixing_gradients(hyper("qmix"), q, s, av)
    assert bool((grads >= 0).all())
    share = float((greedy_mixing_gradients(hyper("nonmono_qmix"), q, s, av) < 0).float().mean())
    assert 0.2 < share < 0.8  # torch's zero-mean init: either sign


def joint_argmax_by_loops(mixer, q, s, av):
    m, n, a = q.shape
    out = []
    for k in range(m):
        best, arg = float("-inf"), None
        for joint in product(range(a), repeat=n):
            if not all(av[k, i, j] for i, j in enumerate(joint)):
                continue
            qs = q[k, torch.arange(n), torch.tensor(joint)].view(1, 1, n)
            with torch.no_grad():
                value = float(mixer(qs, s[k].view(1, 1, -1)))
            if value > best:
                best, arg = value, joint
        out.append(arg)
    return torch.tensor(out)


@pytest.mark.parametrize("seed", [0, 1])
def test_joint_greedy_actions_agree_with_a_loop_over_every_available_joint_action(seed):
    mixer = hyper(seed=seed)
    q, s, av = random_states(seed=seed)
    torch.testing.assert_close(joint_greedy_actions(mixer, q, s, av), joint_argmax_by_loops(mixer, q, s, av))


def test_joint_greedy_differs_from_the_agents_greedy_where_igm_fails():
    q, s, av = random_states(m=4, p_avail=1.0)
    acted = joint_greedy_actions(NegatedSum(3, 5), q, s, av)
    torch.testing.assert_close(acted, q.argmin(-1))  # -sum is maximised by each agent's lowest utility


def test_joint_greedy_refuses_more_joint_actions_than_it_can_score():
    q, s, av = random_states(m=2, n=3, a=17)
    with pytest.raises(ValueError, match=r"17\^3 joint actions, above the limit of 4096"):
        joint_greedy_actions(VDNMixer(3, 5), q, s, av)
