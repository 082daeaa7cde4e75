"""The simulator protocol shared by every adapter (see DESIGN.md, "Simulators")."""

from __future__ import annotations

from abc import ABC, abstractmethod

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

    def simulate(self, theta: Tensor, seed: int | torch.Generator | None = None) -> Tensor:
        """Draw one x ~ p(x|θ_i) per row θ_i of `theta` (batch, theta_dim) -> (batch, data_dim)."""
        theta = self.check_theta(theta)
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
        check_matrix("theta", theta, self.theta_dim)
        check_in_support("theta", theta, self.prior)
        return theta

    def check_x(self, x: Tensor) -> Tensor:
        return check_matrix("x", x, self.data_dim)
