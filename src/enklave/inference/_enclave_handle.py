"""The host's handle on the inference enclave: sign and load it, keep its sealed state, feed it models and keys.

:class:`InferenceEnclave` wraps :class:`enklave.host.Enclave` with the inference ecalls (see
``enclave_app/enclave.py``): it signs the packaged enclave with the measured ``settings.json`` (where the HPKE
seed comes from), loads it with the ``persist_state`` ocall wired to storage, hands it its sealed state at start,
streams model containers into it in pieces, and runs the key release flow with the attestation service and the
key broker (:meth:`InferenceEnclave.release`):

1. the enclave makes a P-256 key pair and a quote over SHA-256 of ``{"keys": [public JWK]}``
   (``release_request``);
2. the attestation service verifies the quote and that binding and answers a token whose ``x-ms-runtime`` claim
   holds that public key;
3. the key broker checks the token against the key's release policy (MRENCLAVE, MRSIGNER, ...), wraps the key
   to the public key in the token and answers with its own enclave's quote binding the name, that key and the
   wrapped value (:mod:`enklave.services.kbs.release_evidence`);
4. the host fetches the collateral for that quote, and the enclave checks the quote against the measured key
   broker identity and the binding, then unwraps the key with its private key (``accept_released``), which
   never left it.

Nothing here sees a key, a model or a tensor in clear: the wrapped key, the token and the containers are all the
host ever holds. Errors: what :func:`enklave.host.load` and the ecalls raise, the clients' errors in the key
release flow, and the storage's :class:`~enklave.errors.TransportError`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

from enklave import host
from enklave._json import loads
from enklave.attestation.evidence import collateral_request
from enklave.attestation.sources import CollateralSource
from enklave.errors import UsageError
from enklave.services._enclave_app import sign_packaged_enclave
from enklave.services.attestation.client import AttestationClient
from enklave.services.kbs.client import KbsClient
from enklave.services.storage import Storage
from enklave.sgx.quote import Quote

__all__ = ["BUNDLE_NAME", "STATE_KEY", "STATE_NAMESPACE", "InferenceEnclave"]

BUNDLE_NAME: Final = "inference.enclave"
STATE_NAMESPACE: Final = "inference-enclave-state"
STATE_KEY: Final = "sealed"
_SETTINGS_FILE: Final = "settings.json"

log = logging.getLogger("enklave.inference")


def sign_inference_enclave(
    data_dir: Path,
    hpke_seed_key: str | None,
    *,
    kbs_policy: Mapping[str, Any] | None = None,
    kbs_allow_simulated: bool = False,
    mode: str = "sim",
) -> Path:
    """Sign the packaged inference enclave into ``data_dir`` with the measured settings; the bundle's path.

    ``kbs_policy`` (``mr_signer`` and/or ``mr_enclave`` hex, ``isv_prod_id``, ``min_isv_svn``) is the key broker
    whose release quotes the enclave accepts, and ``kbs_allow_simulated`` whether they may be simulated; both are
    measured, and left out of the settings (so the MRENCLAVE is the one of an enclave without a key broker) when
    ``kbs_policy`` is None. In ``mode`` ``"sgx"`` the Gramine manifest is built too (see
    :func:`~enklave.services._enclave_app.sign_packaged_enclave`)."""
    document: dict[str, Any] = {"hpke_seed_key": hpke_seed_key}
    if kbs_policy is not None:
        document.update(kbs_policy=dict(kbs_policy), kbs_allow_simulated=kbs_allow_simulated)
    settings = json.dumps(document, sort_keys=True) + "\n"
    return sign_packaged_enclave(
        data_dir,
        "enklave.inference",
        BUNDLE_NAME,
        extra_files={_SETTINGS_FILE: settings.encode("utf-8")},
        mode=mode,
    )


class InferenceEnclave:
    """A loaded inference enclave whose sealed state lives in ``storage`` (see the module docstring).

    :meth:`start` raises what :func:`enklave.host.load` raises, and :class:`~enklave.errors.EcallError` when the
    stored state does not unseal (another enclave's, or tampered): the enclave never silently starts over,
    which would lose the model keys.
    """

    def __init__(
        self, bundle: Path, storage: Storage, *, mode: str, home: Path | None, timeout: float
    ) -> None:
        self._bundle = bundle
        self._storage = storage
        self._mode = mode
        self._home = home
        self._timeout = timeout
        self._enclave: host.Enclave | None = None

    def start(self, settings: dict[str, Any]) -> None:
        """Load the enclave and run ``init`` with the stored state and ``settings``; stores the new state."""
        enclave = host.load(
            self._bundle,
            mode=self._mode,
            home=self._home,
            timeout=self._timeout,
            ocalls={"persist_state": self._persist},
        )
        try:
            sealed = self._storage.get(STATE_NAMESPACE, STATE_KEY)
            resealed = enclave.ecall.init(sealed, json.dumps(settings, sort_keys=True))
            if resealed != sealed:
                self._storage.put(STATE_NAMESPACE, STATE_KEY, resealed)
        except BaseException:
            enclave.close()
            raise
        self._enclave = enclave

    def _persist(self, sealed: bytes) -> None:
        # The ocall: the enclave hands over each new sealed state, in order, while the ecall that made it waits.
        self._storage.put(STATE_NAMESPACE, STATE_KEY, sealed)

    def close(self) -> None:
        """Stop the enclave (idempotent)."""
        if self._enclave is not None:
            self._enclave.close()
            self._enclave = None

    @property
    def running(self) -> host.Enclave:
        """The loaded enclave; raises :class:`~enklave.errors.UsageError` when it is not running."""
        if self._enclave is None:
            raise UsageError("the inference enclave is not running")
        return self._enclave

    @property
    def alive(self) -> bool:
        """True while the enclave runs."""
        return self._enclave is not None and self._enclave.alive

    def models(self) -> dict[str, Any]:
        """The ``models`` ecall's answer: ``{"loaded", "waiting", "missing_kbs_keys", "missing_envelope_keys",
        "seed"}``."""
        answer: dict[str, Any] = loads(self.running.ecall.models())
        return answer

    def load(self, pieces: Iterable[bytes], size: int, name: str, version: str) -> dict[str, Any]:
        """Stream a container of ``size`` bytes into the enclave and load it as ``name`` ``version``; the
        ``load_model`` answer (``status`` ``loaded``, ``waiting`` or ``refused``)."""
        enclave = self.running
        upload = enclave.ecall.upload_begin(size)
        for piece in pieces:
            for start in range(0, len(piece), _PIECE):
                enclave.ecall.upload_chunk(upload, bytes(piece[start : start + _PIECE]))
        answer: dict[str, Any] = loads(enclave.ecall.load_model(upload, name, version))
        return answer

    def release(
        self,
        kind: str,
        name: str,
        attestation: AttestationClient,
        kbs: KbsClient,
        collateral: CollateralSource,
    ) -> dict[str, Any]:
        """The key release flow of the module docstring for key broker key ``name`` (``kind`` ``hpke-seed``,
        ``model-key`` or ``envelope-key``: an RSA or EC key whose private half unwraps the model keys in waiting
        containers' headers, inside the enclave), with the key broker's quote checked on ``collateral``'s
        collateral; the ``accept_released`` answer. Raises the clients' errors when the attestation service or the
        key broker refuses, :class:`~enklave.errors.InvalidQuote` for a key broker quote that does not parse, the
        source's errors when it has no collateral, and :class:`~enklave.errors.EcallError` when the enclave refuses
        the release (its ``type_name`` says which check failed)."""
        enclave = self.running
        # 1. A key pair in the enclave and a quote binding its public half.
        request = enclave.ecall.release_request(kind, name)
        runtime = loads(request["runtime"])
        # 2. A token from the attestation service, whose x-ms-runtime claim carries the public key.
        token = attestation.attest_sgx(request["quote"], runtime_json=runtime)
        # 3. The key broker's release, wrapped to that key, with its enclave's quote for it.
        released = kbs.release_with_evidence(name, token)
        # 4. The collateral for that quote; the enclave checks the quote and unwraps, never here.
        wanted = collateral_request(Quote.from_bytes(released.quote))
        fetched = collateral.fetch(wanted.fmspc, wanted.ca)
        answer: dict[str, Any] = loads(
            enclave.ecall.accept_released(kind, name, released.value, released.quote, fetched.to_json())
        )
        log.info("key broker key %s released to the enclave (%s)", name, kind)
        return answer


# Pieces handed to one upload_chunk ecall (the enclave takes up to 8 MiB).
_PIECE: Final = 4 << 20
