"""Inlines the XLA-compiled function calls of a frozen GraphDef, so that converters see plain ops.

Keras's TensorFlow backend computes a grouped convolution (``Conv2D(groups=g)``: ResNeXt's 3x3)
inside a ``tf.function(jit_compile=True)``, because TensorFlow's CPU kernels have no gradient
for it. Freezing keeps such a call as a ``StatefulPartitionedCall`` marked ``_XlaMustCompile``
(grappler's inliner leaves it alone), which tf2onnx cannot convert ("StatefulPartitionedCall is
not supported") and the TFLite converter would have to compile. The body is one ``Conv2D``
with a grouped filter, which TensorFlow runs forward on the CPU, tf2onnx writes as one ONNX
``Conv`` with ``group`` and the TFLite converter as one ``CONV_2D``: this module puts the body in
place of the call.
"""

from __future__ import annotations

_CALL_OPS = ("StatefulPartitionedCall", "PartitionedCall")


def _compiled_functions(graph_def) -> dict:
    return {f.signature.name: f for f in graph_def.library.function
            if f.attr["_XlaMustCompile"].b}


def _graph_tensor(prefix: str, ref: str, args: dict) -> str:
    """A body reference (``arg``, ``node:out_arg:i``, ``^node``) as a graph tensor name."""
    if ref.startswith("^"):
        return "^" + f"{prefix}/{ref[1:]}"
    name, _, rest = ref.partition(":")
    if name in args:
        return args[name]
    index = int(rest.rpartition(":")[2]) if rest else 0
    # Every op in a body this module inlines has one output argument: its i-th is output i.
    return f"{prefix}/{name}" if index == 0 else f"{prefix}/{name}:{index}"


def _inline_one(call, function) -> tuple[list, dict]:
    """(the body's nodes, renamed after ``call``; {call output name: graph tensor})."""
    from keras_resnet._keras_compat import op_def

    inputs = [i for i in call.input if not i.startswith("^")]
    args = {a.name: inputs[i] for i, a in enumerate(function.signature.input_arg)}
    nodes = []
    for body in function.node_def:
        registered = op_def(body.op)
        if registered is None or len(registered.output_arg) > 1 or any(
                a.number_attr or a.type_list_attr for a in registered.output_arg):
            raise ValueError(f"cannot inline {function.signature.name}: its node {body.name} "
                             f"is a {body.op}, an op with several outputs")
        node = type(body)()
        node.CopyFrom(body)
        node.name = f"{call.name}/{body.name}"
        del node.input[:]
        node.input.extend(_graph_tensor(call.name, i, args) for i in body.input)
        node.input.extend(f"^{c[1:]}" for c in call.input if c.startswith("^"))
        nodes.append(node)
    outputs = {}
    for i, arg in enumerate(function.signature.output_arg):
        tensor = _graph_tensor(call.name, function.ret[arg.name], args)
        outputs[call.name if i == 0 else f"{call.name}:{i}"] = tensor
        if i == 0:
            outputs[f"{call.name}:0"] = tensor
    return nodes, outputs


def inline_compiled_calls(graph_def) -> int:
    """Replaces, in place, every call of an XLA-compiled function in ``graph_def``'s top level
    by the function's body, and drops those functions from its library. Returns how many calls
    it inlined. Raises ValueError for a body it cannot inline (an op of several outputs)."""
    compiled = _compiled_functions(graph_def)
    calls = [n for n in graph_def.node
             if n.op in _CALL_OPS and n.attr["f"].func.name in compiled]
    if not calls:
        return 0
    renamed, new_nodes = {}, []
    for call in calls:
        nodes, outputs = _inline_one(call, compiled[call.attr["f"].func.name])
        new_nodes.extend(nodes)
        renamed.update(outputs)
    control = {f"^{c.name}": f"^{renamed[c.name].split(':')[0]}" for c in calls}
    call_ids = {id(c) for c in calls}
    kept = [n for n in graph_def.node if id(n) not in call_ids]
    for node in kept + new_nodes:
        for i, ref in enumerate(node.input):
            node.input[i] = control.get(ref) or renamed.get(ref, ref)
    del graph_def.node[:]
    graph_def.node.extend(kept + new_nodes)
    still_called = {n.attr["f"].func.name for n in graph_def.node if n.op in _CALL_OPS}
    functions = [f for f in graph_def.library.function
                 if f.signature.name not in compiled or f.signature.name in still_called]
    del graph_def.library.function[:]
    graph_def.library.function.extend(functions)
    return len(calls)
