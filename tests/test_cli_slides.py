"""Whole slides through `segzoo predict` and segzoo.predict_slides: slide files go down the
chunked slide path (GeoJSON, CSV, thumbnail, tissue mask, run summary), plain images keep
theirs, and every failure is one line."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from slide_fixtures import synthetic_he, write_aperio_tiff

from segzoo.cli import main
from segzoo.slides.readers.factory import is_whole_slide

SAMPLE = Path(__file__).resolve().parents[1] / "segzoo" / "samples" / "monuseg_sample.png"
SLIDE_OUTPUTS = (".geojson", "_nuclei.csv", "_thumbnail.png", "_tissue.png")


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    """A folder with a 40x Aperio slide, a slide without resolution and a plain PNG."""
    folder = tmp_path_factory.mktemp("slides")
    image = synthetic_he(700, 900, seed=3, tissue_fraction=0.7)
    write_aperio_tiff(folder / "a.svs", image, mpp=0.25, levels=2)
    write_aperio_tiff(folder / "nompp.tif", image, mpp=None, levels=2, compression=None)
    shutil.copy(SAMPLE, folder / "plain.png")
    return folder


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _run(*argv: str) -> int:
    return main(["predict", *argv, "--model", "unet-monuseg", "--precision", "int8"])


def test_slides_are_told_from_plain_images(slides):
    assert is_whole_slide(slides / "a.svs") and is_whole_slide(slides / "nompp.tif")
    assert not is_whole_slide(slides / "plain.png")
    assert not is_whole_slide(SAMPLE)


def test_a_folder_of_slides_and_images(slides, tmp_path, capsys):
    out = tmp_path / "out"
    code = _run(str(slides / "a.svs"), str(slides / "plain.png"), "--out", str(out), "--formats", "mask,geojson")
    assert code == 0, capsys.readouterr().err
    for suffix in SLIDE_OUTPUTS:
        assert (out / f"a{suffix}").is_file()
    assert (out / "plain_mask.png").is_file() and (out / "plain.geojson").is_file()
    rows = list(csv.DictReader((out / "segzoo_summary.csv").open()))
    assert [(Path(r["slide"]).name, r["status"]) for r in rows] == [("a.svs", "ok")]
    features = json.loads((out / "a.geojson").read_text())["features"]
    assert int(rows[0]["nuclei"]) == len(features) > 20
    # Again without --overwrite: refused in one line, nothing replaced.
    before = (out / "a.geojson").read_bytes()
    assert _run(str(slides / "a.svs"), "--out", str(out)) == 1
    err = capsys.readouterr().err
    assert "a.svs" in err and "Traceback" not in err
    assert (out / "a.geojson").read_bytes() == before


def test_a_slide_without_resolution_is_one_line_and_mpp_fixes_it(slides, tmp_path, capsys):
    out = tmp_path / "out"
    assert _run(str(slides / "nompp.tif"), "--out", str(out)) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "nompp.tif" in lines[0] and "--mpp" in lines[0]
    assert "Traceback" not in err
    assert _run(str(slides / "nompp.tif"), "--out", str(out), "--mpp", "0.25") == 0


@pytest.mark.parametrize("argv, message", [
    (["--workers", "2"], "none of the inputs is a slide"),
    (["--mpp", "0"], "--mpp"),
    (["--workers", "2", "--dask", "tcp://127.0.0.1:1"], "not allowed with"),
])
def test_slide_arguments_are_checked_up_front(tmp_path, capsys, argv, message):
    assert _run(str(SAMPLE), "--out", str(tmp_path / "o"), *argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_segzoo_predict_slides(slides, tmp_path):
    import segzoo
    from segzoo.predict.source import ModelSource
    from segzoo.slides.options import SlideOptions

    predictor = segzoo.load("unet-monuseg", precision="int8")
    assert predictor.source == ModelSource("unet-monuseg", "int8", "onnx")
    [summary] = segzoo.predict_slides(predictor, [slides / "a.svs"], tmp_path / "o",
                                      options=SlideOptions(summary=False))
    assert summary.status == "ok" and summary.nuclei > 20
    assert summary.outputs["geojson"].is_file()
    assert not (tmp_path / "o" / "segzoo_summary.csv").exists()
    many = segzoo.predict_slides("unet-monuseg", [slides / "a.svs"], tmp_path / "o2", precision="int8")
    assert [s.nuclei for s in many] == [summary.nuclei]
    assert (tmp_path / "o2" / "segzoo_summary.csv").is_file()
