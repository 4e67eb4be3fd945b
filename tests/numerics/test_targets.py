"""Tests for TD(lambda) targets and bootstrap utilities."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from pymarl_nonmono.errors import ConfigError
from pymarl_nonmono.numerics.targets import (
    BOOTSTRAPS,
    agent_bootstrap_utilities,
    lambda_returns,
    lambda_returns_reference,
    needs_behaviour_probs,
    q_lambda_returns,
    q_lambda_returns_reference,
    uses_q_lambda_correction,
)

F64 = torch.float64
LAMBDAS = [0.0, 0.3, 0.8, 1.0]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def t64(rows):
    return torch.tensor(rows, dtype=F64)


# ----------------------------------------------------------------------------- helpers


def random_batch(batch, steps, seed, *, truncation=True, contiguous=True):
    """Episodes padded to ``steps``: random lengths; each ends by termination or by
    truncation (only terminations when ``truncation`` is False, except when the episode
    fills the horizon). ``contiguous=False`` gives arbitrary masks instead."""
    gen = torch.Generator().manual_seed(seed)
    rewards = torch.randn(batch, steps, generator=gen, dtype=F64)
    values = torch.randn(batch, steps + 1, generator=gen, dtype=F64)
    mask = torch.zeros(batch, steps, dtype=F64)
    terminated = torch.zeros(batch, steps, dtype=F64)
    if not contiguous:
        mask = (torch.rand(batch, steps, generator=gen) < 0.7).to(F64)
        terminated = (torch.rand(batch, steps, generator=gen) < 0.2).to(F64) * mask
        return rewards, terminated, mask, values
    lengths = torch.randint(1, steps + 1, (batch,), generator=gen)
    coin = torch.rand(batch, generator=gen) < 0.5
    for b in range(batch):
        length = int(lengths[b])
        mask[b, :length] = 1
        if length < steps:
            if coin[b] or not truncation:
                terminated[b, length - 1] = 1
        elif coin[b]:
            terminated[b, length - 1] = 1
    return rewards, terminated, mask, values


def unused_state_positions(terminated, mask):
    """``[B, T+1]`` states that no real, non-terminating transition continues into."""
    batch = mask.shape[0]
    live = (mask != 0) & (terminated == 0)
    first = torch.ones(batch, 1, dtype=torch.bool)
    return torch.cat([first, ~live], dim=1)


def pymarl2_td_lambda(rewards, terminated, mask, values, gamma, lam):
    """The PyMARL2 ``build_td_lambda_targets`` recursion, written out from its formula."""
    batch, steps = rewards.shape
    ret = torch.zeros(batch, steps + 1, dtype=values.dtype)
    ret[:, steps] = values[:, steps] * (1 - terminated.sum(dim=1))
    for t in range(steps - 1, -1, -1):
        one_step = rewards[:, t] + (1 - lam) * gamma * values[:, t + 1] * (1 - terminated[:, t])
        ret[:, t] = lam * gamma * ret[:, t + 1] + mask[:, t] * one_step
    return ret[:, :steps]


def pymarl2_q_lambda(rewards, terminated, mask, values, taken, gamma, lam):
    batch, steps = rewards.shape
    ret = torch.zeros(batch, steps + 1, dtype=values.dtype)
    ret[:, steps] = values[:, steps] * (1 - terminated.sum(dim=1))
    for t in range(steps - 1, -1, -1):
        reward = rewards[:, t] + values[:, t] - taken[:, t]
        one_step = reward + (1 - lam) * gamma * values[:, t + 1] * (1 - terminated[:, t])
        ret[:, t] = lam * gamma * ret[:, t + 1] + mask[:, t] * one_step
    return ret[:, :steps]


# -------------------------------------------------------------------- hand-computed cases

# Three episodes, T=3, gamma=0.5, lambda=0.5:
#  0: runs to the horizon, not terminated.
#  1: terminates at t=1, t=2 is padding (its reward and the values after are garbage).
#  2: truncated after t=1 (no termination), t=2 is padding.
HAND_REWARDS = [[1.0, 2.0, 3.0], [1.0, 2.0, 99.0], [1.0, 2.0, 99.0]]
HAND_TERMINATED = [[0, 0, 0], [0, 1, 0], [0, 0, 0]]
HAND_MASK = [[1, 1, 1], [1, 1, 0], [1, 1, 0]]
HAND_VALUES = [[4.0, 8.0, 12.0, 16.0], [4.0, 8.0, 1000.0, 1000.0], [4.0, 8.0, 12.0, 1000.0]]
# 0: G2 = 3 + .5*16 = 11; G1 = 2 + .5*(.5*12 + .5*11) = 7.75; G0 = 1 + .5*(.5*8 + .5*7.75) = 4.9375
# 1: G2 = 0 (padding); G1 = 2 (terminal); G0 = 1 + .5*(.5*8 + .5*2) = 3.5
# 2: G2 = 0; G1 = 2 + .5*12 = 8 (next step is padding: full bootstrap); G0 = 1 + .5*(.5*8 + .5*8) = 5
HAND_EXPECTED = [[4.9375, 7.75, 11.0], [3.5, 2.0, 0.0], [5.0, 8.0, 0.0]]


def hand_inputs():
    return (
        t64(HAND_REWARDS),
        torch.tensor(HAND_TERMINATED),
        torch.tensor(HAND_MASK),
        t64(HAND_VALUES),
    )


@pytest.mark.parametrize("fn", [lambda_returns, lambda_returns_reference])
def test_lambda_returns_hand_case(fn):
    out = fn(*hand_inputs(), gamma=0.5, td_lambda=0.5)
    assert_close(out, t64(HAND_EXPECTED))


@pytest.mark.parametrize("fn", [lambda_returns, lambda_returns_reference])
def test_lambda_returns_hand_case_lambda_one(fn):
    # Episode 0: G2 = 3 + .5*16 = 11; G1 = 2 + .5*11 = 7.5; G0 = 1 + .5*7.5 = 4.75
    # Episode 1: G1 = 2; G0 = 1 + .5*2 = 2
    # Episode 2: G1 = 2 + .5*12 = 8; G0 = 1 + .5*8 = 5
    out = fn(*hand_inputs(), gamma=0.5, td_lambda=1.0)
    assert_close(out, t64([[4.75, 7.5, 11.0], [2.0, 2.0, 0.0], [5.0, 8.0, 0.0]]))


@pytest.mark.parametrize("fn", [q_lambda_returns, q_lambda_returns_reference])
def test_q_lambda_returns_hand_case(fn):
    rewards = t64([[1.0, 2.0, 3.0]])
    values = t64([[4.0, 8.0, 12.0, 16.0]])
    taken = t64([[3.0, 8.0, 10.0, -50.0]])  # correction r + V - Q = [2, 2, 5]; last entry unused
    zeros = torch.zeros(1, 3)
    ones = torch.ones(1, 3)
    # G2 = 5 + .5*16 = 13; G1 = 2 + .5*(.5*12 + .5*13) = 8.25; G0 = 2 + .5*(.5*8 + .5*8.25) = 6.0625
    out = fn(rewards, zeros, ones, values, taken, gamma=0.5, td_lambda=0.5)
    assert_close(out, t64([[6.0625, 8.25, 13.0]]))


def test_single_step_and_empty_horizon():
    out = lambda_returns(t64([[1.0], [1.0]]), t64([[0.0], [1.0]]), t64([[1.0], [1.0]]),
                         t64([[0.0, 10.0], [0.0, 10.0]]), gamma=0.9, td_lambda=0.7)
    assert_close(out, t64([[10.0], [1.0]]))
    empty = lambda_returns(torch.zeros(2, 0), torch.zeros(2, 0), torch.zeros(2, 0),
                           torch.zeros(2, 1, dtype=F64), gamma=0.9, td_lambda=0.7)
    assert empty.shape == (2, 0)


# --------------------------------------------------------------- reference vs optimised


@pytest.mark.parametrize("batch,steps", [(1, 1), (3, 2), (4, 7), (8, 25), (5, 60)])
@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("contiguous", [True, False])
def test_lambda_returns_matches_reference(batch, steps, lam, contiguous):
    data = random_batch(batch, steps, seed=batch * 100 + steps, contiguous=contiguous)
    fast = lambda_returns(*data, gamma=0.97, td_lambda=lam)
    slow = lambda_returns_reference(*data, gamma=0.97, td_lambda=lam)
    assert fast.shape == (batch, steps)
    assert_close(fast, slow)


@pytest.mark.parametrize("batch,steps", [(2, 3), (6, 20)])
@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0])
def test_q_lambda_returns_matches_reference(batch, steps, lam):
    rewards, terminated, mask, values = random_batch(batch, steps, seed=steps)
    taken = values - torch.rand(batch, steps + 1, dtype=F64)
    fast = q_lambda_returns(rewards, terminated, mask, values, taken, gamma=0.9, td_lambda=lam)
    slow = q_lambda_returns_reference(rewards, terminated, mask, values, taken, gamma=0.9, td_lambda=lam)
    assert_close(fast, slow)


def test_gamma_one_and_float32():
    data = random_batch(4, 12, seed=7)
    data32 = [x.float() for x in data]
    out = lambda_returns(*data32, gamma=1.0, td_lambda=0.6)
    assert out.dtype == torch.float32
    assert_close(out.double(), lambda_returns_reference(*data, gamma=1.0, td_lambda=0.6),
                 rtol=1e-5, atol=1e-5)


def test_integer_and_bool_masks_accepted():
    rewards, terminated, mask, values = random_batch(5, 9, seed=3)
    expected = lambda_returns(rewards, terminated, mask, values, gamma=0.9, td_lambda=0.5)
    for fn in (lambda_returns, lambda_returns_reference):
        out = fn(rewards, terminated.bool(), mask.long(), values, gamma=0.9, td_lambda=0.5)
        assert_close(out, expected)
        out = fn(rewards, terminated.int(), mask.bool(), values, gamma=0.9, td_lambda=0.5)
        assert_close(out, expected)


def test_long_horizon_is_finite():
    # Long products of lambda*gamma underflow; the result must stay finite and exact.
    data = random_batch(2, 300, seed=11, truncation=False)
    out = lambda_returns(*data, gamma=0.99, td_lambda=0.9)
    assert torch.isfinite(out).all()
    assert_close(out, lambda_returns_reference(*data, gamma=0.99, td_lambda=0.9))


class _LargestTensor(TorchDispatchMode):
    """Records the largest number of elements of any tensor an operator returns."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor):
                self.largest = max(self.largest, leaf.numel())
        return out


def test_memory_is_linear_in_the_horizon():
    # O(B T) memory: no intermediate may be larger than the [B, T + 1] inputs. A
    # closed form over a [T, T] or [B, T, T] matrix of discount products fails here.
    batch, steps = 2, 64
    rewards, terminated, mask, values = random_batch(batch, steps, seed=8)
    taken = values - 1
    for call in (
        lambda: lambda_returns(rewards, terminated, mask, values, gamma=0.99, td_lambda=0.8),
        lambda: q_lambda_returns(rewards, terminated, mask, values, taken, gamma=0.99, td_lambda=0.8),
    ):
        with _LargestTensor() as probe:
            call()
        assert 0 < probe.largest <= batch * (steps + 1)


@pytest.mark.parametrize("dtype", [F64, torch.float32])
def test_long_horizon_analytic_limits(dtype):
    # T=3000, gamma=1: lambda=1 gives plain reward sums (plus V at the horizon for the
    # unterminated episode), lambda=0 one-step TD; padding holds nan throughout.
    steps, end = 3000, 1800
    gen = torch.Generator().manual_seed(3)
    # Small integers keep every partial sum exact in both float64 and float32.
    rewards = torch.randint(-3, 4, (2, steps), generator=gen).to(dtype)
    values = torch.randint(-9, 10, (2, steps + 1), generator=gen).to(dtype)
    mask = torch.ones(2, steps, dtype=dtype)
    terminated = torch.zeros(2, steps, dtype=dtype)
    mask[1, end:] = 0
    terminated[1, end - 1] = 1  # episode 1 terminates; episode 0 runs to the horizon
    rewards[1, end:] = float("nan")
    values[1, end + 1:] = float("nan")

    monte_carlo = torch.zeros(2, steps, dtype=F64)
    monte_carlo[0] = rewards[0].double().flip(0).cumsum(0).flip(0) + values[0, steps].double()
    monte_carlo[1, :end] = rewards[1, :end].double().flip(0).cumsum(0).flip(0)
    one_step = torch.zeros(2, steps, dtype=F64)
    one_step[0] = rewards[0].double() + values[0, 1:].double()
    one_step[1, :end] = rewards[1, :end].double() + values[1, 1:end + 1].double()
    one_step[1, end - 1] = rewards[1, end - 1].double()

    for lam, expected in ((1.0, monte_carlo), (0.0, one_step)):
        out = lambda_returns(rewards, terminated, mask, values, gamma=1.0, td_lambda=lam)
        assert out.dtype == dtype
        assert torch.equal(out.double(), expected)


# ------------------------------------------------------------------------ analytic limits


@pytest.mark.parametrize("contiguous", [True, False])
def test_lambda_zero_is_one_step_td(contiguous):
    rewards, terminated, mask, values = random_batch(6, 15, seed=5, contiguous=contiguous)
    gamma = 0.8
    expected = (rewards + gamma * (1 - terminated) * values[:, 1:]) * mask
    for fn in (lambda_returns, lambda_returns_reference):
        assert_close(fn(rewards, terminated, mask, values, gamma=gamma, td_lambda=0.0), expected)


def test_lambda_one_is_monte_carlo():
    rewards, terminated, mask, values = random_batch(10, 12, seed=9)
    gamma = 0.9
    batch, steps = rewards.shape
    expected = torch.zeros(batch, steps, dtype=F64)
    for b in range(batch):
        length = int(mask[b].sum())
        terminal = bool(terminated[b, length - 1])
        for t in range(length):
            ret = sum(gamma ** (k - t) * float(rewards[b, k]) for k in range(t, length))
            if not terminal:  # truncated or at the horizon: bootstrap from the next state
                ret += gamma ** (length - t) * float(values[b, length])
            expected[b, t] = ret
    assert any(bool(terminated[b].any()) for b in range(batch))
    for fn in (lambda_returns, lambda_returns_reference):
        assert_close(fn(rewards, terminated, mask, values, gamma=gamma, td_lambda=1.0), expected)


def test_lambda_one_terminated_episode_ignores_values_entirely():
    rewards, terminated, mask, values = random_batch(4, 8, seed=2, truncation=False)
    terminated[:, :] = 0
    mask[:, :] = 1
    terminated[:, -1] = 1
    base = lambda_returns(rewards, terminated, mask, values, gamma=0.7, td_lambda=1.0)
    other = lambda_returns(rewards, terminated, mask, values * 5 + 3, gamma=0.7, td_lambda=1.0)
    assert_close(base, other)


@pytest.mark.parametrize("lam", LAMBDAS)
@pytest.mark.parametrize("contiguous", [True, False])
def test_nothing_leaks_from_padding_or_after_termination(lam, contiguous):
    rewards, terminated, mask, values = random_batch(8, 14, seed=21, contiguous=contiguous)
    unused_values = unused_state_positions(terminated, mask)
    assert unused_values[:, 1:].any() and (mask == 0).any()
    for garbage in (float("nan"), float("inf"), 1e6):
        bad_rewards = rewards.masked_fill(mask == 0, garbage)
        bad_values = values.masked_fill(unused_values, garbage)
        for fn in (lambda_returns, lambda_returns_reference):
            clean = fn(rewards, terminated, mask, values, gamma=0.9, td_lambda=lam)
            dirty = fn(bad_rewards, terminated, mask, bad_values, gamma=0.9, td_lambda=lam)
            assert_close(dirty, clean)
            assert (dirty[mask == 0] == 0).all()


@pytest.mark.parametrize("lam", LAMBDAS)
def test_q_lambda_nothing_leaks(lam):
    rewards, terminated, mask, values = random_batch(8, 10, seed=4)
    taken = values - torch.rand_like(values)
    # The correction reads values/taken at real steps t < T; the bootstrap reads live states.
    used_by_correction = torch.cat([mask != 0, torch.zeros(8, 1, dtype=torch.bool)], dim=1)
    unused_values = unused_state_positions(terminated, mask) & ~used_by_correction
    bad_values = values.masked_fill(unused_values, float("nan"))
    bad_taken = taken.masked_fill(~used_by_correction, float("nan"))
    bad_rewards = rewards.masked_fill(mask == 0, float("nan"))
    for fn in (q_lambda_returns, q_lambda_returns_reference):
        clean = fn(rewards, terminated, mask, values, taken, gamma=0.9, td_lambda=lam)
        dirty = fn(bad_rewards, terminated, mask, bad_values, bad_taken, gamma=0.9, td_lambda=lam)
        assert_close(dirty, clean)


@pytest.mark.parametrize("lam", LAMBDAS)
def test_q_lambda_with_no_correction_equals_lambda_returns(lam):
    rewards, terminated, mask, values = random_batch(6, 11, seed=13)
    for q_fn, fn in ((q_lambda_returns, lambda_returns),
                     (q_lambda_returns_reference, lambda_returns_reference)):
        assert_close(
            q_fn(rewards, terminated, mask, values, values.clone(), gamma=0.95, td_lambda=lam),
            fn(rewards, terminated, mask, values, gamma=0.95, td_lambda=lam),
        )


def test_q_lambda_correction_is_a_reward_shift():
    rewards, terminated, mask, values = random_batch(6, 11, seed=17)
    taken = values - torch.rand_like(values)
    shifted = rewards + values[:, :-1] - taken[:, :-1]
    assert_close(
        q_lambda_returns(rewards, terminated, mask, values, taken, gamma=0.9, td_lambda=0.4),
        lambda_returns(shifted, terminated, mask, values, gamma=0.9, td_lambda=0.4),
    )


# --------------------------------------------------------------------- PyMARL2 agreement


@pytest.mark.parametrize("lam", LAMBDAS)
@pytest.mark.parametrize("batch,steps", [(4, 5), (16, 30)])
def test_matches_pymarl2_recursion_without_truncation(lam, batch, steps):
    rewards, terminated, mask, values = random_batch(batch, steps, seed=steps + 1, truncation=False)
    mask[0], terminated[0] = 1, 0  # make sure one episode runs to the horizon unterminated
    assert terminated.any() and (terminated.sum(1) == 0).any()  # both kinds of episode occur
    expected = pymarl2_td_lambda(rewards, terminated, mask, values, 0.99, lam)
    assert_close(lambda_returns(rewards, terminated, mask, values, gamma=0.99, td_lambda=lam), expected)
    taken = values - torch.rand_like(values)
    expected_q = pymarl2_q_lambda(rewards, terminated, mask, values, taken, 0.99, lam)
    assert_close(
        q_lambda_returns(rewards, terminated, mask, values, taken, gamma=0.99, td_lambda=lam),
        expected_q,
    )


def test_differs_from_pymarl2_on_truncation():
    # Episode 2 of the hand case is truncated: PyMARL2 leaks the padded V_T into it.
    rewards, terminated, mask, values = hand_inputs()
    ours = lambda_returns(rewards, terminated, mask, values, gamma=0.5, td_lambda=0.5)
    theirs = pymarl2_td_lambda(rewards, terminated.double(), mask.double(), values, 0.5, 0.5)
    assert_close(ours[:2], theirs[:2])
    assert not torch.allclose(ours[2, :2], theirs[2, :2])


# ------------------------------------------------------------------ bootstrap utilities


def test_registry_names():
    assert BOOTSTRAPS.names() == ["expected_sarsa", "q", "q_lambda", "sarsa"]
    assert BOOTSTRAPS.kind == "td_bootstrap"


@pytest.mark.parametrize(
    "name,needs_probs,q_lambda",
    [("q", False, False), ("q_lambda", False, True), ("sarsa", False, False),
     ("expected_sarsa", True, False)],
)
def test_registry_flags(name, needs_probs, q_lambda):
    assert needs_behaviour_probs(name) is needs_probs
    assert uses_q_lambda_correction(name) is q_lambda
    assert BOOTSTRAPS.get(name).needs_behaviour_probs is needs_probs


def _random_q(batch=3, steps_plus_one=5, agents=2, actions=4):
    target_q = torch.randn(batch, steps_plus_one, agents, actions, dtype=F64)
    avail = (torch.rand(batch, steps_plus_one, agents, actions) < 0.6).long()
    avail[..., 0] = 1
    taken = torch.randint(0, actions, (batch, steps_plus_one, agents))
    probs = torch.rand(batch, steps_plus_one, agents, actions, dtype=F64)
    return target_q, avail, taken, probs


@pytest.mark.parametrize("name", ["expected_sarsa", "q", "q_lambda", "sarsa"])
def test_every_entry_gives_one_utility_per_agent(name):
    target_q, avail, taken, probs = _random_q()
    out = agent_bootstrap_utilities(name, target_q, actions=taken, probs=probs, avail_actions=avail)
    assert out.shape == target_q.shape[:-1]
    assert out.dtype == target_q.dtype
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["q", "q_lambda"])
def test_greedy_hand_case_skips_unavailable(name):
    target_q = t64([[[[1.0, 5.0, 3.0], [2.0, 0.0, -1.0]]]])  # [1, 1, 2, 3]
    avail = torch.tensor([[[[1, 0, 1], [0, 1, 1]]]])
    out = agent_bootstrap_utilities(name, target_q, avail_actions=avail)
    assert_close(out, t64([[[3.0, 0.0]]]))
    out = agent_bootstrap_utilities(name, target_q)  # everything available
    assert_close(out, t64([[[5.0, 2.0]]]))


def test_greedy_never_picks_unavailable_even_when_it_is_largest():
    target_q, avail, _, _ = _random_q(4, 6, 3, 5)
    target_q = target_q.masked_fill(avail == 0, 1e9)  # unavailable actions dominate
    out = agent_bootstrap_utilities("q", target_q, avail_actions=avail.bool())
    expected = target_q.masked_fill(avail == 0, float("-inf")).max(dim=-1).values
    assert_close(out, expected)
    assert (out < 1e9).all()


def test_greedy_row_without_available_actions_is_zero():
    target_q = t64([[[[1.0, 2.0]], [[3.0, 4.0]]]])  # [1, 2, 1, 2]
    avail = torch.tensor([[[[1, 1]], [[0, 0]]]])
    out = agent_bootstrap_utilities("q", target_q, avail_actions=avail)
    assert_close(out, t64([[[2.0], [0.0]]]))


def test_double_q_selects_with_online_and_evaluates_with_target():
    target_q = t64([[[[1.0, 5.0, 3.0]]]])
    online_q = t64([[[[9.0, 0.0, 8.0]]]])
    avail = torch.tensor([[[[0, 1, 1]]]])
    assert_close(agent_bootstrap_utilities("q", target_q, online_q=online_q, double_q=True),
                 t64([[[1.0]]]))
    assert_close(agent_bootstrap_utilities("q", target_q, online_q=online_q, avail_actions=avail,
                                           double_q=True), t64([[[3.0]]]))
    # Without double_q the online network is ignored.
    assert_close(agent_bootstrap_utilities("q", target_q, online_q=online_q), t64([[[5.0]]]))


def test_double_q_random_matches_gather_of_online_argmax():
    target_q, avail, _, _ = _random_q(3, 4, 2, 6)
    online_q = torch.randn_like(target_q)
    choice = online_q.masked_fill(avail == 0, float("-inf")).argmax(-1, keepdim=True)
    out = agent_bootstrap_utilities("q_lambda", target_q, online_q=online_q,
                                    avail_actions=avail, double_q=True)
    assert_close(out, target_q.gather(-1, choice).squeeze(-1))


def test_sarsa_hand_case_both_action_layouts():
    target_q = t64([[[[1.0, 5.0, 3.0], [2.0, 0.0, -1.0]]]])
    actions = torch.tensor([[[2, 1]]])
    assert_close(agent_bootstrap_utilities("sarsa", target_q, actions=actions), t64([[[3.0, 0.0]]]))
    assert_close(agent_bootstrap_utilities("sarsa", target_q, actions=actions.unsqueeze(-1)),
                 t64([[[3.0, 0.0]]]))


def test_expected_sarsa_hand_cases():
    target_q = t64([[[[1.0, 2.0, 4.0], [1.0, 2.0, 4.0], [float("-inf"), 2.0, 4.0], [7.0, 7.0, 7.0]]]])
    probs = t64([[[[0.2, 0.3, 0.5], [0.2, 0.3, 0.5], [0.0, 0.5, 0.5], [0.0, 0.0, 0.0]]]])
    avail = torch.tensor([[[[1, 1, 1], [1, 0, 1], [0, 1, 1], [1, 1, 1]]]])
    out = agent_bootstrap_utilities("expected_sarsa", target_q, probs=probs, avail_actions=avail)
    # agent 0: .2*1 + .3*2 + .5*4 = 2.8
    # agent 1: action 1 unavailable, renormalised: (.2*1 + .5*4) / .7
    # agent 2: -inf on an unavailable action gets no weight: .5*2 + .5*4 = 3
    # agent 3: all-zero probabilities (padding) -> 0
    assert_close(out, t64([[[2.8, 2.2 / 0.7, 3.0, 0.0]]]))


def test_expected_sarsa_equals_sarsa_for_one_hot_probs():
    target_q, avail, taken, _ = _random_q(4, 5, 3, 4)
    probs = torch.nn.functional.one_hot(taken, 4).to(F64)
    assert_close(
        agent_bootstrap_utilities("expected_sarsa", target_q, probs=probs),
        agent_bootstrap_utilities("sarsa", target_q, actions=taken),
    )


def test_expected_sarsa_is_invariant_to_probability_scale():
    target_q, avail, _, probs = _random_q()
    a = agent_bootstrap_utilities("expected_sarsa", target_q, probs=probs, avail_actions=avail)
    b = agent_bootstrap_utilities("expected_sarsa", target_q, probs=probs * 3, avail_actions=avail)
    assert_close(a, b)


def test_dispatch_goes_through_the_registry(monkeypatch):
    from pymarl_nonmono.numerics import targets

    calls = []
    fake = targets.Bootstrap(lambda inputs: calls.append(inputs.td_bootstrap) or inputs.target_q[..., 0])
    monkeypatch.setitem(BOOTSTRAPS._entries, "sarsa", fake)
    target_q, *_ = _random_q()
    agent_bootstrap_utilities("sarsa", target_q)
    assert calls == ["sarsa"]


# ------------------------------------------------------------------------------ bad input


def _good_args():
    return random_batch(2, 4, seed=1)


@pytest.mark.parametrize("fn", [lambda_returns, lambda_returns_reference])
@pytest.mark.parametrize(
    "gamma,lam,message",
    [
        (0, 0.5, r"gamma=0 is outside the allowed range \(0, 1\]"),
        (0.0, 0.5, r"gamma=0\.0 is outside the allowed range \(0, 1\]"),
        (1.5, 0.5, r"gamma=1\.5 is outside the allowed range \(0, 1\]"),
        (0.9, -0.1, r"td_lambda=-0\.1 is outside the allowed range \[0, 1\]"),
        (0.9, 1.5, r"td_lambda=1\.5 is outside the allowed range \[0, 1\]"),
        (0.9, float("nan"), r"td_lambda=nan must be a number"),
    ],
)
def test_bad_options(fn, gamma, lam, message):
    with pytest.raises(ConfigError, match=message):
        fn(*_good_args(), gamma=gamma, td_lambda=lam)


@pytest.mark.parametrize("fn", [q_lambda_returns, q_lambda_returns_reference])
def test_bad_options_q_lambda(fn):
    rewards, terminated, mask, values = _good_args()
    with pytest.raises(ValueError, match=r"td_lambda=1\.5 is outside the allowed range \[0, 1\]"):
        fn(rewards, terminated, mask, values, values, gamma=0.9, td_lambda=1.5)
    with pytest.raises(ValueError, match=r"gamma=0 is outside"):
        fn(rewards, terminated, mask, values, values, gamma=0, td_lambda=0.5)


@pytest.mark.parametrize("fn", [lambda_returns, lambda_returns_reference])
def test_mismatched_shapes(fn):
    rewards, terminated, mask, values = _good_args()  # B=2, T=4
    with pytest.raises(ValueError, match=r"values has shape \[2, 4\], expected \[2, 5\]"):
        fn(rewards, terminated, mask, values[:, :-1], gamma=0.9, td_lambda=0.5)
    with pytest.raises(ValueError, match=r"mask has shape \[2, 3\], expected \[2, 4\]"):
        fn(rewards, terminated, mask[:, :3], values, gamma=0.9, td_lambda=0.5)
    with pytest.raises(ValueError, match=r"terminated has shape \[2, 4, 1\], expected \[2, 4\]"):
        fn(rewards, terminated.unsqueeze(-1), mask, values, gamma=0.9, td_lambda=0.5)
    with pytest.raises(ValueError, match=r"values has shape \[1, 5\], expected \[2, 5\]"):
        fn(rewards, terminated, mask, values[:1], gamma=0.9, td_lambda=0.5)
    with pytest.raises(ValueError, match=r"rewards has shape \[2, 4, 1\], expected \[\*, \*\]"):
        fn(rewards.unsqueeze(-1), terminated, mask, values, gamma=0.9, td_lambda=0.5)
    with pytest.raises(ValueError, match=r"values must be a floating-point tensor"):
        fn(rewards, terminated, mask, values.long(), gamma=0.9, td_lambda=0.5)


def test_mismatched_taken_values_shape():
    rewards, terminated, mask, values = _good_args()
    with pytest.raises(ValueError, match=r"taken_values has shape \[2, 4\], expected \[2, 5\]"):
        q_lambda_returns(rewards, terminated, mask, values, values[:, :-1], gamma=0.9, td_lambda=0.5)


def test_unknown_bootstrap():
    target_q, *_ = _random_q()
    allowed = r"\['expected_sarsa', 'q', 'q_lambda', 'sarsa'\]"
    with pytest.raises(ConfigError, match=rf"td_bootstrap='expected-sarsa' is not one of {allowed}"):
        agent_bootstrap_utilities("expected-sarsa", target_q)
    with pytest.raises(ValueError, match=rf"td_bootstrap='qlambda' is not one of {allowed}.*q_lambda"):
        agent_bootstrap_utilities("qlambda", target_q)
    with pytest.raises(ValueError, match=r"td_bootstrap='max'"):
        needs_behaviour_probs("max")
    with pytest.raises(ValueError, match=r"td_bootstrap='max'"):
        uses_q_lambda_correction("max")


def test_missing_required_bootstrap_inputs():
    target_q, *_ = _random_q()
    with pytest.raises(ValueError, match=r"td_bootstrap='sarsa' needs `actions`"):
        agent_bootstrap_utilities("sarsa", target_q)
    with pytest.raises(ValueError, match=r"td_bootstrap='expected_sarsa' needs `probs`"):
        agent_bootstrap_utilities("expected_sarsa", target_q)
    with pytest.raises(ValueError, match=r"td_bootstrap='q_lambda' needs `online_q`.*double_q"):
        agent_bootstrap_utilities("q_lambda", target_q, double_q=True)


def test_bootstrap_shape_and_value_errors():
    target_q, avail, taken, probs = _random_q(3, 5, 2, 4)
    with pytest.raises(ValueError, match=r"target_q has shape \[3, 5, 2\], expected \[\*, \*, \*, \*\]"):
        agent_bootstrap_utilities("q", target_q[..., 0])
    with pytest.raises(ValueError, match=r"avail_actions has shape \[3, 5, 2, 3\], expected \[3, 5, 2, 4\]"):
        agent_bootstrap_utilities("q", target_q, avail_actions=avail[..., :3])
    with pytest.raises(ValueError, match=r"online_q has shape \[3, 4, 2, 4\], expected \[3, 5, 2, 4\]"):
        agent_bootstrap_utilities("q", target_q, online_q=target_q[:, :4], double_q=True)
    with pytest.raises(ValueError, match=r"actions has shape \[3, 4, 2\], expected \[3, 5, 2\]"):
        agent_bootstrap_utilities("sarsa", target_q, actions=taken[:, :4])
    with pytest.raises(ValueError, match=r"actions has shape \[3, 5, 2, 2\], expected \[3, 5, 2, 1\]"):
        agent_bootstrap_utilities("sarsa", target_q, actions=torch.stack([taken, taken], -1))
    with pytest.raises(ValueError, match=r"actions must be an integer tensor"):
        agent_bootstrap_utilities("sarsa", target_q, actions=taken.double())
    with pytest.raises(ValueError, match=r"actions must lie in \[0, 3\]"):
        agent_bootstrap_utilities("sarsa", target_q, actions=taken + 4)
    with pytest.raises(ValueError, match=r"probs has shape \[3, 5, 2, 3\], expected \[3, 5, 2, 4\]"):
        agent_bootstrap_utilities("expected_sarsa", target_q, probs=probs[..., :3])
    with pytest.raises(ValueError, match=r"probs must be non-negative"):
        agent_bootstrap_utilities("expected_sarsa", target_q, probs=-probs)


def test_pymarl2_helpers_are_sane():
    # Guard the test oracle itself against the hand case (no truncation in episodes 0, 1).
    rewards, terminated, mask, values = hand_inputs()
    out = pymarl2_td_lambda(rewards[:2], terminated[:2].double(), mask[:2].double(), values[:2], 0.5, 0.5)
    assert_close(out, t64(HAND_EXPECTED[:2]))
    assert math.isclose(float(out[0, 0]), 4.9375)
