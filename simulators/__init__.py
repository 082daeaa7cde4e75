"""Simulator adapters behind one protocol (`Simulator`), with ground truth where it is known."""

from simulators.base import GoldData, Simulator
from simulators.lhc_like import LHCLike
from simulators.polynomial_surface import PolynomialSurface

__all__ = ["GoldData", "Simulator", "LHCLike", "PolynomialSurface"]

from simulators.image_manifold import ImageManifold  # noqa: E402

__all__ += ["ImageManifold"]
