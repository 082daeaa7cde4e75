"""Per-sample losses, each `loss(model, x, theta, ...) -> (batch,)`, and the training phases that
pair a loss with the parameters it updates (Brehmer & Cranmer 2020, §3, "M/D training").

SCANDAL (Brehmer et al. 2018, "Mining gold from implicit models"; used for every conditional
density model in Brehmer & Cranmer 2020, §4.2) adds the joint score of the simulator to the
likelihood or density phase: loss = NLL + α · ‖∇_θ log p̂(x|θ) - t(x,z|θ)‖².
"""

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


Loss = Callable[..., Tensor]


def score_matching_term(log_likelihood: Tensor, theta: Tensor, score: Tensor, create_graph: bool) -> Tensor:
    """‖∇_θ log p̂ - t‖² per sample, with the model score from autograd; `create_graph` (while
    training) keeps the graph so that the term's gradient reaches the model."""
    (model_score,) = torch.autograd.grad(log_likelihood.sum(), theta, create_graph=create_graph)
    return ((model_score - score) ** 2).sum(-1)


def scandal(likelihood_loss: Loss, alpha: float) -> Loss:
    """The SCANDAL version of a negative-log-likelihood loss:
    `loss(model, x, θ, t) = nll + α · ‖∇_θ(-nll) - t‖²` with t the joint score (rows paired;
    in the units of θ the model sees, see `Standardization.score`)."""
    if not alpha > 0:
        raise ValueError(f"the SCANDAL weight alpha must be positive, got {alpha}")

    def loss(model: ConditionalModel, x: Tensor, theta: Tensor, score: Tensor) -> Tensor:
        training = torch.is_grad_enabled()  # False during validation
        with torch.enable_grad():
            theta = theta.detach().requires_grad_(True)
            nll = likelihood_loss(model, x, theta)
            value = nll + alpha * score_matching_term(-nll, theta, score, create_graph=training)
        return value if training else value.detach()

    return loss


@dataclass(frozen=True)
class Phase:
    """A loss, the parameters it trains, and the fields of the training data it reads (the
    loss is called as `loss(model, *(batch[f] for f in fields))`)."""

    name: str
    loss: Loss
    parameters: Callable[[nn.Module], Iterator[nn.Parameter]]
    weight: float = 1.0
    fields: tuple[str, ...] = ("x", "theta")


def likelihood_phase(scandal_alpha: float | None = None) -> Phase:
    if scandal_alpha is None:
        return Phase("likelihood", negative_log_likelihood, lambda m: m.parameters())
    loss = scandal(negative_log_likelihood, scandal_alpha)
    return Phase("likelihood+scandal", loss, lambda m: m.parameters(), fields=("x", "theta", "score"))


def manifold_phase(weight: float) -> Phase:
    return Phase("manifold", reconstruction_loss, lambda m: m.manifold_parameters(), weight)


def density_phase(scandal_alpha: float | None = None) -> Phase:
    if scandal_alpha is None:
        return Phase("density", latent_negative_log_likelihood, lambda m: m.density_parameters())
    loss = scandal(latent_negative_log_likelihood, scandal_alpha)
    return Phase("density+scandal", loss, lambda m: m.density_parameters(), fields=("x", "theta", "score"))


def schedule(name: str, reconstruction_weight: float = 1000.0, scandal_alpha: float | None = None) -> list[tuple[Phase, ...]]:
    """The stages of a training schedule; each stage steps its phases in turn on every batch.

    likelihood:  [(ML,)]            — AF, PIE
    sequential:  [(M,), (D,)]       — manifold phase to convergence, then density phase
    alternating: [(M, D)]           — one M step and one D step per batch

    With `scandal_alpha`, the ML and D phases carry SCANDAL's score term (the manifold phase
    never sees θ, so it has none).
    """
    stages = {
        "likelihood": [(likelihood_phase(scandal_alpha),)],
        "sequential": [(manifold_phase(reconstruction_weight),), (density_phase(scandal_alpha),)],
        "alternating": [(manifold_phase(reconstruction_weight), density_phase(scandal_alpha))],
    }
    if name not in stages:
        raise ValueError(f"unknown schedule {name!r}; choose one of {sorted(stages)}")
    return stages[name]
