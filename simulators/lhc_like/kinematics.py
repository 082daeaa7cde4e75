"""Four-vectors, boosts, the 40 observables and their closure identities.

Four-vectors are tensors (..., 4) = (E, px, py, pz) in GeV, metric (+, -, -, -). Every
function is plain torch arithmetic (no in-place writes, no data-dependent branches), so it runs
under `torch.func.jacfwd` for the manifold's Jacobian.
"""

from __future__ import annotations

import torch
from torch import Tensor

OBJECTS = ("a1", "a2", "j1", "j2")  # photons and jets, each pair sorted by pT
OBJECT_FEATURES = ("E", "px", "py", "pz", "pt", "eta")
SYSTEMS = ("aa", "jj")  # the diphoton and dijet systems
SYSTEM_FEATURES = ("E", "px", "py", "pz", "pt", "m", "eta", "deta")
OBSERVABLE_NAMES = tuple(f"{o}_{f}" for o in OBJECTS for f in OBJECT_FEATURES) + tuple(
    f"{s}_{f}" for s in SYSTEMS for f in SYSTEM_FEATURES
)
CLOSURE_NAMES = (
    tuple(f"{o}_pt" for o in OBJECTS + SYSTEMS)
    + tuple(f"{o}_eta" for o in OBJECTS + SYSTEMS)
    + ("a1_massless", "a2_massless")
    + tuple(f"{s}_{c}_sum" for s in SYSTEMS for c in ("E", "px", "py", "pz"))
    + ("aa_m", "jj_m", "aa_deta", "jj_deta")
)  # 26 identities


def dot(a: Tensor, b: Tensor) -> Tensor:
    """Minkowski product a·b = a⁰b⁰ - a⃗·b⃗ (also for complex vectors, without conjugation)."""
    return a[..., 0] * b[..., 0] - (a[..., 1:] * b[..., 1:]).sum(-1)


def transverse_momentum(p: Tensor) -> Tensor:
    return torch.sqrt(p[..., 1] ** 2 + p[..., 2] ** 2)


def pseudorapidity(p: Tensor) -> Tensor:
    """η = asinh(pz / pT)."""
    return torch.asinh(p[..., 3] / transverse_momentum(p))


def rapidity(p: Tensor) -> Tensor:
    """y = ½ log((E + pz) / (E - pz))."""
    return 0.5 * torch.log((p[..., 0] + p[..., 3]) / (p[..., 0] - p[..., 3]))


def azimuth(p: Tensor) -> Tensor:
    return torch.atan2(p[..., 2], p[..., 1])


def mass(p: Tensor) -> Tensor:
    """sqrt(max(p·p, 0))."""
    return torch.sqrt(torch.clamp(dot(p, p), min=0.0))


def from_pt_rapidity(pt: Tensor, y: Tensor, phi: Tensor, m: Tensor | float) -> Tensor:
    """(E, px, py, pz) from pT, rapidity y, azimuth φ and mass: mT = sqrt(pT² + m²),
    E = mT cosh y, pz = mT sinh y."""
    m_t = torch.sqrt(pt**2 + torch.as_tensor(m, dtype=pt.dtype) ** 2)
    return torch.stack([m_t * torch.cosh(y), pt * torch.cos(phi), pt * torch.sin(phi), m_t * torch.sinh(y)], -1)


def from_pt_eta(pt: Tensor, eta: Tensor, phi: Tensor, m: Tensor | float) -> Tensor:
    """(E, px, py, pz) from pT, pseudorapidity η, azimuth φ and mass: |p| = pT cosh η."""
    pz = pt * torch.sinh(eta)
    energy = torch.sqrt((pt * torch.cosh(eta)) ** 2 + torch.as_tensor(m, dtype=pt.dtype) ** 2)
    return torch.stack([energy, pt * torch.cos(phi), pt * torch.sin(phi), pz], -1)


def boost(p: Tensor, velocity: Tensor) -> Tensor:
    """Pure Lorentz boost of p by the 3-velocity β⃗ (|β| < 1):
    E' = γ(E + β⃗·p⃗), p⃗' = p⃗ + (γ²/(γ+1) β⃗·p⃗ + γE) β⃗ (the form stable at small β)."""
    gamma = 1.0 / torch.sqrt(1.0 - (velocity**2).sum(-1))
    beta_p = (velocity * p[..., 1:]).sum(-1)
    energy = gamma * (p[..., 0] + beta_p)
    space = p[..., 1:] + (gamma**2 / (gamma + 1) * beta_p + gamma * p[..., 0]).unsqueeze(-1) * velocity
    return torch.cat([energy.unsqueeze(-1), space], -1)


def from_rest_frame(q: Tensor, parent: Tensor) -> Tensor:
    """q given in the rest frame of `parent` (reached from the lab by a pure boost) -> lab."""
    return boost(q, parent[..., 1:] / parent[..., :1])


def to_rest_frame(p: Tensor, parent: Tensor) -> Tensor:
    """Lab momentum p -> rest frame of `parent` (pure boost by -P⃗/E)."""
    return boost(p, -parent[..., 1:] / parent[..., :1])


def sort_by_pt(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """(leading, subleading) of two momenta by pT, per event."""
    swap = (transverse_momentum(b) > transverse_momentum(a)).unsqueeze(-1)
    return torch.where(swap, b, a), torch.where(swap, a, b)


def observables(photons: tuple[Tensor, Tensor], jets: tuple[Tensor, Tensor]) -> Tensor:
    """The 40 observables (`OBSERVABLE_NAMES`) of pT-sorted photons and jets -> (..., 40):
    per object E, px, py, pz, pT, η; per system (γγ, jj) E, px, py, pz, pT, m, η, Δη = η1 - η2."""
    columns = []
    for p in (*photons, *jets):
        columns += [p[..., 0], p[..., 1], p[..., 2], p[..., 3], transverse_momentum(p), pseudorapidity(p)]
    for first, second in (photons, jets):
        total = first + second
        columns += [total[..., 0], total[..., 1], total[..., 2], total[..., 3], transverse_momentum(total)]
        columns += [mass(total), pseudorapidity(total), pseudorapidity(first) - pseudorapidity(second)]
    return torch.stack(columns, -1)


def momenta_from_observables(x: Tensor) -> Tensor:
    """The four primary momenta (a1, a2, j1, j2) read from x -> (..., 4 objects, 4)."""
    width = len(OBJECT_FEATURES)
    return torch.stack([x[..., width * k : width * k + 4] for k in range(len(OBJECTS))], -2)


def closure_residuals(x: Tensor) -> Tensor:
    """Residuals of the 26 identities (`CLOSURE_NAMES`) that tie derived observables to the
    primary momenta -> (..., 26); all zero on the manifold. Momentum identities are divided by
    the energy of the object or system (dimensionless), η identities are absolute, and photon
    masslessness is (E² - |p|²) / E²."""
    column = {name: x[..., k] for k, name in enumerate(OBSERVABLE_NAMES)}
    momenta = momenta_from_observables(x)
    a1, a2, j1, j2 = momenta.unbind(-2)
    residuals = {}
    for name, p in (("a1", a1), ("a2", a2), ("j1", j1), ("j2", j2)):
        residuals[f"{name}_pt"] = (column[f"{name}_pt"] - transverse_momentum(p)) / p[..., 0]
        residuals[f"{name}_eta"] = column[f"{name}_eta"] - pseudorapidity(p)
    for name, p in (("a1", a1), ("a2", a2)):
        residuals[f"{name}_massless"] = dot(p, p) / p[..., 0] ** 2
    for system, (first, second) in (("aa", (a1, a2)), ("jj", (j1, j2))):
        own = torch.stack([column[f"{system}_{c}"] for c in ("E", "px", "py", "pz")], -1)
        energy = own[..., 0]
        for k, c in enumerate(("E", "px", "py", "pz")):
            residuals[f"{system}_{c}_sum"] = (own[..., k] - first[..., k] - second[..., k]) / energy
        residuals[f"{system}_pt"] = (column[f"{system}_pt"] - transverse_momentum(own)) / energy
        residuals[f"{system}_eta"] = column[f"{system}_eta"] - pseudorapidity(own)
        residuals[f"{system}_m"] = (column[f"{system}_m"] - mass(own)) / energy
        residuals[f"{system}_deta"] = column[f"{system}_deta"] - (pseudorapidity(first) - pseudorapidity(second))
    return torch.stack([residuals[name] for name in CLOSURE_NAMES], -1)


def closure(x: Tensor, generator: torch.Generator) -> Tensor:
    """The closure metric: per identity, mean |residual| on x divided by the same on a copy of
    x whose columns are shuffled independently across events (the product of the marginals),
    averaged over the 26 identities. 0 = every identity holds; ≈ 1 = no better than shuffled."""
    residual = closure_residuals(x).abs().mean(0)
    columns = [x[torch.randperm(len(x), generator=generator), k] for k in range(x.shape[1])]
    shuffled = closure_residuals(torch.stack(columns, -1)).abs().mean(0)
    return (residual / shuffled).mean()


def signed_delta_phi(forward: Tensor, backward: Tensor) -> Tensor:
    """Δφ = φ(forward) - φ(backward) wrapped into (-π, π]."""
    difference = azimuth(forward) - azimuth(backward)
    return torch.remainder(difference + torch.pi, 2 * torch.pi) - torch.pi


def signed_delta_phi_jj(x: Tensor) -> Tensor:
    """Signed Δφ_jj = φ of the jet at larger η minus φ of the other (sensitive to CP-odd
    couplings, Hankele, Klämke, Zeppenfeld & Figy 2006), from x (..., 40) -> (...)."""
    momenta = momenta_from_observables(x)
    j1, j2 = momenta[..., 2, :], momenta[..., 3, :]
    first_forward = (pseudorapidity(j1) > pseudorapidity(j2)).unsqueeze(-1)
    return signed_delta_phi(torch.where(first_forward, j1, j2), torch.where(first_forward, j2, j1))
