"""`mflow-sbi simulate`: a data set from a simulator, as .npz plus a JSON description."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from mflow_sbi.cli_commands.common import (
    SIMULATORS, UsageError, add_simulator_options, make_simulator, parse_theta, simulator_spec, write_json,
)  # fmt: skip
from simulators import LHCLike
from simulators.lhc_like import save_dataset
from simulators.lhc_like.normalization import write_atomically

DESCRIPTION = """Simulate n events and write OUTPUT/NAME.npz (arrays x (n, D) and theta (n, p); lhc_like
adds its gold data: latent, nuisance, matrix, joint_score, joint_log_ratio, theta_ref) and
OUTPUT/NAME.json (simulator, seed, array shapes). θ comes from the prior, one draw per event,
unless --theta fixes it (e.g. for an observed data set)."""


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("simulate", help="simulate a data set (.npz)", description=DESCRIPTION)
    parser.add_argument("simulator", choices=SIMULATORS, help="which simulator")
    parser.add_argument("--n", type=int, default=10_000, help="number of events (default 10000)")
    parser.add_argument("--theta", type=float, nargs="+", metavar="VALUE", help="simulate every event at this θ (p values)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--name", default="data", help="file name stem (default data)")
    parser.add_argument("--output", type=Path, required=True, help="folder to write to")
    add_simulator_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> list[Path]:
    if args.n < 1:
        raise UsageError(f"--n must be ≥ 1, got {args.n}")
    spec = simulator_spec(args.simulator, args)
    simulator = make_simulator(spec)
    theta = parse_theta(args.theta, simulator, "--theta")
    metadata = {"simulator_spec": spec, "n": args.n, "seed": args.seed, "theta": "prior" if theta is None else args.theta}
    path = args.output / f"{args.name}.npz"
    if isinstance(simulator, LHCLike):
        dataset = simulator.simulate_dataset(args.n, args.seed, None if theta is None else theta.expand(args.n, -1))
        dataset.metadata |= metadata
        save_dataset(path, dataset)
    else:
        if theta is None:
            theta, x = simulator.simulate_joint(args.n, seed=args.seed)
        else:
            theta = theta.expand(args.n, -1).contiguous()
            x = simulator.simulate(theta, seed=args.seed)
        write_atomically(path, {"x": x.numpy(), "theta": theta.numpy(), "metadata": np.array(json.dumps(metadata))})
    with np.load(path) as stored:
        shapes = {key: list(stored[key].shape) for key in stored.files if key != "metadata"}
    return [path, write_json(args.output / f"{args.name}.json", metadata | {"file": path.name, "arrays": shapes})]
