"""Issue 30: which training settings give accurate posteriors at 10⁴ simulations, per CPU-second.

Sequential M/D on the polynomial surface, with the manifold stage and the density stage trained
apart so that each can be varied alone: every manifold variant (`MANIFOLD`) is trained once per
(simulations, seed), and every density variant (`DENSITY`: the inner flow's architecture and the
density stage's TrainingConfig) is trained on a copy of it. Per row: wall-clock of each stage
(1 thread), the epochs each stage ran, the mean reconstruction distance of 1000 test events, the
density stage's best and last validation NLL, and for 15 observed sets (θ ∈ {-0.9, -0.5, 0, 0.5, 0.9} × 3
sets of 20 events, across the prior) the posterior MMD² against the exact grid posterior, with
the posterior's mean shift and width ratio against the exact one (grid posteriors of the model's
fast likelihood: exact for the model, no MCMC). Each finished row is appended to
`docs/defaults_sweep.jsonl` and skipped on a rerun, so the sweep resumes across sessions; the
table goes to `docs/defaults_sweep.md`.

    python benchmarks/defaults_sweep.py --simulations 10000 --seeds 0 1
    python benchmarks/defaults_sweep.py --summarize      # the table from the rows so far
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import statistics
import time
from pathlib import Path

import pandas as pd
import torch
from threadpoolctl import threadpool_limits

from mflow_sbi.diagnostics import mean_reconstruction_distance, mmd_squared
from mflow_sbi.inference import grid_posterior
from mflow_sbi.models import MFlow
from mflow_sbi.training import TrainingConfig, fit, schedule
from simulators import PolynomialSurface

TRUE_THETAS = (-0.9, -0.5, 0.0, 0.5, 0.9)
SETS_PER_THETA = 3
OBSERVED_EVENTS = 20
POSTERIOR_SAMPLES = 2_000
#: manifold-stage variants: TrainingConfig fields of the M stage
MANIFOLD = {
    "M20": {"epochs": 20},
    "M50": {"epochs": 50},
}
#: density-stage variants: (inner FlowConfig fields, TrainingConfig fields of the D stage[, members]);
#: with members = K, K density flows (initial weights from K seeds) are trained on the same chart and
#: the likelihood is their mixture, p(x|θ) = (1/K) Σ_k p_k(x|θ)
DENSITY = {
    "D20": ({}, {"epochs": 20}),
    "D50": ({}, {"epochs": 50}),
    "D100": ({}, {"epochs": 100}),
    "D50 wd 1e-2": ({}, {"epochs": 50, "weight_decay": 1e-2}),
    "D50 small inner": ({"layers": 3, "hidden": 32, "blocks": 1}, {"epochs": 50}),
    "D50 batch 1000": ({}, {"epochs": 50, "density_batch_size": None}),
    "D50 lr / 3": ({}, {"epochs": 50, "learning_rate": 1e-3}),
    "D50 patience 3": ({}, {"epochs": 50, "patience": 3}),
    # without early stopping the cosine schedule anneals the learning rate to 0 before training ends
    # (the best validation epoch is still restored at the end); "last": the annealed weights are kept
    "D20 no early stop": ({}, {"epochs": 20, "patience": None}),
    "D50 no early stop": ({}, {"epochs": 50, "patience": None}),
    "D100 no early stop": ({}, {"epochs": 100, "patience": None}),
    "D20 last": ({}, {"epochs": 20, "patience": None, "restore_best": False}),
    "D50 last": ({}, {"epochs": 50, "patience": None, "restore_best": False}),
    "D100 last": ({}, {"epochs": 100, "patience": None, "restore_best": False}),
    "D20 last small inner": ({"layers": 3, "hidden": 32, "blocks": 1}, {"epochs": 20, "patience": None, "restore_best": False}),
    "D50 last small inner": ({"layers": 3, "hidden": 32, "blocks": 1}, {"epochs": 50, "patience": None, "restore_best": False}),
    "D50 last wd 1e-2": ({}, {"epochs": 50, "patience": None, "restore_best": False, "weight_decay": 1e-2}),
    "D20 ensemble of 3": ({}, {"epochs": 20}, 3),
    "D50 ensemble of 3": ({}, {"epochs": 50}, 3),
}
VERSION = 1


def observed_sets(simulator: PolynomialSurface) -> list[tuple[float, torch.Tensor]]:
    """The 15 observed sets (true θ, 20 events), the same for every row."""
    return [
        (theta, simulator.simulate(torch.full((OBSERVED_EVENTS, 1), theta), seed=70_000 + 100 * k + int(10 * theta)))
        for theta in TRUE_THETAS for k in range(SETS_PER_THETA)
    ]  # fmt: skip


def mixture_likelihood(models: list[MFlow], observed: torch.Tensor):
    """θ -> Σ_j log (1/K) Σ_k p_k(x_j|θ) (fast path: each member's θ-independent term is the same
    chart's, so it factors out of the mixture)."""
    likelihoods = [model.likelihood(observed) for model in models]
    return lambda theta: (torch.logsumexp(torch.stack([lik.table(theta) for lik in likelihoods]), 0) - math.log(len(models))).sum(-1)


def posterior_metrics(models: list[MFlow], simulator: PolynomialSurface, sets: list, seed: int) -> dict:
    mmds, shifts, widths = [], [], []
    for _, observed in sets:
        exact = simulator.exact_posterior(observed)
        with torch.no_grad():
            learned = grid_posterior(mixture_likelihood(models, observed), simulator.prior, resolution=1001)
        generator = torch.Generator().manual_seed(seed)
        mmds.append(mmd_squared(learned.sample(POSTERIOR_SAMPLES, generator), exact.sample(POSTERIOR_SAMPLES, generator)))
        shifts.append(float((learned.mean() - exact.mean()) / exact.std()))
        widths.append(float(learned.std() / exact.std()))
    return {
        "mmd_median": statistics.median(mmds), "mmd_worst": max(mmds), "mmd": mmds,
        "shift_in_sd": shifts, "width_ratio": widths, "abs_shift_median": statistics.median(abs(s) for s in shifts),
    }  # fmt: skip


def density_model(trained: MFlow, inner: dict, seed: int) -> MFlow:
    """A copy of the manifold-trained model, with a fresh inner flow of the variant's architecture."""
    config = {k: v for k, v in trained.config.items() if k != "model"}
    model = MFlow(**{**config, "inner": {**config["inner"], **inner}, "seed": seed})
    state = {k: v for k, v in copy.deepcopy(trained.state_dict()).items() if not k.startswith("density.")}
    model.load_state_dict(state, strict=False)
    return model


def run(simulations: int, seed: int, results: Path, done: set, simulator: PolynomialSurface, sets: list) -> None:
    theta, x = simulator.simulate_joint(simulations, seed=seed)
    data = {"x": x, "theta": theta}
    test_theta, test_x = simulator.simulate_joint(1000, seed=10_000 + seed)
    manifold_stage, density_stage = schedule("sequential")
    for m_name, m_fields in MANIFOLD.items():
        pending = [d for d in DENSITY if (simulations, seed, m_name, d) not in done]
        if not pending:
            continue
        chart = MFlow(data_dim=3, theta_dim=1, latent_dim=2, seed=seed)
        start = time.perf_counter()
        m_history = fit(chart, data, [manifold_stage], TrainingConfig(seed=seed, progress=False, **m_fields))
        manifold_s = time.perf_counter() - start
        reconstruction = mean_reconstruction_distance(chart.eval(), test_x)
        for d_name in pending:
            inner, d_fields, *members = DENSITY[d_name]
            models, histories = [], []
            start = time.perf_counter()
            for member in range(members[0] if members else 1):
                models.append(density_model(chart, inner, seed + 1000 * member))
                histories.append(fit(models[-1], data, [density_stage], TrainingConfig(seed=seed, progress=False, **d_fields)))
                models[-1].eval()
            density_s = time.perf_counter() - start
            d_history = histories[0]
            row = {
                "version": VERSION, "simulations": simulations, "seed": seed, "manifold": m_name, "density": d_name,
                "manifold_s": manifold_s, "density_s": density_s, "training_s": manifold_s + density_s,
                "manifold_epochs": len(m_history), "density_epochs": len(d_history),
                "reconstruction": reconstruction, "density_validation_nll": float(d_history["validation_loss"].min()),
                "density_validation_nll_last": float(d_history["validation_loss"].iloc[-1]),
                "density_train_nll": float(d_history.loc[d_history["validation_loss"].idxmin(), "train_density"]),
                **posterior_metrics(models, simulator, sets, seed),
            }  # fmt: skip
            with results.open("a") as handle:  # one line per finished row: nothing lost on a crash
                handle.write(json.dumps(row) + "\n")
            print(json.dumps({k: v for k, v in row.items() if not isinstance(v, list)}), flush=True)


def finished(results: Path) -> list[dict]:
    if not results.exists():
        return []
    return [row for row in map(json.loads, results.read_text().splitlines()) if row.get("version") == VERSION]


def markdown(rows: list[dict], command: str, machine: str) -> str:
    frame = pd.DataFrame(rows)
    columns = ["training_s", "manifold_epochs", "density_epochs", "reconstruction", "density_validation_nll", "abs_shift_median", "mmd_median", "mmd_worst"]
    table = frame.groupby(["simulations", "manifold", "density"], sort=False)[columns].median()
    seeds = frame.groupby(["simulations", "manifold", "density"], sort=False)["seed"].nunique()
    lines = [
        "# Defaults sweep (issue 30): sequential M/D on the polynomial surface",
        "",
        f"Command: `{command}`; {machine}.",
        "",
        f"Each row: median over seeds (seeds per row in the last column) of the training wall-clock, the epochs each stage ran",
        "(early stopping), the mean reconstruction distance of 1000 test events (raw units), the density stage's best",
        "validation NLL (standardized u, lower is better), and over 15 observed sets (θ ∈ {-0.9, -0.5, 0, 0.5, 0.9} × 3,",
        "20 events each) the median |posterior mean shift| in exact-posterior sds, and the median and worst posterior",
        "MMD² against the exact posterior. M variants: the manifold stage's TrainingConfig; D variants: the density",
        "stage's, trained on a copy of the same manifold: \"no early stop\" trains every epoch and still restores the best",
        "validation epoch; \"last\" keeps the last epoch's weights (the cosine schedule annealed to 0); \"ensemble of 3\" is the",
        "mixture of 3 density flows from 3 initial seeds; \"small inner\" a 3 × 32 × 1 inner flow (default 5 × 100 × 2).",
        "",
        "| simulations | M | D | " + " | ".join(columns) + " | seeds |",
        "|---|---|---|" + "---|" * (len(columns) + 1),
    ]
    for key, values in table.iterrows():
        cells = [f"{values[c]:.3g}" for c in columns]
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | " + " | ".join(cells) + f" | {seeds[key]} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--simulations", type=int, nargs="+", default=[10_000])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", type=Path, default=Path("docs"))
    parser.add_argument("--summarize", action="store_true", help="write the table from the finished rows only, train nothing")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    threadpool_limits(limits=args.threads)
    results = args.output / "defaults_sweep.jsonl"
    simulator = PolynomialSurface()
    sets = observed_sets(simulator)
    if not args.summarize:
        for simulations in args.simulations:
            for seed in args.seeds:
                done = {(r["simulations"], r["seed"], r["manifold"], r["density"]) for r in finished(results)}
                run(simulations, seed, results, done, simulator, sets)
    rows = finished(results)
    if rows:
        command = "python benchmarks/defaults_sweep.py --simulations " + " ".join(map(str, sorted({r["simulations"] for r in rows})))
        command += " --seeds " + " ".join(map(str, sorted({r["seed"] for r in rows})))
        machine = f"{platform.machine()}, {args.threads} thread(s), torch {torch.__version__}"
        (args.output / "defaults_sweep.md").write_text(markdown(rows, command, machine))
        print((args.output / "defaults_sweep.md").read_text())


if __name__ == "__main__":
    main()
