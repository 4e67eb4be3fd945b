import math

import pytest
import torch

from pymarl_nonmono.errors import ConfigError
from pymarl_nonmono.numerics.schedules import (
    SCHEDULES,
    ExponentialSchedule,
    LinearSchedule,
    make_schedule,
)
from pymarl_nonmono.numerics.selection import (
    SELECTORS,
    EpsilonGreedy,
    Softmax,
    greedy_actions,
    make_selector,
)


def const(value: float) -> LinearSchedule:
    return LinearSchedule(value, value, 0)


def random_batch(seed: int, b: int = 64, n: int = 3, a: int = 6):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, n, a, generator=g)
    avail = (torch.rand(b, n, a, generator=g) < 0.5).long()
    # Force some agents down to a single available action, and give every agent one.
    single = torch.rand(b, n, generator=g) < 0.3
    only = torch.randint(0, a, (b, n), generator=g)
    one_hot = torch.nn.functional.one_hot(only, a)
    avail = torch.where(single.unsqueeze(-1), one_hot, avail)
    avail = torch.where(avail.sum(-1, keepdim=True) == 0, one_hot, avail)
    # Make an unavailable action the most attractive wherever one exists.
    q = torch.where(avail.bool(), q, q.abs().max() + 10.0)
    return q, avail


def all_selectors():
    return [
        EpsilonGreedy(const(0.0)),
        EpsilonGreedy(const(0.3)),
        EpsilonGreedy(const(1.0)),
        Softmax(const(0.01)),
        Softmax(const(1.0)),
        Softmax(const(100.0)),
    ]


# ----------------------------------------------------------------- schedules
def test_linear_schedule_hand_values():
    s = LinearSchedule(1.0, 0.05, 100)
    assert s.value(0) == 1.0
    assert s.value(50) == pytest.approx(0.525)
    assert s.value(100) == 0.05
    assert s.value(10_000) == 0.05
    assert s.value(-5) == 1.0
    assert LinearSchedule(1.0, 0.05, 0).value(0) == 0.05


def test_exponential_schedule_hand_values():
    s = ExponentialSchedule(1.0, 0.01, 100)
    assert s.value(0) == 1.0
    assert s.value(50) == pytest.approx(0.1)
    assert s.value(25) == pytest.approx(10 ** -0.5)
    assert s.value(100) == 0.01
    assert s.value(500) == 0.01
    assert ExponentialSchedule(2.0, 0.5, 0).value(0) == 0.5


def test_schedule_registry_and_validation():
    assert SCHEDULES.names() == ["exp", "linear"]
    assert isinstance(make_schedule("linear", 1.0, 0.0, 10), LinearSchedule)
    assert isinstance(make_schedule("exp", 1.0, 0.1, 10), ExponentialSchedule)
    with pytest.raises(ConfigError, match="anneal_steps=-1"):
        LinearSchedule(1.0, 0.0, -1)
    with pytest.raises(ConfigError, match="anneal_steps=2.5"):
        make_schedule("exp", 1.0, 0.1, 2.5)
    with pytest.raises(ConfigError, match="finish=0.0"):
        ExponentialSchedule(1.0, 0.0, 10)
    with pytest.raises(ConfigError, match=r"schedule='lin'.*'linear'"):
        make_schedule("lin", 1.0, 0.0, 10)


# ----------------------------------------------------------------- availability
@pytest.mark.parametrize("sel", all_selectors(), ids=lambda s: f"{type(s).__name__}")
def test_never_selects_unavailable_action(sel):
    g = torch.Generator().manual_seed(0)
    for seed in range(20):
        q, avail = random_batch(seed)
        for test_mode in (False, True):
            actions, probs = sel.select(q, avail, t_env=0, test_mode=test_mode, generator=g)
            assert actions.dtype == torch.long and actions.shape == q.shape[:2]
            picked = avail.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
            assert bool((picked == 1).all())
            assert bool((probs[avail == 0] == 0).all())
            assert torch.allclose(probs.sum(-1), torch.ones(q.shape[:2]))


@pytest.mark.parametrize("sel", all_selectors(), ids=lambda s: f"{type(s).__name__}")
def test_single_available_action_is_certain(sel):
    q = torch.tensor([[[5.0, 1.0, 9.0, 2.0]]])
    avail = torch.tensor([[[0, 1, 0, 0]]])
    actions, probs = sel.select(q, avail, t_env=0, generator=torch.Generator().manual_seed(1))
    assert actions.item() == 1
    assert torch.equal(probs, torch.tensor([[[0.0, 1.0, 0.0, 0.0]]]))


def test_test_mode_is_greedy_with_one_hot_probs():
    q, avail = random_batch(3)
    expected = greedy_actions(q, avail)
    for sel in all_selectors():
        actions, probs = sel.select(q, avail, t_env=0, test_mode=True)
        assert torch.equal(actions, expected)
        assert torch.equal(probs, torch.nn.functional.one_hot(expected, q.shape[-1]).float())
    masked = q.masked_fill(avail == 0, -math.inf)
    assert torch.equal(expected, masked.argmax(-1))


def test_greedy_ties_break_to_lowest_available_index():
    q = torch.tensor([[[3.0, 7.0, 7.0, 7.0], [-math.inf, -math.inf, 0.0, -math.inf]]])
    avail = torch.tensor([[[1, 0, 1, 1], [0, 1, 0, 1]]])
    assert greedy_actions(q, avail).tolist() == [[2, 1]]
    probs = EpsilonGreedy(const(0.0)).probs(q, avail, 0)
    assert probs[0, 0].tolist() == [0.0, 0.0, 1.0, 0.0]


# ----------------------------------------------------------------- epsilon-greedy
def test_epsilon_zero_equals_greedy():
    sel = EpsilonGreedy(const(0.0))
    g = torch.Generator().manual_seed(5)
    for seed in range(5):
        q, avail = random_batch(seed)
        actions, _ = sel.select(q, avail, t_env=123, generator=g)
        assert torch.equal(actions, greedy_actions(q, avail))


def test_epsilon_one_is_uniform_over_available():
    sel = EpsilonGreedy(const(1.0))
    q = torch.tensor([[[10.0, 0.0, -3.0, 1.0, 2.0]]]).expand(20_000, 1, 5).contiguous()
    avail = torch.tensor([[[1, 0, 1, 1, 0]]]).expand(20_000, 1, 5).contiguous()
    actions, probs = sel.select(q, avail, t_env=0, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(probs[0, 0], torch.tensor([1 / 3, 0.0, 1 / 3, 1 / 3, 0.0]))
    counts = torch.bincount(actions.reshape(-1), minlength=5).double()
    assert counts[1] == 0 and counts[4] == 0
    expected = 20_000 / 3
    chi2 = float(((counts[[0, 2, 3]] - expected) ** 2 / expected).sum())
    # chi-square with 2 dof: P(chi2 > 13.8) = 0.001
    assert chi2 < 13.8


def test_epsilon_greedy_probs_and_frequencies():
    sel = EpsilonGreedy(const(0.4))
    q = torch.tensor([[[1.0, 5.0, 2.0, 9.0]]]).expand(20_000, 1, 4).contiguous()
    avail = torch.tensor([[[1, 1, 1, 0]]]).expand(20_000, 1, 4).contiguous()
    actions, probs = sel.select(q, avail, t_env=0, generator=torch.Generator().manual_seed(3))
    want = torch.tensor([0.4 / 3, 0.6 + 0.4 / 3, 0.4 / 3, 0.0])
    assert torch.allclose(probs[0, 0], want)
    freq = torch.bincount(actions.reshape(-1), minlength=4).double() / 20_000
    assert torch.allclose(freq, want.double(), atol=0.015)


def test_epsilon_attribute_follows_schedule():
    sel = make_selector(
        "epsilon_greedy", schedule_kind="linear", start=1.0, finish=0.05, anneal_steps=1000
    )
    assert sel.epsilon == 1.0
    q, avail = random_batch(0, b=2)
    sel.select(q, avail, t_env=500)
    assert sel.epsilon == pytest.approx(0.525)
    sel.probs(q, avail, t_env=5000)
    assert sel.epsilon == 0.05
    with pytest.raises(ConfigError, match=r"epsilon start=1.5 must be in \[0, 1\]"):
        EpsilonGreedy(LinearSchedule(1.5, 0.0, 10))


# ----------------------------------------------------------------- softmax
def test_softmax_matches_hand_computation():
    sel = Softmax(const(2.0))
    q = torch.tensor([[[1.0, 3.0, 100.0, 0.0]]])
    avail = torch.tensor([[[1, 1, 0, 1]]])
    probs = sel.probs(q, avail, t_env=0)
    w = [math.exp(1.0 / 2), math.exp(3.0 / 2), 0.0, math.exp(0.0)]
    want = torch.tensor([x / sum(w) for x in w])
    assert torch.allclose(probs[0, 0], want, atol=1e-6)
    assert probs[0, 0, 2].item() == 0.0
    assert sel.temperature == 2.0 and sel.epsilon == 2.0


def test_softmax_low_temperature_is_greedy_high_is_uniform():
    q, avail = random_batch(7)
    greedy = greedy_actions(q, avail)
    cold = Softmax(const(1e-6)).probs(q, avail, 0)
    assert not torch.isnan(cold).any()
    assert torch.allclose(cold, torch.nn.functional.one_hot(greedy, q.shape[-1]).float(), atol=1e-6)
    # Extreme temperature must not overflow to NaN either.
    tiny = Softmax(const(1e-300)).probs(q * 1e30, avail, 0)
    assert torch.equal(tiny.argmax(-1), greedy)
    hot = Softmax(const(1e6)).probs(q, avail, 0)
    uniform = avail.float() / avail.sum(-1, keepdim=True)
    assert torch.allclose(hot, uniform, atol=1e-4)


def test_softmax_temperature_follows_schedule():
    sel = make_selector("softmax", schedule_kind="exp", start=1.0, finish=0.01, anneal_steps=100)
    q, avail = random_batch(0, b=2)
    sel.select(q, avail, t_env=50, generator=torch.Generator().manual_seed(0))
    assert sel.temperature == pytest.approx(0.1)
    assert sel.epsilon == sel.temperature


@pytest.mark.parametrize("start,finish,bad", [(0.0, 0.1, "start=0.0"), (1.0, -0.5, "finish=-0.5")])
def test_softmax_rejects_non_positive_temperature(start, finish, bad):
    with pytest.raises(ValueError, match=rf"temperature {bad} must be > 0"):
        Softmax(LinearSchedule(start, finish, 10))
    for kind in ("linear", "exp"):
        with pytest.raises(ConfigError, match=rf"temperature {bad} must be > 0"):
            make_selector("softmax", schedule_kind=kind, start=start, finish=finish, anneal_steps=10)


# ----------------------------------------------------------------- registry / errors
def test_selector_registry_and_unknown_name():
    assert SELECTORS.names() == ["epsilon_greedy", "softmax"]
    with pytest.raises(ValueError, match=r"action_selector='boltzmann'.*\['epsilon_greedy', 'softmax'\]"):
        make_selector("boltzmann", schedule_kind="linear", start=1.0, finish=0.1, anneal_steps=10)


def test_shape_and_availability_errors():
    sel = EpsilonGreedy(const(0.1))
    q = torch.zeros(2, 3, 5)
    with pytest.raises(ValueError, match=r"avail_actions has shape \[2, 3, 4\], expected \[2, 3, 5\]"):
        sel.select(q, torch.ones(2, 3, 4), t_env=0)
    with pytest.raises(ValueError, match=r"q has shape \[3, 5\], expected \[\*, \*, \*\]"):
        sel.probs(torch.zeros(3, 5), torch.ones(3, 5), t_env=0)
    avail = torch.ones(2, 3, 5)
    avail[1, 2] = 0
    with pytest.raises(ValueError, match=r"avail_actions\[1, 2\] has no available action"):
        sel.select(q, avail, t_env=0)
    with pytest.raises(ValueError, match="floating-point"):
        sel.select(torch.zeros(2, 3, 5, dtype=torch.long), torch.ones(2, 3, 5), t_env=0)


# ----------------------------------------------------------------- determinism
@pytest.mark.parametrize("name", ["epsilon_greedy", "softmax"])
def test_same_generator_seed_same_actions(name):
    sel = make_selector(name, schedule_kind="linear", start=0.5, finish=0.5, anneal_steps=0)
    q, avail = random_batch(11, b=256)
    a1, p1 = sel.select(q, avail, 0, generator=torch.Generator().manual_seed(42))
    a2, p2 = sel.select(q, avail, 0, generator=torch.Generator().manual_seed(42))
    a3, _ = sel.select(q, avail, 0, generator=torch.Generator().manual_seed(43))
    assert torch.equal(a1, a2) and torch.equal(p1, p2)
    assert not torch.equal(a1, a3)
