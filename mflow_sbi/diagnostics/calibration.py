"""Calibration of amortized posteriors through sbi's tools, as plain numbers: simulation-based
calibration (Talts et al. 2018; sbi's `run_sbc` / `check_sbc`) and TARP expected coverage
(Lemos et al. 2023; sbi's `run_tarp` / `check_tarp`)."""

from __future__ import annotations

from typing import Any

import torch
from sbi.diagnostics import check_sbc, check_tarp, run_sbc, run_tarp
from torch import Tensor

from mflow_sbi.validation import check_matrix, check_same_batch

MIN_PAIRS = 10  # TARP bins the coverage values into pairs // 10 bins


class _DrawnSamples:
    """Posterior samples already drawn for the pairs' xs, behind sbi's `sample_batched`, so
    that SBC and TARP can share one (often MCMC) sampling run."""

    def __init__(self, samples: Tensor, xs: Tensor) -> None:
        self.samples, self.xs = samples, xs

    def sample_batched(self, sample_shape: torch.Size, x: Tensor, **kwargs: Any) -> Tensor:
        if tuple(sample_shape) != self.samples.shape[:1] or not torch.equal(x, self.xs):
            raise ValueError("the drawn samples belong to other xs or another number of samples")
        return self.samples


def _checked_pairs(thetas: Tensor, xs: Tensor) -> None:
    check_matrix("thetas", thetas)
    check_matrix("xs", xs)
    check_same_batch(thetas=thetas, xs=xs)
    if len(thetas) < MIN_PAIRS:
        raise ValueError(f"thetas and xs need at least {MIN_PAIRS} pairs (sbi recommends ≥ 100), got {len(thetas)}")


def _as_sbi_posterior(posterior: Any, thetas: Tensor, xs: Tensor, num_posterior_samples: int) -> tuple[Any, int]:
    """An object with sbi's `sample_batched`, and the number of samples per x to ask it for."""
    if isinstance(posterior, Tensor):
        if posterior.ndim != 3 or posterior.shape[1:] != thetas.shape:
            raise ValueError(
                f"posterior samples must have shape (samples, {len(thetas)}, {thetas.shape[1]}), "
                f"got {tuple(posterior.shape)}"
            )
        return _DrawnSamples(posterior.detach(), xs), len(posterior)
    if not hasattr(posterior, "sample_batched"):
        raise ValueError(f"posterior must be an sbi posterior or a samples tensor, got {type(posterior).__name__}")
    if num_posterior_samples < 1:
        raise ValueError(f"num_posterior_samples must be ≥ 1, got {num_posterior_samples}")
    return posterior, num_posterior_samples


def draw_posterior_samples(posterior: Any, xs: Tensor, num_posterior_samples: int = 1000, seed: int = 0) -> Tensor:
    """`num_posterior_samples` draws of θ for each row of `xs` from an sbi posterior's
    `sample_batched` -> (samples, len(xs), p); pass them to `sbc_checks` and `tarp_checks`
    to sample (e.g. by MCMC) only once."""
    check_matrix("xs", xs)
    if not hasattr(posterior, "sample_batched"):
        raise ValueError(f"posterior must be an sbi posterior with sample_batched, got {type(posterior).__name__}")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return posterior.sample_batched((num_posterior_samples,), x=xs, show_progress_bars=False)


def sbc_checks(
    posterior: Any, thetas: Tensor, xs: Tensor, num_posterior_samples: int = 1000, seed: int = 0
) -> dict[str, float]:
    """Simulation-based calibration (Talts et al. 2018) by sbi's `run_sbc` and `check_sbc`.

    (θ_i, x_i) are pairs from the prior and the simulator; the rank of θ_i among the posterior
    samples given x_i, per parameter, is uniform on {0..S} for a calibrated posterior. Returns
    per parameter k: `sbc_ks_pvalue_k` (Kolmogorov-Smirnov test of uniform ranks),
    `sbc_c2st_ranks_k` (C2ST of ranks against uniform draws, 0.5 ideal) and `sbc_c2st_dap_k`
    (C2ST of the data-averaged posterior against the prior, here the θ_i; 0.5 ideal).
    `posterior`: an sbi posterior (e.g. `mcmc_posterior_for_sbi`) or samples drawn already,
    (S, N, p) from `draw_posterior_samples`. sbi's random draws are seeded by `seed`.
    """
    _checked_pairs(thetas, xs)
    posterior, samples = _as_sbi_posterior(posterior, thetas, xs, num_posterior_samples)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        ranks, dap_samples = run_sbc(thetas, xs, posterior, num_posterior_samples=samples, show_progress_bar=False)
        checks = check_sbc(ranks, thetas, dap_samples, num_posterior_samples=samples)
    return {
        f"sbc_{name}_{k}": float(value)
        for name, key in (("ks_pvalue", "ks_pvals"), ("c2st_ranks", "c2st_ranks"), ("c2st_dap", "c2st_dap"))
        for k, value in enumerate(checks[key].flatten())
    }


def tarp_checks(
    posterior: Any, thetas: Tensor, xs: Tensor, num_posterior_samples: int = 1000, seed: int = 0
) -> dict[str, float]:
    """Expected coverage by TARP (Lemos et al. 2023) with sbi's `run_tarp` and `check_tarp`:
    for random reference points θ_r, the fraction f_i of posterior samples closer to θ_r than
    θ_i is uniform for a calibrated posterior, so the expected coverage ECP(α) = P(f < α)
    equals α. Returns `tarp_atc`, Σ_{α>0.5} (ECP(α) - α) Δα (0 ideal, > 0 over-, < 0
    under-dispersed), and `tarp_ks_pvalue` (KS test of ECP against α). `posterior` and `seed`
    as in `sbc_checks`.
    """
    _checked_pairs(thetas, xs)
    posterior, samples = _as_sbi_posterior(posterior, thetas, xs, num_posterior_samples)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        ecp, alpha = run_tarp(thetas, xs, posterior, num_posterior_samples=samples, show_progress_bar=False)
    atc, ks_pvalue = check_tarp(ecp, alpha)
    return {"tarp_atc": float(atc), "tarp_ks_pvalue": float(ks_pvalue)}
