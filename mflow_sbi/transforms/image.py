"""Multi-scale image flows (Dinh et al. 2017, "Real NVP"; Kingma & Dhariwal 2018, "Glow"), as
zuko-style transforms on images of shape (..., C, H, W): squeeze, actnorm, invertible 1×1
convolution, affine or rational-quadratic coupling with a convolutional ResNet conditioner,
and channel factoring; plus the 8-bit dequantization and [-0.5, 0.5] scaling of image data.

`ImageFlow` is the outer transform f of the image M-flows (Brehmer & Cranmer 2020, §4
"Images"): image -> z ∈ R^D with the coarsest level first, then a learned LU-linear layer on
the first `head_features` entries, so the manifold coordinates u = z[:n] are global features.
Every transform has a fused `call_and_ladj`, an exact inverse, and works under `torch.func`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn
from torch.distributions import Transform, constraints
from zuko.lazy import LazyComposedTransform, LazyTransform
from zuko.transforms import ComposedTransform, MonotonicRQSTransform

from mflow_sbi.transforms.coupling import AffineElementwise
from mflow_sbi.transforms.linear import LULinearTransform

IMAGE = constraints.independent(constraints.real, 3)


# ---- data conventions ---------------------------------------------------------------------------
def check_images(name: str, value: Tensor, shape: tuple[int, int, int] | None = None) -> Tensor:
    """`value` if it is a finite floating-point tensor of shape (batch, C, H, W) (= `shape`)."""
    if not isinstance(value, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
    if value.ndim != 4 or (shape is not None and tuple(value.shape[1:]) != tuple(shape)):
        expected = "(batch, C, H, W)" if shape is None else f"(batch, {', '.join(map(str, shape))})"
        raise ValueError(f"{name} must have shape {expected}, got {tuple(value.shape)}")
    if not torch.isfinite(value).all():
        bad = (~torch.isfinite(value)).flatten(1).any(1).nonzero().flatten()[:5].tolist()
        raise ValueError(f"{name} contains NaN or infinite values (images {bad}...)")
    return value


def quantize(x: Tensor, bits: int = 8) -> Tensor:
    """k = clamp(⌊(x + ½) 2^bits⌋, 0, 2^bits - 1): images in [-0.5, 0.5] to integer levels."""
    levels = 2**bits
    return torch.floor((x + 0.5) * levels).clamp(0, levels - 1).to(torch.int64)


def dequantize(k: Tensor, generator: torch.Generator | None = None, bits: int = 8) -> Tensor:
    """x = (k + U(0, 1)) / 2^bits - ½ ∈ [-0.5, 0.5]: uniform dequantization of integer levels
    (e.g. uint8 pixels), so that a continuous density of x bounds the discrete one."""
    if k.is_floating_point() or k.is_complex():
        raise ValueError(f"k must hold integer levels, got dtype {k.dtype}")
    noise = torch.rand(k.shape, generator=generator, dtype=torch.float32)
    return (k.float() + noise) / 2**bits - 0.5


# ---- stateless transforms ---------------------------------------------------------------------
def _per_batch(value: Tensor, x: Tensor) -> Tensor:
    """A scalar log-determinant broadcast to the batch shape of images x (..., C, H, W)."""
    return value.expand(x.shape[:-3])


class SqueezeTransform(Transform):
    """(C, H, W) -> (4C, H/2, W/2): each 2×2 block of pixels becomes 4 channels; log|det J| = 0."""

    domain = codomain = IMAGE
    bijective = True

    def _call(self, x: Tensor) -> Tensor:
        c, h, w = x.shape[-3:]
        if h % 2 or w % 2:
            raise ValueError(f"squeeze needs even height and width, got {h}×{w}")
        lead = x.ndim - 3
        x = x.reshape(*x.shape[:-2], h // 2, 2, w // 2, 2)
        x = x.permute(*range(lead), lead, lead + 2, lead + 4, lead + 1, lead + 3)
        return x.reshape(*x.shape[:lead], 4 * c, h // 2, w // 2)

    def _inverse(self, y: Tensor) -> Tensor:
        c, h, w = y.shape[-3:]
        lead = y.ndim - 3
        y = y.reshape(*y.shape[:lead], c // 4, 2, 2, h, w)
        y = y.permute(*range(lead), lead, lead + 3, lead + 1, lead + 4, lead + 2)
        return y.reshape(*y.shape[:lead], c // 4, 2 * h, 2 * w)

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return x.new_zeros(x.shape[:-3])


class ChannelAffineTransform(Transform):
    """y = (x + b_c) exp(s_c) per channel (actnorm); log|det J| = H W Σ_c s_c."""

    domain = codomain = IMAGE
    bijective = True

    def __init__(self, log_scale: Tensor, bias: Tensor) -> None:
        super().__init__()
        self.log_scale, self.bias = log_scale, bias  # (C,)

    def _call(self, x: Tensor) -> Tensor:
        return (x + self.bias[:, None, None]) * torch.exp(self.log_scale)[:, None, None]

    def _inverse(self, y: Tensor) -> Tensor:
        return y * torch.exp(-self.log_scale)[:, None, None] - self.bias[:, None, None]

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return _per_batch(x.shape[-1] * x.shape[-2] * self.log_scale.sum(), x)


class ChannelMixTransform(Transform):
    """y = W x at every pixel (invertible 1×1 convolution, Glow §3.2); log|det J| =
    H W log|det W|, with log|det W| given (from an LU factorization)."""

    domain = codomain = IMAGE
    bijective = True

    def __init__(self, weight: Tensor, log_abs_det: Tensor) -> None:
        super().__init__()
        self.weight, self.log_abs_det = weight, log_abs_det

    def _call(self, x: Tensor) -> Tensor:
        return torch.einsum("oc,...chw->...ohw", self.weight, x)

    def _inverse(self, y: Tensor) -> Tensor:
        return torch.einsum("oc,...chw->...ohw", torch.linalg.inv(self.weight), y)

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return _per_batch(x.shape[-1] * x.shape[-2] * self.log_abs_det, x)


class ImageCouplingTransform(Transform):
    """y_a = x_a, y_b = τ(x_b; φ(x_a, c)) on channels a = [:split], b = [split:] (Real NVP §3.3):
    τ affine, y_b = x_b exp(s) + t with log-scale s = 2 tanh(ŝ/2), or rational-quadratic
    (Durkan et al. 2019) with identity tails outside [-B, B]. log|det J| = Σ log τ'(x_b)."""

    domain = codomain = IMAGE
    bijective = True

    def __init__(self, conditioner: "ConvResNet", split: int, kind: str, bins: int, bound: float, context: Tensor | None) -> None:
        super().__init__()
        self.conditioner, self.split, self.kind, self.bins, self.bound, self.context = conditioner, split, kind, bins, bound, context

    def _elementwise(self, x_a: Tensor) -> Transform:
        h, w = x_a.shape[-2:]
        lead = x_a.shape[:-3]
        inputs = x_a.reshape(-1, *x_a.shape[-3:])
        if self.context is not None:
            c = self.context.reshape(-1, self.context.shape[-1], 1, 1).expand(-1, -1, h, w)
            inputs = torch.cat([inputs, c.expand(len(inputs), -1, -1, -1)], 1)
        out = self.conditioner(inputs)
        if self.kind == "affine":
            shift, raw = out.reshape(*lead, 2, -1, h, w).unbind(-4)
            return AffineElementwise(shift, 2 * torch.tanh(raw / 2))
        params = out.reshape(*lead, -1, 3 * self.bins - 1, h, w).movedim(-3, -1)
        widths, heights, derivatives = params.split((self.bins, self.bins, self.bins - 1), dim=-1)
        return MonotonicRQSTransform(widths, heights, derivatives, bound=self.bound)

    def _call(self, x: Tensor) -> Tensor:
        return self.call_and_ladj(x)[0]

    def _inverse(self, y: Tensor) -> Tensor:
        y_a, y_b = y[..., : self.split, :, :], y[..., self.split :, :, :]
        return torch.cat([y_a, self._elementwise(y_a).inv(y_b)], -3)

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return self.call_and_ladj(x)[1]

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x_a, x_b = x[..., : self.split, :, :], x[..., self.split :, :, :]
        y_b, ladj = self._elementwise(x_a).call_and_ladj(x_b)
        return torch.cat([x_a, y_b], -3), ladj.sum((-3, -2, -1))


class MultiScaleTransform(Transform):
    """Image (C, H, W) -> z ∈ R^D through levels l = 0..L-1, each a transform of the squeezed
    image; after every level but the last, half the channels are factored out (Real NVP §3.6)
    and the rest go on. z = (final block, factored block L-2, …, factored block 0): coarsest
    first. log|det J| = Σ_l log|det J_l|."""

    domain = IMAGE
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, levels: list[Transform], shapes: list[tuple[int, int, int]]) -> None:
        super().__init__()
        self.levels, self.shapes = levels, shapes  # shapes: each level's output (C, H, W)

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        factored, ladj = [], 0
        for i, level in enumerate(self.levels):
            x, level_ladj = level.call_and_ladj(x)
            ladj = ladj + level_ladj
            if i < len(self.levels) - 1:
                half = x.shape[-3] // 2
                factored.append(x[..., half:, :, :].flatten(-3))
                x = x[..., :half, :, :]
        return torch.cat([x.flatten(-3), *reversed(factored)], -1), ladj

    def _call(self, x: Tensor) -> Tensor:
        return self.call_and_ladj(x)[0]

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return self.call_and_ladj(x)[1]

    def _inverse(self, z: Tensor) -> Tensor:
        last = self.shapes[-1]
        start = math.prod(last)
        x = z[..., :start].unflatten(-1, last)
        for i in reversed(range(len(self.levels))):
            if i < len(self.levels) - 1:
                c, h, w = self.shapes[i]
                size = (c - c // 2) * h * w
                x = torch.cat([x, z[..., start : start + size].unflatten(-1, (c - c // 2, h, w))], -3)
                start += size
            x = self.levels[i].inv(x)
        return x


class HeadLinearTransform(Transform):
    """y = (L U z[:m], z[m:]): a learned LU-linear layer on the first m entries of a vector."""

    domain = codomain = constraints.real_vector
    bijective = True

    def __init__(self, linear: LULinearTransform, features: int) -> None:
        super().__init__()
        self.linear, self.features = linear, features

    def _call(self, z: Tensor) -> Tensor:
        return torch.cat([self.linear(z[..., : self.features]), z[..., self.features :]], -1)

    def _inverse(self, y: Tensor) -> Tensor:
        return torch.cat([self.linear.inv(y[..., : self.features]), y[..., self.features :]], -1)

    def log_abs_det_jacobian(self, z: Tensor, y: Tensor) -> Tensor:
        return self.linear.log_abs_det_jacobian(z[..., : self.features], y[..., : self.features])


# ---- modules that hold the parameters --------------------------------------------------------------
class ConvResNet(nn.Module):
    """Conditioner of an image coupling: conv3×3 -> [h + conv3×3(relu(conv3×3(relu(h))))] ×
    blocks -> relu -> conv3×3, the last layer zero-initialized (the coupling starts at the
    identity); (N, in, H, W) -> (N, out, H, W)."""

    def __init__(self, in_channels: int, out_channels: int, hidden: int = 32, blocks: int = 1) -> None:
        super().__init__()
        self.input = nn.Conv2d(in_channels, hidden, 3, padding=1)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.ReLU(), nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU(), nn.Conv2d(hidden, hidden, 3, padding=1))
            for _ in range(blocks)
        )
        self.output = nn.Conv2d(hidden, out_channels, 3, padding=1)
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.output.bias)

    def forward(self, x: Tensor) -> Tensor:
        h = self.input(x)
        for block in self.blocks:
            h = h + block(h)
        return self.output(torch.relu(h))


class Squeeze(LazyTransform):
    def forward(self, c: Tensor | None = None) -> Transform:
        return SqueezeTransform()


class ActNorm(LazyTransform):
    """Per-channel affine y = (x + b) exp(s) (Glow §3.1) with data-dependent initialization:
    the first forward pass in training mode sets b = -mean, s = -log std per channel, so that
    the output of that batch has zero mean and unit variance. Starts as the identity."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("initialized", torch.tensor(False))

    def initialize(self, x: Tensor) -> None:
        """Set b, s from the images x (batch, C, H, W)."""
        with torch.no_grad():
            dims = [d for d in range(x.ndim) if d != x.ndim - 3]
            self.bias.copy_(-x.mean(dims))
            self.log_scale.copy_(-torch.log(x.std(dims) + 1e-6))
            self.initialized.fill_(True)

    def forward(self, c: Tensor | None = None) -> Transform:
        return _InitializingActNorm(self)


class _InitializingActNorm(ChannelAffineTransform):
    """The actnorm transform, initializing its module on the first forward pass in training."""

    def __init__(self, module: ActNorm) -> None:
        super().__init__(module.log_scale, module.bias)
        self.module = module

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.module.training and not bool(self.module.initialized):
            self.module.initialize(x)
        y = self._call(x)
        return y, self.log_abs_det_jacobian(x, y)

    def __call__(self, x: Tensor) -> Tensor:
        return self.call_and_ladj(x)[0]


class InvertibleConv1x1(LazyTransform):
    """W = P L (U + diag(σ exp(s))) with a fixed permutation P and signs σ, L unit lower and U
    strictly upper triangular (Glow §3.2, LU-decomposed); log|det W| = Σ s. Initialized at a
    random rotation drawn from `seed`."""

    def __init__(self, channels: int, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(channels, channels, generator=generator))
        p, lower, upper = torch.linalg.lu(q)
        diagonal = torch.diagonal(upper)
        self.register_buffer("permutation", p)
        self.register_buffer("sign", torch.sign(diagonal))
        self.lower = nn.Parameter(torch.tril(lower, -1))
        self.upper = nn.Parameter(torch.triu(upper, 1))
        self.log_diagonal = nn.Parameter(torch.log(diagonal.abs()))

    def forward(self, c: Tensor | None = None) -> Transform:
        eye = torch.eye(len(self.sign), dtype=self.lower.dtype, device=self.lower.device)
        lower = torch.tril(self.lower, -1) + eye
        upper = torch.triu(self.upper, 1) + torch.diag(self.sign * torch.exp(self.log_diagonal))
        return ChannelMixTransform(self.permutation @ lower @ upper, self.log_diagonal.sum())


class ImageCoupling(LazyTransform):
    """Coupling on the channels of an image, conditioned on the first half of the channels and
    (with `context` > 0) on a context vector broadcast to every pixel as extra input channels."""

    def __init__(
        self,
        channels: int,
        context: int = 0,
        kind: Literal["affine", "rqs"] = "rqs",
        hidden: int = 32,
        blocks: int = 1,
        bins: int = 8,
        bound: float = 4.0,
    ) -> None:
        super().__init__()
        if kind not in ("affine", "rqs"):
            raise ValueError(f"kind must be 'affine' or 'rqs', got {kind!r}")
        if channels < 2:
            raise ValueError(f"a coupling needs at least 2 channels, got {channels}")
        self.split, self.context, self.kind, self.bins, self.bound = channels // 2, context, kind, bins, bound
        per_channel = 2 if kind == "affine" else 3 * bins - 1
        self.conditioner = ConvResNet(self.split + context, (channels - self.split) * per_channel, hidden, blocks)

    def forward(self, c: Tensor | None = None) -> Transform:
        if (c is None) != (self.context == 0):
            raise ValueError(f"this coupling expects a context of {self.context} features, got {'none' if c is None else tuple(c.shape)}")
        return ImageCouplingTransform(self.conditioner, self.split, self.kind, self.bins, self.bound, c)


@dataclass(frozen=True)
class ImageFlowConfig:
    """Architecture of a multi-scale image flow: `levels` × [squeeze, `steps` × (actnorm,
    1×1 convolution, coupling)], half the channels factored out after every level but the last,
    then an LU-linear layer on the first `head_features` entries of z (clipped to D)."""

    levels: int = 2
    steps: int = 2
    coupling: Literal["affine", "rqs"] = "rqs"
    hidden: int = 32
    blocks: int = 1
    bins: int = 8
    bound: float = 4.0
    head_features: int = 256
    seed: int = 0


def multiscale_shapes(shape: tuple[int, int, int], levels: int) -> list[tuple[int, int, int]]:
    """The output shape (C, H, W) of every level of a multi-scale flow on images of `shape`."""
    c, h, w = shape
    shapes = []
    for level in range(levels):
        if h % 2 or w % 2:
            raise ValueError(f"images of shape {shape} cannot be squeezed {levels} times")
        c, h, w = 4 * c, h // 2, w // 2
        shapes.append((c, h, w))
        if level < levels - 1:
            c = c // 2
    return shapes


class ImageFlow(LazyTransform):
    """A bijection from images (..., C, H, W) to vectors z (..., C H W), optionally conditioned
    on a context vector (through the couplings): see `ImageFlowConfig` and `MultiScaleTransform`."""

    def __init__(self, shape: tuple[int, int, int], config: ImageFlowConfig = ImageFlowConfig(), context: int = 0) -> None:
        super().__init__()
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"shape must be (C, H, W), got {shape}")
        if config.levels < 1 or config.steps < 1:
            raise ValueError(f"levels and steps must be ≥ 1, got {config.levels}, {config.steps}")
        self.shape, self.context = tuple(shape), context
        self.shapes = multiscale_shapes(self.shape, config.levels)
        self.features = math.prod(shape)
        self.head_features = min(config.head_features, self.features)
        levels = []
        for level, (channels, _, _) in enumerate(self.shapes):
            layers: list[LazyTransform] = [Squeeze()]
            for step in range(config.steps):
                layers += [
                    ActNorm(channels),
                    InvertibleConv1x1(channels, seed=config.seed + 1000 * level + step),
                    ImageCoupling(channels, context, config.coupling, config.hidden, config.blocks, config.bins, config.bound),
                ]
            levels.append(LazyComposedTransform(*layers))
        self.levels = nn.ModuleList(levels)
        self.head = nn.Parameter(torch.eye(self.head_features))  # L U packed as in zuko, identity at start

    def forward(self, c: Tensor | None = None) -> Transform:
        """The multi-scale transform for the context c (None without a context)."""
        if (c is None) != (self.context == 0):
            raise ValueError(f"this flow expects a context of {self.context} features, got {'none' if c is None else tuple(c.shape)}")
        multiscale = MultiScaleTransform([level(c) for level in self.levels], self.shapes)
        return ComposedTransform(multiscale, HeadLinearTransform(LULinearTransform(self.head), self.head_features))

    @property
    def initialized(self) -> bool:
        """Whether every actnorm has had its data-dependent initialization."""
        return all(bool(m.initialized) for m in self.modules() if isinstance(m, ActNorm))

    def initialize(self, x: Tensor, c: Tensor | None = None) -> None:
        """Data-dependent initialization of every actnorm from images x (one forward pass)."""
        training = self.training
        self.train()
        with torch.no_grad():
            self(c)(x)
        self.train(training)
