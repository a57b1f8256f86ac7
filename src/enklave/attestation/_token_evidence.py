"""Reading enclave evidence back out of verified token claims (private; see :mod:`.tokens`).

:class:`TokenEvidence` is the part of :class:`~enklave.attestation.tokens.VerifiedToken` that satisfies
:class:`~enklave.attestation.policy.AppraisableEvidence`: each attribute decodes the MAA claim it comes from
and raises :class:`~enklave.errors.PolicyError` (naming the attribute as ``field``) when the claim is missing
or malformed, so that appraisal rejects such a token instead of guessing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from enklave.attestation._jwks import b64url_decode
from enklave.attestation._sgx_claims import (
    CLAIM_ADVISORY_IDS,
    CLAIM_SIMULATED,
    CLAIM_TCB_EVALUATION_DATA_NUMBER,
    CLAIM_TCB_STATUS,
)
from enklave.attestation.collateral import TcbStatus
from enklave.errors import InvalidToken, PolicyError

if TYPE_CHECKING:
    from enklave.attestation.policy import AppraisableEvidence

__all__ = ["TokenEvidence"]

_HEX = re.compile(r"(?:[0-9a-fA-F]{2})*")
_U16_MAX = 0xFFFF
_U32_MAX = 0xFFFF_FFFF
_MAX_ADVISORIES = 256


def _missing(attribute: str, claim: str, value: object, requirement: str) -> PolicyError:
    shown = value if isinstance(value, bool | int | None) else type(value).__name__
    return PolicyError(
        f"the token's {claim} claim is {'missing' if value is None else 'malformed'}; it must be {requirement}",
        field=attribute,
        expected=requirement,
        actual=shown,
    )


class TokenEvidence:
    """Mixin: the :class:`AppraisableEvidence` attributes of a verified token, decoded from its claims."""

    __slots__ = ()

    if TYPE_CHECKING:

        @property
        def claims(self) -> Mapping[str, Any]: ...

    def _hex_claim(self, attribute: str, claim: str, size: int) -> bytes:
        value = self.claims.get(claim)
        if not isinstance(value, str) or len(value) != 2 * size or not _HEX.fullmatch(value):
            raise _missing(attribute, claim, value, f"{size} bytes as hex")
        return bytes.fromhex(value)

    def _uint_claim(self, attribute: str, claim: str, maximum: int = _U16_MAX) -> int:
        value = self.claims.get(claim)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
            raise _missing(attribute, claim, value, f"an integer in 0..{maximum}")
        return value

    def _bool_claim(self, attribute: str, claim: str) -> bool:
        value = self.claims.get(claim)
        if not isinstance(value, bool):
            raise _missing(attribute, claim, value, "true or false")
        return value

    @property
    def attestation_type(self) -> str | None:
        """The ``x-ms-attestation-type`` claim ("sgx" for SGX evidence), or None."""
        value = self.claims.get("x-ms-attestation-type")
        return value if isinstance(value, str) else None

    @property
    def mr_enclave(self) -> bytes:
        """The enclave's measurement, from ``x-ms-sgx-mrenclave``."""
        return self._hex_claim("mr_enclave", "x-ms-sgx-mrenclave", 32)

    @property
    def mr_signer(self) -> bytes:
        """The enclave signer's identity, from ``x-ms-sgx-mrsigner``."""
        return self._hex_claim("mr_signer", "x-ms-sgx-mrsigner", 32)

    @property
    def isv_prod_id(self) -> int:
        """The ISV product id, from ``x-ms-sgx-product-id``."""
        return self._uint_claim("isv_prod_id", "x-ms-sgx-product-id")

    @property
    def isv_svn(self) -> int:
        """The ISV security version, from ``x-ms-sgx-svn``."""
        return self._uint_claim("isv_svn", "x-ms-sgx-svn")

    @property
    def debug(self) -> bool:
        """True for a debug enclave, from ``x-ms-sgx-is-debuggable``."""
        return self._bool_claim("debug", "x-ms-sgx-is-debuggable")

    @property
    def report_data(self) -> bytes:
        """The 64 bytes of report data, from ``x-ms-sgx-report-data``."""
        return self._hex_claim("report_data", "x-ms-sgx-report-data", 64)

    @property
    def tcb_status(self) -> TcbStatus:
        """The TCB status, from enklave's ``x-enklave-tcb-status`` (MAA tokens lack it, so policies reject)."""
        value = self.claims.get(CLAIM_TCB_STATUS)
        try:
            return TcbStatus(value if isinstance(value, str) else "")
        except ValueError:
            raise _missing("tcb_status", CLAIM_TCB_STATUS, value, "a TCB status") from None

    @property
    def advisory_ids(self) -> tuple[str, ...]:
        """The advisories that apply, from enklave's ``x-enklave-advisory-ids``."""
        value = self.claims.get(CLAIM_ADVISORY_IDS)
        if (
            not isinstance(value, list)
            or len(value) > _MAX_ADVISORIES
            or not all(isinstance(item, str) for item in value)
        ):
            raise _missing("advisory_ids", CLAIM_ADVISORY_IDS, value, "a list of advisory ids")
        return tuple(value)

    @property
    def tcb_evaluation_data_number(self) -> int:
        """The collateral's TCB evaluation data number, from enklave's ``x-enklave-tcb-evaluation-data-number``
        (tokens of other services lack it, so a policy that requires a minimum rejects them)."""
        return self._uint_claim("tcb_evaluation_data_number", CLAIM_TCB_EVALUATION_DATA_NUMBER, _U32_MAX)

    @property
    def simulated(self) -> bool:
        """True unless ``x-enklave-simulated`` is false, or absent from a token without enklave's TCB claim.

        A token from enklave always carries the claim. A token without it (for example Microsoft's) counts as
        not simulated only if it also lacks ``x-enklave-tcb-status``; an enklave-shaped token that lost the
        claim counts as simulated, the safe reading.
        """
        value = self.claims.get(CLAIM_SIMULATED)
        if value is None:
            return CLAIM_TCB_STATUS in self.claims
        return value is not False

    @property
    def nonce(self) -> str | None:
        """The ``nonce`` claim, or None."""
        value = self.claims.get("nonce")
        return value if isinstance(value, str) else None

    @property
    def runtime_claims(self) -> Mapping[str, Any] | None:
        """The ``x-ms-runtime`` object (runtime data the enclave sent as JSON, e.g. a JWK), or None."""
        value = self.claims.get("x-ms-runtime")
        return value if isinstance(value, dict) else None

    @property
    def enclave_held_data(self) -> bytes | None:
        """The runtime data, decoded from ``x-ms-sgx-ehd``, or None; :class:`InvalidToken` if malformed."""
        value = self.claims.get("x-ms-sgx-ehd")
        if value is None:
            return None
        if not isinstance(value, str):
            raise InvalidToken("the token's x-ms-sgx-ehd claim is not a string")
        return b64url_decode(value, "the token's x-ms-sgx-ehd claim")


if TYPE_CHECKING:
    # Never run: it makes mypy prove that token evidence satisfies the policy protocol.
    def _token_is_appraisable(token: TokenEvidence) -> AppraisableEvidence:
        return token
