"""Detector response: smearing of the primary variables, before any derived observable.

Each object's momentum magnitude is scaled by exp(δ), δ ~ N(0, (σ(E)/E)²) with the
calorimeter resolution σ(E) = sqrt((a E)² + b² E + c²) (E in GeV), at fixed mass, and η and φ
get Gaussian shifts. The smeared photons stay massless and the jets keep their masses, so the
observables computed from them stay on the same 14-dimensional manifold. The response is
θ-independent but not invertible, so the `detector` tier has no tractable likelihood; the joint
score and joint ratio, which only need the latent hard process, stay exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from simulators.lhc_like.kinematics import azimuth, from_pt_eta, mass, pseudorapidity, transverse_momentum


@dataclass(frozen=True)
class Resolution:
    """σ(E) = sqrt((a E)² + b² E + c²) and the angular resolutions of one object type."""

    constant: float  # a
    stochastic: float  # b, in GeV^½
    noise: float  # c, in GeV
    eta: float
    phi: float

    def relative(self, energy: Tensor) -> Tensor:
        """σ(E) / E."""
        return torch.sqrt(self.constant**2 + self.stochastic**2 / energy + (self.noise / energy) ** 2)


@dataclass(frozen=True)
class Detector:
    photon: Resolution = Resolution(constant=0.01, stochastic=0.1, noise=0.25, eta=0.001, phi=0.001)
    jet: Resolution = Resolution(constant=0.05, stochastic=1.0, noise=5.0, eta=0.01, phi=0.01)

    def smear(self, momenta: Tensor, generator: torch.Generator) -> Tensor:
        """Smeared (γ1, γ2, j1, j2) momenta (batch, 4, 4)."""
        noise = torch.randn(*momenta.shape[:-1], 3, generator=generator, dtype=torch.float64)
        smeared = []
        for k, resolution in ((0, self.photon), (1, self.photon), (2, self.jet), (3, self.jet)):
            p = momenta[:, k]
            scale = torch.exp(resolution.relative(p[:, 0]) * noise[:, k, 0])
            eta = pseudorapidity(p) + resolution.eta * noise[:, k, 1]
            phi = azimuth(p) + resolution.phi * noise[:, k, 2]
            # |p| -> |p| e^δ at fixed η means pT -> pT e^δ
            smeared.append(from_pt_eta(transverse_momentum(p) * scale, eta, phi, mass(p) if k >= 2 else 0.0))
        return torch.stack(smeared, -2)
