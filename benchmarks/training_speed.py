"""Training throughput: events per second per M/D phase, before vs after, and against sbi's NLE.

Two tasks: the demo's M-flow (polynomial surface, D = 3, n = 2) and an LHC-like M-flow (D = 40,
n = 14, hadron tier, θ ∈ R³). Each phase of sequential M/D training (manifold, then density) is
timed through the library's own `fit` for a fixed number of epochs (no early stopping), so the
time covers everything a user waits for: batching, optimizer steps, validation every epoch and
any per-stage caching. Events/s = training events × epochs / seconds.

"Before" runs the same measurement on the library at `--baseline-ref` (a git revision, checked
out into a temporary worktree and imported in a subprocess), "after" on the working tree, in the
same run with the same threads; sbi's NLE (default MAF) trains on the same data, at our batch
size and at its own default, for the same epochs.

    python benchmarks/training_speed.py --demo              # writes docs/training_speed.{md,json}
    python benchmarks/training_speed.py --epochs 1 --events 2000 --output /tmp/smoke.md   # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
TASKS = {"demo": "polynomial surface M-flow (D = 3, n = 2)", "lhc": "LHC-like M-flow (D = 40, n = 14)"}


def task_data(task: str, events: int) -> tuple[torch.Tensor, torch.Tensor, dict, torch.distributions.Distribution]:
    """(θ, x) in raw units, the M-flow's constructor arguments and the prior."""
    if task == "demo":
        from simulators import PolynomialSurface

        simulator = PolynomialSurface()
        theta, x = simulator.simulate_joint(events, seed=0)
        return theta, x, {"data_dim": 3, "theta_dim": 1, "latent_dim": 2}, simulator.prior
    from simulators import LHCLike

    simulator = LHCLike()
    theta = simulator.sample_prior(events, seed=0)
    return theta, simulator.simulate(theta, seed=1), {"data_dim": 40, "theta_dim": 3, "latent_dim": 14}, simulator.prior


def measure_mflow(task: str, events: int, epochs: int, batch_size: int | None) -> dict:
    """Seconds and events/s of the manifold and density phases of the library importable now
    (`batch_size` None: its default `TrainingConfig`)."""
    from mflow_sbi.models import MFlow
    from mflow_sbi.training import TrainingConfig
    from mflow_sbi.training.losses import schedule
    from mflow_sbi.training.trainer import fit

    theta, x, arguments, _ = task_data(task, events)
    defaults = TrainingConfig()
    batch_size = batch_size or defaults.batch_size
    config = TrainingConfig(epochs=epochs, batch_size=batch_size, patience=None, progress=False)
    model = MFlow(**arguments, seed=0)
    stages = schedule("sequential")
    data = {"x": model.check_x(x), "theta": model.check_theta(theta)}
    result = {"batch_size": batch_size, "library": str(Path(sys.modules["mflow_sbi"].__file__).parent)}
    for name, stage in zip(("manifold", "density"), stages):
        start = time.perf_counter()
        fit(model, data, [stage], config)
        seconds = time.perf_counter() - start
        training_events = len(x) - max(1, round(config.validation_fraction * len(x)))
        result[name] = {"seconds": seconds, "events_per_second": training_events * epochs / seconds}
    return result


def measure_sbi(task: str, events: int, epochs: int, batch_size: int) -> dict:
    """sbi's NLE with its default density estimator (MAF), trained for exactly `epochs`."""
    from sbi.inference import NLE

    theta, x, _, prior = task_data(task, events)
    inference = NLE(prior, show_progress_bars=False).append_simulations(theta.float(), x.float())
    start = time.perf_counter()
    inference.train(training_batch_size=batch_size, max_num_epochs=epochs, stop_after_epochs=epochs + 1)
    seconds = time.perf_counter() - start
    training_events = len(x) - int(0.1 * len(x))
    return {"batch_size": batch_size, "seconds": seconds, "events_per_second": training_events * epochs / seconds}


def run_baseline(ref: str, arguments: list[str], demo: bool) -> tuple[dict, dict | None]:
    """`measure_mflow` (and the demo, if `demo`) on the library at git revision `ref`, in
    subprocesses importing it."""
    with tempfile.TemporaryDirectory() as folder:
        worktree = Path(folder) / "baseline"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(worktree), ref], check=True, capture_output=True)
        try:
            command = [sys.executable, str(Path(__file__).resolve()), "--measure-only", *arguments]
            environment = os.environ | {"PYTHONPATH": str(worktree)}
            output = subprocess.run(command, check=True, capture_output=True, text=True, env=environment, cwd=folder).stdout
            demo_result = run_demo(worktree) if demo else None
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(worktree)], check=True, capture_output=True)
    return json.loads(output.strip().splitlines()[-1]), demo_result


def run_demo(library: Path) -> dict:
    """`mflow-sbi demo` with its defaults on the library in `library`, in a subprocess with
    torch's default threads; its results.json plus the wall time of the whole process."""
    with tempfile.TemporaryDirectory() as folder:
        command = [sys.executable, "-c", "import sys; from mflow_sbi.cli import main; sys.exit(main(sys.argv[1:]))", "demo", "--quiet", "--output", folder]
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, env=os.environ | {"PYTHONPATH": str(library)}, cwd=folder)
        return json.loads((Path(folder) / "results.json").read_text()) | {"process_seconds": time.perf_counter() - start}


def demo_table(before: dict, after: dict) -> list[str]:
    rows = [
        ("wall time of the demo's own clock, s", "total_seconds", ".0f"),
        ("wall time of the whole process, s", "process_seconds", ".0f"),
        ("posterior MMD² vs exact (20 events at θ = 0)", "posterior_mmd_squared", ".4f"),
        ("posterior mean (exact {exact:+.3f})", "mflow_posterior_mean", "+.3f"),
        ("posterior sd (exact {sd:.3f})", "mflow_posterior_std", ".3f"),
        ("reconstruction distance of test events", "mean_reconstruction_distance", ".4f"),
        ("distance of generated samples to the surface", "manifold_distance_of_samples", ".4f"),
    ]
    lines = ["## The demo (`mflow-sbi demo`, its defaults), before vs after", "", "| quantity | before | after |", "|---|---|---|"]
    for label, key, spec in rows:
        label = label.format(exact=after["exact_posterior_mean"], sd=after["exact_posterior_std"])
        lines.append(f"| {label} | {before[key]:{spec}} | {after[key]:{spec}} |")
    ratio = after["total_seconds"] / before["total_seconds"]
    return lines + ["", f"The demo takes **{ratio:.2f}×** the time of before ({after['total_seconds']:.0f} s; target ≤ 90 s).", ""]


def table(task: str, results: dict) -> list[str]:
    before, after, after_small = results["before"][task], results["after"][task], results["after_batch_before"][task]
    sbi_ours, sbi_default = results["sbi_our_batch"][task], results["sbi_default_batch"][task]
    lines = [
        f"## {TASKS[task]}",
        "",
        "| arm | batch | manifold events/s | density events/s | s per epoch (manifold + density) | events/s, × before |",
        "|---|---|---|---|---|---|",
    ]
    base = _combined(before)
    for label, arm in (("before", before), ("after, before's batch size", after_small), ("after (defaults)", after)):
        combined = _combined(arm)
        lines.append(
            f"| {label} | {arm['batch_size']} | {arm['manifold']['events_per_second']:.0f} | {arm['density']['events_per_second']:.0f} "
            f"| {_epoch_seconds(arm, results['epochs']):.2f} | {combined / base:.1f} |"
        )
    for label, arm in (("sbi NLE (MAF), our batch size", sbi_ours), ("sbi NLE (MAF), its default batch size", sbi_default)):
        lines.append(
            f"| {label} | {arm['batch_size']} | — | — | {arm['seconds'] / results['epochs']:.2f} "
            f"({arm['events_per_second']:.0f} events/s) | — |"
        )
    phases = {name: after[name]["events_per_second"] / before[name]["events_per_second"] for name in ("manifold", "density")}
    per_epoch = _epoch_seconds(after, results["epochs"]) / (sbi_ours["seconds"] / results["epochs"])
    lines += [
        "",
        f"Manifold phase **{phases['manifold']:.1f}×** and density phase **{phases['density']:.1f}×** the events/s of before "
        f"(target ≥ 5×); one M-flow epoch (both phases) takes **{per_epoch:.2f}×** the time of one sbi MAF epoch at the "
        "same batch size (target ≤ 1).",
        "",
    ]
    return lines


def _combined(arm: dict) -> float:
    """Events/s of one sequential epoch pair: both phases see every event once."""
    return 2 / (1 / arm["manifold"]["events_per_second"] + 1 / arm["density"]["events_per_second"])


def _epoch_seconds(arm: dict, epochs: int) -> float:
    return (arm["manifold"]["seconds"] + arm["density"]["seconds"]) / epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--baseline-ref", default="41b3bcb", help="git revision of the 'before' library")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--batch-size", type=int, default=None, help="the M-flow's batch size (default: the library's)")
    parser.add_argument("--demo", action="store_true", help="also run `mflow-sbi demo` of both revisions")
    parser.add_argument("--measure-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "training_speed.md")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    common = ["--events", str(args.events), "--epochs", str(args.epochs), "--tasks", *args.tasks]
    common += [] if args.threads is None else ["--threads", str(args.threads)]
    if args.measure_only:
        print(json.dumps({task: measure_mflow(task, args.events, args.epochs, args.batch_size) for task in args.tasks}))
        return

    results: dict = {"epochs": args.epochs, "events": args.events, "threads": torch.get_num_threads()}
    results["before"], demo_before = run_baseline(args.baseline_ref, common, args.demo)
    if args.demo:
        results["demo"] = {"before": demo_before, "after": run_demo(ROOT)}
    before_batch = results["before"][args.tasks[0]]["batch_size"]
    results["after"] = {task: measure_mflow(task, args.events, args.epochs, args.batch_size) for task in args.tasks}
    results["after_batch_before"] = {task: measure_mflow(task, args.events, args.epochs, before_batch) for task in args.tasks}
    results["sbi_our_batch"] = {task: measure_sbi(task, args.events, args.epochs, results["after"][task]["batch_size"]) for task in args.tasks}
    results["sbi_default_batch"] = {task: measure_sbi(task, args.events, args.epochs, 200) for task in args.tasks}

    command = "python benchmarks/training_speed.py " + " ".join(sys.argv[1:])
    lines = [
        "# Training throughput: M-flow phases before vs after, and sbi's NLE",
        "",
        f"Command: `{command.strip()}`  ",
        f"Machine: {platform.machine()}, {results['threads']} torch threads, torch {torch.__version__}; {args.events} events "
        f"(90% for training), {args.epochs} epochs per phase, no early stopping; one run, every arm in it. "
        f"Before: the library at `{args.baseline_ref}` (its defaults), in a subprocess of the same run.",
        "",
        "Each phase is timed through `fit`, so the time includes validation every epoch and per-stage caching.",
        "",
    ]
    for task in args.tasks:
        lines += table(task, results)
    if args.demo:
        lines += demo_table(results["demo"]["before"], results["demo"]["after"])
    lines += [
        "## What changed, and what the profile showed",
        "",
        "- **LU-linear layers** (`mflow_sbi.transforms.linear.LULinearTransform`): zuko's broadcasts the L and U",
        "  factors to (batch, D, D) for its triangular solves, and their backward builds a (batch, D, D) gradient; at",
        "  D = 40 and batch 1000 that was over half of a manifold step (torch.profiler: `bmm`, `tril`/`triu`, `copy_`,",
        "  `neg` on (batch, D, D) tensors). Ours solves and multiplies the (batch, D) matrix against one (D, D) factor.",
        "- **The density stage of sequential M/D** trains on u = g⁻¹(x) encoded once for the stage (`Phase.cache`):",
        "  the chart is frozen there, so each step is one pass of the inner flow instead of the outer flow plus it.",
        "- **Encoding without log-Jacobians**: the manifold phase needs z = f(x), not log|det J_f|.",
        "- **Batch 1000 at learning rate 3·10⁻³** (was 100 at 10⁻³): on the CPU a step of these flows is mostly",
        "  per-operation overhead at batch 100, so a step at batch 1000 costs a few times more, not ten. On the",
        "  polynomial surface (10⁴ events, one seed) the manifold phase reached a lower validation loss in less",
        "  time (×1000-weighted squared reconstruction error 0.45 after 30 epochs and 0.11 after 40 at batch 1000,",
        "  1.08 after 20 at batch 100), and the density phase, trained on one fixed chart, the same validation loss",
        "  at batch 100, 250, 500 and 1000 (2.407–2.411).",
        "- `foreach` AdamW and clipping, `optimizer.zero_grad` on the phase's own parameters.",
        "- Tried and not kept: `torch.compile` of the phase losses (works with zuko; at batch 1000 on one thread",
        "  1.4× per manifold step, but 67 s + 35 s of compilation for the 3-D model, more than a whole demo run).",
        "- Tried and not kept: a spline of our own with the three knot sequences in one tensor (one comparison",
        "  and one `gather` per bin lookup, exp-normalization instead of zuko's softmax, index_select couplings).",
        "  Same map as zuko's to 10⁻¹¹; 2-10 % per manifold step and 0-3 % for the inner flow on one thread.",
        "- Where the time goes now: at batch 1000 on one thread, matrix products are 58 % of a demo manifold",
        "  step (torch.profiler; 1000×100×100 products at ≈ 49 GFLOP/s, near this core's peak). The reference",
        "  architecture runs 10 conditioner passes of 4 hidden 100×100 layers per manifold step (chart and",
        "  inverse), about 25× the multiply-adds per event of sbi's default MAF (5 MADEs of 50 units): per-epoch",
        "  parity with the MAF needs a smaller architecture, not less overhead.",
        "",
    ]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(lines))
    args.output.with_suffix(".json").write_text(json.dumps(results, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
