"""AF: an ambient conditional flow on R^D (Brehmer & Cranmer 2020, Table 1, "AF")."""

from __future__ import annotations

from torch import Tensor

from mflow_sbi.models.base import ConditionalModel
from mflow_sbi.transforms import FlowConfig


class AmbientFlow(ConditionalModel):
    """log p(x|θ) = log N(h⁻¹(x|θ)) + log|det J_h⁻¹(x|θ)| with h a flow on all of R^D.

    Its "manifold" is R^D itself: encode and decode are the identity, reconstruction error 0.
    """

    name = "af"
    schedules = ("likelihood",)

    def __init__(self, data_dim: int, theta_dim: int, inner: FlowConfig | dict | None = None) -> None:
        super().__init__(data_dim, theta_dim, data_dim, inner)
        del self._config["latent_dim"]

    def _encode(self, x: Tensor, theta: Tensor | None) -> Tensor:
        return x

    def _decode(self, u: Tensor, theta: Tensor | None) -> Tensor:
        return u

    def _log_prob(self, x: Tensor, theta: Tensor, exact: bool) -> Tensor:
        return self.log_prob_latent(x, theta)
