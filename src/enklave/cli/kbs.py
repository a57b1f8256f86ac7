"""``enklave kbs``: run the key broker service, and manage and release its keys over HTTP."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from enklave._home import write_atomic
from enklave.cli._io import read_file, read_json_object
from enklave.cli._serve import ServeOptions, enclave_identity, read_admin_token, serve_options
from enklave.cli._serve import serve as serve_service
from enklave.errors import BadDataError, UsageError
from enklave.services.kbs.app import create_app
from enklave.services.kbs.client import KbsClient
from enklave.services.kbs.service import Authority, KbsConfig, KeyBrokerService

__all__ = ["kbs"]

_MAX_POLICY_FILE = 64 << 10
_MAX_JWKS_FILE = 256 << 10
_MAX_ATTESTATION_TOKEN = 256 << 10


@click.group("kbs")
def kbs() -> None:
    """The key broker service: secure key release to attested enclaves (Azure Key Vault's shape, 7.4).

    Keys are created inside the broker's enclave and released only wrapped to an attested enclave's public key.
    """


def _authority(value: str) -> Authority:
    issuer, sep, source = value.partition("=")
    if not sep or not issuer or not source:
        raise UsageError("--authority is ISSUER=JWKS_URL or ISSUER=JWKS_FILE")
    if source.startswith(("http://", "https://")):
        return Authority(issuer, jwks_url=source)
    return Authority(issuer, jwks=read_json_object(source, what="the JWKS file", limit=_MAX_JWKS_FILE))


@kbs.command("serve")
@serve_options(
    port=8444,
    data="kbs",
    mode_help="Run the broker's enclave in simulation, on SGX, or on SGX when present.",
    admin_help="File holding the bearer token that key management needs (none: management disabled).",
)
@click.option(
    "--authority", "authorities", multiple=True, metavar="ISSUER=JWKS_URL|JWKS_FILE",
    help="A trusted attestation authority (repeatable); a URL is fetched on first start and pinned.",
)  # fmt: skip
@click.option(
    "--repin",
    is_flag=True,
    help="Fetch the authorities' JWKS again. If the keys changed, the enclave's measurement changes and the keys"
    " held so far no longer unseal (see docs/kbs.md).",
)
def serve(options: ServeOptions, authorities: tuple[str, ...], repin: bool) -> None:
    """Serve the key broker (plain HTTP on loopback by default; TLS with --certfile/--keyfile)."""
    config = KbsConfig(
        data_dir=options.data,
        authorities=tuple(_authority(value) for value in authorities),
        admin_token=options.admin_token(),
        repin=repin,
        mode=options.mode,
        home=options.home,
    )
    serve_service(
        options,
        lambda storage: KeyBrokerService(config, storage),
        create_app,
        _banner,
    )


def _banner(service: KeyBrokerService) -> str:
    # The identity that recipients pin (enklave inference serve --kbs-mrsigner, --kbs-isv-prod-id).
    info = service.info
    return (
        f"key broker: {enclave_identity(info, info.mode)}, product id {info.isv_prod_id}; "
        f"trusting {', '.join(service.pinned) or 'no authority'}"
    )


@kbs.group("key")
@click.option("--url", default="http://127.0.0.1:8444", show_default=True, help="The key broker's base URL.")
@click.option(
    "--admin-token-file", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
    help="File holding the admin bearer token (create, list, show).",
)  # fmt: skip
@click.pass_context
def key(ctx: click.Context, url: str, admin_token_file: Path | None) -> None:
    """Manage and release the broker's keys over HTTP."""
    ctx.obj = KbsClient(url, admin_token=read_admin_token(admin_token_file))
    ctx.call_on_close(ctx.obj.close)


def _echo(document: Any) -> None:
    click.echo(json.dumps(document, indent=2, sort_keys=True))


@key.command("create")
@click.argument("name")
@click.option("--type", "kty", type=click.Choice(["aes", "rsa", "ec"]), required=True, help="Key type.")
@click.option("--size", type=click.Choice(["2048", "3072", "4096"]), default=None, help="RSA modulus bits.")
@click.option("--curve", type=click.Choice(["P-256", "P-384"]), default=None, help="EC curve.")
@click.option(
    "--policy", "policy_file", type=click.Path(dir_okay=False, exists=True), required=True,
    help="The release policy (Azure Key Vault's secure key release JSON).",
)  # fmt: skip
@click.pass_obj
def create(
    client: KbsClient, name: str, kty: str, size: str | None, curve: str | None, policy_file: str
) -> None:
    """Create key NAME inside the broker's enclave and print its metadata."""
    policy = read_json_object(policy_file, what="the policy file", limit=_MAX_POLICY_FILE)
    if (size is not None and kty != "rsa") or (curve is not None and kty != "ec"):
        raise UsageError("--size is for rsa keys and --curve for ec keys")
    kind = {"aes": "oct", "rsa": "RSA", "ec": "EC"}[kty]
    _echo(client.create_key(name, kind, policy, key_size=int(size) if size else None, crv=curve))


@key.command("list")
@click.pass_obj
def list_keys(client: KbsClient) -> None:
    """List the keys (metadata and public keys only)."""
    _echo(client.list_keys())


@key.command("show")
@click.argument("name")
@click.pass_obj
def show(client: KbsClient, name: str) -> None:
    """Show key NAME: metadata, public key of an asymmetric key, release policy."""
    _echo(client.get_key(name))


@key.command("release")
@click.argument("name")
@click.option(
    "--token", "token_file", type=click.Path(dir_okay=False, exists=True), required=True,
    help="File holding the attestation token (its x-ms-runtime claim names the enclave's public key).",
)  # fmt: skip
@click.option("--nonce", default=None, help="The nonce the token must carry.")
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
    help="Where to write the wrapped key (a JWE, or an HPKE envelope for a P-256 key; owner-only).",
)  # fmt: skip
@click.pass_obj
def release(client: KbsClient, name: str, token_file: str, nonce: str | None, out: Path) -> None:
    """Release key NAME to the enclave the token describes; writes the envelope that wraps it."""
    token = read_file(token_file, what="the token file", limit=_MAX_ATTESTATION_TOKEN)
    try:
        text = token.decode("ascii").strip()
    except UnicodeDecodeError as exc:
        raise BadDataError(f"the token file {token_file} is not ASCII") from exc
    wrapped = client.release(name, text, nonce=nonce)
    write_atomic(out, wrapped.encode("ascii") + b"\n", mode=0o600)
    click.echo(f"wrote the wrapped key {name} to {out}", err=True)
