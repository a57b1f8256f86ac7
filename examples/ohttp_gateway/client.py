"""A client of the Oblivious HTTP gateway: attest the gateway's key through a relay, then send requests.

The client talks only to the relay, so the gateway never learns its address, and the relay only ever sees
encapsulated bytes. Before it encrypts anything it verifies the evidence: the quote (signatures, collateral,
TCB), the binding of the published key configurations and of its own fresh nonce into the quote's report data,
and the appraisal policy (the MRENCLAVE it expects). A relay that swaps in its own key, or replays evidence made
for another nonce, is caught there; a response it tampers with or replays does not authenticate.
"""

from __future__ import annotations

import base64
import os
from types import TracebackType

import httpx

from enklave.attestation import EnclavePolicy, PcsCollateralSource, intel_sgx_root
from enklave.channels.ohttp_attested import (
    EVIDENCE_MEDIA_TYPE,
    OHTTP_REQUEST_MEDIA_TYPE,
    OHTTP_RESPONSE_MEDIA_TYPE,
    AttestedOhttpClient,
    BhttpRequest,
    BhttpResponse,
    GatewayVerifier,
    VerifiedKeyConfig,
)
from enklave.errors import TransportError, UsageError
from enklave.platform.simulated import SimulatedCollateralSource, simulated_root

EVIDENCE_PATH = "/.well-known/ohttp-gateway/evidence"
GATEWAY_PATH = "/gateway"


def verifier_for(mode: str, mr_enclave: bytes) -> GatewayVerifier:
    """Accept only the gateway enclave ``mr_enclave``: on real SGX under Intel's root, in simulation under
    this machine's simulated root (trusted explicitly, and only then is simulated evidence accepted)."""
    simulated = mode == "sim"
    policy = EnclavePolicy(mr_enclave=mr_enclave, allow_simulated=simulated)
    if simulated:
        return GatewayVerifier(
            collateral_source=SimulatedCollateralSource(), policy=policy, roots=[simulated_root()]
        )
    return GatewayVerifier(collateral_source=PcsCollateralSource(), policy=policy, roots=[intel_sgx_root()])


class GatewayClient:
    """Sends Binary HTTP requests to an attested gateway through the relay at ``relay_url``.

    :meth:`attest` must succeed before :meth:`send`. Raises :class:`TransportError` when the relay or the
    gateway answers an HTTP error, and the verification errors of
    :func:`~enklave.channels.ohttp_attested.verify_key_config_evidence`.
    """

    def __init__(
        self, relay_url: str, verifier: GatewayVerifier, *, http: httpx.Client | None = None, key_id: int = 1
    ) -> None:
        self._http = http if http is not None else httpx.Client(base_url=relay_url, timeout=30.0)
        self._verifier = verifier
        self._key_id = key_id
        self._client: AttestedOhttpClient | None = None

    def attest(self) -> VerifiedKeyConfig:
        """Fetch evidence for a fresh nonce, verify it, and keep a client for the attested key."""
        nonce = os.urandom(32)
        text = base64.urlsafe_b64encode(nonce).rstrip(b"=").decode()
        answer = self._check(self._http.get(EVIDENCE_PATH, params={"nonce": text}), EVIDENCE_MEDIA_TYPE)
        verified = self._verifier.verify(answer.content, nonce=nonce, key_id=self._key_id)
        self._client = AttestedOhttpClient(verified)
        return verified

    def send(self, request: BhttpRequest) -> BhttpResponse:
        """Encapsulate ``request`` to the attested key, post it through the relay, open the response."""
        if self._client is None:
            raise UsageError("call attest() before send()")
        encapsulated = self._client.encapsulate(request)
        headers = {"content-type": OHTTP_REQUEST_MEDIA_TYPE}
        answer = self._http.post(GATEWAY_PATH, content=encapsulated.message, headers=headers)
        return encapsulated.open(self._check(answer, OHTTP_RESPONSE_MEDIA_TYPE).content)

    @staticmethod
    def _check(answer: httpx.Response, media_type: str) -> httpx.Response:
        if answer.status_code != 200:
            raise TransportError(f"the gateway answered HTTP {answer.status_code}: {answer.text[:200]}")
        if answer.headers.get("content-type", "").split(";")[0] != media_type:
            raise TransportError(
                f"the gateway answered {answer.headers.get('content-type')!r}, not {media_type}"
            )
        return answer

    def close(self) -> None:
        """Close the HTTP client."""
        self._http.close()

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
