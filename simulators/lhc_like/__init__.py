"""LHC-like W-boson-fusion Higgs simulator (spec `shared/specs/lhc_like.md`)."""

from simulators.lhc_like.dataset import LHCDataset, load_dataset, save_dataset
from simulators.lhc_like.kinematics import OBSERVABLE_NAMES, signed_delta_phi_jj
from simulators.lhc_like.morphing import Morphing
from simulators.lhc_like.simulator import TIERS, LHCGold, LHCLike

__all__ = [
    "LHCDataset", "LHCGold", "LHCLike", "Morphing", "OBSERVABLE_NAMES", "TIERS",
    "load_dataset", "save_dataset", "signed_delta_phi_jj",
]  # fmt: skip
