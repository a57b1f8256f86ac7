"""An imitation of Gramine's ``/dev/attestation`` pseudo-filesystem, fed by another Platform (the simulated one).

It lays out the same file names as Gramine (``libos/src/fs/dev/attestation.c``) in a directory and gives them
the same read/write semantics, so that :class:`enklave.platform.gramine.GraminePlatform` can be tested without
SGX:

- Static files are regular files: ``attestation_type`` (``"dcap"``), ``my_target_info`` (the backing platform's
  TARGETINFO) and ``keys/_sgx_mrenclave`` / ``keys/_sgx_mrsigner`` (the backing platform's seal keys at its own
  ISV SVN and CPU SVN with one fixed key id, as Gramine's EGETKEY uses a fixed key id).
- ``target_info`` and ``user_report_data`` are regular files: a write is complete when the writer closes the file,
  which is when Gramine applies it too. They are read back with Gramine's rule (zero-padded or truncated to 512
  and 64 bytes).
- ``report`` and ``quote`` are FIFOs, each served by a thread. The answer is computed when a reader opens the
  FIFO, from the values written last, as Gramine computes it when the file is opened. Right after a reader
  arrives the thread swaps in a fresh FIFO under the same name, so the next reader always meets a new pipe and
  never reads the tail of the previous answer.

Use it as a context manager; leaving it stops the threads (each unblocked by opening its FIFO) within a bounded
time.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from enklave.platform._base import KeyPolicy, KeyRequest, Platform
from enklave.sgx.report import TargetInfo

__all__ = ["GRAMINE_KEY_ID", "FakeGramine"]

#: The fixed key id of the imitated Gramine seal keys.
GRAMINE_KEY_ID = b"gramine-fixed-key-id".ljust(32, b"\0")

_STOP_TIMEOUT = 5.0


class FakeGramine:
    """Serve ``directory`` as Gramine's ``/dev/attestation`` for ``platform``.

    ``quote_transform`` (settable) rewrites every quote before it is served, to imitate a broken quoting
    enclave. ``errors`` collects exceptions raised while computing answers (the reader then gets an empty file).
    """

    def __init__(self, platform: Platform, directory: Path, *, attestation_type: str = "dcap") -> None:
        self.platform = platform
        self.directory = Path(directory)
        self.attestation_type = attestation_type
        self.quote_transform: Callable[[bytes], bytes] | None = None
        self.errors: list[BaseException] = []
        self.served: list[str] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- life cycle ------------------------------------------------------------------------------------------

    def __enter__(self) -> FakeGramine:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        d = self.directory
        (d / "keys").mkdir(parents=True, exist_ok=True)
        identity = self.platform.identity
        (d / "attestation_type").write_bytes(self.attestation_type.encode())
        (d / "my_target_info").write_bytes(TargetInfo.for_enclave(identity).to_bytes())
        (d / "target_info").write_bytes(bytes(512))
        (d / "user_report_data").write_bytes(bytes(64))
        for policy, name in ((KeyPolicy.MRENCLAVE, "_sgx_mrenclave"), (KeyPolicy.MRSIGNER, "_sgx_mrsigner")):
            request = KeyRequest(policy, identity.isv_svn, identity.cpu_svn, GRAMINE_KEY_ID)
            (d / "keys" / name).write_bytes(self.platform.get_seal_key(request))
        for name, produce in (("report", self._produce_report), ("quote", self._produce_quote)):
            os.mkfifo(d / name, 0o600)
            thread = threading.Thread(
                target=self._serve, args=(name, produce), daemon=True, name=f"fake-{name}"
            )
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            name = thread.name.removeprefix("fake-")
            deadline = _STOP_TIMEOUT
            while thread.is_alive() and deadline > 0:
                # Opening the read end unblocks a server thread that waits in open() for a reader.
                try:
                    fd = os.open(self.directory / name, os.O_RDONLY | os.O_NONBLOCK)
                except OSError:
                    fd = -1
                thread.join(0.05)
                if fd >= 0:
                    os.close(fd)
                deadline -= 0.05
            if thread.is_alive():
                raise RuntimeError(f"fake Gramine thread {thread.name} did not stop")
        self._threads.clear()

    # -- answers ---------------------------------------------------------------------------------------------

    def _written(self, name: str, size: int) -> bytes:
        data = (self.directory / name).read_bytes()
        return data[:size].ljust(size, b"\0")

    def _produce_report(self) -> bytes:
        target = self._written("target_info", 512)
        data = self._written("user_report_data", 64)
        # Gramine treats an all-zero target info as "this enclave" (that is how my_target_info is made).
        target_info = None if target == bytes(512) else TargetInfo.from_bytes(target)
        return self.platform.get_report(target_info, data).to_bytes()

    def _produce_quote(self) -> bytes:
        quote = self.platform.get_quote(self._written("user_report_data", 64))
        return self.quote_transform(quote) if self.quote_transform is not None else quote

    def _serve(self, name: str, produce: Callable[[], bytes]) -> None:
        path = self.directory / name
        while not self._stop.is_set():
            fd = os.open(path, os.O_WRONLY)  # Blocks until a reader opens the FIFO.
            try:
                # A fresh FIFO under the same name before answering: the next reader cannot join this pipe.
                fresh = path.with_name(f".{name}.next")
                os.mkfifo(fresh, 0o600)
                os.replace(fresh, path)
                if self._stop.is_set():
                    return
                try:
                    answer = produce()
                except Exception as exc:  # The reader sees an empty file; the test sees the error.
                    self.errors.append(exc)
                    answer = b""
                self.served.append(name)
                view = memoryview(answer)
                while view:
                    try:
                        written = os.write(fd, view)
                    except BrokenPipeError:
                        break
                    view = view[written:]
            finally:
                os.close(fd)
