"""The parts estimators are composed of (Brehmer & Cranmer 2020, §2): a chart (the outer
bijection f of vectors or images, or the identity), a density (the inner flow h(·|θ) on the
manifold coordinates with a pluggable base distribution), and optional encoder and decoder
networks. Which data shape a part handles is chosen from the event shape, in one place."""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

import torch
from torch import Tensor, nn
from zuko.lazy import LazyTransform

from mflow_sbi.nn import ResidualMLP
from mflow_sbi.random import seeded
from mflow_sbi.validation import check_positive_number, is_integer
from mflow_sbi.transforms import FlowConfig, ImageFlow, ImageFlowConfig, build_flow


def event_shape_of(data_dim: int | None, image_shape: Any) -> tuple[int, ...]:
    """(D,) for vectors or (C, H, W) for images: exactly one of the two must be given."""
    if (data_dim is None) == (image_shape is None):
        raise ValueError("give exactly one of data_dim (vectors) or image_shape (images, (C, H, W))")
    if data_dim is not None:
        if isinstance(data_dim, bool) or not isinstance(data_dim, int) or data_dim < 1:
            raise ValueError(f"data_dim must be a positive integer, got {data_dim!r}")
        return (data_dim,)
    shape = tuple(int(s) for s in image_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"image_shape must be (C, H, W) with positive entries, got {image_shape}")
    return shape


def shape_config(data_dim: int | None, image_shape: Any, event_shape: tuple[int, ...]) -> dict[str, Any]:
    """The data-shape entries of a saved estimator config."""
    return {"data_dim": data_dim, "image_shape": None if image_shape is None else list(event_shape)}


def flow_config(value: FlowConfig | dict[str, Any] | None) -> FlowConfig:
    """A vector flow's `FlowConfig` from a config, a dict of its fields, or None (defaults)."""
    config = value if isinstance(value, FlowConfig) else FlowConfig(**(value or {}))
    config.validate()
    return config


def chart_config(event_shape: tuple[int, ...], value: Any) -> FlowConfig | ImageFlowConfig:
    """The outer flow's config: a `FlowConfig` for vectors, an `ImageFlowConfig` for images."""
    if len(event_shape) == 1:
        return flow_config(value)
    return value if isinstance(value, ImageFlowConfig) else ImageFlowConfig(**(value or {}))


def as_dict(config: FlowConfig | ImageFlowConfig) -> dict[str, Any]:
    """A flow config as the JSON-serializable dict a saved estimator config holds."""
    return asdict(config)


def check_latent_dim(latent_dim: Any, event_shape: tuple[int, ...], outer: FlowConfig | ImageFlowConfig, strict: bool) -> int:
    """n as an int with 0 < n (< or ≤) D, and n ≤ head_features for an image chart."""
    data_dim = 1
    for size in event_shape:
        data_dim *= size
    if not is_integer(latent_dim) or latent_dim < 1:
        raise ValueError(f"latent_dim must be a positive integer, got {latent_dim!r}")
    if latent_dim > data_dim or (strict and latent_dim == data_dim):
        raise ValueError(f"latent_dim must be {'<' if strict else '≤'} the data dimension {data_dim}, got {latent_dim}")
    if isinstance(outer, ImageFlowConfig) and latent_dim > outer.head_features:
        raise ValueError(f"latent_dim must be ≤ outer head_features ({outer.head_features}) for images, got {latent_dim}")
    return latent_dim


def check_positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if not is_integer(value) or value < minimum:
        raise ValueError(f"{name} must be an integer ≥ {minimum}, got {value!r}")
    return value


def compose_manifold(
    event_shape: tuple[int, ...], theta_dim: int, latent_dim: int, outer: Any, inner: Any, seed: int,
    encoder: dict[str, Any] | None, strict: bool = True, conditional_chart: bool = False, density_dim: int | None = None,
) -> dict[str, Any]:
    """The parts of a chart-based flow (the chart conditioned on θ if `conditional_chart`),
    initialized from `seed`, and their configs; `strict`: n < D. `density_dim`: the dimension
    the density models when the chart's n coordinates are reduced further (a stacked chart's
    innermost level); default n."""
    outer_config, inner_config = chart_config(event_shape, outer), flow_config(inner)
    if isinstance(outer_config, FlowConfig) and outer_config.layers < 1:
        raise ValueError("outer flow setting layers = 0 leaves the chart the identity, with nothing to learn: use layers ≥ 1")
    latent_dim = check_latent_dim(latent_dim, event_shape, outer_config, strict)
    theta_dim = check_positive_int("theta_dim", theta_dim)
    with seeded(seed):
        chart = build_chart(event_shape, outer_config, theta_dim if conditional_chart else 0)
        density = Density(density_dim or latent_dim, theta_dim, inner_config)
        encoder_net = None if encoder is None else build_encoder(event_shape, latent_dim, **encoder)
    parts = {"event_shape": event_shape, "theta_dim": theta_dim, "latent_dim": latent_dim, "density": density, "chart": chart, "encoder": encoder_net}
    return parts | {"config": {"outer": as_dict(outer_config), "inner": as_dict(inner_config)}}


def log_normal(z: Tensor, scale: float = 1.0) -> Tensor:
    """log N(z; 0, scale² I) per row -> (batch,) (0 for a row without entries)."""
    if not z.shape[1]:
        return z.new_zeros(len(z))
    return (-0.5 * (z / scale) ** 2).sum(-1) - z.shape[1] * (math.log(scale) + 0.5 * math.log(2 * math.pi))


class StandardNormal(nn.Module):
    """The base distribution N(0, I) on R^n: log N(z) = -½‖z‖² - (n/2) log 2π."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.features = features

    def log_prob(self, z: Tensor) -> Tensor:
        """log N(z; 0, I) per row -> (batch,)."""
        return log_normal(z)

    def sample(self, n: int, generator: torch.Generator | None, like: Tensor) -> Tensor:
        """n draws in the dtype and on the device of `like` -> (n, features)."""
        return torch.randn(n, self.features, generator=generator, dtype=like.dtype).to(like.device)


class DegenerateGaussian(nn.Module):
    """The learnable manifold prior of paper 002 (Eq. 5): N(0, AAᵀ) on R^D with A lower
    triangular, initialized to I; degenerate, on a rank(AAᵀ)-dimensional subspace, once
    eigenvalues of AAᵀ vanish. Its density is that of the spread prior N(0, AAᵀ + σ²I) (Eq. 14,
    σ² = `noise_variance`, 10⁻⁴ in the paper), computed through a float64 Cholesky factor;
    samples are A ε, ε ~ N(0, I): the prior itself, on its subspace."""

    def __init__(self, features: int, noise_variance: float = 1e-4) -> None:
        super().__init__()
        check_positive_number("noise_variance", noise_variance)
        self.features, self.noise_variance = features, noise_variance
        self.factor = nn.Parameter(torch.eye(features))

    @property
    def scale_tril(self) -> Tensor:
        """A = tril(factor) -> (D, D)."""
        return torch.tril(self.factor)

    def spectrum(self) -> Tensor:
        """The eigenvalues of AAᵀ, largest first, in float64 -> (D,)."""
        a = self.scale_tril.detach().double()
        return torch.linalg.eigvalsh(a @ a.mT).flip(0).clamp_min(0)

    def log_prob(self, z: Tensor) -> Tensor:
        """log N(z; 0, AAᵀ + σ²I) per row -> (batch,)."""
        a = self.scale_tril.double()
        covariance = a @ a.mT + self.noise_variance * torch.eye(self.features, dtype=a.dtype, device=a.device)
        cholesky = torch.linalg.cholesky(covariance)
        white = torch.linalg.solve_triangular(cholesky, z.double().mT, upper=False)  # (D, batch)
        log_p = -0.5 * (white**2).sum(0) - cholesky.diagonal().log().sum() - 0.5 * self.features * math.log(2 * math.pi)
        return log_p.to(z.dtype)

    def sample(self, n: int, generator: torch.Generator | None, like: Tensor) -> Tensor:
        """n draws A ε in the dtype and on the device of `like` -> (n, features)."""
        noise = torch.randn(n, self.features, generator=generator, dtype=like.dtype).to(like.device)
        return noise @ self.scale_tril.to(like.dtype).mT


class Density(nn.Module):
    """The θ-conditional density of manifold coordinates u ∈ R^n through the inner flow h:
    log p_h(u|θ) = log p_base(h⁻¹(u|θ)) + log|det J_h⁻¹(u|θ)|; sampling u = h(ũ|θ), ũ ~ base.
    With `config.layers = 0`, h is the identity (the image AF, whose chart sees θ)."""

    def __init__(self, features: int, theta_dim: int, config: FlowConfig, base: nn.Module | None = None) -> None:
        super().__init__()
        self.features = features
        self.flow = build_flow(features, theta_dim, config) if config.layers > 0 else None
        self.base = StandardNormal(features) if base is None else base

    def log_prob(self, u: Tensor, theta: Tensor) -> Tensor:
        """log p_h(u|θ), rows paired -> (batch,)."""
        if self.flow is None:
            return self.base.log_prob(u)
        z, ladj = self.flow(theta).call_and_ladj(u)
        return self.base.log_prob(z) + ladj

    def sample(self, theta: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """One u per row of θ -> (batch, features)."""
        noise = self.base.sample(len(theta), generator, theta)
        return noise if self.flow is None else self.flow(theta).inv(noise)


class Chart(nn.Module):
    """The outer bijection f: event -> z ∈ R^D (flattened), conditioned on θ when `context` > 0,
    or the identity (`transform=None`). u = the first n entries of z; g(u) = f⁻¹(u, 0)."""

    def __init__(self, event_shape: tuple[int, ...], transform: LazyTransform | None = None, context: int = 0) -> None:
        super().__init__()
        self.event_shape, self.transform, self.context = event_shape, transform, context

    def forward(self, x: Tensor, theta: Tensor | None = None) -> Tensor:
        """z = f(x|θ) flattened, (batch, D), without the log-Jacobian (what encoding needs)."""
        if self.transform is None:
            return x.flatten(1)
        return self.transform(theta)(x)

    def call_and_ladj(self, x: Tensor, theta: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """z = f(x|θ) flattened, (batch, D), and log|det J_f(x)|, (batch,)."""
        if self.transform is None:
            return x.flatten(1), x.new_zeros(len(x))
        return self.transform(theta).call_and_ladj(x)

    def inverse(self, z: Tensor, theta: Tensor | None = None) -> Tensor:
        """x = f⁻¹(z|θ) -> (batch, *event_shape)."""
        if self.transform is None:
            return z.unflatten(1, self.event_shape)
        return self.transform(theta).inv(z)

    def initialize(self, x: Tensor, theta: Tensor | None = None) -> None:
        """Data-dependent initialization (image actnorms) where f is only ever inverted in
        training (Me-flow, whose encoder replaces f): one forward pass the first time."""
        if isinstance(self.transform, ImageFlow) and self.training and not self.transform.initialized:
            self.transform.initialize(x, theta)


def build_chart(event_shape: tuple[int, ...], config: FlowConfig | ImageFlowConfig, context: int = 0) -> Chart:
    """A vector flow (`build_flow`) or a multi-scale image flow (`ImageFlow`) as the chart."""
    if len(event_shape) == 1:
        return Chart(event_shape, build_flow(event_shape[0], context, config), context)  # type: ignore[arg-type]
    return Chart(event_shape, ImageFlow(event_shape, config, context=context), context)  # type: ignore[arg-type]


class ConvEncoder(nn.Module):
    """x -> conv3×3/2 -> relu -> conv3×3/2 -> relu -> linear -> relu -> linear -> R^n."""

    def __init__(self, image_shape: tuple[int, ...], out_features: int, channels: int = 32, hidden: int = 256) -> None:
        super().__init__()
        c, h, w = image_shape
        size = 2 * channels * math.ceil(math.ceil(h / 2) / 2) * math.ceil(math.ceil(w / 2) / 2)
        self.net = nn.Sequential(
            nn.Conv2d(c, channels, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(channels, 2 * channels, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(size, hidden), nn.ReLU(), nn.Linear(hidden, out_features),
        )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class MLPEncoder(nn.Module):
    """e(x) = ResidualMLP(flatten(x)) ∈ R^n."""

    def __init__(self, event_shape: tuple[int, ...], out_features: int, hidden: int = 100, blocks: int = 2) -> None:
        super().__init__()
        self.net = ResidualMLP(math.prod(event_shape), out_features, hidden, blocks, zero_output=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.flatten(1))


class MLPDecoder(nn.Module):
    """d(u) = ResidualMLP(u) reshaped to the event shape (PAE's unrestricted decoder)."""

    def __init__(self, in_features: int, event_shape: tuple[int, ...], hidden: int = 100, blocks: int = 2) -> None:
        super().__init__()
        self.event_shape = event_shape
        self.net = ResidualMLP(in_features, math.prod(event_shape), hidden, blocks, zero_output=False)

    def forward(self, u: Tensor) -> Tensor:
        return self.net(u).unflatten(1, self.event_shape)


def build_encoder(event_shape: tuple[int, ...], out_features: int, hidden: int | None, blocks: int, channels: int) -> nn.Module:
    """A residual MLP with `blocks` blocks (vectors; `hidden` default 100) or a convolutional
    encoder with `channels` in its first convolution (images; `hidden` default 256) onto R^n."""
    if len(event_shape) == 1:
        return MLPEncoder(event_shape, out_features, hidden or 100, blocks)
    return ConvEncoder(event_shape, out_features, channels, hidden or 256)
