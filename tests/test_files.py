"""segzoo.io.files: atomic writes with normal permissions that never touch the process umask,
the one overwrite guard, and segzoo.io.images.find_images (calibration images)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from segzoo.errors import DataError, SegzooError
from segzoo.io.files import FILE_MODE, atomic_write_bytes, atomic_write_text, refuse_overwrite
from segzoo.io.images import find_images, list_images


def test_atomic_writes_never_change_the_process_umask(tmp_path, monkeypatch):
    """The umask is process-wide: setting it to 0 for a moment on every write gave files created
    meanwhile by other threads world-writable permissions. It is read once, at import."""
    def forbidden(mask):
        raise AssertionError(f"os.umask({mask:o}) called during a write")

    monkeypatch.setattr(os, "umask", forbidden)
    atomic_write_bytes(tmp_path / "a" / "b.bin", b"x")
    atomic_write_text(tmp_path / "c.txt", "y")
    assert (tmp_path / "a" / "b.bin").read_bytes() == b"x" and (tmp_path / "c.txt").read_text() == "y"
    assert stat.S_IMODE((tmp_path / "c.txt").stat().st_mode) == FILE_MODE
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_written_files_get_the_permissions_open_would_give_them(tmp_path):
    """mkstemp creates 0600; the rename leaves 0666 & ~umask, as open() would, for the umask the
    process has (027 here: rw-r-----)."""
    code = textwrap.dedent(f"""
        import os, stat
        os.umask(0o027)
        from segzoo.io.files import atomic_write_bytes
        atomic_write_bytes({str(tmp_path / 'f.bin')!r}, b'1')
        print(oct(stat.S_IMODE(os.stat({str(tmp_path / 'f.bin')!r}).st_mode)))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "0o640"


def test_a_failed_rename_leaves_no_temporary_and_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "t.txt"
    target.write_text("old")

    def broken(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError):
        atomic_write_text(target, "new")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["t.txt"]


def test_refuse_overwrite_names_the_file_and_the_option(tmp_path):
    path = tmp_path / "m.onnx"
    refuse_overwrite(path, overwrite=False)  # nothing there: fine
    path.write_bytes(b"")
    refuse_overwrite(path, overwrite=True)
    with pytest.raises(SegzooError, match=f"{path}: exists; pass overwrite=True to replace it"):
        refuse_overwrite(path, overwrite=False)


def _png(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(path)


def test_find_images_reads_a_folder_of_images_or_a_dataset_layout(tmp_path):
    _png(tmp_path / "flat" / "a.png")
    _png(tmp_path / "flat" / ".hidden.png")
    assert find_images(tmp_path / "flat") == [tmp_path / "flat" / "a.png"]
    # segzoo's layout: the images are in images/, never the masks/ beside them
    _png(tmp_path / "data" / "images" / "b.png")
    _png(tmp_path / "data" / "masks" / "b.png")
    assert find_images(tmp_path / "data") == [tmp_path / "data" / "images" / "b.png"]
    _png(tmp_path / "release" / "Tissue Images" / "c.png")
    assert find_images(tmp_path / "release") == [tmp_path / "release" / "Tissue Images" / "c.png"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: no images .* in it or in 'images/' or 'Tissue Images/'"):
        find_images(tmp_path / "empty")
    with pytest.raises(DataError, match="not a folder"):
        list_images(tmp_path / "missing")
