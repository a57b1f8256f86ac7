"""``enklave new`` and ``enklave run``: the scaffold runs out of the box, re-signs after edits, and keeps state.

Each ``enklave run`` starts host.py in a subprocess (which starts the enclave process), so output is captured at
the file-descriptor level (capfd). ENKLAVE_HOME is a temporary directory and ENKLAVE_MODE is sim throughout.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from enklave.cli import main
from enklave.cli._errors import EXIT_OK, EXIT_PLATFORM, EXIT_USAGE
from enklave.runtime.bundle import load_bundle

ROOT = Path(__file__).resolve().parent.parent
SCAFFOLD = ["enklave.toml", "enclave.py", "host.py", "README.md", "Dockerfile", ".gitignore", ".dockerignore"]


@pytest.fixture(autouse=True)
def _sim_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENKLAVE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ENKLAVE_MODE", "sim")


def enklave(capfd: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capfd.readouterr()
    return code, out, err


def new_app(capfd: pytest.CaptureFixture[str], parent: Path, name: str = "demoapp") -> Path:
    code, out, err = enklave(capfd, "new", name, "--dir", str(parent))
    assert code == EXIT_OK, err
    assert f"created {parent / name}/" in out
    assert "next steps:" in out
    return parent / name


def test_new_writes_the_scaffold_with_the_name_filled_in(
    capfd: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    app = new_app(capfd, tmp_path)
    assert sorted(path.name for path in app.iterdir()) == sorted(SCAFFOLD)
    toml = (app / "enklave.toml").read_text()
    for line in ['name = "demoapp"', 'entry = "enclave"', "product_id = 1", "security_version = 1",
                 "debug = false", "threads = 2", 'heap_size = "16M"']:  # fmt: skip
        assert line in toml
    assert 'BUNDLE = HERE / "build" / "demoapp.enclave"' in (app / "host.py").read_text()
    dockerfile = (app / "Dockerfile").read_text()
    assert "\nFROM python:3.11-slim\n" in dockerfile
    for needle in ['ARG ENKLAVE_PACKAGE="enklave==', '"$ENKLAVE_PACKAGE"', "ENKLAVE_MODE=sim", "RUN enklave sign",
                   'CMD ["enklave", "run"]', "/dev/sgx_enclave", "Gramine"]:  # fmt: skip
        assert needle in dockerfile
    assert "build/" in (app / ".gitignore").read_text().splitlines()
    # No template placeholder survives rendering.
    for path in app.iterdir():
        assert "${" not in path.read_text(), path.name


def test_the_scaffold_passes_the_project_lint_and_format_rules(
    capfd: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    app = new_app(capfd, tmp_path)
    config = str(ROOT / "pyproject.toml")
    for command in (["check"], ["format", "--check"]):
        result = subprocess.run([sys.executable, "-m", "ruff", *command, "--config", config, str(app)],
                                capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr


def test_new_app_runs_and_restores_its_sealed_state_on_the_second_run(
    capfd: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    app = new_app(capfd, tmp_path)
    code, first, err = enklave(capfd, "run", str(app))
    assert code == EXIT_OK, first + err
    bundle = load_bundle(app / "build" / "demoapp.enclave")
    assert "signing demoapp: " in first
    assert f"MRENCLAVE {bundle.mr_enclave.hex()}" in first
    assert "[enclave] hello('world') called" in first
    assert "quote verified and accepted: simulated evidence, trusted explicitly" in first
    assert "no sealed state yet" in first
    assert "restored sealed state" not in first
    assert (app / "build" / "state.sealed").is_file()

    code, second, err = enklave(capfd, "run", str(app))
    assert code == EXIT_OK, second + err
    assert "signing" not in second  # Nothing changed, so the bundle is reused as it is.
    assert "quote verified and accepted" in second
    assert "restored sealed state from previous run (1 earlier run(s))" in second
    assert "sealed the state (run 2)" in second


def test_run_resigns_after_an_edit_and_the_old_unique_state_no_longer_unseals(
    capfd: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    app = new_app(capfd, tmp_path)
    assert enklave(capfd, "run", str(app))[0] == EXIT_OK
    before = load_bundle(app / "build" / "demoapp.enclave")
    old_state = (app / "build" / "state.sealed").read_bytes()

    # Editing host.py, or only the comments and layout of enklave.toml, does not change the enclave.
    (app / "host.py").write_text((app / "host.py").read_text() + "\n# A host-side note.\n")
    (app / "enklave.toml").write_text("# Reformatted.\n" + (app / "enklave.toml").read_text())
    code, out, err = enklave(capfd, "run", str(app))
    assert code == EXIT_OK, out + err
    assert "signing" not in out
    assert "restored sealed state from previous run" in out

    with (app / "enclave.py").open("a") as handle:
        handle.write("\n\n@enclave.ecall\ndef version() -> int:\n    return 2\n")
    code, out, err = enklave(capfd, "run", str(app))
    assert code == EXIT_OK, out + err
    after = load_bundle(app / "build" / "demoapp.enclave")
    assert "signing demoapp: the enclave's sources changed since it was signed" in out
    assert after.mr_enclave != before.mr_enclave
    assert after.mr_signer == before.mr_signer  # The same default key signed it.
    assert "sealed by another enclave (different MRENCLAVE): starting fresh" in out
    assert "sealed the state (run 1)" in out
    assert (app / "build" / "state.sealed").read_bytes() != old_state


def test_run_resigns_a_bundle_that_does_not_load(capfd: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    app = new_app(capfd, tmp_path)
    bundle = app / "build" / "demoapp.enclave"
    bundle.parent.mkdir()
    bundle.write_bytes(b"not a bundle")
    code, out, err = enklave(capfd, "run", str(app))
    assert code == EXIT_OK, out + err
    assert f"signing demoapp: {bundle} does not load" in out
    load_bundle(bundle)


def test_run_passes_arguments_after_the_separator_and_the_exit_status(
    capfd: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    app = new_app(capfd, tmp_path)
    (app / "host.py").write_text(
        "import os, sys\nprint('argv', sys.argv[1:], os.environ['ENKLAVE_MODE'])\nsys.exit(3)\n"
    )
    code, out, _ = enklave(capfd, "run", str(app), "--mode", "sim", "--", "--mode", "x", "--")
    assert code == 3
    assert "argv ['--mode', 'x', '--'] sim" in out


@pytest.mark.skipif(Path("/dev/sgx_enclave").exists(), reason="this machine has SGX")
def test_run_in_sgx_mode_without_sgx_fails_and_never_falls_back_to_simulation(
    capfd: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    app = new_app(capfd, tmp_path)
    code, out, err = enklave(capfd, "run", str(app), "--mode", "sgx")
    assert code == EXIT_PLATFORM
    assert err.count("\n") == 1
    assert "/dev/sgx_enclave" in err
    assert "running host.py" not in out
    assert not (app / "build").exists()


def test_run_without_an_app_is_a_usage_error(capfd: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = enklave(capfd, "run", str(tmp_path))
    assert code == EXIT_USAGE
    assert out == ""
    assert err.count("\n") == 1
    assert "has no enklave.toml" in err


@pytest.mark.parametrize("name", ["Bad", "my app", "", "x" * 65, 'a"b', "../escape", "a/b", "é"])
def test_new_refuses_invalid_names(capfd: pytest.CaptureFixture[str], tmp_path: Path, name: str) -> None:
    parent = tmp_path / "parent"
    code, out, err = enklave(capfd, "new", name, "--dir", str(parent))
    assert code == EXIT_USAGE
    assert out == ""
    assert err.startswith("enklave: error: invalid app name")
    assert err.count("\n") == 1
    assert not parent.exists()


def test_new_refuses_an_existing_non_empty_directory(
    capfd: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    (tmp_path / "afile").write_text("mine too")
    for name in ("taken", "afile"):
        code, _, err = enklave(capfd, "new", name, "--dir", str(tmp_path))
        assert code == EXIT_USAGE
        assert "already exists and is not an empty directory" in err
    assert sorted(path.name for path in (tmp_path / "taken").iterdir()) == ["notes.txt"]
    assert (tmp_path / "afile").read_text() == "mine too"
    # An empty directory is fine: it is where the app goes.
    (tmp_path / "empty").mkdir()
    assert enklave(capfd, "new", "empty", "--dir", str(tmp_path))[0] == EXIT_OK
    assert (tmp_path / "empty" / "enklave.toml").is_file()


@pytest.mark.parametrize(
    ("command", "needles"),
    [
        (["new"], ["NAME", "--dir", "Dockerfile"]),
        (["run"], ["[DIRECTORY] [-- HOST_ARGS]...", "--mode [sim|sgx|auto]", "ENKLAVE_MODE",
                   "signed again", "enklave run myapp -- Alice"]),
    ],
)  # fmt: skip
def test_help_is_complete(capfd: pytest.CaptureFixture[str], command: list[str], needles: list[str]) -> None:
    code, out, _ = enklave(capfd, *command, "--help")
    assert code == EXIT_OK
    for needle in needles:
        assert needle in out
