"""enklave's JSON decoding: every malformed document is a ValueError, too deep nesting included."""

from __future__ import annotations

import json

import pytest

from enklave._json import loads, strict_loads
from enklave.errors import BadDataError
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
