"""segzoo.load() without a network: one config wins, errors that name the file, and how the
zoo tells an unreachable Hub (proxies included) from a broken cache. Hub tests over real
HTTP are in test_hub.py."""

from __future__ import annotations

import json
import logging
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest

import segzoo
from segzoo.config import Postprocessing
from segzoo.errors import ConfigError, SegzooError
from segzoo.io.images import read_image, sample_image_path
from segzoo.predict.postprocessing import probabilities_to_instances
from segzoo.zoo import hub, registry, sources

NAME = "unet-monuseg"
BUNDLED = Path(segzoo.__file__).parent / "bundled" / NAME


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(autouse=True)
def no_real_hub(monkeypatch):
    """Every Hub URL points at a local port nothing listens on, whatever the network."""
    from huggingface_hub import constants

    dead = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setattr(constants, "ENDPOINT", dead)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", dead + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(hub, "_REACHABLE", {})


@pytest.fixture
def folder(tmp_path) -> Path:
    """A copy of the bundled unet folder's config and ONNX files (its threshold is 0.35)."""
    out = tmp_path / "model"
    out.mkdir()
    for name in ("config.json", "model.onnx", "model.int8.onnx"):
        shutil.copy(BUNDLED / name, out / name)
    return out


def _edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    for dotted, value in changes.items():
        section, _, key = dotted.partition("__")
        if key:
            config[section][key] = value
        else:
            config[section] = value
    (folder / "config.json").write_text(json.dumps(config))


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return read_image(sample_image_path())[:128, :128]


def test_folder_config_json_is_the_config_of_every_onnx_load(folder, image):
    assert json.loads((folder / "config.json").read_text())["postprocessing"]["threshold"] == 0.35
    _edit_config(folder, postprocessing__threshold=0.99)
    loads = {"folder": segzoo.load(folder), "onnx": segzoo.load(folder, runtime="onnx"),
             "int8": segzoo.load(folder, precision="int8"), "file": segzoo.load(folder / "model.onnx"),
             "int8 file": segzoo.load(folder / "model.int8.onnx")}
    for how, predictor in loads.items():
        assert predictor.runtime == "onnx", how
        assert predictor.config.postprocessing.threshold == 0.99, how
    result = loads["folder"].predict(image)
    expected, _ = probabilities_to_instances(result.prob, loads["folder"].config.postprocessing)
    at_035, _ = probabilities_to_instances(result.prob, Postprocessing(**{
        **loads["folder"].config.postprocessing.__dict__, "threshold": 0.35}))
    assert np.array_equal(result.mask, expected)
    assert result.mask.sum() < at_035.sum(), "0.99 must give a smaller mask than the embedded 0.35"


def test_a_bare_onnx_file_uses_its_embedded_config(folder, tmp_path):
    _edit_config(folder, postprocessing__threshold=0.99)
    bare = tmp_path / "elsewhere" / "unet.onnx"
    bare.parent.mkdir()
    shutil.copy(folder / "model.onnx", bare)
    shutil.copy(folder / "config.json", bare.parent / "config.json")  # not a model folder's ONNX file name
    assert segzoo.load(bare).config.postprocessing.threshold == 0.35


def test_disagreement_between_config_json_and_embedded_config_is_a_warning_naming_both(folder, caplog):
    _edit_config(folder, postprocessing__threshold=0.99, inference__overlap=64)
    with caplog.at_level(logging.WARNING, logger="segzoo"):
        segzoo.load(folder)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert str(folder / "config.json") in warnings[0] and str(folder / "model.onnx") in warnings[0]
    assert "postprocessing.threshold: 0.99 != 0.35" in warnings[0] and "inference.overlap" in warnings[0]


def test_name_and_provenance_differences_are_not_warned_about(folder, caplog):
    _edit_config(folder, name="renamed", provenance={"note": "copied"})
    with caplog.at_level(logging.WARNING, logger="segzoo"):
        predictor = segzoo.load(folder)
    assert predictor.config.name == "renamed"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("runtime", ["auto", "onnx", "keras"])
def test_corrupt_config_json_is_a_config_error_naming_the_file(folder, runtime):
    (folder / "config.json").write_text('{"architecture": "unet", ')
    with pytest.raises(ConfigError, match=f"{folder / 'config.json'}.*not valid JSON"):
        segzoo.load(folder, runtime=runtime)


@pytest.mark.parametrize("runtime", ["auto", "keras"])
def test_unknown_architecture_is_a_config_error_listing_the_valid_ones(folder, runtime):
    _edit_config(folder, architecture="transunet")
    with pytest.raises(ConfigError, match=f"{folder / 'config.json'}: unknown architecture 'transunet'; "
                                          "valid architectures: deeplabv3, segnet, unet"):
        segzoo.load(folder, runtime=runtime)
    with pytest.raises(ConfigError, match="unknown architecture"):
        segzoo.load(folder / "model.int8.onnx")


def test_zoo_onnx_runtime_needs_the_config_json_too():
    entry = registry.get_entry(NAME)
    assert entry.required_files("onnx") == ["config.json", "model.onnx"]
    assert entry.required_files("onnx", "int8") == ["config.json", "model.int8.onnx"]
    assert entry.required_files("keras") == ["config.json", "model.weights.h5"]
    for name in registry.list_models():  # the registry pins, and the bundled copies hold, every config.json
        assert "config.json" in registry.get_entry(name).files
        assert (registry.bundled_folder(name) / "config.json").is_file()


# --- the Hub: what counts as unreachable ---------------------------------------------------------

def test_only_connection_errors_count_as_an_unreachable_hub():
    import httpx2
    from huggingface_hub import errors

    for err in (ConnectionRefusedError(111, "Connection refused"), TimeoutError("timed out"),
                socket.gaierror(-2, "Name or service not known"), httpx2.ConnectError("refused"),
                errors.LocalEntryNotFoundError("not cached"), errors.OfflineModeIsEnabled("offline")):
        assert hub.hub_failure(err) == "unreachable", err
    for err in (PermissionError(13, "Permission denied", "/cache"), OSError(28, "No space left on device"),
                NotADirectoryError(20, "Not a directory", "/cache/blobs"), ValueError("x")):
        assert hub.hub_failure(err) is None, err


@pytest.fixture
def hub_reachable(monkeypatch):
    """The zoo believes the Hub answers; nothing is sent anywhere (hf_hub_download is replaced)."""
    monkeypatch.setattr(hub, "endpoint_reachable", lambda timeout=3.0: True)


def test_a_cache_that_cannot_be_written_is_an_error_naming_it(monkeypatch, hub_reachable, tmp_path):
    import huggingface_hub

    blob = tmp_path / "hub" / "models--segzoo--unet-monuseg" / "blobs"

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(blob))

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", denied)
    monkeypatch.setattr(hub, "available_files", lambda repo_id, filenames, **kwargs: list(filenames))
    with pytest.raises(SegzooError, match=f"Hugging Face cache {blob}: Permission denied"):
        segzoo.load(NAME)
    with pytest.raises(SegzooError, match="Permission denied"):
        segzoo.load("hf://segzoo/unet-monuseg", runtime="onnx")


def test_a_revision_served_by_the_bundled_copy_is_a_warning_naming_both(monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(hub, "endpoint_reachable", lambda timeout=3.0: False)  # offline: cache only
    with caplog.at_level(logging.INFO, logger="segzoo"):
        folder = sources.resolve_zoo(NAME, runtime="onnx", revision="abc123", cache_dir=tmp_path / "empty")
    assert folder.resolve() == BUNDLED.resolve()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "revision 'abc123' was asked for" in warnings[0]
    pinned = registry.get_entry(NAME).revision
    assert (repr(pinned) if pinned else "no revision published yet") in warnings[0]


# --- the Hub: proxies ----------------------------------------------------------------------------

@pytest.fixture
def proxy_env(monkeypatch):
    """A clean proxy environment, a fresh reachability memo and a local listening 'proxy'."""
    from huggingface_hub import constants

    for var in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
        monkeypatch.delenv(var.upper(), raising=False)
    monkeypatch.setattr(hub, "_REACHABLE", {})
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    dead_port = _closed_port()
    monkeypatch.setattr(constants, "ENDPOINT", f"https://127.0.0.1:{dead_port}")  # nothing listens there
    with socket.create_server(("127.0.0.1", 0)) as proxy:
        yield monkeypatch, proxy.getsockname()[1], dead_port


def test_hub_behind_a_proxy_is_reachable_through_the_proxy(proxy_env):
    monkeypatch, proxy_port, dead_port = proxy_env
    assert not hub.endpoint_reachable(timeout=1.0), "the endpoint itself is closed"
    monkeypatch.setattr(hub, "_REACHABLE", {})
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy_port}")
    assert hub.probe_address(f"https://127.0.0.1:{dead_port}") == ("127.0.0.1", proxy_port)
    assert hub.endpoint_reachable(timeout=1.0)


def test_no_proxy_sends_the_probe_to_the_endpoint(proxy_env):
    monkeypatch, proxy_port, dead_port = proxy_env
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy_port}")
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    assert hub.probe_address(f"https://127.0.0.1:{dead_port}") == ("127.0.0.1", dead_port)
    assert not hub.endpoint_reachable(timeout=1.0)


def test_probe_address_follows_the_scheme_and_default_ports(monkeypatch, proxy_env):
    monkeypatch.setenv("HTTP_PROXY", "proxy.hospital.example:3128")
    monkeypatch.setenv("ALL_PROXY", "socks5://socks.hospital.example")
    assert hub.probe_address("http://hub.example") == ("proxy.hospital.example", 3128)
    assert hub.probe_address("https://hub.example") == ("socks.hospital.example", 1080)
    monkeypatch.delenv("ALL_PROXY")
    assert hub.probe_address("https://hub.example") == ("hub.example", 443)
