"""The confidential inference client (enklave.inference.client) and ``enklave infer`` / ``enklave model``.

The service here is a small Starlette fake of the inference host's API (``/v1/attestation``, ``/v1/gateway``,
``/v1/models/...``) served on loopback, around the pieces the real service runs in its enclave, in process: an
OHTTP gateway whose handler is the real :class:`~enklave.inference.router.Router` over a real model repository
and vault, with quotes from the simulated platform. The fake host records every byte it handles and can attack:
replay or swap evidence, tamper with or replay responses, rotate its key, refuse every request.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import stat
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import numpy_helper
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from certificates import self_signed
from enklave import _b64url
from enklave.attestation.evidence import collateral_request
from enklave.attestation.policy import EnclavePolicy
from enklave.attestation.tokens import StaticJwksSource, TokenSigner, TokenVerifier, sgx_claims
from enklave.attestation.verify import verify_quote
from enklave.channels.ohttp_attested import (
    OHTTP_RESPONSE_MEDIA_TYPE,
    KeyConfigEvidence,
    OhttpGateway,
)
from enklave.cli._errors import EXIT_BAD_INPUT, EXIT_OK, EXIT_USAGE, EXIT_VERIFICATION, run_guarded
from enklave.cli.infer import infer as infer_command
from enklave.cli.model import model as model_command
from enklave.errors import (
    BadDataError,
    BindingError,
    BoundaryError,
    CollateralUnavailable,
    InvalidKey,
    InvalidToken,
    PolicyError,
    UsageError,
    VerificationError,
)
from enklave.inference._client_attest import parse_answer
from enklave.inference._client_upload import envelope_public_jwk, prepare_model
from enklave.inference._vault import ModelVault
from enklave.inference.app import serving as serve_inference
from enklave.inference.client import AsyncClient, Client, UploadResult
from enklave.inference.credentials import owner_credentials
from enklave.inference.model_format import decrypt_model, encrypt_model, read_header
from enklave.inference.repository import ModelRepository
from enklave.inference.router import Router, RouterSettings, token_digest
from enklave.inference.service import InferenceConfig
from enklave.platform.simulated import SimulatedCollateralSource, SimulatedPlatform, simulated_root
from enklave.services.kbs.wrapping import unwrap_released_key
from enklave.sgx.quote import Quote
from enklave.sgx.report import AttributeFlags, Attributes, ReportBody
from onnx_models import mlp_model
from service_fixtures import enklave_home, serving

OWNER = "owner-token-5f1c2e0a9b7d4c31"
# What the host is configured with instead of the owner token.
CREDENTIAL, OWNER_SHA256 = owner_credentials(OWNER)
API_KEY = "api-key-8e2a6c40d1b3f597"
MR_ENCLAVE = b"\x17" * 32
MR_SIGNER = b"\x29" * 32
IDENTITY = ReportBody.build(mr_enclave=MR_ENCLAVE, mr_signer=MR_SIGNER, isv_prod_id=7, isv_svn=3)
POLICY = EnclavePolicy(mr_enclave=MR_ENCLAVE, allow_simulated=True)
ISSUER = "https://attestation.test"
LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
W1 = np.linspace(-1.0, 1.0, 4 * 8, dtype=np.float32).reshape(4, 8)
B1 = np.linspace(0.5, -0.5, 8, dtype=np.float32)
W2 = np.linspace(1.0, -1.0, 8 * 3, dtype=np.float32).reshape(8, 3)
# A recognizable input: its bytes must never appear in anything the host handles.
MARKER = np.frombuffer(b"TENSOR-MARK-7c1d" * 6, dtype=np.float32).reshape(6, 4).copy()
MLP = mlp_model(W1, B1, W2)  # x [N, 4] -> relu(x @ W1 + B1) @ W2 = y [N, 3]


def plain(model: bytes, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return [np.asarray(value) for value in session.run(None, feeds)]


def _signer() -> TokenSigner:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    certificate = self_signed(
        key, "CN=attestation.test", backdate=timedelta(days=1), validity=timedelta(days=30)
    )
    return TokenSigner(key, [certificate], issuer=ISSUER, jku=f"{ISSUER}/certs")


class FakeHost:
    """The inference host's HTTP API around in-process enclave pieces; records and attacks (see the module)."""

    def __init__(self, platform: SimulatedPlatform, signer: TokenSigner) -> None:
        self.platform = platform
        self.signer = signer
        self.repository = ModelRepository(intra_op_threads=1, max_batch=1)
        self.vault = ModelVault(self.repository, on_change=lambda document: None)
        settings = RouterSettings(
            owner_token_sha256=token_digest(OWNER), api_key_sha256=token_digest(API_KEY)
        )
        self.router = Router(self.repository, settings, keys=self.vault)
        self.gateway = OhttpGateway.generate(self.router, max_message_size=8 << 20)
        self.stored: dict[tuple[str, str], bytes] = {}
        self.reset()

    def reset(self) -> None:
        self.seen: list[bytes] = []
        self.log: list[tuple[str, str]] = []
        self.with_collateral = True
        self.collateral_as_text = False
        self.with_token = True
        self.token_nonce_override: bytes | None = None
        self.on_evidence: Callable[[KeyConfigEvidence], KeyConfigEvidence] | None = None
        self.on_response: Callable[[bytes], bytes] | None = None
        self.refuse_gateway = False
        self.set_cookies = False

    def rotate(self) -> None:
        self.gateway = OhttpGateway.generate(self.router, max_message_size=8 << 20)

    def _token(self, evidence: KeyConfigEvidence) -> str:
        quote = Quote.from_bytes(evidence.quote)
        request = collateral_request(quote)
        collateral = SimulatedCollateralSource().fetch(request.fmspc, request.ca)
        verified = verify_quote(quote, collateral, now=datetime.now(UTC), roots=[simulated_root()])
        claims = sgx_claims(
            verified, runtime_data=None, runtime_json=None, init_time_data=None, nonce=None, collateral=None
        )
        return self.signer.sign(claims, now=datetime.now(UTC))

    async def attestation(self, request: Request) -> Response:
        nonce = _b64url.decode(request.query_params["nonce"])
        evidence = self.gateway.evidence(self.platform, nonce)
        token_for = evidence
        if self.token_nonce_override is not None:
            token_for = self.gateway.evidence(self.platform, self.token_nonce_override)
        if self.on_evidence is not None:
            evidence = self.on_evidence(evidence)
        document: dict[str, Any] = {"evidence": _b64url.encode(evidence.to_bytes())}
        if self.with_collateral:
            wanted = collateral_request(Quote.from_bytes(evidence.quote))
            text = SimulatedCollateralSource().fetch(wanted.fmspc, wanted.ca).to_json()
            document["collateral"] = text if self.collateral_as_text else json.loads(text)
        if self.with_token:
            document["token"] = self._token(token_for)
        return JSONResponse(document)

    async def gateway_route(self, request: Request) -> Response:
        body = await request.body()
        self.seen.append(body)
        if self.refuse_gateway:
            return JSONResponse({"error": {"code": "BadRequest", "message": "does not decapsulate"}}, 400)
        try:
            answer = self.gateway.handle(body)
        except BadDataError:
            return JSONResponse({"error": {"code": "UnknownKey", "message": "does not decapsulate"}}, 400)
        if self.on_response is not None:
            answer = self.on_response(answer)
        self.seen.append(answer)
        return Response(answer, media_type=OHTTP_RESPONSE_MEDIA_TYPE)

    async def models_route(self, request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {CREDENTIAL}":
            return JSONResponse(
                {"error": {"code": "Unauthorized", "message": "owner credential needed"}}, 401
            )
        if request.method == "GET":
            listed = [{"name": name, "version": version} for name, version in sorted(self.stored)]
            return JSONResponse({"models": listed})
        name, version = request.path_params["name"], request.path_params["version"]
        if request.method == "DELETE":
            self.stored.pop((name, version), None)
            return JSONResponse(
                {"name": name, "version": version, "deleted": self.vault.remove(name, version)}
            )
        body = await request.body()
        self.seen.append(body)
        header = read_header(body)
        if (header.name, header.version) != (name, version):
            return JSONResponse({"error": {"code": "Mismatch", "message": "path and header differ"}}, 400)
        self.stored[(name, version)] = body
        outcome = self.vault.offer(body, max_model_bytes=1 << 30)
        status = "loaded" if outcome.loaded else "waiting for key"
        return JSONResponse({"name": name, "version": version, "key_id": header.key_id, "status": status})

    def app(self) -> Starlette:
        async def logged(request: Request) -> Response:
            self.log.append((request.method, request.url.path))
            # Everything of the request but its body (recorded by the routes): the target and every header.
            self.seen.append(f"{request.method} {request.url}\n".encode())
            self.seen.extend(name + b": " + value for name, value in request.headers.raw)
            path = request.url.path
            if path == "/v1/attestation":
                answer = await self.attestation(request)
            elif path == "/v1/gateway":
                answer = await self.gateway_route(request)
            else:
                answer = await self.models_route(request)
            if self.set_cookies:
                # A host that tries to link a client's requests with a cookie.
                answer.set_cookie("visitor", f"v{len(self.log)}", path="/")
            return answer

        return Starlette(
            routes=[
                Route("/v1/attestation", logged, methods=["GET"]),
                Route("/v1/gateway", logged, methods=["POST"]),
                Route("/v1/models", logged, methods=["GET"]),
                Route("/v1/models/{name}/versions/{version}", logged, methods=["PUT", "DELETE"]),
            ]
        )


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield from enklave_home(tmp_path_factory, "inference-client-home")


@pytest.fixture(scope="module")
def signer() -> TokenSigner:
    return _signer()


@pytest.fixture(scope="module")
def fake(home: Path, signer: TokenSigner) -> FakeHost:
    return FakeHost(SimulatedPlatform.launch(IDENTITY), signer)


@pytest.fixture(scope="module")
def url(fake: FakeHost) -> Iterator[str]:
    with serving(fake.app(), "fake inference host") as base:
        yield base


@pytest.fixture
def host(fake: FakeHost, url: str, mlp_uploaded: UploadResult) -> Iterator[FakeHost]:
    fake.reset()
    platform = fake.platform
    yield fake
    fake.platform = platform
    fake.reset()


def client_for(url: str, **options: Any) -> Client:
    arguments: dict[str, Any] = {
        "policy": POLICY,
        "roots": [simulated_root()],
        "api_key": API_KEY,
        "owner_token": OWNER,
    }
    return Client(url, **{**arguments, **options})


@pytest.fixture(scope="module")
def mlp_uploaded(fake: FakeHost, url: str) -> UploadResult:
    # Uploaded once for the module, before any test's records start (see the host fixture).
    with client_for(url) as client:
        return client.upload_model(MLP, name="mlp", version=1)


# -- inference end to end ------------------------------------------------------------------------------------------


def test_inference_equals_plain_onnxruntime_in_binary_and_json(host: FakeHost, url: str) -> None:
    x = np.random.default_rng(7).normal(size=(5, 4)).astype(np.float32)
    expected = plain(MLP, {"x": x})[0]
    with client_for(url) as client:
        for binary in (True, False):
            outputs = client.infer("mlp", {"x": x}, binary=binary)
            assert set(outputs) == {"y"}
            assert outputs["y"].dtype == np.float32 and outputs["y"].shape == (5, 3)
            np.testing.assert_allclose(outputs["y"], expected, rtol=1e-6, atol=1e-6)
        assert client.attestation is not None and client.attestation.mr_enclave == MR_ENCLAVE
        pinned = client.attestation
        # The same versioned route, and the attestation is pinned, not repeated per request.
        np.testing.assert_allclose(
            client.infer("mlp", {"x": x}, version="1")["y"], expected, rtol=1e-6, atol=1e-6
        )
        assert client.attestation is pinned
    assert host.log.count(("GET", "/v1/attestation")) == 1


def test_resnet50_through_the_service_equals_onnxruntime_and_the_shipped_reference(
    host: FakeHost, url: str
) -> None:
    model = (LIGHT / "light_resnet50.onnx").read_bytes()
    shape = (1, 3, 224, 224)
    count = int(np.prod(shape))
    x = (np.arange(count).reshape(shape) / count).astype(np.float32)
    reference = numpy_helper.to_array(onnx.load_tensor(str(LIGHT / "light_resnet50_output_0.pb")))
    with client_for(url) as client:
        result = client.upload_model(model, name="resnet50", version=1)
        assert result.loaded and result.sha256 == hashlib.sha256(model).hexdigest()
        metadata = client.model_metadata("resnet50")
        assert metadata["parameters"]["sha256"] == result.sha256
        assert [entry["name"] for entry in metadata["inputs"]] == ["gpu_0/data_0"]
        outputs = client.infer("resnet50", {"gpu_0/data_0": x})
    np.testing.assert_allclose(
        outputs["gpu_0/softmax_1"], plain(model, {"gpu_0/data_0": x})[0], rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(outputs["gpu_0/softmax_1"], reference, rtol=1e-3, atol=1e-5)


def test_the_host_sees_no_tensor_key_or_model(host: FakeHost, url: str) -> None:
    key = os.urandom(32)
    with client_for(url) as client:
        client.upload_model(MLP, name="secretive", version=3, key=key)
        outputs = client.infer("secretive", {"x": MARKER})
    seen = b"\n".join(host.seen)
    assert len(host.seen) >= 4  # The container, the key exchange and the inference, both ways.
    for secret in (
        MARKER.tobytes(), outputs["y"].tobytes(), key, key.hex().encode(), API_KEY.encode(), OWNER.encode()
    ):  # fmt: skip
        assert secret not in seen
    # Control: the headers were recorded, and the host was given the credential derived from the owner token.
    assert f"authorization: Bearer {CREDENTIAL}".encode() in seen
    # The model's weights travel only encrypted: no 32-byte window of the plaintext model reaches the host.
    assert not any(MLP[i : i + 32] in seen for i in range(0, len(MLP) - 32, 16))


def test_cookies_from_the_host_are_never_sent_back(host: FakeHost, url: str) -> None:
    # OHTTP keeps the host from linking a client's requests; a cookie returned on every request would link them.
    host.set_cookies = True
    x = np.zeros((1, 4), dtype=np.float32)
    with client_for(url) as client:
        for _ in range(3):
            client.infer("mlp", {"x": x})

    async def twice() -> None:
        async with AsyncClient(url, policy=POLICY, roots=[simulated_root()], api_key=API_KEY) as client:
            for _ in range(2):
                await client.infer("mlp", {"x": x})

    asyncio.run(twice())
    headers = [line.split(b":", 1)[0].lower() for line in host.seen if b": " in line[:40]]
    assert headers.count(b"content-type") >= 5  # the requests were recorded
    assert b"cookie" not in headers
    assert len(host.log) == 7  # attestation + 3 inferences, attestation + 2 inferences


def test_models_listing_and_metadata(host: FakeHost, url: str) -> None:
    with client_for(url) as client:
        names = {(entry["name"], entry["version"]) for entry in client.models()}
        assert ("mlp", "1") in names
        metadata = client.model_metadata("mlp", 1)
        assert metadata["parameters"]["sha256"] == hashlib.sha256(MLP).hexdigest()
        assert metadata["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
        assert ("mlp", "1") in {
            (entry["name"], entry["version"]) for entry in client.uploaded_models()["models"]
        }


def test_concurrent_threads_share_one_client(host: FakeHost, url: str) -> None:
    rng = np.random.default_rng(3)
    inputs = [rng.normal(size=(2, 4)).astype(np.float32) for _ in range(12)]
    results: dict[int, np.ndarray] = {}
    with client_for(url) as client:

        def work(index: int) -> None:
            results[index] = client.infer("mlp", {"x": inputs[index]})["y"]

        threads = [threading.Thread(target=work, args=(index,)) for index in range(len(inputs))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert sorted(results) == list(range(len(inputs)))
    for index, x in enumerate(inputs):
        np.testing.assert_allclose(results[index], plain(MLP, {"x": x})[0], rtol=1e-6, atol=1e-6)
    assert host.log.count(("GET", "/v1/attestation")) == 1


def test_async_client_infers_uploads_and_refuses_like_the_sync_one(host: FakeHost, url: str) -> None:
    x = np.ones((3, 4), dtype=np.float32)

    async def main() -> tuple[dict[str, np.ndarray], Any, list[dict[str, Any]]]:
        async with AsyncClient(
            url, policy=POLICY, roots=[simulated_root()], api_key=API_KEY, owner_token=OWNER
        ) as client:
            result = await client.upload_model(MLP, name="mlp-async", version=2)
            outputs = await asyncio.gather(*(client.infer("mlp-async", {"x": x}) for _ in range(4)))
            return outputs[0], result, await client.models()

    outputs, result, listed = asyncio.run(main())
    np.testing.assert_allclose(outputs["y"], plain(MLP, {"x": x})[0], rtol=1e-6, atol=1e-6)
    assert result.loaded and ("mlp-async", "2") in {(item["name"], item["version"]) for item in listed}
    assert host.log.count(("GET", "/v1/attestation")) == 1

    async def wrong() -> None:
        async with AsyncClient(url, policy=EnclavePolicy(mr_enclave=b"\x01" * 32, allow_simulated=True),
                               roots=[simulated_root()]) as client:  # fmt: skip
            await client.infer("mlp", {"x": x})

    with pytest.raises(PolicyError):
        asyncio.run(wrong())


# -- refusals: the client sends nothing it cannot protect ---------------------------------------------------------


def _only_attested(host: FakeHost) -> None:
    assert host.log and all(entry == ("GET", "/v1/attestation") for entry in host.log)


@pytest.mark.parametrize(
    ("policy", "field"),
    [
        (EnclavePolicy(mr_enclave=b"\x18" * 32, allow_simulated=True), "mr_enclave"),
        (EnclavePolicy(mr_signer=b"\x30" * 32, allow_simulated=True), "mr_signer"),
        (EnclavePolicy(mr_enclave=MR_ENCLAVE, min_isv_svn=4, allow_simulated=True), "isv_svn"),
        (EnclavePolicy(mr_enclave=MR_ENCLAVE), "simulated"),
    ],
)
def test_a_client_whose_policy_refuses_the_enclave_sends_nothing(
    host: FakeHost, url: str, policy: EnclavePolicy, field: str
) -> None:
    with client_for(url, policy=policy) as client:
        with pytest.raises(PolicyError) as refused:
            client.infer("mlp", {"x": MARKER})
        assert refused.value.field == field
        with pytest.raises(PolicyError):
            client.upload_model(MLP, name="never", version=1)
    _only_attested(host)
    assert ("never", "1") not in host.stored


def test_a_debug_enclave_is_refused(host: FakeHost, url: str, home: Path) -> None:
    flags = AttributeFlags.INIT | AttributeFlags.MODE64BIT | AttributeFlags.DEBUG
    debug = ReportBody.build(
        mr_enclave=MR_ENCLAVE,
        mr_signer=MR_SIGNER,
        isv_prod_id=7,
        isv_svn=3,
        attributes=Attributes(flags, 0x3),
    )
    host.platform = SimulatedPlatform.launch(debug)
    with client_for(url) as client, pytest.raises(PolicyError) as refused:
        client.infer("mlp", {"x": MARKER})
    assert refused.value.field == "debug"
    _only_attested(host)


def test_replayed_or_swapped_evidence_is_refused(host: FakeHost, url: str) -> None:
    old = host.gateway.evidence(host.platform, b"an older client's nonce")
    host.on_evidence = lambda fresh: old
    with client_for(url) as client, pytest.raises(BindingError, match="nonce"):
        client.attest()
    attacker = OhttpGateway.generate(host.router)
    host.on_evidence = lambda fresh: KeyConfigEvidence(attacker.encoded_key_configs, fresh.quote, fresh.nonce)
    with client_for(url) as client, pytest.raises(BindingError, match="key configurations"):
        client.infer("mlp", {"x": MARKER})
    _only_attested(host)


def test_tampered_or_replayed_responses_do_not_authenticate(host: FakeHost, url: str) -> None:
    x = np.ones((1, 4), dtype=np.float32)
    host.on_response = lambda answer: answer[:-1] + bytes([answer[-1] ^ 1])
    with client_for(url) as client:
        with pytest.raises(VerificationError):
            client.infer("mlp", {"x": x})
        recorded: list[bytes] = []

        def replay_the_first(answer: bytes) -> bytes:
            # The first answer goes through; every later request gets that first answer again.
            recorded.append(answer)
            return recorded[0]

        host.on_response = replay_the_first
        client.infer("mlp", {"x": x})
        with pytest.raises(VerificationError):
            client.infer("mlp", {"x": x})


def test_collateral_comes_from_the_answer_or_the_callers_source(host: FakeHost, url: str) -> None:
    host.collateral_as_text = True
    with client_for(url) as client:
        assert client.attest().method == "dcap"
    host.with_collateral = False
    with client_for(url) as client, pytest.raises(CollateralUnavailable):
        client.attest()
    with client_for(url, collateral_source=SimulatedCollateralSource()) as client:
        attestation = client.attest()
    assert attestation.simulated and attestation.quote is not None and attestation.isv_svn == 3
    # Without the simulated root the evidence does not chain to a trusted root.
    with (
        client_for(url, roots=None, collateral_source=SimulatedCollateralSource()) as client,
        pytest.raises(VerificationError),
    ):
        client.attest()


def test_token_attestation(host: FakeHost, url: str, signer: TokenSigner) -> None:
    verifier = TokenVerifier(ISSUER, StaticJwksSource(signer.jwks()))
    with client_for(url, attestation="token", token_verifier=verifier, roots=None) as client:
        attestation = client.attest()
        assert attestation.method == "token" and attestation.token is not None and attestation.quote is None
        assert attestation.mr_enclave == MR_ENCLAVE and attestation.isv_prod_id == 7
        x = np.ones((2, 4), dtype=np.float32)
        np.testing.assert_allclose(client.infer("mlp", {"x": x})["y"], plain(MLP, {"x": x})[0], rtol=1e-6)
    # A genuine token, but for a quote over another nonce: stale for this client.
    host.token_nonce_override = b"another nonce"
    with client_for(url, attestation="token", token_verifier=verifier) as client, pytest.raises(BindingError):
        client.attest()
    host.token_nonce_override = None
    host.with_token = False
    with client_for(url, attestation="token", token_verifier=verifier) as client, pytest.raises(InvalidToken):
        client.attest()
    host.with_token = True
    stranger = TokenVerifier(ISSUER, StaticJwksSource(_signer().jwks()))
    with (
        client_for(url, attestation="token", token_verifier=stranger) as client,
        pytest.raises(VerificationError),
    ):
        client.attest()
    with pytest.raises(UsageError, match="token_verifier"):
        client_for(url, attestation="token")


# -- key rotation --------------------------------------------------------------------------------------------------


def test_a_rotated_key_is_attested_again_and_the_request_retried_once(host: FakeHost, url: str) -> None:
    x = np.ones((1, 4), dtype=np.float32)
    with client_for(url) as client:
        client.infer("mlp", {"x": x})
        before = client.attestation
        host.rotate()
        np.testing.assert_allclose(client.infer("mlp", {"x": x})["y"], plain(MLP, {"x": x})[0], rtol=1e-6)
        assert client.attestation is not before
        assert host.log.count(("GET", "/v1/attestation")) == 2
        # A gateway that refuses everything gets one retry, then the error.
        host.refuse_gateway = True
        with pytest.raises(BoundaryError, match="HTTP 400"):
            client.infer("mlp", {"x": x})
        assert host.log.count(("GET", "/v1/attestation")) == 3


# -- errors answered inside the encryption ---------------------------------------------------------------------------


def test_error_answers_map_to_enklave_errors_and_the_service_keeps_serving(host: FakeHost, url: str) -> None:
    good = np.ones((1, 4), dtype=np.float32)
    with client_for(url) as client:
        with pytest.raises(UsageError, match="HTTP 404"):
            client.infer("no-such-model", {"x": good})
        with pytest.raises(BoundaryError, match="HTTP 400"):
            client.infer("mlp", {"x": np.ones((1, 5), dtype=np.float32)})
        with pytest.raises(BoundaryError, match="HTTP 400"):
            client.infer("mlp", {"x": good.astype(np.float64)})
        with pytest.raises(UsageError):
            client.infer("../admin", {"x": good})
        with pytest.raises(UsageError):
            client.infer("mlp", {"x": [[1.0, 2.0, 3.0, 4.0]]})  # type: ignore[dict-item]
        assert client.infer("mlp", {"x": good})["y"].shape == (1, 3)
    with client_for(url, api_key=None) as client, pytest.raises(UsageError, match="HTTP 401"):
        client.infer("mlp", {"x": good})
    with client_for(url, api_key="not-the-key") as client, pytest.raises(UsageError, match="HTTP 403"):
        client.infer("mlp", {"x": good})


# -- uploads -------------------------------------------------------------------------------------------------------


def test_upload_of_a_container_made_earlier(host: FakeHost, url: str, tmp_path: Path) -> None:
    key = os.urandom(32)
    container = tmp_path / "mlp.enkm"
    container.write_bytes(encrypt_model(MLP, key, name="mlp-container", version="4"))
    with client_for(url) as client:
        with pytest.raises(UsageError, match="needs its key"):
            client.upload_encrypted(container)
        with pytest.raises(VerificationError):
            client.upload_encrypted(container, key=os.urandom(32))
        assert (
            "mlp-container",
            "4",
        ) not in host.stored  # A key that does not open it is caught before sending.
        progress: list[tuple[int, int]] = []
        result = client.upload_encrypted(
            container, key=key, progress=lambda sent, total: progress.append((sent, total))
        )
        assert result.loaded and result.sha256 == hashlib.sha256(MLP).hexdigest()
        assert progress and progress[-1] == (result.size, result.size)
        deleted = client.delete_model("mlp-container", 4)
        assert deleted["deleted"] is True
        with pytest.raises(UsageError, match="HTTP 404"):
            client.infer("mlp-container", {"x": np.ones((1, 4), dtype=np.float32)})
    with client_for(url, owner_token=None) as client, pytest.raises(UsageError, match="owner token"):
        client.upload_model(MLP, name="mlp", version=9)


def test_async_upload_reports_progress_and_the_enclave_loads_the_model(host: FakeHost, url: str) -> None:
    # The asynchronous client sends a container with a progress callback in pieces, then the key to the enclave.
    key = os.urandom(32)
    progress: list[tuple[int, int]] = []

    async def main() -> UploadResult:
        async with AsyncClient(url, policy=POLICY, roots=[simulated_root()], owner_token=OWNER) as client:
            return await client.upload_model(
                MLP,
                name="async-mlp",
                version=2,
                key=key,
                progress=lambda sent, total: progress.append((sent, total)),
            )

    result = asyncio.run(main())
    assert result.loaded and result.sha256 == hashlib.sha256(MLP).hexdigest()
    assert progress and progress[-1] == (result.size, result.size)
    assert [sent for sent, _ in progress] == sorted(sent for sent, _ in progress)
    assert decrypt_model(host.stored[("async-mlp", "2")], key)[1] == MLP


def test_kbs_keyed_upload_sends_no_key(host: FakeHost, url: str) -> None:
    key = os.urandom(32)
    with client_for(url) as client:
        with pytest.raises(UsageError, match="KBS key"):
            client.upload_model(MLP, name="kbs-model", version=1, kbs_key="model-key")
        result = client.upload_model(MLP, name="kbs-model", version=1, key=key, kbs_key="model-key")
    assert result.key_id == "kbs:model-key" and not result.loaded
    # No attestation and no encapsulated request: the enclave gets the key from the key broker.
    assert host.log == [("PUT", "/v1/models/kbs-model/versions/1")]
    assert decrypt_model(host.stored[("kbs-model", "1")], key)[1] == MLP


def _envelope_key() -> tuple[dict[str, Any], dict[str, str]]:
    """A P-256 envelope key as the key broker shows it (a key view with kid and key_ops) and its private JWK."""
    private = ec.generate_private_key(ec.SECP256R1())
    point = private.public_key().public_numbers()
    public = {"kty": "EC", "crv": "P-256", "x": _b64url.encode(point.x.to_bytes(32, "big")),
              "y": _b64url.encode(point.y.to_bytes(32, "big"))}  # fmt: skip
    view = {"key": {**public, "kid": "https://kbs.example/keys/env-key", "key_ops": ["sign", "verify"]},
            "attributes": {"exportable": True}}  # fmt: skip
    d = _b64url.encode(private.private_numbers().private_value.to_bytes(32, "big"))
    return view, {**public, "d": d}


def test_envelope_upload_wraps_a_fresh_model_key_and_sends_it_nowhere(host: FakeHost, url: str) -> None:
    view, private = _envelope_key()

    async def main() -> UploadResult:
        async with AsyncClient(url, policy=POLICY, roots=[simulated_root()], owner_token=OWNER) as client:
            return await client.upload_model(MLP, name="enveloped", version=1, kbs_key="env-key",
                                             kbs_public_jwk=view)  # fmt: skip

    result = asyncio.run(main())
    assert result.key_id == "kbs:env-key" and result.key is not None and not result.loaded
    # One PUT of the container to the host, no encapsulated key request: the enclave unwraps the key itself.
    assert host.log == [("PUT", "/v1/models/enveloped/versions/1")]
    blob = host.stored[("enveloped", "1")]
    header = read_header(blob)
    assert header.envelope_key == "env-key" and header.wrapped_key is not None
    # Only the key's members were wrapped to: the broker's kid does not reach the clear header.
    assert b"kbs.example" not in blob
    assert unwrap_released_key(header.wrapped_key, private) == result.key
    assert decrypt_model(blob, result.key)[1] == MLP
    assert result.key not in blob


def test_envelope_arguments_are_checked() -> None:
    view, private = _envelope_key()
    assert envelope_public_jwk(view) == {k: private[k] for k in ("kty", "crv", "x", "y")}
    with pytest.raises(UsageError, match="needs kbs_key"):
        prepare_model(MLP, name="m", version=1, kbs_public_jwk=view)
    with pytest.raises(UsageError, match="public JWK"):
        prepare_model(MLP, name="m", version=1, kbs_key="k", kbs_public_jwk=private)
    with pytest.raises(UsageError, match="RSA or EC"):
        prepare_model(MLP, name="m", version=1, kbs_key="k", kbs_public_jwk={"kty": "oct", "k": "AAAA"})
    with pytest.raises(UsageError, match="'x'"):
        envelope_public_jwk({"kty": "EC", "crv": "P-256", "y": "AAAA"})
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key().public_numbers()
    small = {"kty": "RSA", "n": _b64url.encode(weak.n.to_bytes(128, "big")), "e": "AQAB"}
    with pytest.raises(InvalidKey, match="at least 2048"):
        prepare_model(MLP, name="m", version=1, kbs_key="k", kbs_public_jwk=small)
    # A model key given by the owner is the one wrapped.
    key = os.urandom(32)
    upload = prepare_model(MLP, name="m", version=1, key=key, kbs_key="k", kbs_public_jwk=view)
    assert unwrap_released_key(read_header(upload.blob).wrapped_key or "", private) == key == upload.key


def test_cli_encrypt_with_an_envelope_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    view, private = _envelope_key()
    source, key_file, out, jwk_file = (tmp_path / n for n in ("m.onnx", "m.key", "m.enkm", "env.jwk"))
    source.write_bytes(MLP)
    jwk_file.write_text(json.dumps(view))
    base = ["encrypt", str(source), "--name", "cli-env", "--version", "2", "--key-file", str(key_file),
            "-o", str(out)]  # fmt: skip
    code, _, err = _run(
        model_command, [*base, "--kbs-key", "env-key", "--kbs-public-key", str(jwk_file)], capsys
    )
    assert code == EXIT_OK, err
    key = bytes.fromhex(key_file.read_text().strip())
    header = read_header(out.read_bytes())
    assert header.key_id == "kbs:env-key" and "kbs:env-key" in err
    assert unwrap_released_key(header.wrapped_key or "", private) == key
    assert decrypt_model(out.read_bytes(), key)[1] == MLP
    private_file = tmp_path / "private.jwk"
    private_file.write_text(json.dumps(private))
    for extra in (
        ["--kbs-public-key", str(jwk_file)],  # without --kbs-key
        ["--kbs-key", "env-key", "--kbs-public-key", str(jwk_file), "--kbs-url", "http://127.0.0.1:9"],
        ["--kbs-key", "env-key", "--kbs-public-key", str(private_file)],
    ):
        out.unlink(missing_ok=True)
        code, _, err = _run(model_command, [*base, *extra], capsys)
        assert code == EXIT_USAGE, err
        assert not out.exists()


# -- the attestation answer parser ----------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=200),
        st.dictionaries(
            st.sampled_from(["evidence", "collateral", "token", "other"]),
            st.one_of(
                st.none(),
                st.integers(),
                st.text(max_size=40),
                st.dictionaries(st.text(max_size=5), st.text(max_size=5)),
            ),
            max_size=4,
        ).map(lambda document: json.dumps(document).encode()),
    )
)
def test_malformed_attestation_answers_raise_only_bad_data(body: bytes) -> None:
    with pytest.raises(BadDataError):
        parse_answer(body)


# -- command line -----------------------------------------------------------------------------------------------------


def _run(command: Any, args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = run_guarded(command, args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_encrypt_upload_and_infer(
    host: FakeHost,
    url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source, key_file, out = tmp_path / "mlp.onnx", tmp_path / "mlp.key", tmp_path / "mlp.enkm"
    source.write_bytes(MLP)
    code, _, err = _run(
        model_command,
        [
            "encrypt",
            str(source),
            "--name",
            "cli-mlp",
            "--version",
            "5",
            "--key-file",
            str(key_file),
            "-o",
            str(out),
        ],
        capsys,
    )
    assert code == EXIT_OK, err
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = bytes.fromhex(key_file.read_text().strip())
    assert decrypt_model(out.read_bytes(), key)[1] == MLP and hashlib.sha256(MLP).hexdigest() in err
    trust = ["--url", url, "--mrenclave", MR_ENCLAVE.hex(), "--allow-simulated"]
    monkeypatch.setenv("ENKLAVE_INFERENCE_OWNER_TOKEN", OWNER)
    # The progress bar path, as for a large container.
    # The package attribute "model" is the click group, so reach the module itself through sys.modules.
    monkeypatch.setattr(sys.modules["enklave.cli.model"], "_PROGRESS_THRESHOLD", 0)
    code, stdout, err = _run(model_command, ["upload", str(out), *trust, "--key-file", str(key_file)], capsys)
    assert code == EXIT_OK, err
    uploaded = json.loads(stdout)
    assert (
        uploaded["status"] == "loaded by the enclave"
        and uploaded["sha256"] == hashlib.sha256(MLP).hexdigest()
    )
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "inputs.npz", x=x)
    saved = tmp_path / "out.npz"
    api = tmp_path / "api.key"
    api.write_text(API_KEY + "\n")
    for spec in ("x.npy", "x=x.npy", "inputs.npz"):
        args = [
            "--model",
            "cli-mlp",
            "--input",
            str(tmp_path / spec) if "=" not in spec else f"x={tmp_path / 'x.npy'}",
        ]
        code, stdout, err = _run(
            infer_command, [*trust, *args, "--api-key-file", str(api), "--json", "--save", str(saved)], capsys
        )
        assert code == EXIT_OK, err
        document = json.loads(stdout)
        assert (
            document["enclave"]["mr_enclave"] == MR_ENCLAVE.hex() and document["enclave"]["simulated"] is True
        )
        assert document["outputs"]["y"]["shape"] == [2, 3]
        with np.load(saved, allow_pickle=False) as arrays:
            np.testing.assert_allclose(arrays["y"], plain(MLP, {"x": x})[0], rtol=1e-6)
    monkeypatch.setenv("ENKLAVE_INFERENCE_API_KEY", API_KEY)
    code, stdout, err = _run(
        infer_command, [*trust, "--model", "cli-mlp", "--input", str(tmp_path / "x.npy")], capsys
    )
    assert code == EXIT_OK, err
    assert f"MRENCLAVE {MR_ENCLAVE.hex()}" in stdout and "SIMULATED" in stdout and "1. class" not in stdout
    code, stdout, _ = _run(model_command, ["list", "--url", url], capsys)
    assert code == EXIT_OK and {"name": "cli-mlp", "version": "5"} in json.loads(stdout)["models"]
    code, stdout, _ = _run(model_command, ["delete", "cli-mlp", "5", "--url", url], capsys)
    assert code == EXIT_OK and json.loads(stdout)["deleted"] is True


def test_cli_model_credentials_prints_what_the_host_is_configured_with(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ENKLAVE_INFERENCE_OWNER_TOKEN", raising=False)
    token_file = tmp_path / "owner.token"
    token_file.write_text(OWNER + "\n")
    code, stdout, err = _run(model_command, ["credentials", "--owner-token-file", str(token_file)], capsys)
    assert code == EXIT_OK, err
    assert json.loads(stdout) == {"owner_credential": CREDENTIAL, "owner_token_sha256": OWNER_SHA256}
    assert OWNER not in stdout + err
    monkeypatch.setenv("ENKLAVE_INFERENCE_OWNER_TOKEN", OWNER)
    code, stdout, _ = _run(model_command, ["credentials", "--format", "env"], capsys)
    assert code == EXIT_OK and stdout.splitlines() == [
        f"ENKLAVE_INFERENCE_OWNER_CREDENTIAL={CREDENTIAL}",
        f"ENKLAVE_INFERENCE_OWNER_TOKEN_SHA256={OWNER_SHA256}",
    ]
    # A token the service would refuse is refused here too, without echoing it.
    code, stdout, err = _run(model_command, ["credentials", "--owner-token", "too-short"], capsys)
    assert code == EXIT_USAGE and stdout == "" and "too-short" not in err and "16" in err


def test_cli_refuses_without_a_pinned_enclave_or_with_the_wrong_one(
    host: FakeHost, url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    np.save(tmp_path / "x.npy", MARKER)
    base = ["--url", url, "--model", "mlp", "--input", str(tmp_path / "x.npy"), "--allow-simulated"]
    code, _, err = _run(infer_command, base, capsys)
    assert code == EXIT_USAGE and "--mrenclave" in err
    code, _, err = _run(infer_command, [*base, "--mrenclave", "00" * 32], capsys)
    assert code == EXIT_VERIFICATION and "mr_enclave" in err and len(err.strip().splitlines()) == 1
    # The simulated collateral has TCB evaluation data number 17: a minimum above it refuses the enclave.
    recovered = [*base, "--mrenclave", MR_ENCLAVE.hex(), "--min-tcb-evaluation-data-number", "18"]
    code, _, err = _run(infer_command, recovered, capsys)
    assert code == EXIT_VERIFICATION and "TCB evaluation data number 17 is below the minimum 18" in err
    code, _, err = _run(
        infer_command,
        ["--url", url, "--model", "mlp", "--input", str(tmp_path / "x.npy"), "--mrenclave", MR_ENCLAVE.hex()],
        capsys,
    )
    assert code == EXIT_VERIFICATION and "simulated" in err
    _only_attested(host)
    # A pickled object array is refused, before anything is sent.
    host.log.clear()
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    args = ["--url", url, "--model", "mlp", "--input", str(tmp_path / "objects.npy"), "--allow-simulated"]
    code, _, err = _run(infer_command, [*args, "--mrenclave", MR_ENCLAVE.hex()], capsys)
    assert code == EXIT_BAD_INPUT and "not a numpy" in err and host.log == []


# -- against the real service -----------------------------------------------------------------------------------------


class Recording(httpx.BaseTransport):
    """A network transport that keeps a copy of every request it sends: method, URL, headers and body."""

    def __init__(self) -> None:
        self._inner = httpx.HTTPTransport()
        self.sent: list[bytes] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        headers = b"".join(name + b": " + value + b"\n" for name, value in request.headers.raw)
        self.sent.append(f"{request.method} {request.url}\n".encode() + headers + b"\n" + body)
        return self._inner.handle_request(request)

    def close(self) -> None:
        self._inner.close()


def test_against_the_real_service_in_simulation(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The host is configured without the owner token: only the credential derived from it and its SHA-256.
    config = InferenceConfig(
        data_dir=tmp_path / "service", mode="sim", home=home, owner_credential=CREDENTIAL,
        owner_token_sha256=OWNER_SHA256, api_key=API_KEY, max_batch=1,
    )  # fmt: skip
    x = np.random.default_rng(11).normal(size=(3, 4)).astype(np.float32)
    recording = Recording()
    with serve_inference(config) as running:
        mr_enclave = bytes(running.service.info.mr_enclave)
        policy = EnclavePolicy(mr_enclave=mr_enclave, allow_simulated=True)
        with client_for(running.url, policy=policy, transport=recording) as client:
            # An owner-keyed upload: the container to the host, then the key to the enclave with the owner token.
            result = client.upload_model(MLP, name="mlp", version=1)
            assert result.loaded and result.sha256 == hashlib.sha256(MLP).hexdigest()
            assert client.attestation is not None and client.attestation.mr_enclave == mr_enclave
            np.testing.assert_allclose(client.infer("mlp", {"x": x})["y"], plain(MLP, {"x": x})[0], rtol=1e-6)
            assert [(entry["name"], entry["version"]) for entry in client.models()] == [("mlp", "1")]
            assert [(m["name"], m["status"]) for m in client.uploaded_models()["models"]] == [
                ("mlp", "loaded")
            ]
            with pytest.raises(BoundaryError):
                client.infer("mlp", {"x": np.ones((1, 7), dtype=np.float32)})
        # Every byte the host received: the token is in none of them, the credential is where the host needs it.
        sent = b"\n".join(recording.sent)
        assert len(recording.sent) >= 5 and OWNER.encode() not in sent
        assert f"authorization: Bearer {CREDENTIAL}".encode() in sent
        # A wrong credential is refused with a challenge; so is the owner token itself, were a caller to send it.
        for wrong in (OWNER, CREDENTIAL[:-1] + ("A" if CREDENTIAL[-1] != "A" else "B")):
            refused = httpx.get(f"{running.url}/v1/models", headers={"authorization": f"Bearer {wrong}"})
            assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer")
        with (
            client_for(running.url, policy=policy, owner_token=OWNER + "x") as client,
            pytest.raises(UsageError, match="HTTP 401"),
        ):
            client.uploaded_models()
        with (
            client_for(
                running.url, policy=EnclavePolicy(mr_enclave=MR_ENCLAVE, allow_simulated=True)
            ) as client,
            pytest.raises(PolicyError),
        ):
            client.infer("mlp", {"x": x})
        np.save(tmp_path / "x.npy", x)
        args = ["--url", running.url, "--mrenclave", mr_enclave.hex(), "--allow-simulated", "--model", "mlp"]
        api = tmp_path / "api.key"
        api.write_text(API_KEY)
        code, stdout, err = _run(
            infer_command,
            [*args, "--input", str(tmp_path / "x.npy"), "--api-key-file", str(api), "--json"],
            capsys,
        )
        assert code == EXIT_OK, err
        assert json.loads(stdout)["enclave"]["mr_enclave"] == mr_enclave.hex()


def test_the_client_policy_carries_every_identity_option() -> None:
    from enklave.cli.infer import TrustOptions, _policy

    def options(**identity: Any) -> TrustOptions:
        defaults: dict[str, Any] = {"mrenclave": (), "mrsigner": (), "isv_prod_id": None, "min_svn": None,
                                    "min_tcb_eval": None}  # fmt: skip
        return TrustOptions(url="http://127.0.0.1:1", **{**defaults, **identity}, allow_debug=False,
                            allow_simulated=True, roots=(), attestation="quote", attestation_url=None)  # fmt: skip

    mapping = _policy(options(mrsigner=("AB" * 32,), isv_prod_id=3, min_svn=2, min_tcb_eval=17)).to_mapping()
    assert (mapping["mr_signer"], mapping["isv_prod_id"], mapping["min_isv_svn"]) == (["ab" * 32], 3, 2)
    assert mapping["min_tcb_evaluation_data_number"] == 17
    assert mapping["allow_simulated"] is True and mapping["allow_debug"] is False
    assert _policy(options(mrenclave=("cd" * 32,))).to_mapping()["mr_enclave"] == ["cd" * 32]
    # Options left out stay at the policy's defaults.
    assert "isv_prod_id" not in _policy(options(mrenclave=("cd" * 32,))).to_mapping()
