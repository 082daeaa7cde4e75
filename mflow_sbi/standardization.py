"""The affine standardization every estimator owns: fitted on its training data, applied inside
its methods, saved with its weights, so users pass and get raw simulator units."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class Standardization(nn.Module):
    """x' = (x - μ_x)/s_x and θ' = (θ - μ_θ)/s_θ, per feature of a vector x and per channel of an
    image x (batch, C, H, W); the identity until `fit` (or when `enabled` is False).

    Densities change by the affine map's log-Jacobian, log p(x|θ) = log p'(x'|θ') - Σ log s_x
    (summed over every entry of the event), for densities of full dimension; a density on a
    manifold instead takes the chart composed with x ↦ μ_x + s_x x' (see `ManifoldFlow`). θ's map
    has no Jacobian in a density of x, and autograd through θ' gives scores in raw θ units.
    """

    x_shift: Tensor
    x_scale: Tensor
    theta_shift: Tensor
    theta_scale: Tensor
    fitted: Tensor

    def __init__(self, event_shape: tuple[int, ...], theta_dim: int, enabled: bool = True) -> None:
        super().__init__()
        self.event_shape, self.enabled = tuple(event_shape), enabled
        stat_shape = self.event_shape if len(self.event_shape) == 1 else (self.event_shape[0],) + (1,) * (len(self.event_shape) - 1)
        self.register_buffer("x_shift", torch.zeros(stat_shape))
        self.register_buffer("x_scale", torch.ones(stat_shape))
        self.register_buffer("theta_shift", torch.zeros(theta_dim))
        self.register_buffer("theta_scale", torch.ones(theta_dim))
        self.register_buffer("fitted", torch.tensor(False))

    def fit(self, x: Tensor, theta: Tensor) -> None:
        """Means and standard deviations of training data x (batch, *event) and θ (batch, p), over
        the batch (and the pixels of a channel); a constant feature keeps scale 1. Does nothing
        when disabled or already fitted (further training keeps the units it started in)."""
        if not self.enabled or bool(self.fitted):
            return
        if len(x) < 2:
            raise ValueError(f"standardization needs at least 2 training samples, got {len(x)}")
        x, theta = x.detach().double(), theta.detach().double()
        dims = [0] + list(range(2, x.ndim))  # batch, and the pixels of an image channel
        with torch.no_grad():
            self.x_shift.copy_(x.mean(dims).reshape(self.x_shift.shape))
            self.x_scale.copy_(_scale(x, dims).reshape(self.x_scale.shape))
            self.theta_shift.copy_(theta.mean(0))
            self.theta_scale.copy_(_scale(theta, [0]))
            self.fitted.fill_(True)

    def x(self, x: Tensor) -> Tensor:
        """x' = (x - μ_x)/s_x."""
        return (x - self.x_shift) / self.x_scale

    def x_inverse(self, x: Tensor) -> Tensor:
        """x = μ_x + s_x x'."""
        return self.x_shift + self.x_scale * x

    def theta(self, theta: Tensor) -> Tensor:
        """θ' = (θ - μ_θ)/s_θ."""
        return (theta - self.theta_shift) / self.theta_scale

    def log_abs_det_x(self) -> Tensor:
        """log|det ∂x'/∂x| = -Σ log s_x over every entry of one event (a scalar)."""
        repeat = math.prod(self.event_shape) // self.x_scale.numel()
        return -torch.log(self.x_scale).sum() * repeat


def _scale(values: Tensor, dims: list[int]) -> Tensor:
    std = values.std(dims)
    return torch.where(std > 0, std, torch.ones_like(std))
