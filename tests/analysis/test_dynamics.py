"""The single-state gradient-flow analysis (pymarl_nonmono.analysis.dynamics) on QTRAN's game.

What the paper (arXiv 2511.09792) states and what these tests find:
Theorem 1 (uniform mu): IGM-violating zero-loss points exist -> reproduced, and they are
stable. Theorem 2 (softmax, small tau): IGM-consistent zero-loss points are positive
definite on the normal space -> reproduced. Theorem 3 (softmax, small tau): IGM-violating
zero-loss points have a negative-curvature direction -> does NOT hold: at an exact
zero-loss point the Hessian is 2 J^T diag(mu) J, positive definite on the normal space
for any full-support mu (see docs/dynamics.md).
"""

import argparse
import json
import math

import pytest
import torch

from pymarl_nonmono.analysis import dynamics as D
from pymarl_nonmono.analysis import dynamics_cli
from pymarl_nonmono.errors import ConfigError

QTRAN = [[8, -12, -12], [-12, 0, 0], [-12, 0, 0]]
OPTIMUM = (0, 0)
VIOLATING = (1, 1)  # a zero-payoff cell: the relative-overgeneralisation trap of QTRAN's game
SMALL_TAU = 0.2


@pytest.fixture(scope="module")
def model():
    return D.MixerModel(D.Game(QTRAN), hidden=16)


@pytest.fixture(scope="module")
def points(model):
    gen = torch.Generator().manual_seed(1)
    return {g: D.zero_loss_point(model, g, gen) for g in (OPTIMUM, VIOLATING, (0, 2))}


def _dyn(model, mu, gradient, tau=SMALL_TAU):
    return D.Dynamics(model, mu=mu, tau=tau, gradient=gradient)


# --- the loss and its vector fields -----------------------------------------------


def test_full_field_is_minus_gradient_and_semi_drops_the_policy_term(model):
    theta = model.initial_points(3, torch.Generator().manual_seed(0))
    for mu in D.POLICIES:
        full, semi = _dyn(model, mu, "full"), _dyn(model, mu, "semi")
        x = theta.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(full.loss(x).sum(), x)
        assert torch.allclose(full.field(theta), -grad, atol=1e-10)
        # Semi-gradient: the same loss with the sampling distribution held fixed.
        x = theta.clone().requires_grad_(True)
        r = model.residuals(x)
        (semi_grad,) = torch.autograd.grad((full.policy(x).detach() * r * r).sum(), x)
        assert torch.allclose(semi.field(theta), -semi_grad, atol=1e-10)
    # Uniform mu does not depend on q: both fields coincide; softmax mu: they differ.
    assert torch.allclose(_dyn(model, "uniform", "full").field(theta), _dyn(model, "uniform", "semi").field(theta))
    assert not torch.allclose(_dyn(model, "softmax", "full").field(theta), _dyn(model, "softmax", "semi").field(theta))


@pytest.mark.parametrize("gradient", D.GRADIENTS)
def test_jacobian_matches_finite_differences(gradient):
    model = D.MixerModel(D.Game(QTRAN), hidden=4)
    dyn = _dyn(model, "softmax", gradient, tau=0.7)
    theta = model.initial_points(1, torch.Generator().manual_seed(3))[0]
    eps = 1e-6
    basis = torch.eye(model.n_params, dtype=D.DTYPE)
    numeric = torch.stack([(dyn.field(theta + eps * e) - dyn.field(theta - eps * e)) / (2 * eps) for e in basis], -1)
    jac = dyn.jacobian(theta)
    assert (jac - numeric).abs().max() < 1e-6 * max(1.0, float(jac.abs().max()))


def test_softmax_policy_is_a_product_of_agent_softmaxes(model, points):
    dyn = _dyn(model, "softmax", "full")
    theta = points[VIOLATING]
    mu = dyn.policy(theta).reshape(3, 3)
    pi = dyn.agent_policies(theta)
    assert torch.allclose(mu, torch.outer(pi[0], pi[1]))
    assert math.isclose(float(mu.sum()), 1.0)
    # (H3): the policy is dominated by the greedy joint action at this temperature.
    assert float(mu[VIOLATING]) > 0.9


# --- zero-loss points and their spectra -------------------------------------------


def test_constructed_points_fit_every_payoff_with_the_requested_greedy_action(model, points):
    for greedy, theta in points.items():
        assert float(model.residuals(theta).abs().max()) < 1e-9
        assert tuple(int(a) for a in model.greedy(theta)) == greedy
        s = D.stability(_dyn(model, "uniform", "full"), theta)
        # On the zero-loss set Q_tot = y, so IGM-consistent <=> greedy action optimal.
        assert s.igm_consistent == (greedy == OPTIMUM) == s.optimal
        assert s.normal_dim == 9 and s.tangent_dim == model.n_params - 9  # (H2): J has full rank


def test_theorem1_uniform_igm_violating_zero_loss_point_is_a_stable_minimum(model, points):
    for gradient in D.GRADIENTS:
        s = D.stability(_dyn(model, "uniform", gradient), points[VIOLATING])
        assert not s.igm_consistent and s.loss < 1e-18
        assert s.kind == "stable"
        assert s.normal_eigs[0] > 1.0  # clearly resolved, not marginal
        assert s.tangent_leak < 1e-6 * s.normal_eigs[-1]  # along the zero-loss set: neutral


def test_theorem1_uniform_flow_reaches_igm_violating_zero_loss_points():
    cfg = D.AnalysisConfig(D.load_payoff("qtran"), mu="uniform", gradient="full", starts=6, steps=150, hidden=8, seed=0)
    seen = []
    analysis = D.analyse(cfg, progress=lambda phase, done, total: seen.append((phase, done, total)))
    # Told how far it is through each phase (the command was silent for 20-30 s).
    assert [p for p, _, _ in seen if p != seen[0][0]][:1] == ["polishing endpoints"]
    assert {(p, total) for p, _, total in seen} >= {("integrating", 150), ("polishing endpoints", 6),
                                                    ("classifying constructed points", 9)}
    reached = analysis.endpoint_points
    assert len(reached) == 6 and all(o["fitted"] for o in analysis.outcomes)
    assert any(not s.igm_consistent for s in reached)
    assert all(s.kind == "stable" for s in reached)


@pytest.mark.parametrize("gradient", D.GRADIENTS)
def test_theorem2_igm_consistent_point_is_positive_definite_on_the_normal_space(model, points, gradient):
    s = D.stability(_dyn(model, "softmax", gradient), points[OPTIMUM])
    assert s.igm_consistent and s.optimal
    assert s.kind == "stable" and s.normal_eigs[0] > s.tolerance
    assert all(c["actual"] > 0 for c in s.paper_checks)  # every direction that flips u*_i
    # The true form is not the paper's eq. (19): that expression carries no residual factor.
    assert all(not math.isclose(c["actual"], c["paper"], rel_tol=0.1) for c in s.paper_checks)


@pytest.mark.parametrize("tau", [0.5, SMALL_TAU, 0.1])
@pytest.mark.parametrize("gradient", D.GRADIENTS)
def test_theorem3_saddle_claim_does_not_hold_at_exact_zero_loss_points(model, points, gradient, tau):
    """The issue asked for a negative-curvature direction here; there is none. The loss is
    non-negative and zero at the point (a global minimum), and the linearisation of either
    field is 2 J^T diag(mu) J, positive definite on the normal space for softmax mu."""
    dyn = _dyn(model, "softmax", gradient, tau=tau)
    for greedy in (VIOLATING, (0, 2)):
        theta = points[greedy]
        s = D.stability(dyn, theta)
        assert not s.igm_consistent
        op = dyn.operator(theta)
        assert float(torch.linalg.eigvalsh(0.5 * (op + op.T))[0]) > -s.tolerance  # no negative curvature anywhere
        # At tau = 0.1 the smallest eigenvalues (~ min mu ~ 1e-17) are below numerical
        # resolution; the Gauss-Newton bound still certifies them positive.
        assert s.kind == "stable" and s.certified_lower_bound > 0
        assert s.gauss_newton_eigs[0] >= s.certified_lower_bound * (1 - 1e-6)
        assert s.operator_minus_gauss_newton < 1e-6 * s.normal_eigs[-1]
        for check in s.paper_checks:  # the paper's direction v = e[i,u*_i] - e[i,g_i]
            assert check["paper"] < 0 < check["actual"]


def test_full_and_semi_linearisations_coincide_on_the_zero_loss_set(model, points):
    theta = points[VIOLATING]
    full = _dyn(model, "softmax", "full").operator(theta)
    semi = _dyn(model, "softmax", "semi").operator(theta)
    assert (full - semi).abs().max() < 1e-6 * full.abs().max()


def test_classify():
    assert D.classify([-1.0, 2.0], 1e-6) == "saddle"
    assert D.classify([1e-3, 2.0], 1e-6) == "stable"
    assert D.classify([1e-9, 2.0], 1e-6) == "marginal"


def test_solve_zero_loss_from_a_perturbed_point_keeps_the_greedy_action(model, points):
    theta = points[VIOLATING] + 1e-3 * torch.randn(model.n_params, generator=torch.Generator().manual_seed(5), dtype=D.DTYPE)
    fixed, err, ok = D.solve_zero_loss(model, theta)
    assert ok and err < 1e-9
    assert tuple(int(a) for a in model.greedy(fixed)) == VIOLATING


def test_advantage_coordinates_are_positive_exactly_at_the_optimum(model, points):
    game = model.game
    for greedy, theta in points.items():
        d = D.advantage_coordinates(game, theta[model.q_slice], model.q_offsets)
        assert bool((d > 0).all()) == (greedy == OPTIMUM)


def test_ragged_action_counts():
    game = D.Game([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])  # agent 0: 2 actions, agent 1: 3
    model = D.MixerModel(game, hidden=8)
    theta = D.zero_loss_point(model, (1, 1), torch.Generator().manual_seed(0))
    s = D.stability(_dyn(model, "softmax", "semi", tau=0.3), theta)
    assert s.igm_consistent and s.optimal and s.kind == "stable"


# --- bad input ----------------------------------------------------------------------


@pytest.mark.parametrize("payoff, key", [
    ([[1, 2], [3]], "--payoff"),
    ([[1, "a"], [3, 4]], "--payoff"),
    ([], "--payoff"),
])
def test_bad_payoff_names_the_key(payoff, key):
    with pytest.raises(ConfigError, match=key):
        D.load_payoff(payoff=payoff)


def test_unknown_game_names_the_key():
    with pytest.raises(ConfigError, match="--game"):
        D.load_payoff(game="qtrann")


@pytest.mark.parametrize("tau", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_tau_names_the_key(model, tau):
    with pytest.raises(ConfigError, match="--tau"):
        D.Dynamics(model, mu="softmax", tau=tau)


def _cli(argv):
    parser = argparse.ArgumentParser()
    dynamics_cli.add_arguments(parser)
    return dynamics_cli.run(parser.parse_args(argv))


@pytest.mark.parametrize("argv, key", [
    (["--mu", "softmax", "--tau", "0"], "--tau"),
    (["--mu", "softmax", "--tau", "-0.5"], "--tau"),
    (["--payoff", "[[1, 2], [3]]"], "--payoff"),
    (["--payoff", "[[1, 2], [3, x]]"], "--payoff"),
    (["--payoff", '[[1, "a"], [3, 4]]'], "--payoff"),
    (["--game", "nope"], "--game"),
    (["--starts", "0"], "--starts"),
])
def test_cli_bad_input_is_one_line_naming_the_key(argv, key, capsys, tmp_path):
    assert _cli(argv + ["--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert key in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_cli_writes_plots_and_summary(tmp_path, capsys):
    out = tmp_path / "dyn"
    argv = ["--game", "qtran", "--mu", "softmax", "--tau", "0.5", "--gradient", "semi", "--starts", "3",
            "--steps", "40", "--hidden", "8", "--seed", "2", "--out", str(out)]
    assert _cli(argv) == 0
    captured = capsys.readouterr()
    text = captured.out
    assert "IGM-consistent and optimal" in text and "Theorem 3" in text
    assert "integrating: 1/40" in captured.err and "classifying constructed points: 9/9" in captured.err
    for name in ("outcomes.png", "eigenvalues.png", "trajectories.png", "summary.md"):
        assert (out / name).stat().st_size > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mu"] == "softmax" and summary["tau"] == 0.5 and summary["gradient"] == "semi"
    assert len(summary["per_start"]) == 3
    assert 0.0 <= summary["fractions"]["igm_consistent_and_optimal"] <= 1.0
    assert len(summary["constructed_zero_loss_points"]) == 9


def test_symlog_ticks_leave_room_around_zero():
    from pymarl_nonmono.analysis.dynamics_cli import symlog_ticks

    ticks = symlog_ticks(1e-12, 3e8)
    assert 0.0 in ticks and len(ticks) <= 11
    assert min(abs(t) for t in ticks if t) >= 1e-10  # no label two decades or less from the linear region
    assert ticks == sorted(ticks) and all(-t in ticks for t in ticks)
