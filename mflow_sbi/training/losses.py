"""Training phases as data: each pairs one of the estimator's per-sample loss methods with the
parameters it updates (Brehmer & Cranmer 2020, §3, "M/D training"), and schedules are lists of
stages of phases.

The loss methods (`manifold_loss`, `density_loss`, `likelihood_loss`, `ratio_loss`) belong to
the estimator families; a phase names them, so phases, schedules and the estimators holding them
pickle. SCANDAL (Brehmer et al. 2018, "Mining gold from implicit models"; used for every
conditional density model in Brehmer & Cranmer 2020, §4.2) adds the simulator's joint score to a
likelihood or density phase: loss = NLL + α · ‖∇_θ log p̂(x|θ) - t(x,z|θ)‖², with θ and t in raw
units (the estimator's standardization is inside the autograd graph).

Paper 003 (Razavi et al. 2022) replaces the squared reconstruction error by a per-dimension Huber
penalty ("pixel rejection", `huber`), adds it with weight λ to the likelihood of a split flow
("penalized"), and trains a stack of charts level by level, each frozen before the next
("hierarchical"); the denoising normalizing flow (Horvat & Pfister 2021) is its baseline ("denoising").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


@dataclass(frozen=True)
class Phase:
    """`getattr(estimator, loss)(*(data[f] for f in fields), **options)` per sample, weighted by
    `weight`, trains the parameters `getattr(estimator, parameters)()`. With `score_weight` = α
    the SCANDAL term α · ‖∇_θ(-loss) - t‖² is added, t read from the field "score".

    `cache` = (field, method, parameters): an input of the loss that `getattr(estimator,
    method)(x)` computes without gradient from the parameters `getattr(estimator, parameters)()`.
    In a stage that does not update those parameters, the trainer computes it once for the whole
    data set and passes it as the keyword `field` (the density phase of sequential M/D training
    encodes u = g⁻¹(x) once instead of at every step); otherwise the loss computes it per batch.

    `scope`: keyword arguments of the loss, of the `parameters` method and of the cache's methods
    (the chart level a stage of hierarchical training updates)."""

    name: str
    loss: str
    parameters: str
    weight: float = 1.0
    fields: tuple[str, ...] = ("x", "theta")
    options: tuple[tuple[str, Any], ...] = ()
    score_weight: float | None = None
    cache: tuple[str, str, str] | None = None
    scope: tuple[tuple[str, Any], ...] = ()

    @property
    def reads(self) -> tuple[str, ...]:
        """Every field of the training data this phase reads."""
        return self.fields + (("score",) if self.score_weight is not None else ())


def huber(error: Tensor, delta: float) -> Tensor:
    """Paper 003, Eq. 2, elementwise: H_δ(e) = ½ e² for |e| < δ, δ (|e| - ½ δ) otherwise (the
    quadratic and linear branches meet with equal value and slope at |e| = δ)."""
    magnitude = error.abs()
    return torch.where(magnitude < delta, 0.5 * error**2, delta * (magnitude - 0.5 * delta))


def score_matching_term(log_likelihood: Tensor, theta: Tensor, score: Tensor, create_graph: bool) -> Tensor:
    """‖∇_θ log p̂ - t‖² per sample, with the model score from autograd; `create_graph` (while
    training) keeps the graph so that the term's gradient reaches the model."""
    (model_score,) = torch.autograd.grad(log_likelihood.sum(), theta, create_graph=create_graph)
    return ((model_score - score) ** 2).sum(-1)


def phase_loss(phase: Phase, estimator: Any, data: dict[str, Tensor]) -> Tensor:
    """The weighted per-sample loss of `phase` on the named tensors in `data` -> (batch,)."""
    loss = getattr(estimator, phase.loss)
    arguments = [data[field] for field in phase.fields]
    options = dict(phase.options) | dict(phase.scope)
    if phase.cache is not None and phase.cache[0] in data:
        options[phase.cache[0]] = data[phase.cache[0]]
    if phase.score_weight is None:
        return phase.weight * loss(*arguments, **options)
    training = torch.is_grad_enabled()  # False during validation
    with torch.enable_grad():
        theta = data["theta"].detach().requires_grad_(True)
        arguments[phase.fields.index("theta")] = theta
        nll = loss(*arguments, **options)
        value = nll + phase.score_weight * score_matching_term(-nll, theta, data["score"], create_graph=training)
    return phase.weight * (value if training else value.detach())


def schedule(
    name: str,
    reconstruction_weight: float = 1000.0,
    score_weight: float | None = None,
    hard_labels: bool = False,
    huber_delta: float | None = None,
    penalty_weight: float = 1.0,
    levels: int = 1,
) -> list[tuple[Phase, ...]]:
    """The stages of a training schedule; each stage steps its phases in turn on every batch.

    likelihood:   [(ML,)]       — AF, PIE: exact negative log-likelihood
    sequential:   [(M,), (D,)]  — manifold phase to convergence, then density phase (on u = g⁻¹(x)
                                  encoded once, the manifold being frozen)
    alternating:  [(M, D)]      — one M step and one D step per batch
    ratio:        [(R,)]        — ALICES (`hard_labels`: CARL); `score_weight` is its α
    penalized:    [(P,)]        — paper 003, Eq. 5: the split flow's likelihood plus λ times the
                                  mean per-dimension penalty, every parameter at once
    hierarchical: [(P₁,), …, (P_levels,), (D,)] — paper 003, Alg. 2: chart level m alone on the
                                  penalized likelihood of its input (the coordinates of the levels
                                  below, frozen and encoded once), then the density phase on the
                                  innermost coordinates
    denoising:    [(N,)]        — DNF: likelihood of noise-inflated data plus the reconstruction
                                  of the clean data

    With `score_weight` the ML and D phases carry SCANDAL's score term (the manifold phase never
    sees θ, so it has none). `huber_delta` = δ makes every reconstruction penalty per-dimension
    Huber (`huber`; None: squared error), `penalty_weight` is the λ of the penalized likelihoods.
    """
    if not reconstruction_weight > 0:
        raise ValueError(f"reconstruction_weight must be positive, got {reconstruction_weight}")
    if score_weight is not None and not score_weight > 0:
        raise ValueError(f"score_weight must be positive or None, got {score_weight}")
    if huber_delta is not None and not huber_delta > 0:
        raise ValueError(f"huber_delta must be positive or None, got {huber_delta}")
    if not penalty_weight > 0:
        raise ValueError(f"penalty_weight must be positive, got {penalty_weight}")
    if levels < 1:
        raise ValueError(f"levels must be ≥ 1, got {levels}")
    delta = () if huber_delta is None else (("delta", huber_delta),)
    manifold = Phase("manifold", "manifold_loss", "manifold_parameters", reconstruction_weight, options=delta)
    suffix = "" if score_weight is None else "+scandal"
    density = Phase(
        "density" + suffix, "density_loss", "density_parameters", score_weight=score_weight,
        cache=("coordinates", "manifold_coordinates", "manifold_parameters"),
    )  # fmt: skip
    likelihood = Phase("likelihood" + suffix, "likelihood_loss", "parameters", score_weight=score_weight)
    ratio_name = "carl" if hard_labels else "alice" if score_weight is None else "alices"
    ratio = Phase(
        ratio_name, "ratio_loss", "parameters",
        fields=("x", "theta", "joint_log_ratio", "joint_score", "reference_class"),
        options=(("score_weight", score_weight), ("hard_labels", hard_labels)),
    )  # fmt: skip
    penalty = (("penalty_weight", penalty_weight), ("delta", huber_delta))
    penalized = Phase("penalized" + suffix, "penalized_likelihood_loss", "parameters", options=penalty, score_weight=score_weight)
    level_stages = [
        (Phase(
            f"level {level}", "level_loss", "level_parameters", options=penalty, scope=(("level", level),),
            cache=None if level == 1 else ("inputs", "level_inputs", "lower_level_parameters"),
        ),)
        for level in range(1, levels + 1)
    ]  # fmt: skip
    denoising = Phase("denoising", "denoising_loss", "parameters", options=(("reconstruction_weight", reconstruction_weight),))
    stages = {
        "likelihood": [(likelihood,)],
        "sequential": [(manifold,), (density,)],
        "alternating": [(manifold, density)],
        "ratio": [(ratio,)],
        "penalized": [(penalized,)],
        "hierarchical": [*level_stages, (density,)],
        "denoising": [(denoising,)],
    }
    if name not in stages:
        raise ValueError(f"unknown schedule {name!r}; choose one of {sorted(stages)}")
    return stages[name]
