"""AF, PIE, M-flow, Me-flow and PAE (vectors) and their image versions behind one interface
(`ConditionalModel`), built from their configs by one registry."""

from typing import Any

from mflow_sbi.models.ambient import AmbientFlow
from mflow_sbi.models.base import ConditionalModel
from mflow_sbi.models.image import ImageAF, ImageMeFlow, ImageMFlow, ImageModel, ImagePIE
from mflow_sbi.models.mflow import MeFlow, MFlow
from mflow_sbi.models.pae import PAE
from mflow_sbi.models.pie import PIE

VECTOR_MODELS = (AmbientFlow, PIE, MFlow, MeFlow, PAE)
IMAGE_MODELS = (ImageAF, ImagePIE, ImageMFlow, ImageMeFlow)
MODELS: dict[str, type[ConditionalModel]] = {cls.name: cls for cls in VECTOR_MODELS + IMAGE_MODELS}


def build_model(config: dict[str, Any]) -> ConditionalModel:
    """A model from its `config` (as `model.config` returns it)."""
    config = dict(config)
    name = config.pop("model", None)
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    try:
        return MODELS[name](**config)
    except TypeError as error:
        raise ValueError(f"bad configuration for model {name!r}: {error}") from None


__all__ = [
    "IMAGE_MODELS", "MODELS", "VECTOR_MODELS", "AmbientFlow", "ConditionalModel", "ImageAF", "ImageMFlow", "ImageMeFlow",
    "ImageModel", "ImagePIE", "MFlow", "MeFlow", "PAE", "PIE", "build_model",
]  # fmt: skip
