import pytest
import torch

from pymarl_nonmono.errors import ConfigError
from pymarl_nonmono.numerics.mixers import (
    MIXERS,
    HyperMixer,
    VDNMixer,
    make_mixer,
    mixing_gradients,
)

QTRAN_PAYOFF = torch.tensor([[8.0, -12.0, -12.0], [-12.0, 0.0, 0.0], [-12.0, 0.0, 0.0]])
SIZES = dict(embed_dim=32, hypernet_embed=64, hypernet_layers=2)


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
    mixer = make_mixer(name, n_agents=3, state_dim=5, **SIZES)
    out = mixer(torch.randn(4, 7, 3), torch.randn(4, 7, 5))
    assert out.shape == (4, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(
    "name,transform", [("nonmono_qmix", "none"), ("qmix", "abs"), ("softplus_qmix", "softplus")]
)
def test_registry_names_carry_their_weight_transform(name, transform):
    mixer = make_mixer(name, n_agents=2, state_dim=3, **SIZES)
    assert isinstance(mixer, HyperMixer)
    assert mixer.weight_transform == transform


@pytest.mark.parametrize("name", ["nonmono_qmix", "qmix", "softplus_qmix"])
def test_parameter_count_equals_pymarl2_qmix(name):
    mixer = make_mixer(name, n_agents=8, state_dim=230, **SIZES)
    n = sum(p.numel() for p in mixer.parameters())
    assert n == pymarl2_qmix_param_count(8, 230, 32, 64)


def test_vdn_is_the_sum():
    qs = torch.randn(2, 3, 4)
    assert torch.allclose(VDNMixer(4, 1)(qs, torch.zeros(2, 3, 1)), qs.sum(-1))


def test_hand_computed_single_unit_mixer():
    mixer = HyperMixer(2, 1, embed_dim=1, hypernet_embed=1, hypernet_layers=1, weight_transform="none")
    with torch.no_grad():
        for p in mixer.parameters():
            p.zero_()
        mixer.hyper_w1.bias.copy_(torch.tensor([2.0, -3.0]))  # W1 = [2, -3]
        mixer.hyper_b1.bias.fill_(0.5)
        mixer.hyper_w2.bias.fill_(-1.5)
        mixer.hyper_b2[2].bias.fill_(0.25)
    q = torch.tensor([[[1.0, 1.0]]])
    hidden = torch.nn.functional.elu(torch.tensor(2.0 - 3.0 + 0.5))
    expected = -1.5 * hidden + 0.25
    assert torch.allclose(mixer(q, torch.ones(1, 1, 1)), expected.view(1, 1))
    mixer.weight_transform, mixer._transform = "abs", torch.abs
    expected_abs = 1.5 * torch.nn.functional.elu(torch.tensor(2.0 + 3.0 + 0.5)) + 0.25
    assert torch.allclose(mixer(q, torch.ones(1, 1, 1)), expected_abs.view(1, 1))


def fit_payoff(name: str, steps: int = 3000, seed: int = 0):
    """Fit Q_tot(a1, a2) = payoff on all nine joint actions, agent Q-tables free."""
    torch.manual_seed(seed)
    mixer = make_mixer(name, n_agents=2, state_dim=1, embed_dim=8, hypernet_embed=16, hypernet_layers=2)
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
        mixer = make_mixer(name, n_agents=4, state_dim=6, **SIZES)
        grads = mixing_gradients(mixer, torch.randn(16, 10, 4) * 5, torch.randn(16, 10, 6))
        assert (grads >= 0).all()


def test_same_seed_same_mixer():
    outs = []
    for _ in range(2):
        torch.manual_seed(3)
        mixer = make_mixer("nonmono_qmix", n_agents=3, state_dim=4, **SIZES)
        outs.append(mixer(torch.ones(1, 2, 3), torch.ones(1, 2, 4)))
    assert torch.equal(outs[0], outs[1])


def test_multidimensional_state_is_flattened():
    mixer = make_mixer("nonmono_qmix", n_agents=2, state_dim=6, **SIZES)
    assert mixer(torch.zeros(2, 3, 2), torch.zeros(2, 3, 2, 3)).shape == (2, 3)


def test_unknown_mixer_name_lists_allowed():
    with pytest.raises(ValueError, match=r"mixer='nonmono' is not one of \[.*'nonmono_qmix'"):
        make_mixer("nonmono", n_agents=2, state_dim=2, **SIZES)


def test_unknown_weight_transform():
    with pytest.raises(ConfigError, match="mixer_weight_transform='relu'"):
        HyperMixer(2, 2, 4, 4, 2, "relu")


def test_bad_sizes():
    with pytest.raises(ConfigError, match="mixing_embed_dim=0"):
        make_mixer("qmix", n_agents=2, state_dim=2, embed_dim=0, hypernet_embed=4, hypernet_layers=2)
    with pytest.raises(ConfigError, match="hypernet_layers=3"):
        make_mixer("qmix", n_agents=2, state_dim=2, embed_dim=4, hypernet_embed=4, hypernet_layers=3)


@pytest.mark.parametrize(
    "qs,states,match",
    [
        ((2, 3, 4), (2, 3, 5), r"agent_qs has shape \[2, 3, 4\], expected \[\*, \*, 3\]"),
        ((2, 3, 3), (2, 4, 5), r"states has shape \[2, 4, 5\], expected \[2, 3, 5\]"),
        ((2, 3, 3), (2, 3, 6), r"states has shape \[2, 3, 6\], expected \[2, 3, 5\]"),
    ],
)
def test_shape_errors_name_expected_shape(qs, states, match):
    mixer = make_mixer("nonmono_qmix", n_agents=3, state_dim=5, **SIZES)
    with pytest.raises(ValueError, match=match):
        mixer(torch.zeros(qs), torch.zeros(states))
