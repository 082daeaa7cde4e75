"""Comparisons of a posterior over θ with the truth: classifier two-sample test against exact
posterior samples, and the log posterior density at the true parameter point."""

from __future__ import annotations

from typing import Literal

import torch
from sbi.utils.metrics import c2st as sbi_c2st
from scipy.stats import gaussian_kde
from torch import Tensor

from mflow_sbi.inference.grid import GridPosterior
from mflow_sbi.inference.posterior import MCMCResult
from mflow_sbi.validation import check_matrix

SamplePosterior = Tensor | MCMCResult  # posterior samples (n, p), or an MCMC run holding them
Posterior = GridPosterior | SamplePosterior


def posterior_samples(posterior: SamplePosterior, name: str = "posterior") -> Tensor:
    """The validated (n, p) samples of a sample posterior."""
    samples = posterior.samples if isinstance(posterior, MCMCResult) else posterior
    check_matrix(name, samples)
    if len(samples) == 0:
        raise ValueError(f"{name} holds no samples")
    return samples.detach()


def c2st(
    samples: Tensor,
    reference: Tensor,
    classifier: Literal["rf", "mlp"] = "rf",
    folds: int = 5,
    seed: int = 1,
) -> float:
    """Classifier two-sample test accuracy (Lopez-Paz & Oquab 2017; sbibm, Lueckmann et al.
    2021) by sbi's `c2st`: the mean `folds`-fold cross-validated accuracy of a classifier
    telling `samples` from `reference`, both z-scored with the reference's mean and std.
    0.5: indistinguishable; 1: fully separated. `classifier`: "rf" (scikit-learn's random
    forest with its defaults, sbi's default) or "mlp" (sbi's two-layer MLP, 10·p units each)."""
    check_matrix("reference", reference)
    check_matrix("samples", samples, reference.shape[1])
    if classifier not in ("rf", "mlp"):
        raise ValueError(f"classifier must be 'rf' or 'mlp', got {classifier!r}")
    if min(len(samples), len(reference)) < folds:
        raise ValueError(f"samples and reference need at least folds = {folds} rows each")
    accuracy = sbi_c2st(reference.float(), samples.float(), seed=seed, n_folds=folds, classifier=classifier)
    return float(accuracy)


def log_posterior_at_true_theta(
    posterior: Posterior, theta_true: Tensor, bandwidth: Literal["scott", "silverman"] | float = "scott"
) -> float:
    """log p̂(θ_true | x), the paper's inference metric where the true posterior is unknown
    (Brehmer & Cranmer 2020, Table 3: MCMC samples, then a kernel density estimate).

    A `GridPosterior` gives its exact log density (-inf outside the grid). Samples (a tensor
    (n, p) or an `MCMCResult`) give the log of scipy's Gaussian KDE,
    p̂(θ) = (1/n) Σ_i N(θ; θ_i, H), with H = b² · Cov(samples) and b = n^(-1/(p+4)) ("scott",
    the default), (n (p+2)/4)^(-1/(p+4)) ("silverman") or the given number. The KDE smooths
    over the prior boundary, so near it p̂ is biased low.
    """
    theta_true = check_matrix("theta_true", torch.as_tensor(theta_true).reshape(1, -1))
    if isinstance(posterior, GridPosterior):
        if theta_true.shape[1] != posterior.grid.shape[1]:
            raise ValueError(f"theta_true must have {posterior.grid.shape[1]} entries, got {theta_true.shape[1]}")
        return float(posterior.log_prob(theta_true.to(posterior.grid.dtype))[0])
    samples = posterior_samples(posterior)
    if samples.shape[1] != theta_true.shape[1]:
        raise ValueError(f"theta_true must have {samples.shape[1]} entries, got {theta_true.shape[1]}")
    if isinstance(bandwidth, str) and bandwidth not in ("scott", "silverman"):
        raise ValueError(f"bandwidth must be 'scott', 'silverman' or a positive number, got {bandwidth!r}")
    if not isinstance(bandwidth, str) and not bandwidth > 0:
        raise ValueError(f"bandwidth must be positive, got {bandwidth}")
    if len(samples) <= samples.shape[1]:
        raise ValueError(f"the KDE needs more than p = {samples.shape[1]} samples, got {len(samples)}")
    kde = gaussian_kde(samples.double().numpy().T, bw_method=bandwidth)
    return float(kde.logpdf(theta_true.double().numpy().T)[0])
