"""Our rewrite of tf2onnx's ResNet graph into the graph ONNX Runtime runs fastest.

tf2onnx translates TensorFlow's ops one by one, so its ResNet keeps what Keras needed and an
ONNX runtime does not: the stem's ``ZeroPadding2D`` as a Pad before a MaxPool without pads
(ONNX Runtime's NCHWc layout reorders the tensor out of its blocked layout and back around a
Pad, which costs more than the Pad), the normalization's division as a Mul over the whole
input image, and a Squeeze + MatMul + Add head where torch's exporter writes Flatten + Gemm.
Each pass below matches one such pattern exactly and leaves the graph alone where it does not
match, so a model that differs (no normalization, a CIFAR stem without a max-pool) still
converts. The rewritten graph computes the same function: padding with zeros equals MaxPool's
own padding only on a Relu's output (every value >= 0, and each window holds at least one real
value), and a per-channel scale of a convolution's input is a scale of its weights' input
channels (zero padding stays zero).

``graph_layout`` gives the NCHW-input variant: the input Transpose removed, the input declared
(batch, C, H, W), for pipelines that already hold NCHW tensors.
"""

from __future__ import annotations

import numpy as np

LAYOUTS = ("nhwc", "nchw")
_TO_NCHW = [0, 3, 1, 2]


class _Graph:
    """Lookups over one onnx GraphProto: producers, consumers and constant values by name."""

    def __init__(self, graph):
        self.graph = graph
        self.inits = {i.name: i for i in graph.initializer}

    def producer(self, name):
        return next((n for n in self.graph.node if name in n.output), None)

    def consumers(self, name):
        return [n for n in self.graph.node if name in n.input]

    def only_consumer(self, name, op_type):
        """The single node reading ``name`` when it is an ``op_type`` and no graph output
        reads it too; else None."""
        users = self.consumers(name)
        if len(users) != 1 or users[0].op_type != op_type:
            return None
        if name in {o.name for o in self.graph.output}:
            return None
        return users[0]

    def constant(self, name):
        from onnx import numpy_helper

        return numpy_helper.to_array(self.inits[name]) if name in self.inits else None

    def set_constant(self, node, index: int, value: np.ndarray, suffix: str) -> None:
        """Feeds ``value`` to input ``index`` of ``node`` as a new initializer of its own
        (tf2onnx shares equal constants between nodes: the old one may have other readers)."""
        from onnx import numpy_helper

        name = f"{node.name}/{suffix}"
        self.graph.initializer.append(numpy_helper.from_array(value, name))
        self.inits[name] = self.graph.initializer[-1]
        node.input[index] = name

    def remove(self, node, replacement: str) -> None:
        """Drops a one-input node, its readers reading ``replacement`` instead."""
        out = node.output[0]
        for user in self.consumers(out):
            for i, name in enumerate(user.input):
                if name == out:
                    user.input[i] = replacement
        self.graph.node.remove(node)

    def drop_unused_initializers(self) -> None:
        used = {name for n in self.graph.node for name in n.input}
        for init in [i for i in self.graph.initializer if i.name not in used]:
            self.graph.initializer.remove(init)


def attribute(node, name, default=None):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _set_attribute(node, name, value) -> None:
    from onnx import helper

    for a in list(node.attribute):
        if a.name == name:
            node.attribute.remove(a)
    node.attribute.append(helper.make_attribute(name, value))


def fold_pad_into_max_pool(g: _Graph) -> int:
    """Relu -> Pad(zeros, spatial only) -> MaxPool becomes Relu -> MaxPool(pads)."""
    folded = 0
    for pad in [n for n in g.graph.node if n.op_type == "Pad"]:
        pool = g.only_consumer(pad.output[0], "MaxPool")
        source = g.producer(pad.input[0])
        pads = g.constant(pad.input[1]) if len(pad.input) > 1 else None
        value = g.constant(pad.input[2]) if len(pad.input) > 2 and pad.input[2] else 0
        if (pool is None or source is None or source.op_type != "Relu" or pads is None
                or value is None or np.any(np.asarray(value) != 0) or len(pad.input) > 3
                or attribute(pad, "mode", b"constant") != b"constant"
                or attribute(pool, "auto_pad", b"NOTSET") != b"NOTSET"
                or attribute(pool, "ceil_mode", 0)):
            continue
        rank = len(pads) // 2
        begin, end = pads[:rank], pads[rank:]
        if np.any(begin[:2]) or np.any(end[:2]) or np.any(pads < 0):
            continue  # pads the batch or channel axis: not a pooling window's padding
        old = attribute(pool, "pads", [0] * (2 * (rank - 2)))
        spatial = rank - 2
        new = [int(begin[2 + i]) + old[i] for i in range(spatial)] + [
            int(end[2 + i]) + old[spatial + i] for i in range(spatial)]
        _set_attribute(pool, "pads", new)
        g.remove(pad, pad.input[0])
        folded += 1
    return folded


def fold_input_scale(g: _Graph) -> int:
    """Mul(per-channel constant) -> Transpose(NHWC->NCHW) -> Conv: the scale moves into the
    convolution's weights (input channel c times scale[c]) and the Mul goes."""
    folded = 0
    for mul in [n for n in g.graph.node if n.op_type == "Mul"]:
        scale = g.constant(mul.input[1])
        transpose = g.only_consumer(mul.output[0], "Transpose")
        if scale is None or transpose is None or list(attribute(transpose, "perm", [])) != _TO_NCHW:
            continue
        convs = g.consumers(transpose.output[0])
        if not convs or any(c.op_type != "Conv" or g.constant(c.input[1]) is None
                            or attribute(c, "group", 1) != 1 for c in convs):
            continue
        channels = g.constant(convs[0].input[1]).shape[1]
        if scale.size not in (1, channels) or scale.shape[:-1] != (1,) * (scale.ndim - 1):
            continue  # varies along height or width: not a weight scale
        per_channel = np.broadcast_to(scale.reshape(-1), (channels,)).astype(np.float32)
        for conv in convs:
            weights = g.constant(conv.input[1])
            g.set_constant(conv, 1, weights * per_channel[None, :, None, None], "scaled_weights")
        g.remove(mul, mul.input[0])
        folded += 1
    return folded


def head_as_gemm(g: _Graph) -> int:
    """GlobalAveragePool -> Squeeze -> MatMul(W) -> Add(b) becomes
    GlobalAveragePool -> Flatten -> Gemm(W^T, b, transB=1), torch's exporter's head."""
    from onnx import helper

    done = 0
    for squeeze in [n for n in g.graph.node if n.op_type == "Squeeze"]:
        pool = g.producer(squeeze.input[0])
        matmul = g.only_consumer(squeeze.output[0], "MatMul")
        add = matmul and g.only_consumer(matmul.output[0], "Add")
        weights = matmul and g.constant(matmul.input[1])
        bias = add and g.constant(add.input[1])
        if (pool is None or pool.op_type != "GlobalAveragePool" or add is None
                or weights is None or bias is None or weights.ndim != 2
                or bias.shape != (weights.shape[1],) or add.input[0] != matmul.output[0]):
            continue
        index = list(g.graph.node).index(squeeze)
        flat = helper.make_node("Flatten", [squeeze.input[0]], [f"{squeeze.name}/flat"],
                                name=f"{squeeze.name}/Flatten", axis=1)
        gemm = helper.make_node("Gemm", [flat.output[0], "", ""], list(add.output),
                                name=f"{matmul.name}/Gemm", transB=1)
        # Set before inserting: the graph holds a copy of the node it is given.
        g.set_constant(gemm, 1, np.ascontiguousarray(weights.T), "weights")
        g.set_constant(gemm, 2, bias, "bias")
        for node in (squeeze, matmul, add):
            g.graph.node.remove(node)
        g.graph.node.insert(index, gemm)
        g.graph.node.insert(index, flat)
        done += 1
    return done


def _input_chain(g: _Graph, input_name: str):
    """(elementwise nodes with a constant from the input to its layout Transpose, the
    Transpose), or (None, None) where the input does not go that way."""
    path, name = [], input_name
    while True:
        users = g.consumers(name)
        if len(users) != 1:
            return None, None
        node = users[0]
        if node.op_type == "Transpose":
            perm = list(attribute(node, "perm", []))
            return (path, node) if perm == _TO_NCHW else (None, None)
        if (node.op_type not in ("Sub", "Mul", "Add", "Div") or node.input[0] != name
                or g.constant(node.input[1]) is None):
            return None, None
        path.append(node)
        name = node.output[0]


def input_ops_after_transpose(g: _Graph, input_name: str) -> int:
    """input -> Sub/Mul(per-channel) -> Transpose becomes input -> Transpose -> Sub/Mul with
    (C, 1, 1) constants: broadcasting over the innermost axis of NHWC is ONNX Runtime's slow
    elementwise path, over whole NCHW planes its fast one."""
    path, transpose = _input_chain(g, input_name)
    if not path:
        return 0
    after = transpose.output[0]
    users = g.consumers(after)
    transpose.input[0] = input_name
    path[0].input[0] = after
    for op in path:
        value = g.constant(op.input[1])
        if value.ndim:
            shaped = value.reshape(-1, 1, 1) if value.size > 1 else value.reshape(())
            g.set_constant(op, 1, np.ascontiguousarray(shaped), "nchw")
    last = path[-1].output[0]
    for user in users:
        for i, name in enumerate(user.input):
            if name == after:
                user.input[i] = last
    nodes = list(g.graph.node)
    for node in [transpose, *path]:
        g.graph.node.remove(node)
    first = min(nodes.index(n) for n in [transpose, *path])
    for node in reversed([transpose, *path]):
        g.graph.node.insert(first, node)
    return len(path)


def input_as_nchw(g: _Graph, input_name: str) -> None:
    """Removes the Transpose(NHWC->NCHW) that the input goes through first and declares the
    input (batch, C, H, W). With one channel both layouts hold the same elements in the same
    order (tf2onnx writes a Reshape there): only the declared shape changes."""
    dims = next(i for i in g.graph.input if i.name == input_name).type.tensor_type.shape.dim
    if dims[3].dim_value == 1:
        _declare_nchw(dims)
        return
    users = g.consumers(input_name)
    if len(users) != 1 or users[0].op_type != "Transpose" or list(
            attribute(users[0], "perm", [])) != _TO_NCHW:
        raise ValueError(f"the ONNX input {input_name!r} is not read by one NHWC->NCHW "
                         f"Transpose but by {[n.op_type for n in users]}")
    g.remove(users[0], input_name)
    _declare_nchw(dims)


def _declare_nchw(dims) -> None:
    order = [type(dims[i])() for i in _TO_NCHW]
    for copy, i in zip(order, _TO_NCHW):
        copy.CopyFrom(dims[i])
    del dims[:]
    dims.extend(order)


def optimize(proto, input_name: str, layout: str = "nhwc") -> dict:
    """Runs every pass on ``proto`` (in place); returns how many times each applied."""
    if layout not in LAYOUTS:
        raise ValueError(f"Unknown ONNX layout {layout!r}; expected one of {list(LAYOUTS)}")
    g = _Graph(proto.graph)
    applied = {
        "pad_into_max_pool": fold_pad_into_max_pool(g),
        "input_scale_into_conv": fold_input_scale(g),
        "head_as_gemm": head_as_gemm(g),
        "input_ops_after_transpose": input_ops_after_transpose(g, input_name),
    }
    if layout == "nchw":
        input_as_nchw(g, input_name)
    g.drop_unused_initializers()
    return applied
