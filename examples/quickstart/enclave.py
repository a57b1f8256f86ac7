"""The trusted half of the quick start: a vault that keeps one secret, created inside the enclave.

What "inside the enclave" means: on SGX hardware this code and its memory are encrypted by the CPU, so the
operating system, the host process and whoever administers the machine can neither read nor change them. In
simulation (any Linux machine) the same code runs in a separate process with the same interface and the same
evidence formats, but without that protection; its evidence says "simulated" so nobody mistakes it for real.

The host can only call the functions marked ``@enclave.ecall``, with arguments of the annotated types (checked
here, inside, before the function runs). The secret itself never leaves: the host gets it only sealed
(encrypted with a key that only this enclave can derive) or as a fingerprint.
"""

from __future__ import annotations

import hashlib
from typing import Annotated

from enklave import enclave

# The secret lives only in this process's memory (enclave memory, on hardware).
_secret: bytes | None = None


@enclave.ocall
def log(message: str) -> None:
    """Implemented by the host: the enclave asks it to print a line. Anything passed here leaves the enclave."""


@enclave.ecall
def hello(name: Annotated[str, enclave.MaxSize(100)]) -> str:
    log(f"greeting {name}")
    return f"Hello {name}! This is the quickstart enclave, running in {enclave.mode()} mode."


@enclave.ecall
def attest(nonce: Annotated[bytes, enclave.MaxSize(64)]) -> bytes:
    """Evidence about this enclave: an SGX quote, signed on behalf of the CPU.

    The quote carries the enclave's identity (MRENCLAVE, MRSIGNER, product id, security version) and 64 bytes of
    "report data" that the enclave chooses. Putting the SHA-256 of the verifier's random nonce there proves the
    quote was made after the verifier asked, so an old quote recorded elsewhere cannot be replayed.
    """
    return enclave.get_quote(hashlib.sha256(nonce).digest())


@enclave.ecall
def open_vault(sealed: Annotated[bytes, enclave.MaxSize(4096)] | None) -> bytes:
    """Restore the secret from ``sealed``, or create a new one when ``sealed`` is None; returns it sealed.

    Sealing with policy "unique" encrypts with a key derived from the CPU's own secret and this enclave's
    MRENCLAVE: the host can store the blob, but neither it nor any other enclave can decrypt it, and any change
    to the blob is detected. Raises SealingError (the host sees an EcallError) when the blob does not unseal.
    """
    global _secret  # noqa: PLW0603 - the enclave's state is this module's state.
    _secret = enclave.unseal(sealed) if sealed is not None else enclave.random_bytes(32)
    return enclave.seal(_secret, policy="unique")


@enclave.ecall
def fingerprint() -> str:
    """A short hash of the secret: enough for the host to see it is the same secret, useless to recover it."""
    if _secret is None:
        raise RuntimeError("the vault is not open")
    return hashlib.sha256(b"quickstart fingerprint\0" + _secret).hexdigest()[:16]
