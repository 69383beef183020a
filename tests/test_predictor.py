"""Predictor reliability: output shape and channel checks, no-data regions, Prediction outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segzoo.config import ModelConfig
from segzoo.errors import ConfigError, ModelOutputError
from segzoo.io.images import sample_image_path
from segzoo.predict.postprocessing import NO_DATA_MIN_AREA, no_data_mask
from segzoo.predict.predictor import Prediction, Predictor
from segzoo.predict.preprocessing import fill_no_data
from segzoo.runtime.onnx import onnx_runner
from segzoo.runtime.onnx_format import read_segzoo_onnx

BUNDLED_INT8 = Path(__file__).resolve().parents[1] / "segzoo" / "bundled" / "unet-monuseg" / "model.int8.onnx"


# ---------------------------------------------------------------- output shape and channels


def _pool_model(*, pool: int, channels: int) -> bytes:
    """An ONNX graph with segzoo's interface (input 'image' NHWC float32, output 'probabilities'
    NHWK): sigmoid of the channel mean, average-pooled by `pool` (1: same size) and repeated
    over `channels` output channels."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Transpose", ["image"], ["nchw"], perm=[0, 3, 1, 2])]
    last = "nchw"
    if pool > 1:
        nodes.append(helper.make_node("AveragePool", [last], ["pooled"], kernel_shape=[pool, pool],
                                      strides=[pool, pool]))
        last = "pooled"
    nodes += [helper.make_node("ReduceMean", [last, "axes"], ["mean"], keepdims=1),
              helper.make_node("Sigmoid", ["mean"], ["prob1"]),
              helper.make_node("Concat", ["prob1"] * channels, ["probk"], axis=1),
              helper.make_node("Transpose", ["probk"], ["probabilities"], perm=[0, 2, 3, 1])]
    graph = helper.make_graph(
        nodes, "pool",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", "h", "w", 3])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["n", "oh", "ow", channels])],
        initializer=[helper.make_tensor("axes", TensorProto.INT64, [1], [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _config(name: str = "pool-test") -> ModelConfig:
    config = ModelConfig(architecture="unet", name=name)
    config.inference.tile_size = 128
    config.inference.overlap = 16
    return config.validate()


def _pink(size: int = 256) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.clip(np.array([235, 190, 215]) + rng.integers(-10, 10, (size, size, 3)), 0, 255).astype(np.uint8)


def test_same_size_one_channel_onnx_model_predicts():
    predictor = Predictor(onnx_runner(_pool_model(pool=1, channels=1)), _config(), runtime="onnx")
    result = predictor.predict(_pink(200))
    assert result.prob.shape == result.mask.shape == result.labels.shape == (200, 200)
    assert predictor.run_batch.session is not None  # the wrapped runner's attributes stay reachable


@pytest.mark.parametrize("size", [96, 300])  # one tile; several tiles (tile_size 128)
def test_half_size_output_is_refused_naming_model_and_shapes(size):
    predictor = Predictor(onnx_runner(_pool_model(pool=2, channels=1)), _config("half-model"), runtime="onnx")
    with pytest.raises(ModelOutputError) as info:
        predictor.predict(_pink(size))
    message = str(info.value)
    assert "'half-model'" in message
    tile = 96 if size == 96 else 128
    assert f"(1, {tile}, {tile}, 3)" in message and f"(1, {tile // 2}, {tile // 2}, 1)" in message


def test_multichannel_output_is_refused_not_channel_zero():
    predictor = Predictor(onnx_runner(_pool_model(pool=1, channels=2)), _config("two-class"), runtime="onnx")
    with pytest.raises(ModelOutputError, match=r"'two-class'.*\(1, 64, 64, 2\).*2 output channels"):
        predictor.predict(_pink(64))


def test_predict_batch_raises_a_model_output_error_instead_of_yielding_it_per_image():
    predictor = Predictor(onnx_runner(_pool_model(pool=2, channels=1)), _config(), runtime="onnx")
    with pytest.raises(ModelOutputError):
        list(predictor.predict_batch([_pink(64), _pink(64)], progress=False))


def test_every_runtime_is_checked_plain_callable_too():
    def downsampling(batch):
        return 1 / (1 + np.exp(-batch[:, ::2, ::2, :1]))

    predictor = Predictor(downsampling, _config("plain"))
    with pytest.raises(ModelOutputError, match="plain"):
        predictor.predict(_pink(64))
    predictor.run_batch = lambda batch: 1 / (1 + np.exp(-batch[..., :1]))  # replacing it is checked too
    assert predictor.predict(_pink(64)).prob.shape == (64, 64)


@pytest.mark.parametrize("value", [2, 3, 0, True])
def test_config_refuses_num_classes_other_than_one(value):
    with pytest.raises(ConfigError, match=rf"one nucleus probability channel; num_classes={value!r} is not supported"):
        ModelConfig(architecture="unet", architecture_kwargs={"num_classes": value}).validate()
    with pytest.raises(ConfigError, match="num_classes"):
        ModelConfig.from_dict({"architecture": "unet", "architecture_kwargs": {"num_classes": value}})


def test_config_accepts_num_classes_one_or_absent():
    config = ModelConfig(architecture="unet", architecture_kwargs={"num_classes": 1})
    assert config.validate() is config
    assert ModelConfig.from_dict({"architecture": "unet"}).architecture_kwargs == {}


# ---------------------------------------------------------------- no-data regions


@pytest.fixture(scope="module")
def zoo_predictor() -> Predictor:
    """The bundled unet-monuseg int8 ONNX model (offline, no Keras)."""
    data, config = read_segzoo_onnx(BUNDLED_INT8)
    return Predictor(onnx_runner(data, threads=2), config, runtime="onnx")


@pytest.fixture(scope="module")
def sample() -> np.ndarray:
    return np.array(Image.open(sample_image_path()).convert("RGB"))


@pytest.fixture(scope="module")
def plain(zoo_predictor, sample) -> Prediction:
    return zoo_predictor.predict(sample)


@pytest.mark.parametrize("colour", [(0, 0, 0), (6, 3, 8), (255, 255, 255), (128, 128, 128), (235, 190, 215)],
                         ids=["black", "near-black", "white", "grey", "pink"])
def test_blank_images_have_no_nuclei(zoo_predictor, colour):
    image = np.empty((256, 256, 3), np.uint8)
    image[:] = colour
    result = zoo_predictor.predict(image)
    assert result.num_nuclei == 0 and not result.mask.any()


@pytest.mark.parametrize("pads, fill", [(((200, 0), (200, 0)), 0), (((0, 200), (0, 200)), 0),
                                        (((200, 0), (0, 200)), 255)],
                         ids=["black-top-left", "black-bottom-right", "white-top-right"])
def test_padded_tile_has_no_nuclei_in_the_padding_and_the_same_inside(zoo_predictor, sample, plain, pads, fill):
    assert plain.num_nuclei > 80
    padded = np.pad(sample, (*pads, (0, 0)), constant_values=fill)
    result = zoo_predictor.predict(padded)
    top, left = pads[0][0], pads[1][0]
    rows = result.measurements()
    in_padding = [r for r in rows if not (left <= r["centroid_x"] < left + 512 and top <= r["centroid_y"] < top + 512)]
    assert in_padding == []
    assert not result.mask[:top].any() and not result.mask[:, :left].any()
    assert abs(len(rows) - plain.num_nuclei) <= 0.05 * plain.num_nuclei
    inside = result.mask[top:top + 512, left:left + 512]
    dice = 2 * (inside & plain.mask).sum() / (inside.sum() + plain.mask.sum())
    assert dice > 0.95
    np.testing.assert_array_equal(result.image, padded)  # the image as read, not the filled one


def test_no_data_mask_keeps_dark_and_saturated_specks_in_tissue():
    image = _pink(200)
    yy, xx = np.mgrid[0:200, 0:200]
    image[(yy - 50) ** 2 + (xx - 50) ** 2 < 12 ** 2] = (5, 5, 5)   # a nucleus-sized black disc (~450 px)
    image[100:103, 10:190] = 0                                      # a 3-px black line (540 px)
    image[150:160, 20:30] = 255                                     # a 10x10 saturated speck
    assert not no_data_mask(image).any()
    image[120:180, 120:180] = np.random.default_rng(1).integers(0, 11, (60, 60, 3))  # noisy black block
    image[0:40, 150:200] = 255                                                      # white fill at the border
    expected = np.zeros((200, 200), bool)
    expected[120:180, 120:180] = True
    expected[0:40, 150:200] = True
    np.testing.assert_array_equal(no_data_mask(image), expected)
    assert 60 * 60 > NO_DATA_MIN_AREA > np.pi * 12 ** 2


def test_real_tile_has_no_no_data(sample):
    assert not no_data_mask(sample).any()


def test_fill_no_data_mirrors_like_reflect_padding(sample):
    pads = ((40, 0), (0, 30), (0, 0))
    padded = np.pad(sample, pads)
    mask = np.zeros(padded.shape[:2], bool)
    mask[:40] = True
    mask[:, -30:] = True
    filled = fill_no_data(padded, mask)
    np.testing.assert_array_equal(filled, np.pad(sample, pads, mode="reflect"))
    np.testing.assert_array_equal(padded, np.pad(sample, pads))  # input untouched


# ---------------------------------------------------------------- Prediction outputs


def _known_prediction() -> Prediction:
    """Two nuclei: a 10x7 rectangle (label 1) and a disc of radius 6 (label 2) on a 40x60 image."""
    labels = np.zeros((40, 60), np.int32)
    labels[5:15, 20:27] = 1  # rows 5..14, columns 20..26
    yy, xx = np.mgrid[0:40, 0:60]
    labels[(yy - 25) ** 2 + (xx - 40) ** 2 < 36] = 2
    image = np.full((40, 60, 3), 200, np.uint8)
    image[labels == 1] = (100, 50, 150)
    image[labels == 2] = (60, 40, 120)
    prob = np.where(labels > 0, 0.9, 0.1).astype(np.float32)
    return Prediction(prob=prob, mask=labels > 0, labels=labels, image=image)


def test_measurements_of_known_labels():
    prediction = _known_prediction()
    assert prediction.num_nuclei == 2
    first, second = prediction.measurements()
    assert first["label"] == 1 and first["area"] == 70
    assert first["centroid_x"] == pytest.approx(23.0) and first["centroid_y"] == pytest.approx(9.5)
    assert (first["bbox_x0"], first["bbox_y0"], first["bbox_x1"], first["bbox_y1"]) == (20, 5, 27, 15)
    assert (first["mean_r"], first["mean_g"], first["mean_b"]) == (100.0, 50.0, 150.0)
    assert first["mean_prob"] == pytest.approx(0.9)
    assert second["label"] == 2 and second["area"] == int((prediction.labels == 2).sum())
    assert second["centroid_x"] == pytest.approx(40.0) and second["centroid_y"] == pytest.approx(25.0)
    assert second["mean_r"] == 60.0


def test_geojson_has_one_detection_per_nucleus_enclosing_its_centroid():
    from skimage.measure import points_in_poly

    prediction = _known_prediction()
    collection = prediction.to_geojson()
    assert collection["type"] == "FeatureCollection"
    features = collection["features"]
    rows = {r["label"]: r for r in prediction.measurements()}
    assert len(features) == len(rows) == 2
    for feature in features:
        props = feature["properties"]
        assert props["objectType"] == "detection" and feature["geometry"]["type"] == "Polygon"
        label = int(feature["id"].split("-")[-1])
        ring = np.array(feature["geometry"]["coordinates"][0])
        centroid = [rows[label]["centroid_x"], rows[label]["centroid_y"]]
        assert points_in_poly([centroid], ring)[0]
        other = rows[3 - label]
        assert not points_in_poly([[other["centroid_x"], other["centroid_y"]]], ring)[0]
        assert props["measurements"]["area"] == rows[label]["area"]
    assert prediction.to_geojson(object_type="annotation")["features"][0]["properties"]["objectType"] == "annotation"


def test_geojson_of_a_real_prediction_matches_its_nuclei(zoo_predictor, sample):
    from skimage.measure import points_in_poly

    result = zoo_predictor.predict(sample[:256, :256])
    features = result.to_geojson()["features"]
    assert len(features) == result.num_nuclei > 10
    for feature, row in zip(features, result.measurements()):
        ring = np.array(feature["geometry"]["coordinates"][0])
        assert feature["id"] == f"nucleus-{row['label']}"
        x0, x1 = ring[:, 0].min(), ring[:, 0].max()
        y0, y1 = ring[:, 1].min(), ring[:, 1].max()
        assert row["bbox_x0"] - 0.5 <= x0 and x1 <= row["bbox_x1"] - 0.5
        assert row["bbox_y0"] - 0.5 <= y0 and y1 <= row["bbox_y1"] - 0.5
        if row["area"] > 30 and result.labels[round(row["centroid_y"]), round(row["centroid_x"])] == row["label"]:
            assert points_in_poly([[row["centroid_x"], row["centroid_y"]]], ring)[0]


def test_nucleus_count_is_the_number_of_distinct_nonzero_labels():
    """One count for Prediction.num_nuclei and evaluation: an image whose every pixel lies in a
    nucleus has as many nuclei as labels (the old count subtracted a background it did not have)."""
    from segzoo.predict.postprocessing import count_nuclei

    full = np.array([[1, 1], [2, 3]], np.int32)
    assert count_nuclei(full) == 3
    assert count_nuclei(np.where(full == 2, 0, full)) == 2
    assert count_nuclei(np.zeros((3, 3), np.int32)) == 0
    image = np.zeros((2, 2, 3), np.uint8)
    assert Prediction(prob=np.ones((2, 2), np.float32), mask=full > 0, labels=full, image=image).num_nuclei == 3
