"""The one exception tree of enklave.

Every error that enklave raises on purpose derives from :class:`EnklaveError`. The tree separates the three
things a caller must tell apart: the peer (or a file, or the host) sent bad data, the I/O around us failed, and
the caller misused the API::

    EnklaveError
    ├── BadDataError                 untrusted bytes were malformed or failed verification
    │   ├── InvalidQuote             an SGX structure or evidence envelope could not be parsed
    │   ├── InvalidCollateral        TCB info, QE identity, CRL, certificate or collateral file could not be parsed
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
    │       └── PolicyError          the appraisal policy rejected verified evidence (names field, expected, actual)
    ├── TransportError               I/O failed: network, file system, remote service
    │   └── CollateralUnavailable    collateral could not be obtained from any source
    └── UsageError                   the caller misused the API or passed an invalid option

Parsers raise exactly one type per format (``InvalidQuote`` for SGX structures, ``InvalidCollateral`` for
collateral) and always chain the low-level cause with ``raise ... from exc``. Verifiers raise; they never return
``False``. Messages never contain secrets.
"""

from __future__ import annotations

__all__ = [
    "BadDataError",
    "BindingError",
    "CertificateChainError",
    "CollateralMismatchError",
    "CollateralUnavailable",
    "EnklaveError",
    "ExpiredError",
    "InvalidCollateral",
    "InvalidQuote",
    "PolicyError",
    "QeIdentityError",
    "RevokedError",
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


class VerificationError(BadDataError):
    """Well-formed evidence or collateral that must not be trusted."""


class SignatureError(VerificationError):
    """A signature does not verify over the bytes it claims to sign."""


class CertificateChainError(VerificationError):
    """A certificate chain is broken: wrong issuer, bad signature, not a CA, wrong length."""


class UntrustedRootError(CertificateChainError):
    """A chain ends in a root certificate that the caller did not trust."""


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


class TransportError(EnklaveError):
    """I/O failed: the network, the file system or a remote service."""


class CollateralUnavailable(TransportError):
    """Collateral could not be obtained (the service failed, answered an error, or the file is missing)."""


class UsageError(EnklaveError):
    """The caller misused the API: an invalid argument, option or configuration."""
