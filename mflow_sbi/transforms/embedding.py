"""The pad/project embedding of an n-dimensional manifold in R^D through a bijection f
(Brehmer & Cranmer 2020, §2): encoder g⁻¹(x) = first n components of f(x), chart
g(u) = f⁻¹(u, 0), and the exact log-volume term log det(J_gᵀ J_g)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import jacfwd, vmap


def pad(u: Tensor, data_dim: int) -> Tensor:
    """(u, 0) ∈ R^D from u ∈ R^n: the manifold's level set v = 0."""
    return F.pad(u, (0, data_dim - u.shape[-1]))


def project(z: Tensor, latent_dim: int) -> Tensor:
    """u = the first n components of z = f(x)."""
    return z[..., :latent_dim]


def log_det_metric(chart: Callable[[Tensor], Tensor], u: Tensor, chunk_size: int = 256) -> Tensor:
    """log det(J_gᵀ J_g)(u) for a batched chart g: (batch, n) -> (batch, D); returns (batch,).

    J_g is D×n with n < D, so it is built in forward mode: one Jacobian-vector product per
    tangent direction, vectorized over the n directions and over the batch
    (`vmap(jacfwd(g))`), so its cost is about n forward passes of g. The n×n Gram matrix and its
    determinant are computed in float64; the batch is processed in chunks to bound memory.
    """
    if u.ndim != 2:
        raise ValueError(f"u must have shape (batch, n), got {tuple(u.shape)}")

    def single(point: Tensor) -> Tensor:
        return chart(point.unsqueeze(0)).squeeze(0)

    jacobian = vmap(jacfwd(single))
    values = []
    for chunk in u.split(chunk_size):
        j = jacobian(chunk).double()  # (chunk, D, n)
        values.append(torch.linalg.slogdet(j.mT @ j).logabsdet)
    return torch.cat(values).to(u.dtype)
