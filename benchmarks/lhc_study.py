"""The particle-physics study (Brehmer & Cranmer 2020, Table 3) against exact posteriors.

Rows: AF, PIE (original / unconditional manifold), M-flow and Me-flow, each trained by maximum
likelihood (M/D for the M-flows) and with SCANDAL; ALICES; sbi's NLE and NRE with default
settings, all on the same training simulations of the LHC-like simulator (`hadron` tier, where
the likelihood is exact). ALICES also gets as many events at its reference point θ_ref = 0.

Metrics per (model, seed), averaged over the true points: posterior MMD² and C2ST accuracy
against the exact posterior (emcee on the simulator's likelihood), the log posterior density at
the true θ (the paper's metric: MCMC samples, then a Gaussian KDE), closure of generated events
(the paper's metric; flows and NLE), the reconstruction distance ‖x − g(g⁻¹(x))‖ of test events
(the paper's "reconstruction error", manifold models, raw units), training and inference time.
Every estimator takes the simulator's raw units (it standardizes x and θ itself; SCANDAL's and
ALICES's joint scores and θ_ref are raw too), and every model's posterior is sampled with the
same emcee set-up on its own likelihood (the fast path for the flows, log r̂ for the ratio
estimators). Results go to a JSON-lines file after every (model, seed), so an interrupted run
resumes; several processes may share the file (`--seed-list`), and any run writes the summary of
what the file holds to docs/.

    python benchmarks/lhc_study.py --profile quick --threads 1   # ≈ 1 h on 2 CPU cores (2 processes)
    python benchmarks/lhc_study.py --profile full                # the paper's budget, a bigger machine
"""

from __future__ import annotations

import argparse
import math
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from sbi.inference import NLE, NRE, likelihood_estimator_based_potential, ratio_estimator_based_potential  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from mflow_sbi.baselines import RatioEstimator, RatioTrainingData, train_ratio_estimator  # noqa: E402
from mflow_sbi.diagnostics import (  # noqa: E402
    c2st,
    diagnostics_table,
    log_posterior_at_true_theta,
    mean_reconstruction_distance,
    mmd_squared,
    summarize_table,
)
from mflow_sbi.inference import mcmc_posterior  # noqa: E402
from mflow_sbi.registry import build_estimator  # noqa: E402
from mflow_sbi.training import TrainingConfig, train  # noqa: E402
from simulators.lhc_like import LHCLike  # noqa: E402

from _study_results import ResultsFile, overrides, summary_cell  # noqa: E402  (benchmarks/, the script's folder)

PROFILES = {
    "quick": {"simulations": 10_000, "epochs": 10, "seeds": 3, "points": 2, "walkers": 256, "samples": 8_000, "burn_in": 20},
    "full": {"simulations": 1_000_000, "epochs": 50, "seeds": 5, "points": 4, "walkers": 256, "samples": 64_000, "burn_in": 50},
}
#: the spec's true points; the quick profile uses the first two
TRUE_POINTS = ((0.0, 0.0, 0.0), (0.5, 0.0, 0.0), (-1.0, -1.0, 0.0), (0.0, 0.7, 0.0))
LATENT_DIM = 14  # the hadron tier's manifold dimension (9 hard-process + 5 nuisance)
#: paper 003's settings here: δ = 0.1 (standardized units) and λ = 2 D · 1000 with D = 40, which weighs
#: small errors as the M-flow's manifold phase does (λ r = λ/(2D) Σ e² = 1000 Σ e²)
PENALTY = {"huber_delta": 0.1, "penalty_weight": 80_000.0}
#: row label -> (model config, schedule, SCANDAL[, TrainingConfig fields]); None: a ratio estimator or sbi's estimator
ROWS: dict[str, tuple] = {
    "AF": ({"model": "af"}, "likelihood", False),
    "PIE (original)": ({"model": "pie", "latent_dim": LATENT_DIM, "conditional_manifold": True}, "likelihood", False),
    "PIE (uncond. manifold)": ({"model": "pie", "latent_dim": LATENT_DIM}, "likelihood", False),
    "M-flow": ({"model": "mflow", "latent_dim": LATENT_DIM}, "sequential", False),
    "Me-flow": ({"model": "meflow", "latent_dim": LATENT_DIM}, "sequential", False),
    "AF (SCANDAL)": ({"model": "af"}, "likelihood", True),
    "PIE (original, SCANDAL)": ({"model": "pie", "latent_dim": LATENT_DIM, "conditional_manifold": True}, "likelihood", True),
    "PIE (uncond. manifold, SCANDAL)": ({"model": "pie", "latent_dim": LATENT_DIM}, "likelihood", True),
    "M-flow (SCANDAL)": ({"model": "mflow", "latent_dim": LATENT_DIM}, "sequential", True),
    "Me-flow (SCANDAL)": ({"model": "meflow", "latent_dim": LATENT_DIM}, "sequential", True),
    "M-flow (Huber)": ({"model": "mflow", "latent_dim": LATENT_DIM}, "sequential", False, {"huber_delta": 0.1}),
    "PR (single-step)": ({"model": "pr", "latent_dims": LATENT_DIM}, "penalized", False, PENALTY),
    "PR (hierarchical, 40 → 20 → 14)": ({"model": "pr", "latent_dims": [20, LATENT_DIM]}, "hierarchical", False, PENALTY),
    "DNF": ({"model": "dnf", "latent_dim": LATENT_DIM}, "denoising", False),
    "ALICES": (None, "alices", True),
    "sbi NLE (default)": (None, "nle", False),
    "sbi NRE (default)": (None, "nre", False),
}
#: the paper's Table 3 (its own simulator, 10⁶ events; mean of ≥ 5 runs): closure, reco. error (the mean
#: distance ‖x − g(g⁻¹(x))‖), log posterior
PAPER = {
    "AF": (0.0019, None, -3.94),
    "PIE (original)": (0.0023, 2.054, -4.68),
    "PIE (uncond. manifold)": (0.0022, 1.681, -1.82),
    "M-flow": (0.0045, 0.012, -1.71),
    "Me-flow": (0.0046, 0.029, -1.44),
    "AF (SCANDAL)": (0.0565, None, -0.40),
    "PIE (original, SCANDAL)": (0.1293, 3.090, 0.03),
    "PIE (uncond. manifold, SCANDAL)": (0.1019, 1.751, 0.23),
    "M-flow (SCANDAL)": (0.0371, 0.011, 0.11),
    "Me-flow (SCANDAL)": (0.0291, 0.030, 0.14),
    "ALICES": (None, None, 0.05),
}
EXACT_ROW = "Exact likelihood (reference)"
SCORE_WEIGHT = 1.0  # SCANDAL's and ALICES's α on raw θ units (the prior N(0, I) is already standard)
THETA_REF = (0.0, 0.0, 0.0)  # ALICES's reference point, raw θ units
#: table headers that differ from the metric's key
HEADERS = {"reconstruction_distance": "reco. distance"}


@dataclass(frozen=True)
class Settings:
    profile: str
    simulations: int
    epochs: int
    seeds: int
    points: int
    walkers: int
    samples: int  # per posterior
    burn_in: int
    observed_events: int = 20
    compared_samples: int = 2_000  # per posterior, for MMD² and C2ST
    generated_events: int = 2_000
    test_events: int = 2_000
    #: 2: estimators with built-in standardization (raw units everywhere), reconstruction as the mean
    #: distance in raw units; rows of earlier versions (no such field) do not match and are not resumed
    results_version: int = 2


LogLikelihood = Callable[[torch.Tensor], torch.Tensor]


def train_row(label: str, settings: Settings, seed: int, simulator: LHCLike):
    """Train one row's estimator on the seed's training set (raw units) -> (estimator, kind)."""
    config, kind, with_score, *extra = ROWS[label]
    data = simulator.simulate_dataset(settings.simulations, seed=seed)
    x, theta, score = data.x.float(), data.theta.float(), data.gold.joint_score.float()
    torch.manual_seed(seed)  # sbi's networks and training draw from the global generator; ours take `seed`
    if kind in ("nle", "nre"):  # sbi z-scores x and θ itself (its defaults)
        trainer = (NLE if kind == "nle" else NRE)(simulator.prior, show_progress_bars=False)
        return trainer.append_simulations(theta, x).train().eval(), kind
    training = TrainingConfig(
        epochs=settings.epochs, batch_size=256, patience=5, seed=seed, progress=False, score_weight=SCORE_WEIGHT if with_score else None,
        **(extra[0] if extra else {}),
    )
    if kind == "alices":
        theta_ref = torch.tensor([THETA_REF], dtype=torch.float64).expand(settings.simulations, -1).contiguous()
        x_ref, gold_ref = simulator.simulate_gold(theta_ref, seed=50_000 + seed)
        theta_paired = simulator.sample_prior(settings.simulations, torch.Generator().manual_seed(60_000 + seed)).double()
        reference = (x_ref.float(), theta_paired.float(), simulator.joint_log_ratio(gold_ref.matrix, theta_paired, theta_ref).float())
        ratio_data = RatioTrainingData.from_samples((x, theta, data.gold.joint_log_ratio.float(), score), reference)
        estimator = RatioEstimator(x.shape[1], theta.shape[1], theta_ref=list(THETA_REF), seed=seed)
        train_ratio_estimator(estimator, ratio_data, training)
        return estimator.eval(), kind
    model = build_estimator({**config, "data_dim": x.shape[1], "theta_dim": theta.shape[1], "seed": seed})
    train(model, x, theta, kind, training, score=score if with_score else None)
    return model.eval(), "flow"


def observed_log_likelihood(estimator, kind: str, x_observed: torch.Tensor, prior: torch.distributions.Distribution) -> LogLikelihood:
    """θ (batch, 3) -> Σ_j log p(x_j|θ) up to a θ-independent constant (raw units throughout)."""
    x_observed = x_observed.float()
    if kind in ("flow", "alices"):
        likelihood = estimator.likelihood(x_observed)  # the per-event part cached once
        return lambda theta: likelihood(theta.float()).double()
    make = likelihood_estimator_based_potential if kind == "nle" else ratio_estimator_based_potential
    potential, _ = make(estimator, prior, x_observed)
    return lambda theta: (potential(theta.float(), track_gradients=False) - prior.log_prob(theta.float())).double()


def generate(estimator, kind: str, theta: torch.Tensor, seed: int) -> torch.Tensor | None:
    """Events from the estimator at θ (raw units), where it can generate."""
    with torch.no_grad():
        if kind == "flow":
            return estimator.sample(theta.float(), torch.Generator().manual_seed(seed))
        if kind == "nle":
            return estimator.sample(torch.Size([1]), condition=theta.float())[0]
    return None


def exact_posterior_samples(simulator: LHCLike, x_observed: torch.Tensor, settings: Settings, seed: int) -> torch.Tensor:
    result = simulator.exact_posterior(x_observed, num_samples=2 * settings.samples, walkers=settings.walkers, burn_in=2 * settings.burn_in, seed=seed)
    return result.samples


def evaluate_row(label: str, settings: Settings, seed: int, simulator: LHCLike, cache: dict, plots: dict | None) -> dict:
    start = time.perf_counter()
    estimator, kind = (None, "exact") if label == EXACT_ROW else train_row(label, settings, seed, simulator)
    row: dict = {"model": label, "seed": seed}
    if kind != "exact":
        row["training_s"] = time.perf_counter() - start
    if kind == "flow" and ROWS[label][0]["model"] != "af":
        test = simulator.simulate_dataset(settings.test_events, seed=10_000 + seed)
        row["reconstruction_distance"] = mean_reconstruction_distance(estimator, test.x, test.theta)  # θ: only PIE (original) uses it
    if kind not in ("exact", "alices", "nre"):
        theta_generated = simulator.sample_prior(settings.generated_events, torch.Generator().manual_seed(20_000 + seed)).double()
        x_generated = generate(estimator, kind, theta_generated, seed).double()
        finite = torch.isfinite(x_generated).all(-1)
        row["closure"] = simulator.closure(x_generated[finite], seed=seed) if finite.any() else math.nan

    inference = 0.0
    for k, point in enumerate(TRUE_POINTS[: settings.points]):
        theta_true = torch.tensor([point], dtype=torch.float64)
        key = (seed, k)
        if key not in cache:  # observed set and exact posterior, shared by every row of this seed
            x_observed = simulator.simulate(theta_true.expand(settings.observed_events, 3), seed=40_000 + 100 * seed + k)
            cache[key] = (x_observed, exact_posterior_samples(simulator, x_observed, settings, seed))
        x_observed, exact = cache[key]
        generator = torch.Generator().manual_seed(seed)
        reference = exact[torch.randperm(len(exact), generator=generator)[: settings.compared_samples]].double()
        if kind == "exact":
            samples = exact[torch.randperm(len(exact), generator=generator)[: settings.compared_samples]].double()
        else:
            start = time.perf_counter()
            log_likelihood = observed_log_likelihood(estimator, kind, x_observed, simulator.prior)
            with torch.no_grad():
                result = mcmc_posterior(
                    log_likelihood, simulator.prior, num_samples=settings.samples, walkers=settings.walkers, burn_in=settings.burn_in,
                    seed=seed, progress=False, parameter_names=simulator.theta_names,
                )  # fmt: skip
            inference += time.perf_counter() - start
            samples = result.samples[torch.randperm(len(result.samples), generator=generator)[: settings.compared_samples]].double()
        row[f"log_posterior_point{k}"] = log_posterior_at_true_theta(samples, theta_true)
        row[f"mmd_point{k}"] = mmd_squared(samples, reference)
        row[f"c2st_point{k}"] = c2st(samples.float(), reference.float())
        if plots is not None and seed == 0:
            plots.setdefault(k, {})[label] = samples
    for metric in ("log_posterior", "mmd", "c2st"):
        row[metric if metric != "mmd" else "posterior_mmd"] = sum(row[f"{metric}_point{k}"] for k in range(settings.points)) / settings.points
    if kind != "exact":
        row["inference_s"] = inference / settings.points
    return row


def plot_marginals(path: Path, samples: dict[str, torch.Tensor], point: tuple[float, ...]) -> None:
    """One panel per θ_k: each row's posterior marginal (histogram) over the exact one."""
    figure, axes = plt.subplots(1, len(point), figsize=(5 * len(point), 4))
    for k, axis in enumerate(axes):
        for label, values in samples.items():
            exact = label == EXACT_ROW
            axis.hist(values[:, k].numpy(), bins=40, histtype="step", density=True, label=label,
                      color="black" if exact else None, linewidth=2.5 if exact else 1.0)  # fmt: skip
        axis.axvline(point[k], color="red", linestyle="--")
        axis.set_xlabel(f"θ{k + 1}")
    axes[0].legend(fontsize=6)
    figure.suptitle(f"posterior marginals, 20 events at θ = {point}")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def markdown(table, settings: Settings, command: str, machine: str, plots_folder: str) -> str:
    summary = summarize_table(table, "model")
    metrics = ["posterior_mmd", "c2st", "log_posterior", "closure", "reconstruction_distance", "training_s", "inference_s"]
    paper_columns = {"closure": 0, "reconstruction_distance": 1, "log_posterior": 2}

    def cell(label: str, metric: str) -> str:
        paper = PAPER[label][paper_columns[metric]] if metric in paper_columns and label in PAPER else None
        return summary_cell(summary, label, metric, paper, "g")

    order = [label for label in [EXACT_ROW, *ROWS] if label in summary.index]
    points = ", ".join(str(p) for p in TRUE_POINTS[: settings.points])
    lines = [
        "# Particle-physics study (paper's Table 3) against exact posteriors",
        "",
        f"Command: `{command}`  ",
        f"Profile `{settings.profile}`: {settings.simulations} training events (θ from the prior N(0, I₃), hadron tier), "
        f"≤ {settings.epochs} epochs per stage (early stopping, patience 5, batch 256), {settings.seeds} seeds; "
        f"{settings.observed_events} observed events at θ ∈ {{{points}}}; emcee with {settings.walkers} walkers, "
        f"{settings.burn_in} burn-in steps, {settings.samples} samples per posterior; SCANDAL/ALICES α = {SCORE_WEIGHT}; {machine}.",
        "",
        "Each cell: median over seeds [16%, 84%] of the average over the true points (the paper's mean of ≥ 5 runs",
        "in brackets; its simulator and budget differ, so compare orderings, not values). MMD² (Gaussian kernel,",
        "bandwidth = median distance of the exact samples) and C2ST accuracy (random forest, 5 folds; 0.5 = identical)",
        f"on {settings.compared_samples} samples per posterior against the exact posterior. Log posterior: Gaussian KDE",
        "(Scott) of the samples at the true θ; the exact row gives the value an ideal estimator would reach.",
        "Closure: 0 = every kinematic identity holds, 1 = shuffled features. Reco. distance: the paper's reconstruction",
        f"error, the mean distance ‖x − g(g⁻¹(x))‖ of {settings.test_events} test events to their projection on the learned",
        "manifold, in the simulator's raw units (40 observables: energies and momenta in GeV, angles, rapidities), so",
        "its scale is set by the GeV-valued observables; compare it across rows, not with the paper's values.",
        "",
        "| model | " + " | ".join(HEADERS.get(metric, metric) for metric in metrics) + " |",
        "|---|" + "---|" * len(metrics),
    ]
    lines += [f"| {label} | " + " | ".join(cell(label, metric) for metric in metrics) + " |" for label in order]
    lines += [
        "",
        f"Posterior marginals of the first seed, all rows over the exact posterior: `{plots_folder}/`.",
        "",
        "## Protocol notes",
        "",
        "- Same training events for every row (θ from the prior, one per event). ALICES additionally gets as many",
        "  events at its reference point θ_ref = 0, each paired with a prior θ, as its method needs (soft labels",
        "  from the joint ratio for both classes); the score term uses the numerator events' joint score.",
        "- M-flow and Me-flow train sequentially (manifold phase, then density phase; SCANDAL's term enters the",
        "  density phase); AF and PIE by maximum likelihood (+ SCANDAL's term). n = 14, the hadron tier's",
        "  manifold dimension. Flows use the reference architecture (5 couplings, 10 bins, 100×2 conditioners).",
        "- Every estimator gets the simulator's raw units: ours standardize x and θ themselves (fitted on the",
        "  training data; SCANDAL's joint score and ALICES's θ_ref are in raw θ units), sbi's z-score them.",
        "- sbi rows: `NLE` (MAF) and `NRE` (sbi 0.27's default, NRE_B with a ResNet classifier) with default",
        "  training settings (z-scoring included) and the simulator's prior; their posteriors use the same emcee",
        "  as every other row, on sbi's own likelihood / ratio potential.",
        "- The exact posterior is emcee on the simulator's likelihood with twice the samples and burn-in.",
        "- Closure of 2000 generated events at prior θ (flows and NLE; ratio estimators cannot generate).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    parser.add_argument("--simulations", type=int, help="override the profile's training events")
    parser.add_argument("--epochs", type=int, help="override the profile's epochs per stage")
    parser.add_argument("--seeds", type=int, help="override the profile's number of seeds")
    parser.add_argument("--seed-list", type=int, nargs="+", help="run only these seeds (for parallel processes)")
    parser.add_argument("--models", nargs="+", default=[EXACT_ROW, *ROWS], choices=[EXACT_ROW, *ROWS], metavar="MODEL")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", type=Path, default=Path("docs"))
    args = parser.parse_args()
    profile = PROFILES[args.profile]
    settings = Settings(
        profile=args.profile,
        simulations=args.simulations or profile["simulations"],
        epochs=args.epochs or profile["epochs"],
        seeds=args.seeds or profile["seeds"],
        **{k: profile[k] for k in ("points", "walkers", "samples", "burn_in")},
    )
    torch.set_num_threads(args.threads)
    threadpool_limits(limits=args.threads)
    name = f"lhc_study_{settings.profile}"
    args.output.mkdir(parents=True, exist_ok=True)
    plots_folder = args.output / f"{name}_posteriors"
    plots_folder.mkdir(exist_ok=True)
    results = ResultsFile(args.output / f"{name}.jsonl", asdict(settings))

    simulator = LHCLike(tier="hadron")
    seeds = args.seed_list if args.seed_list is not None else list(range(settings.seeds))
    cache: dict = {}
    for seed in seeds:
        plots: dict | None = {} if seed == 0 and set(args.models) == {EXACT_ROW, *ROWS} else None  # figures of every row only
        for label in args.models:
            if (label, seed) not in results.finished():
                results.append(evaluate_row(label, settings, seed, simulator, cache, plots))
        if plots:
            for k, samples in plots.items():
                plot_marginals(plots_folder / f"point{k}.png", samples, TRUE_POINTS[k])
    table = diagnostics_table(results.finished().values())
    command = f"python benchmarks/lhc_study.py --profile {settings.profile}{overrides(args)} --threads {args.threads}"
    machine = f"{platform.machine()}, {args.threads} thread(s) per process, torch {torch.__version__}"
    (args.output / f"{name}.md").write_text(markdown(table, settings, command, machine, plots_folder.name))
    print((args.output / f"{name}.md").read_text())


if __name__ == "__main__":
    main()
