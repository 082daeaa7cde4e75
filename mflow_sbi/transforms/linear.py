"""Invertible linear layers and permutations: zuko's stateless transforms with their
parameters (or buffers) held by zuko's `UnconditionalTransform`."""

from __future__ import annotations

import torch
from zuko.lazy import LazyTransform, UnconditionalTransform
from zuko.transforms import LULinearTransform, PermutationTransform


def lu_linear(features: int) -> LazyTransform:
    """y = L U x with L lower triangular, U unit upper triangular; log|det J| = Σ log|L_ii|.
    Initialized at the identity."""
    return UnconditionalTransform(LULinearTransform, torch.eye(features))


def permutation(order: torch.Tensor) -> LazyTransform:
    """y = x[order]; log|det J| = 0."""
    order = torch.as_tensor(order, dtype=torch.long)
    if sorted(order.tolist()) != list(range(len(order))):
        raise ValueError(f"order must be a permutation of 0..{len(order) - 1}, got {order.tolist()}")
    return UnconditionalTransform(PermutationTransform, order, buffer=True)
