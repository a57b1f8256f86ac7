"""The sealed blob: a versioned, self-describing binary format (documented in docs/sealing.md).

Layout, all integers little-endian::

    offset  size  field
    0       6     magic b"EKSEAL"
    6       1     version (1)
    7       1     policy: 1 = unique (MRENCLAVE), 2 = product (MRSIGNER + ISV PROD ID)
    8       2     ISV PROD ID of the sealing enclave
    10      2     ISV SVN the key was derived at
    12      16    CPU SVN the key was derived at
    28      32    key id (random per blob)
    60      12    AES-GCM nonce (random per blob)
    72      4     aad length A
    76      4     ciphertext length C (with the tag, so at least 16)
    80      A     aad (authenticated, not encrypted)
    80+A    C     ciphertext followed by the 16-byte GCM tag

The blob ends exactly there: truncated blobs and trailing bytes are rejected before any decryption. The 80-byte
header and the aad are the GCM associated data, so a change of any bit is detected on unseal.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Literal

from enklave.errors import InvalidSealedBlob, UsageError
from enklave.platform._base import KEY_ID_SIZE, KeyPolicy

__all__ = [
    "DEFAULT_LIMITS",
    "HEADER_SIZE",
    "MAGIC",
    "NONCE_SIZE",
    "TAG_SIZE",
    "VERSION",
    "SealPolicy",
    "SealedBlob",
    "SealingLimits",
    "encode_header",
    "policy_code",
]

SealPolicy = Literal["unique", "product"]
"""``"unique"``: only the same MRENCLAVE unseals. ``"product"``: the same MRSIGNER and ISV PROD ID, at the same or
a higher ISV SVN, unseals."""

MAGIC = b"EKSEAL"
VERSION = 1
NONCE_SIZE = 12
TAG_SIZE = 16
_CPU_SVN_SIZE = 16
_MAX_GCM_INPUT = (1 << 31) - 1

_HEADER = struct.Struct(f"<6sBBHH{_CPU_SVN_SIZE}s{KEY_ID_SIZE}s{NONCE_SIZE}sII")
HEADER_SIZE = _HEADER.size
"""Size of the fixed header (80 bytes): everything before the aad."""

_POLICY_CODES: dict[SealPolicy, int] = {
    "unique": int(KeyPolicy.MRENCLAVE),
    "product": int(KeyPolicy.MRSIGNER),
}
_POLICY_NAMES: dict[int, SealPolicy] = {code: name for name, code in _POLICY_CODES.items()}


@dataclass(frozen=True, slots=True)
class SealingLimits:
    """Size limits for sealing and unsealing, checked before any cryptographic work.

    ``max_data`` bounds the plaintext (default 1 GiB), ``max_aad`` the additional authenticated data (64 KiB).
    """

    max_data: int = 1 << 30
    max_aad: int = 64 << 10

    def __post_init__(self) -> None:
        if self.max_data < 0 or self.max_aad < 0:
            raise UsageError("sealing limits must not be negative")
        # AES-GCM in `cryptography` takes at most 2**31 - 1 bytes of input (ciphertext with tag when opening).
        if self.max_data > _MAX_GCM_INPUT - TAG_SIZE or self.max_aad > _MAX_GCM_INPUT - HEADER_SIZE:
            raise UsageError(f"sealing limits must stay below {_MAX_GCM_INPUT} bytes")

    @property
    def max_blob(self) -> int:
        """The largest blob these limits accept: header, maximal aad, maximal ciphertext and the tag."""
        return HEADER_SIZE + self.max_aad + self.max_data + TAG_SIZE


DEFAULT_LIMITS = SealingLimits()


def policy_code(policy: SealPolicy) -> KeyPolicy:
    """The EGETKEY key policy of a seal policy; raises UsageError on an unknown policy name."""
    code = _POLICY_CODES.get(policy)
    if code is None:
        raise UsageError(f"seal policy must be 'unique' or 'product', got {policy!r}")
    return KeyPolicy(code)


def encode_header(
    policy: SealPolicy, isv_prod_id: int, isv_svn: int, cpu_svn: bytes, key_id: bytes, nonce: bytes,
    aad_len: int, ciphertext_len: int,
) -> bytes:  # fmt: skip
    """The 80-byte version-1 header for these fields; raises UsageError when a field does not fit."""
    try:
        return _HEADER.pack(
            MAGIC, VERSION, _POLICY_CODES[policy], isv_prod_id, isv_svn, cpu_svn, key_id, nonce, aad_len,
            ciphertext_len,
        )  # fmt: skip
    except (KeyError, struct.error) as exc:
        raise UsageError(f"cannot encode a sealed blob header: {exc}") from exc


@dataclass(frozen=True, slots=True)
class SealedBlob:
    """A parsed sealed blob. Parsing proves only its structure; :func:`enklave.sealing.unseal` authenticates it.

    ``from_bytes(b).to_bytes() == b`` for every blob that parses. ``ciphertext`` includes the 16-byte GCM tag.
    Constructing one from Python with wrong field sizes raises :class:`~enklave.errors.UsageError`.
    """

    version: int
    policy: SealPolicy
    isv_prod_id: int
    isv_svn: int
    cpu_svn: bytes
    key_id: bytes
    nonce: bytes
    aad: bytes
    ciphertext: bytes

    def __post_init__(self) -> None:
        if self.version != VERSION:
            raise UsageError(f"sealed blob version must be {VERSION}, got {self.version}")
        policy_code(self.policy)
        for name, value in (("isv_prod_id", self.isv_prod_id), ("isv_svn", self.isv_svn)):
            if not 0 <= value <= 0xFFFF:
                raise UsageError(f"{name} must fit in 16 bits, got {value}")
        for name, raw, size in (("cpu_svn", self.cpu_svn, _CPU_SVN_SIZE), ("key_id", self.key_id, KEY_ID_SIZE),
                                ("nonce", self.nonce, NONCE_SIZE)):  # fmt: skip
            if len(raw) != size:
                raise UsageError(f"{name} must be {size} bytes, got {len(raw)}")
        if len(self.aad) > 0xFFFFFFFF or len(self.ciphertext) > 0xFFFFFFFF:
            raise UsageError("aad and ciphertext must fit the blob's 32-bit lengths")
        if len(self.ciphertext) < TAG_SIZE:
            raise UsageError(f"ciphertext must include the {TAG_SIZE}-byte tag")

    @property
    def header(self) -> bytes:
        """The 80-byte fixed header; together with :attr:`aad` it is the GCM associated data."""
        return encode_header(
            self.policy, self.isv_prod_id, self.isv_svn, self.cpu_svn, self.key_id, self.nonce, len(self.aad),
            len(self.ciphertext),
        )  # fmt: skip

    @property
    def associated_data(self) -> bytes:
        """What GCM authenticates besides the ciphertext: the header followed by the aad."""
        return self.header + self.aad

    def to_bytes(self) -> bytes:
        """The blob's encoding: header, aad, ciphertext with tag."""
        return self.header + self.aad + self.ciphertext

    @classmethod
    def from_bytes(cls, data: bytes, *, limits: SealingLimits = DEFAULT_LIMITS) -> SealedBlob:
        """Parse a blob; raises :class:`~enklave.errors.InvalidSealedBlob` on a wrong magic, unknown version or
        policy, truncation, trailing bytes, or a size above ``limits``. Nothing is decrypted here."""
        # 1. Bound the input before reading it.
        size = len(data)
        if size > limits.max_blob:
            raise InvalidSealedBlob(f"sealed blob of {size} bytes exceeds the limit of {limits.max_blob}")
        if size < HEADER_SIZE:
            raise InvalidSealedBlob(
                f"sealed blob is truncated: {size} bytes, the header alone is {HEADER_SIZE}"
            )
        # 2. The fixed header: magic, version and policy first, so that other formats fail clearly.
        fields = _HEADER.unpack_from(data)
        magic, version, code, isv_prod_id, isv_svn, cpu_svn, key_id, nonce, aad_len, ct_len = fields
        if magic != MAGIC:
            raise InvalidSealedBlob("not a sealed blob: wrong magic")
        if version != VERSION:
            raise InvalidSealedBlob(
                f"unsupported sealed blob version {version} (this enklave reads {VERSION})"
            )
        policy = _POLICY_NAMES.get(code)
        if policy is None:
            raise InvalidSealedBlob(f"unknown seal policy code {code}")
        # 3. The declared sizes: within the limits, and exactly what follows the header.
        if aad_len > limits.max_aad:
            raise InvalidSealedBlob(
                f"sealed blob aad of {aad_len} bytes exceeds the limit of {limits.max_aad}"
            )
        if ct_len < TAG_SIZE:
            raise InvalidSealedBlob(f"sealed blob ciphertext of {ct_len} bytes is shorter than the GCM tag")
        if ct_len - TAG_SIZE > limits.max_data:
            raise InvalidSealedBlob(f"sealed data exceeds the limit of {limits.max_data} bytes")
        expected = HEADER_SIZE + aad_len + ct_len
        if size != expected:
            problem = "truncated" if size < expected else "followed by trailing bytes"
            raise InvalidSealedBlob(f"sealed blob is {problem}: {size} bytes, its header declares {expected}")
        aad = bytes(data[HEADER_SIZE : HEADER_SIZE + aad_len])
        ciphertext = bytes(data[HEADER_SIZE + aad_len :])
        try:
            return cls(version, policy, isv_prod_id, isv_svn, cpu_svn, key_id, nonce, aad, ciphertext)
        except UsageError as exc:  # Unreachable after the checks above; kept so parsing raises one type.
            raise InvalidSealedBlob(f"malformed sealed blob: {exc}") from exc
