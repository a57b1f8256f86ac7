"""enklave: enclave-aware container applications on Intel SGX, in Python.

The package is layered (lower layers never import higher ones):

1. :mod:`enklave.sgx` — SGX structures as frozen, byte-exact models (pure, no I/O).
2. :mod:`enklave.attestation` — DCAP quote verification, collateral and its sources, appraisal policies.
3. :mod:`enklave.platform` — what an enclave asks of its TEE (report, quote, seal key), simulated or Gramine.
4. :mod:`enklave.enclave` (imported by enclave code) and :mod:`enklave.host` (imported by host code), joined by
   :mod:`enklave.runtime` (enklave.toml, signed bundles, the ecall/ocall boundary, the enclave process).
5. :mod:`enklave.sealing` — data sealed to an enclave or to its signer's product.

Also :mod:`enklave.deploy` (Gramine manifests) and :mod:`enklave.cli` (the ``enklave`` command).

Errors live in :mod:`enklave.errors`.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
