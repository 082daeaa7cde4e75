"""Shared pieces of the subcommands: simulator specs, data files, standardization files."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mflow_sbi.training import Standardization
from simulators import LHCLike, PolynomialSurface, Simulator
from simulators.lhc_like import TIERS

SIMULATORS = ("polynomial_surface", "lhc_like")
DATA_EXTENSIONS = (".npz", ".npy")


class UsageError(ValueError):
    """A user mistake: reported as one line `mflow-sbi: error: ...`, exit code 2."""


def add_simulator_options(parser: argparse.ArgumentParser) -> None:
    """--tier, --n-params and --pool-draws (lhc_like only)."""
    group = parser.add_argument_group("lhc_like options")
    group.add_argument("--tier", choices=TIERS, help="simulation tier (default hadron)")
    group.add_argument("--n-params", type=int, choices=(2, 3), help="dimension of θ (default 3)")
    group.add_argument(
        "--pool-draws", type=int,
        help="proposal draws for the cross-section normalization, estimated once and cached (default 2000000)",
    )  # fmt: skip


def simulator_spec(name: str, args: argparse.Namespace, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """{"name": ..., and lhc_like's tier, n_params, pool_draws}: `base` (a recorded spec of the
    same simulator) updated with the options given on the command line."""
    if name not in SIMULATORS:
        raise UsageError(f"unknown simulator {name!r}; choose one of {list(SIMULATORS)}")
    spec = dict(base) if base and base.get("name") == name else {"name": name}
    given = {key: getattr(args, key, None) for key in ("tier", "n_params", "pool_draws")}
    given = {key: value for key, value in given.items() if value is not None}
    if given and name != "lhc_like":
        raise UsageError(f"--tier, --n-params and --pool-draws apply to lhc_like only, not {name}")
    return spec | given


def make_simulator(spec: dict[str, Any]) -> tuple[Simulator, dict[str, Any]]:
    """The simulator a spec (see `simulator_spec`) describes, and its complete spec."""
    if spec["name"] == "polynomial_surface":
        return PolynomialSurface(), {"name": "polynomial_surface"}
    simulator = LHCLike(**{key: spec[key] for key in ("tier", "n_params", "pool_draws") if key in spec})
    return simulator, {"name": "lhc_like", "tier": simulator.tier, "n_params": simulator.theta_dim, "pool_draws": simulator.pool_draws}


def resolve_simulator(args: argparse.Namespace, recorded: dict[str, Any] | None, source: str) -> tuple[Simulator, dict[str, Any]]:
    """The simulator named by --simulator, else the one `recorded` in `source` (a file)."""
    if args.simulator is None and recorded is None:
        raise UsageError(f"{source} does not record its simulator; pass --simulator {{{','.join(SIMULATORS)}}}")
    return make_simulator(simulator_spec(args.simulator or recorded["name"], args, recorded))


def existing_file(path: Path, what: str, extensions: tuple[str, ...]) -> Path:
    """`path` if it is a file with one of `extensions`, else a `UsageError`."""
    if path.suffix.lower() not in extensions:
        raise UsageError(f"{what} {path} must end in one of {', '.join(extensions)}, not {path.suffix or 'nothing'!r}")
    if not path.is_file():
        raise UsageError(f"{what} {path} does not exist")
    return path


def read_arrays(path: Path, what: str = "data file") -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The arrays of an .npz file (a .npy file is read as {"x": array}) and its JSON metadata
    (empty if it has none)."""
    existing_file(path, what, DATA_EXTENSIONS)
    try:
        if path.suffix.lower() == ".npy":
            return {"x": np.load(path, allow_pickle=False)}, {}
        with np.load(path, allow_pickle=False) as stored:
            arrays = {key: stored[key] for key in stored.files}
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot read {what} {path}: {error}") from None
    metadata = json.loads(str(arrays.pop("metadata"))) if "metadata" in arrays else {}
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
        raise UsageError(f"{option} needs {simulator.theta_dim} values for this simulator, got {len(values)}")
    theta = torch.tensor([values], dtype=torch.get_default_dtype())
    try:
        simulator.check_theta(theta)
    except ValueError:
        raise UsageError(f"{option} {values} lies outside the prior support of the simulator") from None
    return theta


def write_json(path: Path, content: dict[str, Any]) -> Path:
    path.write_text(json.dumps(content, indent=2) + "\n")
    return path


def save_standardization(path: Path, scales: Standardization) -> Path:
    """The means and scales of a `Standardization` as .npz arrays named after its fields."""
    np.savez(path, **{f.name: getattr(scales, f.name).numpy() for f in dataclasses.fields(Standardization)})
    return path


def load_standardization(path: Path) -> Standardization:
    if not path.is_file():
        raise UsageError(f"the checkpoint was trained on standardized data but {path} is missing")
    with np.load(path) as stored:
        return Standardization(**{f.name: torch.from_numpy(stored[f.name]) for f in dataclasses.fields(Standardization)})
