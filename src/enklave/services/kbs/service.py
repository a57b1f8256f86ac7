"""The host side of enklave's key broker service (KBS): its enclave, its state and the key operations.

:class:`KeyBrokerService` signs the KBS enclave (package data ``enclave_app/``) into the data directory with
a signing key kept there, loads it (simulated or SGX), pins the trusted authorities' JWKS, unseals the
key-encryption key from storage (the enclave creates it on first start), and answers the operations that
:mod:`.app` serves over HTTP as :class:`~enklave.services.attestation.service.ServiceResponse` values:

* ``create_key``, ``list_keys``, ``get_key``, ``delete_key``, ``set_release_policy``: key management, guarded
  by the admin bearer token configured at start (disabled when none is). Answers show metadata and the public
  key of asymmetric keys, never private or secret material.
* ``release(name, body)``: secure key release (Azure Key Vault's ``POST /keys/{name}/release``, body
  ``{"target": token, "nonce"?}``); the enclave verifies the token with the pinned authority, evaluates the
  key's release policy and answers ``{"value": ..., "quote": ...}``, the key wrapped to the attested enclave's
  public key (a JWE for RSA, HPKE for P-256) and the KBS enclave's quote binding the name, that public key and
  the wrapped value (:mod:`.release_evidence`).
  Every release and refusal is appended to the audit log (:data:`AUDIT_LOG`) with the token's identity claims.

Authorities are pinned: a JWKS URL is fetched on the first start and its keys kept in storage (namespace
:data:`AUTHORITY_NAMESPACE`); later starts use the stored keys until ``repin`` asks for a new fetch. The host
never holds key material: storage keeps it encrypted under the KEK, which is sealed to the enclave's MRENCLAVE.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from enklave import host
from enklave._json import loads
from enklave.attestation._jwks import parse_jwks
from enklave.attestation._transport import HttpxTransport
from enklave.attestation.tokens import MAX_TOKEN_SIZE, HttpJwksSource
from enklave.errors import (
    BoundaryError,
    EcallError,
    EnclaveRuntimeError,
    InvalidPolicy,
    InvalidToken,
    UsageError,
)
from enklave.platform.mode import resolve_mode
from enklave.services._enclave_app import sign_packaged_enclave, start_sealed
from enklave.services._response import ServiceResponse, check_admin
from enklave.services.kbs.audit import AUDIT_LOG, AuditRecord
from enklave.services.kbs.keys import KeyRecord, KeySpec, check_key_name, key_view, policy_from_request
from enklave.services.storage import Storage

__all__ = [
    "API_VERSION",
    "AUTHORITY_NAMESPACE",
    "KEY_NAMESPACE",
    "STATE_NAMESPACE",
    "Authority",
    "KbsConfig",
    "KeyBrokerService",
]

API_VERSION = "7.4"
"""The Azure Key Vault REST API version whose shape the KBS follows; requests name it in ``api-version``."""
KEY_NAMESPACE = "kbs-keys"
AUTHORITY_NAMESPACE = "kbs-authorities"
STATE_NAMESPACE = "kbs-enclave-state"
_STATE_KEY = "sealed-kek"
_BUNDLE_NAME = "key-broker.enclave"
_AUTHORITIES_FILE = "authorities.json"
_MAX_BODY = 256 << 10

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Authority:
    """A trusted attestation authority: its issuer (the tokens' ``iss``) and where its keys come from, a JWKS
    URL fetched once and pinned, or the JWKS itself (pinned as given)."""

    issuer: str
    jwks_url: str | None = None
    jwks: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if not self.issuer:
            raise UsageError("an authority needs an issuer")
        if (self.jwks_url is None) == (self.jwks is None):
            raise UsageError(f"authority {self.issuer!r}: give a JWKS URL or a JWKS, not both or neither")
        if self.jwks_url is not None and not self.jwks_url.startswith(("http://", "https://")):
            raise UsageError(f"authority {self.issuer!r}: the JWKS URL must be http(s)")


@dataclass(frozen=True, slots=True)
class KbsConfig:
    """How the KBS runs: ``data_dir`` holds the signed enclave bundle and its signing key; ``authorities`` are
    the trusted issuers; ``admin_token`` guards key management (``None``: disabled); ``repin`` fetches the
    authorities' JWKS again instead of using the pinned keys; ``mode`` is ``sim``, ``sgx`` or ``auto``;
    ``home`` is ``ENKLAVE_HOME`` for the enclave; ``clock`` gives the time tokens are checked at."""

    data_dir: Path
    authorities: tuple[Authority, ...] = ()
    admin_token: str | None = None
    repin: bool = False
    mode: str = "sim"
    home: Path | None = None
    ecall_timeout: float = 60.0
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    def __post_init__(self) -> None:
        if self.mode not in ("sim", "sgx", "auto"):
            raise UsageError(f"mode must be sim, sgx or auto, not {self.mode!r}")
        if self.admin_token is not None and len(self.admin_token) < 16:
            raise UsageError("the admin token must be at least 16 characters")
        issuers = [authority.issuer for authority in self.authorities]
        if len(set(issuers)) != len(issuers):
            raise UsageError("each authority issuer may be configured once")


def _json_body(body: bytes) -> dict[str, Any]:
    if len(body) > _MAX_BODY:
        raise BoundaryError(f"the request body is larger than {_MAX_BODY} bytes")
    try:
        document = loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BoundaryError("the request body is not JSON") from exc
    if not isinstance(document, dict):
        raise BoundaryError("the request body must be a JSON object")
    return document


class KeyBrokerService:
    """The key broker's host: start it, serve its operations, close it.

    :meth:`start` raises what :func:`enklave.host.load` raises when the enclave does not start,
    :class:`~enklave.errors.TransportError` when an authority's JWKS cannot be fetched, and
    :class:`~enklave.errors.EcallError` when the sealed KEK does not unseal (the service never silently makes
    a new KEK over an old one). The operations never raise for bad requests: they answer 4xx.
    """

    def __init__(self, config: KbsConfig, storage: Storage) -> None:
        self.config = config
        self.storage = storage
        self._enclave: host.Enclave | None = None
        self.pinned: dict[str, dict[str, Any]] = {}

    # -- lifecycle ---------------------------------------------------------------------------------------

    def _pin(self) -> dict[str, dict[str, Any]]:
        pinned: dict[str, dict[str, Any]] = {}
        for authority in self.config.authorities:
            stored = self.storage.get(
                AUTHORITY_NAMESPACE, hashlib.sha256(authority.issuer.encode()).hexdigest()
            )
            if authority.jwks is not None:
                jwks = dict(authority.jwks)
            elif stored is not None and not self.config.repin:
                jwks = loads(stored)["jwks"]
            else:
                with HttpxTransport(timeout=30) as transport:
                    jwks = HttpJwksSource(authority.jwks_url or "", transport).fetch()
                log.info("pinned the JWKS of %s from %s", authority.issuer, authority.jwks_url)
            # A JWKS without a usable key would refuse every token: say so at start, not at the first release.
            try:
                if not parse_jwks(jwks):
                    raise UsageError(f"the JWKS of {authority.issuer!r} has no usable RSA signing key")
            except InvalidToken as exc:
                raise UsageError(f"the JWKS of {authority.issuer!r} is malformed: {exc}") from exc
            document = json.dumps({"issuer": authority.issuer, "jwks": jwks}).encode("utf-8")
            self.storage.put(
                AUTHORITY_NAMESPACE, hashlib.sha256(authority.issuer.encode()).hexdigest(), document
            )
            pinned[authority.issuer] = jwks
        return pinned

    def start(self) -> None:
        """Pin the authorities, sign and load the enclave, and unseal (or create) the KEK."""
        self.pinned = self._pin()
        # The authorities are measured with the enclave's code, never passed at run time (see enclave_app).
        authorities = json.dumps(self.pinned, sort_keys=True, separators=(",", ":")).encode("utf-8")
        bundle = sign_packaged_enclave(
            self.config.data_dir,
            "enklave.services.kbs",
            _BUNDLE_NAME,
            extra_files={_AUTHORITIES_FILE: authorities},
            mode=resolve_mode(self.config.mode),
        )
        self._enclave, _ = start_sealed(
            bundle,
            self.config,
            self.storage,
            namespace=STATE_NAMESPACE,
            key=_STATE_KEY,
            init=lambda enclave, sealed: (enclave.ecall.init(sealed), None),
        )

    def close(self) -> None:
        """Stop the enclave (idempotent); storage stays open, its owner closes it."""
        if self._enclave is not None:
            self._enclave.close()
            self._enclave = None

    def __enter__(self) -> KeyBrokerService:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def info(self) -> host.EnclaveInfo:
        """What the KBS enclave reported at start (MRENCLAVE, MRSIGNER, product id): the identity its release
        quotes carry, for configuring the recipients that check them. Raises UsageError before start."""
        return self._running().info

    def _running(self) -> host.Enclave:
        if self._enclave is None:
            raise UsageError("the key broker has not started")
        return self._enclave

    # -- admin -------------------------------------------------------------------------------------------

    def _authorize(self, authorization: str | None) -> ServiceResponse | None:
        return check_admin(
            self.config.admin_token,
            authorization,
            what="key management",
            disabled_code="KeyManagementDisabled",
        )

    def _record(self, name: str) -> KeyRecord | ServiceResponse:
        try:
            check_key_name(name)
        except BoundaryError as exc:
            return ServiceResponse.error(400, "BadParameter", str(exc))
        stored = self.storage.get(KEY_NAMESPACE, name)
        if stored is None:
            return ServiceResponse.error(404, "KeyNotFound", f"no key named {name!r}")
        return KeyRecord.from_json(stored)

    def _managed_record(self, name: str, authorization: str | None) -> KeyRecord | ServiceResponse:
        """The record of key ``name`` for an admin operation, or the refusal (401/403, 400, 404) to answer."""
        refused = self._authorize(authorization)
        return refused if refused is not None else self._record(name)

    def _now(self) -> int:
        return int(self.config.clock().timestamp())

    def create_key(self, name: str, body: bytes, authorization: str | None) -> ServiceResponse:
        """``POST /keys/{name}/create``: body ``{"kty", "key_size"?, "crv"?, "release_policy",
        "attributes"?: {"exportable": true}}``; 409 when the key exists."""
        refused = self._authorize(authorization)
        if refused is not None:
            return refused
        try:
            check_key_name(name)
            request = _json_body(body)
            spec = KeySpec.parse(request.get("kty"), request.get("key_size"), request.get("crv"))
            if "release_policy" not in request:
                raise BoundaryError("a key for secure key release needs a release_policy")
            policy = policy_from_request(request["release_policy"])
            attributes = request.get("attributes", {})
            if not isinstance(attributes, dict) or attributes.get("exportable", True) is not True:
                raise BoundaryError(
                    "keys of the key broker are exportable: attributes.exportable must be true"
                )
        except BoundaryError as exc:
            return ServiceResponse.error(400, "BadParameter", str(exc))
        except InvalidPolicy as exc:
            return ServiceResponse.error(400, "InvalidPolicy", str(exc))
        if self.storage.get(KEY_NAMESPACE, name) is not None:
            return ServiceResponse.error(409, "Conflict", f"a key named {name!r} exists")
        created = self._running().ecall.create_key(name, json.dumps(spec.to_mapping()), policy)
        public = created["public_jwk"].decode("utf-8")
        now = self._now()
        record = KeyRecord(
            name=name,
            spec=spec,
            policy_json=created["policy"].decode("utf-8"),
            created=now,
            updated=now,
            public_jwk=loads(public) if public else None,
            encrypted=bytes(created["encrypted"]),
        )
        self.storage.put(KEY_NAMESPACE, name, record.to_json())
        return ServiceResponse(200, key_view(record))

    def list_keys(self, authorization: str | None) -> ServiceResponse:
        """``GET /keys``: ``{"value": [key views]}``."""
        refused = self._authorize(authorization)
        if refused is not None:
            return refused
        views = []
        for name in sorted(self.storage.keys(KEY_NAMESPACE)):
            stored = self.storage.get(KEY_NAMESPACE, name)
            if stored is not None:
                views.append(key_view(KeyRecord.from_json(stored)))
        return ServiceResponse(200, {"value": views})

    def get_key(self, name: str, authorization: str | None) -> ServiceResponse:
        """``GET /keys/{name}``: metadata, public key and policy."""
        record = self._managed_record(name, authorization)
        return record if isinstance(record, ServiceResponse) else ServiceResponse(200, key_view(record))

    def delete_key(self, name: str, authorization: str | None) -> ServiceResponse:
        """``DELETE /keys/{name}``: the view of the deleted key."""
        record = self._managed_record(name, authorization)
        if isinstance(record, ServiceResponse):
            return record
        self.storage.delete(KEY_NAMESPACE, name)
        return ServiceResponse(200, key_view(record))

    def set_release_policy(self, name: str, body: bytes, authorization: str | None) -> ServiceResponse:
        """``PATCH /keys/{name}``: body ``{"release_policy": ...}``; the enclave re-binds the key to it."""
        record = self._managed_record(name, authorization)
        if isinstance(record, ServiceResponse):
            return record
        try:
            request = _json_body(body)
            if "release_policy" not in request:
                raise BoundaryError("the body must hold release_policy")
            policy = policy_from_request(request["release_policy"])
        except BoundaryError as exc:
            return ServiceResponse.error(400, "BadParameter", str(exc))
        except InvalidPolicy as exc:
            return ServiceResponse.error(400, "InvalidPolicy", str(exc))
        try:
            answer = self._running().ecall.set_policy(
                name, json.dumps(record.spec.to_mapping()), record.policy_json, record.encrypted, policy
            )
        except EcallError:
            log.exception("the key broker enclave could not re-bind key %s", name)
            return ServiceResponse.error(500, "KeyIntegrityError", "the stored key record does not decrypt")
        updated = KeyRecord(
            name=name,
            spec=record.spec,
            policy_json=answer["policy"].decode("utf-8"),
            created=record.created,
            updated=self._now(),
            public_jwk=record.public_jwk,
            encrypted=bytes(answer["encrypted"]),
        )
        self.storage.put(KEY_NAMESPACE, name, updated.to_json())
        return ServiceResponse(200, key_view(updated))

    def audit_log(self, authorization: str | None, *, after: int = 0, limit: int = 100) -> ServiceResponse:
        """``GET /audit``: ``{"value": [records]}`` after sequence number ``after``."""
        refused = self._authorize(authorization)
        if refused is not None:
            return refused
        records = self.storage.read_log(AUDIT_LOG, after=after, limit=limit)
        return ServiceResponse(
            200, {"value": [{"seq": entry.sequence, **loads(entry.data)} for entry in records]}
        )

    # -- release -----------------------------------------------------------------------------------------

    def release(self, name: str, body: bytes) -> ServiceResponse:
        """``POST /keys/{name}/release``: body ``{"target": token, "nonce"?}``; ``{"value": JWE}`` (200), or
        400 (malformed), 403 (refused), 404 (unknown key). A 200 answer also holds ``"quote"`` (base64url),
        the enclave's evidence for this release (:mod:`.release_evidence`). Every answer past parsing is audited."""
        enclave = self._running()
        record = self._record(name)
        if isinstance(record, ServiceResponse):
            return record
        try:
            request = _json_body(body)
            token, nonce = request.get("target"), request.get("nonce")
            if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_SIZE:
                raise InvalidToken(
                    f"target must be an attestation token of at most {MAX_TOKEN_SIZE} characters"
                )
            if nonce is not None and (not isinstance(nonce, str) or len(nonce) > 1024):
                raise BoundaryError("nonce must be a string of at most 1024 characters")
        except (BoundaryError, InvalidToken) as exc:
            return ServiceResponse.error(400, "BadParameter", str(exc))
        now = self._now()
        try:
            answer = loads(
                enclave.ecall.release(
                    name,
                    json.dumps(record.spec.to_mapping()),
                    record.policy_json,
                    record.encrypted,
                    token,
                    nonce,
                    now,
                )
            )
        except EcallError:
            log.exception("the key broker enclave failed on a release of %s", name)
            return ServiceResponse.error(500, "InternalError", "the key broker enclave failed")
        except EnclaveRuntimeError as exc:
            log.error("the key broker enclave is unavailable: %s", exc)
            return ServiceResponse.error(503, "ServiceUnavailable", "the key broker enclave is unavailable")
        error = answer.get("error")
        outcome = "released" if error is None else "refused"
        audit = AuditRecord.build(
            key=name,
            outcome=outcome,
            time=now,
            claims=answer.get("audit", {}),
            reason=None if error is None else f"{error['code']}: {error['message']}",
        )
        self.storage.append(AUDIT_LOG, audit.to_json())
        if error is not None:
            if int(error["status"]) >= 500:
                log.error("release of %s failed: %s", name, error["message"])
            return ServiceResponse.error(int(error["status"]), str(error["code"]), str(error["message"]))
        # The value as Azure Key Vault answers it, and the enclave's quote that binds it (clients that know the
        # key broker's identity check it; others keep reading "value" only).
        return ServiceResponse(200, {"value": answer["value"], "quote": answer["quote"]})
