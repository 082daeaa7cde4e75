"""Log-likelihoods of observed events over many θ, on the fast path where it is exact.

For a model whose encoder does not depend on θ (M-flow, Me-flow, PIE with unconditional
manifold, AF, PAE), log p(x|θ) = log p_h(u|θ) + c(x) with u = encode(x) (Brehmer & Cranmer
2020, §3 "Likelihood evaluation"): u is computed once per event and every further θ costs one
pass of the inner flow; c(x) is θ-independent and cancels in ratios and posteriors.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mflow_sbi.inference.grid import GridPosterior
from mflow_sbi.models import ConditionalModel
from mflow_sbi.validation import check_matrix


@torch.no_grad()
def log_likelihood_table(
    model: ConditionalModel, x: Tensor, theta: Tensor, exact: bool = False, chunk_size: int = 65536
) -> Tensor:
    """log p(x_j|θ_i) for every pair -> (len(theta), len(x)), vectorized over (θ, event)
    pairs in chunks of `chunk_size`. `exact=False` uses the cached-encoding fast path where
    the model allows it (values then differ from the exact ones by a per-event constant)."""
    check_matrix("x", x, model.data_dim)
    check_matrix("theta", theta, model.theta_dim)
    fast = not exact and not model.encoder_depends_on_theta
    inputs = model.encode(x) if fast else x
    pairs_theta = theta.repeat_interleave(len(x), dim=0)
    pairs_input = inputs.repeat(len(theta), 1)
    values = [
        model.log_prob_latent(i, t) if fast else model.log_prob(i, t, exact=exact)
        for i, t in zip(pairs_input.split(chunk_size), pairs_theta.split(chunk_size))
    ]
    return torch.cat(values).view(len(theta), len(x))


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
    model: ConditionalModel,
    x_observed: Tensor,
    prior: torch.distributions.Distribution,
    resolution: int = 1001,
    bounds: tuple[list[float], list[float]] | None = None,
    exact: bool = False,
) -> GridPosterior:
    """p(θ|x_1..x_m) ∝ p(θ) Π_j p(x_j|θ) on a grid of cell centres (θ of dimension ≤ 2), from
    the prior's box support unless `bounds` = (lower, upper) is given."""
    lower, upper = bounds if bounds is not None else prior_bounds(prior)
    grid = GridPosterior.cell_centres(lower, upper, resolution)
    log_likelihood = log_likelihood_table(model, x_observed, grid, exact=exact).double().sum(-1)
    return GridPosterior(grid, log_likelihood + prior.log_prob(grid).double())
