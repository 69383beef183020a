"""The zoo: named, trained models and how to fetch them.

This registry holds weights, not code: each name maps to a Hugging Face Hub repo,
a pinned revision and the sha256 of every file it needs (segzoo/zoo_registry.json,
written by scripts/publish.py). Architectures live in segzoo.models.architectures.

Resolution order for a zoo name: the Hub (through huggingface_hub, so HF_ENDPOINT,
HF_HOME/HF_HUB_CACHE, HF_TOKEN and HF_HUB_OFFLINE behave as usual; a second load is
served from the cache), then the copy bundled inside the package when the Hub
cannot be reached (a connection error; HTTPS_PROXY/HTTP_PROXY/NO_PROXY are honoured),
does not hold the repo, or serves a file that fails its pin. Every file is checked
against its pinned sha256 whichever way it came. Any other error, e.g. a cache folder
that cannot be written, is raised as a SegzooError naming the path.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import sys
import urllib.request
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from urllib.parse import urlparse

from segzoo.config import CONFIG_FILENAME, ONNX_FILENAMES, WEIGHTS_FILENAME
from segzoo.errors import SegzooError, UnknownNameError

log = logging.getLogger(__name__)

REGISTRY_FILE = "zoo_registry.json"


class ChecksumError(SegzooError):
    """A downloaded or bundled file does not match its pinned sha256 (hex digests)."""

    def __init__(self, message: str, *, path: Path | None = None, expected: str = "", actual: str = ""):
        super().__init__(message)
        self.path, self.expected, self.actual = path, expected, actual


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
        """Files a runtime needs: Keras needs config + weights; ONNX needs config (the model's
        config for every runtime) + the ONNX file of `precision` (model.onnx, model.int8.onnx)."""
        wanted = [CONFIG_FILENAME, WEIGHTS_FILENAME if runtime == "keras" else ONNX_FILENAMES[precision]]
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
            "the zoo registry pin.", path=path, expected=expected, actual=actual)


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


# Transport errors of the HTTP clients huggingface_hub may use: (module, class names). Only
# modules already imported are consulted, since an error can only come from one of those.
_TRANSPORT_ERRORS = (("httpx2", ("TransportError",)), ("httpx", ("TransportError",)),
                     ("requests.exceptions", ("ConnectionError", "Timeout")))


def is_connection_error(err: BaseException) -> bool:
    """Whether `err` means the network path to the Hub failed (refused, reset, DNS, timeout, proxy)."""
    if isinstance(err, (ConnectionError, TimeoutError, socket.gaierror, socket.herror)):
        return True
    for module_name, names in _TRANSPORT_ERRORS:
        module = sys.modules.get(module_name)
        for name in names:
            kind = getattr(module, name, None) if module is not None else None
            if isinstance(kind, type) and isinstance(err, kind):
                return True
    return False


def hub_failure(err: BaseException) -> str | None:
    """'unreachable' (no connection / offline / the Hub answers 5xx, nothing cached), 'missing'
    (repo, revision or file not on the Hub, or not authorised) or None for anything else,
    such as a cache folder that cannot be written."""
    from huggingface_hub import errors

    if isinstance(err, (errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled)):
        return "unreachable"
    if isinstance(err, (errors.RepositoryNotFoundError, errors.RevisionNotFoundError,
                        errors.EntryNotFoundError, errors.GatedRepoError)):
        return "missing"
    if isinstance(err, errors.HfHubHTTPError):
        status = getattr(getattr(err, "response", None), "status_code", None)
        return "unreachable" if isinstance(status, int) and status >= 500 else None
    return "unreachable" if is_connection_error(err) else None


def _default_port(scheme: str) -> int:
    return {"https": 443, "socks5": 1080, "socks5h": 1080, "socks4": 1080}.get(scheme, 80)


def probe_address(endpoint: str) -> tuple[str, int]:
    """(host, port) that a request to `endpoint` connects to first: the proxy named by
    HTTPS_PROXY / HTTP_PROXY / ALL_PROXY for the endpoint's scheme unless NO_PROXY exempts the
    host (urllib's rules, which requests and httpx follow), else the endpoint itself."""
    url = urlparse(endpoint)
    host = url.hostname or ""
    proxies = urllib.request.getproxies()
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if proxy and not urllib.request.proxy_bypass(host):
        proxy_url = urlparse(proxy if "://" in proxy else f"http://{proxy}")
        if proxy_url.hostname:
            return proxy_url.hostname, proxy_url.port or _default_port(proxy_url.scheme)
    return host, url.port or _default_port(url.scheme)


_REACHABLE: dict[tuple[str, str, int], bool] = {}


def endpoint_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hub endpoint (HF_ENDPOINT), or the proxy that requests to it go through,
    accepts a TCP connection; checked once per process and address.

    huggingface_hub retries failed connections with back-off (about 25 s per file
    when there is no network); checking first lets an offline machine go straight
    to the cache or the bundled copy.
    """
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    host, port = probe_address(constants.ENDPOINT)
    key = (constants.ENDPOINT, host, port)
    if key not in _REACHABLE:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            _REACHABLE[key] = True
        except OSError:
            _REACHABLE[key] = False
            via = "" if urlparse(constants.ENDPOINT).hostname == host else f" through the proxy {host}:{port}"
            log.info("the Hub endpoint %s is not reachable%s; using the local cache or bundled copies",
                     constants.ENDPOINT, via)
    return _REACHABLE[key]


def _cache_error(err: OSError, cache_dir: str | os.PathLike | None) -> SegzooError:
    """A SegzooError naming the cache path at fault and the problem."""
    from huggingface_hub import constants

    where = err.filename or os.fspath(cache_dir or constants.HF_HUB_CACHE)
    return SegzooError(f"Hugging Face cache {where}: {err.strerror or err} ({type(err).__name__}); make it "
                       "writable or point HF_HUB_CACHE (or cache_dir) at a folder you can write")


def _hub_download(repo_id: str, filename: str, cache_dir: str | os.PathLike | None, **kwargs) -> Path:
    """hf_hub_download; an OSError that is not about the network (a cache folder that cannot be
    written or read, a full disk) becomes a SegzooError naming the path."""
    from huggingface_hub import errors, hf_hub_download

    try:
        return Path(hf_hub_download(repo_id, filename, cache_dir=cache_dir, library_name="segzoo", **kwargs))
    except OSError as err:
        if hub_failure(err) is None and not isinstance(err, errors.HfHubHTTPError):
            raise _cache_error(err, cache_dir) from None
        raise


def available_files(repo_id: str, filenames: list[str], *, revision: str | None,
                    cache_dir: str | os.PathLike | None) -> list[str]:
    """Which of `filenames` the Hub repo holds at `revision` (the Hub's file list), or, when the
    Hub cannot be reached, which are in the local cache for that revision."""
    from huggingface_hub import HfApi, try_to_load_from_cache

    if endpoint_reachable():
        try:
            listed = set(HfApi().list_repo_files(repo_id, revision=revision))
            return [f for f in filenames if f in listed]
        except Exception as err:
            if hub_failure(err) != "unreachable":
                raise
    return [f for f in filenames
            if isinstance(try_to_load_from_cache(repo_id, f, cache_dir=cache_dir, revision=revision), str)]


def download_files(repo_id: str, filenames: list[str], *, revision: str | None,
                   cache_dir: str | os.PathLike | None,
                   expected: dict[str, str] | None = None) -> Path:
    """Download `filenames` from a Hub repo into the HF cache; returns their folder.

    With `expected` sha256 values, each file is verified; a mismatch triggers one
    forced re-download (a corrupt or partial cache entry), then ChecksumError.
    """
    folder = None
    offline = not endpoint_reachable()
    for filename in filenames:
        path = _hub_download(repo_id, filename, cache_dir, revision=revision, local_files_only=offline)
        if expected and filename in expected:
            try:
                verify(path, expected[filename], f"hf://{repo_id}")
            except ChecksumError:
                if offline:
                    raise
                log.warning("%s in hf://%s failed its checksum; downloading it again", filename, repo_id)
                path = _hub_download(repo_id, filename, cache_dir, revision=revision, force_download=True)
                verify(path, expected[filename], f"hf://{repo_id}")
        folder = path.parent
    assert folder is not None
    return folder


def resolve_zoo(name: str, *, runtime: str = "keras", revision: str | None = None,
                cache_dir: str | os.PathLike | None = None, precision: str = "fp32") -> Path:
    """A local folder holding zoo model `name`'s verified files (Hub, else bundled).

    The bundled copy is used when the Hub cannot be reached and nothing is cached, when it
    does not hold the repo, or when a Hub file still fails its sha256 pin after a fresh
    download (a WARNING says so). The bundled copy is the registry's pinned revision: asking
    for another `revision` and getting it logs a WARNING naming both."""
    entry = get_entry(name)
    files = entry.required_files(runtime, precision)
    if not files:
        raise SegzooError(f"{name}: the zoo has no files for runtime {runtime!r}")
    pinned = revision or entry.revision
    hub_error: ChecksumError | None = None
    try:
        return download_files(entry.repo_id, files, revision=pinned, cache_dir=cache_dir, expected=entry.files)
    except ChecksumError as err:
        hub_error = err
        reason = (f"{err.path.name if err.path else 'a file'} from hf://{entry.repo_id}@{pinned or 'main'} "
                  f"failed its sha256 pin (expected {err.expected}, got {err.actual})")
    except Exception as err:
        kind = hub_failure(err)
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
        raise SegzooError(
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
        raise SegzooError(f"{source!r}: expected hf://org/repo or hf://org/repo@revision")
    return repo_id, revision or None
