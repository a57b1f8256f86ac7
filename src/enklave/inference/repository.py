"""The enclave's loaded models: encrypted containers in, named and versioned runners out, within limits.

A model enters only through :meth:`ModelRepository.add`, which checks the container's declared size against the
limits before decrypting anything, authenticates and decrypts it with the model key, hashes the plaintext
(SHA-256, reported in the model's metadata so that clients can check which model answered) and builds its
:class:`~enklave.inference.runner.ModelRunner`. The plaintext model is dropped once ONNX Runtime holds it.

Limits count plaintext model bytes: ``max_model_bytes`` per model, ``max_total_bytes`` for all loaded models (a
proxy for the enclave memory the sessions use), ``max_models`` models at once. A refused model leaves the
repository as it was.
"""

from __future__ import annotations

import builtins
import hashlib
import threading
from dataclasses import dataclass
from typing import Any

from enklave.errors import BoundaryError, UsageError
from enklave.inference.model_format import (
    MAX_MODEL_BYTES,
    ModelHeader,
    decrypt_model,
    is_valid_name,
    is_valid_version,
    read_header,
)
from enklave.inference.runner import ModelRunner, RunnerStats, TensorSpec

__all__ = ["ModelInfo", "ModelRepository"]


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A loaded model: name, version, SHA-256 of the plaintext ONNX model (hex), its size in bytes, and its
    inputs and outputs as the Open Inference Protocol describes them."""

    name: str
    version: str
    sha256: str
    size: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; tensors as ``{"name", "datatype", "shape"}`` objects."""
        return {
            "name": self.name, "version": self.version, "sha256": self.sha256, "size": self.size,
            "inputs": [_tensor_dict(spec) for spec in self.inputs],
            "outputs": [_tensor_dict(spec) for spec in self.outputs],
        }  # fmt: skip

    @classmethod
    def from_dict(cls, data: object) -> ModelInfo:
        """The inverse of :meth:`to_dict`, for the host reading what the enclave answered; raises
        :class:`~enklave.errors.BoundaryError` when ``data`` is not exactly such a dict."""
        if not isinstance(data, dict) or set(data) != {
            "name",
            "version",
            "sha256",
            "size",
            "inputs",
            "outputs",
        }:
            raise BoundaryError(
                "model info must hold exactly name, version, sha256, size, inputs and outputs"
            )
        name, version, sha256, size = data["name"], data["version"], data["sha256"], data["size"]
        if not is_valid_name(name) or not is_valid_version(version):
            raise BoundaryError("model info has an invalid name or version")
        if not (isinstance(sha256, str) and len(sha256) == 64 and set(sha256) <= set("0123456789abcdef")):
            raise BoundaryError("model info sha256 must be 64 lowercase hex digits")
        if type(size) is not int or not 0 <= size <= MAX_MODEL_BYTES:
            raise BoundaryError("model info size is out of range")
        return cls(name, version, sha256, size, _tensors(data["inputs"]), _tensors(data["outputs"]))


def _tensor_dict(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "datatype": spec.datatype, "shape": list(spec.shape)}


def _tensors(data: object) -> tuple[TensorSpec, ...]:
    if not isinstance(data, list) or len(data) > 4096:
        raise BoundaryError("model info tensors must be a list")
    specs = []
    for item in data:
        if not isinstance(item, dict) or set(item) != {"name", "datatype", "shape"}:
            raise BoundaryError("model info tensor must hold exactly name, datatype and shape")
        name, datatype, shape = item["name"], item["datatype"], item["shape"]
        if not isinstance(name, str) or not isinstance(datatype, str) or not isinstance(shape, list):
            raise BoundaryError("model info tensor has a field of the wrong type")
        if any(type(dim) is not int or dim < -1 for dim in shape):
            raise BoundaryError("model info tensor shape must hold integers of at least -1")
        specs.append(TensorSpec(name, datatype, tuple(shape)))
    return tuple(specs)


@dataclass(frozen=True, slots=True)
class _Entry:
    info: ModelInfo
    runner: ModelRunner


class ModelRepository:
    """The models loaded in this enclave, by name and version; thread-safe.

    Runner options (``intra_op_threads``, ``max_batch``, ``max_delay_ms``) apply to every model. Raises
    :class:`~enklave.errors.UsageError` on limits that are not positive or beyond the container format.
    """

    def __init__(
        self,
        *,
        max_models: int = 16,
        max_model_bytes: int = 1 << 30,
        max_total_bytes: int = 2 << 30,
        intra_op_threads: int = 1,
        max_batch: int = 8,
        max_delay_ms: float = 2.0,
    ) -> None:
        for option, value in (("max_models", max_models), ("max_model_bytes", max_model_bytes),
                              ("max_total_bytes", max_total_bytes)):  # fmt: skip
            if type(value) is not int or value < 1:
                raise UsageError(f"{option} must be a positive integer")
        if max_model_bytes > MAX_MODEL_BYTES:
            raise UsageError(f"max_model_bytes must be at most {MAX_MODEL_BYTES}")
        self.max_models = max_models
        self.max_model_bytes = max_model_bytes
        self.max_total_bytes = max_total_bytes
        self._runner_options: dict[str, Any] = {
            "intra_op_threads": intra_op_threads, "max_batch": max_batch, "max_delay_ms": max_delay_ms,
        }  # fmt: skip
        # Refuse bad runner options now rather than at the first upload.
        ModelRunner.check_options(**self._runner_options)
        self._models: dict[tuple[str, str], _Entry] = {}
        self._lock = threading.Lock()  # Guards _models; held only briefly.
        self._add_lock = threading.Lock()  # Serializes add(): the limit checks then hold until the commit.

    def add(self, blob: bytes, key: bytes) -> ModelInfo:
        """Decrypt the container ``blob`` with ``key`` and load its model as the header's name and version,
        replacing a model loaded under the same name and version (kept as is when its SHA-256 is the same).

        Raises :class:`~enklave.errors.BoundaryError` when a limit would be exceeded or the model does not load,
        :class:`~enklave.errors.BadDataError` on a malformed container, :class:`~enklave.errors.VerificationError`
        when it does not decrypt with ``key``. On any error, the repository is unchanged.
        """
        with self._add_lock:
            # 1. The clear header, bounded by the format before anything else.
            header = read_header(blob)
            # 2. The limits, from the declared size, before any decryption or allocation.
            self._check_limits(header)
            # 3. Authenticate and decrypt.
            _, model = decrypt_model(blob, key, max_model_bytes=self.max_model_bytes)
            digest = hashlib.sha256(model).hexdigest()
            current = self.find(header.name, header.version)
            if current is not None and current[0].sha256 == digest:
                return current[0]  # The same model again (a restart, a repeated upload): nothing to rebuild.
            # 4. Load it into ONNX Runtime, then let go of the plaintext.
            runner = ModelRunner(model, **self._runner_options)
            del model
            info = ModelInfo(header.name, header.version, digest, header.size, runner.inputs, runner.outputs)
            with self._lock:
                self._models[(header.name, header.version)] = _Entry(info, runner)
            return info

    def _check_limits(self, header: ModelHeader) -> None:
        if header.size > self.max_model_bytes:
            raise BoundaryError(
                f"model of {header.size} bytes exceeds the limit of {self.max_model_bytes} bytes"
            )
        with self._lock:
            replaced = self._models.get((header.name, header.version))
            count = len(self._models) - (replaced is not None)
            total = sum(entry.info.size for entry in self._models.values())
        if count + 1 > self.max_models:
            raise BoundaryError(f"at most {self.max_models} models can be loaded at once")
        total -= replaced.info.size if replaced is not None else 0
        if total + header.size > self.max_total_bytes:
            raise BoundaryError(
                f"loading this model would exceed the limit of {self.max_total_bytes} bytes for all models"
            )

    def remove(self, name: str, version: str) -> ModelInfo | None:
        """Unload a model; returns its info, or None when it was not loaded. Calls already running finish."""
        with self._lock:
            entry = self._models.pop((name, version), None)
        return entry.info if entry is not None else None

    def find(self, name: str, version: str | None = None) -> tuple[ModelInfo, ModelRunner] | None:
        """The model ``name`` at ``version`` (the highest loaded version when None), or None when not loaded."""
        with self._lock:
            if version is not None:
                entry = self._models.get((name, version))
            else:
                versions = [entry for (n, _), entry in self._models.items() if n == name]
                entry = max(versions, key=lambda e: int(e.info.version), default=None)
        return (entry.info, entry.runner) if entry is not None else None

    def get(self, name: str, version: str | None = None) -> tuple[ModelInfo, ModelRunner]:
        """Like :meth:`find`, but raises :class:`~enklave.errors.BoundaryError` when the model is not loaded (the
        name and version come from a request: a request for a model that is not here is bad input)."""
        found = self.find(name, version)
        if found is None:
            which = f"model {name[:64]!r}" + (f" version {version[:20]!r}" if version is not None else "")
            raise BoundaryError(f"{which} is not loaded")
        return found

    def list(self) -> builtins.list[ModelInfo]:
        """Every loaded model, sorted by name, then by version number."""
        with self._lock:
            infos = [entry.info for entry in self._models.values()]
        return sorted(infos, key=lambda info: (info.name, int(info.version)))

    def versions(self, name: str) -> builtins.list[str]:
        """The loaded versions of ``name``, in increasing order (empty when none is loaded)."""
        return [info.version for info in self.list() if info.name == name]

    @property
    def total_bytes(self) -> int:
        """The plaintext bytes of all loaded models, as counted against ``max_total_bytes``."""
        with self._lock:
            return sum(entry.info.size for entry in self._models.values())

    def stats(self) -> dict[tuple[str, str], RunnerStats]:
        """Each loaded model's runner counters, by (name, version)."""
        with self._lock:
            entries = dict(self._models)
        return {key: entry.runner.stats() for key, entry in sorted(entries.items())}
