"""``enklave attestation-service serve`` wires configuration, storage and the service together; and the public
names of the service's modules exist and are documented."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from enklave.cli import main
from enklave.platform.simulated import provision
from service_fixtures import TestClient

MODULES = [
    "enklave.services.attestation.app",
    "enklave.services.attestation.client",
    "enklave.services.attestation.request",
    "enklave.services.attestation.service",
    "enklave.cli.attestation_service",
]


@pytest.mark.parametrize("name", MODULES)
def test_public_names_exist_and_are_documented(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__doc__
    for public in module.__all__:
        value = getattr(module, public)
        if callable(value):
            assert value.__doc__, f"{name}.{public} has no docstring"


def test_serve_starts_the_service_and_hands_the_app_to_uvicorn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENKLAVE_HOME", str(tmp_path))
    provision(tmp_path)
    token_file = tmp_path / "admin.token"
    token_file.write_text("a-long-enough-admin-token\n")
    seen: dict[str, Any] = {}

    def fake_run(app: Any, **options: Any) -> None:
        seen.update(options)
        with TestClient(app) as http:
            seen["certs"] = http.get("/certs").json()
            seen["metadata"] = http.get("/.well-known/openid-configuration").json()
            seen["put"] = http.put(
                "/policies/SgxEnclave?api-version=2022-08-01",
                content="version=1.0; authorizationrules { => permit(); };",
                headers={"authorization": "Bearer a-long-enough-admin-token"},
            ).status_code

    monkeypatch.setattr(uvicorn, "run", fake_run)
    code = main(["attestation-service", "serve", "--mode", "sim", "--port", "9555", "--allow-simulated",
                 "--admin-token-file", str(token_file)])  # fmt: skip
    assert code == 0
    assert seen["host"] == "127.0.0.1"
    assert seen["port"] == 9555
    assert seen["ssl_certfile"] is None
    assert seen["metadata"]["issuer"] == "http://127.0.0.1:9555"
    assert len(seen["certs"]["keys"]) == 1
    assert seen["put"] == 200
    assert (tmp_path / "attestation-service" / "state.db").exists()


def test_serve_refuses_half_a_tls_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENKLAVE_HOME", str(tmp_path))
    certificate = tmp_path / "cert.pem"
    certificate.write_text("x")
    assert main(["attestation-service", "serve", "--certfile", str(certificate)]) == 2


def test_serve_refuses_a_short_admin_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENKLAVE_HOME", str(tmp_path))
    token_file = tmp_path / "admin.token"
    token_file.write_text("short")
    assert main(["attestation-service", "serve", "--admin-token-file", str(token_file)]) == 2


@pytest.mark.parametrize("command", ["attestation-service", "kbs"])
def test_serve_refuses_a_token_file_that_is_not_utf8_or_too_large(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    monkeypatch.setenv("ENKLAVE_HOME", str(tmp_path))
    binary, large = tmp_path / "binary.token", tmp_path / "large.token"
    binary.write_bytes(b"\xff" * 32)
    large.write_text("a" * 5000)
    # Both services read the admin token the same way: bad input (3), a usage error (2), before any start.
    assert main([command, "serve", "--admin-token-file", str(binary)]) == 3
    assert main([command, "serve", "--admin-token-file", str(large)]) == 2
    assert not (tmp_path / ("kbs" if command == "kbs" else "attestation-service")).exists()
