"""The trusted half of the Oblivious HTTP gateway: its key pairs, its evidence and the application.

The gateway key pairs are generated in here on first use and never leave: the host only ever holds their public
halves (the key configurations) and the encapsulated bytes it relays. Clients learn that the key is this
enclave's from the evidence: a quote whose report data binds the published key configurations (and the
client's nonce), see :func:`enklave.channels.ohttp_attested.key_config_report_data`.

Ecalls:

* ``key_config_evidence(nonce)``: the key configurations (``application/ohttp-keys``) and a quote binding them
  and ``nonce`` (0 to 64 bytes; empty means no nonce), as the CBOR envelope clients verify.
* ``handle(encapsulated_request)``: decapsulate a ``message/ohttp-req``, answer its Binary HTTP request with
  :func:`app`, and return the ``message/ohttp-res``. A request that does not decapsulate raises PublicError
  (the host answers 400); everything after that, errors included, is answered inside the encryption.

The keys live as long as the enclave process: a restarted gateway has new keys, and clients fetch new evidence.
"""

from __future__ import annotations

import threading
from typing import Annotated

from enklave import enclave
from enklave.channels.ohttp_attested import MAX_NONCE_SIZE, BhttpRequest, BhttpResponse, OhttpGateway
from enklave.errors import BadDataError

# The largest encapsulated request the enclave accepts (the host checks the same limit before the ecall).
MAX_REQUEST_SIZE = 1 << 20

_lock = threading.Lock()
_gateway: OhttpGateway | None = None


def _text(status: int, text: str) -> BhttpResponse:
    return BhttpResponse(status, (("content-type", "text/plain; charset=utf-8"),), text.encode())


def app(request: BhttpRequest) -> BhttpResponse:
    """The application behind the gateway. Only this enclave sees its requests and responses in clear.

    ``GET /hello`` greets; ``POST /echo`` answers the request content with the same content type.
    """
    if request.path == "/hello":
        if request.method != "GET":
            return _text(405, "use GET\n")
        return _text(200, f"Hello from the OHTTP gateway enclave ({enclave.mode()} mode)\n")
    if request.path == "/echo":
        if request.method != "POST":
            return _text(405, "use POST\n")
        content_type = request.header("content-type") or "application/octet-stream"
        return BhttpResponse(200, (("content-type", content_type),), request.content)
    return _text(404, f"no resource at {request.path}\n")


def _the_gateway() -> OhttpGateway:
    global _gateway  # noqa: PLW0603 - the enclave's state is this module's state.
    with _lock:
        if _gateway is None:
            # Key id 1: X25519 (every OHTTP client has it); key id 2: P-256, for clients that need NIST curves.
            _gateway = OhttpGateway.generate(app, kems=("X25519", "P-256"), max_message_size=MAX_REQUEST_SIZE)
        return _gateway


@enclave.ecall
def key_config_evidence(nonce: Annotated[bytes, enclave.MaxSize(MAX_NONCE_SIZE)]) -> bytes:
    """The key configurations and a quote over their binding to ``nonce`` (see the module docstring)."""
    return _the_gateway().evidence(enclave.platform(), nonce).to_bytes()


@enclave.ecall
def handle(encapsulated_request: Annotated[bytes, enclave.MaxSize(MAX_REQUEST_SIZE)]) -> bytes:
    """One request: ``message/ohttp-req`` in, ``message/ohttp-res`` out."""
    try:
        return _the_gateway().handle(encapsulated_request)
    except BadDataError as exc:
        # The message says which check failed (truncated, unknown key id, does not authenticate): nothing secret.
        raise enclave.PublicError(f"the encapsulated request was rejected: {exc}") from None
