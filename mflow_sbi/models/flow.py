"""The flow family as one composition (Brehmer & Cranmer 2020, Table 1): a chart f (or a
decoder), an optional encoder, and a θ-conditional density h on n manifold coordinates, in the
standardized units of the estimator's `Standardization`. AF, PIE, M-flow, Me-flow and PAE, on
vectors and images, are choices of these parts (`mflow_sbi.models`), not copies."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from mflow_sbi.estimator import Estimator
from mflow_sbi.models.parts import Chart, Density, log_normal
from mflow_sbi.training.losses import huber
from mflow_sbi.transforms import log_det_metric, pad
from mflow_sbi.validation import check_matrix, check_positive_number, is_integer

DensityKind = Literal["manifold", "ambient", "latent"]


class ManifoldFlow(Estimator):
    """x' = standardized x; u = e(x') with a learned encoder, else the first n entries of f(x'|θ);
    g(u) = d(u) with a learned decoder, else f⁻¹((u, 0)|θ). Its density, by `density_kind`:

    - "manifold" (M-flow, Me-flow, Eq. 2):  log p_h(u|θ) - ½ log det(J_gᵀ J_g)(u), with g the chart
      into raw units (the standardization is part of the chart, so densities are in raw units);
    - "ambient" (AF, PIE): (u, v) = f(x'|θ), log p_h(u|θ) + log N(v; 0, ε² I) + log|det J_f| - Σ log s_x;
    - "latent" (PAE): no tractable density; the latent part log p_h(u|θ) only.

    The fast part (`exact=False`) is log p_h(u|θ) when the manifold does not depend on θ: it
    differs from the exact value by a term of x alone, so ratios and posteriors are exact.
    """

    density_kind: ClassVar[DensityKind]

    def __init__(
        self,
        event_shape: tuple[int, ...],
        theta_dim: int,
        latent_dim: int,
        density: Density,
        chart: Chart | None = None,
        encoder: nn.Module | None = None,
        decoder: nn.Module | None = None,
        epsilon: float | None = None,
        jacobian_chunk_size: int | None = None,
        standardize: bool = True,
    ) -> None:
        super().__init__(event_shape, theta_dim, standardize)
        self.data_dim = math.prod(self.event_shape)
        if not 0 < latent_dim <= self.data_dim:
            raise ValueError(f"need 0 < latent_dim ≤ {self.data_dim} (the data dimension), got {latent_dim}")
        if jacobian_chunk_size is not None and not (is_integer(jacobian_chunk_size) and jacobian_chunk_size >= 1):
            raise ValueError(f"jacobian_chunk_size must be an integer ≥ 1 or None, got {jacobian_chunk_size!r}")
        if epsilon is not None:
            check_positive_number("epsilon", epsilon)
        if (chart is None) == (decoder is None) or (chart is None and encoder is None):
            raise ValueError("compose a chart (optionally with an encoder) or an encoder with a decoder")
        self.latent_dim, self.epsilon, self.jacobian_chunk_size = latent_dim, epsilon, jacobian_chunk_size
        self.density, self.chart, self.encoder, self.decoder = density, chart, encoder, decoder
        if density.flow is None and not self.manifold_depends_on_theta:
            raise ValueError("inner flow setting layers = 0 leaves p(x|θ) independent of θ (nothing else sees θ): use layers ≥ 1")

    @property
    def manifold_depends_on_theta(self) -> bool:
        """Whether the chart is conditioned on θ (the original PIE, the image AF): then nothing
        is cached per event."""
        return self.chart is not None and self.chart.context > 0

    # ---- the parts, in standardized units ------------------------------------------------------
    def _chart_theta(self, theta: Tensor | None) -> Tensor | None:
        return theta if self.manifold_depends_on_theta else None

    def _encode(self, x: Tensor, theta: Tensor | None) -> Tensor:
        if self.encoder is not None:
            if self.chart is not None:
                self.chart.initialize(x, self._chart_theta(theta))
            return self.encoder(x)
        return self.chart(x, self._chart_theta(theta))[:, : self.latent_dim]

    def _decode(self, u: Tensor, theta: Tensor | None) -> Tensor:
        if self.decoder is not None:
            return self.decoder(u)
        return self.chart.inverse(pad(u, self.data_dim), self._chart_theta(theta))

    def _off_manifold(self, z: Tensor, ladj: Tensor) -> Tensor:
        """log N(v; 0, ε² I) + log|det J_f| + the standardization's log-Jacobian."""
        return log_normal(z[:, self.latent_dim :], self.epsilon) + ladj + self.standardization.log_abs_det_x()

    def _log_prob(self, x: Tensor, theta: Tensor, exact: bool) -> Tensor:
        """log p(x|θ) from standardized x and θ (see the class docstring)."""
        if self.density_kind == "ambient":
            z, ladj = self.chart.call_and_ladj(x, self._chart_theta(theta))
            log_p = self.density.log_prob(z[:, : self.latent_dim], theta)
            return log_p + self._off_manifold(z, ladj) if exact or self.manifold_depends_on_theta else log_p
        u = self._encode(x, theta)
        log_p = self.density.log_prob(u, theta)
        return log_p - 0.5 * self.log_det_metric(u) if exact else log_p

    def _standardized(self, x: Tensor, theta: Tensor | None) -> tuple[Tensor, Tensor | None]:
        return self.standardization.x(x), None if theta is None else self.standardization.theta(theta)

    def _manifold_theta(self, theta: Tensor | None, x: Tensor) -> Tensor | None:
        if not self.manifold_depends_on_theta:
            return None
        if theta is None:
            raise ValueError(f"the manifold of this {self.name} depends on θ: pass theta")
        return self.check_theta(theta, x)

    # ---- raw units: the public methods ---------------------------------------------------------
    def encode(self, x: Tensor, theta: Tensor | None = None) -> Tensor:
        """Manifold coordinates u of x -> (batch, latent_dim); θ only where the manifold needs it."""
        x = self.check_x(x)
        theta = self._manifold_theta(theta, x)
        if not len(x):
            return x.new_zeros(0, self.latent_dim)
        return self._encode(*self._standardized(x, theta))

    def decode(self, u: Tensor, theta: Tensor | None = None) -> Tensor:
        """The point g(u) on the model manifold, in raw units -> (batch, *event_shape)."""
        u = check_matrix("u", u, self.latent_dim).to(device=self.device, dtype=self.dtype)
        theta = self._manifold_theta(theta, u)
        if not len(u):
            return u.new_zeros(0, *self.event_shape)
        return self.standardization.x_inverse(self._decode(u, None if theta is None else self.standardization.theta(theta)))

    def project(self, x: Tensor, theta: Tensor | None = None) -> Tensor:
        """x projected onto the model manifold, g(encode(x)), in raw units."""
        x = self.check_x(x)
        x_s, theta_s = self._standardized(x, self._manifold_theta(theta, x))
        if not len(x):
            return x
        return self.standardization.x_inverse(self._decode(self._encode(x_s, theta_s), theta_s))

    def squared_reconstruction_error(self, x: Tensor, theta: Tensor | None = None) -> Tensor:
        """‖x - g(g⁻¹(x))‖², the squared distance to the projection in raw units, summed over
        every entry of the event -> (batch,)."""
        x = self.check_x(x)
        return ((x - self.project(x, theta)) ** 2).flatten(1).sum(-1)

    def log_det_metric(self, u: Tensor) -> Tensor:
        """log det(J_gᵀ J_g)(u) of the chart into raw units, forward mode, float64 determinant
        -> (batch,)."""
        chart = lambda v: self.standardization.x_inverse(self._decode(v, None)).flatten(1)  # noqa: E731
        return log_det_metric(chart, u, self.jacobian_chunk_size)

    def log_prob(self, x: Tensor, theta: Tensor, *, exact: bool = True) -> Tensor:
        """log p(x|θ) in raw units, rows paired -> (batch,); `exact=False`: the fast part."""
        x = self.check_x(x)
        theta = self.check_theta(theta, x)
        if exact and self.density_kind == "latent":
            raise ValueError(f"{self.name} has no tractable density; use exact=False for its latent density")
        if not len(x):
            return x.new_zeros(0)
        return self._log_prob(*self._standardized(x, theta), exact)

    def sample(self, theta: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """ũ ~ base, u = h(ũ|θ), x = g(u) (v = 0 for PIE) in raw units -> (batch, *event_shape)."""
        theta_s = self.standardization.theta(self.check_theta(theta))
        if not len(theta_s):
            return theta_s.new_zeros(0, *self.event_shape)
        return self.standardization.x_inverse(self._decode(self.density.sample(theta_s, generator), theta_s))

    # ---- training: per-sample losses on raw data, computed in standardized units ----------------
    def manifold_loss(self, x: Tensor, theta: Tensor, delta: float | None = None) -> Tensor:
        """‖x' - g(g⁻¹(x'))‖² in standardized units: the manifold phase (θ only where f needs it).
        With `delta` = δ, Σ_i 2 H_δ(e_i) (paper 003's per-dimension Huber, `huber`): the squared
        error of entries with |e_i| < δ, 2δ|e_i| - δ² (linear) beyond."""
        x_s, theta_s = self._standardized(x, theta)
        error = (x_s - self._decode(self._encode(x_s, theta_s), theta_s)).flatten(1)
        return (error**2 if delta is None else 2 * huber(error, delta)).sum(-1)

    def manifold_coordinates(self, x: Tensor) -> Tensor:
        """u = g⁻¹(x') without gradient, the input of the density phase (θ-independent manifolds)."""
        with torch.no_grad():
            return self._encode(self.standardization.x(x), None)

    def density_loss(self, x: Tensor, theta: Tensor, coordinates: Tensor | None = None) -> Tensor:
        """-log p_h(u|θ) with u = g⁻¹(x) held fixed: the density phase (Eq. 3 without the
        -½ log det(J_gᵀ J_g) term, which does not depend on h). `coordinates`: u precomputed by
        `manifold_coordinates` (the trainer's cache while the manifold is frozen)."""
        x_s, theta_s = self._standardized(x, theta)
        if coordinates is None:
            with torch.no_grad():
                coordinates = self._encode(x_s, theta_s)
        return -self.density.log_prob(coordinates, theta_s)

    def likelihood_loss(self, x: Tensor, theta: Tensor) -> Tensor:
        """-log p(x|θ) with the exact density in raw units (AF, PIE)."""
        return -self._log_prob(*self._standardized(x, theta), exact=True)

    def density_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the inner flow h and its base: the only ones the density phase updates."""
        return self.density.parameters()

    def manifold_parameters(self) -> Iterator[nn.Parameter]:
        """Every parameter outside the density: the ones the manifold phase updates."""
        return (p for name, p in self.named_parameters() if not name.startswith("density."))

    # ---- the per-event cache of `likelihood` ----------------------------------------------------
    def observed_features(self, x: Tensor, exact: bool) -> tuple[Tensor, Tensor]:
        """u = g⁻¹(x') and c(x) (the Jacobian or off-manifold terms) per event; x' itself when
        the manifold depends on θ."""
        x_s = self.standardization.x(x)
        offset = x.new_zeros(len(x))
        if self.manifold_depends_on_theta:
            return x_s, offset
        if self.density_kind == "ambient":
            z, ladj = self.chart.call_and_ladj(x_s)
            return z[:, : self.latent_dim], self._off_manifold(z, ladj) if exact else offset
        u = self._encode(x_s, None)
        return u, -0.5 * self.log_det_metric(u) if exact else offset

    def log_prob_features(self, features: Tensor, theta: Tensor, exact: bool) -> Tensor:
        """log p_h(u|θ), or the full density of x' when the manifold depends on θ."""
        theta_s = self.standardization.theta(theta)
        if self.manifold_depends_on_theta:
            return self._log_prob(features, theta_s, exact)
        return self.density.log_prob(features, theta_s)

