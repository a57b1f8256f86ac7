"""``enklave new`` (scaffold an enclave-aware app) and ``enklave run`` (sign it when needed, then run its host).

The scaffold's files are package data under ``enklave/_templates/app``: each ``X.tmpl`` becomes ``X`` (and
``gitignore.tmpl`` / ``dockerignore.tmpl`` become the dot files), with ``${name}`` and ``${enklave_version}``
substituted. ``tests/test_cli_app.py`` exercises the app that ``enklave new`` writes.
"""

from __future__ import annotations

import json
import os
import string
import subprocess
import sys
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

import click

from enklave import __version__
from enklave.cli.build import build
from enklave.cli.enclave import sign
from enklave.errors import ConfigError, InvalidBundle, LaunchError, TransportError, UsageError
from enklave.platform.mode import MODE_ENV, MODES, resolve_mode
from enklave.runtime.bundle import collect_files, load_bundle, measure
from enklave.runtime.config import CONFIG_FILENAME, EnclaveConfig

__all__ = ["HOST_SCRIPT", "bundle_path", "check_app_name", "new", "render_app", "run", "stale_reason"]

HOST_SCRIPT = "host.py"
_TEMPLATE_SUFFIX = ".tmpl"
# Template files whose rendered name starts with a dot: a real dot file inside the package would be taken for
# the package's own .gitignore by git and by the wheel builder.
_DOT_FILES = {"gitignore": ".gitignore", "dockerignore": ".dockerignore"}
_HOST_ARGS = "enklave.host_args"


def _templates() -> Traversable:
    return resources.files("enklave") / "_templates" / "app"


def check_app_name(name: str) -> str:
    """Return ``name`` if it is a valid enclave name (what enklave.toml accepts: 1-64 of ``[a-z0-9_-]``).

    Raises :class:`UsageError` otherwise. The name is checked by parsing a configuration that holds it, so
    ``enklave new`` accepts exactly the names ``enklave sign`` does.
    """
    try:
        # json.dumps quotes any string as a valid TOML basic string, so no name can inject TOML.
        EnclaveConfig.from_toml(f"[enclave]\nname = {json.dumps(name)}\n", None)
    except ConfigError as exc:
        raise UsageError(
            f"invalid app name {name[:80]!r}: use 1-64 characters of a-z, 0-9, '-' and '_' "
            "(it becomes the enclave's name in enklave.toml)"
        ) from exc
    return name


def render_app(name: str, target: Path) -> list[Path]:
    """Write the scaffold of app ``name`` into the directory ``target``; returns the files written, in order.

    ``target`` must not exist or be an empty directory. Raises :class:`UsageError` for an invalid name or a
    non-empty ``target``, and :class:`TransportError` when a file cannot be written.
    """
    check_app_name(name)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise UsageError(
            f"{target} already exists and is not an empty directory; choose another name or --dir"
        )
    values = {"name": name, "enklave_version": __version__}
    written: list[Path] = []
    try:
        target.mkdir(parents=True, exist_ok=True)
        for template in sorted(_templates().iterdir(), key=lambda entry: entry.name):
            if not template.name.endswith(_TEMPLATE_SUFFIX):
                continue
            stem = template.name.removesuffix(_TEMPLATE_SUFFIX)
            path = target / _DOT_FILES.get(stem, stem)
            # substitute (not safe_substitute): a placeholder without a value is a bug in the template.
            path.write_text(string.Template(template.read_text("utf-8")).substitute(values), "utf-8")
            written.append(path)
    except OSError as exc:
        raise TransportError(f"cannot write the app into {target}: {exc.strerror or exc}") from exc
    return written


@click.command()
@click.argument("name")
@click.option(
    "--dir",
    "parent",
    type=click.Path(file_okay=False),
    default=".",
    show_default=True,
    help="The directory to create the app in (as PARENT/NAME).",
)
def new(name: str, parent: str) -> None:
    """Create an enclave-aware app NAME: enklave.toml, enclave.py, host.py, README.md and a Dockerfile.

    NAME is also the enclave's name, so it must be 1-64 characters of a-z, 0-9, '-' and '_'. An existing
    non-empty directory is never overwritten. The app runs as it is: `enklave run NAME`.
    """
    target = Path(parent) / name
    written = render_app(name, target)
    click.echo(f"created {target}/: {', '.join(path.name for path in written)}")
    click.echo("next steps:")
    click.echo(f"  cd {target}")
    click.echo(
        "  enklave run          # sign the enclave, then run host.py (simulation unless SGX is present)"
    )
    click.echo("  enklave run          # again: the state sealed by the first run is restored")
    click.echo(f"  enklave info build/{name}.enclave   # MRENCLAVE, MRSIGNER and the SIGSTRUCT")


def bundle_path(config: EnclaveConfig, app: Path) -> Path:
    """Where ``enklave sign`` and ``enklave build`` write the bundle of ``config``: ``app/build/<name>.enclave``."""
    return app / "build" / f"{config.name}.enclave"


def stale_reason(config: EnclaveConfig, bundle: Path, *, mode: str = "sim") -> str | None:
    """Why the bundle must be (re)signed before running, or None when it is current.

    Current means: the bundle loads (measurement and signature check) and its MRENCLAVE is the measurement of
    the configuration and files as they are now. Comparing measurements rather than modification times re-signs
    exactly when the enclave would change, also for edits within the same second or restored old files, and
    keeps a bundle someone signed with their own key (``enklave sign --key``) as long as it is current. In sgx
    mode the signed Gramine manifest must exist too. Raises what :func:`collect_files` raises for an invalid
    file set.
    """
    if not bundle.exists():
        return f"{bundle} does not exist yet"
    try:
        signed = load_bundle(bundle)
    except (InvalidBundle, LaunchError, TransportError) as exc:
        return f"{bundle} does not load ({exc})"
    if measure(config, collect_files(config)) != signed.mr_enclave:
        return "the enclave's sources changed since it was signed"
    if mode == "sgx" and not (bundle.parent / f"{config.name}.manifest.sgx").exists():
        return "the signed Gramine manifest is missing"
    return None


class _RunCommand(click.Command):
    """A command whose arguments after ``--`` go, untouched, to the host program."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" in args:
            split = args.index("--")
            ctx.meta[_HOST_ARGS] = args[split + 1 :]
            args = args[:split]
        return super().parse_args(ctx, args)

    def collect_usage_pieces(self, ctx: click.Context) -> list[str]:
        return [*super().collect_usage_pieces(ctx), "[-- HOST_ARGS]..."]


@click.command(cls=_RunCommand)
@click.argument("directory", default=".", type=click.Path(file_okay=False))
@click.option(
    "--mode",
    type=click.Choice(MODES, case_sensitive=False),
    help=f"Where the enclave runs: sim, sgx (hardware, through Gramine) or auto (sgx where /dev/sgx_enclave "
    f"exists). Default: ${MODE_ENV}, else auto. host.py sees the resolved mode in ${MODE_ENV}.",
)
@click.pass_context
def run(ctx: click.Context, directory: str, mode: str | None) -> None:
    """Run the enclave-aware app in DIRECTORY (default: the current one): sign its enclave if needed, then
    run `python host.py HOST_ARGS` there and exit with its status.

    The bundle (build/<name>.enclave) is signed again, as `enklave sign` does and with the same default key
    ($ENKLAVE_HOME/signing-keys/<name>.pem), when it is missing, does not load, or its MRENCLAVE is not the
    measurement of the current enklave.toml and enclave files. In sgx mode it is built as `enklave build --mode
    sgx` builds it (bundle and Gramine manifest). Arguments after -- are passed to host.py, for example:

    \b
      enklave run myapp -- Alice
    """
    app = Path(directory)
    config_path = app / CONFIG_FILENAME
    if not config_path.is_file():
        raise UsageError(
            f"{app} has no {CONFIG_FILENAME}: not an enklave app (create one with: enklave new NAME)"
        )
    if not (app / HOST_SCRIPT).is_file():
        raise UsageError(f"{app} has no {HOST_SCRIPT} to run")
    resolved = resolve_mode(mode)
    config = EnclaveConfig.load(config_path)
    reason = stale_reason(config, bundle_path(config, app), mode=resolved)
    if reason is not None:
        click.echo(f"signing {config.name}: {reason}")
        if resolved == "sgx":
            ctx.invoke(build, config=str(config_path), mode="sgx", out_dir=None, key_path=None)
        else:
            ctx.invoke(sign, config=str(config_path), key_path=None, out_path=None, as_json=False)
    host_args: list[str] = ctx.meta.get(_HOST_ARGS, [])
    click.echo(f"running {HOST_SCRIPT} in {app} ({MODE_ENV}={resolved})")
    # The host program runs with this interpreter, so it imports the same enklave as this command.
    environ = {**os.environ, MODE_ENV: resolved}
    process = subprocess.Popen([sys.executable, HOST_SCRIPT, *host_args], cwd=app, env=environ)  # noqa: S603
    try:
        status = process.wait()
    except KeyboardInterrupt:
        # The terminal sent SIGINT to the whole process group; give the host a moment to finish on its own.
        try:
            status = process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            status = process.wait()
    # Like a shell: a host killed by signal N exits with 128 + N.
    ctx.exit(status if status >= 0 else 128 - status)
