"""DCAP collateral as frozen, validated models: TCB info, QE identity, CRLs, issuer chains (pure, no I/O).

Everything here parses untrusted bytes and raises :class:`~enklave.errors.InvalidCollateral` (chained to the
low-level cause) when they are malformed, oversized or of an unsupported version. Nothing here verifies a
signature: the verifier does, over :attr:`TcbInfo.body` / :attr:`QeIdentity.body`, which are the exact bytes
Intel signed. Parsed fields always agree with the raw bytes they came from: building a model re-checks them.

The collateral file format is dcap-qvl's ``QuoteCollateralV3`` JSON (see :meth:`QuoteCollateral.from_json`).
TCB info and QE identity live in the private ``_documents`` module and are re-exported here.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from enklave._x509 import DECODE_ERRORS, decode_certificate, decode_crl
from enklave.attestation import _signed_json as sj
from enklave.attestation._documents import (
    MAX_ADVISORY_IDS,
    MAX_COLLATERAL_JSON_SIZE,
    MAX_TCB_LEVELS,
    SIGNATURE_SIZE,
    QeIdentity,
    QeTcbLevel,
    TcbInfo,
    TcbLevel,
    TcbStatus,
)
from enklave.attestation._signed_der import SignedObject
from enklave.errors import InvalidCollateral, UsageError

__all__ = [
    "MAX_ADVISORY_IDS",
    "MAX_CHAIN_LENGTH",
    "MAX_COLLATERAL_JSON_SIZE",
    "MAX_CRL_SIZE",
    "MAX_PEM_CHAIN_SIZE",
    "MAX_TCB_LEVELS",
    "QeIdentity",
    "QeTcbLevel",
    "QuoteCollateral",
    "SignedDer",
    "TcbInfo",
    "TcbLevel",
    "TcbStatus",
    "parse_crl",
    "parse_pem_chain",
]

MAX_CRL_SIZE = 1 << 20
"""Largest CRL accepted (DER, PEM or hex), in bytes."""
MAX_PEM_CHAIN_SIZE = 64 << 10
"""Largest PEM certificate chain accepted, in bytes."""
MAX_CHAIN_LENGTH = 4
"""Most certificates accepted in one chain (Intel's chains have 2 or 3)."""

_PEM_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]*?-----END CERTIFICATE-----")
_PEM_CRL = re.compile(rb"-----BEGIN X509 CRL-----[A-Za-z0-9+/=\s]*?-----END X509 CRL-----")
_HEX_BYTES = re.compile(rb"[0-9A-Fa-f]+")


def _invalid(message: str) -> InvalidCollateral:
    return InvalidCollateral(message)


def _as_bytes(data: bytes | str, what: str) -> bytes:
    if isinstance(data, str):
        try:
            return data.encode("ascii")
        except UnicodeEncodeError as exc:
            raise _invalid(f"{what} holds non-ASCII characters") from exc
    return bytes(data)


def parse_pem_chain(text: bytes | str, *, decode: bool = True) -> tuple[x509.Certificate, ...]:
    """Parse a chain of PEM certificates, in the order given (Intel sends the leaf first).

    Only whitespace may surround the PEM blocks. Raises :class:`InvalidCollateral` for an empty, oversized
    (more than :data:`MAX_CHAIN_LENGTH` certificates or :data:`MAX_PEM_CHAIN_SIZE` bytes) or malformed chain.
    Every certificate is decoded whole (:func:`enklave._x509.decode_certificate`) unless ``decode`` is false,
    which is only for comparing the text with certificates read before.
    """
    data = _as_bytes(text, "PEM certificate chain")
    if len(data) > MAX_PEM_CHAIN_SIZE:
        raise _invalid(f"PEM certificate chain is larger than {MAX_PEM_CHAIN_SIZE} bytes")
    certificates: list[x509.Certificate] = []
    position = 0
    for match in _PEM_CERTIFICATE.finditer(data):
        if data[position : match.start()].strip():
            raise _invalid("PEM certificate chain has data that is not a certificate")
        if len(certificates) == MAX_CHAIN_LENGTH:
            raise _invalid(f"PEM certificate chain has more than {MAX_CHAIN_LENGTH} certificates")
        try:
            certificate = x509.load_pem_x509_certificate(match.group(0))
            certificates.append(decode_certificate(certificate) if decode else certificate)
        except DECODE_ERRORS as exc:
            raise _invalid(f"certificate {len(certificates)} of the PEM chain is malformed") from exc
        position = match.end()
    if data[position:].strip():
        raise _invalid("PEM certificate chain has data that is not a certificate")
    if not certificates:
        raise _invalid("PEM certificate chain holds no certificate")
    return tuple(certificates)


def parse_crl(data: bytes | str) -> x509.CertificateRevocationList:
    """Parse a CRL given as DER, PEM, or ASCII hex of the DER (some PCCS versions answer hex).

    Raises :class:`InvalidCollateral` when it is oversized, malformed, or has no nextUpdate (DCAP needs one).
    """
    raw = _as_bytes(data, "CRL")
    if len(raw) > MAX_CRL_SIZE:
        raise _invalid(f"CRL is larger than {MAX_CRL_SIZE} bytes")
    # Stripping is only for the text forms: trailing bytes of a DER signature may look like whitespace.
    text = raw.strip()
    try:
        if text.startswith(b"-----BEGIN X509 CRL-----"):
            if not _PEM_CRL.fullmatch(text):
                raise _invalid("PEM CRL has data around its single PEM block")
            crl = decode_crl(x509.load_pem_x509_crl(text))
        elif _HEX_BYTES.fullmatch(text):
            crl = decode_crl(x509.load_der_x509_crl(bytes.fromhex(text.decode("ascii"))))
        else:
            crl = decode_crl(x509.load_der_x509_crl(raw))
    except DECODE_ERRORS as exc:
        raise _invalid("CRL is malformed") from exc
    if crl.next_update_utc is None:
        raise _invalid("CRL has no nextUpdate")
    return crl


def _named_chain(name: str, pem: bytes) -> tuple[x509.Certificate, ...]:
    try:
        return parse_pem_chain(pem)
    except InvalidCollateral as exc:
        raise _invalid(f"{name}: {exc}") from exc


def _next_update(crl: x509.CertificateRevocationList) -> datetime:
    value = crl.next_update_utc
    if value is None:
        raise _invalid("CRL has no nextUpdate")
    return value


def _chain_pem(name: str, chain: tuple[x509.Certificate, ...], pem: bytes) -> bytes:
    """The PEM text of ``chain``: ``pem`` when it holds exactly these certificates, else encoded anew."""
    if not 1 <= len(chain) <= MAX_CHAIN_LENGTH:
        raise _invalid(f"{name} needs 1..{MAX_CHAIN_LENGTH} certificates, has {len(chain)}")
    if not pem:
        return b"".join(certificate.public_bytes(Encoding.PEM) for certificate in chain)
    # The PEM text is what to_json() writes, so it must never disagree with the certificates verified. Equal
    # certificates have equal DER, so comparing needs no field decoded again (from_parts decoded them already).
    if parse_pem_chain(pem, decode=False) != chain:
        raise _invalid(f"{name}_pem does not hold the certificates of {name}")
    return bytes(pem)


def _signed(chain: tuple[x509.Certificate, ...]) -> tuple[SignedObject, ...]:
    # The parser takes strict DER only, so a certificate encodes to exactly the bytes it was read from.
    return tuple(SignedObject(certificate.public_bytes(Encoding.DER), True) for certificate in chain)


@dataclass(frozen=True, slots=True)
class SignedDer:
    """The DER of a collateral's certificates (chain by chain) and CRLs: each object was parsed from, or
    encodes to, exactly these bytes, so signature checks slice their signed bytes from them."""

    pck_crl_issuer_chain: tuple[SignedObject, ...]
    tcb_info_issuer_chain: tuple[SignedObject, ...]
    qe_identity_issuer_chain: tuple[SignedObject, ...]
    root_ca_crl: SignedObject
    pck_crl: SignedObject


_REQUIRED_KEYS = (
    "pck_crl_issuer_chain",
    "root_ca_crl",
    "pck_crl",
    "tcb_info_issuer_chain",
    "tcb_info",
    "tcb_info_signature",
    "qe_identity_issuer_chain",
    "qe_identity",
    "qe_identity_signature",
)
_OPTIONAL_KEY = "pck_certificate_chain"
_PCK_CA_NAMES = {"Intel SGX PCK Processor CA": "processor", "Intel SGX PCK Platform CA": "platform"}


@dataclass(frozen=True, slots=True)
class QuoteCollateral:
    """All a DCAP verifier needs beside the quote: issuer chains (leaf first), CRLs, TCB info, QE identity.

    ``pck_certificate_chain`` is only for quotes whose certification data lacks the PCK chain (e.g. type 1).
    Each ``*_pem`` field is the PEM text of its chain, kept as received so :meth:`to_json` writes it back
    unchanged; left empty, it is encoded from the certificates (``pck_certificate_chain_pem`` stays empty when
    there is no PCK chain). PEM fields take no part in equality.
    Building one raises :class:`InvalidCollateral` when a chain is empty or longer than
    :data:`MAX_CHAIN_LENGTH`, a PEM field disagrees with its certificates, or a CRL has no nextUpdate.
    """

    pck_crl_issuer_chain: tuple[x509.Certificate, ...]
    root_ca_crl: x509.CertificateRevocationList
    pck_crl: x509.CertificateRevocationList
    tcb_info_issuer_chain: tuple[x509.Certificate, ...]
    tcb_info: TcbInfo
    qe_identity_issuer_chain: tuple[x509.Certificate, ...]
    qe_identity: QeIdentity
    pck_certificate_chain: tuple[x509.Certificate, ...] | None = None
    pck_crl_issuer_chain_pem: bytes = field(default=b"", repr=False, compare=False, kw_only=True)
    tcb_info_issuer_chain_pem: bytes = field(default=b"", repr=False, compare=False, kw_only=True)
    qe_identity_issuer_chain_pem: bytes = field(default=b"", repr=False, compare=False, kw_only=True)
    pck_certificate_chain_pem: bytes = field(default=b"", repr=False, compare=False, kw_only=True)

    signed_der: SignedDer = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("pck_crl_issuer_chain", "tcb_info_issuer_chain", "qe_identity_issuer_chain"):
            pem = _chain_pem(name, getattr(self, name), getattr(self, f"{name}_pem"))
            object.__setattr__(self, f"{name}_pem", pem)
        if self.pck_certificate_chain is not None:
            pem = _chain_pem(
                "pck_certificate_chain", self.pck_certificate_chain, self.pck_certificate_chain_pem
            )
            object.__setattr__(self, "pck_certificate_chain_pem", pem)
        elif self.pck_certificate_chain_pem:
            raise UsageError("pck_certificate_chain_pem is set but pck_certificate_chain is not")
        _next_update(self.root_ca_crl)
        _next_update(self.pck_crl)
        # CRL objects re-encode exactly to the DER they were parsed from (the parser takes strict DER only).
        signed_der = SignedDer(
            _signed(self.pck_crl_issuer_chain),
            _signed(self.tcb_info_issuer_chain),
            _signed(self.qe_identity_issuer_chain),
            SignedObject(self.root_ca_crl.public_bytes(Encoding.DER), False),
            SignedObject(self.pck_crl.public_bytes(Encoding.DER), False),
        )
        object.__setattr__(self, "signed_der", signed_der)

    @property
    def fmspc(self) -> bytes:
        """The FMSPC this collateral is for (that of its TCB info)."""
        return self.tcb_info.fmspc

    @property
    def earliest_next_update(self) -> datetime:
        """The earliest nextUpdate of the TCB info, QE identity and both CRLs: when this set goes stale."""
        return min(
            self.tcb_info.next_update,
            self.qe_identity.next_update,
            _next_update(self.root_ca_crl),
            _next_update(self.pck_crl),
        )

    @property
    def pck_crl_ca(self) -> str | None:
        """Which Intel PCK CA issued the PCK CRL: "processor", "platform", or None for another issuer."""
        names = self.pck_crl.issuer.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        return _PCK_CA_NAMES.get(str(names[0].value)) if len(names) == 1 else None

    @classmethod
    def from_parts(
        cls,
        *,
        pck_crl_issuer_chain: bytes | str,
        root_ca_crl: bytes | str,
        pck_crl: bytes | str,
        tcb_info_issuer_chain: bytes | str,
        tcb_info: TcbInfo,
        qe_identity_issuer_chain: bytes | str,
        qe_identity: QeIdentity,
        pck_certificate_chain: bytes | str | None = None,
    ) -> QuoteCollateral:
        """Build from the pieces as a PCS serves them: PEM chains, CRLs as DER, PEM or hex, parsed documents.

        Raises :class:`InvalidCollateral` when a chain or CRL is malformed (see :func:`parse_pem_chain`,
        :func:`parse_crl`).
        """
        pck_pem = b"" if pck_certificate_chain is None else _as_bytes(pck_certificate_chain, "PCK chain")
        crl_chain_pem = _as_bytes(pck_crl_issuer_chain, "PCK CRL issuer chain")
        tcb_chain_pem = _as_bytes(tcb_info_issuer_chain, "TCB info issuer chain")
        qe_chain_pem = _as_bytes(qe_identity_issuer_chain, "QE identity issuer chain")
        return cls(
            pck_crl_issuer_chain=_named_chain("PCK CRL issuer chain", crl_chain_pem),
            root_ca_crl=parse_crl(root_ca_crl),
            pck_crl=parse_crl(pck_crl),
            tcb_info_issuer_chain=_named_chain("TCB info issuer chain", tcb_chain_pem),
            tcb_info=tcb_info,
            qe_identity_issuer_chain=_named_chain("QE identity issuer chain", qe_chain_pem),
            qe_identity=qe_identity,
            pck_certificate_chain=None
            if pck_certificate_chain is None
            else _named_chain("PCK chain", pck_pem),
            pck_crl_issuer_chain_pem=crl_chain_pem,
            tcb_info_issuer_chain_pem=tcb_chain_pem,
            qe_identity_issuer_chain_pem=qe_chain_pem,
            pck_certificate_chain_pem=pck_pem,
        )

    @classmethod
    def from_json(cls, text: bytes | str) -> QuoteCollateral:
        """Parse dcap-qvl's ``QuoteCollateralV3`` JSON, plus the optional ``pck_certificate_chain`` (PEM) key.

        Chains are PEM; CRLs hex DER (PEM is accepted too); ``tcb_info`` / ``qe_identity`` the exact signed
        text of the inner objects, with hex r||s signatures. Unknown keys are rejected, so that nothing in a
        file is silently dropped. Raises :class:`InvalidCollateral` for any malformed, missing, oversized or
        unsupported piece.
        """
        document = sj.decode_text(text, what="collateral JSON", max_size=MAX_COLLATERAL_JSON_SIZE)
        values = sj.load_object(document, what="collateral JSON")
        missing = [key for key in _REQUIRED_KEYS if key not in values]
        unknown = sorted(set(values) - {*_REQUIRED_KEYS, _OPTIONAL_KEY})
        if missing or unknown:
            raise _invalid(f"collateral JSON: missing keys {missing}, unknown keys {unknown[:5]}")
        fields: dict[str, str] = {}
        for key, value in values.items():
            if not isinstance(value, str):
                raise _invalid(f"collateral JSON: {key!r} is not a string")
            fields[key] = value
        tcb_signature = sj.parse_hex(
            fields["tcb_info_signature"], where="tcb_info_signature", size=SIGNATURE_SIZE
        )
        qe_signature = sj.parse_hex(
            fields["qe_identity_signature"], where="qe_identity_signature", size=SIGNATURE_SIZE
        )
        return cls.from_parts(
            pck_crl_issuer_chain=fields["pck_crl_issuer_chain"],
            root_ca_crl=fields["root_ca_crl"],
            pck_crl=fields["pck_crl"],
            tcb_info_issuer_chain=fields["tcb_info_issuer_chain"],
            tcb_info=TcbInfo.from_parts(fields["tcb_info"], tcb_signature),
            qe_identity_issuer_chain=fields["qe_identity_issuer_chain"],
            qe_identity=QeIdentity.from_parts(fields["qe_identity"], qe_signature),
            pck_certificate_chain=fields.get(_OPTIONAL_KEY),
        )

    def to_json(self) -> str:
        """Serialize to dcap-qvl's ``QuoteCollateralV3`` JSON (2-space indent, as dcap-qvl writes it).

        ``from_json(to_json())`` equals this object; PEM chains, CRL DER and signed bodies are kept unchanged.
        """
        document = {
            "pck_crl_issuer_chain": self.pck_crl_issuer_chain_pem.decode("ascii"),
            "root_ca_crl": self.root_ca_crl.public_bytes(Encoding.DER).hex(),
            "pck_crl": self.pck_crl.public_bytes(Encoding.DER).hex(),
            "tcb_info_issuer_chain": self.tcb_info_issuer_chain_pem.decode("ascii"),
            "tcb_info": self.tcb_info.body.decode("utf-8"),
            "tcb_info_signature": self.tcb_info.signature.hex(),
            "qe_identity_issuer_chain": self.qe_identity_issuer_chain_pem.decode("ascii"),
            "qe_identity": self.qe_identity.body.decode("utf-8"),
            "qe_identity_signature": self.qe_identity.signature.hex(),
        }
        if self.pck_certificate_chain is not None:
            document[_OPTIONAL_KEY] = self.pck_certificate_chain_pem.decode("ascii")
        return json.dumps(document, indent=2)
