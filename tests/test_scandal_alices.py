"""SCANDAL and ALICES on a Gaussian toy with a latent variable, where the joint score, the
joint ratio, the marginal likelihood ratio and the posterior are all analytic.

Toy: z ~ N(θ a, I₂), x = z + ε with ε ~ N(0, s² I₂), so p(x|θ) = N(θ a, (1 + s²) I₂);
joint log ratio log r(x,z|θ0,θ1) = (‖z - θ1 a‖² - ‖z - θ0 a‖²)/2, joint score t = aᵀ(z - θa).
"""

import pytest
import torch

from mflow_sbi.baselines import RatioEstimator, RatioTrainingData, train_ratio_estimator
from mflow_sbi.inference import FastLikelihoodPotential, ObservedLikelihood, grid_posterior, mcmc_posterior_for_sbi
from mflow_sbi.models import AmbientFlow, MFlow
from mflow_sbi.training import (
    Standardization,
    TrainingConfig,
    latent_negative_log_likelihood,
    load_model,
    negative_log_likelihood,
    save_model,
    scandal,
    schedule,
    train,
)
from mflow_sbi.transforms import FlowConfig

DIRECTION = torch.tensor([1.0, 0.5])
NOISE = 0.5
VARIANCE = 1 + NOISE**2  # of x given θ, per coordinate
PRIOR = torch.distributions.Uniform(torch.tensor([-2.0]), torch.tensor([2.0]))
SMALL = FlowConfig(layers=3, bins=8, hidden=32, blocks=1)


def simulate(theta: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x and the latent z for θ (n, 1)."""
    generator = torch.Generator().manual_seed(seed)
    z = theta * DIRECTION + torch.randn(len(theta), 2, generator=generator)
    return z + NOISE * torch.randn(len(theta), 2, generator=generator), z


def joint_score(z: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    return ((z - theta * DIRECTION) @ DIRECTION).unsqueeze(-1)


def joint_log_ratio(z: torch.Tensor, theta0: torch.Tensor, theta1: torch.Tensor) -> torch.Tensor:
    return 0.5 * (((z - theta1 * DIRECTION) ** 2).sum(-1) - ((z - theta0 * DIRECTION) ** 2).sum(-1))


def exact_log_likelihood(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """log p(x|θ) for paired rows (up to the Gaussian's constant)."""
    return -((x - theta * DIRECTION) ** 2).sum(-1) / (2 * VARIANCE)


def exact_negative_log_likelihood(model, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    return -exact_log_likelihood(x, theta)


def exact_posterior(x_observed: torch.Tensor):
    return grid_posterior(
        lambda theta: exact_log_likelihood(x_observed.unsqueeze(0), theta.unsqueeze(1)).sum(-1), PRIOR, resolution=801
    )


@pytest.fixture(scope="module")
def training_set():
    theta = PRIOR.sample((6000,))
    x, z = simulate(theta, seed=1)
    return x, theta, z


@pytest.fixture(scope="module")
def observed():
    theta_true = torch.tensor([[0.7]])
    x, _ = simulate(theta_true.expand(20, 1), seed=2)
    return x, theta_true


# ---- SCANDAL ---------------------------------------------------------------------------------
def test_scandal_term_vanishes_when_the_model_score_is_the_joint_score():
    theta = PRIOR.sample((50,))
    x, _ = simulate(theta, seed=0)
    model_score = ((x - theta * DIRECTION) @ DIRECTION / VARIANCE).unsqueeze(-1)  # ∇_θ log p(x|θ)
    loss = scandal(exact_negative_log_likelihood, alpha=3.0)
    torch.testing.assert_close(loss(None, x, theta, model_score), -exact_log_likelihood(x, theta))
    shifted = loss(None, x, theta, model_score + 0.2)  # the term is α‖∇ - t‖², here 3 · 0.04
    torch.testing.assert_close(shifted + exact_log_likelihood(x, theta), torch.full((50,), 0.12))


@pytest.mark.parametrize(
    "make, schedule_name, base_loss",
    [
        (lambda: AmbientFlow(2, 1, inner=SMALL), "likelihood", negative_log_likelihood),
        (lambda: MFlow(2, 1, 1, outer=SMALL, inner=SMALL), "alternating", latent_negative_log_likelihood),
    ],
)
def test_scandal_gradient_flows_into_the_model(training_set, make, schedule_name, base_loss):
    x, theta, z = training_set
    x, theta, score = x[:200], theta[:200], joint_score(z[:200], theta[:200])
    model = make()
    for p in model.inner.parameters():  # leave the identity initialization, where ∇_θ log p = 0
        torch.nn.init.normal_(p, std=0.1)
    phase = schedule(schedule_name, scandal_alpha=1.0)[-1][-1]
    assert phase.fields == ("x", "theta", "score")

    def gradients(loss: torch.Tensor) -> dict[str, torch.Tensor]:
        model.zero_grad()
        loss.mean().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    with_term = gradients(phase.loss(model, x, theta, score))
    without = gradients(base_loss(model, x, theta))
    assert set(with_term) == set(without)
    if schedule_name != "likelihood":  # the density phase trains h only
        assert all(n.startswith("inner.") for n in with_term)
    assert any(not torch.allclose(with_term[n], without[n]) for n in with_term)


def test_scandal_training_runs_and_logs_its_phase(training_set):
    x, theta, z = training_set
    model = MFlow(2, 1, 1, outer=SMALL, inner=SMALL)
    config = TrainingConfig(epochs=2, batch_size=200, learning_rate=3e-3, patience=None, progress=False, score_weight=1.0)
    history = train(model, x[:1000], theta[:1000], "sequential", config, score=joint_score(z[:1000], theta[:1000]))
    assert "validation_density+scandal" in history and history["validation_density+scandal"].notna().sum() == 2


def test_scandal_flow_posterior_contains_the_truth(training_set, observed):
    x, theta, z = training_set
    model = AmbientFlow(2, 1, inner=SMALL)
    config = TrainingConfig(epochs=8, batch_size=128, learning_rate=3e-3, progress=False, score_weight=1.0)
    train(model, x, theta, config=config, score=joint_score(z, theta))
    x_observed, theta_true = observed
    exact = exact_posterior(x_observed)
    learned = grid_posterior(ObservedLikelihood(model, x_observed), PRIOR, resolution=801)
    assert abs(float(learned.mean() - theta_true)) < 3 * float(learned.std())
    assert abs(float(learned.mean() - exact.mean())) < 0.5 * float(exact.std())
    assert 0.6 < float(learned.std() / exact.std()) < 1.6


# ---- ALICES ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def alices(training_set):
    x, theta, z = training_set
    reference_theta = torch.zeros(len(x), 1)
    x_reference, z_reference = simulate(reference_theta, seed=3)
    theta_paired = PRIOR.sample((len(x),))  # numerator hypotheses paired with the reference events
    data = RatioTrainingData.from_samples(
        (x, theta, joint_log_ratio(z, theta, reference_theta), joint_score(z, theta)),
        (x_reference, theta_paired, joint_log_ratio(z_reference, theta_paired, reference_theta)),
    )
    estimator = RatioEstimator(2, 1, hidden=64, layers=3)
    config = TrainingConfig(epochs=25, batch_size=128, learning_rate=2e-3, patience=5, progress=False, score_weight=1.0)
    history = train_ratio_estimator(estimator, data, config)
    return estimator, history


def test_alices_recovers_the_likelihood_ratio(alices):
    estimator, history = alices
    assert "validation_alices" in history
    theta = PRIOR.sample((2000,))
    x, _ = simulate(theta, seed=4)
    evaluate_at = PRIOR.sample((2000,))  # a second hypothesis, independent of the one behind x
    with torch.no_grad():
        learned = estimator.log_ratio(x, evaluate_at)
    exact = exact_log_likelihood(x, evaluate_at) - exact_log_likelihood(x, torch.zeros_like(evaluate_at))
    assert float((learned - exact).abs().median()) < 0.1
    assert float(torch.corrcoef(torch.stack([learned, exact]))[0, 1]) > 0.98


def test_alices_posterior_contains_the_truth_through_every_api(alices, observed):
    estimator, _ = alices
    x_observed, theta_true = observed
    exact = exact_posterior(x_observed)
    likelihood = ObservedLikelihood(estimator, x_observed)
    learned = grid_posterior(likelihood, PRIOR, resolution=801)
    assert abs(float(learned.mean() - theta_true)) < 3 * float(learned.std())
    assert abs(float(learned.mean() - exact.mean())) < 0.5 * float(exact.std())
    # the cached path is the network on (x, θ); the sbi potential is it plus the log prior
    theta = torch.tensor([[-0.3], [0.9]])
    with torch.no_grad():
        direct = torch.stack([estimator.log_ratio(x_observed, t.expand(20, 1)).sum() for t in theta])
        torch.testing.assert_close(likelihood(theta), direct)
        potential = FastLikelihoodPotential(estimator, PRIOR, x_observed)
        torch.testing.assert_close(potential(theta), direct + PRIOR.log_prob(theta).sum(-1))


def test_alices_through_sbi_mcmc_posterior(alices, observed):
    estimator, _ = alices
    x_observed, _ = observed
    exact = exact_posterior(x_observed)
    posterior = mcmc_posterior_for_sbi(estimator, PRIOR, x_observed, num_chains=10, warmup_steps=30)
    torch.manual_seed(0)
    samples = posterior.sample((1000,), show_progress_bars=False)
    assert samples.shape == (1000, 1)
    assert abs(float(samples.mean() - exact.mean())) < 0.5 * float(exact.std())


def test_alice_and_carl_variants_train(training_set):
    x, theta, z = training_set
    reference_theta = torch.zeros(500, 1)
    x_reference, z_reference = simulate(reference_theta, seed=5)
    data = RatioTrainingData.from_samples(
        (x[:500], theta[:500], joint_log_ratio(z[:500], theta[:500], reference_theta), joint_score(z[:500], theta[:500])),
        (x_reference, theta[500:1000], joint_log_ratio(z_reference, theta[500:1000], reference_theta)),
    )
    quick = TrainingConfig(epochs=1, batch_size=100, progress=False)
    assert "train_alice" in train_ratio_estimator(RatioEstimator(2, 1, hidden=16), data, quick)
    assert "train_carl" in train_ratio_estimator(RatioEstimator(2, 1, hidden=16), data, quick, hard_labels=True)


def test_ratio_estimator_checkpoint_round_trip(tmp_path):
    estimator = RatioEstimator(2, 1, theta_ref=[0.5], hidden=8, layers=2)
    save_model(tmp_path / "alices.pt", estimator, {"note": "toy"})
    loaded, metadata = load_model(tmp_path / "alices.pt")
    x, theta = torch.randn(5, 2), torch.randn(5, 1)
    assert isinstance(loaded, RatioEstimator) and metadata == {"note": "toy"}
    torch.testing.assert_close(loaded.log_ratio(x, theta), estimator.log_ratio(x, theta))
    assert loaded.theta_ref.tolist() == [0.5]


# ---- standardization ----------------------------------------------------------------------------
def test_standardized_score_is_the_gradient_in_standardized_units():
    theta = 3.0 + 2.0 * PRIOR.sample((400,))
    x, z = simulate(theta, seed=6)
    standardization = Standardization.fit(x, theta)
    scaled = standardization.theta(theta).requires_grad_(True)
    back = standardization.theta_inverse(scaled)
    joint_log_density = -0.5 * ((z - back * DIRECTION) ** 2).sum(-1)
    (gradient,) = torch.autograd.grad(joint_log_density.sum(), scaled)
    torch.testing.assert_close(gradient, standardization.score(joint_score(z, theta)))
    torch.testing.assert_close(standardization.x(x).mean(0), torch.zeros(2), atol=1e-5, rtol=0)


# ---- bad input ----------------------------------------------------------------------------------
def test_bad_input_raises_clear_errors(training_set):
    x, theta, z = training_set
    model = AmbientFlow(2, 1, inner=SMALL)
    with pytest.raises(ValueError, match="SCANDAL needs both"):
        train(model, x[:100], theta[:100], config=TrainingConfig(epochs=1, progress=False, score_weight=1.0))
    with pytest.raises(ValueError, match="SCANDAL needs both"):
        train(model, x[:100], theta[:100], config=TrainingConfig(epochs=1, progress=False), score=theta[:100])
    with pytest.raises(ValueError, match="score"):
        train(model, x[:100], theta[:100], config=TrainingConfig(epochs=1, progress=False, score_weight=1.0), score=torch.zeros(100, 2))
    with pytest.raises(ValueError, match="score_weight"):
        TrainingConfig(score_weight=0.0)
    with pytest.raises(ValueError, match="alpha"):
        scandal(exact_negative_log_likelihood, alpha=-1.0)
    with pytest.raises(ValueError, match="theta_ref"):
        RatioEstimator(2, 1, theta_ref=[0.0, 1.0])
    with pytest.raises(ValueError, match="batch sizes differ"):
        RatioTrainingData.from_samples((x, theta, torch.zeros(5), torch.zeros_like(theta)), (x, theta, torch.zeros(len(x))))
    with pytest.raises(ValueError, match="no tractable density"):
        ObservedLikelihood(RatioEstimator(2, 1), x[:5], exact=True)
    with pytest.raises(ValueError, match="x_std"):
        Standardization(torch.zeros(2), torch.tensor([1.0, 0.0]), torch.zeros(1), torch.ones(1))
