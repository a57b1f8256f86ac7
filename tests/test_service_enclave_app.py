"""A service's packaged enclave keeps one bundle file across restarts on other days (stable Gramine MRENCLAVE)."""

from __future__ import annotations

import datetime
import functools
from pathlib import Path

import pytest

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
