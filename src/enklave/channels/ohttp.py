"""Oblivious HTTP message encapsulation (RFC 9458) over HPKE base mode (RFC 9180).

A gateway publishes a :class:`KeyConfig` (RFC 9458 §3); its hash can be bound into attestation report data so
that a client knows the key lives in the enclave. :class:`OhttpClient` encapsulates a request to that key
(§4.3) and :class:`OhttpServer` removes the encapsulation and encrypts the response (§4.4) so that only the
client holding the matching :class:`ClientContext` can read it. This module does no I/O and knows nothing of
Binary HTTP: requests and responses are opaque bytes.

Errors: :class:`~enklave.errors.InvalidKey` for a malformed key configuration or key;
:class:`~enklave.errors.BadDataError` for a malformed, oversized or misaddressed encapsulated message (wrong key
id, unsupported suite); :class:`~enklave.errors.VerificationError` when AEAD authentication fails (tampering,
or a response opened with another request's context); :class:`~enklave.errors.UsageError` for caller mistakes.
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand
from pyhpke import ContextInterface, PyHPKEError

from enklave.channels import _hpke
from enklave.errors import BadDataError, InvalidKey, UsageError, VerificationError

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "REQUEST_LABEL",
    "RESPONSE_LABEL",
    "ClientContext",
    "KeyConfig",
    "OhttpClient",
    "OhttpServer",
    "ResponseContext",
    "SymmetricSuite",
]

REQUEST_LABEL = b"message/bhttp request"
"""The media type bound into the HPKE info of a request (RFC 9458 §4.3)."""
RESPONSE_LABEL = b"message/bhttp response"
"""The exporter context used to derive the response secret (RFC 9458 §4.4)."""
DEFAULT_MAX_MESSAGE_SIZE = 1 << 20
"""Largest encapsulated request or response accepted by default (1 MiB), checked before any cryptography."""

_HEADER = struct.Struct(">BHHH")


@dataclass(frozen=True, slots=True)
class SymmetricSuite:
    """One (KDF, AEAD) pair a key configuration offers (RFC 9458 §3.1, ``Symmetric Algorithms``)."""

    kdf_id: int
    aead_id: int

    @property
    def supported(self) -> bool:
        """Whether enklave implements this pair (HKDF-SHA256 with AES-128-GCM, AES-256-GCM or ChaCha20-Poly1305)."""
        return self.kdf_id == _hpke.KDF_HKDF_SHA256 and self.aead_id in (
            _hpke.AEAD_AES_128_GCM,
            _hpke.AEAD_AES_256_GCM,
            _hpke.AEAD_CHACHA20_POLY1305,
        )


@dataclass(frozen=True, slots=True)
class KeyConfig:
    """An OHTTP key configuration (RFC 9458 §3.1): key id, KEM, public key and the symmetric suites offered.

    Built instances always hold a supported KEM, a public key of the KEM's size and at least one suite; suites
    enklave does not implement are kept (so foreign configurations round-trip) but never chosen. Construction
    raises :class:`InvalidKey` when these do not hold.
    """

    key_id: int
    kem_id: int
    public_key: bytes
    suites: tuple[SymmetricSuite, ...]

    def __post_init__(self) -> None:
        if not 0 <= self.key_id <= 0xFF:
            raise InvalidKey("OHTTP key id must fit in one byte")
        if self.kem_id not in (_hpke.KEM_X25519_HKDF_SHA256, _hpke.KEM_P256_HKDF_SHA256):
            raise InvalidKey(f"unsupported OHTTP KEM 0x{self.kem_id:04x}")
        if len(self.public_key) != _hpke.kem_enc_size(self.kem_id):
            raise InvalidKey(f"OHTTP public key must be {_hpke.kem_enc_size(self.kem_id)} bytes for this KEM")
        if not self.suites:
            raise InvalidKey("OHTTP key configuration lists no symmetric algorithms")
        for suite in self.suites:
            if not (0 <= suite.kdf_id <= 0xFFFF and 0 <= suite.aead_id <= 0xFFFF):
                raise InvalidKey("OHTTP algorithm identifiers must fit in two bytes")

    def to_bytes(self) -> bytes:
        """Encode as RFC 9458 §3.1: key_id(8), kem_id(16), public key(Npk), length(16), (kdf_id, aead_id)*."""
        algorithms = b"".join(struct.pack(">HH", s.kdf_id, s.aead_id) for s in self.suites)
        header = struct.pack(">BH", self.key_id, self.kem_id)
        return header + self.public_key + struct.pack(">H", len(algorithms)) + algorithms

    @classmethod
    def from_bytes(cls, data: bytes) -> KeyConfig:
        """Decode one key configuration (RFC 9458 §3.1); trailing bytes are rejected.

        Raises :class:`InvalidKey` if the encoding is truncated, has trailing bytes, names an unsupported KEM or
        has an algorithm list whose length is zero or not a multiple of four.
        """
        config, used = cls._decode(bytes(data))
        if used != len(data):
            raise InvalidKey("trailing bytes after OHTTP key configuration")
        return config

    @classmethod
    def _decode(cls, data: bytes) -> tuple[KeyConfig, int]:
        if len(data) < 3:
            raise InvalidKey("OHTTP key configuration is truncated")
        key_id, kem_id = struct.unpack_from(">BH", data, 0)
        try:
            npk = _hpke.kem_enc_size(kem_id)
        except UsageError as exc:
            raise InvalidKey(f"unsupported OHTTP KEM 0x{kem_id:04x}") from exc
        end_key = 3 + npk
        if len(data) < end_key + 2:
            raise InvalidKey("OHTTP key configuration is truncated")
        (length,) = struct.unpack_from(">H", data, end_key)
        if length == 0 or length % 4:
            raise InvalidKey("OHTTP symmetric algorithm list must be a non-empty multiple of 4 bytes")
        end = end_key + 2 + length
        if len(data) < end:
            raise InvalidKey("OHTTP key configuration is truncated")
        suites = tuple(
            SymmetricSuite(*struct.unpack_from(">HH", data, off)) for off in range(end_key + 2, end, 4)
        )
        return cls(key_id=key_id, kem_id=kem_id, public_key=data[3:end_key], suites=suites), end

    @staticmethod
    def encode_list(configs: list[KeyConfig] | tuple[KeyConfig, ...]) -> bytes:
        """Encode the ``application/ohttp-keys`` format (RFC 9458 §3.2): each config behind a 2-byte length."""
        out = bytearray()
        for config in configs:
            encoded = config.to_bytes()
            out += struct.pack(">H", len(encoded)) + encoded
        return bytes(out)

    @classmethod
    def decode_list(cls, data: bytes) -> tuple[KeyConfig, ...]:
        """Decode ``application/ohttp-keys`` (RFC 9458 §3.2).

        Configurations with an unsupported KEM are skipped, as §3.2 asks of clients. Raises :class:`InvalidKey`
        if a length prefix overruns the data, an entry is malformed, or no supported configuration remains.
        """
        data = bytes(data)
        configs: list[KeyConfig] = []
        offset = 0
        while offset < len(data):
            if len(data) - offset < 2:
                raise InvalidKey("truncated length prefix in OHTTP key configuration list")
            (length,) = struct.unpack_from(">H", data, offset)
            entry = data[offset + 2 : offset + 2 + length]
            if len(entry) != length:
                raise InvalidKey("OHTTP key configuration list entry overruns the data")
            offset += 2 + length
            if len(entry) >= 3 and struct.unpack_from(">H", entry, 1)[0] not in (
                _hpke.KEM_X25519_HKDF_SHA256,
                _hpke.KEM_P256_HKDF_SHA256,
            ):
                continue
            configs.append(cls.from_bytes(entry))
        if not configs:
            raise InvalidKey("OHTTP key configuration list holds no supported configuration")
        return tuple(configs)

    def hash(self) -> bytes:
        """SHA-256 of :meth:`to_bytes`: the value to bind into attestation report data for this key."""
        return hashlib.sha256(self.to_bytes()).digest()


def _aead(aead_id: int, key: bytes) -> AESGCM | ChaCha20Poly1305:
    if aead_id == _hpke.AEAD_CHACHA20_POLY1305:
        return ChaCha20Poly1305(key)
    return AESGCM(key)


def _response_keys(context: ContextInterface, enc: bytes, aead_id: int, nonce: bytes) -> tuple[bytes, bytes]:
    """RFC 9458 §4.4 steps 2 to 5: derive (aead_key, aead_nonce) of a response from the request's context."""
    params = _hpke.aead_params(aead_id)
    # 2. secret = context.Export("message/bhttp response", max(Nn, Nk))
    secret = context.export(RESPONSE_LABEL, max(params.nn, params.nk))
    # 3. salt = concat(enc, response_nonce); 4. prk = Extract(salt, secret) (HKDF-SHA256, RFC 5869 §2.2)
    mac = hmac.HMAC(enc + nonce, hashes.SHA256())
    mac.update(secret)
    prk = mac.finalize()
    # 5. aead_key = Expand(prk, "key", Nk); aead_nonce = Expand(prk, "nonce", Nn)
    key = HKDFExpand(hashes.SHA256(), params.nk, b"key").derive(prk)
    aead_nonce = HKDFExpand(hashes.SHA256(), params.nn, b"nonce").derive(prk)
    return key, aead_nonce


@dataclass(frozen=True, slots=True, eq=False)
class ResponseContext:
    """What the gateway keeps of one decapsulated request to encrypt its response (RFC 9458 §4.4)."""

    _context: ContextInterface = field(repr=False)
    _enc: bytes = field(repr=False)
    aead_id: int

    def encapsulate_response(
        self, response: bytes, *, test_only_response_nonce: bytes | None = None
    ) -> bytes:
        """Encrypt ``response`` for the client: returns ``response_nonce || ct`` (RFC 9458 §4.4).

        ``test_only_response_nonce`` fixes the random nonce for test vectors; production code must leave it
        unset. Raises :class:`UsageError` if a fixed nonce has the wrong length.
        """
        params = _hpke.aead_params(self.aead_id)
        size = max(params.nn, params.nk)
        # 1. response_nonce = random(max(Nn, Nk))
        nonce = os.urandom(size) if test_only_response_nonce is None else bytes(test_only_response_nonce)
        if len(nonce) != size:
            raise UsageError(f"response nonce must be {size} bytes")
        key, aead_nonce = _response_keys(self._context, self._enc, self.aead_id, nonce)
        # 6. ct = Seal(aead_key, aead_nonce, "", response); 7. enc_response = concat(response_nonce, ct)
        return nonce + _aead(self.aead_id, key).encrypt(aead_nonce, bytes(response), b"")


@dataclass(frozen=True, slots=True, eq=False)
class ClientContext:
    """What the client keeps of one encapsulated request to open its response (RFC 9458 §4.4)."""

    _context: ContextInterface = field(repr=False)
    _enc: bytes = field(repr=False)
    aead_id: int
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE

    def decapsulate_response(self, encapsulated_response: bytes) -> bytes:
        """Open a response to this request's encapsulation (RFC 9458 §4.4) and return its plaintext.

        Raises :class:`BadDataError` if the message is too short or larger than ``max_message_size``, and
        :class:`VerificationError` if authentication fails (tampered, or an answer to another request).
        """
        params = _hpke.aead_params(self.aead_id)
        size = max(params.nn, params.nk)
        data = bytes(encapsulated_response)
        if len(data) > self.max_message_size:
            raise BadDataError("encapsulated OHTTP response exceeds the size limit")
        if len(data) < size + params.nt:
            raise BadDataError("encapsulated OHTTP response is truncated")
        key, aead_nonce = _response_keys(self._context, self._enc, self.aead_id, data[:size])
        try:
            return _aead(self.aead_id, key).decrypt(aead_nonce, data[size:], b"")
        except InvalidTag as exc:
            raise VerificationError("OHTTP response does not authenticate") from exc


def _request_info(header: bytes) -> bytes:
    # RFC 9458 §4.3: info = concat(encode_str("message/bhttp request"), encode(1, 0), hdr).
    return REQUEST_LABEL + b"\x00" + header


class OhttpClient:
    """Encapsulates requests to one gateway key configuration (RFC 9458 §4.3).

    Uses ``suite`` if given (it must be offered by the configuration and supported), else the first supported
    suite of the configuration. Raises :class:`InvalidKey` if the configuration offers no supported suite and
    :class:`UsageError` if ``suite`` is not offered.
    """

    def __init__(
        self,
        key_config: KeyConfig,
        *,
        suite: SymmetricSuite | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        if suite is None:
            usable = [s for s in key_config.suites if s.supported]
            if not usable:
                raise InvalidKey("OHTTP key configuration offers no supported symmetric algorithms")
            suite = usable[0]
        elif suite not in key_config.suites or not suite.supported:
            raise UsageError(
                "the chosen OHTTP suite is not offered by the key configuration or not supported"
            )
        self.key_config = key_config
        self.suite = suite
        self.max_message_size = max_message_size

    def encapsulate_request(
        self, request: bytes, *, test_only_ephemeral_private_key: bytes | None = None
    ) -> tuple[bytes, ClientContext]:
        """Encrypt ``request``; return ``(hdr || enc || ct, context for the response)`` (RFC 9458 §4.3).

        ``test_only_ephemeral_private_key`` fixes the HPKE ephemeral key for test vectors; production code must
        leave it unset, since a reused ephemeral key links requests and reuses AEAD keys. Raises
        :class:`UsageError` if ``request`` is larger than ``max_message_size``.
        """
        request = bytes(request)
        if len(request) > self.max_message_size:
            raise UsageError("OHTTP request exceeds the size limit")
        config = self.key_config
        # 1. hdr = concat(key_id, kem_id, kdf_id, aead_id); 2. info = "message/bhttp request" || 0x00 || hdr
        header = _HEADER.pack(config.key_id, config.kem_id, self.suite.kdf_id, self.suite.aead_id)
        # 3. enc, sctxt = SetupBaseS(pkR, info); 4. ct = sctxt.Seal("", request)
        enc, context = _hpke.setup_base_sender(
            config.kem_id,
            self.suite.kdf_id,
            self.suite.aead_id,
            config.public_key,
            _request_info(header),
            ephemeral_private_key=test_only_ephemeral_private_key,
        )
        ct = context.seal(request, b"")
        # 5. enc_request = concat(hdr, enc, ct)
        return header + enc + ct, ClientContext(context, enc, self.suite.aead_id, self.max_message_size)


class OhttpServer:
    """Removes request encapsulation for one key configuration and its private key (RFC 9458 §4.3, §4.4).

    Raises :class:`UsageError` if ``private_key`` does not belong to ``key_config.public_key`` (or is
    malformed).
    """

    def __init__(
        self, key_config: KeyConfig, private_key: bytes, *, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    ) -> None:
        try:
            derived = _hpke.public_key_from_private(key_config.kem_id, bytes(private_key))
        except InvalidKey as exc:
            raise UsageError("OHTTP server private key is malformed") from exc
        if derived != key_config.public_key:
            raise UsageError("OHTTP server private key does not match the key configuration")
        self.key_config = key_config
        self._private_key = bytes(private_key)
        # Parsed once: a gateway decapsulates every request with it.
        self._recipient_key = _hpke.load_private_key(key_config.kem_id, self._private_key)
        self.max_message_size = max_message_size

    @classmethod
    def generate(
        cls,
        key_id: int = 0,
        *,
        kem_id: int = _hpke.KEM_X25519_HKDF_SHA256,
        suites: tuple[SymmetricSuite, ...] = (),
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> OhttpServer:
        """Create a server with a fresh key pair; ``suites`` defaults to every supported AEAD with HKDF-SHA256."""
        private_key = _hpke.generate_private_key(kem_id)
        offered = suites or tuple(
            SymmetricSuite(_hpke.KDF_HKDF_SHA256, a)
            for a in (_hpke.AEAD_AES_128_GCM, _hpke.AEAD_AES_256_GCM, _hpke.AEAD_CHACHA20_POLY1305)
        )
        config = KeyConfig(key_id, kem_id, _hpke.public_key_from_private(kem_id, private_key), offered)
        return cls(config, private_key, max_message_size=max_message_size)

    def decapsulate_request(self, encapsulated: bytes) -> tuple[bytes, ResponseContext]:
        """Decrypt an encapsulated request; return ``(request, context for the response)`` (RFC 9458 §4.3).

        Raises :class:`BadDataError` if the message is larger than ``max_message_size``, truncated, addressed to
        another key id or KEM, or uses a suite this configuration does not offer, and
        :class:`VerificationError` if the ciphertext does not authenticate.
        """
        data = bytes(encapsulated)
        config = self.key_config
        if len(data) > self.max_message_size:
            raise BadDataError("encapsulated OHTTP request exceeds the size limit")
        # 1. Parse hdr = concat(key_id, kem_id, kdf_id, aead_id) and check it against the configuration.
        if len(data) < _HEADER.size:
            raise BadDataError("encapsulated OHTTP request is truncated")
        key_id, kem_id, kdf_id, aead_id = _HEADER.unpack_from(data, 0)
        if key_id != config.key_id:
            raise BadDataError(f"OHTTP request is for unknown key id {key_id}")
        if kem_id != config.kem_id:
            raise BadDataError("OHTTP request KEM does not match the key configuration")
        suite = SymmetricSuite(kdf_id, aead_id)
        if suite not in config.suites or not suite.supported:
            raise BadDataError("OHTTP request uses a symmetric suite the key configuration does not offer")
        nenc = _hpke.kem_enc_size(kem_id)
        if len(data) < _HEADER.size + nenc + _hpke.aead_params(aead_id).nt:
            raise BadDataError("encapsulated OHTTP request is truncated")
        header = data[: _HEADER.size]
        enc = data[_HEADER.size : _HEADER.size + nenc]
        # 2. rctxt = SetupBaseR(enc, skR, info); 3. request = rctxt.Open("", ct)
        context = _hpke.setup_base_receiver(
            kem_id, kdf_id, aead_id, enc, self._recipient_key, _request_info(header)
        )
        try:
            request = context.open(data[_HEADER.size + nenc :], b"")
        except (PyHPKEError, InvalidTag) as exc:
            raise VerificationError("OHTTP request does not authenticate") from exc
        return request, ResponseContext(context, enc, aead_id)
