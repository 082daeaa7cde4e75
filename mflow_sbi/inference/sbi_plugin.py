"""The `sbi` plug-in: our models as sbi likelihood estimators, a potential on the fast path, and
simulators for `sbi.inference.simulate_for_sbi` (checked against sbi 0.27).

Two routes, both ending in sbi's own posterior classes and diagnostics:

- train inside sbi: `NLE(prior, density_estimator=estimator_builder("mflow", latent_dim=2))`
  trains with `ModelDensityEstimator.loss` (for M-flows the alternating M/D loss);
- train with our trainer (`mflow_sbi.training.train`, any schedule), then wrap the model.

Either way `mcmc_posterior_for_sbi(model_or_estimator, prior)` returns an sbi `MCMCPosterior`
whose potential encodes the observed events once per x_o (`FastLikelihoodPotential`), so each
MCMC step costs one pass of the inner flow per (θ, event) pair.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import torch
from sbi.inference import MCMCPosterior
from sbi.inference.potentials.base_potential import BasePotential
from sbi.neural_nets.estimators import ConditionalDensityEstimator
from sbi.utils import mcmc_transform
from torch import Tensor

from mflow_sbi.baselines import RatioEstimator
from mflow_sbi.inference.likelihood import LikelihoodEstimator, ObservedLikelihood
from mflow_sbi.inference.posterior import prior_log_prob
from mflow_sbi.models import ConditionalModel, build_model
from mflow_sbi.training.losses import schedule
from simulators.base import Simulator, as_generator


class ModelDensityEstimator(ConditionalDensityEstimator):
    """A `ConditionalModel` as sbi's likelihood estimator q(x|θ): input = x of shape (D,),
    condition = θ of shape (p,), with sbi's (sample, batch) shape conventions.

    Inputs are cast to the model's dtype (sbi works in float32). `log_prob` is the model's
    exact density (`exact=None` picks it where the model has one, else the latent density:
    PAE); on sbi's iid trials it is computed without gradients to the model's parameters
    (inference only). `loss(x, θ)` is the per-sample loss of the model's one-stage
    schedule: -log p(x|θ) for AF and PIE; for M-flow, Me-flow and PAE the alternating M/D loss
    w·‖x - g(g⁻¹(x))‖² - log p_h(g⁻¹(x)|θ), whose first term trains only the manifold and whose
    second (with u detached) trains only h (Brehmer & Cranmer 2020, §3), so sbi's single
    optimizer performs M/D training.
    """

    def __init__(self, model: ConditionalModel, exact: bool | None = None, reconstruction_weight: float = 1000.0) -> None:
        super().__init__(net=model, input_shape=torch.Size([model.data_dim]), condition_shape=torch.Size([model.theta_dim]))
        self.exact = model.has_exact_density if exact is None else exact
        if self.exact and not model.has_exact_density:
            raise ValueError(f"{model.name} has no tractable density; use exact=False")
        one_stage = "alternating" if "alternating" in model.schedules else model.schedules[0]
        (self.phases,) = schedule(one_stage, reconstruction_weight)

    @property
    def model(self) -> ConditionalModel:
        """The wrapped model (sbi calls it `net`)."""
        return self.net

    def log_prob(self, input: Tensor, condition: Tensor, **kwargs: Any) -> Tensor:
        """log q(x|θ) for x (S, B, D) or (B, D) and θ (B, p) or (S, B, p) -> (S, B)."""
        self._check_input_shape(input)
        self._check_condition_shape(condition)
        input, condition, batch = self._broadcast_and_align(self._as_model_dtype(input), self._as_model_dtype(condition))
        samples = input.shape[0]
        if batch > 1 and input.stride(1) == 0 and condition.stride(0) == 0 and not self.model.encoder_depends_on_theta:
            # sbi's iid trials: S events expanded over B θ. Encode each event (and its
            # θ-independent Jacobian term) once, then one inner-flow pass per pair.
            likelihood = ObservedLikelihood(self.model, input[:, 0], exact=self.exact)
            return likelihood.table(condition[0]).T
        values = self.model.log_prob(
            input.reshape(-1, self.model.data_dim), condition.reshape(-1, self.model.theta_dim), exact=self.exact
        )
        return values.reshape(samples, batch)

    def loss(self, input: Tensor, condition: Tensor, **kwargs: Any) -> Tensor:
        """Per-sample training loss for x (B, D) and θ (B, p) -> (B,)."""
        input, condition = self._as_model_dtype(input), self._as_model_dtype(condition)
        return sum(phase.weight * phase.loss(self.model, input, condition) for phase in self.phases)

    def sample(self, sample_shape: torch.Size, condition: Tensor, **kwargs: Any) -> Tensor:
        """x ~ q(x|θ) for θ (B, p) -> (*sample_shape, B, D)."""
        self._check_condition_shape(condition)
        condition = self._as_model_dtype(condition).reshape(-1, self.model.theta_dim)
        shape = torch.Size(sample_shape)
        theta = condition.expand(shape.numel(), *condition.shape).reshape(-1, self.model.theta_dim)
        return self.model.sample(theta).reshape(*shape, len(condition), self.model.data_dim)

    def _as_model_dtype(self, tensor: Tensor) -> Tensor:
        """sbi hands over float32; a model kept in another precision gets its own dtype."""
        return tensor.to(self.model.dtype)


def estimator_builder(
    model: str = "mflow", reconstruction_weight: float = 1000.0, **model_config: Any
) -> Callable[[Tensor, Tensor], ModelDensityEstimator]:
    """A builder for `NLE(prior, density_estimator=...)`, following sbi's protocol
    `builder(theta, x) -> ConditionalDensityEstimator`: it builds one of our models with the
    data and parameter dimensions read off the first training batch; `model_config` holds the
    model's other constructor arguments, e.g. `latent_dim=2`."""
    return partial(_build_estimator, {"model": model, **model_config}, reconstruction_weight)


def _build_estimator(config: dict[str, Any], reconstruction_weight: float, theta: Tensor, x: Tensor) -> ModelDensityEstimator:
    if theta.ndim != 2 or x.ndim != 2:
        raise ValueError(f"our models need θ (N, p) and x (N, D), got shapes {tuple(theta.shape)} and {tuple(x.shape)}")
    model = build_model({**config, "data_dim": x.shape[1], "theta_dim": theta.shape[1]})
    return ModelDensityEstimator(model, reconstruction_weight=reconstruction_weight)


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

    def __init__(self, model: LikelihoodEstimator, prior: torch.distributions.Distribution, x_o: Tensor | None = None) -> None:
        self.model = model
        self._likelihood: ObservedLikelihood | None = None
        super().__init__(prior, x_o, device=str(model.device))

    def set_x(self, x_o: Tensor | None, x_is_iid: bool | None = True) -> None:
        """Set the observed data; the events are encoded once per new x_o."""
        super().set_x(x_o, x_is_iid)
        if x_o is None:
            self._likelihood = None
            return
        x_o = self.x_o.to(self.model.dtype)
        if self._likelihood is None or not torch.equal(self._likelihood.x_observed, x_o):  # encode once per x_o
            self._likelihood = ObservedLikelihood(self.model, x_o)

    def __call__(self, theta: Tensor, track_gradients: bool = True) -> Tensor:
        if self._likelihood is None:
            raise ValueError("no observed data is set; call set_x(x_o) or pass x to the posterior")
        theta = theta.reshape(-1, self.model.theta_dim)
        log_prior = prior_log_prob(self.prior, theta).to(theta.dtype)
        with torch.set_grad_enabled(track_gradients):
            t = theta.to(self._likelihood.x_observed.dtype)
            log_likelihood = self._likelihood(t) if self.x_is_iid else self._likelihood.per_event(t)
            return torch.where(torch.isfinite(log_prior), log_likelihood.to(theta.dtype) + log_prior, log_prior)


def _as_model(model_or_estimator: ConditionalModel | RatioEstimator | ModelDensityEstimator) -> LikelihoodEstimator:
    if isinstance(model_or_estimator, ModelDensityEstimator):
        return model_or_estimator.model
    if isinstance(model_or_estimator, (ConditionalModel, RatioEstimator)):
        return model_or_estimator
    raise ValueError(
        f"expected one of our models, a RatioEstimator or a ModelDensityEstimator, got {type(model_or_estimator).__name__}"
    )


def mcmc_posterior_for_sbi(
    model_or_estimator: ConditionalModel | RatioEstimator | ModelDensityEstimator,
    prior: torch.distributions.Distribution,
    x_o: Tensor | None = None,
    **mcmc_parameters: Any,
) -> MCMCPosterior:
    """sbi's `MCMCPosterior` on the fast path (`FastLikelihoodPotential`), sampling in sbi's
    unconstrained, z-scored θ space; `mcmc_parameters` go to `MCMCPosterior` (method,
    num_chains, warmup_steps, thin, init_strategy, …). Use it with sbi's `sample`,
    `sample_batched`, `log_prob`, `map` and diagnostics (SBC, TARP, C2ST)."""
    model = _as_model(model_or_estimator).eval()
    potential = FastLikelihoodPotential(model, prior, x_o)
    posterior = MCMCPosterior(potential, proposal=prior, theta_transform=mcmc_transform(prior), **mcmc_parameters)
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
