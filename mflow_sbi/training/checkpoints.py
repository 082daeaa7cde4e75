"""Checkpoints: an estimator's state dict (weights and fitted standardization) plus its JSON
config in one file, written atomically and loaded with `weights_only=True` (no arbitrary
unpickling); the registry rebuilds the estimator from the config. A checkpoint written during
training also holds the trainer's state (optimizers, schedulers, epoch, early stopping, random
states), from which `train(..., resume=True)` continues."""

from __future__ import annotations

import json
import pickle
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mflow_sbi.files import looks_like_pickle, write_atomically
from mflow_sbi.registry import build_estimator

if TYPE_CHECKING:
    from mflow_sbi.estimator import Estimator

#: 2: estimators with their standardization in the state dict, one registry name per family
FORMAT_VERSION = 2
FIELDS = {"format_version": int, "config": str, "metadata": str, "state_dict": dict}


class CheckpointError(ValueError):
    """A file that is not a readable checkpoint of this version; the message names the file."""


def save_model(
    path: str | Path, model: Estimator, metadata: dict[str, Any] | None = None, training_state: dict[str, Any] | None = None
) -> Path:
    """Write {format_version, config (JSON), metadata (JSON), state_dict[, training_state]} to
    `path` atomically: a crash mid-write leaves the previous file intact."""
    payload = {
        "format_version": FORMAT_VERSION,
        "config": json.dumps(model.config),
        "metadata": json.dumps(metadata or {}),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    if training_state is not None:
        payload["training_state"] = training_state
    return write_atomically(path, lambda stream: torch.save(payload, stream))


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The payload of the checkpoint at `path`, its fields checked; a `CheckpointError` naming the
    file and what is wrong for anything else (never advice to load it unsafely)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        with warnings.catch_warnings():  # torch warns about the protocol of foreign pickles
            warnings.simplefilter("ignore", UserWarning)
            payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        if not ("GLOBAL" in str(error) or looks_like_pickle(path)):
            raise CheckpointError(f"{path} is not an mflow-sbi checkpoint: the file is truncated or not a torch file") from None
        raise CheckpointError(
            f"{path} is not an mflow-sbi checkpoint: it holds Python objects other than tensors and plain values, "
            "which are refused (loading them could run arbitrary code)"
        ) from None
    except Exception:  # torch raises RuntimeError, EOFError, KeyError, ... on bytes it cannot read
        raise CheckpointError(f"{path} is not an mflow-sbi checkpoint: the file is truncated or not a torch file") from None
    if not isinstance(payload, dict) or "format_version" not in payload:
        raise CheckpointError(f"{path} is not an mflow-sbi checkpoint: it holds {type(payload).__name__} without a format_version")
    if payload["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {payload['format_version']}; this version reads format {FORMAT_VERSION}"
            " (format 1 predates estimators with built-in standardization: retrain the model)"
        )
    for field, kind in FIELDS.items():
        if not isinstance(payload.get(field), kind):
            raise CheckpointError(f"{path} is damaged: its {field!r} is missing or not a {kind.__name__}")
    return payload


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[Estimator, dict[str, Any]]:
    """The estimator saved at `path` (any registered family) and its metadata."""
    payload = read_checkpoint(path, map_location)
    try:
        config, metadata = json.loads(payload["config"]), json.loads(payload["metadata"])
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path} is damaged: its config or metadata is not JSON ({error})") from None
    try:
        model = build_estimator(config)
    except (ValueError, TypeError, KeyError) as error:
        raise CheckpointError(f"{path} is damaged: its config does not build an estimator ({' '.join(str(error).split())})") from None
    restore_weights(model, payload["state_dict"], path)
    return model, metadata


def restore_weights(model: Estimator, state_dict: dict[str, torch.Tensor], path: str | Path) -> None:
    """Load `state_dict` (from the checkpoint at `path`) into `model` in the precision it was
    saved in; a `CheckpointError` if the weights do not fit the model's config."""
    dtypes = {v.dtype for v in state_dict.values() if isinstance(v, torch.Tensor) and v.is_floating_point()}
    if len(dtypes) == 1:  # keep the precision the model was saved in
        model.to(dtypes.pop())
    try:
        model.load_state_dict(state_dict)
    except (RuntimeError, TypeError, AttributeError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path} is damaged: its weights do not match its config ({first.rstrip(':')})") from None
