"""`mflow-sbi evaluate`: posterior samples against a reference posterior."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import arviz as az
import numpy as np
import pandas as pd
import torch

from mflow_sbi.cli_commands.common import (
    UsageError,
    add_simulator_options,
    existing_file,
    matrix,
    parse_theta,
    read_arrays,
    require,
    resolve_simulator,
    simulator_help,
    true_theta_of,
)  # fmt: skip
from mflow_sbi.diagnostics import c2st, log_posterior_at_true_theta, mmd_squared
from mflow_sbi.inference import GridPosterior
from mflow_sbi.simulator import Simulator

SAMPLE_EXTENSIONS = (".nc", ".npy")
TABLE_CSV, TABLE_MD = "evaluation.csv", "evaluation.md"

DESCRIPTION = f"""Compare posterior samples (ArviZ NetCDF from `mflow-sbi infer`, or an .npy array (n, p))
with a reference posterior: another samples file (--reference), or by default the simulator's exact
posterior for the observed events: its `exact_grid_posterior` where it has one (polynomial_surface,
image_manifold, lhc_like with n_params 2), else its `exact_posterior_samples` (lhc_like at the parton
or hadron tier: MCMC on the exact likelihood). Metrics: MMD² (Gaussian kernel, bandwidth = median distance of
the reference), C2ST accuracy (0.5 = indistinguishable) and log p(θ_true | x) (KDE of samples; exact
for a grid). The simulator, the observed events and θ_true default to those the NetCDF file records.
Writes OUTPUT/{TABLE_CSV} and OUTPUT/{TABLE_MD}."""


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("evaluate", help="MMD², C2ST and log p(θ_true) against a reference", description=DESCRIPTION)
    parser.add_argument("--samples", type=Path, required=True, help="posterior samples (.nc or .npy)")
    parser.add_argument("--reference", type=Path, help="reference samples (.nc or .npy) instead of the exact posterior")
    parser.add_argument("--observed", type=Path, help="observed events (.npz/.npy) for the exact posterior (default: those in the NetCDF file)")
    parser.add_argument("--simulator", help=f"simulator of the exact posterior, {simulator_help()} (default: the one the NetCDF file records)")
    parser.add_argument("--true-theta", type=float, nargs="+", metavar="VALUE", help="θ_true (default: recorded, if the observed events share one θ)")
    parser.add_argument("--max-samples", type=int, default=2000, help="samples per side for MMD² and C2ST (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed for subsampling and the exact posterior (default 0)")
    parser.add_argument("--output", type=Path, required=True, help="folder for the table")
    add_simulator_options(parser)
    parser.set_defaults(run=run)


def read_samples(path: Path, what: str) -> tuple[torch.Tensor, dict[str, Any]]:
    """Samples (n, p) and the attributes of a NetCDF posterior (empty for .npy)."""
    existing_file(path, what, SAMPLE_EXTENSIONS)
    if path.suffix.lower() == ".npy":
        return matrix(torch.from_numpy(np.load(path, allow_pickle=False)), "the samples", path).double(), {}
    try:
        posterior = az.from_netcdf(str(path)).posterior
    except (OSError, ValueError, AttributeError) as error:
        raise UsageError(f"cannot read {what} {path} as ArviZ NetCDF with a posterior group: {error}") from None
    if "theta" not in posterior:
        raise UsageError(f"{path} has no posterior variable 'theta' (it holds {list(posterior.data_vars)})")
    values = posterior["theta"].values
    return torch.from_numpy(values.reshape(-1, values.shape[-1] if values.ndim > 2 else 1)).double(), dict(posterior.attrs)


def _subsample(samples: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    keep = torch.randperm(len(samples), generator=torch.Generator().manual_seed(seed))[:n]
    return samples[keep]


def run(args: argparse.Namespace) -> list[Path]:
    if args.max_samples < 10:
        raise UsageError(f"--max-samples must be ≥ 10, got {args.max_samples}")
    samples, attributes = read_samples(args.samples, "samples file")
    recorded_theta = json.loads(attributes["true_theta"]) if "true_theta" in attributes else None
    simulator: Simulator | None = None
    if args.reference is None or args.simulator is not None:  # the exact posterior, or --true-theta's prior check
        recorded = json.loads(attributes["simulator_spec"]) if "simulator_spec" in attributes else None
        simulator, _ = resolve_simulator(args, recorded, f"samples file {args.samples}")
    observed_arrays = read_arrays(args.observed, "observed file")[0] if args.observed is not None else None
    if observed_arrays is not None:
        recorded_theta = true_theta_of(observed_arrays)
    if args.true_theta is not None:
        true_theta = parse_theta(args.true_theta, simulator, "--true-theta") if simulator else torch.tensor([args.true_theta])
    else:
        true_theta = torch.tensor([recorded_theta]) if recorded_theta is not None else None

    if args.reference is not None:
        reference: torch.Tensor | GridPosterior = read_samples(args.reference, "reference file")[0]
        reference_name = args.reference.name
    else:
        observed = _observed(args, observed_arrays)
        reference = _exact_posterior(simulator, observed, args.max_samples, args.seed)
        reference_name = "exact"
    reference_samples = reference
    if isinstance(reference, GridPosterior):
        reference_samples = reference.sample(args.max_samples, torch.Generator().manual_seed(args.seed)).double()
    if samples.shape[1] != reference_samples.shape[1]:
        raise UsageError(f"shape mismatch: the samples have θ of dimension {samples.shape[1]}, the reference {reference_samples.shape[1]}")
    if true_theta is not None and true_theta.shape[1] != samples.shape[1]:
        raise UsageError(f"shape mismatch: θ_true has {true_theta.shape[1]} values, the samples {samples.shape[1]}")

    n = min(args.max_samples, len(samples), len(reference_samples))
    mine, theirs = _subsample(samples, n, args.seed), _subsample(reference_samples, n, args.seed + 1)
    rows = [
        {"posterior": args.samples.name, "samples": len(samples), "mmd_squared": mmd_squared(mine, theirs), "c2st": c2st(mine, theirs, seed=args.seed)},
        {"posterior": f"reference ({reference_name})", "samples": len(reference_samples)},
    ]
    if true_theta is not None:
        rows[0]["log_posterior_at_true_theta"] = log_posterior_at_true_theta(samples, true_theta.double())
        rows[1]["log_posterior_at_true_theta"] = log_posterior_at_true_theta(reference, true_theta.to(reference_samples.dtype))
    table = pd.DataFrame(rows)
    args.output.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.output / TABLE_CSV, index=False)
    (args.output / TABLE_MD).write_text(_markdown(table, true_theta))
    print(_markdown(table, true_theta), end="")
    return [args.output / TABLE_CSV, args.output / TABLE_MD]


def _observed(args: argparse.Namespace, observed_arrays: dict[str, np.ndarray] | None) -> torch.Tensor:
    """The observed events: --observed, else those stored in the NetCDF file."""
    if observed_arrays is not None:
        return matrix(require(observed_arrays, "x", args.observed), "x", args.observed)
    if args.samples.suffix.lower() == ".nc":
        data = az.from_netcdf(str(args.samples))
        if "observed_data" in data.groups():
            return torch.from_numpy(data.observed_data["x"].values)
    raise UsageError(f"{args.samples} holds no observed events; pass --observed (or --reference samples)")


def _exact_posterior(simulator: Simulator, observed: torch.Tensor, n: int, seed: int) -> torch.Tensor | GridPosterior:
    """The simulator's exact posterior: on a grid where it has one (exact log densities), else n samples."""
    try:
        simulator.check_x(observed)
    except ValueError as error:
        raise UsageError(f"shape mismatch: the observed events do not fit the simulator: {error}") from None
    try:
        return simulator.exact_grid_posterior(observed.double())
    except NotImplementedError:
        pass
    try:
        return simulator.exact_posterior_samples(observed.double(), n, seed).double()
    except NotImplementedError as error:
        raise UsageError(f"{error}; pass --reference samples") from None


def _markdown(table: pd.DataFrame, true_theta: torch.Tensor | None) -> str:
    """A markdown table (numbers to 4 significant digits, blanks for missing)."""
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return "" if math.isnan(value) else f"{value:.4g}"
        return str(value)

    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    if true_theta is not None:
        lines.append(f"\nθ_true = {[round(v, 6) for v in true_theta.flatten().tolist()]}")
    return "\n".join(lines) + "\n"
