"""`mflow-sbi simulate`: a data set from a simulator, as .npz plus a JSON description."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from mflow_sbi.cli_commands.common import (
    SIMULATORS, UsageError, add_simulator_options, make_simulator, parse_theta, simulator_spec, write_json,
)  # fmt: skip
from simulators import LHCLike
from simulators.lhc_like import save_dataset
from simulators.lhc_like.normalization import write_atomically

DESCRIPTION = """Simulate n events and write OUTPUT/NAME.npz (arrays x (n, D) and theta (n, p); lhc_like
adds its gold data: latent, nuisance, matrix, joint_score, joint_log_ratio, theta_ref) and
OUTPUT/NAME.json (simulator, seed, array shapes). θ comes from the prior, one draw per event,
unless --theta fixes it (e.g. for an observed data set). lhc_like with --alices-reference also
simulates n events at θ_ref = 0, each paired with a θ from the prior, for ALICES: arrays
x_reference, theta_reference and joint_log_ratio_reference = log r(x, z|θ, θ_ref)."""


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("simulate", help="simulate a data set (.npz)", description=DESCRIPTION)
    parser.add_argument("simulator", choices=SIMULATORS, help="which simulator")
    parser.add_argument("--n", type=int, default=10_000, help="number of events (default 10000)")
    parser.add_argument("--theta", type=float, nargs="+", metavar="VALUE", help="simulate every event at this θ (p values)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--name", default="data", help="file name stem (default data)")
    parser.add_argument("--output", type=Path, required=True, help="folder to write to")
    add_simulator_options(parser)
    parser.add_argument("--alices-reference", action="store_true", help="lhc_like: also events at θ_ref for ALICES")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> list[Path]:
    if args.n < 1:
        raise UsageError(f"--n must be ≥ 1, got {args.n}")
    simulator, spec = make_simulator(simulator_spec(args.simulator, args))
    theta = parse_theta(args.theta, simulator, "--theta")
    metadata = {"simulator_spec": spec, "n": args.n, "seed": args.seed, "theta": "prior" if theta is None else args.theta}
    path = args.output / f"{args.name}.npz"
    if isinstance(simulator, LHCLike):
        dataset = simulator.simulate_dataset(args.n, args.seed, None if theta is None else theta.expand(args.n, -1))
        dataset.metadata |= metadata
        save_dataset(path, dataset)
        if args.alices_reference:
            with np.load(path) as stored:
                arrays = {key: stored[key] for key in stored.files}
            write_atomically(path, arrays | reference_events(simulator, dataset.gold.theta_ref, args.n, args.seed))
    else:
        if args.alices_reference:
            raise UsageError("--alices-reference needs a simulator with gold data (lhc_like)")
        if theta is None:
            theta, x = simulator.simulate_joint(args.n, seed=args.seed)
        else:
            theta = theta.expand(args.n, -1).contiguous()
            x = simulator.simulate(theta, seed=args.seed)
        write_atomically(path, {"x": x.numpy(), "theta": theta.numpy(), "metadata": np.array(json.dumps(metadata))})
    with np.load(path) as stored:
        shapes = {key: list(stored[key].shape) for key in stored.files if key != "metadata"}
    return [path, write_json(args.output / f"{args.name}.json", metadata | {"file": path.name, "arrays": shapes})]


def reference_events(simulator: LHCLike, theta_ref: torch.Tensor, n: int, seed: int) -> dict[str, np.ndarray]:
    """n events at θ_ref, each paired with a θ from the prior, and their joint log ratio
    log r(x, z|θ, θ_ref); seeds derived from `seed`, apart from those of the main data set."""
    simulation_seed, prior_seed = (int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(2))
    reference = theta_ref.double().expand(n, -1)
    x, gold = simulator.simulate_gold(reference, seed=simulation_seed, theta_ref=theta_ref)
    paired = simulator.sample_prior(n, seed=prior_seed).double()
    log_r = simulator.joint_log_ratio(gold.matrix, paired, reference)
    return {"x_reference": x.numpy(), "theta_reference": paired.numpy(), "joint_log_ratio_reference": log_r.numpy()}
