"""mflow-sbi: simulation-based inference with manifold-learning flows."""

from mflow_sbi.models import MODELS, AmbientFlow, ConditionalModel, MeFlow, MFlow, PAE, PIE, build_model
from mflow_sbi.transforms import FlowConfig

__version__ = "0.1.0"
__all__ = ["MODELS", "AmbientFlow", "ConditionalModel", "FlowConfig", "MFlow", "MeFlow", "PAE", "PIE", "build_model"]
