"""Channels that end inside the enclave: RA-TLS, TLS relayed through the host, Oblivious HTTP over HPKE.

:mod:`enklave.channels.ohttp` implements Oblivious HTTP message encapsulation (RFC 9458) over HPKE base mode
(RFC 9180): key configurations whose hash can be bound into attestation report data, request encapsulation for
clients, and request decapsulation plus response encapsulation for the gateway inside the enclave.
:mod:`enklave.channels.ratls` creates attested certificates inside an enclave (TCG DICE tagged evidence, and the
legacy Gramine extension) and verifies the three formats a peer may present (with Open Enclave's);
:mod:`enklave.channels.tls` carries it over sockets and httpx, and :mod:`enklave.channels.engine` runs TLS 1.3 on
memory buffers for TLS that ends inside the enclave, whose host only relays records
(:mod:`enklave.channels.relay`). :mod:`enklave.channels.ohttp_attested` binds a gateway's key
configurations into its attestation evidence and encapsulates Binary HTTP (RFC 9292) requests to it.
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
from enklave.channels.ohttp_attested import (
    AttestedOhttpClient,
    BhttpRequest,
    BhttpResponse,
    EncapsulatedRequest,
    GatewayVerifier,
    KeyConfigEvidence,
    OhttpGateway,
    VerifiedKeyConfig,
    key_config_report_data,
    verify_key_config_evidence,
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
from enklave.channels.relay import HttpLimits, SessionHandler, TlsRelay, TlsSessions
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
    "AttestedOhttpClient",
    "AttestedTransport",
    "BhttpRequest",
    "BhttpResponse",
    "ClientContext",
    "EncapsulatedRequest",
    "GatewayVerifier",
    "HttpLimits",
    "KeyConfig",
    "KeyConfigEvidence",
    "OhttpClient",
    "OhttpGateway",
    "OhttpServer",
    "PeerVerifier",
    "RaTlsFormat",
    "RaTlsSettings",
    "ResponseContext",
    "SessionHandler",
    "SymmetricSuite",
    "TlsRelay",
    "TlsSessions",
    "VerifiedKeyConfig",
    "VerifiedPeer",
    "accept",
    "client_context",
    "connect",
    "create_attested_certificate",
    "key_config_report_data",
    "server_context",
    "verify_key_config_evidence",
    "verify_peer_certificate",
    "wrap_client",
]
