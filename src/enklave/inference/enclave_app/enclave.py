"""The trusted part of enklave's confidential inference service: the gateway keys, the model keys, the models.

The host (``enklave.inference.service``) owns the sockets and the storage; it is not trusted. It hands this enclave
encapsulated requests, encrypted model containers and wrapped keys, and gets back encapsulated responses, sealed
state and counts. Tensors, models and keys exist in clear only in here.

Ecalls:

* ``init(sealed_state, settings_json)``: unseal the state (the HPKE seed and the model keys) or start a new one,
  and build the model repository and the gateway from the run-time settings (limits, batching, threads, the
  SHA-256 digests of the owner token and the API key); returns the sealed state.
* ``evidence(nonce)``: the gateway's key configurations and a quote binding them and ``nonce``
  (:class:`~enklave.channels.ohttp_attested.KeyConfigEvidence`).
* ``handle(encapsulated)``: one Oblivious HTTP request, answered by :class:`~enklave.inference.router.Router`.
* ``upload_begin(size)``, ``upload_chunk(upload, data)``, ``load_model(upload, name, version)``: an encrypted
  model container in pieces (a container can be larger than one ecall frame); ``load_model`` answers JSON
  ``{"status": "loaded", "model": info}`` or ``{"status": "waiting", "key_id", "reason"}`` or ``{"status":
  "refused", "code", "message"}`` (codes ``NameMismatch``, ``InvalidModel``, ``LimitExceeded``, ``ModelRefused``,
  ``IncompleteUpload``).
* ``remove_model(name, version)``, ``models()``: unload a model; the loaded and the waiting models (JSON: name,
  version, SHA-256 and size; the host does not learn a model's inputs and outputs), and the key broker keys the
  waiting models need: ``missing_kbs_keys`` (model keys) and ``missing_envelope_keys`` (envelope keys).
* ``release_request(kind, name)``: for the key broker, a fresh P-256 key pair kept in here and a quote whose report
  data is SHA-256 of the runtime data ``{"keys": [public JWK]}`` (what the attestation service puts in the
  token's ``x-ms-runtime``, where the key broker takes the key to wrap to); ``kind`` is ``hpke-seed``,
  ``model-key`` or ``envelope-key``.
* ``accept_released(kind, name, wrapped, quote, collateral_json)``: check the key broker's evidence for the release
  (below), then unwrap what it released with that key pair and keep it (the HPKE seed, or a model key, which loads
  the models waiting for it); answers JSON. For ``envelope-key`` the release is the broker key's private key
  (PKCS#8 DER of an RSA or EC P-256 key, as the key broker keeps it): it unwraps the ``wrapped_key`` of each
  container waiting for it, the model keys that open their model are kept (sealed), and the private key is
  dropped at the end of the ecall.
* ``stats()``: counts only (answers by class, inferences, batch sizes), JSON.

Every change of the sealed state (a new seed, a model key) is also handed to the host at once with the ocall
``persist_state(sealed)``, in the order the changes were made, so that a restart finds it.

Whether the HPKE seed comes from the key broker (and under which key name) is measured (``settings.json``), so a
host cannot make an enclave that created its own key accept a seed from elsewhere. So is the key broker to trust
(``kbs_policy``: its MRSIGNER or MRENCLAVE, ISV product id and lowest SVN, with ``kbs_allow_simulated``). The host
relays releases, and it knows the ephemeral public key, so it could wrap a value of its own choosing to it: a
release is therefore accepted only with the key broker enclave's quote, which ``accept_released`` checks in here:

1. the quote verifies (DCAP) against the collateral the host fetched, to Intel's root (and the simulated
   platform's root only when ``kbs_allow_simulated`` is measured);
2. its enclave is the measured key broker (:class:`~enklave.attestation.policy.EnclavePolicy` from ``kbs_policy``);
3. its report data is :func:`~enklave.services.kbs.release_evidence.release_report_data` of the key name asked
   for, this enclave's own ephemeral public key and the wrapped value received.

Any failure raises its own error type (``InvalidQuote``, ``InvalidCollateral``, a ``VerificationError`` such as
``PolicyError`` or ``BindingError``) and nothing is accepted; the key pair is used up either way.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Final

from cryptography.hazmat.primitives.asymmetric import ec

from enklave import _b64url, enclave
from enklave._json import loads, strict_loads
from enklave.channels.ohttp_attested import MAX_NONCE_SIZE, OhttpGateway
from enklave.errors import (
    BadDataError,
    BoundaryError,
    InvalidKey,
    UsageError,
    VerificationError,
)
from enklave.inference._gateway_keys import derive_servers
from enklave.inference._release_check import ReleaseChecker
from enklave.inference._vault import ModelVault
from enklave.inference.model_format import MAX_HEADER_SIZE, read_header
from enklave.inference.repository import ModelInfo, ModelRepository
from enklave.inference.router import Router, RouterSettings
from enklave.inference.tensors import Limits
from enklave.services.kbs.wrapping import private_jwk_from_pkcs8, unwrap_released_key

SETTINGS_FILE: Final = "settings.json"
MAX_REQUEST_SIZE: Final = 64 << 20
"""The largest encapsulated request an ecall takes (the host's limit is the same or lower)."""
MAX_CHUNK_SIZE: Final = 8 << 20
"""The largest piece of a model container per ecall."""
_STATE_AAD: Final = b"enklave inference state v1"
_MAX_STATE: Final = 1 << 20
_MAX_UPLOADS: Final = 4
_MAX_RELEASES: Final = 64
_KINDS: Final = ("hpke-seed", "model-key", "envelope-key")
_KID: Final = "enklave-inference-release"
_MAX_QUOTE: Final = 64 << 10
_MAX_COLLATERAL: Final = 4 << 20

_lock = threading.Lock()
# The one state, built by init: settings, repository, vault, router, gateway, uploads, release key pairs.
_state: dict[str, Any] = {}


@enclave.ocall
def persist_state(sealed: Annotated[bytes, enclave.MaxSize(_MAX_STATE + 4096)]) -> None:
    """Provided by the host: store the sealed state (it replaces the one stored before)."""


def _get(name: str) -> Any:
    with _lock:
        value = _state.get(name)
    if value is None:
        raise UsageError("the inference enclave was called before init")
    return value


def _seal(document: bytes) -> bytes:
    return enclave.seal(document, policy="unique", aad=_STATE_AAD)


def _persist(document: bytes) -> None:
    # Called by the vault under its lock, so states reach the host in the order they were made.
    persist_state(_seal(document))


def _int(settings: dict[str, Any], name: str, low: int, high: int) -> int:
    value = settings.get(name)
    if type(value) is not int or not low <= value <= high:
        raise BoundaryError(f"setting {name} must be an integer from {low} to {high}")
    return value


def _digest(settings: dict[str, Any], name: str) -> bytes | None:
    value = settings.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) != 64:
        raise BoundaryError(f"setting {name} must be a SHA-256 digest in hex")
    try:
        return bytes.fromhex(value)
    except ValueError as exc:
        raise BoundaryError(f"setting {name} must be a SHA-256 digest in hex") from exc


def _json_object(load: Callable[[Any], Any], data: str | bytes, what: str) -> dict[str, Any]:
    """``data`` decoded by ``load``, which must give a JSON object; ``what`` names the document in the errors."""
    try:
        document = load(data)
    except ValueError as exc:
        raise BoundaryError(f"{what} are not JSON") from exc
    if not isinstance(document, dict):
        raise BoundaryError(f"{what} must be a JSON object")
    return document


def _measured() -> tuple[str | None, ReleaseChecker | None]:
    """The measured settings: the key broker key name of the HPKE seed (None: the enclave makes its own seed),
    and the checker of the key broker's release quotes (None: no key broker is trusted)."""
    document = _json_object(loads, enclave.bundle_file(SETTINGS_FILE), "the measured settings")
    name = document.get("hpke_seed_key")
    if name is not None and not isinstance(name, str):
        raise BoundaryError("the measured hpke_seed_key must be a key name or null")
    return name, ReleaseChecker.from_settings(document)


def _gateway(seed: bytes) -> OhttpGateway:
    router = _get("router")
    servers = derive_servers(seed, max_message_size=MAX_REQUEST_SIZE)
    return OhttpGateway(servers, router, max_message_size=MAX_REQUEST_SIZE)


@enclave.ecall
def init(
    sealed_state: Annotated[bytes, enclave.MaxSize(_MAX_STATE + 4096)] | None,
    settings_json: Annotated[str, enclave.MaxSize(64 << 10)],
) -> bytes:
    """Unseal (or create) the state and build the repository and the gateway; returns the sealed state."""
    settings = _json_object(strict_loads, settings_json, "the settings")
    max_delay = settings.get("max_delay_ms")
    if not isinstance(max_delay, int | float) or isinstance(max_delay, bool):
        raise BoundaryError("setting max_delay_ms must be a number")
    repository = ModelRepository(
        max_models=_int(settings, "max_models", 1, 4096),
        max_model_bytes=_int(settings, "max_model_bytes", 1, (1 << 31) - 17),
        max_total_bytes=_int(settings, "max_total_bytes", 1, 1 << 40),
        intra_op_threads=_int(settings, "intra_op_threads", 0, 1024),
        max_batch=_int(settings, "max_batch", 1, 1024),
        max_delay_ms=float(max_delay),
    )
    limits = Limits(
        max_tensors=_int(settings, "max_tensors", 1, 1 << 16),
        max_elements=_int(settings, "max_elements", 1, 1 << 40),
        max_bytes=_int(settings, "max_tensor_bytes", 1, 1 << 40),
        max_json_bytes=_int(settings, "max_request_bytes", 1, MAX_REQUEST_SIZE),
    )
    vault = ModelVault(
        repository,
        on_change=_persist,
        max_pending=_int(settings, "max_models", 1, 4096),
        max_pending_bytes=_int(settings, "max_total_bytes", 1, 1 << 40),
    )
    router_settings = RouterSettings(
        owner_token_sha256=_digest(settings, "owner_token_sha256"),
        api_key_sha256=_digest(settings, "api_key_sha256"),
        limits=limits,
        max_request_bytes=_int(settings, "max_request_bytes", 1, MAX_REQUEST_SIZE),
    )
    router = Router(repository, router_settings, keys=vault, ready=lambda: vault.seed is not None)
    seed_key, kbs_checker = _measured()
    if sealed_state is not None:
        # A state that does not unseal (another enclave's, or tampered) stops the start: making a new one over it
        # would silently lose the model keys.
        vault.restore(enclave.unseal(sealed_state, policy="unique", aad=_STATE_AAD))
    with _lock:
        _state.clear()
        _state.update(
            repository=repository, vault=vault, router=router, seed_key=seed_key or "", uploads={},
            upload_sizes={}, releases={}, upload_counter=0, max_model_bytes=repository.max_model_bytes,
            gateway=None, kbs_checker=kbs_checker or False,
        )  # fmt: skip
    changed = False
    if vault.seed is None and seed_key is None:
        # A seed made here: this enclave's own key, kept across restarts by sealing.
        vault.set_seed(enclave.random_bytes(32))
        changed = True
    _install_gateway(vault.seed)
    if sealed_state is not None and not changed:
        return sealed_state
    return _seal(vault.state_document())


def _install_gateway(seed: bytes | None) -> None:
    gateway = None if seed is None else _gateway(seed)
    with _lock:
        _state["gateway"] = gateway


def _the_gateway() -> OhttpGateway:
    _get("router")
    with _lock:
        gateway = _state.get("gateway")
    if not isinstance(gateway, OhttpGateway):
        raise enclave.PublicError("the gateway key has not been released by the key broker yet")
    return gateway


@enclave.ecall
def evidence(nonce: Annotated[bytes, enclave.MaxSize(MAX_NONCE_SIZE)]) -> bytes:
    """The key configurations and a quote over their binding to ``nonce`` (empty: no nonce)."""
    return _the_gateway().evidence(enclave.platform(), nonce).to_bytes()


@enclave.ecall
def handle(encapsulated: Annotated[bytes, enclave.MaxSize(MAX_REQUEST_SIZE)]) -> bytes:
    """One request: ``message/ohttp-req`` in, ``message/ohttp-res`` out. A request that does not decapsulate
    raises PublicError whose message starts with ``unknown-key:`` (a key id this gateway does not have: the client
    holds an old configuration) or ``rejected:``."""
    gateway = _the_gateway()
    try:
        return gateway.handle(encapsulated)
    except VerificationError:
        raise enclave.PublicError("rejected: the encapsulated request does not authenticate") from None
    except BadDataError as exc:
        known = bool(encapsulated) and any(config.key_id == encapsulated[0] for config in gateway.key_configs)
        prefix = "rejected" if known else "unknown-key"
        # The message says which check failed (truncated, unknown key id...): nothing secret.
        raise enclave.PublicError(f"{prefix}: {exc}") from None


# -- models ----------------------------------------------------------------------------------------------------


@enclave.ecall
def upload_begin(size: int) -> int:
    """Start receiving a model container of ``size`` bytes; returns the upload's number."""
    # The container's overhead: magic, length, the largest header (one with a wrapped key), nonce and tag.
    limit = int(_get("max_model_bytes")) + MAX_HEADER_SIZE + 64
    if not 0 < size <= limit:
        raise enclave.PublicError(f"a model container is 1 to {limit} bytes")
    with _lock:
        uploads: dict[int, bytearray] = _state["uploads"]
        if len(uploads) >= _MAX_UPLOADS:
            # The oldest upload makes room: one the host abandoned must not block every later one.
            oldest = next(iter(uploads))
            del uploads[oldest], _state["upload_sizes"][oldest]
        _state["upload_counter"] += 1
        number: int = _state["upload_counter"]
        uploads[number] = bytearray()
        _state["upload_sizes"][number] = size
    return number


@enclave.ecall
def upload_chunk(upload: int, data: Annotated[bytes, enclave.MaxSize(MAX_CHUNK_SIZE)]) -> int:
    """Append ``data`` to upload ``upload``; returns the bytes received so far."""
    with _lock:
        buffer = _state["uploads"].get(upload)
        size = _state["upload_sizes"].get(upload)
        if buffer is None:
            raise enclave.PublicError("no such upload")
        if len(buffer) + len(data) > size:
            del _state["uploads"][upload], _state["upload_sizes"][upload]
            raise enclave.PublicError("the upload is larger than it said it would be")
        buffer += data
        return len(buffer)


def _refused(code: str, message: str) -> str:
    return json.dumps({"status": "refused", "code": code, "message": message})


@enclave.ecall
def load_model(
    upload: int, name: Annotated[str, enclave.MaxSize(64)], version: Annotated[str, enclave.MaxSize(32)]
) -> str:
    """Load the container received as ``upload``, which must be model ``name`` ``version`` (see the module
    docstring for the answer)."""
    with _lock:
        buffer = _state["uploads"].pop(upload, None)
        size = _state["upload_sizes"].pop(upload, None)
    if buffer is None or len(buffer) != size:
        return _refused("IncompleteUpload", "the upload is unknown or incomplete")
    vault: ModelVault = _get("vault")
    blob = bytes(buffer)
    del buffer
    limit = int(_get("max_model_bytes"))
    try:
        header = read_header(blob, max_model_bytes=limit)
        if (header.name, header.version) != (name, version):
            return _refused(
                "NameMismatch", f"the container holds model {header.name} version {header.version}"
            )
        outcome = vault.offer(blob, max_model_bytes=limit)
    except BoundaryError as exc:
        # Over a limit (the repository's or the waiting models'), or a model ONNX Runtime does not load.
        message = str(exc)
        over = "exceed" in message or "at most" in message
        return _refused("LimitExceeded" if over else "ModelRefused", message)
    except BadDataError as exc:
        return _refused("InvalidModel", str(exc))
    if outcome.loaded:
        return json.dumps({"status": "loaded", "model": _summary(outcome.info)})
    return json.dumps({"status": "waiting", "key_id": outcome.header.key_id, "reason": outcome.reason})


def _summary(info: ModelInfo) -> dict[str, Any]:
    # What the host may know of a loaded model: not its inputs and outputs (clients read them in the encryption).
    return {"name": info.name, "version": info.version, "sha256": info.sha256, "size": info.size}


@enclave.ecall
def remove_model(
    name: Annotated[str, enclave.MaxSize(64)], version: Annotated[str, enclave.MaxSize(32)]
) -> bool:
    """Unload model ``name`` ``version`` (or drop it from the waiting ones) and forget its owner key."""
    vault: ModelVault = _get("vault")
    return vault.remove(name, version)


@enclave.ecall
def models() -> str:
    """``{"loaded": [info], "waiting": [{"name", "version", "key_id", "size", "reason"}], "missing_kbs_keys"}``."""
    vault: ModelVault = _get("vault")
    repository: ModelRepository = _get("repository")
    waiting = [
        {"name": h.name, "version": h.version, "key_id": h.key_id, "size": size, "reason": reason}
        for h, size, reason in vault.pending()
    ]
    return json.dumps({
        "loaded": [_summary(info) for info in repository.list()],
        "waiting": waiting,
        "missing_kbs_keys": vault.missing_kbs_keys(),
        "missing_envelope_keys": vault.missing_envelope_keys(),
        "seed": vault.seed is not None,
    })  # fmt: skip


# -- key release -----------------------------------------------------------------------------------------------


def _check_kind(kind: str, name: str) -> None:
    if kind not in _KINDS:
        raise enclave.PublicError(f"kind must be one of {', '.join(_KINDS)}")
    if kind == "hpke-seed" and name != _get("seed_key"):
        raise enclave.PublicError("this enclave does not take its HPKE seed from that key broker key")


@enclave.ecall
def release_request(
    kind: Annotated[str, enclave.MaxSize(16)], name: Annotated[str, enclave.MaxSize(128)]
) -> dict[str, bytes]:
    """``{"runtime": JSON bytes, "quote": bytes}`` for a key release (see the module docstring)."""
    _check_kind(kind, name)
    private = ec.generate_private_key(ec.SECP256R1())
    numbers = private.public_key().public_numbers()
    public = {
        "kty": "EC", "crv": "P-256", "kid": _KID,
        "x": _b64url.encode(numbers.x.to_bytes(32, "big")), "y": _b64url.encode(numbers.y.to_bytes(32, "big")),
    }  # fmt: skip
    # The attestation client sends this object as JSON with exactly this encoding, and the service checks that
    # its SHA-256 is the first half of the report data.
    runtime = json.dumps({"keys": [public]}, separators=(",", ":")).encode("ascii")
    quote = enclave.get_quote(hashlib.sha256(runtime).digest())
    private_jwk = {**public, "d": _b64url.encode(private.private_numbers().private_value.to_bytes(32, "big"))}
    with _lock:
        releases: dict[tuple[str, str], dict[str, str]] = _state["releases"]
        releases.pop((kind, name), None)
        if len(releases) >= _MAX_RELEASES:
            # Bounded: a host asking for many releases it never completes only drops the oldest key pairs.
            del releases[next(iter(releases))]
        releases[(kind, name)] = private_jwk
    return {"runtime": runtime, "quote": quote}


def _check_release_evidence(
    name: str, recipient: dict[str, str], wrapped: str, quote: bytes, collateral: str
) -> None:
    """The checks of :class:`~enklave.inference._release_check.ReleaseChecker`; raises the failing one's error."""
    checker = _get("kbs_checker")
    if not isinstance(checker, ReleaseChecker):
        raise enclave.PublicError("this enclave trusts no key broker: its measured settings name none")
    checker.check(name, recipient, wrapped, quote, collateral, now=datetime.now(UTC))


def _envelope_private_jwk(material: bytes) -> dict[str, Any]:
    """The private JWK of a released envelope key (PKCS#8 DER of an RSA or EC P-256 key); raises PublicError for
    anything else (an AES key of the broker, for one), naming no key material."""
    try:
        return private_jwk_from_pkcs8(material)
    except InvalidKey as exc:
        raise enclave.PublicError(f"the released envelope key is unusable: {exc}") from None


@enclave.ecall
def accept_released(
    kind: Annotated[str, enclave.MaxSize(16)],
    name: Annotated[str, enclave.MaxSize(128)],
    wrapped: Annotated[str, enclave.MaxSize(1 << 16)],
    quote: Annotated[bytes, enclave.MaxSize(_MAX_QUOTE)],
    collateral_json: Annotated[str, enclave.MaxSize(_MAX_COLLATERAL)],
) -> str:
    """Check the key broker's ``quote`` for the release (with ``collateral_json``, the
    :class:`~enklave.attestation.collateral.QuoteCollateral` JSON for it), then unwrap the released value with
    the key pair of the last ``release_request(kind, name)`` and keep it; answers ``{"loaded": [names],
    "waiting": [names]}`` (model keys and envelope keys) or ``{"seed": true}``. Raises the error of the check that
    fails (see the module docstring); the key pair is used up whether or not the release is accepted."""
    _check_kind(kind, name)
    with _lock:
        private_jwk = _state["releases"].pop((kind, name), None)
    if private_jwk is None:
        raise enclave.PublicError("no release was requested for that key")
    public = {member: private_jwk[member] for member in ("kty", "crv", "x", "y")}
    _check_release_evidence(name, public, wrapped, quote, collateral_json)
    try:
        value = unwrap_released_key(wrapped, private_jwk)
    except (BadDataError, UsageError) as exc:
        raise enclave.PublicError(f"the released key does not unwrap: {type(exc).__name__}") from None
    vault: ModelVault = _get("vault")
    if kind == "hpke-seed":
        if vault.seed is not None:
            raise enclave.PublicError("this enclave already holds its HPKE seed")
        vault.set_seed(value)
        _install_gateway(value)
        return json.dumps({"seed": True})
    if kind == "envelope-key":
        envelope = _envelope_private_jwk(value)
        del value
        outcomes = vault.set_envelope_key(
            name, lambda wrapped_key: unwrap_released_key(wrapped_key, envelope)
        )
        # The envelope key served this release only: the unwrapped model keys that opened their model are sealed.
        envelope.clear()
    else:
        outcomes = vault.set_kbs_key(name, value)
    return json.dumps({
        "loaded": [f"{o.header.name}/{o.header.version}" for o in outcomes if o.loaded],
        "waiting": [f"{o.header.name}/{o.header.version}" for o in outcomes if not o.loaded],
    })  # fmt: skip


@enclave.ecall
def stats() -> str:
    """Counts only, nothing derived from content: the router's answers by class and inferences, the models'
    calls, session runs, rows, errors and batch sizes (calls merged per run)."""
    router: Router = _get("router")
    repository: ModelRepository = _get("repository")
    totals = {"requests": 0, "runs": 0, "rows": 0, "errors": 0}
    batches: dict[str, int] = {}
    for runner_stats in repository.stats().values():
        document = runner_stats.to_dict()
        for key in totals:
            totals[key] += int(document[key])
        for size, count in document["batch_sizes"].items():
            batches[size] = batches.get(size, 0) + int(count)
    return json.dumps({
        "answers": router.stats(), "models": len(repository.list()), **totals, "batch_sizes": batches,
    })  # fmt: skip
