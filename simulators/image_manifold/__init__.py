"""The StyleGAN image-manifold simulator (spec `shared/specs/image_manifold.md`)."""

from simulators.image_manifold.generator import GeneratorConfig, StyleGAN2Generator, load_g_ema
from simulators.image_manifold.simulator import ImageManifold

__all__ = ["GeneratorConfig", "ImageManifold", "StyleGAN2Generator", "load_g_ema"]
