"""What the synchronous and asynchronous inference clients share: their settings, the attestation step, the
outer requests they make (:class:`Call`) and the checks of the answers (:class:`Answer`), the handling of gateway
answers and of uploads, with no I/O of their own (see :mod:`enklave.inference.client`). Each client keeps only
its transport: it sends a :class:`Call` and reads its answer through a :class:`Reader`."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.cookiejar import CookieJar
from typing import Any, Final

from enklave import _b64url
from enklave.attestation._transport import check_http_url
from enklave.attestation.policy import Policy
from enklave.attestation.sources import CollateralSource
from enklave.attestation.tokens import TokenVerifier
from enklave.attestation.trust import TrustedRoot
from enklave.attestation.verify import QuoteVerifier
from enklave.channels.ohttp import ClientContext
from enklave.channels.ohttp_attested import (
    OHTTP_REQUEST_MEDIA_TYPE,
    OHTTP_RESPONSE_MEDIA_TYPE,
    BhttpRequest,
    BhttpResponse,
)
from enklave.errors import BadDataError, UsageError, VerificationError
from enklave.inference import _client_messages as msg
from enklave.inference._client_attest import (
    MAX_ATTESTATION_ANSWER,
    Attestation,
    AttestationMethod,
    Encapsulator,
    parse_answer,
    verify_answer,
)
from enklave.inference._client_upload import Upload, UploadResult
from enklave.inference.credentials import host_credential
from enklave.inference.protocol import Limits

__all__ = [
    "DEFAULT_MAX_REQUEST_SIZE",
    "Answer",
    "Base",
    "Call",
    "NoCookies",
    "Pin",
    "Progress",
    "Reader",
    "chunks",
    "json_object",
    "model_list",
]

DEFAULT_MAX_REQUEST_SIZE: Final = 64 << 20
"""Largest encapsulated request or response the client builds or reads by default (the gateway may accept less)."""

_CHUNK: Final = 1 << 20
Progress = Callable[[int, int], None]
"""An upload progress callback: ``progress(bytes sent, total bytes)``."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


class NoCookies(CookieJar):
    """A cookie jar that never keeps or sends a cookie: the clients' HTTP clients use it.

    The host and any relay are untrusted, and Oblivious HTTP exists so that they cannot link one client's
    requests (RFC 9458 §6.1); a cookie set by either and sent back would link them. Dropping cookies unread also
    spares the cookie machinery's work on every answer.
    """

    def extract_cookies(self, response: Any, request: Any) -> None:
        return None

    def add_cookie_header(self, request: Any) -> None:
        return None


@dataclass(frozen=True, slots=True, eq=False)
class Call:
    """One outer request to the host, built without I/O; each client sends it over its own transport.

    ``content`` is the body, whole or in pieces (an upload that reports progress); ``limit`` is the most bytes
    of the answer read. The headers may carry the owner's host credential: they stay out of the repr.
    """

    method: str
    path: str
    limit: int
    params: Mapping[str, str] | None = None
    content: bytes | Iterator[bytes] | None = field(default=None, repr=False)
    headers: Mapping[str, str] | None = field(default=None, repr=False)

    @property
    def what(self) -> str:
        """``METHOD /path``: what error messages name."""
        return f"{self.method} {self.path}"


@dataclass(frozen=True, slots=True, eq=False)
class Answer:
    """The host's answer to a :class:`Call` (``what`` names it): status, media type and the body read."""

    what: str
    status: int
    media_type: str
    body: bytes = field(repr=False)

    def json(self) -> dict[str, Any]:
        """The answer as a JSON object, or the error its status means (:func:`~._client_messages.read_outer_json`)."""
        return msg.read_outer_json(self.status, self.body, self.what)


class Reader:
    """Collects the body of the answer to one :class:`Call` piece by piece; :class:`BadDataError` as soon as it
    passes the call's limit, so that an endless answer costs no more than the limit."""

    __slots__ = ("_body", "_call")

    def __init__(self, call: Call) -> None:
        self._call = call
        self._body = bytearray()

    def feed(self, chunk: bytes) -> None:
        """Add ``chunk`` to the body; raises :class:`BadDataError` past the limit."""
        self._body += chunk
        if len(self._body) > self._call.limit:
            raise BadDataError(f"{self._call.what}: the answer is larger than {self._call.limit} bytes")

    def answer(self, status: int, media_type: str) -> Answer:
        """The answer, once the whole body was fed."""
        return Answer(self._call.what, status, media_type, bytes(self._body))


@dataclass(frozen=True, slots=True, eq=False)
class Pin:
    """A verified attestation and the client that encrypts to its key."""

    attestation: Attestation
    encapsulator: Encapsulator


class Base:
    """What both clients share: settings, verification, messages; every network call is the subclass's."""

    def __init__(
        self,
        url: str,
        *,
        policy: Policy,
        collateral_source: CollateralSource | None,
        roots: Sequence[TrustedRoot] | None,
        attestation: AttestationMethod,
        token_verifier: TokenVerifier | None,
        api_key: str | None,
        owner_token: str | None,
        timeout: float,
        clock: Callable[[], datetime] | None,
        limits: Limits | None,
        max_message_size: int,
    ) -> None:
        check_http_url(url, "url")
        if not isinstance(policy, Policy):
            raise UsageError("policy must be an appraisal Policy (e.g. EnclavePolicy(mr_enclave=...))")
        if attestation not in ("dcap", "token"):
            raise UsageError(f"attestation must be 'dcap' or 'token', not {attestation!r}")
        if attestation == "token" and token_verifier is None:
            raise UsageError(
                "attestation='token' needs a token_verifier for the attestation service's tokens"
            )
        for name, value in (("api_key", api_key), ("owner_token", owner_token)):
            if value is not None and (not isinstance(value, str) or not value or not value.isprintable()):
                raise UsageError(f"{name} must be a non-empty printable string")
        if not isinstance(timeout, int | float) or timeout <= 0:
            raise UsageError("timeout must be a positive number of seconds")
        if not isinstance(max_message_size, int) or max_message_size < 1024:
            raise UsageError("max_message_size must be an integer of at least 1024")
        self.url = url.rstrip("/")
        self.policy = policy
        self.method: AttestationMethod = attestation
        self.timeout = float(timeout)
        self._collateral_source = collateral_source
        self._token_verifier = token_verifier
        self._api_key = api_key
        self._owner_token = owner_token
        # The host gets only this credential derived from the token; the token itself goes only to the enclave.
        self._owner_credential = None if owner_token is None else host_credential(owner_token)
        self._clock = clock if clock is not None else _utc_now
        # One quote verifier for the client's life: its cache keeps collateral checks across re-attestations.
        self._quote_verifier = QuoteVerifier(roots)
        self._limits = limits if limits is not None else Limits()
        self._max_message_size = max_message_size
        self._pin: Pin | None = None

    def __repr__(self) -> str:
        # The API key and owner token stay out of reprs and logs.
        return f"{type(self).__name__}({self.url!r}, attestation={self.method!r})"

    @property
    def attestation(self) -> Attestation | None:
        """The attestation pinned now (None before the first request or :meth:`attest`)."""
        pin = self._pin
        return None if pin is None else pin.attestation

    # -- pieces without I/O ------------------------------------------------------------------------------

    @staticmethod
    def _attestation_call(nonce: bytes) -> Call:
        return Call(
            "GET", msg.ATTESTATION_PATH, MAX_ATTESTATION_ANSWER, params={"nonce": _b64url.encode(nonce)}
        )

    def _verify(self, answer: Answer, nonce: bytes) -> Pin:
        if answer.status != 200:
            raise msg.answer_error(answer.status, answer.body, answer.what)
        attestation, encapsulator = verify_answer(
            parse_answer(answer.body),
            nonce=nonce,
            method=self.method,
            policy=self.policy,
            clock=self._clock,
            quote_verifier=self._quote_verifier,
            collateral_source=self._collateral_source,
            token_verifier=self._token_verifier,
            max_message_size=self._max_message_size,
        )
        return Pin(attestation, encapsulator)

    def _owner(self) -> str:
        """The owner token, for the enclave only (inside the encapsulation); never put it in an outer request."""
        if self._owner_token is None:
            raise UsageError("model management needs the owner token (owner_token=...)")
        return self._owner_token

    def _owner_headers(self) -> dict[str, str]:
        """The host's authorization for model management: the host credential derived from the owner token."""
        if self._owner_credential is None:
            raise UsageError("model management needs the owner token (owner_token=...)")
        return {"authorization": f"Bearer {self._owner_credential}"}

    def _gateway_call(self, pin: Pin, request: BhttpRequest) -> tuple[Call, ClientContext]:
        """``request`` encapsulated to the pinned key, and what opens its response."""
        message, context = pin.encapsulator.encapsulate_request(request.to_bytes())
        call = Call(
            "POST", msg.GATEWAY_PATH, self._max_message_size + 1024, content=message,
            headers={"content-type": OHTTP_REQUEST_MEDIA_TYPE},
        )  # fmt: skip
        return call, context

    @staticmethod
    def _open(answer: Answer, context: ClientContext, retry: bool) -> BhttpResponse | None:
        """The opened response; None when the gateway refused the encapsulation and one retry is left."""
        if answer.status == 400 and retry:
            # The gateway could not decapsulate: most likely its key changed. Attest again, then retry.
            return None
        if answer.status != 200:
            raise msg.answer_error(answer.status, answer.body, answer.what)
        if answer.media_type.split(";", maxsplit=1)[0].strip().lower() != OHTTP_RESPONSE_MEDIA_TYPE:
            raise BadDataError(f"{answer.what}: the answer is not {OHTTP_RESPONSE_MEDIA_TYPE}")
        return BhttpResponse.from_bytes(context.decapsulate_response(answer.body))

    def _upload_call(self, upload: Upload, progress: Progress | None) -> Call:
        """The ``PUT`` of the container to the host, with the owner's host credential."""
        path = msg.upload_path(upload.name, upload.version)
        headers = {
            **self._owner_headers(),
            "content-type": "application/octet-stream",
            "content-length": str(len(upload.blob)),
        }
        content = upload.blob if progress is None else chunks(upload.blob, progress)
        return Call("PUT", path, msg.MAX_JSON_ANSWER, content=content, headers=headers)

    @staticmethod
    def _key_request(upload: Upload, owner: str) -> BhttpRequest | None:
        """The inner ``PUT .../key`` that hands the enclave the owner key; None when the client sends no key."""
        if not upload.send_key or upload.key is None:
            return None
        return msg.key_request(upload.name, upload.version, upload.key, owner)

    def _delete_call(self, name: str, version: str | int) -> Call:
        return Call(
            "DELETE", msg.upload_path(name, version), msg.MAX_JSON_ANSWER, headers=self._owner_headers()
        )

    def _uploaded_models_call(self) -> Call:
        return Call("GET", "/v1/models", msg.MAX_JSON_ANSWER, headers=self._owner_headers())

    @staticmethod
    def _key_answer(upload: Upload, answer: Mapping[str, Any], response: BhttpResponse) -> UploadResult:
        """The result of an upload once the enclave answered its key (``PUT .../key``)."""
        document = msg.read_inner_json(response, f"PUT {msg.model_path(upload.name, upload.version)}/key")
        if response.status == 202:
            # The enclave keeps the key until the host hands it the container (e.g. a restart in between).
            return upload.result(answer, loaded=False)
        # The enclave reports the SHA-256 of the model it decrypted: it must be the one encrypted here.
        reported = document.get("sha256") if isinstance(document, dict) else None
        expected = upload.sha256 or ""
        if not isinstance(reported, str) or not hmac.compare_digest(
            reported.lower().encode(), expected.encode()
        ):
            raise VerificationError("the enclave did not report loading the model with the SHA-256 uploaded")
        return upload.result(answer, loaded=True)


def chunks(blob: bytes, progress: Progress | None) -> Iterator[bytes]:
    """``blob`` in 1 MiB pieces, calling ``progress(sent, total)`` after each one."""
    view = memoryview(blob)
    for start in range(0, len(blob), _CHUNK):
        yield bytes(view[start : start + _CHUNK])
        if progress is not None:
            progress(min(start + _CHUNK, len(blob)), len(blob))


def json_object(document: Any) -> dict[str, Any]:
    """``document`` if it is a JSON object, else :class:`BadDataError`."""
    if not isinstance(document, dict):
        raise BadDataError("the enclave's answer is not a JSON object")
    return document


def model_list(document: Any) -> list[dict[str, Any]]:
    """The model entries of a ``GET /v2/models`` answer, else :class:`BadDataError`."""
    # Accept the bare list and the {"models": [...]} wrapping; each entry must be an object.
    entries = document.get("models") if isinstance(document, dict) else document
    if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
        raise BadDataError("the enclave's model list is not a list of objects")
    return entries
