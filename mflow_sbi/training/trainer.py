"""The trainer: mini-batch optimization of a model's schedule with early stopping."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from mflow_sbi.models import ConditionalModel
from mflow_sbi.training.checkpoints import save_model
from mflow_sbi.training.losses import Phase, schedule
from mflow_sbi.validation import check_matrix, check_same_batch


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; training stops instead of hiding it."""


@dataclass(frozen=True)
class TrainingConfig:
    """Optimization settings; defaults follow the paper's reference set-up (Adam with
    decoupled weight decay, cosine decay, clipping at 1, reconstruction weight 1000)."""

    epochs: int = 50  # per stage
    batch_size: int = 100
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    clip_norm: float = 1.0
    validation_fraction: float = 0.1
    patience: int | None = 10  # epochs without validation improvement; None disables
    reconstruction_weight: float = 1000.0
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be ≥ 1, got {self.epochs} and {self.batch_size}")
        if not (self.learning_rate > 0 and self.clip_norm > 0 and self.weight_decay >= 0):
            raise ValueError("learning_rate and clip_norm must be positive, weight_decay non-negative")
        if not 0 < self.validation_fraction < 1:
            raise ValueError(f"validation_fraction must lie in (0, 1), got {self.validation_fraction}")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience must be ≥ 1 or None, got {self.patience}")


def train(
    model: ConditionalModel,
    x: Tensor,
    theta: Tensor,
    schedule_name: str | None = None,
    config: TrainingConfig = TrainingConfig(),
    device: str | torch.device = "cpu",
    checkpoint: str | Path | None = None,
) -> pd.DataFrame:
    """Train `model` on pairs (x_i, θ_i) with a schedule of `model.schedules` (default: the
    first) and return the history, one row per epoch.

    Each stage ends with the parameters of its best validation epoch restored. With
    `checkpoint`, the model is saved after every epoch (atomic write), so a crash loses at
    most one epoch.
    """
    model.check_x(x)
    check_matrix("theta", theta, model.theta_dim)
    check_same_batch(x=x, theta=theta)
    schedule_name = schedule_name or model.schedules[0]
    if schedule_name not in model.schedules:
        raise ValueError(f"{model.name} trains with {model.schedules}, not {schedule_name!r}")

    generator = torch.Generator().manual_seed(config.seed)
    order = torch.randperm(len(x), generator=generator)
    n_validation = max(1, int(round(config.validation_fraction * len(x))))
    validation, training = order[:n_validation], order[n_validation:]
    if len(training) == 0:
        raise ValueError("not enough samples to split off a validation set")
    loader = DataLoader(
        TensorDataset(x[training], theta[training]), batch_size=config.batch_size, shuffle=True, generator=generator
    )
    x_val, theta_val = x[validation].to(device), theta[validation].to(device)
    model.to(device)

    rows: list[dict] = []
    for stage_index, phases in enumerate(schedule(schedule_name, config.reconstruction_weight)):
        rows += _train_stage(model, phases, loader, x_val, theta_val, config, device, stage_index, checkpoint)
    return pd.DataFrame(rows)


def _train_stage(
    model: ConditionalModel,
    phases: tuple[Phase, ...],
    loader: DataLoader,
    x_val: Tensor,
    theta_val: Tensor,
    config: TrainingConfig,
    device: str | torch.device,
    stage_index: int,
    checkpoint: str | Path | None,
) -> list[dict]:
    steps = config.epochs * len(loader)
    optimizers = [
        torch.optim.AdamW(list(p.parameters(model)), lr=config.learning_rate, weight_decay=config.weight_decay)
        for p in phases
    ]
    schedulers = [torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=steps) for o in optimizers]
    stage = "+".join(p.name for p in phases)
    best_loss, best_state, stale = math.inf, copy.deepcopy(model.state_dict()), 0
    rows = []
    bar = tqdm(range(config.epochs), desc=f"stage {stage_index} ({stage})", disable=not config.progress)
    for epoch in bar:
        model.train()
        sums = dict.fromkeys((p.name for p in phases), 0.0)
        for batch, (xb, tb) in enumerate(loader):
            xb, tb = xb.to(device), tb.to(device)
            for phase, optimizer, scheduler in zip(phases, optimizers, schedulers):
                model.zero_grad(set_to_none=True)
                loss = phase.weight * phase.loss(model, xb, tb).mean()
                if not torch.isfinite(loss):
                    model.load_state_dict(best_state)
                    raise NonFiniteLossError(
                        f"{phase.name} loss is {loss.item()} at stage {stage_index}, epoch {epoch}, batch {batch}; "
                        "lower the learning rate or check the data for outliers"
                    )
                loss.backward()
                norm = torch.nn.utils.clip_grad_norm_(list(phase.parameters(model)), config.clip_norm)
                if not torch.isfinite(norm):
                    model.load_state_dict(best_state)
                    raise NonFiniteLossError(
                        f"{phase.name} gradients are non-finite at stage {stage_index}, epoch {epoch}, batch {batch}; "
                        "the best parameters so far were restored"
                    )
                optimizer.step()
                scheduler.step()
                sums[phase.name] += loss.item()
        model.eval()
        with torch.no_grad():
            val = {p.name: p.weight * p.loss(model, x_val, theta_val).mean().item() for p in phases}
        val_loss = sum(val.values())
        if not math.isfinite(val_loss):
            raise NonFiniteLossError(f"validation loss is {val_loss} at stage {stage_index}, epoch {epoch}")
        row = {"stage": stage_index, "phases": stage, "epoch": epoch, "validation_loss": val_loss}
        row |= {f"train_{k}": v / len(loader) for k, v in sums.items()} | {f"validation_{k}": v for k, v in val.items()}
        rows.append(row)
        bar.set_postfix(validation=f"{val_loss:.4g}")
        if val_loss < best_loss:
            best_loss, best_state, stale = val_loss, copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
        if checkpoint is not None:
            save_model(checkpoint, model, {"stage": stage_index, "epoch": epoch, "validation_loss": val_loss})
        if config.patience is not None and stale >= config.patience:
            break
    model.load_state_dict(best_state)
    if checkpoint is not None:
        save_model(checkpoint, model, {"stage": stage_index, "best_validation_loss": best_loss, "stage_done": True})
    return rows
