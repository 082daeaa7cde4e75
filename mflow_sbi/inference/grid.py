"""Posteriors on a regular grid, for parameter dimension p ≤ 2."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from mflow_sbi.validation import check_matrix


class GridPosterior:
    """A posterior tabulated at the centres of a regular grid of cells.

    The density is normalized exactly on the grid, Σ_k p(θ_k) ΔV = 1, and sampling draws a
    cell with probability p(θ_k) ΔV, then a point uniformly inside it.
    """

    def __init__(self, grid: Tensor, log_density: Tensor) -> None:
        if grid.ndim != 2 or grid.shape[1] > 2:
            raise ValueError(f"grid must have shape (cells, p) with p ≤ 2, got {tuple(grid.shape)}")
        if log_density.shape != grid.shape[:1]:
            raise ValueError("log_density must have one value per grid cell")
        if torch.isnan(log_density).any() or (log_density == torch.inf).any() or not torch.isfinite(log_density).any():
            raise ValueError("log_density must be finite somewhere, and never NaN or +inf")
        self.grid = grid
        self.spacing = torch.stack([_spacing(grid[:, k]) for k in range(grid.shape[1])])
        log_volume = torch.log(self.spacing.double()).sum()
        log_density = log_density.double()
        self.log_density = log_density - torch.logsumexp(log_density + log_volume, dim=0)
        self.probabilities = torch.exp(self.log_density + log_volume)

    @staticmethod
    def cell_centres(lower: Sequence[float], upper: Sequence[float], resolution: int) -> Tensor:
        """Centres of resolution^p equal cells covering the box [lower, upper] -> (cells, p)."""
        if len(lower) != len(upper) or not 1 <= len(lower) <= 2:
            raise ValueError("a grid posterior needs 1 or 2 parameters with matching bounds")
        if resolution < 2:
            raise ValueError(f"resolution must be ≥ 2, got {resolution}")
        axes = []
        for low, high in zip(lower, upper):
            if not (math.isfinite(low) and math.isfinite(high) and low < high):
                raise ValueError(f"grid bounds must be finite with lower < upper, got [{low}, {high}]")
            edges = torch.linspace(low, high, resolution + 1)
            axes.append((edges[1:] + edges[:-1]) / 2)
        return torch.cartesian_prod(*axes).reshape(-1, len(axes))

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n draws -> (n, p)."""
        cells = torch.multinomial(self.probabilities, n, replacement=True, generator=generator)
        jitter = torch.rand(n, self.grid.shape[1], generator=generator, dtype=self.grid.dtype) - 0.5
        return self.grid[cells] + jitter * self.spacing.to(self.grid.dtype)

    def mean(self) -> Tensor:
        """Posterior mean Σ_i p_i θ_i over the grid cells -> (p,)."""
        return (self.probabilities.unsqueeze(-1) * self.grid.double()).sum(0).to(self.grid.dtype)

    def std(self) -> Tensor:
        """Posterior standard deviation per parameter over the grid cells -> (p,)."""
        centred = self.grid.double() - self.mean().double()
        return (self.probabilities.unsqueeze(-1) * centred**2).sum(0).sqrt().to(self.grid.dtype)

    def log_prob(self, theta: Tensor) -> Tensor:
        """Log density of the grid cell containing each θ, -inf outside the grid -> (batch,)."""
        check_matrix("theta", theta, self.grid.shape[1])
        spacing = self.spacing.to(theta)
        distance = ((theta.unsqueeze(1) - self.grid.unsqueeze(0)) / spacing) ** 2
        values = self.log_density[distance.sum(-1).argmin(dim=1)]
        low, high = self.grid.min(0).values - spacing / 2, self.grid.max(0).values + spacing / 2
        inside = ((theta >= low) & (theta <= high)).all(-1)
        return torch.where(inside, values, torch.full_like(values, -torch.inf))


def _spacing(axis: Tensor) -> Tensor:
    values = torch.unique(axis)
    if len(values) < 2:
        raise ValueError("every grid axis needs at least two distinct values")
    values = values.double()
    spacing = (values[-1] - values[0]) / (len(values) - 1)
    if not torch.allclose(values[1:] - values[:-1], spacing, rtol=1e-2):
        raise ValueError("grid axes must be regularly spaced")
    return spacing
