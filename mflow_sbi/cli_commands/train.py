"""`mflow-sbi train`: train a model described by a YAML or TOML config file."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from mflow_sbi.baselines import RatioEstimator, RatioTrainingData, train_ratio_estimator
from mflow_sbi.cli_commands.common import (
    UsageError, existing_file, matrix, read_arrays, require, save_standardization,
)  # fmt: skip
from mflow_sbi.models import MODELS, VECTOR_MODELS, build_model
from mflow_sbi.training import Standardization, TrainingConfig, save_model, train
from mflow_sbi.transforms import FlowConfig

CONFIG_EXTENSIONS = (".yaml", ".yml", ".toml")
CONFIG_KEYS = ("data", "model", "schedule", "standardize", "training")
MODEL_NAMES = (*(cls.name for cls in VECTOR_MODELS), RatioEstimator.name)
FROM_DATA = ("data_dim", "theta_dim")  # model arguments read from the data set
TRAINING_KEYS = tuple(f.name for f in dataclasses.fields(TrainingConfig) if f.name != "progress")  # --quiet sets it
ALICES_HINT = "; ALICES needs events at θ_ref: simulate them with `mflow-sbi simulate lhc_like --alices-reference`"
CHECKPOINT, HISTORY, STANDARDIZATION = "model.pt", "history.csv", "standardization.npz"

DESCRIPTION = f"""Train a model from a config file (YAML or TOML) on a data set written by
`mflow-sbi simulate` (or any .npz with arrays x (n, D) and theta (n, p)). Writes OUTPUT/{CHECKPOINT}
(with the config, data path and simulator in its metadata), OUTPUT/{HISTORY} (one row per epoch)
and, with `standardize: true`, OUTPUT/{STANDARDIZATION}.

config keys (docs/cli.md has the reference and examples/configs/ examples):
  data         path of the .npz data set, relative to the config file (--data overrides it)
  model        table: model = {' | '.join(MODEL_NAMES)}, and the model's arguments
               (latent_dim, inner/outer flow tables, ...); data_dim and theta_dim come from the data
  schedule     sequential | alternating (M-flow, Me-flow, PAE) or likelihood (AF, PIE);
               default: the model's first
  training     fields of TrainingConfig: {', '.join(TRAINING_KEYS[:5])},
               {', '.join(TRAINING_KEYS[5:])}
               (score_weight: SCANDAL for flows, the score term for alices)
  standardize  true | false: fit x and θ to zero mean, unit variance (default false)"""


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("train", help="train a model from a YAML/TOML config", description=DESCRIPTION,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--config", type=Path, required=True, help="config file (.yaml, .yml or .toml)")
    parser.add_argument("--data", type=Path, help="data set (.npz); overrides the config's `data`")
    parser.add_argument("--output", type=Path, required=True, help="folder for checkpoint and history")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(run=run)


def load_config(path: Path) -> dict[str, Any]:
    """The parsed config file, its top-level keys checked."""
    existing_file(path, "config file", CONFIG_EXTENSIONS)
    text = path.read_text()
    try:
        config = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as error:
        raise UsageError(f"cannot parse {path}: {' '.join(str(error).split())}") from None
    config = _mapping(config if config is not None else {}, f"the config in {path}")
    _check_keys(config, CONFIG_KEYS, "")
    return config


def _mapping(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise UsageError(f"{what} must be a mapping (table) of keys to values, got {type(value).__name__}")
    return value


def _check_keys(section: dict[str, Any], allowed: tuple[str, ...] | list[str], prefix: str) -> None:
    for key in section:
        if key not in allowed:
            raise UsageError(f"unknown config key {prefix + key!r}; allowed: {', '.join(allowed)}")


def model_config(section: Any, data_dim: int, theta_dim: int) -> dict[str, Any]:
    """The `model` section, checked, with the dimensions of the data filled in."""
    section = dict(_mapping(section, "model"))
    name = section.get("model")
    if name not in MODEL_NAMES:
        raise UsageError(f"unknown model {name!r} (key model.model); choose one of {', '.join(MODEL_NAMES)}")
    model_class = RatioEstimator if name == RatioEstimator.name else MODELS[name]
    arguments = [p for p in inspect.signature(model_class.__init__).parameters if p != "self"]
    _check_keys(section, ["model", *arguments], "model.")
    for key in ("inner", "outer"):
        if key in section:
            _check_keys(_mapping(section[key], f"model.{key}"), [f.name for f in dataclasses.fields(FlowConfig)], f"model.{key}.")
    for key, value in {"data_dim": data_dim, "theta_dim": theta_dim}.items():
        if section.setdefault(key, value) != value:
            raise UsageError(f"shape mismatch: model.{key} = {section[key]} but the data have {value}")
    return section


def training_config(section: Any, progress: bool) -> TrainingConfig:
    """The `training` section as a `TrainingConfig` (YAML's "1e-3" strings read as numbers)."""
    section = _mapping(section, "training")
    _check_keys(section, TRAINING_KEYS, "training.")
    types = {f.name: str(f.type) for f in dataclasses.fields(TrainingConfig)}
    values: dict[str, Any] = {}
    for key, value in section.items():
        kind = types[key]
        if value is None and "None" in kind:
            values[key] = None
        elif kind.startswith("int") and isinstance(value, int) and not isinstance(value, bool):
            values[key] = value
        elif kind.startswith("float") and not isinstance(value, bool) and _is_number(value):
            values[key] = float(value)
        else:
            raise UsageError(f"training.{key} must be of type {kind}, got {value!r}")
    return TrainingConfig(**values, progress=progress)


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def run(args: argparse.Namespace) -> list[Path]:
    config = load_config(args.config)
    if args.data is None and "data" not in config:
        raise UsageError(f"{args.config} has no `data` key; add one or pass --data")
    data_path = args.data if args.data is not None else args.config.parent / str(config["data"])
    arrays, metadata = read_arrays(data_path)
    x = matrix(require(arrays, "x", data_path), "x", data_path)
    theta = matrix(require(arrays, "theta", data_path), "theta", data_path)
    if len(x) != len(theta):
        raise UsageError(f"shape mismatch: {data_path} has {len(x)} rows of x but {len(theta)} of theta")
    if "model" not in config:
        raise UsageError(f"{args.config} has no `model` section; set at least model.model to one of {', '.join(MODEL_NAMES)}")
    model_settings = model_config(config["model"], x.shape[1], theta.shape[1])
    training = training_config(config.get("training", {}), progress=not args.quiet)
    standardize = config.get("standardize", False)
    if not isinstance(standardize, bool):
        raise UsageError(f"standardize must be true or false, got {standardize!r}")
    scales = Standardization.fit(x.double(), theta.double()) if standardize else None

    def scaled(name: str, value: torch.Tensor) -> torch.Tensor:
        if scales is not None:
            value = {"x": scales.x, "theta": scales.theta, "score": scales.score}[name](value.double())
        return value.float()

    torch.manual_seed(training.seed)
    if model_settings["model"] == RatioEstimator.name:
        if "schedule" in config:
            raise UsageError("model alices has no schedule; remove the `schedule` key")
        if "theta_ref" in arrays:  # in the units the estimator sees
            model_settings.setdefault("theta_ref", scaled("theta", torch.from_numpy(arrays["theta_ref"]).reshape(1, -1))[0].tolist())
        model = RatioEstimator(**{k: v for k, v in model_settings.items() if k != "model"})
        data = _ratio_data(arrays, data_path, scaled)
        history = train_ratio_estimator(model, data, training)
    else:
        model = build_model(model_settings)
        score = None
        if training.score_weight is not None:
            hint = "; SCANDAL (training.score_weight) needs the simulator's joint score, e.g. from lhc_like"
            score = scaled("score", matrix(require(arrays, "joint_score", data_path, hint), "joint_score", data_path))
        history = train(model, scaled("x", x), scaled("theta", theta), config.get("schedule"), training, score=score)

    record = {
        "config": config, "data": str(data_path.resolve()), "simulator_spec": metadata.get("simulator_spec"),
        "standardization": STANDARDIZATION if scales is not None else None,
    }  # fmt: skip
    written = [save_model(args.output / CHECKPOINT, model, record)]
    history.to_csv(args.output / HISTORY, index=False)
    written.append(args.output / HISTORY)
    if scales is not None:
        written.append(save_standardization(args.output / STANDARDIZATION, scales))
    return written


def _ratio_data(arrays: dict[str, np.ndarray], path: Path, scaled) -> RatioTrainingData:
    """ALICES's training set: the data set's events (numerator) and its events at θ_ref."""
    fields = {
        key: require(arrays, key, path, ALICES_HINT)
        for key in ("x", "theta", "joint_log_ratio", "joint_score", "x_reference", "theta_reference", "joint_log_ratio_reference")
    }
    numerator = (scaled("x", fields["x"]), scaled("theta", fields["theta"]), fields["joint_log_ratio"].float(), scaled("score", fields["joint_score"]))
    reference = (scaled("x", fields["x_reference"]), scaled("theta", fields["theta_reference"]), fields["joint_log_ratio_reference"].float())
    return RatioTrainingData.from_samples(numerator, reference)
