"""Readers of :class:`~enklave.attestation.policy.EnclavePolicy` options: each takes a constructor argument or a
configuration value as given and returns it in the policy's canonical form, or raises
:class:`~enklave.errors.UsageError` naming the option and what was wrong with it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from enklave.attestation.collateral import TcbStatus
from enklave.errors import UsageError

__all__ = [
    "advisory_ids",
    "exact_report_data",
    "flag",
    "measurements",
    "optional_bytes",
    "optional_u16",
    "optional_u32",
    "parse_hex",
    "report_data_prefix",
    "tcb_statuses",
]

_MEASUREMENT_SIZE = 32
_REPORT_DATA_SIZE = 64
_U16_MAX = 0xFFFF
_U32_MAX = 0xFFFF_FFFF
_MEASUREMENT_HEX = re.compile(r"[0-9a-fA-F]{64}")
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})*")
_ADVISORY_ID = re.compile(r"\S+")


def _as_bytes(value: object) -> bytes | None:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    return None


def _measurement(value: object, name: str) -> bytes:
    if isinstance(value, str):
        if not _MEASUREMENT_HEX.fullmatch(value):
            raise UsageError(f"{name} must be 64 hex characters, got {value!r}")
        return bytes.fromhex(value)
    raw = _as_bytes(value)
    if raw is not None:
        if len(raw) != _MEASUREMENT_SIZE:
            raise UsageError(f"{name} must be {_MEASUREMENT_SIZE} bytes, got {len(raw)}")
        return raw
    raise UsageError(f"{name} must be a hex string or bytes, got {type(value).__name__}")


def measurements(value: object, name: str) -> tuple[bytes, ...] | None:
    if value is None:
        return None
    if isinstance(value, str | bytes | bytearray | memoryview):
        return (_measurement(value, name),)
    if not isinstance(value, Iterable):
        raise UsageError(
            f"{name} must be a hex string, bytes or an iterable of them, got {type(value).__name__}"
        )
    values = sorted({_measurement(item, name) for item in value})
    if not values:
        raise UsageError(f"{name} must name at least one value; leave it unset to accept any")
    return tuple(values)


def optional_u16(value: object, name: str) -> int | None:
    return _optional_unsigned(value, name, _U16_MAX)


def optional_u32(value: object, name: str) -> int | None:
    return _optional_unsigned(value, name, _U32_MAX)


def _optional_unsigned(value: object, name: str, maximum: int) -> int | None:
    if value is None:
        return None
    # bool is an int in Python, but True is never a meaningful product id, version or number.
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"{name} must be an integer, got {type(value).__name__}")
    if not 0 <= value <= maximum:
        raise UsageError(f"{name} must be in 0..{maximum}, got {value}")
    return value


def flag(value: object, name: str) -> bool:
    # Only real booleans: a string such as "false" from a configuration file must not read as True.
    if not isinstance(value, bool):
        raise UsageError(f"{name} must be True or False, got {value!r}")
    return value


def _one_or_many(value: object, name: str, what: str) -> Iterable[object]:
    # A single string stands for itself, not for the iterable of its characters.
    if isinstance(value, str):
        return (value,)
    if isinstance(value, Iterable):
        return value
    raise UsageError(f"{name} must be an iterable of {what}, got {type(value).__name__}")


def tcb_statuses(value: object) -> frozenset[TcbStatus]:
    statuses: set[TcbStatus] = set()
    for item in _one_or_many(value, "accepted_tcb_statuses", "TCB statuses"):
        if not isinstance(item, str):
            raise UsageError(
                f"a TCB status must be a TcbStatus or its string value, got {type(item).__name__}"
            )
        try:
            status = TcbStatus(item)
        except ValueError:
            known = ", ".join(member.value for member in TcbStatus)
            raise UsageError(f"unknown TCB status {item!r}; known statuses: {known}") from None
        # The verifier rejects a Revoked TCB outright; a policy that claims to accept it is a mistake.
        if status is TcbStatus.REVOKED:
            raise UsageError("a policy cannot accept the Revoked TCB status")
        statuses.add(status)
    if not statuses:
        raise UsageError("accepted_tcb_statuses must name at least one TCB status")
    return frozenset(statuses)


def advisory_ids(value: object) -> tuple[str, ...]:
    ids: set[str] = set()
    for item in _one_or_many(value, "rejected_advisory_ids", "strings"):
        # A stray space or lower-case letter must not make an advisory silently never match.
        if not isinstance(item, str) or not _ADVISORY_ID.fullmatch(item):
            raise UsageError(f"an advisory id must be a non-empty string without spaces, got {item!r}")
        ids.add(item.upper())
    return tuple(sorted(ids))


def optional_bytes(value: object, name: str) -> bytes | None:
    if value is None:
        return None
    raw = _as_bytes(value)
    if raw is None:
        raise UsageError(f"{name} must be bytes, got {type(value).__name__}")
    return raw


def exact_report_data(value: object) -> bytes | None:
    raw = optional_bytes(value, "report_data")
    if raw is None:
        return None
    if len(raw) > _REPORT_DATA_SIZE:
        raise UsageError(f"report_data must be at most {_REPORT_DATA_SIZE} bytes, got {len(raw)}")
    # EREPORT takes 64 bytes; enclaves that bind fewer zero-pad them by convention (Gramine's user_report_data
    # does), and so does this requirement.
    return raw.ljust(_REPORT_DATA_SIZE, b"\0")


def report_data_prefix(value: object) -> bytes | None:
    raw = optional_bytes(value, "report_data_prefix")
    if raw is None:
        return None
    # An empty prefix would match everything, which is surely not what the caller meant.
    if not 1 <= len(raw) <= _REPORT_DATA_SIZE:
        raise UsageError(f"report_data_prefix must be 1..{_REPORT_DATA_SIZE} bytes, got {len(raw)}")
    return raw


def parse_hex(value: object, name: str) -> bytes:
    if not isinstance(value, str) or not _HEX.fullmatch(value):
        raise UsageError(f"{name} must be a hex string with an even number of digits, got {value!r}")
    return bytes.fromhex(value)
