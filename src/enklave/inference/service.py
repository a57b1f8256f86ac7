"""The host side of the confidential inference service: configuration, the enclave, storage and the operations.

:class:`InferenceService` signs the inference enclave (package data ``enclave_app/``) into the data directory,
loads it (simulated or SGX), gives it its sealed state (the HPKE seed and the model keys), reloads the encrypted
models kept in storage, and answers the operations that :mod:`.app` serves over HTTP:

* :meth:`~InferenceService.attestation`: the gateway's key configurations with a quote binding them and the
  client's nonce (:class:`~enklave.channels.ohttp_attested.KeyConfigEvidence`), the collateral to verify the quote
  offline, and a token from the attestation service when one is configured (its ``x-ms-sgx-ehd`` claim is the
  preimage of the report data: ``REPORT_DATA_DOMAIN || uint32_be(len) || key configurations || uint8(len) ||
  nonce``, see :func:`token_runtime_data`).
* :meth:`~InferenceService.gateway`: relay one encapsulated request to the enclave and its answer back.
* :meth:`~InferenceService.upload_model`, :meth:`~InferenceService.list_models`,
  :meth:`~InferenceService.delete_model`: model management for the owner, who presents the host credential
  derived from the owner token (:mod:`enklave.inference.credentials`; compared in constant time). The token
  itself reaches only the enclave, inside the encryption; the host holds its SHA-256 to hand to the enclave.
  An uploaded container is ciphertext; its key reaches the enclave from the owner inside the encryption,
  or from the key broker after attestation (``key_id`` ``kbs:<name>``: the broker's key is the model key, or,
  with a ``wrapped_key`` in the header, an envelope key whose private half unwraps the model key in the enclave),
  which the service asks at upload and at start for the keys that waiting models need.

The host never holds a tensor, a model or a key in clear: they exist only in the enclave process. Bad input is
answered with 4xx :class:`~enklave.services._response.ServiceResponse` values, never raised.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
from typing import Any

from enklave import _b64url
from enklave._json import loads
from enklave.attestation.sources import (
    SERVICE_MAX_AGE,
    CachingCollateralSource,
    CollateralSource,
    PcsCollateralSource,
)
from enklave.channels.ohttp_attested import MAX_NONCE_SIZE, KeyConfigEvidence
from enklave.errors import BadDataError, EcallError, EnklaveError, TransportError, UsageError
from enklave.host import EnclaveInfo
from enklave.inference._attestation_answer import EvidenceAnswers, token_runtime_data
from enklave.inference._enclave_handle import InferenceEnclave, sign_inference_enclave
from enklave.inference._model_store import ModelStore
from enklave.inference.config import GATEWAY_OVERHEAD, InferenceConfig
from enklave.inference.model_format import is_valid_name, is_valid_version, read_header
from enklave.platform.mode import resolve_mode
from enklave.platform.simulated import SimulatedCollateralSource
from enklave.services._response import ServiceResponse, bearer_token
from enklave.services.attestation.client import AttestationClient
from enklave.services.kbs.client import KbsClient
from enklave.services.storage import Storage

__all__ = ["GATEWAY_OVERHEAD", "InferenceConfig", "InferenceService", "token_runtime_data"]

log = logging.getLogger("enklave.inference")


class InferenceService:
    """The inference service's host: start it, serve its operations, close it (see the module docstring).

    :meth:`start` raises what :func:`enklave.host.load` raises, :class:`~enklave.errors.EcallError` when the
    stored state does not unseal, and the key release flow's errors when the HPKE seed must come from the key
    broker and cannot. Models whose key cannot be released at start stay waiting (logged), and the service starts.
    """

    def __init__(self, config: InferenceConfig, storage: Storage) -> None:
        self.config = config
        self.storage = storage
        self.models = ModelStore(storage)
        self.mode = "sim"
        self._enclave: InferenceEnclave | None = None
        self._published = b""
        self._lock = threading.Lock()
        self._answers: EvidenceAnswers | None = None
        self._collateral: CollateralSource | None = None

    # -- lifecycle -----------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Sign and load the enclave, unseal its state, get the HPKE seed if it must be released, reload models."""
        config = self.config
        self.mode = resolve_mode(config.mode)
        source = config.collateral_source
        if source is None:
            fetched = SimulatedCollateralSource(config.home) if self.mode == "sim" else None
            source = CachingCollateralSource(
                fetched or PcsCollateralSource(config.pcs_url), max_age=SERVICE_MAX_AGE
            )
        self._answers = EvidenceAnswers(source, config.attestation_url)
        self._collateral = source
        if config.kbs_url is not None and config.kbs_policy() is None:
            log.warning("no key broker identity is configured (--kbs-mrsigner, --kbs-mrenclave): the enclave "
                        "refuses every key broker release")  # fmt: skip
        bundle = sign_inference_enclave(
            config.data_dir,
            config.hpke_seed_key,
            kbs_policy=config.kbs_policy(),
            kbs_allow_simulated=config.kbs_simulated(self.mode),
            mode=self.mode,
        )
        enclave = InferenceEnclave(
            bundle, self.storage, mode=self.mode, home=config.home, timeout=config.ecall_timeout
        )
        enclave.start(config.enclave_settings())
        self._enclave = enclave
        try:
            if config.hpke_seed_key is not None and not enclave.models()["seed"]:
                self._release("hpke-seed", config.hpke_seed_key)
            self._published = enclave.running.ecall.evidence(b"")
            self._reload()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Stop the enclave (idempotent); storage stays open, its owner closes it."""
        if self._enclave is not None:
            self._enclave.close()
            self._enclave = None

    def __enter__(self) -> InferenceService:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def enclave(self) -> InferenceEnclave:
        """The running enclave; raises :class:`UsageError` before :meth:`start`."""
        if self._enclave is None:
            raise UsageError("the inference service has not started")
        return self._enclave

    @property
    def info(self) -> EnclaveInfo:
        """What the enclave reported at start (MRENCLAVE, MRSIGNER, mode): informational, clients verify quotes."""
        return self.enclave.running.info

    def alive(self) -> bool:
        """True while the enclave runs."""
        return self._enclave is not None and self._enclave.alive

    def ready(self) -> bool:
        """True when the enclave runs and holds its gateway key."""
        return self.alive() and bool(self._published)

    def key_configs(self) -> bytes:
        """The gateway's key configurations (``application/ohttp-keys``, RFC 9458 §3)."""
        if not self._published:
            raise UsageError("the inference service has not started")
        return KeyConfigEvidence.from_bytes(self._published).key_configs

    def _release(self, kind: str, name: str) -> dict[str, Any]:
        config = self.config
        if config.attestation_url is None or config.kbs_url is None or self._collateral is None:
            raise UsageError(f"key broker key {name} is needed, but no key broker is configured")
        with AttestationClient(config.attestation_url) as attestation, KbsClient(config.kbs_url) as kbs:
            return self.enclave.release(kind, name, attestation, kbs, self._collateral)

    def _release_missing(self, only: str | None = None) -> None:
        """Ask the key broker for the keys waiting models need (or only key ``only``): model keys, and envelope keys
        that unwrap the model keys in the containers' headers; refusals are logged."""
        listing = self.enclave.models()
        wanted = [("model-key", name) for name in listing["missing_kbs_keys"]]
        # An enclave older than envelope keys does not list them.
        wanted += [("envelope-key", name) for name in listing.get("missing_envelope_keys", [])]
        for kind, name in wanted:
            if only is not None and name != only:
                continue
            try:
                answer = self._release(kind, name)
            except (EnklaveError, ValueError) as exc:
                log.warning("key broker key %s was not released: %s: %s", name, type(exc).__name__, exc)
                continue
            log.info("key broker key %s loaded %s", name, ", ".join(answer.get("loaded", [])) or "no model")

    def _reload(self) -> None:
        for name, version in self.models.list():
            try:
                stored = self.models.open(name, version)
                if stored is None:
                    continue
                answer = self.enclave.load(stored[1], stored[0], name, version)
            except BadDataError as exc:
                log.error("stored model %s/%s is damaged: %s", name, version, exc)
                continue
            log.info("reloaded model %s/%s: %s", name, version, answer.get("status"))
        self._release_missing()

    # -- attestation and gateway -------------------------------------------------------------------------------

    def attestation(self, nonce_text: str | None) -> ServiceResponse:
        """``GET /v1/attestation?nonce=``: evidence, collateral and (with an attestation service) a token."""
        if nonce_text is None:
            evidence = self._published
        else:
            try:
                nonce = _b64url.decode(nonce_text)
            except ValueError:
                nonce = b""
            if not 0 < len(nonce) <= MAX_NONCE_SIZE:
                return ServiceResponse.error(
                    400, "BadNonce", f"nonce must be 1 to {MAX_NONCE_SIZE} bytes in unpadded base64url"
                )
            # Each nonce costs a quote: a public deployment rate-limits this route.
            evidence = self.enclave.running.ecall.evidence(nonce)
        if self._answers is None:
            raise UsageError("the inference service has not started")
        return self._answers.answer(evidence)

    def gateway(self, encapsulated: bytes) -> bytes | ServiceResponse:
        """One encapsulated request to the enclave: the encapsulated response, or the error answer (400
        ``UnknownKeyId`` when the client holds an old key configuration, 400 ``BadRequest`` when it does not
        decapsulate). Raises :class:`~enklave.errors.EcallTimeout` and
        :class:`~enklave.errors.EnclaveCrashedError` when the enclave is unavailable."""
        try:
            answer: bytes = self.enclave.running.ecall.handle(encapsulated)
        except EcallError as exc:
            return self._gateway_error(exc)
        return answer

    async def agateway(self, encapsulated: bytes) -> bytes | ServiceResponse:
        """:meth:`gateway` from asyncio: the ecall runs on the enclave's own worker threads."""
        try:
            answer: bytes = await self.enclave.running.aecall.handle(encapsulated)
        except EcallError as exc:
            return self._gateway_error(exc)
        return answer

    @staticmethod
    def _gateway_error(exc: EcallError) -> ServiceResponse:
        if exc.type_name == "PublicError" and str(exc).startswith("PublicError: unknown-key:"):
            return ServiceResponse.error(
                400, "UnknownKeyId", "the request is for a key configuration this gateway does not have"
            )
        if exc.type_name == "PublicError":
            return ServiceResponse.error(400, "BadRequest", "the encapsulated request does not decapsulate")
        log.error("the inference enclave failed on a request (%s)", exc.type_name)
        return ServiceResponse.error(500, "InternalError", "internal error")

    # -- model management ----------------------------------------------------------------------------------------

    def check_owner(self, authorization: str | None) -> ServiceResponse | None:
        """None when ``authorization`` is ``Bearer <owner credential>``; else 401 ``Unauthorized`` (missing or
        wrong credential), or 403 ``ModelManagementDisabled`` when no owner is configured."""
        return self._authorize(authorization)

    def _authorize(self, authorization: str | None) -> ServiceResponse | None:
        expected = self.config.owner_credential
        if expected is None:
            return ServiceResponse.error(
                403, "ModelManagementDisabled", "model management is disabled: no model owner is configured"
            )
        presented = bearer_token(authorization)
        if presented is None:
            return ServiceResponse.error(
                401, "Unauthorized", "model management needs authorization: Bearer <owner credential>"
            )
        # Hashing first gives compare_digest equal lengths, so the comparison leaks nothing about the length.
        if not hmac.compare_digest(
            hashlib.sha256(presented.encode("utf-8")).digest(),
            hashlib.sha256(expected.encode("utf-8")).digest(),
        ):
            # 401, as for a missing credential: the caller did not authenticate. The hint names the derivation,
            # since a caller that sends the owner token itself would reveal it to this host.
            return ServiceResponse.error(
                401,
                "Unauthorized",
                "the owner credential is not valid (it is derived from the owner token: enklave model "
                "credentials; never send the token itself to the host)",
            )
        return None

    @staticmethod
    def _check_names(name: str, version: str) -> ServiceResponse | None:
        if not is_valid_name(name) or not is_valid_version(version):
            return ServiceResponse.error(
                400,
                "BadParameter",
                "a model name is [A-Za-z0-9][A-Za-z0-9_.-]{0,63}, a version a positive integer",
            )
        return None

    def upload_model(
        self, name: str, version: str, container: bytes, authorization: str | None
    ) -> ServiceResponse:
        """``PUT /v1/models/{name}/versions/{version}``: store and load an encrypted model container.

        201 when loaded, 202 when it waits for its key, 409 when that version exists, 400 for a container that
        is malformed, of another model, or that the enclave refuses, 413 over the size limits.
        """
        refused = self._authorize(authorization) or self._check_names(name, version)
        if refused is not None:
            return refused
        try:
            header = read_header(container)
        except BadDataError as exc:
            return ServiceResponse.error(400, "InvalidModel", str(exc))
        if header.size > self.config.max_model_bytes:
            return ServiceResponse.error(
                413, "ModelTooLarge", f"the model is larger than {self.config.max_model_bytes} bytes"
            )
        if (header.name, header.version) != (name, version):
            return ServiceResponse.error(
                400, "NameMismatch", f"the container holds model {header.name} version {header.version}"
            )
        with self._lock:
            if self.models.exists(name, version):
                return ServiceResponse.error(
                    409, "Conflict", f"model {name} version {version} exists; delete it first"
                )
            answer = self.enclave.load([container], len(container), name, version)
            if answer["status"] == "refused":
                status = 413 if answer["code"] == "LimitExceeded" else 400
                return ServiceResponse.error(status, str(answer["code"]), str(answer["message"]))
            try:
                self.models.put(name, version, container)
            except TransportError:
                self.enclave.running.ecall.remove_model(name, version)
                raise
        if answer["status"] == "waiting" and header.kbs_key is not None and self.config.kbs_url is not None:
            self._release_missing(header.kbs_key)
            answer = self._status(name, version)
        log.info("model %s/%s uploaded: %s", name, version, answer["status"])
        return self._upload_answer(name, version, header.key_id, answer)

    def _status(self, name: str, version: str) -> dict[str, Any]:
        listing = self.enclave.models()
        for info in listing["loaded"]:
            if (info["name"], info["version"]) == (name, version):
                return {"status": "loaded", "model": info}
        for entry in listing["waiting"]:
            if (entry["name"], entry["version"]) == (name, version):
                return {"status": "waiting", "reason": entry["reason"]}
        return {"status": "waiting", "reason": "not in the enclave"}

    @staticmethod
    def _upload_answer(name: str, version: str, key_id: str, answer: dict[str, Any]) -> ServiceResponse:
        body: dict[str, Any] = {
            "name": name,
            "version": version,
            "key_id": key_id,
            "status": answer["status"],
        }
        if answer["status"] == "loaded":
            model = answer["model"]
            body.update(sha256=model["sha256"], size=model["size"])
            return ServiceResponse(201, body)
        body["reason"] = answer.get("reason", "waiting for its key")
        return ServiceResponse(202, body)

    def list_models(self, authorization: str | None) -> ServiceResponse:
        """``GET /v1/models``: ``{"models": [...]}``, loaded ones with their SHA-256, waiting ones with why."""
        refused = self._authorize(authorization)
        if refused is not None:
            return refused
        listing = self.enclave.models()
        models = [{**info, "status": "loaded"} for info in listing["loaded"]]
        models += [{**entry, "status": "waiting"} for entry in listing["waiting"]]
        models.sort(key=lambda entry: (entry["name"], int(entry["version"])))
        return ServiceResponse(200, {"models": models})

    def delete_model(self, name: str, version: str, authorization: str | None) -> ServiceResponse:
        """``DELETE /v1/models/{name}/versions/{version}``: unload, forget its key, delete it from storage."""
        refused = self._authorize(authorization) or self._check_names(name, version)
        if refused is not None:
            return refused
        with self._lock:
            removed = self.enclave.running.ecall.remove_model(name, version)
            stored = self.models.delete(name, version)
        if not (removed or stored):
            return ServiceResponse.error(404, "ModelNotFound", f"no model {name} version {version}")
        log.info("model %s/%s deleted", name, version)
        return ServiceResponse(200, {"name": name, "version": version, "status": "deleted"})

    def enclave_stats(self) -> dict[str, Any]:
        """The enclave's counters (answers by class, inferences, batch sizes); raises when it is unavailable."""
        stats: dict[str, Any] = loads(self.enclave.running.ecall.stats())
        return stats
