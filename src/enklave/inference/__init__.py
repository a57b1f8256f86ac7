"""Confidential ONNX inference: an enclave that owns the keys, the models and ONNX Runtime, a host that relays.

Clients verify the enclave's attestation, then send Open Inference Protocol (KServe v2) requests encapsulated
with Oblivious HTTP to a key that lives only in the enclave; models arrive encrypted (AES-256-GCM) and their keys
only after attestation, from the key broker or from the model owner through an encapsulated request.
"""

from __future__ import annotations

from enklave.inference.app import Serving, build_app, create_app, serving
from enklave.inference.client import AsyncClient, Attestation, Client, UploadResult
from enklave.inference.model_format import ModelHeader, decrypt_model, encrypt_model, read_header
from enklave.inference.protocol import InferInput, InferOutput, InferRequest, InferResponse, Limits
from enklave.inference.repository import ModelInfo, ModelRepository
from enklave.inference.router import Router, RouterSettings
from enklave.inference.runner import ModelRunner, TensorSpec
from enklave.inference.service import InferenceConfig, InferenceService

__all__ = [
    "AsyncClient",
    "Attestation",
    "Client",
    "InferInput",
    "InferOutput",
    "InferRequest",
    "InferResponse",
    "InferenceConfig",
    "InferenceService",
    "Limits",
    "ModelHeader",
    "ModelInfo",
    "ModelRepository",
    "ModelRunner",
    "Router",
    "RouterSettings",
    "Serving",
    "TensorSpec",
    "UploadResult",
    "build_app",
    "create_app",
    "decrypt_model",
    "encrypt_model",
    "read_header",
    "serving",
]
