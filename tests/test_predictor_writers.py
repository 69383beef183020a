"""Predictor inputs and every writer, read back."""

import csv
import json

import numpy as np
import pytest
import tifffile
from PIL import Image

from segzoo.errors import DataError
from segzoo.io.measurements import geojson_collection, measure_nuclei
from segzoo.io.outputs import write_csv, write_geojson, write_labels_tiff, write_mask_png, write_overlay_png


def _labels():
    labels = np.zeros((40, 60), np.int32)
    labels[5:15, 5:12] = 1  # 10 x 7 rectangle
    yy, xx = np.mgrid[0:40, 0:60]
    labels[(yy - 25) ** 2 + (xx - 40) ** 2 < 36] = 2
    return labels


def test_geojson_is_feature_collection_with_closed_rings_in_pixel_coords(tmp_path):
    labels = _labels()
    image = np.full((40, 60, 3), 100, np.uint8)
    collection = geojson_collection(labels, measure_nuclei(labels, image))
    write_geojson(collection, tmp_path / "n.geojson")
    data = json.loads((tmp_path / "n.geojson").read_text())
    assert data["type"] == "FeatureCollection" and len(data["features"]) == 2
    for feature in data["features"]:
        assert feature["type"] == "Feature" and feature["geometry"]["type"] == "Polygon"
        assert feature["properties"]["objectType"] == "detection"
        assert feature["properties"]["classification"]["name"] == "Nucleus"
        ring = np.array(feature["geometry"]["coordinates"][0])
        assert len(ring) >= 4 and np.array_equal(ring[0], ring[-1])
    first = np.array(data["features"][0]["geometry"]["coordinates"][0])
    # The rectangle covers pixel centres x 5..11, y 5..14: its outline lies within half a pixel.
    assert first[:, 0].min() >= 4.5 and first[:, 0].max() <= 11.5
    assert first[:, 1].min() >= 4.5 and first[:, 1].max() <= 14.5
    assert data["features"][0]["properties"]["measurements"]["area"] == 70
    with pytest.raises(ValueError, match="objectType|object_type"):
        geojson_collection(labels, object_type="cell")


def test_label_tiff_mask_png_overlay_and_csv_read_back(tmp_path):
    labels = _labels()
    image = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    write_labels_tiff(labels, tmp_path / "l.tif")
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "l.tif"), labels)
    write_mask_png(labels > 0, tmp_path / "m.png")
    np.testing.assert_array_equal(np.array(Image.open(tmp_path / "m.png")) > 0, labels > 0)
    write_overlay_png(image, labels, tmp_path / "o.png")
    overlay = np.array(Image.open(tmp_path / "o.png"))
    assert overlay.shape == image.shape and (overlay == [255, 255, 0]).all(-1).any()
    rows = measure_nuclei(labels, image)
    write_csv(rows, tmp_path / "n.csv")
    back = list(csv.DictReader(open(tmp_path / "n.csv")))
    assert [int(r["area"]) for r in back] == [70, int((labels == 2).sum())]
    assert float(back[0]["centroid_x"]) == pytest.approx(8.0) and float(back[0]["centroid_y"]) == pytest.approx(9.5)
    assert float(back[0]["mean_r"]) == pytest.approx(image[5:15, 5:12, 0].mean(), abs=1e-3)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp files left


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    import keras

    import segzoo
    from segzoo.models.folders import default_config, save_model

    keras.utils.set_random_seed(0)
    kwargs = {"depth": 2, "base_filters": 4, "dropout": 0.0}
    folder = tmp_path_factory.mktemp("model") / "tiny"
    config = default_config("unet", **kwargs)
    config.inference.tile_size, config.inference.overlap = 32, 8
    save_model(segzoo.create_model("unet", **kwargs), folder, config)
    return segzoo.load(folder)


def test_every_input_type_and_dtype_gives_the_same_result(predictor, tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (37, 45, 3), dtype=np.uint8)
    reference = predictor.predict(rgb).prob
    tifffile.imwrite(tmp_path / "a.tif", rgb)
    tifffile.imwrite(tmp_path / "big.tif", rgb, bigtiff=True)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    for source in (tmp_path / "a.tif", tmp_path / "big.tif", tmp_path / "a.png", str(tmp_path / "a.png"),
                   Image.fromarray(rgb), rgb.astype(np.uint16) * 257, rgb / 255.0, rgb.astype(np.float32) / 255):
        np.testing.assert_allclose(predictor.predict(source).prob, reference, atol=1e-5)
    Image.fromarray(rgb).save(tmp_path / "a.jpg", quality=95)
    assert predictor.predict(tmp_path / "a.jpg").prob.shape == (37, 45)


@pytest.mark.parametrize("shape", [(1, 1), (7, 100), (101, 99)])
def test_odd_sizes(predictor, shape):
    rgb = np.random.default_rng(2).integers(0, 256, shape + (3,), dtype=np.uint8)
    result = predictor.predict(rgb)
    assert result.prob.shape == shape and result.mask.shape == shape and result.labels.shape == shape
    assert result.prob.dtype == np.float32 and result.mask.dtype == bool and result.labels.dtype == np.int32


@pytest.mark.parametrize("shape", [(100, 90), (100, 20)])
def test_tiled_equals_whole_image_for_a_per_pixel_keras_model(predictor, shape):
    """Sliding-window tiles (offsets, crops at the border, cosine blend, normalisation) give the
    whole-image result for a real Keras model whose output at a pixel depends on that pixel
    only (1x1 convolutions: no receptive-field or pooling-phase effect at the seams).
    (100, 90): a 4x4 grid of 32-pixel tiles; (100, 20): one column of tiles that cross the right
    border (padded, their output cropped). Padding values themselves do not reach a per-pixel output."""
    import keras

    from segzoo.predict.predictor import Predictor
    from segzoo.runtime.keras import keras_runner

    keras.utils.set_random_seed(4)
    inputs = keras.Input((None, None, 3))
    hidden = keras.layers.Conv2D(8, 1, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Conv2D(1, 1, activation="sigmoid")(hidden))
    run, calls = keras_runner(model), []

    def recorded(batch):
        calls.append(batch.shape[1:3])
        return run(batch)

    pointwise = Predictor(recorded, predictor.config)
    rgb = np.random.default_rng(3).integers(0, 256, shape + (3,), dtype=np.uint8)
    whole = pointwise.predict(rgb, tile_size=128).prob
    assert len(calls) == 1
    calls.clear()
    tiled = pointwise.predict(rgb, tile_size=32).prob
    assert len(calls) == (16 if shape == (100, 90) else 4) and set(calls) == {(32, 32)}  # tiling happened
    assert whole.std() > 0.01  # the model's output varies from pixel to pixel
    np.testing.assert_allclose(tiled, whole, atol=1e-6)


def test_batch_skips_bad_images(predictor, tmp_path):
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "ok.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG broken")
    results = dict(predictor.predict_batch(tmp_path, progress=False))
    assert isinstance(results[tmp_path / "broken.png"], DataError)
    assert results[tmp_path / "ok.png"].prob.shape == (20, 20)


def test_watershed_splits_two_touching_discs():
    from segzoo.config import Postprocessing
    from segzoo.predict.postprocessing import mask_to_instances

    yy, xx = np.mgrid[0:40, 0:60]
    mask = ((yy - 20) ** 2 + (xx - 20) ** 2 < 100) | ((yy - 20) ** 2 + (xx - 36) ** 2 < 100)
    mask[5, 55] = True  # a separate single pixel
    labels = mask_to_instances(mask, Postprocessing())
    assert len(np.unique(labels[mask])) == 3
    assert labels[20, 20] != labels[20, 36]
    np.testing.assert_array_equal(labels > 0, mask)
    unsplit = mask_to_instances(mask, Postprocessing(watershed=False))
    assert len(np.unique(unsplit[mask])) == 2


def test_watershed_strips_do_not_change_the_instances():
    """Row strips (bounded memory on large images) give the same nuclei as one pass,
    including pairs of touching nuclei that cross a strip border; only pixels where the
    watershed breaks a tie may go to the other side of a split line."""
    from segzoo.config import Postprocessing
    from segzoo.predict.postprocessing import mask_to_instances

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:300, 0:200]
    mask = np.zeros((300, 200), bool)
    for cy, cx in rng.integers(10, 190, size=(40, 2)) * [1.5, 1]:
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 < rng.integers(30, 120)
        mask |= (yy - cy - 14) ** 2 + (xx - cx) ** 2 < 90  # a touching neighbour below
    whole = mask_to_instances(mask, Postprocessing(), strip_rows=10_000)
    strips = mask_to_instances(mask, Postprocessing(), strip_rows=23)
    np.testing.assert_array_equal(strips > 0, mask)
    assert len(np.unique(whole[mask])) == len(np.unique(strips[mask]))  # the same nuclei...
    pairs, counts = np.unique(np.stack([whole[mask], strips[mask]]), axis=1, return_counts=True)
    best = {}
    for (a, _), n in zip(pairs.T, counts):
        best[a] = max(best.get(a, 0), n)
    assert sum(best.values()) >= 0.99 * mask.sum()  # ...up to ties on watershed lines
    assert len(np.unique(whole[mask])) > len(np.unique(mask_to_instances(mask, Postprocessing(watershed=False))[mask]))


def test_mask_cleanup_fills_small_holes_and_drops_small_objects():
    from segzoo.config import Postprocessing
    from segzoo.predict.postprocessing import probabilities_to_mask

    prob = np.zeros((30, 30), np.float32)
    prob[5:20, 5:20] = 0.9
    prob[10:12, 10:12] = 0.1  # 4-pixel hole: filled
    prob[25:27, 25:27] = 0.9  # 4-pixel object: dropped
    mask = probabilities_to_mask(prob, Postprocessing(threshold=0.5, min_object_size=10, fill_holes_size=30))
    assert mask[10, 10] and not mask[25, 25] and mask.sum() == 15 * 15
