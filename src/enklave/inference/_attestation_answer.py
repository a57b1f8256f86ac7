"""What the inference host answers ``GET /v1/attestation`` with: evidence, its collateral, and a token.

:class:`EvidenceAnswers` turns the enclave's :class:`~enklave.channels.ohttp_attested.KeyConfigEvidence` into the
JSON answer ``{"evidence": base64url, "collateral": <QuoteCollateral JSON object>, "token"?: JWT}``. The
collateral (for the quote's FMSPC and PCK CA) comes from the configured source and is kept as JSON while the
source returns the same object. The token, when an attestation service is configured, vouches for the same
quote with :func:`token_runtime_data` as its runtime data, so that its ``x-ms-sgx-ehd`` claim is the preimage of
the report data's first half and ``x-ms-sgx-report-data`` is exactly what the evidence's quote holds.

Nothing here is trusted by clients: the quote's signatures and the binding are what they verify.
"""

from __future__ import annotations

import logging
import struct
import threading
from typing import Any

from enklave import _b64url
from enklave._json import loads
from enklave.attestation.collateral import QuoteCollateral
from enklave.attestation.evidence import collateral_request
from enklave.attestation.sources import CollateralSource
from enklave.channels.ohttp_attested import REPORT_DATA_DOMAIN, KeyConfigEvidence
from enklave.errors import BadDataError, EnklaveError, TransportError
from enklave.services._response import ServiceResponse
from enklave.services.attestation.client import AttestationClient
from enklave.sgx.quote import Quote

__all__ = ["EvidenceAnswers", "token_runtime_data"]

log = logging.getLogger("enklave.inference")


def token_runtime_data(key_configs: bytes, nonce: bytes) -> bytes:
    """What the token binds: the bytes whose SHA-256 is the first half of the evidence's report data
    (``REPORT_DATA_DOMAIN || uint32_be(len) || key configurations || uint8(len) || nonce``)."""
    return (
        REPORT_DATA_DOMAIN
        + struct.pack(">I", len(key_configs))
        + key_configs
        + struct.pack(">B", len(nonce))
        + nonce
    )


class EvidenceAnswers:
    """Builds ``/v1/attestation`` answers from ``source`` (collateral) and ``attestation_url`` (tokens; None: no
    token). Thread-safe."""

    def __init__(self, source: CollateralSource, attestation_url: str | None) -> None:
        self._source = source
        self._attestation_url = attestation_url
        self._lock = threading.Lock()
        self._cache: dict[tuple[bytes, str], tuple[QuoteCollateral, dict[str, Any]]] = {}

    def _collateral(self, quote: bytes) -> dict[str, Any]:
        request = collateral_request(Quote.from_bytes(quote))
        collateral = self._source.fetch(request.fmspc, request.ca)
        key = (request.fmspc, request.ca)
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None and cached[0] is collateral:
            return cached[1]
        document: dict[str, Any] = loads(collateral.to_json())
        with self._lock:
            self._cache[key] = (collateral, document)
        return document

    def answer(self, evidence: bytes) -> ServiceResponse:
        """The answer for ``evidence`` (the enclave's envelope): 200, or 503 without collateral, 502 when the
        attestation service gives no token."""
        parsed = KeyConfigEvidence.from_bytes(evidence)
        try:
            body: dict[str, Any] = {
                "evidence": _b64url.encode(evidence),
                "collateral": self._collateral(parsed.quote),
            }
        except (TransportError, BadDataError) as exc:
            log.error("no collateral for the enclave's quote: %s", exc)
            return ServiceResponse.error(
                503, "CollateralUnavailable", "the quote's collateral is unavailable"
            )
        if self._attestation_url is not None:
            runtime = token_runtime_data(parsed.key_configs, parsed.nonce)
            try:
                with AttestationClient(self._attestation_url) as client:
                    body["token"] = client.attest_sgx(parsed.quote, runtime_data=runtime)
            except EnklaveError as exc:
                log.error("the attestation service gave no token: %s: %s", type(exc).__name__, exc)
                return ServiceResponse.error(
                    502, "AttestationFailed", "the attestation service gave no token"
                )
        return ServiceResponse(200, body)
