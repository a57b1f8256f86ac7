"""enklave's JSON decoding: every malformed document is a ValueError, too deep nesting included."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from enklave._json import loads, strict_loads
from enklave.cli._io import read_json_object
from enklave.errors import BadDataError, UsageError
from enklave.inference import _client_messages

NESTED = ["[" * 100_000 + "]" * 100_000, '{"a":' * 50_000 + "1" + "}" * 50_000]


@pytest.mark.parametrize("text", NESTED)
def test_nesting_deeper_than_the_decoder_recurses_is_a_value_error(text: str) -> None:
    # The standard decoder raises RecursionError here, which no handler of bad input expects.
    with pytest.raises(RecursionError):
        json.loads(text)
    with pytest.raises(ValueError, match="nested too deeply"):
        loads(text)
    with pytest.raises(ValueError, match="nested too deeply"):
        strict_loads(text)
    with pytest.raises(ValueError, match="nested too deeply"):
        loads(text.encode())


def test_ordinary_documents_decode_as_before() -> None:
    assert loads(b'{"a": [1, 2.5, null]}') == {"a": [1, 2.5, None]}
    assert strict_loads('{"a": "b"}') == {"a": "b"}
    with pytest.raises(ValueError, match="duplicate key"):
        strict_loads('{"a": 1, "a": 2}')


@pytest.mark.parametrize("text", NESTED)
def test_an_inference_answer_nested_too_deeply_is_bad_data(text: str) -> None:
    with pytest.raises(BadDataError, match="not JSON"):
        _client_messages._json(text.encode(), "GET /v1/models")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"authority": "https://a", "authority": "https://b"}', "duplicate key 'authority'"),
        (b'{"n": NaN}', "non-standard JSON constant"),
        (b"[1, 2]", "does not hold a JSON object"),
        (b'{"a": "\xff"}', "is not JSON"),
        (NESTED[0].encode(), "nested too deeply"),
    ],
)
def test_json_files_given_on_the_command_line_are_read_strictly(
    tmp_path: Path, content: bytes, message: str
) -> None:
    # Release policies, JWKS and JWK files: a duplicated member could be read one way here and another way by the
    # service the document is sent to.
    path = tmp_path / "policy.json"
    path.write_bytes(content)
    with pytest.raises(BadDataError, match=message):
        read_json_object(str(path), what="the policy file", limit=1 << 20)


def test_a_json_object_file_is_returned_as_read(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text('{"keys": [{"kty": "EC", "crv": "P-256"}]}')
    assert read_json_object(str(path), what="the JWKS file", limit=100) == {
        "keys": [{"kty": "EC", "crv": "P-256"}]
    }
    with pytest.raises(UsageError, match="larger than 10 bytes"):
        read_json_object(str(path), what="the JWKS file", limit=10)
