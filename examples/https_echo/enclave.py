"""The trusted half of the HTTPS echo: TLS ends here, so the request is plaintext only inside the enclave.

The host owns the listening socket, but all it passes in and out are TLS records. This module holds the TLS
server (:class:`~enklave.channels.relay.TlsSessions`): an RA-TLS certificate whose key is made in the enclave on
the first connection and never leaves it, one TLS session per connection, and the application, ``echo``, which
sees whole HTTP requests. The three ``tls_*`` ecalls are the whole interface the host's relay needs; the records
they carry are bounded by ``MaxSize``, checked here before any of them runs.
"""

from __future__ import annotations

from enklave import enclave
from enklave.channels.relay import TlsSessions


def echo(
    method: str, target: str, headers: list[tuple[str, str]], body: bytes
) -> tuple[int, list[tuple[str, str]], bytes]:
    """The application: answer with the request body, and the method and target in response headers."""
    content_type = next(
        (value for name, value in headers if name == "content-type"), "application/octet-stream"
    )
    return 200, [("content-type", content_type), ("x-echo-method", method), ("x-echo-target", target)], body


# Requests are bounded (16 KiB of headers, 1 MiB of body, by default); so is the number of sessions.
SESSIONS = TlsSessions.http(echo)
# tls_open, tls_feed (records bounded by MaxSize(MAX_FEED)) and tls_close: all that the host's relay calls.
SESSIONS.declare_ecalls()


@enclave.ecall
def tls_certificate() -> bytes:
    """The server's RA-TLS certificate (DER): public, so the host may print or publish it."""
    return SESSIONS.certificate.certificate_der
