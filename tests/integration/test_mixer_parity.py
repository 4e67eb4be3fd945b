"""Our ``qmix`` mixer against the real PyMARL2 ``nmix.Mixer(args, abs=True)``.

For every setting of the keys nmix reads (``qmix_pos_func``, ``qmix_pos_func_beta``,
``use_orthogonal``, the hypernetwork sizes) both mixers are built, stock weights are copied
into ours by an explicit name map, and Q_tot must agree on random inputs. With
the same seed both initialisations give the same weights (with ``use_orthogonal`` too), and
with different seeds the same statistics: every linear layer orthogonal with gain 1 and a zero
bias, or torch's default.

Runs on conftest's pymarl2_pristine ($PYMARL2_DIR, else a clone of hijkzzz/pymarl2 at 8ccac7c);
imports from its ``src/`` (read only).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from pymarl_nonmono.numerics.mixers import make_mixer

from fake_host import RecordingLogger, TinyAgent, make_args, scheme
from host_modules import imported_from_host

pytestmark = [pytest.mark.integration]

# stock nmix parameter -> ours. Only hyper_b1 differs: nmix wraps its one layer in a Sequential.
STOCK_TO_OURS = {
    "hyper_w1.0.weight": "hyper_w1.0.weight", "hyper_w1.0.bias": "hyper_w1.0.bias",
    "hyper_w1.2.weight": "hyper_w1.2.weight", "hyper_w1.2.bias": "hyper_w1.2.bias",
    "hyper_b1.0.weight": "hyper_b1.weight", "hyper_b1.0.bias": "hyper_b1.bias",
    "hyper_w2.0.weight": "hyper_w2.0.weight", "hyper_w2.0.bias": "hyper_w2.0.bias",
    "hyper_w2.2.weight": "hyper_w2.2.weight", "hyper_w2.2.bias": "hyper_w2.2.bias",
    "hyper_b2.0.weight": "hyper_b2.0.weight", "hyper_b2.0.bias": "hyper_b2.0.bias",
    "hyper_b2.2.weight": "hyper_b2.2.weight", "hyper_b2.2.bias": "hyper_b2.2.bias",
}

POS_FUNCS = [("abs", 1.0), ("softplus", 1.0), ("softplus", 3.0), ("quadratic", 1.0)]
# (n_agents, state_dim, mixing_embed_dim, hypernet_embed): stock qmix.yaml's sizes at
# 3s5z_vs_3s6z's agents and state, and small ones where layers are wider than tall.
SIZES = [(8, 230, 32, 64), (3, 10, 8, 16), (2, 5, 4, 3)]


@pytest.fixture(scope="module")
def nmix(pymarl2_pristine):
    """PyMARL2's ``modules.mixers.nmix`` module, imported from the pristine checkout's src/.

    Its top-level package names (``modules``, ``utils``) are generic, so the path and the
    modules are removed again afterwards, leaving other tests' imports alone.
    """
    with imported_from_host(pymarl2_pristine, "modules.mixers.nmix") as module:
        yield module


def build_pair(nmix, sizes, pos_func, beta, use_orthogonal, seed=0, same_seed=False):
    n_agents, state_dim, embed, hyper = sizes
    args = SimpleNamespace(n_agents=n_agents, state_shape=state_dim, mixing_embed_dim=embed, hypernet_embed=hyper,
                           qmix_pos_func=pos_func, qmix_pos_func_beta=beta, use_orthogonal=use_orthogonal)
    torch.manual_seed(seed)
    stock = nmix.Mixer(args, abs=True)
    torch.manual_seed(seed if same_seed else seed + 1)
    ours = make_mixer("qmix", n_agents=n_agents, state_dim=state_dim, embed_dim=embed, hypernet_embed=hyper,
                      hypernet_layers=2, qmix_pos_func=pos_func, qmix_pos_func_beta=beta,
                      use_orthogonal=use_orthogonal)
    return stock, ours


def linear_layers(module):
    return {name: m for name, m in module.named_modules() if isinstance(m, torch.nn.Linear)}


@pytest.mark.parametrize("sizes", SIZES, ids=lambda s: "n{}_s{}_e{}_h{}".format(*s))
@pytest.mark.parametrize("use_orthogonal", [False, True], ids=["default_init", "orthogonal"])
@pytest.mark.parametrize("pos_func,beta", POS_FUNCS, ids=lambda v: str(v))
def test_qmix_equals_stock_nmix_with_copied_weights(nmix, sizes, use_orthogonal, pos_func, beta):
    stock, ours = build_pair(nmix, sizes, pos_func, beta, use_orthogonal)
    stock_params = stock.state_dict()
    assert set(stock_params) == set(STOCK_TO_OURS)
    assert set(ours.state_dict()) == set(STOCK_TO_OURS.values())
    ours.load_state_dict({STOCK_TO_OURS[k]: v for k, v in stock_params.items()})

    n_agents, state_dim = sizes[0], sizes[1]
    g = torch.Generator().manual_seed(1)
    qs = torch.randn(4, 9, n_agents, generator=g) * 3
    states = torch.randn(4, 9, state_dim, generator=g)
    with torch.no_grad():
        expected = stock(qs, states).view(4, 9)
        got = ours(qs, states)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    # The weight transform is what differs between the settings: a wrong one (or a wrong
    # beta) moves Q_tot far beyond the tolerance above.
    assert expected.abs().max() > 1e-3


@pytest.mark.parametrize("sizes", SIZES, ids=lambda s: "n{}_s{}_e{}_h{}".format(*s))
@pytest.mark.parametrize("use_orthogonal", [False, True], ids=["default_init", "orthogonal"])
def test_the_same_seed_gives_stock_nmixs_initial_weights(nmix, sizes, use_orthogonal):
    # Seeded parity: a run of our qmix mixer starts where stock nmix would, weight for weight.
    stock, ours = build_pair(nmix, sizes, "abs", 1.0, use_orthogonal, seed=0, same_seed=True)
    ours_params = ours.state_dict()
    for name, value in stock.state_dict().items():
        assert torch.equal(ours_params[STOCK_TO_OURS[name]], value), name


@pytest.mark.parametrize("sizes", SIZES, ids=lambda s: "n{}_s{}_e{}_h{}".format(*s))
@pytest.mark.parametrize("use_orthogonal", [False, True], ids=["default_init", "orthogonal"])
def test_initialisation_has_stock_statistics(nmix, sizes, use_orthogonal):
    stock, ours = build_pair(nmix, sizes, "abs", 1.0, use_orthogonal)
    stock_layers, our_layers = linear_layers(stock), linear_layers(ours)
    assert {STOCK_TO_OURS[n + ".weight"][: -len(".weight")] for n in stock_layers} == set(our_layers)
    for name, s_layer in stock_layers.items():
        o_layer = our_layers[STOCK_TO_OURS[name + ".weight"][: -len(".weight")]]
        s_w, o_w = s_layer.weight.detach().double(), o_layer.weight.detach().double()
        assert s_w.shape == o_w.shape
        # Singular values: all 1 for an orthogonal init with gain 1, spread out otherwise.
        s_sv, o_sv = torch.linalg.svdvals(s_w), torch.linalg.svdvals(o_w)
        if use_orthogonal:
            torch.testing.assert_close(s_sv, torch.ones_like(s_sv), rtol=0, atol=1e-5)
            torch.testing.assert_close(o_sv, torch.ones_like(o_sv), rtol=0, atol=1e-5)
            assert not s_layer.bias.any() and not o_layer.bias.any()
        else:
            # torch's default Linear init on both sides: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
            bound = 1 / s_w.shape[1] ** 0.5
            for w in (s_w, o_w):
                assert w.abs().max() <= bound
            if s_w.numel() >= 100:
                assert (s_sv.max() - s_sv.min()) > 0.1 and (o_sv.max() - o_sv.min()) > 0.1
                # variance of U(-b, b) is b^2 / 3
                assert o_w.var().item() == pytest.approx(bound**2 / 3, rel=0.25)
                assert s_w.var().item() == pytest.approx(bound**2 / 3, rel=0.25)


@pytest.mark.parametrize("pos_func,beta", POS_FUNCS, ids=lambda v: str(v))
@pytest.mark.parametrize("use_orthogonal", [False, True], ids=["default_init", "orthogonal"])
def test_one_config_namespace_gives_our_learner_the_mixer_stock_nmix_builds(nmix, pos_func, beta, use_orthogonal):
    """The keys reach our learner's mixer from the config as they reach nmix: one args object for both."""
    from pymarl_nonmono.hosts.pymarl2.controller import NonMonoMAC
    from pymarl_nonmono.hosts.pymarl2.learner import NonMonoLearner

    state_dim = scheme()["state"]["vshape"]
    args = make_args("nonmono_qmix", mixer="qmix", qmix_pos_func=pos_func, qmix_pos_func_beta=beta,
                     use_orthogonal=use_orthogonal, state_shape=state_dim)
    torch.manual_seed(0)
    mac = NonMonoMAC(scheme(), {"agents": args.n_agents}, args, agent_builder=TinyAgent)
    ours = NonMonoLearner(mac, scheme(), RecordingLogger(), args).mixer
    stock = nmix.Mixer(args, abs=True)
    if use_orthogonal:
        for layer in linear_layers(ours).values():
            sv = torch.linalg.svdvals(layer.weight.detach().double())
            torch.testing.assert_close(sv, torch.ones_like(sv), rtol=0, atol=1e-5)
    ours.load_state_dict({STOCK_TO_OURS[k]: v for k, v in stock.state_dict().items()})
    g = torch.Generator().manual_seed(2)
    qs, states = torch.randn(3, 5, args.n_agents, generator=g) * 3, torch.randn(3, 5, state_dim, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(ours(qs, states), stock(qs, states).view(3, 5), rtol=1e-6, atol=1e-6)
