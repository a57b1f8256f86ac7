"""enklave: enclave-aware container applications on Intel SGX, in Python.

The package is layered (lower layers never import higher ones):

1. :mod:`enklave.sgx` — SGX structures as frozen, byte-exact models (pure, no I/O).
2. :mod:`enklave.attestation` — DCAP quote verification, collateral and its sources, appraisal policies.

Errors live in :mod:`enklave.errors`.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
