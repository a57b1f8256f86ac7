"""The key broker's key models: what kind of key, its public part, and the record storage keeps.

A :class:`KeySpec` says what to create (AES-256, RSA 2048/3072/4096, EC P-256/P-384); a :class:`KeyRecord` is
what storage holds for a key: its name, spec, release policy, times, the public JWK of an asymmetric key, and
the key material **encrypted** (AES-256-GCM under the KBS enclave's key-encryption key, see
:func:`record_aad`). Nothing in this module touches key material in clear; the enclave does.

This module is imported by the KBS enclave: it must not import the host, storage or HTTP stacks.

Errors: a create request or key name that is not acceptable raises :class:`~enklave.errors.BoundaryError`
(it came from a client); a stored record that does not parse raises :class:`~enklave.errors.BadDataError`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from enklave._json import loads
from enklave.attestation._jwks import b64url_decode, b64url_encode
from enklave.errors import BadDataError, BoundaryError
from enklave.services.kbs.release_policy import ReleasePolicy

__all__ = [
    "EC_CURVES",
    "KEY_TYPES",
    "POLICY_CONTENT_TYPE",
    "RSA_SIZES",
    "KeyRecord",
    "KeySpec",
    "check_key_name",
    "key_view",
    "policy_from_request",
    "record_aad",
]

#: Key types the KBS creates: ``oct`` (AES-256), ``RSA`` and ``EC`` (the AKV names, ``-HSM`` suffix accepted).
KEY_TYPES: Final = ("oct", "RSA", "EC")
#: RSA modulus sizes the KBS creates.
RSA_SIZES: Final = (2048, 3072, 4096)
#: EC curves the KBS creates (JWK names).
EC_CURVES: Final = ("P-256", "P-384")
#: The content type of a release policy in Azure Key Vault's ``{"contentType", "data"}`` envelope.
POLICY_CONTENT_TYPE: Final = "application/json; charset=utf-8"
_AES_BITS: Final = 256
_NAME: Final = re.compile(r"[A-Za-z0-9-]{1,127}")
_AAD_LABEL: Final = b"enklave kbs key record v1\x00"
_RECORD_VERSION: Final = 1


def check_key_name(name: object) -> str:
    """Return ``name`` if it is a key name (1 to 127 ASCII letters, digits and ``-``, as Azure Key Vault
    allows); raise :class:`BoundaryError` otherwise."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise BoundaryError("a key name is 1 to 127 characters: ASCII letters, digits and '-'")
    return name


@dataclass(frozen=True, slots=True)
class KeySpec:
    """What kind of key: ``kty`` (``oct``, ``RSA``, ``EC``) and its ``size`` (bits; AES and RSA) or ``curve``
    (EC). Built only through :meth:`parse` or with values it accepts; construction raises
    :class:`BoundaryError` for anything else."""

    kty: str
    size: int | None = None
    curve: str | None = None

    def __post_init__(self) -> None:
        if self.kty == "oct":
            ok = self.size == _AES_BITS and self.curve is None
        elif self.kty == "RSA":
            ok = self.size in RSA_SIZES and self.curve is None
        elif self.kty == "EC":
            ok = self.curve in EC_CURVES and self.size is None
        else:
            ok = False
        if not ok:
            raise BoundaryError(
                "key type must be oct (key_size 256), RSA (key_size 2048, 3072 or 4096) or EC (crv P-256 or P-384)"
            )

    @classmethod
    def parse(cls, kty: object, key_size: object = None, crv: object = None) -> KeySpec:
        """The spec from a create request's ``kty``, ``key_size`` and ``crv`` (Azure Key Vault's names; an
        ``-HSM`` suffix is accepted and dropped, defaults: AES 256, RSA 2048, EC P-256)."""
        if not isinstance(kty, str):
            raise BoundaryError("kty must be a string: oct, RSA or EC")
        base = kty.removesuffix("-HSM")
        if key_size is not None and (isinstance(key_size, bool) or not isinstance(key_size, int)):
            raise BoundaryError("key_size must be an integer")
        if crv is not None and not isinstance(crv, str):
            raise BoundaryError("crv must be a string")
        if base == "oct":
            return cls("oct", size=_AES_BITS if key_size is None else key_size, curve=crv)
        if base == "RSA":
            return cls("RSA", size=2048 if key_size is None else key_size, curve=crv)
        if base == "EC":
            return cls("EC", size=key_size, curve="P-256" if crv is None else crv)
        raise BoundaryError("kty must be oct, RSA or EC")

    def to_mapping(self) -> dict[str, Any]:
        """``{"kty", "key_size"}`` or ``{"kty", "crv"}``."""
        if self.kty == "EC":
            return {"kty": self.kty, "crv": self.curve}
        return {"kty": self.kty, "key_size": self.size}


def record_aad(name: str, spec: KeySpec, policy_json: str) -> bytes:
    """The associated data that binds encrypted key material to its name, spec and release policy.

    Whoever can write storage (the host, a database administrator) therefore cannot give a key a weaker policy,
    another name or another type: the enclave's decryption fails. Policy changes go through the enclave,
    which re-encrypts under the new binding.
    """
    binding = json.dumps(
        {"name": name, "spec": spec.to_mapping(), "policy": hashlib.sha256(policy_json.encode()).hexdigest()},
        sort_keys=True,
        separators=(",", ":"),
    )
    return _AAD_LABEL + binding.encode("utf-8")


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """One key as storage holds it.

    ``encrypted`` is ``nonce (12 bytes) || AES-256-GCM ciphertext and tag`` of the key material under the
    enclave's key-encryption key, with :func:`record_aad` as associated data; ``public_jwk`` is the public
    key of an asymmetric key (``None`` for ``oct``); ``policy_json`` is the release policy in canonical
    JSON; ``created`` and ``updated`` are Unix times.
    """

    name: str
    spec: KeySpec
    policy_json: str
    created: int
    updated: int
    public_jwk: Mapping[str, Any] | None
    encrypted: bytes

    def to_json(self) -> bytes:
        """The stored form (JSON, the ciphertext in base64)."""
        document = {
            "version": _RECORD_VERSION,
            "name": self.name,
            "spec": self.spec.to_mapping(),
            "policy": self.policy_json,
            "created": self.created,
            "updated": self.updated,
            "public_jwk": dict(self.public_jwk) if self.public_jwk is not None else None,
            "encrypted": base64.b64encode(self.encrypted).decode("ascii"),
        }
        return json.dumps(document, sort_keys=True, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> KeyRecord:
        """Parse a stored record; raises :class:`BadDataError` when it is not one."""
        try:
            document = loads(data)
            if not isinstance(document, dict) or document.get("version") != _RECORD_VERSION:
                raise BadDataError("the stored key record has an unknown layout")
            spec_doc = document["spec"]
            spec = KeySpec.parse(spec_doc["kty"], spec_doc.get("key_size"), spec_doc.get("crv"))
            public = document["public_jwk"]
            record = cls(
                name=check_key_name(document["name"]),
                spec=spec,
                policy_json=str(document["policy"]),
                created=int(document["created"]),
                updated=int(document["updated"]),
                public_jwk=dict(public) if isinstance(public, dict) else None,
                encrypted=base64.b64decode(document["encrypted"], validate=True),
            )
        except BadDataError:
            raise
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise BadDataError("the stored key record is damaged") from exc
        return record


def policy_from_request(value: object) -> str:
    """A release policy given as Azure's ``{"contentType", "data": base64url}`` envelope or as the policy
    object itself; returns its canonical JSON. Raises :class:`InvalidPolicy` or :class:`BoundaryError`."""
    if isinstance(value, dict) and "data" in value:
        data = value["data"]
        if not isinstance(data, str):
            raise BoundaryError("release_policy.data must be base64url text")
        try:
            text = b64url_decode(data.rstrip("="), "release_policy.data")
        except BadDataError as exc:
            raise BoundaryError(f"release_policy.data is not base64url: {exc}") from exc
        return ReleasePolicy.from_json(text).to_json()
    if isinstance(value, dict):
        return ReleasePolicy.from_json(value).to_json()
    raise BoundaryError("release_policy must be an object ({contentType, data} or the policy itself)")


def key_view(record: KeyRecord) -> dict[str, Any]:
    """What clients see of a key: metadata, the public key of asymmetric keys, the policy; no key material."""
    key: dict[str, Any] = {"kid": record.name, "kty": record.spec.kty}
    if record.public_jwk is not None:
        key.update({name: value for name, value in record.public_jwk.items() if name != "kty"})
        key["key_ops"] = ["verify", "encrypt", "wrapKey"] if record.spec.kty == "RSA" else ["verify"]
    else:
        key["key_size"] = record.spec.size
    return {
        "key": key,
        "attributes": {
            "enabled": True,
            "exportable": True,
            "created": record.created,
            "updated": record.updated,
        },
        "release_policy": {
            "contentType": POLICY_CONTENT_TYPE,
            "data": b64url_encode(record.policy_json.encode("utf-8")),
        },
    }
