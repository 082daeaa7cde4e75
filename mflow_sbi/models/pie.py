"""PIE: an ambient flow whose latents split into manifold coordinates u and off-manifold v
(Beitler et al. 2019; conditional variants from Brehmer & Cranmer 2020, §2)."""

from __future__ import annotations

import math
from dataclasses import asdict

from torch import Tensor

from mflow_sbi.models.base import ConditionalModel, as_flow_config
from mflow_sbi.transforms import FlowConfig, build_flow, pad, project


class PIE(ConditionalModel):
    """(u, v) = f(x), log p(x|θ) = log p_h(u|θ) + log N(v; 0, ε² I) + log|det J_f(x)|.

    `conditional_manifold=True` is the original PIE: f depends on θ, so the manifold does too.
    `False` conditions only h on θ ("PIE, unconditional manifold"), and its fast part is
    log p_h(u|θ). The density has support on all of R^D, while the generative mode samples
    v = 0, i.e. x = f⁻¹(h(ũ|θ), 0): that sampler does not follow the tractable density (paper
    §2.C of the supplement) — use the density for inference and the sampler for generation.
    """

    name = "pie"
    schedules = ("likelihood",)

    def __init__(
        self,
        data_dim: int,
        theta_dim: int,
        latent_dim: int,
        conditional_manifold: bool = False,
        epsilon: float = 0.01,
        outer: FlowConfig | dict | None = None,
        inner: FlowConfig | dict | None = None,
    ) -> None:
        super().__init__(data_dim, theta_dim, latent_dim, inner)
        if not epsilon > 0:
            raise ValueError(f"epsilon must be positive, got {epsilon}")
        outer = as_flow_config(outer)
        self.conditional_manifold, self.epsilon = conditional_manifold, epsilon
        self.outer = build_flow(data_dim, theta_dim if conditional_manifold else 0, outer)
        self._config.update(conditional_manifold=conditional_manifold, epsilon=epsilon, outer=asdict(outer))

    @property
    def encoder_depends_on_theta(self) -> bool:
        return self.conditional_manifold

    def _outer(self, theta: Tensor | None):
        return self.outer(theta if self.conditional_manifold else None)

    def _encode(self, x: Tensor, theta: Tensor | None) -> Tensor:
        return project(self._outer(theta)(x), self.latent_dim)

    def _decode(self, u: Tensor, theta: Tensor | None) -> Tensor:
        return self._outer(theta).inv(pad(u, self.data_dim))

    def _log_prob(self, x: Tensor, theta: Tensor, exact: bool) -> Tensor:
        z, ladj = self._outer(theta).call_and_ladj(x)
        u, v = z[:, : self.latent_dim], z[:, self.latent_dim :]
        log_p = self.log_prob_latent(u, theta)
        if not exact and not self.conditional_manifold:
            return log_p
        log_p_v = -0.5 * (v / self.epsilon) ** 2 - math.log(self.epsilon) - 0.5 * math.log(2 * math.pi)
        return log_p + log_p_v.sum(-1) + ladj
