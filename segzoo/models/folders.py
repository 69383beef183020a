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


_MISSING = object()  # an architecture argument a config does not set


def copy_weights_by_name(source, target, *, argument: str | None = None) -> None:
    """Copy `source`'s weights into `target` layer by layer, matched by name (not by order, as
    model.load_weights goes); every layer of `source` with weights must exist in `target` with the
    same shapes (ModelError naming the layer, with `argument`: the option that named `source`).
    Layers only `target` has keep their initialisation."""
    target_layers = {layer.name: layer for layer in target.layers}
    for layer in source.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        other = target_layers.get(layer.name)
        if other is None or [w.shape for w in other.get_weights()] != [w.shape for w in weights]:
            raise ModelError(f"layer {layer.name!r} of the source model has no counterpart of the same shape in "
                             "the model it is copied into", argument=argument)
        other.set_weights(weights)


def rebuild_model(folder: str | os.PathLike, arch_kwargs: dict, *, command: str | None = None):
    """(keras model, ModelConfig): the model folder's network rebuilt with `arch_kwargs` changed,
    holding the same weights (copy_weights_by_name), e.g. DeepLabV3's image-pooling context swapped
    for the translation-equivariant window (`{"context": "window"}`), whose branch has the same
    weights. Nothing is trained; the config keeps everything else (preprocessing, post-processing,
    scale) and records the change in provenance["rebuilt"] (`command`: what ran it; the git commit of
    this checkout, since a zoo folder is usually rebuilt into itself).
    UsageError when `arch_kwargs` is empty or changes nothing; ModelError when a layer's weights
    have no place in the rebuilt network (an argument that changes the weights' shapes)."""
    from segzoo.provenance import git_commit, portable_path

    source, config = load_model(folder)
    if not isinstance(arch_kwargs, dict) or not arch_kwargs:
        raise UsageError("give the architecture arguments to change, e.g. {\"context\": \"window\"}",
                         argument="arch_kwargs")
    before = dict(config.architecture_kwargs)
    changed = {k: v for k, v in arch_kwargs.items() if before.get(k, _MISSING) != v}
    if not changed:
        raise UsageError(f"arch_kwargs {arch_kwargs} change nothing in {folder} ({before})", argument="arch_kwargs")
    config.architecture_kwargs = {**before, **arch_kwargs}
    try:
        model = build_from_config(config)
    except (TypeError, ValueError) as err:
        raise UsageError(f"cannot build {config.architecture!r} with {config.architecture_kwargs}: {err}",
                         argument="arch_kwargs") from None
    copy_weights_by_name(source, model, argument="arch_kwargs")
    commit, _ = git_commit()  # the checkout `folder` was read from (a zoo folder is rebuilt in place)
    config.provenance["rebuilt"] = {"from": portable_path(Path(folder)), "source_commit": commit,
                                    "architecture_kwargs_before": before,
                                    "changed": changed, "command": command,
                                    "note": "weights copied by layer name; no training"}
    return model, config


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
