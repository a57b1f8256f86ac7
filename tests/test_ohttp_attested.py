"""Attested Oblivious HTTP: Binary HTTP vectors, the evidence layout, verification and its attacks, and the
example gateway enclave (examples/ohttp_gateway) served on loopback behind an honest and a malicious relay.

Binary HTTP vectors: RFC 9292 §5 (the known- and indeterminate-length encodings of the sample request, the
indeterminate-length response with interim responses, the known-length response with trailers), typed in as
hex from the RFC; and the request and response of RFC 9458 Appendix A (tests/assets/rfc9458).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import importlib.util
import json
import shutil
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import cbor2
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from enklave import host
from enklave.attestation.policy import EnclavePolicy
from enklave.channels.ohttp import OhttpClient
from enklave.channels.ohttp_attested import (
    EVIDENCE_MEDIA_TYPE,
    MAX_EVIDENCE_SIZE,
    OHTTP_KEYS_MEDIA_TYPE,
    OHTTP_REQUEST_MEDIA_TYPE,
    REPORT_DATA_DOMAIN,
    AttestedOhttpClient,
    BhttpRequest,
    BhttpResponse,
    GatewayVerifier,
    InformationalResponse,
    KeyConfigEvidence,
    OhttpGateway,
    VerifiedKeyConfig,
    key_config_report_data,
    verify_key_config_evidence,
)
from enklave.cli import main
from enklave.cli._errors import EXIT_OK
from enklave.errors import (
    BadDataError,
    BindingError,
    InvalidKey,
    InvalidQuote,
    PolicyError,
    TransportError,
    UsageError,
    VerificationError,
)
from enklave.platform.simulated import SimulatedCollateralSource, SimulatedPlatform, simulated_root
from enklave.runtime.bundle import Bundle, sign_bundle, write_bundle
from enklave.runtime.signing import generate_signing_key
from enklave.sgx.report import AttributeFlags, Attributes, ReportBody
from memory_scan import found_in_snapshot, snapshot_memory
from service_fixtures import enklave_home, serving

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "ohttp_gateway"
RFC9458 = json.loads((Path(__file__).parent / "assets" / "rfc9458" / "appendix_a.json").read_text("utf-8"))


def _hex(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


# RFC 9292 §5, Figure 6 (known-length request), Figure 7 (indeterminate-length request), Figure 9
# (indeterminate-length response with 102 and 103 interim responses), Figure 11 (known-length response).
RFC9292_KNOWN_REQUEST = _hex("""
    00034745 54056874 74707300 0a2f6865 6c6c6f2e 74787440 6c0a7573 65722d61 67656e74 34637572 6c2f372e 31362e33
    206c6962 6375726c 2f372e31 362e3320 4f70656e 53534c2f 302e392e 376c207a 6c69622f 312e322e 3304686f 73740f77
    77772e65 78616d70 6c652e63 6f6d0f61 63636570 742d6c61 6e677561 67650665 6e2c206d 690000""")
RFC9292_INDETERMINATE_REQUEST = _hex("""
    02034745 54056874 74707300 0a2f6865 6c6c6f2e 7478740a 75736572 2d616765 6e743463 75726c2f 372e3136 2e33206c
    69626375 726c2f37 2e31362e 33204f70 656e5353 4c2f302e 392e376c 207a6c69 622f312e 322e3304 686f7374 0f777777
    2e657861 6d706c65 2e636f6d 0f616363 6570742d 6c616e67 75616765 06656e2c 206d6900 00000000 00000000 00000000""")
RFC9292_INDETERMINATE_RESPONSE = _hex("""
    03406607 72756e6e 696e670a 22736c65 65702031 35220040 67046c69 6e6b233c 2f737479 6c652e63 73733e3b 2072656c
    3d707265 6c6f6164 3b206173 3d737479 6c65046c 696e6b24 3c2f7363 72697074 2e6a733e 3b207265 6c3d7072 656c6f61
    643b2061 733d7363 72697074 0040c804 64617465 1d4d6f6e 2c203237 204a756c 20323030 39203132 3a32383a 35332047
    4d540673 65727665 72064170 61636865 0d6c6173 742d6d6f 64696669 65641d57 65642c20 3232204a 756c2032 30303920
    31393a31 353a3536 20474d54 04657461 67142233 34616133 38372d64 2d313536 38656230 30220d61 63636570 742d7261
    6e676573 05627974 65730e63 6f6e7465 6e742d6c 656e6774 68023531 04766172 790f4163 63657074 2d456e63 6f64696e
    670c636f 6e74656e 742d7479 70650a74 6578742f 706c6169 6e003348 656c6c6f 20576f72 6c642120 4d792063 6f6e7465
    6e742069 6e636c75 64657320 61207472 61696c69 6e672043 524c462e 0d0a0000""")
RFC9292_KNOWN_RESPONSE = _hex("""
    0140c800 1d546869 7320636f 6e74656e 7420636f 6e746169 6e732043 524c462e 0d0a0d07 74726169 6c657204 74657874""")
HELLO_HEADERS = (
    ("user-agent", "curl/7.16.3 libcurl/7.16.3 OpenSSL/0.9.7l zlib/1.2.3"),
    ("host", "www.example.com"),
    ("accept-language", "en, mi"),
)


# -- Binary HTTP (RFC 9292) ------------------------------------------------------------------------------------


def test_rfc9292_requests_decode_and_encode_truncated() -> None:
    known = BhttpRequest.from_bytes(RFC9292_KNOWN_REQUEST)
    assert known == BhttpRequest("GET", "https", "", "/hello.txt", HELLO_HEADERS)
    assert known.header("Host") == "www.example.com"
    assert BhttpRequest.from_bytes(RFC9292_INDETERMINATE_REQUEST) == known
    # The RFC notes the last two bytes (empty content and trailers) can be truncated; enklave's encoder does.
    assert known.to_bytes() == RFC9292_KNOWN_REQUEST[:-2]
    assert BhttpRequest.from_bytes(RFC9292_KNOWN_REQUEST[:-2]) == known


def test_rfc9292_responses_decode() -> None:
    interim = BhttpResponse.from_bytes(RFC9292_INDETERMINATE_RESPONSE)
    assert [i.status for i in interim.informational] == [102, 103]
    assert interim.informational[1].headers == (
        ("link", "</style.css>; rel=preload; as=style"),
        ("link", "</script.js>; rel=preload; as=script"),
    )
    assert interim.status == 200
    assert interim.header("content-type") == "text/plain"
    assert interim.content == b"Hello World! My content includes a trailing CRLF.\r\n"
    # Re-encoded in the known-length form, it decodes to the same message.
    assert BhttpResponse.from_bytes(interim.to_bytes()) == interim

    trailers = BhttpResponse.from_bytes(RFC9292_KNOWN_RESPONSE)
    assert trailers == BhttpResponse(200, (), b"This content contains CRLF.\r\n", (("trailer", "text"),))
    assert trailers.to_bytes() == RFC9292_KNOWN_RESPONSE


def test_rfc9458_binary_http_messages_round_trip() -> None:
    request = BhttpRequest.from_bytes(bytes.fromhex(RFC9458["request"]))
    assert request == BhttpRequest("GET", "https", "example.com", "/")
    assert request.to_bytes().hex() == RFC9458["request"]
    response = BhttpResponse.from_bytes(bytes.fromhex(RFC9458["response"]))
    assert response == BhttpResponse(200)
    assert response.to_bytes().hex() == RFC9458["response"]


_NAMES = st.from_regex(r"[!#$%&'*+\-.^_`|~0-9a-z]{1,12}", fullmatch=True)
_VALUES = st.text(st.sampled_from([chr(c) for c in range(256) if c not in (0, 10, 13)]), max_size=24).filter(
    lambda v: v == v.strip(" \t")
)
_FIELDS = st.lists(st.tuples(_NAMES, _VALUES), max_size=6).map(tuple)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.from_regex(r"[A-Za-z!#$%&'*+\-.^_`|~0-9]{1,10}", fullmatch=True),
    path=st.from_regex(r"/[\x21-\x7e]{0,30}", fullmatch=True),
    headers=_FIELDS,
    content=st.binary(max_size=300),
    trailers=_FIELDS,
    status=st.integers(200, 599),
    padding=st.integers(0, 5),
)
def test_messages_round_trip_with_padding(
    method: str, path: str, headers: Any, content: bytes, trailers: Any, status: int, padding: int
) -> None:
    request = BhttpRequest(method, "https", "gateway.example", path, headers, content, trailers)
    assert BhttpRequest.from_bytes(request.to_bytes() + bytes(padding)) == request
    interim = (InformationalResponse(103, headers),)
    response = BhttpResponse(status, headers, content, trailers, interim)
    assert BhttpResponse.from_bytes(response.to_bytes() + bytes(padding)) == response


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x04",  # framing indicator 4 does not exist
        b"\x01\x40\xc8",  # a response where a request is expected
        b"\x00\x03GE",  # truncated inside the method
        b"\x00\x03GET\x05https\x00\x01/\x05\x04Host\x01x",  # an upper-case field name
        b"\x00\x03GET\x05https\x00\x01/\x06\x05:path\x01x",  # a pseudo-header as a field
        b"\x00\x03GET\x05https\x00\x01/\x05\x01a\x03a\rb",  # CR in a value
        b"\x00\x03GET\x05https\x00\x01/\x02\x00\x00",  # an empty field name
        b"\x00\x03GET\x05https\x00\x01/\x00\x00\x00\x01",  # non-zero padding
        b"\x00\x03G T\x05https\x00\x01/",  # a space in the method
        b"\x00\x03GET\x05https\x00\x00",  # an https request without a path
        b"\x00\x03GET\x05https\x00\x01/\x00\x05abc",  # content shorter than its length
        b"\x02\x03GET\x05https\x00\x01/\x01a\x01b",  # an indeterminate section without its terminator
    ],
)
def test_invalid_requests_raise_bad_data(data: bytes) -> None:
    with pytest.raises(BadDataError):
        BhttpRequest.from_bytes(data)


@pytest.mark.parametrize(
    "data", [b"\x01\x40\x63", b"\x01\x42\x58", b"\x01\x40\x66", b"\x01\x40\x66\x00", b"\x00\x03GET"]
)
def test_invalid_responses_raise_bad_data(data: bytes) -> None:
    # Status 99 and 600, an interim response without its final one, a request where a response is expected.
    with pytest.raises(BadDataError):
        BhttpResponse.from_bytes(data)


def test_too_many_field_lines_are_refused() -> None:
    lines = b"\x01a\x00" * 1025
    data = (
        b"\x00\x03GET\x05https\x00\x01/" + bytes([0x80 | (len(lines) >> 24 & 0x3F)]) + len(lines).to_bytes(3)
    )
    with pytest.raises(BadDataError, match="1024"):
        BhttpRequest.from_bytes(data + lines)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_bad_data(data: bytes) -> None:
    for parse in (BhttpRequest.from_bytes, BhttpResponse.from_bytes):
        with contextlib.suppress(BadDataError):
            parse(data)


def test_building_invalid_messages_is_a_usage_error() -> None:
    for build in (
        lambda: BhttpRequest("GET", headers=(("Content-Type", "x"),)),
        lambda: BhttpRequest("GET", headers=(("a", " padded"),)),
        lambda: BhttpRequest("GET", headers=(("a", "\u0100"),)),
        lambda: BhttpRequest("", path="/"),
        lambda: BhttpResponse(99),
        lambda: BhttpResponse(200, content="text"),  # type: ignore[arg-type]
        lambda: InformationalResponse(200),
    ):
        with pytest.raises(UsageError):
            build()


@pytest.mark.parametrize(
    ("size", "prefix"),
    [(0, b""), (63, b"\x3f"), (64, b"\x40\x40"), (16383, b"\x7f\xff"), (16384, b"\x80\x00\x40\x00")],
)
def test_content_lengths_use_the_shortest_varint_and_decode_back(size: int, prefix: bytes) -> None:
    request = BhttpRequest("POST", path="/", content=b"c" * size)
    encoded = request.to_bytes()
    # An empty content at the end is truncated away with the empty headers (RFC 9292 §3.1).
    body = b"\x00" + prefix + b"c" * size if size else b""
    assert encoded == b"\x00\x04POST\x05https\x00\x01/" + body
    assert BhttpRequest.from_bytes(encoded) == request


def test_varint_boundaries_and_limit() -> None:
    # _varint is private; it is tested directly because lengths of 2**30 and more cannot be built in a test.
    from enklave.channels._ohttp_bhttp import _varint

    assert _varint((1 << 30) - 1) == b"\xbf\xff\xff\xff"
    assert _varint(1 << 30) == b"\xc0\x00\x00\x00\x40\x00\x00\x00"
    assert _varint((1 << 62) - 1) == b"\xff" * 8
    with pytest.raises(UsageError):
        _varint(1 << 62)


@pytest.mark.parametrize("length", [b"\x03", b"\x40\x03", b"\x80\x00\x00\x03", b"\xc0" + bytes(6) + b"\x03"])
def test_every_varint_form_decodes_even_when_not_shortest(length: bytes) -> None:
    # RFC 9292 does not require the shortest form; the framing indicator is a varint too.
    for framing in (b"\x00", b"\x40\x00"):
        data = framing + length + b"GET\x05https\x00\x01/\x04\x01a\x01b"
        assert BhttpRequest.from_bytes(data) == BhttpRequest("GET", headers=(("a", "b"),))


@pytest.mark.parametrize(
    "data",
    [
        b"\x40",  # a two-byte framing indicator cut after its first byte
        b"\x00\x40",  # a two-byte method length cut short
        b"\x00\x80\x00\x00",  # a four-byte method length cut short
        b"\x00\xc0" + bytes(6),  # an eight-byte method length cut short
        b"\x00\x03GET\x05https\x00\x01/\x04\x01a\x40",  # a value length cut short by the section's end
        b"\x00\x03GET\x05https\x00\x01/\x03\x01a\x05\x05hello",  # a value running past its section
        b"\x00\x03GET\x05https\x00\x01/\x02\x02ab\x00",  # a name running past its section
        b"\x00\x03GET\x05https\x00\x01/\xc0",  # a section length cut short
        b"\x00\x03GET\x05https\x00\x01/\x00\x80\x00",  # a content length cut short
    ],
)
def test_truncated_varints_and_overrunning_field_lines_are_bad_data(data: bytes) -> None:
    with pytest.raises(BadDataError):
        BhttpRequest.from_bytes(data)


def _value_is_valid(value: str) -> bool:
    # The rule of RFC 9113 §8.2.1 as enklave applies it, spelled out one character at a time.
    return (
        all(ord(char) <= 0xFF and char not in "\x00\r\n" for char in value)
        and value[:1] not in (" ", "\t")
        and value[-1:] not in (" ", "\t")
    )


_TRICKY = st.sampled_from(
    ["\x00", "\r", "\n", " ", "\t", "\xff", "\u0100", "\ud800", "\U0010ffff", "a", "\x7f"]
)


@settings(max_examples=400)
@given(st.lists(st.one_of(_TRICKY, st.characters()), max_size=6).map("".join))
def test_field_value_check_follows_the_rule_exactly(value: str) -> None:
    if _value_is_valid(value):
        request = BhttpRequest("GET", headers=(("a", value),))
        assert BhttpRequest.from_bytes(request.to_bytes()).headers == (("a", value),)
        return
    with pytest.raises(UsageError) as caught:
        BhttpRequest("GET", headers=(("a", value),))
    syntax = (
        any(char in "\x00\r\n" for char in value) or value[:1] in (" ", "\t") or value[-1:] in (" ", "\t")
    )
    assert ("NUL, CR or LF" if syntax else "outside one byte") in str(caught.value)


@settings(max_examples=300)
@given(
    st.lists(
        st.one_of(st.sampled_from(["a", "Z", "-", "~", ":", " ", "\u212a", "\xe9"]), st.characters()),
        max_size=5,
    )
)
def test_field_name_check_follows_the_rule_exactly(chars: list[str]) -> None:
    name = "".join(chars)
    valid = bool(name) and all(char in "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz" for char in name)
    if valid:
        assert BhttpRequest("GET", headers=((name, "v"),)).header(name.upper()) == "v"
    else:
        with pytest.raises(UsageError, match="lowercase token"):
            BhttpRequest("GET", headers=((name, "v"),))


# -- The evidence layout and envelope ------------------------------------------------------------------------


def test_report_data_follows_the_documented_layout() -> None:
    keys, nonce = b"\x00\x01k", b"n" * 7
    by_hand = hashlib.sha256(
        b"enklave/ohttp-keys/v1\x00" + struct.pack(">I", 3) + keys + struct.pack(">B", 7) + nonce
    ).digest()
    assert REPORT_DATA_DOMAIN == b"enklave/ohttp-keys/v1\x00"
    assert key_config_report_data(keys, nonce) == by_hand + bytes(32)
    assert key_config_report_data(keys) != key_config_report_data(keys, b"\x00")
    with pytest.raises(UsageError):
        key_config_report_data(keys, bytes(65))
    with pytest.raises(UsageError):
        key_config_report_data(b"")


def _evidence_map(**changes: Any) -> dict[str, Any]:
    value = {"version": 1, "key_configs": b"\x00\x01k", "quote": b"q", "nonce": b""}
    value.update(changes)
    return {k: v for k, v in value.items() if v is not None}


def test_evidence_envelope_round_trips_and_parses_strictly() -> None:
    evidence = KeyConfigEvidence(b"\x00\x01k", b"quote", b"nonce")
    assert KeyConfigEvidence.from_bytes(evidence.to_bytes()) == evidence
    encoded = cbor2.dumps(_evidence_map())
    assert KeyConfigEvidence.from_bytes(encoded) == KeyConfigEvidence(b"\x00\x01k", b"q")
    bad = [
        encoded + b"\x00",  # trailing bytes
        cbor2.dumps(_evidence_map(extra=1)),
        cbor2.dumps(_evidence_map(nonce=None)),
        cbor2.dumps(_evidence_map(version=2)),
        cbor2.dumps(_evidence_map(version=True)),
        cbor2.dumps(_evidence_map(quote="text")),
        cbor2.dumps(_evidence_map(nonce=bytes(65))),
        cbor2.dumps(_evidence_map(key_configs=b"")),
        cbor2.dumps(cbor2.CBORTag(24, encoded)),
        cbor2.dumps([1, 2, 3]),
        b"\xbf\x61a\x01\xff",  # indefinite-length map
        cbor2.dumps(_evidence_map(quote=bytes(MAX_EVIDENCE_SIZE))),
    ]
    for data in bad:
        with pytest.raises(InvalidQuote):
            KeyConfigEvidence.from_bytes(data)


@settings(max_examples=200)
@given(st.binary(max_size=120))
def test_random_evidence_raises_only_invalid_quote(data: bytes) -> None:
    with contextlib.suppress(InvalidQuote):
        KeyConfigEvidence.from_bytes(data)


# -- Verification, in process --------------------------------------------------------------------------------

MR_ENCLAVE = b"\x4e" * 32
IDENTITY = ReportBody.build(mr_enclave=MR_ENCLAVE, mr_signer=b"\x5a" * 32, isv_prod_id=5, isv_svn=2)
POLICY = EnclavePolicy(mr_enclave=MR_ENCLAVE, min_isv_svn=2, allow_simulated=True)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield from enklave_home(tmp_path_factory, "ohttp-attested-home")


@pytest.fixture(scope="module")
def platform(home: Path) -> SimulatedPlatform:
    return SimulatedPlatform.launch(IDENTITY)


def _echo(request: BhttpRequest) -> BhttpResponse:
    return BhttpResponse(200, (("x-path", request.path),), request.content)


@pytest.fixture(scope="module")
def gateway() -> OhttpGateway:
    return OhttpGateway.generate(_echo, kems=("X25519", "P-256"))


def _verify(evidence: bytes | KeyConfigEvidence, **kwargs: Any) -> VerifiedKeyConfig:
    options: dict[str, Any] = {"policy": POLICY, "now": datetime.now(UTC), **kwargs}
    return verify_key_config_evidence(
        evidence, collateral_source=SimulatedCollateralSource(), roots=[simulated_root()], **options
    )


def test_verified_evidence_gives_a_client_for_the_enclave_key(
    platform: SimulatedPlatform, gateway: OhttpGateway
) -> None:
    evidence = gateway.evidence(platform, b"fresh").to_bytes()
    verified = _verify(evidence, nonce=b"fresh")
    assert verified.key_config == gateway.key_configs[0]
    assert verified.key_configs == gateway.key_configs
    assert verified.mr_enclave == MR_ENCLAVE
    assert verified.nonce == b"fresh"
    assert verified.quote.simulated
    p256 = _verify(evidence, key_id=2)
    assert p256.key_config.kem_id == 0x0010
    for chosen in (verified, p256):
        client = AttestedOhttpClient(chosen)
        pending = client.encapsulate(BhttpRequest("POST", path="/x", content=b"secret"))
        answer = pending.open(gateway.handle(pending.message))
        assert (answer.status, answer.header("x-path"), answer.content) == (200, "/x", b"secret")
    assert _verify(gateway.evidence(platform)).nonce is None


def test_swapped_key_configurations_fail_the_binding(
    platform: SimulatedPlatform, gateway: OhttpGateway
) -> None:
    genuine = gateway.evidence(platform, b"fresh")
    attacker = OhttpGateway.generate(_echo)
    swapped = KeyConfigEvidence(attacker.encoded_key_configs, genuine.quote, genuine.nonce)
    with pytest.raises(BindingError, match="key configurations"):
        _verify(swapped, nonce=b"fresh")
    # The same quote with its genuine keys but a nonce it was not made for.
    relabelled = KeyConfigEvidence(genuine.key_configs, genuine.quote, b"other")
    with pytest.raises(BindingError):
        _verify(relabelled)


def test_stale_or_missing_nonce_fails_the_binding(platform: SimulatedPlatform, gateway: OhttpGateway) -> None:
    old = gateway.evidence(platform, b"old nonce").to_bytes()
    with pytest.raises(BindingError, match="another nonce"):
        _verify(old, nonce=b"new nonce")
    with pytest.raises(BindingError, match="carries none"):
        _verify(gateway.evidence(platform).to_bytes(), nonce=b"new nonce")


def test_other_mrenclave_lower_svn_debug_and_simulated_fail_the_policy(
    platform: SimulatedPlatform, gateway: OhttpGateway
) -> None:
    evidence = gateway.evidence(platform).to_bytes()
    with pytest.raises(PolicyError) as info:
        _verify(evidence, policy=EnclavePolicy(mr_enclave=b"\x77" * 32, allow_simulated=True))
    assert info.value.field == "mr_enclave"
    with pytest.raises(PolicyError) as info:
        _verify(evidence, policy=EnclavePolicy(mr_enclave=MR_ENCLAVE, min_isv_svn=3, allow_simulated=True))
    assert info.value.field == "isv_svn"
    with pytest.raises(PolicyError) as info:
        _verify(evidence, policy=EnclavePolicy(mr_enclave=MR_ENCLAVE))
    assert info.value.field == "simulated"
    flags = AttributeFlags.INIT | AttributeFlags.MODE64BIT | AttributeFlags.DEBUG
    debug = ReportBody.build(
        mr_enclave=MR_ENCLAVE,
        mr_signer=b"\x5a" * 32,
        isv_prod_id=5,
        isv_svn=2,
        attributes=Attributes(flags, 3),
    )
    with pytest.raises(PolicyError) as info:
        _verify(gateway.evidence(SimulatedPlatform.launch(debug)).to_bytes())
    assert info.value.field == "debug"


def test_misuse_and_missing_keys(platform: SimulatedPlatform, gateway: OhttpGateway) -> None:
    evidence = gateway.evidence(platform).to_bytes()
    with pytest.raises(InvalidKey, match="key id 9"):
        _verify(evidence, key_id=9)
    with pytest.raises(UsageError):
        _verify(evidence, now=datetime.now())
    with pytest.raises(UsageError):
        _verify(evidence, nonce=b"")
    verified = _verify(evidence)
    with pytest.raises(UsageError):
        VerifiedKeyConfig(
            verified.key_config, verified.key_configs, verified.quote, verified.evidence, object()
        )
    with pytest.raises(UsageError):
        AttestedOhttpClient(verified.key_config)  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        OhttpGateway.generate(_echo, kems=("X448",))  # type: ignore[arg-type]
    verifier = GatewayVerifier(
        collateral_source=SimulatedCollateralSource(), policy=POLICY, roots=[simulated_root()]
    )
    assert AttestedOhttpClient.from_evidence(evidence, verifier).key_config == gateway.key_configs[0]


def test_gateway_answers_errors_inside_the_encryption(gateway: OhttpGateway) -> None:
    def broken(request: BhttpRequest) -> BhttpResponse:
        raise RuntimeError("application bug")

    def confused(request: BhttpRequest) -> BhttpResponse:
        return "not a response"  # type: ignore[return-value]

    for handler in (broken, confused):
        failing = OhttpGateway.generate(handler)
        pending = OhttpClient(failing.key_configs[0]).encapsulate_request(BhttpRequest("GET").to_bytes())
        response = BhttpResponse.from_bytes(pending[1].decapsulate_response(failing.handle(pending[0])))
        assert response.status == 500
        assert b"application bug" not in response.content
    message, context = OhttpClient(gateway.key_configs[0]).encapsulate_request(b"not binary http")
    assert BhttpResponse.from_bytes(context.decapsulate_response(gateway.handle(message))).status == 400
    tampered = bytearray(message)
    tampered[-1] ^= 1
    with pytest.raises(VerificationError):
        gateway.handle(bytes(tampered))
    with pytest.raises(BadDataError, match="unknown key id"):
        gateway.handle(b"\x07" + message[1:])
    with pytest.raises(BadDataError, match="size limit"):
        gateway.handle(bytes(gateway.max_message_size + 1))


# -- The example gateway enclave on loopback, behind relays ---------------------------------------------------


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"ohttp_gateway_example_{name}", EXAMPLE / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


EXAMPLE_HOST = _load("host")
EXAMPLE_CLIENT = _load("client")


@pytest.fixture(scope="module")
def bundle(home: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Bundle]:
    source = tmp_path_factory.mktemp("ohttp-gateway")
    shutil.copytree(
        EXAMPLE, source, dirs_exist_ok=True, ignore=shutil.ignore_patterns("build", "__pycache__")
    )
    signed = sign_bundle(source / "enklave.toml", generate_signing_key())
    path = source / "build" / "ohttp-gateway.enclave"
    write_bundle(signed, path)
    return path, signed


@pytest.fixture(scope="module")
def enclave(bundle: tuple[Path, Bundle], home: Path) -> Iterator[host.Enclave]:
    with host.load(bundle[0], mode="sim", home=home, timeout=30) as loaded:
        yield loaded


@pytest.fixture(scope="module")
def gateway_url(enclave: host.Enclave) -> Iterator[str]:
    with serving(EXAMPLE_HOST.create_app(enclave), "ohttp gateway") as url:
        yield url


@pytest.fixture(scope="module")
def relay_url(gateway_url: str) -> Iterator[str]:
    with serving(EXAMPLE_HOST.create_relay(gateway_url), "ohttp relay") as url:
        yield url


class MaliciousRelay:
    """A relay that forwards to the gateway, records every byte it sees, and applies the attack of the test."""

    def __init__(self, gateway_url: str) -> None:
        self._upstream = httpx.AsyncClient(base_url=gateway_url, timeout=30.0)
        self.seen: list[bytes] = []
        self.on_evidence: Callable[[bytes, str], bytes] | None = None
        self.on_request: Callable[[bytes], bytes] | None = None
        self.on_response: Callable[[bytes], bytes] | None = None

    def reset(self) -> None:
        self.seen.clear()
        self.on_evidence = self.on_request = self.on_response = None

    async def forward(self, request: Request) -> Response:
        body = await request.body()
        if request.method == "POST" and self.on_request is not None:
            body = self.on_request(body)
        headers = {"content-type": request.headers.get("content-type", "")}
        params = dict(request.query_params)
        answer = await self._upstream.request(
            request.method, request.url.path, params=params, content=body, headers=headers
        )
        content = answer.content
        if request.url.path.endswith("/evidence") and self.on_evidence is not None:
            content = self.on_evidence(content, params.get("nonce", ""))
        if request.method == "POST" and self.on_response is not None:
            content = self.on_response(content)
        self.seen += [body, content]
        media_type = answer.headers.get("content-type", "")
        return Response(content, status_code=answer.status_code, media_type=media_type)

    def app(self) -> Starlette:
        paths = ("/.well-known/ohttp-gateway/evidence", "/gateway")
        return Starlette(routes=[Route(p, self.forward, methods=["GET", "POST"]) for p in paths])


@pytest.fixture(scope="module")
def malicious(gateway_url: str) -> Iterator[tuple[MaliciousRelay, str]]:
    relay = MaliciousRelay(gateway_url)
    with serving(relay.app(), "malicious relay") as url:
        yield relay, url


@pytest.fixture
def attacker(malicious: tuple[MaliciousRelay, str]) -> MaliciousRelay:
    malicious[0].reset()
    return malicious[0]


@pytest.fixture(scope="module")
def verifier(bundle: tuple[Path, Bundle], home: Path) -> GatewayVerifier:
    verifier: GatewayVerifier = EXAMPLE_CLIENT.verifier_for("sim", bundle[1].mr_enclave)
    return verifier


def _client(url: str, verifier: GatewayVerifier, key_id: int = 1) -> Any:
    return EXAMPLE_CLIENT.GatewayClient(url, verifier, key_id=key_id)


def test_requests_through_the_relay_reach_only_the_enclave(
    malicious: tuple[MaliciousRelay, str], attacker: MaliciousRelay, relay_url: str, verifier: GatewayVerifier
) -> None:
    marker = b"plaintext-marker-4b1d"
    for url in (relay_url, malicious[1]):
        for key_id in (1, 2):
            with _client(url, verifier, key_id) as client:
                verified = client.attest()
                assert verified.key_config.key_id == key_id
                hello = client.send(BhttpRequest("GET", path="/hello"))
                assert hello.status == 200
                assert b"sim mode" in hello.content
                echo = client.send(BhttpRequest("POST", path="/echo", content=marker))
                assert (echo.status, echo.content) == (200, marker)
                assert client.send(BhttpRequest("GET", path="/nowhere")).status == 404
    # The host (the relay and the gateway's HTTP side see the same bytes) never saw the plaintext either way.
    assert attacker.seen
    assert not any(marker in seen or b"/echo" in seen for seen in attacker.seen)


def test_published_key_configurations(gateway_url: str) -> None:
    with httpx.Client(base_url=gateway_url) as http:
        keys = http.get("/.well-known/ohttp-gateway")
        plain = http.get("/.well-known/ohttp-gateway/evidence")
    assert keys.headers["content-type"] == OHTTP_KEYS_MEDIA_TYPE
    assert plain.headers["content-type"] == EVIDENCE_MEDIA_TYPE
    evidence = KeyConfigEvidence.from_bytes(plain.content)
    assert evidence.key_configs == keys.content
    assert [(c.key_id, c.kem_id) for c in evidence.configs] == [(1, 0x0020), (2, 0x0010)]
    assert evidence.nonce == b""


def test_relay_swapping_the_key_configuration_is_caught(
    malicious: tuple[MaliciousRelay, str], attacker: MaliciousRelay, verifier: GatewayVerifier
) -> None:
    own = OhttpGateway.generate(_echo)

    def swap(content: bytes, nonce: str) -> bytes:
        genuine = KeyConfigEvidence.from_bytes(content)
        return KeyConfigEvidence(own.encoded_key_configs, genuine.quote, genuine.nonce).to_bytes()

    attacker.on_evidence = swap
    with _client(malicious[1], verifier) as client, pytest.raises(BindingError):
        client.attest()


def test_relay_replaying_old_evidence_is_caught(
    malicious: tuple[MaliciousRelay, str], attacker: MaliciousRelay, verifier: GatewayVerifier
) -> None:
    recorded: list[bytes] = []

    def replay(content: bytes, nonce: str) -> bytes:
        recorded.append(content)
        return recorded[0]

    attacker.on_evidence = replay
    with _client(malicious[1], verifier) as client:
        client.attest()
        with pytest.raises(BindingError, match="another nonce"):
            client.attest()


def test_relay_answering_with_another_enclave_is_caught(
    malicious: tuple[MaliciousRelay, str], attacker: MaliciousRelay, verifier: GatewayVerifier, home: Path
) -> None:
    # An enclave of the attacker's: genuine (simulated) platform, valid quote and binding, but another MRENCLAVE.
    impostor = OhttpGateway.generate(_echo)
    platform = SimulatedPlatform.launch(IDENTITY)

    def impersonate(content: bytes, nonce: str) -> bytes:
        raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        return impostor.evidence(platform, raw).to_bytes()

    attacker.on_evidence = impersonate
    with _client(malicious[1], verifier) as client, pytest.raises(PolicyError) as info:
        client.attest()
    assert info.value.field == "mr_enclave"


def test_tampered_and_replayed_responses_are_caught(
    malicious: tuple[MaliciousRelay, str], attacker: MaliciousRelay, verifier: GatewayVerifier
) -> None:
    with _client(malicious[1], verifier) as client:
        client.attest()
        attacker.on_response = lambda content: content[:-1] + bytes([content[-1] ^ 1])
        with pytest.raises(VerificationError):
            client.send(BhttpRequest("GET", path="/hello"))
        recorded: list[bytes] = []

        def replay(content: bytes) -> bytes:
            recorded.append(content)
            return recorded[0]

        attacker.on_response = replay
        assert client.send(BhttpRequest("POST", path="/echo", content=b"first")).content == b"first"
        with pytest.raises(VerificationError):
            client.send(BhttpRequest("POST", path="/echo", content=b"second"))


def test_tampered_request_is_a_400_and_the_enclave_keeps_serving(
    malicious: tuple[MaliciousRelay, str], attacker: MaliciousRelay, verifier: GatewayVerifier
) -> None:
    with _client(malicious[1], verifier) as client:
        client.attest()
        attacker.on_request = lambda body: body[:-1] + bytes([body[-1] ^ 1])
        with pytest.raises(TransportError, match="HTTP 400"):
            client.send(BhttpRequest("GET", path="/hello"))
        attacker.on_request = None
        assert client.send(BhttpRequest("GET", path="/hello")).status == 200


def test_bad_http_input_gets_json_4xx(gateway_url: str) -> None:
    ohttp = {"content-type": OHTTP_REQUEST_MEDIA_TYPE}
    with httpx.Client(base_url=gateway_url, timeout=30) as http:
        cases = [
            (http.post("/gateway", content=bytes((1 << 20) + 1), headers=ohttp), 413),
            # No content-length: the host stops reading at the limit.
            (http.post("/gateway", content=iter([bytes(1 << 19)] * 3), headers=ohttp), 413),
            (http.post("/gateway", content=b"\x01\x00", headers=ohttp), 400),
            (http.post("/gateway", content=b"", headers=ohttp), 400),
            (http.post("/gateway", content=b"x", headers={"content-type": "text/plain"}), 415),
            (http.get("/.well-known/ohttp-gateway/evidence", params={"nonce": "not base64!"}), 400),
            (http.get("/.well-known/ohttp-gateway/evidence", params={"nonce": "A" * 90}), 400),
            (http.get("/.well-known/ohttp-gateway/evidence", params={"nonce": ""}), 400),
            (http.get("/gateway"), 405),
            (http.get("/elsewhere"), 404),
        ]
        for answer, status in cases:
            assert answer.status_code == status, answer.text
            assert set(answer.json()["error"]) == {"code", "message"}
        # After all that, the enclave still answers.
        fine = http.get("/.well-known/ohttp-gateway/evidence", params={"nonce": "AAAA"})
        assert fine.status_code == 200
        assert KeyConfigEvidence.from_bytes(fine.content).nonce == bytes(3)


PROOF_CLIENT = """\
import json, os, sys
sys.path.insert(0, sys.argv[3])
import httpx
from client import GatewayClient, verifier_for
from enklave.channels.ohttp_attested import AttestedOhttpClient, BhttpRequest

marker = os.urandom(32)
with GatewayClient(sys.argv[1], verifier_for("sim", bytes.fromhex(sys.argv[2]))) as client:
    verified = client.attest()
sent = AttestedOhttpClient(verified).encapsulate(BhttpRequest("POST", path="/echo", content=marker))
with httpx.Client(base_url=sys.argv[1]) as http:
    answer = http.post("/gateway", content=sent.message, headers={"content-type": "message/ohttp-req"})
    if sent.open(answer.content).content != marker:
        sys.exit("the echo differs from the request")
print("ready", flush=True)
sys.stdin.readline()
print(json.dumps({"marker": marker.hex(), "sent": sent.message[-32:].hex(), "received": answer.content[-32:].hex()}),
      flush=True)
"""


def test_the_host_process_never_holds_the_plaintext(
    relay_url: str, bundle: tuple[Path, Bundle], tmp_path: Path
) -> None:
    script = tmp_path / "proof_client.py"
    script.write_text(PROOF_CLIENT)
    # The client runs in its own process, so this one is only the host (gateway HTTP side and relay).
    command = [sys.executable, str(script), relay_url, bundle[1].mr_enclave.hex(), str(EXAMPLE)]
    client = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    watchdog = threading.Timer(60, client.kill)
    watchdog.start()
    try:
        assert client.stdin is not None and client.stdout is not None and client.stderr is not None
        # 1. The request went through and the client waits; snapshot before this process learns the marker.
        assert client.stdout.readline() == b"ready\n", client.stderr.read().decode()
        assert snapshot_memory(tmp_path / "memory") > 1 << 20
        # 2. Learn what to look for, then search the snapshot.
        client.stdin.write(b"go\n")
        client.stdin.flush()
        facts = json.loads(client.stdout.readline())
        marker = bytes.fromhex(facts["marker"])
        secrets = {"marker": marker, "marker hex": marker.hex().encode()}
        # Control: the same scan finds what the host did hold, the encapsulated bytes it relayed each way.
        relayed = {"request": bytes.fromhex(facts["sent"]), "response": bytes.fromhex(facts["received"])}
        found = found_in_snapshot(tmp_path / "memory", {**secrets, **relayed})
        assert found & set(secrets) == set()
        assert found >= set(relayed)
    finally:
        watchdog.cancel()
        if client.poll() is None:
            client.kill()
        client.wait()


def test_the_demo_runs_as_the_readme_says(
    capfd: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENKLAVE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ENKLAVE_MODE", "sim")
    app = tmp_path / "ohttp_gateway"
    shutil.copytree(EXAMPLE, app, ignore=shutil.ignore_patterns("build", "__pycache__"))
    code = main(["run", str(app), "--", "--demo"])
    out, err = capfd.readouterr()
    assert code == EXIT_OK, out + err
    assert "attested: key id 1 is in enclave" in out
    assert "GET /hello -> 200: Hello from the OHTTP gateway enclave (sim mode)" in out
    assert "POST /echo -> 200: only the enclave reads this" in out
    readme = (EXAMPLE / "README.md").read_text()
    for name in ("enklave.toml", "enclave.py", "host.py", "client.py"):
        assert f"`{name}`" in readme
    assert "enklave run examples/ohttp_gateway -- --demo" in readme
