"""Maximum mean discrepancy between posterior samples (Gretton et al. 2012)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from mflow_sbi.validation import check_matrix

MEDIAN_SUBSAMPLE = 5000


def median_distance(samples: Tensor, seed: int = 0) -> float:
    """Median pairwise Euclidean distance of `samples` (distinct pairs); beyond 5000 samples
    it is taken over a seeded random subset of 5000 to bound memory."""
    if len(samples) > MEDIAN_SUBSAMPLE:
        keep = torch.randperm(len(samples), generator=torch.Generator().manual_seed(seed))[:MEDIAN_SUBSAMPLE]
        samples = samples[keep]
    distances = torch.pdist(samples.double())
    return float(distances.median())


def _kernel_sum(a: Tensor, b: Tensor, bandwidth: float, chunk_size: int) -> Tensor:
    total = torch.zeros((), dtype=torch.float64)
    for chunk in a.split(chunk_size):
        squared = torch.cdist(chunk, b).pow(2)
        total += torch.exp(-squared / (2 * bandwidth**2)).sum()
    return total


def mmd_squared(
    samples: Tensor,
    reference: Tensor,
    bandwidth: float | Literal["reference", "pooled"] | None = None,
    chunk_size: int = 2048,
) -> float:
    """Unbiased MMD² with the Gaussian kernel k(a, b) = exp(-‖a - b‖² / (2 h²)):

        MMD² = Σ_{i≠j} k(x_i,x_j)/(m(m-1)) + Σ_{i≠j} k(y_i,y_j)/(n(n-1)) - 2 Σ_ij k(x_i,y_j)/(mn)

    with x = `samples`, y = `reference`. The bandwidth h is, by `bandwidth`:
    None or "reference": the median pairwise distance of the reference samples (the paper's
    and sbibm's choice); "pooled": the median over all pairs of the pooled samples x ∪ y
    (sbi's `unbiased_mmd_squared`); a number: that h. Computed in float64 over row chunks, so
    10⁴ × 10⁴ samples need only chunk_size × 10⁴ kernel values at a time.
    """
    check_matrix("samples", samples)
    check_matrix("reference", reference, samples.shape[1])
    if len(samples) < 2 or len(reference) < 2:
        raise ValueError("the unbiased MMD needs at least two samples on each side")
    x, y = samples.double(), reference.double()
    if bandwidth is None or bandwidth == "reference":
        h = median_distance(y)
    elif bandwidth == "pooled":
        h = median_distance(torch.cat([x, y]))  # all x-x, y-y and x-y pairs, as sbi pools them
    elif isinstance(bandwidth, str):
        raise ValueError(f"bandwidth must be 'reference', 'pooled' or a number, got {bandwidth!r}")
    else:
        h = float(bandwidth)
    if not h > 0:
        raise ValueError(f"bandwidth must be positive, got {h}")
    m, n = len(x), len(y)
    kxx = (_kernel_sum(x, x, h, chunk_size) - m) / (m * (m - 1))  # k(x_i, x_i) = 1 on the diagonal
    kyy = (_kernel_sum(y, y, h, chunk_size) - n) / (n * (n - 1))
    kxy = _kernel_sum(x, y, h, chunk_size) / (m * n)
    return float(kxx + kyy - 2 * kxy)
