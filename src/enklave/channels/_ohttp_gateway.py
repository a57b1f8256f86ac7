"""The enclave side of attested Oblivious HTTP: key pairs, their evidence, and the request handler loop.

Re-exported by :mod:`enklave.channels.ohttp_attested`; see there for the protocol and the errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Literal, Protocol

from enklave.channels import _hpke
from enklave.channels._ohttp_bhttp import BhttpRequest, BhttpResponse
from enklave.channels._ohttp_evidence import KeyConfigEvidence, key_config_report_data
from enklave.channels.ohttp import DEFAULT_MAX_MESSAGE_SIZE, KeyConfig, OhttpServer
from enklave.errors import BadDataError, UsageError
from enklave.platform._base import Platform

__all__ = ["Handler", "OhttpGateway"]

_KEMS: Final = {"X25519": _hpke.KEM_X25519_HKDF_SHA256, "P-256": _hpke.KEM_P256_HKDF_SHA256}
# Room the response encapsulation adds (nonce and tag), so a response the client accepts fits its limit.
_RESPONSE_OVERHEAD = 64


class Handler(Protocol):
    """An application behind the gateway: a Binary HTTP request in, a response out (it runs in the enclave)."""

    def __call__(self, request: BhttpRequest, /) -> BhttpResponse:
        """Answer ``request``; an exception becomes an encapsulated 500 response."""
        ...


def _plain(status: int, text: str) -> BhttpResponse:
    return BhttpResponse(status, (("content-type", "text/plain; charset=utf-8"),), text.encode())


class OhttpGateway:
    """The enclave side: key pairs, their evidence, and encapsulated Binary HTTP requests handed to ``handler``.

    ``servers`` hold distinct key ids; the private keys stay in this object (keep it inside the enclave).
    :meth:`handle` raises only for what the client cannot be told about through an encapsulated answer (the
    request does not decapsulate); everything after that becomes an encapsulated response: a 400 for a request
    that is not valid Binary HTTP, a 500 when ``handler`` raises or returns something else than a
    :class:`BhttpResponse`, so the host learns nothing about requests from errors. Raises :class:`UsageError`
    when ``servers`` is empty or repeats a key id.
    """

    def __init__(
        self,
        servers: Sequence[OhttpServer],
        handler: Handler,
        *,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        by_id = {server.key_config.key_id: server for server in servers}
        if not servers or len(by_id) != len(servers):
            raise UsageError("an OHTTP gateway needs at least one key configuration and distinct key ids")
        self._servers = by_id
        self._handler = handler
        self.max_message_size = max_message_size
        self.key_configs = tuple(server.key_config for server in servers)
        self.encoded_key_configs = KeyConfig.encode_list(self.key_configs)

    @classmethod
    def generate(
        cls,
        handler: Handler,
        *,
        kems: Sequence[Literal["X25519", "P-256"]] = ("X25519",),
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> OhttpGateway:
        """A gateway with a fresh key pair per KEM in ``kems``, key ids 1, 2, ... in that order, each offering
        HKDF-SHA256 with AES-128-GCM, AES-256-GCM and ChaCha20-Poly1305. Raises :class:`UsageError` for an
        unknown KEM name."""
        unknown = [kem for kem in kems if kem not in _KEMS]
        if unknown or not kems:
            raise UsageError(f"kems must be a non-empty list of {sorted(_KEMS)}, got {list(kems)!r}")
        servers = [OhttpServer.generate(i, kem_id=_KEMS[kem]) for i, kem in enumerate(kems, start=1)]
        for server in servers:
            server.max_message_size = max_message_size
        return cls(servers, handler, max_message_size=max_message_size)

    def evidence(self, platform: Platform, nonce: bytes = b"") -> KeyConfigEvidence:
        """Evidence for this gateway's key configurations: a quote over :func:`key_config_report_data`.

        Raises :class:`UsageError` for a nonce over :data:`~enklave.channels.ohttp_attested.MAX_NONCE_SIZE` bytes and
        :class:`~enklave.errors.PlatformError` when the platform cannot quote.
        """
        report_data = key_config_report_data(self.encoded_key_configs, nonce)
        return KeyConfigEvidence(self.encoded_key_configs, platform.get_quote(report_data), bytes(nonce))

    def handle(self, encapsulated_request: bytes) -> bytes:
        """Decapsulate a request, run the handler on its Binary HTTP, return the encapsulated response.

        Raises :class:`BadDataError` when the request is over the size limit, truncated, for an unknown key id
        or suite, and :class:`~enklave.errors.VerificationError` when it does not authenticate (tampered).
        """
        data = bytes(encapsulated_request)
        if len(data) > self.max_message_size:
            raise BadDataError("encapsulated OHTTP request exceeds the size limit")
        server = self._servers.get(data[0]) if data else None
        if server is None:
            raise BadDataError("OHTTP request is empty or for an unknown key id")
        plaintext, context = server.decapsulate_request(data)
        try:
            request = BhttpRequest.from_bytes(plaintext)
        except BadDataError:
            response = _plain(400, "the encapsulated request is not a valid Binary HTTP request\n")
        else:
            try:
                response = self._handler(request)
            # Any failure of application code becomes an encapsulated 500: only the client may learn of it.
            except Exception:
                response = _plain(500, "internal error\n")
            if not isinstance(response, BhttpResponse):
                response = _plain(500, "internal error\n")
        encoded = response.to_bytes()
        if len(encoded) + _RESPONSE_OVERHEAD > self.max_message_size:
            encoded = _plain(500, "the response is too large\n").to_bytes()
        return context.encapsulate_response(encoded)
