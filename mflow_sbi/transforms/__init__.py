"""Bijections with log-determinants, on top of zuko, and the manifold embedding."""

from mflow_sbi.transforms.coupling import RQSCoupling, RQSElementwise, VolumePreservingCoupling
from mflow_sbi.transforms.embedding import log_det_metric, pad, project
from mflow_sbi.transforms.flows import FlowConfig, build_flow
from mflow_sbi.transforms.linear import lu_linear, permutation

__all__ = ["FlowConfig", "RQSCoupling", "RQSElementwise", "build_flow", "log_det_metric", "lu_linear", "pad", "permutation", "project", "VolumePreservingCoupling"]

from mflow_sbi.transforms.image import (  # noqa: E402
    ImageFlow,
    ImageFlowConfig,
    check_images,
    dequantize,
    quantize,
)

__all__ += ["ImageFlow", "ImageFlowConfig", "check_images", "dequantize", "quantize"]
