"""Simulator adapters behind one protocol (`Simulator`), with ground truth where it is known."""

from simulators.base import Simulator
from simulators.polynomial_surface import PolynomialSurface

__all__ = ["Simulator", "PolynomialSurface"]
