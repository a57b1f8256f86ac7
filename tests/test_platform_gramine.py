"""GraminePlatform against an imitation of Gramine's /dev/attestation, fed by the simulated platform."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from enklave.attestation.verify import verify_quote
from enklave.errors import InvalidQuote, PlatformError, SignatureError, UsageError
from enklave.platform._base import KeyPolicy, KeyRequest
from enklave.platform.gramine import GraminePlatform
from enklave.platform.simulated import SimulatedPlatform, read_collateral, simulated_root
from enklave.sgx.report import ReportBody, TargetInfo
from fake_gramine import GRAMINE_KEY_ID, FakeGramine


def _identity(tag: int, *, isv_svn: int = 2) -> ReportBody:
    return ReportBody.build(
        mr_enclave=bytes([tag]) * 32, mr_signer=b"\x5a" * 32, isv_prod_id=9, isv_svn=isv_svn
    )


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("enklave-home")


@pytest.fixture(scope="module")
def sim(home: Path) -> SimulatedPlatform:
    return SimulatedPlatform.launch(_identity(1), home=home)


@pytest.fixture
def fake(sim: SimulatedPlatform, tmp_path: Path) -> Iterator[FakeGramine]:
    with FakeGramine(sim, tmp_path / "attestation") as served:
        yield served
    assert not served.errors


@pytest.fixture
def platform(fake: FakeGramine) -> GraminePlatform:
    return GraminePlatform(fake.directory)


def test_identity_is_the_enclave_the_cpu_runs(platform: GraminePlatform, sim: SimulatedPlatform) -> None:
    assert platform.mode == "sgx"
    assert platform.simulated is False
    assert platform.identity == sim.identity
    assert platform.identity.report_data == bytes(64)


def test_quote_verifies_with_the_simulated_root_and_binds_report_data(
    platform: GraminePlatform, home: Path, sim: SimulatedPlatform
) -> None:
    raw = platform.get_quote(b"nonce-1234")
    verified = verify_quote(raw, read_collateral(home), now=datetime.now(UTC), roots=[simulated_root(home)])
    assert verified.simulated  # The imitation is fed by the simulated QE, and the verifier says so.
    assert verified.report_data == b"nonce-1234".ljust(64, b"\0")
    assert verified.quote.body.mr_enclave == sim.identity.mr_enclave
    # A second request sees its own report data, not the first one's.
    again = verify_quote(
        platform.get_quote(b"other"),
        read_collateral(home),
        now=datetime.now(UTC),
        roots=[simulated_root(home)],
    )
    assert again.report_data == b"other".ljust(64, b"\0")


def test_report_is_maced_for_its_target(
    platform: GraminePlatform, home: Path, sim: SimulatedPlatform
) -> None:
    other = SimulatedPlatform.launch(_identity(2), home=home)
    report = platform.get_report(TargetInfo.for_enclave(other.identity), b"for the other enclave")
    assert report.body.report_data == b"for the other enclave".ljust(64, b"\0")
    assert report.body.mr_enclave == sim.identity.mr_enclave
    other.verify_report(report)
    with pytest.raises(SignatureError):
        sim.verify_report(report)
    # None addresses the report to the enclave itself.
    own = platform.get_report(None, b"self")
    sim.verify_report(own)
    with pytest.raises(SignatureError):
        other.verify_report(own)


def test_report_data_longer_than_64_bytes_is_refused(platform: GraminePlatform) -> None:
    with pytest.raises(UsageError):
        platform.get_report(None, bytes(65))
    with pytest.raises(UsageError):
        platform.get_quote(bytes(65))


def _request(platform: GraminePlatform, policy: KeyPolicy, key_id: bytes, **changes: object) -> KeyRequest:
    identity = platform.identity
    fields: dict[str, object] = {"isv_svn": identity.isv_svn, "cpu_svn": identity.cpu_svn, **changes}
    return KeyRequest(policy, fields["isv_svn"], fields["cpu_svn"], key_id)  # type: ignore[arg-type]


def test_seal_keys_depend_on_policy_and_key_id(platform: GraminePlatform, fake: FakeGramine) -> None:
    id_a, id_b = b"a" * 32, b"b" * 32
    enclave_a = platform.get_seal_key(_request(platform, KeyPolicy.MRENCLAVE, id_a))
    signer_a = platform.get_seal_key(_request(platform, KeyPolicy.MRSIGNER, id_a))
    enclave_b = platform.get_seal_key(_request(platform, KeyPolicy.MRENCLAVE, id_b))
    assert len(enclave_a) == len(signer_a) == len(enclave_b) == 16
    assert len({enclave_a, signer_a, enclave_b}) == 3
    # Deterministic: the same request gives the same key, so sealed data unseals after a restart.
    assert platform.get_seal_key(_request(platform, KeyPolicy.MRENCLAVE, id_a)) == enclave_a
    # The derived key is not Gramine's raw key (the per-blob key id is mixed in).
    raw = (fake.directory / "keys" / "_sgx_mrenclave").read_bytes()
    assert enclave_a != raw
    assert GRAMINE_KEY_ID not in (id_a, id_b)


def test_seal_key_at_another_svn_is_refused(platform: GraminePlatform) -> None:
    svn = platform.identity.isv_svn
    with pytest.raises(PlatformError, match="own ISV SVN"):
        platform.get_seal_key(_request(platform, KeyPolicy.MRSIGNER, b"k" * 32, isv_svn=svn - 1))
    with pytest.raises(PlatformError, match="own ISV SVN"):
        platform.get_seal_key(_request(platform, KeyPolicy.MRSIGNER, b"k" * 32, isv_svn=svn + 1))
    with pytest.raises(PlatformError, match="CPU SVN"):
        platform.get_seal_key(_request(platform, KeyPolicy.MRSIGNER, b"k" * 32, cpu_svn=b"\xff" * 16))


def test_missing_directory_is_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(PlatformError) as info:
        GraminePlatform(tmp_path / "nowhere")
    message = str(info.value)
    assert "nowhere" in message
    assert "gramine-sgx" in message
    assert "\n" not in message


@pytest.mark.parametrize("kind", ["none", "epid"])
def test_wrong_attestation_type_is_refused(sim: SimulatedPlatform, tmp_path: Path, kind: str) -> None:
    served = FakeGramine(sim, tmp_path / "attestation", attestation_type=kind)
    with served, pytest.raises(PlatformError, match=f"'{kind}', expected 'dcap'") as info:
        GraminePlatform(served.directory)
    assert "\n" not in str(info.value)


def test_missing_attestation_type_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "attestation").mkdir()
    with pytest.raises(PlatformError, match="attestation_type"):
        GraminePlatform(tmp_path / "attestation")


def test_truncated_quote_is_invalid_quote(platform: GraminePlatform, fake: FakeGramine) -> None:
    fake.quote_transform = lambda quote: quote[:100]
    with pytest.raises(InvalidQuote, match="quote") as info:
        platform.get_quote(b"x")
    assert "\n" not in str(info.value)


def test_empty_quote_is_platform_error(platform: GraminePlatform, fake: FakeGramine) -> None:
    fake.quote_transform = lambda quote: b""
    with pytest.raises(PlatformError, match="empty"):
        platform.get_quote(b"x")


def test_quote_over_other_report_data_is_refused(
    platform: GraminePlatform, fake: FakeGramine, sim: SimulatedPlatform
) -> None:
    # A quote that does not carry what was written (a stale or interleaved answer) is never returned.
    fake.quote_transform = lambda quote: sim.get_quote(b"stale")
    with pytest.raises(PlatformError, match="other report data"):
        platform.get_quote(b"fresh")


def test_unreadable_key_file_names_the_file(platform: GraminePlatform, fake: FakeGramine) -> None:
    (fake.directory / "keys" / "_sgx_mrsigner").unlink()
    with pytest.raises(PlatformError, match="_sgx_mrsigner"):
        platform.get_seal_key(_request(platform, KeyPolicy.MRSIGNER, b"k" * 32))


def test_concurrent_requests_do_not_interleave(platform: GraminePlatform, home: Path) -> None:
    # The pseudo-files are shared state: every thread must get a report over its own data.
    results: dict[int, bytes] = {}

    def worker(index: int) -> None:
        for round_ in range(5):
            data = f"{index}-{round_}".encode()
            if round_ % 2:
                report = platform.get_report(None, data)
                results[index * 10 + round_] = report.body.report_data.rstrip(b"\0")
            else:
                raw = platform.get_quote(data)
                results[index * 10 + round_] = raw[368:432].rstrip(b"\0")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(results) == 20
    for key, value in results.items():
        assert value == f"{key // 10}-{key % 10}".encode()
