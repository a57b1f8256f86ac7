"""Gramine manifests for enclaves on SGX hardware, and the build that signs them (docs/gramine.md).

:func:`write_manifest` writes ``<name>.manifest.template``: the Python interpreter as the LibOS entry point, the
enclave command fixed in the manifest (``python -I -m enklave.runtime.enclave_main``, never taken from the host's
command line), only the environment the enclave needs, the interpreter, its standard library, enklave and its
dependencies and the signed bundle as trusted files (hashed into MRENCLAVE by ``gramine-sgx-sign``), DCAP remote
attestation, and the ISV product id, SVN, debug flag, enclave size and thread count from ``enklave.toml``. The
``[gramine]`` table of the configuration is merged last, except for options that would weaken the enclave.

:func:`build_sgx` then runs ``gramine-manifest`` and ``gramine-sgx-sign`` when they are installed; the host
starts the result with :func:`gramine_command`.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from enklave.deploy._python import PythonLayout, python_layout
from enklave.deploy._toml import BARE_KEY, ManifestValue, Template, check_plain, render
from enklave.errors import ConfigError, PlatformError
from enklave.runtime.config import EnclaveConfig, GramineValue

__all__ = [
    "CHANNEL_ENV",
    "ENCLAVE_ARGV",
    "GRAMINE_TOOLS",
    "PYTHON_MEMORY_MARGIN",
    "PYTHON_THREADS",
    "BuildResult",
    "build_sgx",
    "enclave_size",
    "gramine_command",
    "manifest_entries",
    "max_threads",
    "write_manifest",
]

#: The module the enclave process runs; its arguments after the interpreter are fixed in the manifest.
ENCLAVE_ARGV = ("-I", "-m", "enklave.runtime.enclave_main")
#: The only variable that the host passes through at run time (it names a port and a one-time token).
CHANNEL_ENV = "ENKLAVE_CHANNEL"
GRAMINE_TOOLS = ("gramine-manifest", "gramine-sgx-sign")
#: Memory added to the configured heap for the interpreter, its modules, thread stacks and Gramine itself.
PYTHON_MEMORY_MARGIN = 256 << 20
_MIN_ENCLAVE_SIZE = 512 << 20
#: Threads added to the configured TCS count: the main thread and Gramine's IPC, async and TLS helpers.
PYTHON_THREADS = 8
_TOOL_TIMEOUT = 1800.0

# Options that [gramine] may not set, because enklave sets them from enklave.toml or because they would let the
# host in: the command line and environment, where the entry point comes from, untrusted files, the sealing
# masks, attestation and the identity fields. Any "insecure__" option is refused as well.
_FIXED_KEYS = frozenset(
    {"libos.entrypoint", "loader.entrypoint", "loader.entrypoint.uri", "loader.entrypoint.sha256",
     "loader.argv", "loader.argv_src_file", "loader.env_src_file", "loader.argv0_override",
     "sgx.allowed_files", "sgx.remote_attestation", "sgx.debug", "sgx.isvprodid", "sgx.isvsvn",
     "sgx.ra_client_spid", "sgx.ra_client_linkable", "fs.mounts", "fs.root.uri", "fs.root.type"}
)  # fmt: skip
_FIXED_PREFIXES = ("loader.env.", "sgx.seal_key.", "fs.mount.")
# Families of options that decide which host files the enclave opens, and how: any key starting with one of
# these is refused (also old table forms such as "sgx.allowed_files.x" and "fs.root.path"), except the list
# "sgx.trusted_files" itself, whose entries are hashed into MRENCLAVE and are appended to enklave's own.
_FILE_PREFIXES = (
    "sgx.allowed_files",
    "sgx.trusted_files",
    "sgx.protected_",
    "fs.root",
    "fs.mounts",
    "fs.mount.",
)
# Host environment variables that change how glibc, OpenSSL or Python behave, so the host may never pass them:
# exact names, and name prefixes.
_REFUSED_ENV = frozenset({"GLIBC_TUNABLES"})
_REFUSED_ENV_PREFIXES = ("LD_", "ENKLAVE_", "MALLOC_", "OPENSSL_", "SSL_CERT_", "PYTHON")
_DEBUG_LOG_LEVELS = frozenset({"warning", "debug", "trace", "all"})
_APPENDED_KEYS = frozenset({"sgx.trusted_files"})


def enclave_size(heap_size: int) -> int:
    """``sgx.enclave_size`` in bytes: the heap plus :data:`PYTHON_MEMORY_MARGIN`, rounded up to a power of two
    (SGX needs one) and at least 512 MiB."""
    needed = max(heap_size + PYTHON_MEMORY_MARGIN, _MIN_ENCLAVE_SIZE)
    return 1 << (needed - 1).bit_length()


def max_threads(threads: int) -> int:
    """``sgx.max_threads``: one per configured TCS plus :data:`PYTHON_THREADS` for Python and Gramine."""
    return threads + PYTHON_THREADS


def _size_text(size: int) -> str:
    for unit, shift in (("G", 30), ("M", 20), ("K", 10)):
        if size % (1 << shift) == 0:
            return f"{size >> shift}{unit}"
    return str(size)


def _file(path: Path) -> str:
    return "file:" + check_plain(str(path), "path")


def _dir(path: Path) -> str:
    return _file(path).rstrip("/") + "/"


def _identity_mounts(paths: Sequence[Path]) -> list[dict[str, ManifestValue]]:
    # Each directory is mounted at its own path; one inside another already mounted is covered by it.
    chosen: list[Path] = []
    for path in sorted(set(paths), key=lambda p: (len(p.parts), str(p))):
        if not any(path == done or path.is_relative_to(done) for done in chosen):
            chosen.append(path)
    return [{"path": check_plain(str(p), "path"), "uri": _file(p)} for p in chosen]


def _check_extra(key: str, value: GramineValue, config: EnclaveConfig) -> None:
    if not BARE_KEY.fullmatch(key):
        raise ConfigError(f"gramine.{key}: not a manifest option name (dotted names of [A-Za-z0-9_-])")
    if any(part.startswith("insecure__") for part in key.split(".")):
        raise ConfigError(f"gramine.{key}: insecure__ options are not allowed in an enklave manifest")
    if key in _FIXED_KEYS or key.startswith(_FIXED_PREFIXES):
        raise ConfigError(f"gramine.{key}: set by enklave from enklave.toml and may not be overridden")
    if key.startswith(_FILE_PREFIXES) and key not in _APPENDED_KEYS:
        raise ConfigError(f"gramine.{key}: the files and mounts of the enclave are set by enklave")
    if key == "sgx.file_check_policy" and value != "strict":
        raise ConfigError(
            'gramine.sgx.file_check_policy: only "strict" is allowed (other files are untrusted)'
        )
    if key == "loader.log_level" and value in _DEBUG_LOG_LEVELS and not config.debug:
        raise ConfigError(
            f"gramine.loader.log_level: {value!r} may leak secrets; allowed only with debug = true"
        )
    if isinstance(value, str):
        check_plain(value, f"gramine.{key}")
    elif isinstance(value, list):
        for item in value:
            check_plain(item, f"gramine.{key}")


def _merge_extras(entries: dict[str, ManifestValue], config: EnclaveConfig) -> None:
    for key, value in config.gramine.items():
        _check_extra(key, value, config)
        if key in _APPENDED_KEYS:
            current = entries[key]
            if not isinstance(value, list) or not isinstance(current, list):
                raise ConfigError(f"gramine.{key}: expected a list of strings")
            current.extend(value)
            continue
        clash = next((k for k in entries if k != key and (k.startswith(key + ".") or key.startswith(k + "."))),
                     None)  # fmt: skip
        if clash is not None:
            raise ConfigError(f"gramine.{key}: conflicts with the manifest option {clash}")
        entries[key] = value


def manifest_entries(
    config: EnclaveConfig, bundle_path: Path, *, layout: PythonLayout
) -> dict[str, ManifestValue]:
    """The manifest as flat dotted keys (what :func:`write_manifest` writes), extras merged and checked.

    Raises :class:`~enklave.errors.ConfigError` for a ``[gramine]`` option that would weaken the enclave or
    clash with one enklave sets (files and mounts included), for an ``enclave.env`` name that changes how the
    loader, glibc, OpenSSL or Python behave (``LD_*``, ``GLIBC_TUNABLES``, ``MALLOC_*``, ``OPENSSL_*``,
    ``SSL_CERT_*``, ``PYTHON*``, ``ENKLAVE_*``), and for paths that hold Jinja markup.
    """
    bundle = bundle_path.absolute()
    env_names = [name for name in config.env if name != CHANNEL_ENV]
    for name in env_names:
        if name in _REFUSED_ENV or name.startswith(_REFUSED_ENV_PREFIXES):
            raise ConfigError(f"enclave.env: {name} may not come from the host in SGX mode")
    packages = layout.packages
    trusted: list[ManifestValue] = [
        Template("file:{{ gramine.libos }}"),
        Template("file:{{ gramine.runtimedir() }}/"),
        *(_dir(p) for p in layout.system_libdirs),
        *dict.fromkeys(_file(p) for p in layout.executables),
        *(_file(p) for p in layout.extra_files),
        _dir(layout.stdlib),
        *(_dir(p) for p in layout.extra_dirs),
        *dict.fromkeys(_dir(p) if p.is_dir() else _file(p) for p in packages),
        _file(bundle),
    ]
    mount_dirs = [
        *layout.system_libdirs,
        *layout.prefixes,
        *(p if p.is_dir() else p.parent for p in packages),
        bundle.parent,
    ]
    entries: dict[str, ManifestValue] = {
        "loader.entrypoint.uri": Template("file:{{ gramine.libos }}"),
        "libos.entrypoint": check_plain(str(layout.executables[0]), "python"),
        "loader.log_level": "error",
        # The command line is part of the measured manifest: the host cannot change what the enclave runs.
        "loader.argv": [check_plain(str(layout.executables[0]), "python"), *ENCLAVE_ARGV],
        "loader.env.LD_LIBRARY_PATH": ":".join(["/lib", *(str(p) for p in layout.library_path)]),
        # Fixed values, not pass-through: a host that could set ENKLAVE_MODE=sim would get seal keys it knows.
        "loader.env.ENKLAVE_MODE": "sgx",
        "loader.env.ENKLAVE_BUNDLE": check_plain(str(bundle), "bundle path"),
        f"loader.env.{CHANNEL_ENV}": {"passthrough": True},
        **{f"loader.env.{name}": {"passthrough": True} for name in env_names},
        # Parents are mounted before what lies beneath them, so no mount hides another.
        "fs.mounts": [
            {"path": "/lib", "uri": Template("file:{{ gramine.runtimedir() }}")},
            *sorted(
                [*_identity_mounts(mount_dirs), {"type": "tmpfs", "path": "/tmp"}],  # noqa: S108 - in-enclave tmpfs.
                key=lambda mount: len(Path(str(mount["path"])).parts),
            ),
        ],
        "sys.stack.size": "2M",
        "sgx.debug": config.debug,
        "sgx.enclave_size": _size_text(enclave_size(config.heap_size)),
        "sgx.max_threads": max_threads(config.threads),
        "sgx.remote_attestation": "dcap",
        "sgx.isvprodid": config.product_id,
        "sgx.isvsvn": config.security_version,
        "sgx.file_check_policy": "strict",
        "sgx.trusted_files": trusted,
    }
    _merge_extras(entries, config)
    return entries


def write_manifest(
    config: EnclaveConfig, bundle_path: str | Path, out_dir: str | Path, *, python: str = sys.executable
) -> Path:
    """Write ``<out_dir>/<config.name>.manifest.template`` and return its path.

    ``python`` is the interpreter the enclave runs (by default this one); its standard library and the
    site-packages holding enklave and its dependencies are found by asking it. Raises ConfigError (see
    :func:`manifest_entries`) and :class:`~enklave.errors.PlatformError` when the interpreter cannot be
    inspected or the file cannot be written.
    """
    out = Path(out_dir)
    entries = manifest_entries(config, Path(bundle_path), layout=python_layout(python))
    header = (
        f"Gramine manifest template for the enklave enclave {config.name!r}, written by `enklave build`.\n"
        "Render and sign it with gramine-manifest and gramine-sgx-sign; start it with gramine-sgx.\n"
        "Edit enklave.toml ([enclave] and [gramine]) instead of this file: it is rewritten on every build."
    )
    path = out / f"{config.name}.manifest.template"
    try:
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(render(entries, header=header), encoding="utf-8")
    except OSError as exc:
        raise PlatformError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return path


def gramine_command(out_dir: str | Path, name: str) -> list[str]:
    """The command the host runs instead of ``python``: ``["gramine-sgx", "<out_dir>/<name>"]``."""
    return ["gramine-sgx", str(Path(out_dir) / name)]


@dataclass(frozen=True, slots=True)
class BuildResult:
    """What :func:`build_sgx` produced.

    ``template`` is always written. When ``missing_tools`` is empty, the Gramine tools ran and ``manifest``,
    ``sgx_manifest`` and ``sigstruct`` exist; otherwise they are None and ``missing_tools`` names what to
    install before finishing the build (the template can be taken to a machine that has Gramine).
    """

    template: Path
    manifest: Path | None
    sgx_manifest: Path | None
    sigstruct: Path | None
    missing_tools: tuple[str, ...]
    commands: tuple[tuple[str, ...], ...]

    @property
    def complete(self) -> bool:
        """True when the signed manifest and SIGSTRUCT were produced."""
        return not self.missing_tools


Runner = Callable[..., "subprocess.CompletedProcess[Any]"]


def _run(runner: Runner, argv: list[str]) -> None:
    try:
        result = runner(argv, check=False, capture_output=True, text=True, timeout=_TOOL_TIMEOUT)
    except (OSError, subprocess.SubprocessError) as exc:
        raise PlatformError(f"{argv[0]} could not run: {exc}") from exc
    if result.returncode != 0:
        lines = [line for line in str(result.stderr or result.stdout or "").splitlines() if line.strip()]
        detail = lines[-1].strip() if lines else "no output"
        raise PlatformError(f"{argv[0]} failed with exit code {result.returncode}: {detail}")


def build_sgx(
    config_path: str | Path,
    bundle_path: str | Path,
    out_dir: str | Path,
    *,
    key: str | Path | None = None,
    runner: Runner = subprocess.run,
    which: Callable[[str], str | None] = shutil.which,
    python: str = sys.executable,
) -> BuildResult:
    """Write the manifest template, then render and sign it with Gramine's tools when they are installed.

    Runs ``gramine-manifest TEMPLATE MANIFEST`` and ``gramine-sgx-sign --manifest MANIFEST --output
    MANIFEST.sgx [--key KEY]`` through ``runner`` (``subprocess.run`` by default). Without ``key``,
    gramine-sgx-sign uses its own default key (``~/.config/gramine/enclave-key.pem``). Raises ConfigError or
    TransportError for the configuration, PlatformError when a tool fails; missing tools are not an error here
    but are reported in :attr:`BuildResult.missing_tools`.
    """
    config = EnclaveConfig.load(config_path)
    out = Path(out_dir)
    template = write_manifest(config, bundle_path, out, python=python)
    missing = tuple(tool for tool in GRAMINE_TOOLS if which(tool) is None)
    if missing:
        return BuildResult(template, None, None, None, missing, ())
    manifest = out / f"{config.name}.manifest"
    sgx_manifest = out / f"{config.name}.manifest.sgx"
    render_cmd = ["gramine-manifest", str(template), str(manifest)]
    sign_cmd = ["gramine-sgx-sign", "--manifest", str(manifest), "--output", str(sgx_manifest)]
    if key is not None:
        sign_cmd += ["--key", str(key)]
    for argv in (render_cmd, sign_cmd):
        _run(runner, argv)
    # gramine-sgx-sign names the SIGSTRUCT after the manifest, with ".manifest" replaced by ".sig".
    sigstruct = out / f"{config.name}.sig"
    return BuildResult(template, manifest, sgx_manifest, sigstruct, (), (tuple(render_cmd), tuple(sign_cmd)))
