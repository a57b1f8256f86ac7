"""Tests for enklave.attestation.sources: PCS/PCCS over a mock transport, offline files, the cache."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from enklave.attestation import sources as sources_module
from enklave.attestation.collateral import QuoteCollateral
from enklave.attestation.policy import EnclavePolicy
from enklave.attestation.sources import (
    INTEL_PCS_URL,
    INTEL_ROOT_CA_CRL_URL,
    CachingCollateralSource,
    CollateralSource,
    HttpResponse,
    HttpxTransport,
    MockTransport,
    OfflineCollateralSource,
    PcsCollateralSource,
    read_collateral_file,
    write_collateral_file,
)
from enklave.errors import (
    CollateralMismatchError,
    CollateralUnavailable,
    InvalidCollateral,
    TransportError,
    UsageError,
)
from enklave.inference import Client
from enklave.services.kbs import KbsClient

ASSETS = Path(__file__).parent / "assets"
PHALA = ASSETS / "phala-dcap-qvl" / "sgx_quote_collateral.json"
INTEL_BUNDLE = ASSETS / "intel-qvl-sampledata" / "derived" / "dcap_qvl_style_collateral.json"
FMSPC = bytes.fromhex("00A067110000")
API = f"{INTEL_PCS_URL}/sgx/certification/v4"


def vector() -> dict[str, str]:
    data: dict[str, str] = json.loads(PHALA.read_text())
    return data


def encoded(pem: str) -> str:
    # Intel URL-encodes the whole PEM chain, including '+', '/', '=' and newlines.
    return quote(pem, safe="")


def signed(key: str, body: str, signature: str) -> bytes:
    return f'{{"{key}":{body},"signature":"{signature}"}}'.encode()


def pcs_routes(api: str = API, root_crl_url: str = INTEL_ROOT_CA_CRL_URL) -> dict[str, HttpResponse]:
    """The real phala collateral, served the way PCS v4 serves it."""
    raw = vector()
    return {
        f"{api}/pckcrl?ca=processor&encoding=der": HttpResponse(
            200,
            {"SGX-PCK-CRL-Issuer-Chain": encoded(raw["pck_crl_issuer_chain"])},
            bytes.fromhex(raw["pck_crl"]),
        ),
        f"{api}/tcb?fmspc=00A067110000": HttpResponse(
            200,
            {
                "TCB-Info-Issuer-Chain": encoded(raw["tcb_info_issuer_chain"]),
                "Content-Type": "application/json",
            },
            signed("tcbInfo", raw["tcb_info"], raw["tcb_info_signature"]),
        ),
        f"{api}/qe/identity": HttpResponse(
            200,
            {"SGX-Enclave-Identity-Issuer-Chain": encoded(raw["qe_identity_issuer_chain"])},
            signed("enclaveIdentity", raw["qe_identity"], raw["qe_identity_signature"]),
        ),
        root_crl_url: HttpResponse(200, {}, bytes.fromhex(raw["root_ca_crl"])),
    }


def expected() -> QuoteCollateral:
    return QuoteCollateral.from_json(PHALA.read_text())


# --- PCS / PCCS -------------------------------------------------------------------------------------------


def test_pcs_source_returns_the_vector_collateral() -> None:
    transport = MockTransport(pcs_routes())
    collateral = PcsCollateralSource(transport=transport).fetch(FMSPC, "processor")
    assert collateral == expected()
    assert collateral.to_json() == PHALA.read_text()
    assert transport.requests == [
        (f"{API}/pckcrl", {"ca": "processor", "encoding": "der"}),
        (f"{API}/tcb", {"fmspc": "00A067110000"}),
        (f"{API}/qe/identity", {}),
        (INTEL_ROOT_CA_CRL_URL, {}),
    ]


def test_pccs_base_url_takes_the_root_crl_from_the_pccs_as_hex() -> None:
    base = "https://pccs.example:8081"
    api = f"{base}/sgx/certification/v4"
    routes = pcs_routes(api, f"{api}/rootcacrl")
    routes[f"{api}/rootcacrl"] = HttpResponse(200, {}, vector()["root_ca_crl"].encode())
    transport = MockTransport(routes)
    assert PcsCollateralSource(f"{base}/", transport=transport).fetch(FMSPC, "processor") == expected()
    assert transport.requests[-1][0] == f"{api}/rootcacrl"


def test_v3_api_headers_and_pem_crl_are_understood() -> None:
    raw = vector()
    api = f"{INTEL_PCS_URL}/sgx/certification/v3"
    routes = pcs_routes(api)
    tcb = routes.pop(f"{api}/tcb?fmspc=00A067110000")
    routes[f"{api}/tcb?fmspc=00A067110000"] = HttpResponse(
        200, {"sgx-tcb-info-issuer-chain": encoded(raw["tcb_info_issuer_chain"])}, tcb.body
    )
    crl = routes.pop(f"{api}/pckcrl?ca=processor&encoding=der")
    pem_crl = QuoteCollateral.from_json(PHALA.read_text()).pck_crl.public_bytes(Encoding.PEM)
    routes[f"{api}/pckcrl?ca=processor"] = HttpResponse(200, dict(crl.headers), pem_crl)
    collateral = PcsCollateralSource(transport=MockTransport(routes), api_version=3).fetch(FMSPC, "processor")
    assert collateral == expected()


def test_explicit_root_crl_url_and_case_insensitive_headers() -> None:
    routes = pcs_routes(root_crl_url="https://mirror.example/root.crl")
    for url, response in list(routes.items()):
        routes[url] = HttpResponse(
            response.status, {k.upper(): v for k, v in response.headers.items()}, response.body
        )
    source = PcsCollateralSource(
        transport=MockTransport(routes), root_ca_crl_url="https://mirror.example/root.crl"
    )
    assert source.fetch(FMSPC, "processor") == expected()


@pytest.mark.parametrize(
    "failing",
    [
        f"{API}/pckcrl?ca=processor&encoding=der",
        f"{API}/tcb?fmspc=00A067110000",
        f"{API}/qe/identity",
        INTEL_ROOT_CA_CRL_URL,
    ],
)
def test_error_status_is_collateral_unavailable(failing: str) -> None:
    routes = pcs_routes()
    routes[failing] = HttpResponse(
        404, {"Error-Code": "InvalidParameter", "Error-Message": "No TCB info\nfor FMSPC"}, b"{}"
    )
    with pytest.raises(CollateralUnavailable) as caught:
        PcsCollateralSource(transport=MockTransport(routes)).fetch(FMSPC, "processor")
    message = str(caught.value)
    assert "404" in message
    assert "Error-Code: InvalidParameter" in message
    assert "No TCB info?for FMSPC" in message
    assert failing.split("?", maxsplit=1)[0] in message


def test_server_error_without_error_headers() -> None:
    routes = pcs_routes()
    routes[f"{API}/qe/identity"] = HttpResponse(503, {}, b"")
    with pytest.raises(CollateralUnavailable, match=r"HTTP 503$"):
        PcsCollateralSource(transport=MockTransport(routes)).fetch(FMSPC, "processor")


@pytest.mark.parametrize(
    ("url", "header"),
    [
        (f"{API}/pckcrl?ca=processor&encoding=der", "SGX-PCK-CRL-Issuer-Chain"),
        (f"{API}/tcb?fmspc=00A067110000", "TCB-Info-Issuer-Chain"),
        (f"{API}/qe/identity", "SGX-Enclave-Identity-Issuer-Chain"),
    ],
)
def test_missing_issuer_chain_header_is_invalid_collateral(url: str, header: str) -> None:
    routes = pcs_routes()
    routes[url] = HttpResponse(200, {}, routes[url].body)
    with pytest.raises(InvalidCollateral, match=header):
        PcsCollateralSource(transport=MockTransport(routes)).fetch(FMSPC, "processor")


@pytest.mark.parametrize(
    ("url", "body"),
    [
        (f"{API}/pckcrl?ca=processor&encoding=der", b"not a crl"),
        (f"{API}/tcb?fmspc=00A067110000", b'{"tcbInfo":{}}'),
        (f"{API}/qe/identity", b"<html>maintenance</html>"),
        (INTEL_ROOT_CA_CRL_URL, b""),
    ],
)
def test_malformed_body_is_invalid_collateral(url: str, body: bytes) -> None:
    routes = pcs_routes()
    routes[url] = HttpResponse(200, routes[url].headers, body)
    with pytest.raises(InvalidCollateral):
        PcsCollateralSource(transport=MockTransport(routes)).fetch(FMSPC, "processor")


def test_garbage_chain_header_names_the_chain() -> None:
    routes = pcs_routes()
    url = f"{API}/qe/identity"
    routes[url] = HttpResponse(200, {"SGX-Enclave-Identity-Issuer-Chain": "not%20PEM"}, routes[url].body)
    with pytest.raises(InvalidCollateral, match="QE identity issuer chain"):
        PcsCollateralSource(transport=MockTransport(routes)).fetch(FMSPC, "processor")


def test_malformed_crl_error_names_the_url() -> None:
    routes = pcs_routes()
    routes[INTEL_ROOT_CA_CRL_URL] = HttpResponse(200, {}, b"\x30\x03abc")
    with pytest.raises(InvalidCollateral, match=r"IntelSGXRootCA\.der: CRL is malformed"):
        PcsCollateralSource(transport=MockTransport(routes)).fetch(FMSPC, "processor")


def test_malformed_chain_header_is_invalid_collateral() -> None:
    routes = pcs_routes()
    url = f"{API}/qe/identity"
    routes[url] = HttpResponse(200, {"SGX-Enclave-Identity-Issuer-Chain": "%FF%FE"}, routes[url].body)
    with pytest.raises(InvalidCollateral, match="URL-encoded"):
        PcsCollateralSource(transport=MockTransport(routes)).fetch(FMSPC, "processor")


def test_tcb_info_for_another_fmspc_is_a_mismatch() -> None:
    routes = pcs_routes()
    other = bytes.fromhex("00906ED50000")
    routes[f"{API}/tcb?fmspc=00906ED50000"] = routes[f"{API}/tcb?fmspc=00A067110000"]
    with pytest.raises(CollateralMismatchError, match="00a067110000"):
        PcsCollateralSource(transport=MockTransport(routes)).fetch(other, "processor")


def test_transport_failure_passes_through() -> None:
    def handler(url: str, params: Mapping[str, str]) -> HttpResponse:
        raise CollateralUnavailable(f"GET {url} failed: timed out")

    with pytest.raises(CollateralUnavailable, match="timed out"):
        PcsCollateralSource(transport=MockTransport(handler)).fetch(FMSPC, "platform")


@pytest.mark.parametrize(
    ("fmspc", "ca"),
    [(FMSPC, "Processor"), (FMSPC, "both"), (FMSPC[:5], "processor"), ("00A067110000", "processor")],
)
def test_bad_requests_are_usage_errors(fmspc: bytes, ca: str) -> None:
    transport = MockTransport(pcs_routes())
    with pytest.raises(UsageError):
        PcsCollateralSource(transport=transport).fetch(fmspc, ca)
    assert transport.requests == []


def test_bad_source_configuration_is_a_usage_error() -> None:
    transport = MockTransport({})
    with pytest.raises(UsageError):
        PcsCollateralSource(transport=transport, api_version=5)
    with pytest.raises(UsageError):
        PcsCollateralSource("ftp://pccs.example", transport=transport)
    # A host or port the HTTP library cannot parse is refused where the URL is given, for every client.
    for url in ("http://[::1", "https://", "http://host:port"):
        with pytest.raises(UsageError, match="must be an http"):
            PcsCollateralSource(url, transport=transport)
        with pytest.raises(UsageError, match="must be an http"):
            KbsClient(url)
        with pytest.raises(UsageError, match="must be an http"):
            Client(url, policy=EnclavePolicy(mr_signer=bytes(32)))


# --- transports -------------------------------------------------------------------------------------------


def test_mock_transport_routes_and_records() -> None:
    transport = MockTransport({"https://a.example/x?k=v": HttpResponse(200, {"X-Y": "1"}, b"hit")})
    response = transport.get("https://a.example/x", params={"k": "v"})
    assert (response.status, response.body, response.headers["x-y"]) == (200, b"hit", "1")
    assert transport.get("https://a.example/other").status == 404
    assert transport.requests == [("https://a.example/x", {"k": "v"}), ("https://a.example/other", {})]


def httpx_transport(
    handler: Callable[[httpx.Request], httpx.Response], max_body_size: int = 1 << 20
) -> HttpxTransport:
    client = httpx.Client(transport=httpx.MockTransport(handler))
    return HttpxTransport(client=client, max_body_size=max_body_size)


def test_httpx_transport_returns_status_headers_and_body() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(404, headers={"Error-Code": "NotFound"}, content=b"missing")

    response = httpx_transport(handler).get("https://pcs.example/tcb", params={"fmspc": "00A067110000"})
    assert (response.status, response.body) == (404, b"missing")
    assert response.headers["error-code"] == "NotFound"
    assert str(seen[0].url) == "https://pcs.example/tcb?fmspc=00A067110000"


def test_httpx_transport_bounds_the_body() -> None:
    def streamed(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=iter([b"x" * 600, b"y" * 600]))

    transport = httpx_transport(streamed, max_body_size=1000)
    with pytest.raises(InvalidCollateral, match="larger than 1000 bytes"):
        transport.get("https://pcs.example/big")
    assert httpx_transport(streamed, max_body_size=1200).get("https://pcs.example/big").body[-1:] == b"y"

    def declared(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Length": "5000"}, content=b"x" * 5000)

    with pytest.raises(InvalidCollateral, match="larger"):
        httpx_transport(declared, max_body_size=1000).get("https://pcs.example/big")


@pytest.mark.parametrize(
    "error",
    [httpx.ConnectError("connection refused"), httpx.ReadTimeout("timed out")],
    ids=["connect", "timeout"],
)
def test_httpx_network_errors_are_collateral_unavailable(error: httpx.HTTPError) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise error

    with pytest.raises(CollateralUnavailable) as caught:
        httpx_transport(handler).get("https://user:s3cret@pccs.example:8081/sgx/certification/v4/qe/identity")
    message = str(caught.value)
    assert "https://pccs.example:8081/sgx/certification/v4/qe/identity" in message
    assert str(error) in message
    assert "s3cret" not in message
    assert isinstance(caught.value.__cause__, httpx.HTTPError)


def test_httpx_transport_leaves_a_given_client_open() -> None:
    client = httpx.Client(transport=httpx.MockTransport(lambda request: httpx.Response(200)))
    with HttpxTransport(client=client) as transport:
        assert transport.get("https://pcs.example/").status == 200
    assert not client.is_closed
    owned = HttpxTransport(timeout=5)
    owned.close()


# --- offline files ----------------------------------------------------------------------------------------


def test_write_then_read_collateral_file(tmp_path: Path) -> None:
    collateral = expected()
    path = tmp_path / "collateral.json"
    write_collateral_file(path, collateral)
    assert path.read_text() == PHALA.read_text() + "\n"
    assert read_collateral_file(path) == collateral
    assert sorted(p.name for p in tmp_path.iterdir()) == ["collateral.json"]
    with pytest.raises(TransportError):
        write_collateral_file(tmp_path / "missing-dir" / "c.json", collateral)


def test_offline_source_serves_a_matching_file(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(PHALA.read_text())
    source = OfflineCollateralSource(path)
    assert source.fetch(FMSPC, "processor") == expected()
    with pytest.raises(CollateralUnavailable, match="FMSPC 00a067110000"):
        source.fetch(bytes.fromhex("00906ED50000"), "processor")
    with pytest.raises(CollateralUnavailable, match="processor CA"):
        source.fetch(FMSPC, "platform")
    with pytest.raises(UsageError):
        source.fetch(FMSPC, "other")


def test_offline_source_file_errors(tmp_path: Path) -> None:
    with pytest.raises(CollateralUnavailable, match="cannot read"):
        OfflineCollateralSource(tmp_path / "absent.json").fetch(FMSPC, "processor")
    with pytest.raises(CollateralUnavailable, match="cannot read"):
        OfflineCollateralSource(tmp_path).fetch(FMSPC, "processor")
    broken = tmp_path / "broken.json"
    broken.write_text(PHALA.read_text()[:-10])
    with pytest.raises(InvalidCollateral):
        OfflineCollateralSource(broken).fetch(FMSPC, "processor")
    huge = tmp_path / "huge.json"
    huge.write_bytes(b" " * (2 << 20))
    with pytest.raises(InvalidCollateral, match="larger"):
        OfflineCollateralSource(huge).fetch(FMSPC, "processor")


def test_offline_source_with_intel_sample(tmp_path: Path) -> None:
    source = OfflineCollateralSource(INTEL_BUNDLE)
    collateral = source.fetch(bytes.fromhex("00707F000000"), "processor")
    assert collateral.pck_certificate_chain is not None


# --- cache ------------------------------------------------------------------------------------------------


class CountingSource(CollateralSource):
    def __init__(self, collateral: QuoteCollateral) -> None:
        self.collateral = collateral
        self.calls: list[tuple[bytes, str]] = []
        self.fail = False

    def fetch(self, fmspc: bytes, ca: str) -> QuoteCollateral:
        self.calls.append((fmspc, ca))
        if self.fail:
            raise CollateralUnavailable("PCS is down")
        return self.collateral


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


NEXT_UPDATE = datetime(2025, 7, 19, 10, 1, 18, tzinfo=UTC)  # the phala set's earliest nextUpdate


def test_cache_serves_until_next_update() -> None:
    inner = CountingSource(expected())
    clock = Clock(datetime(2025, 7, 1, tzinfo=UTC))
    cache = CachingCollateralSource(inner, clock=clock)
    first = cache.fetch(FMSPC, "processor")
    clock.now = NEXT_UPDATE - timedelta(seconds=1)
    assert cache.fetch(FMSPC, "processor") is first
    assert len(inner.calls) == 1
    clock.now = NEXT_UPDATE
    cache.fetch(FMSPC, "processor")
    assert len(inner.calls) == 2
    # A set that is already stale is fetched on every call.
    cache.fetch(FMSPC, "processor")
    assert len(inner.calls) == 3


def test_cache_honours_max_age() -> None:
    inner = CountingSource(expected())
    clock = Clock(datetime(2025, 7, 1, tzinfo=UTC))
    cache = CachingCollateralSource(inner, clock=clock, max_age=timedelta(hours=1))
    cache.fetch(FMSPC, "processor")
    clock.now += timedelta(minutes=59)
    cache.fetch(FMSPC, "processor")
    assert len(inner.calls) == 1
    clock.now += timedelta(minutes=2)
    cache.fetch(FMSPC, "processor")
    assert len(inner.calls) == 2
    clock.now += timedelta(minutes=30)
    cache.fetch(FMSPC, "processor")
    assert len(inner.calls) == 2


def test_cache_keys_invalidation_and_eviction() -> None:
    inner = CountingSource(expected())
    clock = Clock(datetime(2025, 7, 1, tzinfo=UTC))
    cache = CachingCollateralSource(inner, clock=clock, max_entries=2)
    other = bytes.fromhex("00906ED50000")
    cache.fetch(FMSPC, "processor")
    cache.fetch(FMSPC, "platform")
    assert len(inner.calls) == 2
    cache.invalidate(other)
    cache.fetch(FMSPC, "processor")
    assert len(inner.calls) == 2
    cache.invalidate(FMSPC)
    cache.fetch(FMSPC, "processor")
    assert len(inner.calls) == 3
    cache.fetch(other, "processor")  # evicts the least recently fetched entry, (FMSPC, "platform")
    cache.fetch(FMSPC, "processor")
    assert len(inner.calls) == 4
    cache.fetch(FMSPC, "platform")
    assert len(inner.calls) == 5
    cache.invalidate()
    cache.fetch(FMSPC, "platform")
    assert len(inner.calls) == 6


def test_cache_passes_errors_through_and_caches_nothing() -> None:
    inner = CountingSource(expected())
    inner.fail = True
    cache = CachingCollateralSource(inner, clock=Clock(datetime(2025, 7, 1, tzinfo=UTC)))
    with pytest.raises(CollateralUnavailable):
        cache.fetch(FMSPC, "processor")
    inner.fail = False
    cache.fetch(FMSPC, "processor")
    assert len(inner.calls) == 2
    with pytest.raises(UsageError):
        cache.fetch(FMSPC, "nope")


def test_cache_configuration_and_clock_checks() -> None:
    inner = CountingSource(expected())
    with pytest.raises(UsageError):
        CachingCollateralSource(inner, max_entries=0)
    with pytest.raises(UsageError):
        CachingCollateralSource(inner, max_age=timedelta(0))
    naive = CachingCollateralSource(inner, clock=lambda: datetime(2025, 7, 1))
    with pytest.raises(UsageError, match="timezone-aware"):
        naive.fetch(FMSPC, "processor")


def test_cache_is_thread_safe() -> None:
    inner = CountingSource(expected())
    cache = CachingCollateralSource(inner, clock=Clock(datetime(2025, 7, 1, tzinfo=UTC)))
    barrier = threading.Barrier(8)
    results: list[QuoteCollateral] = []
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            barrier.wait()
            for _ in range(50):
                results.append(cache.fetch(FMSPC, "processor" if index % 2 else "platform"))
                if index == 0:
                    cache.invalidate()
        except BaseException as exc:  # Collected here, checked in the main thread.
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(results) == 400
    assert all(result is inner.collateral for result in results)


def test_public_names_are_exported() -> None:
    for name in sources_module.__all__:
        assert hasattr(sources_module, name), name
