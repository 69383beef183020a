"""SegNet (Badrinarayanan, Kendall, Cipolla, TPAMI 2017).

A VGG-style encoder whose max-pooling positions are reused by the decoder to
upsample (true SegNet unpooling, in the index-free mask form; see
segzoo.models.architectures.layers). Width and number of stages are configurable so
that it trains from scratch on a CPU; the paper's model is 5 stages of 64-512.
"""

from __future__ import annotations

import keras

from segzoo.models.architectures.blocks import conv_bn_relu, image_input, segmentation_head
from segzoo.models.architectures.layers import MaxPoolingWithMask, MaxUnpoolingWithMask

PAPER = "Badrinarayanan, Kendall, Cipolla. SegNet. IEEE TPAMI 2017. arXiv:1511.00561"

DEFAULTS = {
    "in_channels": 3,
    "num_classes": 1,
    "base_filters": 16,
    "convs_per_stage": [2, 2, 3, 3],
    "max_filters": 256,
    "batch_norm": True,
    "instance_maps": [],
    "instance_width": 16,
    "instance_layers": 1,
}


def stride(*, convs_per_stage, **_) -> int:
    return 2 ** len(convs_per_stage)


def build(*, in_channels: int, num_classes: int, base_filters: int, convs_per_stage,
          max_filters: int, batch_norm: bool, instance_maps=(),
          instance_width: int = 16, instance_layers: int = 1) -> keras.Model:
    stages = [int(n) for n in convs_per_stage]
    if not stages or min(stages) < 1:
        raise ValueError(f"segnet needs convs_per_stage of positive ints, got {convs_per_stage}")
    widths = [min(base_filters * 2 ** i, max_filters) for i in range(len(stages))]
    inputs = image_input(in_channels)
    x = inputs
    masks = []
    for s, (n_convs, filters) in enumerate(zip(stages, widths)):
        for k in range(n_convs):
            x = conv_bn_relu(x, filters, batch_norm=batch_norm, name=f"enc{s}_{k}")
        x, mask = MaxPoolingWithMask(name=f"enc{s}_pool")(x)
        masks.append(mask)
    for s in reversed(range(len(stages))):
        x = MaxUnpoolingWithMask(name=f"dec{s}_unpool")([x, masks[s]])
        n_convs = stages[s]
        for k in range(n_convs):
            # The last conv of a stage maps to the width of the stage below it,
            # mirroring the encoder (the paper's decoder).
            last = k == n_convs - 1
            filters = widths[s - 1] if (last and s > 0) else widths[s]
            x = conv_bn_relu(x, filters, batch_norm=batch_norm, name=f"dec{s}_{k}")
    outputs = segmentation_head(x, num_classes, instance_maps, instance_width, instance_layers)
    return keras.Model(inputs, outputs, name="segnet")
