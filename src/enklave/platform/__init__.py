"""What an enclave can ask of its TEE: one :class:`Platform` interface, a simulated and a Gramine backend.

* :class:`Platform`, :class:`KeyRequest`, :class:`KeyPolicy`: the interface (identity, EREPORT, quote,
  EGETKEY), in :mod:`enklave.platform._base`.
* :mod:`enklave.platform.simulated`: the simulated SGX platform (:class:`SimulatedPlatform`), its simulated
  Intel PKI and collateral, and the host-safe :func:`simulated_root` and :class:`SimulatedCollateralSource`.

A platform object holds the TEE's secrets (on the simulated platform, the CPU's keys): only the enclave process
builds one. Host code verifies the evidence it produces with :mod:`enklave.attestation`.

The simulated names are imported on first use, so that an enclave on another backend never loads the
simulated platform (and importing :mod:`enklave.platform._base` stays cheap).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from enklave.platform._base import KEY_ID_SIZE, KeyPolicy, KeyRequest, Platform

if TYPE_CHECKING:
    from enklave.platform.simulated import SimulatedCollateralSource, SimulatedPlatform, simulated_root

__all__ = [
    "KEY_ID_SIZE",
    "KeyPolicy",
    "KeyRequest",
    "Platform",
    "SimulatedCollateralSource",
    "SimulatedPlatform",
    "simulated_root",
]

_LAZY = {
    "SimulatedCollateralSource": "enklave.platform.simulated",
    "SimulatedPlatform": "enklave.platform.simulated",
    "simulated_root": "enklave.platform.simulated",
}


def __getattr__(name: str) -> Any:
    """Import the simulated platform's public names on first access (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
