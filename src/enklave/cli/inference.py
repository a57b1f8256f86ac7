"""``enklave inference serve``: run the confidential inference service (ONNX Runtime in an enclave) with uvicorn."""

from __future__ import annotations

import os
from pathlib import Path

import click

from enklave._home import data_home
from enklave.cli._serve import ServeOptions, enclave_identity
from enklave.cli._serve import serve as serve_service
from enklave.errors import ConfigError, UsageError
from enklave.inference.app import create_app
from enklave.inference.config import MAX_ORT_THREADS
from enklave.inference.service import InferenceConfig, InferenceService
from enklave.runtime.config import parse_size

__all__ = ["inference"]

DEFAULT_PORT = 8080


@click.group("inference")
def inference() -> None:
    """The confidential inference service: ONNX Runtime in an enclave, Open Inference Protocol over attested OHTTP.

    Clients verify the enclave's attestation, then send KServe v2 requests encrypted to a key that only the enclave
    holds; models arrive encrypted and their keys only after attestation.
    """


def _size(value: str, option: str) -> int:
    try:
        size = parse_size(value, option)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    if size <= 0:
        raise UsageError(f"{option} must be positive")
    return size


@inference.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(0, 65535), help="TCP port."
)
@click.option(
    "--data-dir", "--data", "data_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Data directory: the signed enclave and its signing key (default: $ENKLAVE_HOME/inference).",
)  # fmt: skip
@click.option(
    "--storage", "storage_url", default=None,
    help="sqlite:///abs/path.db (default: state.db in the data directory) or postgresql://...",
)  # fmt: skip
@click.option(
    "--mode", type=click.Choice(["sim", "sgx", "auto"]), default="auto", show_default=True,
    help="Run the enclave in simulation, on SGX, or on SGX when present.",
)  # fmt: skip
@click.option(
    "--owner-credential", envvar="ENKLAVE_INFERENCE_OWNER_CREDENTIAL", default=None,
    help="The model owner's host credential, from 'enklave model credentials' (env "
    "ENKLAVE_INFERENCE_OWNER_CREDENTIAL); with --owner-token-sha256. Preferred: the host never sees the token.",
)  # fmt: skip
@click.option(
    "--owner-token-sha256", envvar="ENKLAVE_INFERENCE_OWNER_TOKEN_SHA256", default=None, metavar="HEX",
    help="SHA-256 of the owner token, which the enclave checks model keys against (env "
    "ENKLAVE_INFERENCE_OWNER_TOKEN_SHA256); with --owner-credential.",
)  # fmt: skip
@click.option(
    "--owner-token", envvar="ENKLAVE_INFERENCE_OWNER_TOKEN", default=None,
    help="The model owner's token itself (env ENKLAVE_INFERENCE_OWNER_TOKEN): the host derives the two values "
    "above from it at start and drops it, but it did see it. No owner: model management disabled.",
)  # fmt: skip
@click.option(
    "--api-key", envvar="ENKLAVE_INFERENCE_API_KEY", default=None,
    help="Bearer token that inference needs, checked inside the enclave (env ENKLAVE_INFERENCE_API_KEY; "
    "none: open).",
)  # fmt: skip
@click.option(
    "--attestation-url", default=None, help="Attestation service for the key release flow and tokens."
)
@click.option("--kbs-url", default=None, help="Key broker that releases model keys (and the HPKE seed).")
@click.option(
    "--hpke-seed-key", default=None,
    help="Key broker key holding the gateway's HPKE seed, so that replicas share one key configuration "
    "(measured into the enclave).",
)  # fmt: skip
@click.option(
    "--kbs-mrsigner", envvar="ENKLAVE_KBS_MRSIGNER", default=None, metavar="HEX",
    help="MRSIGNER of the key broker's enclave: its release quotes must carry it (env ENKLAVE_KBS_MRSIGNER; "
    "measured into the enclave; with --kbs-url, this or --kbs-mrenclave, or no release is accepted). The key "
    "broker prints it at start.",
)  # fmt: skip
@click.option(
    "--kbs-mrenclave", default=None, metavar="HEX", help="MRENCLAVE of the key broker's enclave (measured)."
)
@click.option(
    "--kbs-isv-prod-id", envvar="ENKLAVE_KBS_ISV_PROD_ID", default=None, type=click.IntRange(0, 65535),
    help="ISV product id of the key broker's enclave (env ENKLAVE_KBS_ISV_PROD_ID; measured; the packaged key "
    "broker's is 2).",
)  # fmt: skip
@click.option(
    "--kbs-min-isv-svn", default=None, type=click.IntRange(0, 65535),
    help="Lowest ISV SVN of the key broker's enclave (measured).",
)  # fmt: skip
@click.option(
    "--max-batch", default=8, show_default=True, type=click.IntRange(1, 1024),
    help="Most requests merged into one ONNX Runtime run (models with a batch dimension).",
)  # fmt: skip
@click.option(
    "--batch-delay-ms", default=2.0, show_default=True, type=click.FloatRange(0, 1000),
    help="Longest wait for a batch to fill.",
)  # fmt: skip
@click.option(
    "--threads", default=0, show_default=True, type=click.IntRange(0, MAX_ORT_THREADS),
    help=f"ONNX Runtime intra-op threads in the enclave (0: the CPU count, at most {MAX_ORT_THREADS}).",
)  # fmt: skip
@click.option("--max-model-size", default="1G", show_default=True, help="Largest model (plaintext bytes).")
@click.option("--max-total-size", default="2G", show_default=True, help="All loaded models together.")
@click.option(
    "--max-models", default=16, show_default=True, type=click.IntRange(1, 4096), help="Models at once."
)
@click.option("--max-request-size", default="32M", show_default=True, help="Largest inference request body.")
@click.option(
    "--max-tensors", default=64, show_default=True, type=click.IntRange(1, 65536), help="Tensors per request."
)
@click.option(
    "--certfile", type=click.Path(dir_okay=False, exists=True), default=None, help="TLS certificate."
)
@click.option(
    "--keyfile", type=click.Path(dir_okay=False, exists=True), default=None, help="TLS private key."
)
def serve(
    host: str,
    port: int,
    data_dir: Path | None,
    storage_url: str | None,
    mode: str,
    owner_credential: str | None,
    owner_token_sha256: str | None,
    owner_token: str | None,
    api_key: str | None,
    attestation_url: str | None,
    kbs_url: str | None,
    hpke_seed_key: str | None,
    kbs_mrsigner: str | None,
    kbs_mrenclave: str | None,
    kbs_isv_prod_id: int | None,
    kbs_min_isv_svn: int | None,
    max_batch: int,
    batch_delay_ms: float,
    threads: int,
    max_model_size: str,
    max_total_size: str,
    max_models: int,
    max_request_size: str,
    max_tensors: int,
    certfile: str | None,
    keyfile: str | None,
) -> None:
    """Serve confidential inference (plain HTTP on loopback by default; TLS with --certfile/--keyfile).

    Every request body that matters is encrypted to the enclave: TLS protects the owner credential and the upload
    metadata. Configure the model owner with --owner-credential and --owner-token-sha256 ('enklave model
    credentials' derives both from the owner token), so that this host never holds the token.
    """
    if (certfile is None) != (keyfile is None):
        raise UsageError("--certfile and --keyfile go together")
    token = (owner_token or "").strip() or None
    if token is not None:
        # Keep the token out of the environment the enclave process and any other child inherit; the
        # configuration below keeps only what it derives from it.
        os.environ.pop("ENKLAVE_INFERENCE_OWNER_TOKEN", None)
        click.echo(
            "note: the owner token was given to the host, which derived the owner credential and the token's "
            "SHA-256 from it and dropped it; pass those instead ('enklave model credentials') so that the host "
            "never sees the token",
            err=True,
        )
    home = data_home()
    data = data_dir if data_dir is not None else home / "inference"
    config = InferenceConfig(
        data_dir=data,
        mode=mode,
        home=home,
        owner_token=token,
        owner_credential=(owner_credential or "").strip() or None,
        owner_token_sha256=(owner_token_sha256 or "").strip() or None,
        api_key=(api_key or "").strip() or None,
        attestation_url=attestation_url,
        kbs_url=kbs_url,
        hpke_seed_key=hpke_seed_key,
        # A value from a file or a ConfigMap may end with a newline.
        kbs_mrsigner=(kbs_mrsigner or "").strip() or None,
        kbs_mrenclave=kbs_mrenclave,
        kbs_isv_prod_id=kbs_isv_prod_id,
        kbs_min_isv_svn=kbs_min_isv_svn,
        max_batch=max_batch,
        batch_delay_ms=batch_delay_ms,
        threads=threads,
        max_models=max_models,
        max_model_bytes=_size(max_model_size, "--max-model-size"),
        max_total_bytes=_size(max_total_size, "--max-total-size"),
        max_request_bytes=_size(max_request_size, "--max-request-size"),
        max_tensors=max_tensors,
    )
    options = ServeOptions(host, port, storage_url, mode, None, certfile, keyfile, home, data)

    def banner(service: InferenceService) -> str:
        return (
            f"inference service: {enclave_identity(service.info, service.mode)}, "
            f"{len(service.enclave.models()['loaded'])} models loaded"
        )

    serve_service(options, lambda storage: InferenceService(config, storage), create_app, banner)
