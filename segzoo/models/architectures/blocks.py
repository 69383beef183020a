"""Functional building blocks shared by the architectures."""

from __future__ import annotations

import keras
from keras import layers


def conv_bn(x, filters: int, *, kernel_size: int = 3, strides: int = 1, dilation_rate: int = 1,
            batch_norm: bool = True, kernel_initializer: str = "he_normal", name: str):
    """Conv -> (BatchNorm), no activation: a residual branch or shortcut before its add. The conv
    has no bias when BatchNorm follows."""
    x = layers.Conv2D(filters, kernel_size, strides=strides, padding="same",
                      dilation_rate=dilation_rate, use_bias=not batch_norm,
                      kernel_initializer=kernel_initializer, name=f"{name}_conv")(x)
    if batch_norm:
        x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return x


def conv_bn_relu(x, filters: int, *, kernel_size: int = 3, strides: int = 1,
                 dilation_rate: int = 1, batch_norm: bool = True, name: str):
    """Conv -> (BatchNorm) -> ReLU."""
    x = conv_bn(x, filters, kernel_size=kernel_size, strides=strides, dilation_rate=dilation_rate,
                batch_norm=batch_norm, name=name)
    return layers.Activation("relu", name=f"{name}_relu")(x)


def class_scores(x, num_classes: int):
    """1x1 conv to class scores (the layer "logits", float32 under any dtype policy)."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    return layers.Conv2D(num_classes, 1, padding="same", dtype="float32", name="logits")(x)


def probabilities(scores, num_classes: int):
    """The activation that turns class scores into the model's output "probabilities": sigmoid
    for one class, softmax over several. Models output probabilities so Keras and ONNX runtimes
    post-process the same numbers."""
    activation = "sigmoid" if num_classes == 1 else "softmax"
    return layers.Activation(activation, dtype="float32", name="probabilities")(scores)


def segmentation_head(x, num_classes: int):
    """class_scores then probabilities: the head of a model whose features are at full resolution."""
    return probabilities(class_scores(x, num_classes), num_classes)


def image_input(in_channels: int):
    """Input of any height/width; callers pad to the architecture's stride."""
    return keras.Input(shape=(None, None, in_channels), name="image")
