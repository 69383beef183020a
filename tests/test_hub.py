"""The zoo over real HTTP: a local olah server (a self-hosted Hugging Face mirror)
serves git repositories built from model_cards/<name>.

huggingface_hub reads HF_ENDPOINT / HF_HUB_OFFLINE / HF_HUB_CACHE when it is
imported, so every client runs in a fresh subprocess with its own environment,
exactly as a user's process would. The server is started and stopped by the
fixture; nothing is left running. Every client's HF_ENDPOINT is a local address (the
olah server or a closed port) and proxy variables are dropped, so no test reaches
huggingface.co even where a network exists.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("olah", reason="olah (self-hosted HF mirror) is a dev dependency: pip install -e '.[dev]'")


def _registry() -> dict:
    return json.loads((ROOT / "segzoo" / "zoo_registry.json").read_text())["models"]


ZOO = _registry()
if not ZOO:
    pytest.skip("the zoo registry is empty", allow_module_level=True)
NAME = min(ZOO)
REPO = ZOO[NAME]["repo_id"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "segzoo", "GIT_AUTHOR_EMAIL": "ci@segzoo",
           "GIT_COMMITTER_NAME": "segzoo", "GIT_COMMITTER_EMAIL": "ci@segzoo"}
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True,
                          text=True).stdout.strip()


def make_hub_repo(mirrors: Path, repo_id: str, folder: Path) -> Path:
    """A git repository (branch main) holding `folder`'s files, where olah looks for it."""
    repo = mirrors / "models" / repo_id
    repo.mkdir(parents=True)
    for item in folder.iterdir():
        if item.is_file() and not item.name.startswith("."):
            shutil.copy2(item, repo / item.name)
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "publish")
    return repo


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A running olah server whose mirrors hold every zoo model's model_cards folder."""
    root = tmp_path_factory.mktemp("hub")
    mirrors = root / "mirrors"
    repos = {}
    for name, entry in ZOO.items():
        repos[name] = make_hub_repo(mirrors, entry["repo_id"], ROOT / "model_cards" / name)
    port = _free_port()
    config = root / "olah.toml"
    config.write_text(textwrap.dedent(f"""
        [basic]
        host = "127.0.0.1"
        port = {port}
        repos-path = "{root / 'olah-cache'}"
        mirrors-path = ["{mirrors}"]
        [accessibility]
        offline = true
    """))
    log = open(root / "olah.log", "w")  # noqa: SIM115 -- the server writes to it until teardown
    server = subprocess.Popen([sys.executable, "-m", "olah.server", "-c", str(config)], stdout=log,
                              stderr=subprocess.STDOUT, cwd=root)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if server.poll() is not None:
                raise RuntimeError(f"olah exited: {(root / 'olah.log').read_text()[-2000:]}")
            time.sleep(0.3)
    else:
        server.kill()
        raise RuntimeError("olah did not start in 60 s")
    try:
        yield {"endpoint": f"http://127.0.0.1:{port}", "root": root, "repos": repos}
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def dead_endpoint() -> str:
    """A local address nothing listens on."""
    return f"http://127.0.0.1:{_free_port()}"


def client(code: str, *, endpoint: str, cache: Path, offline: bool = False,
           without_keras: bool = False) -> subprocess.CompletedProcess:
    """Run `code` in a fresh process against `endpoint` (a local address) with Hub cache `cache`.
    without_keras: TensorFlow and Keras cannot be imported, as in the base (ONNX-only) install."""
    assert endpoint.startswith("http://127.0.0.1:"), "tests must never reach the real Hub"
    proxy_vars = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "HUGGINGFACE_")) and k.lower() not in proxy_vars}
    env.update(HF_ENDPOINT=endpoint, HF_HUB_CACHE=str(cache), HF_HUB_DISABLE_TELEMETRY="1",
               HF_HUB_ETAG_TIMEOUT="5", HF_HUB_DOWNLOAD_TIMEOUT="10", TF_CPP_MIN_LOG_LEVEL="3")
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    prelude = "import logging, sys; logging.basicConfig(level=logging.INFO, stream=sys.stdout)\n"
    if without_keras:  # a None entry makes `import tensorflow` raise ImportError
        prelude += "sys.modules.update(dict.fromkeys(['tensorflow', 'keras', 'tf_keras']))\n"
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], env=env, check=False,
                          capture_output=True, text=True, timeout=300)


def test_zoo_name_downloads_verifies_then_uses_cache_offline(hub, tmp_path):
    cache = tmp_path / "cache"
    code = f"from segzoo.zoo.sources import resolve_zoo; print('FOLDER', resolve_zoo({NAME!r}))"
    first = client(code, endpoint=hub["endpoint"], cache=cache)
    assert first.returncode == 0, first.stderr[-3000:]
    folder = first.stdout.split("FOLDER ")[1].strip()
    assert folder.startswith(str(cache)), "must come from the Hub cache, not the bundled copy"
    assert "bundled" not in first.stdout
    # HF_HUB_OFFLINE=1 makes any network call an error: success proves the cache is used.
    second = client(code, endpoint=hub["endpoint"], cache=cache, offline=True)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.split("FOLDER ")[1].strip() == folder


def test_full_load_and_predict_by_zoo_name_and_hf_uri(hub, tmp_path):
    code = f"""
        import segzoo, numpy as np
        from segzoo.io.images import sample_image_path
        a = segzoo.load({NAME!r}, runtime="keras").predict(sample_image_path())
        b = segzoo.load("hf://{REPO}", runtime="keras").predict(sample_image_path())
        assert np.array_equal(a.prob, b.prob) and a.prob.shape == (512, 512)
        c = segzoo.load({NAME!r}, precision="int8").predict(sample_image_path())
        d = segzoo.load("hf://{REPO}", precision="int8").predict(sample_image_path())
        assert np.array_equal(c.prob, d.prob) and not np.array_equal(a.prob, c.prob)
        assert (c.mask == a.mask).mean() > 0.98, "int8 should segment like fp32"
        print("NUCLEI", a.num_nuclei)
    """
    result = client(code, endpoint=hub["endpoint"], cache=tmp_path / "cache")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "NUCLEI" in result.stdout


def test_revision_pinning_and_checksum_tamper(hub, tmp_path):
    repo = hub["repos"][NAME]
    first_sha = _git(repo, "rev-parse", "HEAD")
    config = json.loads((repo / "config.json").read_text())
    config["postprocessing"]["threshold"] = 0.123
    (repo / "config.json").write_text(json.dumps(config))
    _git(repo, "commit", "-q", "-am", "change threshold")
    try:
        code = f"""
            from segzoo.zoo.hub import download_files
            import json
            old = download_files("{REPO}", ["config.json"], revision="{first_sha}", cache_dir=None)
            new = download_files("{REPO}", ["config.json"], revision="main", cache_dir=None)
            print("OLD", json.load(open(old / "config.json"))["postprocessing"]["threshold"])
            print("NEW", json.load(open(new / "config.json"))["postprocessing"]["threshold"])
        """
        pinned = client(code, endpoint=hub["endpoint"], cache=tmp_path / "c1")
        assert pinned.returncode == 0, pinned.stderr[-3000:]
        assert "NEW 0.123" in pinned.stdout and "OLD 0.123" not in pinned.stdout
        # The registry pins the sha256 of the original config: main now fails verification, even
        # after the forced re-download. The valid bundled copy is used instead, with a WARNING.
        bundled = json.loads((ROOT / "segzoo" / "bundled" / NAME / "config.json").read_text())
        code = f"""
            import segzoo
            p = segzoo.load({NAME!r})
            print("RUNTIME", p.runtime, "THRESHOLD", p.config.postprocessing.threshold)
        """
        tamper = client(code, endpoint=hub["endpoint"], cache=tmp_path / "c2", without_keras=True)
        assert tamper.returncode == 0, tamper.stderr[-3000:]
        assert f"RUNTIME onnx THRESHOLD {bundled['postprocessing']['threshold']}" in tamper.stdout
        warnings = [line for line in tamper.stdout.splitlines() if line.startswith("WARNING:segzoo.zoo")]
        assert any("config.json" in w and "failed its sha256 pin" in w and "using the copy bundled" in w
                   for w in warnings), tamper.stdout[-3000:]
        # Without a bundled copy the mismatch is an error.
        no_bundle = client(f"""
            from segzoo.zoo import registry, sources
            registry.bundled_folder = lambda name: None
            sources.resolve_zoo({NAME!r}, revision="main")
        """, endpoint=hub["endpoint"], cache=tmp_path / "c3")
        assert no_bundle.returncode != 0
        assert "sha256 mismatch for config.json" in no_bundle.stderr and "expected" in no_bundle.stderr
    finally:
        _git(repo, "reset", "-q", "--hard", first_sha)


def test_missing_repo_and_offline_without_cache(hub, tmp_path):
    missing = client("import segzoo; segzoo.load('hf://segzoo/does-not-exist')",
                     endpoint=hub["endpoint"], cache=tmp_path / "c")
    assert missing.returncode != 0 and "not found or not authorised" in missing.stderr
    offline = client(f"import segzoo; segzoo.load('hf://{REPO}')", endpoint=hub["endpoint"],
                     cache=tmp_path / "empty", offline=True)
    assert offline.returncode != 0 and "cannot be reached and nothing is cached" in offline.stderr


def test_unreachable_endpoint_falls_back_to_bundled_copy(tmp_path):
    result = client(f"from segzoo.zoo.sources import resolve_zoo; print('FOLDER', resolve_zoo({NAME!r}))",
                    endpoint=dead_endpoint(), cache=tmp_path / "c")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "INFO:segzoo.zoo" in result.stdout and "using the copy bundled with segzoo" in result.stdout
    assert "WARNING" not in result.stdout
    assert Path(result.stdout.split("FOLDER ")[1].strip()).resolve() == (ROOT / "model_cards" / NAME).resolve()


def test_revision_asked_for_while_unreachable_warns_that_the_bundled_copy_is_used(tmp_path):
    result = client(f"from segzoo.zoo.sources import resolve_zoo; print('FOLDER', resolve_zoo({NAME!r}, revision='v9'))",
                    endpoint=dead_endpoint(), cache=tmp_path / "c")
    assert result.returncode == 0, result.stderr[-3000:]
    warning = [line for line in result.stdout.splitlines() if line.startswith("WARNING:segzoo.zoo")]
    assert len(warning) == 1 and "revision 'v9' was asked for" in warning[0], result.stdout[-3000:]
    assert "using the copy bundled with segzoo" in warning[0] and "registry" in warning[0]


def test_hf_uri_auto_runs_onnx_without_tensorflow_online_and_from_the_cache(hub, tmp_path):
    """The base install (onnxruntime, no TensorFlow/Keras): 'auto' picks ONNX because the repo
    lists model.onnx, fetches config.json with it, and does the same offline from the cache."""
    cache = tmp_path / "cache"
    code = f"""
        import sys, segzoo
        from segzoo.io.images import read_image
        from segzoo.io.images import sample_image_path
        p = segzoo.load("hf://{REPO}")
        r = p.predict(read_image(sample_image_path())[:192, :192])
        assert "tensorflow" not in [m.split(".")[0] for m in sys.modules if sys.modules[m] is not None]
        print("RUNTIME", p.runtime, "NUCLEI", r.num_nuclei, "SHAPE", r.prob.shape)
    """
    online = client(code, endpoint=hub["endpoint"], cache=cache, without_keras=True)
    assert online.returncode == 0, online.stderr[-3000:]
    assert "RUNTIME onnx" in online.stdout and "SHAPE (192, 192)" in online.stdout
    assert int(online.stdout.split("NUCLEI ")[1].split()[0]) > 0
    cached = {p.name for p in cache.rglob("*") if p.is_file() and "snapshots" in p.parts}
    assert cached == {"config.json", "model.onnx"}, cached
    offline = client(code, endpoint=hub["endpoint"], cache=cache, offline=True, without_keras=True)
    assert offline.returncode == 0, offline.stderr[-3000:]
    assert online.stdout.split("RUNTIME")[1] == offline.stdout.split("RUNTIME")[1]


def test_cache_folder_that_cannot_be_written_is_an_error_not_a_silent_fallback(hub, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    result = client(f"from segzoo.zoo.sources import resolve_zoo; resolve_zoo({NAME!r})", endpoint=hub["endpoint"],
                    cache=blocker)
    assert result.returncode != 0, "a broken cache must not fall back to the bundled copy silently"
    assert "RunError: Hugging Face cache" in result.stderr and str(blocker) in result.stderr
    assert "using the copy bundled" not in result.stdout
