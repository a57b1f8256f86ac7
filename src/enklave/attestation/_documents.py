"""Intel's signed collateral documents as frozen models: TCB info (v2, v3) and enclave identity (v2).

Private module: the public names are re-exported by :mod:`enklave.attestation.collateral`. Each model keeps
the exact signed bytes (``body``) and its signature; its other fields are parsed from ``body`` when it is
built, and building raises :class:`~enklave.errors.InvalidCollateral` (chained to the cause) when they
disagree or the body is malformed, oversized or of an unsupported version. No signature is verified here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import InitVar, dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import NamedTuple, TypeVar

from enklave.attestation import _signed_json as sj
from enklave.errors import InvalidCollateral, UsageError

MAX_COLLATERAL_JSON_SIZE = 1 << 20
"""Largest collateral file or signed TCB info / QE identity document accepted, in bytes."""
MAX_TCB_LEVELS = 256
"""Most TCB levels accepted in one TCB info or QE identity."""
MAX_ADVISORY_IDS = 64
"""Most advisory IDs accepted on one TCB level."""

SGX_TCB_COMPONENTS = 16
SIGNATURE_SIZE = 64
_MAX_ADVISORY_ID_LENGTH = 64
_MAX_U16 = 0xFFFF
_MAX_U32 = 0xFFFF_FFFF
_QE_IDENTITY_IDS = frozenset({"QE", "QVE", "TD_QE"})


def _invalid(message: str) -> InvalidCollateral:
    return InvalidCollateral(message)


class TcbStatus(StrEnum):
    """A TCB level's status, with Intel's spelling."""

    UP_TO_DATE = "UpToDate"
    SW_HARDENING_NEEDED = "SWHardeningNeeded"
    CONFIGURATION_NEEDED = "ConfigurationNeeded"
    CONFIGURATION_AND_SW_HARDENING_NEEDED = "ConfigurationAndSWHardeningNeeded"
    OUT_OF_DATE = "OutOfDate"
    OUT_OF_DATE_CONFIGURATION_NEEDED = "OutOfDateConfigurationNeeded"
    REVOKED = "Revoked"

    @classmethod
    def parse(cls, value: str) -> TcbStatus:
        """Return the status spelled ``value``; raise :class:`InvalidCollateral` for an unknown one."""
        try:
            return cls(value)
        except ValueError as exc:
            raise InvalidCollateral(f"unknown TCB status {value[:40]!r}") from exc


def _advisory_ids(level: sj.Fields, path: str) -> tuple[str, ...]:
    if not level.has("advisoryIDs"):
        return ()
    ids = level.array("advisoryIDs", max_items=MAX_ADVISORY_IDS)
    for item in ids:
        if not isinstance(item, str) or not 0 < len(item) <= _MAX_ADVISORY_ID_LENGTH:
            raise _invalid(f"{path}.advisoryIDs holds something that is not an advisory ID")
    return tuple(str(item) for item in ids)


def _check_aware(value: datetime | None, name: str) -> None:
    if value is not None and value.utcoffset() is None:
        raise UsageError(f"{name} must be a timezone-aware datetime")


@dataclass(frozen=True, slots=True)
class TcbLevel:
    """One platform TCB level: 16 SGX component SVNs and a PCE SVN, with its status and advisories.

    ``tcb_date`` is ``None`` only for TCB info version 2 levels that carry no ``tcbDate``.
    """

    sgx_components: tuple[int, ...]
    pce_svn: int
    tcb_date: datetime | None
    tcb_status: TcbStatus
    advisory_ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.sgx_components) != SGX_TCB_COMPONENTS or any(
            not 0 <= svn <= 0xFF for svn in self.sgx_components
        ):
            raise _invalid("a TCB level needs 16 SGX component SVNs of 0..255")
        if not 0 <= self.pce_svn <= _MAX_U16 or len(self.advisory_ids) > MAX_ADVISORY_IDS:
            raise _invalid("TCB level PCE SVN or advisory list out of range")
        _check_aware(self.tcb_date, "tcb_date")


@dataclass(frozen=True, slots=True)
class QeTcbLevel:
    """One TCB level of a QE identity: the QE's ISV SVN, with its status and advisories."""

    isv_svn: int
    tcb_date: datetime
    tcb_status: TcbStatus
    advisory_ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 0 <= self.isv_svn <= _MAX_U16 or len(self.advisory_ids) > MAX_ADVISORY_IDS:
            raise _invalid("QE TCB level ISV SVN or advisory list out of range")
        _check_aware(self.tcb_date, "tcb_date")


class _TcbInfoContent(NamedTuple):
    version: int
    id: str
    issue_date: datetime
    next_update: datetime
    fmspc: bytes
    pce_id: bytes
    tcb_type: int
    tcb_evaluation_data_number: int
    tcb_levels: tuple[TcbLevel, ...]


def _parse_tcb_level(raw: object, path: str, version: int) -> TcbLevel:
    level = sj.Fields(raw, path)
    tcb = level.child("tcb")
    if version == 2:
        components = tuple(
            tcb.integer(f"sgxtcbcomp{index:02d}svn", maximum=0xFF)
            for index in range(1, SGX_TCB_COMPONENTS + 1)
        )
        tcb_date = level.utc_time("tcbDate") if level.has("tcbDate") else None
    else:
        raw_components = tcb.array(
            "sgxtcbcomponents", min_items=SGX_TCB_COMPONENTS, max_items=SGX_TCB_COMPONENTS
        )
        components = tuple(
            sj.Fields(item, f"{path}.tcb.sgxtcbcomponents[{index}]").integer("svn", maximum=0xFF)
            for index, item in enumerate(raw_components)
        )
        tcb_date = level.utc_time("tcbDate")
    return TcbLevel(
        sgx_components=components,
        pce_svn=tcb.integer("pcesvn", maximum=_MAX_U16),
        tcb_date=tcb_date,
        tcb_status=TcbStatus.parse(level.string("tcbStatus")),
        advisory_ids=_advisory_ids(level, path),
    )


def _parse_tcb_info_content(text: str) -> _TcbInfoContent:
    info = sj.Fields(sj.load_exact_object(text, what="tcbInfo body"), "tcbInfo")
    version = info.integer("version", maximum=_MAX_U32)
    if version not in (2, 3):
        raise _invalid(f"unsupported TCB info version {version} (2 and 3 are supported)")
    # Version 2 has no "id" (it is SGX by definition); version 3 names the TEE, and only SGX is supported.
    tee_id = info.string("id") if version == 3 or info.has("id") else "SGX"
    if tee_id == "TDX":
        raise _invalid("TDX TCB info is not supported: enklave verifies SGX quotes only")
    if tee_id != "SGX":
        raise _invalid(f"unsupported TCB info id {tee_id[:20]!r} (expected 'SGX')")
    levels = info.array("tcbLevels", min_items=1, max_items=MAX_TCB_LEVELS)
    return _TcbInfoContent(
        version=version,
        id=tee_id,
        issue_date=info.utc_time("issueDate"),
        next_update=info.utc_time("nextUpdate"),
        fmspc=info.hex_bytes("fmspc", size=6),
        pce_id=info.hex_bytes("pceId", size=2),
        tcb_type=info.integer("tcbType", maximum=_MAX_U32),
        tcb_evaluation_data_number=info.integer("tcbEvaluationDataNumber", maximum=_MAX_U32),
        tcb_levels=tuple(
            _parse_tcb_level(item, f"tcbInfo.tcbLevels[{index}]", version)
            for index, item in enumerate(levels)
        ),
    )


def _signature_bytes(signature: bytes, what: str) -> bytes:
    if not isinstance(signature, bytes | bytearray | memoryview):
        raise UsageError(f"{what} signature must be bytes")
    return bytes(signature)


_D = TypeVar("_D")

# Passed by _document_from_parts, whose fields were just parsed from the body: __post_init__ then need not parse
# the body a second time to prove that the fields match the signed bytes. Any other construction re-parses.
_PARSED_FROM_BODY = object()


def _document_from_parts(
    cls: Callable[..., _D],
    parse: Callable[[str], tuple[object, ...]],
    body: bytes | str,
    signature: bytes,
    what: str,
) -> _D:
    """Build a signed document from its exact body text and 64-byte signature (fields parsed from the body)."""
    text = sj.decode_text(body, what=f"{what} body", max_size=MAX_COLLATERAL_JSON_SIZE)
    return cls(
        *parse(text),
        body=text.encode("utf-8"),
        signature=_signature_bytes(signature, what),
        _parsed=_PARSED_FROM_BODY,
    )


def _check_document(
    document: TcbInfo | QeIdentity,
    parsed: object,
    parse: Callable[[str], tuple[object, ...]],
    names: tuple[str, ...],
    what: str,
) -> None:
    """The checks of a signed document's ``__post_init__``: the body is bytes, the signature 64 bytes, and the
    fields ``names`` (in the content tuple's order: a NamedTuple compares equal to a plain tuple of the same
    items) are what ``parse`` reads from the body, unless ``parsed`` says they were just read from it."""
    if not isinstance(document.body, bytes):
        raise UsageError(f"{what} body must be bytes")
    if len(document.signature) != SIGNATURE_SIZE:
        raise _invalid(
            f"{what} signature must be {SIGNATURE_SIZE} bytes (P-256 r||s), found {len(document.signature)}"
        )
    text = sj.decode_text(document.body, what=f"{what} body", max_size=MAX_COLLATERAL_JSON_SIZE)
    if parsed is not _PARSED_FROM_BODY and parse(text) != tuple(getattr(document, name) for name in names):
        raise _invalid(f"{what} fields do not match its signed body")


def _split_signed_document(text: bytes | str, key: str, what: str) -> tuple[str, bytes]:
    """Cut the body out of Intel's ``{"<key>": {...}, "signature": "<hex>"}`` unchanged, with its signature."""
    document = sj.decode_text(text, what=f"{what} document", max_size=MAX_COLLATERAL_JSON_SIZE)
    body, _, signature = sj.split_signed(document, key, what=f"{what} document")
    return body, sj.parse_hex(signature, where=f"{what} signature", size=SIGNATURE_SIZE)


@dataclass(frozen=True, slots=True)
class TcbInfo:
    """Intel's SGX TCB info, version 2 or 3, for one FMSPC.

    ``body`` holds the exact signed bytes of the ``tcbInfo`` object and ``signature`` the 64-byte P-256
    signature (r||s) over them; the other fields are parsed from ``body`` and always agree with it.
    Building one raises :class:`InvalidCollateral` when the body is malformed, of another version, TDX,
    or does not match the fields.
    """

    version: int
    id: str
    issue_date: datetime
    next_update: datetime
    fmspc: bytes
    pce_id: bytes
    tcb_type: int
    tcb_evaluation_data_number: int
    tcb_levels: tuple[TcbLevel, ...]
    body: bytes = field(repr=False)
    signature: bytes = field(repr=False)

    _parsed: InitVar[object] = None  # private: see _PARSED_FROM_BODY

    def __post_init__(self, _parsed: object) -> None:
        _check_document(self, _parsed, _parse_tcb_info_content, _TcbInfoContent._fields, "TCB info")

    @classmethod
    def from_parts(cls, body: bytes | str, signature: bytes) -> TcbInfo:
        """Build from the exact signed text of the ``tcbInfo`` object and its 64-byte signature."""
        return _document_from_parts(cls, _parse_tcb_info_content, body, signature, "TCB info")

    @classmethod
    def from_signed_json(cls, text: bytes | str) -> TcbInfo:
        """Build from Intel's ``{"tcbInfo": {...}, "signature": "<hex>"}``, cutting the body out unchanged.

        The document must be one JSON object with exactly those two keys; raises :class:`InvalidCollateral`.
        """
        return cls.from_parts(*_split_signed_document(text, "tcbInfo", "TCB info"))


class _QeIdentityContent(NamedTuple):
    id: str
    version: int
    issue_date: datetime
    next_update: datetime
    tcb_evaluation_data_number: int
    miscselect: int
    miscselect_mask: int
    attributes: bytes
    attributes_mask: bytes
    mrsigner: bytes
    isv_prod_id: int
    tcb_levels: tuple[QeTcbLevel, ...]


def _parse_qe_tcb_level(raw: object, path: str) -> QeTcbLevel:
    level = sj.Fields(raw, path)
    return QeTcbLevel(
        isv_svn=level.child("tcb").integer("isvsvn", maximum=_MAX_U16),
        tcb_date=level.utc_time("tcbDate"),
        tcb_status=TcbStatus.parse(level.string("tcbStatus")),
        advisory_ids=_advisory_ids(level, path),
    )


def _parse_qe_identity_content(text: str) -> _QeIdentityContent:
    identity = sj.Fields(sj.load_exact_object(text, what="enclaveIdentity body"), "enclaveIdentity")
    version = identity.integer("version", maximum=_MAX_U32)
    if version != 2:
        raise _invalid(f"unsupported enclave identity version {version} (2 is supported)")
    enclave_id = identity.string("id")
    if enclave_id not in _QE_IDENTITY_IDS:
        raise _invalid(f"unsupported enclave identity id {enclave_id[:20]!r}")
    levels = identity.array("tcbLevels", min_items=1, max_items=MAX_TCB_LEVELS)
    return _QeIdentityContent(
        id=enclave_id,
        version=version,
        issue_date=identity.utc_time("issueDate"),
        next_update=identity.utc_time("nextUpdate"),
        tcb_evaluation_data_number=identity.integer("tcbEvaluationDataNumber", maximum=_MAX_U32),
        # MISCSELECT is written as 8 hex digits, most significant first ("D182B18C" is 0xD182B18C).
        miscselect=int.from_bytes(identity.hex_bytes("miscselect", size=4), "big"),
        miscselect_mask=int.from_bytes(identity.hex_bytes("miscselectMask", size=4), "big"),
        attributes=identity.hex_bytes("attributes", size=16),
        attributes_mask=identity.hex_bytes("attributesMask", size=16),
        mrsigner=identity.hex_bytes("mrsigner", size=32),
        isv_prod_id=identity.integer("isvprodid", maximum=_MAX_U16),
        tcb_levels=tuple(
            _parse_qe_tcb_level(item, f"enclaveIdentity.tcbLevels[{index}]")
            for index, item in enumerate(levels)
        ),
    )


@dataclass(frozen=True, slots=True)
class QeIdentity:
    """Intel's enclave identity, version 2, of a quoting enclave (``id`` "QE", "QVE" or "TD_QE").

    The parser accepts all three ids; checking that the id suits the quote is the verifier's job.
    ``body`` holds the exact signed bytes of the ``enclaveIdentity`` object, ``signature`` the 64-byte r||s.
    Building one raises :class:`InvalidCollateral` when the body is malformed or does not match the fields.
    """

    id: str
    version: int
    issue_date: datetime
    next_update: datetime
    tcb_evaluation_data_number: int
    miscselect: int
    miscselect_mask: int
    attributes: bytes
    attributes_mask: bytes
    mrsigner: bytes
    isv_prod_id: int
    tcb_levels: tuple[QeTcbLevel, ...]
    body: bytes = field(repr=False)
    signature: bytes = field(repr=False)

    _parsed: InitVar[object] = None  # private: see _PARSED_FROM_BODY

    def __post_init__(self, _parsed: object) -> None:
        _check_document(self, _parsed, _parse_qe_identity_content, _QeIdentityContent._fields, "QE identity")

    @classmethod
    def from_parts(cls, body: bytes | str, signature: bytes) -> QeIdentity:
        """Build from the exact signed text of the ``enclaveIdentity`` object and its 64-byte signature."""
        return _document_from_parts(cls, _parse_qe_identity_content, body, signature, "QE identity")

    @classmethod
    def from_signed_json(cls, text: bytes | str) -> QeIdentity:
        """Build from Intel's ``{"enclaveIdentity": {...}, "signature": "<hex>"}``, body cut out unchanged.

        The document must be one JSON object with exactly those two keys; raises :class:`InvalidCollateral`.
        """
        return cls.from_parts(*_split_signed_document(text, "enclaveIdentity", "QE identity"))
