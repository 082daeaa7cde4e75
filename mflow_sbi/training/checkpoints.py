"""Checkpoints: an estimator's state dict (weights and fitted standardization) plus its JSON
config in one file, written atomically and loaded with `weights_only=True` (no arbitrary
unpickling); the registry rebuilds the estimator from the config."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mflow_sbi.registry import build_estimator

if TYPE_CHECKING:
    from mflow_sbi.estimator import Estimator

#: 2: estimators with their standardization in the state dict, one registry name per family
FORMAT_VERSION = 2


def save_model(path: str | Path, model: Estimator, metadata: dict[str, Any] | None = None) -> Path:
    """Write {format_version, config (JSON), metadata (JSON), state_dict} to `path` atomically:
    a crash mid-write leaves the previous file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format_version": FORMAT_VERSION,
        "config": json.dumps(model.config),
        "metadata": json.dumps(metadata or {}),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        torch.save(payload, temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return path


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[Estimator, dict[str, Any]]:
    """The estimator saved at `path` (any registered family) and its metadata."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    payload = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(payload, dict) or "format_version" not in payload:
        raise ValueError(f"{path} is not an mflow-sbi checkpoint")
    if payload["format_version"] != FORMAT_VERSION:
        raise ValueError(
            f"{path} has checkpoint format {payload['format_version']}; this version reads format {FORMAT_VERSION}"
            " (format 1 predates estimators with built-in standardization: retrain the model)"
        )
    model = build_estimator(json.loads(payload["config"]))
    dtypes = {v.dtype for v in payload["state_dict"].values() if v.is_floating_point()}
    if len(dtypes) == 1:  # keep the precision the model was saved in
        model.to(dtypes.pop())
    model.load_state_dict(payload["state_dict"])
    return model, json.loads(payload["metadata"])
