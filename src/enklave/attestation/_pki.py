"""X.509 checks for the Intel SGX PKI: validity windows, issuance, revocation and raw ECDSA signatures.

Each helper raises the precise :mod:`enklave.errors` type and names the object it checked (``what``), so that
a failed verification says which certificate, CRL or structure failed and why.
"""

from __future__ import annotations

import binascii
import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding

from enklave._x509 import DECODE_ERRORS
from enklave.attestation._signed_der import ECDSA_WITH_SHA256_DER, SignedObject
from enklave.attestation.trust import TrustedRoot
from enklave.errors import (
    CertificateChainError,
    EnklaveError,
    ExpiredError,
    InvalidCollateral,
    InvalidQuote,
    RevokedError,
    SignatureError,
    UntrustedRootError,
)

_ECDSA_SHA256_PREHASHED = ec.ECDSA(Prehashed(hashes.SHA256()))


def _verify_ecdsa_sha256(key: ec.EllipticCurvePublicKey, signature: bytes, data: bytes) -> None:
    """``key.verify(signature, data, ECDSA(SHA256()))``, raising InvalidSignature the same way.

    The digest is taken with hashlib and handed over as prehashed: the same check, but it spares the library a
    digest context per call, about 2 µs of each of the nine verifications of an uncached quote.
    """
    key.verify(signature, hashlib.sha256(data).digest(), _ECDSA_SHA256_PREHASHED)


class PendingSignatures:
    """ECDSA-SHA256 signature checks queued during one verification, to be run in order by :meth:`check`.

    A verification queues its signatures as it meets them and runs its other checks meanwhile; it must call
    :meth:`check` before it returns a result, and also before it raises any other error, so that the failure it
    reports is the first one in the order of its steps, exactly as if every signature had been checked where it
    was queued. Running the nine P-256 verifications of a quote back to back, with the library's code and tables
    warm, makes an uncached verification a few percent faster (docs/performance.md).

    Used as a context manager, it runs :meth:`check` on leaving the block, normally or with any exception (a
    failing queued signature then replaces it: the library too raises ``ValueError`` on some hostile input, which
    a forged certificate must not reach); ``KeyboardInterrupt`` and other non-``Exception`` exits skip it::

        with PendingSignatures() as pending:
            result = steps(..., pending)
        return result  # only reached when every queued signature verified
    """

    __slots__ = ("_queue",)

    def __init__(self) -> None:
        self._queue: list[tuple[ec.EllipticCurvePublicKey, bytes, bytes, Callable[[], EnklaveError]]] = []

    def __enter__(self) -> PendingSignatures:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if kind is None or issubclass(kind, Exception):
            self.check()

    def add(
        self, key: ec.EllipticCurvePublicKey, signature: bytes, data: bytes, error: Callable[[], EnklaveError]
    ) -> None:
        """Queue the check of ``signature`` over ``data``; ``error()`` builds what to raise if it fails."""
        self._queue.append((key, signature, data, error))

    def check(self) -> None:
        """Verify the queued signatures in order and empty the queue; raise the first one's error on failure."""
        queue, self._queue = self._queue, []
        for key, signature, data, error in queue:
            _check_signature(key, signature, data, error)


def _check_signature(
    key: ec.EllipticCurvePublicKey, signature: bytes, data: bytes, error: Callable[[], EnklaveError]
) -> None:
    try:
        _verify_ecdsa_sha256(key, signature, data)
    except InvalidSignature as exc:
        # When a later step's failure made the queue be checked, that failure comes after this one in the QVL's
        # order: it is not this error's context.
        exc.__suppress_context__ = True
        raise error() from exc


def _verify_or_queue(
    pending: PendingSignatures | None,
    key: ec.EllipticCurvePublicKey,
    signature: bytes,
    data: bytes,
    error: Callable[[], EnklaveError],
) -> None:
    """Queue the signature check in ``pending``, or without it run it now."""
    if pending is None:
        _check_signature(key, signature, data, error)
    else:
        pending.add(key, signature, data, error)


@dataclass(slots=True)
class Window:
    """The time interval in which every checked object is valid; it narrows as objects are added."""

    not_before: datetime
    not_after: datetime

    def narrow(self, not_before: datetime, not_after: datetime) -> None:
        """Intersect with another validity interval."""
        # Comparisons rather than max() and min(): this runs a dozen times per uncached verification.
        if not_before > self.not_before:  # noqa: PLR1730
            self.not_before = not_before
        if not_after < self.not_after:  # noqa: PLR1730
            self.not_after = not_after

    def contains(self, now: datetime) -> bool:
        """True when ``now`` lies inside the window."""
        return self.not_before <= now <= self.not_after


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def check_time(what: str, not_before: datetime, not_after: datetime, now: datetime, window: Window) -> None:
    """Fail with :class:`ExpiredError` unless ``not_before <= now <= not_after``; narrow ``window``."""
    if now > not_after:
        raise ExpiredError(f"{what} expired at {_iso(not_after)} (verification time {_iso(now)})")
    if now < not_before:
        raise ExpiredError(f"{what} is not valid before {_iso(not_before)} (verification time {_iso(now)})")
    window.narrow(not_before, not_after)


def check_certificate_time(what: str, cert: x509.Certificate, now: datetime, window: Window) -> None:
    """Check a certificate's notBefore/notAfter."""
    check_time(what, cert.not_valid_before_utc, cert.not_valid_after_utc, now, window)


def ec_public_key(what: str, cert: x509.Certificate) -> ec.EllipticCurvePublicKey:
    """The certificate's key, which must be ECDSA P-256 in the SGX PKI."""
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise CertificateChainError(f"{what} does not carry an ECDSA P-256 key")
    return key


def check_issued_by(
    what: str,
    cert: x509.Certificate,
    issuer: x509.Certificate,
    signed: SignedObject | None = None,
    issuer_signed: SignedObject | None = None,
    pending: PendingSignatures | None = None,
) -> None:
    """Check that ``issuer`` is a CA that signed ``cert`` (issuer name and signature).

    ``signed`` and ``issuer_signed`` hold the DER each certificate was parsed from, when the caller has it;
    without it the certificate is encoded again, which gives the same bytes (the parser takes strict DER only).
    With ``pending``, an ECDSA-SHA256 signature is queued there instead of being checked now.
    """
    try:
        _check_issued_by(what, cert, issuer, signed, issuer_signed, pending)
    except (InvalidSignature, *DECODE_ERRORS) as exc:
        # Certificates parse lazily: a malformed name, extension or algorithm surfaces here as ValueError.
        raise _not_issued_by(what, issuer, str(exc)) from exc


def _not_issued_by(what: str, issuer: x509.Certificate, reason: str = "") -> CertificateChainError:
    return CertificateChainError(f"{what} is not issued by {subject_of(issuer)}: {reason or 'bad signature'}")


def _check_issued_by(
    what: str,
    cert: x509.Certificate,
    issuer: x509.Certificate,
    signed: SignedObject | None,
    issuer_signed: SignedObject | None,
    pending: PendingSignatures | None,
) -> None:
    try:
        constraints = issuer.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise CertificateChainError(f"the issuer of {what} ({subject_of(issuer)}) is not a CA")
    # The issuer's name and signature, checked as verify_directly_issued_by would (inner and outer signature
    # algorithms included), but straight on the signed bytes with the issuer's ECDSA key: faster, on the hot
    # path of uncached verification.
    if signed is None:
        signed = SignedObject(cert.public_bytes(Encoding.DER), True)
    tbs, algorithm, signature, issuer_name, _ = signed.parts()
    # Names encoded identically are equal; names encoded differently are compared as names (RFC 5280 §7.1).
    # Decoding the issuer's subject (its certificate object keeps it) also proves that bytes equal to it are a
    # well-formed name, as decoding both names would: an undecodable name fails here with ValueError.
    subject = issuer.subject
    if issuer_name != _subject_der(issuer_signed) and cert.issuer != subject:
        raise CertificateChainError(f"{what} names another issuer than {subject_of(issuer)}")
    key = issuer.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise CertificateChainError(f"{what} is not signed with ECDSA by {subject_of(issuer)}")
    # Every SGX certificate is signed with ECDSA-SHA256, which takes the fast path.
    if algorithm == ECDSA_WITH_SHA256_DER:
        _verify_or_queue(pending, key, signature, tbs, lambda: _not_issued_by(what, issuer))
        return
    hash_algorithm = cert.signature_hash_algorithm
    if hash_algorithm is None:
        raise CertificateChainError(f"{what} is not signed with ECDSA by {subject_of(issuer)}")
    key.verify(signature, tbs, ec.ECDSA(hash_algorithm))


def _subject_der(signed: SignedObject | None) -> bytes | None:
    """The subject Name's DER, or None when it is unknown or cannot be read (names are then compared as names)."""
    if signed is None:
        return None
    try:
        return signed.parts().subject
    except ValueError:
        return None


Issued = set[tuple[bytes, bytes]]
"""(certificate DER, issuer DER) pairs whose issuance one verification has already checked."""


def check_chain(
    what: str,
    chain: Sequence[x509.Certificate],
    roots: Sequence[TrustedRoot],
    now: datetime,
    window: Window,
    verified: Issued | None = None,
    signed: Sequence[SignedObject] | None = None,
    pending: PendingSignatures | None = None,
) -> tuple[TrustedRoot, Sequence[x509.Certificate]]:
    """Verify a chain given leaf first, whose last element is (or is issued by) one of ``roots``.

    Checks every certificate's validity at ``now`` and every issuance signature; returns the trusted root and
    the certificates below it (the chain without the root when the chain includes it).
    The root must be identical, byte for byte, to a trusted one: a self-signed look-alike is rejected.
    ``signed``, when given, holds the original DER of each certificate of ``chain``. ``verified`` then
    remembers the (certificate, issuer) pairs already checked within one verification, because the
    collateral's chains share certificates (the PCK CA and the TCB signing certificate appear twice).
    With ``pending``, the issuance signatures are queued there (see :class:`PendingSignatures`).
    """
    if not chain:
        raise InvalidCollateral(f"{what}: empty certificate chain")
    last = chain[-1]
    root = _find_root(last, roots, None if signed is None else signed[-1].der)
    if root is not None:
        certs = chain[:-1]
    elif _issuer_is_subject(last, last):
        der = signed[-1].der if signed is not None else last.public_bytes(Encoding.DER)
        raise UntrustedRootError(f"{what} ends in an untrusted root ({subject_of(last)})", root=der)
    else:
        root = _find_issuing_root(last, roots)
        certs = chain
        if root is None:
            raise UntrustedRootError(
                f"{what} ends in a certificate issued by no trusted root ({subject_of(last)})"
            )
    issuer = root.certificate
    issuer_signed: SignedObject | None = root.signed
    check_certificate_time(what, issuer, now, window)
    for index in range(len(certs) - 1, -1, -1):
        cert = certs[index]
        cert_signed = None if signed is None else signed[index]
        # Bytes cache their hash, so looking a pair of DER encodings up costs a fraction of a microsecond.
        pair = None if cert_signed is None or issuer_signed is None else (cert_signed.der, issuer_signed.der)
        if verified is None or pair is None or pair not in verified:
            check_issued_by(f"{what}: certificate {index}", cert, issuer, cert_signed, issuer_signed, pending)
            if verified is not None and pair is not None:
                verified.add(pair)
        # The validity window, as check_certificate_time checks it, with the message built only on failure.
        not_before = cert.not_valid_before_utc
        not_after = cert.not_valid_after_utc
        if not not_before <= now <= not_after:
            check_time(f"{what}: certificate {index}", not_before, not_after, now, window)
        window.narrow(not_before, not_after)
        issuer = cert
        issuer_signed = cert_signed
    return root, certs


_PEM_BEGIN = re.compile(rb"-----BEGIN ([^\r\n]*?)-----")


@dataclass(frozen=True, slots=True)
class KnownChain:
    """Certificates already loaded and checked against their PEM text, with the DER each was read from: such as
    a collateral chain, whose text :class:`~enklave.attestation.collateral.QuoteCollateral` requires to hold
    exactly these certificates, as CERTIFICATE blocks with only whitespace around them."""

    pem: bytes
    certificates: Sequence[x509.Certificate]
    signed: Sequence[SignedObject]


def load_evidence_chain(
    pem: bytes, what: str, max_length: int, tail: KnownChain | None = None
) -> tuple[list[x509.Certificate], list[SignedObject]]:
    """Load a PEM chain that came with evidence, forcing every lazily parsed field of the certificates it reads;
    returns the certificates and the DER each was read from, for :func:`check_chain`.

    cryptography decodes names, extensions and keys on first access; touching them here turns a malformed
    certificate into :class:`InvalidQuote` at parse time instead of a ``ValueError`` deep inside a check.
    When ``pem`` is one certificate block in canonical form followed by exactly ``tail``'s text (what a quote
    usually carries: its PCK certificate, then the collateral's PCK CA and root), that block is decoded here
    and the tail's certificates are used as they are; any other text goes to the library's PEM reader.
    """
    loaded = _load_with_known_tail(pem, tail)
    try:
        if loaded is None:
            chain = new = x509.load_pem_x509_certificates(pem)
        else:
            # The one block decoded before the tail is new; the tail's certificates are the caller's own, already
            # loaded and in use.
            chain = loaded[0]
            new = chain[:1]
        for cert in new:
            # Names are left lazy: decoding them costs more than the rest, the checks compare them as DER
            # first, and messages go through subject_of(), which never raises.
            _ = (cert.extensions, cert.public_key(), cert.not_valid_after_utc, cert.not_valid_before_utc,
                 cert.signature_hash_algorithm)  # fmt: skip
    except DECODE_ERRORS as exc:
        raise InvalidQuote(f"{what} is malformed: {exc}") from exc
    if not 1 <= len(chain) <= max_length:
        raise InvalidQuote(f"{what} has {len(chain)} certificates, expected 1 to {max_length}")
    if loaded is not None:
        return chain, loaded[1]
    # The PEM reader skips blocks of other types (a damaged "BEGIN CERTIFICATE" line among them) without a word;
    # Intel's QVL fails on them, and so does enklave: every block must be a certificate that was read.
    labels = _PEM_BEGIN.findall(pem)
    if (
        len(labels) != len(chain)
        or any(label != b"CERTIFICATE" for label in labels)
        or pem.count(b"-----END CERTIFICATE-----") != len(chain)
    ):
        raise InvalidQuote(f"{what} holds PEM blocks that are not certificates")
    # The parser takes strict DER only, so each certificate encodes to exactly the bytes it was read from.
    return chain, [SignedObject(cert.public_bytes(Encoding.DER), True) for cert in chain]


# One certificate block in canonical form (RFC 7468 §2): the BEGIN line, base64 lines, the END line, each
# ended by a single newline.
_CANONICAL_BLOCK = re.compile(
    rb"-----BEGIN CERTIFICATE-----\n((?:[A-Za-z0-9+/=]+\n)+)-----END CERTIFICATE-----\n"
)


def _load_with_known_tail(
    pem: bytes, tail: KnownChain | None
) -> tuple[list[x509.Certificate], list[SignedObject]] | None:
    """The chain read from ``pem`` when it is one canonical certificate block followed by the tail's text;
    None when it is not, or when the block does not decode (the caller then reads the whole text, errors
    included, with the library's reader)."""
    if tail is None or len(pem) <= len(tail.pem) or not pem.endswith(tail.pem):
        return None
    block = _CANONICAL_BLOCK.fullmatch(pem, 0, len(pem) - len(tail.pem))
    if block is None:
        return None
    text = block.group(1).replace(b"\n", b"")
    try:
        der = binascii.a2b_base64(text, strict_mode=True)
        # Only the one canonical encoding of these bytes is taken here, so any reader decodes it the same way.
        if binascii.b2a_base64(der, newline=False) != text:
            return None
        certificate = x509.load_der_x509_certificate(der)
    except DECODE_ERRORS:  # binascii.Error is a ValueError
        return None
    return [certificate, *tail.certificates], [SignedObject(der, True), *tail.signed]


def subject_of(cert: x509.Certificate) -> str:
    """The certificate's subject for messages; a malformed name never turns an error into a crash."""
    try:
        return cert.subject.rfc4514_string()
    except DECODE_ERRORS:
        return "<malformed subject>"


def _issuer_is_subject(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        return cert.issuer == issuer.subject
    except DECODE_ERRORS:
        return False


def _find_root(cert: x509.Certificate, roots: Sequence[TrustedRoot], der: bytes | None) -> TrustedRoot | None:
    # The certificate's DER (when known) equal to the root's is the same certificate, found with a byte
    # comparison instead of the library's structural one, which costs microseconds even for equal objects.
    for root in roots:
        if (der is not None and der == root.der) or cert is root.certificate or cert == root.certificate:
            return root
    return None


def _find_issuing_root(cert: x509.Certificate, roots: Sequence[TrustedRoot]) -> TrustedRoot | None:
    for root in roots:
        if _issuer_is_subject(cert, root.certificate):
            return root
    return None


def check_crl(
    what: str,
    crl: x509.CertificateRevocationList,
    issuer: x509.Certificate,
    now: datetime,
    window: Window,
    signed: SignedObject | None = None,
    pending: PendingSignatures | None = None,
) -> None:
    """Check a CRL's signature by ``issuer`` and its thisUpdate/nextUpdate window.

    ``signed`` holds the DER the CRL was parsed from, when the caller has it. The signature alone binds the
    CRL to its issuer: comparing names as well would add cost on the hot path and no assurance, since only the
    issuer's key can produce the signature. With ``pending``, an ECDSA-SHA256 signature on the original DER is
    queued there instead of being checked now.
    """
    key = issuer.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise _crl_not_signed_by(what, issuer)
    parts = _ecdsa_sha256_parts(signed)
    if parts is not None:
        tbs, signature = parts
        _verify_or_queue(pending, key, signature, tbs, lambda: _crl_not_signed_by(what, issuer))
    elif not crl.is_signature_valid(key):
        # A layout this reader does not take, or another algorithm, gets the library's own answer (which also
        # refuses inner and outer algorithms that differ).
        raise _crl_not_signed_by(what, issuer)
    next_update = crl.next_update_utc
    if next_update is None:
        raise InvalidCollateral(f"{what} has no nextUpdate")
    check_time(what, crl.last_update_utc, next_update, now, window)


def _crl_not_signed_by(what: str, issuer: x509.Certificate) -> SignatureError:
    return SignatureError(f"{what}: signature does not verify with {subject_of(issuer)}")


def _ecdsa_sha256_parts(signed: SignedObject | None) -> tuple[bytes, bytes] | None:
    """The TBS bytes and signature of an object signed with ECDSA-SHA256 (inner and outer algorithms alike, as
    ``is_signature_valid`` requires), read from its original DER; None when it is not at hand or not such."""
    if signed is None:
        return None
    try:
        tbs, algorithm, signature, _, _ = signed.parts()
    except ValueError:
        return None
    return (tbs, signature) if algorithm == ECDSA_WITH_SHA256_DER else None


def check_not_revoked(what: str, cert: x509.Certificate, crl: x509.CertificateRevocationList) -> None:
    """Fail with :class:`RevokedError` when the certificate's serial number is on ``crl``.

    ``crl`` must be the certificate's issuer's; the caller checks (or queues) its signature.
    """
    serial = cert.serial_number
    if serial < 0:
        # RFC 5280 §4.1.2.2: the serial number is a positive integer (and the library refuses to look up others).
        raise CertificateChainError(f"{what} has a negative serial number")
    if crl.get_revoked_certificate_by_serial_number(serial) is not None:
        raise RevokedError(f"{what} (serial {serial:x}) is revoked")


def verify_raw_signature(
    what: str,
    key: ec.EllipticCurvePublicKey,
    signature: bytes,
    data: bytes,
    pending: PendingSignatures | None = None,
) -> None:
    """Verify an ECDSA-SHA256 signature given as 64 bytes r || s (the SGX encoding); with ``pending``, queue it
    there instead."""
    if len(signature) != 64:
        raise SignatureError(f"{what}: signature must be 64 bytes, got {len(signature)}")
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    _verify_or_queue(pending, key, der, data, lambda: SignatureError(f"{what}: signature does not verify"))


def p256_key_from_raw(what: str, raw: bytes) -> ec.EllipticCurvePublicKey:
    """Load a P-256 public key given as 64 bytes x || y (the SGX attestation key encoding)."""
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + raw)
    except ValueError as exc:
        # A point that is not on the curve cannot have signed anything: the evidence is bad.
        raise SignatureError(f"{what} is not a valid P-256 point") from exc
