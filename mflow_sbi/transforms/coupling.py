"""Coupling layers, built on zuko's stateless `CouplingTransform`: rational-quadratic spline
couplings (Durkan et al. 2019, "Neural Spline Flows") and volume-preserving ("incompressible")
affine couplings (Sorrenson et al. 2020, GIN; the flows of paper 002)."""

from __future__ import annotations

from functools import partial

import torch
from torch import BoolTensor, Tensor
from torch.distributions import constraints
from zuko.lazy import LazyTransform
from zuko.transforms import CouplingTransform, DependentTransform, MonotonicRQSTransform, Transform
from zuko.utils import broadcast

from mflow_sbi.nn import ResidualMLP


class AffineElementwise(Transform):
    """y = x exp(s) + t element-wise; log|det J| = s (per element)."""

    domain = codomain = constraints.real
    bijective = True

    def __init__(self, shift: Tensor, log_scale: Tensor) -> None:
        super().__init__()
        self.shift, self.log_scale = shift, log_scale

    def _call(self, x: Tensor) -> Tensor:
        return x * torch.exp(self.log_scale) + self.shift

    def _inverse(self, y: Tensor) -> Tensor:
        return (y - self.shift) * torch.exp(-self.log_scale)

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return self.log_scale


class RQSElementwise(LazyTransform):
    """y = RQS(x; φ(c)) element-wise, with spline parameters from a residual MLP of the context
    c alone: the conditional transform of a 1-D flow, where no coupling split exists.
    log|det J| = Σ_i log RQS'(x_i)."""

    def __init__(self, features: int, context: int, bins: int = 10, bound: float = 6.0, hidden: int = 100, blocks: int = 2) -> None:
        super().__init__()
        if context < 1:
            raise ValueError("an element-wise spline needs a context to condition on")
        self.features, self.bins, self.bound = features, bins, bound
        self.conditioner = ResidualMLP(context, features * (3 * bins - 1), hidden=hidden, blocks=blocks)

    def forward(self, c: Tensor | None = None) -> Transform:
        """The transform for the context c (batch, context) (this one requires it)."""
        if c is None:
            raise ValueError("this transform needs a context")
        parameters = self.conditioner(c).unflatten(-1, (self.features, 3 * self.bins - 1))
        widths, heights, derivatives = parameters.split((self.bins, self.bins, self.bins - 1), dim=-1)
        return DependentTransform(MonotonicRQSTransform(widths, heights, derivatives, bound=self.bound), 1)


def coupling_mask(features: int, mask: BoolTensor | None) -> BoolTensor:
    """The split of a coupling (True: the constant half x_a), alternating by default; both halves
    must be non-empty."""
    mask = torch.arange(features) % 2 == 1 if mask is None else torch.as_tensor(mask, dtype=torch.bool)
    if mask.shape != (features,) or mask.all() or not mask.any():
        raise ValueError(f"mask must have {features} entries, with both values present")
    return mask


def check_context(features: int, c: Tensor | None) -> None:
    """A coupling built for `features` context features (0: none) gets a context iff it needs one."""
    if (c is None) != (features == 0):
        raise ValueError(f"this coupling expects a context of {features} features, got {c!r:.40}")


class RQSCoupling(LazyTransform):
    """y_a = x_a,  y_b = RQS(x_b; φ(x_a, c)) element-wise, with K bins on [-B, B] and identity
    tails outside; φ is a residual MLP of the constant half x_a and the context c (e.g. θ).

    log|det J| = Σ_b log RQS'(x_b). Starts as the identity map (zero-initialized output layer).
    """

    def __init__(
        self,
        features: int,
        context: int = 0,
        mask: BoolTensor | None = None,
        bins: int = 10,
        bound: float = 6.0,
        hidden: int = 100,
        blocks: int = 2,
    ) -> None:
        super().__init__()
        mask = coupling_mask(features, mask)
        self.register_buffer("mask", mask)
        self.bins, self.bound, self.context = bins, bound, context
        self.transformed = int((~mask).sum())
        self.conditioner = ResidualMLP(
            int(mask.sum()) + context, self.transformed * (3 * bins - 1), hidden=hidden, blocks=blocks
        )

    def _spline(self, c: Tensor | None, x_a: Tensor) -> Transform:
        if c is not None:
            x_a = torch.cat(broadcast(x_a, c, ignore=1), dim=-1)
        parameters = self.conditioner(x_a).unflatten(-1, (self.transformed, 3 * self.bins - 1))
        widths, heights, derivatives = parameters.split((self.bins, self.bins, self.bins - 1), dim=-1)
        return DependentTransform(MonotonicRQSTransform(widths, heights, derivatives, bound=self.bound), 1)

    def forward(self, c: Tensor | None = None) -> Transform:
        """The transform for the context c (None without a context)."""
        check_context(self.context, c)
        return CouplingTransform(partial(self._spline, c), self.mask)


class VolumePreservingCoupling(LazyTransform):
    """y_a = x_a,  y_b = x_b ⊙ exp(s̃) + t with (t, s) = φ(x_a, c), s soft-clamped to 2 tanh(s/2)
    and centred, s̃_i = s_i - mean_j s_j (paper 002, Eq. 43; GIN): log|det J| = Σ_i s̃_i = 0.
    With one transformed feature it is additive (s̃ = 0). Starts as the identity map."""

    def __init__(self, features: int, context: int = 0, mask: BoolTensor | None = None, hidden: int = 100, blocks: int = 2) -> None:
        super().__init__()
        mask = coupling_mask(features, mask)
        self.register_buffer("mask", mask)
        self.context = context
        self.transformed = int((~mask).sum())
        self.conditioner = ResidualMLP(int(mask.sum()) + context, 2 * self.transformed, hidden=hidden, blocks=blocks)

    def _affine(self, c: Tensor | None, x_a: Tensor) -> Transform:
        if c is not None:
            x_a = torch.cat(broadcast(x_a, c, ignore=1), dim=-1)
        shift, raw = self.conditioner(x_a).chunk(2, dim=-1)
        log_scale = 2 * torch.tanh(raw / 2)
        return DependentTransform(AffineElementwise(shift, log_scale - log_scale.mean(-1, keepdim=True)), 1)

    def forward(self, c: Tensor | None = None) -> Transform:
        """The transform for the context c (None without a context)."""
        check_context(self.context, c)
        return CouplingTransform(partial(self._affine, c), self.mask)
