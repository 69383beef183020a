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


def instance_scores(x, instance_maps, width: int = 16, depth: int = 1):
    """Scores of the learned instance maps (segzoo.config.INSTANCE_MAPS, in `instance_maps`' order):
    `depth` 3x3 conv-BN-ReLU layers of `width` filters ("instance_a", "instance_b", ...) then a
    1x1 conv ("instance_logits", float32), beside the class scores on the same features; None
    when `instance_maps` is empty."""
    if not instance_maps:
        return None
    if width < 1 or not 1 <= depth <= 26:
        raise ValueError(f"the instance head needs instance_width >= 1 and 1 <= instance_layers <= 26, "
                         f"got {width}, {depth}")
    for index in range(depth):
        x = conv_bn_relu(x, width, name=f"instance_{chr(ord('a') + index)}")
    return layers.Conv2D(len(instance_maps), 1, padding="same", dtype="float32", name="instance_logits")(x)


def model_outputs(scores, maps, num_classes: int):
    """The model's one output "probabilities", N x H x W x (1 + len(instance_maps)): channel 0 the
    nucleus probability, then each instance map through a sigmoid (all in [0, 1]). One tensor, so
    tiling, blending, test-time augmentation and every runtime treat the channels alike (the
    maps are invariant under the D4 transforms of test-time augmentation). Without instance maps
    it is probabilities(scores): the layers and names of models released before them."""
    if maps is None:
        return probabilities(scores, num_classes)
    nucleus = layers.Activation("sigmoid", dtype="float32", name="nucleus_probability")(scores)
    maps = layers.Activation("sigmoid", dtype="float32", name="instance_maps")(maps)
    return layers.Concatenate(dtype="float32", name="probabilities")([nucleus, maps])


def segmentation_head(x, num_classes: int, instance_maps=(), instance_width: int = 16, instance_layers: int = 1):
    """class_scores (and instance_scores) then model_outputs: the head of a model whose features
    are at full resolution."""
    return model_outputs(class_scores(x, num_classes),
                         instance_scores(x, instance_maps, instance_width, instance_layers), num_classes)


def image_input(in_channels: int):
    """Input of any height/width; callers pad to the architecture's stride."""
    return keras.Input(shape=(None, None, in_channels), name="image")
