"""What the services answer, and the admin bearer-token check they share.

:class:`ServiceResponse` is an HTTP status and a JSON body; the ASGI apps turn it into a response
(:mod:`enklave.services._http`). :func:`check_admin` guards management operations with a bearer token compared
in constant time. Nothing here raises for bad requests: they become 4xx answers.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass
from typing import Any

from enklave.errors import TransportError

__all__ = ["Refused", "ServiceResponse", "bearer_token", "check_admin", "storage_failure"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ServiceResponse:
    """What the service answers: an HTTP status and a JSON body (``{"error": {"code", "message"}}`` for 4xx)."""

    status: int
    body: dict[str, Any]

    @classmethod
    def error(cls, status: int, code: str, message: str) -> ServiceResponse:
        """An error answer; ``message`` must not hold secrets (it goes to the client)."""
        return cls(status, {"error": {"code": code, "message": message}})


class Refused(Exception):
    """A request a service's enclave refuses; it travels to the host as ``{"error": refused.to_error()}`` and
    becomes an answer with HTTP ``status``. ``message`` goes to the client, so it must not hold secrets."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def to_error(self) -> dict[str, Any]:
        """``{"status", "code", "message"}``, the error object the enclave returns to its host."""
        return {"status": self.status, "code": self.code, "message": self.message}


def storage_failure(exc: TransportError) -> ServiceResponse:
    """The answer when storage fails: 503, without the database's message (it may name hosts or users)."""
    log.error("storage failed: %s", exc)
    return ServiceResponse.error(503, "ServiceUnavailable", "the service's storage is unavailable")


def bearer_token(authorization: str | None) -> str | None:
    """The credential of an ``Authorization: Bearer <token>`` header, or ``None`` for any other header."""
    if authorization is None:
        return None
    scheme, _, credential = authorization.partition(" ")
    return credential.strip() if scheme.lower() == "bearer" and credential.strip() else None


def check_admin(
    expected: str | None, authorization: str | None, *, what: str, disabled_code: str
) -> ServiceResponse | None:
    """``None`` when ``authorization`` carries the admin token ``expected``, else the refusal to answer.

    ``what`` names the guarded operations in messages (e.g. ``"key management"``); with no ``expected`` token
    they are disabled (403 ``disabled_code``). A missing bearer token is 401, a wrong one 403 ``Forbidden``.
    """
    if expected is None:
        return ServiceResponse.error(403, disabled_code, f"{what} is disabled: no admin token is configured")
    presented = bearer_token(authorization)
    if presented is None:
        return ServiceResponse.error(401, "Unauthorized", f"{what} needs an admin bearer token")
    # Hashing first gives compare_digest equal lengths, so the comparison leaks nothing about the length.
    if not hmac.compare_digest(
        hashlib.sha256(presented.encode("utf-8")).digest(),
        hashlib.sha256(expected.encode("utf-8")).digest(),
    ):
        return ServiceResponse.error(403, "Forbidden", "the admin token is not valid")
    return None
