"""Affine standardization of training data, with the joint score rescaled to match."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from mflow_sbi.validation import check_matrix


@dataclass
class Standardization:
    """x' = (x - μ_x)/s_x and θ' = (θ - μ_θ)/s_θ for training; the joint score transforms as
    t' = ∇_θ' log p = t · s_θ (chain rule; the x map is θ-independent, so only θ's scale enters).

    A model trained on (x', θ') gives log p(x|θ) = log p'(x'|θ') - Σ_k log s_x,k and likelihood
    ratios unchanged; run inference on `x(x_observed)` with θ' = `theta(θ)`.
    """

    x_mean: Tensor
    x_std: Tensor
    theta_mean: Tensor
    theta_std: Tensor

    def __post_init__(self) -> None:
        for name in ("x_std", "theta_std"):
            scale = getattr(self, name)
            if not (torch.isfinite(scale).all() and (scale > 0).all()):
                raise ValueError(f"{name} must be finite and positive, got {scale}")

    @classmethod
    def fit(cls, x: Tensor, theta: Tensor) -> Standardization:
        """Means and standard deviations of the training data (a constant column gets scale 1)."""
        check_matrix("x", x)
        check_matrix("theta", theta)

        def scale(values: Tensor) -> Tensor:
            std = values.std(0)
            return torch.where(std > 0, std, torch.ones_like(std))

        return cls(x.mean(0), scale(x), theta.mean(0), scale(theta))

    def x(self, x: Tensor) -> Tensor:
        """x' = (x - μ_x)/s_x."""
        return (x - self.x_mean.to(x)) / self.x_std.to(x)

    def x_inverse(self, x: Tensor) -> Tensor:
        """x = μ_x + s_x x' (generated samples back to the simulator's units)."""
        return self.x_mean.to(x) + self.x_std.to(x) * x

    def theta(self, theta: Tensor) -> Tensor:
        """θ' = (θ - μ_θ)/s_θ."""
        return (theta - self.theta_mean.to(theta)) / self.theta_std.to(theta)

    def theta_inverse(self, theta: Tensor) -> Tensor:
        """θ = μ_θ + s_θ θ' (posterior samples back to the simulator's units)."""
        return self.theta_mean.to(theta) + self.theta_std.to(theta) * theta

    def score(self, score: Tensor) -> Tensor:
        """t' = t · s_θ, the joint score in standardized θ."""
        return score * self.theta_std.to(score)
