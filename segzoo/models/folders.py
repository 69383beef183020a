"""Save and load model folders (config.json + model.weights.h5) with Keras."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from segzoo.config import CONFIG_FILENAME, WEIGHTS_FILENAME, ModelConfig
from segzoo.errors import ConfigError, ModelError, UsageError
from segzoo.models.architectures import create_model, model_stride


def build_from_config(config: ModelConfig):
    """An untrained Keras model for `config` (architecture + kwargs)."""
    return create_model(config.architecture, **config.architecture_kwargs)


def default_config(architecture: str, **kwargs) -> ModelConfig:
    """A ModelConfig whose pad_to_stride matches the architecture's stride."""
    config = ModelConfig(architecture=architecture, architecture_kwargs=dict(kwargs))
    config.preprocessing.pad_to_stride = model_stride(architecture, **kwargs)
    return config.validate()


def save_model(model, folder: str | os.PathLike, config: ModelConfig, *, overwrite: bool = False) -> Path:
    """Write config.json + model.weights.h5 into `folder`.

    Both files are written into a temporary sibling folder first and then moved
    into place, so a crash never leaves a half-written model. Existing files are
    replaced only with overwrite=True.
    """
    folder = Path(folder)
    config.validate()
    targets = [folder / CONFIG_FILENAME, folder / WEIGHTS_FILENAME]
    if not overwrite and any(t.exists() for t in targets):
        raise UsageError(f"{folder}: already holds a model; pass overwrite=True to replace it", argument="overwrite")
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder, prefix=".staging-"))
    try:
        # Keras 3 writes optimizer slots into .weights.h5 of a compiled, trained
        # model (3x the size with Adam); copy the weights into a fresh model.
        clean = build_from_config(config)
        clean.set_weights(model.get_weights())
        clean.save_weights(str(staging / WEIGHTS_FILENAME))
        config.save(staging / CONFIG_FILENAME)
        for target in targets:
            os.replace(staging / target.name, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def load_model(folder: str | os.PathLike):
    """(keras_model, ModelConfig) from a model folder; errors name the file at fault."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelError(f"{folder}: not a model folder (expected {CONFIG_FILENAME} and {WEIGHTS_FILENAME})")
    config = ModelConfig.load(folder / CONFIG_FILENAME)
    weights = folder / WEIGHTS_FILENAME
    if not weights.is_file():
        raise ModelError(f"{weights}: weights file is missing")
    try:
        model = build_from_config(config)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{folder / CONFIG_FILENAME}: cannot build {config.architecture!r}: {err}") from None
    try:
        model.load_weights(str(weights))
    except Exception as err:  # h5py/keras raise many types for corrupt or mismatched files
        raise ModelError(
            f"{weights}: cannot load weights into {config.architecture!r} "
            f"({type(err).__name__}: {err})") from None
    return model, config
