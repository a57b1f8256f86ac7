"""Enclave signing keys: RSA-3072 with public exponent 3, as SGX requires, kept owner-only.

When ``enklave sign`` is given no key, it uses one per enclave name under the data directory
(``$ENKLAVE_HOME/signing-keys/<name>.pem``), generating it on first use. Keeping it there rather than next to the
project means the private key is never matched by an ``enclave.files`` pattern (and so never packed into a
bundle) and never committed with the sources. The MRSIGNER of such a key is specific to this installation: pass
``--key`` to sign with a key that is shared between machines.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from enklave._home import data_home, write_private
from enklave.errors import TransportError, UsageError
from enklave.sgx.sigstruct import SIGSTRUCT_EXPONENT, SIGSTRUCT_KEY_BITS

__all__ = [
    "default_signing_key_path",
    "generate_signing_key",
    "load_or_create_signing_key",
    "load_signing_key",
    "save_signing_key",
]

_MAX_KEY_FILE = 64 * 1024


def generate_signing_key() -> rsa.RSAPrivateKey:
    """A fresh RSA-3072 key with public exponent 3."""
    return rsa.generate_private_key(public_exponent=SIGSTRUCT_EXPONENT, key_size=SIGSTRUCT_KEY_BITS)


def load_signing_key(path: str | Path) -> rsa.RSAPrivateKey:
    """Load an unencrypted PEM private key and check that SGX accepts it.

    Raises :class:`TransportError` when the file cannot be read and :class:`UsageError` (one line, never the
    key material) when it is not a PEM RSA-3072 key with exponent 3.
    """
    key_path = Path(path)
    try:
        with key_path.open("rb") as handle:
            data = handle.read(_MAX_KEY_FILE + 1)
    except OSError as exc:
        raise TransportError(f"cannot read signing key {key_path}: {exc.strerror or exc}") from exc
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        # The parser's message may quote the input; keep the line free of key material.
        raise UsageError(f"signing key {key_path} is not an unencrypted PEM private key") from exc
    except UnsupportedAlgorithm as exc:
        raise UsageError(f"signing key {key_path} is not a supported PEM private key") from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise UsageError(f"signing key {key_path} is not an RSA key; SGX needs RSA-3072 with exponent 3")
    exponent = key.public_key().public_numbers().e
    if key.key_size != SIGSTRUCT_KEY_BITS or exponent != SIGSTRUCT_EXPONENT:
        raise UsageError(
            f"signing key {key_path} is RSA-{key.key_size} with exponent {exponent}; "
            f"SGX needs RSA-3072 with exponent 3"
        )
    return key


def save_signing_key(key: rsa.RSAPrivateKey, path: str | Path) -> None:
    """Write ``key`` as unencrypted PKCS#8 PEM, atomically, mode 0600 in a 0700 directory.

    Raises :class:`TransportError` when the file cannot be written.
    """
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_private(Path(path), pem)


def default_signing_key_path(name: str, environ: Mapping[str, str] | None = None) -> Path:
    """Where the default signing key of the enclave called ``name`` lives: ``<data home>/signing-keys/<name>.pem``."""
    return data_home(environ) / "signing-keys" / f"{name}.pem"


def load_or_create_signing_key(path: str | Path) -> tuple[rsa.RSAPrivateKey, bool]:
    """Load the key at ``path``, or generate and save one there if the file does not exist.

    Returns the key and True when it was generated now. Raises like :func:`load_signing_key` and
    :func:`save_signing_key`.
    """
    key_path = Path(path)
    if key_path.exists():
        return load_signing_key(key_path), False
    key = generate_signing_key()
    save_signing_key(key, key_path)
    return key, True
