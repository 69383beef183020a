"""Images are read as viewers display them: EXIF/TIFF orientation, planar and multi-page TIFFs."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image, ImageOps

from segzoo.errors import DataError
from segzoo.io.images import read_image, read_mask


def _displayed() -> np.ndarray:
    """A 40x60 RGB image no flip or rotation maps onto itself (distinct corner colours)."""
    image = np.random.default_rng(0).integers(60, 200, (40, 60, 3), dtype=np.uint8)
    image[:8, :8] = (255, 0, 0)     # top-left red
    image[:8, -8:] = (0, 255, 0)    # top-right green
    image[-8:, :8] = (0, 0, 255)    # bottom-left blue
    return image


def _with_orientation(stored: np.ndarray, orientation: int):
    """(PIL image of `stored`, its Exif with the Orientation tag set)."""
    img = Image.fromarray(stored)
    exif = img.getexif()
    exif[0x0112] = orientation
    img.info["exif"] = exif.tobytes()
    return img, exif


def _pil_reference(stored: np.ndarray, orientation: int, tmp_path) -> np.ndarray:
    """What PIL.ImageOps.exif_transpose (and so every EXIF-aware viewer) displays."""
    img, exif = _with_orientation(stored, orientation)
    path = tmp_path / f"ref{orientation}.png"
    img.save(path, exif=exif)
    with Image.open(path) as back:
        return np.array(ImageOps.exif_transpose(back))


def test_jpeg_exif_orientation_6_reads_as_displayed(tmp_path):
    displayed = _displayed()
    stored = np.ascontiguousarray(np.rot90(displayed, 1))  # 60x40; orientation 6 = rotate 90 clockwise to view
    img, exif = _with_orientation(stored, 6)
    img.save(tmp_path / "rotated.jpg", exif=exif, quality=100, subsampling=0)
    out = read_image(tmp_path / "rotated.jpg")
    assert out.shape == displayed.shape
    assert np.abs(out.astype(int) - displayed).max() <= 8  # JPEG at quality 100
    assert out[2, 2, 0] > 200 and out[2, -3, 1] > 200 and out[-3, 2, 2] > 200  # red, green, blue corners


@pytest.mark.parametrize("orientation", range(1, 9))
def test_png_and_pil_image_exif_orientation_match_exif_transpose(tmp_path, orientation):
    stored = _displayed()
    img, exif = _with_orientation(stored, orientation)
    img.save(tmp_path / "o.png", exif=exif)
    expected = _pil_reference(stored, orientation, tmp_path)
    np.testing.assert_array_equal(read_image(tmp_path / "o.png"), expected)
    with Image.open(tmp_path / "o.png") as opened:  # a PIL image passed in
        np.testing.assert_array_equal(read_image(opened), expected)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_tiff_orientation_tag_matches_exif_transpose(tmp_path, orientation):
    stored = _displayed()
    tifffile.imwrite(tmp_path / "o.tif", stored, photometric="rgb",
                     extratags=[(274, "H", 1, orientation, True)])
    np.testing.assert_array_equal(read_image(tmp_path / "o.tif"), _pil_reference(stored, orientation, tmp_path))


def test_mask_follows_the_same_orientation_as_its_image(tmp_path):
    displayed = np.zeros((40, 60), np.uint8)
    displayed[:10, :5] = 255
    stored = np.ascontiguousarray(np.rot90(displayed, 1))
    img, exif = _with_orientation(stored, 6)
    img.save(tmp_path / "m.png", exif=exif)
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png"), displayed > 0)


def test_planar_rgb_tiff_is_read_channels_last(tmp_path):
    image = _displayed()
    tifffile.imwrite(tmp_path / "planar.tif", np.ascontiguousarray(image.transpose(2, 0, 1)),
                     photometric="rgb", planarconfig="separate")
    with tifffile.TiffFile(tmp_path / "planar.tif") as tif:
        assert tif.pages[0].planarconfig == 2 and tif.pages[0].shape == (3, 40, 60)
    np.testing.assert_array_equal(read_image(tmp_path / "planar.tif"), image)


def test_multipage_and_pyramidal_tiff_read_the_first_full_resolution_page(tmp_path):
    image = _displayed()
    thumbnail = image[::4, ::4].copy()
    with tifffile.TiffWriter(tmp_path / "pages.tif") as tif:  # SVS-like: full image, then a thumbnail
        tif.write(image, photometric="rgb")
        tif.write(thumbnail, photometric="rgb")
    np.testing.assert_array_equal(read_image(tmp_path / "pages.tif"), image)
    with tifffile.TiffWriter(tmp_path / "pyramid.tif") as tif:  # OME-like: reduced levels in SubIFDs
        tif.write(image, photometric="rgb", subifds=1, tile=(16, 16))
        tif.write(image[::2, ::2].copy(), photometric="rgb", subfiletype=1, tile=(16, 16))
    np.testing.assert_array_equal(read_image(tmp_path / "pyramid.tif"), image)


def test_corrupt_tiff_is_one_data_error_naming_the_file(tmp_path):
    path = tmp_path / "broken.tif"
    path.write_bytes(b"II*\x00" + b"\xff" * 64)
    with pytest.raises(DataError, match=r"broken\.tif: cannot read image"):
        read_image(path)
    good = tmp_path / "cut.tif"
    tifffile.imwrite(good, _displayed(), photometric="rgb")
    data = good.read_bytes()
    good.write_bytes(data[: len(data) // 2])  # truncated pixel data
    with pytest.raises(DataError, match=r"cut\.tif: cannot read image"):
        read_image(good)
