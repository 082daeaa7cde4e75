"""Per-sample losses, each `loss(model, x, theta) -> (batch,)`, and the training phases that
pair a loss with the parameters it updates (Brehmer & Cranmer 2020, §3, "M/D training")."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mflow_sbi.models import ConditionalModel


def negative_log_likelihood(model: ConditionalModel, x: Tensor, theta: Tensor) -> Tensor:
    """-log p(x|θ) with the model's exact density (AF, PIE)."""
    return -model.log_prob(x, theta, exact=True)


def reconstruction_loss(model: ConditionalModel, x: Tensor, theta: Tensor) -> Tensor:
    """‖x - g(g⁻¹(x))‖²: the manifold phase's loss (needs θ only where the manifold does)."""
    return model.reconstruction_error(x, theta if model.encoder_depends_on_theta else None)


def latent_negative_log_likelihood(model: ConditionalModel, x: Tensor, theta: Tensor) -> Tensor:
    """-log p_h(u|θ) with u = g⁻¹(x) held fixed: the density phase's loss, Eq. (3) without the
    -½ log det(J_gᵀ J_g) term, which does not depend on h."""
    with torch.no_grad():
        u = model.encode(x)
    return -model.log_prob_latent(u, theta)


@dataclass(frozen=True)
class Phase:
    """A loss and the parameters it trains."""

    name: str
    loss: Callable[[ConditionalModel, Tensor, Tensor], Tensor]
    parameters: Callable[[ConditionalModel], Iterator[nn.Parameter]]
    weight: float = 1.0


def likelihood_phase() -> Phase:
    return Phase("likelihood", negative_log_likelihood, lambda m: m.parameters())


def manifold_phase(weight: float) -> Phase:
    return Phase("manifold", reconstruction_loss, lambda m: m.manifold_parameters(), weight)


def density_phase() -> Phase:
    return Phase("density", latent_negative_log_likelihood, lambda m: m.density_parameters())


def schedule(name: str, reconstruction_weight: float = 1000.0) -> list[tuple[Phase, ...]]:
    """The stages of a training schedule; each stage steps its phases in turn on every batch.

    likelihood:  [(ML,)]            — AF, PIE
    sequential:  [(M,), (D,)]       — manifold phase to convergence, then density phase
    alternating: [(M, D)]           — one M step and one D step per batch
    """
    stages = {
        "likelihood": [(likelihood_phase(),)],
        "sequential": [(manifold_phase(reconstruction_weight),), (density_phase(),)],
        "alternating": [(manifold_phase(reconstruction_weight), density_phase())],
    }
    if name not in stages:
        raise ValueError(f"unknown schedule {name!r}; choose one of {sorted(stages)}")
    return stages[name]
