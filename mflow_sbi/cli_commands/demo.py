"""`mflow-sbi demo`: train an M-flow on the polynomial surface and infer θ."""

from __future__ import annotations

import argparse
from pathlib import Path

from mflow_sbi.cli_commands.common import UsageError


def add_parser(commands: argparse._SubParsersAction) -> None:
    demo = commands.add_parser("demo", help="train an M-flow on the polynomial surface and infer θ")
    demo.add_argument("--simulations", type=int, default=20_000, help="training simulations (default 20000)")
    demo.add_argument("--epochs", type=int, default=30, help="epochs per training stage (default 30)")
    demo.add_argument("--schedule", choices=("sequential", "alternating"), default="sequential")
    demo.add_argument("--true-theta", type=float, default=0.0, help="θ of the 20 observed events, in [-1, 1]")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--output", type=Path, default=Path("mflow-sbi-demo"), help="folder for plot, results, checkpoint")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(run=run)


def run(args: argparse.Namespace) -> list[Path]:
    from mflow_sbi.demo import DemoSettings, run_demo  # sets matplotlib's backend

    if not -1 <= args.true_theta <= 1:
        raise UsageError(f"--true-theta must lie in the prior support [-1, 1], got {args.true_theta}")
    if args.simulations < 100 or args.epochs < 1:
        raise UsageError("--simulations must be ≥ 100 and --epochs ≥ 1")
    run_demo(
        DemoSettings(
            simulations=args.simulations, epochs=args.epochs, schedule=args.schedule,
            true_theta=args.true_theta, seed=args.seed, output=args.output, progress=not args.quiet,
        )
    )
    return []
