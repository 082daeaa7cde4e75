"""The flow family behind the estimator protocol: AF, PIE, M-flow, Me-flow, PAE, the learnable-prior flow (paper 002), and
the pixel-rejection / hierarchical flow and DNF (paper 003), each one
composition of parts (`parts`: chart, density, encoder, decoder) for vectors and images alike,
registered by name in `mflow_sbi.registry`."""

from mflow_sbi.models.ambient import AmbientFlow
from mflow_sbi.models.flow import ManifoldFlow
from mflow_sbi.models.learnable_prior import LearnablePriorFlow
from mflow_sbi.models.mflow import MeFlow, MFlow
from mflow_sbi.models.pae import PAE
from mflow_sbi.models.parts import Chart, DegenerateGaussian, Density, StandardNormal
from mflow_sbi.models.penalized import DenoisingFlow, PixelRejectionFlow, StackedChart
from mflow_sbi.models.pie import PIE

FLOW_MODELS = (AmbientFlow, PIE, MFlow, MeFlow, PAE, LearnablePriorFlow, PixelRejectionFlow, DenoisingFlow)

__all__ = [
    "FLOW_MODELS", "PAE", "PIE", "AmbientFlow", "Chart", "DegenerateGaussian", "DenoisingFlow", "Density", "LearnablePriorFlow", "MFlow",
    "ManifoldFlow", "MeFlow", "PixelRejectionFlow", "StackedChart", "StandardNormal",
]  # fmt: skip
