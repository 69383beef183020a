"""Provenance a reader can reproduce from the repository: paths relative to the folder a
command ran in, the command as a user types it, package versions and the git commit.

Shipped files (config.json, model cards, metrics, benchmark.json) must not name the machine
that wrote them, so an absolute path is stored relative to the working folder: inside it,
`runs/unet`; beside it, `../shared/monuseg/train` (the layout the README uses). A relative
path is kept as given. Imports neither Keras nor TensorFlow.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

# Package distributions of each Keras backend, whose versions change what training computes.
BACKEND_PACKAGES = {"tensorflow": ("tensorflow",), "jax": ("jax", "jaxlib"), "torch": ("torch",),
                    "numpy": ("jax",), "openvino": ("openvino",)}
PACKAGES = ("segzoo", "keras", "numpy", "onnxruntime")


def portable_path(path: str | os.PathLike, base: str | os.PathLike | None = None) -> str:
    """`path` as a POSIX string relative to `base` (default: the current folder).

    A relative path is returned as given (normalised: `a/./b` -> `a/b`); an absolute one
    becomes relative to `base`, with `..` where it lies outside (`/srv/shared/x` from
    `/srv/segzoo` -> `../shared/x`). Where no relative form exists (another Windows drive)
    the path is returned unchanged."""
    text = os.fspath(path)
    if not os.path.isabs(text):
        return Path(os.path.normpath(text)).as_posix() if text else text
    try:
        rel = os.path.relpath(text, os.fspath(base) if base is not None else os.getcwd())
    except ValueError:  # different drives on Windows
        return text
    return Path(rel).as_posix()


def portable_command(prog: str, argv: list[str], base: str | os.PathLike | None = None) -> str:
    """`prog` and `argv` as one shell line (shlex quoting), every absolute-path argument
    (`/x/y` or `--opt=/x/y`) made relative by portable_path."""

    def one(arg: str) -> str:
        if os.path.isabs(arg):
            return portable_path(arg, base)
        if arg.startswith("--") and "=" in arg:
            option, value = arg.split("=", 1)
            if os.path.isabs(value):
                return f"{option}={portable_path(value, base)}"
        return arg

    return " ".join([prog, *(shlex.quote(one(a)) for a in argv)])


def keras_backend() -> str:
    """The Keras backend this process uses or would use: the imported Keras's, else
    KERAS_BACKEND, else the `backend` of $KERAS_HOME/keras.json (~/.keras), else tensorflow."""
    keras = sys.modules.get("keras")
    if keras is not None and hasattr(keras, "backend"):
        return str(keras.backend.backend())
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    home = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras")
    try:
        return str(json.loads((home / "keras.json").read_text()).get("backend") or "tensorflow")
    except (OSError, ValueError, AttributeError):
        return "tensorflow"


def package_versions(backend: str | None = None) -> dict[str, str | None]:
    """{distribution: version or None when not installed} for segzoo, Keras, numpy,
    onnxruntime and the packages of `backend` (default: keras_backend())."""
    from importlib import metadata

    from segzoo import __version__

    names = [*PACKAGES, *BACKEND_PACKAGES.get(backend or keras_backend(), ())]
    versions: dict[str, str | None] = {}
    for name in dict.fromkeys(names):
        if name == "segzoo":
            versions[name] = __version__
            continue
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit(repo: str | os.PathLike | None = None) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the segzoo checkout (`git rev-parse HEAD`; dirty = tracked files
    differ from it), or (None, None) when segzoo does not run from a git checkout of itself
    (an installed wheel, no git)."""
    root = Path(repo) if repo is not None else Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():  # a folder, or a file in a worktree
        return None, None
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], check=False, capture_output=True,
                              text=True, timeout=20)
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                check=False, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None, None
    if head.returncode != 0:
        return None, None
    return head.stdout.strip(), (bool(status.stdout.strip()) if status.returncode == 0 else None)


def environment(backend: str | None = None) -> dict:
    """What produced a result: Python, Keras backend, package versions, git commit."""
    backend = backend or keras_backend()
    commit, dirty = git_commit()
    return {"python": platform.python_version(), "keras_backend": backend,
            "packages": package_versions(backend), "git_commit": commit, "git_dirty": dirty}
