"""The SGX hardware platform, reached through Gramine's ``/dev/attestation`` pseudo-filesystem.

Inside a Gramine SGX enclave (``sgx.remote_attestation = "dcap"`` in the manifest), the LibOS offers these files
under ``/dev/attestation`` (Gramine's ``libos/src/fs/dev/attestation.c`` and ``Documentation/attestation.rst``):

- ``attestation_type`` (read): the manifest's ``sgx.remote_attestation`` value, ``"dcap"`` here.
- ``my_target_info`` (read): this enclave's 512-byte TARGETINFO.
- ``target_info`` (write): the TARGETINFO that the next ``report`` is addressed to.
- ``user_report_data`` (write): the 64 bytes of report data for the next ``report`` or ``quote``; shorter writes
  are zero-padded, longer ones truncated.
- ``report`` (read): a 432-byte EREPORT over the last written report data, MACed for the last written target.
- ``quote`` (read): a DCAP quote from the quoting enclave over the last written report data.
- ``keys/_sgx_mrenclave`` and ``keys/_sgx_mrsigner`` (read): 16-byte SGX seal keys (EGETKEY with key policy
  MRENCLAVE or MRSIGNER, at this enclave's own ISV SVN and CPU SVN).

Gramine keeps the written values in per-process state and applies a write when the file is closed, so a request
is "write, close, then open and read"; the files are not thread-safe, so this module serializes every request on
one lock per attestation directory. The directory is a parameter so that tests can point the backend at a
directory that imitates the pseudo-filesystem.
"""

from __future__ import annotations

import hmac
import threading
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from enklave.errors import InvalidQuote, PlatformError
from enklave.platform._base import KeyPolicy, KeyRequest, Platform, check_report_data
from enklave.sgx.quote import Quote
from enklave.sgx.report import REPORT_SIZE, TARGET_INFO_SIZE, Report, ReportBody, TargetInfo

__all__ = ["DEFAULT_ATTESTATION_DIR", "SEAL_KEY_INFO", "GraminePlatform"]

DEFAULT_ATTESTATION_DIR = Path("/dev/attestation")

#: HKDF info prefix of the seal keys this backend derives; the key policy byte follows it.
SEAL_KEY_INFO = b"enklave/gramine seal key v1"

_SEAL_KEY_SIZE = 16
# Gramine's pseudo-file buffer holds at most 8 KiB of quote; reading more than that means something is wrong.
_MAX_QUOTE_SIZE = 8192
_MAX_SMALL_FILE = 1024

_KEY_FILES = {KeyPolicy.MRENCLAVE: "keys/_sgx_mrenclave", KeyPolicy.MRSIGNER: "keys/_sgx_mrsigner"}

# The pseudo-files hold per-process state, so two platform objects on the same directory must share a lock.
_LOCKS: dict[Path, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _lock_for(directory: Path) -> threading.Lock:
    key = Path(directory).absolute()
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(key, threading.Lock())


class GraminePlatform(Platform):
    """SGX hardware through Gramine: reports, DCAP quotes and seal keys from ``/dev/attestation``.

    Construction checks that ``attestation_dir`` exists and that Gramine was configured for DCAP attestation;
    otherwise it raises :class:`~enklave.errors.PlatformError` with one line saying what is missing. Every
    request raises PlatformError when a pseudo-file cannot be read or written (naming the file) or returns
    something that is not what was asked for.
    """

    mode = "sgx"
    simulated = False

    def __init__(self, attestation_dir: Path = DEFAULT_ATTESTATION_DIR) -> None:
        self._dir = Path(attestation_dir)
        self._lock = _lock_for(self._dir)
        self._identity: ReportBody | None = None
        if not self._dir.is_dir():
            raise PlatformError(
                f"{self._dir} does not exist: not running inside a Gramine SGX enclave (start it with gramine-sgx)"
            )
        kind = self._read("attestation_type", max_size=64).decode("ascii", "replace").strip("\0\n ")
        if kind != "dcap":
            raise PlatformError(
                f"Gramine remote attestation type is {kind!r}, expected 'dcap' "
                '(set sgx.remote_attestation = "dcap" in the manifest)'
            )

    @property
    def attestation_dir(self) -> Path:
        """The directory this platform reads and writes (``/dev/attestation`` inside Gramine)."""
        return self._dir

    # -- pseudo-file I/O ---------------------------------------------------------------------------------------

    def _path(self, name: str) -> Path:
        return self._dir / name

    def _read(self, name: str, *, max_size: int) -> bytes:
        path = self._path(name)
        try:
            with path.open("rb") as handle:
                # One byte more than allowed tells an oversized answer apart from one that fits exactly.
                data = handle.read(max_size + 1)
        except OSError as exc:
            raise PlatformError(f"cannot read {path}: {exc.strerror or exc}") from exc
        if len(data) > max_size:
            raise PlatformError(f"{path} returned more than {max_size} bytes")
        return data

    def _write(self, name: str, data: bytes) -> None:
        path = self._path(name)
        try:
            # Gramine applies the new value when the file is closed, so the handle is closed before any read.
            with path.open("wb") as handle:
                handle.write(data)
        except OSError as exc:
            raise PlatformError(f"cannot write {path}: {exc.strerror or exc}") from exc

    def _my_target_info(self) -> bytes:
        data = self._read("my_target_info", max_size=_MAX_SMALL_FILE)
        if len(data) != TARGET_INFO_SIZE:
            raise PlatformError(
                f"{self._path('my_target_info')} returned {len(data)} bytes, expected {TARGET_INFO_SIZE}"
            )
        return data

    def _report(self, target_info: bytes, report_data: bytes) -> Report:
        # The caller holds the lock: target_info, user_report_data and report form one request.
        self._write("target_info", target_info)
        self._write("user_report_data", report_data)
        raw = self._read("report", max_size=_MAX_SMALL_FILE)
        if len(raw) != REPORT_SIZE:
            raise PlatformError(f"{self._path('report')} returned {len(raw)} bytes, expected {REPORT_SIZE}")
        report = Report.from_bytes(raw)
        if not hmac.compare_digest(report.body.report_data, report_data):
            raise PlatformError(f"{self._path('report')} does not carry the report data that was written")
        return report

    # -- Platform ----------------------------------------------------------------------------------------------

    @property
    def identity(self) -> ReportBody:
        """This enclave's REPORT body (zero report data), read once from a report addressed to itself."""
        with self._lock:
            if self._identity is None:
                self._identity = self._report(self._my_target_info(), bytes(64)).body
            return self._identity

    def get_report(self, target_info: TargetInfo | None, report_data: bytes) -> Report:
        """EREPORT through ``target_info``/``user_report_data``/``report``; ``None`` targets this enclave."""
        padded = check_report_data(report_data)
        with self._lock:
            target = self._my_target_info() if target_info is None else target_info.to_bytes()
            return self._report(target, padded)

    def get_quote(self, report_data: bytes) -> bytes:
        """A DCAP quote over ``report_data`` from ``quote``, parse-checked before it is returned.

        Raises :class:`~enklave.errors.InvalidQuote` when Gramine's answer is not a well-formed quote and
        PlatformError when it is one but for other report data or another enclave.
        """
        padded = check_report_data(report_data)
        identity = self.identity
        with self._lock:
            self._write("user_report_data", padded)
            raw = self._read("quote", max_size=_MAX_QUOTE_SIZE)
        path = self._path("quote")
        if not raw:
            raise PlatformError(f"{path} is empty: the quoting enclave (AESM / DCAP QPL) did not answer")
        try:
            parsed = Quote.from_bytes(raw)
        except InvalidQuote as exc:
            raise InvalidQuote(f"{path} returned a malformed quote: {exc}") from exc
        if not hmac.compare_digest(parsed.body.report_data, padded):
            raise PlatformError(f"{path} returned a quote over other report data than was written")
        if parsed.body.mr_enclave != identity.mr_enclave or parsed.body.mr_signer != identity.mr_signer:
            raise PlatformError(f"{path} returned a quote for another enclave")
        return raw

    def get_seal_key(self, request: KeyRequest) -> bytes:
        """A 16-byte seal key: Gramine's SGX seal key for the policy, run through HKDF with the key id.

        Gramine derives its ``_sgx_mrenclave``/``_sgx_mrsigner`` keys with EGETKEY at the enclave's own ISV SVN
        and CPU SVN and a fixed key id, so a request for another SVN cannot be served here (PlatformError), and
        the request's random key id is mixed in with HKDF-SHA256 (salt = key id, info = :data:`SEAL_KEY_INFO`
        plus the policy byte) so that every sealed blob still gets its own key.
        """
        identity = self.identity
        if request.isv_svn != identity.isv_svn:
            raise PlatformError(
                f"Gramine derives seal keys only at the enclave's own ISV SVN {identity.isv_svn}, "
                f"not {request.isv_svn}"
            )
        if not hmac.compare_digest(request.cpu_svn, identity.cpu_svn):
            raise PlatformError("Gramine derives seal keys only at the platform's current CPU SVN")
        name = _KEY_FILES[request.policy]
        with self._lock:
            base = self._read(name, max_size=_MAX_SMALL_FILE)
        if len(base) != _SEAL_KEY_SIZE:
            raise PlatformError(f"{self._path(name)} returned {len(base)} bytes, expected {_SEAL_KEY_SIZE}")
        hkdf = HKDF(
            algorithm=hashes.SHA256(),
            length=_SEAL_KEY_SIZE,
            salt=request.key_id,
            info=SEAL_KEY_INFO + bytes([int(request.policy)]),
        )
        return hkdf.derive(base)
