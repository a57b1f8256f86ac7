"""The confidential inference client: attest the service's enclave, then talk to it end to end encrypted.

::

    policy = EnclavePolicy(mr_enclave=EXPECTED_MRENCLAVE)
    with Client("https://inference.example", policy=policy, api_key=KEY) as client:
        outputs = client.infer("resnet50", {"gpu_0/data_0": image})   # {"gpu_0/softmax_1": array}

Before the first request the client fetches ``/v1/attestation`` with a fresh nonce and verifies the answer (DCAP
with collateral, or the attestation service's token: see :mod:`enklave.inference._client_attest`). Only then does
it pin the key configuration the enclave's quote binds, and every request is an Open Inference Protocol
(KServe v2) request encapsulated with Oblivious HTTP to that key: the host relays ciphertext and sees no tensor.
A client that cannot verify raises and sends nothing. When the gateway cannot decapsulate a request (its key
changed: a restart, another replica), the client attests again, under the same policy, and retries once.

Model owners upload models encrypted here (:mod:`enklave.inference.model_format`, AES-256-GCM): the host stores
the container, and the key travels to the enclave inside the encapsulation (``PUT .../key``, owner token), or
from the key broker when the container names a KBS key. The owner token itself goes only inside the
encapsulation: the host's model routes get the host credential derived from it
(:func:`~enklave.inference.credentials.host_credential`), from which the host cannot recover the token.
:class:`Client` is synchronous and thread-safe; :class:`AsyncClient` offers the same API with ``await``.

Errors: the verification errors of attestation (:class:`~enklave.errors.PolicyError`,
:class:`~enklave.errors.BindingError`, ...), :class:`~enklave.errors.VerificationError` for a response that does
not authenticate (tampered, replayed), :class:`~enklave.errors.TransportError` when the network or the service
fails, the errors of :mod:`enklave.inference._client_messages` for error answers, :class:`~enklave.errors.UsageError`
for a bad argument.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Self

import httpx
import numpy as np

from enklave.attestation.policy import Policy
from enklave.attestation.sources import CollateralSource
from enklave.attestation.tokens import TokenVerifier
from enklave.attestation.trust import TrustedRoot
from enklave.channels.ohttp_attested import BhttpRequest, BhttpResponse
from enklave.errors import TransportError
from enklave.inference import _client_messages as msg
from enklave.inference._async_client import AsyncClient
from enklave.inference._client_attest import Attestation, AttestationMethod, new_nonce
from enklave.inference._client_base import (
    DEFAULT_MAX_REQUEST_SIZE,
    Answer,
    Base,
    Call,
    NoCookies,
    Pin,
    Progress,
    Reader,
    json_object,
    model_list,
)
from enklave.inference._client_upload import Upload, UploadResult, prepare_container, prepare_model
from enklave.inference.protocol import Limits

__all__ = ["DEFAULT_MAX_REQUEST_SIZE", "AsyncClient", "Attestation", "Client", "UploadResult"]


class Client(Base):
    """A synchronous, thread-safe client of one confidential inference service at ``url``.

    ``policy`` says which enclave to trust (an :class:`~enklave.attestation.policy.EnclavePolicy`).
    ``attestation="dcap"`` verifies the quote itself: collateral from ``collateral_source``, or else the
    collateral the service sends, checked up to ``roots`` (default: Intel's SGX root; pass
    ``[simulated_root()]`` for the simulated platform). ``attestation="token"`` trusts the attestation
    service whose tokens ``token_verifier`` checks. ``api_key`` authorizes inference, ``owner_token`` model
    management (the host gets only the credential derived from it). ``transport`` replaces httpx's network
    transport (tests); ``clock`` the time evidence is checked at. Construction does no I/O; raises
    :class:`UsageError` for a bad argument.
    """

    def __init__(
        self,
        url: str,
        *,
        policy: Policy,
        collateral_source: CollateralSource | None = None,
        roots: Sequence[TrustedRoot] | None = None,
        attestation: AttestationMethod = "dcap",
        token_verifier: TokenVerifier | None = None,
        api_key: str | None = None,
        owner_token: str | None = None,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], datetime] | None = None,
        limits: Limits | None = None,
        max_message_size: int = DEFAULT_MAX_REQUEST_SIZE,
    ) -> None:
        super().__init__(
            url, policy=policy, collateral_source=collateral_source, roots=roots, attestation=attestation,
            token_verifier=token_verifier, api_key=api_key, owner_token=owner_token, timeout=timeout,
            clock=clock, limits=limits, max_message_size=max_message_size,
        )  # fmt: skip
        self._http = httpx.Client(transport=transport, timeout=self.timeout, cookies=NoCookies())
        self._lock = threading.Lock()

    # -- HTTP --------------------------------------------------------------------------------------------

    def _call(self, call: Call) -> Answer:
        reader = Reader(call)
        try:
            with self._http.stream(
                call.method,
                f"{self.url}{call.path}",
                params=call.params,
                content=call.content,
                headers=call.headers,
            ) as response:
                for chunk in response.iter_bytes():
                    reader.feed(chunk)
                return reader.answer(response.status_code, response.headers.get("content-type", ""))
        except httpx.HTTPError as exc:
            raise TransportError(f"{call.what} failed: {type(exc).__name__}") from exc

    # -- attestation -------------------------------------------------------------------------------------

    def _fetch_and_verify(self) -> Pin:
        nonce = new_nonce()
        return self._verify(self._call(self._attestation_call(nonce)), nonce)

    def attest(self) -> Attestation:
        """Attest the service now (fresh nonce) and pin its key; returns what was verified, or raises."""
        with self._lock:
            self._pin = self._fetch_and_verify()
            return self._pin.attestation

    def _pinned(self, stale: Pin | None = None) -> Pin:
        # The lock is held while attesting, so that threads that met the same rotated key attest once.
        with self._lock:
            if self._pin is None or self._pin is stale:
                self._pin = self._fetch_and_verify()
            return self._pin

    def send(self, request: BhttpRequest) -> BhttpResponse:
        """Send one inner request to the enclave, encapsulated to the attested key; return its response.

        Attests first when nothing is pinned; re-attests and retries once when the gateway cannot decapsulate.
        """
        pin = self._pinned()
        for retry in (True, False):
            call, context = self._gateway_call(pin, request)
            response = self._open(self._call(call), context, retry)
            if response is not None:
                return response
            pin = self._pinned(stale=pin)
        raise TransportError("the gateway refused the request after re-attestation")  # pragma: no cover

    # -- inference ---------------------------------------------------------------------------------------

    def infer(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        *,
        version: str | int | None = None,
        outputs: Sequence[str] | None = None,
        binary: bool = True,
    ) -> dict[str, np.ndarray]:
        """Run ``model`` on ``inputs`` (input name -> array) in the enclave; returns output name -> array.

        ``outputs`` restricts the outputs returned; ``binary`` uses the binary tensor data extension (compact,
        exact) instead of JSON. Raises :class:`~enklave.errors.BoundaryError` when the enclave rejects the
        inputs (names, dtypes, shapes, limits), :class:`UsageError` for an unknown model or a refused API key.
        """
        request = msg.infer_request(
            model, inputs, version=version, outputs=outputs, binary=binary, api_key=self._api_key
        )
        return msg.read_infer(self.send(request), self._limits, f"infer {model}")

    def models(self) -> list[dict[str, Any]]:
        """The models the enclave serves (``GET /v2/models`` inside the encapsulation)."""
        return model_list(
            msg.read_inner_json(self.send(msg.inner_get("/v2/models", api_key=self._api_key)), "models")
        )

    def model_metadata(self, name: str, version: str | int | None = None) -> dict[str, Any]:
        """The Open Inference Protocol metadata of a model (its inputs, outputs, ``parameters.sha256``)."""
        path = msg.model_path(name, version)
        return json_object(msg.read_inner_json(self.send(msg.inner_get(path, api_key=self._api_key)), path))

    # -- model management (owner) ------------------------------------------------------------------------

    def upload_model(
        self,
        model: bytes | str | os.PathLike[str],
        *,
        name: str,
        version: str | int,
        key: bytes | None = None,
        kbs_key: str | None = None,
        kbs_public_jwk: Mapping[str, Any] | None = None,
        progress: Progress | None = None,
    ) -> UploadResult:
        """Encrypt the ONNX ``model`` (bytes or a path) here and upload it as ``name``/``version``.

        With an owner key (``key``, or a fresh random one when None) the client attests the enclave before
        anything is sent, uploads the container, then hands the key to the enclave through the encapsulation.
        With ``kbs_key`` the container names that key-broker key and the enclave gets its key from the broker
        after attestation: with ``kbs_public_jwk`` (the public JWK of that RSA or EC P-256 key, or the view
        :meth:`KbsClient.get_key <enklave.services.kbs.client.KbsClient.get_key>` answers) the model key (``key``
        or a fresh one) travels only wrapped to it in the container's header (an envelope key: the broker
        releases its private half to the enclave, which unwraps the model key); without it ``key`` must be the
        broker key's own value. ``progress(sent, total)`` follows the upload. Returns the key and the model's
        SHA-256, which the enclave's metadata must report (else :class:`VerificationError`).
        """
        return self._upload(
            prepare_model(
                model, name=name, version=version, key=key, kbs_key=kbs_key, kbs_public_jwk=kbs_public_jwk
            ),
            progress,
        )

    def upload_encrypted(
        self,
        container: bytes | str | os.PathLike[str],
        *,
        key: bytes | None = None,
        progress: Progress | None = None,
    ) -> UploadResult:
        """Upload a container :func:`~enklave.inference.model_format.encrypt_model` made (``enklave model
        encrypt``). An owner-keyed container needs ``key``; it is checked here by decrypting locally."""
        return self._upload(prepare_container(container, key=key), progress)

    def _upload(self, upload: Upload, progress: Progress | None) -> UploadResult:
        owner = self._owner()
        if upload.send_key:
            # Attest before sending anything: a client that cannot verify sends nothing.
            self._pinned()
        answer = self._call(self._upload_call(upload, progress)).json()
        key_request = self._key_request(upload, owner)
        if key_request is None:
            return upload.result(answer)
        return self._key_answer(upload, answer, self.send(key_request))

    def delete_model(self, name: str, version: str | int) -> dict[str, Any]:
        """Delete one uploaded model version (owner); returns the host's answer."""
        return self._call(self._delete_call(name, version)).json()

    def uploaded_models(self) -> dict[str, Any]:
        """The host's list of stored model containers (owner; ``GET /v1/models``)."""
        return self._call(self._uploaded_models_call()).json()

    # -- lifecycle ---------------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the HTTP connections."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
