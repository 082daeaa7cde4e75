"""AF, PIE, M-flow, Me-flow and PAE behind one interface (`ConditionalModel`)."""

from typing import Any

from mflow_sbi.models.ambient import AmbientFlow
from mflow_sbi.models.base import ConditionalModel
from mflow_sbi.models.image import IMAGE_MODELS, ImageAF, ImageMeFlow, ImageMFlow, ImageModel, ImagePIE, build_image_model
from mflow_sbi.models.mflow import MeFlow, MFlow
from mflow_sbi.models.pae import PAE
from mflow_sbi.models.pie import PIE

MODELS: dict[str, type[ConditionalModel]] = {cls.name: cls for cls in (AmbientFlow, PIE, MFlow, MeFlow, PAE)}


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


__all__ = ["MODELS", "AmbientFlow", "ConditionalModel", "MFlow", "MeFlow", "PAE", "PIE", "build_model"]
__all__ += ["IMAGE_MODELS", "ImageAF", "ImageMFlow", "ImageMeFlow", "ImageModel", "ImagePIE", "build_image_model"]
