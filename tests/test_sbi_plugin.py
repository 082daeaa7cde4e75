"""The sbi plug-in: estimator contract, fast potential, simulators for simulate_for_sbi, and the
real sbi workflow end to end on a small budget."""

import copy

import pytest
import torch
from sbi.diagnostics import run_sbc
from sbi.inference import NLE, simulate_for_sbi
from sbi.inference.potentials.likelihood_based_potential import LikelihoodBasedPotential
from sbi.utils import BoxUniform
from sbi.utils.metrics import c2st

from conftest import perturb
from mflow_sbi.baselines import RatioEstimator
from mflow_sbi.diagnostics import mmd_squared
from mflow_sbi.inference import (
    SBI_MCMC_DEFAULTS,
    FastLikelihoodPotential,
    ModelDensityEstimator,
    ObservedLikelihood,
    SBISimulator,
    estimator_builder,
    grid_posterior,
    mcmc_posterior_for_sbi,
)
from mflow_sbi.models import PAE, PIE, AmbientFlow, MFlow
from mflow_sbi.training import TrainingConfig, train
from mflow_sbi.transforms import FlowConfig
from simulators import PolynomialSurface

SMALL = FlowConfig(layers=2, bins=4, hidden=16, blocks=1)


def standardized(model):
    """`model` with its standardization fitted to data away from standard units (raw-unit paths
    must apply it)."""
    generator = torch.Generator().manual_seed(11)
    x = 0.5 + 2.0 * torch.randn(200, *model.event_shape, generator=generator, dtype=torch.float64)
    theta = -0.2 + 0.5 * torch.randn(200, model.theta_dim, generator=generator, dtype=torch.float64)
    model.fit_standardization(x, theta)
    return model


def small_mflow(scale: float = 0.3) -> MFlow:
    return standardized(perturb(MFlow(3, 1, 2, outer=SMALL, inner=SMALL), scale=scale)).eval()


def test_estimator_log_prob_follows_sbi_shapes_and_equals_the_model_density():
    model = small_mflow()
    estimator = ModelDensityEstimator(model)
    x = torch.randn(4, 5, 3, dtype=torch.float64)
    theta = torch.rand(5, 1, dtype=torch.float64)
    values = estimator.log_prob(x, theta)
    assert values.shape == (4, 5)
    with torch.no_grad():
        torch.testing.assert_close(values[2], model.log_prob(x[2], theta))
    assert estimator.log_prob(x[0], theta).shape == (1, 5)  # no sample dimension


def test_estimator_on_sbi_iid_trials_encodes_each_event_once_and_stays_exact():
    model = small_mflow()
    estimator = ModelDensityEstimator(model)
    events, thetas = torch.randn(6, 3, dtype=torch.float64), torch.rand(4, 1, dtype=torch.float64)
    expanded = events.unsqueeze(1).expand(6, 4, 3)  # what sbi's likelihood potential passes
    values = estimator.log_prob(expanded, thetas)
    assert values.shape == (6, 4)
    with torch.no_grad():
        brute = torch.stack([model.log_prob(events, t.expand(6, 1), exact=True) for t in thetas], dim=1)
    torch.testing.assert_close(values, brute)
    torch.testing.assert_close(values, estimator.log_prob(expanded.contiguous(), thetas))


def test_estimator_samples_have_sbi_shapes():
    estimator = ModelDensityEstimator(small_mflow())
    theta = torch.rand(3, 1, dtype=torch.float64)
    assert estimator.sample(torch.Size([7]), theta).shape == (7, 3, 3)
    assert estimator.sample(torch.Size([2, 5]), theta).shape == (2, 5, 3, 3)


def test_estimator_loss_is_the_alternating_md_loss_with_separated_gradients():
    model = small_mflow()
    estimator = ModelDensityEstimator(model, reconstruction_weight=10.0)
    assert estimator.estimator is model
    x, theta = torch.randn(8, 3, dtype=torch.float64), torch.rand(8, 1, dtype=torch.float64)
    loss = estimator.loss(x, theta)
    expected = 10.0 * model.manifold_loss(x, theta) + model.density_loss(x, theta)
    torch.testing.assert_close(loss, expected)
    # the estimator's own one-stage loss (sbi's contract) is the same with the default weight 1000
    torch.testing.assert_close(model.loss(x, theta), 1000.0 * model.manifold_loss(x, theta) + model.density_loss(x, theta))
    # the manifold term is the squared reconstruction error in standardized units
    x_scale = model.standardization.x_scale
    torch.testing.assert_close(model.manifold_loss(x, theta), (((x - model.project(x)) / x_scale) ** 2).sum(-1))
    loss.sum().backward()
    inner = [p.grad.clone() for p in model.density_parameters()]
    model.zero_grad()
    model.density_loss(x, theta).sum().backward()  # h's gradient: the density term only
    for got, want in zip(inner, [p.grad for p in model.density_parameters()]):
        torch.testing.assert_close(got, want)
    # ambient models train by maximum likelihood
    af = standardized(perturb(AmbientFlow(3, 1, inner=SMALL)))
    torch.testing.assert_close(ModelDensityEstimator(af).loss(x, theta), -af.log_prob(x, theta))


def test_fast_potential_equals_sbis_potential_up_to_a_constant_and_respects_the_prior():
    model = small_mflow()
    prior = BoxUniform(torch.tensor([-1.0], dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64))
    x_o = PolynomialSurface().simulate(torch.zeros(5, 1), seed=0).double()
    theta = torch.linspace(-0.9, 0.9, 7, dtype=torch.float64).unsqueeze(1)
    fast = FastLikelihoodPotential(model, prior, x_o)(theta, track_gradients=False)
    reference = LikelihoodBasedPotential(ModelDensityEstimator(model), prior, x_o)(theta, track_gradients=False)
    difference = reference - fast
    torch.testing.assert_close(difference, difference[:1].expand_as(difference))
    outside = FastLikelihoodPotential(model, prior, x_o)(torch.tensor([[1.5], [0.0]], dtype=torch.float64))
    assert outside[0] == -torch.inf and torch.isfinite(outside[1])


def test_fast_potential_gradients_and_non_iid_pairing():
    model = small_mflow()
    prior = BoxUniform(torch.tensor([-1.0], dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64))
    x_o = torch.randn(3, 3, dtype=torch.float64)
    potential = FastLikelihoodPotential(model, prior, x_o)
    theta = torch.tensor([[0.2], [-0.3], [0.5]], dtype=torch.float64, requires_grad=True)
    potential(theta).sum().backward()
    assert theta.grad is not None and torch.isfinite(theta.grad).all() and (theta.grad != 0).all()
    potential.set_x(x_o, x_is_iid=False)  # one observation per θ row (sbi's sample_batched)
    paired = potential(theta.detach(), track_gradients=False)
    with torch.no_grad():
        expected = ObservedLikelihood(model, x_o).per_event(theta.detach()) + prior.log_prob(theta.detach())
    torch.testing.assert_close(paired, expected)
    with pytest.raises(ValueError, match="batch sizes differ"):
        potential(torch.zeros(2, 1, dtype=torch.float64))


def test_sbi_mcmc_on_the_fast_potential_matches_the_models_grid_posterior():
    simulator = PolynomialSurface()
    model = small_mflow(scale=0.1)
    x_o = simulator.simulate(torch.full((10, 1), 0.3), seed=3).double()
    exact = grid_posterior(ObservedLikelihood(model, x_o), simulator.prior, resolution=801, dtype=torch.float64)
    defaults = copy.deepcopy(SBI_MCMC_DEFAULTS)
    posterior = mcmc_posterior_for_sbi(model, simulator.prior, x_o, num_chains=10, warmup_steps=30)
    posterior.init_strategy_parameters["num_return_samples"] = 10  # as sbi's sample_batched writes into it
    assert SBI_MCMC_DEFAULTS == defaults  # ours stay as they were
    torch.manual_seed(0)
    samples = posterior.sample((1000,), show_progress_bars=False)
    reference = exact.sample(1000, torch.Generator().manual_seed(0))
    assert samples.shape == (1000, 1) and ((samples > -1) & (samples < 1)).all()
    assert float(samples.mean()) == pytest.approx(float(exact.mean()), abs=0.2 * float(exact.std()))
    assert float(samples.std()) == pytest.approx(float(exact.std()), rel=0.15)
    assert mmd_squared(samples.double(), reference.double()) < 0.01
    assert c2st(samples, reference.float(), classifier="rf") < 0.62  # sbi's C2ST: indistinguishable


def test_simulators_run_under_simulate_for_sbi_reproducibly():
    simulator = SBISimulator(PolynomialSurface())
    prior = PolynomialSurface().prior
    theta, x = simulate_for_sbi(simulator, prior, 50, simulation_batch_size=10, seed=4, show_progress_bar=False)
    again = simulate_for_sbi(simulator, prior, 50, simulation_batch_size=10, seed=4, show_progress_bar=False)
    other = simulate_for_sbi(simulator, prior, 50, simulation_batch_size=10, seed=5, show_progress_bar=False)
    assert theta.shape == (50, 1) and x.shape == (50, 3) and x.dtype == torch.float32
    torch.testing.assert_close(x, again[1])
    assert not torch.equal(x, other[1])
    assert simulator(torch.tensor([0.1]).numpy()).shape == (1, 3)  # numpy and single θ, as sbi may pass
    with pytest.raises(ValueError, match="prior support"):
        simulator(torch.tensor([[3.0]]))


def test_sbi_nle_workflow_end_to_end_with_our_mflow():
    simulator = PolynomialSurface()
    prior = simulator.prior
    theta, x = simulate_for_sbi(SBISimulator(simulator), prior, 1000, simulation_batch_size=None, seed=0, show_progress_bar=False)
    builder = estimator_builder("mflow", latent_dim=2, outer=SMALL, inner=SMALL)
    inference = NLE(prior, density_estimator=builder, show_progress_bars=False)
    estimator = inference.append_simulations(theta, x).train(max_num_epochs=3, training_batch_size=100)
    assert isinstance(estimator, ModelDensityEstimator) and isinstance(estimator.estimator, MFlow)
    # the builder fitted the standardization to the training data sbi handed it
    training = inference.train_indices
    standardization = estimator.estimator.standardization
    assert bool(standardization.fitted)
    torch.testing.assert_close(standardization.x_shift, x[training].mean(0))
    torch.testing.assert_close(standardization.theta_scale, theta[training].std(0))
    losses = inference.summary["validation_loss"]
    assert losses[-1] < losses[0]  # sbi's loop trained the manifold and the density
    x_o = simulator.simulate(torch.zeros(20, 1), seed=1)
    posterior = mcmc_posterior_for_sbi(estimator, prior, num_chains=4, warmup_steps=20)
    samples = posterior.sample((200,), x=x_o, show_progress_bars=False)
    assert samples.shape == (200, 1) and ((samples > -1) & (samples < 1)).all()
    assert torch.isfinite(posterior.log_prob(samples[:5], x=x_o)).all()


def test_our_trained_model_in_sbis_posterior_and_sbc():
    simulator = PolynomialSurface()
    theta, x = simulator.simulate_joint(1000, seed=0)
    model = MFlow(3, 1, 2, outer=SMALL, inner=SMALL)
    train(model, x, theta, "sequential", TrainingConfig(epochs=2, progress=False))
    posterior = mcmc_posterior_for_sbi(model, simulator.prior, num_chains=2, warmup_steps=10)
    thetas, xs = simulator.simulate_joint(8, seed=2)
    ranks, dap_samples = run_sbc(thetas, xs, posterior, num_posterior_samples=20, show_progress_bar=False)
    assert ranks.shape == (8, 1) and ((ranks >= 0) & (ranks <= 20)).all()
    assert dap_samples.shape == (8, 1)


def test_builder_builds_from_the_registry_and_fits_the_standardization():
    generator = torch.Generator().manual_seed(0)
    theta = 3.0 + 2.0 * torch.rand(50, 1, generator=generator)
    x = torch.randn(50, 3, generator=generator) * torch.tensor([1.0, 10.0, 0.1]) + 4.0
    estimator = estimator_builder("mflow", latent_dim=2, outer=SMALL, inner=SMALL, seed=3)(theta, x)
    assert isinstance(estimator, ModelDensityEstimator) and isinstance(estimator.estimator, MFlow)
    model = estimator.estimator
    assert model.config["data_dim"] == 3 and model.config["theta_dim"] == 1 and model.config["seed"] == 3
    torch.testing.assert_close(model.standardization.x_shift, x.mean(0))
    torch.testing.assert_close(model.standardization.x_scale, x.std(0))
    torch.testing.assert_close(model.standardization.theta_shift, theta.mean(0))
    # the same configuration without the builder: the same weights (seeded), now the same units too
    twin = MFlow(3, 1, 2, outer=SMALL, inner=SMALL, seed=3)
    twin.fit_standardization(x, theta)
    with torch.no_grad():
        torch.testing.assert_close(estimator.log_prob(x[:4], theta[:4]), twin.log_prob(x[:4], theta[:4]).unsqueeze(0))
    af = estimator_builder("af", inner=SMALL)(theta, x).estimator
    assert isinstance(af, AmbientFlow) and bool(af.standardization.fitted)
    unstandardized = estimator_builder("mflow", latent_dim=2, outer=SMALL, inner=SMALL, standardize=False)(theta, x).estimator
    assert not bool(unstandardized.standardization.fitted)
    assert torch.equal(unstandardized.standardization.x_shift, torch.zeros(3))


def test_plugin_rejects_bad_input():
    with pytest.raises(ValueError, match="bad configuration.*unknown arguments \\['depth'\\]"):
        estimator_builder("mflow", latent_dim=2, depth=3)(torch.zeros(10, 1), torch.zeros(10, 3))
    with pytest.raises(ValueError, match="latent_dim must be < the data dimension 3"):
        estimator_builder("mflow", latent_dim=3)(torch.zeros(10, 1), torch.zeros(10, 3))
    with pytest.raises(ValueError, match="unknown model"):
        estimator_builder("nsf", latent_dim=2)
    with pytest.raises(ValueError, match="ratio estimator"):
        ModelDensityEstimator(RatioEstimator(3, 1))
    with pytest.raises(ValueError, match="x \\(N, D\\)"):
        estimator_builder("mflow", latent_dim=2)(torch.zeros(10, 1), torch.zeros(10, 3, 2))
    with pytest.raises(ValueError, match="no tractable density"):
        ModelDensityEstimator(PAE(3, 1, 2), exact=True)
    pae = standardized(perturb(PAE(3, 1, 2, inner=SMALL)))  # no exact density: sbi gets the latent one
    latent = ModelDensityEstimator(pae)
    assert latent.exact is False
    x, theta = torch.randn(4, 3, dtype=torch.float64), torch.rand(4, 1, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(latent.log_prob(x, theta)[0], pae.log_prob(x, theta, exact=False))
    estimator = ModelDensityEstimator(MFlow(3, 1, 2, outer=SMALL, inner=SMALL))
    with pytest.raises(ValueError, match="Shape of input"):
        estimator.log_prob(torch.zeros(2, 4), torch.zeros(2, 1))
    with pytest.raises(ValueError, match="no observed data"):
        FastLikelihoodPotential(estimator.estimator, PolynomialSurface().prior)(torch.zeros(2, 1))
    with pytest.raises(ValueError, match="expected one of our estimators"):
        mcmc_posterior_for_sbi(torch.nn.Linear(2, 2), PolynomialSurface().prior)
    with pytest.raises(ValueError, match="x_observed holds no events"):
        FastLikelihoodPotential(estimator.estimator, PolynomialSurface().prior, torch.zeros(0, 3))
    # a model whose manifold needs θ still works through the same estimator (full density)
    pie = standardized(perturb(PIE(3, 1, 2, conditional_manifold=True, outer=SMALL, inner=SMALL)))
    events, thetas = torch.randn(3, 3, dtype=torch.float64), torch.rand(2, 1, dtype=torch.float64)
    values = ModelDensityEstimator(pie).log_prob(events.unsqueeze(1).expand(3, 2, 3), thetas)
    assert values.shape == (3, 2)
    with torch.no_grad():
        torch.testing.assert_close(values[:, 1], pie.log_prob(events, thetas[1].expand(3, 1)))
