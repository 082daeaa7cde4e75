"""Likelihoods, likelihood ratios and posteriors over θ from trained models."""

from mflow_sbi.inference.grid import GridPosterior
from mflow_sbi.inference.likelihood import LogRatio, ObservedLikelihood
from mflow_sbi.inference.posterior import MCMCResult, grid_posterior, mcmc_posterior, prior_bounds

__all__ = ["GridPosterior", "LogRatio", "MCMCResult", "ObservedLikelihood", "grid_posterior", "mcmc_posterior", "prior_bounds"]
