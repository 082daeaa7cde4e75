"""Shared pieces of the subcommands: simulators and their specs, data files."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from mflow_sbi.files import looks_like_pickle
from mflow_sbi.simulator import Simulator, build_simulator, simulator_names

DATA_EXTENSIONS = (".npz", ".npy")


class UsageError(ValueError):
    """A user mistake: reported as one line `mflow-sbi: error: ...`, exit code 2."""


def simulator_help() -> str:
    """What a simulator argument accepts, for the options' help."""
    return f"a registered simulator ({', '.join(simulator_names())}) or your own as package.module:ClassName"


def add_simulator_options(parser: argparse.ArgumentParser) -> None:
    """--option KEY=VALUE, repeatable: keyword arguments of the simulator's constructor."""
    parser.add_argument(
        "--option", action="append", default=[], dest="options", metavar="KEY=VALUE",
        help="a keyword argument of the simulator's constructor, VALUE read as YAML (repeatable), "
        "e.g. --option tier=parton --option n_params=2 for lhc_like",
    )  # fmt: skip


def simulator_options(args: argparse.Namespace) -> dict[str, Any]:
    """The --option KEY=VALUE pairs as keyword arguments, each VALUE read by `yaml.safe_load`."""
    options = {}
    for item in args.options:
        key, equals, value = item.partition("=")
        if not equals or not key.isidentifier():
            raise UsageError(f"--option needs KEY=VALUE with KEY a keyword argument name, got {item!r}")
        try:
            options[key] = yaml.safe_load(value)
        except yaml.YAMLError as error:
            raise UsageError(f"--option {key}: cannot read {value!r} as YAML: {' '.join(str(error).split())}") from None
    return options


def make_simulator(name: str, options: dict[str, Any]) -> tuple[Simulator, dict[str, Any]]:
    """The simulator `name` (registered, or package.module:ClassName) built with `options`, and
    its spec {"name": name, "options": simulator.config}, which rebuilds it."""
    simulator = build_simulator(name, **options)
    return simulator, {"name": name, "options": simulator.config}


def resolve_simulator(args: argparse.Namespace, recorded: dict[str, Any] | None, source: str) -> tuple[Simulator, dict[str, Any]]:
    """The simulator named by --simulator, else the one `recorded` in `source` (a file); the
    recorded options (of the same simulator) updated by --option."""
    if args.simulator is None and recorded is None:
        raise UsageError(f"{source} does not record its simulator; pass --simulator NAME ({simulator_help()})")
    if recorded is not None and not (
        isinstance(recorded, dict) and isinstance(recorded.get("name"), str) and isinstance(recorded.get("options", {}), dict)
    ):
        raise UsageError(f"{source} records a malformed simulator spec {recorded!r}; pass --simulator NAME")
    name = args.simulator or recorded["name"]
    base = {}
    if recorded is not None and recorded["name"] == name:
        flat = {key: value for key, value in recorded.items() if key != "name"}  # an older file's spec
        base = recorded.get("options", flat)
    return make_simulator(name, base | simulator_options(args))


def existing_file(path: Path, what: str, extensions: tuple[str, ...]) -> Path:
    """`path` if it is a file with one of `extensions`, else a `UsageError`."""
    if path.suffix.lower() not in extensions:
        raise UsageError(f"{what} {path} must end in one of {', '.join(extensions)}, not {path.suffix or 'nothing'!r}")
    if not path.is_file():
        raise UsageError(f"{what} {path} does not exist")
    return path


def file_stem(name: str, option: str) -> str:
    """`name` if it is a plain file name stem, so that OUTPUT/NAME.ext stays inside OUTPUT."""
    if not name or name in (".", "..") or name != Path(name).name or "\\" in name or name.startswith("."):
        raise UsageError(f"{option} must be a plain file name (no folders, no leading dot), got {name!r}")
    return name


def read_arrays(path: Path, what: str = "data file") -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The arrays of an .npz file (a .npy file is read as {"x": array}) and its JSON metadata
    (empty if it has none); a `UsageError` naming the file if it is damaged, not an array file,
    or holds Python objects (refused: unpickling can run code)."""
    existing_file(path, what, DATA_EXTENSIONS)
    kind = "an .npy array" if path.suffix.lower() == ".npy" else "an .npz archive of arrays"
    try:
        if path.suffix.lower() == ".npy":
            arrays = {"x": np.load(path, allow_pickle=False)}
        else:
            with np.load(path, allow_pickle=False) as stored:
                arrays = {key: stored[key] for key in stored.files}
    except ValueError as error:
        if "Object arrays" in str(error) or looks_like_pickle(path):
            raise UsageError(f"{what} {path} is not {kind}: it holds Python objects, which are refused (loading them could run arbitrary code)") from None
        raise UsageError(f"{what} {path} is not {kind}: it is truncated or of another format") from None
    except Exception:  # numpy and zipfile raise OSError, BadZipFile, EOFError, ... on bytes they cannot read
        raise UsageError(f"{what} {path} is not {kind}: it is truncated or of another format") from None
    try:
        metadata = json.loads(str(arrays.pop("metadata"))) if "metadata" in arrays else {}
    except json.JSONDecodeError:
        raise UsageError(f"{what} {path} is damaged: its metadata is not JSON") from None
    if not isinstance(metadata, dict):
        raise UsageError(f"{what} {path} is damaged: its metadata is not a JSON object")
    return arrays, metadata


def require(arrays: dict[str, np.ndarray], key: str, path: Path, hint: str = "") -> torch.Tensor:
    """The array `key` of a data file as a tensor, or a `UsageError` listing what the file holds."""
    if key not in arrays:
        raise UsageError(f"{path} has no array {key!r} (it holds {sorted(arrays)}){hint}")
    return torch.from_numpy(arrays[key])


def matrix(value: torch.Tensor, name: str, path: Path) -> torch.Tensor:
    """`value` as a floating-point (rows, columns) matrix; a 1-D array is one column."""
    if value.ndim == 1:
        value = value.unsqueeze(-1)
    if value.ndim != 2 or not value.is_floating_point():
        raise UsageError(f"{name} in {path} must be a 2-D float array (rows, columns), got {value.dtype} {tuple(value.shape)}")
    return value


def true_theta_of(arrays: dict[str, np.ndarray]) -> list[float] | None:
    """θ of a data set simulated at one fixed θ (all rows equal), else None."""
    if "theta" not in arrays or len(arrays["theta"]) == 0:
        return None
    theta = np.asarray(arrays["theta"]).reshape(len(arrays["theta"]), -1)
    return theta[0].tolist() if np.all(theta == theta[0]) else None


def parse_theta(values: list[float] | None, simulator: Simulator, option: str) -> torch.Tensor | None:
    """A θ given on the command line as a (1, p) tensor, checked against the simulator's prior."""
    if values is None:
        return None
    if len(values) != simulator.theta_dim:
        names = ", ".join(simulator.theta_names)
        raise UsageError(f"{option} needs {simulator.theta_dim} values ({names}) for this simulator, got {len(values)}")
    theta = torch.tensor([values], dtype=torch.get_default_dtype())
    try:
        simulator.check_theta(theta)
    except ValueError:
        raise UsageError(f"{option} {values} lies outside the prior support of the simulator") from None
    return theta


def write_json(path: Path, content: dict[str, Any]) -> Path:
    path.write_text(json.dumps(content, indent=2) + "\n")
    return path
