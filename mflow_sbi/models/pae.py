"""PAE: probabilistic autoencoder — unrestricted encoder and decoder plus a latent flow
(Böhm & Seljak 2020; baseline in Brehmer & Cranmer 2020)."""

from __future__ import annotations

from mflow_sbi.models.flow import ManifoldFlow
from mflow_sbi.models.parts import (
    Density,
    MLPDecoder,
    as_dict,
    build_encoder,
    check_latent_dim,
    check_positive_int,
    event_shape_of,
    flow_config,
    shape_config,
)
from mflow_sbi.random import seeded
from mflow_sbi.registry import register
from mflow_sbi.transforms import FlowConfig


@register
class PAE(ManifoldFlow):
    """x -> u = e(x) -> x̂ = d(u) with networks e (residual MLP for vectors, convolutional for
    images) and d (residual MLP), and a density log p_h(u|θ) of the latent only.

    The decoder is not invertible, so there is no tractable density on the manifold:
    `log_prob(exact=True)` raises, and `exact=False` gives log p_h(e(x)|θ) (no Jacobian term),
    which is how the paper uses PAE for inference.
    """

    name = "pae"
    schedules = ("sequential", "alternating")
    loss_schedule = "alternating"
    density_kind = "latent"
    has_exact_density = False

    def __init__(
        self,
        data_dim: int | None = None,
        theta_dim: int = 1,
        latent_dim: int = 1,
        inner: FlowConfig | dict | None = None,
        hidden: int = 100,
        blocks: int = 2,
        *,
        image_shape: tuple[int, int, int] | list[int] | None = None,
        standardize: bool = True,
        seed: int = 0,
    ) -> None:
        event_shape = event_shape_of(data_dim, image_shape)
        theta_dim = check_positive_int("theta_dim", theta_dim)
        latent_dim = check_latent_dim(latent_dim, event_shape, None, strict=False)
        check_positive_int("hidden", hidden)
        check_positive_int("blocks", blocks, minimum=0)
        inner_config = flow_config(inner)
        with seeded(seed):
            encoder = build_encoder(event_shape, latent_dim, hidden, blocks, channels=32)
            decoder = MLPDecoder(latent_dim, event_shape, hidden, blocks)
            density = Density(latent_dim, theta_dim, inner_config)
        super().__init__(event_shape, theta_dim, latent_dim, density, encoder=encoder, decoder=decoder, standardize=standardize)
        self._config = {
            **shape_config(data_dim, image_shape, event_shape), "theta_dim": theta_dim,
            "latent_dim": latent_dim, "inner": as_dict(inner_config), "hidden": hidden, "blocks": blocks,
            "standardize": standardize, "seed": seed,
        }  # fmt: skip
