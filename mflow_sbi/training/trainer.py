"""The trainer: mini-batch optimization of a model's schedule with early stopping."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from mflow_sbi.training.checkpoints import save_model
from mflow_sbi.training.losses import Phase, phase_loss, schedule
from mflow_sbi.validation import check_matrix, check_same_batch

if TYPE_CHECKING:
    from mflow_sbi.estimator import Estimator


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; training stops instead of hiding it."""


@dataclass(frozen=True)
class TrainingConfig:
    """Optimization settings; defaults follow the paper's reference set-up (Adam with
    decoupled weight decay, cosine decay, clipping at 1, reconstruction weight 1000) except
    for the batch: 1000 events, where a step of these flows costs a few times a step at the
    paper's 100 on a CPU, not ten times (docs/training_speed.md). The learning rate at a batch
    b is `learning_rate` · √(b / batch_size); by default (`learning_rate=None`) 3·10⁻³ ·
    √(b / 1000), i.e. the paper's ≈ 10⁻³ at 100 events, scaled by the square root of the batch.

    A stage that trains on inputs cached for it (the density stage of sequential M/D, on
    u = g⁻¹(x)) takes b = min(`density_batch_size`, `batch_size`): its steps are cheap and the
    θ-dependence of the density needs many of them (on the polynomial surface, batch 1000 there
    gave posteriors farther from the exact ones at the same training time); None: `batch_size`
    everywhere."""

    epochs: int = 50  # per stage
    batch_size: int = 1000
    learning_rate: float | None = None  # at `batch_size`; None: 3e-3 · √(batch_size / 1000)
    density_batch_size: int | None = 250
    weight_decay: float = 1e-4
    clip_norm: float = 1.0
    validation_fraction: float = 0.1
    patience: int | None = 10  # epochs without validation improvement; None disables
    reconstruction_weight: float = 1000.0
    score_weight: float | None = None  # α of the score term (SCANDAL, ALICES); None: no term
    seed: int = 0
    progress: bool = True

    def learning_rate_at(self, batch_size: int) -> float:
        """The learning rate of a stage that steps with `batch_size` events (see the class docstring)."""
        if self.learning_rate is None:
            return 3e-3 * math.sqrt(batch_size / 1000)
        return self.learning_rate * math.sqrt(batch_size / self.batch_size)

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be ≥ 1, got {self.epochs} and {self.batch_size}")
        if self.density_batch_size is not None and self.density_batch_size < 1:
            raise ValueError(f"density_batch_size must be ≥ 1 or None, got {self.density_batch_size}")
        if not ((self.learning_rate is None or self.learning_rate > 0) and self.clip_norm > 0 and self.weight_decay >= 0):
            raise ValueError("learning_rate and clip_norm must be positive, weight_decay non-negative")
        if not 0 < self.validation_fraction < 1:
            raise ValueError(f"validation_fraction must lie in (0, 1), got {self.validation_fraction}")
        if self.score_weight is not None and not self.score_weight > 0:
            raise ValueError(f"score_weight must be positive or None, got {self.score_weight}")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience must be ≥ 1 or None, got {self.patience}")


def train(
    model: Estimator,
    x: Tensor,
    theta: Tensor,
    schedule_name: str | None = None,
    config: TrainingConfig = TrainingConfig(),
    device: str | torch.device = "cpu",
    checkpoint: str | Path | None = None,
    score: Tensor | None = None,
) -> pd.DataFrame:
    """Train `model` on pairs (x_i, θ_i) in raw units with a schedule of `model.schedules`
    (default: the first) and return the history, one row per epoch. The model's standardization
    is fitted to x and θ first (unless it is disabled or already fitted).

    With `config.score_weight = α` and the simulator's joint score t(x_i, z_i|θ_i) as `score`
    (batch, p), the likelihood and density phases train with SCANDAL's loss
    NLL + α · ‖∇_θ log p̂(x|θ) - t‖².

    Each stage ends with the parameters of its best validation epoch restored. With
    `checkpoint`, the model is saved after every epoch (atomic write), so a crash loses at
    most one epoch.
    """
    x = model.check_x(x)
    theta = model.check_theta(theta, x)
    schedule_name = schedule_name or model.schedules[0]
    if schedule_name not in model.schedules:
        raise ValueError(f"{model.name} trains with {model.schedules}, not {schedule_name!r}")
    data = {"x": x, "theta": theta}
    if (score is None) != (config.score_weight is None):
        raise ValueError("SCANDAL needs both the joint score (`score`) and its weight (`config.score_weight`)")
    if score is not None:
        check_matrix("score", score, model.theta_dim)
        check_same_batch(x=x, score=score)
        data["score"] = score
    stages = schedule(schedule_name, config.reconstruction_weight, config.score_weight)
    return fit(model, data, stages, config, device, checkpoint)


def fit(
    model: Estimator,
    data: dict[str, Tensor],
    stages: list[tuple[Phase, ...]],
    config: TrainingConfig,
    device: str | torch.device = "cpu",
    checkpoint: str | Path | None = None,
) -> pd.DataFrame:
    """Mini-batch optimization of `stages` (see `schedule`) on the named tensors in `data`
    (rows paired, raw units), with a validation split, early stopping and per-epoch
    checkpoints; the engine under `train` and the ratio estimators' trainers. When training
    starts, `model.prepare` sees the training split (its records go to the history's `attrs`)
    and the model's standardization is fitted to it."""
    n = check_same_batch(**data)
    missing = sorted({f for phases in stages for p in phases for f in p.reads} - set(data))
    if missing:
        raise ValueError(f"the schedule reads fields {missing} that the training data lack (it has {sorted(data)})")
    generator = torch.Generator().manual_seed(config.seed)
    order = torch.randperm(n, generator=generator)
    n_validation = max(1, int(round(config.validation_fraction * n)))
    validation, training = order[:n_validation], order[n_validation:]
    if len(training) == 0:
        raise ValueError("not enough samples to split off a validation set")
    records = model.prepare(data["x"][training], data["theta"][training])
    model.to(device)
    cast = {k: v.to(device=device, dtype=model.dtype if v.is_floating_point() else v.dtype) for k, v in data.items()}
    training_data = {k: v[training] for k, v in cast.items()}
    validation_data = {k: v[validation] for k, v in cast.items()}
    model.fit_standardization(training_data["x"], training_data["theta"])

    rows: list[dict] = []
    device = torch.device(device)
    # Losses that draw noise (the learnable-prior flow's spread divergence) use torch's default
    # generator, seeded here from `config.seed` inside a fork: reproducible, and the caller's
    # random state is restored afterwards.
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else [], device_type=device.type):
        torch.manual_seed(config.seed)
        for stage_index, phases in enumerate(stages):
            rows += _train_stage(model, phases, training_data, validation_data, config, generator, stage_index, checkpoint)
    history = pd.DataFrame(rows)
    history.attrs.update(records)
    return history


def _batches(data: dict[str, Tensor], batch_size: int, generator: torch.Generator) -> list[dict[str, Tensor]]:
    """One epoch of shuffled mini-batches, sliced from the tensors (no per-item indexing)."""
    order = torch.randperm(len(next(iter(data.values()))), generator=generator)
    return [{k: v[index] for k, v in data.items()} for index in order.to(next(iter(data.values())).device).split(batch_size)]


def _with_stage_cache(
    model: Estimator, phases: tuple[Phase, ...], parameters: list[list[Tensor]], data: dict[str, Tensor], chunk_size: int
) -> dict[str, Tensor]:
    """`data` plus each phase's cached input (`Phase.cache`) computed once, in chunks, when no
    phase of the stage updates the parameters it depends on (it is then constant in the stage)."""
    updated = {id(p) for group in parameters for p in group}
    cached = dict(data)
    for phase in phases:
        if phase.cache is None:
            continue
        field, method, depends_on = phase.cache
        if updated.isdisjoint(id(p) for p in getattr(model, depends_on)()):
            with torch.no_grad():
                cached[field] = torch.cat([getattr(model, method)(chunk) for chunk in data["x"].split(chunk_size)])
    return cached


def _train_stage(
    model: Estimator,
    phases: tuple[Phase, ...],
    training_data: dict[str, Tensor],
    validation_data: dict[str, Tensor],
    config: TrainingConfig,
    generator: torch.Generator,
    stage_index: int,
    checkpoint: str | Path | None,
) -> list[dict]:
    parameters = [list(getattr(model, p.parameters)()) for p in phases]
    training_data = _with_stage_cache(model, phases, parameters, training_data, config.batch_size)
    validation_data = _with_stage_cache(model, phases, parameters, validation_data, config.batch_size)
    batch_size = config.batch_size
    if config.density_batch_size is not None and all(p.cache is not None and p.cache[0] in training_data for p in phases):
        batch_size = min(config.density_batch_size, config.batch_size)
    learning_rate = config.learning_rate_at(batch_size)
    batches_per_epoch = math.ceil(len(training_data["x"]) / batch_size)
    steps = config.epochs * batches_per_epoch
    optimizers = [torch.optim.AdamW(group, lr=learning_rate, weight_decay=config.weight_decay, foreach=True) for group in parameters]
    schedulers = [torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=steps) for o in optimizers]
    stage = "+".join(p.name for p in phases)
    best_loss, best_state, stale = math.inf, copy.deepcopy(model.state_dict()), 0
    rows = []
    bar = tqdm(range(config.epochs), desc=f"stage {stage_index} ({stage})", disable=not config.progress)
    for epoch in bar:
        model.train()
        sums = dict.fromkeys((p.name for p in phases), 0.0)
        for batch, batch_data in enumerate(_batches(training_data, batch_size, generator)):
            for phase, group, optimizer, scheduler in zip(phases, parameters, optimizers, schedulers):
                optimizer.zero_grad(set_to_none=True)
                loss = phase_loss(phase, model, batch_data).mean()
                if not torch.isfinite(loss):
                    model.load_state_dict(best_state)
                    raise NonFiniteLossError(
                        f"{phase.name} loss is {loss.item()} at stage {stage_index}, epoch {epoch}, batch {batch}; "
                        "lower the learning rate or check the data for outliers"
                    )
                loss.backward()
                norm = torch.nn.utils.clip_grad_norm_(group, config.clip_norm, foreach=True)
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
            val = {p.name: phase_loss(p, model, validation_data).mean().item() for p in phases}
        val_loss = sum(val.values())
        if not math.isfinite(val_loss):
            raise NonFiniteLossError(f"validation loss is {val_loss} at stage {stage_index}, epoch {epoch}")
        row = {"stage": stage_index, "phases": stage, "epoch": epoch, "validation_loss": val_loss}
        row |= {f"train_{k}": v / batches_per_epoch for k, v in sums.items()} | {f"validation_{k}": v for k, v in val.items()}
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
