"""The Keras runtime: a BatchRunner around a Keras model, and the check that Keras is installed.

The only module of the inference path that imports Keras, and only inside its functions: the
TensorFlow-free install imports this module freely and gets a clear MissingDependencyError when it asks
for the Keras runtime."""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from segzoo.config import ModelConfig
from segzoo.errors import MissingDependencyError


def keras_runner(model) -> Callable[[np.ndarray], np.ndarray]:
    """A BatchRunner around a Keras model (inference mode, float32 numpy out)."""

    def run(batch: np.ndarray) -> np.ndarray:
        return np.asarray(model(batch, training=False), dtype=np.float32)

    return run


def require_keras(what: str) -> None:
    """Raise a MissingDependencyError naming the extra to install when Keras or its backend is missing.

    Keras imports its configured backend (KERAS_BACKEND, TensorFlow by default), so the import
    is the check: training on JAX or PyTorch needs no TensorFlow."""
    try:
        import keras  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(f"{what} needs Keras and its backend ({exc}): pip install 'segzoo[keras]' "
                                     "for TensorFlow, or set KERAS_BACKEND=jax/torch with that installed "
                                     "(or use the ONNX runtime, which needs neither)") from None


def keras_folder_runner(folder: str | os.PathLike) -> tuple[Callable[[np.ndarray], np.ndarray], ModelConfig]:
    """(runner, config) of a Keras model folder (config.json + model.weights.h5, built by
    segzoo.models); a MissingDependencyError naming the extra when Keras is not installed."""
    require_keras("the Keras runtime")
    from segzoo.models.folders import load_model

    model, config = load_model(folder)
    return keras_runner(model), config
