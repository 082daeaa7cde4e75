"""The simulator protocol shared by every adapter (see DESIGN.md, "Simulators")."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor

from mflow_sbi.random import sample_distribution
from mflow_sbi.validation import check_in_support, check_matrix


def as_generator(seed: int | torch.Generator | None) -> torch.Generator:
    """A `torch.Generator` from a seed (or a fresh, randomly seeded one for None)."""
    if isinstance(seed, torch.Generator):
        return seed
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(int(seed))
    return generator


@dataclass
class GoldData:
    """Augmented data for one simulated batch (Brehmer, Louppe, Pavez & Cranmer 2020, "Mining
    gold from implicit models"): the latent variables z of each event, the joint score
    t(x, z|θ) = ∇_θ log p(x, z|θ) and the joint log ratio log r(x, z|θ, θ_ref) =
    log p(x, z|θ) - log p(x, z|θ_ref), both at the event's own θ."""

    latent: Tensor  # (batch, latent_dim)
    joint_score: Tensor  # (batch, theta_dim)
    joint_log_ratio: Tensor  # (batch,)
    theta_ref: Tensor  # (theta_dim,)


class Simulator(ABC):
    """A simulator p(x|θ) with a `torch.distributions` prior over θ.

    Shapes are batch first: θ is (batch, theta_dim), x is (batch, data_dim). Every random
    function takes a seed or a `torch.Generator`; the same seed gives the same result.
    """

    theta_dim: int
    data_dim: int
    manifold_dim: int | None = None

    @property
    @abstractmethod
    def prior(self) -> torch.distributions.Distribution:
        """The prior over θ; its event shape is (theta_dim,)."""

    @abstractmethod
    def _simulate(self, theta: Tensor, generator: torch.Generator) -> Tensor:
        """One x per row of a validated θ."""

    def _simulate_gold(self, theta: Tensor, generator: torch.Generator) -> tuple[Tensor, GoldData]:
        """x and its gold data, for simulators that expose their latent process."""
        raise NotImplementedError(f"{type(self).__name__} provides no gold data (joint score and ratio)")

    def simulate(
        self, theta: Tensor, seed: int | torch.Generator | None = None, return_gold: bool = False
    ) -> Tensor | tuple[Tensor, GoldData]:
        """Draw one x ~ p(x|θ_i) per row θ_i of `theta` (batch, theta_dim) -> (batch, data_dim);
        with `return_gold`, also the event's `GoldData` (where the simulator provides it)."""
        theta = self.check_theta(theta)
        if return_gold:
            return self._simulate_gold(theta, as_generator(seed))
        return self._simulate(theta, as_generator(seed))

    def sample_prior(self, n: int, seed: int | torch.Generator | None = None) -> Tensor:
        """Draw n parameter points from the prior, reproducibly -> (n, theta_dim)."""
        return sample_distribution(self.prior, n, as_generator(seed))

    def simulate_joint(self, n: int, seed: int | torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """(θ, x) pairs with θ from the prior: the usual training set."""
        generator = as_generator(seed)
        theta = self.sample_prior(n, generator)
        return theta, self._simulate(theta, generator)

    def check_theta(self, theta: Tensor) -> Tensor:
        """θ validated as (batch, theta_dim) inside the prior's support."""
        check_matrix("theta", theta, self.theta_dim)
        check_in_support("theta", theta, self.prior)
        return theta

    def check_x(self, x: Tensor) -> Tensor:
        """x validated as (batch, data_dim)."""
        return check_matrix("x", x, self.data_dim)
