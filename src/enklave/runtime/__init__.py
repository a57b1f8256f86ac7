"""The runtime that joins host and enclave: enclave configuration, signed bundles, signing keys.

``enklave.toml`` becomes an :class:`EnclaveConfig`; :func:`sign_bundle` lays the configuration and files out as
enclave pages, measures them into MRENCLAVE and signs a SIGSTRUCT; :func:`load_bundle` checks what EINIT checks
before an enclave process may start. See docs/enclave-bundles.md for the format and the page layout.
"""

from __future__ import annotations

from enklave.runtime.bundle import (
    BUNDLE_MAGIC,
    BUNDLE_VERSION,
    MAX_BUNDLE_FILES,
    MAX_BUNDLE_SIZE,
    Bundle,
    collect_files,
    load_bundle,
    measure,
    read_bundle,
    sign_bundle,
    write_bundle,
)
from enklave.runtime.config import CONFIG_FILENAME, EnclaveConfig, parse_size
from enklave.runtime.layout import EnclaveLayout, LayoutRegion, plan_layout
from enklave.runtime.signing import (
    default_signing_key_path,
    generate_signing_key,
    load_or_create_signing_key,
    load_signing_key,
    save_signing_key,
)

__all__ = [
    "BUNDLE_MAGIC",
    "BUNDLE_VERSION",
    "CONFIG_FILENAME",
    "MAX_BUNDLE_FILES",
    "MAX_BUNDLE_SIZE",
    "Bundle",
    "EnclaveConfig",
    "EnclaveLayout",
    "LayoutRegion",
    "collect_files",
    "default_signing_key_path",
    "generate_signing_key",
    "load_bundle",
    "load_or_create_signing_key",
    "load_signing_key",
    "measure",
    "parse_size",
    "plan_layout",
    "read_bundle",
    "save_signing_key",
    "sign_bundle",
    "write_bundle",
]
