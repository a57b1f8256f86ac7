"""The simulated platform's state in the data directory: provisioning, public readers, secret loaders.

Layout under ``<home>/sim`` (``home`` is :func:`enklave._home.data_home` unless given)::

    intel/   0700  root_ca_key.pem, pck_ca_key.pem, tcb_signing_key.pem   simulated Intel's private keys
    cpu/     0700  root_secret.bin (32 bytes), pck_key.pem, attestation_key.pem   the CPU's secrets
    public/  0755  root_ca.pem, pck_chain.pem (leaf, PCK CA, root), tcb_signing_chain.pem,
                   collateral.json (QuoteCollateral.to_json), platform.json (public identity, written last)
    .lock    0600  fcntl lock that serializes provisioning and collateral refresh between processes

Secret files are written atomically with mode 0600 (:func:`enklave._home.write_private`); public files
atomically with mode 0644 and never hold key material. Provisioning happens once, under the lock: a process that
finds ``public/platform.json`` uses what is there, so concurrent first uses agree on one platform.

Three kinds of callers, three kinds of functions:

* host code reads the public parts only (:func:`platform_info`, :func:`simulated_root`, :func:`read_collateral`,
  :class:`SimulatedCollateralSource`): these never open a file under ``intel/`` or ``cpu/``;
* the simulated Intel (provisioning, the local PCS) signs collateral: :func:`provision`,
  :func:`refresh_collateral`;
* the enclave process loads the CPU and QE secrets: :func:`load_qe`.

A platform that was never provisioned raises :class:`~enklave.errors.PlatformError` from every reader.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from enklave._home import data_home, private_dir, read_limited, write_atomic, write_private
from enklave._json import loads
from enklave._x509 import DECODE_ERRORS
from enklave.attestation.collateral import QuoteCollateral, parse_pem_chain
from enklave.attestation.sources import CA_TYPES, CollateralSource, read_collateral_file
from enklave.attestation.trust import TrustedRoot
from enklave.errors import CollateralUnavailable, InvalidCollateral, PlatformError, TransportError, UsageError
from enklave.platform.simulated.collateral import build_collateral, needs_refresh
from enklave.platform.simulated.cpu import CPU_SECRET_SIZE, PlatformIdentity, SimulatedCpu
from enklave.platform.simulated.pki import (
    IntelCertificates,
    IntelKeys,
    generate_key,
    issue_intel_certificates,
    issue_pck_certificate,
    key_from_pem,
    key_to_pem,
    sgx_extension_der,
)
from enklave.platform.simulated.qe import SimulatedQe
from enklave.sgx.pck import PckConfiguration

__all__ = [
    "SIMULATED_ROOT_NAME",
    "PlatformInfo",
    "SimulatedCollateralSource",
    "load_qe",
    "platform_info",
    "provision",
    "read_collateral",
    "refresh_collateral",
    "sim_dir",
    "simulated_root",
]

SIMULATED_ROOT_NAME: Final = "enklave simulated SGX root CA"
"""The name of the simulated root in verification results (``VerifiedQuote.root_name``)."""

_FORMAT = 1
_MAX_FILE = 1 << 20
_INTEL_FILES = ("root_ca_key.pem", "pck_ca_key.pem", "tcb_signing_key.pem")
_CPU_FILES = ("root_secret.bin", "pck_key.pem", "attestation_key.pem")
_PUBLIC_FILES = ("root_ca.pem", "pck_chain.pem", "tcb_signing_chain.pem", "collateral.json", "platform.json")


def sim_dir(home: Path | str | None = None) -> Path:
    """``<home>/sim``, the simulated platform's directory (``home`` defaults to the data directory)."""
    return (Path(home) if home is not None else data_home()) / "sim"


def _now(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if now.utcoffset() is None:
        raise UsageError("now must be a timezone-aware datetime")
    return now


def _read(path: Path) -> bytes:
    try:
        data = read_limited(path, _MAX_FILE)
    except TransportError as exc:
        if isinstance(exc.__cause__, FileNotFoundError):
            raise PlatformError(f"the simulated SGX platform's file {path} is missing") from exc
        raise
    if len(data) > _MAX_FILE:
        raise PlatformError(f"the simulated SGX platform's file {path} is too large")
    return data


def _write_public(path: Path, data: bytes) -> None:
    """Write ``data`` atomically with mode 0644: readers see the old file or the new one, never half."""
    write_atomic(path, data, mode=0o644)


def _public_dir(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o755)
        path.chmod(0o755)
    except OSError as exc:
        raise TransportError(f"cannot create directory {path}: {exc.strerror}") from exc
    return path


@contextlib.contextmanager
def _locked(sim: Path) -> Iterator[None]:
    """Hold the exclusive provisioning lock of ``sim`` (blocking), released on exit and on process death."""
    _public_dir(sim)
    try:
        fd = os.open(sim / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise TransportError(f"cannot open the lock file in {sim}: {exc.strerror}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        # Closing the descriptor releases the flock.
        os.close(fd)


@dataclass(frozen=True, slots=True)
class PlatformInfo:
    """The public description of a provisioned simulated platform (``public/platform.json``)."""

    home: Path
    identity: PlatformIdentity
    root_fingerprint: bytes
    provisioned_at: datetime

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view (binary values as lowercase hex)."""
        return {
            "home": str(self.home),
            "root_ca_sha256": self.root_fingerprint.hex(),
            "provisioned_at": self.provisioned_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            **self.identity.to_dict(),
        }


def _not_provisioned(sim: Path) -> PlatformError:
    return PlatformError(
        f"the simulated SGX platform in {sim} is not provisioned: run an enclave in simulation mode or "
        "`enklave sim init` first"
    )


def platform_info(home: Path | str | None = None) -> PlatformInfo:
    """The public description of the platform; opens only ``public/platform.json``.

    Raises :class:`PlatformError` when the platform was never provisioned or the file is damaged.
    """
    sim = sim_dir(home)
    path = sim / "public" / "platform.json"
    if not path.exists():
        raise _not_provisioned(sim)
    try:
        values = loads(_read(path))
        if not isinstance(values, dict) or values.get("format") != _FORMAT:
            raise PlatformError(f"{path} is not a simulated platform description of format {_FORMAT}")
        return PlatformInfo(
            home=sim.parent,
            identity=PlatformIdentity.from_dict(values["platform"]),
            root_fingerprint=bytes.fromhex(values["root_ca_sha256"]),
            provisioned_at=datetime.fromisoformat(values["provisioned_at"]),
        )
    except (ValueError, KeyError, TypeError, UsageError) as exc:
        raise PlatformError(f"{path} is damaged: {exc}") from exc


def simulated_root(home: Path | str | None = None) -> TrustedRoot:
    """The simulated root CA as a :class:`TrustedRoot` marked ``simulated``; opens only public files.

    Pass it to the verifier (``roots=[simulated_root()]``) to accept simulated quotes; results then say
    ``simulated=True``. Raises :class:`PlatformError` when the platform was never provisioned or its root
    certificate does not match the fingerprint recorded at provisioning.
    """
    info = platform_info(home)
    path = sim_dir(home) / "public" / "root_ca.pem"
    try:
        certificate = x509.load_pem_x509_certificate(_read(path))
    except DECODE_ERRORS as exc:
        raise PlatformError(f"{path} is damaged") from exc
    root = TrustedRoot(certificate, SIMULATED_ROOT_NAME, simulated=True)
    if root.fingerprint != info.root_fingerprint:
        raise PlatformError(f"{path} is not the root recorded when the platform was provisioned")
    return root


def read_collateral(home: Path | str | None = None) -> QuoteCollateral:
    """The current simulated collateral (``public/collateral.json``), as signed; opens only public files.

    It may be stale: :func:`refresh_collateral` (run by enclave launch, ``enklave sim init`` and the local
    PCS) signs a new set. Raises :class:`PlatformError` when the platform was never provisioned.
    """
    sim = sim_dir(home)
    path = sim / "public" / "collateral.json"
    if not (sim / "public" / "platform.json").exists():
        raise _not_provisioned(sim)
    return read_collateral_file(path)


class SimulatedCollateralSource(CollateralSource):
    """The collateral of the simulated platform in ``home``, read from its public directory on every fetch.

    Never opens a secret file, so host code may use it. It serves the platform's FMSPC and the "platform" CA
    only; another FMSPC or CA raises :class:`CollateralUnavailable`. Raises :class:`PlatformError` when the
    platform was never provisioned. Collateral is served as stored, even if stale: the verifier judges it at
    its ``now``, and the enclave launch or the local PCS signs fresh collateral.
    """

    def __init__(self, home: Path | str | None = None) -> None:
        self._home = sim_dir(home).parent

    def fetch(self, fmspc: bytes, ca: str) -> QuoteCollateral:
        """The stored collateral when ``fmspc`` is this platform's and ``ca`` is "platform" (see the class)."""
        if not isinstance(fmspc, bytes) or len(fmspc) != 6:
            raise UsageError("fmspc must be 6 bytes")
        if ca not in CA_TYPES:
            raise UsageError(f"ca must be 'processor' or 'platform', not {str(ca)[:20]!r}")
        collateral = read_collateral(self._home)
        if collateral.fmspc != fmspc:
            raise CollateralUnavailable(
                f"the simulated platform has FMSPC {collateral.fmspc.hex()}, not {fmspc.hex()}"
            )
        if ca != "platform":
            raise CollateralUnavailable("the simulated PKI has only a PCK Platform CA, no processor CA")
        return collateral


# -- the simulated Intel: provisioning and collateral signing ---------------------------------------------


def _pem(*certificates: x509.Certificate) -> bytes:
    return b"".join(certificate.public_bytes(Encoding.PEM) for certificate in certificates)


def _is_provisioned(sim: Path) -> bool:
    # platform.json is written last, so its presence means every other file was written before it.
    if not (sim / "public" / "platform.json").exists():
        return False
    expected = [sim / "intel" / name for name in _INTEL_FILES] + [sim / "cpu" / name for name in _CPU_FILES]
    missing = [
        str(path) for path in expected + [sim / "public" / n for n in _PUBLIC_FILES] if not path.exists()
    ]
    if missing:
        raise PlatformError(
            f"the simulated SGX platform in {sim} is damaged ({missing[0]} is missing); remove {sim} to "
            "provision a new one (data sealed on the old one is lost)"
        )
    return True


def _provision_new(sim: Path, now: datetime) -> None:
    # 1. Secrets first: the simulated Intel's keys, then the CPU's secret, PCK key and attestation key.
    keys = IntelKeys.generate()
    for name, key in zip(_INTEL_FILES, (keys.root, keys.pck_ca, keys.tcb_signing), strict=True):
        write_private(private_dir(sim / "intel") / name, key_to_pem(key))
    pck_key, attestation_key = generate_key(), generate_key()
    cpu = private_dir(sim / "cpu")
    write_private(cpu / "root_secret.bin", os.urandom(CPU_SECRET_SIZE))
    write_private(cpu / "pck_key.pem", key_to_pem(pck_key))
    write_private(cpu / "attestation_key.pem", key_to_pem(attestation_key))
    # 2. The PKI and the platform's PCK certificate (Platform CA certificates carry the instance id and the
    #    configuration entries).
    identity = PlatformIdentity.generate()
    certificates = issue_intel_certificates(keys, now)
    extension = sgx_extension_der(
        ppid=identity.ppid, tcb=identity.pck_tcb, pce_id=identity.pce_id, fmspc=identity.fmspc,
        sgx_type=identity.sgx_type, platform_instance_id=identity.platform_instance_id,
        configuration=PckConfiguration(dynamic_platform=True, cached_keys=True, smt_enabled=True),
    )  # fmt: skip
    pck = issue_pck_certificate(keys, certificates, pck_key.public_key(), extension, now)
    collateral = build_collateral(keys, certificates, identity, now=now)
    # 3. Public files, platform.json last: it marks the provisioning complete.
    public = _public_dir(sim / "public")
    _write_public(public / "root_ca.pem", _pem(certificates.root))
    _write_public(public / "pck_chain.pem", _pem(pck, certificates.pck_ca, certificates.root))
    _write_public(public / "tcb_signing_chain.pem", _pem(certificates.tcb_signing, certificates.root))
    _write_public(public / "collateral.json", (collateral.to_json() + "\n").encode())
    description = {
        "format": _FORMAT,
        "root_ca_sha256": TrustedRoot(
            certificates.root, SIMULATED_ROOT_NAME, simulated=True
        ).fingerprint.hex(),
        "provisioned_at": now.astimezone(UTC).replace(microsecond=0).isoformat(),
        "platform": identity.to_dict(),
    }
    _write_public(public / "platform.json", (json.dumps(description, indent=2) + "\n").encode())


def _load_key(path: Path, what: str) -> ec.EllipticCurvePrivateKey:
    try:
        return key_from_pem(_read(path), what)
    except UsageError as exc:
        raise PlatformError(f"{exc} ({path})") from exc


def _load_intel(sim: Path) -> tuple[IntelKeys, IntelCertificates]:
    root, pck_ca, tcb_signing = (_load_key(sim / "intel" / name, name) for name in _INTEL_FILES)
    try:
        pck_chain = parse_pem_chain(_read(sim / "public" / "pck_chain.pem"))
        signing_chain = parse_pem_chain(_read(sim / "public" / "tcb_signing_chain.pem"))
    except InvalidCollateral as exc:
        raise PlatformError(f"the simulated SGX platform's certificates in {sim} are damaged") from exc
    if len(pck_chain) != 3 or len(signing_chain) != 2:
        raise PlatformError(f"the simulated SGX platform's certificate chains in {sim} are damaged")
    return IntelKeys(root, pck_ca, tcb_signing), IntelCertificates(
        pck_chain[2], pck_chain[1], signing_chain[0]
    )


def _refresh_locked(sim: Path, now: datetime) -> QuoteCollateral:
    path = sim / "public" / "collateral.json"
    collateral = read_collateral_file(path)
    if not needs_refresh(collateral, now):
        return collateral
    keys, certificates = _load_intel(sim)
    identity = platform_info(sim.parent).identity
    collateral = build_collateral(keys, certificates, identity, now=now)
    _write_public(path, (collateral.to_json() + "\n").encode())
    return collateral


def provision(home: Path | str | None = None, *, now: datetime | None = None) -> PlatformInfo:
    """Provision the simulated platform in ``home`` if needed, and make sure its collateral is fresh at ``now``.

    Idempotent and safe between concurrent processes (they serialize on a file lock; the first provisions, the
    others find its platform). Opens the simulated Intel's keys only to provision or to re-sign collateral
    (see :func:`~enklave.platform.simulated.collateral.needs_refresh`). Raises :class:`PlatformError` when the
    existing state is damaged and :class:`TransportError` when the file system fails.
    """
    moment = _now(now)
    sim = sim_dir(home)
    with _locked(sim):
        if not _is_provisioned(sim):
            _provision_new(sim, moment)
        else:
            _refresh_locked(sim, moment)
    return platform_info(sim.parent)


def refresh_collateral(home: Path | str | None = None, *, now: datetime | None = None) -> QuoteCollateral:
    """The platform's collateral, signed anew first when it is stale at ``now``.

    Opens the simulated Intel's keys only when it must sign. Raises :class:`PlatformError` when the platform was
    never provisioned.
    """
    moment = _now(now)
    sim = sim_dir(home)
    collateral = read_collateral(home)
    if not needs_refresh(collateral, moment):
        return collateral
    with _locked(sim):
        # Another process may have signed while this one waited for the lock; _refresh_locked checks again.
        return _refresh_locked(sim, moment)


def load_qe(home: Path | str | None = None) -> SimulatedQe:
    """Load the CPU secret, the PCK key and the attestation key: the platform's CPU and QE. ENCLAVE ONLY.

    Never call this from host code: it puts the simulated CPU's secrets into the calling process. Raises
    :class:`PlatformError` when the platform was never provisioned or a secret file is damaged.
    """
    sim = sim_dir(home)
    info = platform_info(home)
    secret = _read(sim / "cpu" / "root_secret.bin")
    if len(secret) != CPU_SECRET_SIZE:
        raise PlatformError(f"the simulated CPU secret in {sim / 'cpu'} is damaged")
    pck_key = _load_key(sim / "cpu" / "pck_key.pem", "PCK")
    attestation_key = _load_key(sim / "cpu" / "attestation_key.pem", "attestation")
    pck_chain = _read(sim / "public" / "pck_chain.pem")
    try:
        leaf = x509.load_pem_x509_certificate(pck_chain)
    except DECODE_ERRORS as exc:
        raise PlatformError(f"the PCK certificate chain in {sim / 'public'} is damaged") from exc
    if leaf.public_key() != pck_key.public_key():
        raise PlatformError(f"the PCK certificate in {sim / 'public'} does not certify this CPU's PCK key")
    cpu = SimulatedCpu(secret, info.identity)
    return SimulatedQe(cpu, attestation_key=attestation_key, pck_key=pck_key, pck_chain_pem=pck_chain)
