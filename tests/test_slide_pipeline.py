"""Whole-slide prediction in chunks: stitching equals the whole-image result, streamed outputs,
resume, faults, level-0 coordinates through resampling (segzoo.slides.plan, .results, .run)."""

from __future__ import annotations

import copy
import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from slide_fixtures import predict_one_slide as predict_slide

from segzoo.errors import DataError, SegzooError
from segzoo.io.images import sample_image_path
from segzoo.predict.predictor import Predictor
from segzoo.slides.plan.chunks import Chunk, plan_chunks
from segzoo.slides.plan.grid import Grid
from segzoo.slides.plan.targets import COLUMNS
from segzoo.slides.readers.array import ArraySlide
from segzoo.slides.results.chunk_result import ChunkResult
from segzoo.slides.run.chunk_inference import chunk_nuclei, predict_chunk

BUNDLED_INT8 = Path(__file__).resolve().parents[1] / "segzoo" / "bundled" / "unet-monuseg" / "model.int8.onnx"


@pytest.fixture(scope="module")
def int8_predictor() -> Predictor:
    """The bundled int8 unet-monuseg on onnxruntime, with resolution.mpp 0.25 (MoNuSeg, 40x)."""
    from segzoo.runtime.onnx import onnx_runner
    from segzoo.runtime.onnx_format import read_segzoo_onnx

    data, config = read_segzoo_onnx(BUNDLED_INT8)
    config = copy.deepcopy(config)
    config.resolution.mpp = 0.25
    return Predictor(onnx_runner(data), config, runtime="onnx")


def _sample() -> np.ndarray:
    return np.asarray(Image.open(sample_image_path()).convert("RGB"))


def _raster(offsets: np.ndarray, vertices: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """int32 labels 1..n: pixels whose centre lies inside each ring (later rings win overlaps)."""
    from skimage.draw import polygon

    labels = np.zeros(shape, np.int32)
    for i in range(len(offsets) - 1):
        ring = vertices[offsets[i]:offsets[i + 1]]
        rr, cc = polygon(ring[:, 1], ring[:, 0], shape)
        labels[rr, cc] = i + 1
    return labels


def _best_iou(reference: np.ndarray, other: np.ndarray) -> np.ndarray:
    """For each nucleus of the label image `reference`, its best IoU with any nucleus of `other`."""
    present, reference = np.unique(reference, return_inverse=True)  # 0 stays 0, the rest 1..n
    reference = reference.reshape(other.shape)
    n, m = len(present) - 1, int(other.max())
    pairs = np.bincount(reference.ravel().astype(np.int64) * (m + 1) + other.ravel(),
                        minlength=(n + 1) * (m + 1)).reshape(n + 1, m + 1)
    inter = pairs[1:, 1:]
    union = pairs[1:, :].sum(1)[:, None] + pairs[:, 1:].sum(0)[None, :] - inter
    return (inter / np.maximum(union, 1)).max(axis=1) if m else np.zeros(n)


def _csv_rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _geojson_rings(path: Path) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    features = json.loads(path.read_text())["features"]
    rings = [np.array(f["geometry"]["coordinates"][0], float) for f in features]
    offsets = np.concatenate([[0], np.cumsum([len(r) for r in rings])]).astype(np.int64)
    vertices = np.concatenate(rings) if rings else np.zeros((0, 2))
    return offsets, vertices, features


# ---------------------------------------------------------------------------------------------
# geometry: plan, outlines, simplification, chunk files


def test_plan_chunks_tiles_the_extent_on_the_stride_grid_and_skips_glass():
    chunks = plan_chunks((1000, 700), 200, 40, stride=16)  # rounded up: 208 and 48
    covered = np.zeros((700, 1000), np.int32)
    for c in chunks:
        x0, y0, x1, y1 = c.core
        covered[y0:y1, x0:x1] += 1
        rx0, ry0, rx1, ry1 = c.read
        assert rx0 % 16 == 0 and ry0 % 16 == 0
        assert (rx0, ry0) == (max(x0 - 48, 0), max(y0 - 48, 0)) and (rx1, ry1) == (min(x1 + 48, 1000), min(y1 + 48, 700))
    assert (covered == 1).all()  # every working pixel in exactly one core
    assert [(c.row, c.col) for c in chunks] == sorted((c.row, c.col) for c in chunks)
    tissue = np.zeros((70, 100), bool)  # 10 working px per mask pixel
    tissue[30:35, 45:50] = True  # working x 450-500, y 300-350: core (col 2, row 1) of 208 px cores
    kept = plan_chunks((1000, 700), 200, 40, tissue, 10.0, stride=16)
    assert {(c.row, c.col) for c in kept} == {(1, 2)}
    assert plan_chunks((1000, 700), 200, 40, np.zeros((70, 100), bool), 10.0) == []


def test_chunk_result_round_trips_through_its_file(tmp_path, int8_predictor):
    image = _sample()[:256, :256]
    grid = Grid(0, 1.0, 1.0, 256, 256, 0.25, 16)
    chunk = Chunk(0, 0, (0, 0, 128, 128), (0, 0, 256, 256))
    result = chunk_nuclei(image, predict_chunk(int8_predictor, image), chunk, grid, int8_predictor.config)
    assert result.count > 5 and set(result.columns) == set(COLUMNS)
    assert ((result.columns["centroid_x"] < 127.5) & (result.columns["centroid_y"] < 127.5)).all()
    result.save(tmp_path / "c.npz")
    back = ChunkResult.load(tmp_path / "c.npz")
    assert back.chunk == chunk
    np.testing.assert_array_equal(back.ring_offsets, result.ring_offsets)
    np.testing.assert_array_equal(back.vertices, result.vertices)
    for name in COLUMNS:
        np.testing.assert_array_equal(back.columns[name], result.columns[name])
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="bad.npz"):
        ChunkResult.load(tmp_path / "bad.npz")


def test_feature_text_is_the_json_encoding_of_the_feature():
    from segzoo.slides.results.outputs import CLASSIFICATION, _Formatter

    ring = np.array([[1.5, -0.5], [3.25, 2.0], [0.0, 4.0], [1.5, -0.5]])
    values = (12.0, 0.75, 1.234, 2.0, 0, 1, 4, 5, 120.5, 60.25, 180.0, 0.9123)
    names = list(COLUMNS)
    text = _Formatter(names)
    expected = {"type": "Feature", "id": "nucleus-7", "geometry": {"type": "Polygon", "coordinates": [ring.tolist()]},
                "properties": {"objectType": "detection", "classification": CLASSIFICATION, "name": "nucleus 7",
                               "measurements": dict(zip(names, values))}}
    assert text.feature(7, ring, values) == json.dumps(expected, separators=(",", ":"))
    assert text.csv_row(7, values) == "7," + ",".join(repr(v) for v in values) + "\r\n"


# ---------------------------------------------------------------------------------------------
# the acceptance check: chunked == whole image


def _whole_image_case() -> np.ndarray:
    value = os.environ.get("SEGZOO_MONUSEG")
    if value and (Path(value) / "test" / "images").is_dir():
        import tifffile

        return tifffile.imread(min((Path(value) / "test" / "images").glob("*.tif")))[..., :3]
    return _sample()


def _chunked_against_whole(predictor: Predictor, image: np.ndarray, out: Path, halo: int,
                           chunk_size: int = 128):
    """(slide summary, nuclei of the whole-image prediction, best IoU of each of them with the
    slide's outlines): `image` as a slide at the model's own scale, so chunks see its pixels."""
    h, w = image.shape[:2]
    whole = predictor.predict(image)
    summary = predict_slide(predictor, ArraySlide(image, mpp=predictor.config.resolution.mpp), out,
                            chunk_size=chunk_size, halo=halo, tissue=False, progress=False)
    offsets, vertices, _ = _geojson_rings(summary.outputs["geojson"])
    return summary, whole.labels, _best_iou(whole.labels, _raster(offsets, vertices, (h, w)))


def _largest_shared_fraction(path: Path, shape: tuple[int, int]) -> float:
    """Over the GeoJSON's outlines: the largest share of one outline's pixels that lie inside
    another outline too. A nucleus reported twice shares (nearly) all of its pixels; neighbours
    that touch share at most their edge pixels."""
    from skimage.draw import polygon

    offsets, vertices, _ = _geojson_rings(path)
    cover = np.zeros(shape, np.int32)
    pixels = []
    for i in range(len(offsets) - 1):
        ring = vertices[offsets[i]:offsets[i + 1]]
        rr, cc = polygon(ring[:, 1], ring[:, 0], shape)
        cover[rr, cc] += 1
        pixels.append((rr, cc))
    return max(((cover[rr, cc] > 1).mean() for rr, cc in pixels if len(rr)), default=0.0)


def test_chunked_prediction_equals_the_whole_image_prediction(tmp_path, int8_predictor):
    image = _whole_image_case()
    h, w = image.shape[:2]
    chunk_size = 128
    summary, reference, best = _chunked_against_whole(int8_predictor, image, tmp_path / "halo96", 96, chunk_size)
    keep = np.unique(reference)[1:]
    # nuclei cut by a chunk border: the test exercises stitching, not a lucky grid
    borders = np.zeros((h, w), bool)
    borders[:, chunk_size::chunk_size] = borders[chunk_size::chunk_size, :] = True
    assert len(np.unique(reference[borders])) - 1 >= 20
    assert abs(summary.nuclei - len(keep)) <= 0.005 * len(keep)
    assert (best >= 0.9).mean() >= 0.99
    # the check can fail: without a halo, nuclei on chunk borders are cut in two
    _, _, best0 = _chunked_against_whole(int8_predictor, image, tmp_path / "halo0", 0, chunk_size)
    assert (best0 >= 0.9).mean() < 0.99


CONTEXT_REACH = {"deeplabv3-monuseg": 512}
"""Zoo models whose output at a pixel depends on more than the slide path's default halo around it:
DeepLabV3's ASPP (context="window", translation-equivariant) reaches about 500 px (the released
model in fp32: core outputs within 1.3e-4 of a whole-image pass with a 424 px halo, 2e-7 with 512,
identical with 600; int8 turns those 1e-7 differences into rounding flips, 0.03 at 512, and is
identical from 600). At the default halo such a model is held to the stitching's guarantee (no
nucleus written twice); with a halo of its reach, in fp32, on an image larger than the corner
chunks' read boxes, to equality with the whole-image pass like the others (image pooling,
context="image", fails that: its output depends on the whole input)."""


@pytest.mark.parametrize("name", sorted(json.loads((Path(__file__).resolve().parents[1] / "segzoo" /
                                                    "zoo_registry.json").read_text())["models"]))
def test_every_zoo_model_on_a_slide_equals_its_whole_image_prediction_and_reports_no_nucleus_twice(tmp_path, name):
    import segzoo

    predictor = segzoo.load(name, precision="int8")
    image = _sample()
    summary, reference, best = _chunked_against_whole(predictor, image, tmp_path / "default-halo", 96)
    assert summary.ok and summary.nuclei > 50
    assert _largest_shared_fraction(summary.outputs["geojson"], image.shape[:2]) < 0.5
    halo = CONTEXT_REACH.get(name)
    if halo is not None:
        # 1024 px (the sample and its mirror images): larger than the corner chunks' read boxes
        # (256 + 512 px), one network pass for the whole image (tile_size 1024).
        predictor = segzoo.load(name, precision="fp32")
        image = np.concatenate([np.concatenate([image, image[:, ::-1]], 1),
                                np.concatenate([image[::-1], image[::-1, ::-1]], 1)])
        assert max(image.shape[:2]) <= predictor.config.inference.tile_size
        summary, reference, best = _chunked_against_whole(predictor, image, tmp_path / "reach-halo", halo,
                                                          chunk_size=256)
        assert summary.ok and summary.nuclei > 200
    keep = np.unique(reference)[1:]
    assert abs(summary.nuclei - len(keep)) <= 0.01 * len(keep) + 1
    assert (best >= 0.9).mean() >= 0.98


def test_chunks_treat_no_data_as_the_predictor_does(tmp_path, int8_predictor):
    image = _sample().copy()
    image[:, 400:] = 0  # black scanner padding: the predictor fills it for the network and finds nothing there
    whole = int8_predictor.predict(image)
    keep = np.unique(whole.labels)[1:]
    reference = whole.labels
    summary = predict_slide(int8_predictor, ArraySlide(image, mpp=0.25), tmp_path, chunk_size=128, halo=96,
                            tissue=False, progress=False)
    offsets, vertices, _ = _geojson_rings(summary.outputs["geojson"])
    assert summary.nuclei == len(keep)  # 160 when chunks feed black to the network
    assert (_best_iou(reference, _raster(offsets, vertices, image.shape[:2])) >= 0.9).all()


# ---------------------------------------------------------------------------------------------
# outputs, resume, faults


def test_outputs_are_qupath_geojson_csv_and_pngs_with_global_ids(tmp_path, int8_predictor):
    image = _sample()[:256, :384]
    summary = predict_slide(int8_predictor, ArraySlide(image, mpp=0.25), tmp_path, chunk_size=128, halo=64,
                            tissue=False, progress=False, name="tile")
    assert summary.ok and summary.chunks == 6 and summary.nuclei > 10
    assert set(summary.outputs) == {"geojson", "csv", "thumbnail"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tile.geojson", "tile_nuclei.csv", "tile_thumbnail.png"]
    # each chunk stage was timed (busy seconds, for the benchmark's network / post-processing columns)
    assert set(summary.stage_seconds) == {"read", "network", "post"}
    assert all(v > 0 for v in summary.stage_seconds.values())
    assert summary.to_dict()["stage_seconds"].keys() == summary.stage_seconds.keys()
    _, _, features = _geojson_rings(tmp_path / "tile.geojson")
    rows = _csv_rows(tmp_path / "tile_nuclei.csv")
    assert len(features) == len(rows) == summary.nuclei
    assert [r["label"] for r in rows] == [str(i) for i in range(1, len(rows) + 1)]
    assert [f["id"] for f in features] == [f"nucleus-{i}" for i in range(1, len(rows) + 1)]
    first = features[0]["properties"]
    assert first["objectType"] == "detection" and first["classification"]["name"] == "Nucleus"
    assert first["measurements"]["area_um2"] == pytest.approx(first["measurements"]["area"] * 0.0625, abs=0.01)
    assert float(rows[0]["centroid_x"]) == first["measurements"]["centroid_x"]
    vertices = [len(f["geometry"]["coordinates"][0]) for f in features]
    assert np.mean(vertices) < 40  # simplified (unsimplified MoNuSeg outlines have ~90-120)
    assert isinstance(first["measurements"]["area"], int)  # a pixel count at the model's scale, as writers
    thumbnail = np.asarray(Image.open(tmp_path / "tile_thumbnail.png"))
    assert thumbnail.shape == image.shape and (thumbnail == [255, 255, 0]).all(-1).sum() > 100
    assert Image.open(tmp_path / "tile_thumbnail.png").info["Software"].startswith("segzoo")
    with pytest.raises(SegzooError, match="outputs exist.*overwrite=True"):
        predict_slide(int8_predictor, ArraySlide(image, mpp=0.25), tmp_path, chunk_size=128, halo=64, tissue=False,
                      progress=False, name="tile")


def test_resume_after_an_interruption_gives_byte_identical_outputs(tmp_path, int8_predictor):
    image = _sample()  # 512 x 512: 16 chunks of 128 (a tissue mask needs more than ~0.1 mm of tissue)
    kwargs = {"chunk_size": 128, "halo": 32, "progress": False, "name": "s"}
    clean = predict_slide(int8_predictor, ArraySlide(image, mpp=0.25), tmp_path / "clean", **kwargs)
    assert set(clean.outputs) == {"geojson", "csv", "thumbnail", "tissue"}
    assert clean.chunks == 16 and clean.chunks_resumed == 0 and not (tmp_path / "clean" / "s.segzoo-chunks").exists()

    seen = []

    def crash_after_four(slide, chunk, nuclei):
        seen.append(chunk)
        if len(seen) == 4:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C after 4 chunks

    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        predict_slide(int8_predictor, ArraySlide(image, mpp=0.25), out, on_chunk=crash_after_four, **kwargs)
    work = out / "s.segzoo-chunks"
    assert sorted(p.name for p in work.iterdir()) == [f"chunk_00000_0000{i}.npz" for i in range(4)] + ["manifest.json"]
    assert not any(p.suffix != ".segzoo-chunks" for p in out.iterdir())  # no partial outputs

    with pytest.raises(SegzooError, match="other parameters.*halo.*restart=True"):
        predict_slide(int8_predictor, ArraySlide(image, mpp=0.25), out, **{**kwargs, "halo": 64})
    other = Predictor(int8_predictor.run_batch, copy.deepcopy(int8_predictor.config), runtime="onnx")
    other.config.postprocessing.threshold = 0.6
    with pytest.raises(SegzooError, match="threshold"):
        predict_slide(other, ArraySlide(image, mpp=0.25), out, **kwargs)

    import shutil

    shutil.copytree(work, tmp_path / "backup")
    resumed = predict_slide(int8_predictor, ArraySlide(image, mpp=0.25), out, **kwargs)
    assert resumed.chunks_resumed == 4 and resumed.nuclei == clean.nuclei
    for key, path in clean.outputs.items():
        assert resumed.outputs[key].read_bytes() == path.read_bytes(), key
    assert not work.exists()

    shutil.copytree(tmp_path / "backup", work)  # an unfinished job again, beside finished outputs
    with pytest.raises(SegzooError, match="outputs exist"):
        predict_slide(int8_predictor, ArraySlide(image, mpp=0.25), out, **{**kwargs, "halo": 64}, restart=True)
    assert len(list(work.iterdir())) == 5  # the refused restart deleted nothing
    restarted = predict_slide(int8_predictor, ArraySlide(image, mpp=0.25), out, **{**kwargs, "halo": 64},
                              restart=True, overwrite=True)
    assert restarted.ok and restarted.chunks_resumed == 0 and not work.exists()


def test_no_tissue_gives_empty_outputs_and_says_so(tmp_path, int8_predictor, caplog):
    glass = np.full((600, 800, 3), 250, np.uint8)
    glass[..., 2] = 252
    with caplog.at_level("WARNING"):
        summary = predict_slide(int8_predictor, ArraySlide(glass, mpp=0.25), tmp_path, progress=False, name="blank")
    assert summary.ok and summary.nuclei == 0 and summary.chunks == 0
    assert any("no tissue" in note for note in summary.notes) and "no tissue" in caplog.text
    assert json.loads((tmp_path / "blank.geojson").read_text()) == {"type": "FeatureCollection", "features": []}
    assert (tmp_path / "blank_nuclei.csv").read_text().strip() == ",".join(["label", *COLUMNS])
    assert not np.asarray(Image.open(tmp_path / "blank_tissue.png")).any()
    assert np.asarray(Image.open(tmp_path / "blank_thumbnail.png")).shape == (600, 800, 3)


class _CorruptSlide(ArraySlide):
    """An in-memory slide whose reads touching `bad` (x0, y0, x1, y1, level 0) raise DataError."""

    bad: tuple[int, int, int, int] = (0, 0, 0, 0)

    def read_region(self, level, x, y, width, height):
        bx0, by0, bx1, by1 = self.bad
        if x < bx1 and bx0 < x + width and y < by1 and by0 < y + height:
            raise DataError(f"corrupt tile at x {bx0}-{bx1}, y {by0}-{by1}")
        return super().read_region(level, x, y, width, height)


def test_an_unreadable_chunk_is_reported_the_rest_done_and_retried_on_rerun(tmp_path, int8_predictor):
    image = _sample()[:256, :384]
    kwargs = {"chunk_size": 128, "halo": 0, "tissue": False, "progress": False, "name": "c"}
    slide = _CorruptSlide(image, mpp=0.25)
    slide.bad = (300, 200, 310, 210)  # in chunk (row 1, col 2) only (halo 0)
    summary = predict_slide(int8_predictor, slide, tmp_path / "run", **kwargs)
    assert not summary.ok and summary.chunks == 6
    assert [(f.row, f.col, f.box) for f in summary.failed] == [(1, 2, (256, 128, 384, 256))]
    assert "corrupt tile" in summary.failed[0].error
    work = tmp_path / "run" / "c.segzoo-chunks"
    assert json.loads((work / "failed_chunks.json").read_text())[0]["box"] == [256, 128, 384, 256]
    rows = _csv_rows(tmp_path / "run" / "c_nuclei.csv")
    assert len(rows) == summary.nuclei > 0
    assert not any(256 <= float(r["centroid_x"]) and 128 <= float(r["centroid_y"]) for r in rows)

    slide.bad = (0, 0, 0, 0)  # the region reads again: a re-run retries only the failed chunk
    again = predict_slide(int8_predictor, slide, tmp_path / "run", **kwargs)
    assert again.ok and again.chunks_resumed == 5 and not work.exists()
    clean = predict_slide(int8_predictor, ArraySlide(image, mpp=0.25), tmp_path / "clean", **kwargs)
    for key, path in clean.outputs.items():
        assert again.outputs[key].read_bytes() == path.read_bytes(), key


def test_a_corrupt_tile_of_an_aperio_slide_costs_only_the_chunk_it_lies_in(tmp_path, int8_predictor):
    from slide_fixtures import corrupt_tile, synthetic_he, write_aperio_tiff

    path = write_aperio_tiff(tmp_path / "slide.svs", synthetic_he(768, 768, tissue_fraction=1.0), mpp=0.25,
                             levels=2, tile=256)
    corrupt_tile(path, 0, 4)  # level 0, tile (row 1, col 1): x 256-512, y 256-512
    summary = predict_slide(int8_predictor, path, tmp_path / "out", chunk_size=256, halo=32, tissue=False,
                            progress=False)
    assert summary.chunks == 9 and summary.nuclei > 100
    assert [(f.row, f.col, f.box) for f in summary.failed] == [(1, 1, (256, 256, 512, 512))]
    assert "within level-0 x 256-512 y 256-512" in summary.failed[0].error  # the corrupt tile, found
    centroids = np.array([(float(r["centroid_x"]), float(r["centroid_y"])) for r in _csv_rows(summary.outputs["csv"])])
    in_bad_core = ((centroids >= 256) & (centroids < 512)).all(axis=1)
    assert not in_bad_core.any() and len(centroids) == summary.nuclei
    # nuclei right beside the corrupt tile are still found (their chunks read around it)
    near = ((centroids >= 224) & (centroids < 544)).all(axis=1) & ~in_bad_core
    assert near.sum() >= 10


# ---------------------------------------------------------------------------------------------
# resolution: level-0 coordinates through resampling, unknown mpp


def _pink_with_discs(size: int, centres: list[tuple[float, float]], radius: float) -> np.ndarray:
    """An H&E-like image (pink, mild noise) with purple discs of `radius` at (x, y) pixel-centre points."""
    rng = np.random.default_rng(3)
    image = np.clip(np.array([232, 168, 206]) + rng.integers(-10, 11, (size, size, 3)), 0, 255).astype(np.uint8)
    yy, xx = np.mgrid[0:size, 0:size]
    for x, y in centres:
        image[(xx - x) ** 2 + (yy - y) ** 2 < radius ** 2] = (86, 52, 140)
    return image


def test_a_20x_slide_is_resampled_to_the_model_and_outlines_come_back_in_level_0(tmp_path, int8_predictor):
    from slide_fixtures import downsample2, write_aperio_tiff

    centres40 = [(101.0, 90.0), (300.5, 120.5), (210.0, 305.0), (380.0, 400.0)]  # 40x pixel centres
    image40 = _pink_with_discs(512, centres40, 9.0)
    path = write_aperio_tiff(tmp_path / "slide20x.tif", downsample2(image40), mpp=0.5, levels=2, tile=128,
                             compression=None)
    summary = predict_slide(int8_predictor, path, tmp_path / "out", chunk_size=160, halo=64, tissue=False,
                            progress=False)
    assert (summary.level, summary.scale, summary.mpp) == (0, 2.0, 0.5)
    rows = _csv_rows(summary.outputs["csv"])
    found = np.array([(float(r["centroid_x"]), float(r["centroid_y"])) for r in rows])
    assert len(found) == len(centres40)
    for x40, y40 in centres40:
        expected = np.array([(x40 + 0.5) / 2 - 0.5, (y40 + 0.5) / 2 - 0.5])  # the 20x slide's level-0 point
        distance = np.hypot(*(found - expected).T)
        i = int(distance.argmin())
        assert distance[i] <= 0.2, (expected, found[i])  # a half-pixel convention slip is 0.25
        assert float(rows[i]["area_um2"]) == pytest.approx(np.pi * 9.0 ** 2 * 0.25 ** 2, rel=0.2)
        assert float(rows[i]["area"]) == pytest.approx(np.pi * 4.5 ** 2, rel=0.2)  # level-0 (20x) pixels
    _, vertices, _ = _geojson_rings(summary.outputs["geojson"])
    assert vertices.max() < 256 and vertices.min() > -1  # level-0 extent of the 20x slide


def test_a_slide_without_resolution_needs_mpp(tmp_path, int8_predictor):
    from slide_fixtures import write_aperio_tiff

    path = write_aperio_tiff(tmp_path / "nompp.tif", _pink_with_discs(256, [(100.0, 100.0)], 8.0), mpp=None,
                             levels=1, tile=128, compression=None)
    with pytest.raises(SegzooError, match="nompp.tif has no microns-per-pixel.*mpp="):
        predict_slide(int8_predictor, path, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    summary = predict_slide(int8_predictor, path, tmp_path / "out", mpp=0.25, tissue=False, progress=False)
    assert summary.ok and summary.mpp == 0.25 and summary.nuclei == 1


def test_a_default_chunk_is_one_network_pass_of_the_slide_tile(tmp_path, int8_predictor):
    """chunk_size None: 1344 px cores read with 96 px halos, so an inner chunk's read box is one
    CHUNK_TILE_SIZE tile and predict_chunk runs the network on it once."""
    from segzoo.slides.options import SlideOptions
    from segzoo.slides.plan.chunks import CHUNK_TILE_SIZE
    from segzoo.slides.plan.job import prepare_slide

    slide = ArraySlide(np.full((4000, 4000, 3), 200, np.uint8), mpp=0.25)
    job = prepare_slide(int8_predictor, slide, tmp_path, SlideOptions(tissue=False))
    inner = [c for c in job.chunks if c.read[0] > 0 and c.read[1] > 0 and c.read[2] < 4000 and c.read[3] < 4000]
    assert inner and {(c.read[2] - c.read[0], c.read[3] - c.read[1]) for c in inner} == {(CHUNK_TILE_SIZE,) * 2}
    assert {(c.core[2] - c.core[0]) for c in inner} == {CHUNK_TILE_SIZE - 2 * 96}
    shapes = []

    def run(batch):
        shapes.append(batch.shape)
        return np.zeros((*batch.shape[:3], 1), np.float32)

    predictor = Predictor(run, int8_predictor.config)
    predict_chunk(predictor, np.full((CHUNK_TILE_SIZE, CHUNK_TILE_SIZE, 3), 120, np.uint8))
    assert shapes == [(1, CHUNK_TILE_SIZE, CHUNK_TILE_SIZE, 3)]



def test_a_slide_job_pins_the_allocator_thresholds(tmp_path, int8_predictor, monkeypatch):
    """predict_slides sets glibc's thresholds (segzoo.slides.run.memory) before its chunks run; on
    this Linux/glibc test machine mallopt accepts them."""
    import platform

    import segzoo.slides.run.orchestrator as pipeline
    from segzoo.slides.run.memory import return_large_allocations

    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert return_large_allocations()
    calls = []
    monkeypatch.setattr(pipeline, "return_large_allocations", lambda: calls.append(1) or True)
    predict_slide(int8_predictor, ArraySlide(np.full((64, 64, 3), 255, np.uint8), mpp=0.25), tmp_path,
                  tissue=False, progress=False)
    assert calls == [1]
