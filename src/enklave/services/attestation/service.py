"""The host side of enklave's attestation service: its enclave, its state and the MAA REST operations.

:class:`AttestationService` signs the service's enclave (package data ``enclave_app/``) into the data
directory with a signing key kept there, loads it (simulated or SGX), unseals the token signing key from
storage (the enclave creates it on first start), and answers the operations of Microsoft Azure Attestation's
REST API, api-version ``2022-08-01``, as :class:`ServiceResponse` values that :mod:`.app` serves over HTTP:

* ``attest(type, body)``: the host parses the request only to learn which collateral to fetch (through a
  :class:`~enklave.attestation.sources.CachingCollateralSource`), then hands the raw body, the stored policy
  and the collateral to the enclave, which does every check itself and signs the token.
* ``openid_metadata()``, ``certs()``: the issuer's metadata and the JWKS of the enclave's signing certificate.
* ``get_policy``, ``set_policy``, ``reset_policy``: policies in storage (namespace ``policies``); setting and
  resetting need the admin bearer token configured at start, and are disabled when none is.

The host never holds the signing key: storage keeps it sealed to the enclave's MRENCLAVE (namespace
``enclave-state``). Errors in requests become 4xx responses with ``{"error": {"code", "message"}}``; only a
bug in the service becomes a 500.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509

from enklave import host
from enklave._json import loads
from enklave.attestation._jwks import b64url_encode
from enklave.attestation.collateral import QuoteCollateral
from enklave.attestation.evidence import collateral_request
from enklave.attestation.sources import (
    INTEL_PCS_URL,
    SERVICE_MAX_AGE,
    CachingCollateralSource,
    CollateralSource,
    PcsCollateralSource,
)
from enklave.attestation.tokens import openid_configuration
from enklave.errors import (
    BoundaryError,
    CollateralUnavailable,
    EcallError,
    EnclaveRuntimeError,
    InvalidCollateral,
    InvalidPolicy,
    InvalidQuote,
    PlatformError,
    UsageError,
)
from enklave.platform.mode import resolve_mode
from enklave.platform.simulated import SimulatedCollateralSource
from enklave.services._enclave_app import sign_packaged_enclave, start_sealed
from enklave.services._response import ServiceResponse, check_admin, storage_failure
from enklave.services.attestation.policy import (
    DEFAULT_POLICIES,
    parse_policy,
    policy_text_from_jws,
    policy_token_hash,
    unsigned_policy_jws,
)
from enklave.services.attestation.request import ATTESTATION_TYPES, parse_attest_request
from enklave.services.storage import Storage
from enklave.sgx.oe import unwrap_evidence
from enklave.sgx.quote import Quote

__all__ = [
    "API_VERSION",
    "POLICY_NAMESPACE",
    "SERVICE_QUOTE_OID",
    "STATE_NAMESPACE",
    "AttestationService",
    "ServiceConfig",
    "ServiceResponse",
    "storage_failure",
]

API_VERSION = "2022-08-01"
"""The MAA REST API version the service speaks; requests must name it in ``api-version``."""
SERVICE_QUOTE_OID = x509.ObjectIdentifier("2.25.62700995316416914379449823944621140356")
"""The extension of the service's signing certificate that holds the service enclave's raw SGX quote; the
quote's report data starts with SHA-256 of the certificate's SubjectPublicKeyInfo. (A UUID OID, ITU-T X.667;
the enclave declares the same value.)"""
POLICY_NAMESPACE = "policies"
STATE_NAMESPACE = "enclave-state"
_STATE_KEY = "sealed"
_SETTINGS_FILE = "settings.json"
_BUNDLE_NAME = "attestation-service.enclave"
_MAX_POLICY_BODY = 512 << 10
_COLLATERAL_JSON_CACHE = 16
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")
_WRONG_TYPE = "the attestation type must be SgxEnclave or OpenEnclave"

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """How the service runs.

    ``data_dir`` holds the signed enclave bundle and its signing key; ``base_url`` is the issuer of tokens and
    the base of ``jku``/``jwks_uri``; ``mode`` is ``sim``, ``sgx`` or ``auto``; ``allow_simulated`` lets the
    enclave accept evidence from the simulated platform (tokens then say so in ``x-enklave-simulated``);
    ``admin_token`` guards policy changes (``None``: they are disabled); ``pcs_url`` is where real collateral
    comes from; ``home`` is ``ENKLAVE_HOME`` for the enclave and the simulated platform; ``collateral_source``
    replaces the default sources (tests); ``clock`` gives the verification time.
    """

    data_dir: Path
    base_url: str
    mode: str = "sim"
    allow_simulated: bool = False
    admin_token: str | None = None
    pcs_url: str = INTEL_PCS_URL
    home: Path | None = None
    collateral_source: CollateralSource | None = None
    ecall_timeout: float = 60.0
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    def __post_init__(self) -> None:
        if self.mode not in ("sim", "sgx", "auto"):
            raise UsageError(f"mode must be sim, sgx or auto, not {self.mode!r}")
        if not self.base_url.startswith(("http://", "https://")):
            raise UsageError("base_url must be an http(s) URL")
        if self.admin_token is not None and len(self.admin_token) < 16:
            raise UsageError("the admin token must be at least 16 characters")


class _FirstOf(CollateralSource):
    """The simulated platform's collateral for its own FMSPC, the PCS for every other platform."""

    def __init__(self, *sources: CollateralSource) -> None:
        self._sources = sources

    def fetch(self, fmspc: bytes, ca: str) -> QuoteCollateral:
        failure: CollateralUnavailable | None = None
        for source in self._sources:
            try:
                return source.fetch(fmspc, ca)
            except CollateralUnavailable as exc:
                failure = exc
        raise failure if failure is not None else CollateralUnavailable("no collateral source is configured")


def _bundle(config: ServiceConfig) -> Path:
    """Sign the packaged enclave into ``data_dir`` with the key kept there (the same MRSIGNER every start)."""
    # Measured with the code: whether this service's enclave trusts the simulated root.
    settings = json.dumps({"allow_simulated": config.allow_simulated}, sort_keys=True) + "\n"
    return sign_packaged_enclave(
        config.data_dir,
        "enklave.services.attestation",
        _BUNDLE_NAME,
        extra_files={_SETTINGS_FILE: settings.encode("utf-8")},
        mode=resolve_mode(config.mode),
    )


class AttestationService:
    """The attestation service's host: start it, serve its operations, close it.

    :meth:`start` raises what :func:`enklave.host.load` raises when the enclave does not start, and
    :class:`~enklave.errors.EcallError` when the sealed state does not unseal (the service never silently
    makes a new key over an old one). The operations never raise for bad requests: they answer 4xx.
    """

    def __init__(self, config: ServiceConfig, storage: Storage) -> None:
        self.config = config
        self.storage = storage
        self._enclave: host.Enclave | None = None
        self._certificate: x509.Certificate | None = None
        self._quote = b""
        self._jwks: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._collateral_json: dict[int, tuple[QuoteCollateral, str]] = {}
        self._source = config.collateral_source or self._default_source()

    def _default_source(self) -> CollateralSource:
        source: CollateralSource = PcsCollateralSource(self.config.pcs_url)
        if self.config.allow_simulated:
            source = _FirstOf(SimulatedCollateralSource(self.config.home), source)
        return CachingCollateralSource(source, max_age=SERVICE_MAX_AGE)

    # -- lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> None:
        """Sign and load the enclave, and unseal (or create) the token signing key."""

        def init(
            enclave: host.Enclave, sealed: bytes | None
        ) -> tuple[bytes, tuple[x509.Certificate, bytes, dict[str, Any]]]:
            result = enclave.ecall.init(sealed, self.config.base_url)
            certificate = x509.load_der_x509_certificate(result["certificate"])
            return result["sealed_state"], (certificate, result["quote"], loads(result["jwks"]))

        enclave, (self._certificate, self._quote, self._jwks) = start_sealed(
            _bundle(self.config),
            self.config,
            self.storage,
            namespace=STATE_NAMESPACE,
            key=_STATE_KEY,
            init=init,
        )
        self._enclave = enclave

    def close(self) -> None:
        """Stop the enclave (idempotent); storage stays open, its owner closes it."""
        if self._enclave is not None:
            self._enclave.close()
            self._enclave = None

    def __enter__(self) -> AttestationService:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def certificate(self) -> x509.Certificate:
        """The token signing certificate (self-signed, carrying the enclave's quote in :data:`SERVICE_QUOTE_OID`)."""
        if self._certificate is None:
            raise UsageError("the service has not started")
        return self._certificate

    @property
    def kid(self) -> str:
        """The key id of the token signing key (as in the JWKS and the tokens' ``kid``)."""
        keys = self._jwks.get("keys") or [{}]
        return str(keys[0].get("kid", ""))

    @property
    def quote(self) -> bytes:
        """The service enclave's quote over SHA-256 of the signing certificate's SubjectPublicKeyInfo."""
        return self._quote

    def _running(self) -> host.Enclave:
        if self._enclave is None:
            raise UsageError("the service has not started")
        return self._enclave

    # -- metadata ----------------------------------------------------------------------------------------

    def openid_metadata(self) -> ServiceResponse:
        """``GET /.well-known/openid-configuration``."""
        base = self.config.base_url.rstrip("/")
        return ServiceResponse(200, openid_configuration(base, f"{base}/certs"))

    def certs(self) -> ServiceResponse:
        """``GET /certs``: the JWKS, the enclave's certificate in ``x5c``."""
        self._running()
        return ServiceResponse(200, self._jwks)

    # -- attestation -------------------------------------------------------------------------------------

    def _collateral(self, quote: bytes) -> tuple[QuoteCollateral, str]:
        request = collateral_request(Quote.from_bytes(quote))
        collateral = self._source.fetch(request.fmspc, request.ca)
        # The cache hands back the same object while it is fresh: serialise it once.
        with self._lock:
            cached = self._collateral_json.get(id(collateral))
            if cached is not None and cached[0] is collateral:
                return cached
        entry = (collateral, collateral.to_json())
        with self._lock:
            if len(self._collateral_json) >= _COLLATERAL_JSON_CACHE:
                self._collateral_json.clear()
            self._collateral_json[id(collateral)] = entry
        return entry

    def attest(self, attestation_type: str, body: bytes) -> ServiceResponse:
        """``POST /attest/{attestation_type}``: ``{"token": jwt}`` (200) or an error (4xx, 5xx when the enclave
        or the collateral service failed)."""
        enclave = self._running()
        if attestation_type not in ATTESTATION_TYPES:
            return ServiceResponse.error(400, "InvalidParameter", _WRONG_TYPE)
        # 1. Parse just enough to know which collateral the enclave needs; the enclave parses again itself.
        try:
            request = parse_attest_request(body, attestation_type)
            evidence = request.evidence
            quote = unwrap_evidence(evidence)[1] if attestation_type == "OpenEnclave" else evidence
            collateral_json = self._collateral(quote)[1]
        except BoundaryError as exc:
            return ServiceResponse.error(400, "InvalidParameter", str(exc))
        except InvalidQuote as exc:
            return ServiceResponse.error(400, "InvalidEvidence", str(exc))
        except (CollateralUnavailable, PlatformError) as exc:
            log.warning("collateral unavailable: %s", exc)
            return ServiceResponse.error(503, "CollateralUnavailable", str(exc))
        except InvalidCollateral as exc:
            log.warning("collateral service answered malformed collateral: %s", exc)
            return ServiceResponse.error(502, "InvalidCollateral", str(exc))
        # 2. The policy the host stored, or the default; the token's x-ms-policy-hash names it.
        policy = self._policy_text(attestation_type)
        now = int(self.config.clock().timestamp())
        # 3. The enclave verifies, binds, evaluates and signs.
        try:
            answer = enclave.ecall.attest(
                body.decode("utf-8"), attestation_type, policy, collateral_json, now
            )
        except BoundaryError as exc:
            return ServiceResponse.error(400, "InvalidParameter", str(exc))
        except EcallError:
            log.exception("the service enclave failed on an attestation request")
            return ServiceResponse.error(500, "InternalError", "the attestation enclave failed")
        except EnclaveRuntimeError as exc:
            log.error("the service enclave is unavailable: %s", exc)
            return ServiceResponse.error(503, "ServiceUnavailable", "the attestation enclave is unavailable")
        result = loads(answer)
        if "token" in result:
            return ServiceResponse(200, {"token": result["token"]})
        error = result["error"]
        return ServiceResponse.error(int(error["status"]), str(error["code"]), str(error["message"]))

    # -- policies ----------------------------------------------------------------------------------------

    def _policy_text(self, attestation_type: str) -> str:
        stored = self.storage.get(POLICY_NAMESPACE, attestation_type)
        if stored is None:
            return DEFAULT_POLICIES[attestation_type]
        return str(loads(stored)["text"])

    def _authorize(self, authorization: str | None) -> ServiceResponse | None:
        return check_admin(
            self.config.admin_token,
            authorization,
            what="policy management",
            disabled_code="PolicyManagementDisabled",
        )

    def _policy_answer(self, claims: Mapping[str, Any]) -> ServiceResponse:
        answer = self._running().ecall.policy_token(json.dumps(dict(claims)))
        return ServiceResponse(200, {"token": answer})

    def get_policy(self, attestation_type: str) -> ServiceResponse:
        """``GET /policies/{type}``: ``{"token": jwt}`` whose ``x-ms-policy`` is the policy as a JWS."""
        if attestation_type not in ATTESTATION_TYPES:
            return ServiceResponse.error(400, "InvalidParameter", _WRONG_TYPE)
        stored = self.storage.get(POLICY_NAMESPACE, attestation_type)
        jws = (
            unsigned_policy_jws(DEFAULT_POLICIES[attestation_type])
            if stored is None
            else str(loads(stored)["jws"])
        )
        return self._policy_answer({"x-ms-policy": jws})

    def set_policy(self, attestation_type: str, body: bytes, authorization: str | None) -> ServiceResponse:
        """``PUT /policies/{type}``: the body is a policy JWS (as MAA's SDKs send it) or the policy text."""
        refused = self._authorize(authorization)
        if refused is not None:
            return refused
        if attestation_type not in ATTESTATION_TYPES:
            return ServiceResponse.error(400, "InvalidParameter", _WRONG_TYPE)
        if len(body) > _MAX_POLICY_BODY:
            return ServiceResponse.error(
                400, "InvalidParameter", f"the policy is larger than {_MAX_POLICY_BODY} bytes"
            )
        try:
            uploaded = body.decode("utf-8").strip()
            # Some clients send the JWS as a JSON string.
            if uploaded.startswith('"'):
                decoded = loads(uploaded)
                if not isinstance(decoded, str):
                    raise InvalidPolicy("the policy must be a JWS or policy text")
                uploaded = decoded
            if not uploaded:
                raise InvalidPolicy("the policy is empty")
            # A compact JWS must be a policy JWS; anything else is policy text (which always holds ';').
            if _COMPACT_JWS.fullmatch(uploaded):
                text, jws = policy_text_from_jws(uploaded), uploaded
            else:
                text, jws = uploaded, unsigned_policy_jws(uploaded)
            parse_policy(text)
        except (UnicodeDecodeError, ValueError) as exc:
            return ServiceResponse.error(
                400, "InvalidParameter", f"the policy is not UTF-8 text or JSON: {exc}"
            )
        except InvalidPolicy as exc:
            return ServiceResponse.error(400, "InvalidPolicy", str(exc))
        self.storage.put(
            POLICY_NAMESPACE, attestation_type, json.dumps({"text": text, "jws": jws}).encode("utf-8")
        )
        return self._policy_answer(
            {
                "x-ms-policy-result": "Updated",
                "x-ms-policy-token-hash": b64url_encode(policy_token_hash(jws)),
            }
        )

    def reset_policy(self, attestation_type: str, authorization: str | None) -> ServiceResponse:
        """``POST /policies/{type}:reset``: back to the default policy."""
        refused = self._authorize(authorization)
        if refused is not None:
            return refused
        if attestation_type not in ATTESTATION_TYPES:
            return ServiceResponse.error(400, "InvalidParameter", _WRONG_TYPE)
        self.storage.delete(POLICY_NAMESPACE, attestation_type)
        return self._policy_answer({"x-ms-policy-result": "Removed"})
