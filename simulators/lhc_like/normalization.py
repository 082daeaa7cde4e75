"""The fiducial cross section σ(θ) = vᵀSv and the envelope constants, estimated once from a
weighted pool of proposal draws and cached on disk.

With weights w(z) = F(z) / q(z) (F the θ-independent factor of dσ/dz) and X = w H 1_fid:
  S = E_q[X], estimated by the pool mean, with the covariance of vec X for MC errors;
  Λ = E_q[w λ_max(H) 1_fid], the normalization of the envelope density ∝ q w λ_max;
  M_c = safety · max of w tr(H) 1_fid over the pool's draws in pT cell c (`Proposal.cell`)
  and its neighbours (a 3×3 block, which guards cells whose few draws missed their peak),
  symmetrized under exchanging the jets (which leaves w tr(H) unchanged) and floored at a
  fraction of the largest: the stratified unweighting bound. The sampler draws cell c with
  probability ∝ M_c (the cells have equal q-mass), keeps a draw with probability
  w tr(H) / M_c and then λ_max / tr(H) (λ_max ≤ tr H for H ⪰ 0); the kept draws follow the
  envelope density, and λ_max is computed only for the few kept.
The cache file is keyed by a hash of every setting that changes these numbers, written
atomically (temporary file + rename), and lives in `cache_dir`, else $MFLOW_SBI_CACHE, else
~/.cache/mflow-sbi.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from mflow_sbi.files import write_npz_atomically
from simulators.lhc_like import amplitudes, phase_space
from simulators.lhc_like.phase_space import Cuts, Proposal

CACHE_ENVIRONMENT_VARIABLE = "MFLOW_SBI_CACHE"
ENVELOPE_SAFETY = 1.5
CELL_FLOOR = 0.05  # no cell bound below this fraction of the largest
VERSION = "1"  # bump when the physics changes: the cache key and the data sets record it


@dataclass
class Candidates:
    """Proposal draws that pass the cuts, with their weights and matrices."""

    latent: Tensor  # (n, 9)
    weight: Tensor  # w = F/q, (n,)
    matrix: Tensor  # H, (n, 4, 4)

    def trace(self) -> Tensor:
        return self.matrix.diagonal(dim1=-2, dim2=-1).sum(-1)

    def largest_eigenvalue(self) -> Tensor:
        return torch.linalg.eigvalsh(self.matrix)[:, -1]

    def select(self, rows: Tensor) -> Candidates:
        return Candidates(self.latent[rows], self.weight[rows], self.matrix[rows])


def draw_candidates(
    n: int, cuts: Cuts, proposal: Proposal, generator: torch.Generator, cell_probabilities: Tensor | None = None
) -> Candidates:
    """n proposal draws (stratified over pT cells if `cell_probabilities` is given), of which
    those passing the fiducial cuts are returned."""
    z = phase_space.sample_proposal(n, cuts, proposal, generator, cell_probabilities)
    event = phase_space.hard_event(z)
    inside = phase_space.passes_cuts(event, z, cuts)
    z, event = z[inside], event.select(inside)
    log_weight = phase_space.log_phase_space_factor(z, event) - phase_space.log_proposal_density(z, cuts, proposal)
    return Candidates(z, torch.exp(log_weight), amplitudes.matrix_element_matrix(event.incoming, event.jets))


@dataclass
class Normalization:
    """S, its MC covariance and the envelope constants from `draws` proposal draws."""

    matrix: Tensor  # S (4, 4)
    covariance: Tensor  # Cov(vec X) (16, 16), per draw
    draws: int
    envelope_mean: float  # Λ
    cell_bounds: Tensor  # M_c (K²,), bound w tr(H) ≥ w λ_max in each pT cell
    fiducial_fraction: float

    @property
    def envelope_bound(self) -> float:
        """The mean bound per proposal draw, Σ_c M_c / K² (the cells have equal q-mass)."""
        return float(self.cell_bounds.mean())

    @property
    def cell_probabilities(self) -> Tensor:
        """How often the sampler draws each pT cell: ∝ M_c."""
        return self.cell_bounds / self.cell_bounds.sum()

    def cross_section(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        """σ(θ) = vᵀSv and its MC standard error sqrt((v⊗v)ᵀ C (v⊗v) / N); θ (batch, ≤ 3)."""
        v = coupling_vector(theta.double())
        sigma = torch.einsum("bk,kl,bl->b", v, self.matrix, v)
        outer = (v.unsqueeze(-1) * v.unsqueeze(-2)).flatten(1)
        variance = torch.einsum("bk,kl,bl->b", outer, self.covariance, outer) / self.draws
        return sigma, variance.sqrt()

    def unweighting_efficiency(self) -> float:
        """Fraction of proposal draws kept when unweighting to the envelope, Λ / mean M_c."""
        return self.envelope_mean / self.envelope_bound


def coupling_vector(theta: Tensor) -> Tensor:
    """v = (1, θ1, θ2, θ3) -> (batch, 4); θ with fewer columns has the rest frozen at 0."""
    frozen = torch.zeros(len(theta), 3 - theta.shape[1], dtype=theta.dtype, device=theta.device)
    return torch.cat([torch.ones_like(theta[:, :1]), theta, frozen], -1)


def estimate(cuts: Cuts, proposal: Proposal, draws: int, seed: int, chunk: int = 100_000) -> Normalization:
    """One pass over `draws` proposal draws in chunks, accumulating the moments of X."""
    generator = torch.Generator().manual_seed(seed)
    total = torch.zeros(16, dtype=torch.float64)
    second = torch.zeros(16, 16, dtype=torch.float64)
    envelope_total, inside = 0.0, 0
    cell_max = torch.zeros(proposal.pt_cells**2, dtype=torch.float64)
    for start in range(0, draws, chunk):
        candidates = draw_candidates(min(chunk, draws - start), cuts, proposal, generator)
        x = (candidates.weight[:, None, None] * candidates.matrix).flatten(1)
        total += x.sum(0)
        second += x.T @ x
        envelope_total += float((candidates.weight * candidates.largest_eigenvalue()).sum())
        cells = proposal.cell(candidates.latent, cuts)
        cell_max.scatter_reduce_(0, cells, candidates.weight * candidates.trace(), reduce="amax")
        inside += len(x)
    mean = total / draws
    cell_max = cell_max.view(proposal.pt_cells, proposal.pt_cells)
    cell_max = torch.maximum(cell_max, cell_max.T)  # jet exchange swaps the cells
    cell_max = torch.nn.functional.max_pool2d(cell_max[None, None], 3, stride=1, padding=1).flatten()
    cell_bounds = ENVELOPE_SAFETY * torch.clamp(cell_max, min=CELL_FLOOR * float(cell_max.max()))
    return Normalization(
        matrix=mean.view(4, 4),
        covariance=second / draws - torch.outer(mean, mean),
        draws=draws,
        envelope_mean=envelope_total / draws,
        cell_bounds=cell_bounds,
        fiducial_fraction=inside / draws,
    )


def settings_key(cuts: Cuts, proposal: Proposal, draws: int, seed: int) -> str:
    """A hash of everything the estimate depends on."""
    settings = {
        "version": VERSION,
        "cuts": dataclasses.asdict(cuts),
        "proposal": dataclasses.asdict(proposal),
        "draws": draws,
        "seed": seed,
        "physics": [
            phase_space.SQRT_S, phase_space.HIGGS_MASS, phase_space.PDF_SMALL_X_POWER, phase_space.PDF_LARGE_X_POWER,
            amplitudes.W_MASS, amplitudes.VEV, amplitudes.FORM_FACTOR_SCALE, amplitudes.COUPLING_SCALES,
            amplitudes.RATE_UNIT, ENVELOPE_SAFETY, CELL_FLOOR,
        ],
    }  # fmt: skip
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:20]


def cache_directory(cache_dir: str | os.PathLike | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    return Path(os.environ.get(CACHE_ENVIRONMENT_VARIABLE, Path.home() / ".cache" / "mflow-sbi"))


def load_or_estimate(
    cuts: Cuts, proposal: Proposal, draws: int, seed: int, cache_dir: str | os.PathLike | None
) -> Normalization:
    """The cached estimate for these settings, computed and cached if absent."""
    path = cache_directory(cache_dir) / f"lhc_like-normalization-{settings_key(cuts, proposal, draws, seed)}.npz"
    if path.exists():
        with np.load(path) as stored:
            return Normalization(
                matrix=torch.from_numpy(stored["matrix"]),
                covariance=torch.from_numpy(stored["covariance"]),
                draws=int(stored["draws"]),
                envelope_mean=float(stored["envelope_mean"]),
                cell_bounds=torch.from_numpy(stored["cell_bounds"]),
                fiducial_fraction=float(stored["fiducial_fraction"]),
            )
    normalization = estimate(cuts, proposal, draws, seed)
    write_npz_atomically(
        path,
        {
            "matrix": normalization.matrix.numpy(),
            "covariance": normalization.covariance.numpy(),
            "draws": np.array(normalization.draws),
            "envelope_mean": np.array(normalization.envelope_mean),
            "cell_bounds": normalization.cell_bounds.numpy(),
            "fiducial_fraction": np.array(normalization.fiducial_fraction),
        },
    )
    return normalization
