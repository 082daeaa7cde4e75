"""The StyleGAN image-manifold study (Brehmer & Cranmer 2020, Table 4, n = 64 column).

AF, PIE, M-flow and Me-flow (and paper 003's pixel rejection, hierarchical training and DNF) train on dequantized 8-bit images of the n = 64 image manifold
(`simulators.ImageManifold`, default seeded generator: abstract textures, not faces) with θ ~
N(0, 1). Per (model, seed): the log posterior density at the true θ from 50 observed images and
the posterior MMD² against the exact posterior (both on one θ grid; the exact posterior uses
the observed images' gold latents), the true manifold distance of generated images (projection
onto the known generator manifold), the reconstruction distance ‖x − g(g⁻¹(x))‖ of test images
(the paper's "reconstruction error", pixel units), and the per-image cost of encoding, exact
density and sampling. The models are the vector families with `image_shape` (they standardize
each channel themselves: images go in and come out in pixel units). Results go to a JSON-lines file after every
(model, seed), so an interrupted run resumes; the table and PNG grids of generated images and of
test images with their projections and residuals go to docs/.

    python benchmarks/image_manifold_study.py --profile smoke --threads 1  # < 1 min: plumbing only
    python benchmarks/image_manifold_study.py --profile quick --threads 1  # 16×16, ≈ 30-40 min on one CPU thread
    python benchmarks/image_manifold_study.py --profile full               # 64×64, the paper's data budget: GPU

At 64×64 (full profile's flow, 7.2 M parameters) one manifold-phase step on 16 images takes ≈ 4 s
on one CPU thread and the exact M-flow density ≈ 9 s per image (64 forward-mode passes), with a
peak of ≈ 6 GB: it fits a 24 GiB CPU machine, but the full profile's training wants a GPU
(`--device cuda`, the default when one is present).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from threadpoolctl import threadpool_limits

from mflow_sbi.diagnostics import (
    diagnostics_table,
    log_posterior_at_true_theta,
    mean_reconstruction_distance,
    mmd_squared,
    plot_images,
    summarize_table,
)
from mflow_sbi.estimator import Estimator
from mflow_sbi.inference import grid_posterior
from mflow_sbi.registry import build_estimator
from mflow_sbi.training import TrainingConfig, train
from simulators import ImageManifold

from _study_results import ResultsFile, overrides, summary_cell  # benchmarks/, the script's folder

PROFILES = {
    "smoke": {"resolution": 16, "simulations": 200, "epochs": 1, "seeds": 1, "batch_size": 50,
              "outer": {"levels": 2, "steps": 1, "hidden": 16, "bins": 4}, "inner": {"layers": 2, "hidden": 32, "blocks": 1},
              "generated": 4, "projection_steps": 50, "grid": 201},
    "quick": {"resolution": 16, "simulations": 5_000, "epochs": 10, "seeds": 1, "batch_size": 64,
              "outer": {"levels": 2, "steps": 3, "hidden": 32}, "inner": {},
              "generated": 16, "projection_steps": 300, "grid": 601},
    "full": {"resolution": 64, "simulations": 20_000, "epochs": 50, "seeds": 3, "batch_size": 50,
             "outer": {"levels": 4, "steps": 4, "hidden": 64, "head_features": 512}, "inner": {},
             "generated": 64, "projection_steps": 500, "grid": 801},
}  # fmt: skip
#: paper 003's settings here: δ = 0.1 (standardized units) and λ = 2 D · 1000 (D = 3 · 16 · 16 at the
#: quick profile), which weighs small errors as the M-flow's manifold phase does (λ r = 1000 Σ e²)
HUBER = {"huber_delta": 0.1}
#: (registry name, schedule, model settings, TrainingConfig fields) per row; the estimators get
#: `image_shape`, and latent_dim = n unless the settings give latent_dims; "penalty": λ from the
#: image dimension
ROWS = {
    "AF": ("af", "likelihood", {}, {}),
    "PIE": ("pie", "likelihood", {}, {}),
    "M-flow": ("mflow", "sequential", {}, {}),
    "Me-flow": ("meflow", "sequential", {}, {}),
    "M-flow (Huber)": ("mflow", "sequential", {}, HUBER),
    "PR (single-step)": ("pr", "penalized", {"latent_dims": [64]}, {**HUBER, "penalty": True}),
    "PR (hierarchical, D → 128 → 64)": ("pr", "hierarchical", {"latent_dims": [128, 64]}, {**HUBER, "penalty": True}),
    "PR (hierarchical training, D → 64)": ("pr", "hierarchical", {"latent_dims": [64]}, {**HUBER, "penalty": True}),
    "DNF": ("dnf", "denoising", {}, {}),
}
#: table headers that differ from the metric's key
HEADERS = {"reconstruction_distance": "reco. distance"}
PAPER_LOG_POSTERIOR = {"AF": 0.17, "PIE": -6.40, "M-flow": 2.67, "Me-flow": 1.81}  # Table 4, StyleGAN n = 64


@dataclass(frozen=True)
class Settings:
    profile: str
    resolution: int
    simulations: int
    epochs: int
    seeds: int
    batch_size: int
    outer: dict
    inner: dict
    generated: int
    projection_steps: int
    grid: int
    manifold_dim: int = 64
    true_theta: float = 0.5
    observed_images: int = 50
    posterior_samples: int = 2_000
    test_images: int = 8
    bounds: tuple[float, float] = (-3.0, 3.0)
    #: 2: estimators with built-in standardization; rows of earlier versions (no such field) do not
    #: match these settings and are not resumed
    results_version: int = 2


def per_image_seconds(function, n: int, device: torch.device = torch.device("cpu")) -> float:
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    synchronize()
    start = time.perf_counter()
    with torch.no_grad():
        function()
    synchronize()
    return (time.perf_counter() - start) / n


def evaluate_row(label: str, settings: Settings, seed: int, simulator: ImageManifold, output: Path, name: str, device: torch.device) -> dict:
    model_name, schedule, model_settings, training_settings = ROWS[label]
    shape = list(simulator.image_shape)
    config = {"model": model_name, "image_shape": shape, "theta_dim": 1, "outer": {**settings.outer}, "seed": seed}
    if model_name != "af":
        config |= {"inner": settings.inner} | (model_settings or {"latent_dim": settings.manifold_dim})
    training_settings = dict(training_settings)
    if training_settings.pop("penalty", False):
        training_settings["penalty_weight"] = 2000.0 * math.prod(simulator.image_shape)
    theta, x = simulator.simulate_joint(settings.simulations, seed=seed)
    model: Estimator = build_estimator(config)
    start = time.perf_counter()
    training = TrainingConfig(epochs=settings.epochs, batch_size=settings.batch_size, patience=5, seed=seed, progress=False, **training_settings)
    train(model, x, theta, schedule, training, device=device)  # the model stays on `device`
    model.eval()
    row: dict = {"model": label, "seed": seed, "training_s": time.perf_counter() - start}

    # inference: 50 observed images at the true θ, model and exact posteriors on one grid
    true_theta = torch.full((settings.observed_images, 1), settings.true_theta)
    observed, gold = simulator.simulate(true_theta, seed=40_000 + seed, return_gold=True)
    observed, true_theta = observed.to(device), true_theta.to(device)
    exact = simulator.exact_posterior(latents=gold.latent, resolution=settings.grid, bounds=settings.bounds)
    start = time.perf_counter()
    likelihood = model.likelihood(observed, chunk_size=512 if model_name == "af" else 65536)  # AF: its whole image flow per pair
    lower, upper = [settings.bounds[0]], [settings.bounds[1]]
    on_device = lambda grid: likelihood(grid.to(device)).cpu()  # noqa: E731 (the grid is built on the CPU)
    posterior = grid_posterior(on_device, simulator.prior, resolution=settings.grid, bounds=(lower, upper))
    row["inference_s"] = time.perf_counter() - start
    row["log_posterior_true_theta"] = log_posterior_at_true_theta(posterior, torch.tensor([settings.true_theta]))
    row["exact_log_posterior_true_theta"] = log_posterior_at_true_theta(exact, torch.tensor([settings.true_theta]))
    generator = torch.Generator().manual_seed(seed)
    row["posterior_mmd"] = mmd_squared(posterior.sample(settings.posterior_samples, generator), exact.sample(settings.posterior_samples, generator))
    row["posterior_mean"], row["posterior_std"] = float(posterior.mean()), float(posterior.std())

    # the manifold: generated images against the true manifold, test images against the model's
    conditions = torch.full((settings.generated, 1), settings.true_theta, device=device)
    with torch.no_grad():
        generated = model.sample(conditions, torch.Generator().manual_seed(seed)).cpu()
    distance = simulator.distance_to_manifold(generated.clamp(-0.5, 0.5), steps=settings.projection_steps, seed=seed)
    row["manifold_distance"] = float(distance.mean())
    # θ only reaches models whose chart depends on it (the image AF's flow sees θ), the others ignore it
    test, test_theta = observed[: settings.test_images], true_theta[: settings.test_images]
    with torch.no_grad():
        projected = model.project(test, test_theta)
    row["reconstruction_distance"] = mean_reconstruction_distance(model, test, test_theta)

    # per-image cost
    with torch.no_grad():
        row["encode_s_per_image"] = per_image_seconds(lambda: model.encode(observed, true_theta), len(observed), device)
        row["sample_s_per_image"] = per_image_seconds(lambda: model.sample(true_theta), len(true_theta), device)
    few = observed[:4]
    row["exact_density_s_per_image"] = per_image_seconds(lambda: model.log_prob(few, true_theta[:4], exact=True), len(few), device)
    row["fast_density_s_per_image"] = per_image_seconds(lambda: model.log_prob(few, true_theta[:4], exact=False), len(few), device)

    if seed == 0:
        plot_images(output / f"{name}_{file_label(label)}.png", {
            f"{label}: generated at θ = {settings.true_theta}": generated,
            "test images": test,
            f"{label}: projections": projected,
            "residuals (x - projection) × 4": 4 * (test - projected),
        })  # fmt: skip
    return row


def file_label(label: str) -> str:
    """A row label as a file-name part: "M-flow (Huber)" -> "m_flow_huber"."""
    return re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")


def simulator_costs(simulator: ImageManifold, settings: Settings) -> dict:
    """The ground truth's own per-image cost: rendering, exact manifold density (forward mode in
    float64), projection; and the injectivity check on sampled latents."""
    theta = torch.full((8, 1), settings.true_theta)
    _, gold = simulator.simulate(theta, seed=1, return_gold=True)
    x = simulator.render(gold.latent)
    start = time.perf_counter()
    u, distance = simulator.project(x[:2], steps=settings.projection_steps)
    projection = (time.perf_counter() - start) / 2
    return {
        "render_s_per_image": per_image_seconds(lambda: simulator.render(gold.latent), 8),
        "exact_density_s_per_image": per_image_seconds(lambda: simulator.log_manifold_density(gold.latent, theta), 8),
        "projection_s_per_image": projection,
        "projection_distance_on_manifold": float(distance.mean()),
        "smallest_singular_value_min": float(simulator.injectivity(gold.latent).min()),
    }


def markdown(table, settings: Settings, truth: dict, command: str, machine: str, name: str) -> str:
    summary = summarize_table(table, "model")
    metrics = ["log_posterior_true_theta", "posterior_mmd", "manifold_distance", "reconstruction_distance", "training_s", "inference_s",
               "encode_s_per_image", "exact_density_s_per_image", "fast_density_s_per_image", "sample_s_per_image"]  # fmt: skip

    def cell(label: str, metric: str) -> str:
        paper = PAPER_LOG_POSTERIOR.get(label) if metric == "log_posterior_true_theta" else None
        return summary_cell(summary, label, metric, paper, ".2f")

    exact = float(table["exact_log_posterior_true_theta"].iloc[0])
    seeds = table.groupby("model")["seed"].nunique()
    r = settings.resolution
    return "\n".join([
        "# StyleGAN image-manifold study (paper's Table 4, n = 64)",
        "",
        f"Command: `{command}`  ",
        f"Profile `{settings.profile}`: {r}×{r}×3 images on an n = {settings.manifold_dim} manifold (seeded StyleGAN2-architecture",
        f"generator: abstract textures, not FFHQ faces), {settings.simulations} training images (8-bit, dequantized), ≤ {settings.epochs}",
        f"epochs per stage (early stopping, patience 5), batch {settings.batch_size}, {settings.seeds} seed(s); outer flow {settings.outer},",
        f"inner flow {settings.inner or 'default FlowConfig'}; {settings.observed_images} observed images at θ* = {settings.true_theta};",
        f"grid posteriors with {settings.grid} cells on {list(settings.bounds)}; {machine}.",
        "",
        f"Exact posterior (from the observed images' latents): log p(θ*|x) = {exact:.3g}.",
        "",
        "Each cell: median over the row's seeds [16%, 84%] (the last column counts them).",
        "",
        "| model | " + " | ".join(HEADERS.get(metric, metric) for metric in metrics) + " | seeds |",
        "|---|" + "---|" * (len(metrics) + 1),
        *(f"| {label} | " + " | ".join(cell(label, m) for m in metrics) + f" | {seeds[label]} |" for label in summary.index),
        "",
        "Ground truth cost and injectivity: " + ", ".join(f"{k} = {v:.3g}" for k, v in truth.items()) + ".",
        "",
        f"Image grids (generated at θ*, test images, projections, residuals × 4): `{name}_<row>.png` (the row label in lower case, e.g. `m_flow_huber`).",
        "",
        f"Reco. distance: the paper's reconstruction error, the mean distance ‖x − g(g⁻¹(x))‖ of {settings.test_images} test",
        "images to their projection on the learned manifold, in pixel units (values in [-0.5, 0.5]); ≈ 0 for AF.",
        "",
        "Notes: posteriors are exact grid posteriors of each model's likelihood (the M-flow rows on the fast",
        "path). The manifold distance of generated images is an upper bound: projection onto the true",
        "manifold by Adam from 4 random starts, which finds on-manifold latents at n = 2 but can stop short",
        "at n = 64. The paper's numbers are for 64×64 FFHQ-StyleGAN images and are not comparable in value.",
        "",
        "Paper 003 rows (δ = 0.1 in standardized units; training times measured with a second study process",
        "on the other core): \"M-flow (Huber)\" replaces the manifold phase's squared error by Σ 2H_δ; \"PR\" is",
        "`PixelRejectionFlow` (v ~ N(0, I), loss −log p(x|θ) + λ (1/D) Σ H_δ(x − g(u)), λ = 2D · 1000 so that",
        "small errors weigh as in the M-flow's manifold phase), end to end (\"single-step\", D → 64) or level by",
        "level (image flow D → 128, then a vector flow 128 → 64, then the density; \"hierarchical\"; with one",
        "level, D → 64, the chart then the density: \"hierarchical training\"); \"DNF\" is",
        "`DenoisingFlow` (σ² = 0.01 noise inflation, v ~ N(0, σ²I), β = 1000 on the summed squared error).",
        "Paper 003 reports bits per dimension, MSE and FID on CelebA/LSUN at 32×32, which have no counterpart here.",
        "",
    ])  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    parser.add_argument("--seeds", type=int, help="override the profile's number of seeds")
    parser.add_argument("--models", nargs="+", default=list(ROWS), choices=list(ROWS), metavar="MODEL")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=Path("docs"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="for the models (default: a GPU when present)")
    parser.add_argument("--summarize", action="store_true", help="write the table from the finished rows and the saved ground-truth costs, train nothing")
    args = parser.parse_args()
    device = torch.device(args.device)
    profile = dict(PROFILES[args.profile])
    if args.seeds:
        profile["seeds"] = args.seeds
    settings = Settings(profile=args.profile, **profile)
    torch.set_num_threads(args.threads)
    threadpool_limits(limits=args.threads)
    name = f"image_manifold_study_{settings.profile}"
    args.output.mkdir(parents=True, exist_ok=True)
    results = ResultsFile(args.output / f"{name}.jsonl", asdict(settings))
    simulator = ImageManifold(manifold_dim=settings.manifold_dim, resolution=settings.resolution, quantize=True)
    if args.summarize:
        truth = json.loads((args.output / f"{name}_truth.json").read_text())
    else:
        truth = simulator_costs(simulator, settings)
        print(json.dumps(truth), flush=True)
        for seed in range(settings.seeds):
            for label in args.models:
                if (label, seed) not in results.finished():
                    results.append(evaluate_row(label, settings, seed, simulator, args.output, name, device))
    done = results.finished()
    table = diagnostics_table(done[(label, seed)] for seed in range(settings.seeds) for label in ROWS if (label, seed) in done)
    command = f"python benchmarks/image_manifold_study.py --profile {settings.profile}{overrides(args)} --threads {args.threads}"
    machine = f"{platform.machine()}, {args.threads} threads, device {device}, torch {torch.__version__}"
    (args.output / f"{name}.md").write_text(markdown(table, settings, truth, command, machine, name))
    (args.output / f"{name}_truth.json").write_text(json.dumps(truth, indent=1))
    print((args.output / f"{name}.md").read_text())


if __name__ == "__main__":
    main()
