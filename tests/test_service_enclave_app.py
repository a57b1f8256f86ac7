"""A service's packaged enclave keeps one bundle file across restarts on other days (stable Gramine MRENCLAVE)."""

from __future__ import annotations

import datetime
import functools
from pathlib import Path

import pytest

from enklave.deploy.gramine import BuildResult, build_sgx
from enklave.errors import PlatformError
from enklave.runtime import bundle as bundle_module
from enklave.runtime.bundle import load_bundle
from enklave.services import _enclave_app
from enklave.services._enclave_app import sign_packaged_enclave

AUTHORITIES = {"authorities.json": b"[]"}


def _sign_on(monkeypatch: pytest.MonkeyPatch, day: datetime.date) -> None:
    monkeypatch.setattr(_enclave_app, "sign_bundle", functools.partial(bundle_module.sign_bundle, date=day))


def test_an_unchanged_enclave_keeps_its_bundle_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _sign_on(monkeypatch, datetime.date(2026, 1, 1))
    path = sign_packaged_enclave(tmp_path, "enklave.services.kbs", "kbs.enclave", extra_files=AUTHORITIES)
    first = path.read_bytes()
    _sign_on(monkeypatch, datetime.date(2026, 1, 2))
    assert (
        sign_packaged_enclave(tmp_path, "enklave.services.kbs", "kbs.enclave", extra_files=AUTHORITIES)
        == path
    )
    assert path.read_bytes() == first


def test_changed_code_or_a_damaged_bundle_is_signed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _sign_on(monkeypatch, datetime.date(2026, 1, 1))
    path = sign_packaged_enclave(tmp_path, "enklave.services.kbs", "kbs.enclave", extra_files=AUTHORITIES)
    original = load_bundle(path).mr_enclave

    changed = sign_packaged_enclave(
        tmp_path, "enklave.services.kbs", "kbs.enclave", extra_files={"authorities.json": b"[1]"}
    )
    assert load_bundle(changed).mr_enclave != original

    path.write_bytes(path.read_bytes()[:-10])
    sign_packaged_enclave(tmp_path, "enklave.services.kbs", "kbs.enclave", extra_files=AUTHORITIES)
    assert load_bundle(path).mr_enclave == original


def test_sgx_mode_builds_the_gramine_manifest_when_the_bundle_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[Path, Path, object]] = []

    def fake_build(config_path: Path, bundle_path: Path, out_dir: Path, *, key: object = None) -> object:
        calls.append((Path(bundle_path), Path(out_dir), key))
        assert Path(config_path).is_file() and Path(bundle_path).is_file()
        (Path(out_dir) / "enklave-key-broker.manifest.sgx").write_text("signed")
        return _built()

    monkeypatch.setattr(_enclave_app, "build_sgx", fake_build)
    path = sign_packaged_enclave(tmp_path, "enklave.services.kbs", "kbs.enclave", extra_files=AUTHORITIES)
    assert calls == []  # sim mode builds nothing
    sign_packaged_enclave(
        tmp_path, "enklave.services.kbs", "kbs.enclave", extra_files=AUTHORITIES, mode="sgx"
    )
    assert calls == [(path, path.parent, tmp_path / "enclave-signing-key.pem")]
    # Unchanged enclave, signed manifest present: nothing to rebuild.
    sign_packaged_enclave(
        tmp_path, "enklave.services.kbs", "kbs.enclave", extra_files=AUTHORITIES, mode="sgx"
    )
    assert len(calls) == 1
    # New measured content: the bundle and its manifest are both rebuilt.
    sign_packaged_enclave(
        tmp_path, "enklave.services.kbs", "kbs.enclave", extra_files={"authorities.json": b"[1]"}, mode="sgx"
    )
    assert len(calls) == 2


def test_sgx_mode_without_gramine_tools_is_a_platform_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_enclave_app, "build_sgx", functools.partial(build_sgx, which=lambda tool: None))
    with pytest.raises(PlatformError, match="gramine"):
        sign_packaged_enclave(
            tmp_path, "enklave.services.kbs", "kbs.enclave", extra_files=AUTHORITIES, mode="sgx"
        )


def _built() -> BuildResult:
    return BuildResult(Path("t"), Path("m"), Path("s"), Path("g"), (), ())
