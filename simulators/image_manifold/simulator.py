"""Images on an n-dimensional manifold rendered by a StyleGAN2-architecture generator, with a
θ-dependent latent density (Brehmer & Cranmer 2020, §4 "Images"; spec
`shared/specs/image_manifold.md`).

n of the generator's latent coordinates vary (the first n entries of z), the others are fixed
from `latent_seed`; the image is x = ½ tanh(γ G(z(u))) ∈ (-0.5, 0.5)^(3×R×R), a smooth map of
u, so the images lie exactly on an n-dimensional manifold (γ = `output_gain`). The latent
density is Gaussian with a θ-dependent scale on the first ⌈n/2⌉ coordinates,

    u_i ~ N(0, σ_i(θ)²),  log σ_i(θ) = α θ for i < ⌈n/2⌉, 0 otherwise,  θ ~ N(0, 1),

so the posterior on θ depends on the images only through their latents u. The exact density
on the manifold is log p(u|θ) - ½ log det(JᵀJ)(u), J = ∂x/∂u (3R² × n).

Conventions: pixel values are continuous in (-0.5, 0.5) (the usual [0, 255] → [-0.5, 0.5]
scaling of 8-bit images, without the quantization, so that the images lie on the manifold).
With `quantize=True` images are rounded to 8 bits and dequantized with uniform noise,
(k + U(0, 1)) / 256 - ½; they then lie within 1/256 per pixel of the manifold.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import Tensor

from mflow_sbi.inference.grid import GridPosterior
from mflow_sbi.transforms import log_det_metric
from mflow_sbi.transforms.image import check_images, dequantize, quantize
from mflow_sbi.validation import check_matrix
from mflow_sbi.simulator import GoldData, Simulator, as_generator
from simulators.image_manifold.generator import GeneratorConfig, StyleGAN2Generator


class ImageManifold(Simulator):
    """The StyleGAN image manifold with exact latents, posteriors and manifold distances."""

    name = "image_manifold"
    theta_dim = 1
    theta_names = ("theta",)

    def __init__(
        self,
        manifold_dim: int = 64,
        resolution: int = 64,
        generator: StyleGAN2Generator | None = None,
        latent_seed: int = 1,
        scale_slope: float = 0.25,
        output_gain: float = 0.5,
        quantize: bool = False,
    ) -> None:
        self.generator = (generator or StyleGAN2Generator(GeneratorConfig(resolution=resolution))).eval().requires_grad_(False)
        self._given_generator = generator is not None
        style_dim = self.generator.config.style_dim
        if not 1 <= manifold_dim <= style_dim:
            raise ValueError(f"manifold_dim must lie in 1…{style_dim} (the generator's latent size), got {manifold_dim}")
        if not (scale_slope > 0 and output_gain > 0):
            raise ValueError(f"scale_slope and output_gain must be positive, got {scale_slope}, {output_gain}")
        self.manifold_dim, self.scale_slope, self.output_gain, self.quantize = manifold_dim, scale_slope, output_gain, quantize
        self.latent_seed = latent_seed
        self.resolution = self.generator.resolution
        self.image_shape = (3, self.resolution, self.resolution)
        self.data_dim = 3 * self.resolution**2
        self.fixed_latent = torch.randn(style_dim, generator=torch.Generator().manual_seed(latent_seed))
        self.scaled = torch.arange(manifold_dim) < math.ceil(manifold_dim / 2)  # coordinates with σ(θ)
        self._generator64: StyleGAN2Generator | None = None
        self._prior = torch.distributions.Independent(torch.distributions.Normal(torch.zeros(1), torch.ones(1)), 1)

    @property
    def prior(self) -> torch.distributions.Distribution:
        return self._prior

    @property
    def config(self) -> dict[str, Any]:
        """The constructor's arguments; a simulator around a given `generator` has none (its
        weights are no JSON), so this raises a ValueError."""
        if self._given_generator:
            raise ValueError("an ImageManifold built around a given generator cannot be rebuilt from options")
        return {
            "manifold_dim": self.manifold_dim, "resolution": self.resolution, "latent_seed": self.latent_seed,
            "scale_slope": self.scale_slope, "output_gain": self.output_gain, "quantize": self.quantize,
        }  # fmt: skip

    # ---- the manifold -----------------------------------------------------------------------
    def _generator_for(self, dtype: torch.dtype) -> StyleGAN2Generator:
        if dtype == torch.float64:
            if self._generator64 is None:
                self._generator64 = copy.deepcopy(self.generator).double()
            return self._generator64
        return self.generator

    def render(self, u: Tensor) -> Tensor:
        """x = ½ tanh(γ G(z(u))) with z = (u, fixed coordinates); u (batch, n) ->
        (batch, 3, R, R) in u's dtype (float64 runs a float64 copy of the generator)."""
        check_matrix("u", u, self.manifold_dim)
        z = torch.cat([u, self.fixed_latent[self.manifold_dim :].to(u).expand(len(u), -1)], -1)
        return 0.5 * torch.tanh(self.output_gain * self._generator_for(u.dtype)(z))

    def log_det_metric(self, u: Tensor, chunk_size: int | None = None) -> Tensor:
        """log det(JᵀJ)(u), J = ∂x/∂u, in forward mode and float64 -> (batch,)."""
        return log_det_metric(lambda v: self.render(v).flatten(1), u.double(), chunk_size)

    def jacobian(self, u: Tensor) -> Tensor:
        """J = ∂x/∂u in float64 -> (batch, 3R², n), by n forward-mode products."""
        u = check_matrix("u", u, self.manifold_dim).double()
        basis = torch.eye(self.manifold_dim, dtype=torch.float64).unsqueeze(1).expand(-1, len(u), -1)
        chart = lambda v: self.render(v).flatten(1)  # noqa: E731
        columns = torch.func.vmap(lambda tangent: torch.func.jvp(chart, (u,), (tangent,))[1])(basis)
        return columns.permute(1, 2, 0)

    def injectivity(self, u: Tensor) -> Tensor:
        """Smallest singular value of J(u) per row -> (batch,): bounded away from 0 on the
        sampled region means the chart is locally injective (an immersion) there."""
        return torch.linalg.svdvals(self.jacobian(u))[:, -1]

    def project(
        self, x: Tensor, starts: int = 4, steps: int = 300, learning_rate: float = 0.05, seed: int | torch.Generator | None = 0
    ) -> tuple[Tensor, Tensor]:
        """u* = argmin_u ‖x - render(u)‖ and the distance ‖x - render(u*)‖, by Adam from
        `starts` seeded N(0, I) starting points per image (rows are independent: Adam acts
        element-wise), learning rate decayed to 1% (cosine), in float64 -> ((batch, n), (batch,))."""
        x = self.check_x(x).double()
        if starts < 1 or steps < 1:
            raise ValueError(f"starts and steps must be ≥ 1, got {starts}, {steps}")
        target = x.repeat(starts, 1, 1, 1)
        u = torch.randn(len(target), self.manifold_dim, generator=as_generator(seed), dtype=torch.float64).requires_grad_(True)
        optimizer = torch.optim.Adam([u], lr=learning_rate)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps, eta_min=0.01 * learning_rate)
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            ((self.render(u) - target) ** 2).sum().backward()
            optimizer.step()
            scheduler.step()
        with torch.no_grad():
            distance = (self.render(u) - target).flatten(1).norm(dim=1).view(starts, len(x))
            best = distance.argmin(0)
            u_best = u.detach().view(starts, len(x), -1)[best, torch.arange(len(x))]
            return u_best, distance[best, torch.arange(len(x))]

    def distance_to_manifold(self, x: Tensor, **projection: int | float) -> Tensor:
        """min_u ‖x - render(u)‖ by `project` -> (batch,), in x's dtype."""
        return self.project(x, **projection)[1].to(x.dtype)

    # ---- the density on it -------------------------------------------------------------------
    def log_scales(self, theta: Tensor) -> Tensor:
        """log σ_i(θ) = α θ on the scaled coordinates, 0 on the others -> (batch, n)."""
        return self.scale_slope * theta[:, :1] * self.scaled.to(theta)

    def log_prob_latent(self, u: Tensor, theta: Tensor) -> Tensor:
        """log p(u|θ) = Σ_i log N(u_i; 0, σ_i(θ)²), rows paired -> (batch,)."""
        check_matrix("u", u, self.manifold_dim)
        self.check_theta(theta)
        log_sigma = self.log_scales(theta.to(u))
        return (-0.5 * (u * torch.exp(-log_sigma)) ** 2 - log_sigma - 0.5 * math.log(2 * math.pi)).sum(-1)

    def latent_score(self, u: Tensor, theta: Tensor) -> Tensor:
        """t = ∂_θ log p(u|θ) = α Σ_{i scaled} (u_i²/σ_i² - 1) -> (batch, 1); x is a
        deterministic function of u, so this is the joint score t(x, z|θ)."""
        sigma2 = torch.exp(2 * self.log_scales(theta.to(u)))
        return (self.scale_slope * (u**2 / sigma2 - 1) * self.scaled.to(u)).sum(-1, keepdim=True)

    def log_manifold_density(self, u: Tensor, theta: Tensor) -> Tensor:
        """Exact log p(x|θ) on the manifold at x = render(u): log p(u|θ) - ½ log det(JᵀJ)(u),
        in float64 -> (batch,)."""
        return self.log_prob_latent(u.double(), theta.double()) - 0.5 * self.log_det_metric(u)

    def exact_posterior(
        self,
        x_observed: Tensor | None = None,
        *,
        latents: Tensor | None = None,
        resolution: int = 2001,
        bounds: tuple[float, float] = (-4.0, 4.0),
        **projection: int | float,
    ) -> GridPosterior:
        """p(θ | x_1..x_m) ∝ N(θ; 0, 1) Π_j p(u_j|θ) on a grid over `bounds` (the prior is
        unbounded; ±4 holds all but 6e-5 of it). It depends on the images only through their
        latents: pass `latents` (the gold data) or `x_observed`, whose latents are then
        recovered by `project` (exact up to the optimizer's accuracy)."""
        if (x_observed is None) == (latents is None):
            raise ValueError("pass exactly one of x_observed and latents")
        u = self.project(x_observed, **projection)[0] if latents is None else check_matrix("latents", latents, self.manifold_dim)
        grid = GridPosterior.cell_centres([bounds[0]], [bounds[1]], resolution)
        grid64, u = grid.double(), u.double()
        # Σ_j log p(u_j|θ) for Gaussian scales needs only Σ_j u_j² per coordinate group
        squared = (u**2 * self.scaled.double()).sum(), (u**2 * (~self.scaled).double()).sum()
        k, m = int(self.scaled.sum()), len(u)
        log_sigma = self.scale_slope * grid64[:, 0]
        log_likelihood = -0.5 * squared[0] * torch.exp(-2 * log_sigma) - m * k * log_sigma - 0.5 * squared[1]
        log_likelihood = log_likelihood - 0.5 * m * self.manifold_dim * math.log(2 * math.pi)
        return GridPosterior(grid, log_likelihood + self.prior.log_prob(grid).double())

    def exact_grid_posterior(self, x_observed: Tensor) -> GridPosterior:
        """`exact_posterior` of the images, their latents recovered by `project` (the protocol's
        reference posterior)."""
        return self.exact_posterior(x_observed)

    # ---- sampling -----------------------------------------------------------------------------
    def sample_latents(self, theta: Tensor, generator: torch.Generator) -> Tensor:
        """u ~ p(u|θ_i), one per row -> (batch, n)."""
        self.check_theta(theta)
        noise = torch.randn(len(theta), self.manifold_dim, generator=generator, dtype=theta.dtype)
        return noise * torch.exp(self.log_scales(theta))

    def _finish(self, u: Tensor, generator: torch.Generator) -> Tensor:
        with torch.no_grad():
            x = self.render(u)
        return dequantize(quantize(x), generator).to(x.dtype) if self.quantize else x

    def _simulate(self, theta: Tensor, generator: torch.Generator) -> Tensor:
        return self._finish(self.sample_latents(theta, generator), generator)

    def _simulate_gold(self, theta: Tensor, generator: torch.Generator) -> tuple[Tensor, GoldData]:
        """x and gold data: latent u, joint score ∂_θ log p(u|θ) and joint log ratio
        log p(u|θ) - log p(u|θ_ref = 0) (x is a deterministic function of u)."""
        u = self.sample_latents(theta, generator)
        reference = torch.zeros_like(theta)
        gold = GoldData(
            latent=u,
            joint_score=self.latent_score(u, theta),
            joint_log_ratio=self.log_prob_latent(u, theta) - self.log_prob_latent(u, reference),
            theta_ref=reference[0],
        )
        return self._finish(u, generator), gold

    def check_x(self, x: Tensor) -> Tensor:
        """x validated as images (batch, C, H, W) of this simulator's shape."""
        return check_images("x", x, self.image_shape)
