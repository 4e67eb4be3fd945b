import math

import pytest
import torch

from pymarl_nonmono.errors import ConfigError
from pymarl_nonmono.numerics.mixers import (
    MIXERS,
    WEIGHT_TRANSFORMS,
    HyperMixer,
    Mixer,
    VDNMixer,
    check_mixer_options,
    make_mixer,
    mixing_gradients,
)

QTRAN_PAYOFF = torch.tensor([[8.0, -12.0, -12.0], [-12.0, 0.0, 0.0], [-12.0, 0.0, 0.0]])
SIZES = dict(embed_dim=32, hypernet_embed=64, hypernet_layers=2)
# PyMARL2's defaults for the keys nmix reads (qmix_pos_func, use_orthogonal); beta as torch's softplus.
STOCK = dict(qmix_pos_func="abs", qmix_pos_func_beta=1.0, use_orthogonal=False)
OPTIONS = dict(SIZES, **STOCK)


def pymarl2_qmix_param_count(n_agents: int, state_dim: int, embed: int, hyper: int) -> int:
    """PyMARL2's nmix.Mixer layer sizes, counted by hand (weights + biases)."""
    w1 = (state_dim * hyper + hyper) + (hyper * n_agents * embed + n_agents * embed)
    b1 = state_dim * embed + embed
    w2 = (state_dim * hyper + hyper) + (hyper * embed + embed)
    b2 = (state_dim * embed + embed) + (embed + 1)
    return w1 + b1 + w2 + b2


@pytest.mark.parametrize("name", MIXERS.names())
def test_every_registry_entry_builds_and_mixes(name):
    torch.manual_seed(0)
    mixer = make_mixer(name, n_agents=3, state_dim=5, **OPTIONS)
    out = mixer(torch.randn(4, 7, 3), torch.randn(4, 7, 5))
    assert out.shape == (4, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", MIXERS.names())
@pytest.mark.parametrize("orthogonal", [False, True])
def test_candidates_at_a_state_agree_with_the_per_candidate_reference(name, orthogonal):
    # IGM checks score K joint actions per state; the fast path computes the state's
    # weights once. It must equal Mixer's reference (mix on every candidate, state repeated).
    torch.manual_seed(1)
    mixer = make_mixer(name, n_agents=3, state_dim=5, **dict(OPTIONS, use_orthogonal=orthogonal))
    qs, states = torch.randn(6, 27, 3), torch.randn(6, 5)
    fast = mixer.q_tot_of_candidates(qs, states)
    assert fast.shape == (6, 27)
    torch.testing.assert_close(fast, Mixer.mix_candidates(mixer, qs, states), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(fast, mixer(qs, states.unsqueeze(1).expand(6, 27, 5)), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", MIXERS.names())
def test_mixing_some_rows_equals_mixing_all_there_and_is_zero_elsewhere(name):
    torch.manual_seed(0)
    mixer = make_mixer(name, n_agents=3, state_dim=5, **OPTIONS)
    qs = torch.randn(4, 6, 3, requires_grad=True)
    states = torch.randn(4, 6, 5)
    rows = torch.rand(4, 6) > 0.5
    part, whole = mixer(qs, states, rows=rows), mixer(qs, states)
    torch.testing.assert_close(part[rows], whole[rows])
    assert part[~rows].abs().max() == 0
    weights = torch.randn(4, 6) * rows
    grads = torch.autograd.grad((part * weights).sum(), [qs, *mixer.parameters()], allow_unused=True)
    grads_whole = torch.autograd.grad((whole * weights).sum(), [qs, *mixer.parameters()], allow_unused=True)
    for a, b in zip(grads, grads_whole):
        if a is None or b is None:
            assert a is None and b is None
        else:
            torch.testing.assert_close(a, b)
    # Only the chosen rows reach mix().
    seen = []
    original = type(mixer).mix
    mixer.mix = lambda q, s: (seen.append(q.shape[0]), original(mixer, q, s))[1]
    mixer(qs, states, rows=rows)
    assert seen == [int(rows.sum())]
    with pytest.raises(TypeError, match="rows must be a bool mask"):
        mixer(qs, states, rows=rows.float())
    with pytest.raises(ValueError, match=r"rows has shape \[4, 5\]"):
        mixer(qs, states, rows=rows[:, :5])


def test_candidates_check_their_shapes():
    mixer = make_mixer("nonmono_qmix", n_agents=3, state_dim=5, **OPTIONS)
    with pytest.raises(ValueError, match="agent_qs"):
        mixer.q_tot_of_candidates(torch.randn(6, 27, 4), torch.randn(6, 5))
    with pytest.raises(ValueError, match="states"):
        mixer.q_tot_of_candidates(torch.randn(6, 27, 3), torch.randn(5, 5))


@pytest.mark.parametrize(
    "name,transform", [("nonmono_qmix", "none"), ("qmix", "abs"), ("softplus_qmix", "softplus")]
)
def test_registry_names_carry_their_weight_transform(name, transform):
    mixer = make_mixer(name, n_agents=2, state_dim=3, **OPTIONS)
    assert isinstance(mixer, HyperMixer)
    assert mixer.weight_transform == transform


@pytest.mark.parametrize("name", ["nonmono_qmix", "qmix", "softplus_qmix"])
def test_parameter_count_equals_pymarl2_qmix(name):
    mixer = make_mixer(name, n_agents=8, state_dim=230, **OPTIONS)
    n = sum(p.numel() for p in mixer.parameters())
    assert n == pymarl2_qmix_param_count(8, 230, 32, 64)


def test_vdn_is_the_sum():
    qs = torch.randn(2, 3, 4)
    assert torch.allclose(VDNMixer(4, 1)(qs, torch.zeros(2, 3, 1)), qs.sum(-1))


def single_unit_mixer(transform: str, beta: float = 1.0) -> HyperMixer:
    """One hidden unit, weights only in the biases: W1 = [2, -3], b1 = 0.5, w2 = -1.5, b2 = 0.25."""
    mixer = HyperMixer(2, 1, embed_dim=1, hypernet_embed=1, hypernet_layers=1, weight_transform=transform,
                       transform_beta=beta, orthogonal_init=False)
    with torch.no_grad():
        for p in mixer.parameters():
            p.zero_()
        mixer.hyper_w1.bias.copy_(torch.tensor([2.0, -3.0]))
        mixer.hyper_b1.bias.fill_(0.5)
        mixer.hyper_w2.bias.fill_(-1.5)
        mixer.hyper_b2[2].bias.fill_(0.25)
    return mixer


def softplus_by_hand(x: float, beta: float) -> float:
    return math.log1p(math.exp(beta * x)) / beta


# Q_tot at q = (1, 1) for each transform f: f(-1.5) * elu(f(2) + f(-3) + 0.5) + 0.25, by hand.
HAND = {
    "none": -1.5 * (math.exp(-0.5) - 1) + 0.25,
    "abs": 1.5 * (2 + 3 + 0.5) + 0.25,
    "quadratic": 0.5 * 1.5**2 * (0.5 * 2**2 + 0.5 * 3**2 + 0.5) + 0.25,
    **{
        f"softplus_beta{beta}": softplus_by_hand(-1.5, beta)
        * (softplus_by_hand(2, beta) + softplus_by_hand(-3, beta) + 0.5) + 0.25
        for beta in (1.0, 3.0)
    },
}


@pytest.mark.parametrize(
    "transform,beta,key",
    [("none", 1.0, "none"), ("abs", 1.0, "abs"), ("quadratic", 1.0, "quadratic"),
     ("softplus", 1.0, "softplus_beta1.0"), ("softplus", 3.0, "softplus_beta3.0")],
)
def test_hand_computed_single_unit_mixer(transform, beta, key):
    mixer = single_unit_mixer(transform, beta)
    out = mixer(torch.tensor([[[1.0, 1.0]]]), torch.ones(1, 1, 1))
    assert out.item() == pytest.approx(HAND[key], rel=1e-6)


@pytest.mark.parametrize("beta", [0.5, 1.0, 3.0, 10.0])
def test_softplus_transform_uses_its_beta(beta):
    w = torch.linspace(-4, 4, 17, dtype=torch.float64)
    expected = torch.tensor([softplus_by_hand(x, beta) for x in w.tolist()], dtype=torch.float64)
    assert torch.allclose(WEIGHT_TRANSFORMS.get("softplus")(w, beta), expected)


@pytest.mark.parametrize(
    "transform,by_hand",
    [("none", lambda x: x), ("abs", abs), ("quadratic", lambda x: 0.5 * x * x)],
)
def test_transform_values(transform, by_hand):
    w = torch.linspace(-4, 4, 17, dtype=torch.float64)
    expected = torch.tensor([by_hand(x) for x in w.tolist()], dtype=torch.float64)
    # beta is softplus's alone: any value leaves these transforms unchanged
    for beta in (1.0, 7.0):
        assert torch.allclose(WEIGHT_TRANSFORMS.get(transform)(w, beta), expected)


@pytest.mark.parametrize("pos_func", ["abs", "softplus", "quadratic"])
def test_qmix_pos_func_reaches_the_qmix_mixer(pos_func):
    mixer = make_mixer("qmix", n_agents=2, state_dim=3, **dict(OPTIONS, qmix_pos_func=pos_func))
    assert mixer.weight_transform == pos_func


@pytest.mark.parametrize("name", ["qmix", "softplus_qmix"])
def test_qmix_pos_func_beta_reaches_softplus(name):
    outs = []
    for beta in (1.0, 3.0):
        torch.manual_seed(0)
        mixer = make_mixer(name, n_agents=2, state_dim=3,
                           **dict(OPTIONS, qmix_pos_func="softplus" if name == "qmix" else "abs",
                                  qmix_pos_func_beta=beta))
        assert mixer.weight_transform == "softplus" and mixer.transform_beta == beta
        outs.append(mixer(torch.ones(1, 2, 2), torch.ones(1, 2, 3)))
    assert not torch.allclose(outs[0], outs[1])


@pytest.mark.parametrize("pos_func,beta", [("abs", 1.0), ("softplus", 1.0), ("softplus", 3.0), ("quadratic", 1.0)])
def test_every_qmix_pos_func_is_monotonic(pos_func, beta):
    torch.manual_seed(2)
    mixer = make_mixer("qmix", n_agents=4, state_dim=6,
                       **dict(OPTIONS, qmix_pos_func=pos_func, qmix_pos_func_beta=beta))
    grads = mixing_gradients(mixer, torch.randn(8, 10, 4) * 5, torch.randn(8, 10, 6))
    assert (grads >= 0).all()


def is_orthogonal(w: torch.Tensor, gain: float = 1.0, atol: float = 1e-5) -> bool:
    """Orthonormal rows (rows <= cols) or columns, scaled by ``gain``."""
    w = w.double() / gain
    gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
    return torch.allclose(gram, torch.eye(gram.shape[0], dtype=gram.dtype), atol=atol)


@pytest.mark.parametrize("name", ["nonmono_qmix", "qmix", "softplus_qmix"])
@pytest.mark.parametrize("hypernet_layers", [1, 2])
def test_use_orthogonal_initialises_every_linear_layer(name, hypernet_layers):
    torch.manual_seed(0)
    mixer = make_mixer(name, n_agents=3, state_dim=10,
                       **dict(OPTIONS, hypernet_layers=hypernet_layers, use_orthogonal=True))
    layers = [m for m in mixer.modules() if isinstance(m, torch.nn.Linear)]
    assert len(layers) == (7 if hypernet_layers == 2 else 5)  # w1, w2: 2 or 1 each; b1: 1; b2: 2
    for layer in layers:
        assert is_orthogonal(layer.weight.detach())  # gain 1, as nmix (not the agent's `gain`)
        assert torch.equal(layer.bias.detach(), torch.zeros_like(layer.bias))


def test_without_use_orthogonal_the_init_is_torch_default():
    torch.manual_seed(0)
    mixer = make_mixer("qmix", n_agents=3, state_dim=10, **OPTIONS)
    layers = [m for m in mixer.modules() if isinstance(m, torch.nn.Linear)]
    assert not any(is_orthogonal(m.weight.detach(), atol=1e-2) for m in layers)
    assert all((m.bias != 0).any() for m in layers)


@pytest.mark.parametrize(
    "overrides,match",
    [
        (dict(qmix_pos_func="relu"), r"qmix_pos_func='relu' is not one of \['abs', 'quadratic', 'softplus'\]"),
        (dict(qmix_pos_func="none"), r"qmix_pos_func='none' is not one of"),
        (dict(qmix_pos_func_beta=0.0), r"qmix_pos_func_beta=0.0 is outside the allowed range \(0.0, inf\)"),
        (dict(qmix_pos_func_beta=-1), r"qmix_pos_func_beta=-1 is outside"),
        (dict(qmix_pos_func_beta="2"), r"qmix_pos_func_beta='2' must be a number"),
        (dict(use_orthogonal="True"), r"use_orthogonal='True' must be true or false"),
        (dict(use_orthogonal=1), r"use_orthogonal=1 must be true or false"),
    ],
)
def test_bad_mixer_option_values_name_the_key(overrides, match):
    with pytest.raises(ConfigError, match=match):
        make_mixer("qmix", n_agents=2, state_dim=2, **dict(OPTIONS, **overrides))


@pytest.mark.parametrize("name", ["nonmono_qmix", "softplus_qmix", "vdn"])
@pytest.mark.parametrize("pos_func", ["softplus", "quadratic"])
def test_qmix_pos_func_with_a_mixer_that_ignores_it_is_an_error(name, pos_func):
    match = rf"qmix_pos_func='{pos_func}' is read only by mixer='qmix', but mixer='{name}'"
    with pytest.raises(ConfigError, match=match):
        make_mixer(name, n_agents=2, state_dim=2, **dict(OPTIONS, qmix_pos_func=pos_func))
    with pytest.raises(ConfigError, match="qmix_pos_func="):
        check_mixer_options(name, pos_func, 1.0, False)


def test_mixer_options_are_required():
    # A key that never reaches the mixer was the bug: leaving one out must not fall back silently.
    with pytest.raises(TypeError, match="use_orthogonal"):
        make_mixer("qmix", n_agents=2, state_dim=2, **SIZES, qmix_pos_func="abs", qmix_pos_func_beta=1.0)


def fit_payoff(name: str, steps: int = 3000, seed: int = 0):
    """Fit Q_tot(a1, a2) = payoff on all nine joint actions, agent Q-tables free."""
    torch.manual_seed(seed)
    mixer = make_mixer(name, n_agents=2, state_dim=1, embed_dim=8, hypernet_embed=16, hypernet_layers=2, **STOCK)
    q1 = torch.nn.Parameter(torch.randn(3) * 0.1)
    q2 = torch.nn.Parameter(torch.randn(3) * 0.1)
    opt = torch.optim.Adam([q1, q2, *mixer.parameters()], lr=1e-2)
    a1, a2 = torch.meshgrid(torch.arange(3), torch.arange(3), indexing="ij")
    states = torch.ones(1, 9, 1)
    target = QTRAN_PAYOFF.view(1, 9)
    for _ in range(steps):
        qs = torch.stack([q1[a1.reshape(-1)], q2[a2.reshape(-1)]], dim=-1).unsqueeze(0)
        loss = ((mixer(qs, states) - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    qs = torch.stack([q1[a1.reshape(-1)], q2[a2.reshape(-1)]], dim=-1).unsqueeze(0).detach()
    return loss.item(), mixing_gradients(mixer, qs, states)


def test_nonmonotonic_mixer_fits_qtran_payoff_and_has_negative_gradient():
    loss, grads = fit_payoff("nonmono_qmix")
    assert loss < 1e-3
    assert (grads < 0).any(), "a non-monotonic fit of this payoff needs dQtot/dQi < 0 somewhere"


def test_monotonic_mixer_cannot_fit_qtran_payoff():
    loss, grads = fit_payoff("qmix")
    # Monotonicity makes the payoff unrepresentable: the loss stays far from zero.
    assert loss > 1.0
    assert (grads >= 0).all()


def test_monotonic_gradients_nonnegative_at_random_points():
    torch.manual_seed(1)
    for name in ("qmix", "softplus_qmix"):
        mixer = make_mixer(name, n_agents=4, state_dim=6, **OPTIONS)
        grads = mixing_gradients(mixer, torch.randn(16, 10, 4) * 5, torch.randn(16, 10, 6))
        assert (grads >= 0).all()


def test_same_seed_same_mixer():
    outs = []
    for _ in range(2):
        torch.manual_seed(3)
        mixer = make_mixer("nonmono_qmix", n_agents=3, state_dim=4, **OPTIONS)
        outs.append(mixer(torch.ones(1, 2, 3), torch.ones(1, 2, 4)))
    assert torch.equal(outs[0], outs[1])


def test_multidimensional_state_is_flattened():
    mixer = make_mixer("nonmono_qmix", n_agents=2, state_dim=6, **OPTIONS)
    assert mixer(torch.zeros(2, 3, 2), torch.zeros(2, 3, 2, 3)).shape == (2, 3)


def test_unknown_mixer_name_lists_allowed():
    with pytest.raises(ValueError, match=r"mixer='nonmono' is not one of \[.*'nonmono_qmix'"):
        make_mixer("nonmono", n_agents=2, state_dim=2, **OPTIONS)


def test_unknown_weight_transform():
    with pytest.raises(ConfigError, match="mixer_weight_transform='relu'"):
        HyperMixer(2, 2, 4, 4, 2, "relu", transform_beta=1.0, orthogonal_init=False)


def test_bad_sizes():
    with pytest.raises(ConfigError, match="mixing_embed_dim=0"):
        make_mixer("qmix", n_agents=2, state_dim=2, embed_dim=0, hypernet_embed=4, hypernet_layers=2, **STOCK)
    with pytest.raises(ConfigError, match="hypernet_layers=3"):
        make_mixer("qmix", n_agents=2, state_dim=2, embed_dim=4, hypernet_embed=4, hypernet_layers=3, **STOCK)


@pytest.mark.parametrize(
    "qs,states,match",
    [
        ((2, 3, 4), (2, 3, 5), r"agent_qs has shape \[2, 3, 4\], expected \[\*, \*, 3\]"),
        ((2, 3, 3), (2, 4, 5), r"states has shape \[2, 4, 5\], expected \[2, 3, 5\]"),
        ((2, 3, 3), (2, 3, 6), r"states has shape \[2, 3, 6\], expected \[2, 3, 5\]"),
    ],
)
def test_shape_errors_name_expected_shape(qs, states, match):
    mixer = make_mixer("nonmono_qmix", n_agents=3, state_dim=5, **OPTIONS)
    with pytest.raises(ValueError, match=match):
        mixer(torch.zeros(qs), torch.zeros(states))


# ------------------------------------------------------------------ initialisation schemes

from pymarl_nonmono.numerics.mixers import MIXER_INITS, init_mixer_  # noqa: E402

HYPER_MIXERS = [name for name in MIXERS.names() if name != "vdn"]


@pytest.mark.parametrize("scheme", MIXER_INITS.names())
@pytest.mark.parametrize("name", HYPER_MIXERS)
def test_every_init_scheme_applies_to_every_hypernetwork_mixer(scheme, name):
    torch.manual_seed(0)
    mixer = init_mixer_(make_mixer(name, n_agents=3, state_dim=5, **OPTIONS), scheme, 0.5)
    assert torch.isfinite(mixer(torch.randn(2, 4, 3), torch.randn(2, 4, 5))).all()


def test_default_init_changes_nothing_and_draws_no_random_numbers():
    torch.manual_seed(0)
    plain = make_mixer("nonmono_qmix", n_agents=3, state_dim=5, **OPTIONS)
    after_plain = torch.rand(1)
    torch.manual_seed(0)
    inited = init_mixer_(make_mixer("nonmono_qmix", n_agents=3, state_dim=5, **OPTIONS), "default", 0.5)
    assert torch.rand(1) == after_plain
    for a, b in zip(plain.state_dict().values(), inited.state_dict().values()):
        assert torch.equal(a, b)


def test_positive_bias_sets_both_weight_hypernetworks_output_bias_and_nothing_else():
    torch.manual_seed(0)
    plain = make_mixer("nonmono_qmix", n_agents=3, state_dim=5, **OPTIONS)
    torch.manual_seed(0)
    inited = init_mixer_(make_mixer("nonmono_qmix", n_agents=3, state_dim=5, **OPTIONS), "positive_bias", 0.7)
    changed = {k for k, v in plain.state_dict().items() if not torch.equal(v, inited.state_dict()[k])}
    assert changed == {"hyper_w1.2.bias", "hyper_w2.2.bias"}
    assert bool((inited.hyper_w1[2].bias == 0.7).all()) and bool((inited.hyper_w2[2].bias == 0.7).all())


@pytest.mark.parametrize("layers", [1, 2])
def test_positive_bias_starts_near_monotonic_where_the_default_is_half_negative(layers):
    def negative_share(scheme):
        torch.manual_seed(1)
        options = dict(OPTIONS, hypernet_layers=layers)
        mixer = init_mixer_(make_mixer("nonmono_qmix", n_agents=3, state_dim=68, **options), scheme, 0.5)
        grads = mixing_gradients(mixer, torch.randn(64, 4, 3), torch.randn(64, 4, 68))
        return float((grads < 0).float().mean())

    assert negative_share("default") > 0.2
    assert negative_share("positive_bias") < 0.05


@pytest.mark.parametrize("state_dim", [7, 68, 230])
def test_what_positive_bias_says_of_the_share_of_negative_weights_holds_for_both_inits(state_dim):
    """numerics/mixers.py: with torch's init a few per cent of W1 and w2 start negative at a bias of
    0.5; with use_orthogonal, whose unit-norm rows spread the state-dependent part wider, up to about a
    quarter (a small state keeps it low)."""
    def negative_shares(orthogonal):
        torch.manual_seed(2)
        options = dict(OPTIONS, use_orthogonal=orthogonal, hypernet_layers=2)
        mixer = init_mixer_(make_mixer("nonmono_qmix", n_agents=3, state_dim=state_dim, **options), "positive_bias", 0.5)
        states = torch.randn(4096, state_dim)
        with torch.no_grad():
            return [float((net(states) < 0).float().mean()) for net in (mixer.hyper_w1, mixer.hyper_w2)]

    assert max(negative_shares(False)) < 0.05
    shares = negative_shares(True)
    assert max(shares) < 0.3
    if state_dim >= 68:
        assert min(shares) > 0.1  # not near monotonic: the docs must not say so


def test_positive_bias_refuses_a_mixer_without_mixing_weights_and_a_bad_bias():
    with pytest.raises(ConfigError, match="positive_bias.*VDNMixer"):
        init_mixer_(VDNMixer(3, 5), "positive_bias", 0.5)
    mixer = make_mixer("nonmono_qmix", n_agents=3, state_dim=5, **OPTIONS)
    with pytest.raises(ConfigError, match=r"mixer_init_bias=0\.0 is outside"):
        init_mixer_(mixer, "positive_bias", 0.0)
    with pytest.raises(ConfigError, match=r"mixer_init='positve_bias'.*did you mean 'positive_bias'"):
        init_mixer_(mixer, "positve_bias", 0.5)


def test_mixing_some_rows_keeps_to_the_inputs_device(monkeypatch):
    from fake_cuda import fake_cuda

    with fake_cuda(monkeypatch):
        torch.manual_seed(0)
        mixer = make_mixer("nonmono_qmix", n_agents=3, state_dim=5, **OPTIONS).cuda()
        qs = torch.randn(4, 6, 3, device="cuda", requires_grad=True)
        rows = torch.rand(4, 6, device="cuda") > 0.5
        out = mixer(qs, torch.randn(4, 6, 5, device="cuda"), rows=rows)
        (grad,) = torch.autograd.grad(out.sum(), qs)
    assert out.device.type == "cuda" and grad.device.type == "cuda"
