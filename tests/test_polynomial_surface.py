"""The polynomial-surface simulator against its own analytic ground truth."""

import pytest
import torch

from simulators import PolynomialSurface

sim = PolynomialSurface()


def test_constants_follow_the_spec():
    torch.testing.assert_close(sim.rotation @ sim.rotation.T, torch.eye(3, dtype=torch.float64), atol=1e-12, rtol=0)
    assert torch.linalg.det(sim.rotation) == pytest.approx(1.0)
    assert sim.exponents.tolist()[:7] == [[0, 0], [1, 0], [0, 1], [2, 0], [1, 1], [0, 2], [3, 0]]
    assert len(sim.coefficients) == 21
    assert float(sim.coefficients[0]) == -1.2168586603514988 and float(sim.coefficients[-1]) == 1.2115704379651746e-2
    assert float(sim.rotation[1, 2]) == 0.03979567916953876
    # f(0) = a_00 and the height at z = (1, 0) sums the pure z0 terms
    assert float(sim.height(torch.zeros(1, 2, dtype=torch.float64))) == pytest.approx(-1.2168586603514988)


def test_simulation_is_seeded_and_lies_on_the_surface():
    theta = torch.rand(100, 1) * 2 - 1
    a, b = sim.simulate(theta, seed=4), sim.simulate(theta, seed=4)
    assert a.shape == (100, 3) and torch.equal(a, b)
    assert not torch.equal(a, sim.simulate(theta, seed=5))
    assert sim.vertical_offset(a).abs().max() < 1e-5


def test_theta_changes_the_narrow_component():
    z_narrow = [sim.sample_coordinates(torch.full((20000, 1), t), torch.Generator().manual_seed(0)) for t in (-0.9, 0.9)]
    near = [((z - torch.tensor([-1.0, 1.0], dtype=torch.float64)).norm(dim=1) < 0.4).double().mean() for z in z_narrow]
    assert near[0] > near[1] + 0.1  # σ(θ) = 0.6 + 0.4θ: more mass near the centre at small θ


def test_height_gradient_matches_autograd():
    z = torch.randn(20, 2, dtype=torch.float64, requires_grad=True)
    (autograd,) = torch.autograd.grad(sim.height(z).sum(), z)
    torch.testing.assert_close(sim.height_gradient(z.detach()), autograd)


def test_area_factor_matches_the_chart_jacobian():
    z = torch.randn(10, 2, dtype=torch.float64)
    for zi, factor in zip(z, sim.log_area_factor(z)):
        J = torch.autograd.functional.jacobian(lambda v: sim.chart(v.unsqueeze(0)).squeeze(0), zi)
        assert 0.5 * torch.logdet(J.T @ J) == pytest.approx(float(factor), abs=1e-10)


@pytest.mark.parametrize("theta", [-0.95, 0.0, 0.8])
def test_likelihood_integrates_to_one_over_the_surface(theta):
    # ∫ p(x|θ) dA = ∫ p(φ(z)|θ) sqrt(det Jφᵀ Jφ) dz on a dense z-grid (midpoint rule)
    edges = torch.linspace(-13, 13, 801, dtype=torch.float64)
    centres = (edges[1:] + edges[:-1]) / 2
    z = torch.cartesian_prod(centres, centres)
    x = sim.chart(z)
    t = torch.full((len(z), 1), theta, dtype=torch.float64)
    density = torch.exp(sim.log_likelihood(x, t, measure="surface") + sim.log_area_factor(z))
    assert float(density.sum() * (edges[1] - edges[0]) ** 2) == pytest.approx(1.0, abs=2e-3)
    chart = torch.exp(sim.log_likelihood(x, t, measure="chart"))
    assert float(chart.sum() * (edges[1] - edges[0]) ** 2) == pytest.approx(1.0, abs=2e-3)


def test_exact_posterior_matches_brute_force_and_normalizes():
    x = sim.simulate(torch.full((20, 1), 0.3), seed=1).double()
    posterior = sim.exact_posterior(x, resolution=2001)
    assert float(posterior.probabilities.sum()) == pytest.approx(1.0)
    for t in (-0.5, 0.3, 0.7):
        brute = sum(float(sim.log_likelihood(xi.unsqueeze(0), torch.tensor([[t]], dtype=torch.float64))) for xi in x)
        other = sum(float(sim.log_likelihood(xi.unsqueeze(0), torch.tensor([[0.0]], dtype=torch.float64))) for xi in x)
        difference = posterior.log_prob(torch.tensor([[t]])) - posterior.log_prob(torch.tensor([[0.0]]))
        assert float(difference) == pytest.approx(brute - other, abs=0.02)  # within one grid cell
    samples = posterior.sample(20000, torch.Generator().manual_seed(0))
    assert float(samples.mean()) == pytest.approx(float(posterior.mean()), abs=0.02)
    assert ((samples >= -1) & (samples <= 1)).all()


def test_protocol_posteriors_are_the_exact_grid_posterior():
    x = sim.simulate(torch.full((20, 1), 0.3), seed=1).double()
    grid = sim.exact_grid_posterior(x)
    assert torch.equal(grid.log_density, sim.exact_posterior(x).log_density)
    samples = sim.exact_posterior_samples(x, 5000, seed=2)
    assert samples.shape == (5000, 1) and torch.equal(samples, sim.exact_posterior_samples(x, 5000, seed=2))
    assert float(samples.mean()) == pytest.approx(float(grid.mean()), abs=0.02)
    assert sim.theta_names == ("theta",) and sim.config == {} and sim.name == "polynomial_surface"


@pytest.mark.slow
def test_exact_posterior_covers_the_truth_at_the_nominal_rate():
    inside = 0
    for trial in range(200):
        theta = sim.sample_prior(1, seed=trial)
        posterior = sim.exact_posterior(sim.simulate(theta.expand(20, 1), seed=1000 + trial), resolution=501)
        cdf = posterior.probabilities.cumsum(0)[posterior.grid[:, 0] <= theta[0, 0]]
        level = float(cdf[-1]) if len(cdf) else 0.0
        inside += 0.05 < level < 0.95
    assert 0.83 <= inside / 200 <= 0.97  # 90 % central interval


def test_distance_to_manifold():
    z = torch.randn(50, 2, dtype=torch.float64)
    on_surface = sim.chart(z)
    assert sim.distance_to_manifold(on_surface).max() < 1e-7
    displaced = on_surface + 0.05 * sim.normal(z)
    torch.testing.assert_close(sim.distance_to_manifold(displaced), torch.full((50,), 0.05, dtype=torch.float64))
    # the orthogonal distance never exceeds the vertical offset (which is one candidate)
    assert (sim.distance_to_manifold(displaced) <= sim.vertical_offset(displaced).abs() + 1e-12).all()


def test_ood_set_is_noisy():
    ood = sim.simulate_ood(2000, seed=0)
    assert ood.shape == (2000, 3)
    mean_distance = float(sim.distance_to_manifold(ood).mean())
    assert 0.02 < mean_distance < 0.1  # |N(0, 0.1²)| projected on the normal: E = 0.1·sqrt(2/π) ≈ 0.08


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: sim.simulate(torch.tensor([[1.5]])), "outside the prior"),
        (lambda: sim.simulate(torch.tensor([0.5])), "2-D"),
        (lambda: sim.log_likelihood(torch.randn(3, 3), torch.tensor([[-2.0]] * 3)), "outside the prior"),
        (lambda: sim.log_likelihood(torch.randn(3, 3), torch.zeros(2, 1)), "same batch"),
        (lambda: sim.log_likelihood(torch.randn(3, 3), torch.zeros(3, 1), measure="area"), "measure"),
        (lambda: sim.distance_to_manifold(torch.tensor([[0.0, float("nan"), 0.0]])), "NaN"),
    ],
)
def test_bad_inputs_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()
