"""Grid posteriors, the cached-encoding likelihood table, MCMC and posterior MMD."""

import numpy as np
import pytest
import torch

from conftest import perturb
from mflow_sbi.diagnostics import median_distance, mmd_squared
from mflow_sbi.inference import GridPosterior, ObservedLikelihood, grid_posterior, mcmc_posterior
from mflow_sbi.models import PAE, PIE, AmbientFlow, MFlow
from mflow_sbi.transforms import FlowConfig
from simulators import PolynomialSurface

SMALL = FlowConfig(layers=2, bins=4, hidden=16, blocks=1)


def standardized(model, x_scale: float = 3.0, x_shift: float = 1.0, theta_scale: float = 2.0, theta_shift: float = 0.5):
    """`model` with its standardization fitted to data far from standard units, so that every
    raw-unit path (the cache of `likelihood` included) has to apply it."""
    generator = torch.Generator().manual_seed(11)
    x = x_shift + x_scale * torch.randn(200, *model.event_shape, generator=generator, dtype=torch.float64)
    theta = theta_shift + theta_scale * torch.randn(200, model.theta_dim, generator=generator, dtype=torch.float64)
    model.fit_standardization(x, theta)
    return model


def test_fast_table_equals_exact_up_to_a_per_event_constant():
    model = standardized(perturb(MFlow(3, 1, 2, outer=SMALL, inner=SMALL))).eval()
    x = torch.randn(7, 3, dtype=torch.float64)
    theta = torch.linspace(-1, 1, 5, dtype=torch.float64).unsqueeze(1)
    fast = ObservedLikelihood(model, x).table(theta)
    exact = ObservedLikelihood(model, x, exact=True).table(theta)
    assert fast.shape == (5, 7)
    difference = exact - fast
    torch.testing.assert_close(difference, difference[:1].expand_as(difference))
    assert difference.abs().max() > 1e-3  # the Jacobian term is really there
    # the same entries as pairwise log_prob calls, exact and fast
    torch.testing.assert_close(exact[3], model.log_prob(x, theta[3].expand(7, 1)).detach())
    torch.testing.assert_close(fast[3], model.log_prob(x, theta[3].expand(7, 1), exact=False).detach())
    # the estimator's own constructor of the cache is the same object
    torch.testing.assert_close(model.likelihood(x, exact=True).table(theta), exact)
    torch.testing.assert_close(model.likelihood(x).table(theta), fast)


@pytest.mark.parametrize("make", [lambda: AmbientFlow(3, 1, inner=SMALL), lambda: PIE(3, 1, 2, outer=SMALL, inner=SMALL)])
def test_fast_table_of_ambient_flows_equals_exact_up_to_a_per_event_constant(make):
    model = standardized(perturb(make())).eval()
    x = torch.randn(6, 3, dtype=torch.float64)
    theta = torch.linspace(-1, 1, 4, dtype=torch.float64).unsqueeze(1)
    fast, exact = ObservedLikelihood(model, x).table(theta), ObservedLikelihood(model, x, exact=True).table(theta)
    difference = exact - fast
    torch.testing.assert_close(difference, difference[:1].expand_as(difference))
    assert difference.abs().max() > 1e-3  # the flow's Jacobian and the standardization's are there
    with torch.no_grad():
        torch.testing.assert_close(exact[2], model.log_prob(x, theta[2].expand(6, 1)))


def test_table_uses_full_density_when_the_manifold_needs_theta():
    model = standardized(perturb(PIE(3, 1, 2, conditional_manifold=True, outer=SMALL, inner=SMALL))).eval()
    assert model.manifold_depends_on_theta
    x = torch.randn(4, 3, dtype=torch.float64)
    theta = torch.randn(3, 1, dtype=torch.float64)
    table = ObservedLikelihood(model, x, chunk_size=5).table(theta)
    torch.testing.assert_close(table[1], model.log_prob(x, theta[1].expand(4, 1)).detach())
    torch.testing.assert_close(table[2], model.log_prob(x, theta[2].expand(4, 1), exact=False).detach())


def test_grid_posterior_of_model_matches_brute_force():
    simulator = PolynomialSurface()
    model = standardized(perturb(MFlow(3, 1, 2, outer=SMALL, inner=SMALL), scale=0.1)).eval()
    x = simulator.simulate(torch.zeros(5, 1), seed=0).double()
    posterior = grid_posterior(ObservedLikelihood(model, x), simulator.prior, resolution=21, dtype=torch.float64)
    assert posterior.grid.shape == (21, 1) and float(posterior.probabilities.sum()) == pytest.approx(1.0)
    with torch.no_grad():
        brute = torch.stack([model.log_prob(x, t.expand(5, 1).double()).sum() for t in posterior.grid])
    brute = brute - torch.logsumexp(brute, 0) - torch.log(torch.tensor(2 / 21, dtype=torch.float64))
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
        grid_posterior(ObservedLikelihood(MFlow(3, 1, 2), torch.zeros(2, 3)), torch.distributions.Normal(torch.zeros(1), 1))


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
    with pytest.raises(ValueError, match="reference must have 1 columns"):
        mmd_squared(torch.zeros(5, 1), torch.zeros(5, 2))
    with pytest.raises(ValueError, match="at least two"):
        mmd_squared(torch.zeros(1, 1), torch.zeros(5, 1))


def test_log_ratio_identity_on_the_fast_path_equals_exact_density_differences():
    model = standardized(perturb(MFlow(3, 1, 2, outer=SMALL, inner=SMALL))).eval()
    x = torch.randn(6, 3, dtype=torch.float64)
    theta0 = torch.tensor([[-0.5], [0.2], [0.9]], dtype=torch.float64)
    theta1 = torch.tensor([[0.1], [0.2], [-0.7]], dtype=torch.float64)
    ratio = ObservedLikelihood(model, x).log_ratio(theta0, theta1)
    assert ratio.per_event.shape == (3, 6) and ratio.total.shape == (3,)
    with torch.no_grad():
        for i in range(3):
            expected = model.log_prob(x, theta0[i].expand(6, 1)) - model.log_prob(x, theta1[i].expand(6, 1))
            torch.testing.assert_close(ratio.per_event[i], expected)
    torch.testing.assert_close(ratio.total[1], torch.zeros((), dtype=torch.float64))
    # exact values too, from the cached per-event constant
    with torch.no_grad():
        exact = ObservedLikelihood(model, x, exact=True)(theta0)
        torch.testing.assert_close(exact[0], model.log_prob(x, theta0[0].expand(6, 1)).sum())


def test_grid_posterior_of_the_exact_likelihood_matches_the_simulator_posterior():
    simulator = PolynomialSurface()
    x = simulator.simulate(torch.full((20, 1), -0.4), seed=2).double()

    def exact_likelihood(theta):
        return torch.stack([simulator.log_likelihood(x, t.expand(20, 1)).sum() for t in theta])

    ours = grid_posterior(exact_likelihood, simulator.prior, resolution=400, dtype=torch.float64)
    truth = simulator.exact_posterior(x, resolution=400)
    torch.testing.assert_close(ours.log_density, truth.log_density)


def test_mcmc_matches_a_conjugate_gaussian_posterior():
    # x_j ~ N(θ, 1) iid, θ ~ N(0, 1): posterior N(Σx / (m + 1), 1 / (m + 1))
    x = torch.tensor([0.3, 1.1, 0.8, 1.9, 0.4], dtype=torch.float64)
    prior = torch.distributions.Independent(torch.distributions.Normal(torch.zeros(1, dtype=torch.float64), 1.0), 1)

    def log_likelihood(theta):
        return torch.distributions.Normal(theta, 1.0).log_prob(x).sum(-1)

    result = mcmc_posterior(
        log_likelihood, prior, num_samples=16_000, walkers=32, burn_in=100, thin=2, progress=False, observed=x.unsqueeze(1), parameter_names=["mu"]
    )
    mean, sd = float(x.sum() / 6), (1 / 6) ** 0.5
    assert result.samples.shape == (500 * 32, 1)
    assert float(result.samples.mean()) == pytest.approx(mean, abs=0.03)
    assert float(result.samples.std()) == pytest.approx(sd, rel=0.05)
    summary = result.summary()
    assert {"mean", "sd", "hdi_3%", "hdi_97%", "ess_bulk", "r_hat"} <= set(summary.columns)
    assert summary.index.tolist() == ["theta[mu]"]  # the parameter's name labels its row
    assert summary.loc["theta[mu]", "mean"] == pytest.approx(mean, abs=0.03)
    assert summary["r_hat"].max() < 1.05 and result.effective_sample_size > 1000
    data = result.inference_data
    assert set(data.groups()) >= {"posterior", "sample_stats", "observed_data"}
    assert data.posterior["theta"].shape == (32, 500, 1) and data.posterior["theta"].dims == ("chain", "draw", "parameter")
    assert data.posterior["parameter"].values.tolist() == ["mu"]
    # lp is the log posterior of each kept draw (walker, draw), here known in closed form
    theta = torch.as_tensor(data.posterior["theta"].values, dtype=torch.float64)  # (walkers, draws, 1)
    lp = prior.log_prob(theta) + torch.distributions.Normal(theta, 1.0).log_prob(x).sum(-1)
    np.testing.assert_allclose(data.sample_stats["lp"].values, lp.numpy(), rtol=1e-10, atol=1e-10)
    # thinned draws are the samples, walker by walker
    torch.testing.assert_close(result.samples.reshape(500, 32, 1).transpose(0, 1), theta)


def test_mcmc_respects_the_prior_support():
    prior = torch.distributions.Independent(torch.distributions.Uniform(torch.zeros(2), torch.ones(2)), 1)
    seen = []

    def flat(theta):
        seen.append(theta.clone())
        return torch.zeros(len(theta))

    result = mcmc_posterior(flat, prior, num_samples=5120, progress=False)
    assert ((result.samples >= 0) & (result.samples <= 1)).all()
    assert all(((t >= 0) & (t <= 1)).all() for t in seen)
    assert float(result.samples.mean()) == pytest.approx(0.5, abs=0.05)
    # unnamed parameters are theta_0, theta_1, … in ArviZ
    assert result.summary().index.tolist() == ["theta[theta_0]", "theta[theta_1]"]


def test_mcmc_names_parameters_and_records_acceptance():
    prior = torch.distributions.Independent(torch.distributions.Uniform(-3 * torch.ones(2), 3 * torch.ones(2)), 1)
    target = torch.distributions.MultivariateNormal(torch.tensor([1.0, -0.5]), torch.tensor([[0.09, 0.0], [0.0, 0.25]]))
    burn_in, draws, walkers = 30, 200, 16
    result = mcmc_posterior(target.log_prob, prior, num_samples=draws * walkers, walkers=walkers, burn_in=burn_in, progress=False, parameter_names=("alpha", "beta"))
    summary = result.summary()
    assert summary.index.tolist() == ["theta[alpha]", "theta[beta]"]  # in θ's column order
    assert summary.loc["theta[alpha]", "mean"] == pytest.approx(1.0, abs=0.1)
    assert summary.loc["theta[beta]", "mean"] == pytest.approx(-0.5, abs=0.15)
    stats = result.inference_data.sample_stats
    accepted = stats["accepted"].values
    assert accepted.shape == (walkers, draws) and accepted.dtype == bool
    fraction = np.asarray(stats.attrs["acceptance_fraction"])
    np.testing.assert_array_equal(fraction, result.acceptance_fraction)
    assert 0.05 < fraction.mean() < 0.95  # a mixture of accepted and rejected moves
    # the fraction counts burn-in steps too: per walker the kept draws' acceptances plus at most
    # burn_in accepted burn-in steps make up the total
    total = np.rint(fraction * (burn_in + draws))
    kept = accepted.sum(1)
    assert (kept <= total).all() and (total - kept <= burn_in).all()
    assert accepted.mean() == pytest.approx(fraction.mean(), abs=0.05)
    # a draw not accepted repeats the previous position of its walker
    theta = result.inference_data.posterior["theta"].values
    repeated = (theta[:, 1:] == theta[:, :-1]).all(-1)
    np.testing.assert_array_equal(repeated, ~accepted[:, 1:])
    # with thinning, `accepted` belongs to the step that produced each kept draw: the same seed
    # runs the same chain, so it is every second entry of the unthinned record
    thinned = mcmc_posterior(target.log_prob, prior, num_samples=50 * walkers, walkers=walkers, burn_in=burn_in, thin=2, progress=False)
    unthinned = mcmc_posterior(target.log_prob, prior, num_samples=100 * walkers, walkers=walkers, burn_in=burn_in, progress=False)
    np.testing.assert_array_equal(thinned.inference_data.posterior["theta"].values, unthinned.inference_data.posterior["theta"].values[:, 1::2])
    np.testing.assert_array_equal(thinned.inference_data.sample_stats["accepted"].values, unthinned.inference_data.sample_stats["accepted"].values[:, 1::2])
    with pytest.raises(ValueError, match="parameter_names must be 2 distinct names"):
        mcmc_posterior(target.log_prob, prior, num_samples=40, walkers=8, burn_in=0, progress=False, parameter_names=["a"])
    with pytest.raises(ValueError, match="parameter_names must be 2 distinct names"):
        mcmc_posterior(target.log_prob, prior, num_samples=40, walkers=8, burn_in=0, progress=False, parameter_names=["a", "a"])


def test_observed_likelihood_rejects_bad_input():
    model = MFlow(3, 1, 2, outer=SMALL, inner=SMALL)
    with pytest.raises(ValueError, match="no events"):
        ObservedLikelihood(model, torch.zeros(0, 3))
    with pytest.raises(ValueError, match="3 columns"):
        ObservedLikelihood(model, torch.zeros(4, 2))
    likelihood = ObservedLikelihood(model, torch.zeros(4, 3))
    with pytest.raises(ValueError, match="1 columns"):
        likelihood(torch.zeros(5, 2))
    bounded = ObservedLikelihood(model, torch.zeros(4, 3), prior=PolynomialSurface().prior)
    with pytest.raises(ValueError, match="outside the prior"):
        bounded.log_ratio(torch.tensor([[0.5]]), torch.tensor([[1.5]]))
    with pytest.raises(ValueError, match="same shape"):
        likelihood.log_ratio(torch.zeros(2, 1), torch.zeros(3, 1))
    with pytest.raises(ValueError, match="no tractable density"):
        ObservedLikelihood(PAE(3, 1, 2), torch.zeros(2, 3), exact=True)


def test_grid_posterior_accepts_a_prior_without_event_dimension():
    prior = torch.distributions.Uniform(torch.tensor([-1.0]), torch.tensor([1.0]))  # log_prob -> (N, 1)
    posterior = grid_posterior(lambda theta: -0.5 * (theta[:, 0] / 0.2) ** 2, prior, resolution=201)
    assert float(posterior.mean()) == pytest.approx(0.0, abs=1e-4)
    assert float(posterior.std()) == pytest.approx(0.2, rel=0.01)


def test_mcmc_returns_the_requested_number_of_samples_and_mixes_on_a_bimodal_posterior():
    # two separated modes, weights 1/4 and 3/4: walkers stuck in one mode would get the weights
    # wrong and a bulk ESS far below the sample count
    prior = torch.distributions.Independent(torch.distributions.Uniform(-torch.ones(1, dtype=torch.float64), torch.ones(1, dtype=torch.float64)), 1)
    modes = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(torch.tensor([0.25, 0.75], dtype=torch.float64)),
        torch.distributions.Normal(torch.tensor([-0.5, 0.5], dtype=torch.float64), 0.08),
    )
    result = mcmc_posterior(lambda theta: modes.log_prob(theta[:, 0]), prior, num_samples=5000, progress=False)
    assert result.samples.shape == (5000, 1)  # 5000 is not a multiple of the 256 walkers
    draws = result.inference_data.posterior["theta"].shape[1]
    assert draws == 20  # ⌈5000 / 256⌉: every walker's draws stay in the InferenceData
    # the samples are the kept draws in step order, walker by walker within a step
    chain = result.inference_data.posterior["theta"].values.transpose(1, 0, 2).reshape(-1, 1)
    np.testing.assert_array_equal(result.samples.numpy(), chain[:5000])
    assert float((result.samples < 0).double().mean()) == pytest.approx(0.25, abs=0.03)
    assert result.autocorrelation_time.shape == (1,)
    assert result.autocorrelation_time[0] == pytest.approx(256 * draws / result.effective_sample_size)
    assert result.autocorrelation_time[0] < 3  # the documented ≈ 1.5-4 draws


def test_mcmc_warns_once_when_the_chain_is_short_for_its_autocorrelation():
    prior = torch.distributions.Independent(torch.distributions.Uniform(-torch.ones(1), torch.ones(1)), 1)
    with pytest.warns(RuntimeWarning, match="bulk ESS") as record:
        mcmc_posterior(lambda theta: -0.5 * (theta[:, 0] / 0.1) ** 2, prior, num_samples=100, walkers=32, burn_in=5, progress=False)
    assert len(record) == 1
    with pytest.raises(ValueError, match="num_samples ≥ 1"):
        mcmc_posterior(lambda theta: theta[:, 0], prior, num_samples=0, progress=False)
