"""Posterior and manifold diagnostics."""

from mflow_sbi.diagnostics.mmd import median_distance, mmd_squared

__all__ = ["median_distance", "mmd_squared"]
