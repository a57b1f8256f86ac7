"""Small ONNX models the inference tests build: any graph as model bytes, and a two-layer perceptron.

Used by tests/test_inference_client.py, tests/test_inference_service.py and tests/test_inference_models.py.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["mlp_model", "model_bytes"]


def model_bytes(graph: onnx.GraphProto) -> bytes:
    """``graph`` as a serialized model of opset 17 and IR version 8, as every model of the tests is."""
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def mlp_model(w1: np.ndarray, b1: np.ndarray, w2: np.ndarray) -> bytes:
    """x [N, w1 rows] -> y [N, w2 columns] = relu(x @ w1 + b1) @ w2, with a dynamic batch dimension N."""
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w1"], ["xw"]),
            helper.make_node("Add", ["xw", "b1"], ["pre"]),
            helper.make_node("Relu", ["pre"], ["h"]),
            helper.make_node("MatMul", ["h", "w2"], ["y"]),
        ],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", w1.shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", w2.shape[1]])],
        [
            numpy_helper.from_array(w1, "w1"),
            numpy_helper.from_array(b1, "b1"),
            numpy_helper.from_array(w2, "w2"),
        ],
    )
    return model_bytes(graph)
