"""Writing files safely: atomic writes (a temporary file in the target folder, then a rename, so
a crash never leaves a partial file), sets of files written all or none, the overwrite guard,
and checks that say, before any work, why an output path cannot be written.

Imports nothing from segzoo but its errors, so every layer may use it (ModelConfig.save does)."""

from __future__ import annotations

import logging
import os
import secrets
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

from segzoo.errors import UsageError

log = logging.getLogger(__name__)


def _read_umask() -> int:
    """The process umask: from /proc/self/status on Linux; elsewhere POSIX can only read it by
    setting it, which is done once, when this module is imported (before any writer thread
    starts), never on a write."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


FILE_MODE = 0o666 & ~_read_umask()
"""Permissions of the files written here (mkstemp creates 0600): what open() would give them
under the umask the process had when segzoo.io.files was imported."""


def write_temporary(target: Path, data: bytes) -> Path:
    """`data` in a new hidden temporary file beside `target` (FILE_MODE permissions); the
    caller renames it onto `target` or deletes it."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, FILE_MODE)
    except BaseException:
        os.unlink(tmp)
        raise
    return Path(tmp)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` (its folder created if needed) via a temporary file in the same
    folder and a rename: readers see the old file or the new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = write_temporary(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """atomic_write_bytes of `text` encoded as UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"))


def refuse_overwrite(path: str | os.PathLike, overwrite: bool) -> None:
    """UsageError when a file exists at `path` and `overwrite` is False (the guard of every
    command that writes one named file: export, quantization)."""
    if os.path.lexists(path) and not overwrite:
        raise UsageError(f"{path}: exists; pass overwrite=True to replace it", argument="overwrite")


def output_folder_problem(path: str | os.PathLike) -> str | None:
    """Why `path` cannot be used (or created) as an output folder, as one sentence naming the
    path; None when it is a writable folder or can be created inside one. Touches nothing."""
    if not os.fspath(path):
        return "the output path is empty; give a folder"
    path = Path(path)
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        for parent in path.parents:
            try:
                st = os.stat(parent)
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError as err:
                return f"{parent}: {err.strerror}"
            if not stat.S_ISDIR(st.st_mode):
                return f"{path}: cannot create this folder, {parent} is a file"
            if not os.access(parent, os.W_OK | os.X_OK):
                return f"{path}: cannot create this folder, {parent} is not writable"
            return None
        return None
    except OSError as err:
        return f"{path}: {err.strerror}"
    if not stat.S_ISDIR(st.st_mode):
        return f"{path}: exists and is not a folder; give a folder"
    if not os.access(path, os.W_OK | os.X_OK):
        return f"{path}: folder is not writable"
    return None


def output_file_problem(path: str | os.PathLike, *, overwrite: bool) -> str | None:
    """Why a file cannot be written at `path` (a folder is there, it exists without
    `overwrite`, its folder cannot be created), as one sentence; None when it can."""
    if not os.fspath(path):
        return "the output path is empty; give a file"
    path = Path(path)
    if os.path.isdir(path):
        return f"{path}: is a folder; give a file path"
    if os.path.lexists(path) and not overwrite:
        return f"{path}: exists; pass --overwrite to replace it"
    return output_folder_problem(path.parent)


def _hard_link_backup(target: Path) -> Path | None:
    """A hidden hard link to the existing `target` (its old content survives a rename onto
    `target`), or None where the file system has no hard links."""
    backup = target.parent / f".{target.name}.{secrets.token_hex(6)}.bak"
    try:
        os.link(target, backup)
    except OSError:
        return None
    return backup


def _remove(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def write_file_set(targets: dict[str, Path], render: dict[str, Callable[[], bytes]]) -> None:
    """Write one image's output files so that afterwards all of them are in place or none changed.

    `render[key]()` gives the bytes of `targets[key]`. Every file is rendered first, then
    written to a temporary file in its target folder (created if needed), then all are
    renamed into place. On any error or interrupt (OSError such as ENOSPC, KeyboardInterrupt)
    the temporaries are deleted, files of this set that did not exist before are removed and
    replaced files get their old content back (kept through a hard link; a file system without
    hard links cannot restore them, which is logged); then the exception propagates.
    """
    data = {key: render[key]() for key in targets}
    temps: dict[str, Path] = {}
    existed: dict[str, bool] = {}
    backups: dict[str, Path | None] = {}
    renamed: list[str] = []
    try:
        for key, target in targets.items():
            target.parent.mkdir(parents=True, exist_ok=True)
            temps[key] = write_temporary(target, data[key])
        for key, target in targets.items():
            existed[key] = os.path.lexists(target)
            backups[key] = _hard_link_backup(target) if existed[key] else None
        for key, target in targets.items():
            os.replace(temps[key], target)
            del temps[key]
            renamed.append(key)
    except BaseException:
        lost = []
        for key in renamed:
            target, backup = targets[key], backups.get(key)
            try:
                if backup is not None:
                    os.replace(backup, target)
                elif not existed[key]:
                    _remove(target)
                else:
                    lost.append(str(target))
            except OSError:
                lost.append(str(target))
        for path in list(temps.values()) + [b for b in backups.values() if b is not None]:
            try:
                _remove(path)
            except OSError:
                pass
        if lost:
            log.warning("replaced and could not restore: %s", ", ".join(lost))
        raise
    for backup in backups.values():
        if backup is not None:
            try:
                _remove(backup)
            except OSError:
                log.warning("could not remove the backup %s", backup)
