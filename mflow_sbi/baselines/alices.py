"""ALICES: a parameterized likelihood-ratio estimator trained with the joint likelihood ratio
and joint score from the simulator (Brehmer, Louppe, Pavez & Cranmer 2020, "Mining gold from
implicit models", PNAS 117, 5242; the baseline of Brehmer & Cranmer 2020, Table 3).

The network gives log r̂(x|θ, θ_ref) ≈ log p(x|θ) - log p(x|θ_ref) for a fixed reference θ_ref.
As a classifier between x ~ p(x|θ) (class 0, "numerator") and x ~ p(x|θ_ref) (class 1) its
decision function is ŝ = 1/(1 + r̂) = sigmoid(-log r̂). The loss, per sample,

    BCE(logit = -log r̂(x|θ), target = 1/(1 + r(x,z|θ, θ_ref)))  on both classes
    + α · ‖∇_θ log r̂(x|θ) - t(x,z|θ)‖²                            on numerator samples,

uses the joint ratio r(x,z|θ,θ_ref) as a soft label and the joint score t(x,z|θ) as a
gradient label; at the minimum r̂ = r(x|θ, θ_ref). α = None drops the score term (ALICE);
`hard_labels=True` with no score term is CARL (Cranmer, Pavez & Louppe 2015).

Because log p(x|θ) = log r̂(x|θ, θ_ref) + log p(x|θ_ref), log r̂ is the θ-dependent part of the
log-likelihood in the sense of the estimator protocol (`Estimator.log_prob(exact=False)`): the
same likelihood-ratio, posterior and sbi APIs (`likelihood(x_o)`, `mcmc_posterior`,
`FastLikelihoodPotential`) run on it unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mflow_sbi.estimator import Estimator
from mflow_sbi.models.parts import check_positive_int
from mflow_sbi.random import seeded
from mflow_sbi.registry import register
from mflow_sbi.training.losses import schedule, score_matching_term
from mflow_sbi.training.trainer import TrainingConfig, fit
from mflow_sbi.validation import check_matrix, check_same_batch, is_number


@register
class RatioEstimator(Estimator):
    """log r̂(x|θ, θ_ref) = MLP([x', θ']) with tanh activations on standardized x' and θ' (smooth,
    so ∇_θ log r̂ is too; the MadMiner default is 3 × 100 tanh). The first layer is split into
    W_x x' + b and W_θ θ', so `observed_features(x) = W_x x' + b` is cached once per observed
    event and each further θ costs the rest of the network. θ_ref (raw units) is recorded.
    """

    name = "alices"
    schedules = ("ratio",)
    loss_schedule = "ratio"
    has_exact_density = False

    def __init__(
        self, data_dim: int, theta_dim: int, theta_ref: list[float] | None = None, hidden: int = 100, layers: int = 3,
        *, standardize: bool = True, seed: int = 0,
    ) -> None:  # fmt: skip
        for key, value in {"data_dim": data_dim, "theta_dim": theta_dim, "hidden": hidden, "layers": layers}.items():
            check_positive_int(key, value)
        super().__init__((data_dim,), theta_dim, standardize)
        if theta_ref is not None and not (isinstance(theta_ref, (list, tuple)) and all(is_number(v) and math.isfinite(v) for v in theta_ref)):
            raise ValueError(f"theta_ref must be a list of {theta_dim} finite numbers or None, got {theta_ref!r}")
        theta_ref = [0.0] * theta_dim if theta_ref is None else [float(v) for v in theta_ref]
        if len(theta_ref) != theta_dim:
            raise ValueError(f"theta_ref needs {theta_dim} values, got {len(theta_ref)}")
        self.data_dim = data_dim
        self.register_buffer("theta_ref", torch.tensor(theta_ref))
        with seeded(seed):
            self.x_layer = nn.Linear(data_dim, hidden)
            self.theta_layer = nn.Linear(theta_dim, hidden, bias=False)
            body: list[nn.Module] = [nn.Tanh()]
            for _ in range(layers - 1):
                body += [nn.Linear(hidden, hidden), nn.Tanh()]
            self.body = nn.Sequential(*body, nn.Linear(hidden, 1))
        self._config = {
            "data_dim": data_dim, "theta_dim": theta_dim, "theta_ref": theta_ref, "hidden": hidden, "layers": layers,
            "standardize": standardize, "seed": seed,
        }  # fmt: skip

    def _log_ratio(self, x: Tensor, theta: Tensor) -> Tensor:
        """log r̂ from raw x and θ, unvalidated (training)."""
        return self.log_prob_features(self.x_layer(self.standardization.x(x)), theta, False)

    def log_ratio(self, x: Tensor, theta: Tensor) -> Tensor:
        """log r̂(x|θ, θ_ref) ≈ log p(x|θ) - log p(x|θ_ref), rows paired -> (batch,)."""
        x = self.check_x(x)
        return self._log_ratio(x, self.check_theta(theta, x))

    def log_prob(self, x: Tensor, theta: Tensor, *, exact: bool = True) -> Tensor:
        """log p(x|θ) up to the θ-independent log p(x|θ_ref): log r̂(x|θ, θ_ref) (`exact=False`);
        there is no exact density (`exact=True` raises)."""
        if exact:
            raise ValueError("a ratio estimator has no tractable density; use exact=False (log r̂)")
        return self.log_ratio(x, theta)

    def observed_features(self, x: Tensor, exact: bool) -> tuple[Tensor, Tensor]:
        """The θ-independent first-layer features W_x x' + b -> (batch, hidden), and c = 0."""
        return self.x_layer(self.standardization.x(x)), x.new_zeros(len(x))

    def log_prob_features(self, features: Tensor, theta: Tensor, exact: bool) -> Tensor:
        """log r̂(x|θ, θ_ref) from cached features, rows paired -> (batch,)."""
        return self.body(features + self.theta_layer(self.standardization.theta(theta))).squeeze(-1)

    def ratio_loss(
        self, x: Tensor, theta: Tensor, joint_log_ratio: Tensor, joint_score: Tensor, reference_class: Tensor,
        score_weight: float | None = None, hard_labels: bool = False,
    ) -> Tensor:  # fmt: skip
        """The per-sample ALICES loss (module docstring); `hard_labels` trains on the class instead
        of the joint ratio (CARL when `score_weight` is None)."""
        training = torch.is_grad_enabled()  # False during validation
        with torch.enable_grad():
            theta = theta.detach().requires_grad_(score_weight is not None)
            log_r = self._log_ratio(x, theta)
            target = (reference_class if hard_labels else torch.sigmoid(-joint_log_ratio)).to(log_r.dtype)
            value = F.binary_cross_entropy_with_logits(-log_r, target, reduction="none")
            if score_weight is not None:
                numerator = 1 - reference_class.to(log_r.dtype)
                value = value + score_weight * numerator * score_matching_term(log_r, theta, joint_score, create_graph=training)
        return value if training else value.detach()


@dataclass
class RatioTrainingData:
    """Samples for ALICES, rows paired: x, the numerator θ, the joint log ratio
    log r(x,z|θ, θ_ref), the joint score t(x,z|θ) (used on numerator rows only) and the class
    (1 for x ~ p(x|θ_ref), 0 for x ~ p(x|θ))."""

    x: Tensor
    theta: Tensor
    joint_log_ratio: Tensor
    joint_score: Tensor
    reference_class: Tensor

    @classmethod
    def from_samples(
        cls,
        numerator: tuple[Tensor, Tensor, Tensor, Tensor],
        reference: tuple[Tensor, Tensor, Tensor],
    ) -> RatioTrainingData:
        """`numerator` = (x, θ, log r(x,z|θ,θ_ref), t(x,z|θ)) with x ~ p(x|θ);
        `reference` = (x, θ, log r(x,z|θ,θ_ref)) with x ~ p(x|θ_ref) and θ drawn independently
        (e.g. from the prior) to pair with it."""
        x0, theta0, log_r0, score0 = numerator
        x1, theta1, log_r1 = reference
        for name, (a, b) in {"x": (x0, x1), "theta": (theta0, theta1)}.items():
            check_matrix(f"numerator {name}", a)
            check_matrix(f"reference {name}", b, a.shape[1])
        check_matrix("numerator joint score", score0, theta0.shape[1])
        check_same_batch(x=x0, theta=theta0, joint_log_ratio=log_r0, joint_score=score0)
        check_same_batch(x=x1, theta=theta1, joint_log_ratio=log_r1)
        return cls(
            x=torch.cat([x0, x1]),
            theta=torch.cat([theta0, theta1]),
            joint_log_ratio=torch.cat([log_r0, log_r1]).reshape(-1),
            joint_score=torch.cat([score0, torch.zeros_like(theta1)]),
            reference_class=torch.cat([torch.zeros(len(x0)), torch.ones(len(x1))]).to(x0.dtype),
        )

    def as_dict(self) -> dict[str, Tensor]:
        """The named tensors the trainer's ALICES phase reads."""
        return {"x": self.x, "theta": self.theta, "joint_log_ratio": self.joint_log_ratio,
                "joint_score": self.joint_score, "reference_class": self.reference_class}  # fmt: skip


def train_ratio_estimator(
    estimator: RatioEstimator,
    data: RatioTrainingData,
    config: TrainingConfig = TrainingConfig(),
    hard_labels: bool = False,
    device: str | torch.device = "cpu",
    checkpoint: str | Path | None = None,
    resume: bool = False,
) -> pd.DataFrame:
    """Train with ALICES (`config.score_weight` = α; None: ALICE), or CARL with `hard_labels`;
    the shared trainer's validation split, early stopping, checkpoints and `resume` apply."""
    estimator.check_x(data.x)
    check_matrix("theta", data.theta, estimator.theta_dim)
    if not torch.isfinite(data.joint_log_ratio).all() and not hard_labels:
        raise ValueError("joint_log_ratio has non-finite entries")
    stages = schedule("ratio", score_weight=config.score_weight, hard_labels=hard_labels)
    return fit(estimator, data.as_dict(), stages, config, device, checkpoint, resume)
