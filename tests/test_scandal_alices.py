"""SCANDAL and ALICES on a Gaussian toy with a latent variable, where the joint score, the
joint ratio, the marginal likelihood ratio and the posterior are all analytic.

Toy: z ~ N(θ a, I₂), x = z + ε with ε ~ N(0, s² I₂), so p(x|θ) = N(θ a, (1 + s²) I₂);
joint log ratio log r(x,z|θ0,θ1) = (‖z - θ1 a‖² - ‖z - θ0 a‖²)/2, joint score t = aᵀ(z - θa).

Every estimator standardizes inside (fitted when training starts), so data, joint scores and θ_ref
are passed in raw simulator units throughout.
"""

import dataclasses
import math

import pytest
import torch

from conftest import perturb
from mflow_sbi.baselines import RatioEstimator, RatioTrainingData, train_ratio_estimator
from mflow_sbi.inference import FastLikelihoodPotential, ObservedLikelihood, grid_posterior, mcmc_posterior_for_sbi
from mflow_sbi.models import AmbientFlow, MFlow
from mflow_sbi.standardization import Standardization
from mflow_sbi.training import Phase, TrainingConfig, load_model, phase_loss, save_model, schedule, train
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
    direction = DIRECTION.to(z.dtype)
    return ((z - theta * direction) @ direction).unsqueeze(-1)


def joint_log_ratio(z: torch.Tensor, theta0: torch.Tensor, theta1: torch.Tensor) -> torch.Tensor:
    direction = DIRECTION.to(z.dtype)
    return 0.5 * (((z - theta1 * direction) ** 2).sum(-1) - ((z - theta0 * direction) ** 2).sum(-1))


def exact_log_likelihood(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """log p(x|θ) for paired rows (up to the Gaussian's constant)."""
    return -((x - theta * DIRECTION.to(x.dtype)) ** 2).sum(-1) / (2 * VARIANCE)


class ExactToy:
    """A stand-in estimator whose per-sample loss is the toy's exact negative log-likelihood."""

    def exact_nll(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        return -exact_log_likelihood(x, theta)


def exact_posterior(x_observed: torch.Tensor):
    return grid_posterior(
        lambda theta: exact_log_likelihood(x_observed.unsqueeze(0), theta.unsqueeze(1)).sum(-1), PRIOR, resolution=801
    )


def finite_difference_score(log_likelihood, theta: torch.Tensor, step: float = 1e-6) -> torch.Tensor:
    """∂ log p/∂θ per row for 1-D θ, by central differences in the θ units passed in."""
    with torch.no_grad():
        return ((log_likelihood(theta + step) - log_likelihood(theta - step)) / (2 * step)).unsqueeze(-1)


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
    phase = Phase("exact+scandal", "exact_nll", "parameters", score_weight=3.0)
    assert phase.reads == ("x", "theta", "score")
    loss = lambda score: phase_loss(phase, ExactToy(), {"x": x, "theta": theta, "score": score})  # noqa: E731
    torch.testing.assert_close(loss(model_score), -exact_log_likelihood(x, theta))
    shifted = loss(model_score + 0.2)  # the term is α‖∇ - t‖², here 3 · 0.04
    torch.testing.assert_close(shifted + exact_log_likelihood(x, theta), torch.full((50,), 0.12))
    weighted = phase_loss(Phase("w", "exact_nll", "parameters", weight=2.0, score_weight=3.0), ExactToy(), {"x": x, "theta": theta, "score": model_score + 0.2})
    torch.testing.assert_close(weighted, 2 * shifted)  # the phase weight scales the whole SCANDAL loss


@pytest.mark.parametrize(
    "make, schedule_name, base_loss",
    [
        (lambda: AmbientFlow(2, 1, inner=SMALL), "likelihood", "likelihood_loss"),
        (lambda: MFlow(2, 1, 1, outer=SMALL, inner=SMALL), "alternating", "density_loss"),
    ],
)
def test_scandal_gradient_flows_into_the_model(training_set, make, schedule_name, base_loss):
    x, theta, z = training_set
    x, theta, score = x[:200], theta[:200], joint_score(z[:200], theta[:200])
    model = make()
    model.fit_standardization(x, theta)
    for p in model.density.parameters():  # leave the identity initialization, where ∇_θ log p = 0
        torch.nn.init.normal_(p, std=0.1)
    phase = schedule(schedule_name, score_weight=1.0)[-1][-1]
    assert phase.loss == base_loss and phase.reads == ("x", "theta", "score")

    def gradients(loss: torch.Tensor) -> dict[str, torch.Tensor]:
        model.zero_grad()
        loss.mean().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    with_term = gradients(phase_loss(phase, model, {"x": x, "theta": theta, "score": score}))
    without = gradients(getattr(model, base_loss)(x, theta))
    assert set(with_term) == set(without)
    if schedule_name != "likelihood":  # the density phase trains h only
        assert all(n.startswith("density.") for n in with_term)
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
    estimator = RatioEstimator(2, 1, theta_ref=[0.0], hidden=64, layers=3)
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
    # the fast part of the estimator protocol is log r̂ itself
    torch.testing.assert_close(estimator.log_prob(x, evaluate_at, exact=False).detach(), learned)


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
        torch.testing.assert_close(estimator.likelihood(x_observed)(theta), direct)
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
    generator = torch.Generator().manual_seed(0)
    estimator.fit_standardization(5 + 3 * torch.randn(100, 2, generator=generator), 2 * torch.rand(100, 1, generator=generator))
    save_model(tmp_path / "alices.pt", estimator, {"note": "toy"})
    loaded, metadata = load_model(tmp_path / "alices.pt")
    x, theta = torch.randn(5, 2), torch.randn(5, 1)
    assert isinstance(loaded, RatioEstimator) and metadata == {"note": "toy"}
    torch.testing.assert_close(loaded.log_ratio(x, theta), estimator.log_ratio(x, theta))
    assert loaded.theta_ref.tolist() == [0.5]
    # the fitted standardization travels with the weights
    assert bool(loaded.standardization.fitted)
    torch.testing.assert_close(loaded.standardization.x_shift, estimator.standardization.x_shift)
    torch.testing.assert_close(loaded.standardization.theta_scale, estimator.standardization.theta_scale)


# ---- the built-in standardization: raw units in, raw units out ---------------------------------
SHIFT_X, SCALE_X, SHIFT_THETA, SCALE_THETA = 100.0, 20.0, 10.0, 5.0


def in_other_units(x: torch.Tensor, theta: torch.Tensor, score: torch.Tensor | None = None):
    """The toy in other raw units x̃ = b + a x, θ̃ = d + c θ: the joint score becomes t/c."""
    rescaled = (SHIFT_X + SCALE_X * x, SHIFT_THETA + SCALE_THETA * theta)
    return rescaled if score is None else (*rescaled, score / SCALE_THETA)


@pytest.mark.parametrize(
    "make, schedule_name, stage",
    [
        (lambda: AmbientFlow(2, 1, inner=SMALL), "likelihood", 0),
        (lambda: MFlow(2, 1, 1, outer=SMALL, inner=SMALL), "sequential", 1),  # the density phase
    ],
)
def test_scandal_score_term_is_in_raw_theta_units(make, schedule_name, stage):
    theta = PRIOR.sample((64,)).double()
    x, _ = simulate(theta.float(), seed=7)
    x, theta = in_other_units(x.double(), theta)
    model = perturb(make(), scale=0.2)
    model.fit_standardization(x, theta)
    assert float(model.standardization.theta_scale) > 4  # far from the identity
    (phase,) = schedule(schedule_name, score_weight=2.0)[stage]
    # the model's score in raw θ, by finite differences of the raw-unit density's fast part
    score = finite_difference_score(lambda t: model.log_prob(x, t, exact=False), theta)
    assert float(score.abs().mean()) > 1e-3
    nll = getattr(model, phase.loss)(x, theta).detach()
    matched = phase_loss(phase, model, {"x": x, "theta": theta, "score": score})
    torch.testing.assert_close(matched, nll, atol=1e-6, rtol=1e-6)  # the term vanishes in raw units
    # the score in standardized θ units (what had to be passed before) no longer matches
    scale = model.standardization.theta_scale
    standardized = phase_loss(phase, model, {"x": x, "theta": theta, "score": score * scale})
    torch.testing.assert_close(standardized - nll, 2.0 * ((scale - 1) * score).squeeze(-1) ** 2, atol=1e-6, rtol=1e-5)


def test_alices_score_term_is_in_raw_theta_units():
    theta = PRIOR.sample((64,)).double()
    x, _ = simulate(theta.float(), seed=8)
    x, theta = in_other_units(x.double(), theta)
    estimator = perturb(RatioEstimator(2, 1, theta_ref=[SHIFT_THETA], hidden=16, layers=2), scale=0.2)
    estimator.fit_standardization(x, theta)
    score = finite_difference_score(lambda t: estimator.log_ratio(x, t), theta)
    assert float(score.abs().mean()) > 1e-3
    labels = {"joint_log_ratio": torch.randn(64, dtype=torch.float64), "reference_class": (torch.arange(64) % 2).double()}
    plain = estimator.ratio_loss(x, theta, joint_score=score, **labels).detach()
    (phase,) = schedule("ratio", score_weight=2.0)[0]
    data = {"x": x, "theta": theta, "joint_score": score, **labels}
    torch.testing.assert_close(phase_loss(phase, estimator, data), plain, atol=1e-6, rtol=1e-6)
    off = phase_loss(phase, estimator, data | {"joint_score": score + 0.1})  # α‖Δ‖² on numerator rows only
    expected = plain + 2.0 * 0.01 * (1 - labels["reference_class"])
    torch.testing.assert_close(off, expected, atol=1e-6, rtol=1e-6)


def test_scandal_training_does_not_depend_on_the_units_of_the_data(training_set):
    """Trained on the toy in two unit systems, with α scaled by c² (α weighs a squared score in
    1/θ² units), the standardized problems are identical: so are the histories (up to log a² per
    event of Jacobian in the likelihood) and the learned log-likelihood ratios, in raw units."""
    x, theta, z = (v[:600].double() for v in training_set)
    score = joint_score(z, theta)
    config = TrainingConfig(epochs=2, batch_size=100, learning_rate=3e-3, patience=None, progress=False, score_weight=1.0)
    other = dataclasses.replace(config, score_weight=SCALE_THETA**2)
    model, rescaled = AmbientFlow(2, 1, inner=SMALL).double(), AmbientFlow(2, 1, inner=SMALL).double()
    history = train(model, x, theta, config=config, score=score)
    x_other, theta_other, score_other = in_other_units(x, theta, score)
    history_other = train(rescaled, x_other, theta_other, config=other, score=score_other)
    jacobian = 2 * math.log(SCALE_X)  # p̃(x̃|θ̃) = p(x|θ) / a² in two dimensions
    assert history["validation_loss"].to_numpy() + jacobian == pytest.approx(history_other["validation_loss"].to_numpy(), rel=1e-6)
    theta0, theta1 = torch.tensor([[-0.5], [0.3]], dtype=torch.float64), torch.tensor([[0.8], [0.3]], dtype=torch.float64)
    events, events_other = x[:50], x_other[:50]
    with torch.no_grad():
        ratio = model.likelihood(events).log_ratio(theta0, theta1).per_event
        ratio_other = rescaled.likelihood(events_other).log_ratio(*(in_other_units(x[:2], t)[1] for t in (theta0, theta1))).per_event
        log_p = model.log_prob(events, theta0[:1].expand(50, 1))
        log_p_other = rescaled.log_prob(events_other, in_other_units(x[:50], theta0[:1].expand(50, 1))[1])
    torch.testing.assert_close(ratio_other, ratio, atol=1e-6, rtol=1e-6)
    assert float(ratio[0].abs().mean()) > 1e-2  # the ratios compared are not trivially zero
    torch.testing.assert_close(log_p - log_p_other, torch.full((50,), jacobian, dtype=torch.float64), atol=1e-6, rtol=1e-6)


def test_alices_training_does_not_depend_on_the_units_of_the_data(training_set):
    x, theta, z = (v[:500].double() for v in training_set)
    reference_theta = torch.zeros(500, 1, dtype=torch.float64)
    x_reference, z_reference = (v.double() for v in simulate(reference_theta.float(), seed=9))
    theta_paired = theta.flip(0)
    numerator = (x, theta, joint_log_ratio(z, theta, reference_theta), joint_score(z, theta))
    reference = (x_reference, theta_paired, joint_log_ratio(z_reference, theta_paired, reference_theta))
    x_other, theta_other, score_other = in_other_units(x, theta, numerator[3])
    x_reference_other, theta_paired_other = in_other_units(x_reference, theta_paired)
    config = TrainingConfig(epochs=2, batch_size=100, learning_rate=3e-3, patience=None, progress=False, score_weight=1.0)
    other = dataclasses.replace(config, score_weight=SCALE_THETA**2)
    estimator = RatioEstimator(2, 1, theta_ref=[0.0], hidden=16, layers=2).double()
    rescaled = RatioEstimator(2, 1, theta_ref=[SHIFT_THETA], hidden=16, layers=2).double()  # θ_ref in raw units
    history = train_ratio_estimator(estimator, RatioTrainingData.from_samples(numerator, reference), config)
    data_other = RatioTrainingData.from_samples(
        (x_other, theta_other, numerator[2], score_other), (x_reference_other, theta_paired_other, reference[2])
    )  # joint log ratios are unit-free
    history_other = train_ratio_estimator(rescaled, data_other, other)
    assert history["validation_loss"].to_numpy() == pytest.approx(history_other["validation_loss"].to_numpy(), rel=1e-6)
    probe = PRIOR.sample((50,)).double()
    with torch.no_grad():
        torch.testing.assert_close(
            rescaled.log_ratio(*in_other_units(x[:50], probe)), estimator.log_ratio(x[:50], probe), atol=1e-6, rtol=1e-6
        )
    assert rescaled.theta_ref.tolist() == [SHIFT_THETA] and rescaled.config["theta_ref"] == [SHIFT_THETA]


def test_standardization_fits_raw_units_and_keeps_constant_features():
    theta = 3.0 + 2.0 * PRIOR.sample((400,))
    x, _ = simulate(theta, seed=6)
    x = torch.cat([x, torch.full((400, 1), 7.0)], dim=1)  # a constant feature
    standardization = Standardization((3,), 1)
    torch.testing.assert_close(standardization.x(x), x)  # the identity until fitted
    standardization.fit(x, theta)
    torch.testing.assert_close(standardization.x(x).mean(0), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(standardization.x(x)[:, :2].std(0), torch.ones(2), atol=1e-5, rtol=0)
    assert standardization.x_scale[2] == 1 and torch.equal(standardization.x(x)[:, 2], torch.zeros(400))
    torch.testing.assert_close(standardization.theta_scale, theta.std(0))
    torch.testing.assert_close(standardization.x_inverse(standardization.x(x)), x)
    standardization.fit(10 * x, theta)  # fitted once: further data keep the units training started in
    torch.testing.assert_close(standardization.x(x).mean(0), torch.zeros(3), atol=1e-5, rtol=0)
    disabled = Standardization((3,), 1, enabled=False)
    disabled.fit(x, theta)
    assert not bool(disabled.fitted) and torch.equal(disabled.x(x), x)


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
    with pytest.raises(ValueError, match="score_weight must be positive"):
        schedule("likelihood", score_weight=-1.0)
    with pytest.raises(ValueError, match="theta_ref"):
        RatioEstimator(2, 1, theta_ref=[0.0, 1.0])
    with pytest.raises(ValueError, match="batch sizes differ"):
        RatioTrainingData.from_samples((x, theta, torch.zeros(5), torch.zeros_like(theta)), (x, theta, torch.zeros(len(x))))
    with pytest.raises(ValueError, match="no tractable density"):
        ObservedLikelihood(RatioEstimator(2, 1), x[:5], exact=True)
    with pytest.raises(ValueError, match="no tractable density"):
        RatioEstimator(2, 1).log_prob(x[:5], theta[:5], exact=True)
    with pytest.raises(ValueError, match="at least 2 training samples"):
        Standardization((2,), 1).fit(x[:1], theta[:1])
