"""Posteriors over θ from a log-likelihood callable: grid (p ≤ 2) and MCMC with emcee."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import arviz as az
import emcee
import numpy as np
import pandas as pd
import torch
from threadpoolctl import threadpool_limits
from torch import Tensor

from mflow_sbi.inference.grid import GridPosterior
from mflow_sbi.random import sample_distribution
from mflow_sbi.validation import in_support

LogLikelihood = Callable[[Tensor], Tensor]  # θ (batch, p) -> Σ_j log p(x_j|θ), (batch,)


def prior_bounds(prior: torch.distributions.Distribution) -> tuple[list[float], list[float]]:
    """Box bounds of a prior with interval support (Uniform, sbi's BoxUniform)."""
    support = prior.support
    while hasattr(support, "base_constraint"):
        support = support.base_constraint
    if not hasattr(support, "lower_bound"):
        raise ValueError("the prior has unbounded support; pass explicit grid bounds")
    shape = prior.event_shape or (1,)
    lower = torch.as_tensor(support.lower_bound).expand(shape).flatten().tolist()
    upper = torch.as_tensor(support.upper_bound).expand(shape).flatten().tolist()
    return lower, upper


def grid_posterior(
    log_likelihood: LogLikelihood,
    prior: torch.distributions.Distribution,
    resolution: int = 1001,
    bounds: tuple[list[float], list[float]] | None = None,
    dtype: torch.dtype = torch.float32,
) -> GridPosterior:
    """p(θ|x) ∝ p(θ) L(θ) on a grid of cell centres (θ of dimension ≤ 2), over the prior's
    box support unless `bounds` = (lower, upper) is given; normalized exactly on the grid."""
    lower, upper = bounds if bounds is not None else prior_bounds(prior)
    grid = GridPosterior.cell_centres(lower, upper, resolution).to(dtype)
    with torch.no_grad():
        return GridPosterior(grid, log_likelihood(grid).double() + prior_log_prob(prior, grid))


@dataclass
class MCMCResult:
    """Samples of an emcee run after burn-in and thinning, with diagnostics."""

    samples: Tensor  # (walkers · draws, p), flattened
    inference_data: az.InferenceData  # posterior (chain = walker, draw, theta_dim), sample_stats, observed_data
    acceptance_fraction: np.ndarray  # per walker
    autocorrelation_time: np.ndarray  # per parameter, integrated (emcee's estimate)

    def summary(self, hdi_prob: float = 0.94) -> pd.DataFrame:
        """Mean, sd, HDI, MCSE, ESS (bulk, tail) and R-hat per parameter (ArviZ)."""
        return az.summary(self.inference_data, hdi_prob=hdi_prob)

    @property
    def effective_sample_size(self) -> float:
        """The smallest bulk ESS over the parameters."""
        return float(az.ess(self.inference_data).to_array().min())


def mcmc_posterior(
    log_likelihood: LogLikelihood,
    prior: torch.distributions.Distribution,
    draws: int = 1000,
    walkers: int = 64,
    burn_in: int = 200,
    thin: int = 1,
    seed: int = 0,
    progress: bool = True,
    observed: Tensor | None = None,
    moves: Any = None,
    parameter_names: tuple[str, ...] | list[str] | None = None,
) -> MCMCResult:
    """Sample p(θ|x) ∝ p(θ) L(θ) with emcee's ensemble sampler (Foreman-Mackey et al. 2013),
    one vectorized likelihood call per half-ensemble update for all its walkers.

    `moves` are emcee moves; by default a mixture of 80% KDE moves (proposals from a Gaussian
    KDE of the complementary half-ensemble, after kombine) and 20% differential-evolution moves
    (ter Braak 2006). On the low-dimensional posteriors of this toolkit the KDE move nearly
    decorrelates the walkers at each step (integrated autocorrelation time ≈ 2 steps on the
    polynomial surface, against ≈ 27 for emcee's default stretch move), and it needs many
    walkers: keep `walkers` ≥ 32. Walkers start at prior draws; proposals outside the prior
    support get log density -inf and are never passed to the likelihood. After `burn_in`
    steps, `draws` · `thin` further steps are run and every `thin`-th kept. `observed` (the
    events) is stored in the InferenceData's observed_data group; `parameter_names` (e.g. a
    simulator's `theta_names`) label θ's components (`az.summary` shows theta[name]). Sampler
    statistics: the log posterior `lp` and `accepted` (whether each walker moved) per draw, and
    the acceptance fraction per walker.
    """
    dimension = _dimension(prior)
    if walkers < 2 * dimension or draws < 1 or burn_in < 0 or thin < 1:
        raise ValueError("need walkers ≥ 2·dim(θ), draws ≥ 1, burn_in ≥ 0, thin ≥ 1")
    names = [f"theta_{i}" for i in range(dimension)] if parameter_names is None else [str(n) for n in parameter_names]
    if len(names) != dimension or len(set(names)) != dimension:
        raise ValueError(f"parameter_names must be {dimension} distinct names, got {parameter_names}")
    start = sample_distribution(prior, walkers, torch.Generator().manual_seed(seed)).reshape(walkers, dimension)
    dtype = start.dtype

    def log_posterior(theta: np.ndarray) -> np.ndarray:
        theta = torch.as_tensor(theta, dtype=dtype)
        values = prior_log_prob(prior, theta)
        inside = torch.isfinite(values)
        if inside.any():
            with torch.no_grad():
                values[inside] += log_likelihood(theta[inside]).double().reshape(-1)
        if torch.isnan(values).any():
            raise FloatingPointError("the log-likelihood returned NaN inside the prior support")
        return values.numpy()

    if moves is None:
        moves = [(emcee.moves.KDEMove(), 0.8), (emcee.moves.DEMove(), 0.2)]
    sampler = emcee.EnsembleSampler(walkers, dimension, log_posterior, vectorize=True, moves=moves)
    sampler.random_state = np.random.RandomState(seed).get_state()
    with threadpool_limits(limits=1, user_api="blas"):  # the moves' tiny BLAS calls only lose from threading
        sampler.run_mcmc(start.double().numpy(), burn_in + draws * thin, progress=progress)
    chain = sampler.get_chain(discard=burn_in, thin=thin)  # (draws, walkers, p)
    log_prob = sampler.get_log_prob(discard=burn_in, thin=thin)
    positions = np.concatenate([start.double().numpy()[None], sampler.get_chain()])
    moved = (positions[1:] != positions[:-1]).any(-1)  # (steps, walkers): the step's proposal was accepted
    accepted = moved[burn_in + thin - 1 :: thin]  # the step that produced each kept draw
    groups = {
        "posterior": {"theta": np.swapaxes(chain, 0, 1)},
        "sample_stats": {"lp": log_prob.T, "accepted": accepted.T},
    }
    if observed is not None:
        groups["observed_data"] = {"x": observed.detach().cpu().numpy().reshape(len(observed), -1)}
    data = az.from_dict(**groups, coords={"parameter": names}, dims={"theta": ["parameter"], "x": ["event", "feature"]})
    data.sample_stats.attrs["acceptance_fraction"] = sampler.acceptance_fraction.tolist()
    return MCMCResult(
        samples=torch.as_tensor(chain.reshape(-1, dimension), dtype=dtype),
        inference_data=data,
        acceptance_fraction=sampler.acceptance_fraction,
        autocorrelation_time=sampler.get_autocorr_time(discard=burn_in, thin=thin, quiet=True),
    )


def prior_log_prob(prior: torch.distributions.Distribution, theta: Tensor) -> Tensor:
    """log p(θ) per row in float64, (batch,): -inf outside the prior support (where torch's
    validating distributions would raise), also for priors without an event dimension."""
    inside = in_support(theta, prior)
    values = torch.full((len(theta),), -torch.inf, dtype=torch.float64, device=theta.device)
    if inside.any():
        values[inside] = prior.log_prob(theta[inside]).double().reshape(int(inside.sum()), -1).sum(-1)
    return values


def _dimension(prior: torch.distributions.Distribution) -> int:
    return int(np.prod(prior.event_shape)) if prior.event_shape else 1
