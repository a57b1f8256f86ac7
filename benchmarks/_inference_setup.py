"""The parts of ``benchmarks/inference.py`` that set a run up: the models and their inputs, and the server
processes (``_inference_server.py``) with their CPU time read from /proc."""

from __future__ import annotations

import json
import select
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from _proc import process_cpu
from onnx import TensorProto, helper, numpy_helper

__all__ = ["LIGHT", "SERVER", "Array", "Server", "Workload", "mlp_model", "workloads"]

SERVER = Path(__file__).resolve().parent / "_inference_server.py"
LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"

Array = np.ndarray[Any, Any]


# -- models ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """A model, its input and output names, the request inputs (cycled), and the output expected for input 0
    when the model ships one."""

    name: str
    model: bytes
    input: str
    output: str
    inputs: list[Array]
    reference: Array | None = None


def mlp_model(features: int = 256, hidden: int = 512, classes: int = 10, seed: int = 6) -> bytes:
    """x [N, features] -> relu(x W1 + b1) W2 + b2 = y [N, classes], float32, N symbolic."""
    rng = np.random.default_rng(seed)
    weights = [
        numpy_helper.from_array((rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32), name)
        for name, shape in (("w1", (features, hidden)), ("w2", (hidden, classes)))
    ]
    biases = [
        numpy_helper.from_array(rng.standard_normal(size).astype(np.float32), name)
        for name, size in (("b1", hidden), ("b2", classes))
    ]
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w1"], ["h0"]),
            helper.make_node("Add", ["h0", "b1"], ["h1"]),
            helper.make_node("Relu", ["h1"], ["h2"]),
            helper.make_node("MatMul", ["h2", "w2"], ["h3"]),
            helper.make_node("Add", ["h3", "b2"], ["y"]),
        ],
        "benchmark_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", classes])],
        [*weights, *biases],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def workloads(names: list[str]) -> list[Workload]:
    rng = np.random.default_rng(2026)
    made = []
    if "mlp" in names:
        inputs = [rng.standard_normal((1, 256)).astype(np.float32) for _ in range(16)]
        made.append(Workload("mlp", mlp_model(), "x", "y", inputs))
    if "resnet50" in names:
        shape = (1, 3, 224, 224)
        count = int(np.prod(shape))
        # Input 0 is what onnx's backend test runner feeds the light models; the package ships its output.
        inputs = [(np.arange(count).reshape(shape) / count).astype(np.float32)]
        inputs += [rng.random(shape, dtype=np.float32) for _ in range(3)]
        reference = numpy_helper.to_array(onnx.load_tensor(str(LIGHT / "light_resnet50_output_0.pb")))
        made.append(
            Workload(
                "resnet50",
                (LIGHT / "light_resnet50.onnx").read_bytes(),
                "gpu_0/data_0",
                "gpu_0/softmax_1",
                inputs,
                reference,
            )
        )
    return made


# -- servers -----------------------------------------------------------------------------------------------------


class Server:
    """``_inference_server.py`` in its own process; :meth:`close` closes its standard input and waits."""

    def __init__(self, kind: str, arguments: list[str], log: Path) -> None:
        self.log = log
        with log.open("wb") as sink:
            self.process = subprocess.Popen(
                [sys.executable, str(SERVER), kind, *arguments],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=sink,
            )
        if self.process.stdout is None or self.process.stdin is None:
            raise SystemExit("no pipes to the server process")
        ready, _, _ = select.select([self.process.stdout], [], [], 180)
        line = self.process.stdout.readline() if ready else b""
        if not line:
            self.close()
            raise SystemExit(f"the {kind} server did not start:\n{log.read_text()[-3000:]}")
        self.info: dict[str, Any] = json.loads(line)
        self.url: str = self.info["url"]
        self.pid: int = self.info["pid"]

    def cpu(self) -> tuple[float, float]:
        """CPU seconds of the server's own process and of its descendants (the enclave process)."""
        spent = process_cpu(self.pid)
        own = spent.pop(self.pid, 0.0)
        return own, sum(spent.values())

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
