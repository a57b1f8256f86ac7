"""The asynchronous inference client (re-exported by :mod:`enklave.inference.client`, documented there)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Self

import httpx
import numpy as np

from enklave.attestation.policy import Policy
from enklave.attestation.sources import CollateralSource
from enklave.attestation.tokens import TokenVerifier
from enklave.attestation.trust import TrustedRoot
from enklave.channels.ohttp_attested import BhttpRequest, BhttpResponse
from enklave.errors import TransportError, UsageError
from enklave.inference import _client_messages as msg
from enklave.inference._client_attest import Attestation, AttestationMethod, new_nonce
from enklave.inference._client_base import (
    DEFAULT_MAX_REQUEST_SIZE,
    Answer,
    Base,
    Call,
    NoCookies,
    Pin,
    Progress,
    Reader,
    json_object,
    model_list,
)
from enklave.inference._client_upload import Upload, UploadResult, prepare_container, prepare_model
from enklave.inference.protocol import Limits

__all__ = ["AsyncClient"]


async def _pieces(parts: Iterator[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


class AsyncClient(Base):
    """:class:`Client` for asyncio: the same arguments (``transport`` is an ``httpx.AsyncBaseTransport``) and
    the same methods, to be awaited. Quote verification runs in a worker thread."""

    def __init__(
        self,
        url: str,
        *,
        policy: Policy,
        collateral_source: CollateralSource | None = None,
        roots: Sequence[TrustedRoot] | None = None,
        attestation: AttestationMethod = "dcap",
        token_verifier: TokenVerifier | None = None,
        api_key: str | None = None,
        owner_token: str | None = None,
        timeout: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], datetime] | None = None,
        limits: Limits | None = None,
        max_message_size: int = DEFAULT_MAX_REQUEST_SIZE,
    ) -> None:
        super().__init__(
            url, policy=policy, collateral_source=collateral_source, roots=roots, attestation=attestation,
            token_verifier=token_verifier, api_key=api_key, owner_token=owner_token, timeout=timeout,
            clock=clock, limits=limits, max_message_size=max_message_size,
        )  # fmt: skip
        self._http = httpx.AsyncClient(transport=transport, timeout=self.timeout, cookies=NoCookies())
        self._lock: asyncio.Lock | None = None

    async def _call(self, call: Call) -> Answer:
        # httpx.AsyncClient sends an upload's pieces only from an asynchronous iterator.
        content = call.content if isinstance(call.content, bytes | None) else _pieces(call.content)
        reader = Reader(call)
        try:
            async with self._http.stream(
                call.method,
                f"{self.url}{call.path}",
                params=call.params,
                content=content,
                headers=call.headers,
            ) as response:
                async for chunk in response.aiter_bytes():
                    reader.feed(chunk)
                return reader.answer(response.status_code, response.headers.get("content-type", ""))
        except httpx.HTTPError as exc:
            raise TransportError(f"{call.what} failed: {type(exc).__name__}") from exc

    async def attest(self) -> Attestation:
        """See :meth:`Client.attest`."""
        nonce = new_nonce()
        answer = await self._call(self._attestation_call(nonce))
        # Verification may fetch collateral with a blocking source, and checks signatures: not on the loop.
        pin = await asyncio.to_thread(self._verify, answer, nonce)
        self._pin = pin
        return pin.attestation

    async def _pinned(self, stale: Pin | None = None) -> Pin:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            # Concurrent requests that met the same rotated key attest once between them.
            if self._pin is None or self._pin is stale:
                await self.attest()
            pin = self._pin
        if pin is None:  # pragma: no cover - attest() pins or raises.
            raise UsageError("attestation did not pin a key")
        return pin

    async def send(self, request: BhttpRequest) -> BhttpResponse:
        """See :meth:`Client.send`."""
        pin = await self._pinned()
        for retry in (True, False):
            call, context = self._gateway_call(pin, request)
            response = self._open(await self._call(call), context, retry)
            if response is not None:
                return response
            pin = await self._pinned(stale=pin)
        raise TransportError("the gateway refused the request after re-attestation")  # pragma: no cover

    async def infer(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        *,
        version: str | int | None = None,
        outputs: Sequence[str] | None = None,
        binary: bool = True,
    ) -> dict[str, np.ndarray]:
        """See :meth:`Client.infer`."""
        request = msg.infer_request(
            model, inputs, version=version, outputs=outputs, binary=binary, api_key=self._api_key
        )
        return msg.read_infer(await self.send(request), self._limits, f"infer {model}")

    async def models(self) -> list[dict[str, Any]]:
        """See :meth:`Client.models`."""
        response = await self.send(msg.inner_get("/v2/models", api_key=self._api_key))
        return model_list(msg.read_inner_json(response, "models"))

    async def model_metadata(self, name: str, version: str | int | None = None) -> dict[str, Any]:
        """See :meth:`Client.model_metadata`."""
        path = msg.model_path(name, version)
        return json_object(
            msg.read_inner_json(await self.send(msg.inner_get(path, api_key=self._api_key)), path)
        )

    async def upload_model(
        self,
        model: bytes | str | os.PathLike[str],
        *,
        name: str,
        version: str | int,
        key: bytes | None = None,
        kbs_key: str | None = None,
        kbs_public_jwk: Mapping[str, Any] | None = None,
        progress: Progress | None = None,
    ) -> UploadResult:
        """See :meth:`Client.upload_model`."""
        upload = await asyncio.to_thread(
            prepare_model,
            model,
            name=name,
            version=version,
            key=key,
            kbs_key=kbs_key,
            kbs_public_jwk=kbs_public_jwk,
        )
        return await self._upload(upload, progress)

    async def upload_encrypted(
        self,
        container: bytes | str | os.PathLike[str],
        *,
        key: bytes | None = None,
        progress: Progress | None = None,
    ) -> UploadResult:
        """See :meth:`Client.upload_encrypted`."""
        return await self._upload(await asyncio.to_thread(prepare_container, container, key=key), progress)

    async def _upload(self, upload: Upload, progress: Progress | None) -> UploadResult:
        owner = self._owner()
        if upload.send_key:
            await self._pinned()
        answer = (await self._call(self._upload_call(upload, progress))).json()
        key_request = self._key_request(upload, owner)
        if key_request is None:
            return upload.result(answer)
        return self._key_answer(upload, answer, await self.send(key_request))

    async def delete_model(self, name: str, version: str | int) -> dict[str, Any]:
        """See :meth:`Client.delete_model`."""
        return (await self._call(self._delete_call(name, version))).json()

    async def uploaded_models(self) -> dict[str, Any]:
        """See :meth:`Client.uploaded_models`."""
        return (await self._call(self._uploaded_models_call())).json()

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
