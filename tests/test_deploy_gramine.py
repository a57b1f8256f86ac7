"""Gramine manifest writer and build driver: what the manifest contains, what it refuses, how the tools are run."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

import enklave
from enklave.cli import main
from enklave.deploy._python import PythonLayout, python_layout
from enklave.deploy.gramine import (
    ENCLAVE_ARGV,
    build_sgx,
    enclave_size,
    gramine_command,
    manifest_entries,
    max_threads,
    write_manifest,
)
from enklave.errors import ConfigError, PlatformError
from enklave.runtime.config import EnclaveConfig

CONFIG = """\
[enclave]
name = "demo"
product_id = 7
security_version = 3
heap_size = "300M"
threads = 6
env = ["MODEL_PATH"]
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ENKLAVE_HOME", str(tmp_path / "home"))
    root = tmp_path / "app"
    root.mkdir()
    (root / "enklave.toml").write_text(CONFIG)
    (root / "enclave.py").write_text("VALUE = 1\n")
    return root


def _config(extra: str = "", *, debug: bool = False) -> EnclaveConfig:
    text = CONFIG + (f"debug = {str(debug).lower()}\n") + (f"[gramine]\n{extra}\n" if extra else "")
    return EnclaveConfig.from_toml(text, None)


LAYOUT = PythonLayout(
    executables=(Path("/opt/py/bin/python3"), Path("/opt/py/bin/python3.11")),
    prefixes=(Path("/opt/py"),),
    stdlib=Path("/opt/py/lib/python3.11"),
    extra_dirs=(),
    extra_files=(),
    packages=(Path("/opt/py/lib/python3.11/site-packages/enklave"),),
    system_libdirs=(Path("/lib/x86_64-linux-gnu"),),
    library_path=(Path("/lib/x86_64-linux-gnu"),),
)


def _parsed(path: Path) -> dict[str, Any]:
    return tomllib.loads(path.read_text())


def test_manifest_has_the_enclave_identity_and_dcap(tmp_path: Path) -> None:
    bundle = tmp_path / "build" / "demo.enclave"
    path = write_manifest(_config(), bundle, tmp_path / "build")
    assert path == tmp_path / "build" / "demo.manifest.template"
    manifest = _parsed(path)
    sgx = manifest["sgx"]
    assert sgx["remote_attestation"] == "dcap"
    assert sgx["isvprodid"] == 7
    assert sgx["isvsvn"] == 3
    assert sgx["debug"] is False
    assert sgx["file_check_policy"] == "strict"
    assert sgx["enclave_size"] == "1G"  # 300M heap + the Python margin, rounded up to a power of two.
    assert sgx["max_threads"] == 6 + 8
    assert f"file:{bundle}" in sgx["trusted_files"]
    assert "file:{{ gramine.libos }}" in sgx["trusted_files"]
    assert manifest["loader"]["entrypoint"]["uri"] == "file:{{ gramine.libos }}"


def test_manifest_fixes_the_command_and_the_environment(tmp_path: Path) -> None:
    bundle = tmp_path / "demo.enclave"
    manifest = _parsed(write_manifest(_config(), bundle, tmp_path))
    loader = manifest["loader"]
    assert loader["argv"] == [sys.executable, *ENCLAVE_ARGV]
    assert manifest["libos"]["entrypoint"] == sys.executable
    assert "insecure__use_cmdline_argv" not in loader
    assert "insecure__use_host_env" not in loader
    env = loader["env"]
    # Only the channel and the configured names come from the host; mode and bundle are fixed values.
    passthrough = sorted(name for name, value in env.items() if value == {"passthrough": True})
    assert passthrough == ["ENKLAVE_CHANNEL", "MODEL_PATH"]
    assert env["ENKLAVE_MODE"] == "sgx"
    assert env["ENKLAVE_BUNDLE"] == str(bundle)
    assert set(env) == {"ENKLAVE_CHANNEL", "MODEL_PATH", "ENKLAVE_MODE", "ENKLAVE_BUNDLE", "LD_LIBRARY_PATH"}
    assert loader["log_level"] == "error"


def test_manifest_trusts_the_interpreter_stdlib_and_enklave(tmp_path: Path) -> None:
    manifest = _parsed(write_manifest(_config(), tmp_path / "demo.enclave", tmp_path))
    trusted = manifest["sgx"]["trusted_files"]
    layout = python_layout(sys.executable)
    assert f"file:{sys.executable}" in trusted
    assert f"file:{layout.stdlib}/" in trusted
    package = Path(enklave.__file__).resolve().parent
    directories = [Path(entry.removeprefix("file:")) for entry in trusted if entry.endswith("/")]
    assert any(package == d or package.is_relative_to(d) for d in directories)
    # Every trusted host path is reachable inside the enclave through a mount at the same path.
    mounts = [Path(m["path"]) for m in manifest["fs"]["mounts"] if m.get("uri", "").startswith("file:/")]
    for entry in trusted:
        if "{{" in entry:
            continue
        host = Path(entry.removeprefix("file:"))
        assert any(host == m or host.is_relative_to(m) for m in mounts), host


def test_mounts_put_parents_first(tmp_path: Path) -> None:
    entries = manifest_entries(_config(), Path("/srv/app/demo.enclave"), layout=LAYOUT)
    mounts = entries["fs.mounts"]
    assert isinstance(mounts, list)
    depths = [len(Path(str(m["path"])).parts) for m in mounts]
    assert depths == sorted(depths)
    assert {"type": "tmpfs", "path": "/tmp"} in mounts


@pytest.mark.parametrize(
    ("heap", "size"), [(64 << 20, 512 << 20), (300 << 20, 1 << 30), (1 << 30, 2 << 30), (4 << 30, 8 << 30)]
)
def test_enclave_size_is_a_power_of_two_with_room_for_python(heap: int, size: int) -> None:
    assert enclave_size(heap) == size
    assert max_threads(1) == 9


def test_extras_are_merged_last() -> None:
    config = _config(
        '"sgx.edmm_enable" = true\n"sgx.trusted_files" = ["file:/srv/model.onnx"]\n"sgx.max_threads" = 40'
    )
    entries = manifest_entries(config, Path("/srv/app/demo.enclave"), layout=LAYOUT)
    assert entries["sgx.edmm_enable"] is True
    assert entries["sgx.max_threads"] == 40
    trusted = entries["sgx.trusted_files"]
    assert isinstance(trusted, list)
    # Extra trusted files are added to the enclave's own, never replace them.
    assert trusted[-1] == "file:/srv/model.onnx"
    assert "file:/srv/app/demo.enclave" in trusted


@pytest.mark.parametrize(
    "extra",
    [
        '"loader.insecure__use_cmdline_argv" = true',
        '"loader.insecure__use_host_env" = true',
        '"fs.insecure__keys.default" = "00112233445566778899aabbccddeeff"',
        '"sgx.insecure__rpc_thread_num" = 4',
        '"sgx.file_check_policy" = "allow_all_but_log"',
        '"sgx.allowed_files" = ["file:/etc/"]',
        '"sgx.allowed_files.etc" = "file:/etc/"',
        '"sgx.trusted_files.model" = "file:/srv/model.onnx"',
        '"sgx.protected_files" = ["file:/srv/data"]',
        '"sgx.protected_files_key" = "00112233445566778899aabbccddeeff"',
        '"sgx.protected_mrenclave_files" = ["file:/srv/data"]',
        '"fs.root.path" = "/"',
        '"fs.root.uri" = "file:/"',
        '"fs.mounts" = ["file:/etc"]',
        '"fs.mounts.etc" = "file:/etc"',
        '"fs.mount.etc.uri" = "file:/etc"',
        '"loader.argv" = ["python", "-c", "evil"]',
        '"loader.argv_src_file" = "file:argv"',
        '"loader.env.ENKLAVE_MODE" = "sim"',
        '"loader.env_src_file" = "file:env"',
        '"libos.entrypoint" = "/bin/sh"',
        '"sgx.remote_attestation" = "none"',
        '"sgx.debug" = true',
        '"sgx.isvsvn" = 9',
        '"sgx.seal_key.flags_mask" = "0x0"',
        '"loader.log_level" = "trace"',
        '"loader.env" = "x"',
        '"sys.stack.size" = "{{ evil }}"',
        '"bad key" = 1',
    ],
)
def test_weakening_extras_are_rejected(extra: str) -> None:
    with pytest.raises(ConfigError) as info:
        manifest_entries(_config(extra), Path("/srv/app/demo.enclave"), layout=LAYOUT)
    assert "\n" not in str(info.value)


def test_debug_log_level_is_allowed_for_debug_enclaves() -> None:
    config = _config('"loader.log_level" = "debug"', debug=True)
    entries = manifest_entries(config, Path("/srv/app/demo.enclave"), layout=LAYOUT)
    assert entries["loader.log_level"] == "debug"
    assert entries["sgx.debug"] is True


@pytest.mark.parametrize(
    "name",
    [
        "LD_PRELOAD",
        "ENKLAVE_MODE",
        "ENKLAVE_HOME",
        "GLIBC_TUNABLES",
        "MALLOC_ARENA_MAX",
        "OPENSSL_CONF",
        "OPENSSL_MODULES",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "PYTHONPATH",
        "PYTHONSTARTUP",
        "PYTHONHASHSEED",
    ],
)
def test_dangerous_env_names_are_rejected(name: str) -> None:
    config = EnclaveConfig.from_toml(CONFIG.replace('"MODEL_PATH"', f'"{name}"'), None)
    with pytest.raises(ConfigError, match=name):
        manifest_entries(config, Path("/srv/app/demo.enclave"), layout=LAYOUT)


def test_ordinary_env_names_pass_through() -> None:
    config = EnclaveConfig.from_toml(CONFIG.replace('"MODEL_PATH"', '"MODEL_PATH", "MY_PYTHON_FLAG"'), None)
    entries = manifest_entries(config, Path("/srv/app/demo.enclave"), layout=LAYOUT)
    assert entries["loader.env.MODEL_PATH"] == {"passthrough": True}
    assert entries["loader.env.MY_PYTHON_FLAG"] == {"passthrough": True}


def test_jinja_in_paths_is_rejected() -> None:
    with pytest.raises(ConfigError, match="Jinja"):
        manifest_entries(_config(), Path("/srv/{{ x }}/demo.enclave"), layout=LAYOUT)


class FakeRunner:
    def __init__(self, returncode: int = 0, stderr: str = "") -> None:
        self.calls: list[list[str]] = []
        self.returncode = returncode
        self.stderr = stderr

    def __call__(self, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        assert kwargs["check"] is False
        assert kwargs["timeout"] > 0
        self.calls.append(argv)
        return subprocess.CompletedProcess(argv, self.returncode, "", self.stderr)


def test_build_runs_the_gramine_tools(project: Path, tmp_path: Path) -> None:
    runner = FakeRunner()
    out = tmp_path / "out"
    result = build_sgx(project / "enklave.toml", out / "demo.enclave", out, key=tmp_path / "k.pem",
                       runner=runner, which=lambda name: f"/usr/bin/{name}")  # fmt: skip
    assert result.complete
    assert result.template.is_file()
    assert runner.calls == [
        ["gramine-manifest", str(out / "demo.manifest.template"), str(out / "demo.manifest")],
        ["gramine-sgx-sign", "--manifest", str(out / "demo.manifest"), "--output", str(out / "demo.manifest.sgx"),
         "--key", str(tmp_path / "k.pem")],
    ]  # fmt: skip
    assert result.sgx_manifest == out / "demo.manifest.sgx"
    assert result.sigstruct == out / "demo.sig"
    assert gramine_command(out, "demo") == ["gramine-sgx", str(out / "demo")]


def test_build_without_gramine_keeps_the_template(project: Path, tmp_path: Path) -> None:
    runner = FakeRunner()
    out = tmp_path / "out"
    result = build_sgx(
        project / "enklave.toml", out / "demo.enclave", out, runner=runner, which=lambda name: None
    )
    assert not result.complete
    assert result.missing_tools == ("gramine-manifest", "gramine-sgx-sign")
    assert result.template.is_file()
    assert result.manifest is None
    assert runner.calls == []


def test_build_reports_a_failing_tool(project: Path, tmp_path: Path) -> None:
    runner = FakeRunner(returncode=1, stderr="warning\nmanifest: unknown key 'sgx.foo'\n")
    with pytest.raises(
        PlatformError, match="gramine-manifest failed with exit code 1: manifest: unknown key"
    ):
        build_sgx(project / "enklave.toml", tmp_path / "demo.enclave", tmp_path, runner=runner,
                  which=lambda name: "/x")  # fmt: skip
    assert len(runner.calls) == 1


def _fake_tool(bin_dir: Path, name: str, script: str) -> None:
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_cli_build_sim_signs_only(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["build", str(project), "--mode", "sim"]) == 0
    assert (project / "build" / "demo.enclave").is_file()
    assert not (project / "build" / "demo.manifest.template").exists()
    assert "MRENCLAVE" in capsys.readouterr().out


def test_cli_build_sgx_without_gramine_fails_after_writing_the_template(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    code = main(["build", str(project / "enklave.toml"), "--mode", "sgx", "--out", str(tmp_path / "out")])
    assert code != 0
    assert (tmp_path / "out" / "demo.manifest.template").is_file()
    assert (tmp_path / "out" / "demo.enclave").is_file()
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1
    assert "gramine-manifest and gramine-sgx-sign not found" in errors[0]


def test_cli_build_sgx_with_gramine_signs_the_manifest(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    _fake_tool(bin_dir, "gramine-manifest", f'echo "manifest $*" >> {log}\ncp "$1" "$2"\n')
    _fake_tool(bin_dir, "gramine-sgx-sign", f'echo "sign $*" >> {log}\ntouch "$4"\n')
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "out"
    assert main(["build", str(project), "--mode", "sgx", "--out", str(out)]) == 0
    calls = log.read_text().splitlines()
    assert calls[0] == f"manifest {out / 'demo.manifest.template'} {out / 'demo.manifest'}"
    key = tmp_path / "home" / "signing-keys" / "demo.pem"
    # The bundle and the Gramine SIGSTRUCT are signed with the same key: one MRSIGNER in both modes.
    assert (
        calls[1]
        == f"sign --manifest {out / 'demo.manifest'} --output {out / 'demo.manifest.sgx'} --key {key}"
    )
    assert (out / "demo.manifest.sgx").is_file()
    assert f"gramine-sgx {out / 'demo'}" in capsys.readouterr().out


def test_cli_build_rejects_an_unknown_mode_from_the_environment(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ENKLAVE_MODE", "hardware")
    assert main(["build", str(project)]) == 2
    assert "ENKLAVE_MODE" in capsys.readouterr().err
