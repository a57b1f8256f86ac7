"""The simulated SGX platform: a simulated CPU, Intel-style PKI and collateral, quoting enclave and local PCS.

Everything runs on any Linux machine and speaks the real formats end to end: quotes are DCAP ECDSA quotes v3,
PCK certificates carry Intel's SGX extension, TCB info and QE identity are signed as Intel signs them, and
:func:`enklave.attestation.verify_quote` verifies simulated evidence through its one code path, but only when
the caller trusts :func:`simulated_root` explicitly; the result then says ``simulated=True`` and the default
:class:`~enklave.attestation.EnclavePolicy` rejects it.

Who may use what:

* host code: :func:`simulated_root`, :class:`SimulatedCollateralSource`, :func:`platform_info`,
  :func:`read_collateral` (public files only, never a secret);
* the enclave process: :class:`SimulatedPlatform` (``SimulatedPlatform.launch(identity)``), which loads the
  simulated CPU's secrets;
* the simulated Intel: :func:`provision`, :func:`refresh_collateral`, and the local PCS-compatible endpoint
  (:func:`enklave.platform.simulated.pcs.create_pcs_app`, ``enklave sim pcs``).

State lives in ``<ENKLAVE_HOME>/sim`` (see :mod:`enklave.platform.simulated.store`).
"""

from __future__ import annotations

from enklave.platform.simulated._platform import SimulatedPlatform
from enklave.platform.simulated.cpu import PlatformIdentity, SimulatedCpu
from enklave.platform.simulated.qe import SimulatedQe, qe_target_info
from enklave.platform.simulated.store import (
    SIMULATED_ROOT_NAME,
    PlatformInfo,
    SimulatedCollateralSource,
    load_qe,
    platform_info,
    provision,
    read_collateral,
    refresh_collateral,
    simulated_root,
)

__all__ = [
    "SIMULATED_ROOT_NAME",
    "PlatformIdentity",
    "PlatformInfo",
    "SimulatedCollateralSource",
    "SimulatedCpu",
    "SimulatedPlatform",
    "SimulatedQe",
    "load_qe",
    "platform_info",
    "provision",
    "qe_target_info",
    "read_collateral",
    "refresh_collateral",
    "simulated_root",
]
