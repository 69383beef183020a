"""One test class run for every registered architecture (tiny configs)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import tiny_kwargs

import segzoo
from segzoo.config import ModelConfig
from segzoo.errors import ConfigError, UnknownNameError
from segzoo.models.architectures import list_architectures, model_stride
from segzoo.models.folders import default_config, load_model, save_model


@pytest.mark.parametrize("name", list_architectures())
class TestArchitecture:
    def _model(self, name, **extra):
        import keras

        keras.utils.set_random_seed(0)
        return segzoo.create_model(name, **{**tiny_kwargs(name), **extra})

    def test_output_shape_non_square(self, name):
        model = self._model(name)
        s = model_stride(name, **tiny_kwargs(name))
        x = np.random.default_rng(0).normal(size=(2, 3 * s, 5 * s, 3)).astype("float32")
        y = np.asarray(model(x, training=False))
        assert y.shape == (2, 3 * s, 5 * s, 1)
        assert np.all((y >= 0) & (y <= 1))

    def test_multiclass_head_is_softmax(self, name):
        model = self._model(name, num_classes=3)
        s = model_stride(name, **tiny_kwargs(name))
        y = np.asarray(model(np.zeros((1, 2 * s, 2 * s, 3), "float32"), training=False))
        assert y.shape == (1, 2 * s, 2 * s, 3)
        np.testing.assert_allclose(y.sum(-1), 1.0, atol=1e-5)

    def test_training_step_lowers_loss(self, name):
        import keras

        from segzoo.training.losses import bce_dice_loss

        model = self._model(name)
        s = model_stride(name, **tiny_kwargs(name))
        size = max(4 * s, 32)
        rng = np.random.default_rng(1)
        x = rng.normal(size=(4, size, size, 3)).astype("float32")
        y = (x[..., :1] > 0.3).astype("float32")  # learnable: nuclei where channel 0 is high
        model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=bce_dice_loss)
        before = float(model.evaluate(x, y, verbose=0))
        for _ in range(15):
            model.train_on_batch(x, y)
        after = float(model.evaluate(x, y, verbose=0))
        assert after < before

    def test_bfloat16_training_step_keeps_float32_weights_and_output(self, name):
        """`segzoo train --dtype-policy mixed_bfloat16` builds the model under that policy."""
        import keras

        from segzoo.training.losses import bce_dice_loss
        from segzoo.training.model import dtype_policy

        with dtype_policy("mixed_bfloat16"):
            model = self._model(name)
        s = model_stride(name, **tiny_kwargs(name))
        x = np.random.default_rng(1).normal(size=(2, 2 * s, 2 * s, 3)).astype("float32")
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=bce_dice_loss)
        loss = float(model.train_on_batch(x, (x[..., :1] > 0.3).astype("float32")))
        assert np.isfinite(loss) and {w.dtype for w in model.trainable_weights} == {"float32"}
        assert np.asarray(model(x)).dtype == np.float32 and model.layers[1].compute_dtype == "bfloat16"

    def test_config_round_trip(self, name):
        config = default_config(name, **tiny_kwargs(name))
        again = ModelConfig.from_json(config.to_json())
        assert again == config
        assert again.preprocessing.pad_to_stride == model_stride(name, **tiny_kwargs(name))

    def test_save_load_identical_outputs(self, name, tmp_path):
        model = self._model(name)
        config = default_config(name, **tiny_kwargs(name))
        save_model(model, tmp_path / "m", config)
        loaded, loaded_config = load_model(tmp_path / "m")
        assert loaded_config == config
        s = config.preprocessing.pad_to_stride
        x = np.random.default_rng(2).normal(size=(1, 2 * s, 3 * s, 3)).astype("float32")
        np.testing.assert_array_equal(np.asarray(model(x, training=False)),
                                      np.asarray(loaded(x, training=False)))

    def test_full_keras_serialization(self, name, tmp_path):
        """The .keras format (custom layers via get_config + registration) round-trips."""
        import keras

        model = self._model(name)
        model.save(tmp_path / "m.keras")
        again = keras.saving.load_model(tmp_path / "m.keras")
        s = model_stride(name, **tiny_kwargs(name))
        x = np.random.default_rng(3).normal(size=(1, 2 * s, 2 * s, 3)).astype("float32")
        np.testing.assert_allclose(np.asarray(model(x)), np.asarray(again(x)), atol=1e-6)

    def test_instance_maps_follow_the_nucleus_probability(self, name, tmp_path):
        """instance_maps adds one sigmoid channel per map after channel 0; the trunk and the
        nucleus head keep their layer names (a released model's weights copy over by name)."""
        plain = self._model(name)
        model = self._model(name, instance_maps=["distance", "boundary"])
        s = model_stride(name, **tiny_kwargs(name))
        x = np.random.default_rng(4).normal(size=(1, 2 * s, 3 * s, 3)).astype("float32")
        y = np.asarray(model(x, training=False))
        assert y.shape == (1, 2 * s, 3 * s, 3) and np.all((y >= 0) & (y <= 1))
        assert {layer.name for layer in plain.layers if layer.weights} < {layer.name for layer in model.layers}
        config = default_config(name, **tiny_kwargs(name), instance_maps=["distance", "boundary"])
        save_model(model, tmp_path / "m", config)
        loaded, _ = load_model(tmp_path / "m")
        np.testing.assert_array_equal(np.asarray(loaded(x, training=False)), y)

    def test_instance_head_size(self, name):
        """instance_layers conv-BN-ReLU layers of instance_width filters ("instance_a", "instance_b",
        ...) before the 1x1; the default head is the one layer of 16 earlier models have."""
        default = self._model(name, instance_maps=["distance"])
        assert [l.name for l in default.layers if l.name.endswith("_conv") and l.name.startswith("instance_")] \
            == ["instance_a_conv"] and default.get_layer("instance_a_conv").filters == 16
        model = self._model(name, instance_maps=["distance"], instance_width=8, instance_layers=2)
        assert model.get_layer("instance_b_conv").filters == 8 and model.output.shape[-1] == 2
        with pytest.raises(ValueError, match="instance_layers"):
            self._model(name, instance_maps=["distance"], instance_layers=0)

    def test_unknown_kwarg_lists_valid(self, name):
        with pytest.raises(ConfigError, match="valid arguments"):
            segzoo.create_model(name, not_an_argument=1)


def test_unknown_architecture_lists_names():
    with pytest.raises(UnknownNameError) as info:
        segzoo.create_model("resnet-9000")
    for name in list_architectures():
        assert name in str(info.value)


def test_registry_has_the_three_papers():
    assert {"unet", "segnet", "deeplabv3"} <= set(list_architectures())


def test_segnet_unpooling_places_values_at_max_positions():
    from segzoo.models.architectures.layers import MaxPoolingWithMask, MaxUnpoolingWithMask

    x = np.array([[1, 5, 0, 2], [3, 2, 7, 1], [0, 0, 1, 1], [9, 0, 1, 4]], "float32")[None, :, :, None]
    pooled, mask = MaxPoolingWithMask()(x)
    np.testing.assert_array_equal(np.asarray(pooled)[0, :, :, 0], [[5, 7], [9, 4]])
    out = np.asarray(MaxUnpoolingWithMask()([pooled, mask]))[0, :, :, 0]
    np.testing.assert_array_equal(out, [[0, 5, 0, 0], [0, 0, 7, 0], [0, 0, 0, 0], [9, 0, 0, 4]])


def test_deeplab_output_stride_16_and_rejects_others():
    m = segzoo.create_model("deeplabv3", **{**tiny_kwargs("deeplabv3"), "output_stride": 16})
    assert np.asarray(m(np.zeros((1, 32, 48, 3), "float32"))).shape == (1, 32, 48, 1)
    with pytest.raises(ValueError, match="output_stride"):
        segzoo.create_model("deeplabv3", **{**tiny_kwargs("deeplabv3"), "output_stride": 4})


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_bilinear_upsample_is_repeated_exact_2x_bilinear(factor):
    import tensorflow as tf

    from segzoo.models.architectures.layers import BilinearUpsample

    x = np.random.default_rng(factor).normal(size=(2, 5, 7, 3)).astype("float32")
    ours = np.asarray(BilinearUpsample(factor)(x))
    reference, size = x, np.array([5, 7])
    while size[0] < 5 * factor:  # successive exact 2x bilinear resizes
        size = size * 2
        reference = tf.image.resize(reference, tuple(size), method="bilinear").numpy()
    np.testing.assert_allclose(ours, reference, atol=1e-5)
    with pytest.raises(ValueError, match="power of two"):
        BilinearUpsample(3)


def test_deeplab_decoder_stride_2_adds_a_stage_and_upsamples_scores_2x():
    base = segzoo.create_model("deeplabv3", **tiny_kwargs("deeplabv3"))
    m = segzoo.create_model("deeplabv3", **{**tiny_kwargs("deeplabv3"), "decoder_stride": 2})
    assert np.asarray(m(np.zeros((1, 32, 48, 3), "float32"))).shape == (1, 32, 48, 1)
    assert m.get_layer("final_up").factor == 2 and base.get_layer("final_up").factor == 4
    assert m.get_layer("decoder2_concat").output.shape[-1] > 0
    assert m.count_params() > base.count_params()
    with pytest.raises(ValueError, match="decoder_stride must be 4 or 2, got 8"):
        segzoo.create_model("deeplabv3", **{**tiny_kwargs("deeplabv3"), "decoder_stride": 8})


def test_residual_unet_adds_projected_shortcuts_and_round_trips(tmp_path):
    """unet(residual=True): each conv pair gets a 1x1-projected shortcut; the default keeps the
    plain blocks (and so the layer names of the released weights)."""
    kwargs = {**tiny_kwargs("unet"), "residual": True}
    plain = segzoo.create_model("unet", **tiny_kwargs("unet"))
    residual = segzoo.create_model("unet", **kwargs)
    blocks = 2 * 2 + 1  # depth 2: encoder and decoder pairs, plus the bottleneck
    assert sum(layer.__class__.__name__ == "Add" for layer in residual.layers) == blocks
    assert not any(layer.__class__.__name__ == "Add" for layer in plain.layers)
    assert "residual" not in tiny_kwargs("unet") and default_config("unet").architecture_kwargs == {}
    config = default_config("unet", **kwargs)
    save_model(residual, tmp_path / "m", config)
    loaded, loaded_config = load_model(tmp_path / "m")
    x = np.random.default_rng(0).normal(size=(1, 16, 16, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(loaded(x, training=False)),
                               np.asarray(residual(x, training=False)), atol=1e-6)
    assert loaded_config.architecture_kwargs["residual"] is True
