"""The one exception tree of enklave.

Every error that enklave raises on purpose derives from :class:`EnklaveError`. The tree separates the three
things a caller must tell apart: the peer (or a file, or the host) sent bad data, the I/O around us failed, and
the caller misused the API::

    EnklaveError
    ├── BadDataError                 untrusted bytes were malformed or failed verification
    │   ├── InvalidQuote             an SGX structure or evidence envelope could not be parsed
    │   ├── InvalidCollateral        TCB info, QE identity, CRL, certificate or collateral file could not be parsed
    │   ├── InvalidBundle            a signed enclave bundle or its SIGSTRUCT could not be parsed
    │   ├── InvalidSealedBlob        a sealed blob could not be parsed (wrong magic, version, truncated)
    │   ├── BoundaryError            a frame or argument crossing the host/enclave boundary was rejected
    │   ├── InvalidPolicy            a policy text (MAA policy language, key release policy) does not parse
    │   ├── InvalidToken             an attestation token (JWT) is malformed: not a JWS, bad JSON, bad header
    │   ├── InvalidKey               a public key from a peer or a token is malformed or too weak to use
    │   └── VerificationError        well-formed data that must not be trusted
    │       ├── SignatureError       a signature does not verify over the signed bytes
    │       ├── CertificateChainError
    │       │   └── UntrustedRootError   the chain ends in a root that was not trusted explicitly
    │       ├── RevokedError         a certificate is on a CRL, or a TCB level / QE is Revoked
    │       ├── ExpiredError         a certificate, CRL, TCB info or QE identity is outside its validity window
    │       ├── CollateralMismatchError  collateral is for another platform (FMSPC, PCE-ID, issuer, TEE type)
    │       ├── BindingError         a hash binding does not hold (QE report data, report data)
    │       ├── QeIdentityError      the quoting enclave is not the one the QE identity describes
    │       ├── TcbError             no TCB level matches the platform, or the TCB status is not acceptable
    │       ├── PolicyError          the appraisal policy rejected verified evidence (names field, expected, actual)
    │       ├── LaunchError          a bundle fails the EINIT checks (measurement or SIGSTRUCT signature)
    │       └── SealingError         a sealed blob does not unseal here (tampered, other enclave, SVN rollback)
    ├── TransportError               I/O failed: network, file system, remote service
    │   ├── CollateralUnavailable    collateral could not be obtained from any source
    │   └── ChannelError             a secure channel failed: TLS handshake or record error, peer closed early
    ├── EnclaveRuntimeError          a call into or out of a running enclave did not complete
    │   ├── EcallError               enclave code raised (carries the enclave-side type name and message)
    │   ├── OcallError               a host function called by the enclave raised
    │   ├── EcallTimeout             the host stopped waiting for an ecall
    │   └── EnclaveCrashedError      the enclave process died or is not running
    ├── PlatformError                the TEE platform is unavailable or refused a request (no SGX, EGETKEY)
    └── UsageError                   the caller misused the API or passed an invalid option
        └── ConfigError              an enclave configuration (enklave.toml) is invalid

Parsers raise exactly one type per format (``InvalidQuote`` for SGX structures, ``InvalidCollateral`` for
collateral, ``InvalidBundle`` for enclave bundles, ``InvalidSealedBlob`` for sealed data) and always chain the
low-level cause with ``raise ... from exc``. Verifiers raise; they never return ``False``. Messages never contain
secrets.
"""

from __future__ import annotations

__all__ = [
    "BadDataError",
    "BindingError",
    "BoundaryError",
    "CertificateChainError",
    "ChannelError",
    "CollateralMismatchError",
    "CollateralUnavailable",
    "ConfigError",
    "EcallError",
    "EcallTimeout",
    "EnclaveCrashedError",
    "EnclaveRuntimeError",
    "EnklaveError",
    "ExpiredError",
    "InvalidBundle",
    "InvalidCollateral",
    "InvalidKey",
    "InvalidPolicy",
    "InvalidQuote",
    "InvalidSealedBlob",
    "InvalidToken",
    "LaunchError",
    "OcallError",
    "PlatformError",
    "PolicyError",
    "QeIdentityError",
    "RevokedError",
    "SealingError",
    "SignatureError",
    "TcbError",
    "TransportError",
    "UntrustedRootError",
    "UsageError",
    "VerificationError",
]


class EnklaveError(Exception):
    """Root of every error enklave raises on purpose."""


class BadDataError(EnklaveError):
    """Untrusted input (from a peer, a file, the network or the host) was malformed or failed verification."""


class InvalidQuote(BadDataError):
    """An SGX structure or evidence envelope is malformed: truncated, oversized, unknown version, trailing bytes.

    ``offset`` is the byte offset at which the problem was found, when known.
    """

    def __init__(self, message: str, *, offset: int | None = None) -> None:
        self.offset = offset
        super().__init__(message if offset is None else f"{message} (at byte offset {offset})")


class InvalidCollateral(BadDataError):
    """Collateral (TCB info, QE identity, CRL, certificate chain, collateral file) is malformed."""


class InvalidBundle(BadDataError):
    """A signed enclave bundle (or the SIGSTRUCT inside it) is malformed."""


class InvalidSealedBlob(BadDataError):
    """A sealed blob is malformed: wrong magic, unknown version, truncated or oversized fields."""


class BoundaryError(BadDataError):
    """A frame or an argument crossing the host/enclave boundary was rejected.

    Raised inside the enclave when the host sends a malformed frame or an argument that does not match the
    declared type or size limit, and reported back to the host as this type; raised in the host when the enclave
    answers an ocall result or frame that does not decode.
    """


class InvalidPolicy(BadDataError):
    """A policy document does not parse or is not valid: the MAA policy language, a key release policy.

    ``line`` and ``column`` (1-based) point at the problem when the policy is text.
    """

    def __init__(self, message: str, *, line: int | None = None, column: int | None = None) -> None:
        self.line = line
        self.column = column
        where = f" (line {line}, column {column})" if line is not None and column is not None else ""
        super().__init__(f"{message}{where}")


class InvalidToken(BadDataError):
    """An attestation token is malformed: not a compact JWS, undecodable header or claims, a missing claim."""


class InvalidKey(BadDataError):
    """A public key that came from a peer or a token (a key release recipient, a JWK) is malformed, of an
    unsupported type or curve, or too weak to use."""


class VerificationError(BadDataError):
    """Well-formed evidence or collateral that must not be trusted."""


class SignatureError(VerificationError):
    """A signature does not verify over the bytes it claims to sign."""


class CertificateChainError(VerificationError):
    """A certificate chain is broken: wrong issuer, bad signature, not a CA, wrong length."""


class UntrustedRootError(CertificateChainError):
    """A chain ends in a root certificate that the caller did not trust; ``root`` is that certificate's DER when
    the chain included it (a public certificate, so callers may compare it with roots they know of)."""

    def __init__(self, message: str, *, root: bytes | None = None) -> None:
        super().__init__(message)
        self.root = root


class RevokedError(VerificationError):
    """A certificate is listed on a CRL, or the platform or QE TCB status is Revoked."""


class ExpiredError(VerificationError):
    """A certificate, CRL, TCB info or QE identity is not valid at the verification time."""


class CollateralMismatchError(VerificationError):
    """The collateral describes another platform or TEE than the evidence (FMSPC, PCE-ID, issuer, TEE type)."""


class BindingError(VerificationError):
    """A hash binding does not hold: the QE report data, or the report data the caller expected."""


class QeIdentityError(VerificationError):
    """The quoting enclave's report does not match the QE identity (MRSIGNER, product, attributes, MISCSELECT)."""


class TcbError(VerificationError):
    """No TCB level of the TCB info or QE identity matches, or the resulting status is not acceptable."""


class PolicyError(VerificationError):
    """The appraisal policy rejected verified evidence.

    ``field``, ``expected`` and ``actual`` say which check failed; they never hold secrets (evidence fields are
    public by construction).
    """

    def __init__(
        self, message: str, *, field: str = "", expected: object = None, actual: object = None
    ) -> None:
        self.field = field
        self.expected = expected
        self.actual = actual
        super().__init__(message)


class LaunchError(VerificationError):
    """An enclave bundle fails what EINIT checks: its measurement differs from the SIGSTRUCT's enclave hash, or
    the SIGSTRUCT signature does not verify under the modulus it carries."""


class SealingError(VerificationError):
    """A sealed blob does not unseal in this enclave: it was tampered with, sealed by another enclave or signer,
    or sealed at a higher ISV SVN or CPU SVN than this enclave has (rollback protection)."""


class TransportError(EnklaveError):
    """I/O failed: the network, the file system or a remote service."""


class CollateralUnavailable(TransportError):
    """Collateral could not be obtained (the service failed, answered an error, or the file is missing)."""


class ChannelError(TransportError):
    """A secure channel could not be set up or broke: the TLS handshake or a record failed, the peer closed early.

    A peer that fails attestation raises the verification error instead (:class:`PolicyError`, :class:`BindingError`,
    ...); this type covers what happens below attestation, where an attacker and a bad network look the same.
    """


class EnclaveRuntimeError(EnklaveError):
    """A call into (ecall) or out of (ocall) a running enclave did not complete normally."""


class EcallError(EnclaveRuntimeError):
    """Enclave code raised while serving an ecall.

    ``type_name`` is the enclave-side exception's class name and the message is its text; the enclave decides
    what its messages say, so enclave code must not put secrets in exception messages.
    """

    def __init__(self, message: str, *, type_name: str = "") -> None:
        self.type_name = type_name
        super().__init__(f"{type_name}: {message}" if type_name else message)


class OcallError(EnclaveRuntimeError):
    """A host function that the enclave called (an ocall) raised or is not provided by the host."""


class EcallTimeout(EnclaveRuntimeError):
    """The host stopped waiting for an ecall; the enclave thread (TCS) stays busy until the call returns."""


class EnclaveCrashedError(EnclaveRuntimeError):
    """The enclave process exited or was killed; calls in flight fail with this error. Load it again to go on."""


class PlatformError(EnklaveError):
    """The TEE platform is unavailable (no SGX device, no Gramine) or refused a request (a key request above
    the enclave's own SVN, a missing ``/dev/attestation`` file)."""


class UsageError(EnklaveError):
    """The caller misused the API: an invalid argument, option or configuration."""


class ConfigError(UsageError):
    """An enclave configuration (``enklave.toml``) is invalid: a missing or mistyped key, a value out of range."""
