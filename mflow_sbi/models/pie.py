"""PIE: an ambient flow whose latents split into manifold coordinates u and off-manifold v
(Beitler et al. 2019; conditional variants from Brehmer & Cranmer 2020, §2)."""

from __future__ import annotations

from mflow_sbi.models.flow import ManifoldFlow
from mflow_sbi.models.parts import compose_manifold, event_shape_of, shape_config
from mflow_sbi.registry import register
from mflow_sbi.transforms import FlowConfig, ImageFlowConfig
from mflow_sbi.validation import check_positive_number


@register
class PIE(ManifoldFlow):
    """(u, v) = f(x), log p(x|θ) = log p_h(u|θ) + log N(v; 0, ε² I) + log|det J_f(x)|.

    `conditional_manifold=True` is the original PIE: f depends on θ, so the manifold does too.
    `False` conditions only h on θ ("PIE, unconditional manifold"), and its fast part is
    log p_h(u|θ). The density has support on all of R^D, while the generative mode samples
    v = 0, i.e. x = f⁻¹(h(ũ|θ), 0): that sampler does not follow the tractable density (paper
    §2.C of the supplement) — use the density for inference and the sampler for generation.
    """

    name = "pie"
    schedules = ("likelihood",)
    loss_schedule = "likelihood"
    density_kind = "ambient"

    def __init__(
        self,
        data_dim: int | None = None,
        theta_dim: int = 1,
        latent_dim: int = 1,
        conditional_manifold: bool = False,
        epsilon: float = 0.01,
        outer: FlowConfig | ImageFlowConfig | dict | None = None,
        inner: FlowConfig | dict | None = None,
        *,
        image_shape: tuple[int, int, int] | list[int] | None = None,
        standardize: bool = True,
        seed: int = 0,
    ) -> None:
        event_shape = event_shape_of(data_dim, image_shape)
        check_positive_number("epsilon", epsilon)
        parts = compose_manifold(event_shape, theta_dim, latent_dim, outer, inner, seed, None, strict=False, conditional_chart=conditional_manifold)
        config = parts.pop("config")
        super().__init__(**parts, epsilon=epsilon, standardize=standardize)
        self.conditional_manifold = conditional_manifold
        self._config = {
            **shape_config(data_dim, image_shape, event_shape),
            "theta_dim": self.theta_dim, "latent_dim": self.latent_dim, "conditional_manifold": conditional_manifold,
            "epsilon": epsilon, **config, "standardize": standardize, "seed": seed,
        }  # fmt: skip
