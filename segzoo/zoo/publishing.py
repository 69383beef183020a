"""Validate a zoo folder, publish it to the Hugging Face Hub (`segzoo publish`, optionally with its
bioimage.io package beside the model), and pin its files in the zoo registry (after a publish, or a
release: scripts/release.py).

Imports no Keras: loading the weights to check them is the caller's (the CLI passes
segzoo.models.folders.load_model as `check_weights`)."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from segzoo.config import CONFIG_FILENAME, ONNX_FILENAMES, WEIGHTS_FILENAME, ModelConfig
from segzoo.errors import ModelError
from segzoo.io.files import atomic_write_text
from segzoo.runtime.onnx_format import read_segzoo_onnx
from segzoo.zoo.cards import card_metrics
from segzoo.zoo.hub import sha256_of
from segzoo.zoo.registry import registry_path

log = logging.getLogger(__name__)

CARD_FILENAME = "README.md"
REQUIRED_CARD_FIELDS = {"license": "cc-by-nc-sa-4.0", "library_name": "keras", "pipeline_tag": "image-segmentation"}

RELEASE_FILES = (CONFIG_FILENAME, WEIGHTS_FILENAME, *ONNX_FILENAMES.values())
"""The files of a zoo folder the registry pins (the rest: card, metrics, logs, figure)."""
BIOIMAGEIO_SUFFIX = ".bioimageio.zip"  # `segzoo publish --bioimageio`: the package beside the model


def validate_folder(folder: str | Path, *, check_weights: Callable[[Path], object] | None = None) -> dict:
    """Check that a zoo folder is publishable; returns {filename: sha256}. Errors name the file.

    `check_weights(folder)` loads the weights (segzoo.models.folders.load_model); without it
    only their presence is checked."""
    from huggingface_hub import ModelCard

    folder = Path(folder)
    if not folder.is_dir():
        raise ModelError(f"{folder}: not a folder")
    config = ModelConfig.load(folder / CONFIG_FILENAME)
    if not (folder / WEIGHTS_FILENAME).is_file():
        raise ModelError(f"{folder / WEIGHTS_FILENAME}: missing")
    if check_weights is not None:
        check_weights(folder)
    for filename in ONNX_FILENAMES.values():
        if (folder / filename).is_file():
            read_segzoo_onnx(folder / filename)
    card_path = folder / CARD_FILENAME
    if not card_path.is_file():
        raise ModelError(f"{card_path}: model card missing")
    try:
        card = ModelCard.load(card_path)
    except Exception as err:  # noqa: BLE001 -- the YAML parser's errors and huggingface_hub's own
        raise ModelError(f"{card_path}: card metadata does not parse ({type(err).__name__}: {err})") from None
    meta = card.data.to_dict()
    for key, value in REQUIRED_CARD_FIELDS.items():
        if meta.get(key) != value:
            raise ModelError(f"{card_path}: metadata {key!r} must be {value!r}, found {meta.get(key)!r}")
    metrics_path = folder / "metrics.json"
    if metrics_path.is_file():
        metrics = json.loads(metrics_path.read_text())
        expected = {"dice": metrics["micro"]["dice"], "iou": metrics["micro"]["iou"]}
        if "aji" in metrics["mean"]:
            expected["aji"] = metrics["mean"]["aji"]
        found = card_metrics(card.data)
        for key, value in expected.items():
            if key not in found or abs(found[key] - round(value, 4)) > 1e-9:
                raise ModelError(f"{card_path}: model-index {key} = {found.get(key)} but metrics.json says "
                                 f"{round(value, 4)}; regenerate the card")
    if config.name and config.name != folder.name:
        log.warning("%s: config name %r differs from the folder name", folder, config.name)
    return {p.name: sha256_of(p) for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")}


def bioimageio_filename(folder: str | Path) -> str:
    """The name a zoo folder's bioimage.io package gets beside the model in its Hub repo."""
    return f"{Path(folder).name}{BIOIMAGEIO_SUFFIX}"


def check_bioimageio_package(folder: str | Path, package: str | Path) -> None:
    """ModelError unless `package` is a bioimage.io package of this zoo folder: its config.segzoo is the
    folder's config.json and its ONNX weights are the folder's model.onnx (read with PyYAML, no network)."""
    from segzoo.zoo.bioimageio import read_package

    folder, package = Path(folder), Path(package)
    model = read_package(package)
    if model.config.to_dict() != ModelConfig.load(folder / CONFIG_FILENAME).to_dict():
        raise ModelError(f"{package}: config.segzoo is not {folder / CONFIG_FILENAME}; rebuild the package")
    onnx_path = folder / ONNX_FILENAMES["fp32"]
    if not onnx_path.is_file() or hashlib.sha256(model.onnx).hexdigest() != sha256_of(onnx_path):
        raise ModelError(f"{package}: its ONNX weights are not {onnx_path}; rebuild the package")


def publish(folder: str | Path, repo_id: str, *, private: bool = False, revision: str | None = None,
            dry_run: bool = False, api=None, check_weights: Callable[[Path], object] | None = None,
            bioimageio_package: str | Path | None = None) -> dict:
    """Upload every file of a validated folder to `repo_id` in one commit; with `bioimageio_package`
    (segzoo.export.bioimageio's zip of this folder, checked by check_bioimageio_package) also that
    package, as <name>.bioimageio.zip beside the model.

    Returns {"repo_id", "revision", "commit_url", "files"}: the values to pin in
    segzoo/zoo_registry.json (files: the folder's, and the package's when given). With dry_run
    nothing is sent.
    """
    files = validate_folder(folder, check_weights=check_weights)
    if bioimageio_package is not None:
        check_bioimageio_package(folder, bioimageio_package)
        files[bioimageio_filename(folder)] = sha256_of(bioimageio_package)
    result = {"repo_id": repo_id, "revision": None, "commit_url": None, "files": files}
    if dry_run:
        return result
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    if revision:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="segzoo-publish-") as staging:
        upload = Path(folder)
        if bioimageio_package is not None:  # one commit: the folder's files and the package, staged together
            upload = Path(staging) / Path(folder).name
            shutil.copytree(folder, upload, ignore=shutil.ignore_patterns(".*"))
            shutil.copy2(bioimageio_package, upload / bioimageio_filename(folder))
        info = api.upload_folder(repo_id=repo_id, folder_path=str(upload), revision=revision,
                                 commit_message=f"segzoo publish {Path(folder).name}",
                                 ignore_patterns=[".*"], repo_type="model")
    result["revision"] = info.oid
    result["commit_url"] = info.commit_url
    return result


def update_registry(name: str, result: dict, registry_file: str | Path | None = None) -> Path:
    """Pin `result` (from publish) as zoo model `name` in the registry JSON."""
    path = Path(registry_file) if registry_file is not None else registry_path()
    data = json.loads(path.read_text())
    entry = data["models"].get(name, {})
    config = json.loads((Path(result.get("folder", "")) / CONFIG_FILENAME).read_text()) \
        if result.get("folder") else {}
    entry.update(repo_id=result["repo_id"], revision=result["revision"],
                 files={k: v for k, v in result["files"].items() if k in RELEASE_FILES})
    if config:
        entry.setdefault("architecture", config.get("architecture", ""))
    data["models"][name] = entry
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
    return path



def magnification(folder: str | Path) -> str:
    """'40x' / '20x' (10 / resolution.mpp, the scanners' convention) of a zoo folder's config.json, or
    'scale unknown' without a resolution."""
    mpp = ModelConfig.load(folder).resolution.mpp
    return "scale unknown" if mpp is None else f"{round(10.0 / mpp)}x"


def pin_release(folder: str | Path, name: str, *, architecture: str, repo_id: str | None = None,
                registry_file: str | Path | None = None) -> Path:
    """Pin the sha256 of each released file of zoo folder `folder` (RELEASE_FILES present) as zoo
    model `name`; the Hub revision is kept only while the files are unchanged (a changed file
    has to be published again). Returns the registry file."""
    folder = Path(folder)
    path = Path(registry_file) if registry_file is not None else registry_path()
    registry = json.loads(path.read_text())
    files = {f: sha256_of(folder / f) for f in RELEASE_FILES if (folder / f).is_file()}
    previous = registry["models"].get(name, {})
    registry["models"][name] = {
        "repo_id": repo_id or previous.get("repo_id") or f"segzoo/{name}",
        "revision": previous.get("revision") if previous.get("files") == files else None,
        "files": files, "architecture": architecture,
        "license": "cc-by-nc-sa-4.0",
        "description": f"{architecture} trained on MoNuSeg 2018 (H&E nuclei, {magnification(folder)})"}
    atomic_write_text(path, json.dumps(registry, indent=2) + "\n")
    return path
