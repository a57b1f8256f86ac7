"""What the benchmark scripts share: the command line of those that alternate baseline and enklave rounds, a
signed copy of a benchmark enclave, and a plain self-signed certificate (the TLS baseline, the token signer).

Scripts import it as a sibling module: Python puts the directory of the script it runs first on sys.path.
"""

from __future__ import annotations

import argparse
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID

from enklave.runtime.bundle import sign_bundle, write_bundle
from enklave.runtime.signing import generate_signing_key

__all__ = ["alternating_arguments", "self_signed", "signed_copy"]


def alternating_arguments(doc: str, *, seconds: float, rounds: int) -> argparse.ArgumentParser:
    """A parser described by the first paragraph of ``doc``, with --seconds, --rounds and --json; a script adds
    its own options before it parses."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n", maxsplit=1)[0])
    parser.add_argument(
        "--seconds", type=float, default=seconds, help="time per measurement, over all rounds"
    )
    parser.add_argument("--rounds", type=int, default=rounds, help="alternating rounds; medians are reported")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    return parser


def signed_copy(project: Path, directory: Path) -> Path:
    """Copy the enclave ``project`` into ``directory``, sign it with a fresh key, and return the bundle's path."""
    source = directory / project.name
    shutil.copytree(project, source)
    bundle_path = source / f"{project.name}.enclave"
    write_bundle(sign_bundle(source / "enklave.toml", generate_signing_key()), bundle_path)
    return bundle_path


def self_signed(key: CertificateIssuerPrivateKeyTypes, common_name: str) -> x509.Certificate:
    """A certificate for ``key`` signed by ``key`` (SHA-256), valid from a day before now to a day after."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
