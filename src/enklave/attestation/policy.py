"""Appraisal policies: whether a verified enclave is acceptable.

Verification (signatures, certificate chains, collateral, TCB level) happens elsewhere and yields evidence
that is known to be genuine. Appraisal is the separate question of whether *this* genuine enclave is one we
accept: the right measurement or signer, a recent enough version, no debug mode, a platform whose TCB status
and advisories are acceptable, and report data that binds what the caller expects.

A policy is a small frozen object with one method, :meth:`Policy.appraise`, which returns ``None`` when the
evidence is acceptable and raises :class:`~enklave.errors.PolicyError` otherwise; it never returns a bool. The
error names the failing ``field`` (an attribute of :class:`AppraisableEvidence`), the ``expected`` requirement
and the ``actual`` value (the evidence's value of that field; bytes as lowercase hex).

Policies compose: :class:`AllOf` requires every child to accept, :class:`AnyOf` requires one. An empty
composite accepts nothing. The only policy that accepts everything is :class:`UnsafeNoPolicy`, which says so
in its name and logs a warning each time it is used.

Policies appraise anything that satisfies :class:`AppraisableEvidence` structurally: a
:class:`~enklave.attestation.verified.VerifiedQuote`, and later RA-TLS peers, attestation-token claims and
key-release requests.
"""

from __future__ import annotations

import abc
import hashlib
import hmac
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol

from enklave.attestation import _policy_options as options
from enklave.attestation.collateral import TcbStatus
from enklave.errors import PolicyError, UsageError

if TYPE_CHECKING:
    from enklave.attestation.verified import VerifiedQuote

__all__ = [
    "DEFAULT_ACCEPTED_TCB_STATUSES",
    "AllOf",
    "AnyOf",
    "AppraisableEvidence",
    "EnclavePolicy",
    "Policy",
    "UnsafeNoPolicy",
]

_log = logging.getLogger("enklave.attestation.policy")


DEFAULT_ACCEPTED_TCB_STATUSES: frozenset[TcbStatus] = frozenset(
    {TcbStatus.UP_TO_DATE, TcbStatus.SW_HARDENING_NEEDED}
)
"""The TCB statuses :class:`EnclavePolicy` accepts unless told otherwise: UpToDate and SWHardeningNeeded."""


class AppraisableEvidence(Protocol):
    """What a policy needs to know about a verified enclave.

    :class:`~enklave.attestation.verified.VerifiedQuote` satisfies this protocol structurally, and so will the
    verified forms of RA-TLS peers, attestation-token claims and key-release requests. Whoever builds such an
    object has already verified it; a policy only appraises it.
    """

    @property
    def mr_enclave(self) -> bytes:
        """The enclave's measurement (32 bytes)."""

    @property
    def mr_signer(self) -> bytes:
        """The SHA-256 of the enclave signer's key (32 bytes)."""

    @property
    def isv_prod_id(self) -> int:
        """The enclave's ISV product id."""

    @property
    def isv_svn(self) -> int:
        """The enclave's ISV security version number."""

    @property
    def debug(self) -> bool:
        """True when the enclave runs in debug mode."""

    @property
    def report_data(self) -> bytes:
        """The 64 bytes of report data the enclave bound into its evidence."""

    @property
    def tcb_status(self) -> TcbStatus | str:
        """The TCB status of the platform and its QE combined (as Intel's QVL combines them), as a
        :class:`TcbStatus` or its string value."""

    @property
    def advisory_ids(self) -> tuple[str, ...]:
        """The Intel security advisories that apply to the platform and its QE, merged."""

    @property
    def tcb_evaluation_data_number(self) -> int:
        """The lower ``tcbEvaluationDataNumber`` of the TCB info and QE identity the evidence was judged with."""

    @property
    def simulated(self) -> bool:
        """True when the evidence comes from enklave's simulated platform."""


if TYPE_CHECKING:
    # This function is never run: it makes mypy prove that VerifiedQuote satisfies the protocol.
    def _verified_quote_is_appraisable(quote: VerifiedQuote) -> AppraisableEvidence:
        return quote


class Policy(abc.ABC):
    """An appraisal policy: one method that accepts evidence silently or raises :class:`PolicyError`."""

    __slots__ = ()

    @abc.abstractmethod
    def appraise(self, evidence: AppraisableEvidence) -> None:
        """Return ``None`` if ``evidence`` is acceptable; raise :class:`PolicyError` naming the failed check.

        Implementations check, never return a verdict: a caller that ignores the return value stays safe.
        """

    def describe(self) -> list[str]:
        """Human-readable lines that say what this policy requires, for CLIs and logs."""
        return [type(self).__name__]


@dataclass(frozen=True, slots=True, init=False, repr=False)
class EnclavePolicy(Policy):
    """The everyday policy: which enclave, on which platform, bound to which report data.

    Every argument is keyword-only and optional; an unset identity field (``mr_enclave``, ``mr_signer``,
    ``isv_prod_id``, ``min_isv_svn``) accepts any value, so a policy that pins neither ``mr_enclave`` nor
    ``mr_signer`` accepts *every* genuine enclave. The safe defaults reject debug enclaves, simulated evidence
    and every TCB status other than UpToDate and SWHardeningNeeded.

    - ``mr_enclave``, ``mr_signer``: one value or an iterable of values ("one of"), each 32 raw bytes or 64
      hex characters.
    - ``isv_prod_id``: the exact product id; ``min_isv_svn``: the lowest accepted security version (0..65535).
    - ``allow_debug``, ``allow_simulated``: accept debug enclaves or simulated evidence (both default False).
    - ``accepted_tcb_statuses``: :class:`TcbStatus` members or their string values. Revoked is never accepted.
    - ``rejected_advisory_ids``: reject the evidence if any of these advisories applies (compared
      case-insensitively; stored upper-case).
    - ``min_tcb_evaluation_data_number``: the lowest accepted ``tcbEvaluationDataNumber`` of the collateral the
      evidence was judged with. Intel raises it at each TCB recovery: requiring the number of a recovery refuses
      evidence judged with collateral from before it, which a host that controls time and collateral could
      otherwise supply.
    - At most one report-data requirement:

      * ``report_data``: the report data must equal these bytes, zero-padded to 64 (the usual convention for
        shorter report data, which Gramine's ``user_report_data`` follows);
      * ``report_data_prefix``: the report data must start with these 1..64 bytes;
      * ``report_data_binds``: bytes 0..31 of the report data must be the SHA-256 of these bytes (typically a
        public key or a nonce); bytes 32..63 may hold anything and are not checked.

    Construction validates every argument and raises :class:`UsageError` on a bad one. :meth:`appraise`
    checks, in this order, simulated, debug, mr_enclave, mr_signer, isv_prod_id, isv_svn, tcb_status,
    advisory_ids, tcb_evaluation_data_number and report_data, and raises :class:`PolicyError` for the first
    failure. Byte values are compared with :func:`hmac.compare_digest`.
    """

    mr_enclave: tuple[bytes, ...] | None
    mr_signer: tuple[bytes, ...] | None
    isv_prod_id: int | None
    min_isv_svn: int | None
    allow_debug: bool
    accepted_tcb_statuses: frozenset[TcbStatus]
    rejected_advisory_ids: tuple[str, ...]
    report_data: bytes | None
    report_data_prefix: bytes | None
    report_data_binds: bytes | None
    allow_simulated: bool
    min_tcb_evaluation_data_number: int | None
    _binds_digest: bytes | None = field(compare=False)

    def __init__(
        self,
        *,
        mr_enclave: str | bytes | Iterable[str | bytes] | None = None,
        mr_signer: str | bytes | Iterable[str | bytes] | None = None,
        isv_prod_id: int | None = None,
        min_isv_svn: int | None = None,
        allow_debug: bool = False,
        accepted_tcb_statuses: TcbStatus | str | Iterable[TcbStatus | str] = DEFAULT_ACCEPTED_TCB_STATUSES,
        rejected_advisory_ids: str | Iterable[str] = (),
        report_data: bytes | None = None,
        report_data_prefix: bytes | None = None,
        report_data_binds: bytes | None = None,
        allow_simulated: bool = False,
        min_tcb_evaluation_data_number: int | None = None,
    ) -> None:
        modes = [report_data, report_data_prefix, report_data_binds]
        if sum(mode is not None for mode in modes) > 1:
            raise UsageError("give at most one of report_data, report_data_prefix and report_data_binds")
        binds = options.optional_bytes(report_data_binds, "report_data_binds")
        values: dict[str, object] = {
            "mr_enclave": options.measurements(mr_enclave, "mr_enclave"),
            "mr_signer": options.measurements(mr_signer, "mr_signer"),
            "isv_prod_id": options.optional_u16(isv_prod_id, "isv_prod_id"),
            "min_isv_svn": options.optional_u16(min_isv_svn, "min_isv_svn"),
            "allow_debug": options.flag(allow_debug, "allow_debug"),
            "accepted_tcb_statuses": options.tcb_statuses(accepted_tcb_statuses),
            "rejected_advisory_ids": options.advisory_ids(rejected_advisory_ids),
            "report_data": options.exact_report_data(report_data),
            "report_data_prefix": options.report_data_prefix(report_data_prefix),
            "report_data_binds": binds,
            "allow_simulated": options.flag(allow_simulated, "allow_simulated"),
            "min_tcb_evaluation_data_number": options.optional_u32(
                min_tcb_evaluation_data_number, "min_tcb_evaluation_data_number"
            ),
            "_binds_digest": None if binds is None else hashlib.sha256(binds).digest(),
        }
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def appraise(self, evidence: AppraisableEvidence) -> None:
        """Accept ``evidence`` silently or raise :class:`PolicyError` for the first check that fails.

        ``PolicyError.field`` is the evidence attribute that failed, ``actual`` its value (hex for bytes), and
        ``expected`` the requirement: the exact value, a tuple of allowed values, or a short relation such as
        ``">= 3"`` or ``"none of INTEL-SA-00334"``.
        """
        # 1. Evidence from the simulated platform proves nothing about real hardware.
        _check_flag(
            "simulated",
            evidence.simulated,
            self.allow_simulated,
            "the evidence comes from enklave's simulated platform, which this policy does not accept",
        )
        # 2. The host can read a debug enclave's memory, so its secrets are not secret.
        _check_flag(
            "debug",
            evidence.debug,
            self.allow_debug,
            "the enclave runs in debug mode, which this policy does not accept",
        )
        # 3. The enclave's identity: measurement, signer, product and version.
        _check_measurement("mr_enclave", self.mr_enclave, evidence.mr_enclave)
        _check_measurement("mr_signer", self.mr_signer, evidence.mr_signer)
        if self.isv_prod_id is not None and evidence.isv_prod_id != self.isv_prod_id:
            raise PolicyError(
                f"isv_prod_id is {evidence.isv_prod_id}, expected {self.isv_prod_id}",
                field="isv_prod_id",
                expected=self.isv_prod_id,
                actual=evidence.isv_prod_id,
            )
        if self.min_isv_svn is not None and evidence.isv_svn < self.min_isv_svn:
            raise PolicyError(
                f"isv_svn {evidence.isv_svn} is below the minimum {self.min_isv_svn}",
                field="isv_svn",
                expected=f">= {self.min_isv_svn}",
                actual=evidence.isv_svn,
            )
        # 4. The platform: its TCB status, the advisories that apply to it, and how recent the collateral that
        #    judged it is (its TCB evaluation data number, raised at each TCB recovery).
        self._check_tcb_status(evidence.tcb_status)
        self._check_advisories(evidence.advisory_ids)
        minimum = self.min_tcb_evaluation_data_number
        if minimum is not None and (number := evidence.tcb_evaluation_data_number) < minimum:
            raise PolicyError(
                f"the collateral's TCB evaluation data number {number} is below the minimum {minimum}",
                field="tcb_evaluation_data_number",
                expected=f">= {minimum}",
                actual=number,
            )
        # 5. What the enclave bound into its report.
        self._check_report_data(bytes(evidence.report_data))

    def _check_tcb_status(self, status: TcbStatus | str) -> None:
        value = status.value if isinstance(status, Enum) else status
        # An unknown status string is never accepted: it matches no member of the accepted set.
        accepted = any(value == member.value for member in self.accepted_tcb_statuses)
        if not accepted:
            expected = _ordered_statuses(self.accepted_tcb_statuses)
            raise PolicyError(
                f"TCB status {value} is not accepted (accepted: {', '.join(expected)})",
                field="tcb_status",
                expected=expected,
                actual=value,
            )

    def _check_advisories(self, advisory_ids: tuple[str, ...]) -> None:
        rejected = set(self.rejected_advisory_ids)
        for advisory in advisory_ids:
            if advisory.upper() in rejected:
                raise PolicyError(
                    f"advisory {advisory} applies to the platform and this policy rejects it",
                    field="advisory_ids",
                    expected=f"none of {', '.join(self.rejected_advisory_ids)}",
                    actual=tuple(advisory_ids),
                )

    def _check_report_data(self, actual: bytes) -> None:
        if self.report_data is not None:
            _require_report_data(
                actual, actual, self.report_data, "report_data does not equal the expected value"
            )
        elif self.report_data_prefix is not None:
            prefix = self.report_data_prefix
            _require_report_data(
                actual, actual[: len(prefix)], prefix, "report_data does not start with the expected prefix"
            )
        elif self._binds_digest is not None:
            digest = self._binds_digest
            # Only the first 32 bytes are bound; the enclave may use bytes 32..63 for anything.
            _require_report_data(
                actual,
                actual[: len(digest)],
                digest,
                "report_data[0:32] is not the SHA-256 of the bound data",
            )

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> EnclavePolicy:
        """Build a policy from a configuration mapping (a TOML table or a JSON object).

        Keys are the keyword arguments of :class:`EnclavePolicy`; byte values (measurements and the three
        report-data keys) are hex strings, several values are lists. Raises :class:`UsageError` on a value
        that is not a mapping, an unknown key or an invalid value.
        """
        if not isinstance(mapping, Mapping):
            raise UsageError(f"a policy mapping must be a mapping, got {type(mapping).__name__}")
        unknown = sorted(str(key) for key in mapping if key not in _MAPPING_KEYS)
        if unknown:
            raise UsageError(
                f"unknown policy key(s) {', '.join(unknown)}; known keys: {', '.join(_MAPPING_KEYS)}"
            )
        kwargs: dict[str, Any] = dict(mapping)
        for key in ("report_data", "report_data_prefix", "report_data_binds"):
            if key in kwargs and kwargs[key] is not None:
                kwargs[key] = options.parse_hex(kwargs[key], key)
        return cls(**kwargs)

    def to_mapping(self) -> dict[str, Any]:
        """The configuration mapping of this policy; ``EnclavePolicy.from_mapping(p.to_mapping()) == p``.

        Unset optional keys are left out (TOML has no null); bytes are lowercase hex, several values lists.
        """
        mapping: dict[str, Any] = {}
        if self.mr_enclave is not None:
            mapping["mr_enclave"] = [value.hex() for value in self.mr_enclave]
        if self.mr_signer is not None:
            mapping["mr_signer"] = [value.hex() for value in self.mr_signer]
        if self.isv_prod_id is not None:
            mapping["isv_prod_id"] = self.isv_prod_id
        if self.min_isv_svn is not None:
            mapping["min_isv_svn"] = self.min_isv_svn
        mapping["allow_debug"] = self.allow_debug
        mapping["accepted_tcb_statuses"] = list(_ordered_statuses(self.accepted_tcb_statuses))
        if self.rejected_advisory_ids:
            mapping["rejected_advisory_ids"] = list(self.rejected_advisory_ids)
        for key, value in (
            ("report_data", self.report_data),
            ("report_data_prefix", self.report_data_prefix),
            ("report_data_binds", self.report_data_binds),
        ):
            if value is not None:
                mapping[key] = value.hex()
        mapping["allow_simulated"] = self.allow_simulated
        if self.min_tcb_evaluation_data_number is not None:
            mapping["min_tcb_evaluation_data_number"] = self.min_tcb_evaluation_data_number
        return mapping

    def describe(self) -> list[str]:
        """One line per requirement, in the order :meth:`appraise` checks them."""
        lines = [
            f"simulated evidence: {'allowed' if self.allow_simulated else 'rejected'}",
            f"debug enclaves: {'allowed' if self.allow_debug else 'rejected'}",
            f"mr_enclave: {_describe_measurements(self.mr_enclave)}",
            f"mr_signer: {_describe_measurements(self.mr_signer)}",
            f"isv_prod_id: {'any' if self.isv_prod_id is None else self.isv_prod_id}",
            f"isv_svn: {'any' if self.min_isv_svn is None else f'>= {self.min_isv_svn}'}",
            f"tcb_status: one of {', '.join(_ordered_statuses(self.accepted_tcb_statuses))}",
            f"rejected advisories: {', '.join(self.rejected_advisory_ids) or 'none'}",
            "tcb_evaluation_data_number: "
            + (
                "any"
                if self.min_tcb_evaluation_data_number is None
                else f">= {self.min_tcb_evaluation_data_number}"
            ),
        ]
        if self.report_data is not None:
            lines.append(f"report_data: equals {self.report_data.hex()}")
        elif self.report_data_prefix is not None:
            lines.append(f"report_data: starts with {self.report_data_prefix.hex()}")
        elif self._binds_digest is not None:
            lines.append(
                f"report_data: bytes 0..31 are the SHA-256 of the bound data ({self._binds_digest.hex()}),"
                " bytes 32..63 unchecked"
            )
        else:
            lines.append("report_data: any")
        return lines

    def __repr__(self) -> str:
        arguments = ", ".join(f"{key}={value!r}" for key, value in self.to_mapping().items())
        return f"EnclavePolicy({arguments})"


_MAPPING_KEYS = (
    "mr_enclave",
    "mr_signer",
    "isv_prod_id",
    "min_isv_svn",
    "allow_debug",
    "accepted_tcb_statuses",
    "rejected_advisory_ids",
    "report_data",
    "report_data_prefix",
    "report_data_binds",
    "allow_simulated",
    "min_tcb_evaluation_data_number",
)


@dataclass(frozen=True, slots=True, init=False)
class AllOf(Policy):
    """Accepts evidence only if every child policy accepts it; an empty ``AllOf`` accepts nothing.

    :meth:`appraise` raises the first child's :class:`PolicyError` unchanged, or a :class:`PolicyError` with
    ``field="policies"`` when there are no children. Construction raises :class:`UsageError` if a child is not
    a :class:`Policy`.
    """

    policies: tuple[Policy, ...]

    def __init__(self, *policies: Policy) -> None:
        object.__setattr__(self, "policies", _children(policies, "AllOf"))

    def appraise(self, evidence: AppraisableEvidence) -> None:
        """Run every child in order; the first failure propagates."""
        if not self.policies:
            raise _empty_composite("AllOf")
        for policy in self.policies:
            policy.appraise(evidence)

    def describe(self) -> list[str]:
        """``all of:`` followed by each child's description, indented."""
        return ["all of:", *_describe_children(self.policies)]


@dataclass(frozen=True, slots=True, init=False)
class AnyOf(Policy):
    """Accepts evidence if at least one child policy accepts it; an empty ``AnyOf`` accepts nothing.

    When every child rejects, :meth:`appraise` raises one :class:`PolicyError` whose message lists each
    child's failure. Its ``expected`` and ``actual`` are tuples of the children's, its ``field`` is the
    children's common field when they all failed on the same one (otherwise ``""``), and its ``__cause__`` is
    an :class:`ExceptionGroup` of the children's errors. Only :class:`PolicyError` counts as a rejection; any
    other exception propagates. Construction raises :class:`UsageError` if a child is not a :class:`Policy`.
    """

    policies: tuple[Policy, ...]

    def __init__(self, *policies: Policy) -> None:
        object.__setattr__(self, "policies", _children(policies, "AnyOf"))

    def appraise(self, evidence: AppraisableEvidence) -> None:
        """Return as soon as a child accepts; raise a combined :class:`PolicyError` if none does."""
        if not self.policies:
            raise _empty_composite("AnyOf")
        failures: list[PolicyError] = []
        for policy in self.policies:
            try:
                policy.appraise(evidence)
            except PolicyError as exc:
                failures.append(exc)
            else:
                return
        fields = {failure.field for failure in failures}
        reasons = "; ".join(f"({index}) {failure}" for index, failure in enumerate(failures, start=1))
        raise PolicyError(
            f"no policy of AnyOf accepted the evidence: {reasons}",
            field=fields.pop() if len(fields) == 1 else "",
            expected=tuple(failure.expected for failure in failures),
            actual=tuple(failure.actual for failure in failures),
        ) from ExceptionGroup("every policy of AnyOf rejected the evidence", failures)

    def describe(self) -> list[str]:
        """``any of:`` followed by each child's description, indented."""
        return ["any of:", *_describe_children(self.policies)]


@dataclass(frozen=True, slots=True)
class UnsafeNoPolicy(Policy):
    """Accepts any evidence at all, including debug enclaves and simulated evidence.

    For tests and local experiments only. Every call to :meth:`appraise` logs a warning on the
    ``enklave.attestation.policy`` logger, so that its use never goes unnoticed. It never raises.
    """

    def appraise(self, evidence: AppraisableEvidence) -> None:
        """Accept ``evidence`` without looking at it, and log a warning."""
        _log.warning("UnsafeNoPolicy accepted evidence without appraising it; do not use it in production")

    def describe(self) -> list[str]:
        """A single line that says no appraisal happens."""
        return ["UNSAFE: no appraisal, any evidence is accepted"]


def _check_measurement(name: str, allowed: tuple[bytes, ...] | None, actual: bytes) -> None:
    if allowed is None:
        return
    actual = bytes(actual)
    # Every candidate is compared, so that the time taken does not depend on which one matched.
    matched = False
    for candidate in allowed:
        matched |= hmac.compare_digest(candidate, actual)
    if not matched:
        expected: str | tuple[str, ...]
        if len(allowed) == 1:
            expected = allowed[0].hex()
            requirement = f"expected {expected}"
        else:
            expected = tuple(value.hex() for value in allowed)
            requirement = f"expected one of {', '.join(expected)}"
        raise PolicyError(
            f"{name} is {actual.hex()}, {requirement}", field=name, expected=expected, actual=actual.hex()
        )


def _check_flag(name: str, value: bool, allowed: bool, message: str) -> None:
    # A flag of the evidence (simulated, debug) that, when set, the policy must explicitly allow.
    if value and not allowed:
        raise PolicyError(message, field=name, expected=False, actual=True)


def _require_report_data(actual: bytes, compared: bytes, expected: bytes, message: str) -> None:
    # ``compared`` is the part of the report data ``actual`` that must equal ``expected``: all of it, or a prefix.
    if not hmac.compare_digest(compared, expected):
        raise PolicyError(message, field="report_data", expected=expected.hex(), actual=actual.hex())


def _empty_composite(kind: str) -> PolicyError:
    return PolicyError(
        f"{kind} has no policies, and an empty composite accepts nothing",
        field="policies",
        expected="at least one policy",
        actual=0,
    )


def _children(policies: tuple[object, ...], kind: str) -> tuple[Policy, ...]:
    children: list[Policy] = []
    for policy in policies:
        if not isinstance(policy, Policy):
            raise UsageError(f"{kind} takes Policy objects, got {type(policy).__name__}")
        children.append(policy)
    return tuple(children)


def _describe_children(policies: tuple[Policy, ...]) -> list[str]:
    lines: list[str] = []
    for policy in policies:
        first, *rest = policy.describe() or [type(policy).__name__]
        lines.append(f"  - {first}")
        lines.extend(f"    {line}" for line in rest)
    return lines


def _describe_measurements(values: tuple[bytes, ...] | None) -> str:
    if values is None:
        return "any"
    if len(values) == 1:
        return values[0].hex()
    return "one of " + ", ".join(value.hex() for value in values)


def _ordered_statuses(statuses: frozenset[TcbStatus]) -> tuple[str, ...]:
    # The order of the enum (best to worst) reads better than an alphabetical one.
    return tuple(member.value for member in TcbStatus if member in statuses)
