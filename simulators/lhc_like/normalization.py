"""The fiducial cross section σ(θ) = vᵀSv and the envelope constants, estimated once from a
weighted pool of proposal draws and cached on disk.

With weights w(z) = F(z) / q(z) (F the θ-independent factor of dσ/dz) and X = w H 1_fid:
  S = E_q[X], estimated by the pool mean, with the covariance of vec X for MC errors;
  Λ = E_q[w λ_max(H) 1_fid], the normalization of the envelope density ∝ q w λ_max;
  M = safety · max over the pool of w tr(H) 1_fid, the bound for unweighting: proposal draws
  are kept with probability w tr(H) / M and then λ_max / tr(H) (λ_max ≤ tr H for H ⪰ 0), which
  leaves them distributed as the envelope density while computing λ_max only for the few kept.
The cache file is keyed by a hash of every setting that changes these numbers, written
atomically (temporary file + rename), and lives in `cache_dir`, else $MFLOW_SBI_CACHE, else
~/.cache/mflow-sbi.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from simulators.lhc_like import amplitudes, phase_space
from simulators.lhc_like.phase_space import Cuts, Proposal

CACHE_ENVIRONMENT_VARIABLE = "MFLOW_SBI_CACHE"
ENVELOPE_SAFETY = 1.5
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


def draw_candidates(n: int, cuts: Cuts, proposal: Proposal, generator: torch.Generator) -> Candidates:
    """n proposal draws, of which those passing the fiducial cuts are returned."""
    z = phase_space.sample_proposal(n, cuts, proposal, generator)
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
    envelope_bound: float  # M, bounds w tr(H) ≥ w λ_max
    fiducial_fraction: float

    def cross_section(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        """σ(θ) = vᵀSv and its MC standard error sqrt((v⊗v)ᵀ C (v⊗v) / N); θ (batch, ≤ 3)."""
        v = coupling_vector(theta.double())
        sigma = torch.einsum("bk,kl,bl->b", v, self.matrix, v)
        outer = (v.unsqueeze(-1) * v.unsqueeze(-2)).flatten(1)
        variance = torch.einsum("bk,kl,bl->b", outer, self.covariance, outer) / self.draws
        return sigma, variance.sqrt()

    def unweighting_efficiency(self) -> float:
        """Fraction of proposal draws kept when unweighting to the envelope, Λ / M."""
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
    envelope_total, envelope_max, inside = 0.0, 0.0, 0
    for start in range(0, draws, chunk):
        candidates = draw_candidates(min(chunk, draws - start), cuts, proposal, generator)
        x = (candidates.weight[:, None, None] * candidates.matrix).flatten(1)
        total += x.sum(0)
        second += x.T @ x
        envelope_total += float((candidates.weight * candidates.largest_eigenvalue()).sum())
        envelope_max = max(envelope_max, float((candidates.weight * candidates.trace()).max()))
        inside += len(x)
    mean = total / draws
    return Normalization(
        matrix=mean.view(4, 4),
        covariance=second / draws - torch.outer(mean, mean),
        draws=draws,
        envelope_mean=envelope_total / draws,
        envelope_bound=ENVELOPE_SAFETY * envelope_max,
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
            amplitudes.RATE_UNIT, ENVELOPE_SAFETY,
        ],
    }  # fmt: skip
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:20]


def cache_directory(cache_dir: str | os.PathLike | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    return Path(os.environ.get(CACHE_ENVIRONMENT_VARIABLE, Path.home() / ".cache" / "mflow-sbi"))


def write_atomically(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez to a temporary file in the same directory, then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            np.savez(stream, **arrays)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


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
                envelope_bound=float(stored["envelope_bound"]),
                fiducial_fraction=float(stored["fiducial_fraction"]),
            )
    normalization = estimate(cuts, proposal, draws, seed)
    write_atomically(
        path,
        {
            "matrix": normalization.matrix.numpy(),
            "covariance": normalization.covariance.numpy(),
            "draws": np.array(normalization.draws),
            "envelope_mean": np.array(normalization.envelope_mean),
            "envelope_bound": np.array(normalization.envelope_bound),
            "fiducial_fraction": np.array(normalization.fiducial_fraction),
        },
    )
    return normalization
