"""``enklave model``: encrypt ONNX models for a confidential inference service, and manage its models.

``encrypt`` needs no service: it writes the encrypted container (AES-256-GCM, the layout of
:mod:`enklave.inference.model_format`) and keeps the key in a file only its owner can read; with ``--kbs-key`` and
the key broker key's public JWK (``--kbs-public-key FILE`` or fetched with ``--kbs-url``) it also wraps the model
key to that envelope key into the container's header, for the enclave to unwrap after the broker's release.
``upload`` sends a container to the service and, for an owner-keyed one, the key to the attested enclave inside
the encryption; ``list`` and ``delete`` manage what the service stores. Each of them needs the owner token; the
host gets only the credential derived from it, the enclave the token itself inside the encryption.
``credentials`` prints what the service's operator configures instead of the token: the host credential and the
token's SHA-256.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from enklave._home import write_atomic
from enklave.attestation.policy import AllOf
from enklave.cli._io import read_file, read_json_object
from enklave.cli.infer import TrustOptions, make_client, read_secret, trust_options
from enklave.errors import UsageError
from enklave.inference._client_upload import MAX_MODEL_SIZE, new_model_key, prepare_model, read_source
from enklave.inference.client import Client
from enklave.inference.credentials import owner_credentials
from enklave.inference.model_format import KEY_SIZE, read_header
from enklave.services.kbs.client import KbsClient

__all__ = ["model", "read_key_file"]

_PROGRESS_THRESHOLD = 4 << 20
_MAX_KEY_FILE = 256
_MAX_JWK_FILE = 64 << 10


def read_key_file(path: Path) -> bytes:
    """A model key from ``path``: 64 hexadecimal characters (as ``encrypt`` writes it) or 32 raw bytes."""
    raw = read_file(str(path), what="the key file", limit=_MAX_KEY_FILE)
    text = raw.strip()
    if len(text) == 2 * KEY_SIZE:
        try:
            return bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            pass
    if len(raw) == KEY_SIZE:
        return raw
    raise UsageError(
        f"the key file {path} holds neither {2 * KEY_SIZE} hexadecimal digits nor {KEY_SIZE} bytes"
    )


def _write_key_file(path: Path, key: bytes) -> None:
    # O_EXCL: never overwrite a key that may already encrypt models; 0600: only the owner reads it.
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise UsageError(f"the key file {path} appeared while encrypting; not overwritten") from exc
    except OSError as exc:
        raise UsageError(f"cannot create the key file {path}: {exc.strerror or exc}") from exc
    with os.fdopen(descriptor, "w", encoding="ascii") as handle:
        handle.write(key.hex() + "\n")


def _owner_token(owner_token: str | None, owner_token_file: Path | None) -> str:
    token = read_secret(owner_token, owner_token_file, "owner token")
    if token is None:
        raise UsageError(
            "model management needs the owner token: --owner-token-file or ENKLAVE_INFERENCE_OWNER_TOKEN"
        )
    return token


def _echo(document: Any) -> None:
    click.echo(json.dumps(document, indent=2, sort_keys=True))


_owner_options = [
    click.option(
        "--owner-token", envvar="ENKLAVE_INFERENCE_OWNER_TOKEN", default=None,
        help="The service's owner token (env ENKLAVE_INFERENCE_OWNER_TOKEN; prefer the file or the variable).",
    ),
    click.option(
        "--owner-token-file", type=click.Path(dir_okay=False, path_type=Path), help="File holding the owner token."
    ),
]  # fmt: skip


def _with_owner(command: Any) -> Any:
    for option in reversed(_owner_options):
        command = option(command)
    return command


@click.group("model")
def model() -> None:
    """Encrypt ONNX models and manage those of a confidential inference service."""


@model.command("credentials")
@_with_owner
@click.option(
    "--format", "output_format", type=click.Choice(["json", "env"]), default="json", show_default=True,
    help="JSON, or environment assignments for 'enklave inference serve'.",
)  # fmt: skip
def credentials(owner_token: str | None, owner_token_file: Path | None, output_format: str) -> None:
    """Print what the service is configured with instead of the owner token.

    The host credential (base64url HMAC-SHA256 of a fixed label keyed by the token), which clients present to the
    host, and the token's SHA-256, which the host hands to the enclave: give them to 'enklave inference serve' as
    --owner-credential and --owner-token-sha256. The host credential is a secret too (it allows uploads and
    deletions); neither value reveals the token, which only the enclave ever receives.
    """
    credential, digest = owner_credentials(_owner_token(owner_token, owner_token_file))
    if output_format == "env":
        click.echo(f"ENKLAVE_INFERENCE_OWNER_CREDENTIAL={credential}")
        click.echo(f"ENKLAVE_INFERENCE_OWNER_TOKEN_SHA256={digest}")
    else:
        _echo({"owner_credential": credential, "owner_token_sha256": digest})


@model.command("encrypt")
@click.argument("source", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--name", required=True, help="The model's name (letters, digits, _ . -).")
@click.option("--version", "model_version", required=True, help="The model's version (a positive integer).")
@click.option(
    "--key-file", type=click.Path(dir_okay=False, path_type=Path), required=True,
    help="The model key (64 hex digits). Created with mode 0600 from a fresh random key if absent.",
)  # fmt: skip
@click.option(
    "--kbs-key", default=None, metavar="NAME",
    help="The enclave gets the key through the key broker's key NAME: an envelope key with --kbs-public-key or "
    "--kbs-url, else the key file must hold that key's value.",
)  # fmt: skip
@click.option(
    "--kbs-public-key", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
    help="The public JWK (or the key broker's key view) of the RSA or EC key NAME: the model key is wrapped to it.",
)  # fmt: skip
@click.option(
    "--kbs-url", default=None, metavar="URL",
    help="Fetch the public JWK of key NAME from this key broker (use HTTPS, or --kbs-public-key from a trusted copy).",
)  # fmt: skip
@click.option(
    "--kbs-admin-token-file", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
    help="The key broker's admin token, which reading a key's view needs (with --kbs-url).",
)  # fmt: skip
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Where to write the container.",
)
def encrypt(
    source: Path,
    name: str,
    model_version: str,
    key_file: Path,
    kbs_key: str | None,
    kbs_public_key: Path | None,
    kbs_url: str | None,
    kbs_admin_token_file: Path | None,
    output: Path,
) -> None:
    """Encrypt the ONNX model SOURCE with AES-256-GCM into an enklave model container."""
    public_jwk = _envelope_jwk(kbs_key, kbs_public_key, kbs_url, kbs_admin_token_file)
    create = not key_file.exists()
    if create and kbs_key is not None and public_jwk is None:
        raise UsageError(
            "--kbs-key needs --kbs-public-key or --kbs-url (an envelope key), or an existing --key-file with "
            "the key broker's key value"
        )
    key = new_model_key() if create else read_key_file(key_file)
    upload = prepare_model(
        source, name=name, version=model_version, key=key, kbs_key=kbs_key, kbs_public_jwk=public_jwk
    )
    if create:
        _write_key_file(key_file, key)
    write_atomic(output, upload.blob)
    click.echo(
        f"encrypted {name} version {upload.version} ({upload.key_id} key) to {output};"
        f" model SHA-256 {upload.sha256}" + (f"; new key in {key_file}" if create else ""),
        err=True,
    )


def _envelope_jwk(
    kbs_key: str | None, public_key: Path | None, kbs_url: str | None, admin_token_file: Path | None
) -> dict[str, Any] | None:
    """The envelope key's public JWK (or key view) from a file or the key broker; None without either."""
    if public_key is not None and kbs_url is not None:
        raise UsageError("give --kbs-public-key or --kbs-url, not both")
    if (public_key is not None or kbs_url is not None) and kbs_key is None:
        raise UsageError("--kbs-public-key and --kbs-url need --kbs-key, the key broker's name for the key")
    if admin_token_file is not None and kbs_url is None:
        raise UsageError("--kbs-admin-token-file goes with --kbs-url")
    if public_key is not None:
        return read_json_object(str(public_key), what="the public JWK file", limit=_MAX_JWK_FILE)
    if kbs_url is None or kbs_key is None:
        return None
    token = read_secret(None, admin_token_file, "key broker admin token")
    with KbsClient(kbs_url, admin_token=token) as kbs:
        return kbs.get_key(kbs_key)


@model.command("upload")
@click.argument("container", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@trust_options
@_with_owner
@click.option(
    "--key-file", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
    help="The model key: required for an owner-keyed container, which it is checked against.",
)  # fmt: skip
@click.option("--no-progress", is_flag=True, help="No progress bar, even for a large container.")
def upload(
    container: Path,
    trust: TrustOptions,
    owner_token: str | None,
    owner_token_file: Path | None,
    key_file: Path | None,
    no_progress: bool,
) -> None:
    """Upload the encrypted model CONTAINER; hand its key to the attested enclave (owner-keyed containers).

    The enclave is attested (as for 'enklave infer') before anything is sent; the key travels only inside the
    encryption to it. A KBS-keyed container needs no key: the enclave gets it from the key broker.
    """
    token = _owner_token(owner_token, owner_token_file)
    blob = read_source(container, "the model container", MAX_MODEL_SIZE + (1 << 20))
    header = read_header(blob)
    key = read_key_file(key_file) if key_file is not None else None
    with make_client(trust, owner_token=token) as client:
        if no_progress or len(blob) < _PROGRESS_THRESHOLD:
            result = client.upload_encrypted(blob, key=key)
        else:
            with click.progressbar(
                length=len(blob), label=f"uploading {header.name}", file=sys.stderr
            ) as bar:
                sent = [0]

                def progress(done: int, total: int) -> None:
                    bar.update(done - sent[0])
                    sent[0] = done

                result = client.upload_encrypted(blob, key=key, progress=progress)
    state = "loaded by the enclave" if result.loaded else "stored"
    _echo(
        {
            "name": result.name,
            "version": result.version,
            "key_id": result.key_id,
            "sha256": result.sha256,
            "container_sha256": hashlib.sha256(blob).hexdigest(),
            "status": state,
        }
    )


@model.command("list")
@click.option(
    "--url", envvar="ENKLAVE_INFERENCE_URL", required=True, metavar="URL", help="The service's base URL."
)
@_with_owner
def list_models(url: str, owner_token: str | None, owner_token_file: Path | None) -> None:
    """List the model containers the service stores (owner)."""
    _echo(
        _plain_client(
            url, _owner_token(owner_token, owner_token_file), lambda client: client.uploaded_models()
        )
    )


@model.command("delete")
@click.argument("name")
@click.argument("version")
@click.option(
    "--url", envvar="ENKLAVE_INFERENCE_URL", required=True, metavar="URL", help="The service's base URL."
)
@_with_owner
def delete(name: str, version: str, url: str, owner_token: str | None, owner_token_file: Path | None) -> None:
    """Delete model NAME version VERSION from the service (owner)."""
    token = _owner_token(owner_token, owner_token_file)
    _echo(_plain_client(url, token, lambda client: client.delete_model(name, version)))


def _plain_client(url: str, token: str, action: Callable[[Client], Any]) -> Any:
    # Listing and deleting stored containers talk to the host only, and send nothing secret but the host
    # credential derived from the owner token, which the host checks anyway: no attestation. The empty AllOf
    # accepts no enclave, so this client could never encrypt anything to one.
    with Client(url, policy=AllOf(), owner_token=token) as client:
        return action(client)
