"""U-Net (Ronneberger et al., MICCAI 2015) with 'same' padding.

Differences from the paper, chosen for CPU training and any input size: 'same'
convolutions (no cropping), optional batch norm and dropout, configurable width
and depth. Decoder upsampling is the paper's 2x2 up-convolution. `residual=True`
adds a 1x1-projection shortcut around each pair of convolutions,
as in ResUNet (Zhang, Liu, Wang. IEEE GRSL 2018); the default keeps the paper's
plain blocks and the layer names of the released weights.
"""

from __future__ import annotations

import keras
from keras import layers

from segzoo.models.architectures.blocks import conv_bn, conv_bn_relu, image_input, segmentation_head

PAPER = "Ronneberger, Fischer, Brox. U-Net. MICCAI 2015. arXiv:1505.04597"

DEFAULTS = {
    "in_channels": 3,
    "num_classes": 1,
    "depth": 4,
    "base_filters": 16,
    "batch_norm": True,
    "dropout": 0.1,
    "residual": False,
    "instance_maps": [],
    "instance_width": 16,
    "instance_layers": 1,
}


def stride(*, depth: int, **_) -> int:
    return 2 ** depth


def conv_pair(x, filters: int, *, batch_norm: bool, residual: bool, name: str, dropout: float = 0.0):
    """Two 3x3 conv-BN-ReLU layers (dropout between them when > 0); with `residual`, the second
    ReLU comes after adding the block's input through a 1x1 conv-BN projection (every U-Net
    block changes the number of channels, so the shortcut is never the identity)."""
    block_input = x
    x = conv_bn_relu(x, filters, batch_norm=batch_norm, name=f"{name}_a")
    if dropout > 0:
        x = layers.Dropout(dropout, name=f"{name}_dropout")(x)
    if not residual:
        return conv_bn_relu(x, filters, batch_norm=batch_norm, name=f"{name}_b")
    x = conv_bn(x, filters, batch_norm=batch_norm, name=f"{name}_b")
    shortcut = conv_bn(block_input, filters, kernel_size=1, batch_norm=batch_norm, name=f"{name}_shortcut")
    x = layers.Add(name=f"{name}_add")([x, shortcut])
    return layers.Activation("relu", name=f"{name}_b_relu")(x)


def build(*, in_channels: int, num_classes: int, depth: int, base_filters: int,
          batch_norm: bool, dropout: float, residual: bool, instance_maps=(),
          instance_width: int = 16, instance_layers: int = 1) -> keras.Model:
    if depth < 1 or base_filters < 1:
        raise ValueError(f"unet needs depth >= 1 and base_filters >= 1, got {depth}, {base_filters}")
    inputs = image_input(in_channels)
    x = inputs
    skips = []
    for level in range(depth):
        filters = base_filters * 2 ** level
        x = conv_pair(x, filters, batch_norm=batch_norm, residual=residual, name=f"enc{level}")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"enc{level}_pool")(x)
    filters = base_filters * 2 ** depth
    x = conv_pair(x, filters, batch_norm=batch_norm, residual=residual, name="bottleneck",
                  dropout=dropout)
    for level in reversed(range(depth)):
        filters = base_filters * 2 ** level
        x = layers.Conv2DTranspose(filters, 2, strides=2, padding="same",
                                   kernel_initializer="he_normal", name=f"dec{level}_up")(x)
        x = layers.Concatenate(name=f"dec{level}_concat")([x, skips[level]])
        x = conv_pair(x, filters, batch_norm=batch_norm, residual=residual, name=f"dec{level}")
    outputs = segmentation_head(x, num_classes, instance_maps, instance_width, instance_layers)
    return keras.Model(inputs, outputs, name="unet")
