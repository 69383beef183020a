"""ONNX export parity for every architecture, TF-free inference, refusal of altered files."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import tiny_kwargs

import segzoo
from segzoo.errors import OnnxModelError, ParityShapeError, SegzooError
from segzoo.models.architectures import list_architectures
from segzoo.models.folders import default_config, save_model
from segzoo.runtime.onnx_format import read_segzoo_onnx


def _folder(tmp_path, name, **extra):
    import keras

    keras.utils.set_random_seed(0)
    folder = tmp_path / name
    kwargs = {**tiny_kwargs(name), **extra}
    config = default_config(name, **kwargs)
    config.inference.tile_size, config.inference.overlap = 64, 16
    if kwargs.get("instance_maps"):
        config.postprocessing.instance_map = kwargs["instance_maps"][0]
    save_model(segzoo.create_model(name, **kwargs), folder, config)
    return folder


@pytest.mark.parametrize("name, extra", [(name, {}) for name in list_architectures()]
                         + [("unet", {"residual": True})]
                         + [(name, {"instance_maps": ["distance", "boundary"]}) for name in list_architectures()])
def test_export_parity_and_same_predictions(name, extra, tmp_path):
    from segzoo.export.onnx import export_onnx

    folder = _folder(tmp_path, name, **extra)
    info = export_onnx(folder, folder / "model.onnx")
    assert info["max_abs_diff"] <= 1e-4
    _, config = read_segzoo_onnx(folder / "model.onnx")
    assert config.architecture == name
    image = np.random.default_rng(0).integers(0, 256, (50, 77, 3), dtype=np.uint8)  # tiled, odd size
    keras_result = segzoo.load(folder, runtime="keras").predict(image)
    onnx_result = segzoo.load(folder, runtime="onnx").predict(image)
    np.testing.assert_allclose(onnx_result.prob, keras_result.prob, atol=1e-4)
    assert segzoo.load(folder).runtime == "onnx"  # auto prefers onnxruntime
    if extra.get("instance_maps"):  # every output channel exported, the learned map decoded alike
        from segzoo.predict.tiling import predict_probabilities

        outputs = [predict_probabilities(segzoo.load(folder, runtime=r).run_batch, image, config) for r in ("keras", "onnx")]
        assert outputs[0].shape == outputs[1].shape == (50, 77, 3)
        np.testing.assert_allclose(outputs[1], outputs[0], atol=1e-4)
        assert (onnx_result.labels == keras_result.labels).mean() > 0.99


def test_export_refuses_to_overwrite(tmp_path):
    from segzoo.export.onnx import export_onnx

    folder = _folder(tmp_path, "unet")
    (folder / "model.onnx").write_bytes(b"x")
    with pytest.raises(SegzooError, match="exists"):
        export_onnx(folder, folder / "model.onnx")


def test_tampered_and_foreign_onnx_refused(tmp_path):
    import onnx
    from onnx import helper, numpy_helper

    from segzoo.export.onnx import export_onnx

    folder = _folder(tmp_path, "unet")
    export_onnx(folder, tmp_path / "m.onnx")
    model = onnx.load(tmp_path / "m.onnx")
    init = model.graph.initializer[0]
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) + 1.0, init.name))
    onnx.save(model, tmp_path / "tampered.onnx")
    with pytest.raises(OnnxModelError, match="modified after export"):
        segzoo.load(tmp_path / "tampered.onnx")
    node = helper.make_node("Identity", ["image"], ["probabilities"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("image", 1, None)],
                              [helper.make_tensor_value_info("probabilities", 1, None)])
    onnx.save(helper.make_model(graph), tmp_path / "foreign.onnx")
    with pytest.raises(OnnxModelError, match="not a segzoo export"):
        segzoo.load(tmp_path / "foreign.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\x00\x01junk")
    with pytest.raises(OnnxModelError, match="not a valid ONNX"):
        segzoo.load(tmp_path / "junk.onnx")


def test_onnx_prediction_never_imports_tensorflow_or_keras(tmp_path):
    from segzoo.export.onnx import export_onnx

    folder = _folder(tmp_path, "unet")
    export_onnx(folder, tmp_path / "bare.onnx")
    code = textwrap.dedent(f"""
        import sys, numpy as np, segzoo
        from segzoo.cli import main
        p = segzoo.load({str(tmp_path / "bare.onnx")!r})
        r = p.predict(np.zeros((40, 30, 3), np.uint8))
        assert r.prob.shape == (40, 30)
        from PIL import Image
        Image.fromarray(np.full((20, 20, 3), 90, np.uint8)).save({str(tmp_path / "in.png")!r})
        assert main(["predict", {str(tmp_path / "in.png")!r}, "--model", {str(folder)!r}, "--runtime", "onnx",
                     "--out", {str(tmp_path / "out")!r}]) == 1  # no model.onnx: a ModelError, one line
        import shutil; shutil.copy({str(tmp_path / "bare.onnx")!r}, {str(folder / "model.onnx")!r})
        assert main(["predict", {str(tmp_path / "in.png")!r}, "--model", {str(folder)!r}, "--runtime", "onnx",
                     "--out", {str(tmp_path / "out")!r}]) == 0
        bad = [m for m in ("tensorflow", "keras", "tf2onnx") if m in sys.modules]
        assert not bad, bad
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")


def test_int8_quantization_keeps_metadata(tmp_path, monuseg_folder):
    from segzoo.export.onnx import export_onnx
    from segzoo.export.quantize import quantize_int8

    folder = _folder(tmp_path, "unet")
    export_onnx(folder, tmp_path / "m.onnx")
    quantize_int8(tmp_path / "m.onnx", tmp_path / "m.int8.onnx", monuseg_folder, patches=4)
    _, config = read_segzoo_onnx(tmp_path / "m.int8.onnx")
    assert config.architecture == "unet"
    prob = segzoo.load(tmp_path / "m.int8.onnx").predict(np.zeros((64, 64, 3), np.uint8)).prob
    assert prob.shape == (64, 64) and np.isfinite(prob).all()


def test_precision_int8_loads_the_int8_file_of_a_folder(tmp_path, monuseg_folder):
    from segzoo.export.onnx import export_onnx
    from segzoo.export.quantize import quantize_int8

    folder = _folder(tmp_path, "unet")
    with pytest.raises(SegzooError, match="no model.int8.onnx"):
        segzoo.load(folder, precision="int8")
    export_onnx(folder, folder / "model.onnx")
    quantize_int8(folder / "model.onnx", folder / "model.int8.onnx", monuseg_folder, patches=4)
    image = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    fp32 = segzoo.load(folder, runtime="onnx").predict(image).prob
    int8 = segzoo.load(folder, precision="int8").predict(image).prob
    assert not np.array_equal(fp32, int8), "precision='int8' ran the fp32 file"
    assert np.abs(int8 - fp32).mean() < 0.05  # the same (untrained, tiny) model, quantised


@pytest.mark.parametrize("kwargs, match", [
    ({"precision": "fp16"}, "valid precisions: fp32, int8"),
    ({"precision": "int8", "runtime": "keras"}, "runs on onnxruntime"),
])
def test_bad_precision_is_refused(tmp_path, kwargs, match):
    with pytest.raises(SegzooError, match=match):
        segzoo.load(tmp_path, **kwargs)


def test_zoo_models_load_in_int8_from_the_bundled_copy(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # never huggingface.co, even with a network
    for name in segzoo.list_models():
        predictor = segzoo.load(name, precision="int8", cache_dir=tmp_path)  # empty cache: the bundled copy
        assert predictor.runtime == "onnx"
        assert predictor.predict(np.full((48, 48, 3), 200, np.uint8)).prob.shape == (48, 48)


def _op_types(path) -> list[str]:
    import onnx

    return [n.op_type for n in onnx.load(str(path)).graph.node]


def test_export_drops_the_noop_crop_after_stride_sized_up_convolutions(tmp_path):
    from segzoo.export.onnx import export_onnx

    folder = _folder(tmp_path, "unet")
    export_onnx(folder, folder / "model.onnx")
    ops = _op_types(folder / "model.onnx")
    assert ops.count("ConvTranspose") == tiny_kwargs("unet").get("depth", 4) and "Pad" not in ops


def test_export_splits_each_decoder_concat_into_per_input_convolutions(tmp_path):
    from segzoo.export.onnx import export_onnx

    folder = _folder(tmp_path, "unet")
    export_onnx(folder, folder / "model.onnx")  # parity with Keras is part of the export
    ops = _op_types(folder / "model.onnx")
    assert "Concat" not in ops and ops.count("Add") == tiny_kwargs("unet").get("depth", 4)


def test_split_concatenated_convolution_gives_the_same_output():
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    from segzoo.export.rewrite import split_concatenated_convolutions

    rng = np.random.default_rng(0)
    sizes = (3, 5, 2)
    inputs = [helper.make_tensor_value_info(f"x{i}", onnx.TensorProto.FLOAT, ["n", c, "h", "w"])
              for i, c in enumerate(sizes)]
    weight = numpy_helper.from_array(rng.normal(size=(4, sum(sizes), 3, 3)).astype(np.float32), "w")
    bias = numpy_helper.from_array(rng.normal(size=4).astype(np.float32), "b")
    nodes = [helper.make_node("Concat", [f"x{i}" for i in range(3)], ["cat"], axis=1),
             helper.make_node("Conv", ["cat", "w", "b"], ["y"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["y"], ["out"])]
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("out", 1, ["n", 4, "h", "w"])],
                              initializer=[weight, bias])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    feeds = {f"x{i}": rng.normal(size=(2, c, 7, 9)).astype(np.float32) for i, c in enumerate(sizes)}
    before = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    assert split_concatenated_convolutions(model) == 1
    assert [n.op_type for n in model.graph.node].count("Conv") == 3
    assert "Concat" not in [n.op_type for n in model.graph.node]
    after = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    np.testing.assert_allclose(after, before, atol=1e-5)


def test_export_keeps_the_crop_of_other_up_convolutions(tmp_path):
    """kernel 3 / stride 2 'same': ONNX gives 2H+1 rows and tf2onnx's Slice crops one; it must stay."""
    import keras

    from segzoo.export.onnx import check_parity, keras_to_onnx
    from segzoo.predict.preprocessing import normalize

    inputs = keras.Input((None, None, 3))
    outputs = keras.layers.Conv2DTranspose(1, 3, strides=2, padding="same", activation="sigmoid")(inputs)
    model = keras.Model(inputs, outputs)
    config = default_config("unet", **tiny_kwargs("unet"))
    proto = keras_to_onnx(model, config)
    assert "Slice" in [n.op_type for n in proto.graph.node]
    batch = normalize(np.random.default_rng(0).integers(0, 256, (1, 16, 24, 3), dtype=np.uint8),
                      config.preprocessing)
    assert check_parity(model, proto.SerializeToString(), [batch]) <= 1e-4


@pytest.mark.parametrize("kernel,rate", [(3, 2), (3, (2, 3)), (2, 3), (4, 2)])
def test_dilated_same_convolutions_export_as_one_dilated_conv(kernel, rate):
    """TensorFlow's SpaceToBatchND form of an atrous convolution becomes one ONNX Conv with
    dilations (the padding split of 'same' included: even kernels pad less before than after)."""
    import keras

    from segzoo.export.onnx import check_parity, keras_to_onnx
    from segzoo.predict.preprocessing import normalize

    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, kernel, dilation_rate=rate, padding="same", activation="relu")(inputs)
    outputs = keras.layers.Conv2D(1, 1, activation="sigmoid")(x)
    model = keras.Model(inputs, outputs)
    config = default_config("deeplabv3", **tiny_kwargs("deeplabv3"))
    proto = keras_to_onnx(model, config)
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    dilations = [list(a.ints) for n in convs for a in n.attribute if a.name == "dilations"]
    assert len(convs) == 2 and [d for d in dilations if d != [1, 1]] == [list(np.broadcast_to(rate, 2))]
    assert not {"SpaceToDepth", "DepthToSpace", "Transpose"} & {n.op_type for n in proto.graph.node[1:-1]}
    batch = normalize(np.random.default_rng(0).integers(0, 256, (1, 21, 30, 3), dtype=np.uint8),
                      config.preprocessing)
    assert check_parity(model, proto.SerializeToString(), [batch]) <= 1e-4


@pytest.mark.parametrize("factor", [2, 4])
def test_bilinear_upsampling_exports_as_one_resize_per_2x_step(factor):
    """BilinearUpsample's repeat + depthwise-filter form becomes ONNX Resize (half-pixel
    linear) instead of run-time-shaped Tile/Expand/Reshape and grouped Convs."""
    import keras

    from segzoo.export.onnx import check_parity, keras_to_onnx
    from segzoo.models.architectures.layers import BilinearUpsample

    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(2, 1)(inputs)
    outputs = keras.layers.Activation("sigmoid")(BilinearUpsample(factor)(x))
    model = keras.Model(inputs, outputs)
    config = default_config("deeplabv3", **tiny_kwargs("deeplabv3"))
    proto = keras_to_onnx(model, config)
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("Resize") == factor.bit_length() - 1
    assert ops.count("Conv") == 1 and not {"Tile", "Expand", "Reshape"} & set(ops)
    batch = np.random.default_rng(factor).normal(size=(2, 5, 7, 3)).astype("float32")
    assert check_parity(model, proto.SerializeToString(), [batch]) <= 1e-5
    assert BilinearUpsample._double.__qualname__ == "BilinearUpsample._double"  # restored after export


def test_segnet_pooling_mask_and_unpooling_export_as_resize():
    """SegNet's nearest 2x repeats (pooling mask, unpooling) become one ONNX Resize each
    instead of run-time-shaped Reshape/Tile, and the layers are unchanged after export."""
    import keras

    from segzoo.export.onnx import check_parity, keras_to_onnx
    from segzoo.models.architectures import layers
    from segzoo.models.architectures.layers import MaxPoolingWithMask, MaxUnpoolingWithMask

    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 1)(inputs)
    pooled, mask = MaxPoolingWithMask()(x)
    x = MaxUnpoolingWithMask()([keras.layers.Conv2D(4, 1)(pooled), mask])
    model = keras.Model(inputs, keras.layers.Conv2D(1, 1, activation="sigmoid")(x))
    proto = keras_to_onnx(model, default_config("segnet", **tiny_kwargs("segnet")))
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("Resize") == 2 and "Tile" not in ops
    # ReLU-free random input: ties inside a 2x2 window are improbable, so the mask is exact
    batch = np.random.default_rng(3).normal(size=(2, 6, 10, 3)).astype("float32")
    assert check_parity(model, proto.SerializeToString(), [batch]) <= 1e-5
    assert layers.repeat_2x.__module__ == "segzoo.models.architectures.layers"  # restored after export


def test_export_converts_again_when_tf2onnx_gives_a_wrong_shape_and_gives_up_after_a_few(tmp_path, monkeypatch):
    import segzoo.export.onnx as export

    folder = _folder(tmp_path, "unet")
    real_check, calls = export.check_parity, []

    def flaky_check(model, data, batches, expected):
        calls.append(expected)
        if len(calls) == 1:
            raise ParityShapeError("ONNX output shape (1, 1, 8, 8, 1) != Keras (1, 8, 8, 1)")
        return real_check(model, data, batches, expected=expected)

    monkeypatch.setattr(export, "check_parity", flaky_check)
    export.export_onnx(folder, folder / "model.onnx")
    assert len(calls) == 2 and (folder / "model.onnx").is_file()
    assert calls[0] is calls[1]  # the Keras outputs are computed once, not per attempt

    def always_wrong(model, data, batches, expected):
        raise ParityShapeError("wrong")

    monkeypatch.setattr(export, "check_parity", always_wrong)
    with pytest.raises(ParityShapeError):
        export.export_onnx(folder, folder / "again.onnx")
    assert not (folder / "again.onnx").exists()
