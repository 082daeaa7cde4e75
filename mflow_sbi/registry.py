"""One registry of estimators: name -> class, used to build from configs and to load checkpoints.

Estimator classes register themselves with `@register`; importing `mflow_sbi` imports every
built-in family, so the registry is complete wherever the library is used.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mflow_sbi.estimator import Estimator

ESTIMATORS: dict[str, type[Estimator]] = {}


def register(cls: type[Estimator]) -> type[Estimator]:
    """Class decorator: make `cls` buildable by its `name`."""
    if cls.name in ESTIMATORS and ESTIMATORS[cls.name] is not cls:
        raise ValueError(f"an estimator named {cls.name!r} is already registered ({ESTIMATORS[cls.name].__qualname__})")
    ESTIMATORS[cls.name] = cls
    return cls


def estimator_arguments(name: str) -> list[str]:
    """The constructor arguments of the estimator registered as `name`."""
    return [p for p in inspect.signature(estimator_class(name).__init__).parameters if p != "self"]


def estimator_class(name: str) -> type[Estimator]:
    """The class registered as `name`, or a `ValueError` listing the names."""
    if name not in ESTIMATORS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(ESTIMATORS)}")
    return ESTIMATORS[name]


def build_estimator(config: dict[str, Any]) -> Estimator:
    """An estimator from its `config` (as `estimator.config` returns it: {"model": name, ...})."""
    config = dict(config)
    cls = estimator_class(config.pop("model", None))
    unknown = sorted(set(config) - set(estimator_arguments(cls.name)))
    if unknown:
        raise ValueError(f"bad configuration for model {cls.name!r}: unknown arguments {unknown}; it takes {estimator_arguments(cls.name)}")
    try:
        return cls(**config)
    except TypeError as error:
        raise ValueError(f"bad configuration for model {cls.name!r}: {error}") from None
