"""Signatures checked on the signed bytes sliced from the original DER agree with the library's own checks: the
same signed bytes, the same verdicts, the same refusals (error type and message), inner and outer algorithms."""

from __future__ import annotations

import base64
import dataclasses
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID

from conftest import REAL_INSIDE
from enklave.attestation import _pki
from enklave.attestation._signed_der import SignedObject, split_signed
from enklave.attestation.collateral import QuoteCollateral, parse_crl, parse_pem_chain
from enklave.attestation.evidence import collateral_request
from enklave.attestation.trust import TrustedRoot
from enklave.attestation.verify import verify_quote
from enklave.errors import CertificateChainError, InvalidCollateral, InvalidQuote, SignatureError
from enklave.sgx.quote import Quote
from enklave.sgx.views import pck_certificates_from_pem

# ecdsa-with-SHA256 and ecdsa-with-SHA384 AlgorithmIdentifiers (RFC 5758 §3.2): they differ in the last byte.
SHA256_ALG = bytes.fromhex("300a06082a8648ce3d040302")
SHA384_ALG = bytes.fromhex("300a06082a8648ce3d040303")


def _outer_algorithm_swapped(der: bytes) -> bytes:
    """The DER with its outer signatureAlgorithm (the last AlgorithmIdentifier) changed to ECDSA-SHA384."""
    at = der.rindex(SHA256_ALG)
    return der[:at] + SHA384_ALG + der[at + len(SHA384_ALG) :]


# -- signed DER ------------------------------------------------------------------------------------------


def test_split_signed_gives_the_library_signed_bytes(real_collateral: QuoteCollateral) -> None:
    chains = real_collateral.pck_crl_issuer_chain + real_collateral.tcb_info_issuer_chain
    for cert in chains:
        assert split_signed(cert.public_bytes(Encoding.DER), True) == (
            cert.tbs_certificate_bytes, SHA256_ALG, cert.signature, cert.issuer.public_bytes(),
            cert.subject.public_bytes(),
        )  # fmt: skip
    for crl in (real_collateral.root_ca_crl, real_collateral.pck_crl):
        assert split_signed(crl.public_bytes(Encoding.DER), False) == (
            crl.tbs_certlist_bytes, SHA256_ALG, crl.signature, crl.issuer.public_bytes(), b"",
        )  # fmt: skip


def test_signed_object_splits_once_and_fails_every_time(real_collateral: QuoteCollateral) -> None:
    der = real_collateral.pck_crl_issuer_chain[0].public_bytes(Encoding.DER)
    signed = SignedObject(der, True)
    assert signed.parts() is signed.parts()
    assert signed == SignedObject(der, True)  # equality is that of the DER, split or not
    broken = SignedObject(_outer_algorithm_swapped(der), True)
    for _ in range(2):
        with pytest.raises(ValueError, match="inner and outer signature algorithms differ"):
            broken.parts()


def test_collateral_keeps_the_der_of_its_objects(real_collateral: QuoteCollateral) -> None:
    der = real_collateral.signed_der
    assert [signed.der for signed in der.pck_crl_issuer_chain] == [
        cert.public_bytes(Encoding.DER) for cert in real_collateral.pck_crl_issuer_chain
    ]
    assert der.tcb_info_issuer_chain[0].der == real_collateral.tcb_info_issuer_chain[0].public_bytes(
        Encoding.DER
    )
    assert der.pck_crl.der == real_collateral.pck_crl.public_bytes(Encoding.DER)
    assert der.pck_crl.certificate is False and der.pck_crl_issuer_chain[0].certificate is True
    # Built from objects without PEM text, the DER is encoded from them.
    bare = dataclasses.replace(real_collateral, pck_crl_issuer_chain_pem=b"", tcb_info_issuer_chain_pem=b"")
    assert bare.signed_der == der


def test_split_signed_refuses_other_layouts(real_collateral: QuoteCollateral) -> None:
    der = real_collateral.pck_crl_issuer_chain[0].public_bytes(Encoding.DER)
    with pytest.raises(ValueError, match="inner and outer signature algorithms differ"):
        split_signed(_outer_algorithm_swapped(der), True)
    with pytest.raises(ValueError, match="trail"):
        split_signed(der + b"\x00", True)
    with pytest.raises(ValueError, match="truncated"):
        split_signed(der[:-1], True)
    # The signatureValue BIT STRING follows the outer algorithm: identifier, one length octet, unused bits.
    bit_string = der.rindex(SHA256_ALG) + len(SHA256_ALG)
    assert der[bit_string] == 0x03 and der[bit_string + 1] < 0x80 and der[bit_string + 2] == 0
    unused = bytearray(der)
    unused[bit_string + 2] = 1
    with pytest.raises(ValueError, match="unused bits"):
        split_signed(bytes(unused), True)


@pytest.mark.parametrize("with_der", [True, False])
def test_certificate_with_mismatched_algorithms_is_refused(
    real_collateral: QuoteCollateral, with_der: bool
) -> None:
    ca, root = real_collateral.pck_crl_issuer_chain
    der = _outer_algorithm_swapped(ca.public_bytes(Encoding.DER))
    cert = x509.load_der_x509_certificate(der)
    with pytest.raises(CertificateChainError, match="inner and outer signature algorithms differ"):
        _pki.check_issued_by("PCK CA", cert, root, SignedObject(der, True) if with_der else None)
    # cryptography's own issuance check refuses it too: the check keeps parity with it.
    with pytest.raises(ValueError):
        cert.verify_directly_issued_by(root)
    # The genuine certificate passes both ways.
    genuine = SignedObject(ca.public_bytes(Encoding.DER), True) if with_der else None
    _pki.check_issued_by("PCK CA", ca, root, genuine)


def test_certificate_with_a_bad_signature_fails_as_before(real_collateral: QuoteCollateral) -> None:
    ca, root = real_collateral.pck_crl_issuer_chain
    der = bytearray(ca.public_bytes(Encoding.DER))
    der[-5] ^= 0x01  # inside s of the ECDSA signature
    cert = x509.load_der_x509_certificate(bytes(der))
    with pytest.raises(CertificateChainError) as fast:
        _pki.check_issued_by("PCK CA", cert, root, SignedObject(bytes(der), True))
    with pytest.raises(CertificateChainError) as general:
        _pki.check_issued_by("PCK CA", cert, root)
    assert str(fast.value) == str(general.value)
    assert "bad signature" in str(fast.value)


def _certificate(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey, public: ec.EllipticCurvePublicKey
) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(REAL_INSIDE - timedelta(days=1))
        .not_valid_after(REAL_INSIDE + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )


def _cn(value: str, kind: _ASN1Type = _ASN1Type.UTF8String) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, value, kind)])


@pytest.mark.parametrize("with_der", [True, False])
def test_issuer_names_compare_as_names_when_their_encodings_differ(with_der: bool) -> None:
    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _certificate(_cn("Test CA"), _cn("Test CA"), ca_key, ca_key.public_key())
    # The leaf names its issuer with a PrintableString where the CA's subject has a UTF8String: another
    # encoding of the same name (RFC 5280 §7.1), so the DER comparison misses and the name comparison decides.
    leaf = _certificate(_cn("Leaf"), _cn("Test CA", _ASN1Type.PrintableString), ca_key, leaf_key.public_key())
    assert leaf.issuer.public_bytes() != ca.subject.public_bytes() and leaf.issuer == ca.subject

    def signed(cert: x509.Certificate) -> SignedObject | None:
        return SignedObject(cert.public_bytes(Encoding.DER), True) if with_der else None

    _pki.check_issued_by("leaf", leaf, ca, signed(leaf), signed(ca))
    # A name that differs as a name is refused, whatever its signature.
    stranger = _certificate(_cn("Leaf"), _cn("Other CA"), ca_key, leaf_key.public_key())
    with pytest.raises(CertificateChainError, match="names another issuer"):
        _pki.check_issued_by("leaf", stranger, ca, signed(stranger), signed(ca))
    # An issuer whose DER cannot be split has its name compared as a name.
    unreadable = SignedObject(b"\x30\x00", True)
    _pki.check_issued_by("leaf", leaf, ca, signed(leaf), unreadable)


def _tlv(tag: int, content: bytes) -> bytes:
    """A DER element with a minimal length (X.690 §10.1)."""
    size = len(content)
    if size < 0x80:
        return bytes([tag, size]) + content
    octets = size.to_bytes((size.bit_length() + 7) // 8)
    return bytes([tag, 0x80 | len(octets)]) + octets + content


def _resigned(der: bytes, old: bytes, new: bytes, key: ec.EllipticCurvePrivateKey) -> bytes:
    """The certificate with ``old`` replaced by ``new`` (same length) in its TBS, signed again by ``key``."""
    parts = split_signed(der, True)
    tbs = parts.tbs.replace(old, new)
    signature = key.sign(tbs, ec.ECDSA(hashes.SHA256()))
    return _tlv(0x30, tbs + parts.algorithm + _tlv(0x03, b"\x00" + signature))


def test_an_undecodable_issuer_name_is_refused_even_when_the_bytes_match() -> None:
    root_key, ca_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    root = _certificate(_cn("Root"), _cn("Root"), root_key, root_key.public_key())
    ca = _certificate(_cn("ZZZZ"), _cn("Root"), root_key, ca_key.public_key())
    leaf = _certificate(_cn("Leaf"), _cn("ZZZZ"), ca_key, leaf_key.public_key())
    # The CA's subject and the leaf's issuer become the same UTF8String that is not UTF-8, each properly signed.
    good, bad = b"\x0c\x04ZZZZ", b"\x0c\x04\xff\xfe\xfd\xfc"
    ca_der = _resigned(ca.public_bytes(Encoding.DER), good, bad, root_key)
    leaf_der = _resigned(leaf.public_bytes(Encoding.DER), good, bad, ca_key)
    ca_cert, leaf_cert = x509.load_der_x509_certificate(ca_der), x509.load_der_x509_certificate(leaf_der)
    _pki.check_issued_by("CA", ca_cert, root)  # the CA's issuer is a good name
    with pytest.raises(CertificateChainError, match="is not issued by"):
        _pki.check_issued_by(
            "leaf", leaf_cert, ca_cert, SignedObject(leaf_der, True), SignedObject(ca_der, True)
        )


def _crl_verdicts(crl_der: bytes, issuer: x509.Certificate) -> tuple[str, str, bool]:
    crl = x509.load_der_x509_crl(crl_der)
    messages = []
    for signed in (SignedObject(crl_der, False), None):
        try:
            _pki.check_crl("PCK CRL", crl, issuer, REAL_INSIDE, _pki.Window(REAL_INSIDE, REAL_INSIDE), signed)
            messages.append("ok")
        except SignatureError as exc:
            messages.append(str(exc))
    return messages[0], messages[1], crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]


def test_crl_signature_fast_path_answers_as_is_signature_valid(real_collateral: QuoteCollateral) -> None:
    ca, root = real_collateral.pck_crl_issuer_chain
    der = real_collateral.pck_crl.public_bytes(Encoding.DER)
    assert _crl_verdicts(der, ca) == ("ok", "ok", True)
    # The wrong issuer key, a tampered TBS, and inner/outer algorithms that differ: refused as before.
    wrong = _crl_verdicts(der, root)
    assert wrong[0] == wrong[1] and "does not verify" in wrong[0] and not wrong[2]
    tampered = bytearray(der)
    tampered[der.index(b"\x17\x0d") + 5] ^= 0x01  # a digit of thisUpdate
    fast, general, valid = _crl_verdicts(bytes(tampered), ca)
    assert fast == general and "does not verify" in fast and not valid
    # Inner and outer algorithms that differ: the reader refuses them, and so does cryptography's CRL loader,
    # so no collateral can hold such a CRL.
    swapped = _outer_algorithm_swapped(der)
    with pytest.raises(ValueError, match="inner and outer signature algorithms differ"):
        split_signed(swapped, False)
    with pytest.raises(InvalidCollateral, match="CRL is malformed"):
        parse_crl(swapped)


# -- PEM chains ------------------------------------------------------------------------------------------


def test_pck_chain_from_the_quote_comes_with_its_der(
    real_quote: bytes, real_collateral: QuoteCollateral
) -> None:
    pem = Quote.from_bytes(real_quote).pck_chain_pem
    assert pem is not None
    tail = _pki.KnownChain(
        real_collateral.pck_crl_issuer_chain_pem,
        real_collateral.pck_crl_issuer_chain,
        real_collateral.signed_der.pck_crl_issuer_chain,
    )
    chain, signed = _pki.load_evidence_chain(pem, "PCK chain", 4, tail)
    # The leaf comes with the DER decoded from the quote's text; the tail's certificates are the collateral's
    # own objects, with their DER.
    assert [item.der for item in signed] == [cert.public_bytes(Encoding.DER) for cert in chain]
    assert chain[1:] == list(real_collateral.pck_crl_issuer_chain)
    assert signed[1:] == list(real_collateral.signed_der.pck_crl_issuer_chain)
    # Without a known tail, the library's reader reads every certificate, and the DER is encoded from each.
    general, general_signed = _pki.load_evidence_chain(pem, "PCK chain", 4)
    assert general == chain
    assert general_signed == signed


def _tail(collateral: QuoteCollateral) -> _pki.KnownChain:
    return _pki.KnownChain(
        collateral.pck_crl_issuer_chain_pem,
        collateral.pck_crl_issuer_chain,
        collateral.signed_der.pck_crl_issuer_chain,
    )


def _leaf_block(real_quote: bytes, collateral: QuoteCollateral) -> tuple[bytes, bytes]:
    pem = Quote.from_bytes(real_quote).pck_chain_pem
    assert pem is not None
    tail = collateral.pck_crl_issuer_chain_pem
    assert pem.endswith(tail)
    return pem[: len(pem) - len(tail)], tail


def test_only_a_canonical_leaf_block_is_decoded_before_the_tail(
    real_quote: bytes, real_collateral: QuoteCollateral
) -> None:
    head, tail = _leaf_block(real_quote, real_collateral)
    known = _tail(real_collateral)
    loaded = _pki._load_with_known_tail(head + tail, known)
    assert loaded is not None
    # The block's last base64 line ends in "=" padding; the character before it carries bits that the decoded
    # bytes do not use. Setting one of them gives a non-canonical text of the same bytes: not decoded here.
    lines = head.split(b"\n")
    last = lines[-3]
    assert last.endswith(b"=")
    at = len(last.rstrip(b"=")) - 1
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    lines[-3] = last[:at] + bytes([alphabet[alphabet.index(last[at]) | 1]]) + last[at + 1 :]
    loose = b"\n".join(lines)
    assert loose != head
    assert _pki._load_with_known_tail(loose + tail, known) is None
    # Other layouts of the same block are left to the library's reader too.
    for other in (head.replace(b"\n", b"\r\n"), head.replace(b"\n", b"\n\n", 2), b" " + head):
        assert _pki._load_with_known_tail(other + tail, known) is None


def _leaf_der(head: bytes) -> bytes:
    return x509.load_pem_x509_certificate(head).public_bytes(Encoding.DER)


def _with_version(der: bytes, version: int) -> bytes:
    """The certificate with its [0] EXPLICIT version INTEGER set to ``version`` (X.509 knows 0 to 2)."""
    at = der.index(b"\xa0\x03\x02\x01\x02")
    return der[: at + 4] + bytes([version]) + der[at + 5 :]


def _pck_ca_name(der: bytes) -> bytes:
    """The common name of the PCK CA in ``der`` (its issuer or subject): a UTF8String of the same length as
    its replacement in the tests below."""
    return b"Intel SGX PCK Processor CA" if b"Processor CA" in der else b"Intel SGX PCK Platform CA"


def _refused_as_collateral(pem: bytes) -> None:
    """``pem`` is refused by both readers of collateral certificates, each with its own typed error."""
    with pytest.raises(InvalidCollateral, match="malformed"):
        parse_pem_chain(pem)
    with pytest.raises(InvalidCollateral, match="cannot read root certificate"):
        TrustedRoot.from_pem(pem)


def _pem_block(der: bytes) -> bytes:
    text = base64.b64encode(der)
    lines = b"".join(text[i : i + 64] + b"\n" for i in range(0, len(text), 64))
    return b"-----BEGIN CERTIFICATE-----\n" + lines + b"-----END CERTIFICATE-----\n"


@pytest.mark.parametrize("layout", ["canonical block before the tail", "library reader"])
def test_certificate_of_an_unknown_x509_version_is_invalid_evidence(
    real_quote: bytes, real_collateral: QuoteCollateral, layout: str
) -> None:
    head, tail = _leaf_block(real_quote, real_collateral)
    # cryptography raises InvalidVersion, which is not a ValueError, for a version it does not know.
    bad = _pem_block(_with_version(_leaf_der(head), 5))
    assert len(bad) == len(head)
    if layout == "library reader":
        bad = bad.replace(b"\n", b"\r\n")
    with pytest.raises(InvalidQuote, match="is malformed"):
        _pki.load_evidence_chain(bad + tail, "the PCK certificate chain", 4, _tail(real_collateral))
    if layout != "library reader":
        # Same length as the genuine block, so the quote's sizes still hold: the whole verification refuses it.
        quote = real_quote.replace(head, bad)
        with pytest.raises(InvalidQuote, match="is malformed"):
            verify_quote(quote, real_collateral, now=REAL_INSIDE)
        with pytest.raises(InvalidQuote):
            pck_certificates_from_pem(bad + tail)
    _refused_as_collateral(bad)


def test_a_malformed_issuer_name_in_the_quote_is_invalid_evidence(
    real_quote: bytes, real_collateral: QuoteCollateral
) -> None:
    head, _ = _leaf_block(real_quote, real_collateral)
    der = _leaf_der(head)
    name = _pck_ca_name(der)
    # The first occurrence is the issuer's common name: a UTF8String that is no longer UTF-8.
    broken = der.replace(name, b"\xff" * len(name), 1)
    quote = real_quote.replace(head, _pem_block(broken))
    with pytest.raises(InvalidQuote, match="PCK certificate chain is malformed"):
        collateral_request(Quote.from_bytes(quote))


def test_a_duplicated_extension_in_the_quote_is_invalid_evidence(
    real_quote: bytes, real_collateral: QuoteCollateral
) -> None:
    head, _ = _leaf_block(real_quote, real_collateral)
    der = _leaf_der(head)
    # subjectKeyIdentifier (2.5.29.14) renamed basicConstraints (2.5.29.19): two basicConstraints (RFC 5280 §4.2).
    ski, basic = b"\x06\x03\x55\x1d\x0e", b"\x06\x03\x55\x1d\x13"
    assert der.count(ski) == 1 and der.count(basic) == 1
    quote = real_quote.replace(head, _pem_block(der.replace(ski, basic)))
    # cryptography raises DuplicateExtension, which is not a ValueError.
    with pytest.raises(InvalidQuote, match="is malformed"):
        verify_quote(quote, real_collateral, now=REAL_INSIDE)
    with pytest.raises(InvalidQuote, match="is malformed"):
        collateral_request(Quote.from_bytes(quote))


def test_collateral_crls_and_roots_that_do_not_decode_are_invalid_collateral(
    real_collateral: QuoteCollateral,
) -> None:
    crl = real_collateral.pck_crl.public_bytes(Encoding.DER)
    tbs = split_signed(crl, False).tbs
    # The TBSCertList's version comes first: v2 is INTEGER 1; 5 is no CRL version (InvalidVersion on load).
    assert tbs.index(b"\x02\x01\x01") < 8
    version_5 = crl.replace(b"\x02\x01\x01", b"\x02\x01\x05", 1)
    name = _pck_ca_name(crl)
    bad_issuer = crl.replace(name, b"\xff" * len(name), 1)  # the issuer's UTF8String, no longer UTF-8
    for bad in (version_5, bad_issuer):
        with pytest.raises(InvalidCollateral, match="CRL is malformed"):
            parse_crl(bad)
    ca, _ = real_collateral.pck_crl_issuer_chain
    ca_der = ca.public_bytes(Encoding.DER)
    bad_subject = _pem_block(ca_der[::-1].replace(name[::-1], b"\xff" * len(name), 1)[::-1])  # the subject's
    _refused_as_collateral(bad_subject)


# -- end to end ------------------------------------------------------------------------------------------


def test_chain_certificate_with_mismatched_algorithms_fails_verification(
    real_quote: bytes, real_collateral: QuoteCollateral
) -> None:
    ca, root = real_collateral.pck_crl_issuer_chain
    swapped = x509.load_der_x509_certificate(_outer_algorithm_swapped(ca.public_bytes(Encoding.DER)))
    collateral = dataclasses.replace(
        real_collateral, pck_crl_issuer_chain=(swapped, root), pck_crl_issuer_chain_pem=b""
    )
    with pytest.raises(CertificateChainError, match="inner and outer signature algorithms differ"):
        verify_quote(real_quote, collateral, now=REAL_INSIDE)
