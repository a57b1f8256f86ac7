"""One ONNX model, ready to run: an ONNX Runtime session built from bytes, strict input checks, dynamic batching.

The session is built in memory (CPU execution provider, ONNX format only, no profiling, no optimized-model file,
no external data: ONNX Runtime refuses external initializers for a model loaded from bytes) and logs only fatal
errors, because its warnings name the model's nodes and initializers, which are the model owner's secret, and the
enclave's standard error reaches the host.

Every call is checked against the model's signature before it reaches ONNX Runtime: the exact input names, the
exact dtype (no silent casts), the rank and every fixed dimension. Errors are
:class:`~enklave.errors.BoundaryError` whose messages name inputs, dtypes and shapes, never tensor values or
ONNX Runtime's own text (which can quote the model's internals).

When every input and output has a symbolic first dimension (the batch dimension), calls that arrive while the
model is busy are merged along it into one session run, up to ``max_batch`` rows and ``max_delay_ms`` of waiting
(see :mod:`enklave.inference._batching`); results are split back by rows, so each caller gets exactly what a
run of its own request returns. A call that finds the model idle runs at once.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from enklave.errors import BoundaryError, UsageError
from enklave.inference._batching import Batcher, Job

__all__ = ["MAX_DELAY_MS", "ModelRunner", "RunnerStats", "TensorSpec"]

Array = npt.NDArray[Any]
MAX_DELAY_MS: Final = 1000.0
"""The longest batching delay a runner accepts."""

# ONNX tensor element types that the Open Inference Protocol can carry: (v2 datatype, numpy dtype).
_ORT_TYPES: Final[dict[str, tuple[str, np.dtype[Any]]]] = {
    "tensor(bool)": ("BOOL", np.dtype(np.bool_)),
    "tensor(uint8)": ("UINT8", np.dtype(np.uint8)),
    "tensor(uint16)": ("UINT16", np.dtype(np.uint16)),
    "tensor(uint32)": ("UINT32", np.dtype(np.uint32)),
    "tensor(uint64)": ("UINT64", np.dtype(np.uint64)),
    "tensor(int8)": ("INT8", np.dtype(np.int8)),
    "tensor(int16)": ("INT16", np.dtype(np.int16)),
    "tensor(int32)": ("INT32", np.dtype(np.int32)),
    "tensor(int64)": ("INT64", np.dtype(np.int64)),
    "tensor(float16)": ("FP16", np.dtype(np.float16)),
    "tensor(float)": ("FP32", np.dtype(np.float32)),
    "tensor(double)": ("FP64", np.dtype(np.float64)),
    "tensor(string)": ("BYTES", np.dtype(object)),
}
_V2_NAMES: Final = {dtype: name for name, dtype in _ORT_TYPES.values() if name != "BYTES"}
# What ONNX Runtime raises: its pybind11 exception types (Fail, InvalidArgument, RuntimeException...) derive from
# Exception directly, and its Python wrapper raises the built-in types. All of them come from the model or the
# input, so all become BoundaryError, named by type only.
_ORT_ERRORS: Final = (Exception,)


class TensorSpec(NamedTuple):
    """A model input or output as the Open Inference Protocol describes it: name, v2 datatype and shape, with -1
    for a symbolic (any size) dimension. A tuple, so it is also the ``(name, datatype, shape)`` triple of
    :func:`enklave.inference.protocol.model_metadata`."""

    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class RunnerStats:
    """Counts only, nothing derived from content: calls, session runs started (a merged run that fails is
    followed by a run of each of its calls alone), rows run, failed calls, and how many session runs merged each
    number of calls (``batch_sizes``: sorted ``(calls per run, runs)`` pairs)."""

    requests: int
    runs: int
    rows: int
    errors: int
    batch_sizes: tuple[tuple[int, int], ...]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; ``batch_sizes`` keys are decimal strings."""
        return {
            "requests": self.requests, "runs": self.runs, "rows": self.rows, "errors": self.errors,
            "batch_sizes": {str(size): count for size, count in self.batch_sizes},
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Port:
    spec: TensorSpec
    dtype: np.dtype[Any]
    first: str | int | None  # ONNX Runtime's first dimension: a fixed size, a symbol, or None (unnamed).


def _port(arg: Any, what: str, index: int) -> _Port:
    kind = _ORT_TYPES.get(str(arg.type))
    if kind is None:
        # The type (bfloat16, float8, sequences, maps...) has no Open Inference Protocol datatype.
        raise BoundaryError(f"model {what} #{index} has a type that the inference protocol cannot carry")
    raw = list(arg.shape or [])
    shape = tuple(dim if isinstance(dim, int) and dim >= 0 else -1 for dim in raw)
    return _Port(TensorSpec(str(arg.name), kind[0], shape), kind[1], raw[0] if raw else 0)


def _name(name: object) -> str:
    # Names come from the caller: bounded and escaped, so one message stays one short line.
    return repr(str(name)[:64])


class ModelRunner:
    """An ONNX model loaded into ONNX Runtime from bytes; thread-safe.

    ``intra_op_threads`` sizes ONNX Runtime's thread pool (0 lets it choose; size it to the enclave's threads).
    ``max_batch`` (rows) and ``max_delay_ms`` bound dynamic batching; ``max_batch=1`` turns it off. Raises
    :class:`~enklave.errors.BoundaryError` when the bytes are not a model ONNX Runtime can load or its inputs or
    outputs have a type the inference protocol cannot carry, :class:`~enklave.errors.UsageError` on bad options.
    """

    def __init__(
        self, model_bytes: bytes, *, intra_op_threads: int = 1, max_batch: int = 8, max_delay_ms: float = 2.0
    ) -> None:
        self.check_options(intra_op_threads=intra_op_threads, max_batch=max_batch, max_delay_ms=max_delay_ms)
        self._session = self._load(bytes(model_bytes), intra_op_threads)
        inputs = [_port(arg, "input", i) for i, arg in enumerate(self._session.get_inputs())]
        outputs = [_port(arg, "output", i) for i, arg in enumerate(self._session.get_outputs())]
        self._inputs = {port.spec.name: port for port in inputs}
        self._outputs = {port.spec.name: port for port in outputs}
        self.max_batch = max_batch
        self.max_delay_ms = float(max_delay_ms)
        self._stats_lock = threading.Lock()
        self._requests = self._runs = self._rows = self._errors = 0
        self._batch_sizes: dict[int, int] = {}
        self._batcher: Batcher | None = None
        if max_batch > 1 and _batchable(inputs, outputs):
            self._batcher = Batcher(
                self._session_run, self._record, max_batch=max_batch, max_delay_s=max_delay_ms / 1000
            )

    @staticmethod
    def check_options(*, intra_op_threads: int, max_batch: int, max_delay_ms: float) -> None:
        """Raise :class:`~enklave.errors.UsageError` unless the options are valid for a runner: threads >= 0,
        ``max_batch`` >= 1, ``max_delay_ms`` from 0 to :data:`MAX_DELAY_MS`."""
        if type(intra_op_threads) is not int or intra_op_threads < 0:
            raise UsageError("intra_op_threads must be a non-negative integer")
        if type(max_batch) is not int or max_batch < 1:
            raise UsageError("max_batch must be a positive integer")
        if not (isinstance(max_delay_ms, (int, float)) and math.isfinite(max_delay_ms)) or not (
            0 <= max_delay_ms <= MAX_DELAY_MS
        ):
            raise UsageError(f"max_delay_ms must be between 0 and {MAX_DELAY_MS}")

    @staticmethod
    def _load(model: bytes, threads: int) -> Any:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.enable_profiling = False
        options.log_severity_level = 4
        # Only the ONNX protobuf format: one parser to trust, not also ONNX Runtime's flatbuffer format.
        options.add_session_config_entry("session.load_model_format", "ONNX")
        try:
            return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
        except _ORT_ERRORS as exc:
            raise BoundaryError(f"not a model ONNX Runtime can load ({type(exc).__name__})") from exc

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        """The model's inputs, in the model's order."""
        return tuple(port.spec for port in self._inputs.values())

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        """The model's outputs, in the model's order."""
        return tuple(port.spec for port in self._outputs.values())

    @property
    def batching(self) -> bool:
        """True when concurrent calls are merged (every input and output has a symbolic first dimension)."""
        return self._batcher is not None

    def run(self, inputs: Mapping[str, Array], outputs: Sequence[str] | None = None) -> dict[str, Array]:
        """Run the model on ``inputs`` (every input by name, nothing else) and return ``outputs`` (all when None),
        as arrays of the declared dtypes (BYTES as object arrays of ``bytes``).

        Raises :class:`~enklave.errors.BoundaryError` when an input is missing, unknown, of another dtype or
        shape, an output name is unknown or repeated, or ONNX Runtime fails on the input.
        """
        try:
            feeds, names, rows = self._validate(inputs, outputs)
            job = Job(key=_batch_key(feeds, names), feeds=feeds, outputs=names, rows=rows)
            if self._batcher is not None and 0 < rows < self.max_batch:
                results = self._batcher.submit(job)
            else:
                self._record(1, rows)
                results = self._session_run(feeds, names)
        except BaseException:
            self._count(error=True)
            raise
        self._count(error=False)
        return {
            name: _from_ort(result, self._outputs[name]) for name, result in zip(names, results, strict=True)
        }

    def stats(self) -> RunnerStats:
        """A snapshot of the counters."""
        with self._stats_lock:
            return RunnerStats(
                self._requests, self._runs, self._rows, self._errors, tuple(sorted(self._batch_sizes.items()))
            )

    def _count(self, *, error: bool) -> None:
        with self._stats_lock:
            self._requests += 1
            self._errors += error

    def _record(self, calls: int, rows: int) -> None:
        with self._stats_lock:
            self._runs += 1
            self._rows += rows
            self._batch_sizes[calls] = self._batch_sizes.get(calls, 0) + 1

    def _session_run(self, feeds: dict[str, Array], names: list[str]) -> list[Array]:
        try:
            return list(self._session.run(names, feeds))
        except _ORT_ERRORS as exc:
            raise BoundaryError(f"the model failed on this input ({type(exc).__name__})") from exc

    def _validate(
        self, inputs: Mapping[str, Array], outputs: Sequence[str] | None
    ) -> tuple[dict[str, Array], list[str], int]:
        if not isinstance(inputs, Mapping):
            raise BoundaryError("inputs must be a mapping of input names to arrays")
        for name in inputs:
            if name not in self._inputs:
                raise BoundaryError(f"the model has no input {_name(name)}")
        feeds: dict[str, Array] = {}
        for name, port in self._inputs.items():
            if name not in inputs:
                raise BoundaryError(f"missing input {_name(name)}")
            feeds[name] = _to_ort(inputs[name], port)
        if outputs is None:
            names = list(self._outputs)
        else:
            if isinstance(outputs, str) or not isinstance(outputs, Sequence):
                raise BoundaryError("outputs must be a list of output names")
            names = list(outputs)
            if not names:
                # ONNX Runtime reads an empty list as "every output", which is not what was asked for.
                raise BoundaryError("outputs must name at least one output (leave it out to get all of them)")
            for name in names:
                if name not in self._outputs:
                    raise BoundaryError(f"the model has no output {_name(name)}")
            if len(set(names)) != len(names):
                raise BoundaryError("an output is requested twice")
        # The rows of a call: the inputs' common first dimension; 0 (never merged) when they disagree.
        firsts = {array.shape[0] if array.ndim else 0 for array in feeds.values()}
        return feeds, names, firsts.pop() if len(firsts) == 1 else 0


def _batchable(inputs: list[_Port], outputs: list[_Port]) -> bool:
    # The batch dimension: every input's and output's first dimension is symbolic, and the inputs' first
    # dimensions are the same symbol (or unnamed), so concatenating along it is what the model expects.
    if (
        not inputs
        or not outputs
        or any(not port.spec.shape or port.spec.shape[0] != -1 for port in inputs + outputs)
    ):
        return False
    return len({port.first for port in inputs if port.first is not None}) <= 1


def _batch_key(feeds: dict[str, Array], names: list[str]) -> tuple[Any, ...]:
    # Calls merge only when they ask for the same outputs and agree on every dimension but the first.
    return (tuple((name, array.shape[1:]) for name, array in feeds.items()), tuple(names))


def _to_ort(value: object, port: _Port) -> Array:
    spec = port.spec
    if not isinstance(value, np.ndarray):
        raise BoundaryError(f"input {_name(spec.name)} must be an array")
    array: Array = value
    if spec.datatype == "BYTES":
        array = _strings(array, spec.name)
    elif array.dtype != port.dtype:
        if array.dtype.kind == port.dtype.kind and array.dtype.itemsize == port.dtype.itemsize:
            array = array.astype(port.dtype)  # Only the byte order differs.
        else:
            got = _V2_NAMES.get(array.dtype, str(array.dtype))
            raise BoundaryError(f"input {_name(spec.name)} must be {spec.datatype}, got {got}")
    if array.ndim != len(spec.shape):
        raise BoundaryError(
            f"input {_name(spec.name)} must have {len(spec.shape)} dimensions, got {array.ndim}"
        )
    for axis, (want, got_dim) in enumerate(zip(spec.shape, array.shape, strict=True)):
        if want not in (-1, got_dim):
            raise BoundaryError(f"input {_name(spec.name)} dimension {axis} must be {want}, got {got_dim}")
    return array


def _strings(array: Array, name: str) -> Array:
    # ONNX Runtime's string tensors are UTF-8 text and it would str() a bytes element ("b'...'"): decode here.
    if array.dtype.kind not in "OSU":
        raise BoundaryError(f"input {_name(name)} must be BYTES")
    out = np.empty(array.shape, dtype=object)
    flat = out.reshape(-1)
    for index, element in enumerate(array.reshape(-1)):
        if isinstance(element, (bytes, np.bytes_)):
            try:
                flat[index] = bytes(element).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise BoundaryError(f"input {_name(name)} holds bytes that are not UTF-8 text") from exc
        elif isinstance(element, str):
            flat[index] = element
        else:
            raise BoundaryError(f"input {_name(name)} must hold bytes elements")
    return out


def _from_ort(result: Array, port: _Port) -> Array:
    if port.spec.datatype != "BYTES":
        return result
    out = np.empty(result.shape, dtype=object)
    flat = out.reshape(-1)
    for index, element in enumerate(result.reshape(-1)):
        flat[index] = element.encode("utf-8") if isinstance(element, str) else bytes(element)
    return out
