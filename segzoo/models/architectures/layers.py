"""Custom layers shared by the architectures, written with keras.ops only so any
backend works and ONNX export stays clean. All are serializable under "segzoo"."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops


def repeat_2x(x):
    """Nearest-neighbour 2x upsampling of (B, H, W, C): each pixel becomes a 2x2 block.

    A module function so that export can trace it as one resize
    (segzoo.export.onnx.resize_for_nearest_upsampling)."""
    return ops.repeat(ops.repeat(x, 2, axis=1), 2, axis=2)


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
        upsampled = repeat_2x(pooled)
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
        upsampled = repeat_2x(values)
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


@keras.saving.register_keras_serializable(package="segzoo")
class BilinearUpsample(keras.layers.Layer):
    """Bilinear upsampling by a power-of-two factor, for any (dynamic) input size.

    Each 2x step is nearest-neighbour repetition followed by the separable filter
    [1/4, 1/2, 1/4] with the border replicated, which equals half-pixel-centred
    bilinear resizing by 2 (tf.image.resize, edges clamped) exactly; larger
    factors repeat the step. Only repeat, slice, concat and depthwise convolution
    are used, so it runs on any Keras backend and exports to ONNX with dynamic
    height/width (Keras's UpSampling2D(interpolation="bilinear") needs static
    shapes in graph mode).
    """

    def __init__(self, factor: int, **kwargs):
        super().__init__(**kwargs)
        self.factor = int(factor)
        if self.factor < 1 or self.factor & (self.factor - 1):
            raise ValueError(f"factor must be a power of two, got {factor}")

    def build(self, input_shape):
        channels = int(input_shape[-1])
        taps = np.array([0.25, 0.5, 0.25], dtype="float32")
        self._kernel_h = np.tile(taps.reshape(3, 1, 1, 1), (1, 1, channels, 1))
        self._kernel_w = np.tile(taps.reshape(1, 3, 1, 1), (1, 1, channels, 1))

    def _double(self, x):
        x = repeat_2x(x)
        # After repetition the first/last row is a copy of its neighbour, so
        # slicing one row replicates the border (clamped edges).
        x = ops.concatenate([x[:, :1], x, x[:, -1:]], axis=1)
        x = ops.depthwise_conv(x, ops.cast(self._kernel_h, x.dtype), strides=1, padding="valid")
        x = ops.concatenate([x[:, :, :1], x, x[:, :, -1:]], axis=2)
        return ops.depthwise_conv(x, ops.cast(self._kernel_w, x.dtype), strides=1, padding="valid")

    def call(self, inputs):
        x, factor = inputs, self.factor
        while factor > 1:
            x = self._double(x)
            factor //= 2
        return x

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        scale = lambda n: None if n is None else n * self.factor  # noqa: E731
        return (b, scale(h), scale(w), c)

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}
