"""U-Net (Ronneberger et al., MICCAI 2015) with 'same' padding.

Differences from the paper, chosen for CPU training and any input size: 'same'
convolutions (no cropping), optional batch norm and dropout, configurable width
and depth. Decoder upsampling is the paper's 2x2 up-convolution.
"""

from __future__ import annotations

import keras
from keras import layers

from segzoo.architectures.blocks import conv_bn_relu, image_input, segmentation_head

PAPER = "Ronneberger, Fischer, Brox. U-Net. MICCAI 2015. arXiv:1505.04597"

DEFAULTS = {
    "in_channels": 3,
    "num_classes": 1,
    "depth": 4,
    "base_filters": 16,
    "batch_norm": True,
    "dropout": 0.1,
}


def stride(*, depth: int, **_) -> int:
    return 2 ** depth


def build(*, in_channels: int, num_classes: int, depth: int, base_filters: int,
          batch_norm: bool, dropout: float) -> keras.Model:
    if depth < 1 or base_filters < 1:
        raise ValueError(f"unet needs depth >= 1 and base_filters >= 1, got {depth}, {base_filters}")
    inputs = image_input(in_channels)
    x = inputs
    skips = []
    for level in range(depth):
        filters = base_filters * 2 ** level
        x = conv_bn_relu(x, filters, batch_norm=batch_norm, name=f"enc{level}_a")
        x = conv_bn_relu(x, filters, batch_norm=batch_norm, name=f"enc{level}_b")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"enc{level}_pool")(x)
    filters = base_filters * 2 ** depth
    x = conv_bn_relu(x, filters, batch_norm=batch_norm, name="bottleneck_a")
    if dropout > 0:
        x = layers.Dropout(dropout, name="bottleneck_dropout")(x)
    x = conv_bn_relu(x, filters, batch_norm=batch_norm, name="bottleneck_b")
    for level in reversed(range(depth)):
        filters = base_filters * 2 ** level
        x = layers.Conv2DTranspose(filters, 2, strides=2, padding="same",
                                   kernel_initializer="he_normal", name=f"dec{level}_up")(x)
        x = layers.Concatenate(name=f"dec{level}_concat")([x, skips[level]])
        x = conv_bn_relu(x, filters, batch_norm=batch_norm, name=f"dec{level}_a")
        x = conv_bn_relu(x, filters, batch_norm=batch_norm, name=f"dec{level}_b")
    outputs = segmentation_head(x, num_classes)
    return keras.Model(inputs, outputs, name="unet")
