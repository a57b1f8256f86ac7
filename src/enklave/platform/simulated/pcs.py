"""A local PCS-compatible HTTP endpoint that serves the simulated platform's collateral (Starlette, ASGI).

It implements the Intel PCS API v4 routes that :class:`enklave.attestation.sources.PcsCollateralSource` calls,
with Intel's response shapes, so services of later issues fetch simulated collateral exactly as they fetch
real collateral from Intel or a PCCS::

    GET /sgx/certification/v4/pckcrl?ca=platform[&encoding=der|pem]
        PCK CRL (DER when asked, PEM otherwise); header SGX-PCK-CRL-Issuer-Chain
    GET /sgx/certification/v4/tcb?fmspc=<12 hex digits>[&update=early|standard]
        {"tcbInfo":...,"signature":...}; header TCB-Info-Issuer-Chain
    GET /sgx/certification/v4/qe/identity[?update=early|standard]
        {"enclaveIdentity":...,"signature":...}; header SGX-Enclave-Identity-Issuer-Chain
    GET /sgx/certification/v4/rootcacrl
        root CA CRL (DER), as a PCCS serves it

Issuer chains are URL-encoded PEM, as Intel sends them. Errors answer JSON ``{"error": code, "message": text}``
with Intel's ``Error-Code`` and ``Error-Message`` headers: 400 for a missing, malformed or unknown parameter,
404 for an unknown FMSPC, for the processor CA (the simulated PKI has only the Platform CA) and for any other
path. Every answer carries a ``Request-ID`` header.

The endpoint plays the simulated Intel: when the stored collateral is stale at the time of a request (see
:func:`~enklave.platform.simulated.collateral.needs_refresh`) it signs a new set with the simulated Intel's keys.
It never reads the simulated CPU's secrets.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Final
from urllib.parse import quote

from cryptography.hazmat.primitives.serialization import Encoding
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from enklave.attestation.collateral import QuoteCollateral
from enklave.platform.simulated.collateral import needs_refresh, qe_identity_document, tcb_info_document
from enklave.platform.simulated.store import platform_info, refresh_collateral, sim_dir

__all__ = ["API_PREFIX", "create_pcs_app"]

API_PREFIX: Final = "/sgx/certification/v4"

_UPDATE_VALUES = frozenset({"early", "standard"})
_CRL_ENCODINGS = frozenset({"der", "pem"})
_FMSPC = re.compile(r"[0-9A-Fa-f]{12}")


def _utc_now() -> datetime:
    return datetime.now(UTC)


class _BadRequest(Exception):
    """A request parameter is missing, malformed or unknown (answered 400)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _NotFound(Exception):
    """The resource does not exist for the simulated platform (answered 404)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(
        {"error": code, "message": message},
        status_code=status,
        headers={"Error-Code": code, "Error-Message": message, "Request-ID": uuid.uuid4().hex},
    )


def _params(request: Request, allowed: frozenset[str]) -> dict[str, str]:
    """The query parameters, each at most once and all in ``allowed``."""
    items = request.query_params.multi_items()
    names = [name for name, _ in items]
    unknown = sorted(set(names) - allowed)
    if unknown:
        raise _BadRequest(f"unknown query parameter {unknown[0][:40]!r}")
    if len(set(names)) != len(names):
        raise _BadRequest("a query parameter is repeated")
    return dict(items)


def _check_update(params: Mapping[str, str]) -> None:
    update = params.get("update")
    if update is not None and update not in _UPDATE_VALUES:
        raise _BadRequest("update must be 'early' or 'standard'")


def _chain_header(pem: bytes) -> str:
    # Intel URL-encodes the whole PEM text, newlines included.
    return quote(pem.decode("ascii"), safe="")


class _SimulatedPcs:
    """The endpoint's state: where the platform lives, the clock, and the last collateral served."""

    def __init__(self, home: Path, clock: Callable[[], datetime]) -> None:
        self._home = home
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: tuple[int, QuoteCollateral] | None = None

    def collateral(self) -> QuoteCollateral:
        """The current collateral: re-read when the file changed, re-signed when stale at the clock's time."""
        now = self._clock()
        path = sim_dir(self._home) / "public" / "collateral.json"
        with self._lock:
            try:
                stamp = path.stat().st_mtime_ns
            except OSError:
                stamp = -1
            cached = self._cached
            if cached is not None and cached[0] == stamp and not needs_refresh(cached[1], now):
                return cached[1]
            collateral = refresh_collateral(self._home, now=now)
            try:
                stamp = path.stat().st_mtime_ns
            except OSError:
                stamp = -1
            self._cached = (stamp, collateral)
            return collateral

    def pck_crl(self, request: Request) -> Response:
        params = _params(request, frozenset({"ca", "encoding"}))
        ca = params.get("ca")
        if ca is None:
            raise _BadRequest("the ca parameter is required ('processor' or 'platform')")
        if ca.lower() not in ("processor", "platform"):
            raise _BadRequest("ca must be 'processor' or 'platform'")
        encoding = params.get("encoding", "pem").lower()
        if encoding not in _CRL_ENCODINGS:
            raise _BadRequest("encoding must be 'der' or 'pem'")
        if ca.lower() != "platform":
            raise _NotFound("the simulated PKI has only a PCK Platform CA, no processor CA")
        collateral = self.collateral()
        der = encoding == "der"
        body = collateral.pck_crl.public_bytes(Encoding.DER if der else Encoding.PEM)
        return Response(
            body,
            media_type="application/pkix-crl" if der else "application/x-pem-file",
            headers=self._headers(SGX_PCK_CRL_ISSUER_CHAIN=collateral.pck_crl_issuer_chain_pem),
        )

    def tcb_info(self, request: Request) -> Response:
        params = _params(request, frozenset({"fmspc", "update"}))
        _check_update(params)
        fmspc = params.get("fmspc")
        if fmspc is None:
            raise _BadRequest("the fmspc parameter is required")
        if not _FMSPC.fullmatch(fmspc):
            raise _BadRequest("fmspc must be 12 hexadecimal digits")
        collateral = self.collateral()
        if bytes.fromhex(fmspc) != collateral.fmspc:
            raise _NotFound(f"no TCB info for FMSPC {fmspc.upper()}")
        return Response(
            tcb_info_document(collateral),
            media_type="application/json",
            headers=self._headers(TCB_INFO_ISSUER_CHAIN=collateral.tcb_info_issuer_chain_pem),
        )

    def qe_identity(self, request: Request) -> Response:
        _check_update(_params(request, frozenset({"update"})))
        collateral = self.collateral()
        return Response(
            qe_identity_document(collateral),
            media_type="application/json",
            headers=self._headers(SGX_ENCLAVE_IDENTITY_ISSUER_CHAIN=collateral.qe_identity_issuer_chain_pem),
        )

    def root_ca_crl(self, request: Request) -> Response:
        _params(request, frozenset())
        collateral = self.collateral()
        return Response(
            collateral.root_ca_crl.public_bytes(Encoding.DER),
            media_type="application/pkix-crl",
            headers=self._headers(),
        )

    @staticmethod
    def _headers(**chains: bytes) -> dict[str, str]:
        headers = {name.replace("_", "-"): _chain_header(pem) for name, pem in chains.items()}
        headers["Request-ID"] = uuid.uuid4().hex
        return headers


def create_pcs_app(home: Path | str | None = None, *, clock: Callable[[], datetime] = _utc_now) -> Starlette:
    """The ASGI app of the local PCS for the simulated platform in ``home`` (default: the data directory).

    ``clock`` gives the time at which collateral must be fresh (a test may pass a fake one). Raises
    :class:`~enklave.errors.PlatformError` when the platform was never provisioned.
    """
    info = platform_info(home)
    pcs = _SimulatedPcs(info.home, clock)

    def endpoint(handler: Callable[[Request], Response]) -> Callable[[Request], Response]:
        def run(request: Request) -> Response:
            try:
                return handler(request)
            except _BadRequest as exc:
                return _error(400, "InvalidParameter", exc.message)
            except _NotFound as exc:
                return _error(404, "NotFound", exc.message)

        return run

    async def not_found(request: Request, exc: Exception) -> Response:
        if isinstance(exc, HTTPException) and exc.status_code == 405:
            return _error(405, "MethodNotAllowed", "only GET is supported")
        return _error(404, "NotFound", "no such resource")

    # Plain (synchronous) endpoints run in Starlette's thread pool, so a re-signing never blocks the event loop.
    routes = [
        Route(f"{API_PREFIX}/pckcrl", endpoint(pcs.pck_crl), methods=["GET"]),
        Route(f"{API_PREFIX}/tcb", endpoint(pcs.tcb_info), methods=["GET"]),
        Route(f"{API_PREFIX}/qe/identity", endpoint(pcs.qe_identity), methods=["GET"]),
        Route(f"{API_PREFIX}/rootcacrl", endpoint(pcs.root_ca_crl), methods=["GET"]),
    ]
    return Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found})
