"""The examples run end to end, as their READMEs say, and keep to the project's lint and format rules.

Each example is copied to a temporary directory first (``enklave run`` writes build/ next to the sources), and
runs in simulation with ENKLAVE_HOME in a temporary directory.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from enklave.cli import main
from enklave.cli._errors import EXIT_OK
from enklave.runtime.bundle import load_bundle

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
QUICKSTART = EXAMPLES / "quickstart"
FINGERPRINT = re.compile(r"vault: secret fingerprint ([0-9a-f]{16}), sealed to build/vault.sealed")


@pytest.fixture
def quickstart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ENKLAVE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ENKLAVE_MODE", "sim")
    app = tmp_path / "quickstart"
    shutil.copytree(QUICKSTART, app, ignore=shutil.ignore_patterns("build", "__pycache__"))
    return app


def run_app(capfd: pytest.CaptureFixture[str], *args: str) -> str:
    code = main(["run", *args])
    out, err = capfd.readouterr()
    assert code == EXIT_OK, out + err
    return out


def test_quickstart_runs_twice_and_the_second_run_restores_the_sealed_secret(
    capfd: pytest.CaptureFixture[str], quickstart: Path
) -> None:
    first = run_app(capfd, str(quickstart))
    mr_enclave = load_bundle(quickstart / "build" / "quickstart.enclave").mr_enclave.hex()
    assert f"started the enclave in sim mode; MRENCLAVE {mr_enclave}" in first
    assert "enclave says: greeting reader" in first
    assert "attestation: quote verified, enclave accepted, SIMULATED platform (trusted explicitly)" in first
    assert "vault: no sealed secret yet, the enclave created a new one" in first
    created = FINGERPRINT.search(first)
    assert created is not None

    second = run_app(capfd, str(quickstart), "--", "Ada")
    assert "signing" not in second
    assert "Hello Ada!" in second
    assert "attestation: quote verified" in second
    assert "vault: restored sealed state from previous run" in second
    restored = FINGERPRINT.search(second)
    assert restored is not None
    assert restored.group(1) == created.group(1)


def test_quickstart_after_an_edit_cannot_unseal_the_old_secret(
    capfd: pytest.CaptureFixture[str], quickstart: Path
) -> None:
    created = FINGERPRINT.search(run_app(capfd, str(quickstart)))
    with (quickstart / "enclave.py").open("a") as handle:
        handle.write("# changed\n")
    out = run_app(capfd, str(quickstart))
    assert "signing quickstart: the enclave's sources changed since it was signed" in out
    assert "vault: vault.sealed was sealed by another enclave (MRENCLAVE changed?); starting a new one" in out
    fresh = FINGERPRINT.search(out)
    assert created is not None
    assert fresh is not None
    assert fresh.group(1) != created.group(1)


def test_the_readmes_name_every_file_of_the_example() -> None:
    readme = (QUICKSTART / "README.md").read_text()
    for name in ("enklave.toml", "enclave.py", "host.py"):
        assert f"`{name}`" in readme
    assert "enklave run examples/quickstart" in readme
    assert "[quickstart](quickstart/)" in (EXAMPLES / "README.md").read_text()


def test_examples_pass_the_project_lint_and_format_rules() -> None:
    config = str(ROOT / "pyproject.toml")
    for command in (["check"], ["format", "--check"]):
        result = subprocess.run([sys.executable, "-m", "ruff", *command, "--config", config, str(EXAMPLES)],
                                capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
