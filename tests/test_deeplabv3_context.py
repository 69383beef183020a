"""DeepLabV3's context branch: context="window" (a fixed window, stride 1) is translation-equivariant
and round-trips through config.json, .keras and ONNX; context="image" (global pooling) is not."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import tiny_kwargs

import segzoo
from segzoo.config import ModelConfig
from segzoo.models.folders import default_config, load_model, save_model

WINDOW = {"context": "window", "context_window": 64}


def _model(**extra):
    import keras

    keras.utils.set_random_seed(0)
    return segzoo.create_model("deeplabv3", **{**tiny_kwargs("deeplabv3"), **extra})


def test_window_context_replaces_global_pooling_and_keeps_the_projection_name():
    from segzoo.models.architectures.deeplabv3 import context_pool_size

    image, window = _model(), _model(**WINDOW)
    names = {layer.name for layer in window.layers}
    assert {"aspp_window_rows", "aspp_window_cols", "aspp_pool_proj_conv"} <= names
    assert not {"aspp_pool", "aspp_pool_broadcast"} & names and "aspp_pool" in {layer.name for layer in image.layers}
    assert window.get_layer("aspp_window_rows").pool_size == (9, 1)  # 64 px / stride 8 -> 8, made odd
    assert [context_pool_size(w, 8) for w in (8, 64, 256)] == [1, 9, 33] and context_pool_size(256, 16) == 17
    # the same weights (the branch's 1x1 conv keeps its name: a released model fine-tunes into it)
    def weights(model):
        return {layer.name: [tuple(w.shape) for w in layer.weights] for layer in model.layers if layer.weights}

    assert weights(image) == weights(window)
    y = np.asarray(window(np.random.default_rng(0).normal(size=(2, 24, 40, 3)).astype("float32"), training=False))
    assert y.shape == (2, 24, 40, 1) and np.all((y >= 0) & (y <= 1))
    assert "context" not in default_config("deeplabv3").architecture_kwargs  # old configs: image pooling


@pytest.mark.parametrize("extra, match", [({"context": "tile"}, "context must be one of image, window"),
                                          ({"context": "window", "context_window": 0}, "context_window"),
                                          ({"context": "window", "context_window": 64.0}, "context_window")])
def test_bad_context_is_refused(extra, match):
    with pytest.raises(ValueError, match=match):
        _model(**extra)


def test_window_context_round_trips_through_config_folder_and_keras_file(tmp_path):
    import keras

    model = _model(**WINDOW)
    config = default_config("deeplabv3", **tiny_kwargs("deeplabv3"), **WINDOW)
    again = ModelConfig.from_json(config.to_json())
    assert again == config and again.architecture_kwargs["context"] == "window"
    save_model(model, tmp_path / "m", config)
    loaded, loaded_config = load_model(tmp_path / "m")
    assert loaded_config.architecture_kwargs["context_window"] == 64
    x = np.random.default_rng(2).normal(size=(1, 32, 48, 3)).astype("float32")
    expected = np.asarray(model(x, training=False))
    np.testing.assert_array_equal(np.asarray(loaded(x, training=False)), expected)
    model.save(tmp_path / "m.keras")
    np.testing.assert_allclose(np.asarray(keras.saving.load_model(tmp_path / "m.keras")(x)), expected, atol=1e-6)


def test_window_context_trains_under_mixed_bfloat16():
    import keras

    from segzoo.training.losses import bce_dice_loss
    from segzoo.training.model import dtype_policy

    with dtype_policy("mixed_bfloat16"):
        model = _model(**WINDOW)
    x = np.random.default_rng(1).normal(size=(2, 32, 32, 3)).astype("float32")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=bce_dice_loss)
    assert np.isfinite(float(model.train_on_batch(x, (x[..., :1] > 0.3).astype("float32"))))
    assert np.asarray(model(x)).dtype == np.float32


def _edge_reach(model, width: int, start: int) -> tuple[np.ndarray, np.ndarray]:
    """Max |crop - whole| per distance from the crop's inner edge, for a crop cut at column `start`
    (left edge inside the image) and one ending at width - start (right edge inside)."""
    x = np.random.default_rng(0).normal(size=(1, 48, width, 3)).astype("float32")
    whole = np.asarray(model(x, training=False))[0, ..., 0]
    left = np.asarray(model(x[:, :, start:], training=False))[0, ..., 0]
    right = np.asarray(model(x[:, :, :width - start], training=False))[0, ..., 0]
    return (np.abs(left - whole[:, start:]).max(axis=0),
            np.abs(right - whole[:, :width - start]).max(axis=0)[::-1])


@pytest.mark.parametrize("extra, reach", [
    ({"context_window": 64, "aspp_rates": [1, 2, 3]}, 192),  # measured: 153 px (left edge), 158 (right)
    ({"context_window": 256}, 448),  # the default rates 12/24/36 reach 288 px alone; measured 415 / 422
])
def test_window_context_is_translation_equivariant_and_image_context_is_not(extra, reach):
    """A crop cut on the stride grid gives the whole-image output (to 1e-5) at least `reach` px
    from its edges with context='window'; with context='image' it differs everywhere."""
    width, start = 64 * (-(-(reach + 96) // 64)) + 128, 128
    for_window = _edge_reach(_model(context="window", **extra), width, start)
    for diff in for_window:
        assert diff[reach:].max() <= 1e-5
        assert diff[:reach // 4].max() > 1e-3  # the edges do differ: the comparison can fail
    for diff in _edge_reach(_model(**{k: v for k, v in extra.items() if k != "context_window"}), width, start):
        assert diff[reach:].min() > 1e-4


def test_window_context_exports_to_onnx_with_parity(tmp_path):
    import onnx

    from segzoo.export.onnx import export_onnx

    folder = tmp_path / "m"
    config = default_config("deeplabv3", **tiny_kwargs("deeplabv3"), **WINDOW)
    config.inference.tile_size, config.inference.overlap = 64, 16
    save_model(_model(**WINDOW), folder, config)
    info = export_onnx(folder, folder / "model.onnx")
    assert info["max_abs_diff"] <= 1e-4
    pools = [n for n in onnx.load(str(folder / "model.onnx")).graph.node if n.op_type == "AveragePool"]
    assert [list(next(a.ints for a in n.attribute if a.name == "kernel_shape")) for n in pools] == [[9, 1], [1, 9]]
    assert not any(a.name == "count_include_pad" and a.i for n in pools for a in n.attribute)
    image = np.random.default_rng(0).integers(0, 256, (50, 77, 3), dtype=np.uint8)  # tiled, odd size
    keras_result = segzoo.load(folder, runtime="keras").predict(image)
    onnx_result = segzoo.load(folder, runtime="onnx").predict(image)
    np.testing.assert_allclose(onnx_result.prob, keras_result.prob, atol=1e-4)


def test_rebuild_model_swaps_the_context_and_keeps_every_weight(tmp_path):
    """segzoo.models.folders.rebuild_model (scripts/rebuild_model.py): an image-pooling model folder
    rebuilt with context="window" holds the same weights under the same names, its config records
    the change, and outputs on an input of the training patch's size stay close."""
    from segzoo.errors import ModelError, UsageError
    from segzoo.models.folders import rebuild_model

    image_model = _model()
    config = default_config("deeplabv3", **tiny_kwargs("deeplabv3"))
    config.preprocessing.scale = 0.5  # everything but the architecture is kept
    save_model(image_model, tmp_path / "image", config)
    model, rebuilt = rebuild_model(tmp_path / "image", {"context": "window", "context_window": 64}, command="cmd")
    assert rebuilt.architecture_kwargs == {**config.architecture_kwargs, "context": "window", "context_window": 64}
    assert rebuilt.preprocessing.scale == 0.5 and rebuilt.postprocessing == config.postprocessing
    record = rebuilt.provenance["rebuilt"]
    assert record["changed"] == {"context": "window", "context_window": 64} and record["command"] == "cmd"
    assert record["architecture_kwargs_before"] == config.architecture_kwargs
    weights = {layer.name: layer.get_weights() for layer in image_model.layers if layer.weights}
    for layer in model.layers:
        for a, b in zip(weights.get(layer.name, []), layer.get_weights()):
            np.testing.assert_array_equal(a, b)
    assert sum(len(w) for w in weights.values()) == sum(len(layer.get_weights()) for layer in model.layers)
    x = np.random.default_rng(5).normal(size=(1, 64, 64, 3)).astype("float32")
    assert np.abs(np.asarray(model(x, training=False)) - np.asarray(image_model(x, training=False))).max() < 0.2
    with pytest.raises(UsageError, match="change nothing"):
        rebuild_model(tmp_path / "image", {"aspp_filters": 8})
    with pytest.raises(ModelError, match="no counterpart of the same shape"):
        rebuild_model(tmp_path / "image", {"aspp_filters": 16})  # other weights' shapes: not a rebuild
