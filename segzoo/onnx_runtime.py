"""TensorFlow-free inference with onnxruntime.

A segzoo ONNX file carries its config.json in the metadata (key
"segzoo_config") plus the sha256 of the graph itself ("segzoo_graph_sha256"),
so a bare .onnx file is enough to predict, and a file altered after export (or
one segzoo did not export) is refused. This module imports neither TensorFlow
nor Keras.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np

from segzoo.config import ModelConfig
from segzoo.errors import SegzooError

INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
META_CONFIG = "segzoo_config"
META_VERSION = "segzoo_version"
META_GRAPH_SHA = "segzoo_graph_sha256"

log = logging.getLogger(__name__)


class OnnxModelError(SegzooError):
    """An ONNX file that is not a segzoo export, or was altered after export."""


def graph_sha256(model) -> str:
    """sha256 of an onnx ModelProto with its metadata removed (what export signs)."""
    import onnx

    clone = onnx.ModelProto()
    clone.CopyFrom(model)
    del clone.metadata_props[:]
    return hashlib.sha256(clone.SerializeToString(deterministic=True)).hexdigest()


def read_segzoo_onnx(path: str | os.PathLike, *, verify: bool = True) -> tuple[bytes, ModelConfig]:
    """(model bytes, config) of a segzoo ONNX file; OnnxModelError if foreign or altered."""
    import onnx

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise SegzooError(f"{path}: cannot read ONNX file ({err.strerror or err})") from None
    try:
        model = onnx.load_model_from_string(data)
    except Exception as err:  # noqa: BLE001 -- protobuf DecodeError and friends
        raise OnnxModelError(f"{path}: not a valid ONNX file ({type(err).__name__}: {err})") from None
    meta = {p.key: p.value for p in model.metadata_props}
    if META_CONFIG not in meta:
        raise OnnxModelError(
            f"{path}: not a segzoo export (no '{META_CONFIG}' metadata); export it with "
            "`segzoo export`, or load the Keras model folder instead")
    if verify:
        expected = meta.get(META_GRAPH_SHA)
        actual = graph_sha256(model)
        if expected != actual:
            raise OnnxModelError(
                f"{path}: graph does not match the checksum stored at export (stored {expected}, "
                f"computed {actual}); the file was modified after export, refusing to load it")
    config = ModelConfig.from_json(meta[META_CONFIG], source=f"{path} (metadata)")
    return data, config


def onnx_runner(model_bytes: bytes, *, threads: int | None = None):
    """A BatchRunner over an onnxruntime CPU session."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(model_bytes, sess_options=options, providers=["CPUExecutionProvider"])

    def run(batch: np.ndarray) -> np.ndarray:
        return session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(batch, dtype=np.float32)})[0]

    run.session = session  # type: ignore[attr-defined]
    return run


OUTPUT_SECTIONS = ("architecture", "architecture_kwargs", "preprocessing", "postprocessing", "inference",
                   "resolution")  # config fields that change a prediction (not name, provenance)


def config_differences(first: ModelConfig, second: ModelConfig) -> list[str]:
    """'field: first value != second value' for each OUTPUT_SECTIONS field (or subfield) that differs."""
    a, b = first.to_dict(), second.to_dict()
    differences = []
    for section in OUTPUT_SECTIONS:
        if isinstance(a[section], dict) and isinstance(b[section], dict):
            for key in sorted(set(a[section]) | set(b[section])):
                if a[section].get(key) != b[section].get(key):
                    differences.append(f"{section}.{key}: {a[section].get(key)!r} != {b[section].get(key)!r}")
        elif a[section] != b[section]:
            differences.append(f"{section}: {a[section]!r} != {b[section]!r}")
    return differences


def onnx_predictor(path: str | os.PathLike, config: ModelConfig | None = None, *,
                   config_source: str = "the given config"):
    """A Predictor running the segzoo ONNX file `path` on onnxruntime.

    `config` (a model folder's config.json, named by `config_source` in messages) is the
    model's config when given; the config embedded in the file serves a bare .onnx file.
    Where both exist and differ in a field that changes the output, a WARNING names both
    and the fields, and `config` wins."""
    from segzoo.predictor import Predictor

    path = Path(path)
    data, embedded = read_segzoo_onnx(path)
    if config is None:
        config = embedded
    else:
        differences = config_differences(config, embedded)
        if differences:
            log.warning("%s and the config embedded in %s disagree (%s); using %s", config_source, path,
                        "; ".join(differences), config_source)
    return Predictor(onnx_runner(data), config, runtime="onnx")
