"""Which key broker the inference enclave trusts, and the check of its release quotes (runs inside the enclave).

The measured settings (``settings.json`` of the enclave bundle) may name a key broker identity: ``kbs_policy``
(``mr_signer`` and/or ``mr_enclave`` hex, ``isv_prod_id``, ``min_isv_svn``) and ``kbs_allow_simulated``. The host
relays releases and knows the enclave's ephemeral public key, so it could wrap a value of its own choosing to it;
a release is accepted only with the key broker enclave's quote over it, checked by :meth:`ReleaseChecker.check`:

1. the quote verifies (DCAP) against the collateral the host fetched, to Intel's root (and the simulated
   platform's root only when ``kbs_allow_simulated`` is measured);
2. its enclave is the measured key broker (:class:`~enklave.attestation.policy.EnclavePolicy` from ``kbs_policy``);
3. its report data is :func:`~enklave.services.kbs.release_evidence.release_report_data` of the key name asked
   for, the enclave's own ephemeral public key and the wrapped value received.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from enklave.attestation.collateral import QuoteCollateral
from enklave.attestation.policy import EnclavePolicy
from enklave.attestation.trust import TrustedRoot, intel_sgx_root
from enklave.attestation.verify import QuoteVerifier
from enklave.errors import BindingError, BoundaryError, UsageError
from enklave.platform.simulated import simulated_root
from enklave.services.kbs.release_evidence import release_report_data

__all__ = ["KBS_POLICY_KEYS", "ReleaseChecker"]

#: The members a measured ``kbs_policy`` may have.
KBS_POLICY_KEYS: Final = ("mr_signer", "mr_enclave", "isv_prod_id", "min_isv_svn")


@dataclass(frozen=True, slots=True)
class ReleaseChecker:
    """The measured key broker identity and the verifier of its quotes."""

    policy: EnclavePolicy
    verifier: QuoteVerifier

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> ReleaseChecker | None:
        """The checker the measured ``settings`` describe, or None when they trust no key broker.

        Raises :class:`BoundaryError` for a malformed identity, or one that pins neither MRSIGNER nor MRENCLAVE
        (which would accept any genuine enclave as the key broker).
        """
        identity = settings.get("kbs_policy")
        if identity is None:
            return None
        allow_simulated = settings.get("kbs_allow_simulated", False)
        if (
            not isinstance(identity, dict)
            or set(identity) - set(KBS_POLICY_KEYS)
            or type(allow_simulated) is not bool
        ):
            raise BoundaryError("the measured kbs_policy must be an object of mr_signer, mr_enclave, isv_prod_id "
                                "and min_isv_svn, with a boolean kbs_allow_simulated")  # fmt: skip
        if identity.get("mr_signer") is None and identity.get("mr_enclave") is None:
            raise BoundaryError("the measured kbs_policy must pin mr_signer or mr_enclave")
        try:
            policy = EnclavePolicy.from_mapping({**identity, "allow_simulated": allow_simulated})
        except UsageError as exc:
            raise BoundaryError(f"the measured kbs_policy is invalid: {exc}") from exc
        roots: list[TrustedRoot] = [intel_sgx_root()]
        if allow_simulated:
            # The simulated platform's root is public data in ENKLAVE_HOME; quotes it vouches for are marked
            # simulated, and the policy accepts them only because kbs_allow_simulated is measured.
            roots.append(simulated_root(os.environ.get("ENKLAVE_HOME") or None))
        return cls(policy, QuoteVerifier(roots))

    def check(
        self,
        name: str,
        recipient: Mapping[str, str],
        wrapped: str,
        quote: bytes,
        collateral_json: str,
        *,
        now: datetime,
    ) -> None:
        """Steps 1 to 3 of the module docstring; raises the failing step's error type (``InvalidQuote``,
        ``InvalidCollateral``, a ``VerificationError`` such as ``PolicyError`` or ``BindingError``)."""
        # 1. The quote, verified against the host's collateral (whose signatures chain to the trusted roots). The
        #    clock is the platform's (the host's, under Gramine): a host could make stale collateral look current,
        #    but it cannot forge the quote, its identity or the binding checked below.
        verified = self.verifier.verify(quote, QuoteCollateral.from_json(collateral_json), now=now)
        # 2. The key broker's identity, as measured.
        self.policy.appraise(verified)
        # 3. The binding, recomputed from what the enclave knows itself: the name it asked for and its own key.
        expected = release_report_data(name, dict(recipient), wrapped)
        if not hmac.compare_digest(bytes(verified.report_data), expected):
            raise BindingError(
                "the key broker's quote does not bind this release (name, recipient key and value)"
            )
