"""The segzoo ONNX file: one input "image" (float32 NHWC, normalised as the config says), one
output "probabilities", and metadata holding the model's config.json ("segzoo_config"), the
segzoo version that wrote it ("segzoo_version") and the sha256 of the graph itself
("segzoo_graph_sha256"), so a bare .onnx file is enough to predict, and a file altered after
export (or one segzoo did not export) is refused. sign() writes that metadata (export,
quantization), embed_config() replaces the config of a signed file (a release). Imports
neither TensorFlow nor Keras.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from segzoo.config import ModelConfig
from segzoo.errors import ModelError, OnnxModelError
from segzoo.io.files import atomic_write_bytes

INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
META_CONFIG = "segzoo_config"
META_VERSION = "segzoo_version"
META_GRAPH_SHA = "segzoo_graph_sha256"


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
        raise ModelError(f"{path}: cannot read ONNX file ({err.strerror or err})") from None
    try:
        model = onnx.load_model_from_string(data)
    except Exception as err:  # noqa: BLE001 -- protobuf DecodeError and friends
        raise OnnxModelError(f"{path}: not a valid ONNX file ({type(err).__name__}: {err})") from None
    meta = metadata(model)
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


def metadata(model) -> dict[str, str]:
    """{key: value} of an onnx ModelProto's metadata_props."""
    return {p.key: p.value for p in model.metadata_props}


def sign(model, config_json: str, *, version: str | None = None, extra: dict[str, str] | None = None) -> None:
    """Give an onnx ModelProto (in place) exactly the segzoo metadata: the config.json text, the
    segzoo version that made it (default: this one), the sha256 of its graph (computed now: sign
    after the last change to the graph) and the `extra` keys."""
    import onnx

    if version is None:
        from segzoo import __version__ as version
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, {META_CONFIG: config_json, META_VERSION: version,
                                        META_GRAPH_SHA: graph_sha256(model), **(extra or {})})


def embed_config(path: str | os.PathLike, config: ModelConfig) -> None:
    """Replace the config embedded in the segzoo ONNX file `path` with `config`, leaving the
    graph, its stored sha256 and every other metadata field as they are (atomic rewrite).
    Refuses (OnnxModelError) a file whose graph no longer matches its checksum."""
    import onnx

    path = Path(path)
    data, _ = read_segzoo_onnx(path)  # verifies the graph checksum
    model = onnx.load_model_from_string(data)
    before = graph_sha256(model)
    (prop,) = [p for p in model.metadata_props if p.key == META_CONFIG]
    prop.value = config.to_json()
    if graph_sha256(model) != before:
        raise OnnxModelError(f"{path}: rewriting the metadata changed the graph")
    atomic_write_bytes(path, model.SerializeToString())
    _, embedded = read_segzoo_onnx(path)
    if embedded.to_dict() != config.to_dict():
        raise OnnxModelError(f"{path}: the embedded config does not read back as written")
