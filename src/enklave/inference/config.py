"""The inference service's configuration: where it keeps state, how it runs its enclave, whom it trusts, limits.

:class:`InferenceConfig` checks every option when it is built (a bad one raises
:class:`~enklave.errors.UsageError`) and derives the settings the enclave is started with, including the ones
measured into it (where the HPKE seed comes from, which key broker identity to trust).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from enklave.attestation.policy import EnclavePolicy
from enklave.attestation.sources import (
    INTEL_PCS_URL,
    CollateralSource,
)
from enklave.deploy.gramine import PYTHON_THREADS
from enklave.errors import UsageError
from enklave.inference.credentials import check_host_credential, check_token_sha256, owner_credentials
from enklave.inference.model_format import MAX_MODEL_BYTES

__all__ = ["GATEWAY_OVERHEAD", "MAX_ORT_THREADS", "InferenceConfig"]

GATEWAY_OVERHEAD: Final = 4096
"""Bytes an encapsulated request may carry beyond ``max_request_bytes`` (OHTTP and Binary HTTP framing)."""
_MAX_ENCLAVE_REQUEST: Final = 64 << 20
#: ONNX Runtime's thread pool lives in the enclave's spare threads: on SGX, Gramine's ``sgx.max_threads`` is the
#: TCS count (one per concurrent ecall) plus PYTHON_THREADS, of which the interpreter and Gramine's helpers take
#: about four. Sizing the pool to the rest keeps it from failing to start inside the enclave.
MAX_ORT_THREADS: Final = PYTHON_THREADS - 4
_MIN_TOKEN: Final = 16


@dataclass(frozen=True, slots=True)
class InferenceConfig:
    """How the inference service runs.

    ``data_dir`` holds the signed enclave bundle and its signing key; ``mode`` is ``sim``, ``sgx`` or ``auto``;
    ``home`` is ``ENKLAVE_HOME`` for the enclave. The model owner is best configured by ``owner_credential``
    (the host credential the owner presents here) with ``owner_token_sha256`` (the digest the enclave checks the
    owner token against): the pair :func:`~enklave.inference.credentials.owner_credentials` derives from the
    token, so that the host never sees the token. ``owner_token`` is accepted too: both values are derived from it
    here and the field is then cleared to None (the process saw the token once). Neither: model management and
    owner keys are disabled (403). ``api_key`` guards inference (None: open). Tokens are at least 16 printable
    characters without spaces. ``attestation_url`` and
    ``kbs_url`` are the attestation service and the key broker of the key release flow (both or neither);
    ``hpke_seed_key`` names the key broker key the gateway's HPKE seed comes from (measured into the enclave; None:
    the enclave makes its own). With a key broker, ``kbs_mrsigner`` and/or ``kbs_mrenclave`` (hex),
    ``kbs_isv_prod_id`` and ``kbs_min_isv_svn`` name the key broker enclave whose release quotes the enclave
    accepts (measured, see :meth:`kbs_policy`; one of the first two is required), and ``kbs_allow_simulated``
    whether they may come from the simulated platform (None: only in sim mode). ``max_batch``, ``batch_delay_ms``
    and ``threads`` (ONNX Runtime's intra-op threads, at most :data:`MAX_ORT_THREADS`; 0: the CPU count up to
    that bound) tune inference; the ``max_*`` values are
    the limits answered with 413/400.
    ``collateral_source`` replaces the default (the simulated platform's collateral in sim mode, Intel's PCS at
    ``pcs_url`` on SGX).
    """

    data_dir: Path
    mode: str = "sim"
    home: Path | None = None
    owner_token: str | None = field(default=None, repr=False)
    api_key: str | None = field(default=None, repr=False)
    attestation_url: str | None = None
    kbs_url: str | None = None
    hpke_seed_key: str | None = None
    max_batch: int = 8
    batch_delay_ms: float = 2.0
    threads: int = 0
    max_models: int = 16
    max_model_bytes: int = 1 << 30
    max_total_bytes: int = 2 << 30
    max_request_bytes: int = 32 << 20
    max_tensors: int = 64
    max_elements: int = 1 << 26
    max_tensor_bytes: int = 256 << 20
    ecall_timeout: float = 300.0
    pcs_url: str = INTEL_PCS_URL
    collateral_source: CollateralSource | None = None
    owner_credential: str | None = field(default=None, repr=False)
    owner_token_sha256: str | None = None
    kbs_mrsigner: str | None = None
    kbs_mrenclave: str | None = None
    kbs_isv_prod_id: int | None = None
    kbs_min_isv_svn: int | None = None
    kbs_allow_simulated: bool | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("sim", "sgx", "auto"):
            raise UsageError(f"mode must be sim, sgx or auto, not {self.mode!r}")
        token = self.api_key
        if token is not None and (len(token) < _MIN_TOKEN or not token.isprintable() or " " in token):
            raise UsageError(f"the API key must be at least {_MIN_TOKEN} printable characters without spaces")
        self._configure_owner()
        if (self.attestation_url is None) != (self.kbs_url is None):
            raise UsageError(
                "the key release flow needs both an attestation service URL and a key broker URL"
            )
        if self.hpke_seed_key is not None and self.kbs_url is None:
            raise UsageError("an HPKE seed from the key broker needs --attestation-url and --kbs-url")
        self._check_kbs_identity()
        if not 1 <= self.max_batch <= 1024 or not 0 <= self.batch_delay_ms <= 1000:
            raise UsageError("max_batch is 1 to 1024 and batch_delay_ms 0 to 1000")
        if not 0 <= self.threads <= MAX_ORT_THREADS:
            raise UsageError(
                f"threads is 0 (the CPU count, up to {MAX_ORT_THREADS}) to {MAX_ORT_THREADS}: ONNX Runtime's pool "
                "runs in the enclave's spare threads (sgx.max_threads), not in its TCS for ecalls"
            )
        if not 0 < self.max_model_bytes <= MAX_MODEL_BYTES or self.max_total_bytes < self.max_model_bytes:
            raise UsageError("max_model_bytes must be positive, at most 2 GiB and at most max_total_bytes")
        if not 0 < self.max_request_bytes <= _MAX_ENCLAVE_REQUEST - GATEWAY_OVERHEAD:
            raise UsageError(f"max_request_bytes must be 1 to {_MAX_ENCLAVE_REQUEST - GATEWAY_OVERHEAD}")
        if min(self.max_models, self.max_tensors, self.max_elements, self.max_tensor_bytes) < 1:
            raise UsageError("the limits must be positive")

    def _configure_owner(self) -> None:
        """Check the owner's settings and replace an owner token by the two values derived from it."""
        if self.owner_token is not None:
            if self.owner_credential is not None or self.owner_token_sha256 is not None:
                raise UsageError(
                    "give the owner token, or the owner credential with the token's SHA-256, not both"
                )
            credential, digest = owner_credentials(self.owner_token)
            # The frozen dataclass is still being built: these assignments complete it. Clearing the token keeps
            # it out of the configuration, which lives as long as the service does.
            object.__setattr__(self, "owner_credential", credential)
            object.__setattr__(self, "owner_token_sha256", digest)
            object.__setattr__(self, "owner_token", None)
            return
        if (self.owner_credential is None) != (self.owner_token_sha256 is None):
            raise UsageError("the owner credential and the owner token's SHA-256 go together")
        if self.owner_credential is not None:
            check_host_credential(self.owner_credential)
            object.__setattr__(self, "owner_token_sha256", check_token_sha256(self.owner_token_sha256))

    def _check_kbs_identity(self) -> None:
        identity = (self.kbs_mrsigner, self.kbs_mrenclave, self.kbs_isv_prod_id, self.kbs_min_isv_svn)
        if self.kbs_url is None:
            if any(value is not None for value in identity):
                raise UsageError("the key broker's identity (--kbs-mrsigner, ...) goes with --kbs-url")
            return
        policy = self.kbs_policy()
        if policy is None:
            # The enclave accepts a release only with the quote of the key broker it knows, so without an identity
            # it accepts none: a seed from the key broker could never arrive.
            if self.hpke_seed_key is not None or any(value is not None for value in identity):
                raise UsageError(
                    "the key broker's identity needs --kbs-mrsigner (or ENKLAVE_KBS_MRSIGNER, not empty) "
                    "and/or --kbs-mrenclave"
                )
            return
        # Validates the hex values and ranges now, as the enclave will read them.
        EnclavePolicy.from_mapping(policy)

    def kbs_policy(self) -> dict[str, Any] | None:
        """The measured key broker identity (``mr_signer``, ``mr_enclave`` lowercase hex, ``isv_prod_id``,
        ``min_isv_svn``; unset ones left out), or None without a key broker or without its MRSIGNER or MRENCLAVE
        (the enclave then accepts no release)."""
        if self.kbs_url is None or (self.kbs_mrsigner is None and self.kbs_mrenclave is None):
            return None
        values = {
            "mr_signer": None if self.kbs_mrsigner is None else self.kbs_mrsigner.lower(),
            "mr_enclave": None if self.kbs_mrenclave is None else self.kbs_mrenclave.lower(),
            "isv_prod_id": self.kbs_isv_prod_id,
            "min_isv_svn": self.kbs_min_isv_svn,
        }
        return {name: value for name, value in values.items() if value is not None}

    def kbs_simulated(self, mode: str) -> bool:
        """Whether the enclave accepts simulated key broker quotes when it runs in ``mode`` (``sim``/``sgx``)."""
        return mode == "sim" if self.kbs_allow_simulated is None else self.kbs_allow_simulated

    def ort_threads(self) -> int:
        """ONNX Runtime's intra-op threads in the enclave: ``threads``, or the CPU count up to the enclave's spare
        threads."""
        return self.threads or min(os.cpu_count() or 1, MAX_ORT_THREADS)

    def enclave_settings(self) -> dict[str, Any]:
        """The run-time settings the enclave's ``init`` takes (tokens only as SHA-256 digests)."""
        api_key = self.api_key
        return {
            "owner_token_sha256": self.owner_token_sha256,
            "api_key_sha256": None if api_key is None else hashlib.sha256(api_key.encode("utf-8")).hexdigest(),
            "max_models": self.max_models, "max_model_bytes": self.max_model_bytes,
            "max_total_bytes": self.max_total_bytes, "intra_op_threads": self.ort_threads(),
            "max_batch": self.max_batch, "max_delay_ms": float(self.batch_delay_ms),
            "max_tensors": self.max_tensors, "max_elements": self.max_elements,
            "max_tensor_bytes": self.max_tensor_bytes, "max_request_bytes": self.max_request_bytes,
        }  # fmt: skip
