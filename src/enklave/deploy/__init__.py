"""Deployment: Gramine manifests for running enclaves on SGX hardware (see :mod:`enklave.deploy.gramine`)."""

from __future__ import annotations

from enklave.deploy.gramine import BuildResult, build_sgx, gramine_command, write_manifest

__all__ = ["BuildResult", "build_sgx", "gramine_command", "write_manifest"]
