"""Certificates several test modules make the same way: plain self-signed ones (RA-TLS impostors, token signing
certificates), a verifier of the simulated platform's RA-TLS certificates, and PEM text with one certificate's DER
changed (a quote's PCK chain, a collateral chain).

Used by tests/test_ratls.py, tests/test_tls.py, tests/test_tokens.py, tests/test_kbs_service.py,
tests/test_inference_client.py, tests/test_engine.py, tests/test_relay.py, tests/test_cli.py and
tests/test_verify_signature_order.py.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from enklave.attestation.policy import EnclavePolicy
from enklave.channels.ratls import PeerVerifier
from enklave.platform.simulated import SimulatedCollateralSource, simulated_root

__all__ = ["PEM_CERTIFICATE", "replace_certificate", "self_signed", "simulated_verifier"]


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


PEM_CERTIFICATE = re.compile(rb"(-----BEGIN CERTIFICATE-----\n)(.+?)(-----END CERTIFICATE-----\n)", re.DOTALL)
"""A PEM certificate block; group 2 is its base64 text."""


def replace_certificate(text: bytes, index: int, change: Callable[[bytes], bytes]) -> bytes:
    """``text`` with the DER of its ``index``-th PEM certificate changed by ``change``, written again in lines of
    64 characters (the same length when the DER keeps its length: a quote's certification data size stays right)."""
    block = list(PEM_CERTIFICATE.finditer(text))[index]
    der = change(base64.b64decode(block.group(2)))
    body = b"".join(base64.encodebytes(der[start : start + 48]) for start in range(0, len(der), 48))
    return text[: block.start(2)] + body + text[block.end(2) :]
