"""Image models (Brehmer & Cranmer 2020, §4 "Images"): AF, PIE, M-flow and Me-flow whose outer
transform is a multi-scale image flow (`ImageFlow`: squeeze, actnorm, 1×1 convolution,
coupling with a convolutional conditioner, channel factoring, then a learned LU-linear layer
on the first entries of z), and whose inner flow h(·|θ) is the repo's vector flow on the n
manifold coordinates. Inputs x have shape (batch, C, H, W), scaled to [-0.5, 0.5]
(`mflow_sbi.transforms.dequantize` for 8-bit data); everything else is the
`ConditionalModel` interface, so training, likelihoods and posteriors work unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import torch
from torch import Tensor, nn

from mflow_sbi.models.base import ConditionalModel, standard_normal_log_prob
from mflow_sbi.transforms import FlowConfig, log_det_metric, pad
from mflow_sbi.transforms.image import ImageFlow, ImageFlowConfig, check_images


def as_image_flow_config(value: ImageFlowConfig | dict[str, Any] | None) -> ImageFlowConfig:
    if value is None:
        return ImageFlowConfig()
    return value if isinstance(value, ImageFlowConfig) else ImageFlowConfig(**value)


def as_image_shape(image_shape: Any) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in image_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"image_shape must be (C, H, W) with positive entries, got {image_shape}")
    return shape  # type: ignore[return-value]


class ImageModel(ConditionalModel):
    """A `ConditionalModel` on images (batch, C, H, W): data_dim = C H W; reconstruction error
    ‖x - g(encode(x))‖² summed over all pixels."""

    def __init__(self, image_shape: Any, theta_dim: int, latent_dim: int, inner: FlowConfig | dict | None = None) -> None:
        shape = as_image_shape(image_shape)
        super().__init__(math.prod(shape), theta_dim, latent_dim, inner)
        self.image_shape = shape
        del self._config["data_dim"]
        self._config["image_shape"] = list(shape)

    def check_x(self, x: Tensor, name: str = "x") -> Tensor:
        return check_images(name, x, self.image_shape)


class ImageMFlow(ImageModel):
    """M-flow on images: u = g⁻¹(x) = first n entries of f(x), g(u) = f⁻¹(u, 0) with f an
    `ImageFlow`, and

        log p(x|θ) = log N(h⁻¹(u|θ)) + log|det J_h⁻¹(u|θ)| - ½ log det(J_gᵀ J_g)(u)

    (paper Eq. 2). The last term (θ-independent, `exact=False` drops it) costs n forward-mode
    passes of f⁻¹ per image (`log_det_metric`)."""

    name = "image_mflow"

    def __init__(
        self,
        image_shape: Any,
        theta_dim: int,
        latent_dim: int,
        outer: ImageFlowConfig | dict | None = None,
        inner: FlowConfig | dict | None = None,
        jacobian_chunk_size: int | None = None,
    ) -> None:
        super().__init__(image_shape, theta_dim, latent_dim, inner)
        outer = as_image_flow_config(outer)
        if latent_dim >= self.data_dim or latent_dim > min(outer.head_features, self.data_dim):
            raise ValueError(f"latent_dim must be < C H W and ≤ outer head_features, got {latent_dim}")
        self.outer = ImageFlow(self.image_shape, outer)
        self.jacobian_chunk_size = jacobian_chunk_size
        self._config.update(outer=asdict(outer), jacobian_chunk_size=jacobian_chunk_size)

    def _encode(self, x: Tensor, theta: Tensor | None) -> Tensor:
        return self.outer()(x)[:, : self.latent_dim]

    def _decode(self, u: Tensor, theta: Tensor | None) -> Tensor:
        return self.outer().inv(pad(u, self.data_dim))

    def log_det_metric(self, u: Tensor) -> Tensor:
        """log det(J_gᵀ J_g)(u), forward mode, float64 determinant -> (batch,)."""
        return log_det_metric(lambda v: self._decode(v, None).flatten(1), u, self.jacobian_chunk_size)

    def _log_prob(self, x: Tensor, theta: Tensor, exact: bool) -> Tensor:
        u = self._encode(x, None)
        log_p = self.log_prob_latent(u, theta)
        return log_p - 0.5 * self.log_det_metric(u) if exact else log_p


class ConvEncoder(nn.Module):
    """x -> conv3×3/2 -> relu -> conv3×3/2 -> relu -> linear -> relu -> linear -> R^n."""

    def __init__(self, image_shape: tuple[int, int, int], out_features: int, channels: int = 32, hidden: int = 256) -> None:
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


class ImageMeFlow(ImageMFlow):
    """Image M-flow with a separate convolutional encoder e(x) in place of g⁻¹ (paper §2,
    "Me-flow"); density log p_h(u|θ) - ½ log det(J_gᵀ J_g)(u) at u = e(x)."""

    name = "image_meflow"

    def __init__(
        self,
        image_shape: Any,
        theta_dim: int,
        latent_dim: int,
        outer: ImageFlowConfig | dict | None = None,
        inner: FlowConfig | dict | None = None,
        jacobian_chunk_size: int | None = None,
        encoder_channels: int = 32,
        encoder_hidden: int = 256,
    ) -> None:
        super().__init__(image_shape, theta_dim, latent_dim, outer, inner, jacobian_chunk_size)
        self.encoder = ConvEncoder(self.image_shape, latent_dim, encoder_channels, encoder_hidden)
        self._config.update(encoder_channels=encoder_channels, encoder_hidden=encoder_hidden)

    def _encode(self, x: Tensor, theta: Tensor | None) -> Tensor:
        if self.training and not self.outer.initialized:  # f runs only inverted here: init its actnorms
            self.outer.initialize(x)
        return self.encoder(x)


class ImagePIE(ImageModel):
    """PIE on images with an unconditional manifold: (u, v) = f(x) with f an `ImageFlow`,

        log p(x|θ) = log p_h(u|θ) + log N(v; 0, ε² I) + log|det J_f(x)|;

    `exact=False` is log p_h(u|θ). Its density lives on all of R^D while sampling sets v = 0
    (paper, supplement §2.C). The original PIE (f conditional on θ) is not offered for images."""

    name = "image_pie"
    schedules = ("likelihood",)

    def __init__(
        self,
        image_shape: Any,
        theta_dim: int,
        latent_dim: int,
        epsilon: float = 0.01,
        outer: ImageFlowConfig | dict | None = None,
        inner: FlowConfig | dict | None = None,
    ) -> None:
        super().__init__(image_shape, theta_dim, latent_dim, inner)
        if not epsilon > 0:
            raise ValueError(f"epsilon must be positive, got {epsilon}")
        outer = as_image_flow_config(outer)
        if latent_dim > min(outer.head_features, self.data_dim):
            raise ValueError(f"latent_dim must be ≤ outer head_features, got {latent_dim}")
        self.epsilon = epsilon
        self.outer = ImageFlow(self.image_shape, outer)
        self._config.update(epsilon=epsilon, outer=asdict(outer))

    def _encode(self, x: Tensor, theta: Tensor | None) -> Tensor:
        return self.outer()(x)[:, : self.latent_dim]

    def _decode(self, u: Tensor, theta: Tensor | None) -> Tensor:
        return self.outer().inv(pad(u, self.data_dim))

    def _log_prob(self, x: Tensor, theta: Tensor, exact: bool) -> Tensor:
        z, ladj = self.outer().call_and_ladj(x)
        u, v = z[:, : self.latent_dim], z[:, self.latent_dim :]
        log_p = self.log_prob_latent(u, theta)
        if not exact:
            return log_p
        log_p_v = -0.5 * (v / self.epsilon) ** 2 - math.log(self.epsilon) - 0.5 * math.log(2 * math.pi)
        return log_p + log_p_v.sum(-1) + ladj


class ImageAF(ImageModel):
    """Ambient flow on images: log p(x|θ) = log N(f(x|θ)) + log|det J_f(x|θ)| with f an
    `ImageFlow` whose couplings see θ as extra input channels. Its "manifold" is all of R^D:
    encode flattens x (u = x), decode reshapes, and `log_prob_latent(u, θ)` is the full flow."""

    name = "image_af"
    schedules = ("likelihood",)

    def __init__(self, image_shape: Any, theta_dim: int, outer: ImageFlowConfig | dict | None = None) -> None:
        shape = as_image_shape(image_shape)
        super().__init__(shape, theta_dim, math.prod(shape), FlowConfig(layers=0))
        outer = as_image_flow_config(outer)
        self.outer = ImageFlow(self.image_shape, outer, context=theta_dim)
        for key in ("latent_dim", "inner"):
            del self._config[key]
        self._config["outer"] = asdict(outer)

    def _encode(self, x: Tensor, theta: Tensor | None) -> Tensor:
        return x.flatten(1)

    def _decode(self, u: Tensor, theta: Tensor | None) -> Tensor:
        return u.unflatten(1, self.image_shape)

    def log_prob_latent(self, u: Tensor, theta: Tensor) -> Tensor:
        z, ladj = self.outer(theta).call_and_ladj(u.unflatten(1, self.image_shape))
        return standard_normal_log_prob(z) + ladj

    def _log_prob(self, x: Tensor, theta: Tensor, exact: bool) -> Tensor:
        return self.log_prob_latent(x.flatten(1), theta)

    def sample(self, theta: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """x = f⁻¹(z|θ), z ~ N(0, I) -> (batch, C, H, W)."""
        theta = self._check_theta(theta, None, required=True)
        noise = torch.randn(theta.shape[0], self.data_dim, generator=generator, dtype=theta.dtype)
        return self.outer(theta).inv(noise.to(theta.device))

    def density_parameters(self) -> Iterator[nn.Parameter]:
        """Every parameter: an AF has no manifold to learn apart from its density."""
        return self.outer.parameters()


#: the image models by name; kept apart from `MODELS` until the registry tests cover them
