"""The learnable-prior flow (paper 002) and the intrinsic-dimension estimates: the density against
a brute-force Gaussian, the gap rule on known spectra, classical estimators on manifolds of known
dimension, and the learned spectrum on the paper's toy data."""

import math

import pytest
import torch

from conftest import perturb
from mflow_sbi.intrinsic_dimension import (
    IntrinsicDimension,
    classical_dimensions,
    dimension_from_spectrum,
    estimate_intrinsic_dimension,
)
from mflow_sbi.models import LearnablePriorFlow
from mflow_sbi.training import TrainingConfig, train
from simulators import PolynomialSurface

SMALL_FLOW = {"layers": 3, "hidden": 16, "blocks": 1}


def linear_manifold(k: int, dimension: int, n: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, k, generator=generator, dtype=torch.float64) @ torch.randn(k, dimension, generator=generator, dtype=torch.float64)


def curved_manifold(k: int, dimension: int, n: int, seed: int = 0) -> torch.Tensor:
    """x = sin(1.5 u W), u ~ U(-1, 1)^k: a curved k-dimensional manifold in R^D."""
    generator = torch.Generator().manual_seed(seed)
    u = 2 * torch.rand(n, k, generator=generator, dtype=torch.float64) - 1
    return torch.sin(1.5 * u @ torch.randn(k, dimension, generator=generator, dtype=torch.float64))


def test_learnable_prior_density_is_a_gaussian_of_a_volume_preserving_map():
    """log p(x|θ) = log N(h(x'|θ); 0, AAᵀ + σ²I) + log|det ∂x'/∂x| with |det J_h| = 1 (brute force)."""
    model = perturb(LearnablePriorFlow(3, 2, SMALL_FLOW), scale=0.3).eval()
    model.fit_standardization(3 * torch.randn(50, 3, dtype=torch.float64) + 1, torch.randn(50, 2, dtype=torch.float64))
    x, theta = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    a = model.density.base.scale_tril
    gaussian = torch.distributions.MultivariateNormal(torch.zeros(3, dtype=torch.float64), a @ a.T + 1e-4 * torch.eye(3, dtype=torch.float64))
    for i in range(4):
        theta_s = model.standardization.theta(theta[i : i + 1])
        h = lambda v: model.density.flow(theta_s)(model.standardization.x(v.unsqueeze(0)))[0]  # noqa: E731
        jacobian = torch.autograd.functional.jacobian(h, x[i])
        expected = gaussian.log_prob(h(x[i])) - model.standardization.x_scale.log().sum()
        torch.testing.assert_close(model.log_prob(x[i : i + 1], theta[i : i + 1])[0], expected.detach())
        torch.testing.assert_close(torch.linalg.det(jacobian).abs() / model.standardization.x_scale.prod().reciprocal(), torch.tensor(1.0, dtype=torch.float64))


def test_spread_noise_enters_the_training_loss_only():
    model = LearnablePriorFlow(3, 1, SMALL_FLOW).double()
    x, theta = torch.randn(8, 3, dtype=torch.float64), torch.zeros(8, 1, dtype=torch.float64)
    model.eval()
    torch.testing.assert_close(model.likelihood_loss(x, theta), -model.log_prob(x, theta))
    model.train()
    assert not torch.allclose(model.likelihood_loss(x, theta), -model.log_prob(x, theta))


def test_training_noise_comes_from_the_config_seed():
    """The spread noise is drawn in a fork of torch's generator seeded from `config.seed`: the same
    config gives the same model whatever the caller's random state, which is left as it was."""
    x, theta = linear_manifold(2, 3, 200).float(), torch.zeros(200, 1)
    config = TrainingConfig(epochs=2, batch_size=50, progress=False)
    models = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        before = torch.random.get_rng_state()
        model = LearnablePriorFlow(3, 1, SMALL_FLOW)
        train(model, x, theta, config=config)
        assert torch.equal(torch.random.get_rng_state(), before)
        models.append(model)
    for p, q in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("spectrum", "expected"),
    [([2.0, 1.0, 1e-6], 2), ([1.0, 0.8, 0.5], 3), ([0.3, 1e-5, 1e-6, 1e-6], 1), ([1.0, 0.5, 0.2, 1e-3, 1e-5], 3), ([0.0, 0.0], 1)],
)
def test_the_gap_rule_reads_the_dimension_off_a_spectrum(spectrum, expected):
    assert dimension_from_spectrum(torch.tensor(spectrum), noise_variance=1e-4) == expected


def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match="non-empty vector"):
        dimension_from_spectrum(torch.tensor([]), 1e-4)
    with pytest.raises(ValueError, match="at least 20 points"):
        classical_dimensions(torch.randn(10, 3))
    with pytest.raises(ValueError, match="noise_variance"):
        estimate_intrinsic_dimension(torch.randn(50, 3), noise_variance=0.0)
    with pytest.raises(ValueError, match="method must be one of"):
        estimate_intrinsic_dimension(torch.randn(50, 3), method="pca")
    with pytest.raises(ValueError, match="no spectrum"):
        estimate_intrinsic_dimension(torch.randn(50, 3)).plot()
    with pytest.raises(ValueError, match="x must have 3 columns|same number of rows|theta"):
        estimate_intrinsic_dimension(torch.randn(50, 3), torch.randn(40, 1))
    with pytest.raises(ValueError, match="volume_preserving"):
        LearnablePriorFlow(3, 1, {"coupling": "rqs"})


#: TwoNN and MLE within 0.5 of k on 4000 points for k ≤ 5, within 1 at k = 8 on a linear manifold
#: (measured 7.9 and 7.5: both are known to fall short of k as k grows). Not covered, measured:
#: the curved 8-dimensional manifold in R²⁰ gives 10.1 and 11.4.
@pytest.mark.parametrize(("k", "dimension"), [(1, 3), (2, 3), (3, 10), (5, 10)])
@pytest.mark.parametrize("shape", [linear_manifold, curved_manifold])
def test_classical_estimates_on_synthetic_manifolds(shape, k, dimension):
    for name, value in classical_dimensions(shape(k, dimension, 4000)).items():
        assert abs(value - k) < 0.5, (name, value)


def test_classical_estimates_on_an_eight_dimensional_linear_manifold():
    for name, value in classical_dimensions(linear_manifold(8, 20, 4000)).items():
        assert abs(value - 8) < 1.0, (name, value)


def test_classical_estimates_on_the_polynomial_surface():
    _, x = PolynomialSurface().simulate_joint(4000, seed=0)
    for name, value in classical_dimensions(x).items():
        assert abs(value - PolynomialSurface.manifold_dim) < 0.3, (name, value)
    result = estimate_intrinsic_dimension(x)
    assert result.dimension == 2 and result.method == "twonn" and result.spectrum is None


@pytest.mark.slow  # 9000 training steps: about 2 minutes on one core
def test_the_learned_spectrum_collapses_on_the_papers_toy_data():
    """Paper 002, §2 and §7.1: x = (x₁, sin 2x₁), x₁ ~ N(0, 1), a 1-D manifold in R². After 9000
    steps at batch 100 the second eigenvalue of AAᵀ has fallen below σ² while the first stays
    above 10⁻² (measured 0.11 and 5·10⁻⁵), so the gap rule gives n = 1."""
    x1 = torch.randn(5000, 1, generator=torch.Generator().manual_seed(0))
    x = torch.cat([x1, torch.sin(2 * x1)], 1)
    config = TrainingConfig(epochs=200, batch_size=100, learning_rate=1e-3, patience=None, progress=False)
    result = estimate_intrinsic_dimension(x, method="learnable_prior", config=config)
    assert isinstance(result, IntrinsicDimension) and result.dimension == 1 == result.estimates["learnable_prior"]
    assert result.spectrum[0] > 1e-2 and result.spectrum[1] < result.noise_variance
    assert math.isfinite(result.history.validation_loss.iloc[-1])
    assert len(result.plot().axes) == 1


def test_checkpoint_of_a_learnable_prior_flow_keeps_its_spectrum(tmp_path):
    from mflow_sbi.training import load_model, save_model

    model = perturb(LearnablePriorFlow(3, 1, SMALL_FLOW), scale=0.2)
    save_model(tmp_path / "m.pt", model)
    torch.testing.assert_close(load_model(tmp_path / "m.pt")[0].spectrum(), model.spectrum())


@pytest.mark.parametrize("model", ["mflow", "meflow"])
def test_latent_dim_auto_estimates_n_when_training_starts(model, monkeypatch, tmp_path):
    """The plumbing of latent_dim="auto", with the estimate replaced by a fixed one (the estimate's
    accuracy is the business of the tests above): n is set before the first step, the model is
    the one `latent_dim=n` builds with the same seed, and the estimate is kept in the config, the
    checkpoint and the history; an estimate n = D raises."""
    from mflow_sbi import intrinsic_dimension
    from mflow_sbi.registry import build_estimator
    from mflow_sbi.training import load_model, save_model

    estimate = IntrinsicDimension(2, "twonn", {"twonn": 2.2, "mle": 2.1})
    seen = []
    monkeypatch.setattr(intrinsic_dimension, "estimate_intrinsic_dimension", lambda x, **options: seen.append(x) or estimate)
    theta, x = PolynomialSurface().simulate_joint(300, seed=0)
    small = {"layers": 2, "bins": 4, "hidden": 16, "blocks": 1}
    config = {"model": model, "data_dim": 3, "theta_dim": 1, "outer": small, "inner": small}
    estimator = build_estimator({**config, "latent_dim": "auto"})
    history = train(estimator, x, theta, config=TrainingConfig(epochs=1, batch_size=100, progress=False))
    assert len(seen) == 1 and len(seen[0]) == 270  # the training split, raw units
    assert history.attrs["intrinsic_dimension"] == estimate.as_dict() == estimator.intrinsic_dimension
    assert estimator.latent_dim == 2 and estimator.config["latent_dim"] == 2
    reference = build_estimator({**config, "latent_dim": 2})
    train(reference, x, theta, config=TrainingConfig(epochs=1, batch_size=100, progress=False))
    torch.testing.assert_close(estimator.log_prob(x[:5], theta[:5]), reference.log_prob(x[:5], theta[:5]))
    save_model(tmp_path / "m.pt", estimator)
    loaded = load_model(tmp_path / "m.pt")[0]
    assert loaded.latent_dim == 2 and loaded.intrinsic_dimension == estimate.as_dict()
    monkeypatch.setattr(intrinsic_dimension, "estimate_intrinsic_dimension", lambda x, **options: IntrinsicDimension(3, "twonn", {"twonn": 2.9}))
    with pytest.raises(ValueError, match="fill R\\^3"):
        train(build_estimator({**config, "latent_dim": "auto"}), x, theta, config=TrainingConfig(epochs=1, progress=False))


def test_latent_dim_auto_needs_vector_data():
    from mflow_sbi.models import MFlow

    with pytest.raises(ValueError, match="latent_dim='auto' works on vector data"):
        MFlow(image_shape=(1, 4, 4), latent_dim="auto")


#: The image manifold (16×16, 3000 images): TwoNN rounds to n (measured 4.07 and 8.04).
@pytest.mark.parametrize("manifold_dim", [4, 8])
def test_the_default_estimate_on_the_image_manifold(manifold_dim):
    from simulators import ImageManifold

    simulator = ImageManifold(manifold_dim=manifold_dim, resolution=16)
    x = simulator.simulate(simulator.sample_prior(3000, seed=0), seed=1).flatten(1)
    assert estimate_intrinsic_dimension(x).dimension == manifold_dim


#: LHC-like parton tier (n = 9, 10⁴ events): the rounded default gives n (TwoNN measured 8.62;
#: 8.43 on 5000 events, which rounded to 8), the MLE within 1 (8.43). Hadron and detector tiers
#: (n = 14) are not covered: both measure ≈ 9.0-9.6, four hadron-level chart directions being far
#: narrower than the nearest-neighbour distance (test_lhc_like.py, docs/intrinsic_dimension_study.md).
def test_the_default_estimate_on_the_lhc_like_parton_tier():
    from simulators import LHCLike

    simulator = LHCLike(tier="parton")
    x = simulator.simulate(simulator.sample_prior(10_000, seed=0), seed=1)
    estimate = estimate_intrinsic_dimension(x)
    assert estimate.dimension == simulator.manifold_dim, estimate.estimates
    assert abs(estimate.estimates["mle"] - simulator.manifold_dim) < 1.0, estimate.estimates


def test_the_sbi_builder_estimates_n_on_sbis_training_data():
    from mflow_sbi.inference import estimator_builder

    theta, x = PolynomialSurface().simulate_joint(2000, seed=0)
    small = {"layers": 2, "bins": 4, "hidden": 16, "blocks": 1}
    density_estimator = estimator_builder("mflow", latent_dim="auto", outer=small, inner=small)(theta, x)
    estimator = density_estimator.estimator
    assert estimator.latent_dim == 2 and estimator.intrinsic_dimension["method"] == "twonn"
    assert bool(estimator.standardization.fitted)
