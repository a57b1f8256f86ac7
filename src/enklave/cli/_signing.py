"""What ``enklave sign`` and ``enklave build`` both resolve: the enclave configuration file and the signing key."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa

from enklave.runtime.config import CONFIG_FILENAME
from enklave.runtime.signing import default_signing_key_path, load_or_create_signing_key, load_signing_key


def config_file(config: str) -> Path:
    """The configuration file CONFIG names: the file itself, or the enklave.toml in a directory."""
    path = Path(config)
    return path / CONFIG_FILENAME if path.is_dir() else path


def signing_key(key_path: str | None, name: str) -> tuple[rsa.RSAPrivateKey, Path, bool]:
    """The key given with ``--key``, else enclave ``name``'s default key (generated on first use, outside the
    project): the key, its path, and whether it was generated now. Raises like :func:`load_signing_key`."""
    if key_path is not None:
        path = Path(key_path)
        return load_signing_key(path), path, False
    path = default_signing_key_path(name)
    key, generated = load_or_create_signing_key(path)
    return key, path, generated
