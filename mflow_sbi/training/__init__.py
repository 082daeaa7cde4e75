"""Losses, M/D schedules, the trainer and checkpoints."""

from mflow_sbi.training.checkpoints import load_model, save_model
from mflow_sbi.training.losses import (
    latent_negative_log_likelihood,
    negative_log_likelihood,
    reconstruction_loss,
    schedule,
)
from mflow_sbi.training.trainer import NonFiniteLossError, TrainingConfig, train

__all__ = [
    "NonFiniteLossError",
    "TrainingConfig",
    "latent_negative_log_likelihood",
    "load_model",
    "negative_log_likelihood",
    "reconstruction_loss",
    "save_model",
    "schedule",
    "train",
]
