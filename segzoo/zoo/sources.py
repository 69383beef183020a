"""Where a model's files are: ONE place that turns a source (a zoo name, 'hf://org/repo[@rev]', a
model folder, an .onnx file or a bioimage.io package) into a local folder holding the files a runtime needs
(segzoo.zoo.registry.runtime_files), chooses the runtime for runtime='auto', and reads the
folder's config.json (folder_config).

A zoo name comes from the Hub (pinned revision, every file checked against its sha256), or
from the copy bundled inside the package when the Hub cannot be reached and nothing is cached,
does not hold the repo, or serves a file that fails its pin. An hf:// repo runs on onnxruntime
when it holds the ONNX file (its file list, or offline what is cached, decides), so the
TensorFlow-free install loads it. One config wins: a folder's config.json is the model's
config for every runtime and precision; zoo names and hf:// fetch it with the ONNX file. A bioimage.io
package (a zip, an rdf.yaml or a folder with one and no config.json) runs its ONNX weights on
onnxruntime in fp32 (segzoo.zoo.bioimageio reads it).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from segzoo.config import CONFIG_FILENAME, ONNX_FILENAMES, WEIGHTS_FILENAME, ModelConfig
from segzoo.errors import ChecksumError, ConfigError, ModelError, RunError, SegzooError, UnknownNameError, UsageError
from segzoo.models.architectures import list_architectures
from segzoo.zoo import hub, registry
from segzoo.zoo.bioimageio import is_package

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "keras", "onnx")
PRECISIONS = tuple(ONNX_FILENAMES)


def check_choice(runtime: str, precision: str) -> None:
    """UnknownNameError listing the valid values for an unknown runtime or precision, UsageError
    for int8 asked of the Keras runtime."""
    if runtime not in RUNTIMES:
        raise UnknownNameError(f"unknown runtime {runtime!r}; valid runtimes: {', '.join(RUNTIMES)}",
                               argument="runtime")
    if precision not in PRECISIONS:
        raise UnknownNameError(f"unknown precision {precision!r}; valid precisions: {', '.join(PRECISIONS)}",
                               argument="precision")
    if precision == "int8" and runtime not in ("auto", "onnx"):
        raise UsageError(f"precision 'int8' runs on onnxruntime, not runtime {runtime!r}; "
                         "use runtime 'onnx' or 'auto'", argument="runtime")


def choose_runtime(runtime: str, precision: str, has_onnx: bool) -> str:
    """The runtime that runs a model: int8 and 'auto' with the precision's ONNX file available
    run on onnxruntime ('onnx'), 'auto' without it on Keras; 'keras'/'onnx' as asked."""
    if precision == "int8" or (runtime == "auto" and has_onnx):
        return "onnx"
    return "keras" if runtime == "auto" else runtime


@dataclass(frozen=True)
class ResolvedModel:
    """A source resolved for one runtime: `folder` holds the files it needs; `onnx_file` is the
    file the ONNX runtime runs (None for Keras); `config` is the folder's config.json (None for
    a bare .onnx file, whose embedded config serves), named `config_source` in messages; `package` is a
    bioimage.io package (its rdf.yaml and ONNX weights are the model; onnx_file and config are None)."""

    folder: Path
    runtime: str
    onnx_file: Path | None
    config: ModelConfig | None
    config_source: str
    package: Path | None = None


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


def _in_folder(folder: Path, runtime: str, precision: str) -> ResolvedModel:
    """A model folder checked for `runtime`: its config.json (when it has one) and the runtime's files."""
    config = folder_config(folder)
    config_source = str(folder / CONFIG_FILENAME)
    if runtime == "onnx":
        filename = ONNX_FILENAMES[precision]
        if not (folder / filename).is_file():
            hint = ("create it with `segzoo export --quantize int8` or use precision 'fp32'" if precision == "int8"
                    else "create it with `segzoo export` or use runtime 'keras'")
            raise ModelError(f"{folder}: no {filename} for the ONNX runtime; {hint}",
                             argument="precision" if precision == "int8" else "runtime")
        return ResolvedModel(folder, "onnx", folder / filename, config, config_source)
    if config is None:
        raise ModelError(f"{folder}: no {CONFIG_FILENAME} for the Keras runtime")
    if not (folder / WEIGHTS_FILENAME).is_file():
        raise ModelError(f"{folder}: no {WEIGHTS_FILENAME} for the Keras runtime")
    return ResolvedModel(folder, "keras", None, config, config_source)


def _package(path: Path, runtime: str, precision: str) -> ResolvedModel:
    """A bioimage.io package, which runs its ONNX weights on onnxruntime in fp32."""
    if runtime not in ("auto", "onnx"):
        raise UsageError(f"{path}: a bioimage.io package runs its ONNX weights on onnxruntime; use runtime "
                         "'onnx' or 'auto'", argument="runtime")
    if precision != "fp32":
        raise UsageError(f"{path}: a bioimage.io package holds fp32 weights; use precision 'fp32'",
                         argument="precision")
    return ResolvedModel(path.parent if path.is_file() else path, "onnx", None, None, str(path), package=path)


def _from_hub(uri: str, runtime: str, precision: str, revision: str | None,
              cache_dir: str | os.PathLike | None) -> ResolvedModel:
    repo_id, uri_revision = parse_hf_uri(uri)
    rev = revision or uri_revision
    onnx_file = ONNX_FILENAMES[precision]
    try:
        # The repo's file list (or, offline, what is cached) decides 'auto', as the registry
        # does for a zoo name; config.json comes with the ONNX file when the repo has one.
        available = hub.available_files(repo_id, [CONFIG_FILENAME, onnx_file], revision=rev, cache_dir=cache_dir)
        choice = choose_runtime(runtime, precision, onnx_file in available)
        files = [f for f in registry.runtime_files(choice, precision)
                 if choice == "keras" or f != CONFIG_FILENAME or f in available]
        folder = hub.download_files(repo_id, files, revision=rev, cache_dir=cache_dir)
    except Exception as err:
        kind = hub.hub_failure(err)
        if kind == "missing":
            raise ModelError(f"hf://{repo_id}@{rev or 'main'}: not found or not authorised "
                             f"({type(err).__name__}); check the repo id, revision and HF_TOKEN") from None
        if kind == "unreachable":
            raise RunError(f"hf://{repo_id}: the Hub cannot be reached and nothing is cached "
                           f"({type(err).__name__}); check the network, HF_ENDPOINT or "
                           "HF_HUB_OFFLINE") from None
        raise
    return _in_folder(folder, choice, precision)


def resolve(source: str | os.PathLike, *, runtime: str = "auto", precision: str = "fp32",
            revision: str | None = None, cache_dir: str | os.PathLike | None = None) -> ResolvedModel:
    """The model `source` names, resolved for `runtime` ('auto', 'keras' or 'onnx') and
    `precision` ('fp32' or 'int8', which runs on onnxruntime): a zoo name (list_models()),
    'hf://org/repo[@revision]', a model folder (config.json + model.weights.h5 and/or
    model.onnx), an .onnx file or a bioimage.io package (a zip, an rdf.yaml, or a folder holding one
    and no config.json). Errors name the source and what is missing."""
    check_choice(runtime, precision)
    text = os.fspath(source)
    if text.startswith("hf://"):
        return _from_hub(text, runtime, precision, revision, cache_dir)
    path = Path(text)
    if is_package(path) and not (path / CONFIG_FILENAME).is_file():
        return _package(path, runtime, precision)
    if path.is_dir():
        if not (path / CONFIG_FILENAME).is_file() and not (path / ONNX_FILENAMES["fp32"]).is_file():
            raise ModelError(f"{path}: not a model folder (no {CONFIG_FILENAME} or model.onnx)")
        has_onnx = (path / ONNX_FILENAMES[precision]).is_file()
        return _in_folder(path, choose_runtime(runtime, precision, has_onnx), precision)
    if path.suffix == ".onnx" and path.is_file():
        if precision != "fp32":
            raise UsageError(f"{path}: an .onnx file runs as it is; to run int8, pass the .int8.onnx "
                             "file itself (precision applies to zoo names, hf:// URIs and folders)",
                             argument="precision")
        by_name = {filename: name for name, filename in ONNX_FILENAMES.items()}
        if path.name in by_name:  # a model folder's ONNX file: the folder's config.json applies
            return _in_folder(path.parent, "onnx", by_name[path.name])
        return ResolvedModel(path.parent, "onnx", path, None, str(path))
    if path.exists() or os.sep in text or text.startswith("."):
        raise UsageError(f"{text}: not a model folder, an .onnx file, a bioimage.io package, a zoo name or an "
                         "hf:// URI")
    entry = registry.get_entry(text)
    choice = choose_runtime(runtime, precision, ONNX_FILENAMES[precision] in entry.files)
    if precision == "int8" and ONNX_FILENAMES["int8"] not in entry.files:
        raise UsageError(f"{text}: the zoo has no int8 file for this model (its int8 copy did not keep "
                         "test Dice within 0.005 of fp32); use precision 'fp32'", argument="precision")
    folder = resolve_zoo(text, runtime=choice, revision=revision, cache_dir=cache_dir, precision=precision)
    return _in_folder(folder, choice, precision)


def model_folder(source: str | os.PathLike, *, revision: str | None = None,
                 cache_dir: str | os.PathLike | None = None) -> Path:
    """The Keras model folder (config.json + model.weights.h5) of a folder, zoo name or hf://
    URI: what training (--init-from, --settings-from), export and evaluation read. A folder
    is returned as it is (the Keras reader names what is missing); unknown names list the zoo."""
    if Path(source).is_dir():
        return Path(source)
    return resolve(source, runtime="keras", revision=revision, cache_dir=cache_dir).folder


def _bundled_verified(entry: registry.ZooEntry, runtime: str, precision: str = "fp32") -> Path:
    folder = registry.bundled_folder(entry.name)
    if folder is None:
        raise ModelError(f"{entry.name}: no bundled copy in this segzoo installation")
    for filename in entry.required_files(runtime, precision):
        if not (folder / filename).is_file():
            raise ModelError(f"{entry.name}: bundled copy lacks {filename}")
        hub.verify(folder / filename, entry.files[filename], f"{entry.name} (bundled)")
    return folder


def resolve_zoo(name: str, *, runtime: str = "keras", revision: str | None = None,
                cache_dir: str | os.PathLike | None = None, precision: str = "fp32") -> Path:
    """A local folder holding zoo model `name`'s verified files (Hub, else bundled).

    The bundled copy is used when the Hub cannot be reached and nothing is cached, when it
    does not hold the repo, or when a Hub file still fails its sha256 pin after a fresh
    download (a WARNING says so). The bundled copy is the registry's pinned revision: asking
    for another `revision` and getting it logs a WARNING naming both."""
    entry = registry.get_entry(name)
    files = entry.required_files(runtime, precision)
    if not files:
        raise UsageError(f"{name}: the zoo has no files for runtime {runtime!r}", argument="runtime")
    pinned = revision or entry.revision
    hub_error: ChecksumError | None = None
    try:
        return hub.download_files(entry.repo_id, files, revision=pinned, cache_dir=cache_dir, expected=entry.files)
    except ChecksumError as err:
        hub_error = err
        reason = (f"{err.path.name if err.path else 'a file'} from hf://{entry.repo_id}@{pinned or 'main'} "
                  f"failed its sha256 pin (expected {err.expected}, got {err.actual})")
    except Exception as err:
        kind = hub.hub_failure(err)
        if kind is None:
            raise
        reason = (f"the Hub does not hold hf://{entry.repo_id}@{pinned or 'main'} ({type(err).__name__})"
                  if kind == "missing" else
                  f"the Hub cannot be reached and nothing is cached ({type(err).__name__})")
    try:
        folder = _bundled_verified(entry, runtime, precision)
    except SegzooError as bundled_error:
        if hub_error is not None:
            raise ChecksumError(f"{hub_error}; the bundled copy cannot replace it ({bundled_error})",
                                path=hub_error.path, expected=hub_error.expected,
                                actual=hub_error.actual) from None
        if isinstance(bundled_error, ChecksumError):
            raise
        raise RunError(
            f"{name}: {reason}, and this installation has no bundled copy. Connect to the Hub "
            f"(or set HF_ENDPOINT to a mirror), or download hf://{entry.repo_id} elsewhere and pass "
            "its folder to segzoo.load().") from None
    message = f"{name}: {reason}; using the copy bundled with segzoo ({folder})"
    if revision is not None and revision != entry.revision:
        used = (f"the registry's pinned revision {entry.revision!r}" if entry.revision else
                "the files the registry pins by sha256 (no revision published yet)")
        log.warning("%s; revision %r was asked for, but the bundled copy is %s", message, revision, used)
    elif hub_error is not None:
        log.warning("%s, which matches the pins", message)
    else:
        log.info("%s", message)
    return folder


def parse_hf_uri(source: str) -> tuple[str, str | None]:
    """'hf://org/repo[@revision]' -> (repo_id, revision)."""
    body = source[len("hf://"):]
    repo_id, _, revision = body.partition("@")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise UsageError(f"{source!r}: expected hf://org/repo or hf://org/repo@revision")
    return repo_id, revision or None
