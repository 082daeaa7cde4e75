"""Diagnostics: pooled MMD against sbi, C2ST, log posterior at the true θ, reconstruction distance,
manifold distance, OOD AUC, SBC / TARP through sbi, the DataFrame collection and the plots.
(MMD ≈ 0 for one distribution and growing with a shift is tested in test_inference.py.)"""

import math

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
import torch
from sbi.utils.metrics import unbiased_mmd_squared

from conftest import perturb
from mflow_sbi.diagnostics import (
    c2st,
    diagnostics_table,
    draw_posterior_samples,
    log_posterior_at_true_theta,
    manifold_distance,
    median_distance,
    mmd_squared,
    negative_log_likelihood,
    ood_auc,
    ood_aucs,
    plot_images,
    mean_reconstruction_distance,
    plot_posteriors,
    reconstruction_distances,
    sbc_checks,
    summarize_table,
    tarp_checks,
)
from mflow_sbi.inference import GridPosterior, mcmc_posterior, mcmc_posterior_for_sbi
from mflow_sbi.models import PAE, PIE, AmbientFlow, MFlow
from mflow_sbi.transforms import FlowConfig
from simulators import PolynomialSurface

SMALL = FlowConfig(layers=2, bins=4, hidden=16, blocks=1)


def standardized(model):
    """`model` with its standardization fitted to data far from standard units: diagnostics take
    and measure raw units, so they must go through it."""
    generator = torch.Generator().manual_seed(11)
    x = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64) + torch.tensor([3.0, 0.5, 2.0], dtype=torch.float64) * torch.randn(200, 3, generator=generator, dtype=torch.float64)
    theta = 0.3 + 0.4 * torch.randn(200, model.theta_dim, generator=generator, dtype=torch.float64)
    model.fit_standardization(x, theta)
    return model


# ---- posterior MMD, C2ST, log posterior at the true θ ---------------------------------------
def test_pooled_mmd_matches_sbi_on_fixed_inputs():
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(300, 2, generator=generator, dtype=torch.float64)
    y = 1.3 * torch.randn(200, 2, generator=generator, dtype=torch.float64) + 0.4
    expected = float(unbiased_mmd_squared(x, y))
    assert mmd_squared(x, y, bandwidth="pooled") == pytest.approx(expected, rel=1e-9)
    assert mmd_squared(x, y, bandwidth="pooled", chunk_size=17) == pytest.approx(expected, rel=1e-9)
    for scale in (0.5, 2.0):  # a fixed bandwidth agrees too
        assert mmd_squared(x, y, bandwidth=scale) == pytest.approx(float(unbiased_mmd_squared(x, y, scale=scale)), rel=1e-9)
    # the default (reference-sample median) is a different, stated choice
    assert mmd_squared(x, y) == mmd_squared(x, y, bandwidth="reference") == mmd_squared(x, y, bandwidth=median_distance(y))
    assert mmd_squared(x, y) != pytest.approx(expected, rel=1e-3)


def test_c2st_is_chance_for_one_distribution_and_one_for_separated_ones():
    generator = torch.Generator().manual_seed(0)
    reference = torch.randn(500, 2, generator=generator)
    same = torch.randn(500, 2, generator=generator)
    assert abs(c2st(same, reference) - 0.5) < 0.06
    separated = same + torch.tensor([6.0, 0.0])
    assert c2st(separated, reference) > 0.98
    assert c2st(separated, reference, classifier="mlp") > 0.98
    assert isinstance(c2st(same, reference), float)


def test_log_posterior_at_true_theta_from_a_kde_matches_the_analytic_gaussian():
    generator = torch.Generator().manual_seed(1)
    gaussian = torch.distributions.Normal(0.3, 0.2)
    samples = 0.3 + 0.2 * torch.randn(50000, 1, generator=generator)
    for theta in (0.3, 0.45, 0.0):
        expected = float(gaussian.log_prob(torch.tensor(theta)))
        assert log_posterior_at_true_theta(samples, torch.tensor([theta])) == pytest.approx(expected, abs=0.05)
    # 2-D: Scott's KDE of n samples of N(μ, Σ) estimates N(μ, (1 + n^(-1/3)) Σ), its expectation
    mean, covariance = torch.tensor([0.3, -0.2]), torch.tensor([[0.04, 0.01], [0.01, 0.09]])
    samples = mean + torch.randn(20000, 2, generator=generator) @ torch.linalg.cholesky(covariance).T
    smoothed = torch.distributions.MultivariateNormal(mean.double(), (1 + 20000 ** (-1 / 3)) * covariance.double())
    for theta in ([0.3, -0.2], [0.4, 0.0]):
        expected = float(smoothed.log_prob(torch.tensor(theta, dtype=torch.float64)))
        assert log_posterior_at_true_theta(samples, torch.tensor(theta)) == pytest.approx(expected, abs=0.1)
    # a given bandwidth factor is used as such: a kernel as wide as the posterior flattens the peak
    at_mode = float(smoothed.log_prob(mean.double()))
    assert log_posterior_at_true_theta(samples, mean, bandwidth=1.0) == pytest.approx(at_mode - math.log(2), abs=0.1)


def test_log_posterior_at_true_theta_from_an_mcmc_run():
    prior = torch.distributions.Independent(torch.distributions.Uniform(torch.tensor([-3.0]), torch.tensor([3.0])), 1)
    posterior = torch.distributions.Normal(0.5, 0.3)
    result = mcmc_posterior(
        lambda theta: posterior.log_prob(theta[:, 0]), prior, num_samples=3200, walkers=32, burn_in=50, progress=False
    )
    expected = float(posterior.log_prob(torch.tensor(0.6)))
    assert log_posterior_at_true_theta(result, torch.tensor([0.6])) == pytest.approx(expected, abs=0.15)


def test_log_posterior_at_true_theta_of_a_grid_posterior_is_its_exact_density():
    simulator = PolynomialSurface()
    x_observed = simulator.simulate(torch.zeros(20, 1), seed=4)
    exact = simulator.exact_posterior(x_observed, resolution=1001)
    value = log_posterior_at_true_theta(exact, torch.tensor([0.0]))
    assert value == float(exact.log_prob(torch.zeros(1, 1))[0])
    assert math.isfinite(value)
    samples = exact.sample(20000, torch.Generator().manual_seed(0))  # the KDE of its samples agrees
    assert log_posterior_at_true_theta(samples, torch.tensor([0.0])) == pytest.approx(value, abs=0.1)
    assert log_posterior_at_true_theta(exact, torch.tensor([1.5])) == -math.inf  # outside the grid


# ---- manifold diagnostics ---------------------------------------------------------------------
def test_exact_manifold_distance_is_zero_on_the_surface_and_the_normal_displacement_off_it():
    simulator = PolynomialSurface()
    z = torch.tensor([[0.0, 0.0], [1.0, -1.0], [-1.5, 0.7], [2.0, 1.5], [-0.3, -2.2]], dtype=torch.float64)
    on_surface = simulator.chart(z)
    assert max(manifold_distance(simulator, on_surface, per_event=True)) < 1e-8
    normal = simulator.normal(z)
    for displacement in (1e-3, 0.05):
        distances = manifold_distance(simulator, on_surface + displacement * normal, per_event=True)
        assert distances == pytest.approx([displacement] * len(z), rel=1e-6)
    assert manifold_distance(simulator, on_surface - 0.01 * normal) == pytest.approx(0.01, rel=1e-6)


def test_manifold_distance_needs_a_simulator_that_knows_its_manifold():
    with pytest.raises(ValueError, match="has no distance_to_manifold"):
        manifold_distance(object(), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="x must have 3 columns"):
        manifold_distance(PolynomialSurface(), torch.zeros(3, 2))


def test_reconstruction_distance_is_zero_on_the_model_manifold_and_the_projection_distance_off_it():
    model = standardized(perturb(MFlow(3, 1, 2, outer=SMALL, inner=SMALL), scale=0.2)).eval()
    theta = torch.rand(50, 1, dtype=torch.float64) * 2 - 1
    with torch.no_grad():
        on_manifold = model.sample(theta, torch.Generator().manual_seed(0))  # raw units
        off_manifold = on_manifold + 0.1 * torch.randn(50, 3, dtype=torch.float64)
        projection_distance = (off_manifold - model.project(off_manifold)).norm(dim=-1)
        # the projection lies on the manifold: it is its own projection, and decode(encode(x)) is it
        projected = model.project(off_manifold)
        torch.testing.assert_close(model.decode(model.encode(off_manifold)), projected)
    assert float(projection_distance.min()) > 1e-3  # the displaced points are off the manifold
    assert mean_reconstruction_distance(model, on_manifold) < 1e-6
    assert mean_reconstruction_distance(model, projected) < 1e-6
    errors = mean_reconstruction_distance(model, off_manifold, per_event=True)
    assert errors == pytest.approx(projection_distance.tolist(), rel=1e-9)
    torch.testing.assert_close(reconstruction_distances(model, off_manifold), projection_distance)
    assert mean_reconstruction_distance(model, off_manifold) == pytest.approx(float(projection_distance.mean()), rel=1e-9)
    assert mean_reconstruction_distance(model, off_manifold.float()) == pytest.approx(float(projection_distance.mean()), rel=1e-5)
    # the distance, not its square (the model's squared_reconstruction_error)
    with torch.no_grad():
        squared = model.squared_reconstruction_error(off_manifold)
    torch.testing.assert_close(squared, projection_distance**2)


def test_reconstruction_distance_of_a_theta_dependent_manifold_needs_theta():
    model = standardized(perturb(PIE(3, 1, 2, conditional_manifold=True, outer=SMALL, inner=SMALL))).eval()
    x = torch.randn(10, 3, dtype=torch.float64)
    errors = mean_reconstruction_distance(model, x, torch.tensor([0.2]), per_event=True)
    with torch.no_grad():
        expected = model.squared_reconstruction_error(x, torch.full((10, 1), 0.2, dtype=torch.float64)).sqrt()
        elsewhere = model.squared_reconstruction_error(x, torch.full((10, 1), -0.6, dtype=torch.float64)).sqrt()
    assert errors == pytest.approx(expected.tolist(), rel=1e-6)
    assert errors != pytest.approx(elsewhere.tolist(), rel=1e-3)  # θ really moves the manifold
    with pytest.raises(ValueError, match="depends on θ: pass theta"):
        mean_reconstruction_distance(model, x)
    with pytest.raises(ValueError, match="theta must have 1 or 10 rows"):
        mean_reconstruction_distance(model, x, torch.zeros(3, 1))


def test_ood_auc_is_one_for_a_perfect_score_and_one_half_for_a_random_one():
    generator = torch.Generator().manual_seed(0)
    score_in = torch.randn(2000, generator=generator)
    assert ood_auc(score_in, score_in.max() + 1 + torch.rand(300, generator=generator)) == 1.0
    assert ood_auc(score_in, score_in.min() - 1 - torch.rand(300, generator=generator)) == 0.0
    assert abs(ood_auc(score_in, torch.randn(2000, generator=generator)) - 0.5) < 0.03
    assert ood_auc(np.array([0.0, 1.0]), np.array([np.inf, 2.0])) == 1.0  # -log p = +inf is "most OOD"


def test_ood_aucs_of_a_model_from_likelihood_and_reconstruction():
    mflow = standardized(perturb(MFlow(3, 1, 2, outer=SMALL, inner=SMALL), scale=0.2)).eval()
    theta = torch.zeros(1, 1, dtype=torch.float64)
    with torch.no_grad():
        x_in = mflow.sample(theta.expand(100, 1), torch.Generator().manual_seed(0))
    x_out = x_in + 0.1 * torch.randn(100, 3, dtype=torch.float64)
    aucs = ood_aucs(mflow, x_in, x_out, theta)
    assert set(aucs) == {"ood_auc_log_likelihood", "ood_auc_reconstruction"}
    assert aucs["ood_auc_reconstruction"] == 1.0  # on the model manifold vs off it
    flow = standardized(perturb(AmbientFlow(3, 1, inner=SMALL), scale=0.2)).eval()
    far = torch.randn(100, 3, dtype=torch.float64) + 20.0
    assert ood_aucs(flow, x_in, far, theta[0])["ood_auc_log_likelihood"] > 0.99
    nll = negative_log_likelihood(flow, x_in, theta)
    assert nll.shape == (100,)
    with torch.no_grad():
        torch.testing.assert_close(nll, -flow.log_prob(x_in, theta.expand(100, 1)))  # the exact raw-unit density
    assert ood_aucs(flow, x_in, far, theta)["ood_auc_reconstruction"] == pytest.approx(0.5, abs=0.1)  # AF reconstructs everything
    pae = standardized(perturb(PAE(3, 1, 2, inner=SMALL), scale=0.2)).eval()  # no exact density: the latent one
    with torch.no_grad():
        torch.testing.assert_close(negative_log_likelihood(pae, x_in, theta), -pae.log_prob(x_in, theta.expand(100, 1), exact=False))


# ---- SBC and TARP through sbi ------------------------------------------------------------------
NOISE = 0.5  # x ~ N(θ, NOISE²) with prior θ ~ N(0, 1): posterior N(x / (1 + NOISE²), NOISE² / (1 + NOISE²))


class GaussianPosterior:
    """The analytic posterior of the conjugate Gaussian model, widened by `width` (1 = exact),
    behind sbi's `sample_batched`."""

    def __init__(self, width: float = 1.0) -> None:
        self.width = width

    def sample_batched(self, sample_shape, x, **kwargs):
        mean = x / (1 + NOISE**2)
        std = self.width * math.sqrt(NOISE**2 / (1 + NOISE**2))
        return mean + std * torch.randn(*sample_shape, *x.shape)


def conjugate_pairs(n: int = 200):
    generator = torch.Generator().manual_seed(7)
    thetas = torch.randn(n, 1, generator=generator)
    return thetas, thetas + NOISE * torch.randn(n, 1, generator=generator)


@pytest.mark.filterwarnings("ignore:.*C2ST score variability")
def test_sbc_and_tarp_tell_a_calibrated_posterior_from_an_overconfident_one():
    thetas, xs = conjugate_pairs()
    calibrated = sbc_checks(GaussianPosterior(), thetas, xs, num_posterior_samples=200)
    assert set(calibrated) == {"sbc_ks_pvalue_0", "sbc_c2st_ranks_0", "sbc_c2st_dap_0"}
    assert all(isinstance(value, float) for value in calibrated.values())
    overconfident = sbc_checks(GaussianPosterior(width=0.3), thetas, xs, num_posterior_samples=200)
    assert calibrated["sbc_ks_pvalue_0"] > 0.01 and overconfident["sbc_ks_pvalue_0"] < 1e-6
    assert calibrated["sbc_c2st_ranks_0"] < overconfident["sbc_c2st_ranks_0"]
    coverage = tarp_checks(GaussianPosterior(), thetas, xs, num_posterior_samples=200)
    narrow = tarp_checks(GaussianPosterior(width=0.3), thetas, xs, num_posterior_samples=200)
    wide = tarp_checks(GaussianPosterior(width=3.0), thetas, xs, num_posterior_samples=200)
    assert abs(coverage["tarp_atc"]) < 0.035 and coverage["tarp_ks_pvalue"] > 0.05
    assert narrow["tarp_atc"] < -0.04 and wide["tarp_atc"] > 0.07  # under- and over-dispersed


def test_calibration_checks_share_drawn_samples_and_run_on_our_mcmc_posterior():
    thetas, xs = conjugate_pairs(100)
    samples = draw_posterior_samples(GaussianPosterior(), xs, num_posterior_samples=100, seed=3)
    assert samples.shape == (100, 100, 1)
    direct = sbc_checks(GaussianPosterior(), thetas, xs, num_posterior_samples=100, seed=3)
    shared = sbc_checks(samples, thetas, xs)
    assert shared["sbc_ks_pvalue_0"] == direct["sbc_ks_pvalue_0"]  # the same draws, the same ranks
    assert tarp_checks(samples, thetas, xs).keys() == {"tarp_atc", "tarp_ks_pvalue"}

    simulator = PolynomialSurface()
    model = perturb(MFlow(3, 1, 2, outer=SMALL, inner=SMALL), scale=0.2).float().eval()
    posterior = mcmc_posterior_for_sbi(model, simulator.prior, num_chains=2, warmup_steps=5)
    thetas, xs = simulator.simulate_joint(10, seed=2)
    drawn = draw_posterior_samples(posterior, xs, num_posterior_samples=20)
    assert drawn.shape == (20, 10, 1) and ((drawn > -1) & (drawn < 1)).all()
    with pytest.warns(UserWarning):  # sbi warns that 10 pairs and 20 samples are few
        checks = {**sbc_checks(drawn, thetas, xs), **tarp_checks(drawn, thetas, xs)}
    assert 0 <= checks["sbc_ks_pvalue_0"] <= 1 and math.isfinite(checks["tarp_atc"])


# ---- tables and plots --------------------------------------------------------------------------
def test_diagnostics_collect_into_a_dataframe_and_summarize_per_model():
    rows = [
        {"model": "mflow", "seed": 0, "mmd": torch.tensor(0.02), "ood_auc": np.float32(0.9)},
        {"model": "mflow", "seed": 1, "mmd": 0.04, "ood_auc": 0.95},
        {"model": "af", "seed": 0, "mmd": 0.07, "c2st": 0.6},
    ]
    table = diagnostics_table(rows)
    assert list(table.columns) == ["model", "seed", "mmd", "ood_auc", "c2st"]
    assert table["mmd"].tolist() == pytest.approx([0.02, 0.04, 0.07])
    assert math.isnan(table.loc[0, "c2st"])
    summary = summarize_table(table.drop(columns="seed"), by="model", quantiles=(0.0, 1.0))
    assert summary.loc["mflow", ("mmd", "median")] == pytest.approx(0.03)
    assert summary.loc["mflow", ("mmd", "q0")] == pytest.approx(0.02)
    assert summary.loc["mflow", ("mmd", "q1")] == pytest.approx(0.04)
    assert summary.loc["mflow", ("runs", "")] == 2 and summary.loc["af", ("runs", "")] == 1
    assert isinstance(summary, pd.DataFrame)


def test_plot_posteriors_writes_1d_and_2d_comparisons(tmp_path):
    simulator = PolynomialSurface()
    exact = simulator.exact_posterior(simulator.simulate(torch.zeros(20, 1), seed=4), resolution=501)
    samples = exact.sample(2000, torch.Generator().manual_seed(0)) + 0.05
    path = plot_posteriors(tmp_path / "one" / "posterior.png", {"M-flow": samples}, exact=exact, true_theta=[0.0])
    assert path.exists() and path.stat().st_size > 10_000

    grid = GridPosterior.cell_centres([-1.0, -1.0], [1.0, 1.0], 40)
    gaussian = torch.distributions.MultivariateNormal(torch.tensor([0.2, -0.1]), 0.05 * torch.eye(2))
    exact_2d = GridPosterior(grid, gaussian.log_prob(grid))
    model_2d = gaussian.sample((1000,)) + 0.1
    path = plot_posteriors(
        tmp_path / "two.pdf", {"model": model_2d, "model on a grid": exact_2d}, exact=exact_2d,
        true_theta=torch.tensor([0.2, -0.1]), parameter_names=["a", "b"], title="2-D",
    )  # fmt: skip
    assert path.exists() and path.stat().st_size > 5_000


def test_plot_posteriors_draws_a_corner_plot_for_three_parameters(tmp_path):
    exact = torch.randn(2000, 3)
    path = plot_posteriors(tmp_path / "corner.png", {"model": exact + 0.3}, exact=exact, true_theta=[0.0, 0.0, 0.0])
    assert path.exists() and path.stat().st_size > 20_000
    with pytest.raises(ValueError, match="true_theta must hold 3 finite numbers"):
        plot_posteriors(tmp_path / "p.png", {"model": exact}, true_theta=[0.0])


def test_plot_images_draws_rows_of_images(tmp_path):
    red = torch.full((3, 3, 8, 8), -0.5)
    red[:, 0] = 0.5  # pixel values in [-0.5, 0.5]: pure red
    path = plot_images(tmp_path / "grid" / "images.png", {"red": red, "noise": torch.rand(5, 3, 8, 8) - 0.5}, title="rows")
    pixels = matplotlib.image.imread(path)[..., :3].reshape(-1, 3)
    assert ((pixels[:, 0] > 0.95) & (pixels[:, 1:] < 0.05).all(1)).sum() >= 3 * 64  # the red images are drawn
    with pytest.raises(ValueError, match="row 'gray' must be a non-empty batch of RGB images"):
        plot_images(tmp_path / "bad.png", {"gray": torch.zeros(2, 1, 8, 8)})
    with pytest.raises(ValueError, match="rows is empty"):
        plot_images(tmp_path / "bad.png", {})


# ---- bad input ---------------------------------------------------------------------------------
def test_diagnostics_reject_bad_input_naming_the_argument(tmp_path):
    good = torch.randn(20, 1)
    nan = good.clone()
    nan[3] = float("nan")
    with pytest.raises(ValueError, match="samples contains NaN"):
        c2st(nan, good)
    with pytest.raises(ValueError, match="samples must have 1 columns"):
        c2st(torch.randn(20, 2), good)
    with pytest.raises(ValueError, match="classifier must be 'rf' or 'mlp'"):
        c2st(good, good, classifier="svm")
    with pytest.raises(ValueError, match="bandwidth must be 'reference', 'pooled' or a number"):
        mmd_squared(good, good, bandwidth="sbi")
    with pytest.raises(ValueError, match="theta_true must have 1 entries"):
        log_posterior_at_true_theta(good, torch.zeros(2))
    with pytest.raises(ValueError, match="theta_true contains NaN"):
        log_posterior_at_true_theta(good, torch.tensor([float("nan")]))
    with pytest.raises(ValueError, match="posterior holds no samples"):
        log_posterior_at_true_theta(torch.zeros(0, 1), torch.zeros(1))
    with pytest.raises(ValueError, match="bandwidth must be 'scott'"):
        log_posterior_at_true_theta(good, torch.zeros(1), bandwidth="wide")
    with pytest.raises(ValueError, match="score_out contains NaN"):
        ood_auc(np.zeros(3), np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="score_in must be a non-empty 1-D array"):
        ood_auc(np.zeros(0), np.ones(3))
    model = MFlow(3, 1, 2, outer=SMALL, inner=SMALL)
    with pytest.raises(ValueError, match="x must have 3 columns"):
        mean_reconstruction_distance(model, torch.zeros(5, 2))
    with pytest.raises(ValueError, match="x holds no events"):
        mean_reconstruction_distance(model, torch.zeros(0, 3))
    with pytest.raises(ValueError, match="theta is required"):
        negative_log_likelihood(model, torch.zeros(5, 3), None)
    thetas, xs = conjugate_pairs(20)
    with pytest.raises(ValueError, match="batch sizes differ"):
        sbc_checks(GaussianPosterior(), thetas, xs[:10])
    with pytest.raises(ValueError, match="at least 10 pairs"):
        tarp_checks(GaussianPosterior(), thetas[:5], xs[:5])
    with pytest.raises(ValueError, match="posterior samples must have shape"):
        sbc_checks(torch.zeros(50, 3, 1), thetas, xs)
    with pytest.raises(ValueError, match="posterior must be an sbi posterior"):
        tarp_checks(object(), thetas, xs)
    with pytest.raises(ValueError, match=r"rows\[1\]\['mmd'\] must be a single number"):
        diagnostics_table([{"mmd": 0.1}, {"mmd": torch.zeros(3)}])
    with pytest.raises(ValueError, match="rows is empty"):
        diagnostics_table([])
    with pytest.raises(ValueError, match="differ in the dimension"):
        plot_posteriors(tmp_path / "p.png", {"a": torch.randn(10, 1), "b": torch.randn(10, 2)})
    with pytest.raises(ValueError, match="true_theta must hold 1 finite numbers"):
        plot_posteriors(tmp_path / "p.png", {"a": torch.randn(10, 1)}, true_theta=[0.0, 1.0])
