"""M-flow and Me-flow (Brehmer & Cranmer 2020, §2): a learned manifold that does not depend on
θ and a θ-conditional density on it."""

from __future__ import annotations

from dataclasses import asdict

from torch import Tensor

from mflow_sbi.models.base import ConditionalModel, as_flow_config
from mflow_sbi.nn import ResidualMLP
from mflow_sbi.transforms import FlowConfig, build_flow, log_det_metric, pad, project


class MFlow(ConditionalModel):
    """Manifold {g(u)} with g(u) = f⁻¹(u, 0) and u = g⁻¹(x) = first n components of f(x);

        log p(x|θ) = log N(h⁻¹(u|θ)) + log|det J_h⁻¹(u|θ)| - ½ log det(J_gᵀ J_g)(u)

    (Eq. 2 of the paper; the density of the projection of x onto the manifold). Only the last
    term is expensive and it does not depend on θ: `exact=False` drops it.
    """

    name = "mflow"

    def __init__(
        self,
        data_dim: int,
        theta_dim: int,
        latent_dim: int,
        outer: FlowConfig | dict | None = None,
        inner: FlowConfig | dict | None = None,
        jacobian_chunk_size: int | None = None,
    ) -> None:
        super().__init__(data_dim, theta_dim, latent_dim, inner)
        outer = as_flow_config(outer)
        if latent_dim >= data_dim:
            raise ValueError(f"an M-flow needs latent_dim < data_dim, got {latent_dim} ≥ {data_dim}")
        self.outer = build_flow(data_dim, 0, outer)
        self.jacobian_chunk_size = jacobian_chunk_size
        self._config.update(outer=asdict(outer), jacobian_chunk_size=jacobian_chunk_size)

    def _encode(self, x: Tensor, theta: Tensor | None) -> Tensor:
        return project(self.outer()(x), self.latent_dim)

    def _decode(self, u: Tensor, theta: Tensor | None) -> Tensor:
        return self.outer().inv(pad(u, self.data_dim))

    def log_det_metric(self, u: Tensor) -> Tensor:
        """log det(J_gᵀ J_g)(u), forward mode, float64 determinant -> (batch,)."""
        return log_det_metric(lambda v: self._decode(v, None), u, self.jacobian_chunk_size)

    def _log_prob(self, x: Tensor, theta: Tensor, exact: bool) -> Tensor:
        u = self._encode(x, None)
        log_p = self.log_prob_latent(u, theta)
        return log_p - 0.5 * self.log_det_metric(u) if exact else log_p


class MeFlow(MFlow):
    """M-flow with a separate learned encoder e(x) in place of g⁻¹ (paper §2, "Me-flow"); the
    density is that of u = e(x) on the manifold, log p_h(u|θ) - ½ log det(J_gᵀ J_g)(u)."""

    name = "meflow"

    def __init__(
        self,
        data_dim: int,
        theta_dim: int,
        latent_dim: int,
        outer: FlowConfig | dict | None = None,
        inner: FlowConfig | dict | None = None,
        jacobian_chunk_size: int | None = None,
        encoder_hidden: int = 100,
        encoder_blocks: int = 2,
    ) -> None:
        super().__init__(data_dim, theta_dim, latent_dim, outer, inner, jacobian_chunk_size)
        self.encoder = ResidualMLP(data_dim, latent_dim, encoder_hidden, encoder_blocks, zero_output=False)
        self._config.update(encoder_hidden=encoder_hidden, encoder_blocks=encoder_blocks)

    def _encode(self, x: Tensor, theta: Tensor | None) -> Tensor:
        return self.encoder(x)
