"""JSON Web Key Sets for attestation tokens: parsing, sources and a bounded cache (private; see :mod:`.tokens`).

A JWKS is the ``/certs`` document of an attestation service. Each usable entry is an RSA signing key named by
``kid``, given as ``n``/``e``, as an ``x5c`` certificate chain (base64 DER, leaf first, as Microsoft Azure
Attestation serves it), or both, in which case they must agree. Entries of other key types or for another use
are skipped, as RFC 7517 section 5 asks. Anything malformed raises :class:`~enklave.errors.InvalidToken`.
"""

from __future__ import annotations

import abc
import base64
import copy
import hashlib
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding

from enklave import _b64url
from enklave._json import strict_loads
from enklave._x509 import DECODE_ERRORS, decode_certificate
from enklave.attestation._transport import Transport, printable, redact
from enklave.errors import InvalidCollateral, InvalidToken, SignatureError, TransportError, UsageError

__all__ = [
    "MAX_JWKS_KEYS",
    "MAX_JWKS_SIZE",
    "MIN_RSA_KEY_SIZE",
    "HttpJwksSource",
    "JwksSource",
    "StaticJwksSource",
    "b64url_decode",
    "b64url_encode",
    "certificate_kid",
    "load_json_object",
]

MAX_JWKS_SIZE = 256 << 10
"""Largest JWKS document accepted, in bytes."""
MAX_JWKS_KEYS = 64
"""Most keys accepted in one JWKS."""
MIN_RSA_KEY_SIZE = 2048
"""Smallest RSA modulus, in bits, that enklave signs with or trusts."""

b64url_encode = _b64url.encode


def b64url_decode(text: str, what: str) -> bytes:
    """Decode unpadded base64url; raise :class:`InvalidToken` unless ``text`` is its one canonical encoding."""
    try:
        return _b64url.decode(text)
    except ValueError as exc:
        raise InvalidToken(f"{what} {exc}") from exc


def load_json_object(data: bytes, what: str) -> dict[str, Any]:
    """Parse UTF-8 JSON that must be an object without duplicate members or NaN; else :class:`InvalidToken`."""
    try:
        value = strict_loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidToken(f"{what} is not valid JSON") from exc
    if not isinstance(value, dict):
        raise InvalidToken(f"{what} is not a JSON object")
    return value


def certificate_kid(certificate: x509.Certificate) -> str:
    """The key id enklave gives a signing certificate: standard base64 of the SHA-256 of its DER encoding.

    This has the shape of the key ids Microsoft Azure Attestation uses (44 characters, padded base64 of 32
    bytes); MAA does not document what it hashes.
    """
    digest = hashlib.sha256(certificate.public_bytes(Encoding.DER)).digest()
    return base64.b64encode(digest).decode("ascii")


class JwksSource(abc.ABC):
    """Where a :class:`~enklave.attestation.tokens.TokenVerifier` gets the issuer's JSON Web Key Set."""

    @abc.abstractmethod
    def fetch(self) -> dict[str, Any]:
        """Return the current JWKS document (``{"keys": [...]}``).

        Raises :class:`~enklave.errors.TransportError` when it cannot be obtained and
        :class:`~enklave.errors.InvalidToken` when what came back is not a JSON object.
        """


class StaticJwksSource(JwksSource):
    """A fixed JWKS, pinned by the caller (for example read from a file or configuration). Never fails."""

    def __init__(self, jwks: Mapping[str, Any]) -> None:
        if not isinstance(jwks, Mapping):
            raise UsageError(f"jwks must be a mapping, got {type(jwks).__name__}")
        self._jwks = copy.deepcopy(dict(jwks))

    def fetch(self) -> dict[str, Any]:
        """A copy of the pinned JWKS."""
        return copy.deepcopy(self._jwks)


class HttpJwksSource(JwksSource):
    """The JWKS at ``url`` (an attestation service's ``/certs``), fetched through ``transport``.

    A status other than 200 raises :class:`TransportError`; a body that is not a JSON object, or is larger
    than the transport allows, raises :class:`InvalidToken`.
    """

    def __init__(self, url: str, transport: Transport) -> None:
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise UsageError("url must be an http(s) URL")
        self.url = url
        self._transport = transport

    def fetch(self) -> dict[str, Any]:
        """GET the JWKS and parse it as a JSON object."""
        try:
            response = self._transport.get(self.url)
        except InvalidCollateral as exc:
            raise InvalidToken(f"the JWKS at {redact(self.url)} is too large") from exc
        if response.status != 200:
            raise TransportError(f"GET {redact(self.url)} answered HTTP {response.status}")
        if len(response.body) > MAX_JWKS_SIZE:
            raise InvalidToken(f"the JWKS at {redact(self.url)} is larger than {MAX_JWKS_SIZE} bytes")
        return load_json_object(response.body, f"the JWKS at {redact(self.url)}")


@dataclass(frozen=True, slots=True)
class TrustedKey:
    """One usable signing key of a JWKS."""

    kid: str
    public_key: rsa.RSAPublicKey
    alg: str | None
    certificates: tuple[x509.Certificate, ...]


def _rsa_from_jwk(entry: Mapping[str, Any], kid: str) -> rsa.RSAPublicKey | None:
    n, e = entry.get("n"), entry.get("e")
    if n is None and e is None:
        return None
    if not isinstance(n, str) or not isinstance(e, str):
        raise InvalidToken(f"JWKS key {kid!r}: n and e must both be base64url strings")
    modulus = int.from_bytes(b64url_decode(n, f"JWKS key {kid!r} n"), "big")
    exponent = int.from_bytes(b64url_decode(e, f"JWKS key {kid!r} e"), "big")
    try:
        return rsa.RSAPublicNumbers(exponent, modulus).public_key()
    except ValueError as exc:
        raise InvalidToken(f"JWKS key {kid!r} is not a valid RSA public key") from exc


def _x5c(entry: Mapping[str, Any], kid: str) -> tuple[x509.Certificate, ...]:
    chain = entry.get("x5c")
    if chain is None:
        return ()
    if not isinstance(chain, list) or not chain or len(chain) > 8:
        raise InvalidToken(f"JWKS key {kid!r}: x5c must be a list of 1..8 certificates")
    certificates = []
    for index, item in enumerate(chain):
        # x5c holds standard base64 (RFC 7517 section 4.7), not base64url.
        try:
            der = base64.b64decode(item, validate=True) if isinstance(item, str) else b""
            certificates.append(decode_certificate(x509.load_der_x509_certificate(der)))
        except DECODE_ERRORS as exc:  # binascii.Error is a ValueError
            raise InvalidToken(f"JWKS key {kid!r}: x5c[{index}] is not a base64 DER certificate") from exc
    return tuple(certificates)


def _parse_key(entry: object) -> TrustedKey | None:
    if not isinstance(entry, dict):
        raise InvalidToken("a JWKS key is not a JSON object")
    # Keys of another type or use cannot verify an RS* token; RFC 7517 says to ignore what we do not use.
    if entry.get("kty") != "RSA" or entry.get("use", "sig") != "sig":
        return None
    kid = entry.get("kid")
    if not isinstance(kid, str) or not kid:
        raise InvalidToken("a JWKS key has no kid")
    kid = printable(kid)
    alg = entry.get("alg")
    if alg is not None and not isinstance(alg, str):
        raise InvalidToken(f"JWKS key {kid!r}: alg is not a string")
    certificates = _x5c(entry, kid)
    key = _rsa_from_jwk(entry, kid)
    if certificates:
        leaf_key = certificates[0].public_key()
        if not isinstance(leaf_key, rsa.RSAPublicKey):
            raise InvalidToken(f"JWKS key {kid!r}: the x5c certificate does not hold an RSA key")
        if key is not None and key.public_numbers() != leaf_key.public_numbers():
            raise InvalidToken(f"JWKS key {kid!r}: n/e differ from the key of its x5c certificate")
        key = leaf_key
    if key is None:
        raise InvalidToken(f"JWKS key {kid!r} has neither n/e nor x5c")
    if key.key_size < MIN_RSA_KEY_SIZE:
        return None
    return TrustedKey(kid=kid, public_key=key, alg=alg, certificates=certificates)


def parse_jwks(document: object) -> dict[str, TrustedKey]:
    """The usable RSA signing keys of a JWKS by kid; raise :class:`InvalidToken` for a malformed JWKS.

    Keys shorter than :data:`MIN_RSA_KEY_SIZE` bits are skipped: they would never be trusted.
    """
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise InvalidToken('a JWKS must be a JSON object with a "keys" list')
    entries = document["keys"]
    if len(entries) > MAX_JWKS_KEYS:
        raise InvalidToken(f"the JWKS has more than {MAX_JWKS_KEYS} keys")
    keys: dict[str, TrustedKey] = {}
    for entry in entries:
        key = _parse_key(entry)
        if key is None:
            continue
        if key.kid in keys:
            raise InvalidToken(f"the JWKS has two keys with kid {key.kid!r}")
        keys[key.kid] = key
    return keys


class KeyCache:
    """The keys of a :class:`JwksSource`, refetched when older than ``max_age`` and, for an unknown kid, at
    most once per ``min_refresh_interval``, so that tokens with made-up kids cannot flood the issuer."""

    def __init__(self, source: JwksSource, *, max_age: timedelta, min_refresh_interval: timedelta) -> None:
        if not isinstance(source, JwksSource):
            raise UsageError(f"jwks_source must be a JwksSource, got {type(source).__name__}")
        if max_age <= timedelta(0) or min_refresh_interval < timedelta(0):
            raise UsageError("max_age must be positive and min_refresh_interval not negative")
        self._source = source
        self._max_age = max_age
        self._min_refresh_interval = min_refresh_interval
        self._lock = threading.Lock()
        self._keys: dict[str, TrustedKey] | None = None
        self._fetched_at: datetime | None = None

    def _refresh(self, now: datetime) -> dict[str, TrustedKey]:
        keys = parse_jwks(self._source.fetch())
        self._keys, self._fetched_at = keys, now
        return keys

    def lookup(self, kid: str, now: datetime) -> TrustedKey:
        """The trusted key named ``kid``; raise :class:`SignatureError` when the issuer has no such key."""
        with self._lock:
            keys, fetched_at = self._keys, self._fetched_at
            # A clock that went backwards also forces a fetch: the cache age is then unknown.
            if keys is None or fetched_at is None or not fetched_at <= now < fetched_at + self._max_age:
                keys = self._refresh(now)
            elif kid not in keys and now - fetched_at >= self._min_refresh_interval:
                # The issuer may have rotated its key since the last fetch.
                keys = self._refresh(now)
            key = keys.get(kid)
        if key is None:
            raise SignatureError(f"the issuer has no signing key with kid {printable(kid)[:64]!r}")
        return key
