"""The optional second weights format of a bioimage.io package (`segzoo export --format bioimageio
--saved-model`): a TensorFlow SavedModel of the Keras model, zipped, for consumers that run TensorFlow.

Keras 3 writes it (keras.export.ExportArchive) with one 'serve' endpoint that takes the normalised NHWC
image and returns {"probabilities": ...}: bioimageio.core's TensorFlow backend wants named outputs (a
plain `model.export` endpoint returns a bare tensor, and its test fails). bioimageio.core's test passes
for every zoo model with it. Needs Keras and TensorFlow (segzoo[keras]) and the model folder's weights.
"""

from __future__ import annotations

import io
import os
import tempfile
import zipfile
from pathlib import Path

from segzoo.config import WEIGHTS_FILENAME
from segzoo.errors import ModelError

SAVED_MODEL_FILE = "tf_saved_model.zip"


def keras_folder(source: str | os.PathLike) -> Path:
    """The Keras model folder (config.json + model.weights.h5) of a zoo name or model folder."""
    from segzoo.zoo.sources import model_folder

    folder = model_folder(source)
    if not (folder / WEIGHTS_FILENAME).is_file():
        raise ModelError(f"{folder}: no {WEIGHTS_FILENAME}; the TensorFlow SavedModel is exported from the Keras "
                         "weights (leave saved_model off to package model.onnx alone)", argument="saved_model")
    return folder


def saved_model_zip(folder: Path, input_id: str, output_id: str) -> tuple[bytes, str]:
    """(the SavedModel folder zipped, the TensorFlow version that wrote it) of the Keras model folder."""
    import keras
    import tensorflow as tf

    from segzoo.models.folders import load_model

    model, config = load_model(folder)
    spec = tf.TensorSpec((None, None, None, len(config.preprocessing.mean)), tf.float32, name=input_id)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", fn=lambda image: {output_id: model(image, training=False)}, input_signature=[spec])
    buffer = io.BytesIO()
    with tempfile.TemporaryDirectory(prefix="segzoo-savedmodel-") as tmp:
        archive.write_out(tmp, verbose=False)
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as out:
            for path in sorted(Path(tmp).rglob("*")):
                if path.is_file():
                    out.write(path, path.relative_to(tmp).as_posix())
    return buffer.getvalue(), tf.__version__
