"""SIGSTRUCT, the enclave signature structure that EINIT checks before an enclave may run.

Layout from the Intel SDM, Vol. 3D, "Enclave Signature Structure (SIGSTRUCT)" (1808 bytes, little-endian)::

    offset size field            offset size field
    0      16   HEADER           900    4    MISCSELECT
    16     4    VENDOR           904    4    MISCMASK
    20     4    DATE (BCD)       908    4    reserved
    24     16   HEADER2          912    16   ISVFAMILYID
    40     4    SWDEFINED        928    16   ATTRIBUTES
    44     84   reserved         944    16   ATTRIBUTEMASK
    128    384  MODULUS (LE)     960    32   ENCLAVEHASH (MRENCLAVE)
    512    4    EXPONENT (3)     992    16   reserved
    516    384  SIGNATURE (LE)   1008   16   ISVEXTPRODID
                                 1024   2    ISVPRODID
                                 1026   2    ISVSVN
                                 1028   12   reserved
                                 1040   384  Q1 (LE)
                                 1424   384  Q2 (LE)

The signature is RSA-3072 with public exponent 3, PKCS#1 v1.5 over SHA-256 of bytes [0:128] and [900:1028]
concatenated. Q1 and Q2 let the CPU check it without a division: Q1 = floor(s^2 / n) and
Q2 = floor((s^3 - Q1 * s * n) / n). MRSIGNER is SHA-256 of the 384-byte little-endian modulus.

This module is pure (layer 1): no I/O, no clock. The signing date is a parameter.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import struct
from dataclasses import dataclass, replace

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from enklave.errors import InvalidBundle, LaunchError, UsageError
from enklave.sgx.report import Attributes, MrEnclave, MrSigner

__all__ = [
    "DEFAULT_ATTRIBUTE_MASK",
    "DEFAULT_MISC_MASK",
    "SIGSTRUCT_EXPONENT",
    "SIGSTRUCT_HEADER",
    "SIGSTRUCT_HEADER2",
    "SIGSTRUCT_KEY_BITS",
    "SIGSTRUCT_SIZE",
    "Sigstruct",
    "mr_signer_of",
]

SIGSTRUCT_SIZE = 1808
SIGSTRUCT_HEADER = bytes.fromhex("06000000E10000000000010000000000")
SIGSTRUCT_HEADER2 = bytes.fromhex("01010000600000006000000001000000")
SIGSTRUCT_EXPONENT = 3
SIGSTRUCT_KEY_BITS = 3072
_KEY_SIZE = SIGSTRUCT_KEY_BITS // 8

DEFAULT_MISC_MASK = 0xFFFFFFFF
"""Every MISCSELECT bit is enforced: the enclave runs only with exactly the MISCSELECT it was signed with."""

DEFAULT_ATTRIBUTE_MASK = Attributes(0xFFFFFFFFFFFFFFFF, 0x3)
"""Every ATTRIBUTES flag is enforced (so a debug signature never launches as production or the reverse, and
PROVISIONKEY/KSS cannot be added); of XFRM only x87 and SSE (bits 0 and 1) are enforced, leaving the other XSAVE
features to the platform, as the SGX SDK and Gramine do for portable enclaves."""

# HEADER VENDOR DATE HEADER2 SWDEFINED reserved(84) MODULUS EXPONENT SIGNATURE MISCSELECT MISCMASK reserved(4)
# ISVFAMILYID ATTRIBUTES ATTRIBUTEMASK ENCLAVEHASH reserved(16) ISVEXTPRODID ISVPRODID ISVSVN reserved(12) Q1 Q2
_LAYOUT = struct.Struct("<16sII16sI84s384sI384sII4s16s16s16s32s16s16sHH12s384s384s")
_SIGNED_HEAD = slice(0, 128)
_SIGNED_BODY = slice(900, 1028)


def _bcd_date(date: datetime.date) -> int:
    # The SGX SDK stores the date as the u32 0xYYYYMMDD, each decimal digit in one nibble.
    return int(f"{date.year:04d}{date.month:02d}{date.day:02d}", 16)


def _to_le(value: int) -> bytes:
    return value.to_bytes(_KEY_SIZE, "little")


def _check_key(public: rsa.RSAPublicKey) -> rsa.RSAPublicNumbers:
    numbers = public.public_numbers()
    if public.key_size != SIGSTRUCT_KEY_BITS or numbers.e != SIGSTRUCT_EXPONENT:
        raise UsageError(
            f"an SGX signing key must be RSA-3072 with public exponent 3, "
            f"got RSA-{public.key_size} with exponent {numbers.e}"
        )
    return numbers


def _quotients(signature: int, modulus: int) -> tuple[int, int]:
    q1, remainder = divmod(signature * signature, modulus)
    # (s^3 - Q1*s*n) / n == (s^2 mod n) * s / n, without forming s^3.
    q2 = (remainder * signature) // modulus
    return q1, q2


def mr_signer_of(public_key: rsa.RSAPublicKey) -> MrSigner:
    """MRSIGNER for a signing key: SHA-256 of its modulus as 384 little-endian bytes (as EINIT computes it).

    Raises :class:`UsageError` unless the key is RSA-3072 with exponent 3.
    """
    numbers = _check_key(public_key)
    return MrSigner(hashlib.sha256(_to_le(numbers.n)).digest())


@dataclass(frozen=True, slots=True)
class Sigstruct:
    """A SIGSTRUCT, byte-exact: ``Sigstruct.from_bytes(b).to_bytes() == b`` for every 1808-byte ``b`` with the
    two constant headers, reserved bytes included.

    Parsing checks only the format; :meth:`verify` checks the signature the way EINIT does. Build signed
    instances with :meth:`sign`. ``modulus``, ``signature``, ``q1`` and ``q2`` are kept little-endian as stored.
    """

    header: bytes
    vendor: int
    date: int
    header2: bytes
    sw_defined: int
    reserved1: bytes
    modulus: bytes
    exponent: int
    signature: bytes
    misc_select: int
    misc_mask: int
    reserved2: bytes
    isv_family_id: bytes
    attributes: Attributes
    attribute_mask: Attributes
    enclave_hash: MrEnclave
    reserved3: bytes
    isv_ext_prod_id: bytes
    isv_prod_id: int
    isv_svn: int
    reserved4: bytes
    q1: bytes
    q2: bytes

    def __post_init__(self) -> None:
        for name, size in _BYTE_FIELDS:
            if len(getattr(self, name)) != size:
                raise UsageError(f"SIGSTRUCT {name} must be {size} bytes, got {len(getattr(self, name))}")
        for name, bits in _INT_FIELDS:
            value = getattr(self, name)
            if not 0 <= value < (1 << bits):
                raise UsageError(f"SIGSTRUCT {name} must fit in {bits} bits, got {value}")

    @classmethod
    def from_bytes(cls, data: bytes) -> Sigstruct:
        """Parse exactly 1808 bytes; raises :class:`InvalidBundle` on a wrong size or wrong constant headers."""
        if len(data) != SIGSTRUCT_SIZE:
            raise InvalidBundle(f"a SIGSTRUCT is {SIGSTRUCT_SIZE} bytes, got {len(data)}")
        f = _LAYOUT.unpack(bytes(data))
        if f[0] != SIGSTRUCT_HEADER:
            raise InvalidBundle("SIGSTRUCT HEADER is not 06000000E10000000000010000000000")
        if f[3] != SIGSTRUCT_HEADER2:
            raise InvalidBundle("SIGSTRUCT HEADER2 is not 01010000600000006000000001000000")
        return cls(
            f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], f[9], f[10], f[11], f[12],
            Attributes.from_bytes(f[13]), Attributes.from_bytes(f[14]), MrEnclave(f[15]), f[16], f[17], f[18],
            f[19], f[20], f[21], f[22],
        )  # fmt: skip

    def to_bytes(self) -> bytes:
        """The 1808-byte encoding."""
        return _LAYOUT.pack(
            self.header, self.vendor, self.date, self.header2, self.sw_defined, self.reserved1, self.modulus,
            self.exponent, self.signature, self.misc_select, self.misc_mask, self.reserved2, self.isv_family_id,
            self.attributes.to_bytes(), self.attribute_mask.to_bytes(), self.enclave_hash, self.reserved3,
            self.isv_ext_prod_id, self.isv_prod_id, self.isv_svn, self.reserved4, self.q1, self.q2,
        )  # fmt: skip

    def signed_bytes(self) -> bytes:
        """The 256 bytes the signature covers: bytes [0:128] (header) and [900:1028] (body)."""
        raw = self.to_bytes()
        return raw[_SIGNED_HEAD] + raw[_SIGNED_BODY]

    @property
    def mr_signer(self) -> MrSigner:
        """SHA-256 of the 384-byte little-endian modulus: the signer identity EINIT puts in SECS.MRSIGNER."""
        return MrSigner(hashlib.sha256(self.modulus).digest())

    @property
    def debug(self) -> bool:
        """True when the SIGSTRUCT asks for a debug enclave (ATTRIBUTES.DEBUG)."""
        return self.attributes.debug

    @property
    def signing_date(self) -> datetime.date | None:
        """DATE decoded from BCD ``0xYYYYMMDD``, or None when it is not a valid BCD date."""
        text = f"{self.date:08x}"
        if not text.isdigit():
            return None
        try:
            return datetime.date(int(text[:4]), int(text[4:6]), int(text[6:]))
        except ValueError:
            return None

    @classmethod
    def sign(
        cls,
        private_key: rsa.RSAPrivateKey,
        *,
        enclave_hash: bytes,
        isv_prod_id: int,
        isv_svn: int,
        attributes: Attributes,
        attribute_mask: Attributes = DEFAULT_ATTRIBUTE_MASK,
        misc_select: int = 0,
        misc_mask: int = DEFAULT_MISC_MASK,
        date: datetime.date,
        vendor: int = 0,
        sw_defined: int = 0,
        isv_family_id: bytes = bytes(16),
        isv_ext_prod_id: bytes = bytes(16),
    ) -> Sigstruct:
        """Build and sign a SIGSTRUCT for ``enclave_hash`` (MRENCLAVE) with an RSA-3072, e=3 key.

        Raises :class:`UsageError` for any other key or for out-of-range fields. The result verifies with
        :meth:`verify`.
        """
        if not isinstance(private_key, rsa.RSAPrivateKey):
            raise UsageError("an SGX signing key must be an RSA private key")
        numbers = _check_key(private_key.public_key())
        unsigned = cls(
            header=SIGSTRUCT_HEADER,
            vendor=vendor,
            date=_bcd_date(date),
            header2=SIGSTRUCT_HEADER2,
            sw_defined=sw_defined,
            reserved1=bytes(84),
            modulus=_to_le(numbers.n),
            exponent=SIGSTRUCT_EXPONENT,
            signature=bytes(_KEY_SIZE),
            misc_select=misc_select,
            misc_mask=misc_mask,
            reserved2=bytes(4),
            isv_family_id=isv_family_id,
            attributes=attributes,
            attribute_mask=attribute_mask,
            enclave_hash=MrEnclave(bytes(enclave_hash)),
            reserved3=bytes(16),
            isv_ext_prod_id=isv_ext_prod_id,
            isv_prod_id=isv_prod_id,
            isv_svn=isv_svn,
            reserved4=bytes(12),
            q1=bytes(_KEY_SIZE),
            q2=bytes(_KEY_SIZE),
        )
        # The signature, Q1 and Q2 lie outside the signed regions, so signing the unsigned form is exact.
        big_endian = private_key.sign(unsigned.signed_bytes(), padding.PKCS1v15(), hashes.SHA256())
        signature = int.from_bytes(big_endian, "big")
        q1, q2 = _quotients(signature, numbers.n)
        return replace(unsigned, signature=_to_le(signature), q1=_to_le(q1), q2=_to_le(q2))

    def verify(self) -> None:
        """Check the signature as EINIT does; raises :class:`LaunchError` if it does not hold.

        Steps: (1) EXPONENT is 3; (2) the modulus is a 3072-bit number; (3) the PKCS#1 v1.5 SHA-256 signature
        verifies over :meth:`signed_bytes` under the modulus it carries; (4) Q1 and Q2 match the signature.
        Only the signature is checked here: that the signer is the expected one is the caller's policy.
        """
        # 1. SGX only accepts exponent 3.
        if self.exponent != SIGSTRUCT_EXPONENT:
            raise LaunchError(f"SIGSTRUCT exponent must be 3, got {self.exponent}")
        # 2. The modulus must be a full 3072-bit odd number, as a key generated for SGX is.
        modulus = int.from_bytes(self.modulus, "little")
        if modulus.bit_length() != SIGSTRUCT_KEY_BITS or modulus % 2 == 0:
            raise LaunchError("SIGSTRUCT modulus is not a 3072-bit RSA modulus")
        signature = int.from_bytes(self.signature, "little")
        if signature >= modulus:
            raise LaunchError("SIGSTRUCT signature is not smaller than the modulus")
        # 3. The signature over the two signed regions.
        try:
            public = rsa.RSAPublicNumbers(SIGSTRUCT_EXPONENT, modulus).public_key()
            public.verify(
                signature.to_bytes(_KEY_SIZE, "big"), self.signed_bytes(), padding.PKCS1v15(), hashes.SHA256()
            )
        except InvalidSignature as exc:
            raise LaunchError("SIGSTRUCT signature does not verify under the modulus it carries") from exc
        except ValueError as exc:
            raise LaunchError(f"SIGSTRUCT key is not a usable RSA key: {exc}") from exc
        # 4. Q1 and Q2 are what the CPU uses to check the signature; wrong values fail EINIT.
        q1, q2 = _quotients(signature, modulus)
        if not (hmac.compare_digest(self.q1, _to_le(q1)) and hmac.compare_digest(self.q2, _to_le(q2))):
            raise LaunchError("SIGSTRUCT Q1/Q2 do not match the signature")

    def to_dict(self) -> dict[str, object]:
        """Every field as JSON-ready values (hex for byte strings, names for attribute flags)."""
        signing_date = self.signing_date
        return {
            "header": self.header.hex(),
            "vendor": self.vendor,
            "date": signing_date.isoformat() if signing_date else f"{self.date:08x}",
            "header2": self.header2.hex(),
            "sw_defined": self.sw_defined,
            "modulus": self.modulus.hex(),
            "exponent": self.exponent,
            "signature": self.signature.hex(),
            "misc_select": self.misc_select,
            "misc_mask": self.misc_mask,
            "isv_family_id": self.isv_family_id.hex(),
            "attributes": _attributes_view(self.attributes),
            "attribute_mask": _attributes_view(self.attribute_mask),
            "enclave_hash": self.enclave_hash.hex(),
            "isv_ext_prod_id": self.isv_ext_prod_id.hex(),
            "isv_prod_id": self.isv_prod_id,
            "isv_svn": self.isv_svn,
            "q1": self.q1.hex(),
            "q2": self.q2.hex(),
            "mrsigner": self.mr_signer.hex(),
            "debug": self.debug,
        }  # fmt: skip


def _attributes_view(attributes: Attributes) -> dict[str, object]:
    return {
        "flags": f"{attributes.flags:016x}",
        "xfrm": f"{attributes.xfrm:016x}",
        "flag_names": attributes.flag_names(),
    }


_BYTE_FIELDS = (
    ("header", 16), ("header2", 16), ("reserved1", 84), ("modulus", 384), ("signature", 384), ("reserved2", 4),
    ("isv_family_id", 16), ("enclave_hash", 32), ("reserved3", 16), ("isv_ext_prod_id", 16), ("reserved4", 12),
    ("q1", 384), ("q2", 384),
)  # fmt: skip
_INT_FIELDS = (
    ("vendor", 32), ("date", 32), ("sw_defined", 32), ("exponent", 32), ("misc_select", 32), ("misc_mask", 32),
    ("isv_prod_id", 16), ("isv_svn", 16),
)  # fmt: skip
