import pytest
import torch

from pymarl_nonmono.numerics.igm import igm_summary, igm_violation_rate, joint_actions, joint_q_table
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


@pytest.mark.parametrize("exact_limit", [4096, 1])  # exact, then single-agent deviations
def test_violation_rate_extremes(exact_limit):
    torch.manual_seed(0)
    q = torch.randn(4, 5, 3, 4)
    states = torch.zeros(4, 5, 1)
    avail = torch.ones(4, 5, 3, 4, dtype=torch.int)
    mask = torch.ones(4, 5)
    assert igm_violation_rate(VDNMixer(3, 1), q, states, avail, mask, exact_limit=exact_limit) == 0.0
    assert igm_violation_rate(NegatedSum(3, 1), q, states, avail, mask, exact_limit=exact_limit) == 1.0
    assert igm_violation_rate(NegatedSum(3, 1), q, states, avail, torch.zeros(4, 5), exact_limit=exact_limit) == 0.0


def test_deviation_check_misses_what_only_a_joint_change_finds():
    # Greedy (0, 0) scores 5; each single-agent deviation 0; only the joint change to
    # (1, 1) reaches 9. The cheap check (used when A^N is large) cannot see it.
    mixer = TableMixer(torch.tensor([[5.0, 0.0], [0.0, 9.0]]))
    q = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])
    args = (mixer, q, torch.zeros(1, 1, 1), torch.ones(1, 1, 2, 2, dtype=torch.int), torch.ones(1, 1))
    assert igm_violation_rate(*args, exact_limit=4096) == 1.0
    assert igm_violation_rate(*args, exact_limit=1) == 0.0


def test_violation_rate_ignores_unavailable_joint_actions():
    q = torch.zeros(1, 1, 2, 3)
    q[..., 0] = 1.0  # greedy: action 0 for both
    avail = torch.tensor([[[[1, 0, 0], [1, 0, 0]]]], dtype=torch.int)
    # Negated sum would prefer actions 1/2, but they are unavailable: no violation.
    assert igm_violation_rate(NegatedSum(2, 1), q, torch.zeros(1, 1, 1), avail, torch.ones(1, 1)) == 0.0
