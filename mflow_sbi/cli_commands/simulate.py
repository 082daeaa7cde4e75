"""`mflow-sbi simulate`: a data set from a simulator, as .npz plus a JSON description."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from mflow_sbi.files import write_npz_atomically
from mflow_sbi.cli_commands.common import (
    UsageError,
    add_simulator_options,
    file_stem,
    make_simulator,
    parse_theta,
    simulator_help,
    simulator_options,
    write_json,
)  # fmt: skip

DESCRIPTION = """Simulate n events and write OUTPUT/NAME.npz (arrays x (n, D) and theta (n, p), plus the
gold data of a simulator that provides it, e.g. lhc_like's latent, nuisance, matrix, joint_score,
joint_log_ratio, theta_ref) and OUTPUT/NAME.json (simulator spec, seed, array shapes). SIMULATOR is
a registered name or package.module:ClassName (a subclass of mflow_sbi.simulator.Simulator);
--option KEY=VALUE passes its constructor's arguments. θ comes from the prior, one draw per event,
unless --theta fixes it (e.g. for an observed data set). --alices-reference also simulates n events
at θ_ref, each paired with a θ from the prior, for ALICES (simulators with gold data, e.g.
lhc_like): arrays x_reference, theta_reference and joint_log_ratio_reference = log r(x, z|θ, θ_ref)."""


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("simulate", help="simulate a data set (.npz)", description=DESCRIPTION)
    parser.add_argument("simulator", help=simulator_help())
    parser.add_argument("--n", type=int, default=10_000, help="number of events (default 10000)")
    parser.add_argument("--theta", type=float, nargs="+", metavar="VALUE", help="simulate every event at this θ (p values)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--name", default="data", help="file name stem (default data)")
    parser.add_argument("--output", type=Path, required=True, help="folder to write to")
    add_simulator_options(parser)
    parser.add_argument("--alices-reference", action="store_true", help="also events at θ_ref for ALICES (needs gold data)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> list[Path]:
    if args.n < 1:
        raise UsageError(f"--n must be ≥ 1, got {args.n}")
    file_stem(args.name, "--name")
    simulator, spec = make_simulator(args.simulator, simulator_options(args))
    theta = parse_theta(args.theta, simulator, "--theta")
    arrays = simulator.simulate_arrays(args.n, args.seed, theta)
    if args.alices_reference:
        try:
            arrays |= simulator.simulate_reference_events(args.n, args.seed)
        except NotImplementedError as error:
            raise UsageError(f"--alices-reference: {error}") from None
    metadata = {
        "simulator_spec": spec, "theta_names": list(simulator.theta_names), "n": args.n, "seed": args.seed,
        "theta": "prior" if theta is None else args.theta,
    }  # fmt: skip
    own = json.loads(str(arrays.pop("metadata"))) if "metadata" in arrays else {}  # the simulator's own description
    path = write_npz_atomically(args.output / f"{args.name}.npz", arrays | {"metadata": np.array(json.dumps(own | metadata))})
    shapes = {key: list(value.shape) for key, value in arrays.items()}
    return [path, write_json(args.output / f"{args.name}.json", metadata | {"file": path.name, "arrays": shapes})]
