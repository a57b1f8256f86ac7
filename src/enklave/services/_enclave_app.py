"""A service's own enclave: signed from package data into the data directory, loaded, its sealed state kept.

Both services ship their enclave as package data (``enclave_app/``). :func:`sign_packaged_enclave` copies it
out, signs it with the key kept in the data directory (so the MRSIGNER is the same every start) and writes the
bundle; :func:`start_sealed` loads the bundle and hands the enclave its sealed state from storage, storing the
state again when the enclave re-sealed it.
"""

from __future__ import annotations

import hmac
import tempfile
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import Protocol, TypeVar

from enklave import host
from enklave.deploy.gramine import build_sgx
from enklave.errors import EnklaveError, PlatformError
from enklave.runtime.bundle import Bundle, load_bundle, sign_bundle, write_bundle
from enklave.runtime.config import CONFIG_FILENAME
from enklave.runtime.signing import load_or_create_signing_key
from enklave.services.storage import Storage

__all__ = ["sign_packaged_enclave", "start_sealed"]

_ENCLAVE_FILES = ("enklave.toml", "enclave.py")
_SIGNING_KEY_NAME = "enclave-signing-key.pem"

T = TypeVar("T")


class _EnclaveSettings(Protocol):
    """How a service runs its enclave (its config has these fields)."""

    @property
    def mode(self) -> str: ...

    @property
    def home(self) -> Path | None: ...

    @property
    def ecall_timeout(self) -> float: ...


def sign_packaged_enclave(
    data_dir: Path,
    package: str,
    bundle_name: str,
    *,
    extra_files: Mapping[str, bytes] | None = None,
    mode: str = "sim",
) -> Path:
    """Sign the enclave in ``package``'s ``enclave_app/`` into ``data_dir/enclave/bundle_name``; its path.

    ``extra_files`` are written next to the code before signing, so they are measured with it. An unchanged
    enclave keeps its earlier bundle file. In ``mode`` ``"sgx"`` the Gramine manifest is also written, rendered
    and signed next to the bundle (with the same signing key) whenever the bundle was written or the signed
    manifest is missing, as ``enklave build --mode sgx`` does for apps: ``host.load`` in sgx mode runs
    ``gramine-sgx`` on it. Raises what :func:`~enklave.runtime.signing.load_or_create_signing_key` and
    :func:`~enklave.runtime.bundle.sign_bundle` raise, and :class:`~enklave.errors.PlatformError` in sgx mode
    when Gramine's tools are missing or fail.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    key_path = data_dir / _SIGNING_KEY_NAME
    key, _created = load_or_create_signing_key(key_path)
    packaged = resources.files(package) / "enclave_app"
    with tempfile.TemporaryDirectory(prefix="enklave-service-") as tmp:
        source = Path(tmp)
        for name in _ENCLAVE_FILES:
            (source / name).write_bytes((packaged / name).read_bytes())
        for name, content in (extra_files or {}).items():
            (source / name).write_bytes(content)
        bundle = sign_bundle(source / CONFIG_FILENAME, key)
        path = data_dir / "enclave" / bundle_name
        path.parent.mkdir(parents=True, exist_ok=True)
        written = not _same_enclave(path, bundle)
        if written:
            write_bundle(bundle, path)
        if mode == "sgx":
            _build_gramine(source / CONFIG_FILENAME, bundle, path, key_path, rebuild=written)
    return path


def _build_gramine(config_path: Path, bundle: Bundle, path: Path, key_path: Path, *, rebuild: bool) -> None:
    """Write, render and sign the Gramine manifest of ``bundle`` next to it, unless an up-to-date one exists."""
    signed_manifest = path.parent / f"{bundle.config.name}.manifest.sgx"
    if signed_manifest.exists() and not rebuild:
        return
    result = build_sgx(config_path, path, path.parent, key=key_path)
    if result.missing_tools:
        missing = ", ".join(result.missing_tools)
        raise PlatformError(
            f"sgx mode needs Gramine's tools to build the enclave's manifest; missing: {missing}"
        )


def _same_enclave(path: Path, bundle: Bundle) -> bool:
    """Whether ``path`` already holds a valid bundle of the same enclave (MRENCLAVE and MRSIGNER).

    Re-signing an unchanged enclave changes only the SIGSTRUCT date, which enklave's measurement ignores but
    Gramine does not (it measures the bundle file as a trusted file): keeping the earlier bundle keeps MRENCLAVE
    stable across restarts on other days, so state sealed to it still unseals.
    """
    if not path.is_file():
        return False
    try:
        existing = load_bundle(path)
    except EnklaveError:
        return False  # Damaged or foreign: replace it.
    return hmac.compare_digest(bytes(existing.mr_enclave), bytes(bundle.mr_enclave)) and hmac.compare_digest(
        bytes(existing.mr_signer), bytes(bundle.mr_signer)
    )


def start_sealed(
    bundle: Path,
    settings: _EnclaveSettings,
    storage: Storage,
    *,
    namespace: str,
    key: str,
    init: Callable[[host.Enclave, bytes | None], tuple[bytes, T]],
) -> tuple[host.Enclave, T]:
    """Load ``bundle`` as ``settings`` say (mode, home, ecall timeout) and run ``init(enclave, sealed)`` with
    the state stored at ``namespace``/``key``.

    ``init`` returns the state as the enclave sealed it and what the caller keeps; a changed state is stored.
    When anything fails the enclave is closed and the error raised: what :func:`enklave.host.load` raises,
    what ``init`` raises (an :class:`~enklave.errors.EcallError` when the state does not unseal), or a storage
    :class:`~enklave.errors.TransportError`.
    """
    enclave = host.load(bundle, mode=settings.mode, home=settings.home, timeout=settings.ecall_timeout)
    try:
        sealed = storage.get(namespace, key)
        resealed, kept = init(enclave, sealed)
        if sealed is None or not hmac.compare_digest(sealed, resealed):
            storage.put(namespace, key, resealed)
    except BaseException:
        enclave.close()
        raise
    return enclave, kept
