"""Keras -> ONNX export (tf2onnx) with parity checking and int8 quantization.

The exported graph has one input "image" (float32, N x H x W x C, every dim
dynamic; H and W multiples of the model's stride, already normalised as
config.json says) and one output "probabilities" (N x H x W x K). The model's
config (architecture, preprocessing, threshold, segzoo version) is stored in
the ONNX metadata with a checksum of the graph.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import numpy as np

from segzoo.config import ModelConfig
from segzoo.errors import ParityError, ParityShapeError
from segzoo.export.rewrite import drop_noop_crops_after_upsampling, split_concatenated_convolutions
from segzoo.io.files import atomic_write_bytes, refuse_overwrite
from segzoo.runtime.onnx import onnx_runner
from segzoo.runtime.onnx_format import INPUT_NAME, OUTPUT_NAME, sign

log = logging.getLogger(__name__)

PARITY_ATOL = 1e-4
# tf2onnx's graph optimisers visit nodes in an order that changes from one conversion to the next
# (it follows Python's per-process string hashing). Its reshape optimiser rewrites the last,
# run-time-shaped Reshape as [1, -1, 0, 0, 1] plus a Squeeze, and under some orders the Squeeze
# is lost: an extra leading output axis, in about 1 to 40 conversions of the tiny test DeepLabV3
# (2 of the first 2 in one process). The parity check catches it and the conversion is run again.
CONVERSION_ATTEMPTS = 5


def keras_to_onnx(model, config: ModelConfig, *, opset: int = 17):
    """An onnx ModelProto of a Keras model with segzoo metadata attached."""
    import tensorflow as tf
    import tf2onnx

    from segzoo import __version__

    channels = len(config.preprocessing.mean)
    spec = (tf.TensorSpec((None, None, None, channels), tf.float32, name=INPUT_NAME),)

    @tf.function(input_signature=spec)
    def forward(image):
        return {OUTPUT_NAME: model(image, training=False)}

    with native_dilated_convolutions(), resize_for_bilinear_upsampling(), resize_for_nearest_upsampling():
        proto, _ = tf2onnx.convert.from_function(forward, input_signature=spec, opset=opset)
    dropped = drop_noop_crops_after_upsampling(proto)
    if dropped:
        log.info("dropped %d no-op Slice/Pad pair(s) after up-convolutions", dropped)
    split = split_concatenated_convolutions(proto)
    if split:
        log.info("split %d Concat -> Conv pair(s) into per-input convolutions", split)
    proto.producer_name = "segzoo"
    proto.producer_version = __version__
    proto.doc_string = (f"segzoo {config.name or config.architecture}: input '{INPUT_NAME}' float32 NHWC "
                        f"normalised per config; output '{OUTPUT_NAME}'")
    sign(proto, config.to_json())
    return proto


@contextlib.contextmanager
def native_dilated_convolutions():
    """While tracing for export, emit each dilated stride-1 'same' 2-D convolution as one
    Conv2D with `dilations` and explicit padding.

    tf.nn.convolution (what Keras calls on TensorFlow) wraps a dilated convolution in
    SpaceToBatchND/BatchToSpaceND with paddings computed from the dynamic input shape.
    tf2onnx folds that back into a dilated Conv only for 'valid' padding, so with 'same'
    padding and dynamic height/width every atrous convolution of DeepLabV3 became ~20
    ONNX nodes (SpaceToDepth, Transpose, shape arithmetic). At stride 1, 'same' is a
    fixed padding of d*(k-1) split as TensorFlow splits it (the smaller half first),
    so one Conv2D computes the same thing. Only the traced graph changes; the export
    parity check compares it with the unchanged Keras model.
    """
    import tensorflow as tf

    original = tf.nn.convolution

    def convolution(input, filters, strides=None, padding="VALID", data_format=None,  # noqa: A002
                    dilations=None, name=None):
        rate = _pair(dilations)
        if (isinstance(padding, str) and padding.upper() == "SAME" and data_format in (None, "NHWC")
                and input.shape.rank == 4 and _pair(strides) == (1, 1) and rate != (1, 1)):
            pads = [[0, 0]]
            for k, d in zip(filters.shape[:2], rate):
                total = d * (int(k) - 1)
                pads.append([total // 2, total - total // 2])
            pads.append([0, 0])
            return tf.nn.conv2d(input, filters, strides=1, padding=pads, dilations=list(rate), name=name)
        return original(input, filters, strides=strides, padding=padding, data_format=data_format,
                        dilations=dilations, name=name)

    with _swapped(tf.nn, "convolution", convolution):
        yield


@contextlib.contextmanager
def resize_for_bilinear_upsampling():
    """While tracing for export, emit each 2x step of BilinearUpsample as one bilinear
    resize (half-pixel centres, which tf2onnx turns into one ONNX Resize).

    The layer's backend-independent form (repeat, border rows, two depthwise filters)
    traces to Expand/Tile/Reshape with shapes computed at run time, plus Concat and two
    grouped Convs (deeplabv3-monuseg: 192 -> 104 ONNX nodes, ~13% faster on onnxruntime).
    Half-pixel bilinear 2x with clamped edges is the same function, so only the
    traced graph changes; the parity check compares it with the unchanged Keras model.
    """
    import tensorflow as tf

    from segzoo.models.architectures.layers import BilinearUpsample

    def double(self, x):
        return tf.image.resize(x, tf.shape(x)[1:3] * 2, method="bilinear")

    with _swapped(BilinearUpsample, "_double", double):
        yield


@contextlib.contextmanager
def resize_for_nearest_upsampling():
    """While tracing for export, emit `layers.repeat_2x` (SegNet's pooling mask and unpooling)
    as one nearest-neighbour resize, which tf2onnx turns into one ONNX Resize.

    ops.repeat on a dynamic shape traces to Reshape/Tile/Reshape per axis. Nearest 2x with
    asymmetric coordinates maps output pixel i to input floor(i / 2), the same function, so
    only the traced graph changes; the parity check compares it with the Keras model. (Not
    tf.image.resize: its half-pixel nearest becomes ONNX's deprecated `tf_half_pixel_for_nn`,
    which onnxruntime warns about on every session.)
    """
    import tensorflow as tf

    from segzoo.models.architectures import layers

    def resize(x):
        return tf.raw_ops.ResizeNearestNeighbor(images=x, size=tf.shape(x)[1:3] * 2, align_corners=False,
                                                half_pixel_centers=False)

    with _swapped(layers, "repeat_2x", resize):
        yield


@contextlib.contextmanager
def _swapped(owner, name: str, replacement):
    """`owner.name` is `replacement` inside the block and the original again after it,
    also when tracing fails."""
    original = getattr(owner, name)
    setattr(owner, name, replacement)
    try:
        yield
    finally:
        setattr(owner, name, original)


def _pair(value) -> tuple[int, int]:
    """An int or a 1- or 2-sequence as a (height, width) pair; None is 1."""
    if value is None:
        return 1, 1
    if isinstance(value, int):
        return value, value
    value = tuple(int(v) for v in value)
    return (value[0], value[0]) if len(value) == 1 else value


def parity_inputs(config: ModelConfig, real_image: np.ndarray | None = None, size: int = 256,
                  seed: int = 0) -> list[np.ndarray]:
    """A random normalised tile and (optionally) a crop of a real image, stride-aligned."""
    from segzoo.predict.preprocessing import normalize

    stride = config.preprocessing.pad_to_stride
    size = max(stride, size // stride * stride)
    rng = np.random.default_rng(seed)
    batches = [normalize(rng.integers(0, 256, (1, size, size + stride, 3), dtype=np.uint8), config.preprocessing)]
    if real_image is not None:
        h = min(real_image.shape[0] // stride * stride, size)
        w = min(real_image.shape[1] // stride * stride, size)
        if h and w:
            batches.append(normalize(real_image[None, :h, :w], config.preprocessing))
    return batches


def keras_outputs(keras_model, batches: list[np.ndarray]) -> list[np.ndarray]:
    """The Keras model's inference outputs on each batch, as numpy arrays."""
    return [np.asarray(keras_model(batch, training=False)) for batch in batches]


def check_parity(keras_model, model_bytes: bytes, batches: list[np.ndarray], atol: float = PARITY_ATOL,
                 expected: list[np.ndarray] | None = None) -> float:
    """Max |Keras - onnxruntime| over the batches; ParityError above `atol`. `expected` holds the
    Keras outputs on `batches` when the caller already has them (export retries reuse them)."""
    run = onnx_runner(model_bytes)
    if expected is None:
        expected = keras_outputs(keras_model, batches)
    worst = 0.0
    for batch, keras_output in zip(batches, expected):
        got = run(batch)
        if got.shape != keras_output.shape:
            raise ParityShapeError(f"ONNX output shape {got.shape} != Keras {keras_output.shape}")
        worst = max(worst, float(np.abs(got - keras_output).max()))
    if worst > atol:
        raise ParityError(f"ONNX and Keras probabilities differ by {worst:.2e} > {atol:.0e}")
    return worst


def export_onnx(source: str | os.PathLike, out: str | os.PathLike, *, opset: int = 17,
                real_image: np.ndarray | None = None, overwrite: bool = False) -> dict:
    """Export a model folder to `out`; parity with Keras is checked before writing."""
    from segzoo.models.folders import load_model

    out = Path(out)
    refuse_overwrite(out, overwrite)
    model, config = load_model(source)
    batches = parity_inputs(config, real_image)
    expected = keras_outputs(model, batches)
    for attempt in range(1, CONVERSION_ATTEMPTS + 1):
        data = keras_to_onnx(model, config, opset=opset).SerializeToString()
        try:
            worst = check_parity(model, data, batches, expected=expected)
            break
        except ParityShapeError as err:
            if attempt == CONVERSION_ATTEMPTS:
                raise
            log.warning("%s: tf2onnx gave a wrong graph (%s); converting again", source, err)
    atomic_write_bytes(out, data)
    log.info("exported %s -> %s (%.1f MB, max |diff| %.1e)", source, out, len(data) / 1e6, worst)
    return {"path": str(out), "bytes": len(data), "max_abs_diff": worst, "opset": opset}
