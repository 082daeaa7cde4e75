"""MadMiner-style morphing for a squared matrix element quadratic in θ.

|M|²(z; θ) = vᵀH(z)v = Σ_c a_c(z) f_c(θ) over the K = (p+1)(p+2)/2 components
f = (1, θ_i, θ_i θ_j for i ≤ j). Given K benchmark points θ_b with an invertible component
matrix C_bc = f_c(θ_b), the morphing matrix is M = C⁻¹ and the morphing weights are
w(θ) = Mᵀ f(θ), so that |M|²(z; θ) = Σ_b w_b(θ) |M|²(z; θ_b) for every z (Brehmer, Kling,
Espejo & Cranmer, "MadMiner", 2019, §3.2 — the same conventions as MadMiner's PhysicsMorpher).
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor

# SM, ±1 along each axis, and the pairwise diagonals: an invertible, well-spread set
DEFAULT_BENCHMARKS = {
    2: ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1), (1, 1)),
    3: ((0, 0, 0), (1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1), (1, 1, 0), (1, 0, 1), (0, 1, 1)),
}


class Morphing:
    """Benchmarks (K, p), morphing matrix (K, K) and morphing weights for p parameters."""

    def __init__(self, n_params: int, benchmarks: Tensor | None = None) -> None:
        self.n_params = n_params
        self.pairs = list(itertools.combinations_with_replacement(range(n_params), 2))
        if benchmarks is None:
            benchmarks = torch.tensor(DEFAULT_BENCHMARKS[n_params], dtype=torch.float64)
        n_components = 1 + n_params + len(self.pairs)
        if benchmarks.shape != (n_components, n_params):
            raise ValueError(f"benchmarks must have shape ({n_components}, {n_params}), got {tuple(benchmarks.shape)}")
        self.benchmarks = benchmarks.double()
        self.matrix = torch.linalg.inv(self.components(self.benchmarks))

    def components(self, theta: Tensor) -> Tensor:
        """f(θ) = (1, θ_1..θ_p, θ_iθ_j for i ≤ j) -> (batch, K)."""
        quadratic = [theta[:, i] * theta[:, j] for i, j in self.pairs]
        return torch.cat([torch.ones_like(theta[:, :1]), theta, torch.stack(quadratic, -1)], -1)

    def weights(self, theta: Tensor) -> Tensor:
        """w(θ) = Mᵀ f(θ) -> (batch, K)."""
        return self.components(theta.double()) @ self.matrix

    def benchmark_values(self, matrix: Tensor, coupling_vector: Tensor) -> Tensor:
        """|M|²(z; θ_b) = v_bᵀ H(z) v_b for every event and benchmark -> (n, K);
        `coupling_vector` maps θ (K, p) to v (K, 4)."""
        v = coupling_vector(self.benchmarks)
        return torch.einsum("bk,nkl,bl->nb", v, matrix, v)
