"""Attested Oblivious HTTP: a gateway key that lives in an enclave, and clients that check so before using it.

The enclave side, :class:`OhttpGateway`, generates its key pairs (X25519 by default, P-256 on request),
publishes their ``application/ohttp-keys`` encoding with a quote that binds it (:class:`KeyConfigEvidence`, the
layout is in :func:`key_config_report_data`), and answers encapsulated Binary HTTP requests (RFC 9458 over RFC
9292) with an application handler. The client side verifies the evidence (:func:`verify_key_config_evidence`:
DCAP verification, the binding, the nonce, the appraisal policy), and only then builds an
:class:`AttestedOhttpClient` that encapsulates requests to the attested key. Any number of untrusted relays and
load balancers may carry the bytes between them: they see neither requests nor responses, and cannot substitute a
key of their own, replay old evidence to a client that sent a nonce, or pass off a response to another request.

This module does no I/O. Errors: :class:`~enklave.errors.InvalidQuote` (envelope or quote malformed),
:class:`~enklave.errors.InvalidKey` (key configurations malformed, or none usable), what quote verification
raises, :class:`~enklave.errors.BindingError` (the quote does not bind these keys, or not this nonce),
:class:`~enklave.errors.PolicyError` (the enclave is not one the policy accepts),
:class:`~enklave.errors.BadDataError` / :class:`~enklave.errors.VerificationError` for malformed or tampered
encapsulated messages, :class:`~enklave.errors.UsageError` for caller mistakes.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import InitVar, dataclass, field
from datetime import datetime
from typing import Final

from enklave.attestation.appraiser import Appraiser, verify_with_collateral
from enklave.attestation.policy import Policy
from enklave.attestation.sources import CollateralSource
from enklave.attestation.trust import TrustedRoot
from enklave.attestation.verified import VerifiedQuote
from enklave.attestation.verify import QuoteVerifier
from enklave.channels._ohttp_bhttp import (
    BHTTP_MEDIA_TYPE,
    BhttpRequest,
    BhttpResponse,
    Fields,
    InformationalResponse,
)
from enklave.channels._ohttp_evidence import (
    EVIDENCE_MEDIA_TYPE,
    MAX_EVIDENCE_SIZE,
    MAX_NONCE_SIZE,
    REPORT_DATA_DOMAIN,
    KeyConfigEvidence,
    key_config_report_data,
)
from enklave.channels._ohttp_gateway import Handler, OhttpGateway
from enklave.channels._verified import QuoteIdentity
from enklave.channels.ohttp import (
    DEFAULT_MAX_MESSAGE_SIZE,
    ClientContext,
    KeyConfig,
    OhttpClient,
    SymmetricSuite,
)
from enklave.errors import BindingError, InvalidKey, UsageError
from enklave.sgx.quote import Quote

__all__ = [
    "BHTTP_MEDIA_TYPE",
    "EVIDENCE_MEDIA_TYPE",
    "MAX_EVIDENCE_SIZE",
    "MAX_NONCE_SIZE",
    "OHTTP_KEYS_MEDIA_TYPE",
    "OHTTP_REQUEST_MEDIA_TYPE",
    "OHTTP_RESPONSE_MEDIA_TYPE",
    "REPORT_DATA_DOMAIN",
    "AttestedOhttpClient",
    "BhttpRequest",
    "BhttpResponse",
    "EncapsulatedRequest",
    "Fields",
    "GatewayVerifier",
    "Handler",
    "InformationalResponse",
    "KeyConfigEvidence",
    "OhttpGateway",
    "VerifiedKeyConfig",
    "key_config_report_data",
    "verify_key_config_evidence",
]

OHTTP_KEYS_MEDIA_TYPE: Final = "application/ohttp-keys"
OHTTP_REQUEST_MEDIA_TYPE: Final = "message/ohttp-req"
OHTTP_RESPONSE_MEDIA_TYPE: Final = "message/ohttp-res"

_VERIFIER_TOKEN = object()


@dataclass(frozen=True, slots=True)
class VerifiedKeyConfig(QuoteIdentity):
    """Key configurations whose evidence verified, was appraised, and binds them (and the nonce, if any).

    Only :func:`verify_key_config_evidence` builds one (a private token guards the constructor), so holding one
    proves the checks passed. ``key_config`` is the configuration chosen to encrypt to, ``key_configs`` all the
    supported ones the evidence lists, ``quote`` the verified quote and ``evidence`` what was verified.
    ``mr_enclave`` and ``mr_signer`` are the gateway enclave's, from ``quote``.
    """

    key_config: KeyConfig
    key_configs: tuple[KeyConfig, ...]
    quote: VerifiedQuote
    evidence: KeyConfigEvidence
    _token: InitVar[object]

    def __post_init__(self, _token: object) -> None:
        if _token is not _VERIFIER_TOKEN:
            raise UsageError("a VerifiedKeyConfig is only built by verify_key_config_evidence")

    @property
    def nonce(self) -> bytes | None:
        """The nonce the evidence binds, or None when it was made without one."""
        return self.evidence.nonce or None


def _choose(configs: tuple[KeyConfig, ...], key_id: int | None) -> KeyConfig:
    usable = [c for c in configs if any(s.supported for s in c.suites)]
    if key_id is not None:
        usable = [c for c in usable if c.key_id == key_id]
    if not usable:
        wanted = "" if key_id is None else f" with key id {key_id}"
        raise InvalidKey(f"the attested key configurations hold no usable configuration{wanted}")
    return usable[0]


def verify_key_config_evidence(
    evidence: bytes | KeyConfigEvidence,
    *,
    collateral_source: CollateralSource,
    policy: Policy,
    now: datetime,
    roots: Sequence[TrustedRoot] | None = None,
    verifier: QuoteVerifier | None = None,
    nonce: bytes | None = None,
    key_id: int | None = None,
) -> VerifiedKeyConfig:
    """Verify gateway key evidence and appraise its enclave; raise on any failure, never return a verdict.

    Steps: (1) parse the envelope (size limit first), the key configurations and the quote; (2) if ``nonce`` is
    given, the evidence must carry exactly it; (3) fetch collateral and verify the quote at ``now`` with
    ``roots`` (default: Intel's root) or ``verifier`` (its roots and cache); (4) the report data must be
    :func:`key_config_report_data` of the published key configurations and the evidence's nonce, all 64 bytes;
    (5) ``policy.appraise`` the verified quote; (6) choose the configuration with ``key_id``, else the first
    one with a supported suite.

    Raises :class:`~enklave.errors.InvalidQuote`, :class:`InvalidKey`, :class:`BindingError` (another key, or a
    stale or missing nonce), :class:`~enklave.errors.PolicyError`, whatever quote verification and the
    collateral source raise, and :class:`UsageError` for a bad argument.
    """
    if now.tzinfo is None:
        raise UsageError("now must be timezone-aware (UTC)")
    if roots is not None and verifier is not None:
        raise UsageError("pass roots or a verifier (which has its own roots), not both")
    if nonce is not None and not (isinstance(nonce, bytes) and 0 < len(nonce) <= MAX_NONCE_SIZE):
        raise UsageError(f"nonce must be 1 to {MAX_NONCE_SIZE} bytes")
    quote_verifier = verifier if verifier is not None else QuoteVerifier(roots, cache_size=0)

    # 1. Parse everything before any network or signature work.
    parsed = evidence if isinstance(evidence, KeyConfigEvidence) else KeyConfigEvidence.from_bytes(evidence)
    configs = parsed.configs
    quote = Quote.from_bytes(parsed.quote)

    # 2. Freshness: evidence made for another nonce (or none) is a replay to this client.
    if nonce is not None:
        if not parsed.nonce:
            raise BindingError("a nonce was expected but the key evidence carries none")
        if not hmac.compare_digest(parsed.nonce, nonce):
            raise BindingError("the key evidence was made for another nonce (stale or replayed)")

    # 3. DCAP verification.
    verified = verify_with_collateral(quote, collateral_source, quote_verifier, now)

    # 4. The quote binds exactly these key configurations and this nonce.
    expected = key_config_report_data(parsed.key_configs, parsed.nonce)
    if not hmac.compare_digest(bytes(verified.report_data), expected):
        raise BindingError("the quote's report data does not bind these OHTTP key configurations")

    # 5. Appraisal: is this an enclave the caller trusts?
    policy.appraise(verified)

    # 6. The key to encrypt to.
    return VerifiedKeyConfig(_choose(configs, key_id), configs, verified, parsed, _VERIFIER_TOKEN)


class GatewayVerifier(Appraiser):
    """Verifies gateway key evidence with long-lived parts: collateral, policy, roots or verifier, clock.

    One instance serves many verifications (its :class:`QuoteVerifier` caches collateral checks), e.g. when a
    gateway restarts with a new key. See :class:`~enklave.attestation.appraiser.Appraiser` for the arguments.
    """

    def verify(
        self, evidence: bytes | KeyConfigEvidence, *, nonce: bytes | None = None, key_id: int | None = None
    ) -> VerifiedKeyConfig:
        """:func:`verify_key_config_evidence` at the clock's time; raises what it raises."""
        return verify_key_config_evidence(
            evidence,
            collateral_source=self.collateral_source,
            policy=self.policy,
            now=self.clock(),
            verifier=self.quote_verifier,
            nonce=nonce,
            key_id=key_id,
        )


@dataclass(frozen=True, slots=True, eq=False)
class EncapsulatedRequest:
    """One encapsulated request: ``message`` to send (``message/ohttp-req``) and what opens its response."""

    message: bytes
    _context: ClientContext = field(repr=False)

    def open(self, encapsulated_response: bytes) -> BhttpResponse:
        """Decrypt this request's response and decode its Binary HTTP.

        Raises :class:`~enklave.errors.VerificationError` when the response does not authenticate (tampered, or
        the response to another request), and :class:`BadDataError` when it is truncated, over the size limit
        or not a valid Binary HTTP response.
        """
        return BhttpResponse.from_bytes(self._context.decapsulate_response(encapsulated_response))


class AttestedOhttpClient:
    """Encapsulates requests to a key configuration that verified evidence bound to an enclave.

    Build it from a :class:`VerifiedKeyConfig` (there is no way to pass a bare key), or with
    :meth:`from_evidence`. ``suite`` and ``max_message_size`` are those of :class:`OhttpClient`. Raises
    :class:`UsageError` when ``verified`` is not a :class:`VerifiedKeyConfig` or the suite is not offered.
    """

    def __init__(
        self,
        verified: VerifiedKeyConfig,
        *,
        suite: SymmetricSuite | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        if not isinstance(verified, VerifiedKeyConfig):
            raise UsageError("AttestedOhttpClient needs a VerifiedKeyConfig from verify_key_config_evidence")
        self.verified = verified
        self._client = OhttpClient(verified.key_config, suite=suite, max_message_size=max_message_size)

    @classmethod
    def from_evidence(
        cls,
        evidence: bytes | KeyConfigEvidence,
        verifier: GatewayVerifier,
        *,
        nonce: bytes | None = None,
        key_id: int | None = None,
        suite: SymmetricSuite | None = None,
    ) -> AttestedOhttpClient:
        """Verify ``evidence`` with ``verifier`` (see :func:`verify_key_config_evidence`), then build the client."""
        return cls(verifier.verify(evidence, nonce=nonce, key_id=key_id), suite=suite)

    @property
    def key_config(self) -> KeyConfig:
        """The attested key configuration requests are encrypted to."""
        return self.verified.key_config

    def encapsulate(self, request: BhttpRequest) -> EncapsulatedRequest:
        """Encode ``request`` as Binary HTTP and encapsulate it (RFC 9458 §4.3) with a fresh HPKE context.

        Raises :class:`UsageError` when it is not a :class:`BhttpRequest` or is over the size limit.
        """
        if not isinstance(request, BhttpRequest):
            raise UsageError("encapsulate takes a BhttpRequest")
        message, context = self._client.encapsulate_request(request.to_bytes())
        return EncapsulatedRequest(message, context)

    def encapsulate_request(self, request: bytes) -> tuple[bytes, ClientContext]:
        """Encapsulate raw bytes as :meth:`OhttpClient.encapsulate_request` does (for non-BHTTP content)."""
        return self._client.encapsulate_request(request)
