"""RA-TLS certificates: create -> verify round trips in every format, key swaps, policy, nonces, foreign
formats built from their documented layout (Gramine legacy, Open Enclave), fuzzed extensions, RA_TLS_* knobs."""

from __future__ import annotations

import contextlib
import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from certificates import self_signed
from enklave.attestation.collateral import TcbStatus
from enklave.attestation.policy import EnclavePolicy
from enklave.channels._ratls_evidence import (
    GRAMINE_LEGACY_OID_INTENDED,
    encode_claims,
    encode_dice_evidence,
    parse_dice_evidence,
)
from enklave.channels.ratls import (
    DICE_EVIDENCE_OID,
    GRAMINE_LEGACY_OID,
    OPEN_ENCLAVE_OID,
    AttestedCertificate,
    RaTlsFormat,
    RaTlsSettings,
    VerifiedPeer,
    create_attested_certificate,
    verify_peer_certificate,
)
from enklave.errors import (
    BadDataError,
    BindingError,
    CertificateChainError,
    EnklaveError,
    ExpiredError,
    InvalidKey,
    InvalidQuote,
    PolicyError,
    UsageError,
)
from enklave.platform.simulated import SimulatedCollateralSource, SimulatedPlatform, simulated_root
from enklave.sgx.oe import wrap_quote_evidence
from enklave.sgx.quote import Quote
from enklave.sgx.report import AttributeFlags, Attributes, ReportBody
from enklave.sgx.views import pck_certificates

MR_ENCLAVE = bytes(range(32))
IDENTITY = ReportBody.build(mr_enclave=MR_ENCLAVE, mr_signer=b"\x5a" * 32, isv_prod_id=7, isv_svn=3)
POLICY = EnclavePolicy(mr_enclave=MR_ENCLAVE, isv_prod_id=7, min_isv_svn=3, allow_simulated=True)


@pytest.fixture
def platform(home: Path) -> SimulatedPlatform:
    return SimulatedPlatform.launch(IDENTITY)


def _verify(cert_der: bytes, *, policy: EnclavePolicy = POLICY, **kwargs: object) -> VerifiedPeer:
    now = kwargs.pop("now", datetime.now(UTC))
    assert isinstance(now, datetime)
    return verify_peer_certificate(
        cert_der,
        collateral_source=SimulatedCollateralSource(),
        policy=policy,
        roots=[simulated_root()],
        now=now,
        **kwargs,  # type: ignore[arg-type]
    )


def _spki(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _self_signed(
    key: ec.EllipticCurvePrivateKey, extensions: list[tuple[x509.ObjectIdentifier, bytes]]
) -> bytes:
    """A certificate built by hand, as another RA-TLS implementation would build it."""
    certificate = self_signed(key, "CN=RATLS,O=GramineDevelopers,C=US", extensions=extensions)
    return certificate.public_bytes(serialization.Encoding.DER)


def _extension(cert: AttestedCertificate, oid: x509.ObjectIdentifier) -> bytes:
    value = cert.certificate.extensions.get_extension_for_oid(oid).value
    assert isinstance(value, x509.UnrecognizedExtension)
    return value.value


# -- round trips ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("curve", ["P-256", "P-384"])
@pytest.mark.parametrize("legacy", [False, True])
def test_round_trip(platform: SimulatedPlatform, curve: str, legacy: bool) -> None:
    made = create_attested_certificate(platform, curve=curve, legacy_gramine=legacy)  # type: ignore[arg-type]
    peer = _verify(made.certificate_der)
    assert peer.format is RaTlsFormat.DICE
    assert peer.mr_enclave == MR_ENCLAVE
    assert peer.public_key.public_numbers() == made.private_key.public_key().public_numbers()
    assert peer.quote.simulated
    assert {"P-256": 256, "P-384": 384}[curve] == peer.public_key.curve.key_size
    oids = {ext.oid for ext in made.certificate.extensions}
    assert (GRAMINE_LEGACY_OID in oids) is legacy
    assert all(not ext.critical for ext in made.certificate.extensions if ext.oid == DICE_EVIDENCE_OID)
    # The report data is SHA-256 of the serialised claims, as Gramine 1.8 computes it.
    evidence = parse_dice_evidence(_extension(made, DICE_EVIDENCE_OID))
    assert evidence.claims == encode_claims(_spki(made.private_key), None)
    assert bytes(peer.quote.report_data)[:32] == hashlib.sha256(evidence.claims).digest()
    assert "private_key" not in repr(made)


def test_legacy_extension_of_a_created_certificate_verifies_alone(platform: SimulatedPlatform) -> None:
    made = create_attested_certificate(platform, curve="P-384", legacy_gramine=True)
    legacy = _extension(made, GRAMINE_LEGACY_OID)
    der = _self_signed(made.private_key, [(GRAMINE_LEGACY_OID, legacy)])
    assert _verify(der).format is RaTlsFormat.GRAMINE_LEGACY


@pytest.mark.parametrize("oid", [GRAMINE_LEGACY_OID, GRAMINE_LEGACY_OID_INTENDED])
def test_gramine_legacy_certificate_built_from_the_layout(
    platform: SimulatedPlatform, oid: x509.ObjectIdentifier
) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    quote = platform.get_quote(hashlib.sha256(_spki(key)).digest())
    peer = _verify(_self_signed(key, [(oid, quote)]))
    assert peer.format is RaTlsFormat.GRAMINE_LEGACY
    assert peer.nonce is None


@pytest.mark.parametrize(
    ("curve", "hash_id", "hash_name"),
    [(ec.SECP384R1(), 1, "sha256"), (ec.SECP384R1(), 7, "sha384"), (ec.SECP256R1(), 8, "sha512")],
)
def test_gramine_dice_certificate_built_from_the_layout(
    platform: SimulatedPlatform, curve: ec.EllipticCurve, hash_id: int, hash_name: str
) -> None:
    """Gramine 1.8's format written with plain cbor2, not enklave's encoder: tag 60000 over [quote, claims]."""
    key = ec.generate_private_key(curve)
    pubkey_hash = cbor2.dumps([hash_id, hashlib.new(hash_name, _spki(key)).digest()])
    claims = cbor2.dumps({"pubkey-hash": pubkey_hash, "nonce": b"gramine nonce"})
    quote = platform.get_quote(hashlib.sha256(claims).digest())
    extension = cbor2.dumps(cbor2.CBORTag(60000, [quote, claims]))
    peer = _verify(_self_signed(key, [(DICE_EVIDENCE_OID, extension)]), nonce=b"gramine nonce")
    assert peer.format is RaTlsFormat.DICE
    assert peer.nonce == b"gramine nonce"
    assert peer.mr_enclave == MR_ENCLAVE


def test_gramine_legacy_quote_over_another_key_is_rejected(platform: SimulatedPlatform) -> None:
    key, other = ec.generate_private_key(ec.SECP384R1()), ec.generate_private_key(ec.SECP384R1())
    quote = platform.get_quote(hashlib.sha256(_spki(other)).digest())
    with pytest.raises(BindingError):
        _verify(_self_signed(key, [(GRAMINE_LEGACY_OID, quote)]))


def _oe_certificate(platform: SimulatedPlatform, key: ec.EllipticCurvePrivateKey, pem_suffix: bytes) -> bytes:
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    custom = hashlib.sha256(pem + pem_suffix).digest()
    quote = platform.get_quote(hashlib.sha256(custom).digest())
    return _self_signed(key, [(OPEN_ENCLAVE_OID, wrap_quote_evidence(quote, custom))])


@pytest.mark.parametrize("suffix", [b"\0", b""])
def test_open_enclave_certificate_built_from_the_layout(platform: SimulatedPlatform, suffix: bytes) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    peer = _verify(_oe_certificate(platform, key, suffix))
    assert peer.format is RaTlsFormat.OPEN_ENCLAVE


def test_open_enclave_evidence_for_another_key_is_rejected(platform: SimulatedPlatform) -> None:
    key, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    oe = x509.load_der_x509_certificate(_oe_certificate(platform, other, b"\0"))
    value = oe.extensions.get_extension_for_oid(OPEN_ENCLAVE_OID).value
    assert isinstance(value, x509.UnrecognizedExtension)
    with pytest.raises(BindingError):
        _verify(_self_signed(key, [(OPEN_ENCLAVE_OID, value.value)]))


# -- attacks --------------------------------------------------------------------------------------------------


def test_swapped_key_with_the_same_extension_is_rejected(platform: SimulatedPlatform) -> None:
    made = create_attested_certificate(platform)
    attacker = ec.generate_private_key(ec.SECP256R1())
    der = _self_signed(attacker, [(DICE_EVIDENCE_OID, _extension(made, DICE_EVIDENCE_OID))])
    with pytest.raises(BindingError):
        _verify(der)


def test_claims_not_covered_by_the_quote_are_rejected(platform: SimulatedPlatform) -> None:
    made = create_attested_certificate(platform)
    evidence = parse_dice_evidence(_extension(made, DICE_EVIDENCE_OID))
    forged = encode_dice_evidence(evidence.quote, encode_claims(_spki(made.private_key), b"injected"))
    with pytest.raises(BindingError):
        _verify(_self_signed(made.private_key, [(DICE_EVIDENCE_OID, forged)]))


def test_other_mrenclave_lower_svn_and_debug_fail_the_policy(platform: SimulatedPlatform, home: Path) -> None:
    der = create_attested_certificate(platform).certificate_der
    with pytest.raises(PolicyError) as info:
        _verify(der, policy=EnclavePolicy(mr_enclave=b"\x77" * 32, allow_simulated=True))
    assert info.value.field == "mr_enclave"
    with pytest.raises(PolicyError) as info:
        _verify(der, policy=EnclavePolicy(mr_enclave=MR_ENCLAVE, min_isv_svn=4, allow_simulated=True))
    assert info.value.field == "isv_svn"
    with pytest.raises(PolicyError):
        _verify(der, policy=EnclavePolicy(mr_enclave=MR_ENCLAVE))  # simulated evidence is refused by default
    debug = ReportBody.build(
        mr_enclave=MR_ENCLAVE,
        mr_signer=b"\x5a" * 32,
        isv_prod_id=7,
        isv_svn=3,
        attributes=Attributes(AttributeFlags.INIT | AttributeFlags.MODE64BIT | AttributeFlags.DEBUG, 0x3),
    )
    debug_der = create_attested_certificate(SimulatedPlatform.launch(debug)).certificate_der
    with pytest.raises(PolicyError) as info:
        _verify(debug_der)
    assert info.value.field == "debug"


def test_nonce(platform: SimulatedPlatform) -> None:
    with_nonce = create_attested_certificate(platform, nonce=b"fresh-nonce").certificate_der
    assert _verify(with_nonce, nonce=b"fresh-nonce").nonce == b"fresh-nonce"
    with pytest.raises(BindingError):
        _verify(with_nonce, nonce=b"stale-nonce")
    without = create_attested_certificate(platform).certificate_der
    with pytest.raises(BindingError):
        _verify(without, nonce=b"fresh-nonce")


def test_bad_self_signature_and_validity(platform: SimulatedPlatform) -> None:
    made = create_attested_certificate(platform, validity=timedelta(hours=1))
    der = bytearray(made.certificate_der)
    der[-1] ^= 0x01  # The last byte belongs to the signature's s value.
    with pytest.raises(CertificateChainError):
        _verify(bytes(der))
    with pytest.raises(ExpiredError):
        _verify(made.certificate_der, now=datetime.now(UTC) + timedelta(hours=2))
    with pytest.raises(ExpiredError):
        _verify(made.certificate_der, now=datetime.now(UTC) - timedelta(hours=1))


def test_certificates_without_evidence_or_with_other_keys(platform: SimulatedPlatform) -> None:
    with pytest.raises(BadDataError):
        _verify(b"\x30\x03\x02\x01\x00")
    # A version X.509 does not define: cryptography raises InvalidVersion, which is not a ValueError.
    made = create_attested_certificate(platform)
    at = made.certificate_der.index(b"\xa0\x03\x02\x01\x02")
    with pytest.raises(BadDataError, match=r"not a DER X\.509 certificate"):
        _verify(made.certificate_der[: at + 4] + b"\x05" + made.certificate_der[at + 5 :])
    # A key on a curve cryptography does not know (the P-256 OID's last arc changed): UnsupportedAlgorithm.
    p256 = bytes.fromhex("06082a8648ce3d030107")
    assert made.certificate_der.count(p256) == 1
    with pytest.raises(InvalidKey, match="does not parse"):
        _verify(made.certificate_der.replace(p256, p256[:-1] + b"\x7f"))
    plain = _self_signed(ec.generate_private_key(ec.SECP256R1()), [])
    with pytest.raises(InvalidQuote):
        _verify(plain)
    p521 = ec.generate_private_key(ec.SECP521R1())
    with pytest.raises(InvalidKey):
        _verify(_self_signed(p521, [(DICE_EVIDENCE_OID, _extension(made, DICE_EVIDENCE_OID))]))


def test_usage_errors(platform: SimulatedPlatform) -> None:
    with pytest.raises(UsageError):
        create_attested_certificate(platform, curve="P-521")  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        create_attested_certificate(platform, subject="not a name")
    with pytest.raises(UsageError):
        _verify(b"", now=datetime.now())


# -- fuzzed extensions ----------------------------------------------------------------------------------------

_FUZZ_KEY = ec.generate_private_key(ec.SECP256R1())
_OIDS = [DICE_EVIDENCE_OID, GRAMINE_LEGACY_OID, OPEN_ENCLAVE_OID]


def test_dice_evidence_with_shared_references_is_refused_before_any_expansion() -> None:
    shared = [b"q" * 64]
    # Tags 28/29 let every reference re-encode the shared value in full: a few kilobytes nested this way grow
    # into gigabytes when encoded again. The evidence's one tag is read by hand; nothing inside may be tagged.
    inner = cbor2.dumps([shared, shared], value_sharing=True)
    evidence = cbor2.dumps(cbor2.CBORTag(60000, None))[:-1] + inner
    with pytest.raises(InvalidQuote, match="not valid CBOR"):
        parse_dice_evidence(evidence)
    genuine = encode_dice_evidence(b"quote", encode_claims(b"spki", None))
    assert parse_dice_evidence(genuine).quote == b"quote"


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=600))
def test_dice_parser_raises_only_invalid_quote(data: bytes) -> None:
    with contextlib.suppress(InvalidQuote):
        parse_dice_evidence(data)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(oid=st.sampled_from(_OIDS), data=st.binary(min_size=0, max_size=2000))
def test_malformed_extensions_raise_only_enklave_errors(
    home: Path, oid: x509.ObjectIdentifier, data: bytes
) -> None:
    SimulatedPlatform.launch(IDENTITY)
    with pytest.raises(EnklaveError):
        _verify(_self_signed(_FUZZ_KEY, [(oid, data)]))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(position=st.integers(min_value=0), flip=st.integers(min_value=1, max_value=255))
def test_mutated_dice_evidence_is_rejected(platform: SimulatedPlatform, position: int, flip: int) -> None:
    made = create_attested_certificate(platform)
    original = _extension(made, DICE_EVIDENCE_OID)
    value = bytearray(original)
    value[position % len(value)] ^= flip
    try:
        _verify(_self_signed(made.private_key, [(DICE_EVIDENCE_OID, bytes(value))]))
    except EnklaveError:
        return
    # Only a change that decoding ignores may pass: PEM readers (OpenSSL's, hence Intel's QVL, and ours) skip
    # whitespace such as a newline turned vertical tab, so the PCK certificates stay the same.
    chains = [
        [cert.public_bytes(serialization.Encoding.DER) for cert in pck_certificates(Quote.from_bytes(quote))]
        for quote in (parse_dice_evidence(original).quote, parse_dice_evidence(bytes(value)).quote)
    ]
    assert chains[0] == chains[1]
    pem = Quote.from_bytes(parse_dice_evidence(original).quote).pck_chain_pem
    assert pem is not None
    start = original.index(pem)
    assert start <= position % len(value) < start + len(pem), "only the PEM text may change without effect"


@pytest.mark.parametrize("damage", [b"-----BEGIN CERTIFICATD-----", b"-----BEGIM CERTIFICATE-----"])
def test_a_damaged_pem_block_in_the_quotes_chain_is_refused(
    platform: SimulatedPlatform, damage: bytes
) -> None:
    # The certification data is not signed; a PEM reader that skipped the damaged block would verify the quote
    # against the trusted root anyway. Intel's QVL refuses it, and so must enklave.
    key = ec.generate_private_key(ec.SECP256R1())
    claims = encode_claims(_spki(key), None)
    quote = platform.get_quote(hashlib.sha256(claims).digest())
    last = quote.rindex(b"-----BEGIN CERTIFICATE-----")
    damaged = quote[:last] + damage + quote[last + len(damage) :]
    with pytest.raises(InvalidQuote, match="PEM"):
        _verify(_self_signed(key, [(DICE_EVIDENCE_OID, encode_dice_evidence(damaged, claims))]))


def test_indefinite_length_cbor_is_refused() -> None:
    claims = encode_claims(b"spki", None)
    strict = encode_dice_evidence(b"quote", claims)
    assert parse_dice_evidence(strict).claims == claims
    indefinite = bytes.fromhex("d9ea60") + b"\x9f" + cbor2.dumps(b"quote") + cbor2.dumps(claims) + b"\xff"
    with pytest.raises(InvalidQuote):
        parse_dice_evidence(indefinite)


# -- RA_TLS_* settings ----------------------------------------------------------------------------------------

_ANY = dict.fromkeys(("RA_TLS_MRENCLAVE", "RA_TLS_MRSIGNER", "RA_TLS_ISV_PROD_ID", "RA_TLS_ISV_SVN"), "any")
_UP = TcbStatus.UP_TO_DATE


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({}, {"statuses": {_UP}, "allow_debug": False}),
        ({"RA_TLS_MRENCLAVE": "00" * 31 + "ff"}, {"mr_enclave": (bytes(31) + b"\xff",)}),
        ({"RA_TLS_MRSIGNER": "AB" * 32}, {"mr_signer": (b"\xab" * 32,)}),
        ({"RA_TLS_ISV_PROD_ID": "7", "RA_TLS_ISV_SVN": "3"}, {"isv_prod_id": 7, "min_isv_svn": 3}),
        ({"RA_TLS_ALLOW_DEBUG_ENCLAVE_INSECURE": "1"}, {"allow_debug": True}),
        ({"RA_TLS_ALLOW_DEBUG_ENCLAVE_INSECURE": "true"}, {"allow_debug": False}),
        ({"RA_TLS_ALLOW_SW_HARDENING_NEEDED": "1"}, {"statuses": {_UP, TcbStatus.SW_HARDENING_NEEDED}}),
        ({"RA_TLS_ALLOW_HW_CONFIG_NEEDED": "1"}, {"statuses": {_UP, TcbStatus.CONFIGURATION_NEEDED}}),
        ({"RA_TLS_ALLOW_OUTDATED_TCB_INSECURE": "1"}, {"statuses": {_UP, TcbStatus.OUT_OF_DATE}}),
        (
            {"RA_TLS_ALLOW_HW_CONFIG_NEEDED": "1", "RA_TLS_ALLOW_SW_HARDENING_NEEDED": "1"},
            {
                "statuses": {
                    _UP,
                    TcbStatus.CONFIGURATION_NEEDED,
                    TcbStatus.SW_HARDENING_NEEDED,
                    TcbStatus.CONFIGURATION_AND_SW_HARDENING_NEEDED,
                }
            },
        ),
        (
            {"RA_TLS_ALLOW_HW_CONFIG_NEEDED": "1", "RA_TLS_ALLOW_OUTDATED_TCB_INSECURE": "1"},
            {
                "statuses": {
                    _UP,
                    TcbStatus.CONFIGURATION_NEEDED,
                    TcbStatus.OUT_OF_DATE,
                    TcbStatus.OUT_OF_DATE_CONFIGURATION_NEEDED,
                }
            },
        ),
    ],
)
def test_settings_mapping(extra: dict[str, str], expected: dict[str, object]) -> None:
    policy = RaTlsSettings.from_environ({**_ANY, **extra}).to_policy(allow_simulated=True)
    statuses = expected.pop("statuses", None)
    if statuses is not None:
        assert policy.accepted_tcb_statuses == statuses
    for name, value in expected.items():
        assert getattr(policy, name) == value
    assert policy.allow_simulated


@pytest.mark.parametrize(
    "environ",
    [
        {k: v for k, v in _ANY.items() if k != "RA_TLS_ISV_SVN"},
        {**_ANY, "RA_TLS_MRENCLAVE": "abc"},
        {**_ANY, "RA_TLS_ISV_PROD_ID": "-1"},
        {**_ANY, "RA_TLS_ISV_SVN": "65536"},
    ],
)
def test_settings_refuse_bad_or_missing_values(environ: dict[str, str]) -> None:
    with pytest.raises(UsageError):
        RaTlsSettings.from_environ(environ)


def test_settings_may_treat_missing_measurements_as_any() -> None:
    settings_ = RaTlsSettings.from_environ({}, require_measurements=False)
    assert settings_ == RaTlsSettings()


def test_settings_policy_verifies_a_peer(platform: SimulatedPlatform) -> None:
    der = create_attested_certificate(platform).certificate_der
    good = RaTlsSettings.from_environ({**_ANY, "RA_TLS_MRENCLAVE": MR_ENCLAVE.hex(), "RA_TLS_ISV_SVN": "3"})
    assert _verify(der, policy=good.to_policy(allow_simulated=True)).format is RaTlsFormat.DICE
    bad = RaTlsSettings.from_environ({**_ANY, "RA_TLS_ISV_SVN": "4"})
    with pytest.raises(PolicyError):
        _verify(der, policy=bad.to_policy(allow_simulated=True))
