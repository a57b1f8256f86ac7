"""Which platform an enclave runs on: the one ``ENKLAVE_MODE`` switch (``sim``, ``sgx`` or ``auto``).

The choice is made once, in the host, before the enclave is started: an explicit request (``--mode``) beats the
``ENKLAVE_MODE`` environment variable, which beats the default ``auto``. ``auto`` picks SGX hardware where the
SGX device exists and simulation elsewhere. Asking for ``sgx`` where there is no SGX is an error, never a silent
fall back to simulation: a user who asked for hardware protection must not get a simulation instead.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final, Literal

from enklave.errors import PlatformError, UsageError

__all__ = ["DEFAULT_SGX_DEVICE", "GRAMINE_SGX", "MODES", "MODE_ENV", "Mode", "resolve_mode"]

_log = logging.getLogger(__name__)

MODE_ENV: Final = "ENKLAVE_MODE"
MODES: Final = ("sim", "sgx", "auto")
DEFAULT_SGX_DEVICE: Final = Path("/dev/sgx_enclave")
#: The Gramine loader that starts an SGX enclave.
GRAMINE_SGX: Final = "gramine-sgx"

Mode = Literal["sim", "sgx"]


def resolve_mode(
    requested: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    sgx_device: Path = DEFAULT_SGX_DEVICE,
    check_gramine: bool = False,
    which: Callable[[str], str | None] = shutil.which,
) -> Mode:
    """The mode to run in: ``"sim"`` or ``"sgx"``.

    ``requested`` (from ``--mode``) wins over ``environ[ENKLAVE_MODE]`` (``os.environ`` by default), which wins
    over ``"auto"``; empty values count as unset, and case and surrounding spaces are ignored. ``"auto"`` is
    ``"sgx"`` when ``sgx_device`` exists (and, with ``check_gramine``, ``gramine-sgx`` is on the PATH), else
    ``"sim"``. Raises :class:`~enklave.errors.PlatformError` when ``"sgx"`` is asked for but the device (or,
    with ``check_gramine``, the Gramine loader) is missing, and :class:`~enklave.errors.UsageError` for a value
    that is not one of :data:`MODES`.
    """
    env = os.environ if environ is None else environ
    if requested is not None and requested.strip():
        value, source = requested, "--mode"
    elif env.get(MODE_ENV, "").strip():
        value, source = env[MODE_ENV], MODE_ENV
    else:
        value, source = "auto", "default"
    mode = value.strip().lower()
    if mode not in MODES:
        raise UsageError(
            f"unknown enclave mode {value!r} (from {source}): expected one of {', '.join(MODES)}"
        )

    has_device = sgx_device.exists()
    has_gramine = which(GRAMINE_SGX) is not None if check_gramine else True
    if mode == "auto":
        if has_device and not has_gramine:
            # Not an error: auto never promised hardware. Say why hardware was not picked, though.
            _log.warning(
                "%s exists but %s is not on PATH: auto mode runs in simulation", sgx_device, GRAMINE_SGX
            )
        chosen: Mode = "sgx" if has_device and has_gramine else "sim"
        _log.info("enclave mode auto resolved to %s", chosen)
        return chosen
    if mode == "sgx":
        if not has_device:
            raise PlatformError(
                f"SGX mode was requested (from {source}) but {sgx_device} does not exist: this machine has no "
                "SGX or its driver is not loaded (use --mode sim to simulate)"
            )
        if not has_gramine:
            raise PlatformError(
                f"SGX mode was requested (from {source}) but {GRAMINE_SGX} is not on PATH: install Gramine "
                "to run enclaves on SGX hardware"
            )
        return "sgx"
    return "sim"
