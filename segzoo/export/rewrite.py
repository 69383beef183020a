"""Exact clean-ups of the ONNX graph tf2onnx produces, applied at export.

tf2onnx turns Keras' Conv2DTranspose into a ConvTranspose followed by a Slice
and a Pad that reach TensorFlow's output shape through a dynamic shape
computation. When the kernel equals the stride and nothing is padded (the 2x2,
stride-2 up-convolution of U-Net decoders) the ConvTranspose output is already
exactly input x stride, which is TensorFlow's output shape for both 'same' and
'valid' padding, so the Slice and the Pad copy a full-resolution tensor for
nothing. Dropping them saves ~7% of the fp32 and ~18% of the int8 session time
of unet-monuseg on a 1000x1000 tile (in int8 the Pad also ran in float between
a DequantizeLinear and a QuantizeLinear). The export parity check (<= 1e-4
against Keras, on a non-square input) covers the rewrite.

Also tried and not kept: rewriting those ConvTranspose layers as an equivalent
1x1 Conv + DepthToSpace. It is exact and lets int8 quantize the layer, but
onnxruntime's DepthToSpace is slower than its ConvTranspose: fp32 +15%, int8
no faster than the Slice/Pad removal alone.

Decoders concatenate an upsampled tensor with a skip connection and convolve
the result. onnxruntime keeps convolutions in its blocked NCHWc layout, but
ConvTranspose and bilinear Resize only produce plain NCHW, so the Concat ran in
NCHW between layout reorders (15% of unet-monuseg's fp32 time).
Conv(Concat(a, b)) = Conv_a(a) + Conv_b(b), with the weights split along their
input channels, removes the Concat; when both convolution outputs carry the same
symbolic shape, onnxruntime also fuses the Add and the following Relu into the
second convolution. The sum is the same up to float rounding order.
"""

from __future__ import annotations


def _attrs(node) -> dict:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def output_is_input_times_stride(node) -> bool:
    """A 2-D ConvTranspose with kernel == stride, no padding, dilation or output shape."""
    if node.op_type != "ConvTranspose":
        return False
    a = _attrs(node)
    kernel, strides = list(a.get("kernel_shape", [])), list(a.get("strides", []))
    if len(kernel) != 2 or kernel != strides:
        return False
    if any(a.get("pads", [0])) or any(a.get("output_padding", [0])) or "output_shape" in a:
        return False
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
        return False
    return all(d == 1 for d in a.get("dilations", [1, 1]))


def _channels(model) -> dict[str, int]:
    """Channel count (axis 1) of every tensor ONNX shape inference can size."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    channels = {}
    for value in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        dims = value.type.tensor_type.shape.dim
        if len(dims) == 4 and dims[1].dim_value > 0:
            channels[value.name] = dims[1].dim_value
    return channels


def split_concatenated_convolutions(model) -> int:
    """Replace each channel Concat whose only consumer is an ungrouped Conv by one Conv per
    Concat input and a chain of Adds (module doc), in place; returns how many were split."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    graph = model.graph
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    weights = {init.name: init for init in graph.initializer}
    channels = _channels(model)
    outputs = {o.name for o in graph.output}
    batch = graph.input[0].type.tensor_type.shape.dim[0].dim_param or None
    replacements: dict[int, list] = {}
    annotated: dict[str, list] = {}
    for concat in graph.node:
        if concat.op_type != "Concat" or _attrs(concat).get("axis") != 1 or concat.output[0] in outputs:
            continue
        uses = consumers.get(concat.output[0], [])
        if len(uses) != 1 or uses[0].op_type != "Conv" or uses[0].input[0] != concat.output[0]:
            continue
        conv = uses[0]
        if _attrs(conv).get("group", 1) != 1 or conv.input[1] not in weights:
            continue
        sizes = [channels.get(name) for name in concat.input]
        kernel = numpy_helper.to_array(weights[conv.input[1]])
        if None in sizes or sum(sizes) != kernel.shape[1]:
            continue
        parts, start = [], 0
        for i, (name, size) in enumerate(zip(concat.input, sizes)):
            part = f"{conv.input[1]}/split{i}"
            graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(kernel[:, start:start + size]), part))
            start += size
            bias = [conv.input[2]] if i == 0 and len(conv.input) > 2 and conv.input[2] else []
            split = helper.make_node("Conv", [name, part] + bias, [f"{conv.output[0]}/split{i}"],
                                     name=f"{conv.name}/split{i}")
            split.attribute.extend(conv.attribute)
            parts.append(split)
        total, nodes = parts[0].output[0], list(parts)
        for i, part in enumerate(parts[1:], start=1):
            last = i == len(parts) - 1
            out = conv.output[0] if last else f"{conv.output[0]}/sum{i}"
            nodes.append(helper.make_node("Add", [total, part.output[0]], [out], name=f"{conv.name}/sum{i}"))
            total = out
        replacements[id(concat)], replacements[id(conv)] = [], nodes
        # One symbolic shape for every term of the sum, so onnxruntime can prove them equal and fuse.
        shape = [batch, kernel.shape[0], f"{conv.name}/height", f"{conv.name}/width"]
        for node in nodes:
            annotated[node.output[0]] = shape
    if not replacements:
        return 0
    rebuilt = [new for node in graph.node for new in replacements.get(id(node), [node])]
    del graph.node[:]
    graph.node.extend(rebuilt)
    kept = [v for v in graph.value_info if v.name not in annotated]
    del graph.value_info[:]
    graph.value_info.extend(kept)
    graph.value_info.extend(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, shape)
                            for name, shape in annotated.items())
    _prune(graph)
    onnx.checker.check_model(model)
    return len(replacements) // 2


def _prune(graph) -> None:
    """Drop nodes and initializers that no graph output depends on."""
    producer = {out: node for node in graph.node for out in node.output}
    needed, stack = set(), [o.name for o in graph.output]
    while stack:
        name = stack.pop()
        if name in needed:
            continue
        needed.add(name)
        node = producer.get(name)
        if node is not None:
            stack.extend(i for i in node.input if i)
    keep = [n for n in graph.node if any(o in needed for o in n.output)]
    del graph.node[:]
    graph.node.extend(keep)
    used = [init for init in graph.initializer if init.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(used)


def drop_noop_crops_after_upsampling(model) -> int:
    """Remove the Slice -> Pad that follows each input x stride ConvTranspose (module doc), in
    place, with the shape computation that fed them; returns how many pairs were removed."""
    import onnx

    graph = model.graph
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    renames: dict[str, str] = {}
    for node in graph.node:
        if not output_is_input_times_stride(node):
            continue
        out = node.output[0]
        for use in consumers.get(out, []):
            if use.op_type != "Slice" or use.input[0] != out:
                continue
            after = consumers.get(use.output[0], [])
            if len(after) == 1 and after[0].op_type == "Pad" and after[0].input[0] == use.output[0] \
                    and after[0].output[0] not in outputs:
                renames[after[0].output[0]] = out
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in renames:
                node.input[i] = renames[name]
    _prune(graph)
    onnx.checker.check_model(model)
    return len(renames)
