"""Channels that end inside the enclave: RA-TLS, TLS relayed through the host, Oblivious HTTP over HPKE.

:mod:`enklave.channels.ohttp` implements Oblivious HTTP message encapsulation (RFC 9458) over HPKE base mode
(RFC 9180): key configurations whose hash can be bound into attestation report data, request encapsulation for
clients, and request decapsulation plus response encapsulation for the gateway inside the enclave.
:mod:`enklave.channels.ratls` creates attested certificates inside an enclave (TCG DICE tagged evidence, and the
legacy Gramine extension) and verifies the three formats a peer may present (with Open Enclave's).
"""

from __future__ import annotations

from enklave.channels.ohttp import (
    DEFAULT_MAX_MESSAGE_SIZE,
    ClientContext,
    KeyConfig,
    OhttpClient,
    OhttpServer,
    ResponseContext,
    SymmetricSuite,
)
from enklave.channels.ratls import (
    AttestedCertificate,
    PeerVerifier,
    RaTlsFormat,
    RaTlsSettings,
    VerifiedPeer,
    create_attested_certificate,
    verify_peer_certificate,
)
from enklave.channels.tls import (
    AttestedConnection,
    AttestedTransport,
    accept,
    client_context,
    connect,
    server_context,
    wrap_client,
)

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "AttestedCertificate",
    "AttestedConnection",
    "AttestedTransport",
    "ClientContext",
    "KeyConfig",
    "OhttpClient",
    "OhttpServer",
    "PeerVerifier",
    "RaTlsFormat",
    "RaTlsSettings",
    "ResponseContext",
    "SymmetricSuite",
    "VerifiedPeer",
    "accept",
    "client_context",
    "connect",
    "create_attested_certificate",
    "server_context",
    "verify_peer_certificate",
    "wrap_client",
]
