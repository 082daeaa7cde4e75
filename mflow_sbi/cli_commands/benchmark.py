"""`mflow-sbi benchmark`: run one of the scripts in `benchmarks/` (a source checkout's)."""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
from pathlib import Path

from mflow_sbi.cli_commands.common import UsageError

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"

DESCRIPTION = f"""Run benchmarks/NAME.py with the remaining arguments passed through, e.g.
`mflow-sbi benchmark polynomial_surface_study --profile quick`; `mflow-sbi benchmark NAME --help`
shows the script's own options. The scripts write their tables under docs/ (relative to the
current folder) unless given --output. Scripts: {BENCHMARKS}."""


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("benchmark", help="run a benchmark script (--list to list them)", description=DESCRIPTION,
                                 add_help=False)  # fmt: skip
    parser.add_argument("-h", "--help", action="store_true", help="this help, or with NAME the script's help")
    parser.add_argument("--list", action="store_true", help="list the benchmark scripts and exit")
    parser.add_argument("name", nargs="?", help="script name (without .py)")
    parser.add_argument("arguments", nargs=argparse.REMAINDER, help="passed to the script")
    parser.set_defaults(run=run, print_help=parser.print_help)


def scripts() -> dict[str, str]:
    """Script name -> the first sentence of its docstring (modules named _* are shared helpers)."""
    if not BENCHMARKS.is_dir():
        raise UsageError(f"no benchmarks/ folder at {BENCHMARKS}; benchmarks run from a source checkout (pip install -e .)")
    summaries = {}
    for path in sorted(BENCHMARKS.glob("[!_]*.py")):
        paragraph = " ".join((ast.get_docstring(ast.parse(path.read_text())) or "").split("\n\n")[0].split())
        sentence = paragraph.split(". ")[0].rstrip(".")
        summaries[path.stem] = sentence if len(sentence) <= 100 else sentence[:99] + "…"
    return summaries


def run(args: argparse.Namespace) -> int:
    if args.name is None:
        if args.list:
            for name, summary in scripts().items():
                print(f"{name:28} {summary}")
        else:
            args.print_help()
        return 0
    available = scripts()
    if args.name not in available:
        raise UsageError(f"unknown benchmark {args.name!r}; choose one of {', '.join(available)}")
    passed = [*args.arguments, "--help"] if args.help else args.arguments
    return subprocess.run([sys.executable, str(BENCHMARKS / f"{args.name}.py"), *passed]).returncode
