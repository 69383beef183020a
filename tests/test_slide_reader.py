"""Whole-slide reading (segzoo.slides.readers) and the tissue mask (segzoo.slides.plan.tissue).

Slides are built by tests/slide_fixtures.py: small Aperio-style pyramidal TIFFs that OpenSlide
opens as 'aperio', OME-TIFFs, plain images.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pytest
import tifffile
from PIL import Image
from slide_fixtures import (
    corrupt_tile,
    downsample2,
    pyramid,
    synthetic_he,
    tissue_region,
    write_aperio_tiff,
    write_ome_tiff,
)

from segzoo.errors import DataError, UsageError
from segzoo.slides.plan.tissue import slide_thumbnail, tissue_mask
from segzoo.slides.readers import factory as reader
from segzoo.slides.readers.array import ArraySlide
from segzoo.slides.readers.base import padded_read
from segzoo.slides.readers.factory import open_slide
from segzoo.slides.readers.openslide import OpenSlideSlide
from segzoo.slides.readers.resolution import best_level, read_scaled, working_scale
from segzoo.slides.readers.tiff import TiffSlide

openslide = pytest.importorskip("openslide")

H, W = 1536, 2048
BACKENDS = ["tifffile", "openslide"]


@pytest.fixture(scope="module")
def he() -> np.ndarray:
    return synthetic_he(H, W, seed=3, tissue_fraction=0.5)


@pytest.fixture(scope="module")
def slides(tmp_path_factory, he) -> dict:
    root = tmp_path_factory.mktemp("slides")
    return {
        "raw": write_aperio_tiff(root / "raw.svs", he, compression=None),
        "jpeg": write_aperio_tiff(root / "jpeg.svs", he, compression="jpeg"),
    }


def regions(width: int, height: int) -> list[tuple[int, int, int, int]]:
    """Inside, crossing each border, spanning tiles, and fully outside (x, y, w, h)."""
    return [(0, 0, 300, 200), (257, 3, 600, 500), (-40, -25, 200, 100), (width - 100, height - 30, 300, 250),
            (width + 10, 5, 50, 40)]


# --------------------------------------------------------------------------------------------- opening


@pytest.mark.parametrize("compression", ["raw", "jpeg"])
def test_aperio_tiff_opens_through_both_backends_alike(slides, compression):
    path = slides[compression]
    assert openslide.OpenSlide.detect_format(str(path)) == "aperio"
    auto = open_slide(path)
    assert isinstance(auto, OpenSlideSlide)  # .svs -> OpenSlide when it is installed
    with open_slide(path, backend="tifffile") as a, open_slide(path, backend="openslide") as b:
        assert isinstance(a, TiffSlide) and isinstance(b, OpenSlideSlide)
        for s in (a, b, auto):
            assert s.level_dimensions == [(W, H), (W // 2, H // 2), (W // 4, H // 4)]
            assert s.level_downsamples == [1.0, 2.0, 4.0]
            assert s.mpp == pytest.approx(0.25)
        # whatever the backend, the same pixels (the same JPEG decoder behind both)
        for level in range(3):
            for x, y, w, h in regions(*a.level_dimensions[level]):
                ra, rb = a.read_region(level, x, y, w, h), b.read_region(level, x, y, w, h)
                assert ra.shape == (h, w, 3) and ra.dtype == np.uint8
                assert np.abs(ra.astype(int) - rb).max() <= 2
    auto.close()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("compression", ["raw", "jpeg"])
def test_regions_equal_the_source_pyramid(slides, he, backend, compression):
    levels = pyramid(he, 3)
    with open_slide(slides[compression], backend=backend) as slide:
        for level in range(3):
            for x, y, w, h in regions(*slide.level_dimensions[level]):
                got = slide.read_region(level, x, y, w, h).astype(int)
                want = padded_read(levels[level], x, y, w, h)
                if compression == "raw":
                    np.testing.assert_array_equal(got, want)
                else:  # JPEG quality 90 error
                    assert np.abs(got - want).mean() < 8
                    assert np.abs(got - want).max() < 90


@pytest.mark.parametrize("backend", BACKENDS)
def test_outside_the_level_is_white(slides, he, backend):
    with open_slide(slides["raw"], backend=backend) as slide:
        w1, h1 = slide.level_dimensions[1]
        region = slide.read_region(1, w1 - 10, h1 - 20, 50, 60)
        assert (region[20:] == 255).all() and (region[:, 10:] == 255).all()
        np.testing.assert_array_equal(region[:20, :10], pyramid(he, 2)[1][h1 - 20:, w1 - 10:])
        assert (slide.read_region(0, -500, -500, 100, 100) == 255).all()


def test_ome_tiff_physical_size_and_units(tmp_path, he):
    um = write_ome_tiff(tmp_path / "um.ome.tif", he, mpp=0.25)
    nm = write_ome_tiff(tmp_path / "nm.ome.tif", he[:512, :512], mpp=500.0, unit="nm")
    none = write_ome_tiff(tmp_path / "none.ome.tif", he[:512, :512], mpp=None)
    with open_slide(um) as slide:
        assert isinstance(slide, TiffSlide)  # OpenSlide's generic-tiff would miss the SubIFD levels
        assert slide.mpp == pytest.approx(0.25)
        assert slide.level_dimensions == [(W, H), (W // 2, H // 2), (W // 4, H // 4)]
        np.testing.assert_array_equal(slide.read_region(2, 10, 20, 100, 80), padded_read(pyramid(he, 3)[2], 10, 20,
                                                                                           100, 80))
    with open_slide(nm) as slide:
        assert slide.mpp == pytest.approx(0.5)
    with open_slide(none) as slide:
        assert slide.mpp is None


def test_unknown_mpp_is_none_and_the_argument_overrides(tmp_path, he, caplog):
    path = write_aperio_tiff(tmp_path / "nompp.svs", he[:512, :512], mpp=None, levels=2)
    for backend in BACKENDS:
        with open_slide(path, backend=backend) as slide:
            assert slide.mpp is None
        with open_slide(path, backend=backend, mpp=0.5) as slide:
            assert slide.mpp == 0.5
    known = write_aperio_tiff(tmp_path / "m.svs", he[:512, :512], mpp=0.25, levels=2)
    with caplog.at_level(logging.INFO, logger="segzoo.slides.readers.factory"), open_slide(known, mpp=0.3) as slide:
        assert slide.mpp == 0.3
    assert "overrides the file's 0.2500" in caplog.text
    with pytest.raises(DataError, match="positive"):
        open_slide(path, mpp=0)
    with pytest.raises(DataError, match="unknown"):
        best_level(open_slide(path), 0.25)


def test_tiff_resolution_tags(tmp_path, he):
    cm = tmp_path / "cm.tif"
    tifffile.imwrite(cm, he[:256, :256], photometric="rgb", tile=(128, 128), resolution=(1e4 / 0.5, 1e4 / 0.5),
                     resolutionunit="CENTIMETER")
    dpi72 = tmp_path / "dpi72.tif"  # the writers' default 72 dpi means nothing
    tifffile.imwrite(dpi72, he[:256, :256], photometric="rgb", tile=(128, 128), resolution=(72, 72),
                     resolutionunit="INCH")
    with open_slide(cm) as slide:
        assert isinstance(slide, TiffSlide) and slide.mpp == pytest.approx(0.5)
    with open_slide(dpi72) as slide:
        assert slide.mpp is None


def test_plain_images_are_read_whole(tmp_path, he, monkeypatch):
    png = tmp_path / "tile.png"
    Image.fromarray(he[:300, :400]).save(png)
    slide = open_slide(png)
    assert isinstance(slide, ArraySlide) and slide.mpp is None
    np.testing.assert_array_equal(slide.image, he[:300, :400])
    assert open_slide(png, mpp=0.25).mpp == 0.25
    stripped = tmp_path / "stripped.tif"
    tifffile.imwrite(stripped, he[:300, :400], photometric="rgb", rowsperstrip=7)
    assert isinstance(open_slide(stripped), ArraySlide)
    # above the plain-image size the same file is read strip by strip
    monkeypatch.setattr(reader, "PLAIN_TIFF_MAX_SIDE", 100)
    with open_slide(stripped) as slide:
        assert isinstance(slide, TiffSlide)
        for x, y, w, h in [(0, 0, 400, 300), (13, 5, 97, 40), (350, 290, 100, 30)]:
            np.testing.assert_array_equal(slide.read_region(0, x, y, w, h), padded_read(he[:300, :400], x, y, w, h))


def test_tifffile_converts_planar_gray_uint16_and_alpha(tmp_path, he):
    img = he[:200, :300]
    planar = tmp_path / "planar.tif"
    tifffile.imwrite(planar, np.moveaxis(img, 2, 0), photometric="rgb", planarconfig="separate", tile=(64, 64))
    gray16 = tmp_path / "gray16.tif"
    gray = img[..., 1]
    tifffile.imwrite(gray16, gray.astype(np.uint16) * 257, tile=(64, 64))
    rgba = tmp_path / "rgba.tif"
    alpha = np.full(img.shape[:2], 255, np.uint8)
    alpha[:, :100] = 0
    tifffile.imwrite(rgba, np.dstack([img, alpha]), photometric="rgb", extrasamples="unassalpha", tile=(64, 64))
    with open_slide(planar) as s:
        np.testing.assert_array_equal(s.read_region(0, -5, 7, 120, 90), padded_read(img, -5, 7, 120, 90))
    with open_slide(gray16) as s:
        np.testing.assert_array_equal(s.read_region(0, 3, 4, 100, 100), np.repeat(gray[4:104, 3:103, None], 3, -1))
    with open_slide(rgba) as s:
        region = s.read_region(0, 0, 0, 300, 200)
        assert (region[:, :100] == 255).all()  # transparent -> white glass
        np.testing.assert_array_equal(region[:, 100:], img[:, 100:])


def test_tifffile_decodes_only_the_tiles_a_region_touches(slides, monkeypatch):
    with open_slide(slides["jpeg"], backend="tifffile") as slide:
        decoded = []
        original = slide._decode
        monkeypatch.setattr(slide, "_decode", lambda src, index, *a: decoded.append(index) or original(src, index, *a))
        slide.read_region(0, 257, 3, 600, 500)  # 256 px tiles: columns 1-3, rows 0-1 of 8 x 6
        assert sorted(decoded) == [1, 2, 3, 9, 10, 11]


def test_huge_sparse_bigtiff_reads_regions_without_loading_the_level(tmp_path):
    import itertools
    import tracemalloc

    pink = np.full((512, 512, 3), (230, 160, 200), np.uint8)
    n_tiles = (100_000 // 512 + 1) ** 2
    path = tmp_path / "huge.tif"  # 100000 x 100000 (30 GB of pixels), one stored tile, the rest empty
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        tw.write(itertools.chain([pink], itertools.repeat(None, n_tiles - 1)), shape=(100_000, 100_000, 3),
                 dtype=np.uint8, tile=(512, 512), photometric="rgb", compression="jpeg",
                 resolution=(40_000, 40_000), resolutionunit="CENTIMETER")
    tracemalloc.start()
    try:
        with open_slide(path) as slide:
            assert isinstance(slide, TiffSlide)
            assert slide.level_dimensions == [(100_000, 100_000)] and slide.mpp == pytest.approx(0.25)
            region = slide.read_region(0, 400, 300, 300, 400)
            far = slide.read_region(0, 99_900, 99_950, 300, 100)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert np.abs(region[:212, :112].astype(int) - pink[300:, 400:]).max() <= 3  # the stored tile
    assert (region[212:] == 255).all() and (region[:, 112:] == 255).all()  # empty tiles: white
    assert (far == 255).all()
    assert peak < 50e6, f"peak {peak / 1e6:.0f} MB"


def test_errors_name_the_file_and_the_options(tmp_path):
    with pytest.raises(DataError, match="missing.svs: file not found"):
        open_slide(tmp_path / "missing.svs")
    odd = tmp_path / "slide.czi"
    odd.write_bytes(b"not a slide")
    with pytest.raises(DataError, match=r"unsupported slide type '\.czi'; supported: .*\.svs.*\.ndpi.*\.tif"):
        open_slide(odd)
    broken = tmp_path / "broken.svs"
    broken.write_bytes(b"this is not a slide at all" * 10)
    with pytest.raises(DataError, match=r"broken.svs: cannot open slide; tried OpenSlide: .*; tifffile: "):
        open_slide(broken)
    with pytest.raises(UsageError, match="valid: openslide, tifffile"):  # an argument, not the file
        open_slide(broken, backend="bioformats")


@pytest.mark.parametrize("backend", BACKENDS)
def test_corrupt_tile_names_the_region_and_the_rest_still_reads(tmp_path, he, backend):
    path = write_aperio_tiff(tmp_path / "corrupt.svs", he, compression="jpeg")
    corrupt_tile(path, page=0, tile_index=9)  # level 0, tile row 1, column 1: pixels [256, 512) x [256, 512)
    with open_slide(path, backend=backend) as slide:
        with pytest.raises(DataError, match=r"corrupt.svs: cannot read level 0 region \(x=300, y=280, width=100, "
                                            r"height=50\)"):
            slide.read_region(0, 300, 280, 100, 50)
        for x, y in [(0, 0), (600, 600), (1000, 200)]:  # other regions, also after the failure
            got = slide.read_region(0, x, y, 200, 200).astype(int)
            assert np.abs(got - he[y:y + 200, x:x + 200]).mean() < 8
        got = slide.read_region(1, 0, 0, 256, 256).astype(int)  # other levels are intact
        assert np.abs(got - pyramid(he, 2)[1][:256, :256]).mean() < 8


# --------------------------------------------------------------------------------------------- resolution


def _slide(mpp: float, levels: int = 3, size: int = 1024) -> SimpleNamespace:
    """A stand-in with the geometry of a `levels`-level 2x pyramid (best_level reads no pixels)."""
    return SimpleNamespace(path=None, mpp=mpp, level_dimensions=[(size >> k, size >> k) for k in range(levels)],
                           level_downsamples=[2.0**k for k in range(levels)])


def test_best_level_choices():
    assert best_level(_slide(0.25), 0.25) == (0, 0.25)  # 40x slide, 40x model
    level, level_mpp = best_level(_slide(0.5), 0.25)  # 20x slide: level 0, upsampled 2x
    assert (level, level_mpp, working_scale(level_mpp, 0.25)) == (0, 0.5, 2.0)
    level, level_mpp = best_level(_slide(0.125), 0.25)  # 80x slide: its 2x level is the model's resolution
    assert (level, level_mpp, working_scale(level_mpp, 0.25)) == (1, 0.25, 1.0)
    level, level_mpp = best_level(_slide(0.252), 0.25)  # 1% coarser: level 0, no resampling
    assert (level, working_scale(level_mpp, 0.25)) == (0, 1.0)
    assert best_level(_slide(0.26), 0.5)[0] == 1  # 0.52 is within the 10% tolerance of 0.5
    assert best_level(_slide(0.24), 0.5)[0] == 1
    assert best_level(_slide(0.3), 0.25) == (0, 0.3)
    assert best_level(_slide(0.25), 8.0) == (2, 1.0)  # never coarser than the coarsest level
    assert working_scale(0.13, 0.25) == pytest.approx(0.52)


def test_read_scaled_at_scale_one_is_read_region(slides):
    with open_slide(slides["raw"], backend="tifffile") as slide:
        for args in [(0, 10, 20, 300, 200), (1, -7, 5, 64, 64)]:
            np.testing.assert_array_equal(read_scaled(slide, args[0], 1.0, *args[1:]), slide.read_region(*args))


def _disc_image(h: int, w: int, cx: float, cy: float, r: float) -> np.ndarray:
    """Pink HxW with a purple disc of radius r centred at (cx, cy) (pixel-centre convention), 4x4 supersampled."""
    yy, xx = np.ogrid[0:h * 4, 0:w * 4]
    inside = ((xx + 0.5) / 4 - cx) ** 2 + ((yy + 0.5) / 4 - cy) ** 2 < r * r
    cover = inside.reshape(h, 4, w, 4).mean(axis=(1, 3))[..., None]
    pink, purple = np.array([232, 168, 206]), np.array([86, 52, 140])
    return np.round(pink * (1 - cover) + purple * cover).astype(np.uint8)


def _centroid(region: np.ndarray) -> tuple[float, float]:
    weight = np.clip(232.0 - region[..., 0].astype(float), 0, None)
    yy, xx = np.mgrid[0:region.shape[0], 0:region.shape[1]]
    return float((weight * (xx + 0.5)).sum() / weight.sum()), float((weight * (yy + 0.5)).sum() / weight.sum())


def test_read_scaled_of_a_20x_copy_matches_the_40x_image(tmp_path, he):
    # a nucleus drawn at a known position of a 40x image comes back there from the 20x copy
    x40 = _disc_image(320, 400, cx=300.3, cy=200.8, r=7.0)
    path = write_aperio_tiff(tmp_path / "20x.svs", downsample2(x40), mpp=0.5, levels=1, compression=None)
    with open_slide(path) as slide:
        level, level_mpp = best_level(slide, 0.25)
        scale = working_scale(level_mpp, 0.25)
        assert (level, scale) == (0, 2.0)
        region = read_scaled(slide, level, scale, 260, 150, 80, 100)  # working (40x) coordinates
    cx, cy = _centroid(region)
    assert (cx + 260, cy + 150) == (pytest.approx(300.3, abs=0.1), pytest.approx(200.8, abs=0.1))
    assert np.abs(region.astype(int) - x40[150:250, 260:340]).mean() < 3

    # the H&E-like image: the 20x copy resampled to 40x is the 40x image up to the detail the 20x lost
    path = write_aperio_tiff(tmp_path / "he20x.svs", downsample2(he), mpp=0.5, levels=2, compression=None)
    with open_slide(path, backend="tifffile") as slide:
        got = read_scaled(slide, 0, 2.0, 500, 400, 512, 384).astype(int)
    assert np.abs(got - he[400:784, 500:1012]).mean() < 8
    # and equals skimage's resize of the whole 20x image (same pixel-centre convention)
    from skimage.transform import resize

    whole = resize(downsample2(he)[150:450, 200:500].astype(float), (600, 600), order=1, preserve_range=True)
    np.testing.assert_allclose(got[50:250, 100:300], np.round(whole[150:350, 200:400]), atol=1)


@pytest.mark.parametrize("scale", [256 / 512, 160 / 512, 64 / 512, 40 / 512])  # 1/2, 1/3.2, 1/8, 1/12.8
def test_read_scaled_downsampling_keeps_positions_and_is_antialiased(scale):
    # a nucleus stays where it is
    image = _disc_image(320, 400, cx=300.3, cy=200.8, r=7.0)
    x0, y0 = int(260 * scale), int(160 * scale)
    region = read_scaled(ArraySlide(image), 0, scale, x0, y0, int(80 * scale) + 2, int(80 * scale) + 2)
    cx, cy = _centroid(np.where(region == 255, 232, region))  # white outside the image is no nucleus
    assert cx + x0 == pytest.approx(300.3 * scale, abs=0.05)
    assert cy + y0 == pytest.approx(200.8 * scale, abs=0.05)
    # the pixels: close to skimage's antialiased resize (Gaussian prefilter + bilinear)
    from skimage.transform import resize

    he = synthetic_he(512, 512, seed=5, tissue_fraction=1.0)
    n = round(512 * scale)
    got = read_scaled(ArraySlide(he), 0, scale, 0, 0, n, n).astype(float)
    want = resize(he.astype(float), (n, n), order=1, anti_aliasing=True, preserve_range=True)
    assert np.abs(got[2:-2, 2:-2] - want[2:n - 2, 2:n - 2]).mean() < 1.5


def test_read_scaled_tiles_agree_and_outside_is_white(he):
    slide = ArraySlide(he, mpp=0.125)
    for scale in (0.5, 0.37, 2.0, 1.3):
        n = 300
        whole = read_scaled(slide, 0, scale, 0, 0, 2 * n, n).astype(int)
        part = read_scaled(slide, 0, scale, 123, 45, 150, 100)
        assert np.abs(whole[45:145, 123:273] - part).max() <= 1  # chunks agree with one big read
    edge = read_scaled(slide, 0, 0.5, W // 2 - 50, 0, 100, 20)
    assert (edge[:, 52:] == 255).all()
    # 1-pixel stripes read at 1/3 average to grey (+-15 left by the triangle filter) instead of
    # aliasing into 0/255 stripes as point sampling would
    stripes = np.zeros((96, 96, 3), np.uint8)
    stripes[:, ::2] = 255
    flat = read_scaled(ArraySlide(stripes), 0, 1 / 3, 4, 4, 24, 24).astype(float)
    assert flat.std() < 25 and abs(flat.mean() - 127.5) < 10


# --------------------------------------------------------------------------------------------- tissue


class _Recorder:
    """A slide proxy recording the levels read."""

    def __init__(self, slide):
        self.slide, self.levels = slide, []
        self.path, self.mpp = slide.path, slide.mpp
        self.level_dimensions, self.level_downsamples = slide.level_dimensions, slide.level_downsamples

    def read_region(self, level, x, y, width, height):
        self.levels.append(level)
        return self.slide.read_region(level, x, y, width, height)

    def close(self):
        self.slide.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_tissue_mask_covers_the_tissue_half_only(slides, backend):
    with open_slide(slides["jpeg"], backend=backend) as slide:
        recorder = _Recorder(slide)
        thumb, downsample = slide_thumbnail(recorder, target_mpp=4.0)
        assert downsample == 16.0 and thumb.shape == (H // 16, W // 16, 3)
        assert set(recorder.levels) == {2}  # the coarsest level (4x) that is fine enough, never level 0
        mask = tissue_mask(thumb, mpp=slide.mpp * downsample)
    assert mask.dtype == bool and mask.shape == thumb.shape[:2]
    truth = tissue_region(H, W, 0.5)[8::16, 8::16]
    assert (mask == truth).mean() > 0.98
    assert mask[:, : W // 16 // 3].all() and not mask[:, -W // 16 // 3:].any()


def test_thumbnail_size_limit_and_plain_slide(he):
    thumb, downsample = slide_thumbnail(ArraySlide(he, mpp=None), max_side=256)
    assert downsample == W / 256 and thumb.shape == (192, 256, 3)
    thumb, downsample = slide_thumbnail(ArraySlide(he, mpp=0.25))  # 8 um/px by default
    assert downsample == 32.0 and thumb.shape == (48, 64, 3)


def test_blank_slide_has_no_tissue(tmp_path):
    rng = np.random.default_rng(0)
    glass = (255 - rng.integers(0, 4, (1024, 1024, 3))).astype(np.uint8)
    path = write_aperio_tiff(tmp_path / "blank.svs", glass, compression="jpeg")
    with open_slide(path) as slide:
        thumb, downsample = slide_thumbnail(slide, target_mpp=2.0)
    assert not tissue_mask(thumb, mpp=0.25 * downsample).any()
    assert not tissue_mask(np.zeros((64, 64, 3), np.uint8)).any()  # no-data black
    assert not tissue_mask(np.full((64, 64, 3), (200, 200, 200), np.uint8)).any()  # grey, unstained


def test_tissue_mask_keeps_pale_tissue_when_all_is_tissue():
    pale = synthetic_he(512, 512, seed=1, tissue_fraction=1.0)
    thumb = read_scaled(ArraySlide(pale), 0, 1 / 8, 0, 0, 64, 64)
    assert tissue_mask(thumb, mpp=2.0).all()


def test_pil_rgba_conversion_equals_the_numpy_rule_and_is_writable():
    from PIL import Image

    from segzoo.slides.readers.base import image_rgba_to_rgb, rgba_to_rgb

    rgba = np.random.default_rng(3).integers(0, 256, (40, 50, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    for alpha in (None, 0, 128):  # opaque (Pillow's path), transparent and half-transparent corners
        if alpha is not None:
            rgba[:5, :7, 3] = alpha
        out = image_rgba_to_rgb(Image.fromarray(rgba, "RGBA"))
        np.testing.assert_array_equal(out, rgba_to_rgb(rgba))
        assert out.shape == (40, 50, 3) and out.dtype == np.uint8 and out.flags.writeable
