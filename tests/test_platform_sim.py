"""The simulated SGX platform end to end: quotes verify only with the simulated root, reports, seal keys,
provisioning (idempotent, concurrent, owner-only), public readers that never need a secret, and re-signing."""

from __future__ import annotations

import copy
import dataclasses
import os
import shutil
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from enklave.attestation.collateral import TcbStatus
from enklave.attestation.evidence import collateral_request
from enklave.attestation.policy import EnclavePolicy
from enklave.attestation.verify import verify_quote
from enklave.cli import main
from enklave.errors import (
    CollateralUnavailable,
    ExpiredError,
    PlatformError,
    PolicyError,
    QeIdentityError,
    SignatureError,
    UntrustedRootError,
    UsageError,
)
from enklave.platform import KeyPolicy, KeyRequest
from enklave.platform.simulated import (
    SIMULATED_ROOT_NAME,
    SimulatedCollateralSource,
    SimulatedPlatform,
    load_qe,
    platform_info,
    provision,
    read_collateral,
    refresh_collateral,
    simulated_root,
)
from enklave.sgx.quote import INTEL_QE_VENDOR_ID, CertificationDataType, Quote
from enklave.sgx.report import ReportBody, TargetInfo

IDENTITY = ReportBody.build(mr_enclave=bytes(range(32)), mr_signer=b"\x5a" * 32, isv_prod_id=7, isv_svn=3)
OTHER = ReportBody.build(mr_enclave=b"\x77" * 32, mr_signer=b"\x5a" * 32, isv_prod_id=7, isv_svn=3)
NONCE = b"nonce: 0123456789abcdef"


@pytest.fixture
def platform(home: Path) -> SimulatedPlatform:
    return SimulatedPlatform.launch(IDENTITY)


@pytest.fixture
def quote(platform: SimulatedPlatform) -> bytes:
    return platform.get_quote(NONCE)


def _now() -> datetime:
    return datetime.now(UTC)


# -- quotes ---------------------------------------------------------------------------------------------------


def test_quote_is_a_real_format_v3_quote(platform: SimulatedPlatform, quote: bytes) -> None:
    parsed = Quote.from_bytes(quote)
    assert parsed.version == 3
    assert parsed.header.attestation_key_type == 2
    assert parsed.header.qe_vendor_id == INTEL_QE_VENDOR_ID
    assert parsed.certification_data.type == CertificationDataType.PCK_CERT_CHAIN
    assert parsed.body.report_data == NONCE.ljust(64, b"\0")
    assert parsed.body.mr_enclave == IDENTITY.mr_enclave
    assert parsed.body.isv_prod_id == 7
    # The CPU fills in its own CPU SVN.
    assert parsed.body.cpu_svn == platform_info().identity.cpu_svn == platform.identity.cpu_svn
    assert parsed.header.pce_svn == platform_info().identity.pce_svn
    assert collateral_request(parsed).ca == "platform"
    assert collateral_request(parsed).fmspc == platform_info().identity.fmspc


def test_quote_verifies_only_with_the_simulated_root(quote: bytes) -> None:
    verified = verify_quote(quote, read_collateral(), now=_now(), roots=[simulated_root()])
    assert verified.simulated is True
    assert verified.intel_root is False
    assert verified.root_name == SIMULATED_ROOT_NAME
    assert verified.tcb_status is TcbStatus.UP_TO_DATE
    assert verified.report_data == NONCE.ljust(64, b"\0")
    assert verified.mr_enclave == IDENTITY.mr_enclave
    with pytest.raises(UntrustedRootError):
        verify_quote(quote, read_collateral(), now=_now())


def test_default_policy_rejects_simulated_evidence(quote: bytes) -> None:
    verified = verify_quote(quote, read_collateral(), now=_now(), roots=[simulated_root()])
    with pytest.raises(PolicyError) as caught:
        EnclavePolicy().appraise(verified)
    assert caught.value.field == "simulated"
    EnclavePolicy(allow_simulated=True, mr_enclave=IDENTITY.mr_enclave, report_data=NONCE).appraise(verified)
    with pytest.raises(PolicyError):
        EnclavePolicy(allow_simulated=True, mr_enclave=OTHER.mr_enclave).appraise(verified)


def test_collateral_source_feeds_the_verifier(quote: bytes) -> None:
    request = collateral_request(Quote.from_bytes(quote))
    collateral = SimulatedCollateralSource().fetch(request.fmspc, request.ca)
    assert verify_quote(quote, collateral, now=_now(), roots=[simulated_root()]).simulated


# Header bytes the attestation key covers and the verifier does not check elsewhere (QE SVN, PCE SVN, user
# data), and a spread of report body bytes: any change must break the quote signature.
MUTATED_OFFSETS = [8, 9, 10, 11, 28, 47, *range(48, 432, 11), 431]


@pytest.mark.parametrize("offset", MUTATED_OFFSETS)
def test_mutated_quote_fails_its_signature(quote: bytes, offset: int) -> None:
    mutated = bytearray(quote)
    mutated[offset] ^= 0x01
    with pytest.raises(SignatureError):
        verify_quote(bytes(mutated), read_collateral(), now=_now(), roots=[simulated_root()])


def test_mutated_vendor_id_or_qe_report_fails(quote: bytes) -> None:
    vendor = bytearray(quote)
    vendor[12] ^= 0x01
    with pytest.raises(QeIdentityError):
        verify_quote(bytes(vendor), read_collateral(), now=_now(), roots=[simulated_root()])
    # The QE report sits after the length, quote signature and attestation key; the PCK key signs it.
    qe_report = bytearray(quote)
    qe_report[48 + 384 + 4 + 128 + 100] ^= 0x01
    with pytest.raises(SignatureError):
        verify_quote(bytes(qe_report), read_collateral(), now=_now(), roots=[simulated_root()])


def test_another_platforms_quote_does_not_verify_with_this_root(
    quote: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other_home = tmp_path / "other"
    other = SimulatedPlatform.launch(IDENTITY, home=other_home).get_quote(NONCE)
    with pytest.raises(UntrustedRootError):
        verify_quote(other, read_collateral(other_home), now=_now(), roots=[simulated_root()])
    verify_quote(other, read_collateral(other_home), now=_now(), roots=[simulated_root(other_home)])


def test_report_data_longer_than_64_bytes_is_refused(platform: SimulatedPlatform) -> None:
    with pytest.raises(UsageError):
        platform.get_quote(bytes(65))
    with pytest.raises(UsageError):
        platform.get_report(None, bytes(65))


# -- reports and keys ---------------------------------------------------------------------------------------


def test_report_mac_checks_the_target(platform: SimulatedPlatform, home: Path) -> None:
    peer = SimulatedPlatform.launch(OTHER)
    report = platform.get_report(TargetInfo.for_enclave(peer.identity), b"for the peer")
    assert report.body.report_data.startswith(b"for the peer")
    peer.verify_report(report)
    # The report key belongs to the target: the reporting enclave itself cannot check it, nor can a third.
    with pytest.raises(SignatureError):
        platform.verify_report(report)
    # A changed body fails the MAC.
    changed = dataclasses.replace(report, body=dataclasses.replace(report.body, isv_svn=4))
    with pytest.raises(SignatureError):
        peer.verify_report(changed)
    # A report to itself (target None) verifies for itself.
    platform.verify_report(platform.get_report(None, b"self"))


def test_qe_refuses_a_report_for_another_target(platform: SimulatedPlatform, home: Path) -> None:
    qe = load_qe()
    wrong = platform.get_report(None, NONCE)
    with pytest.raises(SignatureError):
        qe.quote(wrong)
    right = platform.get_report(platform.qe_target_info, NONCE)
    assert Quote.from_bytes(qe.quote(right.to_bytes())).body == right.body


def test_report_from_another_platform_is_refused(platform: SimulatedPlatform, tmp_path: Path) -> None:
    stranger = SimulatedPlatform.launch(IDENTITY, home=tmp_path / "stranger")
    report = stranger.get_report(platform.qe_target_info, NONCE)
    with pytest.raises(SignatureError):
        load_qe().quote(report)


def test_seal_keys_persist_per_installation(platform: SimulatedPlatform, tmp_path: Path) -> None:
    request = KeyRequest(KeyPolicy.MRENCLAVE, 3, bytes(platform.identity.cpu_svn), b"k" * 32)
    key = platform.get_seal_key(request)
    assert len(key) == 16
    # The same installation gives the same key after a restart; another installation does not.
    assert SimulatedPlatform.launch(IDENTITY).get_seal_key(request) == key
    assert SimulatedPlatform.launch(IDENTITY, home=tmp_path / "elsewhere").get_seal_key(request) != key
    assert platform.get_seal_key(dataclasses.replace(request, key_id=b"j" * 32)) != key
    with pytest.raises(PlatformError):
        platform.get_seal_key(dataclasses.replace(request, isv_svn=4))


def test_secrets_do_not_leak_through_repr_or_copy(platform: SimulatedPlatform, home: Path) -> None:
    secret = (home / "sim" / "cpu" / "root_secret.bin").read_bytes()
    qe = load_qe()
    for text in (repr(platform), repr(qe), repr(qe.cpu)):
        assert secret.hex() not in text
        assert "PRIVATE" not in text
    with pytest.raises(TypeError):
        copy.copy(qe.cpu)
    with pytest.raises(TypeError):
        copy.copy(qe)


# -- provisioning and state ---------------------------------------------------------------------------------


def test_unprovisioned_platform_says_what_to_do(home: Path) -> None:
    for read in (simulated_root, platform_info, read_collateral):
        with pytest.raises(PlatformError, match="enklave sim init"):
            read()
    with pytest.raises(PlatformError, match="enklave sim init"):
        SimulatedCollateralSource().fetch(bytes(6), "platform")
    assert not (home / "sim" / "cpu").exists()


def test_provisioning_twice_keeps_the_platform(home: Path) -> None:
    first = provision()
    secret = (home / "sim" / "cpu" / "root_secret.bin").read_bytes()
    second = provision()
    assert second.root_fingerprint == first.root_fingerprint == simulated_root().fingerprint
    assert second.identity == first.identity
    assert (home / "sim" / "cpu" / "root_secret.bin").read_bytes() == secret


def test_modes_are_owner_only_and_public_has_no_keys(platform: SimulatedPlatform, home: Path) -> None:
    sim = home / "sim"
    for directory in ("intel", "cpu"):
        assert stat.S_IMODE((sim / directory).stat().st_mode) == 0o700
        files = list((sim / directory).iterdir())
        assert len(files) == 3
        for path in files:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert b"PRIVATE KEY" in (sim / "intel" / "root_ca_key.pem").read_bytes()
    secret = (sim / "cpu" / "root_secret.bin").read_bytes()
    public = list((sim / "public").iterdir())
    assert {path.name for path in public} >= {
        "root_ca.pem",
        "pck_chain.pem",
        "collateral.json",
        "platform.json",
    }
    for path in public:
        data = path.read_bytes()
        assert b"PRIVATE KEY" not in data, path
        assert secret not in data and secret.hex().encode() not in data, path
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_host_readers_never_need_a_secret_file(platform: SimulatedPlatform, home: Path, quote: bytes) -> None:
    # Move the secrets away: everything host code uses must still work from the public directory alone.
    sim = home / "sim"
    vault = home / "vault"
    vault.mkdir()
    for directory in ("intel", "cpu"):
        shutil.move(sim / directory, vault / directory)
    root = simulated_root()
    request = collateral_request(Quote.from_bytes(quote))
    collateral = SimulatedCollateralSource().fetch(request.fmspc, request.ca)
    assert verify_quote(quote, collateral, now=_now(), roots=[root]).simulated
    assert platform_info().root_fingerprint == root.fingerprint
    # The enclave side does need them, and says the state is damaged.
    with pytest.raises(PlatformError):
        load_qe()


def test_damaged_state_is_reported(platform: SimulatedPlatform, home: Path) -> None:
    (home / "sim" / "cpu" / "pck_key.pem").unlink()
    with pytest.raises(PlatformError, match="damaged"):
        provision()


def test_collateral_source_refuses_other_platforms(platform: SimulatedPlatform) -> None:
    fmspc = platform_info().identity.fmspc
    source = SimulatedCollateralSource()
    with pytest.raises(CollateralUnavailable):
        source.fetch(bytes(6), "platform")
    with pytest.raises(CollateralUnavailable):
        source.fetch(fmspc, "processor")
    with pytest.raises(UsageError):
        source.fetch(fmspc, "other")
    with pytest.raises(UsageError):
        source.fetch(fmspc[:5], "platform")


_PROVISION = """
import sys
from enklave.platform.simulated import provision
print(provision(sys.argv[1]).root_fingerprint.hex())
"""


def test_concurrent_first_use_agrees_on_one_platform(tmp_path: Path) -> None:
    home = tmp_path / "shared"
    env = {**os.environ, "ENKLAVE_HOME": str(tmp_path / "unused")}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _PROVISION, str(home)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [process.communicate(timeout=60) for process in processes]
    assert all(process.returncode == 0 for process in processes), outputs
    fingerprints = {stdout.strip() for stdout, _ in outputs}
    assert len(fingerprints) == 1
    assert fingerprints == {simulated_root(home).fingerprint.hex()}
    # The state is whole: an enclave on it produces a quote that verifies with that root.
    quote = SimulatedPlatform.launch(IDENTITY, home=home).get_quote(NONCE)
    assert verify_quote(quote, read_collateral(home), now=_now(), roots=[simulated_root(home)]).simulated


# -- collateral validity ------------------------------------------------------------------------------------


def test_expired_collateral_is_resigned(home: Path) -> None:
    start = datetime(2025, 1, 10, tzinfo=UTC)
    platform = SimulatedPlatform.launch(IDENTITY, now=start)
    quote = platform.get_quote(NONCE)
    old = read_collateral()
    later = start + timedelta(days=40)
    with pytest.raises(ExpiredError):
        verify_quote(quote, old, now=later, roots=[simulated_root()])
    # A day before nextUpdate does not yet need a new set; within a day of it, it does.
    assert refresh_collateral(now=start + timedelta(days=28)) == old
    fresh = refresh_collateral(now=later)
    assert fresh.tcb_info.issue_date == later
    assert fresh.tcb_info.signature != old.tcb_info.signature
    assert read_collateral() == fresh
    verified = verify_quote(quote, fresh, now=later, roots=[simulated_root()])
    assert verified.collateral_expiry == later + timedelta(days=30)
    # Launching an enclave re-signs too.
    even_later = later + timedelta(days=35)
    SimulatedPlatform.launch(IDENTITY, now=even_later)
    assert read_collateral().tcb_info.issue_date == even_later


def test_identity_cpu_svn_comes_from_the_cpu(home: Path) -> None:
    claimed = dataclasses.replace(IDENTITY, cpu_svn=b"\xff" * 16)
    platform = SimulatedPlatform.launch(claimed)
    assert platform.identity.cpu_svn == platform_info().identity.cpu_svn
    assert platform.identity.report_data == bytes(64)
    with pytest.raises(UsageError):
        SimulatedPlatform(claimed, load_qe())


# -- command line -------------------------------------------------------------------------------------------


def test_cli_init_and_show(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sim", "show"]) == 5  # platform unavailable
    assert "enklave sim init" in capsys.readouterr().err
    assert main(["sim", "init"]) == 0
    out = capsys.readouterr().out
    info = platform_info()
    assert info.root_fingerprint.hex() in out
    assert info.identity.fmspc.hex() in out
    assert main(["sim", "show", "--json"]) == 0
    shown = capsys.readouterr().out
    assert info.identity.fmspc.hex() in shown
    assert "PRIVATE" not in shown
    secret = (home / "sim" / "cpu" / "root_secret.bin").read_bytes()
    assert secret.hex() not in shown


def test_cli_quote_verify_trusts_the_simulated_root_only_when_asked(
    platform: SimulatedPlatform, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    quote_file = tmp_path / "quote.bin"
    quote_file.write_bytes(platform.get_quote(NONCE))
    mr_enclave = IDENTITY.mr_enclave.hex()
    # Simulated root, simulated collateral, simulated evidence accepted: all by the one explicit flag.
    assert main(["quote", "verify", str(quote_file), "--simulated", "--mrenclave", mr_enclave, "--json"]) == 0
    assert '"simulated": true' in capsys.readouterr().out
    # The same quote with its collateral but Intel's root: an untrusted root, exit 1.
    collateral_file = tmp_path / "collateral.json"
    collateral_file.write_text(read_collateral().to_json())
    assert main(["quote", "verify", str(quote_file), "--collateral", str(collateral_file)]) == 1
    err = capsys.readouterr().err
    # One line, which names the options that trust the simulated platform.
    assert "untrusted root" in err and "--simulated for 'enklave quote verify'" in err
    assert len(err.strip().splitlines()) == 1
    assert main(["quote", "verify", str(quote_file)]) == 2


# -- the simulated root is simulated however it is loaded -------------------------------------------------------


def test_simulated_root_loaded_from_its_pem_stays_simulated(home: Path, quote: bytes) -> None:
    from enklave.attestation.trust import SIMULATED_PKI_ORGANIZATION, TrustedRoot
    from enklave.platform.simulated.pki import ORGANIZATION

    assert ORGANIZATION == SIMULATED_PKI_ORGANIZATION
    # What `--root <ENKLAVE_HOME>/sim/public/root_ca.pem` does: the caller does not say it is simulated.
    pem = (home / "sim" / "public" / "root_ca.pem").read_bytes()
    root = TrustedRoot.from_pem(pem, simulated=False)
    assert root.simulated is True
    assert TrustedRoot(root.certificate, "direct", simulated=False).simulated is True
    with pytest.raises(UsageError):
        TrustedRoot(root.certificate, "direct", intel=True)
    verified = verify_quote(quote, read_collateral(), now=_now(), roots=[root])
    assert verified.simulated is True
    with pytest.raises(PolicyError) as caught:
        EnclavePolicy().appraise(verified)
    assert caught.value.field == "simulated"
