"""Conditioner networks."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ResidualMLP(nn.Module):
    """x -> Linear -> [h + W2 relu(W1 relu(h))] × blocks -> Linear (He et al. 2016 blocks, as in
    the reference architecture of Brehmer & Cranmer 2020: 100 hidden units, 2 blocks).

    With `zero_output=True` the last layer starts at zero, so a coupling whose parameters it
    produces starts as the identity map.
    """

    def __init__(
        self, in_features: int, out_features: int, hidden: int = 100, blocks: int = 2, zero_output: bool = True
    ) -> None:
        super().__init__()
        self.input = nn.Linear(in_features, hidden)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
            for _ in range(blocks)
        )
        self.output = nn.Linear(hidden, out_features)
        if zero_output:
            nn.init.zeros_(self.output.weight)
            nn.init.zeros_(self.output.bias)

    def forward(self, x: Tensor) -> Tensor:
        h = self.input(x)
        for block in self.blocks:
            h = h + block(h)
        return self.output(torch.relu(h))
