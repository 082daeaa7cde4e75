"""Likelihoods, likelihood ratios and posteriors over θ from trained estimators, and the sbi plug-in."""

from mflow_sbi.estimator import LogRatio, ObservedLikelihood
from mflow_sbi.inference.grid import GridPosterior
from mflow_sbi.inference.posterior import MCMCResult, grid_posterior, mcmc_posterior, prior_bounds, prior_log_prob
from mflow_sbi.inference.sbi_plugin import (
    SBI_MCMC_DEFAULTS,
    FastLikelihoodPotential,
    ModelDensityEstimator,
    SBISimulator,
    estimator_builder,
    mcmc_posterior_for_sbi,
)

__all__ = [
    "SBI_MCMC_DEFAULTS",
    "FastLikelihoodPotential",
    "GridPosterior",
    "LogRatio",
    "MCMCResult",
    "ModelDensityEstimator",
    "ObservedLikelihood",
    "SBISimulator",
    "estimator_builder",
    "grid_posterior",
    "mcmc_posterior",
    "mcmc_posterior_for_sbi",
    "prior_bounds",
    "prior_log_prob",
]
