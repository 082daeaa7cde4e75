"""The flow family behind the estimator protocol: AF, PIE, M-flow, Me-flow, PAE and the learnable-prior flow (paper 002), each one
composition of parts (`parts`: chart, density, encoder, decoder) for vectors and images alike,
registered by name in `mflow_sbi.registry`."""

from mflow_sbi.models.ambient import AmbientFlow
from mflow_sbi.models.flow import ManifoldFlow
from mflow_sbi.models.learnable_prior import LearnablePriorFlow
from mflow_sbi.models.mflow import MeFlow, MFlow
from mflow_sbi.models.pae import PAE
from mflow_sbi.models.parts import Chart, DegenerateGaussian, Density, StandardNormal
from mflow_sbi.models.pie import PIE

FLOW_MODELS = (AmbientFlow, PIE, MFlow, MeFlow, PAE, LearnablePriorFlow)

__all__ = ["FLOW_MODELS", "PAE", "PIE", "AmbientFlow", "Chart", "DegenerateGaussian", "Density", "LearnablePriorFlow", "MFlow", "ManifoldFlow", "MeFlow", "StandardNormal"]
