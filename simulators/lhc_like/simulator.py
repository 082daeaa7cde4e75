"""LHC-like W-boson-fusion Higgs production, H → γγ, with gold data and exact posteriors
(spec `shared/specs/lhc_like.md`; the particle-physics experiment of Brehmer & Cranmer 2020).

Latent density of the hard process z (9-dim, `phase_space`), for v = (1, θ):
    p(z|θ) = F(z) vᵀH(z)v 1_fid(z) / σ(θ),   σ(θ) = vᵀSv,
with F the θ-independent phase-space and parton-density factor and H the 4×4 PSD matrix of
`amplitudes`. At the hadron and detector tiers a θ-independent nuisance ν (5-dim, `chart`) is
drawn from p(ν), so the latent density is p(z|θ) p(ν). Hence the joint quantities
    log p(x, z|θ) = log vᵀHv - log vᵀSv + (θ-independent),
    t(x, z|θ) = 2 (Hv)_{1:} / vᵀHv - 2 (Sv)_{1:} / vᵀSv,
    log r(x, z|θ0, θ1) = log(v0ᵀHv0 / v0ᵀSv0) - log(v1ᵀHv1 / v1ᵀSv1)
are exact at every tier, with S from the cached MC estimate of `normalization`.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from mflow_sbi.inference.grid import GridPosterior
from mflow_sbi.inference.posterior import MCMCResult, grid_posterior, mcmc_posterior
from mflow_sbi.validation import check_matrix
from mflow_sbi.simulator import Simulator, as_generator
from simulators.lhc_like import amplitudes, chart, kinematics, normalization, phase_space
from simulators.lhc_like.dataset import LHCDataset, LHCGold, dataset_arrays
from simulators.lhc_like.detector import Detector
from simulators.lhc_like.morphing import Morphing
from simulators.lhc_like.normalization import Normalization, coupling_vector
from simulators.lhc_like.phase_space import Cuts, Proposal

Tier = Literal["parton", "hadron", "detector"]
TIERS = ("parton", "hadron", "detector")
PROPOSAL_CHUNK = 1 << 17


class LHCLike(Simulator):
    """q q' → q q' H, H → γγ: x ∈ R⁴⁰ (`observable_names`) on a 14-dim manifold (9 at the parton
    tier), θ ∈ R³ (or R² with θ3 frozen at 0) with prior N(0, I).

    `tier`: "parton" (hard process only), "hadron" (default; plus nuisance, exact likelihood)
    or "detector" (plus smearing; no tractable likelihood). The normalization S is estimated
    once from `pool_draws` proposal draws seeded with `pool_seed` and cached in `cache_dir`
    (default $MFLOW_SBI_CACHE, else ~/.cache/mflow-sbi).

    Threads are the calling program's choice (e.g. `mflow-sbi --threads 1`): the loops are many
    small element-wise operations, which gain little from threads and slow down many-fold when
    the cores are shared, so one torch thread per process and one process per data-set shard
    scale best.
    """

    name = "lhc_like"
    data_dim = 40

    def __init__(
        self,
        tier: Tier = "hadron",
        n_params: int = 3,
        cache_dir: str | os.PathLike | None = None,
        pool_draws: int = 2_000_000,
        pool_seed: int = 0,
    ) -> None:
        if tier not in TIERS:
            raise ValueError(f"tier must be one of {TIERS}, got {tier!r}")
        if n_params not in (2, 3):
            raise ValueError(f"n_params must be 2 or 3, got {n_params!r}")
        if pool_draws < 1000:
            raise ValueError(f"pool_draws must be at least 1000, got {pool_draws}")
        self.tier = tier
        self.theta_dim = n_params
        self.manifold_dim = phase_space.LATENT_DIM if tier == "parton" else phase_space.LATENT_DIM + chart.NUISANCE_DIM
        self.cache_dir = cache_dir
        self.pool_draws = pool_draws
        self.pool_seed = pool_seed
        self.cuts = Cuts()
        self.proposal = Proposal()
        self.nuisance = chart.Nuisance()
        self.detector = Detector()
        self.morphing = Morphing(n_params)
        self.observable_names = kinematics.OBSERVABLE_NAMES
        self._prior = torch.distributions.Independent(
            torch.distributions.Normal(torch.zeros(n_params), torch.ones(n_params)), 1
        )
        self._normalization: Normalization | None = None

    @property
    def prior(self) -> torch.distributions.Distribution:
        return self._prior

    @property
    def theta_names(self) -> tuple[str, ...]:
        """theta_1, theta_2 (, theta_3): the couplings of v = (1, θ1, θ2, θ3)."""
        return ("theta_1", "theta_2", "theta_3")[: self.theta_dim]

    @property
    def config(self) -> dict[str, Any]:
        """tier, n_params, pool_draws and pool_seed (the cache folder is the machine's, not the simulator's)."""
        return {"tier": self.tier, "n_params": self.theta_dim, "pool_draws": self.pool_draws, "pool_seed": self.pool_seed}

    @property
    def normalization(self) -> Normalization:
        """S and the envelope constants, from the disk cache (estimated on first use)."""
        if self._normalization is None:
            self._normalization = normalization.load_or_estimate(
                self.cuts, self.proposal, self.pool_draws, self.pool_seed, self.cache_dir
            )
        return self._normalization

    @property
    def settings_key(self) -> str:
        """The hash of the cuts, proposal and pool settings that keys the on-disk cache."""
        return normalization.settings_key(self.cuts, self.proposal, self.pool_draws, self.pool_seed)

    # ---- rates and joint quantities ------------------------------------------------------------
    def cross_section(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        """Fiducial σ(θ) = vᵀSv (arbitrary units, σ(0) ≈ 1) and its MC error -> (batch,) each."""
        return self.normalization.cross_section(self.check_theta(theta).double())

    def joint_log_density(self, matrix: Tensor, theta: Tensor) -> Tensor:
        """log p(x, z|θ) up to θ-independent terms: log vᵀHv - log vᵀSv -> (batch,)."""
        v = coupling_vector(theta.double())
        return torch.log(_quadratic(v, matrix)) - torch.log(_quadratic(v, self.normalization.matrix))

    def joint_score(self, matrix: Tensor, theta: Tensor) -> Tensor:
        """t(x, z|θ) = 2 (Hv)_{1:} / vᵀHv - 2 (Sv)_{1:} / vᵀSv -> (batch, theta_dim)."""
        v = coupling_vector(theta.double())
        s = self.normalization.matrix
        hv = (matrix @ v.unsqueeze(-1)).squeeze(-1)
        sv = v @ s
        score = 2 * hv / (hv * v).sum(-1, keepdim=True) - 2 * sv / (sv * v).sum(-1, keepdim=True)
        return score[:, 1 : 1 + theta.shape[1]]

    def joint_log_ratio(self, matrix: Tensor, theta0: Tensor, theta1: Tensor) -> Tensor:
        """log r(x, z|θ0, θ1) = log(v0ᵀHv0 / v0ᵀSv0) - log(v1ᵀHv1 / v1ᵀSv1) -> (batch,)."""
        return self.joint_log_density(matrix, theta0) - self.joint_log_density(matrix, theta1)

    # ---- sampling --------------------------------------------------------------------------------
    def sample_hard_process(self, theta: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """z ~ p(z|θ_i) exactly, one per row, with H(z) -> (n, 9), (n, 4, 4).

        Envelope rejection (vᵀHv ≤ λ_max(H) ‖v‖²): proposal draws are unweighted to the envelope
        density ∝ q w λ_max(H) (drawn stratified over pT cells c with probability ∝ M_c and kept
        with probability w tr(H) / M_c, then λ_max / tr(H); see `normalization`); the
        i-th event's candidates are accepted with probability vᵢᵀHvᵢ / (λ_max ‖vᵢ‖²) ≤ 1 and the
        first accepted one is the event. Each candidate serves at most one event, so no event
        is duplicated."""
        norm = self.normalization
        v = coupling_vector(theta.double())
        n = len(v)
        latent = torch.empty(n, phase_space.LATENT_DIM, dtype=torch.float64)
        matrices = torch.empty(n, 4, 4, dtype=torch.float64)
        pending = torch.arange(n)
        # expected candidates per event: ‖v‖² Λ / σ(θ); proposal draws per candidate: mean M_c / Λ
        expected = (v**2).sum(-1) * norm.envelope_mean / _quadratic(v, norm.matrix)
        overweight = 0
        while len(pending):
            wanted = float(expected[pending].sum()) * norm.envelope_bound / norm.envelope_mean
            draws = int(min(PROPOSAL_CHUNK, max(1024, 1.1 * wanted)))
            candidates = normalization.draw_candidates(
                draws, self.cuts, self.proposal, generator, norm.cell_probabilities
            )
            trace = candidates.trace()
            cell_bound = norm.cell_bounds[self.proposal.cell(candidates.latent, self.cuts)]
            bound = candidates.weight * trace / cell_bound
            overweight += int((bound > 1).sum())
            kept = torch.rand(len(bound), generator=generator, dtype=torch.float64) < bound
            candidates, trace = candidates.select(kept), trace[kept]
            largest = candidates.largest_eigenvalue()
            kept = torch.rand(len(trace), generator=generator, dtype=torch.float64) < largest / trace
            z, h, largest = candidates.latent[kept], candidates.matrix[kept], largest[kept]
            # candidate j is offered to pending event j mod P; each event takes its first acceptance
            owner = pending[torch.arange(len(z)) % len(pending)]
            vj = v[owner]
            ratio = _quadratic(vj, h) / (largest * (vj**2).sum(-1))
            accepted = torch.rand(len(z), generator=generator, dtype=torch.float64) < ratio
            first = torch.full((n,), len(z), dtype=torch.long)
            first.scatter_reduce_(0, owner[accepted], torch.arange(len(z))[accepted], reduce="amin")
            done = first < len(z)
            latent[done] = z[first[done]]
            matrices[done] = h[first[done]]
            pending = pending[~done[pending]]
        if overweight:
            warnings.warn(
                f"{overweight} proposal draws exceeded their cell's envelope bound M_c; sampling is "
                "approximate for them. Increase pool_draws to raise the bound.",
                RuntimeWarning,
                stacklevel=2,
            )
        return latent, matrices

    def sample_nuisance(self, n: int, generator: torch.Generator) -> Tensor:
        """ν ~ p(ν) at the hadron and detector tiers; (n, 0) at the parton tier."""
        if self.tier == "parton":
            return torch.empty(n, 0, dtype=torch.float64)
        return self.nuisance.sample(n, generator)

    def observe(self, latent: Tensor, nuisance: Tensor, generator: torch.Generator) -> Tensor:
        """x (n, 40) from the latent variables: the chart, plus detector smearing at that tier."""
        momenta = chart.labelled_momenta(latent, nuisance if self.tier != "parton" else None)
        if self.tier == "detector":
            momenta = self.detector.smear(momenta, generator)
        return chart.sorted_observables(momenta)

    def _simulate(self, theta: Tensor, generator: torch.Generator) -> Tensor:
        return self._simulate_gold(theta, generator)[0]

    def _simulate_gold(
        self, theta: Tensor, generator: torch.Generator, theta_ref: Tensor | None = None
    ) -> tuple[Tensor, LHCGold]:
        latent, matrix = self.sample_hard_process(theta, generator)
        nuisance = self.sample_nuisance(len(theta), generator)
        x = self.observe(latent, nuisance, generator)
        reference = torch.zeros(self.theta_dim, dtype=torch.float64) if theta_ref is None else theta_ref.double()
        gold = LHCGold(
            latent=latent,
            joint_score=self.joint_score(matrix, theta),
            joint_log_ratio=self.joint_log_ratio(matrix, theta, reference.expand(len(theta), -1)),
            theta_ref=reference,
            nuisance=nuisance,
            matrix=matrix,
        )
        return x.to(theta.dtype), gold

    def simulate_gold(
        self, theta: Tensor, seed: int | torch.Generator | None = None, theta_ref: Tensor | None = None
    ) -> tuple[Tensor, LHCGold]:
        """x and gold data, with the joint log ratio against `theta_ref` (p,), default θ = 0."""
        theta = self.check_theta(theta)
        if theta_ref is not None:
            self.check_theta(theta_ref.reshape(1, -1))
        return self._simulate_gold(theta, as_generator(seed), theta_ref)

    def simulate_dataset(
        self, n: int, seed: int, theta: Tensor | None = None, theta_ref: Tensor | None = None
    ) -> LHCDataset:
        """n events with gold data and metadata; θ from the prior (one per event) unless given."""
        generator = as_generator(seed)
        theta = self.sample_prior(n, generator).double() if theta is None else self.check_theta(theta).double()
        if len(theta) != n:
            raise ValueError(f"theta must have n = {n} rows, got {len(theta)}")
        x, gold = self._simulate_gold(theta, generator, theta_ref)
        metadata = {
            "simulator": "LHCLike",
            "version": normalization.VERSION,
            "tier": self.tier,
            "n_params": self.theta_dim,
            "seed": seed,
            "settings_key": self.settings_key,
            "pool_draws": self.pool_draws,
            "pool_seed": self.pool_seed,
            "observable_names": list(self.observable_names),
            "latent_names": list(phase_space.LATENT_NAMES),
            "nuisance_names": list(chart.NUISANCE_NAMES) if self.tier != "parton" else [],
        }
        return LHCDataset(x=x, theta=theta, gold=gold, metadata=metadata)

    def simulate_arrays(self, n: int, seed: int, theta: Tensor | None = None) -> dict[str, np.ndarray]:
        """`simulate_dataset` in its file format (`save_dataset`): x, theta, the gold data and the
        metadata; `theta` (n rows, or one row for every event) defaults to the prior."""
        if theta is not None and len(theta) == 1:
            theta = theta.expand(n, -1)
        return dataset_arrays(self.simulate_dataset(n, seed, theta))

    def simulate_reference_events(self, n: int, seed: int, theta_ref: Tensor | None = None) -> dict[str, np.ndarray]:
        """n events at θ_ref (p,), default θ = 0 as in `simulate_gold`, each paired with a θ from
        the prior, and their joint log ratio log r(x, z|θ, θ_ref), for ALICES: arrays
        x_reference, theta_reference, joint_log_ratio_reference. Their seeds are derived from
        `seed`, apart from those of the data set `simulate_dataset(n, seed)`."""
        simulation_seed, prior_seed = (int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(2))
        theta_ref = torch.zeros(self.theta_dim, dtype=torch.float64) if theta_ref is None else theta_ref.double()
        reference = theta_ref.expand(n, -1)
        x, gold = self.simulate_gold(reference, seed=simulation_seed, theta_ref=theta_ref)
        paired = self.sample_prior(n, seed=prior_seed).double()
        log_r = self.joint_log_ratio(gold.matrix, paired, reference)
        return {"x_reference": x.numpy(), "theta_reference": paired.numpy(), "joint_log_ratio_reference": log_r.numpy()}

    # ---- exact likelihood and posterior ----------------------------------------------------------
    def latent(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Invert x -> (z, ν) (pT-sorted labelling); exact at the parton and hadron tiers."""
        self._require_tractable()
        self.check_x(x)
        z, nuisance = chart.latent_from_observables(x, with_nuisance=self.tier == "hadron")
        return z, nuisance if nuisance is not None else torch.empty(len(x), 0, dtype=torch.float64)

    def chart_spectrum(self, x: Tensor, events: int = 200) -> Tensor:
        """How wide the manifold is along each of its n directions at the data scale: the median
        over the first `events` rows of the singular values of ∂x̃/∂w̃, the chart x(z, ν) in
        z-scored units (x̃ = x / std(x), w̃ = (z, ν) / std(z, ν), scales from all of x), largest
        first. A direction whose value is far below the nearest-neighbour distance of z-scored
        data is invisible to nearest-neighbour dimension estimates."""
        x = self.check_x(x).double()
        z, nuisance = self.latent(x)
        latent = torch.cat([z, nuisance], -1)
        x_scale, latent_scale = x.std(0).clamp_min(1e-12), latent.std(0)

        def observables(scaled: Tensor) -> Tensor:
            w = scaled * latent_scale
            momenta = chart.labelled_momenta(w[:, : z.shape[1]], w[:, z.shape[1] :] if self.tier != "parton" else None)
            return (chart.sorted_observables(momenta) / x_scale).sum(0)  # rows are independent

        jacobian = torch.autograd.functional.jacobian(observables, latent[:events] / latent_scale, vectorize=True)
        return torch.linalg.svdvals(jacobian.permute(1, 0, 2)).median(0).values

    def _latent_terms(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """H(z(x)) and the θ-independent part log F(z) + log p(ν) (-inf outside the fiducial region)."""
        z, nuisance = self.latent(x)
        event = phase_space.hard_event(z)
        inside = phase_space.passes_cuts(event, z, self.cuts)
        constant = phase_space.log_phase_space_factor(z, event)
        if self.tier == "hadron":
            constant = constant + self.nuisance.log_prob(nuisance)
        constant = torch.where(inside, constant, -torch.inf)
        return amplitudes.matrix_element_matrix(event.incoming, event.jets), constant

    def log_likelihood(self, x: Tensor, theta: Tensor) -> Tensor:
        """Exact log p(x|θ) at the parton and hadron tiers, up to a θ-independent constant;
        rows of x and θ paired (or one θ row for all x) -> (batch,), float64.

        The value is the log density of the latent coordinates, log p(z|θ) + log p(ν) =
        log F(z) + log vᵀH(z)v - log σ(θ) + log p(ν), with (z, ν) recovered from x. It differs
        from log p(x|θ) on the manifold by -½ log det(JᵀJ) of the chart (z, ν) ↦ x plus log 4
        (the pT-sorted labelling), both θ-independent. Outside the fiducial region it is -inf."""
        theta = self.check_theta(theta)
        if len(theta) not in (1, len(x)):
            raise ValueError(f"theta must have 1 row or as many as x ({len(x)}), got {len(theta)}")
        matrix, constant = self._latent_terms(x)
        v = coupling_vector(theta.double()).expand(len(x), -1)
        return constant + torch.log(_quadratic(v, matrix)) - torch.log(_quadratic(v, self.normalization.matrix))

    def observed_log_likelihood(self, x_observed: Tensor):
        """θ (batch, p) -> Σ_j log p(x_j|θ) (batch,), with H(z_j) computed once (the form that
        `mflow_sbi.inference.mcmc_posterior` takes). Raises if an event is outside the support."""
        matrix, constant = self._latent_terms(x_observed)
        if not torch.isfinite(constant).all():
            bad = (~torch.isfinite(constant)).nonzero().flatten()[:5].tolist()
            raise ValueError(f"x_observed rows {bad} lie outside the fiducial region (zero likelihood for every θ)")
        total_constant = float(constant.sum())
        s = self.normalization.matrix

        def log_likelihood(theta: Tensor) -> Tensor:
            v = coupling_vector(theta.double())
            per_event = torch.einsum("bk,nkl,bl->bn", v, matrix, v)
            return total_constant + torch.log(per_event).sum(-1) - len(matrix) * torch.log(_quadratic(v, s))

        return log_likelihood

    def exact_posterior(
        self,
        x_observed: Tensor,
        num_samples: int = 64_000,
        walkers: int = 256,
        burn_in: int = 100,
        seed: int = 0,
        progress: bool = False,
    ) -> MCMCResult:
        """p(θ|x_1..x_m) ∝ N(θ; 0, I) Π_j p(x_j|θ) by emcee on the exact likelihood
        (`mflow_sbi.inference.mcmc_posterior`, with a longer burn-in than its default)."""
        return mcmc_posterior(
            self.observed_log_likelihood(x_observed),
            self.prior,
            num_samples=num_samples,
            walkers=walkers,
            burn_in=burn_in,
            seed=seed,
            parameter_names=self.theta_names,
            progress=progress,
            observed=x_observed,
        )

    def exact_posterior_samples(self, x_observed: Tensor, n: int, seed: int = 0) -> Tensor:
        """n draws of `exact_posterior` -> (n, theta_dim), float64."""
        return self.exact_posterior(x_observed, num_samples=n, seed=seed).samples

    def exact_grid_posterior(self, x_observed: Tensor, resolution: int = 201, half_width: float = 4.0) -> GridPosterior:
        """p(θ|x_1..x_m) on a resolution² grid over [-half_width, half_width]², normalized on the
        grid (n_params = 2 only, else NotImplementedError; the prior puts 6·10⁻⁵ of each θ_k's
        mass beyond |θ_k| = 4)."""
        if self.theta_dim != 2:
            raise NotImplementedError(f"a grid posterior needs n_params = 2, not {self.theta_dim}; use exact_posterior (MCMC)")
        bounds = ([-half_width] * 2, [half_width] * 2)
        log_likelihood = self.observed_log_likelihood(x_observed)
        return grid_posterior(log_likelihood, self.prior, resolution, bounds, dtype=torch.float64)

    def _require_tractable(self) -> None:
        if self.tier == "detector":
            raise ValueError("tier 'detector' has no tractable likelihood; use tier='parton' or 'hadron'")

    # ---- diagnostics and conveniences ----------------------------------------------------------------
    def closure(self, x: Tensor, seed: int | torch.Generator | None = 0) -> float:
        """The closure metric of x (0 = all 26 identities hold; ≈ 1 = shuffled features)."""
        self.check_x(x)
        return float(kinematics.closure(x.double(), as_generator(seed)))

    def to_dataframe(self, x: Tensor) -> pd.DataFrame:
        """x as a DataFrame with the named observable columns."""
        self.check_x(x)
        return pd.DataFrame(x.detach().cpu().numpy(), columns=list(self.observable_names))

    def check_x(self, x: Tensor) -> Tensor:
        """x validated as (batch, 40) observables."""
        check_matrix("x", x, self.data_dim)
        return x


def _quadratic(v: Tensor, matrix: Tensor) -> Tensor:
    """vᵀ A v per row: v (batch, 4) with A (batch, 4, 4) or (4, 4) -> (batch,)."""
    if matrix.ndim == 2:
        return ((v @ matrix) * v).sum(-1)
    return torch.einsum("bk,bkl,bl->b", v, matrix, v)

