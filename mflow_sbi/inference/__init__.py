"""Likelihoods and posteriors over θ from trained models."""

from mflow_sbi.inference.grid import GridPosterior
from mflow_sbi.inference.likelihood import grid_posterior, log_likelihood_table

__all__ = ["GridPosterior", "grid_posterior", "log_likelihood_table"]
