"""Signed enclave bundles: one file holding an enclave's configuration, its files and its SIGSTRUCT.

Format (docs/enclave-bundles.md): ``b"ENKLAVE\\0"``, a u16 little-endian format version (1), then one
canonical CBOR map ``{"config": str, "files": {path: bytes}, "sigstruct": bytes(1808)}``. Parsing bounds the
size, the file count and every path before trusting anything, and accepts only the canonical encoding (so one
bundle has exactly one byte form). :func:`read_bundle` only parses; :func:`load_bundle` also runs what EINIT
checks (:meth:`Bundle.verify`): the measurement of the configuration and files laid out as enclave pages must
equal the SIGSTRUCT's ENCLAVEHASH, and the SIGSTRUCT's signature must hold.
"""

from __future__ import annotations

import datetime
import hmac
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import cbor2
from cryptography.hazmat.primitives.asymmetric import rsa

from enklave._home import read_limited, write_atomic
from enklave.errors import ConfigError, InvalidBundle, LaunchError, TransportError
from enklave.runtime import _cbor as strict_cbor
from enklave.runtime._importer import module_files
from enklave.runtime.config import EnclaveConfig, check_relative_path, read_config_text
from enklave.runtime.layout import EnclaveLayout, plan_layout
from enklave.sgx.report import AttributeFlags, Attributes, MrEnclave, MrSigner, ReportBody
from enklave.sgx.sigstruct import Sigstruct

__all__ = [
    "BUNDLE_MAGIC",
    "BUNDLE_VERSION",
    "MAX_BUNDLE_FILES",
    "MAX_BUNDLE_SIZE",
    "Bundle",
    "collect_files",
    "load_bundle",
    "measure",
    "read_bundle",
    "sign_bundle",
    "write_bundle",
]

BUNDLE_MAGIC = b"ENKLAVE\0"
BUNDLE_VERSION = 1
MAX_BUNDLE_SIZE = 256 << 20
MAX_BUNDLE_FILES = 10_000
_PREFIX = struct.Struct("<8sH")
_KEYS = frozenset({"config", "files", "sigstruct"})
# XFRM of the enclave: x87 and SSE state, what every 64-bit enclave enables.
_XFRM = 0x3


def measure(config: EnclaveConfig, files: Mapping[str, bytes]) -> MrEnclave:
    """MRENCLAVE of ``config`` and ``files`` laid out as enclave pages (see :mod:`enklave.runtime.layout`).

    Deterministic: independent of the mapping's order, of timestamps and of any key. Raises
    :class:`ConfigError` for a path that could leave the enclave directory.
    """
    return plan_layout(config, files).measure()


def _inside(path: Path, base: Path) -> bool:
    try:
        path.resolve(strict=True).relative_to(base)
    except (OSError, ValueError, RuntimeError):
        return False
    return True


def collect_files(config: EnclaveConfig, *, max_size: int = MAX_BUNDLE_SIZE) -> dict[str, bytes]:
    """Read the files that ``config.files`` matches, relative to ``config.base_dir``, keyed by POSIX path.

    Every pattern must match at least one regular file; a match that is (or passes through) a symlink leading
    outside the directory is refused, as are more than 10 000 files, more than ``max_size`` bytes in total,
    and an ``entry`` module that is not among the files. Raises :class:`ConfigError` for those and
    :class:`TransportError` when a file cannot be read.
    """
    if config.base_dir is None:
        raise ConfigError("enclave.files: this configuration has no directory to read files from")
    try:
        base = config.base_dir.resolve(strict=True)
    except OSError as exc:
        raise TransportError(f"cannot open enclave directory {config.base_dir}: {exc.strerror}") from exc
    collected: dict[str, bytes] = {}
    total = 0
    for pattern in config.files:
        matched = 0
        for path in sorted(config.base_dir.glob(pattern)):
            if not path.is_file():
                continue
            relative = path.relative_to(config.base_dir).as_posix()
            check_relative_path(relative, "enclave.files")
            if not _inside(path, base):
                raise ConfigError(f"enclave.files: {relative} is a symlink that leads outside {base}")
            matched += 1
            if relative in collected:
                continue
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise TransportError(f"cannot read enclave file {path}: {exc.strerror}") from exc
            total += len(data)
            collected[relative] = data
            if len(collected) > MAX_BUNDLE_FILES or total > max_size:
                raise ConfigError(
                    f"enclave.files: more than {MAX_BUNDLE_FILES} files or {max_size} bytes in total"
                )
        if not matched:
            raise ConfigError(f"enclave.files: {pattern!r} matches no file in {config.base_dir}")
    _check_entry(config, collected)
    return collected


def _entry_importable(entry: str, files: Mapping[str, bytes]) -> bool:
    # The entry must run code from the bundle: a module file, or a package with an __init__.py, under parents
    # that are all packages served from the bundle (what BundleImporter will find, and nothing else).
    modules = module_files(files)
    found = modules.get(entry)
    if found is None or found[0].endswith("/"):
        return False
    parts = entry.split(".")
    return all(modules.get(".".join(parts[:depth]), ("", False))[1] for depth in range(1, len(parts)))


def _check_entry(config: EnclaveConfig, files: Mapping[str, bytes]) -> None:
    if not _entry_importable(config.entry, files):
        module = config.entry.replace(".", "/")
        raise ConfigError(
            f"enclave.entry: module {config.entry!r} is not among the enclave files "
            f"(expected {module}.py or {module}/__init__.py)"
        )


@dataclass(frozen=True, slots=True)
class Bundle:
    """A parsed enclave bundle. Not trusted until :meth:`verify` has returned.

    ``config`` is parsed from ``config_text`` (the enklave.toml as signed); ``files`` maps POSIX paths relative
    to the enclave directory to their bytes.
    """

    config: EnclaveConfig
    config_text: str
    files: Mapping[str, bytes] = field(hash=False)
    sigstruct: Sigstruct

    def __post_init__(self) -> None:
        # A read-only view of a private copy: the measured files cannot change behind a verified bundle's back.
        object.__setattr__(self, "files", MappingProxyType(dict(self.files)))

    @property
    def mr_enclave(self) -> MrEnclave:
        """The SIGSTRUCT's ENCLAVEHASH: the MRENCLAVE the enclave has once :meth:`verify` passed."""
        return self.sigstruct.enclave_hash

    @property
    def mr_signer(self) -> MrSigner:
        """SHA-256 of the signer's modulus (little-endian), as EINIT sets MRSIGNER."""
        return self.sigstruct.mr_signer

    def layout(self) -> EnclaveLayout:
        """The page layout of this bundle's configuration and files."""
        return plan_layout(self.config, self.files)

    def verify(self) -> None:
        """Run what EINIT checks; raises :class:`LaunchError` if the bundle must not start.

        Steps: (1) the SIGSTRUCT signature, exponent and Q1/Q2 (:meth:`Sigstruct.verify`); (2) the measurement
        of the configuration and files equals the SIGSTRUCT's ENCLAVEHASH; (3) the configuration's product id,
        security version and debug flag equal the SIGSTRUCT's ISVPRODID, ISVSVN and ATTRIBUTES.DEBUG; (4) the
        configured entry module is importable from the bundle's own files (never from the host's).
        """
        # 1. The signature, under the key the SIGSTRUCT carries.
        self.sigstruct.verify()
        # 2. The pages as laid out now must be the pages that were signed.
        try:
            measured = measure(self.config, self.files)
        except ConfigError as exc:
            raise LaunchError(f"the bundle's files cannot be laid out: {exc}") from exc
        if not hmac.compare_digest(measured, self.sigstruct.enclave_hash):
            raise LaunchError(
                "the bundle's code or configuration changed after signing: its measurement "
                f"{measured.hex()} differs from the signed MRENCLAVE {self.sigstruct.enclave_hash.hex()}"
            )
        # 3. Identity fields are measured through the config too; these checks keep the two in step.
        for what, configured, signed in (
            ("product id", self.config.product_id, self.sigstruct.isv_prod_id),
            ("security version", self.config.security_version, self.sigstruct.isv_svn),
            ("debug", self.config.debug, self.sigstruct.debug),
        ):
            if configured != signed:
                raise LaunchError(
                    f"the bundle's {what} ({configured}) differs from the SIGSTRUCT's ({signed})"
                )
        # 4. A signed bundle without its entry would make the enclave import that name from the host's disk.
        if not _entry_importable(self.config.entry, self.files):
            raise LaunchError(
                f"the bundle's entry module {self.config.entry!r} is not among its files: it cannot start"
            )

    def report_body(self, *, cpu_svn: bytes = bytes(16)) -> ReportBody:
        """The enclave identity as EINIT sets it: MRENCLAVE, MRSIGNER, ISV product id and SVN, MISCSELECT,
        and the SIGSTRUCT's attributes with INIT set. ``report_data`` is zero."""
        signed = self.sigstruct.attributes
        return ReportBody.build(
            mr_enclave=self.mr_enclave,
            mr_signer=self.mr_signer,
            isv_prod_id=self.sigstruct.isv_prod_id,
            isv_svn=self.sigstruct.isv_svn,
            attributes=Attributes(signed.flags | AttributeFlags.INIT, signed.xfrm),
            cpu_svn=cpu_svn,
            misc_select=self.sigstruct.misc_select,
            isv_ext_prod_id=self.sigstruct.isv_ext_prod_id,
            isv_family_id=self.sigstruct.isv_family_id,
        )

    def to_bytes(self) -> bytes:
        """The bundle file's bytes: magic, version, canonical CBOR. ``read_bundle(b.to_bytes()) == b``."""
        payload = {
            "config": self.config_text,
            "files": dict(self.files),
            "sigstruct": self.sigstruct.to_bytes(),
        }
        return _PREFIX.pack(BUNDLE_MAGIC, BUNDLE_VERSION) + cbor2.dumps(payload, canonical=True)


def sign_bundle(
    config_path: str | Path, key: rsa.RSAPrivateKey, *, date: datetime.date | None = None
) -> Bundle:
    """Build and sign the bundle of the enclave described by ``config_path`` (an enklave.toml).

    ``date`` (default: today, UTC) goes into the SIGSTRUCT DATE field; it does not affect MRENCLAVE. Raises
    :class:`ConfigError` for an invalid configuration or file set, :class:`UsageError` for a key SGX does not
    accept, :class:`TransportError` when a file cannot be read.
    """
    path = Path(config_path)
    text = read_config_text(path)
    config = EnclaveConfig.from_toml(text, path.parent)
    files = collect_files(config)
    flags = AttributeFlags.MODE64BIT | (AttributeFlags.DEBUG if config.debug else 0)
    sigstruct = Sigstruct.sign(
        key,
        enclave_hash=measure(config, files),
        isv_prod_id=config.product_id,
        isv_svn=config.security_version,
        attributes=Attributes(int(flags), _XFRM),
        date=date or datetime.datetime.now(datetime.UTC).date(),
    )
    return Bundle(config=config, config_text=text, files=files, sigstruct=sigstruct)


def write_bundle(bundle: Bundle, path: str | Path) -> None:
    """Write the bundle atomically (temporary file in the same directory, fsync, rename); mode 0644.

    Raises :class:`TransportError` when it cannot be written.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TransportError(f"cannot write bundle {target}: {exc.strerror or exc}") from exc
    # A bundle holds no secrets (the key stays outside); the host and Gramine must be able to read it.
    write_atomic(target, bundle.to_bytes(), mode=0o644)


def read_bundle(source: str | Path | bytes, *, max_size: int = MAX_BUNDLE_SIZE) -> Bundle:
    """Parse a bundle from a path or from its bytes, without verifying it.

    Raises :class:`InvalidBundle` for anything malformed (size over ``max_size``, wrong magic or version,
    non-canonical or undecodable CBOR, wrong keys or types, bad paths, more than 10 000 files, a bad SIGSTRUCT
    or configuration) and :class:`TransportError` when the file cannot be read.
    """
    data = source if isinstance(source, bytes) else _read_limited(Path(source), max_size)
    # 1. Bounds and the fixed prefix, before any decoding.
    if len(data) > max_size:
        raise InvalidBundle(f"bundle is larger than {max_size} bytes")
    if len(data) < _PREFIX.size:
        raise InvalidBundle("bundle is truncated: no header")
    magic, version = _PREFIX.unpack_from(data)
    if magic != BUNDLE_MAGIC:
        raise InvalidBundle("not an enklave bundle (wrong magic)")
    if version != BUNDLE_VERSION:
        raise InvalidBundle(f"unsupported bundle format version {version}")
    payload = data[_PREFIX.size :]
    # 2. CBOR, accepted only in its canonical form (which also rules out duplicate keys and trailing bytes). The
    #    boundary's strict decoder takes no tags, so no shared or string references can expand when re-encoded.
    try:
        document = strict_cbor.decode(payload)
        canonical = cbor2.dumps(document, canonical=True)
    except (cbor2.CBORError, ValueError, TypeError, OverflowError) as exc:
        raise InvalidBundle(f"bundle content is not valid CBOR: {exc}") from exc
    if canonical != payload:
        raise InvalidBundle("bundle content is not canonical CBOR (or has trailing bytes)")
    # 3. Shape and types.
    if not isinstance(document, dict) or set(document) != _KEYS:
        raise InvalidBundle("bundle must be a map with exactly the keys config, files, sigstruct")
    config_text, files, raw_sigstruct = document["config"], document["files"], document["sigstruct"]
    if (
        not isinstance(config_text, str)
        or not isinstance(raw_sigstruct, bytes)
        or not isinstance(files, dict)
    ):
        raise InvalidBundle("bundle fields have the wrong types")
    if len(files) > MAX_BUNDLE_FILES:
        raise InvalidBundle(f"bundle holds more than {MAX_BUNDLE_FILES} files")
    for name, content in files.items():
        if not isinstance(name, str) or not isinstance(content, bytes):
            raise InvalidBundle("bundle files must map path strings to byte strings")
        try:
            check_relative_path(name, "bundle file")
        except ConfigError as exc:
            raise InvalidBundle(str(exc)) from exc
    # 4. The SIGSTRUCT and the configuration parse (neither is trusted yet).
    sigstruct = Sigstruct.from_bytes(raw_sigstruct)
    try:
        config = EnclaveConfig.from_toml(config_text, None)
    except ConfigError as exc:
        raise InvalidBundle(f"bundle configuration is invalid: {exc}") from exc
    return Bundle(config=config, config_text=config_text, files=files, sigstruct=sigstruct)


def _read_limited(path: Path, max_size: int) -> bytes:
    data = read_limited(path, max_size)
    if len(data) > max_size:
        raise InvalidBundle(f"bundle {path} is larger than {max_size} bytes")
    return data


def load_bundle(path: str | Path, *, max_size: int = MAX_BUNDLE_SIZE) -> Bundle:
    """Read, parse and verify a bundle: what loading an enclave checks before it starts.

    Raises :class:`InvalidBundle` when malformed, :class:`LaunchError` when it fails the EINIT checks,
    :class:`TransportError` when unreadable.
    """
    bundle = read_bundle(Path(path), max_size=max_size)
    bundle.verify()
    return bundle
