"""M-flow and Me-flow (Brehmer & Cranmer 2020, §2): a learned manifold that does not depend on
θ and a θ-conditional density on it, for vectors (`data_dim`) and images (`image_shape`)."""

from __future__ import annotations

from typing import Any

from mflow_sbi.models.flow import ManifoldFlow
from mflow_sbi.models.parts import Density, as_dict, build_chart, build_encoder, chart_config, event_shape_of, flow_config
from mflow_sbi.random import seeded
from mflow_sbi.registry import register
from mflow_sbi.transforms import FlowConfig, ImageFlowConfig


def check_latent_dim(latent_dim: Any, event_shape: tuple[int, ...], outer: FlowConfig | ImageFlowConfig, strict: bool) -> int:
    """n as an int with 0 < n (< or ≤) D, and n ≤ head_features for an image chart."""
    data_dim = 1
    for size in event_shape:
        data_dim *= size
    if isinstance(latent_dim, bool) or not isinstance(latent_dim, int) or latent_dim < 1:
        raise ValueError(f"latent_dim must be a positive integer, got {latent_dim!r}")
    if latent_dim > data_dim or (strict and latent_dim == data_dim):
        raise ValueError(f"latent_dim must be {'<' if strict else '≤'} the data dimension {data_dim}, got {latent_dim}")
    if isinstance(outer, ImageFlowConfig) and latent_dim > outer.head_features:
        raise ValueError(f"latent_dim must be ≤ outer head_features ({outer.head_features}) for images, got {latent_dim}")
    return latent_dim


def check_positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer ≥ {minimum}, got {value!r}")
    return value


def compose_manifold(
    event_shape: tuple[int, ...], theta_dim: int, latent_dim: int, outer: Any, inner: Any, seed: int,
    encoder: dict[str, Any] | None, strict: bool = True, conditional_chart: bool = False,
) -> dict[str, Any]:
    """The parts of a chart-based flow (the chart conditioned on θ if `conditional_chart`),
    initialized from `seed`, and their configs; `strict`: n < D."""
    outer_config, inner_config = chart_config(event_shape, outer), flow_config(inner)
    latent_dim = check_latent_dim(latent_dim, event_shape, outer_config, strict)
    theta_dim = check_positive_int("theta_dim", theta_dim)
    with seeded(seed):
        chart = build_chart(event_shape, outer_config, theta_dim if conditional_chart else 0)
        density = Density(latent_dim, theta_dim, inner_config)
        encoder_net = None if encoder is None else build_encoder(event_shape, latent_dim, **encoder)
    parts = {"event_shape": event_shape, "theta_dim": theta_dim, "latent_dim": latent_dim, "density": density, "chart": chart, "encoder": encoder_net}
    return parts | {"config": {"outer": as_dict(outer_config), "inner": as_dict(inner_config)}}


@register
class MFlow(ManifoldFlow):
    """Manifold {g(u)} with g(u) = f⁻¹(u, 0) and u = g⁻¹(x) = first n components of f(x);

        log p(x|θ) = log N(h⁻¹(u|θ)) + log|det J_h⁻¹(u|θ)| - ½ log det(J_gᵀ J_g)(u)

    (Eq. 2 of the paper; the density of the projection of x onto the manifold). Only the last
    term is expensive and it does not depend on θ: `exact=False` drops it. f is a vector flow
    (`outer`: `FlowConfig`) for `data_dim`, a multi-scale image flow (`ImageFlowConfig`) for
    `image_shape`; h is a vector flow (`inner`). Weights are initialized from `seed`.
    """

    name = "mflow"
    schedules = ("sequential", "alternating")
    loss_schedule = "alternating"
    density_kind = "manifold"

    def __init__(
        self,
        data_dim: int | None = None,
        theta_dim: int = 1,
        latent_dim: int = 1,
        outer: FlowConfig | ImageFlowConfig | dict | None = None,
        inner: FlowConfig | dict | None = None,
        jacobian_chunk_size: int | None = None,
        *,
        image_shape: tuple[int, int, int] | list[int] | None = None,
        standardize: bool = True,
        seed: int = 0,
    ) -> None:
        event_shape = event_shape_of(data_dim, image_shape)
        parts = compose_manifold(event_shape, theta_dim, latent_dim, outer, inner, seed, encoder=None)
        config = parts.pop("config")
        super().__init__(**parts, jacobian_chunk_size=jacobian_chunk_size, standardize=standardize)
        self._config = {
            "data_dim": data_dim, "image_shape": None if image_shape is None else list(event_shape),
            "theta_dim": self.theta_dim, "latent_dim": self.latent_dim, **config,
            "jacobian_chunk_size": jacobian_chunk_size, "standardize": standardize, "seed": seed,
        }  # fmt: skip


@register
class MeFlow(ManifoldFlow):
    """M-flow with a separate learned encoder e(x) in place of g⁻¹ (paper §2, "Me-flow"): a
    residual MLP for vectors (`encoder_hidden` units, default 100, `encoder_blocks` blocks), a
    convolutional network for images (`encoder_channels`, `encoder_hidden` default 256); the
    density is that of u = e(x) on the manifold, log p_h(u|θ) - ½ log det(J_gᵀ J_g)(u)."""

    name = "meflow"
    schedules = MFlow.schedules
    loss_schedule = MFlow.loss_schedule
    density_kind = "manifold"

    def __init__(
        self,
        data_dim: int | None = None,
        theta_dim: int = 1,
        latent_dim: int = 1,
        outer: FlowConfig | ImageFlowConfig | dict | None = None,
        inner: FlowConfig | dict | None = None,
        jacobian_chunk_size: int | None = None,
        *,
        image_shape: tuple[int, int, int] | list[int] | None = None,
        standardize: bool = True,
        seed: int = 0,
        encoder_hidden: int | None = None,
        encoder_blocks: int = 2,
        encoder_channels: int = 32,
    ) -> None:
        if encoder_hidden is not None:
            check_positive_int("encoder_hidden", encoder_hidden)
        check_positive_int("encoder_blocks", encoder_blocks, minimum=0)
        check_positive_int("encoder_channels", encoder_channels)
        event_shape = event_shape_of(data_dim, image_shape)
        encoder = {"hidden": encoder_hidden, "blocks": encoder_blocks, "channels": encoder_channels}
        parts = compose_manifold(event_shape, theta_dim, latent_dim, outer, inner, seed, encoder)
        config = parts.pop("config")
        super().__init__(**parts, jacobian_chunk_size=jacobian_chunk_size, standardize=standardize)
        self._config = {
            "data_dim": data_dim, "image_shape": None if image_shape is None else list(event_shape),
            "theta_dim": self.theta_dim, "latent_dim": self.latent_dim, **config,
            "jacobian_chunk_size": jacobian_chunk_size, "standardize": standardize, "seed": seed,
            "encoder_hidden": encoder_hidden, "encoder_blocks": encoder_blocks, "encoder_channels": encoder_channels,
        }  # fmt: skip
