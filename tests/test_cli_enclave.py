"""``enklave sign``, ``uniqueid``, ``signerid`` and ``info``: scriptable output, one-line errors, exit codes."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from conftest import ASSETS
from enklave.cli import main
from enklave.cli._errors import EXIT_BAD_INPUT, EXIT_IO, EXIT_OK, EXIT_USAGE, EXIT_VERIFICATION
from enklave.runtime import load_signing_key, measure, read_bundle

KEY = ASSETS / "enclaves" / "test-signing-key-a.pem"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ENKLAVE_HOME", str(tmp_path / "home"))
    target = tmp_path / "hello"
    shutil.copytree(ASSETS / "enclaves" / "hello", target)
    return target


@pytest.fixture
def signed(project: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    out = project / "hello.enclave"
    code, _, err = run(capsys, "sign", str(project / "enklave.toml"), "--key", str(KEY), "--out", str(out))
    assert code == EXIT_OK, err
    return out


@pytest.mark.parametrize("command", ["sign", "uniqueid", "signerid", "info"])
def test_every_command_has_help(capsys: pytest.CaptureFixture[str], command: str) -> None:
    code, out, _ = run(capsys, command, "--help")
    assert code == EXIT_OK
    assert "Usage:" in out


def test_sign_help_says_where_the_default_key_lives(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "sign", "--help")
    assert "signing-keys/<name>.pem" in " ".join(out.split())


def test_sign_with_a_key_prints_the_identity(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "sign", str(project), "--key", str(KEY), "--json")
    assert code == EXIT_OK, err
    result = json.loads(out)
    bundle = read_bundle(Path(result["bundle"]))
    assert Path(result["bundle"]) == project / "build" / "hello.enclave"
    assert result["mrenclave"] == measure(bundle.config, bundle.files).hex()
    modulus = load_signing_key(KEY).public_key().public_numbers().n
    assert result["mrsigner"] == hashlib.sha256(modulus.to_bytes(384, "little")).hexdigest()
    assert (result["key_generated"], result["isv_prod_id"], result["isv_svn"]) == (False, 7, 3)


def test_sign_without_a_key_generates_one_in_enklave_home(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "sign", str(project / "enklave.toml"))
    assert code == EXIT_OK, err
    key_path = project.parent / "home" / "signing-keys" / "hello.pem"
    assert f"generated a new signing key: {key_path}" in out
    assert "MRENCLAVE: " in out
    assert "MRSIGNER:  " in out
    # Second run reuses the key: same MRSIGNER, nothing generated.
    code, again, _ = run(capsys, "sign", str(project / "enklave.toml"))
    assert code == EXIT_OK
    assert "generated" not in again
    signer = [line for line in out.splitlines() if "MRSIGNER" in line]
    assert signer == [line for line in again.splitlines() if "MRSIGNER" in line]
    assert not list(project.rglob("*.pem"))


def test_uniqueid_signerid_and_info_agree(signed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle = read_bundle(signed)
    code, out, _ = run(capsys, "uniqueid", str(signed))
    assert (code, out) == (EXIT_OK, bundle.mr_enclave.hex() + "\n")
    code, out, _ = run(capsys, "signerid", str(signed))
    assert (code, out) == (EXIT_OK, bundle.mr_signer.hex() + "\n")
    code, out, _ = run(capsys, "info", str(signed), "--json")
    assert code == EXIT_OK
    view = json.loads(out)
    assert view["mrenclave"] == bundle.mr_enclave.hex()
    assert view["sigstruct"]["enclave_hash"] == bundle.mr_enclave.hex()
    assert view["sigstruct"]["modulus"] == bundle.sigstruct.modulus.hex()
    assert view["sigstruct"]["exponent"] == 3
    assert view["config"]["threads"] == 2
    assert [entry["path"] for entry in view["files"]] == ["enclave.py", "pkg/__init__.py", "pkg/util.py"]
    code, text, _ = run(capsys, "info", str(signed))
    assert code == EXIT_OK
    assert f"enclave_hash: {bundle.mr_enclave.hex()}" in text
    assert "q2: " in text


def test_tampered_bundle_fails_with_one_line(signed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = signed.read_bytes()
    marker = b"hello, "
    signed.write_bytes(raw.replace(marker, b"HELLO, ", 1))
    for command in ("uniqueid", "signerid", "info"):
        code, out, err = run(capsys, command, str(signed))
        assert code == EXIT_VERIFICATION
        assert out == ""
        assert "changed after signing" in err
        assert err.count("\n") == 1


def test_garbage_bundle_is_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "garbage.enclave"
    path.write_bytes(b"not a bundle at all")
    code, _, err = run(capsys, "info", str(path))
    assert code == EXIT_BAD_INPUT
    assert err.startswith("enklave: error: ") and err.count("\n") == 1


def test_missing_files_are_io_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "uniqueid", str(tmp_path / "nope.enclave"))
    assert code == EXIT_IO
    code, _, err = run(capsys, "sign", str(tmp_path / "nope.toml"), "--key", str(KEY))
    assert code == EXIT_IO, err


def test_invalid_config_or_key_is_a_usage_error(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    toml = project / "enklave.toml"
    toml.write_text(toml.read_text().replace("threads = 2", "threads = 999"))
    code, _, err = run(capsys, "sign", str(toml), "--key", str(KEY))
    assert code == EXIT_USAGE
    assert "enclave.threads" in err and err.count("\n") == 1
    not_a_key = project / "enclave.py"
    toml.write_text(toml.read_text().replace("threads = 999", "threads = 2"))
    code, _, err = run(capsys, "sign", str(toml), "--key", str(not_a_key))
    assert code == EXIT_USAGE
    assert "not an unencrypted PEM" in err
