"""Helicity amplitudes of W-boson fusion q q' → q q' H and the matrix H(z) of |M|² = vᵀHv.

For one assignment of the outgoing quarks k_a, k_b to the incoming p1, p2 (momentum transfers
q1 = p1 - k_a, q2 = p2 - k_b), the amplitude is linear in v = (1, θ1, θ2, θ3):
M = P Σ_k v_k M_k with P = m_W²/(q1² - m_W²) · m_W²/(q2² - m_W²) and the structures
  M_0 = J1·J2                                           (SM, g^{μν} vertex)
  M_1 = c1 F [(q1·q2)(J1·J2) - (J1·q2)(J2·q1)] / v²     (CP-even W_{μν}W^{μν} operator)
  M_2 = c2 F ε_{μνρσ} J1^μ J2^ν q1^ρ q2^σ / v²          (CP-odd W_{μν}W̃^{μν} operator)
  M_3 = c3 F (q1² + q2²)(J1·J2) / v²                    (contact, derivative term)
where J_i = ū_L(k) γ^μ u_L(p) are the left-handed quark currents (the W couples to one
helicity only, so the helicity sum has one term) and F = Λ²/(Λ² - q1²) · Λ²/(Λ² - q2²) is a
dipole form factor that keeps the dimension-six terms from growing without bound (as in
VBFNLO's anomalous couplings). H_kl = Re Σ_assignments M_k M_l* is a sum of matrices
Re(m m†) = a aᵀ + b bᵀ (m = a + ib), so it is positive semi-definite by construction.
The coupling scales c_k are set so that each pure dimension-six term alone gives the SM
fiducial rate (S_kk = S_00), i.e. θ_k = 1 changes the rate by O(1).
"""

from __future__ import annotations

import torch
from torch import Tensor

from simulators.lhc_like.kinematics import dot

W_MASS = 80.4  # GeV
VEV = 246.2  # GeV
FORM_FACTOR_SCALE = 1000.0  # Λ in GeV
COUPLING_SCALES = (1.0, 5.3, 5.5, 1.35)  # c_0 .. c_3: S_kk ≈ S_00 (calibrated on 10⁶ draws)
RATE_UNIT = 5.66e27  # H is divided by this, so that σ(θ = 0) ≈ 1 (arbitrary units)


def weyl_spinor(p: Tensor) -> Tensor:
    """Left-handed two-component spinor of a massless momentum, complex (..., 2):
    ξ(p) = (-e^{-iφ} sqrt(E - pz), sqrt(E + pz)), so that ξ†σ̄^μ ξ = 2p^μ."""
    pt = torch.sqrt(p[..., 1] ** 2 + p[..., 2] ** 2)
    minus = torch.sqrt(torch.clamp(p[..., 0] - p[..., 3], min=0.0))
    plus = torch.sqrt(torch.clamp(p[..., 0] + p[..., 3], min=0.0))
    # e^{-iφ}, with φ = 0 for momenta along the beam
    along_beam = pt == 0
    safe_pt = torch.where(along_beam, torch.ones_like(pt), pt)
    phase = torch.complex(torch.where(along_beam, torch.ones_like(pt), p[..., 1] / safe_pt), -p[..., 2] / safe_pt)
    return torch.stack([-phase * minus, torch.complex(plus, torch.zeros_like(plus))], -1)


def current(outgoing: Tensor, incoming: Tensor) -> Tensor:
    """J^μ = ū_L(k) γ^μ u_L(p) of massless momenta k (outgoing), p (incoming); complex (..., 4)."""
    return spinor_current(weyl_spinor(outgoing), weyl_spinor(incoming))


def spinor_current(outgoing: Tensor, incoming: Tensor) -> Tensor:
    """J^μ = ξ(k)† σ̄^μ ξ(p), σ̄ = (1, -σ⃗), from the spinors ξ(k), ξ(p); complex (..., 4)."""
    k, p = outgoing.conj(), incoming
    j0 = k[..., 0] * p[..., 0] + k[..., 1] * p[..., 1]
    j1 = -(k[..., 0] * p[..., 1] + k[..., 1] * p[..., 0])
    j2 = 1j * (k[..., 0] * p[..., 1] - k[..., 1] * p[..., 0])
    j3 = -(k[..., 0] * p[..., 0] - k[..., 1] * p[..., 1])
    return torch.stack([j0, j1, j2, j3], -1)


def levi_civita(a: Tensor, b: Tensor, c: Tensor, d: Tensor) -> Tensor:
    """ε_{μνρσ} a^μ b^ν c^ρ d^σ with ε^{0123} = +1 (so ε_{0123} = -1) = -det[a; b; c; d] of the
    contravariant components, by Laplace expansion in the 2×2 minors of (a, b) and (c, d)."""

    def minor(u: Tensor, v: Tensor, i: int, j: int) -> Tensor:
        return u[..., i] * v[..., j] - u[..., j] * v[..., i]

    pairs = ((0, 1, 2, 3, 1), (0, 2, 1, 3, -1), (0, 3, 1, 2, 1), (1, 2, 0, 3, 1), (1, 3, 0, 2, -1), (2, 3, 0, 1, 1))
    return -sum(sign * minor(a, b, i, j) * minor(c, d, k, m) for i, j, k, m, sign in pairs)


def structures(
    incoming: tuple[Tensor, Tensor], outgoing: tuple[Tensor, Tensor], currents: tuple[Tensor, Tensor]
) -> Tensor:
    """The four amplitudes P·M_k (before the couplings θ) for one assignment, with the currents
    J1 = J(k1 ← p1), J2 = J(k2 ← p2) -> complex (..., 4)."""
    (p1, p2), (k1, k2), (j1, j2) = incoming, outgoing, currents
    q1, q2 = p1 - k1, p2 - k2
    q1c, q2c = q1.to(j1.dtype), q2.to(j1.dtype)
    t1, t2 = dot(q1, q1), dot(q2, q2)
    jj = dot(j1, j2)
    propagators = W_MASS**2 / (t1 - W_MASS**2) * W_MASS**2 / (t2 - W_MASS**2)
    form_factor = FORM_FACTOR_SCALE**2 / (FORM_FACTOR_SCALE**2 - t1) * FORM_FACTOR_SCALE**2 / (FORM_FACTOR_SCALE**2 - t2)
    dimension_six = form_factor / VEV**2
    amplitudes = [
        jj,
        dimension_six * (dot(q1, q2) * jj - dot(j1, q2c) * dot(j2, q1c)),
        dimension_six * levi_civita(j1, j2, q1c, q2c),
        dimension_six * (t1 + t2) * jj,
    ]
    scales = torch.tensor(COUPLING_SCALES, dtype=torch.float64)
    return (propagators.unsqueeze(-1) * scales) * torch.stack(amplitudes, -1)


def matrix_element_matrix(incoming: tuple[Tensor, Tensor], jets: tuple[Tensor, Tensor]) -> Tensor:
    """H(z) (..., 4, 4), summed over both assignments of the jets to the incoming quarks (the
    quarks are taken as distinguishable, e.g. u d → d u H, so the assignments do not interfere):
    H = Σ Re(m m†), which makes H symmetric under exchanging the jets."""
    quarks = [weyl_spinor(p) for p in incoming]
    outgoing = [weyl_spinor(k) for k in jets]
    total = 0
    for a, b in ((0, 1), (1, 0)):
        currents = (spinor_current(outgoing[a], quarks[0]), spinor_current(outgoing[b], quarks[1]))
        m = structures(incoming, (jets[a], jets[b]), currents)
        total = total + (m.unsqueeze(-1) * m.conj().unsqueeze(-2)).real
    return total / RATE_UNIT
