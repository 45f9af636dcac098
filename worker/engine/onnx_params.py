"""Parameters of an ONNX graph counted as torch counts a module's: trained weights, not buffers or shapes."""

from __future__ import annotations

import numpy as np

_ONNX_FLOATS = {1, 10, 11, 16}  # float32, float16, float64, bfloat16
# Inputs of these operators that hold running statistics or shapes, not trained weights.
_ONNX_BUFFER_INPUTS = {"BatchNormalization": {3, 4}, "InstanceNormalization": set(), "Reshape": {1}}


def onnx_parameter_count(model) -> int:
    """Trainable-looking weights of an ONNX graph, counted as a torch module's parameters() counts them.

    Initialisers are every constant tensor; left out: non-float ones (shapes, indices, a BatchNorm's step
    counter), 0-d scalars (constants folded in by the exporter) and a BatchNorm's running mean and variance,
    which torch keeps as buffers, so that teacher and student sizes compare like with like.
    """
    buffers = set()
    for node in model.graph.node:
        for index in _ONNX_BUFFER_INPUTS.get(node.op_type, ()):
            if index < len(node.input):
                buffers.add(node.input[index])
    return int(
        sum(
            int(np.prod(t.dims))
            for t in model.graph.initializer
            if t.data_type in _ONNX_FLOATS and len(t.dims) > 0 and t.name not in buffers
        )
    )
