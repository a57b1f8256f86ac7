"""The enclave's secrets for inference: the HPKE seed, the model keys, and the models that wait for their key.

:class:`ModelVault` lives inside the inference enclave (it imports nothing from the host side). It keeps

* the 32-byte HPKE seed from which the gateway's key pairs are derived (created in the enclave, or released by the
  key broker so that replicas share one key configuration),
* the owner's model keys by ``(name, version)`` and the key broker's keys by key name,
* the model keys of envelope containers (a ``wrapped_key`` in the header), by ``(name, version)`` like the owner's,
  once the key broker's envelope key unwrapped them and they opened their model (the envelope key itself is
  used for that and dropped, never kept),
* encrypted models whose key has not arrived yet ("pending"), bounded in count and bytes,

and hands models to a :class:`~enklave.inference.repository.ModelRepository` as soon as their key is known. Every
change of the secrets calls ``on_change`` with the state document (:meth:`ModelVault.state_document`), while the
vault's lock is held, so that the enclave seals and persists the states in the order they were made.

State document (JSON, sealed by the enclave, never seen in clear outside it)::

    {"version": 1, "generation": n, "seed": hex | null,
     "model_keys": {"<name>/<version>": hex}, "kbs_keys": {"<kbs key name>": hex}}

(``model_keys`` holds the owner's keys and the unwrapped envelope model keys; a state sealed before envelope keys
existed reads unchanged.)

Errors: :class:`~enklave.errors.BoundaryError` for a malformed key, a state document that does not parse, or a
model over the pending limits; :class:`~enklave.errors.VerificationError` when a key does not open the model
waiting for it; :class:`~enklave.errors.UsageError` for another key of a loaded model; what the repository
raises when it refuses a model.
"""

from __future__ import annotations

import hmac
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol

from enklave._json import loads
from enklave.errors import BadDataError, BoundaryError, UsageError, VerificationError
from enklave.inference.model_format import KEY_SIZE, OWNER_KEY_ID, ModelHeader, read_header

__all__ = ["STATE_VERSION", "LoadOutcome", "ModelVault", "RepositoryLike"]

STATE_VERSION: Final = 1
SEED_SIZE: Final = 32
_MAX_STATE = 1 << 20


class RepositoryLike(Protocol):
    """What the vault needs of a model repository (``enklave.inference.repository.ModelRepository``)."""

    def add(self, blob: bytes, key: bytes) -> Any: ...

    def remove(self, name: str, version: str) -> Any: ...

    def find(self, name: str, version: str | None = None) -> tuple[Any, Any] | None: ...


@dataclass(frozen=True, slots=True)
class LoadOutcome:
    """What became of a model handed to the vault: ``loaded`` (with the repository's ``info``) or ``waiting``
    for its key (``reason`` says why, e.g. that the stored key does not open it)."""

    header: ModelHeader
    loaded: bool
    info: Any = None
    reason: str = ""


def _hex_key(value: object, what: str, size: int = KEY_SIZE) -> bytes:
    if not isinstance(value, str) or len(value) != 2 * size:
        raise BoundaryError(f"the sealed state's {what} is malformed")
    try:
        return bytes.fromhex(value)
    except ValueError as exc:
        raise BoundaryError(f"the sealed state's {what} is malformed") from exc


class ModelVault:
    """Seed, keys and pending models (see the module docstring). Thread-safe.

    ``max_pending`` and ``max_pending_bytes`` bound the models kept while they wait for their key.
    """

    def __init__(
        self,
        repository: RepositoryLike,
        *,
        on_change: Callable[[bytes], None],
        max_pending: int = 16,
        max_pending_bytes: int = 2 << 30,
    ) -> None:
        self._repository = repository
        self._on_change = on_change
        self._max_pending = max_pending
        self._max_pending_bytes = max_pending_bytes
        self._lock = threading.RLock()
        self._generation = 0
        self._seed: bytes | None = None
        self._model_keys: dict[tuple[str, str], bytes] = {}
        self._kbs_keys: dict[str, bytes] = {}
        self._pending: dict[tuple[str, str], tuple[ModelHeader, bytes, str]] = {}

    # -- state ---------------------------------------------------------------------------------------------

    def restore(self, document: bytes) -> None:
        """Load a state document made by :meth:`state_document`; raises :class:`BoundaryError` when malformed."""
        if len(document) > _MAX_STATE:
            raise BoundaryError("the sealed state is too large")
        try:
            state = loads(document)
        except (UnicodeDecodeError, ValueError) as exc:
            raise BoundaryError("the sealed state is not JSON") from exc
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise BoundaryError("the sealed state has an unknown version")
        generation, seed = state.get("generation"), state.get("seed")
        models, kbs = state.get("model_keys"), state.get("kbs_keys")
        if type(generation) is not int or not isinstance(models, dict) or not isinstance(kbs, dict):
            raise BoundaryError("the sealed state is malformed")
        model_keys: dict[tuple[str, str], bytes] = {}
        for label, value in models.items():
            name, _, version = label.partition("/")
            model_keys[(name, version)] = _hex_key(value, "model key")
        with self._lock:
            self._generation = generation
            self._seed = None if seed is None else _hex_key(seed, "seed", SEED_SIZE)
            self._model_keys = model_keys
            self._kbs_keys = {str(name): _hex_key(value, "key broker key") for name, value in kbs.items()}

    def state_document(self) -> bytes:
        """The state as canonical JSON (the enclave seals it; it holds every secret of the vault)."""
        with self._lock:
            state = {
                "version": STATE_VERSION,
                "generation": self._generation,
                "seed": None if self._seed is None else self._seed.hex(),
                "model_keys": {f"{n}/{v}": key.hex() for (n, v), key in sorted(self._model_keys.items())},
                "kbs_keys": {name: key.hex() for name, key in sorted(self._kbs_keys.items())},
            }
        return json.dumps(state, sort_keys=True, separators=(",", ":")).encode("ascii")

    def _changed(self) -> None:
        # Called with the lock held: the states reach on_change (and so storage) in the order they were made.
        self._generation += 1
        self._on_change(self.state_document())

    # -- the HPKE seed ---------------------------------------------------------------------------------------

    @property
    def seed(self) -> bytes | None:
        """The HPKE seed, or None while it has not been created or released."""
        with self._lock:
            return self._seed

    def set_seed(self, seed: bytes) -> None:
        """Keep ``seed`` (32 bytes) as the HPKE seed; raises :class:`BoundaryError` for another size."""
        if not isinstance(seed, bytes) or len(seed) != SEED_SIZE:
            raise BoundaryError(f"the HPKE seed must be {SEED_SIZE} bytes")
        with self._lock:
            self._seed = seed
            self._changed()

    # -- models and their keys ------------------------------------------------------------------------------

    def _key_for(self, header: ModelHeader) -> bytes | None:
        kbs = header.kbs_key
        if kbs is not None and header.wrapped_key is None:
            return self._kbs_keys.get(kbs)
        return self._model_keys.get((header.name, header.version))

    def _try(self, header: ModelHeader, blob: bytes, key: bytes) -> LoadOutcome:
        info = self._repository.add(blob, key)
        self._pending.pop((header.name, header.version), None)
        return LoadOutcome(header, True, info)

    def _park(self, header: ModelHeader, blob: bytes, reason: str) -> LoadOutcome:
        label = (header.name, header.version)
        others = [entry for key, entry in self._pending.items() if key != label]
        if len(others) >= self._max_pending:
            raise BoundaryError(f"at most {self._max_pending} models may wait for their key")
        if sum(len(entry[1]) for entry in others) + len(blob) > self._max_pending_bytes:
            raise BoundaryError(
                f"the models waiting for their key would exceed {self._max_pending_bytes} bytes"
            )
        self._pending[label] = (header, blob, reason)
        return LoadOutcome(header, False, None, reason)

    def offer(self, blob: bytes, *, max_model_bytes: int) -> LoadOutcome:
        """Load an encrypted model if its key is known, else keep it until the key arrives.

        Raises :class:`BadDataError` for a malformed container, :class:`BoundaryError` over the limits, and what
        the repository raises. A known key that does not open the model leaves it waiting, with that reason.
        """
        header = read_header(blob, max_model_bytes=max_model_bytes)
        with self._lock:
            key = self._key_for(header)
            if key is None:
                return self._park(header, blob, "waiting for its key")
            try:
                return self._try(header, blob, key)
            except VerificationError:
                return self._park(header, blob, "the key held for it does not open it")

    def set_owner_key(self, name: str, version: str, key: bytes) -> Any:
        """Keep the owner's ``key`` for model ``name`` ``version`` and load the model if it is waiting.

        Returns the repository's info of the model it loaded, or of the model loaded with this same key already
        (None when no model waits). Raises :class:`BoundaryError` for a key that is not 32 bytes,
        :class:`VerificationError` when it does not open the waiting model (the key is then not kept),
        :class:`UsageError` for another key of a loaded model, and what the repository raises.
        """
        if not isinstance(key, bytes) or len(key) != KEY_SIZE:
            raise BoundaryError(f"a model key is {KEY_SIZE} bytes")
        with self._lock:
            loaded = self._repository.find(name, version)
            if loaded is not None:
                # Its key is proven (it opened the model): the same key again is answered as loaded, another one
                # is refused, since it could only break the next start.
                held = self._model_keys.get((name, version))
                if held is None or not hmac.compare_digest(held, key):
                    raise UsageError(f"model {name} version {version} is loaded: delete it to change its key")
                return loaded[0]
            waiting = self._pending.get((name, version))
            outcome: LoadOutcome | None = None
            if waiting is not None:
                header, blob, _ = waiting
                if header.key_id != OWNER_KEY_ID:
                    raise BoundaryError(f"model {name} version {version} takes its key from the key broker")
                outcome = self._try(header, blob, key)
            self._model_keys[(name, version)] = key
            self._changed()
            return None if outcome is None else outcome.info

    def set_kbs_key(self, kbs_name: str, key: bytes) -> list[LoadOutcome]:
        """Keep a key the key broker released and load the models waiting for it; their outcomes.

        Raises :class:`BoundaryError` for a key that is not 32 bytes. A waiting model the key does not open, or
        that the repository refuses, stays waiting with the reason.
        """
        if not isinstance(key, bytes) or len(key) != KEY_SIZE:
            raise BoundaryError(f"a model key is {KEY_SIZE} bytes")
        outcomes = []
        with self._lock:
            self._kbs_keys[kbs_name] = key
            self._changed()
            for header, blob, _ in list(self._pending.values()):
                # An envelope container names the broker key too, but its model key is the unwrapped one.
                if header.kbs_key != kbs_name or header.wrapped_key is not None:
                    continue
                try:
                    outcomes.append(self._try(header, blob, key))
                except VerificationError:
                    outcomes.append(self._park(header, blob, "the released key does not open it"))
                except BadDataError as exc:
                    outcomes.append(self._park(header, blob, f"refused: {exc}"))
        return outcomes

    def set_envelope_key(self, kbs_name: str, unwrap: Callable[[str], bytes]) -> list[LoadOutcome]:
        """Unwrap the model keys of the models waiting for envelope key ``kbs_name`` and load them; their outcomes.

        ``unwrap`` opens a header's ``wrapped_key`` with the released private key (the enclave builds it; the
        vault never holds that key) and raises :class:`BadDataError`, :class:`UsageError` or
        :class:`VerificationError` when it cannot. A model key is kept (and sealed) only once it opened its model;
        a model whose wrapped key does not unwrap, whose key does not open it or that the repository refuses
        stays waiting with the reason.
        """
        outcomes = []
        with self._lock:
            kept = False
            for header, blob, _ in list(self._pending.values()):
                if header.envelope_key != kbs_name or header.wrapped_key is None:
                    continue
                try:
                    key = unwrap(header.wrapped_key)
                except (BadDataError, UsageError, VerificationError):
                    outcomes.append(
                        self._park(header, blob, "the released key does not unwrap its model key")
                    )
                    continue
                if not isinstance(key, bytes) or len(key) != KEY_SIZE:
                    outcomes.append(self._park(header, blob, f"its wrapped key is not a {KEY_SIZE}-byte key"))
                    continue
                try:
                    outcome = self._try(header, blob, key)
                except VerificationError:
                    outcomes.append(self._park(header, blob, "its unwrapped key does not open it"))
                    continue
                except BadDataError as exc:
                    outcomes.append(self._park(header, blob, f"refused: {exc}"))
                    continue
                # Proven by opening the model: kept so that a restart loads it without the key broker.
                self._model_keys[(header.name, header.version)] = key
                kept = True
                outcomes.append(outcome)
            if kept:
                self._changed()
        return outcomes

    def remove(self, name: str, version: str) -> bool:
        """Forget model ``name`` ``version``: loaded or waiting, and its owner key. True when it existed."""
        with self._lock:
            found = self._pending.pop((name, version), None) is not None
            found = self._repository.remove(name, version) is not None or found
            if self._model_keys.pop((name, version), None) is not None:
                self._changed()
            return found

    def pending(self) -> list[tuple[ModelHeader, int, str]]:
        """The waiting models: header, container size and reason, sorted by name and version."""
        with self._lock:
            entries = sorted(self._pending.values(), key=lambda entry: (entry[0].name, int(entry[0].version)))
            return [(header, len(blob), reason) for header, blob, reason in entries]

    def missing_kbs_keys(self) -> list[str]:
        """The key broker keys that waiting models need as their model key (sorted, without repeats)."""
        with self._lock:
            names = {
                h.kbs_key
                for h, _, _ in self._pending.values()
                if h.kbs_key is not None and h.wrapped_key is None
            }
            return sorted(name for name in names if name not in self._kbs_keys)

    def missing_envelope_keys(self) -> list[str]:
        """The key broker envelope keys that waiting models need to unwrap their model key (sorted, no repeats)."""
        with self._lock:
            return sorted(
                {h.envelope_key for h, _, _ in self._pending.values() if h.envelope_key is not None}
            )
