"""Architecture registry: a name maps to a module that builds a Keras model.

Each architecture module defines
    DEFAULTS: dict          default keyword arguments of `build`
    build(**kwargs)         -> keras.Model (input "image", output "probabilities")
    stride(**kwargs)        -> int, input height/width must be a multiple of it
    PAPER: str              the reference the design follows

Modules are imported lazily, so listing names never imports Keras. This registry
holds code only; trained weights live in the zoo registry (segzoo.zoo).
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from segzoo.errors import ConfigError, UnknownNameError

_ARCHITECTURES: dict[str, str] = {
    "unet": "segzoo.models.architectures.unet",
    "segnet": "segzoo.models.architectures.segnet",
    "deeplabv3": "segzoo.models.architectures.deeplabv3",
}


def register_architecture(name: str, module: str) -> None:
    """Register a third-party architecture module (see this package's docstring)."""
    if name in _ARCHITECTURES and _ARCHITECTURES[name] != module:
        raise ValueError(f"architecture {name!r} is already registered to {_ARCHITECTURES[name]}")
    _ARCHITECTURES[name] = module


def list_architectures() -> list[str]:
    """Names accepted by create_model(), sorted."""
    return sorted(_ARCHITECTURES)


def get_architecture(name: str) -> ModuleType:
    """The module implementing architecture `name`."""
    if name not in _ARCHITECTURES:
        raise UnknownNameError(
            f"unknown architecture {name!r}; valid names: {', '.join(list_architectures())}"
        )
    return importlib.import_module(_ARCHITECTURES[name])


def resolve_kwargs(name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Defaults merged with `kwargs`; unknown keys raise an error listing the valid ones."""
    module = get_architecture(name)
    unknown = sorted(set(kwargs) - set(module.DEFAULTS))
    if unknown:
        raise ConfigError(
            f"architecture {name!r} got unknown argument(s) {unknown}; "
            f"valid arguments: {', '.join(sorted(module.DEFAULTS))}"
        )
    return {**module.DEFAULTS, **kwargs}


def create_model(name: str, **kwargs: Any):
    """Build an untrained Keras model; kwargs override the architecture's DEFAULTS."""
    module = get_architecture(name)
    return module.build(**resolve_kwargs(name, kwargs))


def model_stride(name: str, **kwargs: Any) -> int:
    """The multiple that input height and width must be padded to."""
    module = get_architecture(name)
    return int(module.stride(**resolve_kwargs(name, kwargs)))
