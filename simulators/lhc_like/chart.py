"""The chart from latent variables to the observed objects, its inverse, and the nuisance
effects that lift the 9-dimensional hard process to the 14-dimensional hadron level.

Nuisance ν = (m_γγ, r1, r2, kx, ky), θ-independent and independent of z:
  - m_γγ ~ N(m_H, Γ²): the diphoton line shape;
  - r_i = m_ji / pT_ji ~ LogNormal(log r0, s²): jet masses from showering, at fixed (pT, y, φ);
  - k⃗T ~ N(0, σ_k² I): recoil against initial-state radiation, applied as a transverse boost
    of the whole event with velocity β⃗ = k⃗T / sqrt(E² + kT²), which gives it total transverse
    momentum k⃗T (E = the event's energy before the boost).
Each step is invertible: the boost is undone with β⃗ = -P⃗T / E' of the observed total, the
jet masses and the diphoton mass are read off, and the decay angles follow from the leading
photon in the diphoton rest frame. Photons and jets are sorted by pT; the model is symmetric
under exchanging the two jets and the two photons, so the pT-sorted labelling loses nothing
(each event has four equally likely labellings).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from simulators.lhc_like.kinematics import (
    azimuth,
    boost,
    from_pt_rapidity,
    mass,
    momenta_from_observables,
    observables,
    rapidity,
    sort_by_pt,
    to_rest_frame,
    transverse_momentum,
)
from simulators.lhc_like.phase_space import HIGGS_MASS, hard_event

NUISANCE_DIM = 5
NUISANCE_NAMES = ("m_aa", "jet_mass_ratio1", "jet_mass_ratio2", "recoil_x", "recoil_y")


@dataclass(frozen=True)
class Nuisance:
    """Widths of the hadron-level effects (GeV where dimensionful)."""

    line_width: float = 1.5  # Γ of the diphoton line shape
    jet_mass_ratio: float = 0.1  # r0, the median m_j / pT_j
    jet_mass_spread: float = 0.4  # s, log-normal width
    recoil_width: float = 15.0  # σ_k per transverse component

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        """ν ~ p(ν) -> (n, 5)."""
        e = torch.randn(n, NUISANCE_DIM, generator=generator, dtype=torch.float64)
        ratios = self.jet_mass_ratio * torch.exp(self.jet_mass_spread * e[:, 1:3])
        return torch.cat([HIGGS_MASS + self.line_width * e[:, :1], ratios, self.recoil_width * e[:, 3:]], -1)

    def log_prob(self, nuisance: Tensor) -> Tensor:
        """log p(ν) -> (batch,)."""
        log_normal = -0.5 * math.log(2 * math.pi)
        standard = torch.cat(
            [
                (nuisance[:, :1] - HIGGS_MASS) / self.line_width,
                torch.log(nuisance[:, 1:3] / self.jet_mass_ratio) / self.jet_mass_spread,
                nuisance[:, 3:] / self.recoil_width,
            ],
            -1,
        )
        log_scales = math.log(self.line_width) + 2 * math.log(self.jet_mass_spread) + 2 * math.log(self.recoil_width)
        return (log_normal - 0.5 * standard**2).sum(-1) - log_scales - torch.log(nuisance[:, 1:3]).sum(-1)


def labelled_momenta(z: Tensor, nuisance: Tensor | None) -> Tensor:
    """The four objects (γ1, γ2, j1, j2) in generation order -> (batch, 4, 4); parton level
    (massless jets, m_γγ = m_H, no recoil) when `nuisance` is None."""
    if nuisance is None:
        event = hard_event(z)
        return torch.stack([*event.photons, *event.jets], -2)
    event = hard_event(z, higgs_mass=nuisance[:, 0])
    jets = [
        from_pt_rapidity(z[:, 3 * k], z[:, 3 * k + 1], z[:, 3 * k + 2], nuisance[:, 1 + k] * z[:, 3 * k]) for k in (0, 1)
    ]
    objects = torch.stack([*event.photons, *jets], -2)
    energy = objects[..., 0].sum(-1, keepdim=True)
    recoil = nuisance[:, 3:]
    velocity = torch.cat([recoil, torch.zeros_like(energy)], -1)
    velocity = velocity / torch.sqrt(energy**2 + (recoil**2).sum(-1, keepdim=True))
    return boost(objects, velocity.unsqueeze(-2))


def sorted_observables(momenta: Tensor) -> Tensor:
    """x (batch, 40) from labelled objects (batch, 4, 4): photons and jets each sorted by pT."""
    photons = sort_by_pt(momenta[:, 0], momenta[:, 1])
    jets = sort_by_pt(momenta[:, 2], momenta[:, 3])
    return observables(photons, jets)


def latent_from_observables(x: Tensor, with_nuisance: bool) -> tuple[Tensor, Tensor | None]:
    """Invert the chart: x (batch, 40) -> hard-process z (batch, 9) and, at the hadron level,
    ν (batch, 5), in the pT-sorted labelling. Exact for x on the manifold."""
    momenta = momenta_from_observables(x.double())
    nuisance = None
    if with_nuisance:
        total = momenta.sum(-2)
        velocity = torch.cat([-total[:, 1:3], torch.zeros_like(total[:, :1])], -1) / total[:, :1]
        momenta = boost(momenta, velocity.unsqueeze(-2))
        jet_ratios = mass(momenta[:, 2:]) / transverse_momentum(momenta[:, 2:])
        diphoton_mass = mass(momenta[:, 0] + momenta[:, 1])
        nuisance = torch.cat([diphoton_mass.unsqueeze(-1), jet_ratios, total[:, 1:3]], -1)
    photon1, photon2, jet1, jet2 = momenta.unbind(-2)
    direction = to_rest_frame(photon1, photon1 + photon2)[:, 1:]
    direction = direction / direction.norm(dim=-1, keepdim=True)
    columns = []
    for jet in (jet1, jet2):
        columns += [transverse_momentum(jet), rapidity(jet), torch.remainder(azimuth(jet), 2 * math.pi)]
    decay_azimuth = torch.remainder(torch.atan2(direction[:, 1], direction[:, 0]), 2 * math.pi)
    columns += [rapidity(photon1 + photon2), direction[:, 2], decay_azimuth]
    return torch.stack(columns, -1), nuisance
