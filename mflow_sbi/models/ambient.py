"""AF: an ambient conditional flow on R^D (Brehmer & Cranmer 2020, Table 1, "AF")."""

from __future__ import annotations

import math

from torch import Tensor

from mflow_sbi.models.flow import ManifoldFlow
from mflow_sbi.models.parts import (
    Chart,
    Density,
    as_dict,
    build_chart,
    chart_config,
    check_positive_int,
    event_shape_of,
    flow_config,
    shape_config,
)
from mflow_sbi.random import seeded
from mflow_sbi.registry import register
from mflow_sbi.transforms import FlowConfig, ImageFlowConfig


@register
class AmbientFlow(ManifoldFlow):
    """log p(x|θ) = log N(h⁻¹(z|θ)) + log|det J_h⁻¹(z|θ)| + log|det J_f(x|θ)| on all of R^D.

    Vectors: f is the identity and h the conditional flow (`inner`) on R^D. Images: f is a
    multi-scale image flow whose couplings see θ (`outer`), h by default the identity. Its
    "manifold" is R^D itself: every x projects onto itself (for any θ), at distance 0.
    """

    name = "af"
    schedules = ("likelihood",)
    loss_schedule = "likelihood"
    density_kind = "ambient"

    def __init__(
        self,
        data_dim: int | None = None,
        theta_dim: int = 1,
        inner: FlowConfig | dict | None = None,
        outer: ImageFlowConfig | dict | None = None,
        *,
        image_shape: tuple[int, int, int] | list[int] | None = None,
        standardize: bool = True,
        seed: int = 0,
    ) -> None:
        event_shape = event_shape_of(data_dim, image_shape)
        theta_dim = check_positive_int("theta_dim", theta_dim)
        features = math.prod(event_shape)
        images = len(event_shape) == 3
        if not images and outer is not None:
            raise ValueError("a vector AF has no outer flow: its flow is `inner`")
        inner_config = flow_config(inner if inner is not None or not images else {"layers": 0})
        outer_config = chart_config(event_shape, outer) if images else None
        with seeded(seed):
            chart = build_chart(event_shape, outer_config, theta_dim) if images else Chart(event_shape)
            density = Density(features, theta_dim, inner_config)
        super().__init__(event_shape, theta_dim, features, density, chart, standardize=standardize)
        self._config = {
            **shape_config(data_dim, image_shape, event_shape), "theta_dim": theta_dim,
            "inner": as_dict(inner_config), "outer": None if outer_config is None else as_dict(outer_config),
            "standardize": standardize, "seed": seed,
        }  # fmt: skip

    def project(self, x: Tensor, theta: Tensor | None = None) -> Tensor:
        """x itself: the manifold of an ambient flow is all of R^D (no θ needed)."""
        return self.check_x(x)
