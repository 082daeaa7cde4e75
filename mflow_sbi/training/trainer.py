"""The trainer: mini-batch optimization of a model's schedule with early stopping, and
checkpoints from which a killed run resumes bit-identically (on the CPU)."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from mflow_sbi.training.checkpoints import CheckpointError, read_checkpoint, restore_weights, save_model
from mflow_sbi.training.losses import Phase, phase_loss, schedule
from mflow_sbi.validation import check_matrix, check_same_batch, is_integer, is_number

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
    everywhere.

    `huber_delta` = δ: reconstruction penalties are per-dimension Huber H_δ (paper 003's "pixel
    rejection", in standardized units: δ in data standard deviations) instead of squared errors;
    `penalty_weight` = λ of the penalized likelihood (paper 003, Eq. 5; 1 in the paper)."""

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
    huber_delta: float | None = None  # δ of the Huber reconstruction penalty; None: squared error
    penalty_weight: float = 1.0  # λ of the penalized likelihood (schedules "penalized", "hierarchical")
    restore_best: bool = True  # end each stage with its best validation epoch's parameters; False: the last epoch's
    seed: int = 0
    progress: bool = True

    def learning_rate_at(self, batch_size: int) -> float:
        """The learning rate of a stage that steps with `batch_size` events (see the class docstring)."""
        if self.learning_rate is None:
            return 3e-3 * math.sqrt(batch_size / 1000)
        return self.learning_rate * math.sqrt(batch_size / self.batch_size)

    def __post_init__(self) -> None:
        """Raise a `ValueError` (a `TypeError` for a wrong type) naming the first bad field."""
        for name in ("epochs", "batch_size", "density_batch_size", "patience", "seed"):
            value = getattr(self, name)
            optional = name in ("density_batch_size", "patience")
            if not is_integer(value) and not (optional and value is None):
                raise TypeError(f"TrainingConfig.{name} must be an integer{' or None' if optional else ''}, got {value!r}")
        for name in ("learning_rate", "weight_decay", "clip_norm", "validation_fraction", "reconstruction_weight", "score_weight",
                     "huber_delta", "penalty_weight"):  # fmt: skip
            value = getattr(self, name)
            if not is_number(value) and not (name in ("learning_rate", "score_weight", "huber_delta") and value is None):
                raise TypeError(f"TrainingConfig.{name} must be a number, got {value!r}")
        for name in ("progress", "restore_best"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"TrainingConfig.{name} must be True or False, got {getattr(self, name)!r}")
        positive = lambda v: v is None or (math.isfinite(v) and v > 0)  # noqa: E731
        checks = {
            "epochs": (self.epochs >= 1, "≥ 1"), "batch_size": (self.batch_size >= 1, "≥ 1"),
            "density_batch_size": (self.density_batch_size is None or self.density_batch_size >= 1, "≥ 1 or None"),
            "learning_rate": (positive(self.learning_rate), "positive and finite, or None"),
            "weight_decay": (math.isfinite(self.weight_decay) and self.weight_decay >= 0, "non-negative and finite"),
            "clip_norm": (positive(self.clip_norm), "positive and finite"),
            "validation_fraction": (0 < self.validation_fraction < 1, "in (0, 1)"),
            "patience": (self.patience is None or self.patience >= 1, "≥ 1 or None"),
            "reconstruction_weight": (positive(self.reconstruction_weight), "positive and finite"),
            "score_weight": (positive(self.score_weight), "positive and finite, or None"),
            "huber_delta": (positive(self.huber_delta), "positive and finite, or None"),
            "penalty_weight": (positive(self.penalty_weight), "positive and finite"),
            "seed": (self.seed >= 0, "≥ 0"),
        }  # fmt: skip
        for name, (ok, requirement) in checks.items():
            if not ok:
                raise ValueError(f"TrainingConfig.{name} must be {requirement}, got {getattr(self, name)!r}")

def train(
    model: Estimator,
    x: Tensor,
    theta: Tensor,
    schedule_name: str | None = None,
    config: TrainingConfig = TrainingConfig(),
    device: str | torch.device = "cpu",
    checkpoint: str | Path | None = None,
    score: Tensor | None = None,
    resume: bool = False,
) -> pd.DataFrame:
    """Train `model` on pairs (x_i, θ_i) in raw units with a schedule of `model.schedules`
    (default: the first) and return the history, one row per epoch. The model's standardization
    is fitted to x and θ first (unless it is disabled or already fitted).

    With `config.score_weight = α` and the simulator's joint score t(x_i, z_i|θ_i) as `score`
    (batch, p), the likelihood and density phases train with SCANDAL's loss
    NLL + α · ‖∇_θ log p̂(x|θ) - t‖².

    Each stage ends with the parameters of its best validation epoch restored (`config.restore_best`; False keeps the last epoch's). With
    `checkpoint`, the model and the trainer's state are saved after every epoch (atomic write);
    `resume=True` continues from that file a run that was killed, with the same model, data,
    schedule and config, and ends with the parameters of an uninterrupted run (bit-identical on
    the CPU); if the file does not exist yet (killed before its first epoch), it starts afresh.
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
    stages = schedule(
        schedule_name, config.reconstruction_weight, config.score_weight,
        huber_delta=config.huber_delta, penalty_weight=config.penalty_weight, levels=model.levels,
    )  # fmt: skip
    return fit(model, data, stages, config, device, checkpoint, resume)


def fit(
    model: Estimator,
    data: dict[str, Tensor],
    stages: list[tuple[Phase, ...]],
    config: TrainingConfig,
    device: str | torch.device = "cpu",
    checkpoint: str | Path | None = None,
    resume: bool = False,
) -> pd.DataFrame:
    """Mini-batch optimization of `stages` (see `schedule`) on the named tensors in `data`
    (rows paired, raw units), with a validation split, early stopping and per-epoch
    checkpoints (model and trainer state; `resume=True` continues from them); the engine under
    `train` and the ratio estimators' trainers. When training starts, `model.prepare` sees the
    training split (its records go to the history's `attrs`) and the model's standardization is
    fitted to it."""
    n = check_same_batch(**data)
    missing = sorted({f for phases in stages for p in phases for f in p.reads} - set(data))
    if missing:
        raise ValueError(f"the schedule reads fields {missing} that the training data lack (it has {sorted(data)})")
    if resume and checkpoint is None:
        raise ValueError("resume=True continues from a checkpoint: pass `checkpoint`, the file of the killed run")
    run = _Run(checkpoint, _fingerprint(data, stages, config))
    saved = run.read(model) if resume and run.checkpoint.exists() else None  # killed before its first epoch: start
    generator = torch.Generator().manual_seed(config.seed)
    order = torch.randperm(n, generator=generator)
    n_validation = max(1, int(round(config.validation_fraction * n)))
    validation, training = order[:n_validation], order[n_validation:]
    if len(training) == 0:
        raise ValueError("not enough samples to split off a validation set")
    run.records = model.prepare(data["x"][training], data["theta"][training], None if saved is None else saved["records"])
    model.to(device)
    if saved is not None:
        run.restore(model, saved, generator)
    cast = {k: v.to(device=device, dtype=model.dtype if v.is_floating_point() else v.dtype) for k, v in data.items()}
    training_data = {k: v[training] for k, v in cast.items()}
    validation_data = {k: v[validation] for k, v in cast.items()}
    model.fit_standardization(training_data["x"], training_data["theta"])

    device = torch.device(device)
    # Losses that draw noise (the learnable-prior flow's spread divergence) use torch's default
    # generator, seeded here from `config.seed` inside a fork: reproducible, and the caller's
    # random state is restored afterwards (a resumed run sets it to the saved state).
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else [], device_type=device.type):
        torch.manual_seed(config.seed)
        if saved is not None:
            _set_rng_state(saved["rng"], device)
        for stage_index, phases in enumerate(stages):
            resumed = saved if saved is not None and stage_index == saved["stage"] else None
            if saved is not None and (stage_index < saved["stage"] or (resumed is not None and saved["stage_done"])):
                continue  # finished before the run was killed
            _train_stage(model, phases, training_data, validation_data, config, generator, stage_index, run, resumed)
    history = pd.DataFrame(run.rows)
    history.attrs.update(run.records)
    return history


def _fingerprint(data: dict[str, Tensor], stages: list[tuple[Phase, ...]], config: TrainingConfig) -> dict[str, str]:
    """What a resumed run must share with the killed one: the data (shapes, dtypes and a hash of
    the values), the schedule and the training config (progress bars aside)."""
    digests = {}
    for key, value in sorted(data.items()):
        values = value.detach().cpu().contiguous()
        digests[key] = f"{tuple(values.shape)} {values.dtype} {hashlib.blake2b(values.view(torch.uint8).numpy(), digest_size=16).hexdigest()}"
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k != "progress"}
    return {
        "data": json.dumps(digests, sort_keys=True),
        "schedule": json.dumps([[dataclasses.asdict(p) for p in phases] for phases in stages], sort_keys=True, default=str),
        "training config": json.dumps(settings, sort_keys=True),
    }


def _rng_state(device: torch.device) -> dict[str, Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


class _Run:
    """One training run's checkpoint file: the rows so far, the `prepare` records, and the
    trainer state written after every epoch and read back by a resumed run."""

    def __init__(self, checkpoint: str | Path | None, fingerprint: dict[str, str]) -> None:
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        self.fingerprint = fingerprint
        self.rows: list[dict] = []
        self.records: dict = {}

    def read(self, model: Estimator) -> dict:
        """The trainer state in the checkpoint, checked against this run (CheckpointError if it
        belongs to another model, data set, schedule or config)."""
        payload = read_checkpoint(self.checkpoint)
        state = payload.get("training_state")
        if not isinstance(state, dict) or state.get("fingerprint") is None:
            raise CheckpointError(f"cannot resume from {self.checkpoint}: it holds no trainer state (a checkpoint of a finished model?)")
        for what, value in self.fingerprint.items():
            if state["fingerprint"].get(what) != value:
                raise CheckpointError(f"cannot resume from {self.checkpoint}: it was trained with a different {what}")
        state["config"], state["state_dict"] = payload["config"], payload["state_dict"]
        self.rows = json.loads(state["rows"])
        return state

    def restore(self, model: Estimator, saved: dict, generator: torch.Generator) -> None:
        """Weights (after `prepare`, so the model has its final shape) and the batch order."""
        if json.dumps(model.config, sort_keys=True) != json.dumps(json.loads(saved["config"]), sort_keys=True):
            raise CheckpointError(f"cannot resume from {self.checkpoint}: it was written by a differently configured {model.name}")
        restore_weights(model, saved["state_dict"], self.checkpoint)
        generator.set_state(saved["generator"])

    def save(self, model: Estimator, metadata: dict, generator: torch.Generator, optimizers: list | None = None,
             schedulers: list | None = None, **state) -> None:  # fmt: skip
        """With a checkpoint file: the model, `metadata` and the trainer state after an epoch (or a stage)."""
        if self.checkpoint is None:
            return
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        training_state = {
            "fingerprint": self.fingerprint, "rows": json.dumps(self.rows), "records": self.records,
            "generator": generator.get_state(), "rng": _rng_state(device), **state,
            "optimizers": [o.state_dict() for o in optimizers or []], "schedulers": [s.state_dict() for s in schedulers or []],
        }  # fmt: skip
        save_model(self.checkpoint, model, metadata, training_state)


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
        scope = dict(phase.scope)
        if updated.isdisjoint(id(p) for p in getattr(model, depends_on)(**scope)):
            with torch.no_grad():
                cached[field] = torch.cat([getattr(model, method)(chunk, **scope) for chunk in data["x"].split(chunk_size)])
    return cached


def _train_stage(
    model: Estimator,
    phases: tuple[Phase, ...],
    training_data: dict[str, Tensor],
    validation_data: dict[str, Tensor],
    config: TrainingConfig,
    generator: torch.Generator,
    stage_index: int,
    run: _Run,
    resumed: dict | None,
) -> None:
    """Train one stage, appending its epochs to `run.rows`; `resumed`: the trainer state saved
    after an epoch of this stage, from which it continues."""
    parameters = [list(getattr(model, p.parameters)(**dict(p.scope))) for p in phases]
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
    best_loss, best_state, stale, start = math.inf, copy.deepcopy(model.state_dict()), 0, 0
    if resumed is not None:
        for optimizer, state in zip(optimizers, resumed["optimizers"]):
            optimizer.load_state_dict(state)
        for scheduler, state in zip(schedulers, resumed["schedulers"]):
            scheduler.load_state_dict(state)
        best_loss, best_state, stale, start = resumed["best_loss"], resumed["best_state"], resumed["stale"], resumed["epoch"] + 1
    if config.patience is not None and stale >= config.patience:
        start = config.epochs  # the killed run had stopped early, after its last checkpoint
    bar = tqdm(range(start, config.epochs), desc=f"stage {stage_index} ({stage})", initial=start, total=config.epochs,
               disable=not config.progress)  # fmt: skip
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
        run.rows.append(row)
        bar.set_postfix(validation=f"{val_loss:.4g}")
        if val_loss < best_loss:
            best_loss, best_state, stale = val_loss, copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
        run.save(
            model, {"stage": stage_index, "epoch": epoch, "validation_loss": val_loss}, generator,
            stage=stage_index, epoch=epoch, stage_done=False, best_loss=best_loss, best_state=best_state, stale=stale,
            optimizers=optimizers, schedulers=schedulers,
        )  # fmt: skip
        if config.patience is not None and stale >= config.patience:
            break
    if config.restore_best:
        model.load_state_dict(best_state)
    run.save(model, {"stage": stage_index, "best_validation_loss": best_loss, "stage_done": True}, generator,
             stage=stage_index, stage_done=True)  # fmt: skip
