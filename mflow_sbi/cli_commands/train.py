"""`mflow-sbi train`: train a model described by a YAML or TOML config file."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import tomllib
import yaml

from mflow_sbi.baselines import RatioEstimator, RatioTrainingData, train_ratio_estimator
from mflow_sbi.cli_commands.common import UsageError, existing_file, matrix, read_arrays, require
from mflow_sbi.files import write_atomically
from mflow_sbi.registry import ESTIMATORS, build_estimator, estimator_arguments
from mflow_sbi.training import TrainingConfig, save_model, train
from mflow_sbi.transforms import FlowConfig

CONFIG_EXTENSIONS = (".yaml", ".yml", ".toml")
CONFIG_KEYS = ("data", "model", "schedule", "training")
FROM_DATA = ("data_dim", "theta_dim")  # model arguments read from the data set
TRAINING_KEYS = tuple(f.name for f in dataclasses.fields(TrainingConfig) if f.name != "progress")  # --quiet sets it
ALICES_HINT = "; ALICES needs events at θ_ref: simulate them with `mflow-sbi simulate lhc_like --alices-reference`"
CHECKPOINT, HISTORY, TRAINING_STATE = "model.pt", "history.csv", "training.pt"


def model_names() -> tuple[str, ...]:
    """The registered estimators that train on vector data sets."""
    return tuple(name for name in sorted(ESTIMATORS) if "data_dim" in estimator_arguments(name))


DESCRIPTION = f"""Train a model from a config file (YAML or TOML) on a data set written by
`mflow-sbi simulate` (or any .npz with arrays x (n, D) and theta (n, p)) in raw units: every
model standardizes x and θ itself (fitted on the training data, saved in the checkpoint; set
`standardize: false` in the model section to opt out). Writes OUTPUT/{CHECKPOINT} (with the
config, data path and simulator in its metadata) and OUTPUT/{HISTORY} (one row per epoch).
While it trains, OUTPUT/{TRAINING_STATE} holds the model and trainer state after every epoch;
`--resume` continues a killed run from it (ending with the parameters of an uninterrupted run),
and it is removed when training ends.

config keys (docs/cli.md has the reference and examples/configs/ examples):
  data         path of the .npz data set, relative to the config file (--data overrides it)
  model        table: model = {' | '.join(model_names())}, and the model's arguments
               (latent_dim, inner/outer flow tables, standardize, seed, ...); data_dim and theta_dim
               come from the data
  schedule     sequential | alternating (M-flow, Me-flow, PAE) or likelihood (AF, PIE);
               default: the model's first
  training     fields of TrainingConfig: {', '.join(TRAINING_KEYS[:5])},
               {', '.join(TRAINING_KEYS[5:])}
               (score_weight: SCANDAL for flows, the score term for alices)"""


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("train", help="train a model from a YAML/TOML config", description=DESCRIPTION,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--config", type=Path, required=True, help="config file (.yaml, .yml or .toml)")
    parser.add_argument("--data", type=Path, help="data set (.npz); overrides the config's `data`")
    parser.add_argument("--output", type=Path, required=True, help="folder for checkpoint and history")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--resume", action="store_true", help=f"continue the killed run in OUTPUT (from OUTPUT/{TRAINING_STATE})")
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
    if "standardize" in config:
        raise UsageError("the top-level `standardize` key is gone: every model standardizes its data; set model.standardize: false to opt out")
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
    if name not in model_names():
        raise UsageError(f"unknown model {name!r} (key model.model); choose one of {', '.join(model_names())}")
    arguments = [a for a in estimator_arguments(name) if a != "image_shape"]
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
    state = args.output / TRAINING_STATE
    if state.exists() and not args.resume:
        raise UsageError(f"{state} holds an interrupted run: pass --resume to continue it, or choose another --output")
    if args.resume and not state.exists() and (args.output / CHECKPOINT).exists():
        raise UsageError(f"the run in {args.output} has finished ({CHECKPOINT} written, no {TRAINING_STATE}): nothing to resume")
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
        raise UsageError(f"{args.config} has no `model` section; set at least model.model to one of {', '.join(model_names())}")
    model_settings = model_config(config["model"], x.shape[1], theta.shape[1])
    training = training_config(config.get("training", {}), progress=not args.quiet)
    if model_settings["model"] == RatioEstimator.name:
        if "schedule" in config:
            raise UsageError("model alices has no schedule; remove the `schedule` key")
        if "theta_ref" in arrays:
            model_settings.setdefault("theta_ref", arrays["theta_ref"].reshape(-1).tolist())
        model = build_estimator(model_settings)
        history = train_ratio_estimator(model, _ratio_data(arrays, data_path), training, checkpoint=state, resume=args.resume)
    else:
        model = build_estimator(model_settings)
        score = None
        if training.score_weight is not None:
            hint = "; SCANDAL (training.score_weight) needs the simulator's joint score, e.g. from lhc_like"
            score = matrix(require(arrays, "joint_score", data_path, hint), "joint_score", data_path)
        history = train(model, x, theta, config.get("schedule"), training, checkpoint=state, score=score, resume=args.resume)

    record = {"config": config, "data": str(data_path.resolve()), "simulator_spec": metadata.get("simulator_spec")}
    written = [
        save_model(args.output / CHECKPOINT, model, record),
        write_atomically(args.output / HISTORY, lambda stream: stream.write(history.to_csv(index=False).encode())),
    ]
    state.unlink()
    return written


def _ratio_data(arrays: dict[str, np.ndarray], path: Path) -> RatioTrainingData:
    """ALICES's training set: the data set's events (numerator) and its events at θ_ref."""
    fields = {
        key: require(arrays, key, path, ALICES_HINT).float()
        for key in ("x", "theta", "joint_log_ratio", "joint_score", "x_reference", "theta_reference", "joint_log_ratio_reference")
    }
    numerator = (fields["x"], fields["theta"], fields["joint_log_ratio"], fields["joint_score"])
    reference = (fields["x_reference"], fields["theta_reference"], fields["joint_log_ratio_reference"])
    return RatioTrainingData.from_samples(numerator, reference)
