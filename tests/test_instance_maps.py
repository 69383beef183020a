"""Learned instance maps: targets, the masked loss, the config, the decoding, the predictor and
the whole-slide path with a model that outputs them."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from segzoo.config import ModelConfig, Postprocessing
from segzoo.errors import ConfigError
from segzoo.predict.postprocessing import (
    count_nuclei,
    hv_centre_score,
    mask_to_instances,
    outputs_to_instances,
    probabilities_to_instances,
    split_outputs,
)
from segzoo.training.targets import boundary_map, distance_map, horizontal_map, instance_targets, vertical_map


def _touching_squares() -> np.ndarray:
    labels = np.zeros((20, 24), np.int32)
    labels[2:10, 2:10] = 1
    labels[2:10, 10:18] = 2  # shares an edge with 1
    labels[14:18, 14:22] = 3
    return labels


def test_distance_map_gives_each_nucleus_its_own_hill():
    labels = _touching_squares()
    d = distance_map(labels)
    assert d.dtype == np.float32 and d.shape == labels.shape
    assert np.all(d[labels == 0] == 0) and np.all(d[labels > 0] > 0)
    for i in (1, 2, 3):
        assert d[labels == i].max() == pytest.approx(1.0)
    # the two touching squares are separated by a dip to the lowest value on their shared edge
    row = d[5]
    assert row[9] == row[10] == pytest.approx(row[2])
    assert row[9] < row[6] and row[10] < row[13]


def test_distance_map_does_not_treat_the_patch_border_as_an_outline():
    labels = np.zeros((10, 10), np.int32)
    labels[0:6, 0:6] = 1  # cut by the top and left borders
    d = distance_map(labels)
    assert d[0, 0] == pytest.approx(1.0)  # the farthest pixel from the outline is at the corner
    assert d[5, 5] < d[0, 0]


def test_boundary_map_marks_both_sides_of_a_contact():
    labels = _touching_squares()
    b = boundary_map(labels)
    assert b[5, 9] == 1 and b[5, 10] == 1  # both sides of the shared edge
    assert b[5, 5] == 0 and b[5, 20] == 0  # interior and background
    assert np.all(b[labels == 0] == 0)


def test_instance_targets_weight_zero_without_labels():
    mask = _touching_squares() > 0
    with_labels = instance_targets(mask, _touching_squares(), ["distance", "boundary"])
    without = instance_targets(mask, None, ["distance", "boundary"])
    assert with_labels.shape == without.shape == (20, 24, 4)
    np.testing.assert_array_equal(with_labels[..., 0], mask)
    assert np.all(with_labels[..., 1] == 1) and np.all(without[..., 1] == 0)
    assert not without[..., 2:].any()
    with pytest.raises(ValueError, match="valid maps: distance, boundary"):
        instance_targets(mask, None, ["centre"])


def test_patch_sampler_draws_the_same_patches_with_or_without_maps():
    from segzoo.training.augment import PatchSampler

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (48, 48, 3), dtype=np.uint8) for _ in range(2)]
    labels = np.zeros((48, 48), np.int32)
    labels[5:20, 5:20], labels[5:20, 20:35] = 1, 2
    masks = [labels > 0, labels > 0]
    plain = PatchSampler(images, masks, 24)
    maps = PatchSampler(images, masks, 24, labels=[labels, None], instance_maps=["distance"])
    assert maps.target_channels == 3
    seen = set()
    for seed in range(12):
        image_a, mask = plain.sample(np.random.default_rng(seed))
        image_b, target = maps.sample(np.random.default_rng(seed))
        np.testing.assert_array_equal(image_a, image_b)
        np.testing.assert_array_equal(mask[..., 0], target[..., 0])
        # the map follows the patch's mask: positive exactly on nucleus pixels of labelled tiles
        if target[0, 0, 1] == 1:
            np.testing.assert_array_equal(target[..., 2] > 0, target[..., 0] > 0)
        seen.add(float(target[0, 0, 1]))
    assert seen == {0.0, 1.0}


def test_instance_loss_ignores_the_maps_of_unlabelled_samples():
    import keras

    from segzoo.training.losses import InstanceMapsLoss

    rng = np.random.default_rng(0)
    y_true = rng.random((2, 8, 8, 3)).astype("float32")
    y_true[..., 0] = y_true[..., 0] > 0.5
    y_true[0, ..., 1], y_true[1, ..., 1] = 1.0, 0.0  # sample 0 has instance labels, sample 1 not
    y_pred = rng.uniform(0.05, 0.95, (2, 8, 8, 2)).astype("float32")
    loss = InstanceMapsLoss("bce_dice", 1)
    base = float(loss(y_true, y_pred))
    changed = y_pred.copy()
    changed[1, ..., 1] = 0.5  # the map of the unlabelled sample: no effect
    assert float(loss(y_true, changed)) == pytest.approx(base, abs=1e-6)
    changed[0, ..., 1] = 0.5  # the map of the labelled sample: counts
    assert float(loss(y_true, changed)) != pytest.approx(base, abs=1e-4)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert float(restored(y_true, y_pred)) == pytest.approx(base, abs=1e-6)
    # map_weight scales the map term only (and survives serialization).
    probability_only = float(InstanceMapsLoss("bce_dice", 1)(y_true * [1, 0, 1], y_pred))
    heavy = InstanceMapsLoss("bce_dice", 1, map_weight=3.0)
    assert float(heavy(y_true, y_pred)) == pytest.approx(probability_only + 3 * (base - probability_only), rel=1e-5)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(heavy))
    assert restored.map_weight == 3.0


def _map_config(maps=("distance",), used="distance") -> ModelConfig:
    config = ModelConfig(architecture="unet", architecture_kwargs={"instance_maps": list(maps)})
    config.postprocessing.instance_map = used
    return config.validate()


def test_config_checks_the_maps():
    config = _map_config(("distance", "boundary"), "boundary")
    assert config.output_channels == 3 and config.instance_channels() == (2,)
    again = ModelConfig.from_json(config.to_json())
    assert again.postprocessing.instance_map == "boundary" and again.instance_maps == ["distance", "boundary"]
    with pytest.raises(ConfigError, match="does not all predict"):
        _map_config(("distance",), "boundary")
    with pytest.raises(ConfigError, match="distinct names from distance, boundary, horizontal, vertical"):
        ModelConfig(architecture="unet", architecture_kwargs={"instance_maps": ["centre"]}).validate()
    with pytest.raises(ConfigError, match="is not one of distance, boundary, hv"):
        Postprocessing(instance_map="flows").validate()
    # HoVer-Net's decoding needs both of its maps, in whatever channel order
    hv = _map_config(("vertical", "distance", "horizontal"), "hv")
    assert hv.instance_channels() == (3, 1) and hv.instance_decodings == ["distance", "hv"]
    with pytest.raises(ConfigError, match=r"decodes the maps \['horizontal', 'vertical'\]"):
        _map_config(("horizontal",), "hv")
    # a config from before the maps: no instance map, the distance-transform watershed
    old = ModelConfig.from_dict({"architecture": "unet", "postprocessing": {"threshold": 0.4}})
    assert old.output_channels == 1 and old.instance_channels() == () and old.instance_decodings == []


def _two_touching_discs(shape=(60, 90)) -> np.ndarray:
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    labels = np.zeros(shape, np.int32)
    labels[(yy - 30) ** 2 + (xx - 30) ** 2 <= 15 ** 2] = 1
    labels[(yy - 30) ** 2 + (xx - 55) ** 2 <= 13 ** 2] = 2
    return labels


def test_a_learned_distance_map_splits_what_it_says_and_only_that():
    labels = _two_touching_discs()
    mask = labels > 0
    centres = distance_map(labels)
    post = Postprocessing(instance_map="distance", marker_threshold=0.5)
    split = mask_to_instances(mask, post, centres=centres)
    assert len(np.unique(split)) - 1 == 2
    for i in (1, 2):  # each disc comes back (up to the watershed line's pixels)
        assert np.bincount(split[labels == i]).argmax() > 0
        assert (split[labels == i] == np.bincount(split[labels == i]).argmax()).mean() > 0.95
    # one region above the marker threshold over both discs: one nucleus (the map, not the
    # mask's shape, decides; the distance-transform watershed splits this pair)
    single = np.where(mask, 0.3, 0.0).astype(np.float32)
    single[26:34, 38:46] = 0.9
    assert len(np.unique(mask_to_instances(mask, post, centres=single))) - 1 == 1
    assert len(np.unique(mask_to_instances(mask, Postprocessing()))) - 1 == 2


def test_hover_maps_point_away_from_each_centre_and_flip_at_a_contact():
    labels = _two_touching_discs()
    h, v = horizontal_map(labels), vertical_map(labels)
    assert h.dtype == np.float32 and (h[labels == 0] == 0.5).all() and (v[labels == 0] == 0.5).all()
    assert h[30, 15] == pytest.approx(0.0, abs=0.02) and v[15, 30] == pytest.approx(0.0, abs=0.02)  # disc 1's ends
    assert h[30, 30] == pytest.approx(0.5, abs=0.05) and v[30, 30] == pytest.approx(0.5, abs=0.02)  # near its centre
    assert v[45, 30] == pytest.approx(1.0, abs=0.02)
    assert h[30, 41] > 0.85 and h[30, 42] < 0.05  # the flip where disc 2 (drawn last) takes over at column 42
    score = hv_centre_score(h, v)
    assert score[30, 30] > 0.85 and score[30, 55] > 0.85 and score[30, 40:44].min() < 0.3


def test_hover_decoding_splits_touching_nuclei_the_transform_cannot_tell_apart():
    labels = np.zeros((40, 60), np.int32)  # two squares side by side: one convex-looking blob
    labels[5:35, 5:30], labels[5:35, 30:55] = 1, 2
    mask = labels > 0
    assert len(np.unique(mask_to_instances(mask, Postprocessing(watershed_min_distance=8)))) - 1 == 1
    outputs = np.stack([mask.astype(np.float32), horizontal_map(labels), vertical_map(labels)], axis=-1)
    config = _map_config(("horizontal", "vertical"), "hv")
    config.postprocessing.marker_threshold = 0.8
    prob, centres = split_outputs(outputs, config)
    split = mask_to_instances(prob > 0.5, config.postprocessing, centres=centres)
    assert len(np.unique(split)) - 1 == 2
    for i in (1, 2):
        assert (split[labels == i] == np.bincount(split[labels == i]).argmax()).mean() > 0.95


def test_learned_map_decoding_in_strips_equals_one_pass():
    rng = np.random.default_rng(3)
    labels = np.zeros((300, 200), np.int32)
    n = 0
    for _ in range(60):
        y, x, r = rng.integers(10, 290), rng.integers(10, 190), rng.integers(4, 9)
        yy, xx = np.ogrid[:300, :200]
        n += 1
        labels[((yy - y) ** 2 + (xx - x) ** 2 <= r * r) & (labels == 0)] = n
    mask, centres = labels > 0, distance_map(labels)
    post = Postprocessing(instance_map="distance", marker_threshold=0.6)
    whole = mask_to_instances(mask, post, centres=centres, strip_rows=10_000)
    strips = mask_to_instances(mask, post, centres=centres, strip_rows=40)
    np.testing.assert_array_equal(strips > 0, mask)
    assert len(np.unique(whole[mask])) == len(np.unique(strips[mask])) > 40  # the same nuclei...
    pairs, counts = np.unique(np.stack([whole[mask], strips[mask]]), axis=1, return_counts=True)
    best: dict[int, int] = {}
    for (a, _), n in zip(pairs.T, counts):
        best[a] = max(best.get(a, 0), n)
    assert sum(best.values()) >= 0.99 * mask.sum()  # ...up to ties on watershed lines


def test_split_outputs_turns_the_boundary_map_into_a_centre_score():
    outputs = np.random.default_rng(0).random((5, 6, 3)).astype(np.float32)
    prob, score = split_outputs(outputs, _map_config(("distance", "boundary"), "boundary"))
    np.testing.assert_array_equal(prob, outputs[..., 0])
    np.testing.assert_allclose(score, 1.0 - outputs[..., 2])
    prob, score = split_outputs(outputs[..., :1], ModelConfig(architecture="unet"))
    assert score is None
    with pytest.raises(ValueError, match="centres were not given"):
        probabilities_to_instances(prob, Postprocessing(instance_map="distance"))


def _local_map_runner(run_batch):
    """A model with a 'distance' map: the wrapped runner's probability, and as the map that
    probability blurred (local, so chunked and whole predictions can agree)."""
    def run(batch: np.ndarray) -> np.ndarray:
        prob = np.asarray(run_batch(batch), dtype=np.float32)
        blurred = ndi.gaussian_filter(prob, sigma=(0, 2, 2, 0), truncate=3.0)
        return np.concatenate([prob, blurred], axis=-1)
    return run


@pytest.fixture(scope="module")
def map_predictor():
    from segzoo.predict.predictor import Predictor
    from segzoo.runtime.onnx import onnx_runner
    from segzoo.runtime.onnx_format import read_segzoo_onnx

    bundled = Path(__file__).resolve().parents[1] / "segzoo" / "bundled" / "unet-monuseg" / "model.int8.onnx"
    data, config = read_segzoo_onnx(bundled)
    config = copy.deepcopy(config)
    config.resolution.mpp = 0.25
    config.architecture_kwargs["instance_maps"] = ["distance"]
    config.postprocessing.instance_map = "distance"
    config.postprocessing.marker_threshold = 0.7
    return Predictor(_local_map_runner(onnx_runner(data)), config.validate(), runtime="onnx")


def test_predictor_uses_the_map_and_checks_the_channel_count(map_predictor):
    from segzoo.errors import ModelOutputError
    from segzoo.io.images import sample_image_path
    from segzoo.predict.predictor import Predictor

    result = map_predictor.predict(sample_image_path())
    assert result.prob.ndim == 2 and result.num_nuclei > 50
    outputs = np.concatenate([result.prob[..., None], np.zeros_like(result.prob)[..., None]], axis=-1)
    labels = outputs_to_instances(outputs, map_predictor.config)[2]
    unsplit = dataclasses.replace(map_predictor.config.postprocessing, watershed=False, instance_map=None)
    # no marker anywhere: no component is split
    assert count_nuclei(labels) == count_nuclei(probabilities_to_instances(result.prob, unsplit)[1])
    one_channel = Predictor(lambda b: np.zeros((*b.shape[:3], 1), np.float32), map_predictor.config)
    with pytest.raises(ModelOutputError, match="the config says 2"):
        one_channel.predict(np.zeros((32, 32, 3), np.uint8) + 128)


def test_chunked_slide_prediction_equals_whole_with_a_learned_map(tmp_path, map_predictor):
    from slide_fixtures import predict_one_slide as predict_slide
    from test_slide_pipeline import _best_iou, _geojson_rings, _raster, _whole_image_case

    from segzoo.slides.readers.array import ArraySlide

    image = _whole_image_case()
    h, w = image.shape[:2]
    whole = map_predictor.predict(image)
    count = whole.num_nuclei
    summary = predict_slide(map_predictor, ArraySlide(image, mpp=0.25), tmp_path / "out", chunk_size=128,
                            halo=96, tissue=False, progress=False)
    offsets, vertices, _ = _geojson_rings(summary.outputs["geojson"])
    best = _best_iou(whole.labels, _raster(offsets, vertices, (h, w)))
    assert abs(summary.nuclei - count) <= 0.005 * count
    assert (best >= 0.9).mean() >= 0.99
