"""Training phases and schedules, the trainer and checkpoints."""

from mflow_sbi.training.checkpoints import CheckpointError, load_model, save_model
from mflow_sbi.training.losses import Phase, phase_loss, schedule
from mflow_sbi.training.trainer import NonFiniteLossError, TrainingConfig, fit, train

__all__ = ["CheckpointError", "NonFiniteLossError", "Phase", "TrainingConfig", "fit", "load_model", "phase_loss", "save_model", "schedule", "train"]
