"""MoNuSeg reading: rasterisation rule, layouts, and bad input."""

import logging

import numpy as np
import pytest
import tifffile
from conftest import write_monuseg_folder, xml_text
from PIL import Image

from segzoo.datasets.monuseg import discover_samples, load_sample, rasterize_regions, read_xml_regions
from segzoo.errors import DataError
from segzoo.io.images import read_image


def test_rule_is_pixel_centre_inside_polygon():
    # Pixel (r, c) is inside when the point (x=c, y=r) is: this rectangle covers
    # centres x in {1, 2, 3}, y in {1, 2}; a half-pixel shift would change that.
    poly = np.array([[0.5, 0.5], [3.5, 0.5], [3.5, 2.5], [0.5, 2.5]])
    labels, skipped = rasterize_regions([poly], (5, 5))
    expected = np.zeros((5, 5), np.int32)
    expected[1:3, 1:4] = 1
    np.testing.assert_array_equal(labels, expected)
    assert skipped == 0


def test_integer_vertex_outline_keeps_its_area_and_shared_edges_have_one_owner():
    # The official test XMLs trace nuclei with integer vertices through pixel centres.
    # A 3x2 rectangle of area 6 keeps 6 pixels (top-left rule), not the 12 centres on or
    # inside its outline that an outline-inclusive fill gives.
    poly = np.array([[1.0, 1.0], [4.0, 1.0], [4.0, 3.0], [1.0, 3.0]])
    labels, _ = rasterize_regions([poly], (5, 6))
    expected = np.zeros((5, 6), np.int32)
    expected[1:3, 1:4] = 1
    np.testing.assert_array_equal(labels, expected)
    # Two neighbours sharing the edge x = 4 tile the plane: no pixel claimed twice or lost.
    right = np.array([[4.0, 1.0], [6.0, 1.0], [6.0, 3.0], [4.0, 3.0]])
    left_only, _ = rasterize_regions([poly], (5, 8))
    right_only, _ = rasterize_regions([right], (5, 8))
    assert not np.any((left_only > 0) & (right_only > 0))
    assert np.count_nonzero(left_only) + np.count_nonzero(right_only) == 6 + 4
    # A diamond with vertices on pixel centres: centres on its outline follow the same rule.
    diamond = np.array([[2.0, 0.0], [4.0, 2.0], [2.0, 4.0], [0.0, 2.0]])
    labels, _ = rasterize_regions([diamond], (5, 5))
    assert np.count_nonzero(labels) == 8  # area 8: 5 interior centres + 3 of the 8 on the outline


def test_degenerate_outside_and_overlapping_regions():
    polys = [
        np.array([[1.0, 1.0], [2.0, 2.0]]),  # 2 vertices: skipped
        np.array([[-5.0, -5.0], [2.5, -5.0], [2.5, 2.5], [-5.0, 2.5]]),  # partly outside: clipped
        np.array([[1.5, 1.5], [4.5, 1.5], [4.5, 4.5], [1.5, 4.5]]),  # overlaps the previous one
        np.array([[50.0, 50.0], [60.0, 50.0], [60.0, 60.0]]),  # fully outside
    ]
    labels, skipped = rasterize_regions(polys, (6, 6))
    assert skipped == 1
    assert labels[0, 0] == 2 and labels[2, 0] == 2
    assert labels[2, 2] == 3  # the later region owns the overlap
    assert labels[4, 4] == 3
    assert set(np.unique(labels)) == {0, 2, 3}


def test_xml_regions_parse(tmp_path):
    polys = [np.array([[1.0, 2.0], [3.0, 2.0], [3.0, 4.0]])]
    (tmp_path / "a.xml").write_text(xml_text(polys))
    out = read_xml_regions(tmp_path / "a.xml")
    np.testing.assert_allclose(out[0], polys[0])


@pytest.mark.parametrize("content, message", [
    ("<Annotations><Region>", "malformed XML"),
    ("<Annotations><Annotation><Regions/></Annotation></Annotations>", "no <Region>"),
    ('<Annotations><Region Id="3"><Vertices><Vertex X="a" Y="1"/></Vertices></Region></Annotations>',
     "Region Id=3"),
])
def test_bad_xml_names_file(tmp_path, content, message):
    path = tmp_path / "bad.xml"
    path.write_text(content)
    with pytest.raises(DataError, match=message) as info:
        read_xml_regions(path)
    assert "bad.xml" in str(info.value)


def test_discover_shared_layout(monuseg_folder):
    samples = discover_samples(monuseg_folder)
    assert [s.stem for s in samples] == [f"TILE-{i:02d}" for i in range(4)]
    assert all(s.annotation and s.mask for s in samples)


def test_discover_official_layouts(tmp_path):
    src = write_monuseg_folder(tmp_path / "src", n=2)
    official = tmp_path / "official"
    (official / "Tissue Images").mkdir(parents=True)
    (official / "Annotations").mkdir()
    flat = tmp_path / "flat"
    flat.mkdir()
    for s in discover_samples(src):
        for folder in (official / "Tissue Images", flat):
            (folder / s.image.name).write_bytes(s.image.read_bytes())
        for folder in (official / "Annotations", flat):
            (folder / s.annotation.name).write_bytes(s.annotation.read_bytes())
    for root in (official, flat):
        samples = discover_samples(root)
        assert len(samples) == 2 and all(s.annotation is not None for s in samples)
        np.testing.assert_array_equal(load_sample(samples[0]).mask, load_sample(discover_samples(src)[0]).mask)


def test_mask_only_tiles_use_png(tmp_path):
    root = write_monuseg_folder(tmp_path / "m", n=2, xml_for=0)
    sample = discover_samples(root)[0]
    assert sample.annotation is None
    loaded = load_sample(sample)
    assert loaded.labels is None and loaded.mask.any()


def test_empty_or_wrong_folder(tmp_path):
    with pytest.raises(DataError, match="not found"):
        discover_samples(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found"):
        discover_samples(tmp_path / "empty")
    root = write_monuseg_folder(tmp_path / "m", n=1)
    (root / "masks" / "TILE-00.png").unlink()
    (root / "annotations" / "TILE-00.xml").unlink()
    with pytest.raises(DataError, match="no annotation"):
        discover_samples(root)


def test_mask_size_mismatch(tmp_path):
    root = write_monuseg_folder(tmp_path / "m", n=1, xml_for=0)
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(root / "masks" / "TILE-00.png")
    with pytest.raises(DataError, match="does not match"):
        load_sample(discover_samples(root)[0])


def test_corrupt_image(tmp_path):
    root = write_monuseg_folder(tmp_path / "m", n=1)
    (root / "images" / "TILE-00.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(DataError, match="TILE-00.tif: cannot read image"):
        load_sample(discover_samples(root)[0])


def test_image_conversions_are_explicit(tmp_path, caplog):
    rgb = np.random.default_rng(0).integers(0, 256, (8, 9, 3), dtype=np.uint8)
    caplog.set_level(logging.INFO, logger="segzoo.io.images")
    np.testing.assert_array_equal(read_image(rgb), rgb)
    gray = read_image(rgb[..., 0])
    assert gray.shape == (8, 9, 3) and "grayscale" in caplog.text
    rgba = np.concatenate([rgb, np.full((8, 9, 1), 7, np.uint8)], -1)
    np.testing.assert_array_equal(read_image(rgba), rgb)
    assert "alpha" in caplog.text
    np.testing.assert_array_equal(read_image(rgb.astype(np.uint16) * 257), rgb)
    assert "16-bit" in caplog.text
    np.testing.assert_array_equal(read_image(rgb / 255.0), rgb)
    tifffile.imwrite(tmp_path / "x16.tif", rgb.astype(np.uint16) * 257)
    np.testing.assert_array_equal(read_image(tmp_path / "x16.tif"), rgb)
    Image.fromarray(rgba).save(tmp_path / "x.png")
    np.testing.assert_array_equal(read_image(tmp_path / "x.png"), rgb)
    np.testing.assert_array_equal(read_image(Image.fromarray(rgb)), rgb)


@pytest.mark.parametrize("array, message", [
    (np.zeros((4, 4, 2), np.uint8), "unsupported image shape"),
    (np.zeros((4, 4, 3), np.int64), "unsupported dtype"),
    (np.full((4, 4, 3), 3.0), r"values must lie in \[0, 1\]"),
    (np.zeros((0, 4, 3), np.uint8), "empty image"),
    (np.zeros((4, 4, 3), bool), "mask, not an image"),
])
def test_bad_arrays_rejected(array, message):
    with pytest.raises(DataError, match=message):
        read_image(array)


def test_unsupported_suffix_and_missing_file(tmp_path):
    (tmp_path / "a.bmp").write_bytes(b"BM")
    with pytest.raises(DataError, match="unsupported image type"):
        read_image(tmp_path / "a.bmp")
    with pytest.raises(DataError, match="file not found"):
        read_image(tmp_path / "missing.png")
