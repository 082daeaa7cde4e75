"""The 9-dimensional hard-process phase space: coordinates, proposal, weights and cuts.

Coordinates z = (pT1, y1, φ1, pT2, y2, φ2, y_H, cos θ*, φ*): the two massless jets, the Higgs
rapidity (its transverse momentum balances the jets, its mass is m_H) and the photon direction
in the Higgs rest frame (reached from the lab by a pure boost). Momentum conservation fixes the
parton momentum fractions x1,2 = (E ± pz)/√s of the final state.

Differential rate (integrating the δ-functions of 2 → 3 phase space against dx1 dx2):
    dσ ∝ f(x1) f(x2) / (x1 x2) · pT1 pT2 · |M|²(z; θ) dz,
with the isotropic decay H → γγ a constant factor. The valence-like parton density
f(x) = x^(-a) (1 - x)^b is θ-independent and cancels in every likelihood ratio.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from simulators.lhc_like.kinematics import (
    from_pt_rapidity,
    from_rest_frame,
    pseudorapidity,
    transverse_momentum,
)

SQRT_S = 13000.0  # GeV
HIGGS_MASS = 125.0  # GeV
PDF_SMALL_X_POWER = 1.2  # a in f(x) = x^-a (1-x)^b
PDF_LARGE_X_POWER = 4.0  # b
LATENT_DIM = 9
LATENT_NAMES = ("pt1", "y1", "phi1", "pt2", "y2", "phi2", "y_h", "cos_theta", "phi_decay")


@dataclass(frozen=True)
class Cuts:
    """Fiducial cuts on the hard process (parton-level jets and photons), so that the fiducial
    rate, the joint score and the joint ratio are the same at every tier. The Higgs rapidity
    window is part of the generated region (central photons need a central Higgs)."""

    jet_pt: float = 30.0
    jet_rapidity: float = 4.5
    dijet_mass: float = 500.0
    dijet_rapidity_gap: float = 2.5
    photon_pt: float = 25.0
    photon_eta: float = 2.5
    higgs_rapidity: float = 3.0


@dataclass(frozen=True)
class Proposal:
    """q(z): t_i = pT_i² + m0² Pareto with index α above its cut value (tail ∝ pT^(-1-2α)),
    (y1, y2) uniform on the window with the rapidity-gap cut, y_H triangular on its window,
    φ1, φ2, φ* uniform, cos θ* uniform in [-1, 1]. Tuned by hand for a high unweighting
    efficiency (the envelope's max/mean weight); any q with the fiducial region in its
    support gives the same physics.

    The pT uniforms u_i = (t0/t_i)^α are split into `pt_cells` equal intervals each, a grid of
    cells over which the sampler stratifies its unweighting bound (`normalization`)."""

    pt_scale: float = 100.0  # m0 in GeV
    pt_tail_index: float = 0.6  # α
    pt_cells: int = 20

    def cell(self, z: Tensor, cuts: Cuts) -> Tensor:
        """Index i·K + j of the pT cell of each draw -> (batch,) long."""
        t0 = cuts.jet_pt**2 + self.pt_scale**2
        u = (t0 / (z[:, [0, 3]] ** 2 + self.pt_scale**2)) ** self.pt_tail_index
        index = torch.clamp((u * self.pt_cells).long(), max=self.pt_cells - 1)
        return index[:, 0] * self.pt_cells + index[:, 1]


@dataclass
class HardEvent:
    """Momenta of one hard event per row: incoming partons, massless jets, Higgs, photons."""

    incoming: tuple[Tensor, Tensor]
    jets: tuple[Tensor, Tensor]
    higgs: Tensor
    photons: tuple[Tensor, Tensor]
    momentum_fractions: Tensor  # (batch, 2)

    def select(self, rows: Tensor) -> HardEvent:
        """The events at `rows` (a boolean mask or indices)."""
        return HardEvent(
            (self.incoming[0][rows], self.incoming[1][rows]),
            (self.jets[0][rows], self.jets[1][rows]),
            self.higgs[rows],
            (self.photons[0][rows], self.photons[1][rows]),
            self.momentum_fractions[rows],
        )


def sample_proposal(
    n: int, cuts: Cuts, proposal: Proposal, generator: torch.Generator, cell_probabilities: Tensor | None = None
) -> Tensor:
    """n draws z ~ q -> (n, 9), float64, from 11 uniforms per draw. With `cell_probabilities`
    (K², summing to 1), each draw's pT cell is chosen with these probabilities instead of the
    cells' volume 1/K², and (u1, u2) is uniform inside it."""
    u = torch.rand(n, 11, generator=generator, dtype=torch.float64)
    if cell_probabilities is not None:
        cells = torch.multinomial(cell_probabilities, n, replacement=True, generator=generator)
        corner = torch.stack([cells // proposal.pt_cells, cells % proposal.pt_cells], -1)
        u = torch.cat([(corner + u[:, :2]) / proposal.pt_cells, u[:, 2:]], -1)
    t0 = cuts.jet_pt**2 + proposal.pt_scale**2
    pt = torch.sqrt(t0 * u[:, :2] ** (-1 / proposal.pt_tail_index) - proposal.pt_scale**2)
    # (y1, y2) uniform on {|y_i| < Y, |y1 - y2| > g}: two triangles with legs a = 2Y - g
    side = 2 * cuts.jet_rapidity - cuts.dijet_rapidity_gap
    low, high = torch.minimum(u[:, 2], u[:, 3]) * side, torch.maximum(u[:, 2], u[:, 3]) * side
    backward, forward = low - cuts.jet_rapidity, high - cuts.jet_rapidity + cuts.dijet_rapidity_gap
    first_forward = u[:, 4] < 0.5
    y1, y2 = torch.where(first_forward, forward, backward), torch.where(first_forward, backward, forward)
    phi = 2 * math.pi * u[:, 5:7]
    y_h = (u[:, 7] + u[:, 8] - 1) * cuts.higgs_rapidity  # triangular on (-Y_H, Y_H)
    cos_theta = 2 * u[:, 9] - 1
    phi_decay = 2 * math.pi * u[:, 10]
    return torch.stack([pt[:, 0], y1, phi[:, 0], pt[:, 1], y2, phi[:, 1], y_h, cos_theta, phi_decay], -1)


def log_proposal_density(z: Tensor, cuts: Cuts, proposal: Proposal) -> Tensor:
    """log q(z) -> (batch,), for z inside the proposal's domain."""
    alpha, m0 = proposal.pt_tail_index, proposal.pt_scale
    t0 = cuts.jet_pt**2 + m0**2
    log_q = torch.zeros_like(z[:, 0])
    for pt in (z[:, 0], z[:, 3]):  # q(pT) = α t0^α 2 pT / t^(α+1)
        t = pt**2 + m0**2
        log_q = log_q + math.log(2 * alpha) + alpha * math.log(t0) + torch.log(pt) - (alpha + 1) * torch.log(t)
    log_q = log_q - 2 * math.log(2 * cuts.jet_rapidity - cuts.dijet_rapidity_gap)  # 1 / a², uniform
    log_q = log_q + torch.log(cuts.higgs_rapidity - z[:, 6].abs()) - 2 * math.log(cuts.higgs_rapidity)
    return log_q - math.log(2.0) - 3 * math.log(2 * math.pi)


def hard_event(z: Tensor, higgs_mass: Tensor | float = HIGGS_MASS) -> HardEvent:
    """Momenta from z; `higgs_mass` (per event or fixed) is the diphoton mass."""
    jet1 = from_pt_rapidity(z[:, 0], z[:, 1], z[:, 2], 0.0)
    jet2 = from_pt_rapidity(z[:, 3], z[:, 4], z[:, 5], 0.0)
    recoil = -(jet1[:, 1:3] + jet2[:, 1:3])
    higgs = from_pt_rapidity(
        torch.sqrt((recoil**2).sum(-1)), z[:, 6], torch.atan2(recoil[:, 1], recoil[:, 0]), higgs_mass
    )
    m = torch.as_tensor(higgs_mass, dtype=z.dtype).expand(len(z))
    sin_theta = torch.sqrt(torch.clamp(1 - z[:, 7] ** 2, min=0.0))
    direction = torch.stack([sin_theta * torch.cos(z[:, 8]), sin_theta * torch.sin(z[:, 8]), z[:, 7]], -1)
    half = (m / 2).unsqueeze(-1)
    photon1 = from_rest_frame(torch.cat([half, half * direction], -1), higgs)
    photon2 = from_rest_frame(torch.cat([half, -half * direction], -1), higgs)
    total = jet1 + jet2 + higgs
    fractions = torch.stack([total[:, 0] + total[:, 3], total[:, 0] - total[:, 3]], -1) / SQRT_S
    zeros = torch.zeros_like(fractions[:, 0])
    beam = SQRT_S / 2
    incoming1 = torch.stack([fractions[:, 0] * beam, zeros, zeros, fractions[:, 0] * beam], -1)
    incoming2 = torch.stack([fractions[:, 1] * beam, zeros, zeros, -fractions[:, 1] * beam], -1)
    return HardEvent((incoming1, incoming2), (jet1, jet2), higgs, (photon1, photon2), fractions)


def passes_cuts(event: HardEvent, z: Tensor, cuts: Cuts) -> Tensor:
    """Fiducial region (bool per event), including x1, x2 < 1 and the proposal's windows."""
    jet1, jet2 = event.jets
    dijet = jet1 + jet2
    dijet_mass = torch.sqrt(torch.clamp(dijet[:, 0] ** 2 - (dijet[:, 1:] ** 2).sum(-1), min=0.0))
    inside = (event.momentum_fractions < 1).all(-1)
    inside &= (z[:, 0] > cuts.jet_pt) & (z[:, 3] > cuts.jet_pt)
    inside &= (z[:, 1].abs() < cuts.jet_rapidity) & (z[:, 4].abs() < cuts.jet_rapidity)
    inside &= (z[:, 1] - z[:, 4]).abs() > cuts.dijet_rapidity_gap
    inside &= dijet_mass > cuts.dijet_mass
    inside &= z[:, 6].abs() < cuts.higgs_rapidity
    for photon in event.photons:
        inside &= (transverse_momentum(photon) > cuts.photon_pt) & (pseudorapidity(photon).abs() < cuts.photon_eta)
    return inside


def log_parton_luminosity(fractions: Tensor) -> Tensor:
    """log[f(x1) f(x2) / (x1 x2)] with f(x) = x^(-a) (1 - x)^b."""
    x = torch.clamp(fractions, max=1 - 1e-15)
    return (-(PDF_SMALL_X_POWER + 1) * torch.log(x) + PDF_LARGE_X_POWER * torch.log1p(-x)).sum(-1)


def log_phase_space_factor(z: Tensor, event: HardEvent) -> Tensor:
    """log of the θ-independent factor f(x1) f(x2) / (x1 x2) · pT1 pT2 of dσ/dz."""
    return log_parton_luminosity(event.momentum_fractions) + torch.log(z[:, 0]) + torch.log(z[:, 3])
