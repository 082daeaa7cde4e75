"""The `sbi` plug-in: our models as sbi likelihood estimators, a potential on the fast path, and
simulators for `sbi.inference.simulate_for_sbi` (checked against sbi 0.27).

Two routes, both ending in sbi's own posterior classes and diagnostics:

- train inside sbi: `NLE(prior, density_estimator=estimator_builder("mflow", latent_dim=2))`
  trains with `ModelDensityEstimator.loss` (for M-flows the alternating M/D loss);
- train with our trainer (`mflow_sbi.training.train`, any schedule), then pass the estimator.

Either way `mcmc_posterior_for_sbi(estimator, prior)` returns an sbi `MCMCPosterior`
whose potential encodes the observed events once per x_o (`FastLikelihoodPotential`), so each
MCMC step costs one pass of the inner flow per (θ, event) pair.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import torch
from sbi.inference import MCMCPosterior
from sbi.inference.potentials.base_potential import BasePotential
from sbi.neural_nets.estimators import ConditionalDensityEstimator
from sbi.utils import mcmc_transform
from sbi.utils.user_input_checks import process_prior
from torch import Tensor

from mflow_sbi.estimator import Estimator, ObservedLikelihood
from mflow_sbi.inference.posterior import prior_log_prob
from mflow_sbi.registry import build_estimator, estimator_class
from mflow_sbi.simulator import Simulator, as_generator
from mflow_sbi.training.losses import phase_loss, schedule


class ModelDensityEstimator(ConditionalDensityEstimator):
    """An `Estimator` with a density as sbi's likelihood estimator q(x|θ): input = x of the
    estimator's event shape, condition = θ of shape (p,), with sbi's (sample, batch) shapes; x
    and θ in raw units (the estimator standardizes inside, so sbi's z-scoring is not needed).

    `log_prob` is the exact density (`exact=None` picks it where the estimator has one, else the
    latent density: PAE); on sbi's iid trials it runs through `estimator.likelihood` (each event
    encoded once). `loss(x, θ)` is the per-sample loss of a one-stage schedule: -log p(x|θ) for
    AF and PIE; for M-flow, Me-flow and PAE the alternating M/D loss
    w·‖x' - g(g⁻¹(x'))‖² - log p_h(g⁻¹(x')|θ), whose first term trains only the manifold and
    whose second (with u detached) trains only h (Brehmer & Cranmer 2020, §3), so sbi's single
    optimizer performs M/D training.
    """

    def __init__(self, estimator: Estimator, exact: bool | None = None, reconstruction_weight: float = 1000.0) -> None:
        if estimator.loss_schedule == "ratio":
            raise ValueError(f"{estimator.name} is a ratio estimator, not a density: use mcmc_posterior_for_sbi with it directly")
        super().__init__(net=estimator, input_shape=torch.Size(estimator.event_shape), condition_shape=torch.Size([estimator.theta_dim]))
        self.exact = estimator.has_exact_density if exact is None else exact
        if self.exact and not estimator.has_exact_density:
            raise ValueError(f"{estimator.name} has no tractable density; use exact=False")
        (self.phases,) = schedule(estimator.loss_schedule, reconstruction_weight)

    @property
    def estimator(self) -> Estimator:
        """The wrapped estimator (sbi calls it `net`)."""
        return self.net

    def log_prob(self, input: Tensor, condition: Tensor, **kwargs: Any) -> Tensor:
        """log q(x|θ) for x (S, B, *event) or (B, *event) and θ (B, p) or (S, B, p) -> (S, B), in the
        estimator's precision (sbi hands over float32; a float64 estimator keeps its digits)."""
        self._check_input_shape(input)
        self._check_condition_shape(condition)
        input, condition, batch = self._broadcast_and_align(input, condition)
        samples = input.shape[0]
        if batch > 1 and input.stride(1) == 0 and condition.stride(0) == 0:
            # sbi's iid trials: S events expanded over B θ. Cache each event once, then one
            # inner-flow pass per pair.
            return self.estimator.likelihood(input[:, 0], exact=self.exact).table(condition[0]).T
        events = input.reshape(-1, *self.estimator.event_shape)
        values = self.estimator.log_prob(events, condition.reshape(-1, self.estimator.theta_dim), exact=self.exact)
        return values.reshape(samples, batch)

    def loss(self, input: Tensor, condition: Tensor, **kwargs: Any) -> Tensor:
        """Per-sample training loss for x (B, *event) and θ (B, p) -> (B,)."""
        x = self.estimator.check_x(input)
        data = {"x": x, "theta": self.estimator.check_theta(condition, x)}
        return sum(phase_loss(phase, self.estimator, data) for phase in self.phases)

    def sample(self, sample_shape: torch.Size, condition: Tensor, **kwargs: Any) -> Tensor:
        """x ~ q(x|θ) for θ (B, p) -> (*sample_shape, B, *event)."""
        self._check_condition_shape(condition)
        condition = condition.reshape(-1, self.estimator.theta_dim)
        shape = torch.Size(sample_shape)
        theta = condition.expand(shape.numel(), *condition.shape).reshape(-1, self.estimator.theta_dim)
        return self.estimator.sample(theta).reshape(*shape, len(condition), *self.estimator.event_shape).to(condition.dtype)


def estimator_builder(
    model: str = "mflow", reconstruction_weight: float = 1000.0, **model_config: Any
) -> Callable[[Tensor, Tensor], ModelDensityEstimator]:
    """A builder for `NLE(prior, density_estimator=...)`, following sbi's protocol
    `builder(theta, x) -> ConditionalDensityEstimator`: it builds one of our registered flows
    with the event shape and θ dimension read off sbi's training data and fits its
    standardization to them (`standardize=False` in `model_config` opts out); `model_config`
    holds the model's other constructor arguments, e.g. `latent_dim=2` (or `latent_dim="auto"`:
    n estimated from sbi's training data first, see `MFlow`).

    Training time: with sbi's defaults (`.train()`: batch 200, lr 5e-4, stop after 20 epochs
    without improvement) an M-flow on 10 000 polynomial-surface simulations stopped by itself
    after 72 epochs, ≈ 9 min on one busy CPU thread (measured 2026-12-03); its best validation
    loss was 2.74 after 30 epochs and 2.59 at the end, so `.train(max_num_epochs=30)` costs
    less than half of that for most of the gain."""
    estimator_class(model)  # an unknown name fails here, not inside sbi's training
    return partial(_build_estimator, {"model": model, **model_config}, reconstruction_weight)


def _build_estimator(config: dict[str, Any], reconstruction_weight: float, theta: Tensor, x: Tensor) -> ModelDensityEstimator:
    if theta.ndim != 2 or x.ndim not in (2, 4):
        raise ValueError(f"our models need θ (N, p) and x (N, D) or (N, C, H, W), got shapes {tuple(theta.shape)} and {tuple(x.shape)}")
    shape = {"data_dim": x.shape[1]} if x.ndim == 2 else {"image_shape": list(x.shape[1:])}
    estimator = build_estimator({**config, **shape, "theta_dim": theta.shape[1]})
    estimator.prepare(x, theta)  # e.g. latent_dim="auto": n estimated on sbi's training data
    estimator.fit_standardization(x, theta)
    return ModelDensityEstimator(estimator, reconstruction_weight=reconstruction_weight)


class FastLikelihoodPotential(BasePotential):
    """sbi potential log p(x_o|θ) + log p(θ) on the fast path: `set_x` encodes the observed
    events once (`ObservedLikelihood`, u = g⁻¹(x) cached), and every call costs one inner-flow
    pass per (θ, event) pair. The dropped per-event Jacobian term does not depend on θ, so
    MCMC, ratios and posteriors are exact. Outside the prior support the potential is -inf.

    With a ratio estimator (ALICES) it is the ratio-based potential Σ_j log r̂(x_j|θ, θ_ref) +
    log p(θ), which differs from the likelihood-based one by a θ-independent constant.

    iid x_o (sbi's `sample`): Σ_j log p(x_j|θ_i) for every θ_i. Non-iid x_o (sbi's
    `sample_batched`, used by SBC): log p(x_i|θ_i), one observation per θ row.
    """

    def __init__(self, estimator: Estimator, prior: torch.distributions.Distribution, x_o: Tensor | None = None) -> None:
        self.estimator = estimator
        self._likelihood: ObservedLikelihood | None = None
        super().__init__(prior, x_o, device=str(estimator.device))

    def set_x(self, x_o: Tensor | None, x_is_iid: bool | None = True) -> None:
        """Set the observed data; the events are encoded once per new x_o."""
        super().set_x(x_o, x_is_iid)
        if x_o is None:
            self._likelihood = None
            return
        x_o = self.x_o.to(self.estimator.dtype)
        if self._likelihood is None or not torch.equal(self._likelihood.x_observed, x_o):  # cache once per x_o
            self._likelihood = self.estimator.likelihood(x_o)

    def __call__(self, theta: Tensor, track_gradients: bool = True) -> Tensor:
        if self._likelihood is None:
            raise ValueError("no observed data is set; call set_x(x_o) or pass x to the posterior")
        theta = theta.reshape(-1, self.estimator.theta_dim)
        log_prior = prior_log_prob(self.prior, theta).to(theta.dtype)
        with torch.set_grad_enabled(track_gradients):
            log_likelihood = self._likelihood(theta) if self.x_is_iid else self._likelihood.per_event(theta)
            return torch.where(torch.isfinite(log_prior), log_likelihood.to(theta.dtype) + log_prior, log_prior)


def _as_estimator(estimator: Estimator | ModelDensityEstimator) -> Estimator:
    if isinstance(estimator, ModelDensityEstimator):
        return estimator.estimator
    if isinstance(estimator, Estimator):
        return estimator
    raise ValueError(f"expected one of our estimators or a ModelDensityEstimator, got {type(estimator).__name__}")


#: `mcmc_posterior_for_sbi`'s changes to sbi's `MCMCPosterior` defaults: SIR initialization from 100
#: prior candidates per chain instead of resampling 10 000 (which costs 20 · 10⁴ potential calls
#: before the first step), and 50 warm-up steps instead of 200.
SBI_MCMC_DEFAULTS: dict[str, Any] = {
    "init_strategy": "sir",
    "init_strategy_parameters": {"num_candidate_samples": 100},
    "warmup_steps": 50,
    "thin": 1,
}


def mcmc_posterior_for_sbi(
    estimator: Estimator | ModelDensityEstimator,
    prior: torch.distributions.Distribution,
    x_o: Tensor | None = None,
    **mcmc_parameters: Any,
) -> MCMCPosterior:
    """sbi's `MCMCPosterior` on the fast path (`FastLikelihoodPotential`), sampling in sbi's
    unconstrained, z-scored θ space; `mcmc_parameters` go to `MCMCPosterior` (method,
    num_chains, warmup_steps, thin, init_strategy, …) over `SBI_MCMC_DEFAULTS`. Use it with
    sbi's `sample`, `sample_batched`, `log_prob`, `map` and diagnostics (SBC, TARP, C2ST)."""
    potential = FastLikelihoodPotential(_as_estimator(estimator).eval(), prior, x_o)
    parameters = {**copy.deepcopy(SBI_MCMC_DEFAULTS), **mcmc_parameters}  # sbi adds entries to the nested dicts
    with warnings.catch_warnings():  # a 1-D torch Uniform is cast to sbi's BoxUniform: intended
        warnings.filterwarnings("ignore", message="Casting 1D Uniform", category=UserWarning)
        proposal, _, _ = process_prior(prior)  # SIR needs log p(θ) per row: an event dimension
    posterior = MCMCPosterior(potential, proposal=proposal, theta_transform=mcmc_transform(prior), **parameters)
    if x_o is not None:
        posterior.set_default_x(x_o)
    return posterior


class SBISimulator:
    """One of our simulators as the callable `θ -> x` that `simulate_for_sbi` and
    `process_simulator` expect: θ as a tensor or numpy array, (b, p) or (p,); x as float32
    (b, D). Each call seeds its generator from torch's global RNG, which `simulate_for_sbi(...,
    seed=s)` seeds (per worker batch), so sbi's seeds make the simulations reproducible."""

    def __init__(self, simulator: Simulator) -> None:
        self.simulator = simulator

    def __call__(self, theta: Tensor | np.ndarray) -> Tensor:
        theta = torch.as_tensor(theta, dtype=torch.float32)
        theta = theta.reshape(1, -1) if theta.ndim == 1 else theta
        seed = int(torch.randint(2**62, ()))
        return self.simulator.simulate(theta, as_generator(seed)).to(torch.float32)
