import copy
import io

import pytest
import torch

from pymarl_nonmono.errors import ConfigError
from pymarl_nonmono.numerics.rnd import (
    RND,
    RunningMeanStd,
    combine_rewards,
    discounted_forward_returns,
    moments_reference,
    shifted_moments,
)

D = 8


def make_rnd(seed: int = 0, **overrides) -> RND:
    torch.manual_seed(seed)
    kwargs = dict(input_dim=D, hidden_dim=64, output_dim=16, n_layers=2, lr=1e-3)
    kwargs.update(overrides)
    return RND(**kwargs)


def batch(seed: int, b: int = 4, t: int = 5, n: int | None = None):
    g = torch.Generator().manual_seed(seed)
    shape = (b, t, D) if n is None else (b, t, n, D)
    x = torch.randn(*shape, generator=g)
    mask = torch.ones(b, t)
    mask[:, -2:] = 0  # padded tail, as in variable-length episodes
    return x, mask


def params(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


# ----------------------------------------------------------------- running stats
def test_running_mean_std_matches_direct_statistics_and_round_trips():
    g = torch.Generator().manual_seed(0)
    data = torch.randn(1000, generator=g, dtype=torch.float64) * 3 + 2
    rms = RunningMeanStd()
    assert rms.mean.dtype == torch.float64 and float(rms.std) == pytest.approx(1.0)
    for chunk in torch.split(data, [1, 10, 300, 689]):
        rms.update(chunk)
    rms.update(torch.empty(0))
    assert float(rms.count) == 1000
    assert float(rms.mean) == pytest.approx(float(data.mean()), rel=1e-12)
    assert float(rms.var) == pytest.approx(float(data.var(unbiased=False)), rel=1e-12)
    assert float(rms.std) == pytest.approx(float(data.std(unbiased=False)), rel=1e-7)
    fresh = RunningMeanStd()
    fresh.load_state_dict(rms.state_dict())
    assert torch.equal(fresh.mean, rms.mean) and torch.equal(fresh.var, rms.var)
    assert torch.equal(fresh.count, rms.count)
    constant = RunningMeanStd()
    constant.update(torch.full((5,), 3.0))
    assert float(constant.std) > 0


@pytest.mark.parametrize("offset, spread", [(0.0, 1.0), (50.0, 0.01), (1e4, 3.0), (-7.0, 1e3)])
def test_shifted_moments_agree_with_float64_reference(offset, spread):
    # float32 inputs whose offset dwarfs their spread: a one-pass E[x^2] - E[x]^2 in
    # float32 loses every digit of the variance here.
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(12800, 5, generator=g) * spread + offset).float()
    mean, var = shifted_moments(x)
    ref_mean, ref_var = moments_reference(x)
    assert mean.dtype == var.dtype == torch.float64
    torch.testing.assert_close((mean - ref_mean) / ref_var.sqrt(), torch.zeros(5, dtype=torch.float64),
                               atol=1e-6, rtol=0)
    torch.testing.assert_close(var, ref_var, rtol=1e-5, atol=0)


def test_shifted_moments_edge_cases():
    one = torch.tensor([[3.0, -1.0]])
    mean, var = shifted_moments(one)
    assert mean.tolist() == [3.0, -1.0] and var.tolist() == [0.0, 0.0]
    ints = torch.tensor([1, 2, 3, 4])
    torch.testing.assert_close(shifted_moments(ints), moments_reference(ints))
    wide = torch.randn(100, 3, 4, dtype=torch.float64)
    torch.testing.assert_close(shifted_moments(wide), moments_reference(wide), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="expected"):
        shifted_moments(torch.empty(0, 3))


def test_running_mean_std_per_dimension():
    g = torch.Generator().manual_seed(0)
    data = torch.randn(500, 3, generator=g, dtype=torch.float64) * torch.tensor([1.0, 10.0, 0.1]) + 5
    rms = RunningMeanStd((3,))
    rms.update(data[:5])
    rms.update(data[5:].reshape(5, 99, 3))  # any leading shape
    torch.testing.assert_close(rms.mean, data.mean(0))
    torch.testing.assert_close(rms.var, data.var(0, unbiased=False))
    assert float(rms.count) == 500
    with pytest.raises(ValueError, match=r"x has shape \[4, 2\], expected \[\.\.\., 3\]"):
        rms.update(torch.zeros(4, 2))


# ----------------------------------------------------------------- learning
def test_novelty_falls_on_trained_state_and_stays_high_elsewhere():
    rnd = make_rnd()
    g = torch.Generator().manual_seed(1)
    seen = torch.randn(D, generator=g)
    unseen = -4.0 * seen + 2.0 * torch.randn(D, generator=g)
    x = seen.expand(2, 3, D)
    mask = torch.ones(2, 3)
    initial = float(rnd.novelty(seen))
    for _ in range(300):
        rnd.update(x, mask)
    trained = float(rnd.novelty(seen))
    far = float(rnd.novelty(unseen))
    assert trained < 0.1 * initial
    assert far > 5.0 * trained
    assert far > 0.5 * initial


def test_target_is_frozen_and_never_changes():
    rnd = make_rnd()
    assert all(not p.requires_grad for p in rnd.target.parameters())
    assert not rnd.target.training
    optimised = {id(p) for group in rnd.optimizer.param_groups for p in group["params"]}
    assert optimised == {id(p) for p in rnd.predictor.parameters()}
    rnd.train()
    assert not rnd.target.training
    before_target, before_pred = params(rnd.target), params(rnd.predictor)
    for i in range(20):
        x, mask = batch(i)
        rnd.update(x, mask)
    assert same(params(rnd.target), before_target)
    assert not same(params(rnd.predictor), before_pred)


def test_update_returns_masked_loss_and_ignores_masked_inputs():
    rnd_a, rnd_b = make_rnd(3), make_rnd(3)
    x, mask = batch(0)
    expected = float(rnd_a.novelty(x)[mask.bool()].mean())
    junk = x.clone()
    junk[mask == 0] = 1e3
    loss_a = rnd_a.update(x, mask)
    loss_b = rnd_b.update(junk, mask)
    assert loss_a == pytest.approx(expected, rel=1e-5)
    assert loss_a == loss_b
    assert same(params(rnd_a.predictor), params(rnd_b.predictor))
    before = params(rnd_a.predictor)
    assert rnd_a.update(x, torch.zeros_like(mask)) == 0.0
    assert same(params(rnd_a.predictor), before)


# ----------------------------------------------------------------- intrinsic reward
def test_discounted_forward_returns_matches_hand_computation():
    reward = torch.tensor([[1.0, 2.0, 3.0, 9.0], [4.0, float("nan"), 0.0, 0.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    out = discounted_forward_returns(reward, mask, 0.5)
    expected = torch.tensor([[1.0, 2.5, 4.25, 0.0], [4.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(out, expected)
    # gamma 0: the return is the reward itself; long episodes do not overflow.
    torch.testing.assert_close(discounted_forward_returns(reward, mask, 0.0), torch.where(mask.bool(), reward, 0.0))
    long = discounted_forward_returns(torch.ones(1, 5000), torch.ones(1, 5000), 0.9)
    assert float(long[0, -1]) == pytest.approx(10.0)
    with pytest.raises(ConfigError, match="gamma=1.5"):
        discounted_forward_returns(reward, mask, 1.5)


def test_intrinsic_reward_is_novelty_over_rms_of_discounted_return():
    rnd = make_rnd(gamma=0.9)
    x, mask = batch(0)
    reward = rnd.intrinsic_reward(x, mask)
    valid = mask.bool()
    # Inputs were whitened with this batch's own statistics before scoring it.
    assert float(rnd.input_normaliser.count) == int(valid.sum())
    torch.testing.assert_close(rnd.input_normaliser.mean, x[valid].double().mean(0))
    nov = (rnd.novelty(x).double() * mask).double()
    returns = discounted_forward_returns(nov, mask, 0.9)[valid]
    rms = (returns.var(unbiased=False) + returns.mean() ** 2).sqrt() + rnd.reward_normaliser.eps
    assert float(rnd.reward_normaliser.count) == int(valid.sum())
    torch.testing.assert_close(reward[valid].double(), nov[valid] / rms, rtol=1e-5, atol=1e-7)


def test_constant_novelty_gives_order_one_reward():
    # One repeated state in one-step episodes (a matrix game): the return is the novelty,
    # its variance 0; dividing by its std made rewards of 1e5.
    rnd = make_rnd()
    reward = rnd.intrinsic_reward(torch.ones(16, 1, D), torch.ones(16, 1))
    torch.testing.assert_close(reward, torch.ones(16, 1), rtol=1e-4, atol=1e-4)
    longer = make_rnd().intrinsic_reward(torch.ones(4, 5, D), torch.ones(4, 5))
    assert 0.1 < float(longer.min()) and float(longer.max()) < 1.0


def test_bonus_on_a_fixed_distribution_is_never_negative_and_decays():
    # The old centred bonus subtracted an all-time mean that lags above a falling
    # novelty: after 100 updates 96% of its rewards were negative.
    rnd = make_rnd()
    g = torch.Generator().manual_seed(1)
    scale, shift = torch.linspace(0.1, 10.0, D), torch.linspace(-3.0, 3.0, D)
    mask = torch.ones(4, 20)
    means = []
    for _ in range(600):
        x = torch.randn(4, 20, D, generator=g) * scale + shift
        reward, _ = rnd.reward_and_update(x, mask)
        assert float(reward.min()) >= 0.0
        means.append(float(reward.mean()))
    first, last = sum(means[:10]) / 10, sum(means[-100:]) / 100
    assert first > 0
    assert last < 0.5 * first


def test_novel_state_scores_above_familiar_ones_and_neither_is_negative():
    rnd = make_rnd()
    g = torch.Generator().manual_seed(2)
    familiar = torch.randn(6, D, generator=g)
    mask = torch.ones(4, 6)
    for _ in range(300):
        rnd.reward_and_update(familiar.expand(4, 6, D), mask)
    novel = 3.0 * torch.randn(1, 1, D, generator=g)
    x = torch.cat([familiar.expand(1, 6, D), novel], dim=1)  # one episode: 6 familiar, then novel
    reward = rnd.intrinsic_reward(x, torch.ones(1, 7))
    assert float(reward.min()) >= 0.0
    assert float(reward[0, -1]) > 5.0 * float(reward[0, :-1].max())


def test_inputs_are_whitened_per_dimension_and_clipped_to_five():
    rnd = make_rnd()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(8, 10, D, generator=g) * torch.linspace(0.01, 100.0, D) + 50.0
    rnd.intrinsic_reward(x, torch.ones(8, 10))
    z = rnd.normalise_input(x)
    flat = z.reshape(-1, D).double()
    torch.testing.assert_close(flat.mean(0), torch.zeros(D, dtype=torch.float64), atol=1e-5, rtol=0)
    torch.testing.assert_close(flat.std(0, unbiased=False), torch.ones(D, dtype=torch.float64), atol=1e-4, rtol=0)
    far = rnd.normalise_input(torch.cat([torch.full((1, D), 1e6), torch.full((1, D), -1e6)]))
    assert torch.equal(far, torch.cat([torch.full((1, D), 5.0), torch.full((1, D), -5.0)]))
    # The networks see the clipped input: a huge outlier scores like any input at the clip.
    assert torch.equal(rnd.novelty(torch.full((D,), 1e6)), rnd.novelty(torch.full((D,), 1e3)))


def test_masked_entries_give_zero_reward_and_do_not_move_normalisers():
    rnd_a, rnd_b = make_rnd(), make_rnd()
    x, mask = batch(0)
    junk = x.clone()
    junk[mask == 0] = float("nan")
    r_a = rnd_a.intrinsic_reward(x, mask)
    r_b = rnd_b.intrinsic_reward(junk, mask)
    assert bool((r_a[mask == 0] == 0).all()) and bool((r_a[mask == 1] > 0).all())
    assert torch.equal(r_a, r_b)
    for name, buf in rnd_a.named_buffers():
        assert torch.equal(buf, dict(rnd_b.named_buffers())[name]), name
    assert float(rnd_a.reward_normaliser.count) == float(mask.sum())
    assert float(rnd_a.input_normaliser.count) == float(mask.sum())
    # NaN padding reaches neither the loss nor the gradient.
    loss_a, loss_b = rnd_a.update(x, mask), rnd_b.update(junk, mask)
    assert loss_a == loss_b and same(params(rnd_a.predictor), params(rnd_b.predictor))
    # A fully masked batch leaves the statistics untouched.
    state = {k: v.clone() for k, v in rnd_a.state_dict().items() if "normaliser" in k}
    out = rnd_a.intrinsic_reward(x, torch.zeros_like(mask))
    assert bool((out == 0).all())
    assert all(torch.equal(v, rnd_a.state_dict()[k]) for k, v in state.items())


def test_per_agent_observations_reduce_to_batch_time():
    rnd = make_rnd()
    x, mask = batch(0, n=3)
    reward = rnd.intrinsic_reward(x, mask)
    assert reward.shape == (4, 5)
    assert float(rnd.input_normaliser.count) == float(mask.sum()) * 3
    assert float(rnd.reward_normaliser.count) == float(mask.sum())
    nov = rnd.novelty(x).double().mean(-1) * mask
    expected = nov / rnd.reward_normaliser.rms
    assert torch.allclose(reward.double(), expected, rtol=1e-5)
    assert isinstance(rnd.update(x, mask.unsqueeze(-1)), float)
    assert rnd.intrinsic_reward(x, mask.unsqueeze(-1), update_stats=False).shape == (4, 5)


def test_scoring_without_update_leaves_statistics():
    rnd = make_rnd()
    rnd.intrinsic_reward(*batch(0))
    before = {k: v.clone() for k, v in rnd.state_dict().items()}
    x, mask = batch(1)
    first = rnd.intrinsic_reward(x, mask, update_stats=False)
    assert torch.equal(first, rnd.intrinsic_reward(x, mask, update_stats=False))
    assert all(torch.equal(v, rnd.state_dict()[k]) for k, v in before.items())


def test_normaliser_round_trips_through_state_dict():
    rnd = make_rnd(0)
    for i in range(3):
        x, mask = batch(i)
        rnd.intrinsic_reward(x, mask)
        rnd.update(x, mask)
    buf = io.BytesIO()
    torch.save(rnd.state_dict(), buf)
    buf.seek(0)
    fresh = make_rnd(99)
    fresh.load_state_dict(torch.load(buf))
    assert set(rnd.state_dict()) >= {
        f"{which}_normaliser.{stat}" for which in ("input", "reward") for stat in ("mean", "var", "count")
    }
    x, mask = batch(10)
    assert torch.equal(rnd.intrinsic_reward(x, mask), fresh.intrinsic_reward(x, mask))


def test_normalisers_round_trip_through_full_state_dict():
    rnd = make_rnd(0)
    for i in range(4):
        rnd.reward_and_update(*batch(i, n=2))
    assert float(rnd.input_normaliser.count) > 0 and float(rnd.reward_normaliser.count) > 0
    buf = io.BytesIO()
    torch.save(rnd.full_state_dict(), buf)
    buf.seek(0)
    resumed = make_rnd(42)
    resumed.load_full_state_dict(torch.load(buf))
    for which in ("input_normaliser", "reward_normaliser"):
        for stat in ("mean", "var", "count"):
            assert torch.equal(getattr(getattr(rnd, which), stat), getattr(getattr(resumed, which), stat)), which + stat
    for i in range(4, 7):
        x, mask = batch(i, n=2)
        r_a, loss_a = rnd.reward_and_update(x, mask)
        r_b, loss_b = resumed.reward_and_update(x, mask)
        assert torch.equal(r_a, r_b) and loss_a == loss_b


def test_full_state_dict_resumes_training_exactly():
    rnd = make_rnd(0)
    for i in range(5):
        rnd.update(*batch(i))
    buf = io.BytesIO()
    torch.save(rnd.full_state_dict(), buf)
    buf.seek(0)
    resumed = make_rnd(7)
    resumed.load_full_state_dict(torch.load(buf))
    for i in range(5, 10):
        x, mask = batch(i)
        assert rnd.update(x, mask) == resumed.update(x, mask)
        assert torch.equal(rnd.intrinsic_reward(x, mask), resumed.intrinsic_reward(x, mask))
    assert same(params(rnd), params(resumed))
    assert same(list(rnd.buffers()), list(resumed.buffers()))
    # Without the optimiser state (plain state_dict) Adam restarts and diverges.
    restarted = make_rnd(7)
    restarted.load_state_dict(make_rnd_after(5).state_dict())
    for i in range(5, 10):
        restarted.update(*batch(i))
    assert not same(params(restarted.predictor), params(rnd.predictor))
    with pytest.raises(ValueError, match="missing \\['optimizer'\\]"):
        resumed.load_full_state_dict({"module": rnd.state_dict()})


def make_rnd_after(steps: int) -> RND:
    rnd = make_rnd(0)
    for i in range(steps):
        rnd.update(*batch(i))
    return rnd


def test_snapshot_is_not_aliased_to_live_module():
    rnd = make_rnd(0)
    snap = rnd.full_state_dict()
    rnd.update(*batch(0))
    fresh = make_rnd(5)
    fresh.load_full_state_dict(snap)
    assert same(params(fresh), params(make_rnd(0)))


def test_same_seed_same_results():
    def run(seed):
        rnd = make_rnd(seed)
        out = []
        for i in range(3):
            x, mask = batch(i, n=2)
            out.append(rnd.intrinsic_reward(x, mask))
            out.append(torch.tensor(rnd.update(x, mask)))
        return out, params(rnd)

    (out1, p1), (out2, p2), (out3, _) = run(1), run(1), run(2)
    assert same(out1, out2) and same(p1, p2)
    assert not same(out1, out3)


def test_independent_initialisation():
    rnd = make_rnd()
    assert not torch.equal(rnd.target[0].weight, rnd.predictor[0].weight)
    assert float(rnd.novelty(torch.randn(D))) > 0
    assert len(rnd.target) == len(rnd.predictor) == 2 * 2 + 1


# ----------------------------------------------------------------- combine / errors
def test_combine_rewards():
    r_ext = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    r_int = torch.tensor([[0.5, 0.0], [1.0, 2.0]])
    assert torch.equal(combine_rewards(r_ext, r_int, 0.5), torch.tensor([[1.25, 2.0], [3.5, 5.0]]))
    assert torch.equal(combine_rewards(r_ext, r_int, 0.0), r_ext)
    col = combine_rewards(r_ext.unsqueeze(-1), r_int, 2.0)
    assert col.shape == (2, 2, 1)
    assert torch.equal(col.squeeze(-1), r_ext + 2.0 * r_int)
    with pytest.raises(ConfigError, match="rnd_beta=-0.1"):
        combine_rewards(r_ext, r_int, -0.1)
    with pytest.raises(ValueError, match=r"r_int has shape \[2, 3\], expected \[2, 2\]"):
        combine_rewards(r_ext.unsqueeze(-1), torch.zeros(2, 3), 1.0)


@pytest.mark.parametrize(
    "option,value",
    [
        ("input_dim", 0),
        ("hidden_dim", -3),
        ("output_dim", 2.5),
        ("n_layers", 0),
        ("lr", 0.0),
        ("lr", -1e-3),
    ],
)
def test_bad_config_names_option(option, value):
    with pytest.raises(ConfigError, match=rf"^{option}="):
        make_rnd(**{option: value})


def test_bad_shapes():
    rnd = make_rnd()
    with pytest.raises(ValueError, match=rf"x has shape \[4, 5, 3\], expected \[\*, \*, {D}\]"):
        rnd.novelty(torch.zeros(4, 5, 3))
    with pytest.raises(ValueError, match=r"mask has shape \[4, 6\], expected \[4, 5\]"):
        rnd.intrinsic_reward(torch.zeros(4, 5, D), torch.ones(4, 6))
    with pytest.raises(ValueError, match=r"expected \[B, T, 8\] or \[B, T, N, 8\]"):
        rnd.update(torch.zeros(5, D), torch.ones(5))


@pytest.mark.parametrize("shape", [(3, 5, 4), (3, 5, 2, 4)])
def test_reward_and_update_equals_reward_then_update(shape):
    torch.manual_seed(0)
    a = RND(4, 16, 8, 2, 1e-3)
    b = copy.deepcopy(a)
    x = torch.randn(*shape)
    mask = (torch.rand(3, 5) > 0.3).float()
    for _ in range(3):
        r_b = b.intrinsic_reward(x, mask)
        loss_b = b.update(x, mask)
        r_a, loss_a = a.reward_and_update(x, mask)
        torch.testing.assert_close(r_a, r_b)
        assert loss_a == pytest.approx(loss_b, rel=1e-6)
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb)


@pytest.mark.parametrize("version,fused", [("2.3.1+cpu", False), ("2.0.0", False), ("2.4.0", True), ("2.13.0", True)])
def test_rnd_builds_and_trains_on_every_torch_setup_py_allows(monkeypatch, version, fused):
    # Before torch 2.4 a fused Adam refuses CPU parameters, and the RND is built before the
    # learner moves anything to a GPU: it must not ask for one there.
    monkeypatch.setattr(torch, "__version__", version)
    asked = {}
    real_adam = torch.optim.Adam

    def adam(params, **kwargs):
        asked.update(kwargs)
        if kwargs.get("fused") and not fused:  # what torch < 2.4 does with CPU parameters
            raise RuntimeError("`fused=True` requires all the params to be floating point Tensors of supported devices")
        return real_adam(params, **kwargs)

    monkeypatch.setattr(torch.optim, "Adam", adam)
    rnd = RND(4, 8, 4, 2, lr=1e-3)
    assert bool(asked.get("fused")) is fused
    x = torch.randn(2, 3, 4)
    _, loss = rnd.reward_and_update(x, torch.ones(2, 3))
    assert loss > 0
