"""The `mflow-sbi` command line: one module per subcommand under `mflow_sbi.cli_commands`."""

from __future__ import annotations

import argparse
import sys

import torch

from mflow_sbi.cli_commands import benchmark, demo, evaluate, infer, simulate, train
from mflow_sbi.training import NonFiniteLossError

COMMANDS = (simulate, train, infer, evaluate, benchmark, demo)
EPILOG = """A typical run:
  mflow-sbi simulate polynomial_surface --n 10000 --output run/data
  mflow-sbi simulate polynomial_surface --n 20 --theta 0.3 --seed 1 --name observed --output run/data
  mflow-sbi train --config examples/configs/mflow_polynomial.yaml --data run/data/data.npz --output run/train
  mflow-sbi infer --checkpoint run/train/model.pt --observed run/data/observed.npz --output run/infer
  mflow-sbi evaluate --samples run/infer/posterior.nc --output run/evaluate
`mflow-sbi COMMAND --help` describes each command; docs/cli.md has the config file reference."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mflow-sbi", description="Simulation-based inference with manifold-learning flows.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--threads", type=int, metavar="N", help="torch intra-op threads for the whole run (default: torch's choice)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a subcommand; user mistakes print one line `mflow-sbi: error: ...` and return 2."""
    args = build_parser().parse_args(argv)
    try:
        if args.threads is not None:
            if args.threads < 1:
                raise ValueError(f"--threads must be ≥ 1, got {args.threads}")
            torch.set_num_threads(args.threads)
        result = args.run(args)
    except (ValueError, FileNotFoundError, NonFiniteLossError) as error:
        print(f"mflow-sbi: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    if isinstance(result, int):  # a benchmark script's exit code
        return result
    for path in result:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
