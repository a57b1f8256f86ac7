#!/opt/enklave/venv/bin/python3 -I
"""``gramine-sgx`` in enklave's SGX image: build the Gramine manifest of a freshly signed bundle, then start it.

enklave's services sign their enclave from package data when they start (``<data>/enclave/<bundle>``, with the
key ``<data>/enclave-signing-key.pem``), and the host then runs ``gramine-sgx <data>/enclave/<name>``
(:func:`enklave.deploy.gramine.gramine_command`), which needs ``<name>.manifest.sgx`` and ``<name>.sig`` next to
the bundle. Nothing in the service writes those yet, so Dockerfile.sgx installs this script in place of
``/usr/bin/gramine-sgx`` (the real loader is diverted to ``/usr/bin/gramine-sgx.distrib``). It:

1. reads the bundle the host named in ``ENKLAVE_BUNDLE`` and checks it is the one ``<name>`` refers to;
2. when that bundle is the enclave the manifest was last built for, signed again on another day (the service
   signs at every start, and the SIGSTRUCT carries the date), puts the earlier bundle back: Gramine measures the
   bundle file into MRENCLAVE, so without this MRENCLAVE would change every day and state sealed to it (the
   services seal their keys with the ``unique`` policy) would no longer unseal after a restart;
3. when ``<name>.manifest.sgx`` was not built from these exact bundle bytes (a copy of them is kept as
   ``<name>.manifest.sgx.bundle``), writes the manifest template with
   :func:`enklave.deploy.gramine.write_manifest`, renders it with ``gramine-manifest`` and signs it with
   ``gramine-sgx-sign`` and the service's own signing key, so that the enclave has the same MRSIGNER in both
   modes;
4. replaces itself with the real ``gramine-sgx``.

The host runs this with an empty environment and a production enclave's output discarded, so what went wrong
is written to ``<name>.gramine-build.log`` next to the bundle. Building in the untrusted host weakens nothing:
the manifest and every trusted file are measured into MRENCLAVE, which clients appraise. Remove this shim once
the services build their manifest themselves (see docs/deploy.md, "SGX image").
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from enklave._home import write_atomic
from enklave.deploy.gramine import write_manifest
from enklave.errors import EnklaveError
from enklave.runtime.bundle import Bundle, load_bundle

__all__ = ["BUILT_SUFFIX", "SIGNING_KEY_NAME", "main", "same_enclave"]

#: Where ``dpkg-divert --rename`` moved Gramine's own loader script.
REAL_LOADER = "/usr/bin/gramine-sgx.distrib"
#: Where Gramine's packages install their tools.
TOOLS_DIR = Path("/usr/bin")
#: The key services sign their enclave with, in their data directory (enklave.services._enclave_app).
SIGNING_KEY_NAME = "enclave-signing-key.pem"
#: The bundle bytes the signed manifest was built for, kept next to it.
BUILT_SUFFIX = ".manifest.sgx.bundle"
LOG_SUFFIX = ".gramine-build.log"
_TOOL_TIMEOUT = 900.0
_MAX_LOG = 64 << 10

Runner = Callable[..., "subprocess.CompletedProcess[Any]"]


class ShimError(Exception):
    """The manifest could not be built; the message says why (no secrets: paths and tool output only)."""


def same_enclave(earlier: Bundle, current: Bundle) -> bool:
    """True when the two bundles differ at most in the SIGSTRUCT's date and signature: the same configuration,
    files, measurement, identity and signing key."""
    theirs = current.sigstruct
    ours = dataclasses.replace(
        earlier.sigstruct, date=theirs.date, signature=theirs.signature, q1=theirs.q1, q2=theirs.q2
    )
    return (
        ours == theirs
        and earlier.config_text == current.config_text
        and dict(earlier.files) == dict(current.files)
    )


def _run(runner: Runner, argv: list[str], env: Mapping[str, str]) -> None:
    try:
        result = runner(
            argv, check=False, capture_output=True, text=True, timeout=_TOOL_TIMEOUT, env=dict(env)
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise ShimError(f"{argv[0]} could not run: {exc}") from exc
    if result.returncode != 0:
        lines = [line for line in str(result.stderr or result.stdout or "").splitlines() if line.strip()]
        raise ShimError(f"{argv[0]} failed with exit code {result.returncode}: {lines[-1] if lines else ''}")


def _build(
    app: Path, bundle: Path, current: Bundle, key: Path, *, python: str, tools_dir: Path, runner: Runner
) -> None:
    try:
        template = write_manifest(current.config, bundle, app.parent, python=python)
    except EnklaveError as exc:
        raise ShimError(str(exc)) from exc
    manifest = Path(f"{app}.manifest")
    env = {"PATH": f"{tools_dir}:/usr/bin:/bin", "LC_ALL": "C.UTF-8"}
    _run(runner, [str(tools_dir / "gramine-manifest"), str(template), str(manifest)], env)
    sign = [str(tools_dir / "gramine-sgx-sign"), "--manifest", str(manifest), "--output", f"{manifest}.sgx"]
    _run(runner, [*sign, "--key", str(key)], env)


def _load(path: Path) -> Bundle:
    try:
        return load_bundle(path)
    except EnklaveError as exc:
        raise ShimError(f"the bundle {path} does not verify: {exc}") from exc


def _verifies(path: Path) -> bool:
    try:
        _load(path)
    except ShimError:
        return False
    return True


def _prepare(app: Path, environ: Mapping[str, str], *, python: str, tools_dir: Path, runner: Runner) -> str:
    bundle_value = environ.get("ENKLAVE_BUNDLE", "")
    if not bundle_value:
        return "no ENKLAVE_BUNDLE: starting the manifest as it is"
    bundle = Path(bundle_value)
    # 1. Only the bundle this manifest is named after: gramine_command() puts it next to the bundle.
    if bundle.parent.resolve() != app.parent.resolve():
        return f"{bundle} is not next to {app}: starting the manifest as it is"
    current = _load(bundle)
    if current.config.name != app.name:
        raise ShimError(f"the bundle {bundle} holds the enclave {current.config.name!r}, not {app.name!r}")
    built = Path(f"{app}{BUILT_SUFFIX}")
    signed = [Path(f"{app}.manifest.sgx"), Path(f"{app}.sig")]
    try:
        raw = bundle.read_bytes()
        if built.is_file() and all(path.is_file() for path in signed):
            earlier_raw = built.read_bytes()
            # 2. The same enclave signed again: keep the bytes Gramine measured before. A copy that does not
            # verify (damaged) is not restored; the manifest is built again instead.
            if earlier_raw != raw and _verifies(built) and same_enclave(_load(built), current):
                write_atomic(bundle, earlier_raw, mode=0o644)
                raw = earlier_raw
            if earlier_raw == raw:
                return f"{app}.manifest.sgx is up to date for {bundle.name}"
    except OSError as exc:
        raise ShimError(f"cannot read or restore the bundle: {exc.strerror or exc}") from exc
    key = bundle.parent.parent / SIGNING_KEY_NAME
    if not key.is_file():
        raise ShimError(f"no signing key at {key}: cannot sign the Gramine manifest")
    # 3. Build, then keep the bundle's bytes last: an interrupted build is redone on the next start.
    built.unlink(missing_ok=True)
    _build(app, bundle, current, key, python=python, tools_dir=tools_dir, runner=runner)
    write_atomic(built, raw, mode=0o644)
    return f"built and signed {app}.manifest.sgx for {bundle.name}"


def main(
    argv: Sequence[str],
    environ: Mapping[str, str],
    *,
    python: str = sys.executable,
    loader: str = REAL_LOADER,
    tools_dir: Path = TOOLS_DIR,
    runner: Runner = subprocess.run,
    execv: Callable[[str, list[str]], object] = os.execv,
) -> int:
    """Run the shim for ``argv`` (``gramine-sgx APP [ARGS...]``); returns an exit code when it does not exec."""
    if len(argv) < 2 or not argv[1]:
        print("usage: gramine-sgx <application> [args...]", file=sys.stderr)
        return 2
    app = Path(argv[1])
    log = Path(f"{app}{LOG_SUFFIX}")
    try:
        message = _prepare(app, environ, python=python, tools_dir=tools_dir, runner=runner)
    except (ShimError, EnklaveError) as exc:
        _log(log, f"error: {exc}")
        return 1
    _log(log, message)
    # 4. The real loader, with the arguments and environment the host gave.
    execv(loader, [loader, *argv[1:]])
    return 0


def _log(path: Path, message: str) -> None:
    print(f"gramine-sgx (enklave): {message}", file=sys.stderr)
    try:
        # One line per start; started afresh once it passes 64 KiB.
        mode = "a" if not path.exists() or path.stat().st_size < _MAX_LOG else "w"
        with path.open(mode, encoding="utf-8") as handle:
            handle.write(message + "\n")
    except OSError:
        pass  # The data directory may be read-only to us; standard error still has it in debug enclaves.


if __name__ == "__main__":
    sys.exit(main(sys.argv, os.environ))
