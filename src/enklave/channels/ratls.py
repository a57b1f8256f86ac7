"""RA-TLS certificates: create them inside an enclave, and verify the ones peers present.

An RA-TLS certificate is a self-signed X.509 certificate whose key is bound to an SGX quote carried in an
extension. :func:`create_attested_certificate` makes one the way Gramine 1.8 does (TCG DICE tagged evidence,
optionally also Gramine's legacy raw-quote extension); :func:`verify_peer_certificate` accepts those two
formats and Open Enclave's. The formats are described in :mod:`enklave.channels._ratls_evidence` and in
``docs/ra-tls.md``.

Gramine makes one quote per format, because each binds different report data (SHA-256 of the claims for the
DICE format, SHA-256 of the public key for the legacy one); enklave does the same.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final, Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from enklave._x509 import DECODE_ERRORS
from enklave.attestation.appraiser import Appraiser, verify_with_collateral
from enklave.attestation.policy import Policy
from enklave.attestation.sources import CollateralSource
from enklave.attestation.trust import TrustedRoot
from enklave.attestation.verified import VerifiedQuote
from enklave.attestation.verify import QuoteVerifier
from enklave.channels._ratls_evidence import (
    DICE_EVIDENCE_OID,
    GRAMINE_LEGACY_OID,
    GRAMINE_LEGACY_OID_INTENDED,
    MAX_EXTENSION_SIZE,
    OPEN_ENCLAVE_OID,
    RaTlsFormat,
    encode_claims,
    encode_dice_evidence,
    parse_dice_evidence,
    parse_open_enclave,
)
from enklave.channels._ratls_settings import RaTlsSettings
from enklave.channels._verified import QuoteIdentity
from enklave.errors import (
    BadDataError,
    BindingError,
    CertificateChainError,
    ExpiredError,
    InvalidKey,
    InvalidQuote,
    UsageError,
)
from enklave.platform._base import Platform
from enklave.sgx.quote import Quote

__all__ = [
    "DICE_EVIDENCE_OID",
    "GRAMINE_LEGACY_OID",
    "MAX_CERTIFICATE_SIZE",
    "OPEN_ENCLAVE_OID",
    "AttestedCertificate",
    "PeerVerifier",
    "RaTlsFormat",
    "RaTlsSettings",
    "VerifiedPeer",
    "create_attested_certificate",
    "verify_peer_certificate",
]

#: Upper bound on a peer certificate: the largest extension plus room for the rest of the certificate.
MAX_CERTIFICATE_SIZE: Final = MAX_EXTENSION_SIZE + 16 * 1024

_CURVES: Final[dict[str, tuple[ec.EllipticCurve, hashes.SHA256 | hashes.SHA384]]] = {
    "P-256": (ec.SECP256R1(), hashes.SHA256()),
    "P-384": (ec.SECP384R1(), hashes.SHA384()),
}
_CURVE_NAMES: Final = {"secp256r1": "P-256", "secp384r1": "P-384"}
_BACKDATE: Final = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class AttestedCertificate:
    """A fresh private key and the self-signed RA-TLS certificate for it.

    The private key never appears in ``repr``; keep it inside the enclave.
    """

    private_key: ec.EllipticCurvePrivateKey = field(repr=False)
    certificate: x509.Certificate

    @property
    def certificate_der(self) -> bytes:
        """The certificate in DER."""
        return self.certificate.public_bytes(serialization.Encoding.DER)

    @property
    def certificate_pem(self) -> bytes:
        """The certificate in PEM."""
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def private_key_pem(self) -> bytes:
        """The private key as unencrypted PKCS#8 PEM, for ``ssl.SSLContext.load_cert_chain``."""
        return self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )


def _spki_der(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def create_attested_certificate(
    platform: Platform,
    *,
    curve: Literal["P-256", "P-384"] = "P-256",
    nonce: bytes | None = None,
    legacy_gramine: bool = False,
    subject: str = "CN=enklave RA-TLS",
    validity: timedelta = timedelta(days=1),
    now: datetime | None = None,
) -> AttestedCertificate:
    """Generate a key on ``curve`` and a self-signed certificate whose evidence binds it.

    The certificate carries the TCG DICE tagged evidence (claims: the key's SHA-256 "pubkey-hash" and
    ``nonce`` if given; one quote over SHA-256 of the claims) and, with ``legacy_gramine``, also Gramine's
    legacy extension (a second quote over SHA-256 of the DER SubjectPublicKeyInfo). Both extensions are
    non-critical so that plain TLS clients accept the certificate. It is valid from ``now`` (default: the
    current time) minus five minutes of clock skew until ``now + validity``.

    Raises :class:`UsageError` for a bad argument and :class:`~enklave.errors.PlatformError` when the
    platform cannot quote.
    """
    if curve not in _CURVES:
        raise UsageError(f"curve must be one of {sorted(_CURVES)}, got {curve!r}")
    if nonce is not None and not isinstance(nonce, bytes):
        raise UsageError("nonce must be bytes")
    if validity <= timedelta(0):
        raise UsageError("validity must be positive")
    try:
        name = x509.Name.from_rfc4514_string(subject)
    except ValueError as exc:
        raise UsageError(f"subject {subject!r} is not an RFC 4514 name") from exc
    start = now if now is not None else datetime.now(UTC)
    if start.tzinfo is None:
        raise UsageError("now must be timezone-aware (UTC)")

    ec_curve, digest = _CURVES[curve]
    key = ec.generate_private_key(ec_curve)
    spki = _spki_der(key.public_key())

    # 1. DICE tagged evidence: the claims first, then a quote over their SHA-256, then tag 60000.
    claims = encode_claims(spki, nonce)
    dice_quote = platform.get_quote(hashlib.sha256(claims).digest())
    extensions: list[tuple[x509.ObjectIdentifier, bytes]] = [
        (DICE_EVIDENCE_OID, encode_dice_evidence(dice_quote, claims))
    ]
    # 2. The legacy extension needs its own quote, because its report data binds the key directly.
    if legacy_gramine:
        extensions.append((GRAMINE_LEGACY_OID, platform.get_quote(hashlib.sha256(spki).digest())))

    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - _BACKDATE)
        .not_valid_after(start + validity)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    for oid, value in extensions:
        builder = builder.add_extension(x509.UnrecognizedExtension(oid, value), critical=False)
    return AttestedCertificate(key, builder.sign(key, digest))


@dataclass(frozen=True, slots=True)
class VerifiedPeer(QuoteIdentity):
    """A peer certificate whose quote, key binding, signature and validity were all verified and appraised.

    ``quote`` is the verified quote (MRENCLAVE, MRSIGNER, TCB status, ...), ``format`` the extension that
    carried it, ``public_key`` the certificate key bound by the evidence, and ``nonce`` the DICE "nonce"
    claim when there was one.
    ``mr_enclave`` and ``mr_signer`` are the peer enclave's, from ``quote``.
    """

    quote: VerifiedQuote
    format: RaTlsFormat
    public_key: ec.EllipticCurvePublicKey
    certificate: x509.Certificate
    nonce: bytes | None = None


def _load_certificate(cert_der: bytes) -> x509.Certificate:
    if not isinstance(cert_der, bytes | bytearray | memoryview):
        raise UsageError("cert_der must be bytes")
    if len(cert_der) > MAX_CERTIFICATE_SIZE:
        raise BadDataError(f"the peer certificate is {len(cert_der)} bytes, over {MAX_CERTIFICATE_SIZE}")
    try:
        return x509.load_der_x509_certificate(bytes(cert_der))
    except DECODE_ERRORS as exc:
        raise BadDataError("the peer certificate is not a DER X.509 certificate") from exc


def _find_evidence(cert: x509.Certificate) -> tuple[RaTlsFormat, bytes]:
    """The preferred evidence extension (DICE, then legacy Gramine, then Open Enclave) and its value."""
    try:
        extensions = {ext.oid: ext.value for ext in cert.extensions}
    except DECODE_ERRORS as exc:  # Duplicate or malformed known extensions.
        raise BadDataError("the peer certificate's extensions do not parse") from exc
    order = (
        (DICE_EVIDENCE_OID, RaTlsFormat.DICE),
        (GRAMINE_LEGACY_OID, RaTlsFormat.GRAMINE_LEGACY),
        (GRAMINE_LEGACY_OID_INTENDED, RaTlsFormat.GRAMINE_LEGACY),
        (OPEN_ENCLAVE_OID, RaTlsFormat.OPEN_ENCLAVE),
    )
    for oid, found in order:
        value = extensions.get(oid)
        if isinstance(value, x509.UnrecognizedExtension):
            if len(value.value) > MAX_EXTENSION_SIZE:
                raise InvalidQuote(f"the {found.value} extension is over {MAX_EXTENSION_SIZE} bytes")
            return found, value.value
    raise InvalidQuote("the peer certificate carries no RA-TLS evidence extension")


def _public_key(cert: x509.Certificate) -> ec.EllipticCurvePublicKey:
    try:
        key = cert.public_key()
    except DECODE_ERRORS as exc:
        raise InvalidKey("the peer certificate's public key does not parse") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in _CURVE_NAMES:
        raise InvalidKey("the peer certificate's key is not an ECDSA P-256 or P-384 key")
    return key


def _check_prefix(report_data: bytes, expected: bytes, what: str) -> None:
    if not hmac.compare_digest(report_data[: len(expected)], expected):
        raise BindingError(f"the quote's report data does not bind {what}")


def verify_peer_certificate(
    cert_der: bytes,
    *,
    collateral_source: CollateralSource,
    policy: Policy,
    roots: Sequence[TrustedRoot] | None = None,
    now: datetime,
    nonce: bytes | None = None,
    verifier: QuoteVerifier | None = None,
) -> VerifiedPeer:
    """Verify an RA-TLS peer certificate (DER) and appraise its enclave; raise on any failure.

    Steps: (1) parse the certificate and find the evidence extension (DICE, legacy Gramine, Open Enclave,
    in that order of preference); (2) parse it strictly; (3) fetch collateral for the quote and verify it
    with ``roots`` (or ``verifier``, whose roots and cache are used instead) at ``now``; (4) check the key
    binding of that format; (5) check ``nonce`` if given (only the DICE format can carry one); (6) check the
    self-signature and (7) the validity window; (8) ``policy.appraise`` the verified quote.

    Raises :class:`BadDataError` for an unparsable certificate, :class:`InvalidQuote` for malformed evidence,
    :class:`InvalidKey` for a key that is not ECDSA P-256/P-384, :class:`BindingError` when the evidence does
    not bind the key or the nonce, :class:`CertificateChainError` for a bad self-signature,
    :class:`ExpiredError` outside the validity window, :class:`~enklave.errors.PolicyError` when the policy
    rejects the enclave, and whatever quote verification and the collateral source raise.
    """
    if now.tzinfo is None:
        raise UsageError("now must be timezone-aware (UTC)")
    if verifier is None:
        verifier = QuoteVerifier(roots, cache_size=0)

    # 1-2. Parse the certificate, find and parse the evidence.
    cert = _load_certificate(cert_der)
    found, value = _find_evidence(cert)
    key = _public_key(cert)
    spki = _spki_der(key)
    claims_nonce: bytes | None = None
    if found is RaTlsFormat.DICE:
        dice = parse_dice_evidence(value)
        quote_bytes, claims_nonce = dice.quote, dice.nonce
    elif found is RaTlsFormat.GRAMINE_LEGACY:
        quote_bytes = value
    else:
        quote_bytes, custom_claims = parse_open_enclave(value)
    quote = Quote.from_bytes(quote_bytes)

    # 3. Collateral and DCAP verification.
    verified = verify_with_collateral(quote, collateral_source, verifier, now)
    report_data = bytes(verified.report_data)

    # 4. The key binding of the format found.
    if found is RaTlsFormat.DICE:
        _check_prefix(report_data, hashlib.sha256(dice.claims).digest(), "the DICE claims")
        expected = hashlib.new(dice.hash_algorithm, spki).digest()
        if not hmac.compare_digest(dice.pubkey_hash, expected):
            raise BindingError('the "pubkey-hash" claim does not match the certificate key')
    elif found is RaTlsFormat.GRAMINE_LEGACY:
        _check_prefix(report_data, hashlib.sha256(spki).digest(), "the certificate key")
    else:
        _check_prefix(report_data, hashlib.sha256(custom_claims).digest(), "the OE custom claims")
        pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        # OE hashes the PEM text as its C API passes it, with the terminating NUL; accept it without too.
        candidates = (hashlib.sha256(pem + b"\0").digest(), hashlib.sha256(pem).digest())
        if not any(hmac.compare_digest(custom_claims, candidate) for candidate in candidates):
            raise BindingError("the OE custom claims do not hold the hash of the certificate key")

    # 5. Freshness: the nonce the caller expects must be the one the enclave put in its claims.
    if nonce is not None:
        if claims_nonce is None:
            raise BindingError(f"a nonce was expected but the {found.value} evidence carries none")
        if not hmac.compare_digest(claims_nonce, nonce):
            raise BindingError("the evidence's nonce is not the expected one")

    # 6. The certificate is signed by its own (bound) key.
    try:
        cert.verify_directly_issued_by(cert)
    except (InvalidSignature, *DECODE_ERRORS) as exc:
        raise CertificateChainError("the peer certificate is not correctly self-signed") from exc

    # 7. Validity window.
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise ExpiredError(
            f"the peer certificate is valid from {cert.not_valid_before_utc.isoformat()} to "
            f"{cert.not_valid_after_utc.isoformat()}, not at {now.isoformat()}"
        )

    # 8. Appraisal.
    policy.appraise(verified)
    return VerifiedPeer(verified, found, key, cert, claims_nonce)


class PeerVerifier(Appraiser):
    """Verifies RA-TLS peer certificates with long-lived parts: collateral, policy, roots or verifier, clock.

    One instance serves many connections: its :class:`QuoteVerifier` caches the collateral checks (and a
    :class:`~enklave.attestation.sources.CachingCollateralSource` in front of a remote source avoids refetching),
    so that after the first connection a verification costs the quote's own signatures. See
    :class:`~enklave.attestation.appraiser.Appraiser` for the arguments.
    """

    def verify(self, cert_der: bytes, *, nonce: bytes | None = None) -> VerifiedPeer:
        """Verify a peer's certificate (DER) with :func:`verify_peer_certificate` at the clock's time.

        Raises what :func:`verify_peer_certificate` raises.
        """
        return verify_peer_certificate(
            cert_der,
            collateral_source=self.collateral_source,
            policy=self.policy,
            now=self.clock(),
            nonce=nonce,
            verifier=self.quote_verifier,
        )
