"""Where collateral comes from: Intel PCS or a PCCS over HTTP, an offline bundle file, and a cache in front.

Every source implements :class:`CollateralSource` (one method, ``fetch(fmspc, ca)``). HTTP goes through a
tiny :class:`Transport`, with :class:`HttpxTransport` for real use and :class:`MockTransport` for tests
(defined in the private ``_transport`` module, re-exported here), so no test needs the internet.
Errors follow :mod:`enklave.errors`: the service failed or answered an error status, or a file is missing ->
:class:`CollateralUnavailable`; the bytes are malformed or oversized -> :class:`InvalidCollateral`; a bad
argument -> :class:`UsageError`. Messages name the URL or path and the reason, never credentials.
"""

from __future__ import annotations

import abc
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final, NamedTuple, TypeVar
from urllib.parse import unquote, urlsplit

from enklave.attestation._transport import (
    MAX_RESPONSE_SIZE,
    HttpResponse,
    HttpxTransport,
    MockTransport,
    Transport,
    check_http_url,
    printable,
    redact,
)
from enklave.attestation.collateral import (
    MAX_COLLATERAL_JSON_SIZE,
    QeIdentity,
    QuoteCollateral,
    TcbInfo,
    parse_crl,
)
from enklave.errors import (
    CollateralMismatchError,
    CollateralUnavailable,
    InvalidCollateral,
    TransportError,
    UsageError,
)

__all__ = [
    "CA_TYPES",
    "INTEL_PCS_URL",
    "INTEL_ROOT_CA_CRL_URL",
    "MAX_RESPONSE_SIZE",
    "SERVICE_MAX_AGE",
    "CachingCollateralSource",
    "CollateralSource",
    "HttpResponse",
    "HttpxTransport",
    "MockTransport",
    "OfflineCollateralSource",
    "PcsCollateralSource",
    "Transport",
    "read_collateral_file",
    "write_collateral_file",
]

INTEL_PCS_URL = "https://api.trustedservices.intel.com"
"""Base URL of Intel's Provisioning Certification Service."""
INTEL_ROOT_CA_CRL_URL = "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der"
"""Where Intel publishes the SGX Root CA's CRL (DER)."""
CA_TYPES = ("processor", "platform")
"""The PCK CAs a collateral request can name."""

_FMSPC_SIZE = 6
_T = TypeVar("_T")


def _check_request(fmspc: bytes, ca: str) -> bytes:
    if not isinstance(fmspc, bytes | bytearray) or len(fmspc) != _FMSPC_SIZE:
        raise UsageError(f"fmspc must be {_FMSPC_SIZE} bytes")
    if ca not in CA_TYPES:
        raise UsageError(f"ca must be 'processor' or 'platform', not {str(ca)[:20]!r}")
    return bytes(fmspc)


class CollateralSource(abc.ABC):
    """Something that can produce the collateral for a platform."""

    @abc.abstractmethod
    def fetch(self, fmspc: bytes, ca: str) -> QuoteCollateral:
        """Return collateral for the FMSPC (6 bytes) of a platform whose PCK certificate ``ca`` issued.

        ``ca`` is "processor" or "platform" (anything else raises :class:`UsageError`). Raises
        :class:`CollateralUnavailable` when it cannot be obtained and :class:`InvalidCollateral` when what
        came is malformed. Nothing is verified: the verifier checks signatures, chains and validity.
        """


class PcsCollateralSource(CollateralSource):
    """Collateral from Intel PCS (API v4, or v3) or from a PCCS, which serves the same API.

    With Intel's base URL the root CA CRL comes from :data:`INTEL_ROOT_CA_CRL_URL`; with any other base URL
    (a PCCS) from ``{base}/sgx/certification/v{N}/rootcacrl``; ``root_ca_crl_url`` overrides both. A PCS
    answer for another FMSPC than asked raises :class:`CollateralMismatchError`.
    """

    def __init__(
        self,
        base_url: str = INTEL_PCS_URL,
        *,
        transport: Transport | None = None,
        api_version: int = 4,
        root_ca_crl_url: str | None = None,
    ) -> None:
        if api_version not in (3, 4):
            raise UsageError(f"api_version must be 3 or 4, not {api_version!r}")
        parts = urlsplit(check_http_url(base_url, "base_url"))
        self._api_version = api_version
        self._api = f"{base_url.rstrip('/')}/sgx/certification/v{api_version}"
        if root_ca_crl_url is None:
            intel = parts.hostname == urlsplit(INTEL_PCS_URL).hostname
            root_ca_crl_url = INTEL_ROOT_CA_CRL_URL if intel else f"{self._api}/rootcacrl"
        self._root_ca_crl_url = root_ca_crl_url
        self._transport = transport if transport is not None else HttpxTransport()

    def fetch(self, fmspc: bytes, ca: str) -> QuoteCollateral:
        fmspc = _check_request(fmspc, ca)
        # 1. PCK CRL of the CA that issued the platform's PCK certificate ("Get PCK Cert CRL"); v4 answers DER
        #    when asked, v3 answers PEM. Its issuer chain is in a URL-encoded PEM header.
        params = {"ca": ca, "encoding": "der"} if self._api_version == 4 else {"ca": ca}
        pck_crl_url = f"{self._api}/pckcrl"
        pck_crl = self._get(pck_crl_url, params)
        pck_crl_chain = _issuer_chain(pck_crl, pck_crl_url, "SGX-PCK-CRL-Issuer-Chain")
        # Parsed here only so that an error names the URL; from_parts below keeps the bytes.
        _parsed(pck_crl_url, parse_crl, pck_crl.body)
        # 2. TCB info for the FMSPC. Its chain header is TCB-Info-Issuer-Chain in v4 and
        #    SGX-TCB-Info-Issuer-Chain in v3.
        tcb_url = f"{self._api}/tcb"
        tcb = self._get(tcb_url, {"fmspc": fmspc.hex().upper()})
        tcb_chain = _issuer_chain(tcb, tcb_url, "TCB-Info-Issuer-Chain", "SGX-TCB-Info-Issuer-Chain")
        tcb_info = _parsed(tcb_url, TcbInfo.from_signed_json, tcb.body)
        if tcb_info.fmspc != fmspc:
            raise CollateralMismatchError(
                f"{redact(tcb_url)} answered TCB info for FMSPC {tcb_info.fmspc.hex()}, not {fmspc.hex()}"
            )
        # 3. Identity of the quoting enclave.
        qe_url = f"{self._api}/qe/identity"
        qe = self._get(qe_url)
        qe_chain = _issuer_chain(qe, qe_url, "SGX-Enclave-Identity-Issuer-Chain")
        qe_identity = _parsed(qe_url, QeIdentity.from_signed_json, qe.body)
        # 4. The root CA CRL (DER from Intel; a PCCS may answer DER or hex).
        root_crl = self._get(self._root_ca_crl_url)
        _parsed(self._root_ca_crl_url, parse_crl, root_crl.body)
        # 5. Assemble; only the issuer chains are still unparsed, and their errors name the chain.
        return QuoteCollateral.from_parts(
            pck_crl_issuer_chain=pck_crl_chain,
            root_ca_crl=root_crl.body,
            pck_crl=pck_crl.body,
            tcb_info_issuer_chain=tcb_chain,
            tcb_info=tcb_info,
            qe_identity_issuer_chain=qe_chain,
            qe_identity=qe_identity,
        )

    def _get(self, url: str, params: Mapping[str, str] | None = None) -> HttpResponse:
        response = self._transport.get(url, params=params)
        if not 200 <= response.status < 300:
            details = [f"HTTP {response.status}"]
            for header in ("Error-Code", "Error-Message"):
                if header in response.headers:
                    details.append(f"{header}: {printable(response.headers[header])}")
            raise CollateralUnavailable(f"GET {redact(url)} answered {', '.join(details)}")
        return response


def _issuer_chain(response: HttpResponse, url: str, *names: str) -> str:
    for name in names:
        if name in response.headers:
            try:
                return unquote(response.headers[name], errors="strict")
            except UnicodeDecodeError as exc:
                raise InvalidCollateral(f"{redact(url)}: the {name} header is not URL-encoded PEM") from exc
    raise InvalidCollateral(f"{redact(url)} answered without the {names[0]} header")


def _parsed(url: str, parse: Callable[..., _T], *args: object) -> _T:
    """Run a parser, naming the URL in any :class:`InvalidCollateral` it raises."""
    try:
        return parse(*args)
    except InvalidCollateral as exc:
        raise InvalidCollateral(f"{redact(url)}: {exc}") from exc


def read_collateral_file(path: str | os.PathLike[str]) -> QuoteCollateral:
    """Read a collateral file (dcap-qvl JSON, see :meth:`QuoteCollateral.from_json`).

    Raises :class:`CollateralUnavailable` when it cannot be read and :class:`InvalidCollateral` when it is
    malformed or larger than :data:`~enklave.attestation.collateral.MAX_COLLATERAL_JSON_SIZE`.
    """
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_COLLATERAL_JSON_SIZE + 1)
    except OSError as exc:
        raise CollateralUnavailable(
            f"cannot read collateral file {os.fspath(path)!r}: {exc.strerror}"
        ) from exc
    if len(data) > MAX_COLLATERAL_JSON_SIZE:
        raise InvalidCollateral(
            f"collateral file {os.fspath(path)!r} is larger than {MAX_COLLATERAL_JSON_SIZE} bytes"
        )
    return QuoteCollateral.from_json(data)


def write_collateral_file(path: str | os.PathLike[str], collateral: QuoteCollateral) -> None:
    """Write ``collateral`` as dcap-qvl JSON, atomically: readers see the old file or the new one, never half.

    Raises :class:`TransportError` when the file system fails.
    """
    target = Path(path)
    temporary: str | None = None
    try:
        with tempfile.NamedTemporaryFile(
            "w", encoding="utf-8", dir=target.parent, prefix=f".{target.name}.", delete=False
        ) as file:
            temporary = file.name
            file.write(collateral.to_json() + "\n")
        os.replace(temporary, target)
    except OSError as exc:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
        raise TransportError(f"cannot write collateral file {os.fspath(path)!r}: {exc.strerror}") from exc


class OfflineCollateralSource(CollateralSource):
    """Collateral from a file written earlier (e.g. by ``enklave collateral fetch``), read on every fetch.

    A file for another FMSPC, or whose PCK CRL is from the other Intel PCK CA, raises
    :class:`CollateralUnavailable`, like a missing or unreadable file; a malformed one raises
    :class:`InvalidCollateral`.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = os.fspath(path)

    def fetch(self, fmspc: bytes, ca: str) -> QuoteCollateral:
        fmspc = _check_request(fmspc, ca)
        collateral = read_collateral_file(self._path)
        if collateral.fmspc != fmspc:
            raise CollateralUnavailable(
                f"collateral file {self._path!r} is for FMSPC {collateral.fmspc.hex()}, not {fmspc.hex()}"
            )
        if collateral.pck_crl_ca not in (None, ca):
            raise CollateralUnavailable(
                f"collateral file {self._path!r} has the PCK CRL of the {collateral.pck_crl_ca} CA, "
                f"not of the {ca} CA"
            )
        return collateral


def _utc_now() -> datetime:
    return datetime.now(UTC)


class _Entry(NamedTuple):
    collateral: QuoteCollateral
    fetched_at: datetime


SERVICE_MAX_AGE: Final = timedelta(days=1)
"""How long enklave's services keep collateral (``max_age``), as a PCCS refreshes it by default. A set's
``nextUpdate`` is the latest date by which Intel reissues it, not the earliest: a revocation or a TCB recovery can
appear in new CRLs and TCB info sooner, and a cache held until ``nextUpdate`` (about a month) would miss it."""


class CachingCollateralSource(CollateralSource):
    """A thread-safe cache in front of another source, keyed by (FMSPC, CA).

    An entry is served while ``clock()`` is before the collateral's earliest nextUpdate (and, with
    ``max_age``, younger than that); otherwise it is fetched again. At most ``max_entries`` entries are kept,
    the least recently fetched going first. Concurrent misses for one key may each fetch; the last answer is
    kept.
    Errors of the inner source pass through, and nothing stale is served in their place.
    """

    def __init__(
        self,
        inner: CollateralSource,
        *,
        clock: Callable[[], datetime] = _utc_now,
        max_age: timedelta | None = None,
        max_entries: int = 64,
    ) -> None:
        if max_entries < 1:
            raise UsageError("max_entries must be at least 1")
        if max_age is not None and max_age <= timedelta(0):
            raise UsageError("max_age must be positive")
        self._inner = inner
        self._clock = clock
        self._max_age = max_age
        self._max_entries = max_entries
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[bytes, str], _Entry] = OrderedDict()

    def fetch(self, fmspc: bytes, ca: str) -> QuoteCollateral:
        key = (_check_request(fmspc, ca), ca)
        now = self._now()
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and self._fresh(entry, now):
                return entry.collateral
        # The inner fetch runs outside the lock, so that a slow service does not stall hits for other keys.
        collateral = self._inner.fetch(key[0], ca)
        with self._lock:
            self._entries.pop(key, None)
            self._entries[key] = _Entry(collateral, now)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
        return collateral

    def invalidate(self, fmspc: bytes | None = None) -> None:
        """Forget every entry, or only those for ``fmspc``."""
        with self._lock:
            if fmspc is None:
                self._entries.clear()
                return
            for key in [key for key in self._entries if key[0] == fmspc]:
                del self._entries[key]

    def _now(self) -> datetime:
        now = self._clock()
        if now.utcoffset() is None:
            raise UsageError("the cache clock must return timezone-aware datetimes")
        return now

    def _fresh(self, entry: _Entry, now: datetime) -> bool:
        if now >= entry.collateral.earliest_next_update:
            return False
        return self._max_age is None or now - entry.fetched_at < self._max_age
