"""Slide files cut short (an interrupted copy) fail in one line that names the file, says it is
truncated or damaged and where it stops: when opened through either backend, when read after
shrinking, and through `segzoo predict` (issue 29 item 6). A corrupt tile inside an intact-length
file still only fails the regions that touch it (tests/test_slide_reader.py)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from slide_fixtures import synthetic_he, write_aperio_tiff, write_ome_tiff

from segzoo.cli import main
from segzoo.errors import DataError
from segzoo.slides.plan.tissue import slide_thumbnail
from segzoo.slides.readers.factory import check_complete, is_whole_slide, open_slide, tiff_truncation

CUTS = [0.1, 0.3, 0.5, 0.7, 0.9, 0.99]
BACKENDS = [None, "tifffile", "openslide"]
# a Python exception's class name in a message (IndexError, struct.error, TiffFileError, Jpeg8Error, ...)
CLASS_NAME = re.compile(r"\b[A-Z]\w*(Error|Exception)\b|\bstruct\.error\b|\berror: unpack")


@pytest.fixture(scope="module")
def originals(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("intact")
    he = synthetic_he(512, 640, seed=5)
    return {"jpeg": write_aperio_tiff(root / "jpeg.svs", he, tile=128),
            "raw": write_aperio_tiff(root / "raw.svs", he, tile=128, compression=None)}


def _cut(source: Path, folder: Path, size: int) -> Path:
    path = folder / f"cut_{source.stem}_{size}.svs"
    path.write_bytes(source.read_bytes()[:size])
    return path


def _backend(backend):
    if backend == "openslide":
        pytest.importorskip("openslide")
    return backend


def _check_message(err: DataError, path: Path) -> None:
    text = str(err)
    assert "\n" not in text and text.startswith(f"{path}: ")
    assert "truncated or damaged" in text and "copy the file again" in text
    assert not CLASS_NAME.search(text), text


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["jpeg", "raw"])
def test_a_file_cut_short_fails_to_open_in_one_line_naming_where(originals, tmp_path, kind, backend):
    backend = _backend(backend)
    data_size = originals[kind].stat().st_size
    for size in [0, 5, 100] + [int(data_size * f) for f in CUTS] + [data_size - 1]:
        path = _cut(originals[kind], tmp_path, size)
        with pytest.raises(DataError) as caught, open_slide(path, backend=backend) as slide:
            for level, (w, h) in enumerate(slide.level_dimensions):
                slide.read_region(level, 0, 0, w, h)
            slide_thumbnail(slide)
        _check_message(caught.value, path)
        if size >= 100:  # past the header: the byte offset and the file's size are named
            assert re.search(rf"at bytes? \d+.* past the end of the file \({size} bytes\)", str(caught.value))


def test_the_first_level_cut_is_named(originals, tmp_path):
    path = _cut(originals["raw"], tmp_path, int(originals["raw"].stat().st_size * 0.3))
    with pytest.raises(DataError, match=r"level 0 \(TIFF page 0\) tile data at bytes \d+-\d+ runs past the end"):
        open_slide(path, backend="tifffile")
    assert tiff_truncation(originals["raw"]) is None and tiff_truncation(Path(__file__)) is None
    check_complete(originals["jpeg"])  # intact: nothing raised


def test_an_ome_tiff_cut_in_a_subifd_level_names_it(tmp_path):
    path = write_ome_tiff(tmp_path / "intact.ome.tif", synthetic_he(512, 512, seed=2), levels=3, tile=128)
    data = path.read_bytes()
    cut = tmp_path / "cut.ome.tif"
    cut.write_bytes(data[:-100])
    assert is_whole_slide(cut)  # goes to the slide path, which says what is wrong
    with pytest.raises(DataError) as caught:
        open_slide(cut)
    _check_message(caught.value, cut)
    assert "SubIFD" in str(caught.value) or "level" in str(caught.value)


@pytest.mark.parametrize("backend", ["tifffile", "openslide"])
def test_a_file_that_shrinks_after_opening_fails_its_reads_in_one_line(originals, tmp_path, backend):
    _backend(backend)
    path = tmp_path / "shrinks.svs"
    data = originals["raw"].read_bytes()
    path.write_bytes(data)
    with open_slide(path, backend=backend) as slide:
        slide.read_region(2, 0, 0, 64, 64)
        with open(path, "r+b") as fh:
            fh.truncate(len(data) // 3)
        with pytest.raises(DataError) as caught:
            for level in (0, 1):  # level 0 past the cut, then level 1 (past it, and not cached)
                w, h = slide.level_dimensions[level]
                slide.read_region(level, 0, 0, w, h)
    text = str(caught.value)
    assert "\n" not in text and str(path) in text and "truncated or damaged" in text
    assert not CLASS_NAME.search(text), text


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_intact_slide_still_opens_and_reads(originals, backend):
    backend = _backend(backend)
    with open_slide(originals["raw"], backend=backend) as slide:
        assert slide.level_dimensions == [(640, 512), (320, 256), (160, 128)]
        region = slide.read_region(0, 0, 0, 640, 512)
        assert region.shape == (512, 640, 3) and region.dtype == np.uint8


def test_segzoo_predict_on_a_cut_slide_is_one_error_line(originals, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = _cut(originals["jpeg"], tmp_path, int(originals["jpeg"].stat().st_size * 0.5))
    code = main(["predict", str(path), "--out", str(tmp_path / "o"), "--model", "unet-monuseg",
                 "--precision", "int8"])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 1 and len(errors) == 1, err
    assert path.name in errors[0] and "truncated or damaged" in errors[0] and not CLASS_NAME.search(errors[0])
