"""The simulated Intel PKI: the strict DER writer, the SGX extension, the certificates, CRLs and collateral."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from enklave.attestation import _pki
from enklave.attestation.collateral import QuoteCollateral, TcbStatus
from enklave.attestation.trust import INTEL_SGX_ROOT_CA_SHA256, TrustedRoot
from enklave.errors import UsageError
from enklave.platform.simulated import _der_writer as der
from enklave.platform.simulated import platform_info, provision, read_collateral, simulated_root
from enklave.platform.simulated.collateral import (
    COLLATERAL_VALIDITY,
    SIM_ADVISORY_ID,
    build_collateral,
    needs_refresh,
    qe_identity_document,
    tcb_info_document,
)
from enklave.platform.simulated.cpu import PlatformIdentity
from enklave.platform.simulated.pki import (
    PCK_CA_NAME,
    ROOT_CA_NAME,
    IntelKeys,
    issue_intel_certificates,
    sgx_extension_der,
)
from enklave.platform.simulated.qe import QE_ISV_PROD_ID, QE_ISV_SVN, QE_MRSIGNER
from enklave.sgx import _der as der_reader
from enklave.sgx.pck import PckConfiguration, PckExtension, PckTcb, SgxType

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ENKLAVE_HOME", str(tmp_path))
    provision(now=T0)
    return tmp_path


# -- DER writer ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "encoding"),
    [(0, "020100"), (1, "020101"), (127, "02017f"), (128, "02020080"), (255, "020200ff"), (256, "02020100"),
     (65535, "020300ffff")],
)  # fmt: skip
def test_integers_are_minimal_and_non_negative(value: int, encoding: str) -> None:
    assert der.integer(value).hex() == encoding
    # The strict reader agrees on the value.
    assert der_reader.read_integer(der.integer(value), 2, len(der.integer(value))) == value


@pytest.mark.parametrize("bad", [-1, True, 1.0])
def test_integer_writer_refuses_what_it_cannot_encode(bad: object) -> None:
    with pytest.raises(UsageError):
        der.integer(bad)  # type: ignore[arg-type]


def test_oid_matches_the_sgx_arc() -> None:
    encoded = der.oid("1.2.840.113741.1.13.1")
    assert encoded == bytes([0x06, 9]) + bytes.fromhex("2a864886f84d010d01")
    assert der_reader.oid_to_dotted(encoded[2:]) == "1.2.840.113741.1.13.1"
    for bad in ("1", "3.1", "1.40", "1.x.3"):
        with pytest.raises(UsageError):
            der.oid(bad)


def test_long_lengths_use_the_minimal_long_form() -> None:
    assert der.octet_string(bytes(200))[:3] == bytes([0x04, 0x81, 200])
    assert der.octet_string(bytes(300))[:4] == bytes([0x04, 0x82, 0x01, 0x2C])
    assert der.boolean(True) == b"\x01\x01\xff"
    assert der.boolean(False) == b"\x01\x01\x00"
    with pytest.raises(UsageError):
        der.boolean(1)  # type: ignore[arg-type]


flags = st.one_of(st.none(), st.booleans())


@settings(max_examples=60, deadline=None)
@given(
    ppid=st.binary(min_size=16, max_size=16),
    svns=st.tuples(*[st.integers(0, 255)] * 16),
    pce_svn=st.integers(0, 0xFFFF),
    cpu_svn=st.binary(min_size=16, max_size=16),
    pce_id=st.binary(min_size=2, max_size=2),
    fmspc=st.binary(min_size=6, max_size=6),
    sgx_type=st.sampled_from(list(SgxType)),
    instance=st.one_of(st.none(), st.binary(min_size=16, max_size=16)),
    configuration=st.one_of(st.none(), st.builds(PckConfiguration, flags, flags, flags)),
)
def test_sgx_extension_round_trips_through_the_strict_parser(
    ppid: bytes, svns: tuple[int, ...], pce_svn: int, cpu_svn: bytes, pce_id: bytes, fmspc: bytes,
    sgx_type: SgxType, instance: bytes | None, configuration: PckConfiguration | None,
) -> None:  # fmt: skip
    tcb = PckTcb(svns, pce_svn, cpu_svn)
    encoded = sgx_extension_der(ppid=ppid, tcb=tcb, pce_id=pce_id, fmspc=fmspc, sgx_type=sgx_type,
                                platform_instance_id=instance, configuration=configuration)  # fmt: skip
    parsed = PckExtension.from_der(encoded)
    assert (parsed.ppid, parsed.tcb, parsed.pce_id, parsed.fmspc, parsed.sgx_type) == (
        ppid, tcb, pce_id, fmspc, sgx_type
    )  # fmt: skip
    assert parsed.platform_instance_id == instance
    assert parsed.configuration == configuration
    assert parsed.to_der() == encoded
    # Every element is strict DER (the generic validator walks the whole tree).
    assert der_reader.skip_element(encoded, 0, len(encoded)) == len(encoded)


def test_sgx_extension_refuses_wrong_sizes() -> None:
    tcb = PckTcb((0,) * 16, 0, bytes(16))
    with pytest.raises(UsageError, match="fmspc"):
        sgx_extension_der(ppid=bytes(16), tcb=tcb, pce_id=bytes(2), fmspc=bytes(5), sgx_type=SgxType.STANDARD)


# -- certificates and CRLs ----------------------------------------------------------------------------------


def test_provisioned_pck_certificate_states_the_platform(home: Path) -> None:
    info = platform_info()
    chain = x509.load_pem_x509_certificates((home / "sim" / "public" / "pck_chain.pem").read_bytes())
    assert len(chain) == 3
    leaf, ca, root = chain
    pck = PckExtension.from_certificate(leaf)
    identity = info.identity
    assert pck.fmspc == identity.fmspc == read_collateral().fmspc
    assert pck.ppid == identity.ppid
    assert pck.pce_id == identity.pce_id == read_collateral().tcb_info.pce_id
    assert pck.tcb.comp_svns == identity.tcb_components
    assert pck.tcb.cpu_svn == identity.cpu_svn
    assert pck.tcb.pce_svn == identity.pce_svn
    # Issued by the Platform CA, so it carries the instance id and configuration entries.
    assert pck.platform_instance_id == identity.platform_instance_id
    assert pck.configuration is not None
    assert pck.configuration.smt_enabled is True
    _pki.check_issued_by("PCK", leaf, ca)
    _pki.check_issued_by("PCK CA", ca, root)
    assert root == simulated_root().certificate


def test_names_never_pass_for_intel(home: Path) -> None:
    root = simulated_root()
    subject = root.certificate.subject
    assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == ROOT_CA_NAME
    assert "Intel" not in ROOT_CA_NAME
    assert "not Intel" in str(subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value)
    assert root.fingerprint != INTEL_SGX_ROOT_CA_SHA256
    assert root.simulated and not root.intel
    # Loading the root as PEM never makes it Intel's.
    reloaded = TrustedRoot.from_pem((home / "sim" / "public" / "root_ca.pem").read_bytes(), simulated=True)
    assert not reloaded.intel
    # The PCK CA's name ends as Intel's platform CA does: that is how the CA type is told from a quote.
    assert PCK_CA_NAME.endswith("Intel SGX PCK Platform CA")
    assert PCK_CA_NAME.startswith("enklave Simulated")


def test_ca_constraints_match_intels_profile() -> None:
    keys = IntelKeys.generate()
    certificates = issue_intel_certificates(keys, T0)
    root_bc = certificates.root.extensions.get_extension_for_class(x509.BasicConstraints).value
    ca_bc = certificates.pck_ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    signer_bc = certificates.tcb_signing.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert (root_bc.ca, root_bc.path_length) == (True, 1)
    assert (ca_bc.ca, ca_bc.path_length) == (True, 0)
    assert signer_bc.ca is False
    assert certificates.root.not_valid_before_utc == T0
    assert certificates.root.not_valid_after_utc > T0 + timedelta(days=20 * 365)
    _pki.check_issued_by("TCB signing", certificates.tcb_signing, certificates.root)


# -- collateral -----------------------------------------------------------------------------------------------


def test_collateral_is_signed_like_intels(home: Path) -> None:
    collateral = read_collateral()
    signer = collateral.tcb_info_issuer_chain[0]
    key = _pki.ec_public_key("TCB signing", signer)
    _pki.verify_raw_signature("TCB info", key, collateral.tcb_info.signature, collateral.tcb_info.body)
    _pki.verify_raw_signature(
        "QE identity", key, collateral.qe_identity.signature, collateral.qe_identity.body
    )
    assert collateral.root_ca_crl.is_signature_valid(simulated_root().public_key)
    assert collateral.pck_crl.is_signature_valid(collateral.pck_crl_issuer_chain[0].public_key())  # type: ignore[arg-type]
    # Compact JSON, as Intel writes it, and the same text as in the PCS documents.
    assert b": " not in collateral.tcb_info.body
    assert json.loads(tcb_info_document(collateral))["tcbInfo"] == json.loads(collateral.tcb_info.body)
    assert json.loads(qe_identity_document(collateral))["signature"] == collateral.qe_identity.signature.hex()
    assert QuoteCollateral.from_json(collateral.to_json()) == collateral


def test_tcb_info_and_qe_identity_contents(home: Path) -> None:
    collateral = read_collateral()
    info = platform_info().identity
    tcb = collateral.tcb_info
    assert (tcb.version, tcb.id, tcb.fmspc, tcb.pce_id) == (3, "SGX", info.fmspc, info.pce_id)
    assert tcb.issue_date == T0
    assert tcb.next_update == T0 + COLLATERAL_VALIDITY
    statuses = [level.tcb_status for level in tcb.tcb_levels]
    assert statuses == [TcbStatus.UP_TO_DATE, TcbStatus.OUT_OF_DATE]
    assert tcb.tcb_levels[0].sgx_components == info.tcb_components
    assert tcb.tcb_levels[0].pce_svn == info.pce_svn
    assert tcb.tcb_levels[1].advisory_ids == (SIM_ADVISORY_ID,)
    assert tcb.tcb_levels[1].pce_svn < info.pce_svn
    qe = collateral.qe_identity
    assert (qe.id, qe.version, qe.mrsigner, qe.isv_prod_id) == ("QE", 2, QE_MRSIGNER, QE_ISV_PROD_ID)
    assert qe.tcb_levels[0].isv_svn == QE_ISV_SVN
    assert qe.tcb_levels[0].tcb_status is TcbStatus.UP_TO_DATE
    assert collateral.earliest_next_update == T0 + COLLATERAL_VALIDITY


def test_refresh_rule() -> None:
    keys = IntelKeys.generate()
    collateral = build_collateral(
        keys, issue_intel_certificates(keys, T0), PlatformIdentity.generate(), now=T0
    )
    end = T0 + COLLATERAL_VALIDITY
    assert not needs_refresh(collateral, T0)
    assert not needs_refresh(collateral, end - timedelta(days=1, seconds=1))
    assert needs_refresh(collateral, end - timedelta(days=1))
    assert needs_refresh(collateral, end + timedelta(days=3))
    # A clock before the issue date cannot use this set either.
    assert needs_refresh(collateral, T0 - timedelta(seconds=1))
    with pytest.raises(UsageError):
        needs_refresh(collateral, datetime(2025, 3, 2))  # A naive time is refused.
