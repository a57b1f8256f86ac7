"""``enklave sign``, ``enklave uniqueid``, ``enklave signerid`` and ``enklave info``.

Every command that reads a bundle loads it the way an enclave is launched (:func:`load_bundle`: the measurement
and the SIGSTRUCT signature are checked), so a tampered bundle is reported instead of described.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import click

from enklave.cli._signing import config_file, signing_key
from enklave.runtime.bundle import Bundle, load_bundle, sign_bundle, write_bundle
from enklave.runtime.config import CONFIG_FILENAME, EnclaveConfig

__all__ = ["info", "sign", "signerid", "uniqueid"]

_BUNDLE = click.Path(dir_okay=False)


@click.command()
@click.argument("config", default=CONFIG_FILENAME, type=click.Path())
@click.option(
    "--key",
    "key_path",
    type=click.Path(dir_okay=False),
    help="RSA-3072 (exponent 3) PEM private key. Default: $ENKLAVE_HOME/signing-keys/<name>.pem, generated on "
    "first use (outside the project, so it is never packed into a bundle or committed).",
)
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False),
    help="Where to write the bundle. Default: build/<name>.enclave next to CONFIG.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
def sign(config: str, key_path: str | None, out_path: str | None, as_json: bool) -> None:
    """Build and sign the enclave described by CONFIG (an enklave.toml, or a directory holding one).

    The configuration and the files it lists are laid out as enclave pages and measured into MRENCLAVE; the
    SIGSTRUCT is signed with the key; MRSIGNER is the SHA-256 of the key's modulus. Prints both.
    """
    config_path = config_file(config)
    parsed = EnclaveConfig.load(config_path)
    key, used_key, generated = signing_key(key_path, parsed.name)
    bundle = sign_bundle(config_path, key)
    out = Path(out_path) if out_path else config_path.parent / "build" / f"{bundle.config.name}.enclave"
    write_bundle(bundle, out)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "bundle": str(out),
                    "name": bundle.config.name,
                    "mrenclave": bundle.mr_enclave.hex(),
                    "mrsigner": bundle.mr_signer.hex(),
                    "key": str(used_key),
                    "key_generated": generated,
                    "isv_prod_id": bundle.sigstruct.isv_prod_id,
                    "isv_svn": bundle.sigstruct.isv_svn,
                    "debug": bundle.sigstruct.debug,
                },
                indent=2,
            )
        )
        return
    if generated:
        click.echo(f"generated a new signing key: {used_key}")
    click.echo(f"signed {bundle.config.name}: {out}")
    click.echo(f"  MRENCLAVE: {bundle.mr_enclave.hex()}")
    click.echo(f"  MRSIGNER:  {bundle.mr_signer.hex()}")
    click.echo(f"  key:       {used_key}")
    if bundle.config.debug:
        click.echo(
            "  debug:     yes (a debug enclave's memory is readable by the host: never for production)"
        )


@click.command()
@click.argument("bundle", type=_BUNDLE)
def uniqueid(bundle: str) -> None:
    """Print the MRENCLAVE of a signed BUNDLE (hex), after checking its measurement and signature."""
    click.echo(load_bundle(bundle).mr_enclave.hex())


@click.command()
@click.argument("bundle", type=_BUNDLE)
def signerid(bundle: str) -> None:
    """Print the MRSIGNER of a signed BUNDLE (hex), after checking its measurement and signature."""
    click.echo(load_bundle(bundle).mr_signer.hex())


def bundle_view(bundle: Bundle) -> dict[str, Any]:
    """Everything ``enklave info`` shows: identity, configuration, files, layout and the decoded SIGSTRUCT."""
    config = bundle.config
    layout = bundle.layout()
    return {
        "mrenclave": bundle.mr_enclave.hex(),
        "mrsigner": bundle.mr_signer.hex(),
        "config": {
            "name": config.name,
            "entry": config.entry,
            "product_id": config.product_id,
            "security_version": config.security_version,
            "debug": config.debug,
            "heap_size": config.heap_size,
            "threads": config.threads,
            "max_message_size": config.max_message_size,
            "env": list(config.env),
            "gramine": dict(config.gramine),
        },
        "files": [
            {"path": path, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            for path, data in sorted(bundle.files.items())
        ],
        "layout": {"enclave_size": layout.size, "pages": layout.pages},
        "sigstruct": bundle.sigstruct.to_dict(),
    }


def _echo_tree(value: dict[str, Any], indent: int = 0) -> None:
    pad = "  " * indent
    for key, item in value.items():
        if isinstance(item, dict) and item:
            click.echo(f"{pad}{key}:")
            _echo_tree(item, indent + 1)
        elif isinstance(item, list) and item and isinstance(item[0], dict):
            click.echo(f"{pad}{key}:")
            for entry in item:
                click.echo(f"{pad}  - " + "  ".join(str(part) for part in entry.values()))
        elif isinstance(item, bool):
            click.echo(f"{pad}{key}: {'yes' if item else 'no'}")
        elif isinstance(item, list | dict):
            click.echo(f"{pad}{key}: {', '.join(map(str, item)) or '-'}")
        else:
            click.echo(f"{pad}{key}: {item}")


@click.command()
@click.argument("bundle", type=_BUNDLE)
@click.option("--json", "as_json", is_flag=True, help="Print the fields as one JSON object.")
def info(bundle: str, as_json: bool) -> None:
    """Print the identity, configuration, files and the whole decoded SIGSTRUCT of a signed BUNDLE.

    The bundle is checked first (measurement and signature), as loading it would.
    """
    view = bundle_view(load_bundle(bundle))
    if as_json:
        click.echo(json.dumps(view, indent=2))
    else:
        _echo_tree(view)
