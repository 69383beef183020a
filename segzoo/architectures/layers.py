"""Custom layers shared by the architectures, written with keras.ops only so any
backend works and ONNX export stays clean. All are serializable under "segzoo"."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="segzoo")
class MaxPoolingWithMask(keras.layers.Layer):
    """2x2 max pooling that also returns where each maximum came from.

    The mask is the index-free form of SegNet's pooling indices: 1 where an input
    equals the maximum of its 2x2 window, 0 elsewhere. Ties (e.g. a window of
    zeros after ReLU) mark every tied position; unpooling then copies the value to
    each of them, which only matters for windows whose values are all equal.
    """

    def call(self, inputs):
        pooled = ops.max_pool(inputs, pool_size=2, strides=2, padding="valid")
        upsampled = ops.repeat(ops.repeat(pooled, 2, axis=1), 2, axis=2)
        mask = ops.cast(ops.greater_equal(inputs, upsampled), inputs.dtype)
        return pooled, mask

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        half = lambda n: None if n is None else n // 2  # noqa: E731
        return (b, half(h), half(w), c), tuple(input_shape)


@keras.saving.register_keras_serializable(package="segzoo")
class MaxUnpoolingWithMask(keras.layers.Layer):
    """SegNet unpooling: place each value at the position its encoder maximum came from."""

    def call(self, inputs):
        values, mask = inputs
        upsampled = ops.repeat(ops.repeat(values, 2, axis=1), 2, axis=2)
        return upsampled * mask

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[1])


@keras.saving.register_keras_serializable(package="segzoo")
class BroadcastToSpatial(keras.layers.Layer):
    """Broadcast a (B, 1, 1, C) tensor to the height/width of a reference tensor.

    Used by ASPP's image-pooling branch; works for any (dynamic) input size.
    """

    def call(self, inputs):
        pooled, reference = inputs
        return pooled * ops.ones_like(reference[..., :1])

    def compute_output_shape(self, input_shape):
        pooled, reference = input_shape
        return tuple(reference[:3]) + (pooled[-1],)
