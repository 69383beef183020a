"""segzoo.load(): one call from a zoo name, an hf:// URI or a folder to a Predictor.

One config wins: a model folder's config.json is the model's config for every runtime
(Keras and ONNX, fp32 and int8); the config embedded in an ONNX file serves a bare .onnx
file. zoo names and hf:// URIs fetch config.json with the ONNX file, so the same holds.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from segzoo.config import CONFIG_FILENAME, ONNX_FILENAMES, WEIGHTS_FILENAME, ModelConfig
from segzoo.errors import ConfigError, SegzooError
from segzoo.models.architectures import list_architectures
from segzoo.predict.predictor import Predictor
from segzoo.runtime.keras import keras_folder_runner
from segzoo.runtime.onnx import onnx_runner
from segzoo.runtime.onnx_format import read_segzoo_onnx

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "keras", "onnx")
PRECISIONS = tuple(ONNX_FILENAMES)


def _check_precision(precision: str, runtime: str) -> None:
    if precision not in PRECISIONS:
        raise SegzooError(f"unknown precision {precision!r}; valid precisions: {', '.join(PRECISIONS)}")
    if precision == "int8" and runtime not in ("auto", "onnx"):
        raise SegzooError(f"precision 'int8' runs on onnxruntime, not runtime {runtime!r}; "
                          "use runtime 'onnx' or 'auto'")


def _pick_runtime(runtime: str, has_onnx: bool) -> str:
    if runtime not in RUNTIMES:
        raise SegzooError(f"unknown runtime {runtime!r}; valid runtimes: {', '.join(RUNTIMES)}")
    if runtime != "auto":
        return runtime
    return "onnx" if has_onnx else "keras"


def folder_config(folder: Path) -> ModelConfig | None:
    """The folder's config.json, parsed and checked (a known architecture); None without one.
    ConfigError naming the file when it is corrupt or names an unknown architecture."""
    path = folder / CONFIG_FILENAME
    if not path.is_file():
        return None
    config = ModelConfig.load(path)
    if config.architecture not in list_architectures():
        raise ConfigError(f"{path}: unknown architecture {config.architecture!r}; "
                          f"valid architectures: {', '.join(list_architectures())}")
    return config


def predictor_from_folder(folder: Path, runtime: str, precision: str = "fp32") -> Predictor:
    """A Predictor for a model folder on `runtime` ('keras' or 'onnx'), configured by the
    folder's config.json (the ONNX file's embedded config only when the folder has none)."""
    config = folder_config(folder)
    if runtime == "onnx":
        filename = ONNX_FILENAMES[precision]
        if not (folder / filename).is_file():
            hint = ("create it with `segzoo export --quantize int8` or use precision 'fp32'" if precision == "int8"
                    else "create it with `segzoo export` or use --runtime keras")
            raise SegzooError(f"{folder}: no {filename} for the ONNX runtime; {hint}")
        return onnx_predictor(folder / filename, config, config_source=str(folder / CONFIG_FILENAME))
    if config is None:
        raise SegzooError(f"{folder}: no {CONFIG_FILENAME} for the Keras runtime")
    if not (folder / WEIGHTS_FILENAME).is_file():
        raise SegzooError(f"{folder}: no {WEIGHTS_FILENAME} for the Keras runtime")
    run, config = keras_folder_runner(folder)
    return Predictor(run, config, runtime="keras")


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
                   config_source: str = "the given config") -> Predictor:
    """A Predictor running the segzoo ONNX file `path` on onnxruntime.

    `config` (a model folder's config.json, named by `config_source` in messages) is the
    model's config when given; the config embedded in the file serves a bare .onnx file.
    Where both exist and differ in a field that changes the output, a WARNING names both
    and the fields, and `config` wins."""
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


def load(source: str | os.PathLike, *, runtime: str = "auto", revision: str | None = None,
         cache_dir: str | os.PathLike | None = None, precision: str = "fp32") -> Predictor:
    """A Predictor for `source`: a zoo name (see list_models()), 'hf://org/repo[@revision]',
    or a local model folder (config.json + model.weights.h5 and/or model.onnx).

    precision='int8' runs the model's int8 ONNX file (model.int8.onnx, shipped with the zoo
    models when its test Dice is within 0.005 of fp32) on onnxruntime: the fastest CPU path."""
    from segzoo import zoo

    _check_precision(precision, runtime)
    if precision == "int8":
        runtime = "onnx"
    text = os.fspath(source)
    if text.startswith("hf://"):
        repo_id, uri_revision = zoo.parse_hf_uri(text)
        rev = revision or uri_revision
        onnx_file = ONNX_FILENAMES[precision]
        try:
            # The repo's file list (or, offline, what is cached) decides 'auto', as the registry
            # does for a zoo name; config.json comes with the ONNX file when the repo has one.
            available = zoo.available_files(repo_id, [CONFIG_FILENAME, onnx_file], revision=rev,
                                            cache_dir=cache_dir)
            choice = _pick_runtime(runtime, has_onnx=onnx_file in available)
            files = ([CONFIG_FILENAME, WEIGHTS_FILENAME] if choice == "keras" else
                     [f for f in (CONFIG_FILENAME,) if f in available] + [onnx_file])
            folder = zoo.download_files(repo_id, files, revision=rev, cache_dir=cache_dir)
        except Exception as err:
            kind = zoo.hub_failure(err)
            if kind == "missing":
                raise SegzooError(f"hf://{repo_id}@{rev or 'main'}: not found or not authorised "
                                  f"({type(err).__name__}); check the repo id, revision and HF_TOKEN") from None
            if kind == "unreachable":
                raise SegzooError(f"hf://{repo_id}: the Hub cannot be reached and nothing is cached "
                                  f"({type(err).__name__}); check the network, HF_ENDPOINT or "
                                  "HF_HUB_OFFLINE") from None
            raise
        return predictor_from_folder(folder, choice, precision)
    path = Path(text)
    if path.is_dir():
        if not (path / CONFIG_FILENAME).is_file() and not (path / "model.onnx").is_file():
            raise SegzooError(f"{path}: not a model folder (no {CONFIG_FILENAME} or model.onnx)")
        return predictor_from_folder(path, _pick_runtime(runtime, (path / "model.onnx").is_file()), precision)
    if path.suffix == ".onnx" and path.is_file():
        if precision != "fp32":
            raise SegzooError(f"{path}: an .onnx file runs as it is; to run int8, pass the .int8.onnx "
                              "file itself (precision applies to zoo names, hf:// URIs and folders)")
        by_name = {filename: name for name, filename in ONNX_FILENAMES.items()}
        if path.name in by_name:  # a model folder's ONNX file: the folder's config.json applies
            return predictor_from_folder(path.parent, "onnx", by_name[path.name])
        return onnx_predictor(path)
    if path.exists() or os.sep in text or text.startswith("."):
        raise SegzooError(f"{text}: not a model folder, an .onnx file, a zoo name or an hf:// URI")
    entry = zoo.get_entry(text)
    choice = _pick_runtime(runtime, has_onnx=ONNX_FILENAMES["fp32"] in entry.files)
    if precision == "int8" and ONNX_FILENAMES["int8"] not in entry.files:
        raise SegzooError(f"{text}: the zoo has no int8 file for this model (its int8 copy did not keep "
                          "test Dice within 0.005 of fp32); use precision 'fp32'")
    folder = zoo.resolve_zoo(text, runtime=choice, revision=revision, cache_dir=cache_dir, precision=precision)
    return predictor_from_folder(folder, choice, precision)
