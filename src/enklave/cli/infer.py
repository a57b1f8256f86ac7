"""``enklave infer``: one attested, end-to-end encrypted inference against a confidential inference service.

The options that say which enclave to trust (:func:`trust_options`) and how to read credentials are shared with
``enklave model`` (:mod:`enklave.cli.model`).
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

import click
import numpy as np

from enklave.attestation.policy import EnclavePolicy
from enklave.attestation.sources import HttpxTransport
from enklave.attestation.tokens import HttpJwksSource, TokenVerifier
from enklave.attestation.trust import TrustedRoot
from enklave.cli._io import read_file
from enklave.cli._policy import identity_arguments, min_tcb_evaluation_data_number_option
from enklave.errors import BadDataError, TransportError, UsageError
from enklave.inference.client import Attestation, Client
from enklave.platform.simulated import simulated_root

__all__ = ["TrustOptions", "infer", "make_client", "read_secret", "trust_options"]

_MAX_SECRET_FILE = 4 << 10
_MAX_INPUT_FILE = 512 << 20
_MAX_TOP = 100
_F = TypeVar("_F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class TrustOptions:
    """What the trust options of a command said: the service, the enclave to accept, how to attest."""

    url: str
    mrenclave: tuple[str, ...]
    mrsigner: tuple[str, ...]
    isv_prod_id: int | None
    min_svn: int | None
    min_tcb_eval: int | None
    allow_debug: bool
    allow_simulated: bool
    roots: tuple[str, ...]
    attestation: str
    attestation_url: str | None


def trust_options(command: _F) -> _F:
    """Add the options that name the service and the enclave it must run (see ``--help``)."""
    options = [
        click.option(
            "--url", envvar="ENKLAVE_INFERENCE_URL", required=True, metavar="URL",
            help="The inference service's base URL (env ENKLAVE_INFERENCE_URL).",
        ),
        click.option("--mrenclave", multiple=True, metavar="HEX", help="Accept only this MRENCLAVE (repeat: one of)."),
        click.option("--mrsigner", multiple=True, metavar="HEX", help="Accept only this MRSIGNER (repeat: one of)."),
        click.option("--isv-prod-id", type=click.IntRange(0, 0xFFFF), help="Required ISV product id."),
        click.option("--min-svn", type=click.IntRange(0, 0xFFFF), help="Minimum ISV security version."),
        min_tcb_evaluation_data_number_option,
        click.option("--allow-debug", is_flag=True, help="Accept a debug enclave (never in production)."),
        click.option(
            "--allow-simulated", is_flag=True,
            help="Trust this machine's simulated SGX root (ENKLAVE_HOME) and accept simulated evidence."
            " Development only.",
        ),
        click.option(
            "--root", "roots", multiple=True, type=click.Path(dir_okay=False),
            help="Trust this root CA (PEM) instead of Intel's SGX Root CA. Repeatable.",
        ),
        click.option(
            "--attestation", type=click.Choice(["dcap", "token"]), default="dcap", show_default=True,
            help="Verify the quote here (dcap), or trust the attestation service's token (token).",
        ),
        click.option(
            "--attestation-url", metavar="URL",
            help="With --attestation token: the attestation service (token issuer; its keys at URL/certs).",
        ),
    ]  # fmt: skip

    # functools.wraps also carries over the options already attached below this decorator.
    @functools.wraps(command)
    def wrapped(**kwargs: Any) -> Any:
        names = [field.name for field in fields(TrustOptions)]
        trust = TrustOptions(**{name: kwargs.pop(name) for name in names})
        return command(trust=trust, **kwargs)

    for option in reversed(options):
        wrapped = option(wrapped)
    return wrapped  # type: ignore[return-value]


def _policy(trust: TrustOptions) -> EnclavePolicy:
    if not trust.mrenclave and not trust.mrsigner:
        raise UsageError("say which enclave to trust: --mrenclave, or --mrsigner (with --isv-prod-id)")
    if trust.allow_simulated and trust.roots:
        raise UsageError(
            "--allow-simulated and --root are exclusive: --allow-simulated trusts the simulated root"
        )
    return EnclavePolicy(
        **identity_arguments(
            mrenclave=trust.mrenclave,
            mrsigner=trust.mrsigner,
            isv_prod_id=trust.isv_prod_id,
            min_isv_svn=trust.min_svn,
            min_tcb_eval=trust.min_tcb_eval,
            allow_debug=trust.allow_debug,
            allow_simulated=trust.allow_simulated,
        )
    )


def make_client(trust: TrustOptions, *, api_key: str | None = None, owner_token: str | None = None) -> Client:
    """A :class:`Client` for what the trust options said. Raises :class:`UsageError` for a policy that pins no
    enclave, or contradictory options; :class:`~enklave.errors.PlatformError` for --allow-simulated on a
    machine without a simulated platform."""
    policy = _policy(trust)
    roots: list[TrustedRoot] | None = None
    if trust.allow_simulated:
        roots = [simulated_root()]
    elif trust.roots:
        roots = [TrustedRoot.from_pem(read_file(path, what="the root certificate")) for path in trust.roots]
    verifier: TokenVerifier | None = None
    if trust.attestation == "token":
        if trust.attestation_url is None:
            raise UsageError("--attestation token needs --attestation-url (the attestation service)")
        issuer = trust.attestation_url.rstrip("/")
        verifier = TokenVerifier(issuer, HttpJwksSource(f"{issuer}/certs", HttpxTransport()))
    elif trust.attestation_url is not None:
        raise UsageError("--attestation-url is for --attestation token")
    return Client(
        trust.url,
        policy=policy,
        roots=roots,
        attestation="token" if trust.attestation == "token" else "dcap",
        token_verifier=verifier,
        api_key=api_key,
        owner_token=owner_token,
    )


def read_secret(value: str | None, path: Path | None, what: str) -> str | None:
    """A credential given as text (or by environment variable) or in a file (first line); not both."""
    if value is not None and path is not None:
        raise UsageError(f"give the {what} or its file, not both")
    if path is not None:
        raw = read_file(str(path), what=f"the {what} file", limit=_MAX_SECRET_FILE)
        try:
            value = raw.decode("utf-8").strip()
        except UnicodeDecodeError as exc:
            raise BadDataError(f"the {what} file {path} is not UTF-8") from exc
    if value is not None and (not value or not value.isprintable()):
        raise UsageError(f"the {what} must be a non-empty line of printable text")
    return value


def _load_array(path: Path) -> Any:
    # np.load never unpickles with allow_pickle=False: an .npy or .npz of object arrays is refused.
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise TransportError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if size > _MAX_INPUT_FILE:
        raise UsageError(f"the input file {path} is larger than {_MAX_INPUT_FILE} bytes")
    try:
        return np.load(path, allow_pickle=False)
    except OSError as exc:
        raise TransportError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise BadDataError(f"the input file {path} is not a numpy .npy or .npz file: {exc}") from exc


def load_inputs(specs: tuple[str, ...]) -> list[tuple[str, dict[str, np.ndarray] | np.ndarray]]:
    """Read the files the ``--input`` values name, before anything goes to the network: ``x.npz`` (its arrays
    by name), ``NAME=x.npy``, or ``x.npy`` (its name, empty here, is the model's only input)."""
    loaded: list[tuple[str, dict[str, np.ndarray] | np.ndarray]] = []
    for spec in specs:
        name, sep, location = spec.partition("=")
        if not sep:
            name, location = "", spec
        content = _load_array(Path(location))
        if isinstance(content, np.lib.npyio.NpzFile):
            with content:
                if name:
                    raise UsageError(f"{location}: an .npz file names its inputs; drop the '{name}=' prefix")
                loaded.append(("", {key: content[key] for key in content.files}))
        else:
            loaded.append((name, content))
    if not loaded:
        raise UsageError("give at least one --input")
    return loaded


def name_inputs(
    loaded: list[tuple[str, dict[str, np.ndarray] | np.ndarray]], model_inputs: Callable[[], list[str]]
) -> dict[str, np.ndarray]:
    """The input tensors by name; ``model_inputs`` (the model's input names) is asked only for an unnamed .npy."""
    inputs: dict[str, np.ndarray] = {}
    for name, content in loaded:
        if isinstance(content, dict):
            arrays = content
        elif name:
            arrays = {name: content}
        else:
            names = model_inputs()
            if len(names) != 1:
                raise UsageError(f"the model has {len(names)} inputs: use NAME=file.npy or an .npz file")
            arrays = {names[0]: content}
        for key, array in arrays.items():
            if key in inputs:
                raise UsageError(f"the input {key!r} is given twice")
            inputs[key] = array
    return inputs


def _top(array: np.ndarray, count: int) -> list[tuple[int, float]] | None:
    # Classifier outputs ([classes] or [1, classes] of floats): the highest scores, best first.
    if array.dtype.kind != "f" or array.size < 2 or array.size != array.shape[-1]:
        return None
    flat = array.reshape(-1).astype(np.float64)
    order = np.argsort(-flat, kind="stable")[:count]
    return [(int(index), float(flat[index])) for index in order]


def _describe_output(array: np.ndarray, top: int) -> dict[str, Any]:
    view: dict[str, Any] = {"shape": list(array.shape), "dtype": str(array.dtype)}
    best = _top(array, top)
    if best is not None:
        view["top"] = [{"index": index, "score": score} for index, score in best]
    return view


def _identity_line(attestation: Attestation) -> str:
    flags = [attestation.method, f"TCB {attestation.tcb_status}"]
    if attestation.simulated:
        flags.append("SIMULATED")
    if attestation.debug:
        flags.append("DEBUG")
    return (
        f"attested enclave: MRENCLAVE {attestation.mr_enclave.hex()} MRSIGNER {attestation.mr_signer.hex()}"
        f" product {attestation.isv_prod_id} svn {attestation.isv_svn} ({', '.join(flags)})"
    )


def _save(path: Path, outputs: Mapping[str, np.ndarray]) -> None:
    try:
        with path.open("wb") as handle:
            np.savez(handle, **outputs)  # type: ignore[arg-type]
    except OSError as exc:
        raise TransportError(f"cannot write {path}: {exc.strerror or exc}") from exc


@click.command("infer")
@trust_options
@click.option("--model", required=True, help="The model's name.")
@click.option("--version", "model_version", default=None, help="The model version (default: the latest).")
@click.option(
    "--input", "input_specs", multiple=True, required=True, metavar="[NAME=]FILE",
    help="Input tensors: an .npz file (arrays by input name), NAME=file.npy, or file.npy for a one-input model.",
)  # fmt: skip
@click.option(
    "--api-key", envvar="ENKLAVE_INFERENCE_API_KEY", default=None,
    help="The service's API key (env ENKLAVE_INFERENCE_API_KEY; prefer the file or the variable).",
)  # fmt: skip
@click.option(
    "--api-key-file", type=click.Path(dir_okay=False, path_type=Path), help="File holding the API key."
)
@click.option("--json-tensors", is_flag=True, help="Send tensors as JSON instead of binary tensor data.")
@click.option(
    "--top", type=click.IntRange(1, _MAX_TOP), default=5, show_default=True, help="Classes shown per output."
)
@click.option(
    "--save",
    "save_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the outputs to this .npz file.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON object: the enclave identity, outputs, times."
)
def infer(
    trust: TrustOptions,
    model: str,
    model_version: str | None,
    input_specs: tuple[str, ...],
    api_key: str | None,
    api_key_file: Path | None,
    json_tensors: bool,
    top: int,
    save_path: Path | None,
    as_json: bool,
) -> None:
    """Run MODEL on the inputs inside the service's enclave, end to end encrypted, after attesting it.

    The client verifies the enclave's attestation against the policy the options give (at least --mrenclave or
    --mrsigner) before it sends anything; the host relays only ciphertext.
    """
    loaded = load_inputs(input_specs)
    with make_client(trust, api_key=read_secret(api_key, api_key_file, "API key")) as client:
        started = time.perf_counter()
        attestation = client.attest()
        attested = time.perf_counter()

        def model_inputs() -> list[str]:
            metadata = client.model_metadata(model, model_version)
            entries = metadata.get("inputs")
            if not isinstance(entries, list):
                raise BadDataError("the model metadata lists no inputs")
            return [str(entry.get("name")) for entry in entries if isinstance(entry, dict)]

        inputs = name_inputs(loaded, model_inputs)
        before = time.perf_counter()
        outputs = client.infer(model, inputs, version=model_version, binary=not json_tensors)
        done = time.perf_counter()
    if save_path is not None:
        _save(save_path, outputs)
    timing = {"attestation_ms": (attested - started) * 1000, "inference_ms": (done - before) * 1000}
    if as_json:
        document = {
            "enclave": attestation.describe(),
            "model": model,
            "outputs": {name: _describe_output(array, top) for name, array in outputs.items()},
            **{key: round(value, 3) for key, value in timing.items()},
        }
        click.echo(json.dumps(document, indent=2))
        return
    click.echo(_identity_line(attestation))
    click.echo(f"attestation verified in {timing['attestation_ms']:.1f} ms")
    click.echo(f"model {model}: {len(outputs)} output(s) in {timing['inference_ms']:.1f} ms")
    for name, array in outputs.items():
        view = _describe_output(array, top)
        click.echo(f"  {name}: {view['dtype']} {view['shape']}")
        for rank, entry in enumerate(view.get("top", []), start=1):
            click.echo(f"    {rank}. class {entry['index']}: {entry['score']:.6f}")
