"""Confidential ONNX inference: an enclave that owns the keys, the models and ONNX Runtime, a host that relays.

Clients verify the enclave's attestation, then send Open Inference Protocol (KServe v2) requests encapsulated
with Oblivious HTTP to a key that lives only in the enclave; models arrive encrypted (AES-256-GCM) and their keys
only after attestation, from the key broker or from the model owner through an encapsulated request.
"""

from __future__ import annotations

__all__: list[str] = []
