"""Mixture model on a polynomial surface (Brehmer & Cranmer 2020, §4; spec
`shared/specs/polynomial_surface.md`).

A 2-D manifold in R³: x = R (z0, z1, f(z)) with f(z) = exp(-0.1 ‖z‖²) Σ_{i+j≤5} a_ij z0^i z1^j,
and a θ-dependent two-component Gaussian mixture on the chart coordinates z:
0.4 N((-1, 1), σ(θ)² I) + 0.6 N((1, -1), 2² I), σ(θ) = 0.6 + 0.4 θ, prior θ ~ U(-1, 1).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from mflow_sbi.inference.grid import GridPosterior
from mflow_sbi.simulator import Simulator, as_generator

# a_ij in scikit-learn's PolynomialFeatures(5) order: by degree, then from the highest power of z0.
COEFFICIENTS = (
    -1.2168586603514988, 1.5222185058080313, -1.2137184774523713,
    5.6508287792492326e-2, -2.3891580117654843e-2, -4.6679008635003467e-2,
    -5.5684866244744051e-2, -7.6749463582970771e-3, -5.7179289918765960e-2, -5.1694842320096739e-2,
    1.3713569766142171e-2, 1.9578321017337021e-4, -7.0856847415118867e-3, -6.6261159038441386e-3,
    3.3305025718645487e-3,
    -8.3231939923945151e-3, -1.0951862645717694e-2, 4.0810678602200574e-3, -4.6477796818454259e-3,
    -8.8060082048527361e-3, 1.2115704379651746e-2,
)  # fmt: skip
EXPONENTS = tuple((d - j, j) for d in range(6) for j in range(d + 1))
ROTATION = (
    (0.9738872159123575, -0.22686056735015556, -0.008830269760482467),
    (0.2270319382053587, 0.9730738938817304, 0.03979567916953876),
    (-0.00043556537462748507, -0.04076125645036201, 0.9991688196973484),
)
MIXTURE_WEIGHTS = (0.4, 0.6)
MEANS = ((-1.0, 1.0), (1.0, -1.0))
WIDE_SCALE = 2.0
OOD_NOISE = 0.1


def width(theta: Tensor) -> Tensor:
    """σ(θ) = 0.6 + 0.4 θ of the θ-dependent mixture component; θ (batch, 1) -> (batch,)."""
    return 0.6 + 0.4 * theta[:, 0]


class PolynomialSurface(Simulator):
    """The polynomial-surface mixture, with its exact likelihood, posterior and manifold."""

    name = "polynomial_surface"
    theta_dim = 1
    data_dim = 3
    manifold_dim = 2
    theta_names = ("theta",)

    def __init__(self) -> None:
        self.rotation = torch.tensor(ROTATION, dtype=torch.float64)
        self.coefficients = torch.tensor(COEFFICIENTS, dtype=torch.float64)
        self.exponents = torch.tensor(EXPONENTS, dtype=torch.float64)  # (21, 2)
        self._prior = torch.distributions.Independent(
            torch.distributions.Uniform(torch.tensor([-1.0]), torch.tensor([1.0])), 1
        )

    @property
    def prior(self) -> torch.distributions.Distribution:
        return self._prior

    # ---- the manifold -----------------------------------------------------------------------
    def height(self, z: Tensor) -> Tensor:
        """f(z) = exp(-0.1 ‖z‖²) Σ a_ij z0^i z1^j; z (batch, 2) -> (batch,)."""
        monomials = (z.unsqueeze(-2) ** self.exponents.to(z)).prod(-1)  # (batch, 21)
        return torch.exp(-0.1 * (z**2).sum(-1)) * (monomials @ self.coefficients.to(z))

    def height_gradient(self, z: Tensor) -> Tensor:
        """∇f(z) = exp(-0.1‖z‖²) (∇P(z) - 0.2 z P(z)); z (batch, 2) -> (batch, 2)."""
        e = self.exponents.to(z)
        a = self.coefficients.to(z)
        polynomial = (z.unsqueeze(-2) ** e).prod(-1) @ a
        gradient = []
        for k in range(2):  # d/dz_k z0^i z1^j = e_k z_k^(e_k - 1) Π_{l≠k} z_l^e_l
            lowered = e.clone()
            lowered[:, k] = (lowered[:, k] - 1).clamp(min=0)
            gradient.append((z.unsqueeze(-2) ** lowered).prod(-1) @ (a * e[:, k]))
        envelope = torch.exp(-0.1 * (z**2).sum(-1))
        return envelope.unsqueeze(-1) * (torch.stack(gradient, -1) - 0.2 * z * polynomial.unsqueeze(-1))

    def chart(self, z: Tensor) -> Tensor:
        """φ(z) = R (z0, z1, f(z)); z (batch, 2) -> x (batch, 3)."""
        return torch.cat([z, self.height(z).unsqueeze(-1)], -1) @ self.rotation.to(z).T

    def coordinates(self, x: Tensor) -> Tensor:
        """Chart coordinates z = first two components of Rᵀx (exact for x on the surface)."""
        return (x @ self.rotation.to(x))[:, :2]  # .to(x): dtype and device of x

    def log_area_factor(self, z: Tensor) -> Tensor:
        """½ log det(Jφᵀ Jφ) = ½ log(1 + ‖∇f(z)‖²), the log surface-area element at φ(z)."""
        return 0.5 * torch.log1p((self.height_gradient(z) ** 2).sum(-1))

    def normal(self, z: Tensor) -> Tensor:
        """Unit normal of the surface at φ(z): R (-∇f, 1) / sqrt(1 + ‖∇f‖²)."""
        gradient = self.height_gradient(z)
        n = torch.cat([-gradient, torch.ones_like(gradient[:, :1])], -1) @ self.rotation.to(z).T
        return n / n.norm(dim=-1, keepdim=True)

    def vertical_offset(self, x: Tensor) -> Tensor:
        """Signed offset along the rotated third axis, (Rᵀx)_2 - f(z): the original code's
        'distance', not the orthogonal distance (see `distance_to_manifold`)."""
        self.check_x(x)
        rotated = x.double() @ self.rotation.to(x.device)
        return (rotated[:, 2] - self.height(rotated[:, :2])).to(x.dtype)

    def distance_to_manifold(self, x: Tensor, iterations: int = 100) -> Tensor:
        """True orthogonal distance min_z ‖x - φ(z)‖, by damped Gauss-Newton in float64
        started at z = first two components of Rᵀx; x (batch, 3) -> (batch,)."""
        self.check_x(x)
        target = x.double()
        z = self.coordinates(target)
        R = self.rotation.to(target)

        def residual(z: Tensor) -> Tensor:
            return self.chart(z) - target

        r = residual(z)
        cost = (r**2).sum(-1)
        for _ in range(iterations):
            jacobian = R[:, :2] + R[:, 2:] * self.height_gradient(z).unsqueeze(-2)  # (batch, 3, 2)
            normal_matrix = jacobian.mT @ jacobian  # ⪰ I, always well conditioned
            step = -torch.linalg.solve(normal_matrix, (jacobian.mT @ r.unsqueeze(-1))).squeeze(-1)
            scale = torch.ones_like(cost)
            improved = torch.zeros_like(cost, dtype=torch.bool)
            for _ in range(20):  # backtracking: halve the step where the cost does not drop
                candidate = z + scale.unsqueeze(-1) * step
                candidate_cost = (residual(candidate) ** 2).sum(-1)
                accept = (candidate_cost <= cost) & ~improved
                z = torch.where(accept.unsqueeze(-1), candidate, z)
                cost = torch.where(accept, candidate_cost, cost)
                improved |= accept
                if bool(improved.all()):
                    break
                scale = torch.where(improved, scale, scale / 2)
            r = residual(z)
            if float(step.abs().max()) < 1e-12:
                break
        return cost.sqrt().to(x.dtype)

    # ---- the density on it -------------------------------------------------------------------
    def log_prob_coordinates(self, z: Tensor, theta: Tensor) -> Tensor:
        """log p(z|θ) of the latent mixture (logsumexp over components); rows paired."""
        log_two_pi = math.log(2 * math.pi)
        self.check_theta(theta)
        means = torch.tensor(MEANS, dtype=z.dtype, device=z.device)
        scales = torch.stack([width(theta).to(z.dtype), torch.full_like(z[:, 0], WIDE_SCALE)], -1)
        squared = ((z.unsqueeze(-2) - means) ** 2).sum(-1)  # (batch, 2 components)
        log_normal = -0.5 * squared / scales**2 - 2 * torch.log(scales) - log_two_pi
        log_weights = torch.log(torch.tensor(MIXTURE_WEIGHTS, dtype=z.dtype, device=z.device))
        return torch.logsumexp(log_weights + log_normal, dim=-1)

    def log_likelihood(
        self, x: Tensor, theta: Tensor, measure: Literal["surface", "chart"] = "surface"
    ) -> Tensor:
        """Exact log p(x|θ) for x on the surface, rows of x and θ paired -> (batch,).

        measure="surface": density w.r.t. the surface's area element,
            log p(z|θ) - ½ log(1 + ‖∇f(z)‖²)  (what an M-flow models);
        measure="chart": density of the chart coordinates, log p(z|θ), with z from Rᵀx.
        The two differ by a θ-independent term that cancels in posteriors and ratios.
        """
        self.check_x(x)
        self.check_theta(theta)
        if x.shape[0] != theta.shape[0]:
            raise ValueError(f"x and theta must have the same batch size, got {x.shape[0]} and {theta.shape[0]}")
        if measure not in ("surface", "chart"):
            raise ValueError(f"measure must be 'surface' or 'chart', got {measure!r}")
        z = self.coordinates(x.double())
        log_p = self.log_prob_coordinates(z, theta.double())
        if measure == "surface":
            log_p = log_p - self.log_area_factor(z)
        return log_p.to(x.dtype)

    def exact_posterior(self, x_observed: Tensor, resolution: int = 2001) -> GridPosterior:
        """p(θ | x_1..x_m) ∝ p(θ) Π_i p(x_i|θ) on a grid of `resolution` cell centres over the
        prior support, normalized exactly on the grid (θ is 1-D, no MCMC needed)."""
        self.check_x(x_observed)
        grid = GridPosterior.cell_centres(lower=[-1.0], upper=[1.0], resolution=resolution)
        z = self.coordinates(x_observed.double())
        pairs_theta = grid.double().repeat_interleave(len(z), dim=0)  # (G·m, 1), vectorized
        log_likelihood = self.log_prob_coordinates(z.repeat(len(grid), 1), pairs_theta)
        log_likelihood = log_likelihood.view(len(grid), len(z)).sum(-1)
        return GridPosterior(grid, log_likelihood + self.prior.log_prob(grid).double())

    def exact_grid_posterior(self, x_observed: Tensor) -> GridPosterior:
        """`exact_posterior` at its default resolution (the protocol's reference posterior)."""
        return self.exact_posterior(x_observed)

    # ---- sampling -----------------------------------------------------------------------------
    def sample_coordinates(self, theta: Tensor, generator: torch.Generator) -> Tensor:
        """z ~ p(z|θ_i), one per row, in float64."""
        self.check_theta(theta)
        n = theta.shape[0]
        narrow = torch.rand(n, generator=generator, dtype=torch.float64) < MIXTURE_WEIGHTS[0]
        noise = torch.randn(n, 2, generator=generator, dtype=torch.float64)
        means = torch.tensor(MEANS, dtype=torch.float64)
        scale = torch.where(narrow, width(theta.double()), torch.full((n,), WIDE_SCALE, dtype=torch.float64))
        return torch.where(narrow.unsqueeze(-1), means[0], means[1]) + scale.unsqueeze(-1) * noise

    def _simulate(self, theta: Tensor, generator: torch.Generator) -> Tensor:
        return self.chart(self.sample_coordinates(theta, generator)).to(theta.dtype)

    def simulate_ood(self, n: int, seed: int | torch.Generator | None = None) -> Tensor:
        """The paper's out-of-distribution set: x at θ = 0 plus isotropic N(0, 0.1²) noise in R³."""
        generator = as_generator(seed)
        x = self._simulate(torch.zeros(n, 1), generator)
        return x + OOD_NOISE * torch.randn(x.shape, generator=generator)
