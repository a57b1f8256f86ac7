"""The confidential inference service end to end: its enclave, host, key release flows and command line.

The attestation service, the key broker and the inference service run in simulation on loopback uvicorn servers,
each with its own enclave process. The client side is built here from ``enklave.channels.ohttp_attested``
(evidence verification, encapsulation), so these tests exercise the service, not the client module.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from enklave import _b64url
from enklave.attestation.collateral import QuoteCollateral
from enklave.attestation.evidence import collateral_request
from enklave.attestation.policy import EnclavePolicy
from enklave.attestation.sources import CollateralSource
from enklave.attestation.tokens import StaticJwksSource, TokenVerifier
from enklave.channels.ohttp_attested import (
    AttestedOhttpClient,
    BhttpRequest,
    BhttpResponse,
    GatewayVerifier,
    KeyConfigEvidence,
    VerifiedKeyConfig,
    key_config_report_data,
)
from enklave.errors import BadDataError, EcallError, PolicyError, UsageError, VerificationError
from enklave.inference._client_upload import envelope_public_jwk, prepare_model
from enklave.inference._enclave_handle import InferenceEnclave, sign_inference_enclave
from enklave.inference._gateway_keys import derive_servers, key_ids
from enklave.inference._model_store import ModelStore
from enklave.inference._vault import ModelVault
from enklave.inference.app import Serving, build_app, serving
from enklave.inference.client import Client
from enklave.inference.credentials import HOST_CREDENTIAL_LABEL, host_credential, owner_credentials
from enklave.inference.model_format import ModelHeader, encrypt_model, read_header
from enklave.inference.protocol import (
    InferInput,
    InferRequest,
    decode_response,
    encode_request,
    error_message,
    parse_header_length,
)
from enklave.inference.repository import ModelRepository
from enklave.inference.router import Router, RouterSettings, token_digest
from enklave.inference.service import InferenceConfig, token_runtime_data
from enklave.platform.simulated import SimulatedCollateralSource, SimulatedPlatform, simulated_root
from enklave.runtime.bundle import load_bundle
from enklave.services.attestation.app import create_app as create_maa_app
from enklave.services.attestation.client import AttestationClient
from enklave.services.attestation.service import AttestationService, ServiceConfig
from enklave.services.kbs import unwrap_released_key, wrap_released_key
from enklave.services.kbs.app import create_app as create_kbs_app
from enklave.services.kbs.client import KbsClient, Release
from enklave.services.kbs.release_evidence import release_report_data
from enklave.services.kbs.service import Authority, KbsConfig, KeyBrokerService
from enklave.services.storage import SQLiteStorage
from enklave.sgx.quote import Quote
from enklave.sgx.report import AttributeFlags, Attributes, ReportBody
from memory_scan import found_in_snapshot, snapshot_memory
from onnx_models import mlp_model, model_bytes
from service_fixtures import TestClient, enklave_home, loopback_socket
from service_fixtures import serving as serve_app

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
OWNER = "owner-token-0123456789abcdef"
# The host is configured with these, never with OWNER: only the enclave gets the token, inside the encryption.
CREDENTIAL, OWNER_SHA256 = owner_credentials(OWNER)
API_KEY = "api-key-0123456789abcdef"
KBS_ADMIN = "kbs-admin-token-0123456789"
RESNET_IN, RESNET_OUT = "gpu_0/data_0", "gpu_0/softmax_1"
# The identity of a "model owner's tool" enclave on the simulated platform, to which the test releases KBS keys.
TOOL = ReportBody.build(mr_enclave=b"\x44" * 32, mr_signer=b"\x55" * 32, isv_prod_id=7, isv_svn=1)


# -- models ----------------------------------------------------------------------------------------------------


def mlp(seed: int = 0) -> bytes:
    """A small MLP with a dynamic batch dimension: x [N, 4] -> y [N, 3] = relu(x W1 + b1) W2."""
    rng = np.random.default_rng(seed)
    w1, b1 = rng.standard_normal((4, 8)).astype(np.float32), rng.standard_normal(8).astype(np.float32)
    w2 = rng.standard_normal((8, 3)).astype(np.float32)
    return mlp_model(w1, b1, w2)


def resnet_input() -> np.ndarray:
    # What onnx's backend test runner feeds the light models; the package ships the output for it.
    shape = (1, 3, 224, 224)
    count = int(np.prod(shape))
    return (np.arange(count).reshape(shape) / count).astype(np.float32)


# -- a client built from the channel pieces ----------------------------------------------------------------------


class _Given(CollateralSource):
    """The collateral that came with the attestation answer (its signatures still chain to the trusted root)."""

    def __init__(self, collateral: QuoteCollateral) -> None:
        self._collateral = collateral

    def fetch(self, fmspc: bytes, ca: str) -> QuoteCollateral:
        return self._collateral


def attest(url: str, policy: EnclavePolicy) -> tuple[VerifiedKeyConfig, dict[str, Any], bytes]:
    nonce = os.urandom(32)
    answer = httpx.get(f"{url}/v1/attestation", params={"nonce": _b64url.encode(nonce)}, timeout=30)
    assert answer.status_code == 200, answer.text
    document = answer.json()
    collateral = QuoteCollateral.from_json(json.dumps(document["collateral"]))
    verifier = GatewayVerifier(collateral_source=_Given(collateral), policy=policy, roots=[simulated_root()])
    return verifier.verify(_b64url.decode(document["evidence"]), nonce=nonce), document, nonce


@dataclass
class Inner:
    """Sends Binary HTTP requests to the service's enclave through /v1/gateway."""

    url: str
    client: AttestedOhttpClient

    def send(self, request: BhttpRequest, *, tamper: bool = False) -> BhttpResponse:
        sealed = self.client.encapsulate(request)
        answer = httpx.post(
            f"{self.url}/v1/gateway",
            content=sealed.message,
            headers={"content-type": "message/ohttp-req"},
            timeout=60,
        )
        assert answer.status_code == 200, answer.text
        content = answer.content
        if tamper:
            content = content[:-1] + bytes([content[-1] ^ 1])
        return sealed.open(content)

    def call(self, method: str, path: str, *, token: str | None = API_KEY, body: bytes = b"", **headers: str):
        fields = tuple(headers.items())
        if token is not None:
            fields += (("authorization", f"Bearer {token}"),)
        return self.send(BhttpRequest(method, path=path, headers=fields, content=body))

    def infer(
        self, model: str, inputs: dict[str, np.ndarray], *, binary: bool = True
    ) -> dict[str, np.ndarray]:
        request = InferRequest(
            inputs=tuple(InferInput(name, array) for name, array in inputs.items()), binary_outputs=binary
        )
        body, headers = encode_request(request, binary=binary)
        answer = self.call("POST", f"/v2/models/{model}/infer", body=body, **headers)
        assert answer.status == 200, answer.content
        length = parse_header_length(answer.header("inference-header-content-length"))
        return decode_response(answer.content, answer.header("content-type"), length).arrays()


def owner_headers() -> dict[str, str]:
    return {"authorization": f"Bearer {CREDENTIAL}"}


def upload(url: str, container: bytes, name: str, version: str = "1") -> httpx.Response:
    return httpx.put(f"{url}/v1/models/{name}/versions/{version}", content=container, headers=owner_headers())


def policy_for(service: Serving, **extra: Any) -> EnclavePolicy:
    return EnclavePolicy(mr_enclave=bytes(service.service.info.mr_enclave), allow_simulated=True, **extra)


# -- the services ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield from enklave_home(tmp_path_factory, "inference-home")


@pytest.fixture(scope="module")
def maa_url(home: Path) -> Iterator[str]:
    sock = loopback_socket()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    storage = SQLiteStorage(home / "maa.db")
    config = ServiceConfig(data_dir=home / "maa", base_url=url, mode="sim", home=home, allow_simulated=True)
    with AttestationService(config, storage) as service, serve_app(create_maa_app(service), "maa", sock=sock):
        yield url
    storage.close()
    sock.close()


@pytest.fixture(scope="module")
def kbs_service(home: Path, maa_url: str) -> Iterator[tuple[KeyBrokerService, str]]:
    storage = SQLiteStorage(home / "kbs.db")
    config = KbsConfig(
        data_dir=home / "kbs",
        authorities=(Authority(maa_url, jwks_url=f"{maa_url}/certs"),),
        admin_token=KBS_ADMIN,
        mode="sim",
        home=home,
    )
    with KeyBrokerService(config, storage) as service, serve_app(create_kbs_app(service), "kbs") as url:
        yield service, url
    storage.close()


@pytest.fixture(scope="module")
def kbs_url(kbs_service: tuple[KeyBrokerService, str]) -> str:
    return kbs_service[1]


@pytest.fixture(scope="module")
def kbs_identity(kbs_service: tuple[KeyBrokerService, str]) -> dict[str, Any]:
    """The inference configuration naming the key broker enclave whose release quotes are accepted."""
    info = kbs_service[0].info
    return {"kbs_mrsigner": bytes(info.mr_signer).hex(), "kbs_isv_prod_id": info.isv_prod_id}


def service_config(home: Path, name: str, **options: Any) -> InferenceConfig:
    defaults: dict[str, Any] = {
        "mode": "sim", "home": home, "owner_credential": CREDENTIAL, "owner_token_sha256": OWNER_SHA256,
        "api_key": API_KEY, "threads": 1,
        "max_batch": 8, "batch_delay_ms": 50.0, "max_request_bytes": 8 << 20, "max_model_bytes": 8 << 20,
        "max_total_bytes": 32 << 20,
    }  # fmt: skip
    return InferenceConfig(data_dir=home / name, **{**defaults, **options})


@pytest.fixture(scope="module")
def service(home: Path, maa_url: str, kbs_url: str, kbs_identity: dict[str, Any]) -> Iterator[Serving]:
    config = service_config(home, "inference", attestation_url=maa_url, kbs_url=kbs_url, **kbs_identity)
    with serving(config) as running:
        yield running


@pytest.fixture(scope="module")
def inner(service: Serving) -> Inner:
    verified, _, _ = attest(service.url, policy_for(service))
    return Inner(service.url, AttestedOhttpClient(verified, max_message_size=64 << 20))


@pytest.fixture(scope="module")
def resnet(service: Serving, inner: Inner) -> bytes:
    model = (LIGHT / "light_resnet50.onnx").read_bytes()
    key = os.urandom(32)
    answer = upload(service.url, encrypt_model(model, key, name="resnet", version=1), "resnet")
    assert answer.status_code == 202, answer.text
    assert answer.json()["status"] == "waiting"
    loaded = inner.call("PUT", "/v2/models/resnet/versions/1/key", token=OWNER, body=key)
    assert loaded.status == 200, loaded.content
    assert json.loads(loaded.content)["sha256"] == hashlib.sha256(model).hexdigest()
    return model


@pytest.fixture(scope="module")
def small(service: Serving, inner: Inner) -> bytes:
    model = mlp(1)
    key = os.urandom(32)
    # The key first this time: the model loads as soon as it arrives.
    early = inner.call("PUT", "/v2/models/mlp/versions/1/key", token=OWNER, body=key)
    assert early.status == 202, early.content
    answer = upload(service.url, encrypt_model(model, key, name="mlp", version=1), "mlp")
    assert answer.status_code == 201, answer.text
    return model


# -- attestation -------------------------------------------------------------------------------------------------


def test_attestation_binds_the_key_configuration_and_the_nonce(service: Serving, maa_url: str) -> None:
    verified, document, nonce = attest(service.url, policy_for(service))
    assert verified.nonce == nonce
    assert verified.quote.simulated
    evidence = KeyConfigEvidence.from_bytes(_b64url.decode(document["evidence"]))
    # The token of the attestation service vouches for the same quote and carries the binding's preimage.
    jwks = httpx.get(f"{maa_url}/certs").json()
    claims = TokenVerifier(maa_url, StaticJwksSource(jwks)).verify(document["token"]).claims
    assert claims["x-ms-sgx-mrenclave"] == bytes(service.service.info.mr_enclave).hex()
    runtime = token_runtime_data(evidence.key_configs, nonce)
    assert _b64url.decode(claims["x-ms-sgx-ehd"]) == runtime
    assert claims["x-ms-sgx-report-data"] == (hashlib.sha256(runtime).digest() + bytes(32)).hex()
    # The published configuration is what /.well-known/ohttp-gateway serves, and it stays the same.
    keys = httpx.get(f"{service.url}/.well-known/ohttp-gateway")
    assert keys.headers["content-type"] == "application/ohttp-keys"
    assert keys.content == evidence.key_configs
    unbound = httpx.get(f"{service.url}/v1/attestation").json()
    assert KeyConfigEvidence.from_bytes(_b64url.decode(unbound["evidence"])).nonce == b""


def test_a_client_refuses_another_enclave_a_debug_enclave_and_simulation(
    service: Serving, home: Path
) -> None:
    with pytest.raises(PolicyError) as info:
        attest(service.url, EnclavePolicy(mr_enclave=b"\x77" * 32, allow_simulated=True))
    assert info.value.field == "mr_enclave"
    with pytest.raises(PolicyError) as info:
        attest(service.url, EnclavePolicy(mr_enclave=bytes(service.service.info.mr_enclave)))
    assert info.value.field == "simulated"
    # A debug build of the same enclave: evidence for the same key configuration from a debug identity.
    flags = AttributeFlags.INIT | AttributeFlags.MODE64BIT | AttributeFlags.DEBUG
    info_ = service.service.info
    debug = SimulatedPlatform.launch(
        ReportBody.build(
            mr_enclave=bytes(info_.mr_enclave), mr_signer=bytes(info_.mr_signer), isv_prod_id=3, isv_svn=1,
            attributes=Attributes(flags, 3),
        ),
        home=home,
    )  # fmt: skip
    configs = service.service.key_configs()
    forged = KeyConfigEvidence(configs, debug.get_quote(key_config_report_data(configs, b"n")), b"n")
    _, document, _ = attest(service.url, policy_for(service))
    collateral = QuoteCollateral.from_json(json.dumps(document["collateral"]))
    verifier = GatewayVerifier(
        collateral_source=_Given(collateral), policy=policy_for(service), roots=[simulated_root()]
    )
    with pytest.raises(PolicyError) as info:
        verifier.verify(forged.to_bytes(), nonce=b"n")
    assert info.value.field == "debug"


# -- inference ---------------------------------------------------------------------------------------------------


def test_inference_equals_onnxruntime_and_the_shipped_reference(inner: Inner, resnet: bytes) -> None:
    x = resnet_input()
    plain = ort.InferenceSession(resnet, providers=["CPUExecutionProvider"]).run(None, {RESNET_IN: x})[0]
    reference = numpy_helper.to_array(onnx.load_tensor(str(LIGHT / "light_resnet50_output_0.pb")))
    for binary in (True, False):
        result = inner.infer("resnet", {RESNET_IN: x}, binary=binary)[RESNET_OUT]
        np.testing.assert_allclose(result, plain, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(result, reference, rtol=1e-3, atol=1e-5)
    metadata = json.loads(inner.call("GET", "/v2/models/resnet").content)
    assert metadata["parameters"]["sha256"] == hashlib.sha256(resnet).hexdigest()
    assert metadata["inputs"] == [{"name": RESNET_IN, "datatype": "FP32", "shape": [1, 3, 224, 224]}]
    listing = json.loads(inner.call("GET", "/v2/models").content)
    assert {"resnet"} <= {entry["name"] for entry in listing["models"]}


def wide(seed: int) -> bytes:
    """A model with a batch dimension that takes milliseconds a call: x [N, 1024] -> y [N, 16], sixty-four
    layers sharing one 1024 x 1024 weight matrix, so that concurrent calls overlap in the enclave."""
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((1024, 1024)) / 32).astype(np.float32)
    w2 = (rng.standard_normal((1024, 16)) / 32).astype(np.float32)
    nodes, last = [], "x"
    for layer in range(64):
        nodes += [
            helper.make_node("MatMul", [last, "w1"], [f"m{layer}"]),
            helper.make_node("Relu", [f"m{layer}"], [f"r{layer}"]),
        ]
        last = f"r{layer}"
    graph = helper.make_graph(
        [*nodes, helper.make_node("MatMul", [last, "w2"], ["y"])],
        "wide",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1024])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 16])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    return model_bytes(graph)


def test_concurrent_requests_are_batched_and_answered_exactly(service: Serving, inner: Inner) -> None:
    model, key = wide(4), os.urandom(32)
    assert inner.call("PUT", "/v2/models/wide/versions/1/key", token=OWNER, body=key).status == 202
    assert upload(service.url, encrypt_model(model, key, name="wide", version=1), "wide").status_code == 201
    rng = np.random.default_rng(3)
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])

    def merged() -> int:
        stats = httpx.get(f"{service.url}/metrics").text
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in stats.splitlines()
            if line.startswith("enklave_inference_batches_total{") and 'size="1"' not in line
        )

    # Concurrent callers: each gets exactly its own rows back, and some runs merged several requests.
    for _ in range(5):
        inputs = [rng.standard_normal((1, 1024)).astype(np.float32) for _ in range(24)]
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda x: inner.infer("wide", {"x": x})["y"], inputs))
        for x, y in zip(inputs, results, strict=True):
            np.testing.assert_allclose(y, session.run(None, {"x": x})[0], rtol=1e-4, atol=1e-5)
        if merged() > 0:
            break
    assert merged() > 0
    metrics = httpx.get(f"{service.url}/metrics").text
    assert 'enklave_inference_http_requests_total{method="POST",route="/v1/gateway",status="200"}' in metrics


def test_inference_needs_the_api_key_and_keys_need_the_owner(inner: Inner, small: bytes) -> None:
    body = json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 1, 1, 1]}]})
    assert inner.call("POST", "/v2/models/mlp/infer", token=None, body=body.encode()).status == 401
    assert (
        inner.call("POST", "/v2/models/mlp/infer", token="wrong-key-0123456789", body=body.encode()).status
        == 403
    )
    assert inner.call("POST", "/v2/models/mlp/infer", token=OWNER, body=body.encode()).status == 200
    assert inner.call("GET", "/v2/models", token=None).status == 401
    # The API key does not set model keys; the owner's key for a loaded model that it does not open is refused.
    assert inner.call("PUT", "/v2/models/mlp/versions/1/key", body=bytes(32)).status == 403
    # Nor does the host credential: what the host knows of the owner does not make it the owner in here.
    assert inner.call("PUT", "/v2/models/mlp/versions/1/key", token=CREDENTIAL, body=bytes(32)).status == 403
    assert inner.call("GET", "/v2/health/ready", token=None).status == 200


def test_bad_inner_requests_get_encrypted_4xx_and_the_enclave_keeps_serving(
    inner: Inner, small: bytes
) -> None:
    def infer(body: bytes, **headers: str) -> BhttpResponse:
        return inner.call("POST", "/v2/models/mlp/infer", body=body, **headers)

    good = {"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1.0, 2.0, 3.0, 4.0]}
    cases = [
        (infer(b"{not json"), 400),
        (infer(json.dumps({"inputs": [{**good, "shape": [2, 4]}]}).encode()), 400),
        (infer(json.dumps({"inputs": [{**good, "datatype": "FP64"}]}).encode()), 400),
        (infer(json.dumps({"inputs": [{**good, "name": "z"}]}).encode()), 400),
        (infer(json.dumps({"inputs": [{**good, "shape": [-1, 4]}]}).encode()), 400),
        (infer(json.dumps({"inputs": [good], "outputs": [{"name": "nope"}]}).encode()), 400),
        (infer(b"{}", **{"inference-header-content-length": "99"}), 400),
        (infer(bytes((8 << 20) + 1)), 413),
        (inner.call("POST", "/v2/models/absent/infer", body=json.dumps({"inputs": [good]}).encode()), 404),
        (inner.call("GET", "/v2/models/mlp/versions/7"), 404),
        (inner.call("GET", "/v2/models/mlp/infer"), 405),
        (inner.call("GET", "/elsewhere"), 404),
        (inner.call("PUT", "/v2/models/mlp/versions/1/key", token=OWNER, body=b"short"), 400),
    ]
    for answer, status in cases:
        assert answer.status == status, (status, answer.content)
        assert error_message(answer.content), answer.content
    assert inner.infer("mlp", {"x": np.ones((2, 4), np.float32)})["y"].shape == (2, 3)


def test_a_tampered_response_does_not_open(inner: Inner) -> None:
    with pytest.raises(VerificationError):
        inner.send(BhttpRequest("GET", path="/v2/health/live"), tamper=True)


# -- the host's own API ------------------------------------------------------------------------------------------


def test_bad_host_requests_get_json_4xx_and_the_service_keeps_serving(service: Serving, small: bytes) -> None:
    url = service.url
    container = encrypt_model(mlp(2), os.urandom(32), name="other", version=1)
    ohttp = {"content-type": "message/ohttp-req"}
    with httpx.Client(base_url=url, timeout=30) as http:
        cases = [
            (http.put("/v1/models/other/versions/1", content=container), 401),
            (
                http.put(
                    "/v1/models/other/versions/1",
                    content=container,
                    headers={"authorization": "Bearer wrong-token-0123456789"},
                ),
                401,
            ),
            # The owner token itself is not the host's credential (and a client never sends it here).
            (
                http.put(
                    "/v1/models/other/versions/1",
                    content=container,
                    headers={"authorization": f"Bearer {OWNER}"},
                ),
                401,
            ),
            (
                http.delete("/v1/models/mlp/versions/1", headers={"authorization": f"Bearer {CREDENTIAL}x"}),
                401,
            ),
            (
                http.put("/v1/models/other/versions/1", content=b"not a container", headers=owner_headers()),
                400,
            ),
            (http.put("/v1/models/other/versions/2", content=container, headers=owner_headers()), 400),
            (
                http.put(
                    "/v1/models/mlp/versions/1",
                    content=encrypt_model(mlp(1), os.urandom(32), name="mlp", version=1),
                    headers=owner_headers(),
                ),
                409,
            ),
            (http.put("/v1/models/..bad/versions/1", content=container, headers=owner_headers()), 400),
            (
                http.put(
                    "/v1/models/big/versions/1", content=bytes((8 << 20) + 8192), headers=owner_headers()
                ),
                413,
            ),
            (http.delete("/v1/models/absent/versions/1", headers=owner_headers()), 404),
            (http.get("/v1/models"), 401),
            (http.post("/v1/gateway", content=bytes((8 << 20) + 8192), headers=ohttp), 413),
            (http.post("/v1/gateway", content=b"\x01\x00", headers=ohttp), 400),
            (http.post("/v1/gateway", content=b"", headers=ohttp), 400),
            (http.post("/v1/gateway", content=b"x", headers={"content-type": "text/plain"}), 415),
            (http.get("/v1/attestation", params={"nonce": "not base64!"}), 400),
            (http.get("/v1/attestation", params={"nonce": "A" * 90}), 400),
            (http.get("/v1/gateway"), 405),
            (http.get("/elsewhere"), 404),
        ]
        for answer, status in cases:
            assert answer.status_code == status, (status, answer.text)
            assert set(answer.json()["error"]) == {"code", "message"}
            assert (answer.headers.get("www-authenticate") is not None) == (status == 401)
        # A request for a key id the gateway does not have: the client's cue to attest again.
        stale = http.post("/v1/gateway", content=bytes([0]) + bytes(80), headers=ohttp)
        assert stale.status_code == 400 and stale.json()["error"]["code"] == "UnknownKeyId"
        assert http.get("/healthz").status_code == 200
        assert http.get("/readyz").json() == {"status": "ready"}
        listing = http.get("/v1/models", headers=owner_headers()).json()["models"]
        assert {(m["name"], m["status"]) for m in listing} >= {("mlp", "loaded")}
        metrics = http.get("/metrics").text
        assert (
            'enklave_inference_http_errors_total{code="Unauthorized",route="/v1/models/{name}/versions/{version}"}'
            in metrics
        )
        assert "enklave_inference_enclave_up 1.0" in metrics


def test_upload_list_delete(service: Serving, inner: Inner) -> None:
    key = os.urandom(32)
    model = mlp(5)
    container = encrypt_model(model, key, name="gone", version=3)
    assert upload(service.url, container, "gone", "3").status_code == 202
    loaded = inner.call("PUT", "/v2/models/gone/versions/3/key", token=OWNER, body=json.dumps(
        {"key": _b64url.encode(key)}).encode(), **{"content-type": "application/json"})  # fmt: skip
    assert loaded.status == 200
    wrong = inner.call("PUT", "/v2/models/gone/versions/3/key", token=OWNER, body=os.urandom(32))
    assert wrong.status == 409  # The model is loaded: its proven key stays.
    again = inner.call("PUT", "/v2/models/gone/versions/3/key", token=OWNER, body=key)
    assert again.status == 200 and json.loads(again.content)["status"] == "loaded"
    deleted = httpx.delete(f"{service.url}/v1/models/gone/versions/3", headers=owner_headers())
    assert deleted.status_code == 200
    assert inner.call("GET", "/v2/models/gone").status == 404
    # The waiting model is checked against the owner's key when it arrives: a wrong key is refused and not kept.
    assert upload(service.url, container, "gone", "3").status_code == 202
    # The host's credential does not deliver keys, not even the right one: only the owner token does.
    refused = inner.call("PUT", "/v2/models/gone/versions/3/key", token=CREDENTIAL, body=key)
    assert refused.status == 403 and b"not valid" in refused.content
    listing = httpx.get(f"{service.url}/v1/models", headers=owner_headers()).json()["models"]
    assert ("gone", "waiting") in {(entry["name"], entry["status"]) for entry in listing}
    assert inner.call("PUT", "/v2/models/gone/versions/3/key", token=OWNER, body=os.urandom(32)).status == 400
    assert inner.call("PUT", "/v2/models/gone/versions/3/key", token=OWNER, body=key).status == 200
    assert (
        httpx.delete(f"{service.url}/v1/models/gone/versions/3", headers=owner_headers()).status_code == 200
    )


# -- key release -------------------------------------------------------------------------------------------------


def _release_policy(maa_url: str, *mrenclaves: bytes) -> dict[str, Any]:
    return {
        "version": "1.0.0",
        "anyOf": [
            {
                "authority": maa_url,
                "allOf": [
                    {"anyOf": [{"claim": "x-ms-sgx-mrenclave", "equals": m.hex()} for m in mrenclaves]},
                    {"claim": "x-enklave-simulated", "equals": True},
                ],
            }
        ],
    }


def _released_to_tool(home: Path, maa_url: str, kbs: KbsClient, name: str) -> bytes:
    """The key as the model owner's own (attested) tool gets it, to encrypt the model with."""
    platform = SimulatedPlatform.launch(TOOL, home=home)
    private = ec.generate_private_key(ec.SECP256R1())
    numbers = private.public_key().public_numbers()
    public = {"kty": "EC", "crv": "P-256", "x": _b64url.encode(numbers.x.to_bytes(32, "big")),
              "y": _b64url.encode(numbers.y.to_bytes(32, "big"))}  # fmt: skip
    runtime = {"keys": [public]}
    data = json.dumps(runtime, separators=(",", ":")).encode()
    with AttestationClient(maa_url) as maa:
        token = maa.attest_sgx(platform.get_quote(hashlib.sha256(data).digest()), runtime_json=runtime)
    wrapped = kbs.release(name, token)
    d = _b64url.encode(private.private_numbers().private_value.to_bytes(32, "big"))
    return unwrap_released_key(wrapped, {**public, "d": d})


def test_model_keys_come_from_the_key_broker_only_to_the_right_enclave(
    service: Serving, inner: Inner, home: Path, maa_url: str, kbs_url: str
) -> None:
    mrenclave = bytes(service.service.info.mr_enclave)
    with KbsClient(kbs_url, admin_token=KBS_ADMIN) as kbs:
        kbs.create_key("mlp-key", "oct", _release_policy(maa_url, mrenclave, TOOL.mr_enclave))
        kbs.create_key("elsewhere-key", "oct", _release_policy(maa_url, b"\x66" * 32, TOOL.mr_enclave))
        kbs.create_key("inference-only", "oct", _release_policy(maa_url, mrenclave))
        good = _released_to_tool(home, maa_url, kbs, "mlp-key")
        other = _released_to_tool(home, maa_url, kbs, "elsewhere-key")
        # Another enclave (the tool) asking for a key only the inference enclave may have: refused.
        with pytest.raises(PolicyError):
            _released_to_tool(home, maa_url, kbs, "inference-only")
        audit = kbs.audit_log()
    model = mlp(7)
    loaded = upload(
        service.url, encrypt_model(model, good, name="brokered", version=1, key_id="kbs:mlp-key"), "brokered"
    )
    assert loaded.status_code == 201, loaded.text
    assert loaded.json()["sha256"] == hashlib.sha256(model).hexdigest()
    x = np.ones((1, 4), np.float32)
    expected = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(inner.infer("brokered", {"x": x})["y"], expected, rtol=1e-5)
    # A key whose policy names another enclave is not released to this one: the model waits, with the reason.
    waiting = upload(service.url, encrypt_model(model, other, name="stranded", version=1,
                                                key_id="kbs:elsewhere-key"), "stranded")  # fmt: skip
    assert waiting.status_code == 202, waiting.text
    assert inner.call("GET", "/v2/models/stranded").status == 404
    with KbsClient(kbs_url, admin_token=KBS_ADMIN) as kbs:
        refusals = [r for r in kbs.audit_log(after=audit[-1]["seq"]) if r.get("outcome") == "refused"]
    assert any(r.get("key") == "elsewhere-key" and r.get("mrenclave") == mrenclave.hex() for r in refusals), (
        refusals
    )


def _swap_header(blob: bytes, header: ModelHeader) -> bytes:
    """The same nonce, ciphertext and tag behind another header."""
    length = int.from_bytes(blob[8:12], "big")
    raw = header.to_bytes()
    return blob[:8] + len(raw).to_bytes(4, "big") + raw + blob[12 + length :]


def test_envelope_keys_let_an_owner_with_only_the_public_key_upload(
    service: Serving, inner: Inner, home: Path, maa_url: str, kbs_url: str
) -> None:
    mrenclave = bytes(service.service.info.mr_enclave)
    with KbsClient(kbs_url, admin_token=KBS_ADMIN) as kbs:
        kbs.create_key("envelope-rsa", "RSA", _release_policy(maa_url, mrenclave), key_size=3072)
        kbs.create_key("envelope-ec", "EC", _release_policy(maa_url, mrenclave), crv="P-256")
        kbs.create_key("envelope-elsewhere", "EC", _release_policy(maa_url, b"\x66" * 32), crv="P-256")
        views = {name: kbs.get_key(name) for name in ("envelope-rsa", "envelope-ec", "envelope-elsewhere")}
        audit = kbs.audit_log()
    # What the owner holds: public keys only.
    assert all(not {"d", "p", "q"} & set(view["key"]) for view in views.values())
    x = np.ones((2, 4), np.float32)

    def expected(model: bytes) -> Any:
        return ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]

    # RSA-3072, through the client with the key view: the enclave gets the private key from the broker and loads.
    model = mlp(21)
    with Client(
        service.url, policy=policy_for(service), roots=[simulated_root()], owner_token=OWNER
    ) as client:
        result = client.upload_model(
            model, name="enveloped", version=1, kbs_key="envelope-rsa", kbs_public_jwk=views["envelope-rsa"]
        )
    assert result.key_id == "kbs:envelope-rsa" and result.key is not None
    assert result.answer["status"] == "loaded", result.answer
    assert result.answer["sha256"] == hashlib.sha256(model).hexdigest()
    np.testing.assert_allclose(inner.infer("enveloped", {"x": x})["y"], expected(model), rtol=1e-5)
    # P-256 (HPKE), with the bare public JWK and a plain upload.
    model = mlp(22)
    prepared = prepare_model(model, name="enveloped-ec", version=1, kbs_key="envelope-ec",
                             kbs_public_jwk=views["envelope-ec"]["key"])  # fmt: skip
    header = read_header(prepared.blob)
    assert header.wrapped_key is not None and header.wrapped_key.startswith("hpke.")
    loaded = upload(service.url, prepared.blob, "enveloped-ec")
    assert loaded.status_code == 201, loaded.text
    np.testing.assert_allclose(inner.infer("enveloped-ec", {"x": x})["y"], expected(model), rtol=1e-5)
    # The same model key wrapped again into the header: the broker releases, the key unwraps, but the header is
    # associated data, so the container does not open and the model waits.
    fresh = prepare_model(mlp(23), name="tampered", version=1, kbs_key="envelope-ec",
                          kbs_public_jwk=views["envelope-ec"])  # fmt: skip
    assert fresh.key is not None
    original = read_header(fresh.blob)
    rewrapped = ModelHeader(original.name, original.version, original.key_id, original.size,
                            wrap_released_key(fresh.key, envelope_public_jwk(views["envelope-ec"])))  # fmt: skip
    tampered = upload(service.url, _swap_header(fresh.blob, rewrapped), "tampered")
    assert tampered.status_code == 202, tampered.text
    assert "does not open" in tampered.json()["reason"]
    assert inner.call("GET", "/v2/models/tampered").status == 404
    # An envelope key whose release policy names another enclave: never released here, the model waits.
    stranded = prepare_model(mlp(24), name="enveloped-far", version=1, kbs_key="envelope-elsewhere",
                             kbs_public_jwk=views["envelope-elsewhere"])  # fmt: skip
    waiting = upload(service.url, stranded.blob, "enveloped-far")
    assert waiting.status_code == 202, waiting.text
    assert inner.call("GET", "/v2/models/enveloped-far").status == 404
    listing = {entry["name"]: entry for entry in service.service.enclave.models()["waiting"]}
    assert listing["enveloped-far"]["key_id"] == "kbs:envelope-elsewhere"
    assert "envelope-elsewhere" in service.service.enclave.models()["missing_envelope_keys"]
    with KbsClient(kbs_url, admin_token=KBS_ADMIN) as kbs:
        records = kbs.audit_log(after=audit[-1]["seq"])
    assert any(r.get("key") == "envelope-elsewhere" and r.get("outcome") == "refused" for r in records), (
        records
    )
    assert {r.get("key") for r in records if r.get("outcome") != "refused"} >= {"envelope-rsa", "envelope-ec"}
    for name in ("enveloped", "enveloped-ec", "tampered", "enveloped-far"):
        assert (
            httpx.delete(f"{service.url}/v1/models/{name}/versions/1", headers=owner_headers()).status_code
            == 200
        )


def test_an_envelope_model_key_is_sealed_and_survives_a_restart_without_the_broker(
    home: Path, maa_url: str, kbs_url: str, kbs_identity: dict[str, Any]
) -> None:
    config = service_config(
        home, "envelope-restart", attestation_url=maa_url, kbs_url=kbs_url, **kbs_identity
    )
    model = mlp(25)
    with serving(config) as first:
        mrenclave = bytes(first.service.info.mr_enclave)
        with KbsClient(kbs_url, admin_token=KBS_ADMIN) as kbs:
            kbs.create_key("envelope-kept", "EC", _release_policy(maa_url, mrenclave), crv="P-256")
            public = kbs.get_key("envelope-kept")
        prepared = prepare_model(
            model, name="sealed", version=1, kbs_key="envelope-kept", kbs_public_jwk=public
        )
        assert upload(first.url, prepared.blob, "sealed").status_code == 201
        with KbsClient(kbs_url, admin_token=KBS_ADMIN) as kbs:
            last = kbs.audit_log()[-1]["seq"]
    with serving(config) as second:
        models = second.service.enclave.models()
        assert [(m["name"], m["version"]) for m in models["loaded"]] == [("sealed", "1")]
        assert models["missing_envelope_keys"] == []
    with KbsClient(kbs_url, admin_token=KBS_ADMIN) as kbs:
        # No release was needed: the unwrapped model key came back from the sealed state.
        assert [r for r in kbs.audit_log(after=last) if r.get("key") == "envelope-kept"] == []


def _seed_config(
    home: Path, name: str, maa_url: str, kbs_url: str, identity: dict[str, Any], seed: str = "gateway-seed"
) -> InferenceConfig:
    return service_config(
        home, name, attestation_url=maa_url, kbs_url=kbs_url, hpke_seed_key=seed, **identity
    )


def _seed_mrenclave(config: InferenceConfig) -> bytes:
    # The code and the measured settings (the seed's key name, the key broker's identity): the same for every
    # replica, whoever signs it.
    bundle = sign_inference_enclave(
        config.data_dir, config.hpke_seed_key, kbs_policy=config.kbs_policy(), kbs_allow_simulated=True
    )
    return bytes(load_bundle(bundle).mr_enclave)


def test_replicas_share_the_key_configuration_from_the_key_broker(
    home: Path, maa_url: str, kbs_url: str, kbs_identity: dict[str, Any]
) -> None:
    first = _seed_config(home, "replica-a", maa_url, kbs_url, kbs_identity)
    # The policy pins the MRENCLAVE of the enclave that takes its seed from the broker.
    mrenclave = _seed_mrenclave(first)
    with KbsClient(kbs_url, admin_token=KBS_ADMIN) as kbs:
        kbs.create_key("gateway-seed", "oct", _release_policy(maa_url, bytes(mrenclave)))
    second = _seed_config(home, "replica-b", maa_url, kbs_url, kbs_identity)
    with serving(first) as a, serving(second) as b:
        assert a.service.key_configs() == b.service.key_configs()
        assert bytes(a.service.info.mr_enclave) == bytes(b.service.info.mr_enclave) == bytes(mrenclave)
        verified, _, _ = attest(a.url, policy_for(a))
        # A request attested at one replica is answered by the other.
        answer = Inner(b.url, AttestedOhttpClient(verified, max_message_size=64 << 20)).call(
            "GET", "/v2/health/ready"
        )
        assert answer.status == 200


def test_the_enclave_accepts_only_releases_the_key_broker_enclave_vouches_for(
    home: Path, maa_url: str, kbs_url: str, kbs_identity: dict[str, Any], tmp_path: Path
) -> None:
    config = _seed_config(home, "forged", maa_url, kbs_url, kbs_identity, seed="forged-seed")
    mrenclave = _seed_mrenclave(config)
    with KbsClient(kbs_url, admin_token=KBS_ADMIN) as admin:
        admin.create_key("forged-seed", "oct", _release_policy(maa_url, mrenclave))
    bundle = sign_inference_enclave(
        config.data_dir, "forged-seed", kbs_policy=config.kbs_policy(), kbs_allow_simulated=True
    )
    storage = SQLiteStorage(tmp_path / "forged.db")
    handle = InferenceEnclave(bundle, storage, mode="sim", home=home, timeout=60)
    handle.start(config.enclave_settings())
    source = SimulatedCollateralSource(home)

    def collateral(quote: bytes) -> str:
        wanted = collateral_request(Quote.from_bytes(quote))
        return source.fetch(wanted.fmspc, wanted.ca).to_json()

    def requested() -> dict[str, Any]:
        # A fresh key pair in the enclave, and its public half as the host sees it.
        answer = handle.running.ecall.release_request("hpke-seed", "forged-seed")
        return {"runtime": json.loads(answer["runtime"]), "quote": answer["quote"]}

    def released(request: dict[str, Any]) -> Release:
        with AttestationClient(maa_url) as maa, KbsClient(kbs_url) as kbs:
            token = maa.attest_sgx(request["quote"], runtime_json=request["runtime"])
            return kbs.release_with_evidence("forged-seed", token)

    def refused(error: str, wrapped: str, quote: bytes, collateral_json: str | None = None) -> None:
        with pytest.raises(EcallError) as caught:
            handle.running.ecall.accept_released(
                "hpke-seed", "forged-seed", wrapped, quote, collateral_json or collateral(quote)
            )
        assert caught.value.type_name == error, caught.value

    try:
        chosen = b"\x42" * 32
        # 1. The host wraps a seed of its own choosing to the enclave's key, with a genuine release's quote.
        first = requested()
        genuine = released(first)
        refused("BindingError", wrap_released_key(chosen, first["runtime"]["keys"][0]), genuine.quote)
        # 2. The host replays that genuine release (value and quote) to a later key pair of the enclave.
        requested()
        refused("BindingError", genuine.value, genuine.quote)
        # 3. A quote that binds the forged release correctly, from an enclave that is not the key broker.
        third = requested()
        forged = wrap_released_key(chosen, third["runtime"]["keys"][0])
        impostor = SimulatedPlatform.launch(TOOL, home=home)
        fake = impostor.get_quote(release_report_data("forged-seed", third["runtime"]["keys"][0], forged))
        refused("PolicyError", forged, fake)
        # 4. Bytes that are no quote, and a genuine quote with collateral that is not collateral.
        requested()
        refused("InvalidQuote", forged, b"not a quote", collateral(genuine.quote))
        requested()
        refused("InvalidCollateral", forged, genuine.quote, "{}")
        assert handle.models()["seed"] is False
        # The real flow: the key broker's release, with its quote checked in the enclave.
        with AttestationClient(maa_url) as maa, KbsClient(kbs_url) as kbs:
            assert handle.release("hpke-seed", "forged-seed", maa, kbs, source) == {"seed": True}
        assert handle.models()["seed"] is True
    finally:
        handle.close()
        storage.close()


def test_the_key_broker_identity_is_measured_and_required_for_a_seed(tmp_path: Path) -> None:
    urls = {"attestation_url": "http://127.0.0.1:1", "kbs_url": "http://127.0.0.1:2"}
    with pytest.raises(UsageError, match="identity"):
        InferenceConfig(data_dir=tmp_path, hpke_seed_key="seed", **urls)
    with pytest.raises(UsageError):
        InferenceConfig(data_dir=tmp_path, kbs_mrsigner="00" * 32)
    with pytest.raises(UsageError):
        InferenceConfig(data_dir=tmp_path, kbs_mrsigner="zz", **urls)
    config = InferenceConfig(data_dir=tmp_path, kbs_mrsigner="AB" * 32, kbs_isv_prod_id=2, **urls)
    assert config.kbs_policy() == {"mr_signer": "ab" * 32, "isv_prod_id": 2}
    assert config.kbs_simulated("sim") is True and config.kbs_simulated("sgx") is False
    # Without a key broker identity the measured settings (so MRENCLAVE) are those of an enclave without one;
    # with one, each identity and the simulation flag give another MRENCLAVE.
    variants: list[dict[str, Any]] = [
        {}, {"kbs_policy": {"mr_signer": "ab" * 32}}, {"kbs_policy": {"mr_signer": "ac" * 32}},
        {"kbs_policy": {"mr_signer": "ab" * 32}, "kbs_allow_simulated": True},
    ]  # fmt: skip
    measured = {
        bytes(load_bundle(sign_inference_enclave(tmp_path / str(index), None, **options)).mr_enclave)
        for index, options in enumerate(variants)
    }
    assert len(measured) == len(variants)


# -- restarts ----------------------------------------------------------------------------------------------------


def test_a_restart_keeps_the_models_their_keys_and_the_gateway_key(home: Path) -> None:
    config = service_config(home, "restarted")
    model = mlp(9)
    key = os.urandom(32)
    with serving(config) as first:
        verified, _, _ = attest(first.url, policy_for(first))
        client = Inner(first.url, AttestedOhttpClient(verified, max_message_size=64 << 20))
        assert (
            upload(first.url, encrypt_model(model, key, name="kept", version=2), "kept", "2").status_code
            == 202
        )
        assert client.call("PUT", "/v2/models/kept/versions/2/key", token=OWNER, body=key).status == 200
        configs = first.service.key_configs()
    with serving(config) as second:
        assert second.service.key_configs() == configs
        # The client pinned before the restart still reaches the enclave, and the model is back with its key.
        again = Inner(second.url, client.client)
        y = again.infer("kept", {"x": np.ones((1, 4), np.float32)})["y"]
        expected = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(
            None, {"x": np.ones((1, 4), np.float32)}
        )[0]
        np.testing.assert_allclose(y, expected, rtol=1e-5)
    # The app that starts its own service (lifespan) finds them too; the host sees no inputs or outputs.
    with TestClient(build_app(config)) as http:
        assert http.get("/readyz").json() == {"status": "ready"}
        models = http.get("/v1/models", headers=owner_headers()).json()["models"]
    assert models == [{"name": "kept", "version": "2", "sha256": hashlib.sha256(model).hexdigest(),
                       "size": len(model), "status": "loaded"}]  # fmt: skip


# -- the host never holds plaintext --------------------------------------------------------------------------------

PROOF_CLIENT = """\
import hashlib, json, os, sys
import httpx, numpy as np
sys.path.insert(0, sys.argv[4])
from test_inference_service import Inner, attest, encrypt_model, mlp_with, policy_with, CREDENTIAL, OWNER
from enklave.channels.ohttp_attested import AttestedOhttpClient

url = sys.argv[1]
model, weights = mlp_with(int.from_bytes(os.urandom(8), "big"))
key = os.urandom(32)
container = encrypt_model(model, key, name="secret", version=1)
answer = httpx.put(url + "/v1/models/secret/versions/1", content=container,
                   headers={"authorization": "Bearer " + CREDENTIAL})
assert answer.status_code == 202, answer.text
verified, _, _ = attest(url, policy_with(bytes.fromhex(sys.argv[2])))
inner = Inner(url, AttestedOhttpClient(verified, max_message_size=64 << 20))
assert inner.call("PUT", "/v2/models/secret/versions/1/key", token=OWNER, body=key).status == 200
x = np.random.default_rng(int.from_bytes(os.urandom(8), "big")).uniform(0.5, 1.5, (4, 4)).astype(np.float32)
y = inner.infer("secret", {"x": x})["y"]
print("ready", flush=True)
sys.stdin.readline()
print(json.dumps({"key": key.hex(), "weights": weights.hex(), "input": x.tobytes().hex(),
                  "output": y.tobytes().hex(), "container": container[-48:].hex()}), flush=True)
"""


def mlp_with(seed: int) -> tuple[bytes, bytes]:
    """An MLP with random positive weights from ``seed``: the model and its first 64 weight bytes."""
    w1 = np.random.default_rng(seed).uniform(0.5, 1.5, (4, 8)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        "secret",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])],
        [numpy_helper.from_array(w1, "w1")],
    )
    return model_bytes(graph), w1.tobytes()[:64]


def policy_with(mr_enclave: bytes) -> EnclavePolicy:
    return EnclavePolicy(mr_enclave=mr_enclave, allow_simulated=True)


def test_the_host_process_never_holds_models_keys_or_tensors(service: Serving, tmp_path: Path) -> None:
    script = tmp_path / "proof_client.py"
    script.write_text(PROOF_CLIENT)
    # The client runs in its own process, so this one is only the host (HTTP side and storage).
    command = [sys.executable, str(script), service.url, bytes(service.service.info.mr_enclave).hex(), "-",
               str(Path(__file__).parent)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    client = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    watchdog = threading.Timer(90, client.kill)
    watchdog.start()
    try:
        assert client.stdin is not None and client.stdout is not None and client.stderr is not None
        # 1. Everything happened and the client waits; snapshot before this process learns what to look for.
        line = client.stdout.readline()
        assert line == b"ready\n", client.stderr.read().decode()
        assert snapshot_memory(tmp_path / "memory") > 1 << 20
        # 2. Learn the secrets, then search the snapshot.
        client.stdin.write(b"go\n")
        client.stdin.flush()
        facts = {name: bytes.fromhex(value) for name, value in json.loads(client.stdout.readline()).items()}
        secrets = {
            "model key": facts["key"], "model key hex": facts["key"].hex().encode(), "model weights": facts["weights"],
            "input tensor": facts["input"], "output tensor": facts["output"],
        }  # fmt: skip
        # Control: the same scan finds what the host did hold, the encrypted container it stored.
        found = found_in_snapshot(tmp_path / "memory", {**secrets, "container": facts["container"]})
        assert found & set(secrets) == set()
        assert "container" in found
    finally:
        watchdog.cancel()
        if client.poll() is None:
            client.kill()
        client.wait()


# -- the command line --------------------------------------------------------------------------------------------


def test_enklave_inference_serve_runs_the_service(home: Path, tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "ENKLAVE_HOME": str(home), "ENKLAVE_INFERENCE_OWNER_TOKEN": OWNER}
    code = "import sys; from enklave.cli.inference import inference; sys.exit(inference())"
    command = [sys.executable, "-c", code, "serve", "--mode", "sim", "--port", str(port), "--data-dir",
               str(tmp_path / "cli"), "--threads", "1"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 60
        ready = False
        while not ready and process.poll() is None and time.monotonic() < deadline:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
            except httpx.TransportError:
                time.sleep(0.1)
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models", headers=owner_headers()) if ready else None
    finally:
        process.terminate()
        _, err = process.communicate(timeout=30)
    assert ready, err.decode()
    assert models is not None and models.status_code == 200 and models.json() == {"models": []}
    assert b"inference service: enclave " in err
    # Given the token, the host says that it saw it, and how to avoid that; it never prints the token.
    assert b"note: the owner token was given to the host" in err and OWNER.encode() not in err


# -- the parts, without an enclave -------------------------------------------------------------------------------


def test_the_gateway_keys_are_rfc_9180_derive_key_pair_of_the_seed() -> None:
    # RFC 9180 A.1.1 (DHKEM(X25519)) and A.3.1 (DHKEM(P-256)): ikmR -> skRm.
    x25519 = bytes.fromhex("6db9df30aa07dd42ee5e8181afdb977e538f5e1fec8a06223f33f7013e525037")
    servers = derive_servers(x25519, max_message_size=1 << 20)
    assert servers[0].key_config.public_key.hex() == (
        "3948cfe0ad1ddb695d780e59077195da6c56506b027329794ab02bca80815c4d"
    )
    p256 = bytes.fromhex("668b37171f1072f3cf12ea8a236a45df23fc13b82af3609ad1e354f6ef817550")
    public = derive_servers(p256, max_message_size=1 << 20)[1].key_config.public_key
    assert public.hex().startswith("04fe8c19ce0905191ebc298a9245792531f26f0cece2460639e8bc39cb7f706a82")
    ids = [key_ids(os.urandom(32))[0] for _ in range(64)]
    assert all(i % 2 == 1 and 1 <= i <= 253 for i in ids) and len(set(ids)) > 8


def test_the_host_credential_is_an_hmac_of_the_owner_token() -> None:
    # Computed independently with OpenSSL: printf 'enklave inference host credential v1' | openssl dgst -sha256
    # -mac HMAC -macopt key:owner-token-0123456789abcdef -binary | base64 | tr '+/' '-_' (then no padding).
    assert host_credential(OWNER) == "PMIbNWCBLoqm7Wgz65mp9X3jtcMKjB5mhyMyk0ZFgZQ"
    mac = crypto_hmac.HMAC(OWNER.encode(), hashes.SHA256())
    mac.update(HOST_CREDENTIAL_LABEL)
    assert _b64url.decode(CREDENTIAL) == mac.finalize()
    # The digest is the one the enclave compares, and neither value contains the token.
    assert bytes.fromhex(OWNER_SHA256) == token_digest(OWNER) == hashlib.sha256(OWNER.encode()).digest()
    assert OWNER not in CREDENTIAL + OWNER_SHA256 and host_credential(OWNER + "x") != CREDENTIAL
    for weak in ("short-token", "has a space in it 0123", "tab\there-0123456789", ""):
        with pytest.raises(UsageError, match="owner token"):
            owner_credentials(weak)
    with pytest.raises(UsageError):
        host_credential("")


def test_the_config_keeps_only_what_it_derives_from_the_owner_token(tmp_path: Path) -> None:
    keyed = InferenceConfig(data_dir=tmp_path, api_key="an-api-key-of-the-service")
    assert "an-api-key-of-the-service" not in repr(keyed)
    derived = InferenceConfig(data_dir=tmp_path, owner_token=OWNER)
    assert derived.owner_token is None
    assert (derived.owner_credential, derived.owner_token_sha256) == (CREDENTIAL, OWNER_SHA256)
    assert derived.enclave_settings()["owner_token_sha256"] == OWNER_SHA256
    assert OWNER not in repr(derived) and CREDENTIAL not in repr(derived)
    given = InferenceConfig(
        data_dir=tmp_path, owner_credential=CREDENTIAL, owner_token_sha256=OWNER_SHA256.upper()
    )
    assert given.owner_token_sha256 == OWNER_SHA256 and given.enclave_settings() == derived.enclave_settings()
    # A configuration built again from the fields (dataclasses.replace) stays the same.
    assert replace(derived, max_batch=2).owner_credential == CREDENTIAL
    disabled = InferenceConfig(data_dir=tmp_path)
    assert disabled.owner_credential is None and disabled.enclave_settings()["owner_token_sha256"] is None
    for bad in (
        {"owner_token": OWNER, "owner_credential": CREDENTIAL},
        {"owner_token": OWNER, "owner_token_sha256": OWNER_SHA256},
        {"owner_credential": CREDENTIAL},
        {"owner_token_sha256": OWNER_SHA256},
        {"owner_credential": CREDENTIAL + "=", "owner_token_sha256": OWNER_SHA256},
        {"owner_credential": CREDENTIAL[:-2], "owner_token_sha256": OWNER_SHA256},
        {"owner_credential": OWNER, "owner_token_sha256": OWNER_SHA256},
        {"owner_credential": CREDENTIAL, "owner_token_sha256": OWNER_SHA256[:-1]},
        {"owner_credential": CREDENTIAL, "owner_token_sha256": OWNER_SHA256[:-1] + "g"},
    ):
        with pytest.raises(UsageError) as refused:
            InferenceConfig(data_dir=tmp_path, **bad)
        assert OWNER not in str(refused.value) and CREDENTIAL not in str(refused.value)


def test_the_router_takes_model_keys_only_with_the_owner_token() -> None:
    repository = ModelRepository(intra_op_threads=1, max_batch=1)
    vault = ModelVault(repository, on_change=lambda state: None)
    router = Router(repository, RouterSettings(owner_token_sha256=bytes.fromhex(OWNER_SHA256)), keys=vault)

    def put_key(token: str) -> BhttpResponse:
        headers = (("authorization", f"Bearer {token}"),)
        return router(
            BhttpRequest("PUT", path="/v2/models/m/versions/1/key", headers=headers, content=bytes(32))
        )

    assert put_key(CREDENTIAL).status == 403 and put_key(OWNER_SHA256).status == 403
    assert put_key(OWNER).status == 202


def test_inference_serve_takes_the_credential_pair_or_drops_the_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from enklave.cli._errors import EXIT_OK, EXIT_USAGE, run_guarded
    from enklave.cli.inference import inference

    # The package attribute "inference" is the click group, so reach the module itself through sys.modules.
    cli_inference = sys.modules["enklave.cli.inference"]

    started: list[InferenceConfig] = []

    def fake_serve(options: Any, make_service: Any, make_app: Any, banner: Any) -> None:
        storage = SQLiteStorage(tmp_path / "state.db")
        started.append(make_service(storage).config)
        storage.close()

    monkeypatch.setattr(cli_inference, "serve_service", fake_serve)
    monkeypatch.setenv("ENKLAVE_HOME", str(tmp_path / "home"))
    for name in ("TOKEN", "CREDENTIAL", "TOKEN_SHA256"):
        monkeypatch.delenv(f"ENKLAVE_INFERENCE_OWNER_{name}", raising=False)
    base = ["serve", "--mode", "sim", "--data-dir", str(tmp_path / "data")]
    pair = ["--owner-credential", CREDENTIAL, "--owner-token-sha256", OWNER_SHA256]
    assert run_guarded(inference, [*base, *pair]) == EXIT_OK
    monkeypatch.setenv("ENKLAVE_INFERENCE_OWNER_TOKEN", OWNER)
    assert run_guarded(inference, base) == EXIT_OK
    # The token is gone from the environment that child processes (the enclave's among them) inherit.
    assert "ENKLAVE_INFERENCE_OWNER_TOKEN" not in os.environ
    assert [(c.owner_token, c.owner_credential, c.owner_token_sha256) for c in started] == [
        (None, CREDENTIAL, OWNER_SHA256)
    ] * 2
    assert run_guarded(inference, [*base, "--owner-token", OWNER, *pair]) == EXIT_USAGE
    assert run_guarded(inference, [*base, "--owner-credential", CREDENTIAL]) == EXIT_USAGE
    assert len(started) == 2


def test_the_vault_state_round_trips_and_keeps_order() -> None:
    saved: list[bytes] = []
    repository = ModelRepository(intra_op_threads=1, max_batch=1)
    vault = ModelVault(repository, on_change=saved.append)
    vault.set_seed(b"\x01" * 32)
    key = os.urandom(32)
    assert vault.set_owner_key("m", "1", key) is None
    outcome = vault.offer(encrypt_model(mlp(), key, name="m", version=1), max_model_bytes=1 << 20)
    assert outcome.loaded and outcome.info.name == "m"
    assert [json.loads(state)["generation"] for state in saved] == [1, 2]
    restored = ModelVault(ModelRepository(intra_op_threads=1, max_batch=1), on_change=saved.append)
    restored.restore(saved[-1])
    assert restored.seed == b"\x01" * 32
    assert restored.state_document() == vault.state_document()
    # A model whose key the vault does not hold waits; the wrong key leaves it waiting.
    other = encrypt_model(mlp(), os.urandom(32), name="n", version=1)
    assert not restored.offer(other, max_model_bytes=1 << 20).loaded
    with pytest.raises(VerificationError):
        restored.set_owner_key("n", "1", key)
    assert [h.name for h, _, _ in restored.pending()] == ["n"]


def test_the_model_store_keeps_large_containers_in_pieces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import enklave.inference._model_store as store_module

    monkeypatch.setattr(store_module, "CHUNK_SIZE", 1000)
    storage = SQLiteStorage(tmp_path / "s.db")
    store = ModelStore(storage)
    blob = os.urandom(4321)
    store.put("m", "2", blob)
    assert store.get("m", "2") == blob and store.list() == [("m", "2")]
    assert len(storage.keys("inference-model-chunks")) == 5
    storage.put("inference-model-chunks", "m/2/3", b"x" * 1000)
    with pytest.raises(BadDataError):
        store.get("m", "2")
    assert (
        store.delete("m", "2")
        and store.get("m", "2") is None
        and storage.keys("inference-model-chunks") == []
    )
    storage.close()


def test_the_router_answers_every_request_without_raising() -> None:
    repository = ModelRepository(intra_op_threads=1, max_batch=1)
    router = Router(repository, RouterSettings(api_key_sha256=token_digest(API_KEY)))
    for request in (
        BhttpRequest("GET", path="/v2"),
        BhttpRequest("DELETE", path="/v2/models"),
        BhttpRequest("GET", path="/v2/models/%00"),
        BhttpRequest("PUT", path="/v2/models/m/versions/1/key", content=bytes(32)),
        BhttpRequest("POST", path="/v2/models/m/infer", headers=(("authorization", f"Bearer {API_KEY}"),)),
    ):
        answer = router(request)
        assert answer.status in (200, 400, 401, 403, 404, 405), answer
    assert router.stats()["2xx"] == 1


_PATHS = st.sampled_from(
    ["/v2/models/m/infer", "/v2/models/m/versions/1/infer", "/v2/models/m", "/v2/models/m/versions/1/key",
     "/v2/models/m/ready", "/v2/models", "/v2/health/ready", "/v2", "/v2/models/m/versions/01/infer", "/x"]
)  # fmt: skip
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_TENSOR = st.fixed_dictionaries(
    {"name": st.sampled_from(["x", "y", ""]), "datatype": st.sampled_from(["FP32", "INT64", "BYTES", "FP99"]),
     "shape": st.lists(st.integers(-2, 5), max_size=3), "data": _JSON}
)  # fmt: skip


@pytest.fixture(scope="module")
def fuzzed_router() -> Router:
    repository = ModelRepository(intra_op_threads=1, max_batch=1)
    key = os.urandom(32)
    repository.add(encrypt_model(mlp(), key, name="m", version=1), key)
    vault = ModelVault(repository, on_change=lambda state: None)
    options = RouterSettings(owner_token_sha256=token_digest(OWNER), max_request_bytes=1 << 16)
    return Router(repository, options, keys=vault)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
    path=_PATHS,
    body=st.one_of(
        st.binary(max_size=64),
        _JSON.map(lambda value: json.dumps(value).encode()),
        st.lists(_TENSOR, max_size=3).map(lambda inputs: json.dumps({"inputs": inputs}).encode()),
    ),
    length=st.one_of(st.none(), st.text("0123456789x-", max_size=4)),
    token=st.sampled_from([None, OWNER, "other-token-0123456789"]),
)
def test_the_router_answers_fuzzed_requests_with_4xx_never_a_crash(
    fuzzed_router: Router, method: str, path: str, body: bytes, length: str | None, token: str | None
) -> None:
    headers: tuple[tuple[str, str], ...] = (("content-type", "application/json"),)
    if length is not None:
        headers += (("inference-header-content-length", length),)
    if token is not None:
        headers += (("authorization", f"Bearer {token}"),)
    answer = fuzzed_router(BhttpRequest(method, path=path, headers=headers, content=body))
    assert answer.status < 500, answer.content
    if answer.status >= 400:
        assert error_message(answer.content)


def test_onnx_runtime_threads_fit_the_enclaves_spare_threads(tmp_path: Path) -> None:
    from enklave.deploy.gramine import PYTHON_THREADS
    from enklave.inference.config import MAX_ORT_THREADS

    assert 1 <= MAX_ORT_THREADS < PYTHON_THREADS
    assert 1 <= InferenceConfig(data_dir=tmp_path).ort_threads() <= MAX_ORT_THREADS
    assert InferenceConfig(data_dir=tmp_path, threads=2).enclave_settings()["intra_op_threads"] == 2
    with pytest.raises(UsageError, match="threads"):
        InferenceConfig(data_dir=tmp_path, threads=MAX_ORT_THREADS + 1)
