"""mflow-sbi: simulation-based inference with manifold-learning flows.

The trained `Estimator` is the unit (`mflow_sbi.estimator`); every family registers itself in
`mflow_sbi.registry` when this package is imported, so checkpoints and configs of any of them load.
"""

from mflow_sbi.baselines import RatioEstimator
from mflow_sbi.estimator import Estimator, ObservedLikelihood
from mflow_sbi.models import PAE, PIE, AmbientFlow, MeFlow, MFlow
from mflow_sbi.registry import ESTIMATORS, build_estimator
from mflow_sbi.standardization import Standardization
from mflow_sbi.transforms import FlowConfig, ImageFlowConfig

__version__ = "0.1.0"
__all__ = [
    "ESTIMATORS", "PAE", "PIE", "AmbientFlow", "Estimator", "FlowConfig", "ImageFlowConfig", "MFlow", "MeFlow",
    "ObservedLikelihood", "RatioEstimator", "Standardization", "build_estimator",
]  # fmt: skip
