"""Losses, M/D schedules, the trainer and checkpoints."""

from mflow_sbi.training.checkpoints import load_model, save_model
from mflow_sbi.training.losses import (
    latent_negative_log_likelihood,
    negative_log_likelihood,
    reconstruction_loss,
    scandal,
    schedule,
)
from mflow_sbi.training.standardization import Standardization
from mflow_sbi.training.trainer import NonFiniteLossError, TrainingConfig, fit, train

__all__ = [
    "NonFiniteLossError",
    "Standardization",
    "TrainingConfig",
    "fit",
    "latent_negative_log_likelihood",
    "load_model",
    "negative_log_likelihood",
    "reconstruction_loss",
    "save_model",
    "scandal",
    "schedule",
    "train",
]
