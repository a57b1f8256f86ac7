"""Open Inference Protocol (KServe v2) codec: spec examples, round trips for every data type, strictness, fuzz."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from enklave.errors import BoundaryError, UsageError
from enklave.inference import protocol, tensors
from enklave.inference.protocol import (
    BINARY_CONTENT_TYPE,
    HEADER_LENGTH,
    JSON_CONTENT_TYPE,
    InferInput,
    InferOutput,
    InferRequest,
    InferResponse,
    Limits,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
    error_body,
    error_message,
    model_metadata,
    parse_header_length,
)
from enklave.inference.tensors import DATATYPES, ORT_DATATYPES, datatype_of

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- the examples of the specification text ------------------------------------------------------------------
# From the KServe "Predict Protocol - Version 2" text (kserve/kserve docs/predict-api/v2/required_api.md, also
# kserve/open-inference-protocol specification/protocol/inference_rest.md), "Inference Request Examples",
# reproduced byte for byte. As published, the request's BOOL input has shape [3] but one value, and the
# response lacks a comma after "id" and the required "model_name": a strict decoder must refuse both.

SPEC_REQUEST = b"""{
  "id" : "42",
  "inputs" : [
    {
      "name" : "input0",
      "shape" : [ 2, 2 ],
      "datatype" : "UINT32",
      "data" : [ 1, 2, 3, 4 ]
    },
    {
      "name" : "input1",
      "shape" : [ 3 ],
      "datatype" : "BOOL",
      "data" : [ true ]
    }
  ],
  "outputs" : [
    {
      "name" : "output0"
    }
  ]
}"""

SPEC_RESPONSE = b"""{
  "id" : "42"
  "outputs" : [
    {
      "name" : "output0",
      "shape" : [ 3, 2 ],
      "datatype"  : "FP32",
      "data" : [ 1.0, 1.1, 2.0, 2.1, 3.0, 3.1 ]
    }
  ]
}"""

# From Triton's "Binary Tensor Data Extension" (triton-inference-server/server docs/protocol/
# extension_binary_data.md), "Examples": the JSON parts byte for byte; the binary parts hold the sizes it gives.
TRITON_BINARY_REQUEST_HEADER = b"""{
  "model_name" : "mymodel",
  "inputs" : [
    {
      "name" : "input0",
      "shape" : [ 2, 2 ],
      "datatype" : "UINT32",
      "parameters" : {
        "binary_data_size" : 16
      }
    },
    {
      "name" : "input1",
      "shape" : [ 3 ],
      "datatype" : "BOOL",
      "parameters" : {
        "binary_data_size" : 3
      }
    }
  ],
  "outputs" : [
    {
      "name" : "output0",
      "parameters" : {
        "binary_data" : true
      }
    }
  ]
}"""

TRITON_BINARY_RESPONSE_HEADER = b"""{
  "outputs" : [
    {
      "name" : "output0",
      "shape" : [ 3, 2 ],
      "datatype"  : "FP32",
      "parameters" : {
        "binary_data_size" : 24
      }
    }
  ]
}"""


def test_spec_request_example_as_published_is_refused() -> None:
    with pytest.raises(BoundaryError, match=r"input 'input1': 1 values for a shape of 3 elements"):
        decode_request(SPEC_REQUEST, JSON_CONTENT_TYPE, None)


def test_spec_request_example_with_three_booleans_decodes() -> None:
    body = SPEC_REQUEST.replace(b'"data" : [ true ]', b'"data" : [ true, false, true ]')
    request = decode_request(body, "application/json; charset=utf-8", None)
    assert request.id == "42"
    assert request.outputs == ("output0",)
    assert request.binary_outputs == frozenset()
    assert request.parameters == {}
    arrays = request.arrays()
    assert arrays["input0"].dtype == np.uint32
    assert arrays["input0"].tolist() == [[1, 2], [3, 4]]
    assert arrays["input1"].dtype == np.bool_
    assert arrays["input1"].tolist() == [True, False, True]
    assert [item.datatype for item in request.inputs] == ["UINT32", "BOOL"]


def test_spec_response_example_as_published_is_refused() -> None:
    with pytest.raises(BoundaryError, match="does not parse"):
        decode_response(SPEC_RESPONSE, JSON_CONTENT_TYPE, None)
    with_comma = SPEC_RESPONSE.replace(b'"42"\n', b'"42",\n')
    with pytest.raises(BoundaryError, match="model_name must be a string"):
        decode_response(with_comma, JSON_CONTENT_TYPE, None)


def test_spec_response_example_completed_decodes() -> None:
    body = SPEC_RESPONSE.replace(b'"42"\n', b'"42", "model_name" : "mymodel",\n')
    response = decode_response(body, JSON_CONTENT_TYPE, None)
    assert (response.model_name, response.model_version, response.id) == ("mymodel", None, "42")
    (output,) = response.outputs
    assert (output.name, output.datatype, output.shape) == ("output0", "FP32", (3, 2))
    expected = np.array([[1.0, 1.1], [2.0, 2.1], [3.0, 3.1]], dtype=np.float32)
    assert np.array_equal(output.array, expected)


def test_triton_binary_request_example() -> None:
    tail = np.array([1, 2, 3, 4], dtype="<u4").tobytes() + bytes([1, 0, 1])
    assert len(tail) == 19  # The example's "total size of the binary data is 19 bytes".
    body = TRITON_BINARY_REQUEST_HEADER + tail
    request = decode_request(body, BINARY_CONTENT_TYPE, len(TRITON_BINARY_REQUEST_HEADER))
    arrays = request.arrays()
    assert arrays["input0"].tolist() == [[1, 2], [3, 4]]
    assert arrays["input0"].dtype == np.uint32
    assert arrays["input1"].tolist() == [True, False, True]
    assert request.outputs == ("output0",)
    assert request.binary_outputs == frozenset({"output0"})
    # Decoded arrays are copies the caller owns, not views into the body.
    assert arrays["input0"].flags.writeable and arrays["input1"].flags.writeable


def test_triton_binary_response_example() -> None:
    values = np.arange(6, dtype=np.float32).reshape(3, 2) / 3
    header = TRITON_BINARY_RESPONSE_HEADER.replace(b"{\n", b'{\n  "model_name" : "mymodel",\n', 1)
    body = header + values.astype("<f4").tobytes()
    response = decode_response(body, BINARY_CONTENT_TYPE, len(header))
    assert np.array_equal(response.arrays()["output0"], values)


def test_binary_request_without_header_length_is_refused() -> None:
    body = TRITON_BINARY_REQUEST_HEADER + bytes(19)
    with pytest.raises(BoundaryError, match="does not parse"):
        decode_request(body, BINARY_CONTENT_TYPE, None)
    with pytest.raises(BoundaryError, match=f"without an {HEADER_LENGTH} header"):
        decode_request(TRITON_BINARY_REQUEST_HEADER, BINARY_CONTENT_TYPE, None)


# -- data types -----------------------------------------------------------------------------------------------


def test_datatypes_are_the_thirteen_of_v2() -> None:
    assert list(DATATYPES) == [
        "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
        "FP16", "FP32", "FP64", "BYTES",
    ]  # fmt: skip
    for name, dtype in DATATYPES.items():
        assert datatype_of(np.zeros(1, dtype=dtype)) == name
    assert set(ORT_DATATYPES.values()) == set(DATATYPES)


@pytest.mark.parametrize(
    ("dtype", "name"),
    [
        (np.intc, "INT32"),
        (np.longlong, "INT64"),
        (">f4", "FP32"),
        (">u2", "UINT16"),
        ("S3", "BYTES"),
        ("U2", "BYTES"),
    ],
)
def test_datatype_of_aliases_and_byte_orders(dtype: Any, name: str) -> None:
    assert datatype_of(np.zeros(2, dtype=dtype)) == name


@pytest.mark.parametrize("dtype", [np.complex64, "M8[s]", "m8[s]", [("a", "<i4")], np.float128])
def test_datatype_of_unsupported_dtypes(dtype: Any) -> None:
    with pytest.raises(UsageError):
        datatype_of(np.zeros(2, dtype=dtype))
    with pytest.raises(UsageError):
        InferInput("x", np.zeros(2, dtype=dtype))


def test_big_endian_arrays_encode_little_endian() -> None:
    array = np.array([1, 256], dtype=">u2")
    assert tensors.to_binary(array) == b"\x01\x00\x00\x01"
    body, headers = encode_request(InferRequest((InferInput("x", array),)), binary=True)
    decoded = decode_request(body, headers["content-type"], int(headers[HEADER_LENGTH])).arrays()["x"]
    assert decoded.dtype == np.dtype(np.uint16) and decoded.tolist() == [1, 256]


_SHAPES = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)


def _arrays(datatype: str) -> st.SearchStrategy[np.ndarray]:
    if datatype == "BYTES":
        return _SHAPES.flatmap(
            lambda shape: st.lists(
                st.binary(max_size=6), min_size=int(np.prod(shape)), max_size=int(np.prod(shape))
            ).map(lambda items: tensors._object_array(items, shape))
        )
    return hnp.arrays(DATATYPES[datatype], _SHAPES)


def _same(left: np.ndarray, right: np.ndarray) -> bool:
    if left.dtype != right.dtype or left.shape != right.shape:
        return False
    if left.dtype.kind == "f":
        # Compare bit patterns so that NaN payloads and the sign of zero count too.
        return left.tobytes() == right.tobytes() or bool(np.array_equal(left, right, equal_nan=True))
    return left.tolist() == right.tolist()


@pytest.mark.parametrize("datatype", list(DATATYPES))
@settings(max_examples=40, deadline=None)
@given(data=st.data(), binary=st.booleans())
def test_request_round_trip_every_datatype(datatype: str, data: st.DataObject, binary: bool) -> None:
    first = data.draw(_arrays(datatype))
    second = data.draw(_arrays(datatype))
    request = InferRequest(
        (InferInput("first", first), InferInput("second/0", second)),
        outputs=("out",),
        id="r-1",
        parameters={"priority": 2, "tag": "x", "ratio": 0.5, "flag": False},
        binary_outputs=binary,
    )
    body, headers = encode_request(request, binary=binary)
    decoded = decode_request(body, headers["content-type"], parse_header_length(headers.get(HEADER_LENGTH)))
    assert [item.name for item in decoded.inputs] == ["first", "second/0"]
    assert _same(decoded.arrays()["first"], first)
    assert _same(decoded.arrays()["second/0"], second)
    assert decoded.outputs == ("out",)
    assert decoded.binary_outputs == request.binary_outputs
    assert decoded.id == "r-1"
    assert dict(decoded.parameters) == {"priority": 2, "tag": "x", "ratio": 0.5, "flag": False}


@pytest.mark.parametrize("datatype", list(DATATYPES))
@settings(max_examples=40, deadline=None)
@given(data=st.data(), binary=st.booleans())
def test_response_round_trip_every_datatype(datatype: str, data: st.DataObject, binary: bool) -> None:
    array = data.draw(_arrays(datatype))
    response = InferResponse("model-a", "3", (InferOutput("y", array),), id="9", parameters={"n": 1})
    body, headers = encode_response(response, binary)
    assert (HEADER_LENGTH in headers) == (headers["content-type"] == BINARY_CONTENT_TYPE)
    decoded = decode_response(body, headers["content-type"], parse_header_length(headers.get(HEADER_LENGTH)))
    assert (decoded.model_name, decoded.model_version, decoded.id) == ("model-a", "3", "9")
    assert dict(decoded.parameters) == {"n": 1}
    assert _same(decoded.arrays()["y"], array)


def test_json_mode_sends_what_json_cannot_carry_as_binary() -> None:
    outputs = (
        InferOutput("finite", np.array([1.5, -2.0], dtype=np.float32)),
        InferOutput("nan", np.array([np.nan, np.inf], dtype=np.float32)),
        InferOutput("text", np.array([b"caf\xc3\xa9"], dtype=object)),
        InferOutput("raw", np.array([b"\xff\xfe"], dtype=object)),
    )
    body, headers = encode_response(InferResponse("m", None, outputs), binary_outputs=False)
    header = json.loads(body[: int(headers[HEADER_LENGTH])])
    carried = {item["name"]: ("data" in item) for item in header["outputs"]}
    assert carried == {"finite": True, "nan": False, "text": True, "raw": False}
    assert header["outputs"][2]["data"] == ["café"]
    decoded = decode_response(body, headers["content-type"], int(headers[HEADER_LENGTH])).arrays()
    assert np.isnan(decoded["nan"][0]) and decoded["nan"][1] == np.inf
    assert decoded["raw"][0] == b"\xff\xfe"
    assert decoded["text"][0] == "café".encode()


def test_all_json_response_has_no_header_length() -> None:
    response = InferResponse("m", "1", (InferOutput("y", np.array([[1, 2]], dtype=np.int64)),))
    body, headers = encode_response(response, False)
    assert headers == {"content-type": JSON_CONTENT_TYPE}
    assert json.loads(body) == {
        "model_name": "m",
        "model_version": "1",
        "outputs": [{"name": "y", "shape": [1, 2], "datatype": "INT64", "data": [1, 2]}],
    }


def test_binary_outputs_by_name() -> None:
    outputs = (InferOutput("a", np.zeros(2, np.float32)), InferOutput("b", np.ones(2, np.float32)))
    body, headers = encode_response(InferResponse("m", None, outputs), {"b"})
    header = json.loads(body[: int(headers[HEADER_LENGTH])])
    assert "data" in header["outputs"][0]
    assert header["outputs"][1]["parameters"] == {"binary_data_size": 8}
    assert len(body) == int(headers[HEADER_LENGTH]) + 8


def test_binary_data_output_request_parameter() -> None:
    request = InferRequest((InferInput("x", np.zeros(1, np.int8)),), binary_outputs=True)
    body, headers = encode_request(request, binary=False)
    assert json.loads(body)["parameters"] == {"binary_data_output": True}
    decoded = decode_request(body, headers["content-type"], None)
    assert decoded.binary_outputs is True and decoded.outputs is None and decoded.parameters == {}
    # An output's own binary_data overrides the request-wide setting.
    body = (
        b'{"parameters":{"binary_data_output":true},"inputs":[{"name":"x","shape":[0],"datatype":"INT8",'
        b'"data":[]}],"outputs":[{"name":"a"},{"name":"b","parameters":{"binary_data":false}}]}'
    )
    assert decode_request(body, None, None).binary_outputs == frozenset({"a"})


def test_nested_and_flat_json_data_agree() -> None:
    flat = b'{"inputs":[{"name":"x","shape":[2,1,3],"datatype":"INT16","data":[1,2,3,4,5,6]}]}'
    nested = b'{"inputs":[{"name":"x","shape":[2,1,3],"datatype":"INT16","data":[[[1,2,3]],[[4,5,6]]]}]}'
    left = decode_request(flat, None, None).arrays()["x"]
    right = decode_request(nested, None, None).arrays()["x"]
    assert left.tolist() == right.tolist() == [[[1, 2, 3]], [[4, 5, 6]]]


@pytest.mark.parametrize(
    "data",
    ["[[1,2,3],[4,5]]", "[[1,2],[3,4],[5,6]]", "[[[1,2,3]],[4,5,6]]", "[[1,2,3,4,5,6]]", "[1,2,3,4,5]", "{}"],
)
def test_json_data_that_does_not_match_the_shape(data: str) -> None:
    body = '{"inputs":[{"name":"x","shape":[2,3],"datatype":"INT16","data":' + data + "}]}"
    with pytest.raises(BoundaryError, match="input 'x'"):
        decode_request(body.encode(), None, None)


def test_bytes_tensors_from_str_and_fixed_width_arrays() -> None:
    text = np.array(["héllo", ""])
    fixed = np.array([b"ab", b"c"], dtype="S2")
    request = InferRequest((InferInput("t", text), InferInput("f", fixed)))
    for binary in (True, False):
        body, headers = encode_request(request, binary=binary)
        arrays = decode_request(body, None, parse_header_length(headers.get(HEADER_LENGTH))).arrays()
        assert arrays["t"].dtype == object and arrays["t"].tolist() == ["héllo".encode(), b""]
        assert arrays["f"].tolist() == [b"ab", b"c"]
    with pytest.raises(UsageError, match="not bytes or str"):
        encode_request(InferRequest((InferInput("o", np.array([1, b"x"], dtype=object)),)), binary=True)


# -- strictness: each malformed input is refused with BoundaryError ---------------------------------------------


def _request(inputs: str, extra: str = "") -> bytes:
    return ('{"inputs":[' + inputs + "]" + extra + "}").encode()


_X = '{"name":"x","shape":[2],"datatype":"FP32","data":[1,2]}'

MALFORMED_JSON_REQUESTS = {
    "unknown datatype": _request('{"name":"x","shape":[1],"datatype":"FLOAT","data":[1]}'),
    "lowercase datatype": _request('{"name":"x","shape":[1],"datatype":"fp32","data":[1]}'),
    "duplicate input names": _request(f"{_X},{_X}"),
    "duplicate output names": _request(_X, ',"outputs":[{"name":"o"},{"name":"o"}]'),
    "negative dimension": _request('{"name":"x","shape":[-1],"datatype":"FP32","data":[]}'),
    "NaN in a shape": _request('{"name":"x","shape":[NaN],"datatype":"FP32","data":[]}'),
    "float dimension": _request('{"name":"x","shape":[2.0],"datatype":"FP32","data":[1,2]}'),
    "boolean dimension": _request('{"name":"x","shape":[true],"datatype":"FP32","data":[1]}'),
    "dimension past 2**63": _request(
        '{"name":"x","shape":[9223372036854775808],"datatype":"FP32","data":[]}'
    ),
    "too many dimensions": _request(
        '{"name":"x","shape":[' + ",".join(["1"] * 33) + '],"datatype":"FP32","data":[1]}'
    ),
    "shape not an array": _request('{"name":"x","shape":2,"datatype":"FP32","data":[1,2]}'),
    "missing shape": _request('{"name":"x","datatype":"FP32","data":[1,2]}'),
    "missing name": _request('{"shape":[1],"datatype":"FP32","data":[1]}'),
    "empty name": _request('{"name":"","shape":[1],"datatype":"FP32","data":[1]}'),
    "no data": _request('{"name":"x","shape":[1],"datatype":"FP32"}'),
    "unknown member": _request('{"name":"x","shape":[1],"datatype":"FP32","data":[1],"contents":[1]}'),
    "unknown top-level member": _request(_X, ',"inputz":[]'),
    "unknown input parameter": _request(
        '{"name":"x","shape":[1],"datatype":"FP32","data":[1],"parameters":{"shared_memory_region":"r"}}'
    ),
    "duplicate JSON key": b'{"inputs":[],"inputs":[]}',
    "no inputs": b'{"outputs":[]}',
    "not an object": b"[]",
    "trailing text": _request(_X) + b" x",
    "bool for a float": _request('{"name":"x","shape":[1],"datatype":"FP32","data":[true]}'),
    "float for an int": _request('{"name":"x","shape":[1],"datatype":"INT32","data":[1.0]}'),
    "int for a bool": _request('{"name":"x","shape":[1],"datatype":"BOOL","data":[1]}'),
    "string for a number": _request('{"name":"x","shape":[1],"datatype":"FP64","data":["1"]}'),
    "number for bytes": _request('{"name":"x","shape":[1],"datatype":"BYTES","data":[1]}'),
    "uint8 overflow": _request('{"name":"x","shape":[1],"datatype":"UINT8","data":[256]}'),
    "negative unsigned": _request('{"name":"x","shape":[1],"datatype":"UINT64","data":[-1]}'),
    "int64 overflow": _request('{"name":"x","shape":[1],"datatype":"INT64","data":[9223372036854775808]}'),
    "fp16 overflow": _request('{"name":"x","shape":[1],"datatype":"FP16","data":[70000]}'),
    "fp32 overflow": _request('{"name":"x","shape":[1],"datatype":"FP32","data":[1e39]}'),
    "infinite literal": _request('{"name":"x","shape":[1],"datatype":"FP64","data":[1e400]}'),
    "huge integer for a float": _request(
        '{"name":"x","shape":[1],"datatype":"FP64","data":[%s]}' % ("9" * 400)
    ),
    "overlong integer": _request('{"name":"x","shape":[1],"datatype":"INT64","data":[%s]}' % ("9" * 5000)),
    "NaN literal in data": _request('{"name":"x","shape":[1],"datatype":"FP32","data":[NaN]}'),
    "lone surrogate in bytes": _request('{"name":"x","shape":[1],"datatype":"BYTES","data":["\\ud800"]}'),
    "deep nesting": b'{"inputs":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "not UTF-8": b'{"inputs":[],"id":"\xff"}',
    "id not a string": _request(_X, ',"id":42'),
    "null id": _request(_X, ',"id":null'),
    "parameter object value": _request(_X, ',"parameters":{"a":{}}'),
    "binary_data_output not a bool": _request(_X, ',"parameters":{"binary_data_output":1}'),
    "binary_data not a bool": _request(_X, ',"outputs":[{"name":"o","parameters":{"binary_data":"yes"}}]'),
    "unknown output parameter": _request(_X, ',"outputs":[{"name":"o","parameters":{"classification":3}}]'),
    "binary data without header length": _request(
        '{"name":"x","shape":[1],"datatype":"FP32","parameters":{"binary_data_size":4}}'
    ),
}


@pytest.mark.parametrize("body", MALFORMED_JSON_REQUESTS.values(), ids=MALFORMED_JSON_REQUESTS.keys())
def test_malformed_requests_raise_boundary_error(body: bytes) -> None:
    with pytest.raises(BoundaryError):
        decode_request(body, None, None)


def _binary(header: str, tail: bytes) -> tuple[bytes, int]:
    raw = header.encode()
    return raw + tail, len(raw)


MALFORMED_BINARY_REQUESTS = {
    "too few bytes": _binary(
        '{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":4}}]}',
        bytes(4),
    ),
    "size runs past the body": _binary(
        '{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8}}]}',
        bytes(4),
    ),
    "bytes left over": _binary(
        '{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","parameters":{"binary_data_size":4}}]}',
        bytes(5),
    ),
    "both data and binary": _binary(
        '{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1],"parameters":{"binary_data_size":4}}]}',
        bytes(4),
    ),
    "negative size": _binary(
        '{"inputs":[{"name":"x","shape":[0],"datatype":"FP32","parameters":{"binary_data_size":-1}}]}', b""
    ),
    "boolean size": _binary(
        '{"inputs":[{"name":"x","shape":[1],"datatype":"BOOL","parameters":{"binary_data_size":true}}]}',
        b"\x01",
    ),
    "BOOL byte that is not 0 or 1": _binary(
        '{"inputs":[{"name":"x","shape":[2],"datatype":"BOOL","parameters":{"binary_data_size":2}}]}',
        b"\x01\x02",
    ),
    "BYTES element runs past its data": _binary(
        '{"inputs":[{"name":"x","shape":[1],"datatype":"BYTES","parameters":{"binary_data_size":6}}]}',
        b"\x05\x00\x00\x00ab",
    ),
    "BYTES with fewer elements than the shape": _binary(
        '{"inputs":[{"name":"x","shape":[3],"datatype":"BYTES","parameters":{"binary_data_size":12}}]}',
        b"\x00\x00\x00\x00\x04\x00\x00\x00abcd",
    ),
    "BYTES with bytes after the last element": _binary(
        '{"inputs":[{"name":"x","shape":[1],"datatype":"BYTES","parameters":{"binary_data_size":6}}]}',
        b"\x01\x00\x00\x00ab",
    ),
    "BYTES truncated length": _binary(
        '{"inputs":[{"name":"x","shape":[2],"datatype":"BYTES","parameters":{"binary_data_size":10}}]}',
        b"\x01\x00\x00\x00a\x00\x00\x00\x00\x00",
    ),
}


@pytest.mark.parametrize(
    ("body", "length"), MALFORMED_BINARY_REQUESTS.values(), ids=MALFORMED_BINARY_REQUESTS.keys()
)
def test_malformed_binary_requests_raise_boundary_error(body: bytes, length: int) -> None:
    with pytest.raises(BoundaryError):
        decode_request(body, BINARY_CONTENT_TYPE, length)


def test_framing_errors() -> None:
    body = _request(_X)
    with pytest.raises(BoundaryError, match="larger than the body"):
        decode_request(body, None, len(body) + 1)
    with pytest.raises(BoundaryError, match="unsupported content type"):
        decode_request(body, "application/x-www-form-urlencoded", None)
    assert decode_request(body, "", len(body)).arrays()["x"].tolist() == [1.0, 2.0]
    with pytest.raises(BoundaryError, match="decimal integer"):
        parse_header_length("12a")
    for bad in ("", "-1", "+1", "1" * 21, "\uff11\uff12"):
        with pytest.raises(BoundaryError):
            parse_header_length(bad)
    assert parse_header_length(None) is None
    assert parse_header_length(" 42 ") == 42


def test_error_messages_never_echo_tensor_values() -> None:
    secret = 123456789.0
    body = _request('{"name":"x","shape":[3],"datatype":"FP32","data":[' + repr(secret) + ",1]}")
    with pytest.raises(BoundaryError) as caught:
        decode_request(body, None, None)
    assert "123456789" not in str(caught.value)
    body = _request('{"name":"x","shape":[1],"datatype":"BYTES","data":[987654321]}')
    with pytest.raises(BoundaryError) as caught:
        decode_request(body, None, None)
    assert "987654321" not in str(caught.value)


# -- limits: checked before anything is allocated ----------------------------------------------------------------


def test_limits_on_tensor_count() -> None:
    body = _request(
        ",".join(
            json.dumps({"name": f"x{i}", "shape": [0], "datatype": "FP32", "data": []}) for i in range(5)
        )
    )
    decode_request(body, None, None, Limits(max_tensors=5))
    with pytest.raises(BoundaryError, match="more than 4 inputs"):
        decode_request(body, None, None, Limits(max_tensors=4))
    outputs = ',"outputs":' + json.dumps([{"name": f"o{i}"} for i in range(3)])
    with pytest.raises(BoundaryError, match="more than 2 outputs"):
        decode_request(_request(_X, outputs), None, None, Limits(max_tensors=2))


def test_limits_on_elements_and_bytes_count_all_tensors() -> None:
    two = _request(
        '{"name":"a","shape":[3],"datatype":"INT64","data":[1,2,3]},'
        '{"name":"b","shape":[3],"datatype":"INT64","data":[1,2,3]}'
    )
    decode_request(two, None, None, Limits(max_elements=6, max_bytes=48))
    with pytest.raises(BoundaryError, match="more than 5 elements"):
        decode_request(two, None, None, Limits(max_elements=5))
    with pytest.raises(BoundaryError, match="more than 47 bytes"):
        decode_request(two, None, None, Limits(max_bytes=47))
    strings = _request('{"name":"s","shape":[2],"datatype":"BYTES","data":["abc","de"]}')
    decode_request(strings, None, None, Limits(max_bytes=5))
    with pytest.raises(BoundaryError, match="more than 4 bytes"):
        decode_request(strings, None, None, Limits(max_bytes=4))


def test_limit_on_json_size() -> None:
    body = _request(_X)
    decode_request(body, None, None, Limits(max_json_bytes=len(body)))
    with pytest.raises(BoundaryError, match="JSON part is larger"):
        decode_request(body, None, None, Limits(max_json_bytes=len(body) - 1))


@pytest.mark.parametrize(
    "shape", ["[4611686018427387904, 4611686018427387904]", "[9223372036854775807]", "[67108865]"]
)
def test_huge_shapes_are_refused_before_allocation(shape: str) -> None:
    for datatype in ("FP32", "BYTES", "BOOL"):
        tensor = '{"name":"x","shape":' + shape + ',"datatype":"' + datatype + '"'
        header = '{"inputs":[' + tensor + ',"parameters":{"binary_data_size":8}}]}'
        binary, length = _binary(header, bytes(8))
        with pytest.raises(BoundaryError):
            decode_request(binary, None, length)
        with pytest.raises(BoundaryError, match="more than"):
            decode_request(_request(tensor + ',"data":[]}'), None, None)


def test_limits_reject_bad_values() -> None:
    for bad in ({"max_tensors": 0}, {"max_bytes": -1}, {"max_elements": 1.5}, {"max_json_bytes": True}):
        with pytest.raises(UsageError):
            Limits(**bad)


# -- responses ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b'{"model_name":"m"}',
        b'{"model_name":1,"outputs":[]}',
        b'{"model_name":"m","model_version":1,"outputs":[]}',
        b'{"model_name":"m","outputs":[],"extra":1}',
        b'{"model_name":"m","outputs":[{"name":"y","shape":[1],"datatype":"FP32","data":[1]},'
        b'{"name":"y","shape":[1],"datatype":"FP32","data":[1]}]}',
        b'{"model_name":"m","outputs":{}}',
    ],
)
def test_malformed_responses_raise_boundary_error(body: bytes) -> None:
    with pytest.raises(BoundaryError):
        decode_response(body, JSON_CONTENT_TYPE, None)


# -- models ------------------------------------------------------------------------------------------------------


def test_request_model_checks() -> None:
    x = InferInput("x", np.zeros(1, np.float32))
    with pytest.raises(UsageError, match="same name"):
        InferRequest((x, InferInput("x", np.ones(1, np.float32))))
    with pytest.raises(UsageError, match="only when outputs are requested"):
        InferRequest((x,), binary_outputs=frozenset({"y"}))
    with pytest.raises(UsageError, match="not requested"):
        InferRequest((x,), outputs=("a",), binary_outputs={"b"})
    with pytest.raises(UsageError, match="requested twice"):
        InferRequest((x,), outputs=("a", "a"))
    with pytest.raises(UsageError, match="binary_outputs"):
        InferRequest((x,), parameters={"binary_data_output": True})
    with pytest.raises(UsageError, match="finite"):
        InferRequest((x,), parameters={"f": float("nan")})
    with pytest.raises(UsageError, match="numpy array"):
        InferInput("x", [1.0])  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="name"):
        InferInput("", np.zeros(1))
    assert InferRequest((x,), outputs=("a", "b"), binary_outputs=True).binary_outputs == frozenset({"a", "b"})
    assert InferRequest((x,), outputs=("a",)).binary_outputs == frozenset()
    assert InferRequest((x,), binary_outputs=np.True_).binary_outputs is True
    assert InferRequest((x,), binary_outputs=frozenset()).binary_outputs is False
    with pytest.raises(UsageError, match="same name"):
        InferResponse("m", None, (InferOutput("y", np.zeros(1)), InferOutput("y", np.zeros(1))))
    parameters = {"a": 1}
    request = InferRequest((x,), parameters=parameters)
    parameters["a"] = 2
    assert request.parameters["a"] == 1  # A copy, read-only.
    with pytest.raises(TypeError):
        request.parameters["a"] = 3  # type: ignore[index]


def test_model_metadata_and_errors() -> None:
    document = model_metadata(
        "resnet50",
        ["1", "2"],
        [("gpu_0/data_0", "FP32", [-1, 3, 224, 224])],
        [("gpu_0/softmax_1", "FP32", (-1, 1000))],
        {"sha256": "ab" * 32},
    )
    assert document == {
        "name": "resnet50",
        "versions": ["1", "2"],
        "platform": "onnx_onnxv1",
        "inputs": [{"name": "gpu_0/data_0", "datatype": "FP32", "shape": [-1, 3, 224, 224]}],
        "outputs": [{"name": "gpu_0/softmax_1", "datatype": "FP32", "shape": [-1, 1000]}],
        "parameters": {"sha256": "ab" * 32},
    }
    json.dumps(document, allow_nan=False)
    with pytest.raises(UsageError, match="unknown datatype"):
        model_metadata("m", ["1"], [("x", "FLOAT", [1])], [])
    with pytest.raises(UsageError, match="dimensions"):
        model_metadata("m", ["1"], [("x", "FP32", [-2])], [])
    body = error_body('model "m" not found\n')
    assert json.loads(body) == {"error": 'model "m" not found\n'}
    assert error_message(body) == 'model "m" not found\n'
    assert error_message(b"not json") is None
    assert error_message(b'{"error":{"code":"x"}}') is None
    assert error_message(b"\xff") is None


def test_exported_names() -> None:
    designed = {
        "InferInput", "InferOutput", "InferRequest", "InferResponse", "Limits", "decode_request",
        "decode_response", "encode_request", "encode_response", "model_metadata", "error_body",
    }  # fmt: skip
    assert designed <= set(protocol.__all__)
    assert protocol.Limits is tensors.Limits
    for module in (protocol, tensors):
        assert len(set(module.__all__)) == len(module.__all__)
        missing = [name for name in module.__all__ if not hasattr(module, name)]
        assert missing == []


# -- fuzz: malformed bodies may only raise BoundaryError ------------------------------------------------------------


def _valid_bodies() -> list[tuple[bytes, int | None]]:
    request = InferRequest(
        (
            InferInput("a", np.arange(6, dtype=np.float32).reshape(2, 3)),
            InferInput("b", np.array([b"xy", b""], dtype=object)),
            InferInput("c", np.array([True, False])),
        ),
        outputs=("o",),
        binary_outputs=True,
    )
    bodies = []
    for binary in (True, False):
        body, headers = encode_request(request, binary=binary)
        bodies.append((body, parse_header_length(headers.get(HEADER_LENGTH))))
    return bodies


_VALID = _valid_bodies()


@FUZZ
@given(
    which=st.integers(0, len(_VALID) - 1),
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=6),
    cut=st.none() | st.integers(0, 10_000),
    length_delta=st.integers(-8, 8),
)
def test_fuzz_mutated_bodies_raise_only_boundary_error(
    which: int, edits: list[tuple[int, int]], cut: int | None, length_delta: int
) -> None:
    body, length = _VALID[which]
    mutated = bytearray(body)
    for position, value in edits:
        mutated[position % len(mutated)] = value
    if cut is not None:
        del mutated[cut % len(mutated) :]
    if length is not None:
        length = max(0, length + length_delta)
    for decode in (decode_request, decode_response):
        with contextlib.suppress(BoundaryError):
            decode(bytes(mutated), None, length, Limits(max_elements=1000, max_bytes=10_000))


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
_FIELDS = (
    "name",
    "shape",
    "datatype",
    "data",
    "parameters",
    "binary_data_size",
    "binary_data",
    "inputs",
    "outputs",
)


@FUZZ
@given(
    where=st.sampled_from(["top", "input", "output", "input parameters", "output parameters"]),
    key=st.sampled_from(_FIELDS) | st.text(max_size=6),
    value=_JSON,
    tail=st.binary(max_size=12),
)
def test_fuzz_structured_json_raises_only_boundary_error(
    where: str, key: str, value: Any, tail: bytes
) -> None:
    document: dict[str, Any] = {
        "inputs": [{"name": "x", "shape": [2], "datatype": "INT32", "data": [1, 2], "parameters": {}}],
        "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
        "model_name": "m",
    }
    target = {
        "top": document,
        "input": document["inputs"][0],
        "output": document["outputs"][0],
        "input parameters": document["inputs"][0]["parameters"],
        "output parameters": document["outputs"][0]["parameters"],
    }[where]
    target[key] = value
    header = json.dumps(document).encode()
    for decode in (decode_request, decode_response):
        for length in (None, len(header)):
            with contextlib.suppress(BoundaryError):
                decode(
                    header + tail, BINARY_CONTENT_TYPE, length, Limits(max_elements=1000, max_bytes=10_000)
                )


@FUZZ
@given(body=st.binary(max_size=64), length=st.none() | st.integers(0, 80))
def test_fuzz_random_bytes_raise_only_boundary_error(body: bytes, length: int | None) -> None:
    for decode in (decode_request, decode_response):
        with contextlib.suppress(BoundaryError):
            decode(body, None, length)
