"""Shared fixtures: the real and synthetic SGX vectors in tests/assets (see tests/assets/README.md), and a fresh
ENKLAVE_HOME for each test."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from enklave.attestation.collateral import QuoteCollateral
from enklave.attestation.trust import TrustedRoot

ASSETS = Path(__file__).parent / "assets"

# Inside the window in which all of the real collateral is valid at once (2025-06-19T10:56:11Z ..
# 2025-07-19T10:01:18Z), and just outside it on both sides.
REAL_INSIDE = datetime(2025, 7, 1, tzinfo=UTC)
REAL_AFTER = datetime(2025, 7, 19, 10, 1, 19, tzinfo=UTC)
REAL_BEFORE = datetime(2025, 6, 19, 10, 56, 10, tzinfo=UTC)
# The synthetic Intel set is valid from 2019-09-05T07:47:08Z to 2026-08-28T11:36:55Z with its test root.
INTEL_SAMPLE_INSIDE = datetime(2025, 1, 1, tzinfo=UTC)


def asset(*parts: str) -> bytes:
    """The bytes of a test asset."""
    return ASSETS.joinpath(*parts).read_bytes()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh ENKLAVE_HOME for one test (a module that needs another lifetime defines its own ``home``)."""
    monkeypatch.setenv("ENKLAVE_HOME", str(tmp_path))
    return tmp_path


@pytest.fixture(scope="session")
def real_quote() -> bytes:
    return asset("phala-dcap-qvl", "sgx_quote")


@pytest.fixture(scope="session")
def real_collateral_json() -> str:
    return asset("phala-dcap-qvl", "sgx_quote_collateral.json").decode()


@pytest.fixture(scope="session")
def real_collateral(real_collateral_json: str) -> QuoteCollateral:
    return QuoteCollateral.from_json(real_collateral_json)


@pytest.fixture(scope="session")
def intel_sample_quote() -> bytes:
    return asset("intel-qvl-sampledata", "quote.dat")


@pytest.fixture(scope="session")
def intel_sample_collateral() -> QuoteCollateral:
    return QuoteCollateral.from_json(
        asset("intel-qvl-sampledata", "derived", "dcap_qvl_style_collateral.json")
    )


@pytest.fixture(scope="session")
def intel_test_root() -> TrustedRoot:
    return TrustedRoot.from_pem(
        asset("intel-qvl-sampledata", "trustedRootCaCert.pem"), name="Intel QVL test root"
    )


@pytest.fixture(scope="session")
def mobilecoin_quote() -> bytes:
    return asset("mobilecoin-attestation", "hw_quote.dat")


@pytest.fixture(scope="session")
def mobilecoin_collateral() -> QuoteCollateral:
    return QuoteCollateral.from_json(asset("mobilecoin-attestation", "derived", "dcap_qvl_collateral.json"))
