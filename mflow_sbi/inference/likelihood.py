"""Log-likelihoods and likelihood ratios of observed events over many θ.

For a model whose encoder does not depend on θ (M-flow, Me-flow, PIE with unconditional
manifold, AF, PAE), log p(x|θ) = log p_h(u|θ) + c(x) with u = encode(x) (Brehmer & Cranmer
2020, §3 "Likelihood evaluation"): u and the θ-independent c(x) (for the M-flow
-½ log det(J_gᵀ J_g)) are computed once per observed event, and every further θ costs one
pass of the inner flow. Hence the exact ratio

    log r(x|θ0, θ1) = log p_h(u|θ0) - log p_h(u|θ1).

Models whose encoder needs θ (PIE with conditional manifold) use their full density through
the same API. Ratio estimators (ALICES) fit the same scheme: log p(x|θ) = log r̂(x|θ, θ_ref) +
log p(x|θ_ref), so log r̂ plays the role of log p_h(u|θ) with c(x) = log p(x|θ_ref) unknown.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

import torch
from torch import Tensor
from mflow_sbi.validation import check_in_support, check_matrix, check_same_batch


class LogRatio(NamedTuple):
    """log r(x|θ0, θ1) per event, (pairs, events), and summed over the iid events, (pairs,)."""

    per_event: Tensor
    total: Tensor


class LikelihoodEstimator(Protocol):
    """What the inference APIs need from a trained estimator: `ConditionalModel` (every flow)
    and `mflow_sbi.baselines.RatioEstimator` provide it."""

    name: str
    theta_dim: int
    has_exact_density: bool
    encoder_depends_on_theta: bool
    dtype: torch.dtype
    device: torch.device

    def check_x(self, x: Tensor, name: str = "x") -> Tensor:
        """x validated as the estimator's input."""

    def encode(self, x: Tensor) -> Tensor:
        """The θ-independent per-event features, computed once per observed event."""

    def log_prob_latent(self, u: Tensor, theta: Tensor) -> Tensor:
        """log p(x|θ) up to a θ-independent term, from the features u, rows paired -> (batch,)."""


class ObservedLikelihood:
    """The likelihood of a fixed set of iid observed events as a function of θ.

    `exact=False` (the fast path) omits the per-event constant c(x): log-likelihoods are then
    shifted by Σ_j c(x_j), which cancels in every ratio and posterior. `exact=True` adds the
    cached c(x) back, so values equal the model's exact log-density (the model must have one).
    Calling the object with θ (batch, p) returns Σ_j log p(x_j|θ), (batch,); an autograd
    graph is built only when θ requires grad (for gradient-based samplers). With a `prior`,
    θ outside its support raises a `ValueError` instead of extrapolating the model. The
    encodings are cached at construction: build a new object after training the model further.
    Observed events and θ are moved to the model's precision and device; results come back on
    θ's device (samplers and grids work on the CPU with a model on a GPU).
    """

    def __init__(
        self,
        model: LikelihoodEstimator,
        x_observed: Tensor,
        exact: bool = False,
        prior: torch.distributions.Distribution | None = None,
        chunk_size: int = 65536,
    ) -> None:
        x_observed = model.check_x(x_observed, "x_observed").to(device=model.device, dtype=model.dtype)
        if len(x_observed) == 0:
            raise ValueError("x_observed holds no events")
        if exact and not model.has_exact_density:
            raise ValueError(f"{model.name} has no tractable density; use exact=False")
        self.model, self.x_observed, self.exact = model, x_observed, exact
        self.prior, self.chunk_size = prior, chunk_size
        self.cached = not model.encoder_depends_on_theta
        with torch.no_grad():
            self.encoded = model.encode(x_observed) if self.cached else None
            self.offset = torch.zeros(len(x_observed), dtype=x_observed.dtype, device=x_observed.device)
            if self.cached and exact:  # c(x) = log p(x|θ) - log p_h(u|θ) for any θ
                reference = torch.zeros(len(x_observed), model.theta_dim, dtype=x_observed.dtype, device=x_observed.device)
                self.offset = model.log_prob(x_observed, reference, exact=True) - model.log_prob_latent(self.encoded, reference)

    def table(self, theta: Tensor) -> Tensor:
        """log p(x_j|θ_i) for every pair -> (len(theta), events), vectorized over (θ, event)
        pairs in chunks. Differentiable in θ when θ requires grad (e.g. for HMC)."""
        self._check_theta(theta)
        events = len(self.x_observed)
        rows = [
            self._paired(block.repeat_interleave(events, dim=0), self._inputs().repeat(len(block), 1)).view(len(block), events)
            for block in theta.split(max(1, self.chunk_size // events))  # ≤ chunk_size pairs at a time
        ]
        return (torch.cat(rows) + self.offset).to(theta.device)

    def per_event(self, theta: Tensor) -> Tensor:
        """log p(x_j|θ_j) with one θ per observed event (rows paired) -> (events,)."""
        self._check_theta(theta)
        check_same_batch(x_observed=self.x_observed, theta=theta)
        return (self._paired(theta, self._inputs()) + self.offset).to(theta.device)

    def _inputs(self) -> Tensor:
        return self.encoded if self.cached else self.x_observed

    def _paired(self, theta: Tensor, inputs: Tensor) -> Tensor:
        theta = theta.to(device=inputs.device, dtype=inputs.dtype)  # θ from a float64 CPU sampler meets the model
        with torch.set_grad_enabled(torch.is_grad_enabled() and theta.requires_grad):
            if self.cached:
                return self.model.log_prob_latent(inputs, theta)
            return self.model.log_prob(inputs, theta, exact=self.exact)

    def _check_theta(self, theta: Tensor) -> None:
        check_matrix("theta", theta, self.model.theta_dim)
        if self.prior is not None:
            check_in_support("theta", theta, self.prior)

    def __call__(self, theta: Tensor) -> Tensor:
        return self.table(theta).sum(-1)

    def log_ratio(self, theta0: Tensor, theta1: Tensor) -> LogRatio:
        """log r(x|θ0_i, θ1_i) = log p(x|θ0_i) - log p(x|θ1_i) for paired rows of θ0 and θ1."""
        if theta0.shape != theta1.shape:
            raise ValueError(f"theta0 and theta1 must have the same shape, got {tuple(theta0.shape)} and {tuple(theta1.shape)}")
        per_event = self.table(theta0) - self.table(theta1)
        return LogRatio(per_event, per_event.sum(-1))
