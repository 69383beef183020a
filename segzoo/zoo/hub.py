"""The Hugging Face Hub: downloads into its cache, the reachability probe (through the proxy
that requests would take), sha256 checks, and telling an unreachable Hub from a missing repo
from any other error.

Downloads go through huggingface_hub, so HF_ENDPOINT, HF_HOME/HF_HUB_CACHE, HF_TOKEN and
HF_HUB_OFFLINE behave as usual and a second load is served from the cache. Only a connection
error (HTTPS_PROXY/HTTP_PROXY/ALL_PROXY/NO_PROXY honoured), offline mode or a 5xx answer counts as
unreachable; any other error, e.g. a cache folder that cannot be written, is raised as a
RunError naming the path. segzoo.zoo.sources decides what to fetch and when the bundled
copy replaces the Hub.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import sys
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from segzoo.errors import ChecksumError, RunError

log = logging.getLogger(__name__)


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


def _cache_error(err: OSError, cache_dir: str | os.PathLike | None) -> RunError:
    """A RunError naming the cache path at fault and the problem."""
    from huggingface_hub import constants

    where = err.filename or os.fspath(cache_dir or constants.HF_HUB_CACHE)
    return RunError(f"Hugging Face cache {where}: {err.strerror or err} ({type(err).__name__}); make it "
                    "writable or point HF_HUB_CACHE (or cache_dir) at a folder you can write", argument="cache_dir")


def _hub_download(repo_id: str, filename: str, cache_dir: str | os.PathLike | None, **kwargs) -> Path:
    """hf_hub_download; an OSError that is not about the network (a cache folder that cannot be
    written or read, a full disk) becomes a RunError naming the path."""
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
