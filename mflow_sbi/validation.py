"""Checks at the public boundary: shapes, dtypes, finiteness. Each raises a `ValueError` naming
the offending argument instead of letting a NaN or a broadcast surprise travel downstream."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def is_integer(value: object) -> bool:
    """Whether `value` is an int (a bool is not one)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """Whether `value` is a real int or float (a bool is not one)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_positive_number(name: str, value: object) -> float:
    """`value` as a positive finite number, or a `ValueError` naming `name`."""
    if not (is_number(value) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be positive and finite, got {value!r}")
    return value


def check_matrix(name: str, value: Tensor, columns: int | None = None) -> Tensor:
    """Return `value` if it is a finite floating-point tensor of shape (batch, columns)."""
    if not isinstance(value, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
    if value.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D with shape (batch, {columns if columns else 'features'}), "
            f"got shape {tuple(value.shape)}"
        )
    if columns is not None and value.shape[1] != columns:
        raise ValueError(f"{name} must have {columns} columns, got shape {tuple(value.shape)}")
    if not torch.isfinite(value).all():
        bad = (~torch.isfinite(value)).any(dim=1).nonzero().flatten()[:5].tolist()
        raise ValueError(f"{name} contains NaN or infinite values (rows {bad}...)")
    return value


def check_event(name: str, value: Tensor, event_shape: tuple[int, ...]) -> Tensor:
    """Return `value` if it is a finite floating-point batch of events, (batch, *event_shape)."""
    if len(event_shape) == 1:
        return check_matrix(name, value, event_shape[0])
    if not isinstance(value, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
    if tuple(value.shape[1:]) != tuple(event_shape) or value.ndim != len(event_shape) + 1:
        raise ValueError(f"{name} must have shape (batch, {', '.join(map(str, event_shape))}), got {tuple(value.shape)}")
    if not torch.isfinite(value).all():
        bad = (~torch.isfinite(value)).flatten(1).any(1).nonzero().flatten()[:5].tolist()
        raise ValueError(f"{name} contains NaN or infinite values (events {bad}...)")
    return value


def check_same_batch(**tensors: Tensor) -> int:
    """The common leading (batch) size of the tensors; raises unless they all share it."""
    sizes = {name: t.shape[0] for name, t in tensors.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"batch sizes differ: {sizes}")
    return next(iter(sizes.values()))


def in_support(value: Tensor, distribution: torch.distributions.Distribution) -> Tensor:
    """One flag per row of `value` (batch, p): whether it lies in the support of `distribution`."""
    if not len(value):  # torch's constraints cannot reshape an empty batch
        return torch.ones(0, dtype=torch.bool, device=value.device)
    inside = distribution.support.check(value)
    while inside.ndim > 1:  # element-wise supports (Uniform) give one flag per coordinate
        inside = inside.all(dim=-1)
    return inside


def check_in_support(name: str, value: Tensor, distribution: torch.distributions.Distribution) -> None:
    """Raise unless every row of `value` lies in the support of `distribution` (e.g. a prior)."""
    inside = in_support(value, distribution)
    if not bool(inside.all()):
        bad = (~inside).nonzero().flatten()[:5].tolist()
        raise ValueError(f"{name} lies outside the prior support at rows {bad}")
