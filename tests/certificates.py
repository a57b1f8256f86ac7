"""Certificates several test modules make the same way: plain self-signed ones (RA-TLS impostors, token signing
certificates), and a verifier of the simulated platform's RA-TLS certificates.

Used by tests/test_ratls.py, tests/test_tls.py, tests/test_tokens.py, tests/test_kbs_service.py,
tests/test_inference_client.py, tests/test_engine.py and tests/test_relay.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from enklave.attestation.policy import EnclavePolicy
from enklave.channels.ratls import PeerVerifier
from enklave.platform.simulated import SimulatedCollateralSource, simulated_root

__all__ = ["self_signed", "simulated_verifier"]


def self_signed(
    key: CertificateIssuerPrivateKeyTypes,
    subject: str,
    *,
    now: datetime | None = None,
    backdate: timedelta = timedelta(hours=1),
    validity: timedelta = timedelta(days=1),
    serial_number: int = 1,
    extensions: Iterable[tuple[x509.ObjectIdentifier, bytes]] = (),
) -> x509.Certificate:
    """A certificate for ``key`` signed by ``key`` (SHA-256), named by the RFC 4514 ``subject`` as subject and
    issuer, valid from ``now - backdate`` to ``now + validity`` (``now``: the current time), with each
    ``(oid, value)`` of ``extensions`` as a non-critical extension holding ``value`` as it is."""
    name = x509.Name.from_rfc4514_string(subject)
    start = now if now is not None else datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial_number)
        .not_valid_before(start - backdate)
        .not_valid_after(start + validity)
    )
    for oid, value in extensions:
        builder = builder.add_extension(x509.UnrecognizedExtension(oid, value), critical=False)
    return builder.sign(key, hashes.SHA256())


def simulated_verifier(mr_enclave: bytes) -> PeerVerifier:
    """A verifier of RA-TLS peers that pins ``mr_enclave`` and trusts the simulated platform of ENKLAVE_HOME."""
    return PeerVerifier(
        collateral_source=SimulatedCollateralSource(),
        policy=EnclavePolicy(mr_enclave=mr_enclave, allow_simulated=True),
        roots=[simulated_root()],
    )
