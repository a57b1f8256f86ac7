"""The confidential inference part of ``enklave demo``: three services, an encrypted model, an attested inference.

:func:`run_inference_demo` runs, in this process and on 127.0.0.1 ephemeral ports, the deployment that the quick
start describes, in simulation and with embedded defaults:

1. the attestation service (its own enclave; it accepts simulated evidence and says so in its tokens);
2. the key broker, trusting that attestation service, holding the inference enclave's HPKE seed under a release
   policy that pins the inference enclave's MRENCLAVE (as every replica of a deployment would fetch it);
3. the inference service, whose enclave gets that seed from the key broker after the attestation service
   attested it;
4. a :class:`~enklave.inference.Client` that attests the inference enclave (DCAP over a fresh nonce, a policy
   pinning the MRENCLAVE computed from the packaged enclave code), uploads the onnx package's light ResNet-50
   encrypted with a fresh AES-256-GCM key as the model owner, and sends the key inside the encapsulation;
5. one attested, end-to-end encrypted inference on the input of onnx's backend test, whose output must equal
   plain ONNX Runtime's on the same model and input (and the reference output onnx ships).

Everything started is stopped when the function returns or raises (Ctrl-C included): the servers, then the
enclave processes. Service state goes to a temporary directory; the simulated platform is the one in
``ENKLAVE_HOME`` (provisioned on first use).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from enklave.attestation.policy import EnclavePolicy
from enklave.errors import VerificationError
from enklave.inference._enclave_handle import sign_inference_enclave
from enklave.inference.app import serving
from enklave.inference.client import Attestation, Client
from enklave.inference.model_format import encrypt_model
from enklave.inference.service import InferenceConfig
from enklave.platform.simulated import simulated_root
from enklave.runtime.bundle import load_bundle
from enklave.services._http import serve_in_thread
from enklave.services.attestation.app import create_app as create_attestation_app
from enklave.services.attestation.service import AttestationService, ServiceConfig
from enklave.services.kbs.app import create_app as create_kbs_app
from enklave.services.kbs.client import KbsClient
from enklave.services.kbs.service import Authority, KbsConfig, KeyBrokerService
from enklave.services.storage import SQLiteStorage

__all__ = [
    "INFERENCE_STEP",
    "MODEL_FILE",
    "MODEL_INPUT",
    "MODEL_NAME",
    "MODEL_OUTPUT",
    "SEED_KEY",
    "InferenceDemoResult",
    "StepTime",
    "demo_input",
    "run_inference_demo",
]

MODEL_FILE: Final = Path("onnx") / "backend" / "test" / "data" / "light" / "light_resnet50.onnx"
"""The model, relative to site-packages: ResNet-50 as the onnx package ships it for its backend tests."""
MODEL_NAME: Final = "resnet50"
MODEL_INPUT: Final = "gpu_0/data_0"
MODEL_OUTPUT: Final = "gpu_0/softmax_1"
SEED_KEY: Final = "inference-hpke-seed"
"""The key broker key the inference enclave's HPKE seed comes from (measured into the enclave)."""
_TOP: Final = 5
INFERENCE_STEP: Final = "attested, end-to-end encrypted inference"

_INPUT_SHAPE: Final = (1, 3, 224, 224)
# The enclave runs the same ONNX Runtime build on the same bytes, so the outputs agree to float rounding.
_RTOL: Final = 1e-6
_ATOL: Final = 1e-7
# onnx's reference output was computed elsewhere (another runtime and machine): the tolerance of its tests.
_REFERENCE_RTOL: Final = 1e-3
_REFERENCE_ATOL: Final = 1e-5
_SERVER_START: Final = 30.0


@dataclass(frozen=True, slots=True)
class StepTime:
    """How long one step of the demo took (wall clock, seconds)."""

    step: str
    seconds: float


@dataclass(frozen=True, slots=True)
class InferenceDemoResult:
    """What the inference part of the demo established; every check passed before it was built.

    ``attestation`` is what the client verified (DCAP, fresh nonce, a policy pinning ``expected_mr_enclave``,
    simulated evidence allowed); ``seed_release`` is the key broker's audit record of the HPKE seed's release
    to the inference enclave; ``top`` the five most probable classes (index, probability; ties in index order);
    ``max_abs_diff`` the largest difference from plain ONNX Runtime's output, within ``rtol=1e-6``. The times
    are seconds: ``warm_inference_seconds`` of a second inference, ``plain_seconds`` of a warm run of plain ONNX
    Runtime in this process; ``steps`` ends with the time taken to stop everything.
    """

    home: Path
    urls: dict[str, str]
    expected_mr_enclave: bytes
    attestation: Attestation
    seed_release: dict[str, Any]
    model_sha256: str
    model_size: int
    container_size: int
    top: tuple[tuple[int, float], ...]
    uniform: bool
    max_abs_diff: float
    warm_inference_seconds: float
    plain_seconds: float
    steps: tuple[StepTime, ...]
    kbs_policy: dict[str, Any] | None = None

    @property
    def inference_seconds(self) -> float:
        """The time of the first attested, end-to-end encrypted inference (its step)."""
        return next(step.seconds for step in self.steps if step.step == INFERENCE_STEP)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view; binary values as lowercase hex."""
        identity = self.attestation.describe()
        return {
            "enklave_home": str(self.home),
            "services": dict(self.urls),
            "enclave": {
                "mrenclave": identity["mr_enclave"],
                "mrsigner": identity["mr_signer"],
                "isv_prod_id": identity["isv_prod_id"],
                "isv_svn": identity["isv_svn"],
                "tcb_status": identity["tcb_status"],
                "simulated": identity["simulated"],
                "debug": identity["debug"],
                "attestation": identity["method"],
                "pinned_mrenclave": self.expected_mr_enclave.hex(),
            },
            "hpke_seed": {
                "kbs_key": SEED_KEY,
                "release": dict(self.seed_release),
                # Not the key's release policy: the key broker identity the inference enclave measured and accepts
                # released keys from (its MRSIGNER and product id 2).
                "trusted_key_broker": None if self.kbs_policy is None else dict(self.kbs_policy),
            },
            "model": {
                "name": MODEL_NAME,
                "version": "1",
                "file": MODEL_FILE.as_posix(),
                "sha256": self.model_sha256,
                "size": self.model_size,
                "container_size": self.container_size,
                "key": "owner (AES-256-GCM, fresh, sent inside the encapsulation)",
            },
            "input": {"name": MODEL_INPUT, "shape": list(_INPUT_SHAPE), "datatype": "FP32"},
            "output": MODEL_OUTPUT,
            "top5": [{"class": index, "probability": probability} for index, probability in self.top],
            "uniform": self.uniform,
            "matches_onnxruntime": True,
            "matches_reference_output": True,
            "max_abs_diff": self.max_abs_diff,
            "inference_seconds": self.inference_seconds,
            "warm_inference_seconds": self.warm_inference_seconds,
            "plain_onnxruntime_seconds": self.plain_seconds,
            "steps": [{"step": step.step, "seconds": step.seconds} for step in self.steps],
        }


def demo_input() -> np.ndarray:
    """The deterministic input of onnx's backend test for the light models (``arange / count``, NCHW); the
    package ships the model's output for it."""
    count = int(np.prod(_INPUT_SHAPE))
    return (np.arange(count, dtype=np.float64).reshape(_INPUT_SHAPE) / count).astype(np.float32)


def _model_path() -> Path:
    return Path(onnx.__file__).resolve().parent.parent / MODEL_FILE


def _reference_output() -> np.ndarray:
    path = _model_path().parent / "light_resnet50_output_0.pb"
    return np.asarray(numpy_helper.to_array(onnx.load_tensor(str(path))))


def _plain_onnxruntime(model: bytes, x: np.ndarray) -> tuple[np.ndarray, float]:
    """The same model and input on plain ONNX Runtime in this process: the output and the time of one run."""
    options = ort.SessionOptions()
    # The light models carry an unused initializer that ONNX Runtime warns about; the warning is noise here.
    options.log_severity_level = 3
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    session.run(None, {MODEL_INPUT: x})
    started = time.perf_counter()
    output = session.run([MODEL_OUTPUT], {MODEL_INPUT: x})[0]
    return np.asarray(output), time.perf_counter() - started


def _top(probabilities: np.ndarray) -> tuple[tuple[int, float], ...]:
    row = probabilities.reshape(-1)
    # A stable sort of the negated values keeps ties in index order, so equal outputs give equal lists.
    order = np.argsort(-row, kind="stable")[:_TOP]
    return tuple((int(index), float(row[index])) for index in order)


def _bound_socket(stack: ExitStack) -> tuple[socket.socket, str]:
    """A socket bound to an ephemeral port of 127.0.0.1 (closed with ``stack``) and its base URL."""
    sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    sock.bind(("127.0.0.1", 0))
    return sock, f"http://127.0.0.1:{sock.getsockname()[1]}"


def _storage(stack: ExitStack, path: Path) -> SQLiteStorage:
    """SQLite storage at ``path``, closed with ``stack``."""
    storage = SQLiteStorage(path)
    stack.callback(storage.close)
    return storage


def _seed_release_policy(authority: str, mr_enclave: bytes) -> dict[str, Any]:
    """Release only to a non-debug enclave with this MRENCLAVE, attested by ``authority``. The simulated claim
    is required to be true: this demo's evidence is simulated, and the policy says so instead of ignoring it."""
    return {
        "version": "1.0.0",
        "anyOf": [
            {
                "authority": authority,
                "allOf": [
                    {"claim": "x-ms-sgx-mrenclave", "equals": mr_enclave.hex()},
                    {"claim": "x-ms-sgx-is-debuggable", "equals": False},
                    {"claim": "x-enklave-simulated", "equals": True},
                ],
            }
        ],
    }


class _Clock:
    """Times the steps; ``on_step`` hears of each one as it ends."""

    def __init__(self, on_step: Callable[[str, float], None] | None) -> None:
        self.steps: list[StepTime] = []
        self._on_step = on_step

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        yield
        self.record(name, time.perf_counter() - started)

    def record(self, name: str, seconds: float) -> None:
        self.steps.append(StepTime(name, seconds))
        if self._on_step is not None:
            self._on_step(name, seconds)


def run_inference_demo(
    home: Path, *, on_step: Callable[[str, float], None] | None = None, threads: int = 0
) -> InferenceDemoResult:
    """Run the inference demo (see the module docstring) with ``home`` as ENKLAVE_HOME; stop all it started.

    ``on_step(name, seconds)`` is called as each step ends; ``threads`` sizes ONNX Runtime in the enclave (0: the
    CPU count). Raises :class:`VerificationError` when the enclave's output differs from plain ONNX Runtime's or
    the model's SHA-256 in the enclave is not the uploaded one, the attestation errors when the client does not
    accept the enclave, :class:`TransportError` when a server does not start or a request fails, and what
    starting an enclave raises.
    """
    clock = _Clock(on_step)
    owner_token, api_key, admin_token = (secrets.token_urlsafe(24) for _ in range(3))
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="enklave-demo-")))
        urls: dict[str, str] = {}
        # 1. The attestation service: its URL is the issuer of its tokens, so it is known before it serves.
        with clock.step("attestation service started"):
            sock, urls["attestation"] = _bound_socket(stack)
            maa_storage = _storage(stack, work / "attestation.db")
            maa_config = ServiceConfig(
                data_dir=work / "attestation", base_url=urls["attestation"], mode="sim", home=home,
                allow_simulated=True,
            )  # fmt: skip
            maa = stack.enter_context(AttestationService(maa_config, maa_storage))
            stack.enter_context(
                serve_in_thread(
                    create_attestation_app(maa), sock, name="attestation service", timeout=_SERVER_START
                )
            )
        # 2. The key broker trusts that service's signing keys (fetched once and pinned at start) and holds the
        #    HPKE seed for the MRENCLAVE of the inference enclave, computed here from its packaged code.
        with clock.step("key broker started, HPKE seed created"):
            sock, urls["kbs"] = _bound_socket(stack)
            kbs_storage = _storage(stack, work / "kbs.db")
            authority = Authority(urls["attestation"], jwks_url=f"{urls['attestation']}/certs")
            kbs_config = KbsConfig(
                data_dir=work / "kbs",
                authorities=(authority,),
                admin_token=admin_token,
                mode="sim",
                home=home,
            )
            kbs = stack.enter_context(KeyBrokerService(kbs_config, kbs_storage))
            stack.enter_context(
                serve_in_thread(create_kbs_app(kbs), sock, name="key broker", timeout=_SERVER_START)
            )
            # The inference enclave accepts releases only with quotes of this key broker's enclave (its signer and
            # product), and that identity is measured: it is part of the MRENCLAVE the seed is released to.
            config = InferenceConfig(
                data_dir=work / "inference", mode="sim", home=home, owner_token=owner_token, api_key=api_key,
                attestation_url=urls["attestation"], kbs_url=urls["kbs"], hpke_seed_key=SEED_KEY,
                threads=threads, kbs_mrsigner=bytes(kbs.info.mr_signer).hex(),
                kbs_isv_prod_id=kbs.info.isv_prod_id, kbs_min_isv_svn=kbs.info.isv_svn,
            )  # fmt: skip
            bundle = sign_inference_enclave(
                config.data_dir,
                SEED_KEY,
                kbs_policy=config.kbs_policy(),
                kbs_allow_simulated=config.kbs_simulated("sim"),
            )
            expected = bytes(load_bundle(bundle).mr_enclave)
            broker = stack.enter_context(KbsClient(urls["kbs"], admin_token=admin_token))
            broker.create_key(SEED_KEY, "oct", _seed_release_policy(urls["attestation"], expected))
        # 3. The inference service: its enclave is attested by the attestation service and gets its seed from
        #    the key broker before it serves, as each replica of a deployment would; the key broker's quote for
        #    the release is checked in the enclave.
        with clock.step("inference service started (seed released by the key broker)"):
            running = stack.enter_context(serving(config))
            urls["inference"] = running.url
            seed_release = _seed_release(broker, expected)
        # 4. The client trusts this machine's simulated root and nothing but the expected MRENCLAVE.
        policy = EnclavePolicy(mr_enclave=expected, allow_simulated=True)
        client = stack.enter_context(
            Client(
                running.url,
                policy=policy,
                roots=[simulated_root(home)],
                api_key=api_key,
                owner_token=owner_token,
            )
        )
        with clock.step("client attested the inference enclave"):
            attestation = client.attest()
        with clock.step("model encrypted (fresh AES-256-GCM key)"):
            model = _model_path().read_bytes()
            key = os.urandom(32)
            container = encrypt_model(model, key, name=MODEL_NAME, version=1)
        with clock.step("model uploaded, key sent inside the encryption"):
            uploaded = client.upload_encrypted(container, key=key)
            sha256 = hashlib.sha256(model).hexdigest()
            if not uploaded.loaded or uploaded.sha256 != sha256:
                raise VerificationError("the enclave did not load the uploaded model with its SHA-256")
        # 5. One inference, a second one warm, then the same on plain ONNX Runtime here.
        x = demo_input()
        with clock.step(INFERENCE_STEP):
            output = client.infer(MODEL_NAME, {MODEL_INPUT: x})[MODEL_OUTPUT]
        started = time.perf_counter()
        again = client.infer(MODEL_NAME, {MODEL_INPUT: x})[MODEL_OUTPUT]
        warm_seconds = time.perf_counter() - started
        with clock.step("plain ONNX Runtime on the same model and input"):
            plain, plain_seconds = _plain_onnxruntime(model, x)
        reference = _reference_output()
        max_abs_diff = max(_compare(output, plain, reference), _compare(again, plain, reference))
        stopping = time.perf_counter()
    # Leaving the stack stopped the client, the servers and the enclaves (last started, first stopped).
    clock.record("everything stopped", time.perf_counter() - stopping)
    return InferenceDemoResult(
        home=home, urls=urls, expected_mr_enclave=expected, attestation=attestation, seed_release=seed_release,
        model_sha256=sha256, model_size=len(model), container_size=len(container), top=_top(output),
        uniform=bool(np.ptp(output) == 0), max_abs_diff=max_abs_diff, warm_inference_seconds=warm_seconds,
        plain_seconds=plain_seconds, steps=tuple(clock.steps), kbs_policy=config.kbs_policy(),
    )  # fmt: skip


def _seed_release(broker: KbsClient, mr_enclave: bytes) -> dict[str, Any]:
    """The audit record of the seed's release to ``mr_enclave``; raises VerificationError when there is none."""
    for record in broker.audit_log():
        if (
            record.get("key") == SEED_KEY
            and record.get("outcome") == "released"
            and record.get("mrenclave") == mr_enclave.hex()
        ):
            return {name: record[name] for name in ("outcome", "mrenclave", "iss", "time") if name in record}
    raise VerificationError(
        "the key broker's audit log has no release of the HPKE seed to the inference enclave"
    )


def _compare(output: np.ndarray, plain: np.ndarray, reference: np.ndarray) -> float:
    """Check the enclave's output against plain ONNX Runtime's and onnx's reference; the largest difference."""
    if output.shape != plain.shape or output.dtype != plain.dtype:
        raise VerificationError(
            f"the enclave's output is {output.dtype}{list(output.shape)}, plain ONNX Runtime's "
            f"{plain.dtype}{list(plain.shape)}"
        )
    difference = float(np.max(np.abs(output.astype(np.float64) - plain.astype(np.float64))))
    if not np.allclose(output, plain, rtol=_RTOL, atol=_ATOL):
        raise VerificationError(
            f"the enclave's output differs from plain ONNX Runtime's (max |difference| {difference:.3g})"
        )
    if reference.shape != output.shape or not np.allclose(
        output, reference, rtol=_REFERENCE_RTOL, atol=_REFERENCE_ATOL
    ):
        raise VerificationError(
            "the enclave's output differs from the reference output the onnx package ships"
        )
    return difference
