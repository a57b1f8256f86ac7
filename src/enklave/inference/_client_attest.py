"""The client's attestation step, without I/O: parse the service's attestation answer, verify it, pin the key.

The inference host answers ``GET /v1/attestation?nonce=<b64url>`` with one JSON object::

    {"evidence": b64url(KeyConfigEvidence), "collateral": <QuoteCollateral JSON, as an object or a string>,
     "token": <attestation token, when the service has an attestation service configured>}

:func:`parse_answer` reads it (bounded, strict); :func:`verify_answer` checks it one of two ways, and either way
the result binds the gateway's OHTTP key configurations to an enclave the policy accepts and to the client's
fresh nonce:

* ``"dcap"``: DCAP verification of the evidence's quote (:func:`~enklave.channels.ohttp_attested.
  verify_key_config_evidence`) with the collateral source the caller gave, else the collateral of the answer
  itself (its signatures chain to the caller's roots, so the host cannot forge it, only make it stale);
* ``"token"``: the attestation token, checked by the caller's :class:`~enklave.attestation.tokens.TokenVerifier`
  (signature, issuer, lifetime); its ``x-ms-sgx-report-data`` claim must be exactly
  :func:`~enklave.channels.ohttp_attested.key_config_report_data` of the evidence's key configurations and the
  client's nonce, as the quote's report data must in the DCAP case; then the policy appraises the token.

Errors: :class:`~enklave.errors.BadDataError` (the answer is not the expected JSON),
:class:`~enklave.errors.InvalidQuote` / :class:`~enklave.errors.InvalidCollateral` /
:class:`~enklave.errors.InvalidToken` for a malformed part, :class:`~enklave.errors.CollateralUnavailable` when
the answer carries no collateral and no source was given, :class:`~enklave.errors.BindingError` (other keys,
another nonce), :class:`~enklave.errors.PolicyError` and whatever quote or token verification raises.
"""

from __future__ import annotations

import hmac
import json
import os
from collections.abc import Callable
from dataclasses import InitVar, dataclass
from datetime import datetime
from typing import Any, Final, Literal, Protocol

from enklave import _b64url
from enklave._json import strict_loads
from enklave.attestation.collateral import QuoteCollateral
from enklave.attestation.policy import Policy
from enklave.attestation.sources import CollateralSource
from enklave.attestation.tokens import TokenVerifier, VerifiedToken
from enklave.attestation.verified import VerifiedQuote
from enklave.attestation.verify import QuoteVerifier
from enklave.channels.ohttp import ClientContext, KeyConfig, OhttpClient
from enklave.channels.ohttp_attested import (
    MAX_EVIDENCE_SIZE,
    AttestedOhttpClient,
    GatewayVerifier,
    KeyConfigEvidence,
    key_config_report_data,
)
from enklave.errors import (
    BadDataError,
    BindingError,
    CollateralUnavailable,
    InvalidCollateral,
    InvalidKey,
    InvalidQuote,
    InvalidToken,
    PolicyError,
    UsageError,
)

__all__ = [
    "MAX_ATTESTATION_ANSWER",
    "NONCE_SIZE",
    "Attestation",
    "AttestationAnswer",
    "AttestationMethod",
    "Encapsulator",
    "new_nonce",
    "parse_answer",
    "verify_answer",
]

AttestationMethod = Literal["dcap", "token"]
NONCE_SIZE: Final = 32
"""Bytes of the fresh nonce sent with each attestation request."""
MAX_ATTESTATION_ANSWER: Final = 4 << 20
"""Largest attestation answer read (evidence ~ 8 KiB in base64url, collateral ~ 30 KiB, a token a few KiB)."""

_VERIFIER_TOKEN = object()
_ANSWER_KEYS: Final = frozenset({"evidence", "collateral", "token"})


def new_nonce() -> bytes:
    """A fresh random nonce for one attestation request."""
    return os.urandom(NONCE_SIZE)


@dataclass(frozen=True, slots=True)
class AttestationAnswer:
    """The parts of a ``/v1/attestation`` answer, parsed but not verified."""

    evidence: KeyConfigEvidence
    collateral: QuoteCollateral | None
    token: str | None


def parse_answer(body: bytes) -> AttestationAnswer:
    """Parse a ``/v1/attestation`` answer strictly (size first; unknown members rejected).

    Raises :class:`BadDataError` for an answer that is too large, not a JSON object or has unknown members,
    :class:`InvalidQuote` for evidence that is not base64url or not a key configuration envelope,
    :class:`InvalidCollateral` for malformed collateral and :class:`InvalidToken` for a token that is not text.
    """
    if len(body) > MAX_ATTESTATION_ANSWER:
        raise BadDataError(f"the attestation answer is larger than {MAX_ATTESTATION_ANSWER} bytes")
    try:
        document = strict_loads(body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadDataError("the attestation answer is not JSON") from exc
    if not isinstance(document, dict):
        raise BadDataError("the attestation answer is not a JSON object")
    unknown = sorted(set(document) - _ANSWER_KEYS)
    if unknown:
        raise BadDataError(f"the attestation answer has unknown members {unknown[:5]}")
    encoded = document.get("evidence")
    # Base64url grows data by 4/3: refuse an oversized text before decoding it.
    if not isinstance(encoded, str) or len(encoded) > (MAX_EVIDENCE_SIZE * 4) // 3 + 4:
        raise InvalidQuote("the attestation answer has no evidence, or evidence over the size limit")
    try:
        raw = _b64url.decode(encoded, canonical=False)
    except ValueError as exc:
        raise InvalidQuote("the attestation answer's evidence is not base64url") from exc
    evidence = KeyConfigEvidence.from_bytes(raw)
    collateral = _collateral(document.get("collateral"))
    token = document.get("token")
    if token is not None and not isinstance(token, str):
        raise InvalidToken("the attestation answer's token is not a string")
    return AttestationAnswer(evidence, collateral, token)


def _collateral(value: object) -> QuoteCollateral | None:
    if value is None:
        return None
    if isinstance(value, dict):
        # Re-encoding is safe: the signed parts are strings inside, kept byte for byte.
        return QuoteCollateral.from_json(json.dumps(value))
    if isinstance(value, str):
        return QuoteCollateral.from_json(value)
    raise InvalidCollateral("the attestation answer's collateral is neither a JSON object nor a string")


class _AnswerCollateral(CollateralSource):
    """Serves the collateral that came with the answer. It proves nothing by itself: the quote verifier checks
    its signatures up to the caller's roots and its validity at the verification time."""

    def __init__(self, collateral: QuoteCollateral | None) -> None:
        self._collateral = collateral

    def fetch(self, fmspc: bytes, ca: str) -> QuoteCollateral:
        if self._collateral is None:
            raise CollateralUnavailable(
                "the service sent no collateral and the client has no collateral source"
            )
        return self._collateral


class Encapsulator(Protocol):
    """What encapsulates requests to the pinned key: an OHTTP client for a verified key configuration."""

    def encapsulate_request(self, request: bytes) -> tuple[bytes, ClientContext]:
        """Encrypt ``request``; return the ``message/ohttp-req`` bytes and what opens the response."""
        ...


@dataclass(frozen=True, slots=True)
class Attestation:
    """A verified, appraised attestation of the inference enclave, and the key configuration it pinned.

    Only :func:`verify_answer` builds one (a private token guards the constructor), so holding one means every
    check passed. ``method`` says how: ``"dcap"`` (``quote`` is set) or ``"token"`` (``token`` is set). The
    identity fields are the enclave's, as the quote or the token states them.
    """

    method: AttestationMethod
    key_config: KeyConfig
    key_configs: tuple[KeyConfig, ...]
    nonce: bytes
    mr_enclave: bytes
    mr_signer: bytes
    isv_prod_id: int
    isv_svn: int
    debug: bool
    simulated: bool
    tcb_status: str
    quote: VerifiedQuote | None
    token: VerifiedToken | None
    _token: InitVar[object]

    def __post_init__(self, _token: object) -> None:
        if _token is not _VERIFIER_TOKEN:
            raise UsageError("an Attestation is only built by verifying an attestation answer")

    def describe(self) -> dict[str, Any]:
        """The identity as a JSON-ready dict (hex for measurements), for printing."""
        return {
            "method": self.method,
            "mr_enclave": self.mr_enclave.hex(),
            "mr_signer": self.mr_signer.hex(),
            "isv_prod_id": self.isv_prod_id,
            "isv_svn": self.isv_svn,
            "debug": self.debug,
            "simulated": self.simulated,
            "tcb_status": self.tcb_status,
            "key_id": self.key_config.key_id,
        }


def _choose(configs: tuple[KeyConfig, ...]) -> KeyConfig:
    for config in configs:
        if any(suite.supported for suite in config.suites):
            return config
    raise InvalidKey("the attested key configurations hold no usable configuration")


def verify_answer(
    answer: AttestationAnswer,
    *,
    nonce: bytes,
    method: AttestationMethod,
    policy: Policy,
    clock: Callable[[], datetime],
    quote_verifier: QuoteVerifier,
    collateral_source: CollateralSource | None = None,
    token_verifier: TokenVerifier | None = None,
    max_message_size: int,
) -> tuple[Attestation, Encapsulator]:
    """Verify ``answer`` for ``nonce`` (see the module docstring); return the attestation and the client that
    encrypts to its key. Raises the errors of the module docstring, :class:`UsageError` for a bad argument."""
    if method == "dcap":
        return _verify_dcap(answer, nonce, policy, clock, quote_verifier, collateral_source, max_message_size)
    if method == "token":
        if token_verifier is None:
            raise UsageError("token attestation needs a token_verifier")
        return _verify_token(answer, nonce, policy, token_verifier, max_message_size)
    raise UsageError(f"attestation must be 'dcap' or 'token', not {method!r}")


def _verify_dcap(
    answer: AttestationAnswer,
    nonce: bytes,
    policy: Policy,
    clock: Callable[[], datetime],
    quote_verifier: QuoteVerifier,
    collateral_source: CollateralSource | None,
    max_message_size: int,
) -> tuple[Attestation, Encapsulator]:
    source = collateral_source if collateral_source is not None else _AnswerCollateral(answer.collateral)
    verifier = GatewayVerifier(collateral_source=source, policy=policy, verifier=quote_verifier, clock=clock)
    # Parsing, the nonce, DCAP, the binding of the key configurations and the appraisal, in that order.
    verified = verifier.verify(answer.evidence, nonce=nonce)
    quote = verified.quote
    attestation = Attestation(
        method="dcap",
        key_config=verified.key_config,
        key_configs=verified.key_configs,
        nonce=nonce,
        mr_enclave=bytes(quote.mr_enclave),
        mr_signer=bytes(quote.mr_signer),
        isv_prod_id=quote.isv_prod_id,
        isv_svn=quote.isv_svn,
        debug=quote.debug,
        simulated=quote.simulated,
        tcb_status=str(quote.tcb_status.value),
        quote=quote,
        token=None,
        _token=_VERIFIER_TOKEN,
    )
    return attestation, AttestedOhttpClient(verified, max_message_size=max_message_size)


def _token_tcb_status(token: VerifiedToken) -> str:
    # A token from another attestation service may lack enklave's TCB claim; a permissive policy let it pass.
    try:
        return str(token.tcb_status.value)
    except PolicyError:
        return "unknown"


def _verify_token(
    answer: AttestationAnswer,
    nonce: bytes,
    policy: Policy,
    token_verifier: TokenVerifier,
    max_message_size: int,
) -> tuple[Attestation, Encapsulator]:
    evidence = answer.evidence
    # 1. The evidence must be made for this request's nonce: older evidence is a replay to this client.
    if not evidence.nonce or not hmac.compare_digest(evidence.nonce, nonce):
        raise BindingError("the key evidence was made for another nonce (stale or replayed)")
    configs = evidence.configs
    # 2. The token: signature under the issuer's keys, issuer, lifetime.
    if answer.token is None:
        raise InvalidToken("the service sent no attestation token (it has no attestation service configured)")
    token = token_verifier.verify(answer.token)
    # 3. The token states the report data of the quote it was issued for: it must bind these keys and nonce.
    expected = key_config_report_data(evidence.key_configs, nonce)
    if not hmac.compare_digest(token.report_data, expected):
        raise BindingError("the token's report data does not bind these OHTTP key configurations and nonce")
    # 4. Appraisal of the enclave the token describes.
    policy.appraise(token)
    config = _choose(configs)
    attestation = Attestation(
        method="token",
        key_config=config,
        key_configs=configs,
        nonce=nonce,
        mr_enclave=token.mr_enclave,
        mr_signer=token.mr_signer,
        isv_prod_id=token.isv_prod_id,
        isv_svn=token.isv_svn,
        debug=token.debug,
        simulated=token.simulated,
        tcb_status=_token_tcb_status(token),
        quote=None,
        token=token,
        _token=_VERIFIER_TOKEN,
    )
    return attestation, OhttpClient(config, max_message_size=max_message_size)
