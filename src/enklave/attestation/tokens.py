"""Attestation tokens in Microsoft Azure Attestation's format: issuing, JWKS, and the relying party's verifier.

An attestation token is an RS256 JSON Web Token (RFC 7519) whose header names the signing key (``kid``) and
where its set lives (``jku``), and whose claims describe verified enclave evidence in MAA's names
(:func:`sgx_claims`). :class:`TokenSigner` issues them and serves the JWKS (``/certs``); :func:`unsigned_token`
builds the unsigned form MAA returns for draft policies; :class:`TokenVerifier` is what a relying party runs:

1. the token is a compact JWS of bounded size, with a JSON header and JSON claims (else ``InvalidToken``);
2. its ``alg`` is one the verifier allows; ``none`` and the HMAC algorithms are always refused (``SignatureError``);
3. its ``kid`` names a key of the issuer's JWKS, refetched at most once per interval (``SignatureError``);
4. the signature verifies under that key (``SignatureError``);
5. ``iss`` is the expected issuer (``PolicyError`` with ``field="iss"``);
6. ``exp`` and ``nbf`` hold at the verification time, with leeway (``ExpiredError``);
7. ``nonce`` equals the one the caller sent, when given (``BindingError``).

The verifier never fetches keys from the ``jku`` or ``x5c`` a token names: only from its own JWKS source. The
result, a :class:`VerifiedToken`, satisfies :class:`~enklave.attestation.policy.AppraisableEvidence`, so
``EnclavePolicy(...).appraise(verified_token)`` appraises the enclave the token describes.
"""

from __future__ import annotations

import base64
import hmac
import json
import re
import secrets
import types
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import InitVar, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding
from joserfc import jws
from joserfc.errors import BadSignatureError, JoseError
from joserfc.jwk import RSAKey

from enklave.attestation._jwks import (
    MIN_RSA_KEY_SIZE,
    HttpJwksSource,
    JwksSource,
    KeyCache,
    StaticJwksSource,
    b64url_decode,
    b64url_encode,
    certificate_kid,
    load_json_object,
)
from enklave.attestation._sgx_claims import (
    CLAIM_ADVISORY_IDS,
    CLAIM_SIMULATED,
    CLAIM_TCB_EVALUATION_DATA_NUMBER,
    CLAIM_TCB_STATUS,
    collateral_claim,
    sgx_claims,
)
from enklave.attestation._token_evidence import TokenEvidence
from enklave.attestation._transport import printable
from enklave.errors import (
    BindingError,
    ExpiredError,
    InvalidToken,
    PolicyError,
    SignatureError,
    UsageError,
)

__all__ = [
    "CLAIM_ADVISORY_IDS",
    "CLAIM_SIMULATED",
    "CLAIM_TCB_EVALUATION_DATA_NUMBER",
    "CLAIM_TCB_STATUS",
    "MAX_TOKEN_SIZE",
    "HttpJwksSource",
    "JwksSource",
    "StaticJwksSource",
    "TokenSigner",
    "TokenVerifier",
    "VerifiedToken",
    "certificate_kid",
    "collateral_claim",
    "openid_configuration",
    "sgx_claims",
    "unsigned_token",
]

MAX_TOKEN_SIZE = 256 << 10
"""Longest token :class:`TokenVerifier` reads, in characters (MAA's SGX tokens are a few kilobytes)."""

_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_REGISTERED = ("iss", "iat", "nbf", "exp", "jti")
_SIGNING_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_VERIFIER_TOKEN = object()


def _utc(now: datetime, name: str = "now") -> datetime:
    if not isinstance(now, datetime) or now.tzinfo is None:
        raise UsageError(f"{name} must be a timezone-aware datetime")
    return now.astimezone(UTC)


def _json_bytes(value: Mapping[str, Any], what: str) -> bytes:
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{what} cannot be written as JSON: {exc}") from exc


def unsigned_token(claims: Mapping[str, Any]) -> str:
    """An UNSIGNED JWT (``alg: none``) of ``claims``, as MAA answers for a ``draftPolicyForAttestation``.

    It proves nothing: anybody can write one, and :class:`TokenVerifier` always refuses it. ``claims`` are
    written as given (no registered claims are added). Raises :class:`UsageError` if they are not JSON.
    """
    header = b64url_encode(_json_bytes({"alg": "none", "typ": "JWT"}, "the header"))
    return f"{header}.{b64url_encode(_json_bytes(dict(claims), 'the claims'))}."


def openid_configuration(
    issuer: str, jwks_uri: str, *, claims_supported: Sequence[str] = ()
) -> dict[str, Any]:
    """The ``/.well-known/openid-configuration`` document of an attestation service, with MAA's members."""
    return {
        "issuer": issuer,
        "jwks_uri": jwks_uri,
        "response_types_supported": ["token", "none"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "revocation_endpoint": f"{issuer.rstrip('/')}/revoke",
        "claims_supported": list(claims_supported),
    }


class TokenSigner:
    """Signs attestation tokens with an RSA key and serves the matching JWKS.

    ``certificate_chain`` (leaf first) must hold the public key of ``private_key``; it is published in the
    JWKS's ``x5c``. ``kid`` defaults to :func:`certificate_kid` of the leaf. Raises :class:`UsageError` for an
    RSA key shorter than 2048 bits, a chain whose leaf does not match the key, or a non-positive lifetime.
    The private key is never part of a message or a ``repr``.
    """

    def __init__(
        self,
        private_key: rsa.RSAPrivateKey,
        certificate_chain: Sequence[x509.Certificate],
        *,
        issuer: str,
        jku: str,
        kid: str | None = None,
        lifetime: timedelta = timedelta(hours=8),
    ) -> None:
        if not isinstance(private_key, rsa.RSAPrivateKey):
            raise UsageError("private_key must be an RSA private key")
        if private_key.key_size < MIN_RSA_KEY_SIZE:
            raise UsageError(
                f"the signing key has {private_key.key_size} bits; at least {MIN_RSA_KEY_SIZE} needed"
            )
        chain = tuple(certificate_chain)
        if not chain or not all(isinstance(item, x509.Certificate) for item in chain):
            raise UsageError("certificate_chain must hold at least one certificate, leaf first")
        leaf_key = chain[0].public_key()
        if (
            not isinstance(leaf_key, rsa.RSAPublicKey)
            or leaf_key.public_numbers() != private_key.public_key().public_numbers()
        ):
            raise UsageError("the leaf certificate does not hold the signing key's public key")
        if not isinstance(issuer, str) or not issuer:
            raise UsageError("issuer must be a non-empty string")
        if not isinstance(jku, str) or not jku.startswith(("https://", "http://")):
            raise UsageError("jku must be the http(s) URL of the JWKS")
        if kid is not None and (not isinstance(kid, str) or not kid):
            raise UsageError("kid must be a non-empty string")
        if lifetime <= timedelta(0):
            raise UsageError("lifetime must be positive")
        self.issuer = issuer
        self.jku = jku
        self.kid = certificate_kid(chain[0]) if kid is None else kid
        self.lifetime = lifetime
        self.certificate_chain = chain
        self._key = RSAKey.import_key(private_key)
        self._public_key = leaf_key
        self._registry = jws.JWSRegistry(algorithms=["RS256"])

    def __repr__(self) -> str:
        return f"TokenSigner(issuer={self.issuer!r}, kid={self.kid!r})"

    def sign(self, claims: Mapping[str, Any], *, now: datetime) -> str:
        """An RS256 JWT of ``claims`` plus ``iss``, ``iat``, ``nbf`` (both ``now``), ``exp`` and a random ``jti``.

        The header is ``{"alg": "RS256", "jku", "kid", "typ": "JWT"}``. Raises :class:`UsageError` when
        ``claims`` already hold a registered claim, are not JSON, or ``now`` is naive.
        """
        present = [name for name in _REGISTERED if name in claims]
        if present:
            raise UsageError(f"the signer sets {', '.join(present)}; leave them out of the claims")
        issued = int(_utc(now).timestamp())
        payload = {
            **claims,
            "iss": self.issuer,
            "iat": issued,
            "nbf": issued,
            "exp": issued + int(self.lifetime.total_seconds()),
            "jti": secrets.token_hex(32),
        }
        header = {"alg": "RS256", "jku": self.jku, "kid": self.kid, "typ": "JWT"}
        try:
            return jws.serialize_compact(
                header, _json_bytes(payload, "the claims"), self._key, registry=self._registry
            )
        except JoseError as exc:
            raise UsageError(f"the token header is invalid: {exc}") from exc

    def jwks(self) -> dict[str, Any]:
        """The JWKS to serve at ``jku``: one RSA signing key with its ``kid``, ``n``, ``e`` and ``x5c``."""
        numbers = self._public_key.public_numbers()
        return {
            "keys": [
                {
                    "kty": "RSA",
                    "kid": self.kid,
                    "use": "sig",
                    "alg": "RS256",
                    "n": b64url_encode(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
                    "e": b64url_encode(numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")),
                    "x5c": [_x5c_entry(certificate) for certificate in self.certificate_chain],
                }
            ]
        }


def _x5c_entry(certificate: x509.Certificate) -> str:
    # x5c holds standard base64 of the DER, not base64url (RFC 7517 section 4.7).
    return base64.b64encode(certificate.public_bytes(Encoding.DER)).decode("ascii")


@dataclass(frozen=True, slots=True)
class VerifiedToken(TokenEvidence):
    """An attestation token whose signature, issuer, lifetime and nonce :class:`TokenVerifier` checked.

    Only the verifier builds one (a private token guards the constructor). ``claims`` and ``header`` are
    read-only views. The :class:`~enklave.attestation.policy.AppraisableEvidence` attributes (``mr_enclave``,
    ``tcb_status``, ``simulated``...) are read from the claims on access and raise :class:`PolicyError` when
    the claim they need is missing or malformed, so that a policy rejects such a token.
    """

    jwt: str = field(repr=False)
    header: Mapping[str, Any]
    claims: Mapping[str, Any]
    issuer: str
    key_id: str
    issued_at: datetime | None
    not_before: datetime | None
    expires_at: datetime
    verified_at: datetime
    _token: InitVar[object]

    def __post_init__(self, _token: object) -> None:
        if _token is not _VERIFIER_TOKEN:
            raise UsageError("a VerifiedToken is only built by TokenVerifier.verify")


def _timestamp(claims: Mapping[str, Any], name: str, *, required: bool) -> float | None:
    value = claims.get(name)
    if value is None and not required:
        return None
    # bool is an int in Python, and true is no time.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidToken(f"the token's {name} claim is {'missing' if value is None else 'not a number'}")
    return float(value)


def _datetime(value: float | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise InvalidToken(f"the token's {name} claim is out of range") from exc


class TokenVerifier:
    """Verifies attestation tokens of one issuer against its JWKS (see the module docstring for the steps).

    ``jwks_source`` is cached for ``jwks_max_age`` and refetched for an unknown ``kid`` at most once per
    ``min_refresh_interval``. ``leeway`` widens the ``exp``/``nbf`` window for clock skew; ``clock`` returns the
    current time (timezone-aware; default: the system clock). ``algorithms`` may only name RSA signature
    algorithms: construction raises :class:`UsageError` for ``none``, HMAC or unknown ones.
    """

    def __init__(
        self,
        issuer: str,
        jwks_source: JwksSource,
        *,
        leeway: timedelta = timedelta(seconds=60),
        clock: Callable[[], datetime] | None = None,
        algorithms: Collection[str] = ("RS256",),
        jwks_max_age: timedelta = timedelta(hours=1),
        min_refresh_interval: timedelta = timedelta(seconds=60),
    ) -> None:
        if not isinstance(issuer, str) or not issuer:
            raise UsageError("issuer must be a non-empty string")
        allowed = tuple(algorithms)
        if not allowed or isinstance(algorithms, str) or not _SIGNING_ALGORITHMS.issuperset(allowed):
            raise UsageError(f"algorithms must name some of {', '.join(sorted(_SIGNING_ALGORITHMS))}")
        if leeway < timedelta(0):
            raise UsageError("leeway must not be negative")
        self.issuer = issuer
        self.leeway = leeway
        self.algorithms = allowed
        self._clock = clock if clock is not None else (lambda: datetime.now(UTC))
        self._keys = KeyCache(jwks_source, max_age=jwks_max_age, min_refresh_interval=min_refresh_interval)
        self._registry = jws.JWSRegistry(algorithms=list(allowed), strict_check_header=False)

    def verify(
        self, token: str | bytes, *, nonce: str | None = None, now: datetime | None = None
    ) -> VerifiedToken:
        """Check ``token`` and return it as a :class:`VerifiedToken`, or raise.

        ``nonce``, when given, must equal the token's ``nonce`` claim; ``now`` overrides the clock. Raises
        :class:`InvalidToken`, :class:`SignatureError`, :class:`PolicyError` (wrong issuer),
        :class:`ExpiredError` or :class:`BindingError`; :class:`~enklave.errors.TransportError` when the JWKS
        cannot be fetched.
        """
        at = _utc(self._clock() if now is None else now)
        if nonce is not None and not isinstance(nonce, str):
            raise UsageError("nonce must be a string")
        # 1. A compact JWS of bounded size, its header and claims JSON objects.
        if isinstance(token, bytes):
            try:
                token = token.decode("ascii")
            except UnicodeDecodeError as exc:
                raise InvalidToken("the token is not ASCII") from exc
        if not isinstance(token, str):
            raise UsageError(f"token must be a string, got {type(token).__name__}")
        if len(token) > MAX_TOKEN_SIZE:
            raise InvalidToken(f"the token is longer than {MAX_TOKEN_SIZE} characters")
        if not _COMPACT_JWS.fullmatch(token):
            raise InvalidToken("the token is not a compact JWS (three base64url parts)")
        header_part, claims_part, signature_part = token.split(".")
        header = load_json_object(b64url_decode(header_part, "the token header"), "the token header")
        claims = load_json_object(b64url_decode(claims_part, "the token claims"), "the token claims")
        b64url_decode(signature_part, "the token signature")
        # 2. The algorithm: never none, never HMAC (whose "secret" could be the public key), only allowed ones.
        alg = header.get("alg")
        if not isinstance(alg, str):
            raise InvalidToken("the token header has no alg")
        if alg.lower() == "none" or alg.upper().startswith("HS"):
            raise SignatureError(f"the token algorithm {printable(alg)[:16]!r} is never accepted")
        if alg not in self.algorithms:
            raise SignatureError(f"the token algorithm {printable(alg)[:16]!r} is not allowed")
        if "crit" in header:
            raise InvalidToken("the token header has critical parameters, which are not supported")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidToken("the token header has no kid")
        # 3. The key, from our own JWKS source only.
        key = self._keys.lookup(kid, at)
        if key.alg is not None and key.alg != alg:
            raise SignatureError(f"the key {key.kid!r} is for {key.alg}, the token uses {alg}")
        # 4. The signature.
        try:
            jws.deserialize_compact(
                token, RSAKey.import_key(key.public_key), algorithms=[alg], registry=self._registry
            )
        except BadSignatureError as exc:
            raise SignatureError("the token signature does not verify") from exc
        except JoseError as exc:
            raise InvalidToken(f"the token is malformed: {printable(str(exc))}") from exc
        # 5. The issuer.
        issuer = claims.get("iss")
        if issuer != self.issuer:
            shown = printable(issuer)[:200] if isinstance(issuer, str) else issuer
            raise PolicyError(
                f"the token was issued by {shown!r}, not {self.issuer!r}",
                field="iss",
                expected=self.issuer,
                actual=shown,
            )
        # 6. The lifetime, with leeway on both sides.
        expires = _timestamp(claims, "exp", required=True)
        not_before = _timestamp(claims, "nbf", required=False)
        issued = _timestamp(claims, "iat", required=False)
        moment, slack = at.timestamp(), self.leeway.total_seconds()
        expires_at = _datetime(expires, "exp")
        if expires is None or expires_at is None or moment >= expires + slack:
            raise ExpiredError(f"the token expired at {expires_at} (leeway {slack:g} s)")
        not_before_at = _datetime(not_before, "nbf")
        if not_before is not None and moment < not_before - slack:
            raise ExpiredError(f"the token is not valid before {not_before_at} (leeway {slack:g} s)")
        # 7. The nonce, compared in constant time.
        if nonce is not None:
            claimed = claims.get("nonce")
            if not isinstance(claimed, str) or not hmac.compare_digest(
                claimed.encode("utf-8"), nonce.encode("utf-8")
            ):
                raise BindingError("the token's nonce is not the one sent")
        return VerifiedToken(
            jwt=token,
            header=types.MappingProxyType(header),
            claims=types.MappingProxyType(claims),
            issuer=self.issuer,
            key_id=key.kid,
            issued_at=_datetime(issued, "iat"),
            not_before=not_before_at,
            expires_at=expires_at,
            verified_at=at,
            _token=_VERIFIER_TOKEN,
        )
