"""The pad/project embedding of an n-dimensional manifold in R^D through a bijection f
(Brehmer & Cranmer 2020, §2): encoder g⁻¹(x) = first n components of f(x), chart
g(u) = f⁻¹(u, 0), and the exact log-volume term log det(J_gᵀ J_g)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import jvp, vmap


def pad(u: Tensor, data_dim: int) -> Tensor:
    """(u, 0) ∈ R^D from u ∈ R^n: the manifold's level set v = 0."""
    return F.pad(u, (0, data_dim - u.shape[-1]))


def project(z: Tensor, latent_dim: int) -> Tensor:
    """u = the first n components of z = f(x)."""
    return z[..., :latent_dim]


JACOBIAN_ELEMENTS_PER_CHUNK = 2**22


def log_det_metric(chart: Callable[[Tensor], Tensor], u: Tensor, chunk_size: int | None = None) -> Tensor:
    """log det(J_gᵀ J_g)(u) for a batched chart g: (batch, n) -> (batch, D); returns (batch,).

    J_g is D×n with n < D, so it is built in forward mode: because g treats the rows of a batch
    independently, one Jacobian-vector product of the batched g with the tangent e_k in every
    row gives column k of all the Jacobians at once; the n products are vectorized with
    `vmap` over the basis vectors (no loop over outputs or samples). The n×n Gram matrix and
    its determinant are computed in float64, the batch in chunks to bound memory: by default
    as many rows as keep the chunk's Jacobian at 2²² elements (its intermediates scale alike).
    """
    if u.ndim != 2:
        raise ValueError(f"u must have shape (batch, n), got {tuple(u.shape)}")
    n = u.shape[1]
    if chunk_size is None:
        data_dim = chart(u[:1]).shape[-1]
        chunk_size = max(1, JACOBIAN_ELEMENTS_PER_CHUNK // (n * data_dim))
    values = []
    for chunk in u.split(chunk_size):
        basis = torch.eye(n, dtype=u.dtype, device=u.device).unsqueeze(1).expand(n, len(chunk), n)
        columns = vmap(lambda tangent: jvp(chart, (chunk,), (tangent,))[1])(basis)  # (n, chunk, D)
        j = columns.permute(1, 2, 0).double()  # (chunk, D, n)
        values.append(torch.linalg.slogdet(j.mT @ j).logabsdet)
    return torch.cat(values).to(u.dtype)
