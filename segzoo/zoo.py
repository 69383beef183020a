"""The zoo: named, trained models and how to fetch them.

This registry holds weights, not code: each name maps to a Hugging Face Hub repo,
a pinned revision and the sha256 of every file it needs (segzoo/zoo_registry.json,
written by scripts/publish.py). Architectures live in segzoo.architectures.

Resolution order for a zoo name: the Hub (through huggingface_hub, so HF_ENDPOINT,
HF_HOME/HF_HUB_CACHE, HF_TOKEN and HF_HUB_OFFLINE behave as usual; a second load is
served from the cache), then the copy bundled inside the package when the Hub
cannot be reached or does not hold the repo. Every file is checked against its
pinned sha256 whichever way it came.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from segzoo.config import CONFIG_FILENAME, ONNX_FILENAMES, WEIGHTS_FILENAME
from segzoo.errors import SegzooError, UnknownNameError

log = logging.getLogger(__name__)

REGISTRY_FILE = "zoo_registry.json"


class ChecksumError(SegzooError):
    """A downloaded or bundled file does not match its pinned sha256."""


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
        """Files a runtime needs: Keras needs config + weights; ONNX needs the ONNX file of
        `precision` (model.onnx, model.int8.onnx)."""
        wanted = [CONFIG_FILENAME, WEIGHTS_FILENAME] if runtime == "keras" else [ONNX_FILENAMES[precision]]
        return [f for f in wanted if f in self.files]


def _registry() -> dict[str, ZooEntry]:
    text = resources.files("segzoo").joinpath(REGISTRY_FILE).read_text(encoding="utf-8")
    data = json.loads(text)
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


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: Path, expected: str, what: str) -> None:
    actual = sha256_of(path)
    if actual != expected:
        raise ChecksumError(
            f"{what}: sha256 mismatch for {path.name}: expected {expected}, got {actual}; "
            "refusing to load. Delete the file (or the Hub cache entry) and retry, or check "
            "the zoo registry pin.")


def bundled_folder(name: str) -> Path | None:
    """The copy of zoo model `name` shipped inside the package, if any."""
    folder = Path(str(resources.files("segzoo").joinpath("bundled", name)))
    return folder if (folder / CONFIG_FILENAME).is_file() else None


def _bundled_verified(entry: ZooEntry, runtime: str, precision: str = "fp32") -> Path:
    folder = bundled_folder(entry.name)
    if folder is None:
        raise SegzooError(f"{entry.name}: no bundled copy in this segzoo installation")
    for filename in entry.required_files(runtime, precision):
        if not (folder / filename).is_file():
            raise SegzooError(f"{entry.name}: bundled copy lacks {filename}")
        verify(folder / filename, entry.files[filename], f"{entry.name} (bundled)")
    return folder


def hub_failure(err: BaseException) -> str | None:
    """'unreachable' (no connection / offline, nothing cached), 'missing' (repo, revision or
    file not on the Hub, or not authorised) or None for anything else."""
    from huggingface_hub import errors

    if isinstance(err, (errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled)):
        return "unreachable"
    if isinstance(err, (errors.RepositoryNotFoundError, errors.RevisionNotFoundError,
                        errors.EntryNotFoundError, errors.GatedRepoError)):
        return "missing"
    if isinstance(err, OSError):  # connection refused/reset, DNS failure, timeouts
        return "unreachable"
    return None


_REACHABLE: dict[str, bool] = {}


def endpoint_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hub endpoint (HF_ENDPOINT) accepts a TCP connection, checked once per process.

    huggingface_hub retries failed connections with back-off (about 25 s per file
    when there is no network); checking first lets an offline machine go straight
    to the cache or the bundled copy.
    """
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    key = url.netloc
    if key not in _REACHABLE:
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            socket.create_connection((url.hostname, port), timeout=timeout).close()
            _REACHABLE[key] = True
        except OSError:
            _REACHABLE[key] = False
            log.info("the Hub endpoint %s is not reachable; using the local cache or bundled copies",
                     constants.ENDPOINT)
    return _REACHABLE[key]


def download_files(repo_id: str, filenames: list[str], *, revision: str | None,
                   cache_dir: str | os.PathLike | None,
                   expected: dict[str, str] | None = None) -> Path:
    """Download `filenames` from a Hub repo into the HF cache; returns their folder.

    With `expected` sha256 values, each file is verified; a mismatch triggers one
    forced re-download (a corrupt or partial cache entry), then ChecksumError.
    """
    from huggingface_hub import hf_hub_download

    folder = None
    offline = not endpoint_reachable()
    for filename in filenames:
        path = Path(hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir,
                                    library_name="segzoo", local_files_only=offline))
        if expected and filename in expected:
            try:
                verify(path, expected[filename], f"hf://{repo_id}")
            except ChecksumError:
                if offline:
                    raise
                log.warning("%s in hf://%s failed its checksum; downloading it again", filename, repo_id)
                path = Path(hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir,
                                            library_name="segzoo", force_download=True))
                verify(path, expected[filename], f"hf://{repo_id}")
        folder = path.parent
    assert folder is not None
    return folder


def resolve_zoo(name: str, *, runtime: str = "keras", revision: str | None = None,
                cache_dir: str | os.PathLike | None = None, precision: str = "fp32") -> Path:
    """A local folder holding zoo model `name`'s verified files (Hub, else bundled)."""
    entry = get_entry(name)
    files = entry.required_files(runtime, precision)
    if not files:
        raise SegzooError(f"{name}: the zoo has no files for runtime {runtime!r}")
    pinned = revision or entry.revision
    try:
        return download_files(entry.repo_id, files, revision=pinned, cache_dir=cache_dir, expected=entry.files)
    except ChecksumError:
        raise
    except Exception as err:
        kind = hub_failure(err)
        if kind is None:
            raise
        reason = (f"the Hub does not hold hf://{entry.repo_id}@{pinned or 'main'} ({type(err).__name__})"
                  if kind == "missing" else
                  f"the Hub cannot be reached and nothing is cached ({type(err).__name__})")
    try:
        folder = _bundled_verified(entry, runtime, precision)
    except ChecksumError:
        raise
    except SegzooError:
        raise SegzooError(
            f"{name}: {reason}, and this installation has no bundled copy. Connect to the Hub "
            f"(or set HF_ENDPOINT to a mirror), or download hf://{entry.repo_id} elsewhere and pass "
            "its folder to segzoo.load().") from None
    log.info("%s: %s; using the copy bundled with segzoo (%s)", name, reason, folder)
    return folder


def parse_hf_uri(source: str) -> tuple[str, str | None]:
    """'hf://org/repo[@revision]' -> (repo_id, revision)."""
    body = source[len("hf://"):]
    repo_id, _, revision = body.partition("@")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise SegzooError(f"{source!r}: expected hf://org/repo or hf://org/repo@revision")
    return repo_id, revision or None
