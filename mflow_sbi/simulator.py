"""The simulator protocol (see DESIGN.md, "Simulators") and the registry that finds simulators
by name: the built-in ones through the entry-point group `mflow_sbi.simulators`, any other by
an importable "package.module:ClassName" string."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import reduce
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from mflow_sbi.random import sample_distribution
from mflow_sbi.validation import check_in_support, check_matrix

if TYPE_CHECKING:
    from mflow_sbi.inference.grid import GridPosterior

ENTRY_POINT_GROUP = "mflow_sbi.simulators"

__all__ = ["ENTRY_POINT_GROUP", "GoldData", "Simulator", "as_generator", "build_simulator", "simulator_class", "simulator_names"]


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
    `name` is what `build_simulator` knows the class by: its registered name for the built-in
    simulators, "module:ClassName" unless a subclass sets it.
    """

    name: ClassVar[str]
    theta_dim: int
    data_dim: int
    manifold_dim: int | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = f"{cls.__module__}:{cls.__qualname__}"

    @property
    @abstractmethod
    def prior(self) -> torch.distributions.Distribution:
        """The prior over θ; its event shape is (theta_dim,)."""

    @property
    def theta_names(self) -> tuple[str, ...]:
        """The names of θ's components, theta_0, theta_1, … unless the simulator names them."""
        return tuple(f"theta_{i}" for i in range(self.theta_dim))

    @property
    def config(self) -> dict[str, Any]:
        """The constructor's keyword arguments (JSON-serializable) that rebuild an identical
        simulator: `build_simulator(sim.name, **sim.config)`."""
        return {}

    @abstractmethod
    def _simulate(self, theta: Tensor, generator: torch.Generator) -> Tensor:
        """One x per row of a validated θ."""

    def _simulate_gold(self, theta: Tensor, generator: torch.Generator) -> tuple[Tensor, GoldData]:
        """x and its gold data, for simulators that expose their latent process."""
        raise NotImplementedError(f"{self.name} provides no gold data (joint score and ratio)")

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

    def simulate_arrays(self, n: int, seed: int, theta: Tensor | None = None) -> dict[str, np.ndarray]:
        """n events as the arrays of a data file (what `mflow-sbi simulate` writes): x, theta (one
        prior draw per event, unless `theta` gives n rows or one row for every event) and, where
        the simulator provides gold data, its fields (latent, joint_score, joint_log_ratio,
        theta_ref, …). A simulator may add "metadata", a JSON object as a 0-d string array."""
        generator = as_generator(seed)
        if theta is None:
            theta = self.sample_prior(n, generator)
        else:
            theta = self.check_theta(theta)
            if len(theta) not in (1, n):
                raise ValueError(f"theta must have 1 row or n = {n} rows, got {len(theta)}")
            theta = theta.expand(n, -1).contiguous()
        if type(self)._simulate_gold is Simulator._simulate_gold:
            return {"x": self._simulate(theta, generator).numpy(), "theta": theta.numpy()}
        x, gold = self._simulate_gold(theta, generator)
        fields = {f.name: getattr(gold, f.name).numpy() for f in dataclasses.fields(gold)}
        return {"x": x.numpy(), "theta": theta.numpy()} | fields

    def simulate_reference_events(self, n: int, seed: int) -> dict[str, np.ndarray]:
        """n events at the reference θ_ref of the gold data, each paired with a θ from the prior,
        and their joint log ratio log r(x, z|θ, θ_ref), for ALICES: arrays x_reference,
        theta_reference and joint_log_ratio_reference."""
        raise NotImplementedError(f"{self.name} provides no reference events (they need gold data: the joint log ratio at any θ)")

    def exact_grid_posterior(self, x_observed: Tensor) -> GridPosterior:
        """The exact posterior p(θ | x_1..x_m) on a grid, where the simulator has one."""
        raise NotImplementedError(
            f"{self.name} provides no exact posterior (a simulator implements exact_posterior_samples or exact_grid_posterior)"
        )

    def exact_posterior_samples(self, x_observed: Tensor, n: int, seed: int = 0) -> Tensor:
        """n draws from the exact posterior p(θ | x_1..x_m) -> (n, theta_dim); by default from
        `exact_grid_posterior`."""
        return self.exact_grid_posterior(x_observed).sample(n, as_generator(seed))

    def check_theta(self, theta: Tensor) -> Tensor:
        """θ validated as (batch, theta_dim) inside the prior's support."""
        check_matrix("theta", theta, self.theta_dim)
        check_in_support("theta", theta, self.prior)
        return theta

    def check_x(self, x: Tensor) -> Tensor:
        """x validated as (batch, data_dim)."""
        return check_matrix("x", x, self.data_dim)


def simulator_names() -> list[str]:
    """The names of the registered simulators (entry-point group `mflow_sbi.simulators`)."""
    return sorted({entry.name for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)})


def simulator_class(name_or_path: str) -> type[Simulator]:
    """The `Simulator` subclass that `name_or_path` names: a registered name (`simulator_names`)
    or "package.module:ClassName"."""
    if ":" in name_or_path:
        module_name, _, class_name = name_or_path.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            raise ValueError(f"simulator {name_or_path!r}: cannot import module {module_name!r} ({error})") from None
        try:
            cls = reduce(getattr, class_name.split("."), module)
        except AttributeError:
            raise ValueError(f"simulator {name_or_path!r}: module {module_name!r} has no class {class_name!r}") from None
    else:
        entries = {entry.name: entry for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
        if name_or_path not in entries:
            raise ValueError(
                f"unknown simulator {name_or_path!r}: not a registered name ({', '.join(sorted(entries))}) "
                "nor a 'package.module:ClassName' path"
            )
        try:
            cls = entries[name_or_path].load()
        except (ImportError, AttributeError) as error:
            raise ValueError(f"simulator {name_or_path!r}: cannot load {entries[name_or_path].value} ({error})") from None
    if not (isinstance(cls, type) and issubclass(cls, Simulator)):
        raise ValueError(f"simulator {name_or_path!r} is {cls!r}, not a subclass of mflow_sbi.simulator.Simulator")
    return cls


def build_simulator(name_or_path: str, **options: Any) -> Simulator:
    """The simulator `name_or_path` names (see `simulator_class`), built with `options`, its
    constructor's keyword arguments."""
    cls = simulator_class(name_or_path)
    try:
        return cls(**options)
    except TypeError as error:
        raise ValueError(f"cannot build simulator {name_or_path!r} with options {options}: {error}") from None
