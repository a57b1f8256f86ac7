"""``ssl.SSLContext`` factories for RA-TLS: TLS 1.3 only, keys loaded without touching the disk in clear.

Python's :mod:`ssl` loads a private key only from a file. To keep an enclave key off the file system, the key is
encrypted (PKCS#8 with a fresh random password, which never leaves this process) and written, with the
certificate, into an anonymous in-memory file (``memfd_create``) that OpenSSL opens through ``/proc/self/fd``;
the file descriptor is closed as soon as OpenSSL has read it.
"""

from __future__ import annotations

import os
import secrets
import ssl
from collections.abc import Sequence
from typing import Final

from cryptography.hazmat.primitives import serialization

from enklave.channels.ratls import AttestedCertificate
from enklave.errors import PlatformError, TransportError, UsageError

__all__ = ["client_context", "server_context"]

_MEMFD_NAME: Final = "enklave-ratls-key"


def server_context(certificate: AttestedCertificate, *, alpn: Sequence[str] = ()) -> ssl.SSLContext:
    """A TLS 1.3-only server context presenting ``certificate``; no client certificate is requested.

    Usable with ``context.wrap_socket(sock, server_side=True)``, :func:`asyncio.start_server` and uvicorn-style
    servers that take an ``ssl.SSLContext``. Session tickets are off, so every client makes a full handshake and
    sees the certificate (a resumed session carries none). ``alpn`` lists the protocols offered (e.g.
    ``("http/1.1",)``). For mutual RA-TLS on the server side use :func:`enklave.channels.tls.accept`, because
    :mod:`ssl` cannot accept a self-signed client certificate for later appraisal.

    Raises :class:`UsageError` for a bad argument or a certificate OpenSSL refuses, :class:`PlatformError` when
    the system has no ``memfd_create`` (Linux only), :class:`TransportError` when the in-memory file fails.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _tls13_only(context)
    # TLS 1.3 tickets would let a client resume without a certificate, hence without evidence.
    context.num_tickets = 0
    _load_certificate(context, certificate)
    _set_alpn(context, alpn)
    return context


def client_context(
    *, certificate: AttestedCertificate | None = None, alpn: Sequence[str] = ()
) -> ssl.SSLContext:
    """A TLS 1.3-only client context that accepts any server certificate, for appraisal after the handshake.

    RA-TLS certificates are self-signed: trust comes from the evidence inside, so the context does not check a
    chain or a host name (``check_hostname`` False, ``CERT_NONE``). OpenSSL still checks that the server owns the
    certificate's key (CertificateVerify). THE CALLER MUST verify the peer certificate (``getpeercert(True)``)
    with a :class:`~enklave.channels.ratls.PeerVerifier` before sending or trusting application data:
    :func:`enklave.channels.tls.connect` and :class:`enklave.channels.tls.AttestedTransport` do. With
    ``certificate``, it is presented when the server asks for one (mutual RA-TLS).

    Raises as :func:`server_context` does.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    _tls13_only(context)
    if certificate is not None:
        _load_certificate(context, certificate)
    _set_alpn(context, alpn)
    return context


def _tls13_only(context: ssl.SSLContext) -> None:
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.maximum_version = ssl.TLSVersion.TLSv1_3


def _set_alpn(context: ssl.SSLContext, alpn: Sequence[str]) -> None:
    if isinstance(alpn, str) or not all(isinstance(name, str) and name for name in alpn):
        raise UsageError("alpn must be a sequence of non-empty protocol names, e.g. ('http/1.1',)")
    if alpn:
        try:
            context.set_alpn_protocols(list(alpn))
        except (ValueError, ssl.SSLError) as exc:
            raise UsageError("alpn holds a protocol name that is too long") from exc


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _load_certificate(context: ssl.SSLContext, certificate: AttestedCertificate) -> None:
    """Load ``certificate`` and its key into ``context`` through an encrypted in-memory file."""
    if not isinstance(certificate, AttestedCertificate):
        raise UsageError("certificate must be an AttestedCertificate")
    memfd_create = getattr(os, "memfd_create", None)
    if memfd_create is None:
        raise PlatformError("loading a key without a file needs os.memfd_create (Linux)")
    # 1. A one-time password, printable so that no layer can cut it at a NUL byte.
    password = secrets.token_urlsafe(32).encode("ascii")
    encrypted_key = certificate.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password),
    )
    # 2. The certificate and the encrypted key in an anonymous memory file, closed right after loading.
    try:
        fd = memfd_create(_MEMFD_NAME, os.MFD_CLOEXEC)
    except OSError as exc:
        raise TransportError(f"memfd_create failed: {exc.strerror or type(exc).__name__}") from exc
    try:
        _write_all(fd, certificate.certificate_pem + encrypted_key)
        context.load_cert_chain(f"/proc/self/fd/{fd}", password=password)
    except ssl.SSLError as exc:
        raise UsageError("OpenSSL refused the certificate or its key") from exc
    except OSError as exc:
        raise TransportError(f"the in-memory key file failed: {exc.strerror or type(exc).__name__}") from exc
    finally:
        os.close(fd)
