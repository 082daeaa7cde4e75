"""Posterior and manifold diagnostics (DESIGN.md, "Diagnostics"): every diagnostic returns plain
Python numbers (or a dict of them) that `diagnostics_table` collects into a DataFrame."""

from mflow_sbi.diagnostics.calibration import draw_posterior_samples, sbc_checks, tarp_checks
from mflow_sbi.diagnostics.manifold import (
    manifold_distance,
    mean_reconstruction_distance,
    negative_log_likelihood,
    ood_auc,
    ood_aucs,
    reconstruction_distances,
)
from mflow_sbi.diagnostics.mmd import median_distance, mmd_squared
from mflow_sbi.diagnostics.plots import plot_images, plot_posteriors
from mflow_sbi.diagnostics.posterior import c2st, log_posterior_at_true_theta, posterior_samples
from mflow_sbi.diagnostics.table import diagnostics_table, summarize_table

__all__ = [
    "c2st",
    "diagnostics_table",
    "draw_posterior_samples",
    "log_posterior_at_true_theta",
    "manifold_distance",
    "mean_reconstruction_distance",
    "median_distance",
    "mmd_squared",
    "negative_log_likelihood",
    "ood_auc",
    "ood_aucs",
    "plot_images",
    "plot_posteriors",
    "posterior_samples",
    "reconstruction_distances",
    "sbc_checks",
    "summarize_table",
    "tarp_checks",
]
