"""``enklave.toml``: the configuration of one enclave, parsed strictly.

The ``[enclave]`` table says what the enclave is (name, entry module, files, product id, security version,
debug), how it runs (heap size, threads, the largest ecall/ocall frame, which host environment variables it
sees), and an optional top-level ``[gramine]`` table carries extra Gramine manifest options. Unknown keys and
tables are rejected, so a typo never silently changes an enclave. Every error is one
:class:`~enklave.errors.ConfigError` line that names the key.

Every field except ``files`` (whose matched files are measured themselves) is part of
:meth:`EnclaveConfig.canonical_bytes`, which the bundle measures into MRENCLAVE.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import cbor2

from enklave._home import read_limited
from enklave.errors import ConfigError

__all__ = [
    "CONFIG_FILENAME",
    "MAX_CONFIG_SIZE",
    "EnclaveConfig",
    "GramineValue",
    "check_relative_path",
    "parse_size",
    "read_config_text",
]

CONFIG_FILENAME = "enklave.toml"
MAX_CONFIG_SIZE = 1024 * 1024
PAGE_SIZE = 4096
MAX_HEAP_SIZE = 64 << 30
MAX_THREADS = 256
MIN_MESSAGE_SIZE = 4096
MAX_MESSAGE_SIZE = 1 << 30

GramineValue = str | int | bool | list[str]
"""A value of the ``[gramine]`` table: a string, an integer, a boolean or a list of strings."""

_NAME = re.compile(r"[a-z0-9_-]{1,64}")
_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SIZE = re.compile(r"(\d+)\s*([KMG]?)(?:i?B)?", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
_KEYS = frozenset(
    {"name", "entry", "files", "product_id", "security_version", "debug", "heap_size", "threads",
     "max_message_size", "env"}
)  # fmt: skip
_CANONICAL_VERSION = 1


def parse_size(value: object, key: str) -> int:
    """A byte size given as an integer or as a string like ``"64M"``, ``"512K"``, ``"1G"`` (binary units).

    Raises :class:`ConfigError` naming ``key`` for anything else.
    """
    if isinstance(value, bool):
        raise ConfigError(f'{key}: expected a size such as 65536 or "64M", got a boolean')
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        match = _SIZE.fullmatch(value.strip())
        if match:
            return int(match.group(1)) * _UNITS[match.group(2).upper()]
    raise ConfigError(f'{key}: expected a size such as 65536 or "64M", got {value!r}')


def check_relative_path(path: str, what: str) -> str:
    """Check that ``path`` is a POSIX path relative to the enclave directory that stays inside it.

    Rejects absolute paths, ``..`` components, backslashes, empty components and control characters. Returns
    the path unchanged; raises :class:`ConfigError` mentioning ``what``.
    """
    if not path or len(path) > 4096:
        raise ConfigError(f"{what}: a path must be 1 to 4096 characters")
    if any(ord(char) < 0x20 or char == "\\" for char in path):
        raise ConfigError(f"{what}: {path!r} contains a backslash or a control character")
    pure = PurePosixPath(path)
    if pure.is_absolute() or path.startswith("/"):
        raise ConfigError(f"{what}: {path!r} is absolute; paths are relative to the enklave.toml directory")
    parts = path.split("/")
    if ".." in parts:
        raise ConfigError(f"{what}: {path!r} leaves the enklave.toml directory ('..')")
    if "" in parts or "." in parts:
        raise ConfigError(f"{what}: {path!r} has an empty or '.' component")
    return path


def _int(table: Mapping[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"enclave.{key}: expected an integer, got {value!r}")
    if not low <= value <= high:
        raise ConfigError(f"enclave.{key}: must be between {low} and {high}, got {value}")
    return value


def _str_list(table: Mapping[str, Any], key: str, default: list[str]) -> tuple[str, ...]:
    value = table.get(key, default)
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigError(f"enclave.{key}: expected a list of strings, got {value!r}")
    if len(set(value)) != len(value):
        raise ConfigError(f"enclave.{key}: lists the same entry twice")
    return tuple(value)


def _gramine(value: object) -> dict[str, GramineValue]:
    if not isinstance(value, dict):
        raise ConfigError("gramine: expected a table")
    result: dict[str, GramineValue] = {}
    for key, item in value.items():
        if isinstance(item, str | bool | int):
            result[key] = item
        elif isinstance(item, list) and all(isinstance(entry, str) for entry in item):
            result[key] = list(item)
        else:
            # Dotted keys (sgx.x = 1) make nested tables in TOML; Gramine options are written quoted instead.
            raise ConfigError(
                f"gramine.{key}: expected a string, integer, boolean or list of strings "
                f'(quote dotted option names: "sgx.option" = ...)'
            )
    return result


@dataclass(frozen=True, slots=True)
class EnclaveConfig:
    """A validated enclave configuration.

    Guarantees: ``name`` matches ``[a-z0-9_-]{1,64}``; ``entry`` is a dotted module name; ``files`` is a
    non-empty tuple of relative glob patterns that cannot leave the directory; ``product_id`` and
    ``security_version`` fit in 16 bits; ``heap_size`` is a positive multiple of 4096 up to 64 GiB; ``threads`` is
    1..256; ``max_message_size`` is 4 KiB..1 GiB; ``env`` holds unique variable names. ``base_dir`` is where
    ``files`` are resolved (None for a configuration read from a bundle); it is not measured.
    """

    name: str
    entry: str = "enclave"
    files: tuple[str, ...] = ("enclave.py",)
    product_id: int = 0
    security_version: int = 0
    debug: bool = False
    heap_size: int = 64 << 20
    threads: int = 4
    max_message_size: int = 16 << 20
    env: tuple[str, ...] = ()
    gramine: Mapping[str, GramineValue] = field(default_factory=dict, hash=False)
    base_dir: Path | None = field(default=None, compare=False)

    @classmethod
    def load(cls, path: str | Path) -> EnclaveConfig:
        """Read and parse ``path``; files are resolved relative to its directory.

        Raises :class:`TransportError` when the file cannot be read and :class:`ConfigError` when it is invalid.
        """
        config_path = Path(path)
        return cls.from_toml(read_config_text(config_path), config_path.parent)

    @classmethod
    def from_toml(cls, text: str, base_dir: str | Path | None) -> EnclaveConfig:
        """Parse the text of an ``enklave.toml``; raises :class:`ConfigError` naming the offending key."""
        try:
            document = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"enklave.toml is not valid TOML: {exc}") from exc
        unknown = sorted(set(document) - {"enclave", "gramine"})
        if unknown:
            raise ConfigError(
                f"{unknown[0]}: unknown table or key (expected [enclave] and optional [gramine])"
            )
        table = document.get("enclave")
        if not isinstance(table, dict):
            raise ConfigError("enclave: the [enclave] table is missing")
        unknown = sorted(set(table) - _KEYS)
        if unknown:
            raise ConfigError(f"enclave.{unknown[0]}: unknown key")
        return cls._from_table(table, document.get("gramine", {}), base_dir)

    @classmethod
    def _from_table(
        cls, table: Mapping[str, Any], gramine: object, base_dir: str | Path | None
    ) -> EnclaveConfig:
        name = table.get("name")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ConfigError(f"enclave.name: required, 1-64 characters of [a-z0-9_-], got {name!r}")
        entry = table.get("entry", "enclave")
        if not isinstance(entry, str) or not _MODULE.fullmatch(entry):
            raise ConfigError(f'enclave.entry: expected a module name such as "enclave", got {entry!r}')
        files = _str_list(table, "files", ["enclave.py"])
        if not files:
            raise ConfigError("enclave.files: must list at least one pattern")
        for pattern in files:
            check_relative_path(pattern, "enclave.files")
        debug = table.get("debug", False)
        if not isinstance(debug, bool):
            raise ConfigError(f"enclave.debug: expected true or false, got {debug!r}")
        heap_size = parse_size(table.get("heap_size", "64M"), "enclave.heap_size")
        if not 0 < heap_size <= MAX_HEAP_SIZE or heap_size % PAGE_SIZE:
            raise ConfigError(
                f"enclave.heap_size: must be a positive multiple of 4096 up to 64G, got {heap_size}"
            )
        max_message_size = parse_size(table.get("max_message_size", "16M"), "enclave.max_message_size")
        if not MIN_MESSAGE_SIZE <= max_message_size <= MAX_MESSAGE_SIZE:
            raise ConfigError(f"enclave.max_message_size: must be between 4K and 1G, got {max_message_size}")
        env = _str_list(table, "env", [])
        for variable in env:
            if not _ENV_NAME.fullmatch(variable):
                raise ConfigError(f"enclave.env: {variable!r} is not an environment variable name")
        return cls(
            name=name,
            entry=entry,
            files=files,
            product_id=_int(table, "product_id", 0, 0, 0xFFFF),
            security_version=_int(table, "security_version", 0, 0, 0xFFFF),
            debug=debug,
            heap_size=heap_size,
            threads=_int(table, "threads", 4, 1, MAX_THREADS),
            max_message_size=max_message_size,
            env=env,
            gramine=_gramine(gramine),
            base_dir=None if base_dir is None else Path(base_dir),
        )

    def canonical_bytes(self) -> bytes:
        """A deterministic encoding of every measured field (canonical CBOR, RFC 8949 section 4.2.1).

        Equal configurations give equal bytes whatever the TOML's formatting, key order or comments; any
        change to a measured field changes them. ``files`` patterns and ``base_dir`` are not included: the
        files they match are measured one by one.
        """
        return cbor2.dumps(
            {
                "version": _CANONICAL_VERSION,
                "name": self.name,
                "entry": self.entry,
                "product_id": self.product_id,
                "security_version": self.security_version,
                "debug": self.debug,
                "heap_size": self.heap_size,
                "threads": self.threads,
                "max_message_size": self.max_message_size,
                "env": list(self.env),
                "gramine": dict(self.gramine),
            },
            canonical=True,
        )


def read_config_text(path: Path) -> str:
    """The UTF-8 text of a configuration file, at most 1 MiB.

    Raises :class:`TransportError` if it cannot be read, :class:`ConfigError` if it is too large or not UTF-8.
    """
    data = read_limited(path, MAX_CONFIG_SIZE)
    if len(data) > MAX_CONFIG_SIZE:
        raise ConfigError(f"{path} is larger than {MAX_CONFIG_SIZE} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text") from exc
