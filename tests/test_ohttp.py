"""Oblivious HTTP (RFC 9458) over HPKE (RFC 9180): published vectors, round trips and adversarial inputs."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enklave.channels import _hpke
from enklave.channels.ohttp import (
    ClientContext,
    KeyConfig,
    OhttpClient,
    OhttpServer,
    SymmetricSuite,
    _response_keys,
)
from enklave.errors import BadDataError, EnklaveError, InvalidKey, UsageError, VerificationError

ASSETS = Path(__file__).parent / "assets"
RFC9458 = json.loads((ASSETS / "rfc9458" / "appendix_a.json").read_text("utf-8"))
RFC9180 = json.loads((ASSETS / "rfc9180" / "base_mode_vectors.json").read_text("utf-8"))


def _h(name: str) -> bytes:
    return bytes.fromhex(RFC9458[name])


# RFC 9458 Appendix A, reproduced byte for byte through the public API.


def test_rfc9458_key_config_round_trips() -> None:
    config = KeyConfig.from_bytes(_h("key_config"))
    assert config.key_id == 1
    assert config.kem_id == _hpke.KEM_X25519_HKDF_SHA256
    assert config.suites == (SymmetricSuite(1, 1), SymmetricSuite(1, 3))
    assert config.to_bytes() == _h("key_config")
    assert _hpke.public_key_from_private(config.kem_id, _h("server_private_key")) == config.public_key


def test_rfc9458_complete_example() -> None:
    config = KeyConfig.from_bytes(_h("key_config"))
    client = OhttpClient(config)
    encapsulated, client_context = client.encapsulate_request(
        _h("request"), test_only_ephemeral_private_key=_h("ephemeral_private_key")
    )
    assert encapsulated == _h("encapsulated_request")
    assert encapsulated[7:39] == _h("ephemeral_public_key")

    server = OhttpServer(config, _h("server_private_key"))
    request, response_context = server.decapsulate_request(encapsulated)
    assert request == _h("request")
    encapsulated_response = response_context.encapsulate_response(
        _h("response"), test_only_response_nonce=_h("response_nonce")
    )
    assert encapsulated_response == _h("encapsulated_response")
    assert client_context.decapsulate_response(encapsulated_response) == _h("response")


def test_rfc9458_intermediate_response_values() -> None:
    server = OhttpServer(KeyConfig.from_bytes(_h("key_config")), _h("server_private_key"))
    _, response_context = server.decapsulate_request(_h("encapsulated_request"))
    context = response_context._context
    assert context.export(b"message/bhttp response", 16) == _h("export_secret")
    key, nonce = _response_keys(context, _h("ephemeral_public_key"), 1, _h("response_nonce"))
    assert key == _h("aead_key")
    assert nonce == _h("aead_nonce")


# RFC 9180 Appendix A base-mode vectors, through the same HPKE code path that OHTTP uses.


@pytest.mark.parametrize("vector", RFC9180, ids=lambda v: v["section"])
def test_rfc9180_base_mode_vectors(vector: dict[str, Any]) -> None:
    def h(name: str) -> bytes:
        return bytes.fromhex(vector[name])

    ids = (vector["kem_id"], vector["kdf_id"], vector["aead_id"])
    assert _hpke.public_key_from_private(vector["kem_id"], h("skRm")) == h("pkRm")
    enc, sender = _hpke.setup_base_sender(*ids, h("pkRm"), h("info"), ephemeral_private_key=h("skEm"))
    assert enc == h("enc") == h("pkEm")
    receiver = _hpke.setup_base_receiver(*ids, enc, h("skRm"), h("info"))
    first = vector["encryptions"][0]
    ct = sender.seal(bytes.fromhex(first["pt"]), bytes.fromhex(first["aad"]))
    assert ct.hex() == first["ct"]
    assert receiver.open(ct, bytes.fromhex(first["aad"])).hex() == first["pt"]
    for export in vector["exports"]:
        context = bytes.fromhex(export["exporter_context"])
        assert sender.export(context, export["L"]).hex() == export["exported_value"]
        assert receiver.export(context, export["L"]).hex() == export["exported_value"]


# Round trips for every supported suite combination.

SUITES = [
    (kem, SymmetricSuite(_hpke.KDF_HKDF_SHA256, aead))
    for kem, aead in itertools.product(
        (_hpke.KEM_X25519_HKDF_SHA256, _hpke.KEM_P256_HKDF_SHA256),
        (_hpke.AEAD_AES_128_GCM, _hpke.AEAD_AES_256_GCM, _hpke.AEAD_CHACHA20_POLY1305),
    )
]


@pytest.mark.parametrize(("kem_id", "suite"), SUITES, ids=str)
def test_round_trip_every_suite(kem_id: int, suite: SymmetricSuite) -> None:
    server = OhttpServer.generate(7, kem_id=kem_id, suites=(suite,))
    config = KeyConfig.from_bytes(server.key_config.to_bytes())
    assert config == server.key_config
    encapsulated, context = OhttpClient(config).encapsulate_request(b"GET / please")
    assert encapsulated[:7] == bytes([7]) + kem_id.to_bytes(2, "big") + b"\x00\x01" + suite.aead_id.to_bytes(
        2, "big"
    )
    request, response_context = server.decapsulate_request(encapsulated)
    assert request == b"GET / please"
    response = response_context.encapsulate_response(b"200 OK")
    assert context.decapsulate_response(response) == b"200 OK"
    # Fresh ephemeral keys and response nonces: encapsulating twice never repeats bytes.
    again, _ = OhttpClient(config).encapsulate_request(b"GET / please")
    assert again != encapsulated
    assert response_context.encapsulate_response(b"200 OK") != response


def test_key_config_list_and_hash() -> None:
    a = OhttpServer.generate(1).key_config
    b = OhttpServer.generate(2, kem_id=_hpke.KEM_P256_HKDF_SHA256).key_config
    encoded = KeyConfig.encode_list([a, b])
    assert encoded[:2] == len(a.to_bytes()).to_bytes(2, "big")
    assert KeyConfig.decode_list(encoded) == (a, b)
    assert a.hash() != b.hash() and len(a.hash()) == 32
    # An unsupported KEM in the list is skipped (RFC 9458 §3.2), a malformed entry is an error.
    foreign = b"\x03\x00\x99" + b"\x00" * 4
    assert KeyConfig.decode_list(len(foreign).to_bytes(2, "big") + foreign + encoded) == (a, b)
    with pytest.raises(InvalidKey):
        KeyConfig.decode_list(encoded[:-1])
    with pytest.raises(InvalidKey):
        KeyConfig.decode_list(b"")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        bytes.fromhex(RFC9458["key_config"])[:-1],
        bytes.fromhex(RFC9458["key_config"]) + b"\x00",
        b"\x01\x00\x99" + b"\x00" * 40,
        bytes.fromhex(RFC9458["key_config"])[:35] + b"\x00\x00",
        bytes.fromhex(RFC9458["key_config"])[:35] + b"\x00\x03\x00\x01\x00",
    ],
)
def test_malformed_key_config_raises_invalid_key(data: bytes) -> None:
    with pytest.raises(InvalidKey):
        KeyConfig.from_bytes(data)


# Tampering, misaddressing and replay to another request.


def _exchange() -> tuple[OhttpServer, bytes, ClientContext]:
    server = OhttpServer.generate(5)
    encapsulated, context = OhttpClient(server.key_config).encapsulate_request(b"secret request")
    return server, encapsulated, context


@pytest.mark.parametrize("index", [0, 2, 4, 6, 7, 38, 39, -1])
def test_tampered_request_is_rejected(index: int) -> None:
    server, encapsulated, _ = _exchange()
    tampered = bytearray(encapsulated)
    tampered[index] ^= 0x01
    with pytest.raises(BadDataError):
        server.decapsulate_request(bytes(tampered))


def test_tampered_ciphertext_is_a_verification_error() -> None:
    server, encapsulated, _ = _exchange()
    with pytest.raises(VerificationError):
        server.decapsulate_request(encapsulated[:-1] + bytes([encapsulated[-1] ^ 0x80]))


@pytest.mark.parametrize("index", [0, 15, 16, -1])
def test_tampered_response_is_rejected(index: int) -> None:
    server, encapsulated, context = _exchange()
    _, response_context = server.decapsulate_request(encapsulated)
    response = bytearray(response_context.encapsulate_response(b"answer"))
    response[index] ^= 0x01
    with pytest.raises(VerificationError):
        context.decapsulate_response(bytes(response))


def test_response_cannot_be_opened_with_another_requests_context() -> None:
    server = OhttpServer.generate(5)
    client = OhttpClient(server.key_config)
    first, first_context = client.encapsulate_request(b"first")
    _, second_context = client.encapsulate_request(b"second")
    _, response_context = server.decapsulate_request(first)
    response = response_context.encapsulate_response(b"for the first request")
    assert first_context.decapsulate_response(response) == b"for the first request"
    with pytest.raises(VerificationError):
        second_context.decapsulate_response(response)


def test_wrong_key_id_and_unoffered_suite() -> None:
    server, _, _ = _exchange()
    other = OhttpServer.generate(6)
    encapsulated, _ = OhttpClient(other.key_config).encapsulate_request(b"x")
    with pytest.raises(BadDataError, match="unknown key id 6"):
        server.decapsulate_request(encapsulated)
    only_aes = OhttpServer.generate(5, suites=(SymmetricSuite(1, 1),))
    chacha_client = OhttpClient(server.key_config, suite=SymmetricSuite(1, 3))
    with pytest.raises(BadDataError, match="symmetric suite"):
        only_aes.decapsulate_request(chacha_client.encapsulate_request(b"x")[0])


def test_limits_are_checked_before_work() -> None:
    server = OhttpServer.generate(1)
    small = OhttpServer(server.key_config, server._private_key, max_message_size=64)
    encapsulated, context = OhttpClient(server.key_config).encapsulate_request(b"x" * 100)
    with pytest.raises(BadDataError, match="size limit"):
        small.decapsulate_request(encapsulated)
    with pytest.raises(UsageError):
        OhttpClient(server.key_config, max_message_size=10).encapsulate_request(b"x" * 11)
    with pytest.raises(BadDataError, match="truncated"):
        context.decapsulate_response(b"\x00" * 31)


def test_server_rejects_a_private_key_of_another_config() -> None:
    a = OhttpServer.generate(1)
    b = OhttpServer.generate(1)
    with pytest.raises(UsageError):
        OhttpServer(a.key_config, b._private_key)


def test_low_order_x25519_enc_is_rejected() -> None:
    server = OhttpServer.generate(1, suites=(SymmetricSuite(1, 1),))
    # An all-zero X25519 point gives an all-zero shared secret, which RFC 9180 §7.1.4 requires be refused.
    message = b"\x01\x00\x20\x00\x01\x00\x01" + b"\x00" * 32 + b"\x00" * 16
    with pytest.raises(BadDataError):
        server.decapsulate_request(message)


_X25519_SERVER = OhttpServer.generate(1, suites=(SymmetricSuite(1, 1),))
_P256_SERVER = OhttpServer.generate(1, kem_id=_hpke.KEM_P256_HKDF_SHA256, suites=(SymmetricSuite(1, 1),))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(max_size=200),
        st.binary(min_size=32, max_size=120).map(lambda b: b"\x01\x00\x20\x00\x01\x00\x01" + b),
        st.binary(min_size=65, max_size=150).map(lambda b: b"\x01\x00\x10\x00\x01\x00\x01" + b),
    )
)
def test_random_bytes_raise_only_enklave_errors(data: bytes) -> None:
    # Random bytes never authenticate, so every input must fail, and only with the peer-data branch of the tree.
    for server in (_X25519_SERVER, _P256_SERVER):
        with pytest.raises(EnklaveError) as caught:
            server.decapsulate_request(data)
        assert isinstance(caught.value, BadDataError)
