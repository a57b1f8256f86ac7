"""The key broker's audit log: one append-only record per release and per refusal.

Records go to the storage log :data:`AUDIT_LOG` (``Storage.append``), so they are never rewritten. A record
names the key, the outcome (``released`` or ``refused``), the time, the reason of a refusal, and the identity
claims of the token (issuer, MRENCLAVE, MRSIGNER, product id, SVN, ``jti``) together with whether the token
verified; it never holds key material or the token itself.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from enklave.errors import UsageError

__all__ = ["AUDIT_LOG", "IDENTITY_FIELDS", "AuditRecord"]

#: The storage log that holds the audit records.
AUDIT_LOG: Final = "kbs-audit"
#: The identity fields an audit record may carry, as the KBS enclave reports them from the token.
IDENTITY_FIELDS: Final = ("iss", "jti", "mrenclave", "mrsigner", "product_id", "svn", "token_verified")
_OUTCOMES: Final = ("released", "refused")
_MAX_REASON: Final = 512


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One audit entry. ``identity`` holds only :data:`IDENTITY_FIELDS` with string, integer or boolean
    values (anything else the enclave reported is dropped); ``reason`` is ``None`` for a release."""

    key: str
    outcome: str
    time: int
    identity: Mapping[str, str | int | bool] = field(default_factory=dict)
    reason: str | None = None

    def __post_init__(self) -> None:
        if self.outcome not in _OUTCOMES:
            raise UsageError(f"an audit outcome is released or refused, not {self.outcome!r}")

    @classmethod
    def build(
        cls, *, key: str, outcome: str, time: int, claims: Mapping[str, Any], reason: str | None
    ) -> AuditRecord:
        """A record from the enclave's audit claims, keeping only the identity fields and bounding the reason."""
        identity = {
            name: value
            for name, value in (claims.items() if isinstance(claims, Mapping) else ())
            if name in IDENTITY_FIELDS and isinstance(value, str | int | bool)
        }
        return cls(key, outcome, time, identity, None if reason is None else reason[:_MAX_REASON])

    def to_json(self) -> bytes:
        """The stored form: compact JSON."""
        document: dict[str, Any] = {
            "key": self.key,
            "outcome": self.outcome,
            "time": self.time,
            **dict(self.identity),
        }
        if self.reason is not None:
            document["reason"] = self.reason
        return json.dumps(document, sort_keys=True, separators=(",", ":")).encode("utf-8")
