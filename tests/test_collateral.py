"""Tests for enklave.attestation.collateral: parsing real DCAP collateral, exact signed bodies, rejections."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enklave.attestation import collateral as collateral_module
from enklave.attestation.collateral import (
    MAX_CHAIN_LENGTH,
    MAX_COLLATERAL_JSON_SIZE,
    QeIdentity,
    QuoteCollateral,
    TcbInfo,
    TcbLevel,
    TcbStatus,
    parse_crl,
    parse_pem_chain,
)
from enklave.errors import InvalidCollateral, UsageError

ASSETS = Path(__file__).parent / "assets"
PHALA = ASSETS / "phala-dcap-qvl" / "sgx_quote_collateral.json"
PHALA_TDX = ASSETS / "phala-dcap-qvl" / "tdx_quote_collateral.json"
INTEL = ASSETS / "intel-qvl-sampledata"
INTEL_BUNDLE = INTEL / "derived" / "dcap_qvl_style_collateral.json"
MOBILECOIN = ASSETS / "mobilecoin-attestation"
MOBILECOIN_BUNDLE = MOBILECOIN / "derived" / "dcap_qvl_collateral.json"
BUNDLES = [PHALA, INTEL_BUNDLE, MOBILECOIN_BUNDLE]


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def load(path: Path) -> dict[str, str]:
    data: dict[str, str] = json.loads(path.read_text())
    return data


def phala_tcb_parts() -> tuple[str, bytes]:
    raw = load(PHALA)
    return raw["tcb_info"], bytes.fromhex(raw["tcb_info_signature"])


def phala_qe_parts() -> tuple[str, bytes]:
    raw = load(PHALA)
    return raw["qe_identity"], bytes.fromhex(raw["qe_identity_signature"])


def signed_document(key: str, body: str, signature: bytes) -> str:
    return f'{{"{key}":{body},"signature":"{signature.hex()}"}}'


# --- the three real vector sets ---------------------------------------------------------------------------


def test_phala_real_collateral_fields() -> None:
    collateral = QuoteCollateral.from_json(PHALA.read_text())
    tcb = collateral.tcb_info
    assert collateral.fmspc == bytes.fromhex("00A067110000")
    assert (tcb.version, tcb.id, tcb.pce_id, tcb.tcb_type, tcb.tcb_evaluation_data_number) == (
        3,
        "SGX",
        b"\x00\x00",
        0,
        17,
    )
    assert tcb.issue_date == utc("2025-06-19T10:56:11")
    assert tcb.next_update == utc("2025-07-19T10:56:11")
    assert len(tcb.tcb_levels) == 11
    first = tcb.tcb_levels[0]
    assert first.sgx_components == (11, 11, 2, 2, 255, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    assert first.pce_svn == 13
    assert first.tcb_date == utc("2024-03-13T00:00:00")
    assert first.tcb_status is TcbStatus.SW_HARDENING_NEEDED
    assert first.advisory_ids == ("INTEL-SA-00615",)
    config_and_sw = [
        level
        for level in tcb.tcb_levels
        if level.tcb_status is TcbStatus.CONFIGURATION_AND_SW_HARDENING_NEEDED
    ]
    assert len(config_and_sw) == 1
    assert config_and_sw[0].advisory_ids == ("INTEL-SA-00289", "INTEL-SA-00615")
    assert config_and_sw[0].sgx_components[6] == 0
    assert tcb.tcb_levels[-1].advisory_ids[0] == "INTEL-SA-00106"
    assert len(tcb.signature) == 64

    qe = collateral.qe_identity
    assert (qe.id, qe.version, qe.tcb_evaluation_data_number, qe.isv_prod_id) == ("QE", 2, 17, 1)
    assert (qe.miscselect, qe.miscselect_mask) == (0, 0xFFFFFFFF)
    assert qe.attributes == bytes.fromhex("11000000000000000000000000000000")
    assert qe.attributes_mask == bytes.fromhex("FBFFFFFFFFFFFFFF0000000000000000")
    assert qe.mrsigner.hex().upper() == "8C4F5775D796503E96137F77C68A829A0056AC8DED70140B081B094490C57BFF"
    assert [level.isv_svn for level in qe.tcb_levels] == [8, 6, 5, 4, 2, 1]
    assert qe.tcb_levels[0].tcb_status is TcbStatus.UP_TO_DATE
    assert qe.tcb_levels[2].advisory_ids == ("INTEL-SA-00477", "INTEL-SA-00615")

    # The README's validity window ends at the QE identity's nextUpdate.
    assert collateral.earliest_next_update == utc("2025-07-19T10:01:18")
    assert collateral.pck_crl_ca == "processor"
    assert collateral.pck_certificate_chain is None
    assert len(collateral.pck_crl_issuer_chain) == 2
    assert "Root CA" in collateral.pck_crl_issuer_chain[-1].subject.rfc4514_string()
    assert len(collateral.tcb_info_issuer_chain) == 2


def test_intel_sample_collateral_is_tcb_info_v2_with_pck_chain() -> None:
    collateral = QuoteCollateral.from_json(INTEL_BUNDLE.read_bytes())
    tcb = collateral.tcb_info
    assert (tcb.version, tcb.id, tcb.fmspc.hex().upper()) == (2, "SGX", "00707F000000")
    assert tcb.tcb_evaluation_data_number == 3
    assert len(tcb.tcb_levels) == 6
    assert tcb.tcb_levels[0].sgx_components == (0, 3, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    assert tcb.tcb_levels[0].pce_svn == 3
    assert tcb.tcb_levels[0].tcb_date == utc("2019-09-01T00:00:00")
    assert tcb.tcb_levels[-1].tcb_status is TcbStatus.OUT_OF_DATE
    assert collateral.qe_identity.miscselect == 0xD182B18C
    assert collateral.pck_certificate_chain is not None
    assert len(collateral.pck_certificate_chain) == 3
    pck_pem = (INTEL / "pckCert.pem").read_bytes() + (INTEL / "pckSignChain.pem").read_bytes()
    assert collateral.pck_certificate_chain == parse_pem_chain(pck_pem)
    # The earliest nextUpdate is computed independently here from the four pieces.
    root_next = x509.load_der_x509_crl((INTEL / "rootCaCrl.der").read_bytes()).next_update_utc
    pck_next = x509.load_der_x509_crl((INTEL / "intermediateCaCrl.der").read_bytes()).next_update_utc
    assert root_next is not None
    assert pck_next is not None
    expected = min(tcb.next_update, collateral.qe_identity.next_update, root_next, pck_next)
    assert collateral.earliest_next_update == expected
    assert collateral.root_ca_crl == x509.load_der_x509_crl((INTEL / "rootCaCrl.der").read_bytes())
    assert collateral.pck_crl == x509.load_der_x509_crl((INTEL / "intermediateCaCrl.der").read_bytes())
    assert collateral.tcb_info_issuer_chain == parse_pem_chain((INTEL / "tcbSignChain.pem").read_bytes())


def test_mobilecoin_collateral_expires_with_its_processor_crl() -> None:
    collateral = QuoteCollateral.from_json(MOBILECOIN_BUNDLE.read_text())
    assert collateral.fmspc.hex().upper() == "00906ED50000"
    assert collateral.tcb_info.version == 3
    assert len(collateral.tcb_info.tcb_levels) == 17
    assert collateral.tcb_info.issue_date == utc("2023-07-12T19:56:44")
    # The README: the processor CA CRL expired on 2023-05-21, before the TCB info was issued.
    assert collateral.earliest_next_update == collateral.pck_crl.next_update_utc
    assert collateral.earliest_next_update.date().isoformat() == "2023-05-21"


def test_intel_pcs_documentation_examples() -> None:
    raw_tcb = (MOBILECOIN / "example_tcb.json").read_bytes()
    tcb = TcbInfo.from_signed_json(raw_tcb)
    assert (tcb.version, tcb.fmspc.hex().upper(), tcb.tcb_evaluation_data_number) == (3, "50806F000000", 12)
    assert tcb.tcb_levels[0].sgx_components[:4] == (1, 1, 2, 2)
    raw_qe = (MOBILECOIN / "example_qe_identity.json").read_bytes()
    qe = QeIdentity.from_signed_json(raw_qe)
    assert (qe.id, qe.tcb_levels[0].isv_svn, qe.tcb_levels[0].tcb_status) == ("QE", 6, TcbStatus.UP_TO_DATE)
    # These documents are pretty-printed: the body is the indented text, exactly as it stands in the file.
    for raw, document, key in ((raw_tcb, tcb, "tcbInfo"), (raw_qe, qe, "enclaveIdentity")):
        start = raw.index(b"{", 1)
        assert raw[start : start + len(document.body)] == document.body
        assert document.body.startswith(b'{\n    "id"')
        assert document.body.endswith(b"\n  }")
        assert json.loads(document.body) == json.loads(raw)[key]


# --- exact bodies and round trips -------------------------------------------------------------------------


def test_body_cut_from_full_intel_documents_equals_derived_bundle() -> None:
    derived = load(INTEL_BUNDLE)
    raw_tcb = (INTEL / "tcbInfo.json").read_bytes()
    raw_qe = (INTEL / "qeIdentity.json").read_bytes()
    tcb = TcbInfo.from_signed_json(raw_tcb)
    qe = QeIdentity.from_signed_json(raw_qe)
    assert tcb.body == derived["tcb_info"].encode()
    assert qe.body == derived["qe_identity"].encode()
    assert tcb.signature.hex() == derived["tcb_info_signature"]
    assert qe.signature.hex() == derived["qe_identity_signature"]
    # The whole document is the body wrapped, byte for byte: nothing was re-serialized.
    assert raw_tcb == b'{"tcbInfo":' + tcb.body + b',"signature":"' + tcb.signature.hex().encode() + b'"}'
    assert tcb == TcbInfo.from_parts(derived["tcb_info"], bytes.fromhex(derived["tcb_info_signature"]))
    assert qe == QeIdentity.from_parts(
        derived["qe_identity"].encode(), bytes.fromhex(derived["qe_identity_signature"])
    )


def test_body_keeps_whitespace_and_key_order_of_the_document() -> None:
    body, signature = phala_tcb_parts()
    spaced = body.replace('"version":3', '"version" :  3')
    document = f' {{ "signature" : "{signature.hex()}" ,\n "tcbInfo" :\t{spaced} }}\n'
    tcb = TcbInfo.from_signed_json(document)
    assert tcb.body == spaced.encode()
    assert tcb.version == 3


@pytest.mark.parametrize(
    "path", BUNDLES, ids=lambda p: p.parent.parent.name if p.parent.name == "derived" else "phala"
)
def test_round_trip_is_faithful(path: Path) -> None:
    original = path.read_text()
    collateral = QuoteCollateral.from_json(original)
    text = collateral.to_json()
    again = QuoteCollateral.from_json(text)
    assert again == collateral
    assert again.to_json() == text
    assert json.loads(text) == json.loads(original)
    assert again.tcb_info.body == collateral.tcb_info.body
    assert again.pck_crl_issuer_chain_pem == collateral.pck_crl_issuer_chain_pem


def test_round_trip_of_phala_file_is_byte_identical() -> None:
    original = PHALA.read_text()
    assert QuoteCollateral.from_json(original).to_json() == original


def test_to_json_is_readable_by_dcap_qvl() -> None:
    import dcap_qvl  # a test dependency: its absence must fail, not skip

    for path in BUNDLES:
        collateral = QuoteCollateral.from_json(path.read_text())
        theirs = dcap_qvl.QuoteCollateralV3.from_json(collateral.to_json())
        assert theirs.tcb_info == collateral.tcb_info.body.decode()
        assert bytes(theirs.pck_crl) == collateral.pck_crl.public_bytes(Encoding.DER)


def test_collateral_built_from_certificate_objects_encodes_pem() -> None:
    parsed = QuoteCollateral.from_json(PHALA.read_text())
    built = QuoteCollateral(
        pck_crl_issuer_chain=parsed.pck_crl_issuer_chain,
        root_ca_crl=parsed.root_ca_crl,
        pck_crl=parsed.pck_crl,
        tcb_info_issuer_chain=parsed.tcb_info_issuer_chain,
        tcb_info=parsed.tcb_info,
        qe_identity_issuer_chain=parsed.qe_identity_issuer_chain,
        qe_identity=parsed.qe_identity,
    )
    assert built == parsed
    assert parse_pem_chain(built.tcb_info_issuer_chain_pem) == parsed.tcb_info_issuer_chain
    assert QuoteCollateral.from_json(built.to_json()) == parsed


def test_pem_text_must_match_the_certificates() -> None:
    parsed = QuoteCollateral.from_json(PHALA.read_text())
    other_chain = (INTEL / "tcbSignChain.pem").read_bytes()
    with pytest.raises(InvalidCollateral, match="does not hold"):
        dataclasses.replace(parsed, tcb_info_issuer_chain_pem=other_chain)


def test_pck_chain_pem_is_empty_without_a_pck_chain() -> None:
    parsed = QuoteCollateral.from_json(PHALA.read_text())
    assert parsed.pck_certificate_chain_pem == b""
    assert "pck_certificate_chain" not in json.loads(parsed.to_json())
    with pytest.raises(UsageError):
        dataclasses.replace(parsed, pck_certificate_chain_pem=parsed.tcb_info_issuer_chain_pem)
    sample = QuoteCollateral.from_json(INTEL_BUNDLE.read_text())
    assert sample.pck_certificate_chain_pem == load(INTEL_BUNDLE)["pck_certificate_chain"].encode()


def test_fields_must_match_the_signed_body() -> None:
    tcb = TcbInfo.from_parts(*phala_tcb_parts())
    with pytest.raises(InvalidCollateral, match="do not match"):
        dataclasses.replace(tcb, fmspc=b"\x00" * 6)
    qe = QeIdentity.from_parts(*phala_qe_parts())
    with pytest.raises(InvalidCollateral, match="do not match"):
        dataclasses.replace(qe, mrsigner=b"\x00" * 32)


def test_v2_level_without_tcb_date_and_advisories() -> None:
    derived = load(INTEL_BUNDLE)
    body = derived["tcb_info"].replace(',"tcbDate":"2019-09-01T00:00:00Z"', "", 1)
    tcb = TcbInfo.from_parts(body, bytes(64))
    assert tcb.tcb_levels[0].tcb_date is None
    assert tcb.tcb_levels[0].advisory_ids == ()
    assert tcb.tcb_levels[1].tcb_date is not None


# --- rejected inputs --------------------------------------------------------------------------------------


def test_tdx_tcb_info_is_rejected_clearly() -> None:
    raw = load(PHALA_TDX)
    signature = bytes.fromhex(raw["tcb_info_signature"])
    with pytest.raises(InvalidCollateral, match="TDX TCB info is not supported"):
        TcbInfo.from_parts(raw["tcb_info"], signature)
    with pytest.raises(InvalidCollateral, match="TDX"):
        QuoteCollateral.from_json(PHALA_TDX.read_text())


def tcb_body_variant(old: str, new: str) -> str:
    body, _ = phala_tcb_parts()
    assert old in body
    return body.replace(old, new, 1)


def qe_body_variant(old: str, new: str) -> str:
    body, _ = phala_qe_parts()
    assert old in body
    return body.replace(old, new, 1)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('"version":3', '"version":4', "unsupported TCB info version 4"),
        ('"version":3', '"version":1', "unsupported TCB info version 1"),
        ('"version":3', '"version":"3"', "not an integer"),
        ('"id":"SGX"', '"id":"XYZ"', "unsupported TCB info id"),
        ('"fmspc":"00A067110000"', '"fmspc":"00A06711000G"', "hexadecimal"),
        ('"fmspc":"00A067110000"', '"fmspc":"00A0671100"', "6 bytes"),
        ('"pceId":"0000"', '"pceId":"00 0"', "hexadecimal"),
        ('"tcbStatus":"SWHardeningNeeded"', '"tcbStatus":"Fine"', "unknown TCB status"),
        ('"tcbType":0', '"tcbType":true', "not an integer"),
        ('"tcbType":0', '"tcbType":0.0', "not an integer"),
        ('"tcbType":0', '"tcbType":-1', "outside"),
        ('"tcbType":0,', "", "no 'tcbType'"),
        ('"fmspc":"00A067110000",', "", "no 'fmspc'"),
        ('"issueDate":"2025-06-19T10:56:11Z"', '"issueDate":"2025-06-19 10:56:11"', "ISO-8601"),
        ('"issueDate":"2025-06-19T10:56:11Z"', '"issueDate":"2025-06-19T10:56:11+00:00"', "ISO-8601"),
        ('"issueDate":"2025-06-19T10:56:11Z"', '"issueDate":"2025-13-19T10:56:11Z"', "valid date"),
        ('[{"svn":11}', '[{"svn":256}', "outside"),
        ('[{"svn":11},', "[", "15 items"),
        ('[{"svn":11}', '[{"svn":11},{"svn":1}', "17 items"),
        ('[{"svn":11}', '[{"sv":11}', "no 'svn'"),
        ('"tcbLevels":[', '"tcbLevels":[], "x":[', "0 items"),
        ('"pcesvn":13', '"pcesvn":13,"pcesvn":14', "duplicate key"),
        ('"pcesvn":13', '"pcesvn":NaN', "non-standard"),
        ('"advisoryIDs":["INTEL-SA-00615"]', '"advisoryIDs":[1]', "advisory"),
    ],
)
def test_malformed_tcb_info_body_is_rejected(old: str, new: str, message: str) -> None:
    with pytest.raises(InvalidCollateral, match=message):
        TcbInfo.from_parts(tcb_body_variant(old, new), bytes(64))


def test_too_many_advisories_and_levels_are_rejected() -> None:
    many = ",".join(f'"INTEL-SA-{n:05d}"' for n in range(65))
    with pytest.raises(InvalidCollateral, match="items"):
        TcbInfo.from_parts(
            tcb_body_variant('"advisoryIDs":["INTEL-SA-00615"]', f'"advisoryIDs":[{many}]'), bytes(64)
        )
    body, _ = phala_tcb_parts()
    start = body.index('"tcbLevels":[') + len('"tcbLevels":[')
    level = body[start : body.index("]}", start) + 2]
    json.loads(level)
    huge = body[:start] + ",".join([level] * 257) + "]}"
    with pytest.raises(InvalidCollateral, match="257 items"):
        TcbInfo.from_parts(huge, bytes(64))


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('"version":2', '"version":3', "unsupported enclave identity version"),
        ('"id":"QE"', '"id":"XE"', "unsupported enclave identity id"),
        ('"miscselect":"00000000"', '"miscselect":"000000"', "4 bytes"),
        ('"mrsigner":"8C4F', '"mrsigner":"XX4F', "hexadecimal"),
        ('"isvprodid":1', '"isvprodid":65536', "outside"),
        ('"tcbStatus":"UpToDate"', '"tcbStatus":"uptodate"', "unknown TCB status"),
        ('"tcbDate":"2024-03-13T00:00:00Z",', "", "no 'tcbDate'"),
    ],
)
def test_malformed_qe_identity_body_is_rejected(old: str, new: str, message: str) -> None:
    with pytest.raises(InvalidCollateral, match=message):
        QeIdentity.from_parts(qe_body_variant(old, new), bytes(64))


def test_qe_identity_ids_accepted_by_the_parser() -> None:
    for enclave_id in ("QE", "QVE", "TD_QE"):
        qe = QeIdentity.from_parts(qe_body_variant('"id":"QE"', f'"id":"{enclave_id}"'), bytes(64))
        assert qe.id == enclave_id


def bad_signed_documents() -> dict[str, str | bytes]:
    body, signature = phala_tcb_parts()
    good = signed_document("tcbInfo", body, signature)
    return {
        "truncated": good[:-1],
        "trailing garbage": good + "x",
        "two documents": good + good,
        "extra key": good[:-1] + ',"extra":1}',
        "missing signature": f'{{"tcbInfo":{body}}}',
        "wrong body key": signed_document("enclaveIdentity", body, signature),
        "duplicate body": f'{{"tcbInfo":{body},"tcbInfo":{body},"signature":"{signature.hex()}"}}',
        "short signature": signed_document("tcbInfo", body, signature[:63]),
        "signature not hex": good.replace(signature.hex(), "zz" * 64),
        "signature with space": good.replace(signature.hex(), signature.hex()[:-2] + " 0"),
        "signature not a string": f'{{"tcbInfo":{body},"signature":5}}',
        "body not an object": f'{{"tcbInfo":[{body}],"signature":"{signature.hex()}"}}',
        "not an object": f"[{good}]",
        "empty": "",
        "not json": "tcbInfo",
        "invalid utf-8": good.encode()[:-2] + b"\xff}",
    }


def test_well_formed_signed_document_is_accepted() -> None:
    body, signature = phala_tcb_parts()
    assert TcbInfo.from_signed_json(signed_document("tcbInfo", body, signature)).body == body.encode()


@pytest.mark.parametrize("name", list(bad_signed_documents()))
def test_malformed_signed_documents_are_rejected(name: str) -> None:
    with pytest.raises(InvalidCollateral):
        TcbInfo.from_signed_json(bad_signed_documents()[name])


def test_body_with_surrounding_whitespace_or_trailing_data_is_rejected() -> None:
    body, signature = phala_tcb_parts()
    for variant in (body + " ", " " + body, body + "{}", body[:-1]):
        with pytest.raises(InvalidCollateral):
            TcbInfo.from_parts(variant, signature)
    with pytest.raises(InvalidCollateral, match="64 bytes"):
        TcbInfo.from_parts(body, signature + b"\x00")


def test_oversized_inputs_are_rejected_before_parsing() -> None:
    oversized = " " * (MAX_COLLATERAL_JSON_SIZE + 1)
    for parse in (TcbInfo.from_signed_json, QeIdentity.from_signed_json, QuoteCollateral.from_json):
        with pytest.raises(InvalidCollateral, match="limit"):
            parse(oversized)
    with pytest.raises(InvalidCollateral, match="limit"):
        TcbInfo.from_parts(oversized, bytes(64))
    deep = "[" * 100_000
    with pytest.raises(InvalidCollateral):
        QuoteCollateral.from_json(deep)


def bad_bundles() -> dict[str, object]:
    raw = load(PHALA)
    missing = dict(raw)
    del missing["pck_crl"]
    return {
        "missing key": missing,
        "unknown key": {**raw, "extra": "x"},
        "not a string": {**raw, "pck_crl": 5},
        "bad crl hex": {**raw, "pck_crl": raw["pck_crl"][:-1]},
        "crl garbage": {**raw, "root_ca_crl": "00" * 20},
        "bad signature hex": {**raw, "tcb_info_signature": "0x" + raw["tcb_info_signature"][2:]},
        "empty chain": {**raw, "tcb_info_issuer_chain": ""},
        "garbage in chain": {**raw, "tcb_info_issuer_chain": "junk\n" + raw["tcb_info_issuer_chain"]},
        "qe body is tcb body": {**raw, "qe_identity": raw["tcb_info"]},
        "array": [raw],
    }


@pytest.mark.parametrize("name", list(bad_bundles()))
def test_malformed_bundles_are_rejected(name: str) -> None:
    with pytest.raises(InvalidCollateral):
        QuoteCollateral.from_json(json.dumps(bad_bundles()[name]))


def test_bundle_with_trailing_garbage_is_rejected() -> None:
    with pytest.raises(InvalidCollateral, match="trailing"):
        QuoteCollateral.from_json(PHALA.read_text() + "}")


def test_unknown_status_is_invalid_collateral() -> None:
    with pytest.raises(InvalidCollateral, match="unknown TCB status"):
        TcbStatus.parse("Compromised")
    assert TcbStatus.parse("OutOfDateConfigurationNeeded") is TcbStatus.OUT_OF_DATE_CONFIGURATION_NEEDED
    assert TcbStatus("Revoked") is TcbStatus.REVOKED
    assert str(TcbStatus.REVOKED) == "Revoked"


def test_tcb_level_checks_its_shape() -> None:
    with pytest.raises(InvalidCollateral):
        TcbLevel(sgx_components=(0,) * 15, pce_svn=0, tcb_date=None, tcb_status=TcbStatus.UP_TO_DATE)


# --- PEM chains and CRLs ----------------------------------------------------------------------------------


def test_parse_pem_chain_tolerates_whitespace_only() -> None:
    pem = (INTEL / "tcbSignChain.pem").read_bytes()
    chain = parse_pem_chain(pem)
    assert len(chain) == 2
    assert parse_pem_chain("\r\n  " + pem.decode().replace("\n", "\r\n") + "\n\n") == chain
    for bad in (b"", b"  \n", pem + b"trailing", b"leading" + pem, pem.replace(b"MII", b"MIJ", 1)):
        with pytest.raises(InvalidCollateral):
            parse_pem_chain(bad)
    single = pem[: pem.index(b"-----END CERTIFICATE-----") + 25] + b"\n"
    with pytest.raises(InvalidCollateral, match=f"more than {MAX_CHAIN_LENGTH}"):
        parse_pem_chain(single * (MAX_CHAIN_LENGTH + 1))
    assert len(parse_pem_chain(single * MAX_CHAIN_LENGTH)) == MAX_CHAIN_LENGTH
    with pytest.raises(InvalidCollateral, match="non-ASCII"):
        parse_pem_chain(pem.decode() + "é")


def test_parse_crl_accepts_der_pem_and_hex() -> None:
    der = (INTEL / "intermediateCaCrl.der").read_bytes()
    expected = x509.load_der_x509_crl(der)
    pem = expected.public_bytes(Encoding.PEM)
    for form in (der, pem, b"\n" + pem + b"\n", der.hex().encode(), der.hex().upper() + "\n", pem.decode()):
        crl = parse_crl(form)
        assert crl == expected
        assert crl.public_bytes(Encoding.DER) == der
    for bad in (b"", der[:-1], der + b"\x00", pem + b"junk", b"abc", der.hex()[:-1].encode(), b"\x30" * 10):
        with pytest.raises(InvalidCollateral):
            parse_crl(bad)
    with pytest.raises(InvalidCollateral, match="larger"):
        parse_crl(b"0" * (collateral_module.MAX_CRL_SIZE + 2))


def test_public_names_are_exported() -> None:
    for name in collateral_module.__all__:
        assert hasattr(collateral_module, name), name


# --- fuzzing: the parsers may only raise InvalidCollateral -----------------------------------------------

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PHALA_TEXT = PHALA.read_text()


@FUZZ
@given(st.text(max_size=300))
def test_fuzz_random_text(text: str) -> None:
    with pytest.raises(InvalidCollateral):
        QuoteCollateral.from_json(text)


@FUZZ
@given(st.integers(min_value=0, max_value=len(PHALA_TEXT) - 1))
def test_fuzz_truncated_collateral(length: int) -> None:
    with pytest.raises(InvalidCollateral):
        QuoteCollateral.from_json(PHALA_TEXT[:length])


# A mutated certificate may carry a non-positive serial number, which cryptography loads with a warning.
@pytest.mark.filterwarnings("ignore:Parsed a serial number which wasn't positive")
@FUZZ
@given(st.integers(min_value=0, max_value=len(PHALA_TEXT) - 1), st.characters(codec="utf-8"))
def test_fuzz_mutated_collateral(position: int, replacement: str) -> None:
    mutated = PHALA_TEXT[:position] + replacement + PHALA_TEXT[position + 1 :]
    # Success is fine (e.g. a changed advisory ID); any error other than InvalidCollateral fails the test.
    with contextlib.suppress(InvalidCollateral):
        QuoteCollateral.from_json(mutated)


@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_signed_documents_and_crls(data: bytes) -> None:
    for parse in (TcbInfo.from_signed_json, QeIdentity.from_signed_json, parse_crl, parse_pem_chain):
        with pytest.raises(InvalidCollateral):
            parse(data)


@FUZZ
@given(st.integers(min_value=0, max_value=len(phala_tcb_parts()[0]) - 1), st.sampled_from('{}[]",:0aZ \\'))
def test_fuzz_mutated_tcb_info_body(position: int, replacement: str) -> None:
    body, signature = phala_tcb_parts()
    with contextlib.suppress(InvalidCollateral):
        TcbInfo.from_parts(body[:position] + replacement + body[position + 1 :], signature)
