"""The three RA-TLS certificate extensions, as strict encoders and parsers (no I/O, no verification).

Facts, from Gramine (``tools/sgx/ra-tls/ra_tls_attest.c``, ``ra_tls_common.h``, ``ra_tls_verify_common.c``)
and Open Enclave (``oe_get_attestation_certificate_with_evidence_v2``):

* TCG DICE tagged evidence, OID 2.23.133.5.4.9 (Gramine 1.8+): the extension value is the CBOR encoding of
  ``tag 60000 ([bstr quote, bstr claims])``. ``claims`` is a serialised CBOR map ``{"pubkey-hash": bstr,
  ?"nonce": bstr}`` whose ``"pubkey-hash"`` byte string is itself a serialised CBOR array ``[uint hash-alg-id,
  bstr digest]`` (IANA named-information ids: 1 SHA-256, 7 SHA-384, 8 SHA-512) over the DER
  SubjectPublicKeyInfo. The quote's report data starts with SHA-256(claims).
* Legacy Gramine: the raw quote, report data starting with SHA-256(DER SubjectPublicKeyInfo). Gramine passes the
  OID *with* its DER tag and length bytes as the OID content, so the OID on the wire is
  0.6.9.42.840.113741.1337.6 (Gramine keeps it for compatibility); 1.2.840.113741.1337.6, the OID it meant, is
  accepted too.
* Open Enclave, OID 1.3.6.1.4.1.311.105.1: OE evidence (attestation header, format SGX ECDSA, quote, custom
  claims buffer), where the custom claims buffer is SHA-256 of the PEM public key and the report data starts
  with SHA-256(custom claims buffer).

Every malformation raises :class:`~enklave.errors.InvalidQuote`; sizes are checked before anything is decoded.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from typing import Final

import cbor2
from cryptography import x509

from enklave.errors import InvalidQuote
from enklave.runtime import _cbor as strict_cbor
from enklave.sgx.oe import EvidenceFormat, unwrap_evidence_with_claims

__all__ = [
    "DICE_CBOR_TAG",
    "DICE_EVIDENCE_OID",
    "GRAMINE_LEGACY_OID",
    "GRAMINE_LEGACY_OID_INTENDED",
    "MAX_EXTENSION_SIZE",
    "OPEN_ENCLAVE_OID",
    "DiceEvidence",
    "RaTlsFormat",
    "encode_claims",
    "encode_dice_evidence",
    "parse_dice_evidence",
    "parse_open_enclave",
]

DICE_EVIDENCE_OID: Final = x509.ObjectIdentifier("2.23.133.5.4.9")
GRAMINE_LEGACY_OID: Final = x509.ObjectIdentifier("0.6.9.42.840.113741.1337.6")
GRAMINE_LEGACY_OID_INTENDED: Final = x509.ObjectIdentifier("1.2.840.113741.1337.6")
OPEN_ENCLAVE_OID: Final = x509.ObjectIdentifier("1.3.6.1.4.1.311.105.1")
DICE_CBOR_TAG: Final = 60000
# Its head (RFC 8949 §3.4): major type 6 with the number in the two bytes that follow (additional info 25).
_DICE_TAG_HEAD: Final = bytes([0xC0 | 25]) + DICE_CBOR_TAG.to_bytes(2, "big")

#: Upper bound on an extension value. A DCAP quote with its PEM chain is about 5 KiB; Gramine caps quotes at
#: 8 KiB. 64 KiB leaves room for large claims and bounds what a peer can make us decode.
MAX_EXTENSION_SIZE: Final = 64 * 1024
_MAX_NONCE_SIZE: Final = 1024

# IANA "Named Information Hash Algorithm Registry" ids used by the "pubkey-hash" hash-entry.
_HASH_ALGORITHMS: Final = {1: "sha256", 7: "sha384", 8: "sha512"}
_DIGEST_SIZES: Final = {1: 32, 7: 48, 8: 64}
_SHA256_ID: Final = 1


class RaTlsFormat(enum.Enum):
    """Which extension carried the evidence of a peer certificate."""

    DICE = "tcg-dice-tagged-evidence"
    GRAMINE_LEGACY = "gramine-legacy"
    OPEN_ENCLAVE = "open-enclave"


@dataclass(frozen=True, slots=True)
class DiceEvidence:
    """A parsed DICE tagged evidence value: the quote, the raw claims bytes and what they say."""

    quote: bytes
    claims: bytes
    hash_algorithm: str
    pubkey_hash: bytes
    nonce: bytes | None


def encode_claims(spki_der: bytes, nonce: bytes | None) -> bytes:
    """The serialised claims map for a DER SubjectPublicKeyInfo, hashed with SHA-256 as Gramine does."""
    entry = cbor2.dumps([_SHA256_ID, hashlib.sha256(spki_der).digest()])
    claims: dict[str, bytes] = {"pubkey-hash": entry}
    if nonce is not None:
        claims["nonce"] = nonce
    return cbor2.dumps(claims)


def encode_dice_evidence(quote: bytes, claims: bytes) -> bytes:
    """``tag 60000 ([quote, claims])`` in CBOR."""
    return cbor2.dumps(cbor2.CBORTag(DICE_CBOR_TAG, [quote, claims]))


def _strict_loads(data: bytes, what: str) -> object:
    """Decode one CBOR item and insist that it re-encodes to exactly ``data``.

    The decoder is the enclave boundary's (:mod:`enklave.runtime._cbor`): no tags, so no shared or string
    references that a few kilobytes could expand into gigabytes when encoded again, definite lengths only and a
    bounded depth. The round trip then rejects non-minimal heads and duplicate map keys, so that exactly one byte
    string corresponds to each accepted value.
    """
    try:
        value = strict_cbor.decode(data)
        canonical = cbor2.dumps(value)
    except (ValueError, TypeError, OverflowError, cbor2.CBORError) as exc:
        raise InvalidQuote(f"{what} is not valid CBOR") from exc
    if canonical != data:
        raise InvalidQuote(
            f"{what} is not in the expected CBOR encoding (indefinite, non-minimal or trailing)"
        )
    return value


def _check_size(data: bytes, what: str) -> None:
    if len(data) > MAX_EXTENSION_SIZE:
        raise InvalidQuote(f"{what} is {len(data)} bytes, more than the limit of {MAX_EXTENSION_SIZE}")


def parse_dice_evidence(data: bytes) -> DiceEvidence:
    """Parse a DICE tagged evidence extension value; raise :class:`InvalidQuote` on any malformation."""
    _check_size(data, "the DICE tagged evidence")
    # The one tag the format has is read here; what it tags is decoded without tags.
    if not data.startswith(_DICE_TAG_HEAD):
        raise InvalidQuote(f"the DICE tagged evidence is not CBOR tag {DICE_CBOR_TAG}")
    inner = _strict_loads(data[len(_DICE_TAG_HEAD) :], "the DICE tagged evidence")
    if not isinstance(inner, list | tuple) or len(inner) != 2:
        raise InvalidQuote("the DICE tagged evidence is not an array of [quote, claims]")
    quote, claims = inner
    if not isinstance(quote, bytes) or not isinstance(claims, bytes) or not quote or not claims:
        raise InvalidQuote("the DICE tagged evidence's quote and claims must be non-empty byte strings")
    claims_map = _strict_loads(claims, "the DICE claims")
    if not isinstance(claims_map, dict) or not all(isinstance(key, str) for key in claims_map):
        raise InvalidQuote("the DICE claims are not a CBOR map with text keys")
    unknown = sorted(set(claims_map) - {"pubkey-hash", "nonce"})
    if unknown:
        raise InvalidQuote(f"the DICE claims hold unknown claims {unknown}")
    entry_bytes = claims_map.get("pubkey-hash")
    if not isinstance(entry_bytes, bytes):
        raise InvalidQuote('the DICE claims have no "pubkey-hash" byte string')
    entry = _strict_loads(entry_bytes, 'the "pubkey-hash" claim')
    if not isinstance(entry, list | tuple) or len(entry) != 2:
        raise InvalidQuote('the "pubkey-hash" claim is not an array of [hash-alg-id, hash]')
    algorithm, digest = entry
    if type(algorithm) is not int or algorithm not in _HASH_ALGORITHMS:
        raise InvalidQuote(f'the "pubkey-hash" hash algorithm {algorithm!r} is not SHA-256, -384 or -512')
    if not isinstance(digest, bytes) or len(digest) != _DIGEST_SIZES[algorithm]:
        raise InvalidQuote(f'the "pubkey-hash" digest is not {_DIGEST_SIZES[algorithm]} bytes')
    nonce = claims_map.get("nonce")
    if nonce is not None and (not isinstance(nonce, bytes) or len(nonce) > _MAX_NONCE_SIZE):
        raise InvalidQuote(f'the "nonce" claim is not a byte string of at most {_MAX_NONCE_SIZE} bytes')
    return DiceEvidence(quote, claims, _HASH_ALGORITHMS[algorithm], digest, nonce)


def parse_open_enclave(data: bytes) -> tuple[bytes, bytes]:
    """Split an Open Enclave extension value into (quote, custom claims); raise :class:`InvalidQuote`."""
    _check_size(data, "the Open Enclave evidence")
    unwrapped = unwrap_evidence_with_claims(data, max_size=MAX_EXTENSION_SIZE)
    if unwrapped.format is not EvidenceFormat.OE_EVIDENCE:
        raise InvalidQuote("the Open Enclave certificate extension does not hold OE evidence (SGX ECDSA)")
    return unwrapped.quote, unwrapped.custom_claims
