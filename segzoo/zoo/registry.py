"""The zoo registry: named, trained models and the files that make them.

This registry holds weights, not code: each name maps to a Hugging Face Hub repo, a pinned
revision and the sha256 of every file it needs (segzoo/zoo_registry.json, written by
`segzoo publish --update-registry` and scripts/release.py; it stays at the package's top
with the other package data, bundled/ and samples/). Architectures live in
segzoo.models.architectures. A copy of every zoo folder ships inside the package
(segzoo/bundled/<name>/) for offline use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from segzoo.config import CONFIG_FILENAME, ONNX_FILENAMES, WEIGHTS_FILENAME
from segzoo.errors import UnknownNameError

REGISTRY_FILE = "zoo_registry.json"


def runtime_files(runtime: str, precision: str = "fp32") -> list[str]:
    """The files of a model folder a runtime reads: Keras needs config.json + model.weights.h5;
    ONNX needs config.json (the model's config for every runtime) + the ONNX file of
    `precision` (model.onnx, model.int8.onnx)."""
    return [CONFIG_FILENAME, WEIGHTS_FILENAME if runtime == "keras" else ONNX_FILENAMES[precision]]


@dataclass(frozen=True)
class ZooEntry:
    name: str
    repo_id: str
    revision: str | None
    files: dict[str, str] = field(default_factory=dict)  # filename -> sha256
    architecture: str = ""
    license: str = "cc-by-nc-sa-4.0"
    description: str = ""

    def required_files(self, runtime: str, precision: str = "fp32") -> list[str]:
        """The runtime_files(runtime, precision) this zoo model has."""
        return [f for f in runtime_files(runtime, precision) if f in self.files]


def registry_path() -> Path:
    """The registry file of this segzoo (in a checkout: the one scripts and publish update)."""
    return Path(str(resources.files("segzoo").joinpath(REGISTRY_FILE)))


def _registry() -> dict[str, ZooEntry]:
    data = json.loads(registry_path().read_text(encoding="utf-8"))
    return {name: ZooEntry(name=name, **entry) for name, entry in data["models"].items()}


def list_models() -> list[str]:
    """Zoo names accepted by segzoo.load()."""
    return sorted(_registry())


def get_entry(name: str) -> ZooEntry:
    registry = _registry()
    if name not in registry:
        raise UnknownNameError(
            f"unknown zoo model {name!r}; available: {', '.join(sorted(registry)) or '(none)'}. "
            "Pass a model folder or 'hf://org/repo' to load something else.")
    return registry[name]


def bundled_folder(name: str) -> Path | None:
    """The copy of zoo model `name` shipped inside the package, if any."""
    folder = Path(str(resources.files("segzoo").joinpath("bundled", name)))
    return folder if (folder / CONFIG_FILENAME).is_file() else None


def models_at(mpp: float, tolerance: float = 0.1) -> list[str]:
    """Zoo models trained at about `mpp` microns per pixel: those whose config's resolution.mpp is
    within `tolerance` (relative, 0.1: 10%) of it, sorted. Read from the configs bundled with segzoo
    (segzoo/bundled/<name>/config.json): nothing is downloaded and no weights are loaded; a model
    with no bundled copy or no resolution is left out."""
    found = []
    for name in list_models():
        folder = bundled_folder(name)
        try:
            config = json.loads((folder / CONFIG_FILENAME).read_text(encoding="utf-8")) if folder else {}
        except (OSError, ValueError):
            continue
        model_mpp = (config.get("resolution") or {}).get("mpp")
        if isinstance(model_mpp, (int, float)) and model_mpp > 0 and abs(model_mpp - mpp) <= tolerance * mpp:
            found.append(name)
    return found
