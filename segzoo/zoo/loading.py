"""segzoo.load(): one call from a zoo name, an hf:// URI, a model folder, an .onnx file or a bioimage.io
package to a Predictor. segzoo.zoo.sources finds the files and chooses the runtime; this module builds the
runtime's runner (segzoo.runtime) and hands it to the Predictor (segzoo.predict).

One config wins: a model folder's config.json is the model's config for every runtime
(Keras and ONNX, fp32 and int8); the config embedded in an ONNX file serves a bare .onnx
file. Where both exist and differ in a field that changes the output, a WARNING names both.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from segzoo.config import ModelConfig
from segzoo.predict.predictor import Predictor
from segzoo.predict.source import ModelSource
from segzoo.runtime.keras import keras_folder_runner
from segzoo.runtime.onnx import onnx_runner
from segzoo.runtime.onnx_format import read_segzoo_onnx
from segzoo.zoo.bioimageio import package_predictor
from segzoo.zoo.sources import PRECISIONS, RUNTIMES, resolve

log = logging.getLogger(__name__)

__all__ = ["PRECISIONS", "RUNTIMES", "config_differences", "load", "onnx_predictor"]

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
                   config_source: str = "the given config", threads: int | None = None,
                   source: ModelSource | None = None) -> Predictor:
    """A Predictor running the segzoo ONNX file `path` on onnxruntime.

    `config` (a model folder's config.json, named by `config_source` in messages) is the
    model's config when given; the config embedded in the file serves a bare .onnx file.
    Where both exist and differ in a field that changes the output, a WARNING names both
    and the fields, and `config` wins. threads: onnxruntime intra-op threads (None: its default);
    source: the ModelSource recorded on the Predictor."""
    path = Path(path)
    data, embedded = read_segzoo_onnx(path)
    if config is None:
        config = embedded
    else:
        differences = config_differences(config, embedded)
        if differences:
            log.warning("%s and the config embedded in %s disagree (%s); using %s", config_source, path,
                        "; ".join(differences), config_source)
    return Predictor(onnx_runner(data, threads=threads), config, runtime="onnx", source=source)


def load(source: str | os.PathLike, *, runtime: str = "auto", revision: str | None = None,
         cache_dir: str | os.PathLike | None = None, precision: str = "fp32",
         threads: int | None = None) -> Predictor:
    """A Predictor for `source`: a zoo name (see list_models()), 'hf://org/repo[@revision]',
    a local model folder (config.json + model.weights.h5 and/or model.onnx), an .onnx file or a bioimage.io
    package ("PKG.zip", "rdf.yaml" or its folder: ONNX weights on onnxruntime, see segzoo.zoo.bioimageio).

    runtime: 'auto' (onnxruntime when the model has the ONNX file, else Keras), 'keras' or
    'onnx'. precision='int8' runs the model's int8 ONNX file (model.int8.onnx, shipped with the
    zoo models when its test Dice is within 0.005 of fp32) on onnxruntime: the fastest CPU path.
    threads: onnxruntime intra-op threads (None: onnxruntime's default, every core). The Predictor
    records what it was loaded from (Predictor.source, a ModelSource)."""
    model = resolve(source, runtime=runtime, precision=precision, revision=revision, cache_dir=cache_dir)
    text = os.fspath(source)
    if not text.startswith("hf://") and os.path.exists(text):
        text = os.path.abspath(text)  # Dask workers may run in other folders
    if revision and text.startswith("hf://") and "@" not in text:
        text = f"{text}@{revision}"
    origin = ModelSource(text, precision, model.runtime)
    if model.package is not None:
        return package_predictor(model.package, threads=threads, source=origin)
    if model.runtime == "onnx":
        return onnx_predictor(model.onnx_file, model.config, config_source=model.config_source, threads=threads,
                              source=origin)
    run, config = keras_folder_runner(model.folder)
    return Predictor(run, config, runtime="keras", source=origin)
