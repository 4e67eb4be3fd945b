"""The symmetry-breaking penalties: values against loop references, masks, and that
minimising each removes what it targets."""

import pytest
import torch

from pymarl_nonmono.numerics.igm import igm_violation_rates
from pymarl_nonmono.numerics.mixers import VDNMixer
from pymarl_nonmono.numerics.penalties import igm_hinge, monotonicity_hinge

from small_mixers import hyper


def batch(b=4, t=5, n=3, a=4, s=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, t, n, a, generator=g)
    av = (torch.rand(b, t, n, a, generator=g) < 0.7).int()
    av[..., 0] = 1
    mask = torch.ones(b, t)
    mask[0, 3:] = 0
    mask[2, 1:] = 0
    return q, torch.randn(b, t, s, generator=g), av, mask


def chosen_and_q_tot(mixer, q, states, seed=0):
    g = torch.Generator().manual_seed(seed)
    actions = torch.randint(0, q.shape[-1], q.shape[:-1], generator=g)
    chosen = torch.gather(q, -1, actions.unsqueeze(-1)).squeeze(-1).requires_grad_(True)
    return chosen, mixer(chosen, states)


def test_monotonicity_hinge_agrees_with_a_loop_over_points():
    mixer = hyper()
    q, states, _, mask = batch()
    chosen, q_tot = chosen_and_q_tot(mixer, q, states)
    value = monotonicity_hinge(q_tot, chosen, mask)
    total, count = 0.0, 0
    for b in range(4):
        for t in range(5):
            if mask[b, t] == 0:
                continue
            point = chosen[b, t].detach().clone().view(1, 1, 3).requires_grad_(True)
            (g,) = torch.autograd.grad(mixer(point, states[b, t].view(1, 1, -1)).sum(), point)
            total += float(torch.relu(-g).sum())
            count += 3
    assert value.item() == pytest.approx(total / count, rel=1e-5)
    assert value.item() > 0  # an unconstrained init has negative gradients somewhere


def test_monotonicity_hinge_is_zero_for_a_monotonic_mixer():
    q, states, _, mask = batch()
    chosen, q_tot = chosen_and_q_tot(hyper("qmix"), q, states)
    assert monotonicity_hinge(q_tot, chosen, mask).item() == 0.0


def test_minimising_the_monotonicity_hinge_makes_the_mixer_monotonic_where_it_is_asked():
    mixer = hyper(seed=3)
    q, states, av, mask = batch(b=16, t=8)
    before = igm_violation_rates(mixer, q, states, av, mask, max_points=None).negative_gradient
    optimiser = torch.optim.Adam(mixer.parameters(), lr=1e-2)
    for _ in range(200):
        chosen, q_tot = chosen_and_q_tot(mixer, q, states)
        loss = monotonicity_hinge(q_tot, chosen, mask)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    after = igm_violation_rates(mixer, q, states, av, mask, max_points=None).negative_gradient
    assert before > 0.2 and after < 0.02


def igm_hinge_by_loops(mixer, q, states, av, mask):
    total, count = 0.0, 0
    n, a = q.shape[-2:]
    for b in range(q.shape[0]):
        for t in range(q.shape[1]):
            if mask[b, t] == 0:
                continue
            greedy = q[b, t].masked_fill(av[b, t] == 0, float("-inf")).argmax(-1)
            with torch.no_grad():
                base = float(mixer(q[b, t, torch.arange(n), greedy].view(1, 1, n), states[b, t].view(1, 1, -1)))
                best = base
                for i in range(n):
                    for act in range(a):
                        if not av[b, t, i, act]:
                            continue
                        joint = greedy.clone()
                        joint[i] = act
                        value = float(mixer(q[b, t, torch.arange(n), joint].view(1, 1, n), states[b, t].view(1, 1, -1)))
                        best = max(best, value)
            total += best - base
            count += 1
    return total / count


@pytest.mark.parametrize("seed", [0, 1])
def test_igm_hinge_agrees_with_a_loop_over_single_agent_deviations(seed):
    mixer = hyper(seed=seed)
    q, states, av, mask = batch(seed=seed)
    value = igm_hinge(mixer, q, states, av, mask)
    assert value.item() == pytest.approx(igm_hinge_by_loops(mixer, q, states, av, mask), rel=1e-5)
    assert value.item() > 0


def test_igm_hinge_ignores_padding_and_unavailable_deviations():
    mixer = hyper()
    q, states, av, mask = batch()
    value = igm_hinge(mixer, q, states, av, mask)
    padded = q.clone()
    padded[mask == 0] = 1e3  # what a padded step holds does not matter
    torch.testing.assert_close(igm_hinge(mixer, padded, states, av, mask), value)
    hidden = q.clone()
    hidden[av == 0] = 1e3  # nor what an unavailable action's utility is
    torch.testing.assert_close(igm_hinge(mixer, hidden, states, av, mask), value)


def test_igm_hinge_is_zero_for_vdn_and_on_an_empty_batch():
    q, states, av, mask = batch()
    assert igm_hinge(VDNMixer(3, 5), q, states, av, mask).item() == 0.0
    assert igm_hinge(hyper(), q, states, av, torch.zeros_like(mask)).item() == 0.0


def test_igm_hinge_samples_at_most_max_states():
    calls = []

    class Counting(VDNMixer):
        def mix_candidates(self, agent_qs, states):
            calls.append(agent_qs.shape[0])
            return super().mix_candidates(agent_qs, states)

    q, states, av, mask = batch()
    igm_hinge(Counting(3, 5), q, states, av, mask, max_states=5, generator=torch.Generator().manual_seed(0))
    igm_hinge(Counting(3, 5), q, states, av, mask)
    assert calls == [5, int(mask.sum())]


def test_minimising_the_igm_hinge_removes_single_agent_violations_and_trains_the_utilities():
    mixer = hyper(seed=3)
    q, states, av, mask = batch(b=16, t=8)
    q = q.clone().requires_grad_(True)
    before = igm_violation_rates(mixer, q.detach(), states, av, mask, max_points=None).unilateral
    optimiser = torch.optim.Adam(list(mixer.parameters()) + [q], lr=1e-2)
    for _ in range(300):
        loss = igm_hinge(mixer, q, states, av, mask)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    after = igm_violation_rates(mixer, q.detach(), states, av, mask, max_points=None).unilateral
    assert before > 0.3 and after < 0.05
