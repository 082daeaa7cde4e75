"""LHC-like data sets on disk: one `.npz` file per data set (or shard), written atomically.

Format, for n events:
  x                 (n, 40)   observables, columns `metadata["observable_names"]`
  theta             (n, p)    the θ each event was simulated at
  latent            (n, 9)    gold: hard-process z, columns `metadata["latent_names"]`
  nuisance          (n, 5)    gold: hadron-level ν ((n, 0) at the parton tier), `metadata["nuisance_names"]`
  matrix            (n, 4, 4) gold: H(z), |M|²(z; θ) = vᵀHv with v = (1, θ)
  joint_score       (n, p)    gold: t(x, z|θ)
  joint_log_ratio   (n,)      gold: log r(x, z|θ, θ_ref)
  theta_ref         (p,)
  metadata          ()        JSON string: simulator, version, tier, n_params, seed, settings_key
                              (of the cached normalization), pool_draws, pool_seed, column names
Load with `load_dataset(path)`; `LHCDataset.to_dataframe()` gives pandas columns.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from mflow_sbi.simulator import GoldData
from mflow_sbi.files import write_npz_atomically

GOLD_FIELDS = ("latent", "nuisance", "matrix", "joint_score", "joint_log_ratio")


@dataclass
class LHCGold(GoldData):
    """Gold data plus the LHC-specific latent pieces. `latent` is the hard process z (9);
    `nuisance` the hadron-level ν (5, empty at the parton tier); `matrix` H(z), from which
    `Morphing.benchmark_values` gives MadMiner's per-benchmark event weights."""

    nuisance: Tensor  # (batch, 5) or (batch, 0)
    matrix: Tensor  # (batch, 4, 4)


@dataclass
class LHCDataset:
    """Events, their θ, optional gold data (an `LHCGold`) and the metadata dictionary."""

    x: Tensor
    theta: Tensor
    gold: LHCGold | None
    metadata: dict

    def to_dataframe(self) -> pd.DataFrame:
        """Observables (named columns), θ (theta_1..), and where present the joint score
        (score_1..) and joint log ratio."""
        columns = {name: self.x[:, k].numpy() for k, name in enumerate(self.metadata["observable_names"])}
        columns |= {f"theta_{k + 1}": self.theta[:, k].numpy() for k in range(self.theta.shape[1])}
        if self.gold is not None:
            columns |= {f"score_{k + 1}": self.gold.joint_score[:, k].numpy() for k in range(self.theta.shape[1])}
            columns["joint_log_ratio"] = self.gold.joint_log_ratio.numpy()
        return pd.DataFrame(columns)


def dataset_arrays(dataset: LHCDataset) -> dict[str, np.ndarray]:
    """The arrays of `dataset`'s file (the format above), metadata as a JSON string."""
    arrays = {"x": dataset.x.numpy(), "theta": dataset.theta.numpy(), "metadata": np.array(json.dumps(dataset.metadata))}
    if dataset.gold is not None:
        arrays |= {name: getattr(dataset.gold, name).numpy() for name in GOLD_FIELDS}
        arrays["theta_ref"] = dataset.gold.theta_ref.numpy()
    return arrays


def save_dataset(path: str | os.PathLike, dataset: LHCDataset) -> Path:
    """Write `dataset` to `path` (".npz" appended if missing), atomically."""
    path = Path(path)
    path = path if path.suffix == ".npz" else path.with_name(path.name + ".npz")
    write_npz_atomically(path, dataset_arrays(dataset))
    return path


def load_dataset(path: str | os.PathLike) -> LHCDataset:
    """Read a data set written by `save_dataset`."""
    with np.load(Path(path), allow_pickle=False) as stored:
        metadata = json.loads(str(stored["metadata"]))
        gold = None
        if "joint_score" in stored:
            gold = LHCGold(
                **{name: torch.from_numpy(stored[name]) for name in GOLD_FIELDS},
                theta_ref=torch.from_numpy(stored["theta_ref"]),
            )
        return LHCDataset(torch.from_numpy(stored["x"]), torch.from_numpy(stored["theta"]), gold, metadata)
