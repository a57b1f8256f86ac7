"""Gramine's RA_TLS_* environment variables, read into an :class:`EnclavePolicy`.

Gramine's verifier (``tools/sgx/ra-tls/ra_tls_verify_common.c`` and ``ra_tls_verify_dcap.c``) reads:

* ``RA_TLS_MRENCLAVE``, ``RA_TLS_MRSIGNER``: 64 hex digits, or ``any``;
* ``RA_TLS_ISV_PROD_ID``, ``RA_TLS_ISV_SVN``: decimal, or ``any``;
* ``RA_TLS_ALLOW_DEBUG_ENCLAVE_INSECURE``, ``RA_TLS_ALLOW_OUTDATED_TCB_INSECURE``,
  ``RA_TLS_ALLOW_HW_CONFIG_NEEDED``, ``RA_TLS_ALLOW_SW_HARDENING_NEEDED``: true only when exactly ``1``.

Gramine refuses to verify when one of the four measurement variables is unset (``any`` is the explicit
wildcard); :meth:`RaTlsSettings.from_environ` does the same by default.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from enklave.attestation.collateral import TcbStatus
from enklave.attestation.policy import EnclavePolicy
from enklave.errors import UsageError

__all__ = ["RaTlsSettings"]

_ANY: Final = "any"
_HEX32: Final = re.compile(r"[0-9a-fA-F]{64}")
_DECIMAL: Final = re.compile(r"[0-9]{1,5}")
_MEASUREMENT_VARIABLES: Final = (
    "RA_TLS_MRENCLAVE",
    "RA_TLS_MRSIGNER",
    "RA_TLS_ISV_PROD_ID",
    "RA_TLS_ISV_SVN",
)


def _measurement(environ: Mapping[str, str], name: str) -> bytes | None:
    value = environ[name].strip()
    if value == _ANY:
        return None
    if not _HEX32.fullmatch(value):
        raise UsageError(f"{name} must be 64 hex digits or 'any'")
    return bytes.fromhex(value)


def _u16(environ: Mapping[str, str], name: str) -> int | None:
    value = environ[name].strip()
    if value == _ANY:
        return None
    if not _DECIMAL.fullmatch(value) or int(value) > 0xFFFF:
        raise UsageError(f"{name} must be a decimal number from 0 to 65535 or 'any'")
    return int(value)


@dataclass(frozen=True, slots=True)
class RaTlsSettings:
    """The verification knobs Gramine users know, with Gramine's meaning.

    ``None`` for a measurement means ``any``. :meth:`to_policy` maps them to an :class:`EnclavePolicy`;
    ``isv_svn`` becomes the lowest accepted ISV SVN.
    """

    mr_enclave: bytes | None = None
    mr_signer: bytes | None = None
    isv_prod_id: int | None = None
    isv_svn: int | None = None
    allow_debug_enclave: bool = False
    allow_outdated_tcb: bool = False
    allow_hw_config_needed: bool = False
    allow_sw_hardening_needed: bool = False

    @classmethod
    def from_environ(
        cls, environ: Mapping[str, str] | None = None, *, require_measurements: bool = True
    ) -> RaTlsSettings:
        """Read the RA_TLS_* variables from ``environ`` (default: ``os.environ``).

        Raises :class:`UsageError` for a malformed value, and (as Gramine does) for an unset measurement
        variable unless ``require_measurements`` is False, in which case an unset variable means ``any``.
        """
        env = dict(os.environ if environ is None else environ)
        for name in _MEASUREMENT_VARIABLES:
            if name not in env:
                if require_measurements:
                    raise UsageError(f"{name} is not set (set it to 'any' to accept every value)")
                env[name] = _ANY

        def flag(name: str) -> bool:
            # Gramine compares with "1" exactly; "true", "yes" or "0" all leave the check on.
            return env.get(name) == "1"

        return cls(
            mr_enclave=_measurement(env, "RA_TLS_MRENCLAVE"),
            mr_signer=_measurement(env, "RA_TLS_MRSIGNER"),
            isv_prod_id=_u16(env, "RA_TLS_ISV_PROD_ID"),
            isv_svn=_u16(env, "RA_TLS_ISV_SVN"),
            allow_debug_enclave=flag("RA_TLS_ALLOW_DEBUG_ENCLAVE_INSECURE"),
            allow_outdated_tcb=flag("RA_TLS_ALLOW_OUTDATED_TCB_INSECURE"),
            allow_hw_config_needed=flag("RA_TLS_ALLOW_HW_CONFIG_NEEDED"),
            allow_sw_hardening_needed=flag("RA_TLS_ALLOW_SW_HARDENING_NEEDED"),
        )

    def accepted_tcb_statuses(self) -> frozenset[TcbStatus]:
        """The TCB statuses Gramine's DCAP verifier accepts with these flags (Revoked never is).

        A combined status needs every flag it names: ConfigurationAndSWHardeningNeeded needs both the HW
        config and the SW hardening flag, OutOfDateConfigurationNeeded the outdated and the HW config flag.
        """
        statuses = {TcbStatus.UP_TO_DATE}
        if self.allow_hw_config_needed:
            statuses.add(TcbStatus.CONFIGURATION_NEEDED)
        if self.allow_sw_hardening_needed:
            statuses.add(TcbStatus.SW_HARDENING_NEEDED)
        if self.allow_hw_config_needed and self.allow_sw_hardening_needed:
            statuses.add(TcbStatus.CONFIGURATION_AND_SW_HARDENING_NEEDED)
        if self.allow_outdated_tcb:
            statuses.add(TcbStatus.OUT_OF_DATE)
            if self.allow_hw_config_needed:
                statuses.add(TcbStatus.OUT_OF_DATE_CONFIGURATION_NEEDED)
        return frozenset(statuses)

    def to_policy(self, *, allow_simulated: bool = False) -> EnclavePolicy:
        """The :class:`EnclavePolicy` these settings describe; ``allow_simulated`` is enklave's own knob."""
        return EnclavePolicy(
            mr_enclave=self.mr_enclave,
            mr_signer=self.mr_signer,
            isv_prod_id=self.isv_prod_id,
            min_isv_svn=self.isv_svn,
            allow_debug=self.allow_debug_enclave,
            accepted_tcb_statuses=self.accepted_tcb_statuses(),
            allow_simulated=allow_simulated,
        )
