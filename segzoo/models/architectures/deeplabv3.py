"""DeepLabV3 (Chen et al. 2017) with a small residual backbone trained from scratch.

ImageNet weights cannot be downloaded in segzoo's build environment, so the
default backbone is a compact ResNet (basic blocks) whose last stages trade
stride for atrous rate to reach output stride 8 or 16. ASPP has a 1x1 branch,
three atrous 3x3 branches and an image-pooling branch, then bilinear
upsampling to the input size. `decoder=True` adds the DeepLabV3+ decoder
(Chen et al. 2018): a 4x upsample fused with stride-4 backbone features, which
recovers the fine boundaries that small nuclei need. `decoder_stride=2` adds
a second decoder stage, a 2x upsample fused with the stem's stride-2 features,
so the class scores are upsampled 2x instead of 4x at the end.

`context` chooses ASPP's context branch. "image" (the default, as in the paper and every model
released before the option) averages the ASPP input over the whole input: the output at a pixel
depends on everything the network is given, so a whole-slide chunk and a whole-image pass (or two
tiles) disagree wherever the inputs differ. "window" averages it over a fixed window of about
`context_window` input pixels (the training patch's size, 256 by default) around each position,
stride 1: context_window / output_stride feature pixels, rounded up to an odd number
(context_pool_size), as a row then a column average (equal to the square average, cheaper). At
the borders it averages only the positions inside the input (TensorFlow's and ONNX AveragePool's
count_include_pad=0), so the model is translation-equivariant: on a crop read on the stride grid
it equals the whole-image pass except near the crop's edges, within the network's whole reach:
half the window or the largest ASPP rate (36 x 8 = 288 px by default), whichever is larger, plus
the backbone and decoder (measured: 415-422 px with the default rates, 240-245 px with rates
1/2/3 and a 256 px window; README, "Architectures"). Both branches end in the same 1x1
conv-BN-ReLU ("aspp_pool_proj"): the two models have the same weights under the same layer
names (model.load_weights, which goes by layer order, does not map one onto the other; copy by name).
"""

from __future__ import annotations

import keras
from keras import layers

from segzoo.models.architectures.blocks import (
    class_scores,
    conv_bn,
    conv_bn_relu,
    image_input,
    instance_scores,
    model_outputs,
)
from segzoo.models.architectures.layers import BilinearUpsample, BroadcastToSpatial

PAPER = ("Chen, Papandreou, Schroff, Adam. Rethinking Atrous Convolution for Semantic "
         "Image Segmentation. arXiv:1706.05587 (2017); decoder: arXiv:1802.02611")

DEFAULTS = {
    "in_channels": 3,
    "num_classes": 1,
    "output_stride": 8,
    "backbone_filters": [16, 32, 64, 128],
    "blocks_per_stage": [1, 2, 2, 2],
    "aspp_filters": 64,
    "aspp_rates": None,
    "decoder": True,
    "decoder_stride": 4,
    "dropout": 0.1,
    "instance_maps": [],
    "instance_width": 16,
    "instance_layers": 1,
    "context": "image",
    "context_window": 256,
}

CONTEXTS = ("image", "window")


def stride(*, output_stride: int, **_) -> int:
    return int(output_stride)


def context_pool_size(context_window: int, output_stride: int) -> int:
    """The window branch's pool side in feature pixels: context_window / output_stride, rounded up
    to an odd number (a window centred on each position)."""
    size = max(1, -(-int(context_window) // int(output_stride)))
    return size if size % 2 else size + 1


def _residual_block(x, filters: int, *, strides: int, dilation: int, name: str):
    shortcut = x
    y = conv_bn_relu(x, filters, strides=strides, dilation_rate=dilation if strides == 1 else 1,
                     name=f"{name}_1")
    y = conv_bn(y, filters, dilation_rate=dilation, name=f"{name}_2")
    if strides != 1 or shortcut.shape[-1] != filters:
        shortcut = conv_bn(shortcut, filters, kernel_size=1, strides=strides,
                           kernel_initializer="glorot_uniform", name=f"{name}_proj")
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.Activation("relu", name=f"{name}_out")(y)


def build(*, in_channels: int, num_classes: int, output_stride: int, backbone_filters,
          blocks_per_stage, aspp_filters: int, aspp_rates, decoder: bool,
          decoder_stride: int, dropout: float, instance_maps=(),
          instance_width: int = 16, instance_layers: int = 1, context: str = "image",
          context_window: int = 256) -> keras.Model:
    if output_stride not in (8, 16):
        raise ValueError(f"deeplabv3 output_stride must be 8 or 16, got {output_stride}")
    if len(backbone_filters) != 4 or len(blocks_per_stage) != 4:
        raise ValueError("deeplabv3 needs 4 backbone stages (backbone_filters, blocks_per_stage)")
    if decoder_stride not in (2, 4):
        raise ValueError(f"deeplabv3 decoder_stride must be 4 or 2, got {decoder_stride}")
    if context not in CONTEXTS:
        raise ValueError(f"deeplabv3 context must be one of {', '.join(CONTEXTS)}, got {context!r}")
    if isinstance(context_window, bool) or not isinstance(context_window, int) or context_window < 1:
        raise ValueError(f"deeplabv3 context_window must be a positive number of pixels, got {context_window!r}")
    rates = list(aspp_rates) if aspp_rates else ([12, 24, 36] if output_stride == 8 else [6, 12, 18])

    inputs = image_input(in_channels)
    x = stem = conv_bn_relu(inputs, backbone_filters[0], strides=2, name="stem")  # stride 2
    # Stage strides: stage 1 -> 4, stage 2 -> 8, stage 3 -> 16 (or atrous), stage 4 atrous.
    current_stride, dilation = 2, 1
    low_level = None
    for s, (filters, n_blocks) in enumerate(zip(backbone_filters, blocks_per_stage)):
        stage_stride = 2 if s < 3 else 1
        if current_stride * stage_stride > output_stride:
            dilation *= stage_stride
            stage_stride = 1
        if s == 3:
            dilation *= 2
        for b in range(n_blocks):
            x = _residual_block(x, filters, strides=stage_stride if b == 0 else 1,
                                dilation=dilation, name=f"stage{s}_block{b}")
        current_stride *= stage_stride
        if s == 0:
            low_level = x  # stride 4
    branches = [conv_bn_relu(x, aspp_filters, kernel_size=1, name="aspp_1x1")]
    for rate in rates:
        branches.append(conv_bn_relu(x, aspp_filters, dilation_rate=rate, name=f"aspp_rate{rate}"))
    if context == "image":
        pooled = layers.GlobalAveragePooling2D(keepdims=True, name="aspp_pool")(x)
        pooled = conv_bn_relu(pooled, aspp_filters, kernel_size=1, name="aspp_pool_proj")
        branches.append(BroadcastToSpatial(name="aspp_pool_broadcast")([pooled, x]))
    else:
        size = context_pool_size(context_window, output_stride)
        pooled = layers.AveragePooling2D((size, 1), strides=1, padding="same", name="aspp_window_rows")(x)
        pooled = layers.AveragePooling2D((1, size), strides=1, padding="same", name="aspp_window_cols")(pooled)
        branches.append(conv_bn_relu(pooled, aspp_filters, kernel_size=1, name="aspp_pool_proj"))
    x = layers.Concatenate(name="aspp_concat")(branches)
    x = conv_bn_relu(x, aspp_filters, kernel_size=1, name="aspp_project")
    if dropout > 0:
        x = layers.Dropout(dropout, name="aspp_dropout")(x)
    if decoder:
        x = BilinearUpsample(output_stride // 4, name="decoder_up")(x)
        skip = conv_bn_relu(low_level, max(aspp_filters // 4, 8), kernel_size=1, name="decoder_skip")
        x = layers.Concatenate(name="decoder_concat")([x, skip])
        x = conv_bn_relu(x, aspp_filters, name="decoder_a")
        x = conv_bn_relu(x, aspp_filters, name="decoder_b")
        if decoder_stride == 2:
            x = BilinearUpsample(2, name="decoder2_up")(x)
            skip = conv_bn_relu(stem, max(aspp_filters // 8, 8), kernel_size=1, name="decoder2_skip")
            x = layers.Concatenate(name="decoder2_concat")([x, skip])
            x = conv_bn_relu(x, max(aspp_filters // 2, 8), name="decoder2_a")
            x = conv_bn_relu(x, max(aspp_filters // 2, 8), name="decoder2_b")
    # Class scores at low resolution, then bilinear upsampling of the scores to
    # the input size (as in the paper): cheaper than upsampling features.
    logits = class_scores(x, num_classes)
    factor = decoder_stride if decoder else output_stride
    logits = BilinearUpsample(factor, dtype="float32", name="final_up")(logits)
    maps = instance_scores(x, instance_maps, instance_width, instance_layers)
    if maps is not None:
        maps = BilinearUpsample(factor, dtype="float32", name="instance_up")(maps)
    return keras.Model(inputs, model_outputs(logits, maps, num_classes), name="deeplabv3")
