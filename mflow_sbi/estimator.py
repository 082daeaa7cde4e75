"""The trained estimator: the one unit every consumer uses (likelihoods, posteriors, the sbi
plug-in, the command line, checkpoints), for flows and ratio estimators, vectors and images.

An estimator declares its event shape and θ dimension (checked here, once), owns its fitted
`Standardization` (users pass and get raw units), and offers `loss(x, θ)`, `log_prob(x, θ,
exact=…)`, `sample(θ)` where defined, and `likelihood(x_o)`: an `ObservedLikelihood` that caches
what the family needs per observed event and evaluates log p(x_o|θ) over many θ.

Because the manifold of an M-flow does not depend on θ (Brehmer & Cranmer 2020, §3, "Likelihood
evaluation"), log p(x|θ) = log p_h(u|θ) + c(x) with u = g⁻¹(x): u and the θ-independent c(x)
are computed once per event and every further θ costs one pass of the inner flow; hence the exact
ratio log r(x|θ0, θ1) = log p_h(u|θ0) - log p_h(u|θ1). A ratio estimator fits the same scheme
with log r̂(x|θ, θ_ref) in place of log p_h and c(x) = log p(x|θ_ref) unknown.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from mflow_sbi.standardization import Standardization
from mflow_sbi.training.losses import phase_loss, schedule
from mflow_sbi.validation import check_event, check_in_support, check_matrix, check_same_batch


class Estimator(nn.Module, ABC):
    """The protocol of every trainable estimator (see the module docstring).

    Subclasses set `name`, `schedules` (training schedules of `mflow_sbi.training.schedule`; the
    first is the default, and `loss` is the sum of the phases of `loss_schedule`),
    `has_exact_density`, and implement `log_prob`, `observed_features` and
    `log_prob_features`; `sample` where the family can generate.
    """

    name: ClassVar[str]
    schedules: ClassVar[tuple[str, ...]]
    loss_schedule: ClassVar[str]
    has_exact_density: ClassVar[bool] = True

    def __init__(self, event_shape: tuple[int, ...], theta_dim: int, standardize: bool = True) -> None:
        super().__init__()
        if not isinstance(standardize, bool):
            raise TypeError(f"standardize must be True or False, got {standardize!r}")
        if theta_dim < 1 or not event_shape or min(event_shape) < 1:
            raise ValueError(f"need theta_dim ≥ 1 and a non-empty event shape of positive sizes, got {theta_dim}, {event_shape}")
        self.event_shape, self.theta_dim = tuple(int(s) for s in event_shape), int(theta_dim)
        self.standardization = Standardization(self.event_shape, self.theta_dim, enabled=standardize)
        self._config: dict[str, Any] = {}

    # ---- identity -------------------------------------------------------------------------------
    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments (JSON-serializable) plus the registry name: `build_estimator`
        rebuilds the estimator from it."""
        return {"model": self.name, **self._config}

    @property
    def dtype(self) -> torch.dtype:
        """The precision of the parameters (inputs are cast to it)."""
        return self.standardization.x_scale.dtype

    @property
    def device(self) -> torch.device:
        """The device of the parameters (inputs are moved to it)."""
        return self.standardization.x_scale.device

    # ---- validation, in one place ------------------------------------------------------------
    def check_x(self, x: Tensor, name: str = "x") -> Tensor:
        """x validated as a batch of events (batch, *event_shape), cast to the estimator's dtype
        and device."""
        return check_event(name, x, self.event_shape).to(device=self.device, dtype=self.dtype)

    def check_theta(self, theta: Tensor, batch: Tensor | None = None, name: str = "theta") -> Tensor:
        """θ validated as (batch, theta_dim), paired with `batch` if given, cast like `check_x`."""
        check_matrix(name, theta, self.theta_dim)
        if batch is not None:
            check_same_batch(x=batch, **{name: theta})
        return theta.to(device=self.device, dtype=self.dtype)

    # ---- training ---------------------------------------------------------------------------------
    @property
    def levels(self) -> int:
        """How many chart levels the "hierarchical" schedule trains one after another (1 unless
        the estimator stacks charts, paper 003)."""
        return 1

    def prepare(self, x: Tensor, theta: Tensor, records: dict[str, Any] | None = None) -> dict[str, Any]:
        """Settle what the estimator learns from its training data (raw units, before the
        standardization is fitted and the first step); the trainer calls it and records what it
        returns in the history's `attrs`. `records`: what an earlier call returned (a resumed
        run), to settle from instead of learning again. Default: nothing (an M-flow with
        `latent_dim="auto"` estimates its manifold dimension here)."""
        return {}

    def fit_standardization(self, x: Tensor, theta: Tensor) -> None:
        """Fit the standardization to training data (once; see `Standardization.fit`)."""
        self.standardization.fit(self.check_x(x), self.check_theta(theta, x))

    def loss(self, x: Tensor, theta: Tensor, **augmented: Tensor) -> Tensor:
        """Per-sample training loss (sbi's `loss(input, condition)`) -> (batch,): the sum of the
        phases of the one-stage schedule `loss_schedule`; `augmented` holds the extra fields that
        schedule reads (e.g. ALICES's joint ratio and score)."""
        x = self.check_x(x)
        data = {"x": x, "theta": self.check_theta(theta, x)} | {k: v.to(device=self.device, dtype=self.dtype) for k, v in augmented.items()}
        if not len(x):
            return x.new_zeros(0)
        (phases,) = schedule(self.loss_schedule)
        return sum(phase_loss(phase, self, data) for phase in phases)

    # ---- densities ----------------------------------------------------------------------------
    @abstractmethod
    def log_prob(self, x: Tensor, theta: Tensor, *, exact: bool = True) -> Tensor:
        """log p(x|θ) in raw units, rows paired -> (batch,); `exact=False`: up to a θ-independent
        term per event (what likelihood ratios and posteriors need)."""

    def sample(self, theta: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """One x ~ p(x|θ_i) per row of θ -> (batch, *event_shape)."""
        raise NotImplementedError(f"{self.name} cannot generate samples")

    def likelihood(
        self, x_observed: Tensor, exact: bool = False, prior: torch.distributions.Distribution | None = None, chunk_size: int = 65536
    ) -> ObservedLikelihood:
        """The likelihood of the iid events `x_observed` as a function of θ, with the per-event
        terms cached (see `ObservedLikelihood`; `chunk_size` bounds the (θ, event) pairs per pass)."""
        return ObservedLikelihood(self, x_observed, exact, prior, chunk_size)

    @abstractmethod
    def observed_features(self, x: Tensor, exact: bool) -> tuple[Tensor, Tensor]:
        """What `likelihood` caches per validated event x: (features, c(x)) with
        log p(x|θ) = log_prob_features(features, θ) + c(x) (c = 0 unless `exact`)."""

    @abstractmethod
    def log_prob_features(self, features: Tensor, theta: Tensor, exact: bool) -> Tensor:
        """The θ-dependent part of log p(x|θ) from cached features, rows paired -> (batch,)."""


class LogRatio(NamedTuple):
    """log r(x|θ0, θ1) per event, (pairs, events), and summed over the iid events, (pairs,)."""

    per_event: Tensor
    total: Tensor


class ObservedLikelihood:
    """The likelihood of a fixed set of iid observed events as a function of θ (raw units).

    `exact=False` (the fast path) omits the per-event θ-independent constant c(x): values are then
    shifted by Σ_j c(x_j), which cancels in every ratio and posterior. `exact=True` adds it back,
    so values equal the exact log-density (the estimator must have one). Calling the object with
    θ (batch, p) returns Σ_j log p(x_j|θ), (batch,); an autograd graph is built only when θ
    requires grad. With a `prior`, θ outside its support raises a `ValueError`. Events and θ
    move to the estimator's precision and device; results come back on θ's device. The cache is
    built at construction: make a new one after training further.
    """

    def __init__(
        self,
        estimator: Estimator,
        x_observed: Tensor,
        exact: bool = False,
        prior: torch.distributions.Distribution | None = None,
        chunk_size: int = 65536,
    ) -> None:
        x_observed = estimator.check_x(x_observed, "x_observed")
        if len(x_observed) == 0:
            raise ValueError("x_observed holds no events")
        if exact and not estimator.has_exact_density:
            raise ValueError(f"{estimator.name} has no tractable density; use exact=False")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be ≥ 1, got {chunk_size}")
        self.estimator, self.x_observed, self.exact = estimator, x_observed, exact
        self.prior, self.chunk_size = prior, chunk_size
        with torch.no_grad():
            self.features, self.offset = estimator.observed_features(x_observed, exact)

    @property
    def events(self) -> int:
        """The number of observed events."""
        return len(self.x_observed)

    def table(self, theta: Tensor) -> Tensor:
        """log p(x_j|θ_i) for every pair -> (len(theta), events), vectorized over (θ, event)
        pairs in chunks of at most `chunk_size` pairs. Differentiable in θ when θ requires grad."""
        device = theta.device
        theta = self._check_theta(theta)
        if not len(theta):
            return theta.new_zeros(0, self.events).to(device)
        events, ones = self.events, (1,) * (self.features.ndim - 1)
        rows = [
            self._paired(block.repeat_interleave(events, dim=0), self.features.repeat(len(block), *ones)).view(len(block), events)
            for block in theta.split(max(1, self.chunk_size // events))
        ]
        return (torch.cat(rows) + self.offset).to(device)

    def per_event(self, theta: Tensor) -> Tensor:
        """log p(x_j|θ_j) with one θ per observed event (rows paired) -> (events,)."""
        device = theta.device
        theta = self._check_theta(theta)
        check_same_batch(x_observed=self.x_observed, theta=theta)
        return (self._paired(theta, self.features) + self.offset).to(device)

    def __call__(self, theta: Tensor) -> Tensor:
        return self.table(theta).sum(-1)

    def log_ratio(self, theta0: Tensor, theta1: Tensor) -> LogRatio:
        """log r(x|θ0_i, θ1_i) = log p(x|θ0_i) - log p(x|θ1_i) for paired rows of θ0 and θ1."""
        if theta0.shape != theta1.shape:
            raise ValueError(f"theta0 and theta1 must have the same shape, got {tuple(theta0.shape)} and {tuple(theta1.shape)}")
        per_event = self.table(theta0) - self.table(theta1)
        return LogRatio(per_event, per_event.sum(-1))

    def _paired(self, theta: Tensor, features: Tensor) -> Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and theta.requires_grad):
            return self.estimator.log_prob_features(features, theta, self.exact)

    def _check_theta(self, theta: Tensor) -> Tensor:
        check_matrix("theta", theta, self.estimator.theta_dim)
        if self.prior is not None:
            check_in_support("theta", theta, self.prior)
        return theta.to(device=self.x_observed.device, dtype=self.x_observed.dtype)
