"""The MAA claim set for verified SGX evidence (private; re-exported by :mod:`.tokens`).

Claim names and encodings follow Microsoft Azure Attestation's documented SGX claims ("Claim sets" in the MAA
documentation): ``x-ms-sgx-mrenclave`` and ``x-ms-sgx-mrsigner`` as lowercase hex, ``x-ms-sgx-ehd`` as
base64url of the runtime data, ``x-ms-sgx-collateral`` as an object of SHA-256 hashes in lowercase hex. MAA
documents no claim for the TCB status or the advisories, nor for simulated evidence, so enklave adds its own,
prefixed ``x-enklave-``.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding

from enklave.attestation._jwks import b64url_encode
from enklave.attestation.collateral import QuoteCollateral
from enklave.attestation.verified import VerifiedQuote
from enklave.errors import UsageError

__all__ = [
    "CLAIM_ADVISORY_IDS",
    "CLAIM_INITTIME_DATA",
    "CLAIM_SIMULATED",
    "CLAIM_TCB_EVALUATION_DATA_NUMBER",
    "CLAIM_TCB_STATUS",
    "collateral_claim",
    "sgx_claims",
]

CLAIM_TCB_STATUS = "x-enklave-tcb-status"
"""enklave's claim for the combined TCB status (MAA documents none for SGX)."""
CLAIM_ADVISORY_IDS = "x-enklave-advisory-ids"
"""enklave's claim for the Intel advisories that apply (a list of strings)."""
CLAIM_SIMULATED = "x-enklave-simulated"
"""enklave's claim that says whether the evidence came from the simulated platform (always present)."""
CLAIM_TCB_EVALUATION_DATA_NUMBER = "x-enklave-tcb-evaluation-data-number"
"""enklave's claim for the lower of the TCB info's and the QE identity's tcbEvaluationDataNumber (an integer).
Intel raises the number at each TCB recovery, so a relying party that requires a minimum refuses evidence judged
with collateral from before that recovery, which a host that controls time and collateral could otherwise supply."""
CLAIM_INITTIME_DATA = "x-enklave-inittime-data"
"""enklave's claim for binary init-time data, base64url (MAA documents a claim only for JSON init-time data)."""


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def collateral_claim(quote: bytes, collateral: QuoteCollateral) -> dict[str, str]:
    """MAA's ``x-ms-sgx-collateral`` object: SHA-256 (lowercase hex) of the quote and the collateral used.

    MAA names the seven hashes but not the exact bytes behind each; enklave hashes the quote as received, the
    signed bodies of the TCB info and the QE identity, their issuer chains as the PEM text received, and the
    DER of the root CA CRL, which is the CRL that covers both issuing (TCB signing) certificates. That is why
    ``qeidcertshash`` equals ``tcbinfocertshash`` and ``qeidcrlhash`` equals ``tcbinfocrlhash`` for Intel's
    collateral, as in MAA's own tokens.
    """
    crl_hash = _sha256_hex(collateral.root_ca_crl.public_bytes(Encoding.DER))
    return {
        "qeidcertshash": _sha256_hex(collateral.qe_identity_issuer_chain_pem),
        "qeidcrlhash": crl_hash,
        "qeidhash": _sha256_hex(collateral.qe_identity.body),
        "quotehash": _sha256_hex(quote),
        "tcbinfocertshash": _sha256_hex(collateral.tcb_info_issuer_chain_pem),
        "tcbinfocrlhash": crl_hash,
        "tcbinfohash": _sha256_hex(collateral.tcb_info.body),
    }


def _json_object(value: Mapping[str, Any] | None, name: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise UsageError(f"{name} must be a mapping (a JSON object), got {type(value).__name__}")
    return copy.deepcopy(dict(value))


def _optional_bytes(value: bytes | None, name: str) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, bytes | bytearray | memoryview):
        raise UsageError(f"{name} must be bytes, got {type(value).__name__}")
    return bytes(value)


def sgx_claims(
    verified: VerifiedQuote,
    *,
    runtime_data: bytes | None,
    runtime_json: Mapping[str, Any] | None,
    init_time_data: bytes | None,
    nonce: str | None,
    collateral: QuoteCollateral | None,
    attestation_type: str = "sgx",
    init_time_json: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The claims an attestation token states about ``verified`` SGX evidence, in MAA's names and encodings.

    Always present: ``x-ms-ver`` ("1.0"), ``x-ms-attestation-type``, ``x-ms-sgx-is-debuggable``,
    ``x-ms-sgx-product-id``, ``x-ms-sgx-mrsigner``, ``x-ms-sgx-mrenclave``, ``x-ms-sgx-svn``,
    ``x-ms-sgx-report-data``, ``x-ms-sgx-config-id``, ``x-ms-sgx-config-svn``,
    ``x-ms-sgx-isv-extended-product-id``, ``x-ms-sgx-isv-family-id`` (binary values as lowercase hex), and
    enklave's ``x-enklave-tcb-status``, ``x-enklave-advisory-ids``, ``x-enklave-tcb-evaluation-data-number`` and
    ``x-enklave-simulated``. Present when
    given: ``x-ms-sgx-ehd`` (base64url of ``runtime_data``), ``x-ms-runtime`` (``runtime_json``),
    ``x-ms-inittime`` (``init_time_json``), ``x-enklave-inittime-data`` (base64url of ``init_time_data``),
    ``nonce``, and ``x-ms-sgx-collateral`` (see :func:`collateral_claim`).

    This function states facts; it checks no binding. The caller (the attestation service) must already have
    checked that the SHA-256 of ``runtime_data`` is the first half of the report data, as MAA does. The
    registered claims (``iss``, ``iat``, ``nbf``, ``exp``, ``jti``) are added by the signer. Raises
    :class:`UsageError` for an argument of the wrong type.
    """
    if not isinstance(verified, VerifiedQuote):
        raise UsageError(f"verified must be a VerifiedQuote, got {type(verified).__name__}")
    if not isinstance(attestation_type, str) or not attestation_type:
        raise UsageError("attestation_type must be a non-empty string")
    if nonce is not None and not isinstance(nonce, str):
        raise UsageError(f"nonce must be a string, got {type(nonce).__name__}")
    runtime = _optional_bytes(runtime_data, "runtime_data")
    init_time = _optional_bytes(init_time_data, "init_time_data")
    runtime_object = _json_object(runtime_json, "runtime_json")
    init_time_object = _json_object(init_time_json, "init_time_json")
    body = verified.body
    claims: dict[str, Any] = {
        "x-ms-ver": "1.0",
        "x-ms-attestation-type": attestation_type,
        "x-ms-sgx-is-debuggable": body.debug,
        "x-ms-sgx-product-id": body.isv_prod_id,
        "x-ms-sgx-mrsigner": bytes(body.mr_signer).hex(),
        "x-ms-sgx-mrenclave": bytes(body.mr_enclave).hex(),
        "x-ms-sgx-svn": body.isv_svn,
        "x-ms-sgx-report-data": bytes(body.report_data).hex(),
        "x-ms-sgx-config-id": bytes(body.config_id).hex(),
        "x-ms-sgx-config-svn": body.config_svn,
        "x-ms-sgx-isv-extended-product-id": bytes(body.isv_ext_prod_id).hex(),
        "x-ms-sgx-isv-family-id": bytes(body.isv_family_id).hex(),
        CLAIM_TCB_STATUS: verified.tcb_status.value,
        CLAIM_ADVISORY_IDS: list(verified.advisory_ids),
        CLAIM_TCB_EVALUATION_DATA_NUMBER: verified.tcb_evaluation_data_number,
        # Always written, True or False, so that a reader never has to guess from an absent claim.
        CLAIM_SIMULATED: verified.simulated,
    }
    if runtime is not None:
        claims["x-ms-sgx-ehd"] = b64url_encode(runtime)
    if runtime_object is not None:
        claims["x-ms-runtime"] = runtime_object
    if init_time_object is not None:
        claims["x-ms-inittime"] = init_time_object
    if init_time is not None:
        claims[CLAIM_INITTIME_DATA] = b64url_encode(init_time)
    if nonce is not None:
        claims["nonce"] = nonce
    if collateral is not None:
        if not isinstance(collateral, QuoteCollateral):
            raise UsageError(f"collateral must be a QuoteCollateral, got {type(collateral).__name__}")
        claims["x-ms-sgx-collateral"] = collateral_claim(verified.quote.raw, collateral)
    return claims
