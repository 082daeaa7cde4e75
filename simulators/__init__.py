"""Simulator adapters, clients of the protocol `mflow_sbi.simulator.Simulator`, with ground
truth where it is known."""

from simulators.image_manifold import ImageManifold
from simulators.lhc_like import LHCLike
from simulators.polynomial_surface import PolynomialSurface

__all__ = ["ImageManifold", "LHCLike", "PolynomialSurface"]
