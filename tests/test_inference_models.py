"""Models in the inference enclave: the encrypted container, the runner (ONNX Runtime, checks, dynamic batching)
and the repository (limits, versions, SHA-256)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import struct
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from enklave import _b64url
from enklave.errors import BadDataError, BoundaryError, UsageError, VerificationError
from enklave.inference._batching import Batcher, Job
from enklave.inference._vault import ModelVault
from enklave.inference.model_format import (
    MAGIC,
    MAX_HEADER_SIZE,
    MAX_WRAPPED_KEY_SIZE,
    NONCE_SIZE,
    ModelHeader,
    decrypt_model,
    encrypt_model,
    is_valid_key_id,
    is_valid_name,
    is_valid_version,
    is_valid_wrapped_key,
    read_header,
)
from enklave.inference.repository import ModelInfo, ModelRepository
from enklave.inference.runner import ModelRunner, RunnerStats, TensorSpec
from enklave.services.kbs.wrapping import unwrap_released_key, wrap_released_key
from onnx_models import model_bytes

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
RESNET_INPUT = "gpu_0/data_0"
RESNET_OUTPUT = "gpu_0/softmax_1"


# -- models built for the tests ------------------------------------------------------------------------------------


def _model(
    nodes: list[Any], inputs: list[Any], outputs: list[Any], initializers: Sequence[Any] = ()
) -> bytes:
    return model_bytes(helper.make_graph(nodes, "test", inputs, outputs, list(initializers)))


W1 = np.linspace(-1.0, 1.0, 4 * 8, dtype=np.float32).reshape(4, 8)
B1 = np.linspace(0.5, -0.5, 8, dtype=np.float32)
W2 = np.linspace(1.0, -1.0, 8 * 3, dtype=np.float32).reshape(8, 3)


def mlp(batch: str | int = "N") -> bytes:
    """x [batch, 4] -> relu(x @ W1 + B1) @ W2 = y [batch, 3], and the hidden layer h [batch, 8]."""
    return _model(
        [
            helper.make_node("MatMul", ["x", "W1"], ["xw"]),
            helper.make_node("Add", ["xw", "B1"], ["pre"]),
            helper.make_node("Relu", ["pre"], ["h"]),
            helper.make_node("MatMul", ["h", "W2"], ["y"]),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3]),
            helper.make_tensor_value_info("h", TensorProto.FLOAT, [batch, 8]),
        ],
        [
            numpy_helper.from_array(W1, "W1"),
            numpy_helper.from_array(B1, "B1"),
            numpy_helper.from_array(W2, "W2"),
        ],
    )


def mlp_reference(x: np.ndarray) -> np.ndarray:
    return np.maximum(x @ W1 + B1, 0) @ W2


def gather_model() -> bytes:
    """y[i] = x[i, idx[i]]: an index out of range fails inside ONNX Runtime, after the runner's checks."""
    return _model(
        [helper.make_node("GatherElements", ["x", "idx"], ["y"], axis=1)],
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4]),
            helper.make_tensor_value_info("idx", TensorProto.INT64, ["N", 1]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])],
    )


def strings_model() -> bytes:
    return _model(
        [helper.make_node("Identity", ["s"], ["t"])],
        [helper.make_tensor_value_info("s", TensorProto.STRING, ["N"])],
        [helper.make_tensor_value_info("t", TensorProto.STRING, ["N"])],
    )


def resnet_input() -> np.ndarray:
    # The input that onnx's backend test runner feeds the "light" models (generate_dummy_data, random=False): its
    # output is the reference output the package ships.
    shape = (1, 3, 224, 224)
    count = int(np.prod(shape))
    return (np.arange(count).reshape(shape) / count).astype(np.float32)


@pytest.fixture(scope="module")
def resnet_bytes() -> bytes:
    return (LIGHT / "light_resnet50.onnx").read_bytes()


@pytest.fixture(scope="module")
def resnet(resnet_bytes: bytes) -> ModelRunner:
    return ModelRunner(resnet_bytes, intra_op_threads=2)


# -- the container ---------------------------------------------------------------------------------------------


def test_container_round_trip_and_header() -> None:
    model = mlp()
    blob = encrypt_model(model, KEY, name="mlp", version=3)
    header = read_header(blob)
    assert header == ModelHeader(name="mlp", version="3", key_id="owner", size=len(model))
    assert header.kbs_key is None
    assert blob.startswith(MAGIC)
    (length,) = struct.unpack_from(">I", blob, 8)
    assert blob[12 : 12 + length] == b'{"key_id":"owner","name":"mlp","size":%d,"version":"3"}' % len(model)
    assert len(blob) == 12 + length + NONCE_SIZE + len(model) + 16
    assert decrypt_model(blob, KEY) == (header, model)
    # A fresh nonce each time: the same model encrypts differently.
    assert encrypt_model(model, KEY, name="mlp", version="3") != blob


def test_container_kbs_key_id_and_empty_model() -> None:
    blob = encrypt_model(b"", KEY, name="m.v2_x-1", version="12", key_id="kbs:model-key-1")
    header, model = decrypt_model(blob, KEY)
    assert model == b""
    assert header.kbs_key == "model-key-1"
    assert header.key_id == "kbs:model-key-1"


def test_wrong_key_is_a_verification_error() -> None:
    blob = encrypt_model(b"model bytes", KEY, name="m", version="1")
    with pytest.raises(VerificationError, match="wrong key or tampered"):
        decrypt_model(blob, OTHER_KEY)


def test_every_changed_byte_is_refused() -> None:
    blob = encrypt_model(b"a small model", KEY, name="m", version="1")
    nonce_at = len(blob) - len(b"a small model") - 16 - NONCE_SIZE
    for offset in range(len(blob)):
        tampered = bytearray(blob)
        tampered[offset] ^= 0x01
        # A changed header byte may fail to parse or parse into another header; either way the container must not
        # open. A changed nonce, ciphertext or tag byte parses and fails authentication.
        expected = BadDataError if offset < nonce_at else VerificationError
        with pytest.raises(expected):
            decrypt_model(bytes(tampered), KEY)


def test_truncated_and_trailing_bytes_are_refused_before_decryption() -> None:
    blob = encrypt_model(b"x" * 100, KEY, name="m", version="1")
    for cut in (0, 5, 11, 40, len(blob) - 1):
        with pytest.raises(BadDataError, match=r"truncated|magic"):
            read_header(blob[:cut])
    with pytest.raises(BadDataError, match="trailing bytes"):
        read_header(blob + b"\x00")


def test_a_header_nested_too_deeply_is_bad_data() -> None:
    header = b"[" * 4000
    blob = MAGIC + struct.pack(">I", len(header)) + header + bytes(28)
    with pytest.raises(BadDataError, match="not ASCII JSON"):
        read_header(blob)


def test_declared_size_is_checked_against_the_limit_first() -> None:
    blob = encrypt_model(b"x" * 100, KEY, name="m", version="1")
    assert read_header(blob, max_model_bytes=100).size == 100
    with pytest.raises(BadDataError, match="exceeds the limit of 99"):
        read_header(blob, max_model_bytes=99)
    with pytest.raises(BadDataError, match="exceeds the limit"):
        decrypt_model(blob, KEY, max_model_bytes=99)


def _container(header: bytes, model: bytes = b"m", key: bytes = KEY) -> bytes:
    # A container written by hand, correctly encrypted over whatever header it carries.
    associated = MAGIC + struct.pack(">I", len(header)) + header
    nonce = bytes(NONCE_SIZE)
    return associated + nonce + AESGCM(key).encrypt(nonce, model, associated)


@pytest.mark.parametrize(
    "header",
    [
        b'{"key_id": "owner", "name": "m", "size": 1, "version": "1"}',  # not canonical: spaces
        b'{"name":"m","key_id":"owner","size":1,"version":"1"}',  # not canonical: key order
        b'{"key_id":"owner","name":"m","size":1,"version":"1","x":1}',  # an extra field
        b'{"key_id":"owner","name":"m","size":1}',  # a missing field
        b'{"key_id":"owner","name":"m","size":1,"version":1}',  # version is not a string
        b'{"key_id":"owner","name":"m","size":1,"version":"01"}',  # leading zero
        b'{"key_id":"owner","name":"m","size":1,"version":"0"}',
        b'{"key_id":"owner","name":"m","size":true,"version":"1"}',
        b'{"key_id":"owner","name":"m","size":1.0,"version":"1"}',
        b'{"key_id":"owner","name":"..","size":1,"version":"1"}',
        b'{"key_id":"owner","name":"a/b","size":1,"version":"1"}',
        b'{"key_id":"kbs:","name":"m","size":1,"version":"1"}',
        b'{"key_id":"kbs:a_b","name":"m","size":1,"version":"1"}',
        b'{"key_id":"other","name":"m","size":1,"version":"1"}',
        b'{"key_id":"owner","key_id":"owner","name":"m","size":1,"version":"1"}',  # a duplicated key
        b'["key_id","name","size","version"]',
        b"\xff",
        b"",
    ],
)
def test_malformed_headers_are_refused(header: bytes) -> None:
    with pytest.raises(BadDataError) as caught:
        read_header(_container(header))
    assert type(caught.value) is BadDataError


def test_a_canonical_hand_written_container_opens() -> None:
    # The check above is not refusing everything: the canonical header written by hand opens.
    blob = _container(b'{"key_id":"owner","name":"m","size":1,"version":"1"}')
    assert decrypt_model(blob, KEY)[1] == b"m"


@given(st.binary(max_size=300))
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_fuzzed_containers_raise_only_bad_data(data: bytes) -> None:
    for candidate in (data, MAGIC + data, MAGIC + struct.pack(">I", len(data)) + data):
        with contextlib.suppress(BadDataError):
            decrypt_model(candidate, KEY)


_FIELD_VALUES = st.one_of(
    st.text(max_size=70), st.integers(-5, 1 << 40), st.booleans(), st.none(), st.floats(allow_nan=False),
    st.sampled_from(["owner", "kbs:k-1", "1", "m", "kbs:"]),
)  # fmt: skip


@given(st.dictionaries(st.sampled_from(["name", "version", "key_id", "size", "other"]), _FIELD_VALUES))
@settings(max_examples=300)
def test_fuzzed_headers_parse_canonically_or_raise_bad_data(fields: dict[str, Any]) -> None:
    raw = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
    # A model of the declared size when it is small, so that well-formed headers also pass the length check.
    size = fields.get("size")
    model = b"m" * size if type(size) is int and 0 <= size < 64 else b"m"
    try:
        header = read_header(_container(raw, model))
    except BadDataError:
        return
    assert header.to_bytes() == raw


def test_encrypt_refuses_bad_arguments() -> None:
    with pytest.raises(UsageError, match="32 bytes"):
        encrypt_model(b"m", KEY[:16], name="m", version="1")
    with pytest.raises(UsageError, match="32 bytes"):
        decrypt_model(encrypt_model(b"m", KEY, name="m", version="1"), KEY + b"x")
    for name in ("", "-m", ".", "..", "a/b", "x" * 65, "é"):
        with pytest.raises(UsageError, match="model name"):
            encrypt_model(b"m", KEY, name=name, version="1")
    for version in ("0", "01", "-1", "1.0", "x", True, 0, "1" * 19):
        with pytest.raises(UsageError, match="model version"):
            encrypt_model(b"m", KEY, name="m", version=version)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="key id"):
        encrypt_model(b"m", KEY, name="m", version="1", key_id="kbs:")


def test_name_version_and_key_id_predicates() -> None:
    assert is_valid_name("resnet50") and is_valid_name("a" * 64) and not is_valid_name("a" * 65)
    assert not is_valid_name(None) and not is_valid_name("_x")
    assert is_valid_version("1") and is_valid_version("9" * 18) and not is_valid_version("1 ")
    assert is_valid_key_id("owner") and is_valid_key_id("kbs:" + "k" * 127)
    assert not is_valid_key_id("kbs:" + "k" * 128) and not is_valid_key_id("Owner")


# -- envelope keys: the model key wrapped in the header -------------------------------------------------------------


def _int(value: int) -> str:
    return _b64url.encode(value.to_bytes((value.bit_length() + 7) // 8, "big"))


def _jwks(kind: str) -> tuple[dict[str, str], dict[str, str]]:
    """A key broker-like envelope key pair as (public JWK, private JWK)."""
    if kind == "RSA":
        private = rsa.generate_private_key(public_exponent=65537, key_size=3072)
        numbers = private.private_numbers()
        public = {"kty": "RSA", "n": _int(numbers.public_numbers.n), "e": _int(numbers.public_numbers.e)}
        return public, {
            **public, "d": _int(numbers.d), "p": _int(numbers.p), "q": _int(numbers.q), "dp": _int(numbers.dmp1),
            "dq": _int(numbers.dmq1), "qi": _int(numbers.iqmp),
        }  # fmt: skip
    ec_private = ec.generate_private_key(ec.SECP256R1())
    point = ec_private.public_key().public_numbers()
    public = {"kty": "EC", "crv": "P-256", "x": _b64url.encode(point.x.to_bytes(32, "big")),
              "y": _b64url.encode(point.y.to_bytes(32, "big"))}  # fmt: skip
    return public, {
        **public,
        "d": _b64url.encode(ec_private.private_numbers().private_value.to_bytes(32, "big")),
    }


@pytest.fixture(scope="module", params=["RSA", "EC"])
def envelope(request: pytest.FixtureRequest) -> tuple[dict[str, str], dict[str, str]]:
    return _jwks(request.param)


def _swap_header(blob: bytes, header: bytes) -> bytes:
    """The same nonce, ciphertext and tag behind another header."""
    (length,) = struct.unpack_from(">I", blob, 8)
    return MAGIC + struct.pack(">I", len(header)) + header + blob[12 + length :]


def test_an_envelope_container_carries_its_wrapped_key_and_opens_with_the_unwrapped_one(
    envelope: tuple[dict[str, str], dict[str, str]],
) -> None:
    public, private = envelope
    model = mlp()
    wrapped = wrap_released_key(KEY, public)
    blob = encrypt_model(model, KEY, name="mlp", version=2, key_id="kbs:envelope-1", wrapped_key=wrapped)
    header = read_header(blob)
    assert header.wrapped_key == wrapped and header.kbs_key == header.envelope_key == "envelope-1"
    (length,) = struct.unpack_from(">I", blob, 8)
    assert length <= MAX_HEADER_SIZE
    assert blob[12 : 12 + length] == (
        b'{"key_id":"kbs:envelope-1","name":"mlp","size":%d,"version":"2","wrapped_key":"%s"}'
        % (len(model), wrapped.encode())
    )
    # Whoever holds the envelope key's private half gets the model key, and with it the model.
    assert decrypt_model(blob, unwrap_released_key(header.wrapped_key, private)) == (header, model)
    # An old-style KBS container (no wrapped key) has no envelope key.
    assert read_header(encrypt_model(model, KEY, name="m", version=1, key_id="kbs:k")).envelope_key is None


def test_a_replaced_or_changed_wrapped_key_does_not_open(
    envelope: tuple[dict[str, str], dict[str, str]],
) -> None:
    public, private = envelope
    blob = encrypt_model(
        b"model", KEY, name="m", version=1, key_id="kbs:e", wrapped_key=wrap_released_key(KEY, public)
    )
    header = read_header(blob)
    # Another wrapping of the very same model key (wrapping is randomized): the header is associated data, so the
    # container does not decrypt even though the key it would unwrap to is right.
    rewrapped = ModelHeader(
        header.name, header.version, header.key_id, header.size, wrap_released_key(KEY, public)
    )
    swapped = _swap_header(blob, rewrapped.to_bytes())
    assert unwrap_released_key(read_header(swapped).wrapped_key or "", private) == KEY
    with pytest.raises(VerificationError, match="wrong key or tampered"):
        decrypt_model(swapped, KEY)
    # Dropping the wrapped key (an old-style header for the same container) fails too.
    plain = ModelHeader(header.name, header.version, header.key_id, header.size)
    with pytest.raises(VerificationError):
        decrypt_model(_swap_header(blob, plain.to_bytes()), KEY)
    # A changed character of the wrapped key: it no longer unwraps, and the container does not decrypt either.
    text = header.wrapped_key or ""
    at = len(text) // 2
    changed = text[:at] + ("A" if text[at] != "A" else "B") + text[at + 1 :]
    tampered = _swap_header(blob, ModelHeader(header.name, header.version, header.key_id, header.size,
                                               changed).to_bytes())  # fmt: skip
    with pytest.raises((VerificationError, BadDataError)):
        unwrap_released_key(changed, private)
    with pytest.raises(VerificationError):
        decrypt_model(tampered, KEY)


def test_the_header_limit_holds_the_largest_wrapped_key_with_the_longest_fields() -> None:
    longest = ModelHeader(
        name="n" * 64, version="9" * 18, key_id="kbs:" + "k" * 127, size=(1 << 31) - 17,
        wrapped_key="hpke." + "A" * (MAX_WRAPPED_KEY_SIZE - 5),
    )  # fmt: skip
    assert len(longest.to_bytes()) <= MAX_HEADER_SIZE
    # The same fields for a one-byte model: a container with that header parses and opens.
    raw = ModelHeader(longest.name, longest.version, longest.key_id, 1, longest.wrapped_key).to_bytes()
    assert decrypt_model(_container(raw), KEY)[0].wrapped_key == longest.wrapped_key
    with pytest.raises(UsageError, match="wrapped model key"):
        ModelHeader("m", "1", "kbs:k", 1, "hpke." + "A" * MAX_WRAPPED_KEY_SIZE)


@pytest.mark.parametrize(
    "header",
    [
        b'{"key_id":"owner","name":"m","size":1,"version":"1","wrapped_key":"hpke.AAAA"}',  # not a kbs key id
        b'{"key_id":"kbs:k","name":"m","size":1,"version":"1","wrapped_key":null}',
        b'{"key_id":"kbs:k","name":"m","size":1,"version":"1","wrapped_key":""}',
        b'{"key_id":"kbs:k","name":"m","size":1,"version":"1","wrapped_key":1}',
        b'{"key_id":"kbs:k","name":"m","size":1,"version":"1","wrapped_key":"hpke."}',
        b'{"key_id":"kbs:k","name":"m","size":1,"version":"1","wrapped_key":"a.b.c.d"}',  # four JWE parts
        b'{"key_id":"kbs:k","name":"m","size":1,"version":"1","wrapped_key":"a.b.c.d.e.f"}',
        b'{"key_id":"kbs:k","name":"m","size":1,"version":"1","wrapped_key":"hpke.A+B/"}',
        b'{"key_id":"kbs:k","name":"m","size":1,"version":"1","wrapped_key":"hpke.\\u0041"}',
        b'{"key_id":"kbs:k","name":"m","size":1,"version":"1","wrapped_key":"hpke.AA","x":1}',
        b'{"key_id":"kbs:k","name":"m","size":1,"version":"1","wrapped_key":"hpke.%s"}' % (b"A" * 3100),
    ],
)
def test_malformed_wrapped_keys_are_refused(header: bytes) -> None:
    with pytest.raises(BadDataError) as caught:
        read_header(_container(header))
    assert type(caught.value) is BadDataError


def test_hand_written_envelope_headers_open_and_the_predicate_matches() -> None:
    for wrapped in ("hpke.AAAA", "eyJh.AA..AA.AA", "a.b.c.d.e"):
        raw = b'{"key_id":"kbs:k","name":"m","size":1,"version":"1","wrapped_key":"%s"}' % wrapped.encode()
        assert decrypt_model(_container(raw), KEY)[0].wrapped_key == wrapped
        assert is_valid_wrapped_key(wrapped)
    for bad in ("", "hpke.", "hpke.A=", "x.y", None, 5, "hpke." + "A" * MAX_WRAPPED_KEY_SIZE):
        assert not is_valid_wrapped_key(bad)
    with pytest.raises(UsageError, match="kbs:"):
        encrypt_model(b"m", KEY, name="m", version="1", wrapped_key="hpke.AAAA")


class _Repository:
    """Just enough of a repository for the vault: it decrypts, and remembers what it holds."""

    def __init__(self) -> None:
        self.held: dict[tuple[str, str], bytes] = {}

    def add(self, blob: bytes, key: bytes) -> str:
        header, model = decrypt_model(blob, key)
        self.held[(header.name, header.version)] = model
        return f"{header.name}/{header.version}"

    def remove(self, name: str, version: str) -> bytes | None:
        return self.held.pop((name, version), None)

    def find(self, name: str, version: str | None = None) -> tuple[str, None] | None:
        return (f"{name}/{version}", None) if (name, version or "") in self.held else None


def test_the_vault_unwraps_envelope_models_and_seals_only_keys_that_opened_them() -> None:
    public, private = _jwks("EC")
    states: list[bytes] = []
    vault = ModelVault(_Repository(), on_change=states.append)
    good = encrypt_model(b"good", KEY, name="a", version=1, key_id="kbs:env",
                         wrapped_key=wrap_released_key(KEY, public))  # fmt: skip
    # Wrapped to the right envelope key, but not the key that encrypts the model.
    lying = encrypt_model(b"bad", KEY, name="b", version=1, key_id="kbs:env",
                          wrapped_key=wrap_released_key(OTHER_KEY, public))  # fmt: skip
    # Wrapped to another envelope key: the released one does not unwrap it.
    foreign = encrypt_model(b"far", KEY, name="c", version=1, key_id="kbs:env",
                            wrapped_key=wrap_released_key(KEY, _jwks("EC")[0]))  # fmt: skip
    old = encrypt_model(b"old", OTHER_KEY, name="d", version=1, key_id="kbs:plain")
    for blob in (good, lying, foreign, old):
        assert not vault.offer(blob, max_model_bytes=1 << 20).loaded
    assert vault.missing_envelope_keys() == ["env"] and vault.missing_kbs_keys() == ["plain"]
    # A broker key given as a model key never opens an envelope container.
    assert vault.set_kbs_key("env", KEY) == []
    outcomes = {
        o.header.name: o for o in vault.set_envelope_key("env", lambda w: unwrap_released_key(w, private))
    }
    assert outcomes["a"].loaded and not outcomes["b"].loaded and not outcomes["c"].loaded
    assert "does not open" in outcomes["b"].reason and "does not unwrap" in outcomes["c"].reason
    state = json.loads(states[-1])
    assert state["model_keys"] == {"a/1": KEY.hex()}
    # A restart: the sealed model key loads the stored container without the key broker.
    again = ModelVault(_Repository(), on_change=lambda document: None)
    again.restore(states[-1])
    assert again.offer(good, max_model_bytes=1 << 20).loaded
    assert not again.offer(lying, max_model_bytes=1 << 20).loaded
    assert again.missing_envelope_keys() == ["env"]


# -- the runner ----------------------------------------------------------------------------------------------------


def test_runner_metadata() -> None:
    runner = ModelRunner(mlp())
    assert runner.inputs == (TensorSpec("x", "FP32", (-1, 4)),)
    assert runner.outputs == (TensorSpec("y", "FP32", (-1, 3)), TensorSpec("h", "FP32", (-1, 8)))
    # A TensorSpec is the (name, datatype, shape) triple the protocol's metadata takes.
    name, datatype, shape = runner.inputs[0]
    assert (name, datatype, shape) == ("x", "FP32", (-1, 4))
    assert runner.batching
    assert not ModelRunner(mlp(batch=2)).batching
    assert not ModelRunner(mlp(), max_batch=1).batching


def test_runner_matches_numpy_and_plain_onnxruntime() -> None:
    model = mlp()
    runner = ModelRunner(model)
    plain = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    result = runner.run({"x": x})
    assert set(result) == {"y", "h"}
    (expected_y, expected_h) = plain.run(["y", "h"], {"x": x})
    assert np.array_equal(result["y"], expected_y) and np.array_equal(result["h"], expected_h)
    np.testing.assert_allclose(result["y"], mlp_reference(x), rtol=1e-5, atol=1e-6)
    only = runner.run({"x": x}, ["h"])
    assert list(only) == ["h"] and np.array_equal(only["h"], expected_h)
    # Another byte order of the same dtype is the same tensor.
    assert np.array_equal(runner.run({"x": x.astype(">f4")})["y"], expected_y)


@pytest.mark.parametrize(
    ("inputs", "outputs", "message"),
    [
        ({}, None, "missing input 'x'"),
        ({"x": np.zeros((1, 4), np.float32), "z": np.zeros(1)}, None, "no input 'z'"),
        ({"x": np.zeros((1, 4), np.float64)}, None, "must be FP32, got FP64"),
        ({"x": np.zeros((1, 4), np.int32)}, None, "must be FP32, got INT32"),
        ({"x": np.zeros((4,), np.float32)}, None, "must have 2 dimensions, got 1"),
        ({"x": np.zeros((1, 5), np.float32)}, None, "dimension 1 must be 4, got 5"),
        ({"x": [[0.0] * 4]}, None, "must be an array"),
        ({"x": np.zeros((1, 4), np.float32)}, ["y", "nope"], "no output 'nope'"),
        ({"x": np.zeros((1, 4), np.float32)}, ["y", "y"], "requested twice"),
        ({"x": np.zeros((1, 4), np.float32)}, "y", "list of output names"),
        # ONNX Runtime would answer every output to an empty list.
        ({"x": np.zeros((1, 4), np.float32)}, [], "at least one output"),
    ],
)
def test_runner_checks_inputs_and_outputs(inputs: Any, outputs: Any, message: str) -> None:
    runner = ModelRunner(mlp())
    with pytest.raises(BoundaryError, match=message):
        runner.run(inputs, outputs)
    assert runner.stats().errors == 1 and runner.stats().runs == 0


def test_runner_failure_inside_onnxruntime_names_no_internals() -> None:
    runner = ModelRunner(gather_model(), max_batch=1)
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    ok = runner.run({"x": x, "idx": np.array([[3], [0]], np.int64)})
    assert ok["y"].tolist() == [[3.0], [4.0]]
    with pytest.raises(BoundaryError) as caught:
        runner.run({"x": x, "idx": np.array([[7], [0]], np.int64)})
    # Only the type of ONNX Runtime's error: its text quotes node names and values.
    assert str(caught.value).startswith("the model failed on this input (")
    assert "GatherElements" not in str(caught.value) and "7" not in str(caught.value)


def test_runner_bytes_tensors() -> None:
    runner = ModelRunner(strings_model())
    assert runner.inputs == (TensorSpec("s", "BYTES", (-1,)),)
    values = np.array([b"hello", "w\u00f6rld".encode(), b""], dtype=object)
    result = runner.run({"s": values})["t"]
    assert result.dtype == object and result.tolist() == [b"hello", "w\u00f6rld".encode(), b""]
    with pytest.raises(BoundaryError, match="not UTF-8"):
        runner.run({"s": np.array([b"\xff"], dtype=object)})
    with pytest.raises(BoundaryError, match="bytes elements"):
        runner.run({"s": np.array([1], dtype=object)})
    with pytest.raises(BoundaryError, match="must be BYTES"):
        runner.run({"s": np.array([1.0])})


def test_runner_refuses_models_it_cannot_load_without_echoing_them() -> None:
    with pytest.raises(BoundaryError, match=r"^not a model ONNX Runtime can load \(\w+\)$"):
        ModelRunner(b"secret-layer-name: not an onnx model")
    with pytest.raises(BoundaryError, match="cannot carry"):
        ModelRunner(
            _model(
                [helper.make_node("Identity", ["b"], ["c"])],
                [helper.make_tensor_value_info("b", TensorProto.BFLOAT16, ["N"])],
                [helper.make_tensor_value_info("c", TensorProto.BFLOAT16, ["N"])],
            )
        )


def test_runner_refuses_external_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # An initializer stored "externally" would make ONNX Runtime read a file the host chose: refused for a model
    # loaded from bytes, even when the file exists next to the working directory.
    (tmp_path / "weights.bin").write_bytes(np.ones(4, np.float32).tobytes())
    monkeypatch.chdir(tmp_path)
    weights = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4], data_location=TensorProto.EXTERNAL)
    for key, value in (("location", "weights.bin"), ("length", "16")):
        entry = weights.external_data.add()
        entry.key, entry.value = key, value
    model = _model(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [weights],
    )
    with pytest.raises(BoundaryError, match="not a model ONNX Runtime can load"):
        ModelRunner(model)


def test_runner_options_are_checked() -> None:
    for options in ({"max_batch": 0}, {"intra_op_threads": -1}, {"max_delay_ms": -1.0},
                    {"max_delay_ms": float("nan")}, {"max_delay_ms": 5000.0}, {"max_batch": True}):  # fmt: skip
        with pytest.raises(UsageError):
            ModelRunner(mlp(), **options)


def test_resnet50_matches_plain_onnxruntime_and_the_shipped_reference(
    resnet: ModelRunner, resnet_bytes: bytes
) -> None:
    assert resnet.inputs == (TensorSpec(RESNET_INPUT, "FP32", (1, 3, 224, 224)),)
    assert resnet.outputs == (TensorSpec(RESNET_OUTPUT, "FP32", (1, 1000)),)
    assert not resnet.batching  # A fixed batch of 1: nothing to merge.
    x = resnet_input()
    result = resnet.run({RESNET_INPUT: x})[RESNET_OUTPUT]
    plain = ort.InferenceSession(resnet_bytes, providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(result, plain.run(None, {RESNET_INPUT: x})[0], rtol=1e-6, atol=1e-7)
    reference = numpy_helper.to_array(onnx.load_tensor(str(LIGHT / "light_resnet50_output_0.pb")))
    assert result.shape == reference.shape == (1, 1000)
    np.testing.assert_allclose(result, reference, rtol=1e-3, atol=1e-5)
    assert abs(float(result.sum()) - 1.0) < 1e-4  # A softmax.


def test_the_runner_logs_nothing_about_the_model(
    resnet_bytes: bytes, capfd: pytest.CaptureFixture[str]
) -> None:
    # ONNX Runtime warns about this model's unused initializer by name; the runner's session stays silent, since
    # the enclave's standard error reaches the host.
    capfd.readouterr()
    ModelRunner(resnet_bytes)
    captured = capfd.readouterr()
    assert "gpu_0" not in captured.err + captured.out


def _hammer(
    runner: ModelRunner, inputs: list[dict[str, np.ndarray]]
) -> list[dict[str, np.ndarray] | Exception]:
    results: list[dict[str, np.ndarray] | Exception] = [RuntimeError("not run")] * len(inputs)
    barrier = threading.Barrier(len(inputs))

    def call(index: int) -> None:
        barrier.wait()
        try:
            results[index] = runner.run(inputs[index])
        except Exception as exc:
            results[index] = exc

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(inputs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    return results


def _slow(runner: ModelRunner, seconds: float) -> None:
    # A model that takes a while, so that calls arriving together find it busy and are merged: the real session
    # runs, after a sleep.
    batcher = runner._batcher
    assert batcher is not None
    real = batcher._execute

    def execute(feeds: dict[str, np.ndarray], names: list[str]) -> list[np.ndarray]:
        time.sleep(seconds)
        return real(feeds, names)

    batcher._execute = execute


def test_concurrent_calls_are_batched_and_each_gets_its_own_rows() -> None:
    runner = ModelRunner(mlp(), max_batch=8, max_delay_ms=500.0)
    _slow(runner, 0.05)
    rng = np.random.default_rng(7)
    # Calls of 1 to 3 rows, so batches mix sizes and the split must follow each call's rows.
    inputs = [{"x": rng.standard_normal((1 + i % 3, 4)).astype(np.float32)} for i in range(16)]
    results = _hammer(runner, inputs)
    alone = ModelRunner(mlp(), max_batch=1)
    for given_inputs, result in zip(inputs, results, strict=True):
        assert isinstance(result, dict)
        expected = alone.run(given_inputs)
        assert result["y"].shape == expected["y"].shape
        np.testing.assert_allclose(result["y"], expected["y"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(result["h"], expected["h"], rtol=1e-5, atol=1e-6)
    stats = runner.stats()
    assert stats.requests == 16 and stats.errors == 0
    assert stats.rows == sum(len(i["x"]) for i in inputs)
    assert max(size for size, _ in stats.batch_sizes) > 1
    assert stats.runs < 16
    assert sum(size * count for size, count in stats.batch_sizes) == 16
    assert all(size <= 8 for size, _ in stats.batch_sizes)  # Every call has a row: at most max_batch calls.


def test_a_failing_call_does_not_fail_its_batch() -> None:
    runner = ModelRunner(gather_model(), max_batch=8, max_delay_ms=500.0)
    _slow(runner, 0.05)
    x = np.arange(4, dtype=np.float32).reshape(1, 4)
    inputs = [{"x": x + i, "idx": np.array([[9 if i == 3 else i % 4]], np.int64)} for i in range(8)]
    results = _hammer(runner, inputs)
    for i, result in enumerate(results):
        if i == 3:
            assert isinstance(result, BoundaryError)
        else:
            assert isinstance(result, dict)
            assert result["y"].tolist() == [[float(i + i % 4)]]
    stats = runner.stats()
    assert stats.errors == 1
    # Calls were merged (and when the bad call was among them, each member of that run ran again alone).
    assert max(size for size, _ in stats.batch_sizes) > 1


def test_calls_with_other_shapes_or_outputs_are_not_merged() -> None:
    runner = ModelRunner(mlp(), max_batch=8, max_delay_ms=500.0)
    _slow(runner, 0.05)
    x = np.ones((1, 4), np.float32)
    results: list[Any] = [None] * 6
    barrier = threading.Barrier(6)

    def call(index: int) -> None:
        barrier.wait()
        results[index] = runner.run({"x": x * index}, ["y"] if index % 2 else ["h"])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    for index, result in enumerate(results):
        name = "y" if index % 2 else "h"
        assert list(result) == [name]
        expected = mlp_reference(x * index) if name == "y" else np.maximum((x * index) @ W1 + B1, 0)
        np.testing.assert_allclose(result[name], expected, rtol=1e-5, atol=1e-6)


def test_a_lone_caller_does_not_wait_for_a_batch() -> None:
    runner = ModelRunner(mlp(), max_delay_ms=1000.0)
    x = np.ones((1, 4), np.float32)
    start = time.perf_counter()
    for _ in range(5):
        runner.run({"x": x})
    assert time.perf_counter() - start < 1.0
    assert runner.stats().batch_sizes == ((1, 5),)


def test_stats_are_counts() -> None:
    runner = ModelRunner(mlp())
    runner.run({"x": np.ones((3, 4), np.float32)})
    stats = runner.stats()
    assert stats == RunnerStats(requests=1, runs=1, rows=3, errors=0, batch_sizes=((1, 1),))
    assert json.loads(json.dumps(stats.to_dict())) == {
        "requests": 1, "runs": 1, "rows": 3, "errors": 0, "batch_sizes": {"1": 1},
    }  # fmt: skip


class _Gate:
    """An execute function for the Batcher whose first call blocks until released: a busy model."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.calls: list[int] = []
        self.lock = threading.Lock()

    def __call__(self, feeds: dict[str, np.ndarray], names: list[str]) -> list[np.ndarray]:
        with self.lock:
            self.calls.append(len(feeds["x"]))
            first = len(self.calls) == 1
        if first:
            self.started.set()
            assert self.release.wait(10)
        return [feeds["x"] * 2]


def _submit(batcher: Batcher, value: float, out: dict[float, Any]) -> threading.Thread:
    job = Job(key="k", feeds={"x": np.array([[value]])}, outputs=["y"], rows=1)

    def call() -> None:
        out[value] = batcher.submit(job)[0]

    thread = threading.Thread(target=call)
    thread.start()
    return thread


def test_batcher_gathers_while_the_model_is_busy() -> None:
    gate, records = _Gate(), []
    batcher = Batcher(gate, lambda calls, rows: records.append((calls, rows)), max_batch=4, max_delay_s=10.0)
    out: dict[float, Any] = {}
    threads = [_submit(batcher, 0.0, out)]
    assert gate.started.wait(10)
    # The model is busy: the next calls wait and are merged, up to max_batch rows, then run beside the first.
    threads += [_submit(batcher, float(i), out) for i in range(1, 6)]
    deadline = time.monotonic() + 10
    while len(gate.calls) < 2 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert gate.calls == [1, 4]
    gate.release.set()
    for thread in threads:
        thread.join(10)
    assert gate.calls == [1, 4, 1]
    assert sorted(records) == [(1, 1), (1, 1), (4, 4)]
    assert {value: result.tolist() for value, result in out.items()} == {
        float(i): [[2.0 * i]] for i in range(6)
    }


def test_batcher_waits_for_a_busy_model_at_most_the_delay() -> None:
    gate = _Gate()
    batcher = Batcher(gate, lambda calls, rows: None, max_batch=4, max_delay_s=0.05)
    out: dict[float, Any] = {}
    first = _submit(batcher, 1.0, out)
    assert gate.started.wait(10)
    start = time.monotonic()
    _submit(batcher, 2.0, out).join(10)
    # The second call ran beside the first, which is still blocked, once the delay had passed.
    assert 0.04 <= time.monotonic() - start < 5 and 2.0 in out and 1.0 not in out
    gate.release.set()
    first.join(10)
    assert out[1.0].tolist() == [[2.0]]


# -- the repository --------------------------------------------------------------------------------------------


def test_repository_add_get_list_remove() -> None:
    repository = ModelRepository(intra_op_threads=1)
    model = mlp()
    info = repository.add(encrypt_model(model, KEY, name="mlp", version="1"), KEY)
    assert info.sha256 == hashlib.sha256(model).hexdigest()
    assert (info.name, info.version, info.size) == ("mlp", "1", len(model))
    assert info.inputs == (TensorSpec("x", "FP32", (-1, 4)),)
    repository.add(encrypt_model(mlp(batch=2), OTHER_KEY, name="mlp", version="10"), OTHER_KEY)
    repository.add(encrypt_model(strings_model(), KEY, name="echo", version="2"), KEY)
    assert [(i.name, i.version) for i in repository.list()] == [("echo", "2"), ("mlp", "1"), ("mlp", "10")]
    assert repository.versions("mlp") == ["1", "10"]
    # The latest version is the highest number, not the last string.
    latest, runner = repository.get("mlp")
    assert latest.version == "10" and runner.inputs[0].shape == (2, 4)
    assert repository.get("mlp", "1")[0] == info
    assert repository.find("mlp", "2") is None and repository.find("nope") is None
    with pytest.raises(BoundaryError, match="'mlp' version '2' is not loaded"):
        repository.get("mlp", "2")
    assert repository.total_bytes == len(model) + len(mlp(batch=2)) + len(strings_model())
    assert repository.remove("mlp", "10") is not None
    assert repository.remove("mlp", "10") is None
    assert repository.get("mlp")[0].version == "1"
    assert set(repository.stats()) == {("echo", "2"), ("mlp", "1")}


def test_repository_refuses_over_limits_and_stays_unchanged() -> None:
    small = mlp()
    repository = ModelRepository(
        max_models=2, max_model_bytes=len(small), max_total_bytes=2 * len(small) + 10
    )
    repository.add(encrypt_model(small, KEY, name="a", version="1"), KEY)
    too_big = encrypt_model(small + b"\x00", KEY, name="b", version="1")
    with pytest.raises(BoundaryError, match="exceeds the limit"):
        repository.add(too_big, KEY)
    repository.add(encrypt_model(small, KEY, name="b", version="1"), KEY)
    with pytest.raises(BoundaryError, match="at most 2 models"):
        repository.add(encrypt_model(small, KEY, name="c", version="1"), KEY)
    # Replacing a loaded version does not count as one more model.
    repository.add(encrypt_model(strings_model(), KEY, name="b", version="1"), KEY)
    assert [i.name for i in repository.list()] == ["a", "b"]
    total_limited = ModelRepository(max_total_bytes=len(small) + 5)
    total_limited.add(encrypt_model(small, KEY, name="a", version="1"), KEY)
    with pytest.raises(BoundaryError, match="for all models"):
        total_limited.add(encrypt_model(small, KEY, name="a", version="2"), KEY)
    assert [i.version for i in total_limited.list()] == ["1"]


def test_repository_refuses_wrong_keys_bad_containers_and_bad_models() -> None:
    repository = ModelRepository()
    with pytest.raises(VerificationError):
        repository.add(encrypt_model(mlp(), KEY, name="m", version="1"), OTHER_KEY)
    with pytest.raises(BadDataError):
        repository.add(b"ENKMODL1 garbage", KEY)
    with pytest.raises(BoundaryError, match="not a model ONNX Runtime can load"):
        repository.add(encrypt_model(b"not onnx", KEY, name="m", version="1"), KEY)
    assert repository.list() == []


def test_repository_same_model_again_keeps_its_runner_and_new_content_replaces_it() -> None:
    repository = ModelRepository()
    first = repository.add(encrypt_model(mlp(), KEY, name="m", version="1"), KEY)
    _, runner = repository.get("m")
    again = repository.add(encrypt_model(mlp(), OTHER_KEY, name="m", version="1"), OTHER_KEY)
    assert again == first and repository.get("m")[1] is runner
    replaced = repository.add(encrypt_model(strings_model(), KEY, name="m", version="1"), KEY)
    assert replaced.sha256 != first.sha256 and repository.get("m")[1] is not runner


def test_model_info_dict_round_trip_and_strictness() -> None:
    info = ModelRepository().add(encrypt_model(mlp(), KEY, name="m", version="4"), KEY)
    document = json.loads(json.dumps(info.to_dict()))
    assert document["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert ModelInfo.from_dict(document) == info
    for change in ({"sha256": "AB" * 32}, {"size": -1}, {"version": "0"}, {"extra": 1},
                   {"inputs": [{"name": "x", "datatype": "FP32", "shape": [-2]}]}):  # fmt: skip
        with pytest.raises(BoundaryError):
            ModelInfo.from_dict({**document, **change})
    with pytest.raises(BoundaryError):
        ModelInfo.from_dict([document])


def test_repository_options_are_checked() -> None:
    for options in (
        {"max_models": 0},
        {"max_model_bytes": 1 << 31},
        {"max_total_bytes": -1},
        {"max_batch": 0},
    ):
        with pytest.raises(UsageError):
            ModelRepository(**options)


def test_repository_serves_resnet50(resnet_bytes: bytes) -> None:
    repository = ModelRepository(intra_op_threads=2)
    info = repository.add(encrypt_model(resnet_bytes, KEY, name="resnet50", version="1"), KEY)
    assert info.sha256 == hashlib.sha256(resnet_bytes).hexdigest()
    _, runner = repository.get("resnet50")
    reference = numpy_helper.to_array(onnx.load_tensor(str(LIGHT / "light_resnet50_output_0.pb")))
    np.testing.assert_allclose(
        runner.run({RESNET_INPUT: resnet_input()})[RESNET_OUTPUT], reference, rtol=1e-3, atol=1e-5
    )
