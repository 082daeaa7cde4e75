"""`mflow-sbi infer`: the posterior of θ for observed events under a trained model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from mflow_sbi.cli_commands.common import (
    UsageError,
    add_simulator_options,
    matrix,
    read_arrays,
    require,
    resolve_simulator,
    simulator_help,
    true_theta_of,
)  # fmt: skip
from mflow_sbi.diagnostics import plot_posteriors
from mflow_sbi.files import write_npz_atomically
from mflow_sbi.inference import grid_posterior, mcmc_posterior, prior_bounds
from mflow_sbi.training import load_model

POSTERIOR, SUMMARY, PLOT, GRID = "posterior.nc", "summary.csv", "posterior.png", "grid_posterior.npz"

DESCRIPTION = f"""Sample p(θ | observed events) with emcee on the model's fast likelihood path (the
events are encoded once) and the simulator's prior. Writes OUTPUT/{POSTERIOR} (ArviZ InferenceData:
chains, log posterior, observed events), OUTPUT/{SUMMARY} (mean, sd, HDI, ESS, R-hat), and for θ of
dimension 1 or 2 OUTPUT/{PLOT}; with --grid also OUTPUT/{GRID} (grid posterior, exactly normalized
on the grid). The observed file is an .npz with array x (as `mflow-sbi simulate --theta` writes
it) or an .npy array (events, D), in raw units (the model applies its own standardization)."""


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("infer", help="MCMC posterior for observed events", description=DESCRIPTION)
    parser.add_argument("--checkpoint", type=Path, required=True, help="model checkpoint written by `mflow-sbi train`")
    parser.add_argument("--observed", type=Path, required=True, help="observed events (.npz with x, or .npy)")
    parser.add_argument("--simulator", help=f"simulator whose prior to use, {simulator_help()} (default: the one the checkpoint records)")
    parser.add_argument("--num-samples", type=int, default=10_000, help="posterior samples (default 10000)")
    parser.add_argument("--walkers", type=int, default=256, help="emcee walkers (default 256, keep ≥ 32)")
    parser.add_argument("--burn-in", type=int, default=20, help="burn-in steps (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--grid", action="store_true", help="also the grid posterior (θ of dimension ≤ 2)")
    parser.add_argument("--resolution", type=int, default=201, help="grid cells per axis (default 201)")
    parser.add_argument("--grid-bounds", type=float, nargs=2, metavar=("LOW", "HIGH"),
                        help="grid range of every θ component (default: the prior's support, which must be bounded)")  # fmt: skip
    parser.add_argument("--output", type=Path, required=True, help="folder for posterior, summary and plot")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_simulator_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> list[Path]:
    if not args.checkpoint.is_file():
        raise UsageError(f"checkpoint {args.checkpoint} does not exist")
    model, metadata = load_model(args.checkpoint)
    simulator, spec = resolve_simulator(args, metadata.get("simulator_spec"), f"checkpoint {args.checkpoint}")
    if model.theta_dim != simulator.theta_dim:
        raise UsageError(f"shape mismatch: the model's θ has {model.theta_dim} dimensions, the {spec['name']} prior's {simulator.theta_dim}")
    arrays, _ = read_arrays(args.observed, "observed file")
    observed = matrix(require(arrays, "x", args.observed), "x", args.observed)
    if tuple(observed.shape[1:]) != model.event_shape:
        raise UsageError(f"shape mismatch: {args.observed} has events of dimension {observed.shape[1]}, the model expects {model.event_shape}")
    bounds = None
    if args.grid:  # every option is checked before anything is computed or written
        if simulator.theta_dim > 2:
            raise UsageError(f"--grid needs θ of dimension ≤ 2, this simulator's has {simulator.theta_dim}")
        if args.resolution < 2:
            raise UsageError(f"--resolution must be ≥ 2, got {args.resolution}")
        bounds = _grid_bounds(args, simulator.prior, simulator.theta_dim)
    log_likelihood = model.likelihood(observed)  # raw units: the model standardizes inside

    result = mcmc_posterior(
        log_likelihood, simulator.prior, num_samples=args.num_samples, walkers=args.walkers, burn_in=args.burn_in,
        seed=args.seed, progress=not args.quiet, observed=observed, parameter_names=simulator.theta_names,
    )  # fmt: skip
    true_theta = true_theta_of(arrays)
    attributes = {"simulator_spec": json.dumps(spec), "checkpoint": str(args.checkpoint.resolve())}
    if true_theta is not None:
        attributes["true_theta"] = json.dumps(true_theta)
    result.inference_data.posterior.attrs.update(attributes)  # read back by `mflow-sbi evaluate`
    posteriors = {"MCMC": result}
    if bounds is not None:
        posteriors["grid"] = grid_posterior(log_likelihood, simulator.prior, args.resolution, bounds)
    args.output.mkdir(parents=True, exist_ok=True)
    written = [args.output / POSTERIOR, args.output / SUMMARY]
    result.inference_data.to_netcdf(str(written[0]))
    result.summary().to_csv(written[1])
    if bounds is not None:
        grid = posteriors["grid"]
        written.append(write_npz_atomically(args.output / GRID, {"theta": grid.grid.numpy(), "log_density": grid.log_density.numpy()}))
    if simulator.theta_dim <= 2:
        written.append(plot_posteriors(args.output / PLOT, posteriors, true_theta=true_theta, title=f"{args.observed.name}: {len(observed)} events"))
    else:
        print(f"no plot: θ has {simulator.theta_dim} dimensions (plots show 1 or 2); see {SUMMARY}")
    return written


def _grid_bounds(args: argparse.Namespace, prior: torch.distributions.Distribution, dim: int) -> tuple[list[float], list[float]]:
    if args.grid_bounds is not None:
        low, high = args.grid_bounds
        if not low < high:
            raise UsageError(f"--grid-bounds needs LOW < HIGH, got {low} {high}")
        return [low] * dim, [high] * dim
    try:
        return prior_bounds(prior)
    except ValueError:
        raise UsageError("the prior has unbounded support; pass --grid-bounds LOW HIGH") from None
