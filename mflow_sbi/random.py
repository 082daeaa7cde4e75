"""Reproducible draws from distributions that take no generator argument."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor


def sample_distribution(distribution: torch.distributions.Distribution, n: int, generator: torch.Generator) -> Tensor:
    """n draws from `distribution`, determined by `generator`: the global RNG is seeded from it
    inside `fork_rng`, so the caller's global random state is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(2**62, (), generator=generator)))
        return distribution.sample((n,))


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run with torch's global RNG seeded by `seed` (e.g. to initialize weights from a config),
    restoring the caller's global random state afterwards."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
