"""Per-nucleus measurements, outlines, GeoJSON/CSV and the fast PNG/TIFF renderers of segzoo.io,
checked against scikit-image's regionprops / find_contours / find_boundaries."""

import io
import itertools
import json

import numpy as np
import pytest
import tifffile
from PIL import Image
from skimage.draw import polygon2mask
from skimage.measure import find_contours, label, points_in_poly, regionprops
from skimage.segmentation import find_boundaries

from segzoo.io import measurements, outlines, outputs


def _blobs(shape=(120, 160), count=40, seed=0) -> np.ndarray:
    """Random ellipses (rotated, 1 to ~200 px), overlapping ones cut by later ones, labels with
    gaps, so nuclei touch, have holes, concave parts, several pieces, and sit on the border."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.int32)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    for k in range(count):
        cy, cx = rng.uniform(-3, shape[0] + 3), rng.uniform(-3, shape[1] + 3)
        a, b, t = rng.uniform(0.5, 9), rng.uniform(0.5, 6), rng.uniform(0, np.pi)
        u = (xx - cx) * np.cos(t) + (yy - cy) * np.sin(t)
        v = -(xx - cx) * np.sin(t) + (yy - cy) * np.cos(t)
        labels[(u / a) ** 2 + (v / b) ** 2 <= 1] = 3 * k + 1
    labels[5, 5] = 1000  # a single pixel
    labels[60:70, 100] = 1001  # a one-pixel-wide line
    labels[20:30, 20:30], labels[24:26, 24:26] = 1002, 0  # a square with a hole
    return labels


def _random_labels(seed: int, shape=(30, 40), values=5) -> np.ndarray:
    """Label noise: every saddle, touching labels, many pieces per label."""
    return np.random.default_rng(seed).integers(0, values, shape).astype(np.int32)


@pytest.mark.parametrize("labels", [_blobs(), _random_labels(0), label(np.random.default_rng(1).random((50, 50)) > 0.5)],
                         ids=["blobs", "noise", "components"])
def test_measurements_equal_regionprops(labels):
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, labels.shape + (3,), dtype=np.uint8)
    prob = rng.random(labels.shape, dtype=np.float32)
    m = measurements.nucleus_measurements(labels, image, prob)
    regions = regionprops(labels, intensity_image=image)
    assert m["label"].tolist() == [r.label for r in regions]
    assert m["area"].tolist() == [r.area for r in regions] and m["area"].dtype == np.int64
    np.testing.assert_allclose(m["centroid_x"], [r.centroid[1] for r in regions], rtol=0, atol=1e-9)
    np.testing.assert_allclose(m["centroid_y"], [r.centroid[0] for r in regions], rtol=0, atol=1e-9)
    for key, k in (("bbox_x0", 1), ("bbox_y0", 0), ("bbox_x1", 3), ("bbox_y1", 2)):
        assert m[key].tolist() == [r.bbox[k] for r in regions], key
    for key, channel in (("mean_r", 0), ("mean_g", 1), ("mean_b", 2)):
        np.testing.assert_allclose(m[key], [r.intensity_mean[channel] for r in regions], rtol=0, atol=1e-9)
    np.testing.assert_allclose(m["mean_prob"], [prob[r.slice][r.image].astype(np.float64).mean() for r in regions],
                               rtol=0, atol=1e-9)
    rows = measurements.measure_nuclei(labels, image, prob)  # the CSV rows: the same, rounded
    assert [r["label"] for r in rows] == m["label"].tolist()
    assert max(abs(r["centroid_x"] - c) for r, c in zip(rows, m["centroid_x"])) <= 5e-4 + 1e-9


def test_measurements_offset_scale_and_microns():
    labels = np.zeros((20, 30), np.int32)
    labels[2:6, 3:11] = 7  # 4 rows x 8 columns
    m = measurements.nucleus_measurements(labels, offset=(100, 50), scale=4.0, mpp=0.25)
    assert "mean_r" not in m and "mean_prob" not in m
    assert m["area"].tolist() == [32 * 16.0] and m["area_um2"].tolist() == pytest.approx([32 * 16 * 0.0625])
    # centroid (x=6.5, y=3.5) in the crop -> ((6.5 + 100 + 0.5) * 4 - 0.5, (3.5 + 50 + 0.5) * 4 - 0.5)
    assert m["centroid_x"].tolist() == [427.5] and m["centroid_y"].tolist() == [215.5]
    assert [m[k][0] for k in ("bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1")] == [412, 208, 444, 224]
    vertices = outlines.nucleus_outlines(labels, offset=(100, 50), scale=4.0, tolerance=0)[2]
    crop = outlines.nucleus_outlines(labels, tolerance=0)[2]
    np.testing.assert_allclose(vertices, (crop + [100, 50] + 0.5) * 4 - 0.5)


def test_measurements_reject_bad_input():
    with pytest.raises(ValueError, match="2-D integer"):
        measurements.nucleus_measurements(np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match="does not fit"):
        measurements.nucleus_measurements(np.zeros((4, 4), np.int32), np.zeros((4, 5, 3), np.uint8))
    with pytest.raises(ValueError, match=">= 0"):
        outlines.nucleus_outlines(-np.ones((4, 4), np.int32))


def _cyclic_equal(a: np.ndarray, b: np.ndarray) -> bool:
    if len(a) != len(b):
        return False
    return any(np.array_equal(np.roll(b, -i, axis=0), a) for i in np.flatnonzero((b == a[0]).all(1)))


@pytest.mark.parametrize("seed", range(6))
def test_unsimplified_outlines_are_find_contours(seed):
    """tolerance=0: each ring is exactly find_contours(pad(labels == label), 0.5)'s longest contour
    (same vertices, same orientation), shifted back to image (x, y) coordinates."""
    labels = _blobs(seed=seed) if seed % 2 else _random_labels(seed)
    ring_labels, offsets, vertices = outlines.nucleus_outlines(labels, tolerance=0)
    assert ring_labels.tolist() == [r.label for r in regionprops(labels)]
    for i, (lab, region) in enumerate(zip(ring_labels, regionprops(labels))):
        y0, x0 = region.bbox[:2]
        contour = max(find_contours(np.pad(region.image.astype(np.uint8), 1), 0.5), key=len)
        expected = contour[:, ::-1] + [x0 - 1, y0 - 1]
        ring = vertices[offsets[i]:offsets[i + 1]]
        assert np.array_equal(ring[0], ring[-1]) and len(ring) >= 5
        assert _cyclic_equal(ring[:-1], expected[:-1]), f"label {lab}"


def _distances_to_polyline(points: np.ndarray, line: np.ndarray) -> np.ndarray:
    a, b = line[:-1], line[1:]
    d = b - a
    t = np.clip(((points[:, None] - a) * d).sum(-1) / np.maximum((d * d).sum(-1), 1e-12), 0, 1)
    return np.linalg.norm(points[:, None] - (a + t[..., None] * d), axis=-1).min(1)


def _densify(ring: np.ndarray, step: float = 0.05) -> np.ndarray:
    parts = [a + np.linspace(0, 1, max(int(np.ceil(np.linalg.norm(b - a) / step)), 1), endpoint=False)[:, None]
             * (b - a) for a, b in itertools.pairwise(ring)]
    return np.concatenate(parts + [ring[-1:]])


@pytest.mark.parametrize("tolerance", [0.35, 0.5, 1.0])
def test_simplified_outlines_stay_within_tolerance_and_are_shorter(tolerance):
    labels = _blobs(seed=3)
    full = outlines.nucleus_outlines(labels, tolerance=0)
    simple = outlines.nucleus_outlines(labels, tolerance=tolerance)
    assert np.array_equal(full[0], simple[0])
    for i in range(len(full[0])):
        a = full[2][full[1][i]:full[1][i + 1]]
        b = simple[2][simple[1][i]:simple[1][i + 1]]
        assert np.array_equal(b[0], b[-1]) and len(b) >= 4 and len(np.unique(b, axis=0)) >= 3
        hausdorff = max(_distances_to_polyline(_densify(a), b).max(), _distances_to_polyline(_densify(b), a).max())
        assert hausdorff <= tolerance + 1e-9, (full[0][i], hausdorff)
    assert simple[1][-1] < 0.6 * full[1][-1]  # far fewer vertices


def test_default_outlines_fill_back_to_the_nucleus_and_enclose_convex_centroids():
    """At SIMPLIFY_TOLERANCE the ring filled at pixel centres is the nucleus (holes filled):
    IoU 1 for nuclei of >= 30 px (required: >= 0.95); a disc keeps few vertices."""
    labels = _blobs(seed=5)
    table = measurements.nucleus_table(labels)
    checked = 0
    for i, lab in enumerate(table.columns["label"]):
        x0, y0, x1, y1 = (int(table.columns[k][i]) for k in ("bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1"))
        mask = labels[y0:y1, x0:x1] == lab
        if mask.sum() < 30:
            continue
        from scipy import ndimage as ndi

        pieces = label(mask, connectivity=1)
        largest = pieces == np.argmax(np.bincount(pieces.ravel())[1:]) + 1
        filled = polygon2mask(mask.shape, (table.ring(i) - [x0, y0])[:, ::-1])
        iou = (filled & mask).sum() / (filled | mask).sum()
        assert iou >= 0.95, (lab, iou)
        # (marching squares separates diagonal-only neighbours: nucleus 4-connected, background 8-connected)
        assert np.array_equal(filled, ndi.binary_fill_holes(largest, np.ones((3, 3)))) or pieces.max() > 1, lab
        checked += 1
    assert checked >= 10
    yy, xx = np.mgrid[0:60, 0:60]
    for radius in (3, 6, 12, 25):
        disc = ((yy - 30) ** 2 + (xx - 29) ** 2 <= radius ** 2).astype(np.int32)
        ring = measurements.nucleus_table(disc).ring(0)
        assert points_in_poly([[29, 30]], ring)[0]
        unsimplified = len(outlines.nucleus_outlines(disc, tolerance=0)[2]) - 1  # 28, 52, 100, 204 vertices
        assert len(ring) - 1 <= min(0.45 * unsimplified, 60)  # 12, 20, 36, 52


def test_small_and_odd_nuclei_get_valid_rings():
    labels = np.zeros((8, 9), np.int32)
    labels[0, 0] = 4  # a single pixel in the corner
    labels[3, 2:8] = 9  # a one-pixel line
    labels[6:8, 7:9] = 2  # a 2x2 square at the border
    ring_labels, offsets, vertices = outlines.nucleus_outlines(labels)
    assert ring_labels.tolist() == [2, 4, 9]
    rings = [vertices[offsets[i]:offsets[i + 1]] for i in range(3)]
    assert rings[1].tolist() == [[0.0, -0.5], [0.5, 0.0], [0.0, 0.5], [-0.5, 0.0], [0.0, -0.5]]
    for ring in rings:
        assert np.array_equal(ring[0], ring[-1]) and len(np.unique(ring, axis=0)) >= 3
        x, y = ring.T
        assert (x[:-1] * y[1:] - x[1:] * y[:-1]).sum() > 0  # RFC 7946: exterior rings counter-clockwise
    empty = measurements.nucleus_table(np.zeros((5, 5), np.int32), np.zeros((5, 5, 3), np.uint8))
    assert len(empty) == 0 and empty.to_geojson()["features"] == [] and empty.rows() == []
    assert empty.csv_bytes().decode().strip() == "label,area,centroid_x,centroid_y,bbox_x0,bbox_y0,bbox_x1," \
                                                  "bbox_y1,mean_r,mean_g,mean_b"


def test_geojson_round_trips_with_one_feature_per_nucleus():
    labels = _blobs(seed=7)
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, labels.shape + (3,), dtype=np.uint8)
    prob = rng.random(labels.shape, dtype=np.float32)
    table = measurements.nucleus_table(labels, image, prob)
    data = json.loads(outputs.geojson_bytes(table.to_geojson()))
    assert data["type"] == "FeatureCollection"
    present = np.unique(labels[labels > 0]).tolist()
    assert [f["id"] for f in data["features"]] == [f"nucleus-{v}" for v in present]
    rows = {r["label"]: r for r in measurements.measure_nuclei(labels, image, prob)}
    polygons = measurements.nucleus_polygons(labels)
    for feature in data["features"]:
        lab = int(feature["id"].split("-")[1])
        assert feature["geometry"]["type"] == "Polygon"
        assert feature["geometry"]["coordinates"][0] == polygons[lab]
        assert feature["properties"]["objectType"] == "detection"
        assert feature["properties"]["measurements"] == {k: v for k, v in rows[lab].items() if k != "label"}
    # geojson_collection (labels + rows) gives the same document
    assert measurements.geojson_collection(labels, list(rows.values())) == data
    with pytest.raises(ValueError, match="object_type"):
        table.to_geojson(object_type="cell")


def test_csv_has_one_row_per_nucleus_in_label_order():
    labels = _blobs(seed=8)
    image = np.full(labels.shape + (3,), 7, np.uint8)
    table = measurements.nucleus_table(labels, image)
    lines = table.csv_bytes().decode().splitlines()
    assert lines[0].split(",") == list(table.columns)
    assert [int(line.split(",")[0]) for line in lines[1:]] == np.unique(labels[labels > 0]).tolist()
    assert all(line.endswith(",7.0,7.0,7.0") for line in lines[1:])


def test_keep_selects_nuclei_before_tracing():
    labels = _blobs(seed=9)
    everything = measurements.nucleus_table(labels)
    table = measurements.nucleus_table(labels, keep=lambda c: c["centroid_x"] < 80)
    chosen = everything.columns["centroid_x"] < 80
    assert 0 < len(table) < len(everything)
    assert table.columns["label"].tolist() == everything.columns["label"][chosen].tolist()
    for i, j in enumerate(np.flatnonzero(chosen)):
        assert np.array_equal(table.ring(i), everything.ring(j))
    with pytest.raises(ValueError, match="one bool per nucleus"):
        measurements.nucleus_table(labels, keep=lambda c: np.ones(3, bool))


def test_prediction_measures_once_and_geojson_reuses_it(monkeypatch):
    from segzoo.predict.predictor import Prediction

    labels = _blobs(seed=10)
    image = np.zeros(labels.shape + (3,), np.uint8)
    prob = np.zeros(labels.shape, np.float32)
    calls = []
    real = measurements.nucleus_table
    monkeypatch.setattr(measurements, "nucleus_table", lambda *a, **k: calls.append(1) or real(*a, **k))
    result = Prediction(prob=prob, mask=labels > 0, labels=labels, image=image)
    rows = result.measurements()
    collection = result.to_geojson()
    assert len(calls) == 1
    assert len(rows) == len(collection["features"]) == result.num_nuclei
    result.labels = labels[:, ::-1].copy()  # new arrays: measured again
    assert result.measurements()[0]["centroid_x"] != rows[0]["centroid_x"] and len(calls) == 2


def test_label_boundaries_equal_find_boundaries():
    for seed in range(5):
        labels = _random_labels(seed, shape=(17 + seed, 23))
        np.testing.assert_array_equal(outputs.label_boundaries(labels), find_boundaries(labels, mode="inner"))
    labels = _blobs(seed=11)
    np.testing.assert_array_equal(outputs.label_boundaries(labels), find_boundaries(labels, mode="inner"))


@pytest.mark.parametrize("channels", [None, 3, 4])
def test_png_renderers_are_lossless_and_tagged(channels):
    rng = np.random.default_rng(4)
    shape = (37, 53) if channels is None else (37, 53, channels)
    array = rng.integers(0, 256, shape, dtype=np.uint8)
    for compress, up in ((outputs._zlib_rle, False), (outputs._zlib_fast, True)):
        data = outputs._png_bytes(array, up_filter=up, compress=compress)
        with Image.open(io.BytesIO(data)) as img:
            assert img.info["Software"].startswith("segzoo ")
            np.testing.assert_array_equal(np.asarray(img), array)
    with pytest.raises(ValueError, match="uint8"):
        outputs._png_bytes(array.astype(np.uint16), up_filter=True, compress=outputs._zlib_fast)


def test_mask_overlay_and_labels_files_read_back():
    labels = _blobs(seed=12)
    image = np.random.default_rng(5).integers(0, 255, labels.shape + (3,), dtype=np.uint8)  # never pure yellow
    with Image.open(io.BytesIO(outputs.mask_png_bytes(labels > 0))) as img:
        assert img.mode == "L"
        np.testing.assert_array_equal(np.asarray(img), np.where(labels > 0, 255, 0))
    with Image.open(io.BytesIO(outputs.overlay_png_bytes(image, labels))) as img:
        overlay = np.asarray(img)
    outline = find_boundaries(labels, mode="inner")
    np.testing.assert_array_equal((overlay == [255, 255, 0]).all(-1), outline)
    np.testing.assert_array_equal(overlay[~outline], image[~outline])
    with tifffile.TiffFile(io.BytesIO(outputs.labels_tiff_bytes(labels))) as tif:
        back = tif.pages[0].asarray()
        assert back.dtype == np.int32 and tif.pages[0].tags["Software"].value.startswith("segzoo ")
    np.testing.assert_array_equal(back, labels)
    empty = np.zeros((0, 0), bool)
    assert Image.open(io.BytesIO(outputs.mask_png_bytes(np.zeros((1, 1), bool)))).size == (1, 1)
    assert len(measurements.nucleus_table(empty.astype(np.int32))) == 0


def test_public_polygons_and_collection_are_simplified():
    """The long-standing API (nucleus_polygons, geojson_collection) gives simplified rings:
    a disc of radius 12 keeps 36 vertices instead of find_contours' 100."""
    yy, xx = np.mgrid[0:40, 0:40]
    labels = ((yy - 20) ** 2 + (xx - 19) ** 2 <= 144).astype(np.int32)
    ring = np.array(measurements.nucleus_polygons(labels)[1])
    assert np.array_equal(ring[0], ring[-1]) and len(ring) - 1 <= 40
    contour = find_contours(np.pad(labels, 1).astype(np.uint8), 0.5)[0][:, ::-1] - 1
    assert _distances_to_polyline(_densify(contour), ring).max() <= outlines.SIMPLIFY_TOLERANCE + 1e-9
    collection = measurements.geojson_collection(labels, measurements.measure_nuclei(labels, np.zeros((40, 40, 3), np.uint8)))
    assert collection["features"][0]["geometry"]["coordinates"][0] == ring.tolist()

