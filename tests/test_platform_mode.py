"""The ENKLAVE_MODE switch: --mode beats ENKLAVE_MODE beats auto; sgx without SGX is an error, never a fall back."""

from __future__ import annotations

from pathlib import Path

import pytest

from enklave.errors import PlatformError, UsageError
from enklave.platform.mode import MODE_ENV, MODES, resolve_mode


@pytest.fixture
def device(tmp_path: Path) -> Path:
    path = tmp_path / "sgx_enclave"
    path.write_bytes(b"")
    return path


@pytest.fixture
def no_device(tmp_path: Path) -> Path:
    return tmp_path / "missing_sgx_enclave"


def _gramine(present: bool) -> object:
    return lambda name: f"/usr/bin/{name}" if present else None


@pytest.mark.parametrize(
    ("requested", "env", "has_device", "expected"),
    [
        # --mode wins over the environment.
        ("sim", "sgx", True, "sim"),
        ("sgx", "sim", True, "sgx"),
        ("auto", "sim", True, "sgx"),
        ("auto", "sgx", False, "sim"),
        # Then ENKLAVE_MODE.
        (None, "sim", True, "sim"),
        (None, "sgx", True, "sgx"),
        (None, "auto", True, "sgx"),
        (None, "auto", False, "sim"),
        # Then auto: SGX where the device exists.
        (None, None, True, "sgx"),
        (None, None, False, "sim"),
        # Empty values count as unset; case and spaces do not matter.
        ("", "", False, "sim"),
        ("", "SGX", True, "sgx"),
        (" Sim ", None, True, "sim"),
    ],
)
def test_resolution_table(
    requested: str | None, env: str | None, has_device: bool, expected: str, device: Path, no_device: Path
) -> None:
    environ = {} if env is None else {MODE_ENV: env}
    mode = resolve_mode(requested, environ=environ, sgx_device=device if has_device else no_device)
    assert mode == expected


@pytest.mark.parametrize(("requested", "env", "source"), [("sgx", None, "--mode"), (None, "sgx", MODE_ENV)])
def test_sgx_without_device_is_an_error_naming_the_source(
    no_device: Path, requested: str | None, env: str | None, source: str
) -> None:
    environ = {} if env is None else {MODE_ENV: env}
    with pytest.raises(PlatformError) as info:
        resolve_mode(requested, environ=environ, sgx_device=no_device)
    message = str(info.value)
    assert source in message
    assert str(no_device) in message
    assert "--mode sim" in message
    assert "\n" not in message


def test_sgx_without_gramine_is_an_error_only_when_checked(device: Path) -> None:
    with pytest.raises(PlatformError, match="gramine-sgx is not on PATH"):
        resolve_mode("sgx", environ={}, sgx_device=device, check_gramine=True, which=_gramine(False))  # type: ignore[arg-type]
    assert (
        resolve_mode("sgx", environ={}, sgx_device=device, check_gramine=True, which=_gramine(True)) == "sgx"
    )  # type: ignore[arg-type]
    assert resolve_mode("sgx", environ={}, sgx_device=device, which=_gramine(False)) == "sgx"  # type: ignore[arg-type]


def test_auto_without_gramine_runs_in_simulation_when_checked(device: Path) -> None:
    mode = resolve_mode(None, environ={}, sgx_device=device, check_gramine=True, which=_gramine(False))  # type: ignore[arg-type]
    assert mode == "sim"


@pytest.mark.parametrize("value", ["hardware", "sgx2", "simulation", "1"])
def test_unknown_mode_is_a_usage_error(value: str, device: Path) -> None:
    with pytest.raises(UsageError, match="expected one of sim, sgx, auto"):
        resolve_mode(value, environ={}, sgx_device=device)
    with pytest.raises(UsageError, match=MODE_ENV):
        resolve_mode(None, environ={MODE_ENV: value}, sgx_device=device)


def test_environment_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch, no_device: Path) -> None:
    monkeypatch.setenv(MODE_ENV, "sim")
    assert resolve_mode(sgx_device=no_device) == "sim"
    monkeypatch.setenv(MODE_ENV, "sgx")
    with pytest.raises(PlatformError):
        resolve_mode(sgx_device=no_device)


def test_modes_constant() -> None:
    assert MODES == ("sim", "sgx", "auto")
    assert MODE_ENV == "ENKLAVE_MODE"
