"""The boundary's building blocks without processes: type specs from signatures, checks, and framing."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from typing import Annotated, Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enklave.errors import BoundaryError, UsageError
from enklave.runtime._types import FunctionSpec, MaxSize, TypeSpec, spec_of_function
from enklave.runtime._wire import Channel, ChannelClosed, Kind


def _declared(
    data: Annotated[bytes, MaxSize(8)],
    count: int,
    ratio: float,
    flag: bool,
    names: list[str],
    table: dict[str, list[int]],
    note: str | None,
) -> None: ...


def test_signatures_become_specs() -> None:
    spec = spec_of_function(_declared)
    assert spec.describe() == (
        "_declared(data: bytes (max 8), count: int, ratio: float, flag: bool, names: list[str], "
        "table: dict[str, list[int]], note: str | None) -> None"
    )
    assert FunctionSpec.from_wire(spec.name, spec.to_wire()) == spec


def _any(value: Any) -> None: ...
def _unannotated(value) -> None: ...  # type: ignore[no-untyped-def]
def _no_return(value: int): ...  # type: ignore[no-untyped-def]
def _keyword_only(*, value: int) -> None: ...
def _object(value: object) -> None: ...
def _limit_on_int(value: Annotated[int, MaxSize(3)]) -> None: ...


@pytest.mark.parametrize(
    ("function", "message"),
    [
        (_any, "cannot cross the enclave boundary"),
        (_object, "cannot cross the enclave boundary"),
        (_unannotated, "has no type annotation"),
        (_no_return, "return type must be annotated"),
        (_keyword_only, "must be positional"),
        (_limit_on_int, "MaxSize applies to bytes, str, list and dict"),
    ],
)
def test_interfaces_that_cannot_cross_are_refused_when_declared(function: Any, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        spec_of_function(function)


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (b"12345678", True),
        (b"123456789", False),
        ("text", False),
        (bytearray(b"x"), False),
        (None, False),
    ],
)
def test_bytes_checks_are_exact(value: object, ok: bool) -> None:
    spec = TypeSpec("bytes", 8)
    if ok:
        assert spec.check(value, "arg") == value
    else:
        with pytest.raises(BoundaryError, match="arg"):
            spec.check(value, "arg")


def test_scalar_checks_refuse_look_alikes() -> None:
    assert TypeSpec("float").check(3, "x") == 3.0
    for kind, value in [
        ("int", True),
        ("int", 1.0),
        ("int", 1 << 64),
        ("bool", 1),
        ("str", b"s"),
        ("none", 0),
    ]:
        with pytest.raises(BoundaryError):
            TypeSpec(kind).check(value, "x")


def test_error_messages_name_the_type_never_the_value() -> None:
    with pytest.raises(BoundaryError) as caught:
        TypeSpec("bytes").check("secret-password", "login(password)")
    assert "secret-password" not in str(caught.value)
    assert "login(password)" in str(caught.value)


def test_containers_are_checked_element_by_element() -> None:
    spec = spec_of_function(_declared).params[5][1]
    assert spec.check({"a": [1, 2]}, "t") == {"a": [1, 2]}
    with pytest.raises(BoundaryError, match=r"t\['a'\]\[1\]: expected int"):
        spec.check({"a": [1, "2"]}, "t")
    with pytest.raises(BoundaryError, match="keys must be strings"):
        spec.check({1: []}, "t")


@pytest.mark.parametrize("wire", [None, {"kind": "class"}, {"kind": "list"}, {"kind": "bytes", "limit": -1},
                                  {"kind": "bytes", "item": {"kind": "int"}}])  # fmt: skip
def test_malformed_interface_descriptions_are_refused(wire: object) -> None:
    with pytest.raises(BoundaryError):
        TypeSpec.from_wire(wire)


@pytest.fixture
def pair() -> Iterator[tuple[Channel, socket.socket]]:
    ours, theirs = socket.socketpair()
    yield Channel(ours, 1024), theirs
    ours.close()
    theirs.close()


def _frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def test_frames_round_trip(pair: tuple[Channel, socket.socket]) -> None:
    channel, peer = pair
    other = Channel(peer, 1024)
    channel.send([Kind.CALL, "f", [b"x", 1]])
    assert other.receive() == [Kind.CALL, "f", [b"x", 1]]


def test_a_frame_split_across_reads_and_a_timeout_loses_nothing(pair: tuple[Channel, socket.socket]) -> None:
    channel, peer = pair
    frame = _frame(cbor2.dumps([1, b"payload"]))
    peer.sendall(frame[:6])
    channel.sock.settimeout(0.05)
    with pytest.raises(TimeoutError):
        channel.receive()
    peer.sendall(frame[6:])
    assert channel.receive() == [1, b"payload"]


def test_frame_ready_says_when_receive_would_not_wait(pair: tuple[Channel, socket.socket]) -> None:
    channel, peer = pair
    frame = _frame(cbor2.dumps([1, b"answer"]))
    assert channel.frame_ready(1024) is False  # nothing yet: wait for readability
    peer.sendall(frame[:2])
    assert channel.frame_ready(1024) is None  # a partial header: a blocking receive finishes it
    peer.sendall(frame[2:6])
    assert channel.frame_ready(1024) is None  # a header without its whole payload: the same
    peer.sendall(frame[6:])
    assert channel.frame_ready(len(frame) - 1) is None  # whole, but larger than the caller takes inline
    assert channel.frame_ready(len(frame)) is True
    assert channel.frame_ready(len(frame)) is True  # it consumed nothing
    assert channel.receive() == [1, b"answer"]
    assert channel.frame_ready(1024) is False
    peer.close()
    assert channel.frame_ready(1024) is None  # the peer closed: receive() reports it


def test_oversized_frames_are_skipped_and_the_stream_stays_in_step(
    pair: tuple[Channel, socket.socket],
) -> None:
    channel, peer = pair
    peer.sendall(_frame(bytes(5000)) + _frame(cbor2.dumps([1, "next"])))
    with pytest.raises(BoundaryError, match="exceeds the channel limit of 1024"):
        channel.receive()
    assert channel.receive() == [1, "next"]


def test_sending_more_than_the_limit_is_refused(pair: tuple[Channel, socket.socket]) -> None:
    channel, _ = pair
    with pytest.raises(BoundaryError, match="exceeds the channel limit"):
        channel.send([Kind.RETURN, bytes(2000)])


def test_end_of_stream_is_channel_closed(pair: tuple[Channel, socket.socket]) -> None:
    channel, peer = pair
    peer.sendall(b"\x00\x00")
    peer.close()
    with pytest.raises(ChannelClosed):
        channel.receive()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_any_payload_decodes_or_raises_boundary_error(payload: bytes) -> None:
    ours, theirs = socket.socketpair()
    try:
        theirs.sendall(_frame(payload))
        try:
            message = Channel(ours, 1024).receive()
        except BoundaryError:
            return
        assert type(message) is list and message[0] in set(Kind)
    finally:
        ours.close()
        theirs.close()


LARGE_MESSAGES = [
    [Kind.CALL, "sink", [bytes(range(256)) * 4096]],
    [Kind.CALL, "mixed", [b"a" * 300_000, 7, -3, "text", None, True, False, [b"b" * 70_000, "x"]]],
    # Items the streaming reader hands to cbor2: a map, a float, nesting deeper than two arrays, a tag.
    [Kind.CALL, "fallback", [b"c" * 300_000, {"k": [1, 2]}, 1.5, [[[b"deep"]]], b"d" * 100_000]],
    [Kind.RETURN, "é" * 200_000],
]


@pytest.mark.parametrize("message", LARGE_MESSAGES, ids=["bytes", "mixed", "fallback", "text"])
def test_large_frames_round_trip_through_the_streaming_reader(message: list[object]) -> None:
    ours, theirs = socket.socketpair()
    try:
        sender, receiver = Channel(theirs, 8 << 20), Channel(ours, 8 << 20)
        writer = threading.Thread(target=sender.send, args=(message,))
        writer.start()
        received = receiver.receive()
        writer.join()
        assert received == message
        assert received == cbor2.loads(cbor2.dumps(message))
        # The channel is in step afterwards: a small frame follows.
        sender.send([Kind.RETURN, 1])
        assert receiver.receive() == [Kind.RETURN, 1]
    finally:
        ours.close()
        theirs.close()


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_mutated_large_frames_raise_only_boundary_errors(data: st.DataObject) -> None:
    payload = bytearray(cbor2.dumps(LARGE_MESSAGES[data.draw(st.integers(0, 3))]))
    # Mutate the structure (the first bytes hold every head but the data's) and maybe cut the end.
    for _ in range(data.draw(st.integers(1, 4))):
        payload[data.draw(st.integers(0, 40))] = data.draw(st.integers(0, 255))
    payload = payload[: data.draw(st.integers(len(payload) - 50, len(payload)))]
    ours, theirs = socket.socketpair()
    try:

        def write() -> None:
            theirs.sendall(_frame(bytes(payload)))
            theirs.shutdown(socket.SHUT_WR)  # A cut frame then ends the stream instead of waiting for more.

        writer = threading.Thread(target=write)
        writer.start()
        try:
            message = Channel(ours, 8 << 20).receive()
        except (BoundaryError, ChannelClosed):
            pass
        else:
            assert type(message) is list and message[0] in set(Kind)
        writer.join()
    finally:
        ours.close()
        theirs.close()


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        # Shared references (tags 28/29) would let a few bytes expand into huge nested lists.
        (cbor2.dumps([0, "f", [[1, 2]] * 50], value_sharing=True), "CBOR tags are not accepted"),
        (cbor2.dumps([0, "f", [cbor2.CBORTag(35, "a+")]]), "CBOR tags are not accepted"),
        (b"\x9f\x00\xff", "indefinite lengths"),
        (cbor2.dumps([1, 2]) + b"\x00", "trailing bytes"),
        (b"\x82\x01\x5a\xff\xff\xff\xff", "truncated"),
        (b"\x9b" + (1 << 40).to_bytes(8, "big"), "truncated"),
        (b"\xa2\x61a\x01\x61a\x02", "duplicate map key"),
        (b"\x81" * 40 + b"\x00", "nesting deeper"),
        (b"\x82\x01\xf7", "unsupported simple value"),
    ],
)
def test_the_decoder_accepts_only_the_boundary_subset(
    pair: tuple[Channel, socket.socket], payload: bytes, message: str
) -> None:
    channel, peer = pair
    channel._max_frame = 1 << 20
    peer.sendall(_frame(payload))
    with pytest.raises(BoundaryError, match=message):
        channel.receive()
    # The stream stays in step after a malformed frame.
    peer.sendall(_frame(cbor2.dumps([1, "after"])))
    assert channel.receive() == [1, "after"]


def test_a_malformed_large_frame_is_skipped_whole() -> None:
    ours, theirs = socket.socketpair()
    try:
        bad = b"\x83\x00\x64sink\x81\xd8\x1c" + bytes(400_000)  # a tag inside a large CALL frame
        writer = threading.Thread(target=theirs.sendall, args=(_frame(bad) + _frame(cbor2.dumps([1, "ok"])),))
        writer.start()
        channel = Channel(ours, 1 << 20)
        with pytest.raises(BoundaryError, match="CBOR tags"):
            channel.receive()
        assert channel.receive() == [1, "ok"]
        writer.join()
    finally:
        ours.close()
        theirs.close()


_BOUNDARY_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 63), (1 << 64) - 1) | st.floats(allow_nan=False)
    | st.binary(max_size=40) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=5), children, max_size=5),
    max_leaves=25,
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(_BOUNDARY_VALUES)
def test_both_decoders_agree_with_cbor2_on_the_subset(value: object) -> None:
    from enklave.runtime._cbor import SocketReader, decode, parse

    payload = cbor2.dumps([1, value])
    assert decode(payload) == cbor2.loads(payload)
    ours, theirs = socket.socketpair()
    try:
        theirs.sendall(payload)
        assert parse(SocketReader(ours, len(payload))) == cbor2.loads(payload)
    finally:
        ours.close()
        theirs.close()


def test_a_timeout_while_skipping_an_oversized_frame_keeps_the_place(
    pair: tuple[Channel, socket.socket],
) -> None:
    channel, peer = pair
    peer.sendall(struct.pack(">I", 5000) + bytes(100))
    channel.sock.settimeout(0.05)
    with pytest.raises(TimeoutError):
        channel.receive()
    peer.sendall(bytes(4900) + _frame(cbor2.dumps([1, "after the skipped frame"])))
    channel.sock.settimeout(None)
    assert channel.receive() == [1, "after the skipped frame"]
