"""The interface every model of the toolkit shares (Brehmer & Cranmer 2020, Table 1).

A model has an encoder x -> u ∈ R^n, a decoder (chart) u -> x, and an inner flow h(·|θ) that
gives the θ-conditional density of u: log p_h(u|θ) = log N(h⁻¹(u|θ); 0, I) + log|det J_h⁻¹|.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from mflow_sbi.transforms import FlowConfig, build_flow
from mflow_sbi.validation import check_matrix, check_same_batch


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """log N(z; 0, I) summed over the last dimension."""
    return -0.5 * (z**2).sum(-1) - 0.5 * z.shape[-1] * math.log(2 * math.pi)


def as_flow_config(value: FlowConfig | dict[str, Any] | None) -> FlowConfig:
    if value is None:
        return FlowConfig()
    return value if isinstance(value, FlowConfig) else FlowConfig(**value)


class ConditionalModel(nn.Module, ABC):
    """Encoder, decoder and a θ-conditional density of the manifold coordinates.

    `log_prob(x, θ, exact=True)` is the model's full log-density; `exact=False` is its fast
    θ-dependent part: when `encoder_depends_on_theta` is False it equals
    `log_prob_latent(encode(x), θ)` and differs from the exact value by a term that depends on x
    only, so it gives exact likelihood ratios and posteriors.
    """

    name: ClassVar[str]
    #: training schedules this model supports; the first is its default
    schedules: ClassVar[tuple[str, ...]] = ("sequential", "alternating")
    has_exact_density: ClassVar[bool] = True

    def __init__(self, data_dim: int, theta_dim: int, latent_dim: int, inner: FlowConfig | dict | None = None) -> None:
        super().__init__()
        if not 0 < latent_dim <= data_dim or theta_dim < 1:
            raise ValueError(f"need 0 < latent_dim ≤ data_dim and theta_dim ≥ 1, got {latent_dim}, {data_dim}, {theta_dim}")
        self.data_dim, self.theta_dim, self.latent_dim = data_dim, theta_dim, latent_dim
        inner = as_flow_config(inner)
        self.inner = build_flow(latent_dim, theta_dim, inner)
        self._config: dict[str, Any] = {
            "data_dim": data_dim, "theta_dim": theta_dim, "latent_dim": latent_dim, "inner": asdict(inner)
        }

    # ---- what a concrete model defines -------------------------------------------------------
    @abstractmethod
    def _encode(self, x: Tensor, theta: Tensor | None) -> Tensor: ...

    @abstractmethod
    def _decode(self, u: Tensor, theta: Tensor | None) -> Tensor: ...

    @abstractmethod
    def _log_prob(self, x: Tensor, theta: Tensor, exact: bool) -> Tensor: ...

    @property
    def encoder_depends_on_theta(self) -> bool:
        """Whether u = encode(x) needs θ (then no per-event caching across θ is possible)."""
        return False

    # ---- the shared interface ------------------------------------------------------------------
    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments (JSON-serializable) plus the model's registry name."""
        return {"model": self.name, **self._config}

    @property
    def dtype(self) -> torch.dtype:
        """The precision of the model's parameters (inputs from float32 tools are cast to it)."""
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        """The device of the model's parameters."""
        return next(self.parameters()).device

    def encode(self, x: Tensor, theta: Tensor | None = None) -> Tensor:
        """Manifold coordinates u of x -> (batch, latent_dim)."""
        return self._encode(self.check_x(x), self._check_theta(theta, x, self.encoder_depends_on_theta))

    def decode(self, u: Tensor, theta: Tensor | None = None) -> Tensor:
        """The point g(u) on the model manifold -> (batch, data_dim)."""
        check_matrix("u", u, self.latent_dim)
        return self._decode(u, self._check_theta(theta, u, self.encoder_depends_on_theta))

    def project(self, x: Tensor, theta: Tensor | None = None) -> Tensor:
        """x projected onto the model manifold, g(encode(x))."""
        theta = self._check_theta(theta, x, self.encoder_depends_on_theta)
        return self._decode(self._encode(self.check_x(x), theta), theta)

    def reconstruction_error(self, x: Tensor, theta: Tensor | None = None) -> Tensor:
        """Squared distance ‖x - g(encode(x))‖² to the projection, summed over every data
        dimension (vector or image) -> (batch,)."""
        return ((x - self.project(x, theta)) ** 2).flatten(1).sum(-1)

    def log_prob_latent(self, u: Tensor, theta: Tensor) -> Tensor:
        """log p_h(u|θ) = log N(h⁻¹(u|θ)) + log|det J_h⁻¹(u|θ)|, rows paired -> (batch,)."""
        z, ladj = self.inner(theta).call_and_ladj(u)
        return standard_normal_log_prob(z) + ladj

    def log_prob(self, x: Tensor, theta: Tensor, *, exact: bool = True) -> Tensor:
        """log p(x|θ), rows of x and θ paired -> (batch,). `exact=False`: the fast θ-dependent
        part (see the class docstring)."""
        theta = self._check_theta(theta, x, required=True)
        return self._log_prob(self.check_x(x), theta, exact)

    def sample(self, theta: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """One x per row of θ: ũ ~ N(0, I), u = h(ũ|θ), x = g(u) -> (batch, data_dim)."""
        theta = self._check_theta(theta, None, required=True)
        noise = torch.randn(theta.shape[0], self.latent_dim, generator=generator, dtype=theta.dtype)
        u = self.inner(theta).inv(noise.to(theta.device))
        return self._decode(u, theta)

    def density_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the inner flow h: the only ones the density phase updates."""
        return self.inner.parameters()

    def manifold_parameters(self) -> Iterator[nn.Parameter]:
        """Every parameter outside h: the ones the manifold phase updates."""
        return (p for name, p in self.named_parameters() if not name.startswith("inner."))

    # ---- validation -----------------------------------------------------------------------------
    def check_x(self, x: Tensor, name: str = "x") -> Tensor:
        """x validated as this model's input, (batch, data_dim); image models override it."""
        return check_matrix(name, x, self.data_dim)

    def _check_theta(self, theta: Tensor | None, batch: Tensor | None, required: bool) -> Tensor | None:
        if theta is None:
            if required:
                raise ValueError(f"{self.name} needs theta here")
            return None
        check_matrix("theta", theta, self.theta_dim)
        if batch is not None:
            check_same_batch(x=batch, theta=theta)
        return theta
