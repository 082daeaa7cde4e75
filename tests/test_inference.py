"""Grid posteriors, the cached-encoding likelihood table, and posterior MMD."""

import pytest
import torch

from conftest import perturb
from mflow_sbi.diagnostics import median_distance, mmd_squared
from mflow_sbi.inference import GridPosterior, grid_posterior, log_likelihood_table
from mflow_sbi.models import MFlow, PIE
from mflow_sbi.transforms import FlowConfig
from simulators import PolynomialSurface

SMALL = FlowConfig(layers=2, bins=4, hidden=16, blocks=1)


def test_fast_table_equals_exact_up_to_a_per_event_constant():
    model = perturb(MFlow(3, 1, 2, outer=SMALL, inner=SMALL)).eval()
    x = torch.randn(7, 3, dtype=torch.float64)
    theta = torch.linspace(-1, 1, 5, dtype=torch.float64).unsqueeze(1)
    fast = log_likelihood_table(model, x, theta)
    exact = log_likelihood_table(model, x, theta, exact=True)
    assert fast.shape == (5, 7)
    difference = exact - fast
    torch.testing.assert_close(difference, difference[:1].expand_as(difference))
    # the same entries as pairwise log_prob calls
    torch.testing.assert_close(exact[3], model.log_prob(x, theta[3].expand(7, 1)).detach())


def test_table_uses_full_density_when_the_encoder_needs_theta():
    model = perturb(PIE(3, 1, 2, conditional_manifold=True, outer=SMALL, inner=SMALL)).eval()
    x = torch.randn(4, 3, dtype=torch.float64)
    theta = torch.randn(3, 1, dtype=torch.float64)
    table = log_likelihood_table(model, x, theta, chunk_size=5)
    torch.testing.assert_close(table[1], model.log_prob(x, theta[1].expand(4, 1)).detach())


def test_grid_posterior_of_model_matches_brute_force():
    simulator = PolynomialSurface()
    model = perturb(MFlow(3, 1, 2, outer=SMALL, inner=SMALL), scale=0.1).eval()
    x = simulator.simulate(torch.zeros(5, 1), seed=0).double()
    posterior = grid_posterior(model, x, simulator.prior, resolution=51)
    assert posterior.grid.shape == (51, 1) and float(posterior.probabilities.sum()) == pytest.approx(1.0)
    with torch.no_grad():
        brute = torch.stack([model.log_prob(x, t.expand(5, 1).double()).sum() for t in posterior.grid])
    brute = brute - torch.logsumexp(brute, 0) - torch.log(torch.tensor(2 / 51, dtype=torch.float64))
    torch.testing.assert_close(posterior.log_density, brute)


def test_grid_posterior_2d_and_errors():
    grid = GridPosterior.cell_centres([0, 0], [1, 2], 10)
    assert grid.shape == (100, 2)
    posterior = GridPosterior(grid, -((grid - torch.tensor([0.5, 1.0])) ** 2).sum(-1) / 0.02)
    torch.testing.assert_close(posterior.mean(), torch.tensor([0.5, 1.0]), atol=1e-3, rtol=0)
    assert posterior.sample(10).shape == (10, 2)
    with pytest.raises(ValueError, match="p ≤ 2"):
        GridPosterior(torch.zeros(5, 3), torch.zeros(5))
    with pytest.raises(ValueError, match="lower < upper"):
        GridPosterior.cell_centres([1.0], [0.0], 10)
    with pytest.raises(ValueError, match="NaN"):
        GridPosterior(grid, torch.full((100,), float("nan")))
    with pytest.raises(ValueError, match="unbounded"):
        grid_posterior(MFlow(3, 1, 2), torch.zeros(2, 3), torch.distributions.Normal(torch.zeros(1), 1))


def brute_force_mmd(x, y, h):
    k = lambda a, b: torch.exp(-torch.cdist(a, b) ** 2 / (2 * h**2))  # noqa: E731
    m, n = len(x), len(y)
    kxx, kyy = k(x, x), k(y, y)
    return float(
        (kxx.sum() - kxx.diag().sum()) / (m * (m - 1)) + (kyy.sum() - kyy.diag().sum()) / (n * (n - 1)) - 2 * k(x, y).mean()
    )


def test_mmd_matches_brute_force_and_is_chunk_invariant():
    x, y = torch.randn(300, 2, dtype=torch.float64), torch.randn(200, 2, dtype=torch.float64) + 0.3
    h = median_distance(y)
    assert h == pytest.approx(float(torch.pdist(y).median()))
    expected = brute_force_mmd(x, y, h)
    assert mmd_squared(x, y) == pytest.approx(expected, rel=1e-10)
    assert mmd_squared(x, y, chunk_size=7) == pytest.approx(expected, rel=1e-10)


def test_mmd_is_near_zero_for_one_distribution_and_grows_with_a_shift():
    generator = torch.Generator().manual_seed(1)
    reference = torch.randn(2000, 1, generator=generator)
    values = [mmd_squared(torch.randn(2000, 1, generator=generator) + shift, reference) for shift in (0.0, 0.2, 0.5, 1.0)]
    assert abs(values[0]) < 5e-3
    assert values[0] < values[1] < values[2] < values[3]


def test_mmd_rejects_bad_input():
    with pytest.raises(ValueError, match="equal p"):
        mmd_squared(torch.zeros(5, 1), torch.zeros(5, 2))
    with pytest.raises(ValueError, match="at least two"):
        mmd_squared(torch.zeros(1, 1), torch.zeros(5, 1))
