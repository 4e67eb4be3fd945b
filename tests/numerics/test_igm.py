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
