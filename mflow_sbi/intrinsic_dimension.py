"""The intrinsic dimension n of simulated data: nearest-neighbour estimators (TwoNN, Facco et
al. 2017; the Levina-Bickel MLE, 2004; from scikit-dimension) and the learnable-prior flow's
eigenvalue criterion (paper 002, Eq. 11: n = rank(AAᵀ)).

The flow's spectrum is read with a gap rule: n = argmax_k log(λ_k / λ_{k+1}) over the
eigenvalues λ_1 ≥ … ≥ λ_D of AAᵀ followed by the spread noise σ² (λ_{D+1} = σ², the level the
collapsed eigenvalues fall to), so data that fill R^D give n = D.

The default method is TwoNN, rounded, on `CROSS_CHECK_POINTS` z-scored rows: on our simulators
it was right on the polynomial surface (1.98), the image manifold at n = 4 and 8 (4.07, 8.04)
and the LHC-like parton tier (n = 9: 8.62 on 10⁴ rows, 8.43 on 5000, whence the default) in
seconds, while the flow's spectrum had not separated on the polynomial surface after 9000
steps (0.095, 0.081, 0.057; it did separate on the paper's toy curve). Both fall short where
part of the manifold is much thinner than the nearest-neighbour distance: on the LHC-like
hadron tier (n = 14) four chart directions are 0.12, 0.08, 5·10⁻⁴ and 5·10⁻⁵ of the data scale
wide against a nearest-neighbour distance ≈ 2 (`LHCLike.chart_spectrum`), and TwoNN measures
≈ 9.4 (benchmarks/intrinsic_dimension_study.py, docs/intrinsic_dimension_study.md).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import Tensor

from mflow_sbi.models.learnable_prior import LearnablePriorFlow
from mflow_sbi.training import TrainingConfig, train
from mflow_sbi.transforms import FlowConfig
from mflow_sbi.validation import check_matrix, check_same_batch

#: The learnable-prior flow's training for the estimate: many small steps (the paper's toy runs
#: take 10⁴ steps at batch 100; on its curve in R² the spectrum separated after ≈ 9000 steps and
#: not after 2000), cosine-decayed from 10⁻³, no early stopping (the spectrum keeps separating
#: after the loss flattens); 200 epochs of 4500 training events are 9000 steps.
ESTIMATION_TRAINING = TrainingConfig(epochs=200, batch_size=100, learning_rate=1e-3, patience=None, progress=False)
ESTIMATION_EVENTS = 5000
CROSS_CHECK_POINTS = 10_000

__all__ = [
    "CROSS_CHECK_POINTS", "ESTIMATION_EVENTS", "ESTIMATION_TRAINING", "METHODS", "IntrinsicDimension", "classical_dimensions",
    "dimension_from_spectrum", "estimate_intrinsic_dimension",
]  # fmt: skip


METHODS = ("twonn", "mle", "learnable_prior")


@dataclass(frozen=True)
class IntrinsicDimension:
    """The estimate n of `method`, every estimate computed (real-valued for the nearest-neighbour
    methods; the gap rule's n for the flow), and for the learnable-prior flow the spectrum it was
    read from (eigenvalues of AAᵀ in standardized units, largest first), the spread noise σ² and
    the training history; the wall time of the whole estimate."""

    dimension: int
    method: str
    estimates: dict[str, float]
    spectrum: Tensor | None = None
    noise_variance: float | None = None
    history: pd.DataFrame | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict:
        """Plain Python values (for a checkpoint's config or a JSON file)."""
        return {
            "dimension": self.dimension, "method": self.method, "estimates": dict(self.estimates),
            "spectrum": None if self.spectrum is None else self.spectrum.tolist(), "noise_variance": self.noise_variance,
            "seconds": self.seconds,
        }  # fmt: skip

    def plot(self, figure: Figure | None = None) -> Figure:
        """The learned spectrum on a log scale, the noise floor σ² and the flow's n marked."""
        if self.spectrum is None or self.noise_variance is None:
            raise ValueError(f"a {self.method!r} estimate has no spectrum: estimate with method='learnable_prior'")
        figure = figure or Figure(figsize=(5, 3.5))
        ax = figure.add_subplot(1, 1, 1)
        index = np.arange(1, len(self.spectrum) + 1)
        values = self.spectrum.clamp_min(self.noise_variance * 1e-3).numpy()
        ax.semilogy(index, values, "o-", label="eigenvalues of AAᵀ")
        ax.axhline(self.noise_variance, color="grey", linestyle=":", label="spread noise σ²")
        ax.axvline(self.dimension + 0.5, color="k", linestyle="--", label=f"gap rule: n = {self.dimension}")
        ax.set_xlabel("k")
        ax.set_ylabel("λ_k")
        ax.legend()
        figure.tight_layout()
        return figure


def dimension_from_spectrum(spectrum: Tensor, noise_variance: float) -> int:
    """n = argmax_k log(λ_k / λ_{k+1}), k = 1…D, with λ_{D+1} = σ² (eigenvalues floored at σ²·10⁻⁶)."""
    values = torch.as_tensor(spectrum, dtype=torch.float64).sort(descending=True).values
    if values.ndim != 1 or len(values) == 0:
        raise ValueError(f"spectrum must be a non-empty vector, got shape {tuple(values.shape)}")
    levels = torch.cat([values, values.new_tensor([noise_variance])]).clamp_min(noise_variance * 1e-6).log()
    return int((levels[:-1] - levels[1:]).argmax()) + 1


def classical_dimensions(x: Tensor, points: int = CROSS_CHECK_POINTS, seed: int = 0) -> dict[str, float]:
    """TwoNN and Levina-Bickel MLE estimates on at most `points` z-scored rows of x (scikit-dimension)."""
    import skdim  # imported here: it compiles numba kernels on import

    x = check_matrix("x", x)
    if len(x) < 20:
        raise ValueError(f"need at least 20 points for nearest-neighbour estimates, got {len(x)}")
    rows = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:points]
    data = x[rows].double()
    data = ((data - data.mean(0)) / data.std(0).clamp_min(1e-12)).numpy()
    return {"twonn": float(skdim.id.TwoNN().fit(data).dimension_), "mle": float(skdim.id.MLE().fit(data).dimension_)}


def estimate_intrinsic_dimension(
    x: Tensor,
    theta: Tensor | None = None,
    *,
    method: str = "twonn",
    flow: FlowConfig | dict | None = None,
    noise_variance: float = 1e-4,
    config: TrainingConfig | None = None,
    max_events: int | None = ESTIMATION_EVENTS,
    seed: int = 0,
) -> IntrinsicDimension:
    """n from `method`: "twonn" or "mle" (rounded, on at most `CROSS_CHECK_POINTS` rows of x) or
    "learnable_prior": train a `LearnablePriorFlow` on at most `max_events` rows of x (drawn from
    `seed`; conditional on θ when given, the dimension being that of the support of p(x|θ),
    shared by every θ; `config` its training, default `ESTIMATION_TRAINING`) and read n off its
    spectrum with `dimension_from_spectrum`. TwoNN and MLE are computed for every method."""
    start = time.perf_counter()
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    x = check_matrix("x", x)
    if theta is None:
        theta = x.new_zeros(len(x), 1)  # a constant context: the flow is then unconditional
    theta = check_matrix("theta", theta)
    check_same_batch(x=x, theta=theta)
    if not (math.isfinite(noise_variance) and noise_variance > 0):
        raise ValueError(f"noise_variance must be positive and finite, got {noise_variance}")
    estimates = classical_dimensions(x, seed=seed)
    if method != "learnable_prior":
        dimension = min(x.shape[1], max(1, round(estimates[method])))
        return IntrinsicDimension(dimension, method, estimates, seconds=time.perf_counter() - start)
    if max_events is not None and len(x) > max_events:
        rows = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:max_events]
        x, theta = x[rows], theta[rows]
    model = LearnablePriorFlow(x.shape[1], theta.shape[1], flow, noise_variance, seed=seed)
    history = train(model, x, theta, config=ESTIMATION_TRAINING if config is None else config)
    spectrum = model.spectrum()
    dimension = dimension_from_spectrum(spectrum, noise_variance)
    estimates["learnable_prior"] = float(dimension)
    return IntrinsicDimension(dimension, method, estimates, spectrum, noise_variance, history, time.perf_counter() - start)
