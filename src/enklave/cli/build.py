"""``enklave build``: sign the enclave bundle and, for SGX hardware, write and sign its Gramine manifest."""

from __future__ import annotations

import os
from pathlib import Path

import click

from enklave.cli._errors import EXIT_PLATFORM, fail
from enklave.cli._signing import config_file, signing_key
from enklave.deploy.gramine import build_sgx, gramine_command
from enklave.errors import UsageError
from enklave.platform.mode import MODE_ENV, MODES, resolve_mode
from enklave.runtime.bundle import sign_bundle, write_bundle
from enklave.runtime.config import CONFIG_FILENAME, EnclaveConfig

__all__ = ["build"]


def _target(requested: str | None) -> str:
    # Building for SGX needs no SGX device (sign here, run on an SGX node), so an explicit "sgx" is taken as
    # is; only "auto" looks at this machine.
    value = requested if requested else os.environ.get(MODE_ENV, "")
    target = value.strip().lower() or "auto"
    if target not in MODES:
        source = "--mode" if requested else MODE_ENV
        raise UsageError(
            f"unknown enclave mode {value!r} (from {source}): expected one of {', '.join(MODES)}"
        )
    return resolve_mode("auto", environ={}) if target == "auto" else target


@click.command()
@click.argument("config", default=CONFIG_FILENAME, type=click.Path())
@click.option(
    "--mode",
    type=click.Choice(MODES, case_sensitive=False),
    help=f"What to build for: sim (bundle only) or sgx (bundle and Gramine manifest). Default: ${MODE_ENV}, "
    "else auto (sgx where /dev/sgx_enclave exists).",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    help="Output directory. Default: build/ next to CONFIG.",
)
@click.option(
    "--key",
    "key_path",
    type=click.Path(dir_okay=False),
    help="RSA-3072 (exponent 3) PEM signing key, used for the bundle and the Gramine SIGSTRUCT alike. "
    "Default: $ENKLAVE_HOME/signing-keys/<name>.pem, generated on first use.",
)
@click.pass_context
def build(
    ctx: click.Context, config: str, mode: str | None, out_dir: str | None, key_path: str | None
) -> None:
    """Build the enclave described by CONFIG (an enklave.toml, or a directory holding one).

    Always signs the bundle (<out>/<name>.enclave). With --mode sgx it also writes
    <out>/<name>.manifest.template and, when Gramine is installed, runs gramine-manifest and gramine-sgx-sign
    with the same key, so the enclave has the same MRSIGNER in both modes. Without Gramine the template is kept
    and the command fails with the list of missing tools.
    """
    target = _target(mode)
    config_path = config_file(config)
    parsed = EnclaveConfig.load(config_path)
    # An empty --key selects the default key, as build has always done.
    key, key_file, generated = signing_key(key_path or None, parsed.name)
    if generated:
        click.echo(f"generated a new signing key: {key_file}")
    out = Path(out_dir) if out_dir else config_path.parent / "build"
    bundle = sign_bundle(config_path, key)
    bundle_path = out / f"{parsed.name}.enclave"
    write_bundle(bundle, bundle_path)
    click.echo(f"signed {parsed.name}: {bundle_path}")
    click.echo(f"  MRENCLAVE (simulation): {bundle.mr_enclave.hex()}")
    click.echo(f"  MRSIGNER:               {bundle.mr_signer.hex()}")
    if target == "sim":
        return

    result = build_sgx(config_path, bundle_path, out, key=key_file)
    click.echo(f"wrote Gramine manifest template: {result.template}")
    if not result.complete:
        fail(
            f"{' and '.join(result.missing_tools)} not found on PATH: install Gramine, or finish the build on a "
            f"machine that has it (gramine-manifest, then gramine-sgx-sign --key {key_file})"
        )
        ctx.exit(EXIT_PLATFORM)
        return
    click.echo(f"signed Gramine manifest: {result.sgx_manifest}")
    click.echo(f"  SIGSTRUCT: {result.sigstruct}")
    click.echo(f"  run with:  {' '.join(gramine_command(out, parsed.name))}")
