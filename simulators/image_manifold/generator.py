"""A StyleGAN2-architecture generator (Karras et al. 2020, "Analyzing and Improving the Image
Quality of StyleGAN") in plain PyTorch, and a safe loader for `g_ema` state dicts.

Architecture: mapping MLP w = M(PixelNorm(z)) with equalized learning rate; synthesis from a
learned constant 4×4 input through modulated/demodulated 3×3 convolutions, two per resolution,
    y = d ⊙ conv(x ⊙ s, w · c),  s = A(w) (affine style),  d_o = (Σ_{i,k} (c w_oik s_i)² + ε)^(-½),
with c = 1/√fan_in (equalized learning rate), leaky ReLU(0.2)·√2, and ToRGB skips summed over
resolutions. Up-sampling is plain bilinear (the original uses a transposed convolution with a
FIR blur) and the per-pixel noise inputs are off, so G is a deterministic smooth map of z.
Parameter names follow the common PyTorch port (`style.*`, `input.input`, `conv1.*`,
`convs.*`, `to_rgb1.*`, `to_rgbs.*`), so its `g_ema` checkpoints load with `load_g_ema`.

The default weights are drawn from a fixed seed, not trained: they render abstract smooth
textures, not faces.
"""

from __future__ import annotations

import argparse
import math
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SLOPE, GAIN = 0.2, math.sqrt(2.0)
#: checkpoint entries this architecture has no use for: the FIR blur kernels of the original
#: up-sampling and the fixed noise maps and their strengths (noise is off here)
IGNORED_SUFFIXES = (".blur.kernel", ".upsample.kernel", ".noise.weight")
IGNORED_PREFIXES = ("noises.",)


def default_channels(resolution: int, channel_base: int = 2048, channel_max: int = 64) -> tuple[int, ...]:
    """Feature maps per resolution 4, 8, …, `resolution`: min(channel_max, channel_base / r)."""
    if resolution < 4 or resolution & (resolution - 1):
        raise ValueError(f"resolution must be a power of two ≥ 4, got {resolution}")
    return tuple(min(channel_max, channel_base // 2**k) for k in range(2, int(math.log2(resolution)) + 1))


@dataclass(frozen=True)
class GeneratorConfig:
    """Size of the generator: `style_dim` is the size of z and w, `channels` one entry per
    resolution 4, 8, …, `resolution`; `lr_mlp` the mapping's learning-rate multiplier (0.01
    as in StyleGAN2); `seed` draws the default weights."""

    resolution: int = 64
    style_dim: int = 128
    mapping_layers: int = 4
    channels: tuple[int, ...] = field(default=())
    lr_mlp: float = 0.01
    seed: int = 0

    def __post_init__(self) -> None:
        channels = tuple(self.channels) or default_channels(self.resolution)
        object.__setattr__(self, "channels", channels)
        if len(channels) != int(math.log2(self.resolution)) - 1:
            raise ValueError(f"channels needs one entry per resolution 4…{self.resolution}, got {channels}")
        if self.style_dim < 1 or self.mapping_layers < 1 or not self.lr_mlp > 0:
            raise ValueError("style_dim and mapping_layers must be ≥ 1 and lr_mlp positive")


class EqualLinear(nn.Module):
    """y = x (c W)ᵀ + m b with c = m/√fan_in (equalized learning rate, multiplier m); with
    `activation`, leaky ReLU(0.2)·√2 after the bias."""

    def __init__(self, in_features: int, out_features: int, bias_init: float = 0.0, lr_mul: float = 1.0, activation: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init)))
        self.scale, self.lr_mul, self.activation = lr_mul / math.sqrt(in_features), lr_mul, activation
        self.weight_init = 1.0 / lr_mul  # weights are N(0, 1/m²), so c W ~ N(0, 1/fan_in)

    def forward(self, x: Tensor) -> Tensor:
        out = F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)
        return F.leaky_relu(out, SLOPE) * GAIN if self.activation else out


class PixelNorm(nn.Module):
    """z / √(mean(z²) + 1e-8)."""

    def forward(self, z: Tensor) -> Tensor:
        return z * torch.rsqrt((z**2).mean(-1, keepdim=True) + 1e-8)


class ModulatedConv2d(nn.Module):
    """y = d ⊙ conv(x ⊙ s, c W) with style s = A(w) and, if `demodulate`, d_o =
    (Σ_{i,k} (c W_oik s_i)² + 1e-8)^(-½) (StyleGAN2 §2.2, the non-fused form: equal to the
    grouped convolution with per-sample weights, and batch-friendly)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, style_dim: int, demodulate: bool = True, upsample: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(1, out_channels, in_channels, kernel, kernel))
        self.modulation = EqualLinear(style_dim, in_channels, bias_init=1.0)
        self.scale = 1.0 / math.sqrt(in_channels * kernel**2)
        self.demodulate, self.upsample, self.padding = demodulate, upsample, kernel // 2

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        style = self.modulation(w)  # (batch, in)
        weight = self.scale * self.weight[0]  # (out, in, k, k)
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        y = F.conv2d(x * style[:, :, None, None], weight, padding=self.padding)
        if self.demodulate:
            demod = torch.rsqrt((style**2) @ (weight**2).sum((2, 3)).T + 1e-8)  # (batch, out)
            y = y * demod[:, :, None, None]
        return y


class ConstantInput(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.input = nn.Parameter(torch.empty(1, channels, 4, 4))

    def forward(self, batch: int) -> Tensor:
        return self.input.expand(batch, -1, -1, -1)


class FusedLeakyReLU(nn.Module):
    """leaky ReLU(0.2)(x + b)·√2 with a per-channel bias."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(x + self.bias[:, None, None], SLOPE) * GAIN


class StyledConv(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, style_dim: int, upsample: bool = False) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, 3, style_dim, upsample=upsample)
        self.activate = FusedLeakyReLU(out_channels)

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        return self.activate(self.conv(x, w))


class ToRGB(nn.Module):
    """rgb = conv1×1(x; s, no demodulation) + b (+ the up-sampled skip from the coarser level)."""

    def __init__(self, in_channels: int, style_dim: int) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: Tensor, w: Tensor, skip: Tensor | None = None) -> Tensor:
        rgb = self.conv(x, w) + self.bias
        if skip is not None:
            rgb = rgb + F.interpolate(skip, scale_factor=2, mode="bilinear", align_corners=False)
        return rgb


class StyleGAN2Generator(nn.Module):
    """z (batch, style_dim) -> image (batch, 3, R, R), roughly in [-1, 1] for trained weights."""

    def __init__(self, config: GeneratorConfig = GeneratorConfig()) -> None:
        super().__init__()
        self.config = config
        c = config.channels
        self.style = nn.Sequential(
            PixelNorm(),
            *(EqualLinear(config.style_dim, config.style_dim, lr_mul=config.lr_mlp, activation=True) for _ in range(config.mapping_layers)),
        )
        self.input = ConstantInput(c[0])
        self.conv1 = StyledConv(c[0], c[0], config.style_dim)
        self.to_rgb1 = ToRGB(c[0], config.style_dim)
        self.convs, self.to_rgbs = nn.ModuleList(), nn.ModuleList()
        for previous, current in zip(c[:-1], c[1:]):
            self.convs.append(StyledConv(previous, current, config.style_dim, upsample=True))
            self.convs.append(StyledConv(current, current, config.style_dim))
            self.to_rgbs.append(ToRGB(current, config.style_dim))
        self.reset_parameters(config.seed)

    def reset_parameters(self, seed: int) -> None:
        """The default weights from `seed`: N(0, 1) convolution weights and constant input,
        N(0, 1/m²) equalized linear weights, biases at their initial constants (StyleGAN2's
        initialization). Same seed, same weights."""
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, module in sorted(self.named_modules(), key=lambda item: item[0]):
                if isinstance(module, EqualLinear):
                    module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * module.weight_init)
                elif isinstance(module, ModulatedConv2d):
                    module.weight.copy_(torch.randn(module.weight.shape, generator=generator))
                elif isinstance(module, ConstantInput):
                    module.input.copy_(torch.randn(module.input.shape, generator=generator))

    @property
    def resolution(self) -> int:
        """Output image side length in pixels."""
        return self.config.resolution

    def mapping(self, z: Tensor) -> Tensor:
        """w = M(PixelNorm(z)) -> (batch, style_dim)."""
        return self.style(z)

    def synthesis(self, w: Tensor) -> Tensor:
        """The image from one w shared by every layer (no style mixing) -> (batch, 3, R, R)."""
        x = self.conv1(self.input(w.shape[0]), w)
        rgb = self.to_rgb1(x, w)
        for up, conv, to_rgb in zip(self.convs[::2], self.convs[1::2], self.to_rgbs):
            x = conv(up(x, w), w)
            rgb = to_rgb(x, w, rgb)
        return rgb

    def forward(self, z: Tensor) -> Tensor:
        """Images G(z) = synthesis(mapping(z)) for latents z (batch, style_dim) -> (batch, 3, R, R)."""
        if z.ndim != 2 or z.shape[1] != self.config.style_dim:
            raise ValueError(f"z must have shape (batch, {self.config.style_dim}), got {tuple(z.shape)}")
        return self.synthesis(self.mapping(z))


def config_from_state_dict(state: dict[str, Tensor], lr_mlp: float = 0.01) -> GeneratorConfig:
    """The `GeneratorConfig` a `g_ema` state dict was saved from, read off its shapes."""
    try:
        style_dim = state["style.1.weight"].shape[1]
        mapping_layers = sum(1 for k in state if re.fullmatch(r"style\.\d+\.weight", k))
        levels = sum(1 for k in state if re.fullmatch(r"to_rgbs\.\d+\.bias", k))
        channels = (state["input.input"].shape[1],) + tuple(state[f"convs.{2 * j}.conv.weight"].shape[1] for j in range(levels))
    except (KeyError, AttributeError, IndexError) as error:
        raise ValueError(f"not a StyleGAN2 g_ema state dict (missing or malformed {error})") from None
    return GeneratorConfig(resolution=2 ** (levels + 2), style_dim=style_dim, mapping_layers=mapping_layers, channels=channels, lr_mlp=lr_mlp)


def load_g_ema(path: str | Path, allow_pickle: bool = False, lr_mlp: float = 0.01) -> StyleGAN2Generator:
    """A generator from a checkpoint holding a `g_ema` state dict (the common PyTorch format,
    `{"g_ema": ..., "g": ..., "d": ..., "args": ...}`), loaded with
    `torch.load(weights_only=True)` (an `argparse.Namespace` of training arguments is
    allowed). A file that needs arbitrary unpickling is refused unless `allow_pickle=True`
    (only for files you trust: unpickling can run code). Blur kernels and noise entries are
    skipped (see the module docstring); any other mismatch raises."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"path {str(path)!r} is not a file")
    if allow_pickle:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    else:
        try:
            with torch.serialization.safe_globals([argparse.Namespace]):
                checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            raise ValueError(
                f"{path} holds pickled Python objects that safe loading refuses ({str(error).splitlines()[0]}); "
                "pass allow_pickle=True only if you trust the file"
            ) from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("g_ema"), dict):
        raise ValueError(f"{path} has no 'g_ema' state dict")
    state = {
        k: v for k, v in checkpoint["g_ema"].items()
        if not (k.endswith(IGNORED_SUFFIXES) or k.startswith(IGNORED_PREFIXES))
    }
    generator = StyleGAN2Generator(config_from_state_dict(state, lr_mlp))
    try:
        missing, unexpected = generator.load_state_dict(state, strict=False)
    except RuntimeError as error:  # shape mismatches
        raise ValueError(f"g_ema does not match the architecture: {error}") from None
    if missing or unexpected:
        raise ValueError(f"g_ema does not match the architecture: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return generator.eval().requires_grad_(False)
