"""The pieces both services share (enklave.services._response, _http and _client), on their own."""

from __future__ import annotations

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from enklave.errors import BadDataError, InvalidPolicy, PolicyError, TransportError, UsageError
from enklave.services._client import answer_error, open_http, request_json
from enklave.services._http import read_body, service_app, version_error
from enklave.services._response import bearer_token, check_admin
from service_fixtures import TestClient

ADMIN = "shared-admin-token-0123456789"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("Bearer abc", "abc"),
        ("bearer  abc ", "abc"),
        ("Basic abc", None),
        ("Bearer ", None),
        ("Bearer", None),
    ],
)
def test_bearer_token(header: str | None, expected: str | None) -> None:
    assert bearer_token(header) == expected


def test_check_admin_answers() -> None:
    disabled = check_admin(None, f"Bearer {ADMIN}", what="key management", disabled_code="KeyOff")
    assert disabled is not None and disabled.status == 403
    assert disabled.body["error"]["code"] == "KeyOff"
    assert "key management is disabled" in disabled.body["error"]["message"]
    missing = check_admin(ADMIN, None, what="key management", disabled_code="KeyOff")
    assert missing is not None and missing.status == 401
    wrong = check_admin(ADMIN, f"Bearer {ADMIN}x", what="key management", disabled_code="KeyOff")
    assert wrong is not None and (wrong.status, wrong.body["error"]["code"]) == (403, "Forbidden")
    assert check_admin(ADMIN, f"Bearer {ADMIN}", what="key management", disabled_code="KeyOff") is None


class _Service:
    def __init__(self) -> None:
        self.events: list[str] = []

    def start(self) -> None:
        self.events.append("start")

    def close(self) -> None:
        self.events.append("close")


def _app(service: _Service, *, manage: bool) -> TestClient:
    async def echo(request: Request) -> Response:
        refused = version_error(request, ("1", "2"))
        if refused is not None:
            return refused
        body = await read_body(request, 8)
        if isinstance(body, Response):
            return body
        if body == b"crash":
            raise RuntimeError("a bug")
        return Response(body)

    app = service_app([Route("/echo", echo, methods=["POST"])], service, manage_lifecycle=manage)
    return TestClient(app, raise_server_exceptions=False)


def test_service_app_errors_limits_and_lifecycle() -> None:
    service = _Service()
    with _app(service, manage=True) as http:
        assert service.events == ["start"]
        assert http.post("/echo?api-version=2", content=b"12345678").content == b"12345678"
        too_large = http.post("/echo?api-version=1", content=b"123456789")
        assert too_large.status_code == 413 and too_large.json()["error"]["code"] == "RequestTooLarge"
        version = http.post("/echo?api-version=3", content=b"")
        assert version.status_code == 400
        assert version.json()["error"]["message"].endswith("must be one of 1, 2")
        assert http.get("/nowhere").json()["error"]["code"] == "NotFound"
        assert http.get("/echo").status_code == 405
        crashed = http.post("/echo?api-version=1", content=b"crash")
        assert crashed.status_code == 500 and crashed.json() == {
            "error": {"code": "InternalError", "message": "internal error"}
        }
    assert service.events == ["start", "close"]
    unmanaged = _Service()
    with _app(unmanaged, manage=False):
        pass
    assert unmanaged.events == []


def test_answer_error_mapping() -> None:
    assert type(answer_error(502, "InvalidPolicy", "x", {"InvalidPolicy": InvalidPolicy})) is TransportError
    assert type(answer_error(401, "InvalidPolicy", "x", {"InvalidPolicy": InvalidPolicy})) is UsageError
    assert type(answer_error(400, "InvalidPolicy", "x", {"InvalidPolicy": InvalidPolicy})) is InvalidPolicy
    assert type(answer_error(404, "Other", "x")) is BadDataError


def test_request_json_reads_bounded_json_and_maps_errors() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/ok":
            assert request.url.params["api-version"] == "9"
            return httpx.Response(200, json={"value": 1})
        if request.url.path == "/big":
            return httpx.Response(200, content=b"[" + b"1," * 100 + b"1]")
        if request.url.path == "/list":
            return httpx.Response(200, json=[1])
        return httpx.Response(403, json={"error": {"code": "Denied\x1b", "message": "no"}})

    base, http, owned = open_http("http://svc.test/", None, httpx.MockTransport(handler), 5.0)
    assert (base, owned) == ("http://svc.test", True)
    seen: list[tuple[int, str, str]] = []

    def refuse(status: int, code: str, text: str) -> PolicyError:
        seen.append((status, code, text))
        return PolicyError(text, field=code)

    def get(path: str) -> dict[str, object]:
        return request_json(
            http, "GET", f"{base}{path}", path, limit=64, error=refuse, params={"api-version": "9"}
        )

    assert get("/ok") == {"value": 1}
    with pytest.raises(BadDataError, match="larger than 64 bytes"):
        get("/big")
    with pytest.raises(BadDataError, match="not a JSON object"):
        get("/list")
    with pytest.raises(PolicyError):
        get("/denied")
    # The server's code is handed over as sent; the message shows it only in printable form.
    assert seen[0][:2] == (403, "Denied\x1b") and "\x1b" not in seen[0][2]
    http.close()
    with pytest.raises(UsageError):
        open_http("ftp://svc.test", None, None, 5.0)
    with httpx.Client() as mine, pytest.raises(UsageError):
        open_http("http://svc.test", mine, httpx.MockTransport(handler), 5.0)
