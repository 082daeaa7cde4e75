"""PAE: probabilistic autoencoder — unrestricted encoder and decoder plus a latent flow
(Böhm & Seljak 2020; baseline in Brehmer & Cranmer 2020)."""

from __future__ import annotations

from torch import Tensor

from mflow_sbi.models.base import ConditionalModel
from mflow_sbi.nn import ResidualMLP
from mflow_sbi.transforms import FlowConfig


class PAE(ConditionalModel):
    """x -> u = e(x) -> x̂ = d(u) with MLPs e, d, and a density log p_h(u|θ) of the latent only.

    The decoder is not invertible, so there is no tractable density on the manifold:
    `log_prob(exact=True)` raises, and `exact=False` gives log p_h(e(x)|θ) (no Jacobian term),
    which is how the paper uses PAE for inference.
    """

    name = "pae"
    has_exact_density = False

    def __init__(
        self,
        data_dim: int,
        theta_dim: int,
        latent_dim: int,
        inner: FlowConfig | dict | None = None,
        hidden: int = 100,
        blocks: int = 2,
    ) -> None:
        super().__init__(data_dim, theta_dim, latent_dim, inner)
        self.encoder = ResidualMLP(data_dim, latent_dim, hidden, blocks, zero_output=False)
        self.decoder = ResidualMLP(latent_dim, data_dim, hidden, blocks, zero_output=False)
        self._config.update(hidden=hidden, blocks=blocks)

    def _encode(self, x: Tensor, theta: Tensor | None) -> Tensor:
        return self.encoder(x)

    def _decode(self, u: Tensor, theta: Tensor | None) -> Tensor:
        return self.decoder(u)

    def _log_prob(self, x: Tensor, theta: Tensor, exact: bool) -> Tensor:
        if exact:
            raise ValueError("PAE has no tractable density; use log_prob(..., exact=False) for its latent density")
        return self.log_prob_latent(self._encode(x, None), theta)
