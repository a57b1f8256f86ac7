"""``enklave demo``: two short, offline demonstrations of what enklave does.

Part 1 verifies the real SGX quote shipped with enklave against its real Intel collateral and prints who it
attests. Part 2 signs the app that ``enklave new`` writes (the packaged template) into a temporary directory,
runs it in simulation on this machine's simulated SGX platform (in ``ENKLAVE_HOME``, provisioned on first use),
verifies a quote over a fresh nonce with the simulated root trusted explicitly, appraises it, and seals and
unseals a secret.
"""

from __future__ import annotations

import hmac
import json
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import click

from enklave import host
from enklave._home import data_home
from enklave.attestation.collateral import QuoteCollateral
from enklave.attestation.evidence import collateral_request
from enklave.attestation.policy import EnclavePolicy
from enklave.attestation.verified import VerifiedQuote
from enklave.attestation.verify import verify_quote
from enklave.cli.app import bundle_path, render_app
from enklave.cli.quote import print_verified
from enklave.errors import PolicyError, SealingError, VerificationError
from enklave.platform.simulated import SimulatedCollateralSource, simulated_root
from enklave.runtime.bundle import sign_bundle, write_bundle
from enklave.runtime.config import CONFIG_FILENAME
from enklave.runtime.signing import generate_signing_key
from enklave.sgx.quote import Quote

__all__ = ["DEMO_APP", "SAMPLE_REPORT_DATA", "SAMPLE_TIME", "SimulatedAppResult", "demo", "run_simulated_app"]

# The shipped collateral is valid, all of it at once, from 2025-06-19T10:56:11Z to 2025-07-19T10:01:18Z.
SAMPLE_TIME = datetime(2025, 7, 1, tzinfo=UTC)
SAMPLE_REPORT_DATA = b"Hello, world!"
DEMO_APP = "enklave-demo"
_DEMO_SECRET_SIZE = 32


def _verify_real_quote() -> VerifiedQuote:
    samples = resources.files("enklave") / "_samples"
    quote = (samples / "sgx_quote.bin").read_bytes()
    collateral = QuoteCollateral.from_json((samples / "sgx_quote_collateral.json").read_text("utf-8"))
    verified = verify_quote(quote, collateral, now=SAMPLE_TIME)
    policy = EnclavePolicy(
        mr_enclave=verified.mr_enclave,
        accepted_tcb_statuses=("UpToDate", "SWHardeningNeeded", "ConfigurationAndSWHardeningNeeded"),
        report_data=SAMPLE_REPORT_DATA,
    )
    policy.appraise(verified)
    return verified


@dataclass(frozen=True, slots=True)
class SimulatedAppResult:
    """What part 2 of the demo established: every field was checked before the result was built.

    ``verified`` is the verified (simulated) quote, accepted by a policy pinning ``mr_enclave`` and binding
    ``nonce``; ``default_policy_error`` is why the default policy (which does not allow simulated evidence)
    rejected the same quote; ``sealed_size`` is the size of the sealed blob that unsealed back to the secret.
    """

    home: Path
    mr_enclave: bytes
    mr_signer: bytes
    greeting: str
    enclave_log: tuple[str, ...]
    nonce: bytes
    verified: VerifiedQuote
    default_policy_error: str
    sealed_size: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view; binary values as lowercase hex."""
        return {
            "app": DEMO_APP,
            "enklave_home": str(self.home),
            "mrenclave": self.mr_enclave.hex(),
            "mrsigner": self.mr_signer.hex(),
            "greeting": self.greeting,
            "enclave_log": list(self.enclave_log),
            "nonce": self.nonce.hex(),
            "verified": self.verified.to_dict(),
            "default_policy_rejected": self.default_policy_error,
            "sealed_size": self.sealed_size,
            "unsealed_matches": True,
        }


def run_simulated_app(home: Path | None = None) -> SimulatedAppResult:
    """Sign the ``enklave new`` template into a temporary directory and exercise it in simulation.

    Steps: (1) render and sign the app with a fresh, throw-away key; (2) load it in simulation with ``home`` as
    the data directory (default ``ENKLAVE_HOME``; the simulated platform is provisioned there if needed); (3)
    ask for a quote over a fresh nonce, verify it with the simulated root trusted explicitly and appraise it
    with a policy pinning the bundle's MRENCLAVE and binding the nonce; (4) check that the default policy
    rejects it; (5) seal a random secret and unseal it. Raises a VerificationError when a check fails, and what
    :func:`enklave.host.load` raises when the enclave does not start.
    """
    data = home if home is not None else data_home()
    log: list[str] = []
    with tempfile.TemporaryDirectory(prefix="enklave-demo-") as tmp:
        # 1. The app exactly as `enklave new` writes it; the key is never stored.
        app = Path(tmp) / DEMO_APP
        render_app(DEMO_APP, app)
        bundle = sign_bundle(app / CONFIG_FILENAME, generate_signing_key())
        path = bundle_path(bundle.config, app)
        write_bundle(bundle, path)
        # 2. Simulation always: this part must not depend on the machine having SGX.
        with host.load(path, mode="sim", home=data, ocalls={"log": log.append}, timeout=60) as enclave:
            greeting = enclave.ecall.hello("enklave demo")
            # 3. A fresh nonce makes the quote evidence about now, not a replay; the enclave binds its SHA-256.
            nonce = os.urandom(32)
            quote = enclave.ecall.attest(nonce)
            request = collateral_request(Quote.from_bytes(quote))
            collateral = SimulatedCollateralSource(data).fetch(request.fmspc, request.ca)
            verified = verify_quote(quote, collateral, now=datetime.now(UTC), roots=[simulated_root(data)])
            EnclavePolicy(
                mr_enclave=bundle.mr_enclave, report_data_binds=nonce, allow_simulated=True
            ).appraise(verified)
            # 4. Nothing simulated passes as real: the default policy must refuse the same evidence.
            try:
                EnclavePolicy(mr_enclave=bundle.mr_enclave, report_data_binds=nonce).appraise(verified)
            except PolicyError as exc:
                default_policy_error = str(exc)
            else:
                raise VerificationError("the default policy accepted simulated evidence")
            # 5. Seal and unseal inside the enclave; the host only ever holds the ciphertext.
            secret = os.urandom(_DEMO_SECRET_SIZE)
            blob = enclave.ecall.seal_secret(secret)
            if not hmac.compare_digest(enclave.ecall.unseal_secret(blob), secret):
                raise SealingError("the demo enclave unsealed something else than it sealed")
    return SimulatedAppResult(
        home=data,
        mr_enclave=bundle.mr_enclave,
        mr_signer=bundle.mr_signer,
        greeting=greeting,
        enclave_log=tuple(log),
        nonce=nonce,
        verified=verified,
        default_policy_error=default_policy_error,
        sealed_size=len(blob),
    )


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print both results as one JSON object.")
def demo(as_json: bool) -> None:
    """Verify a real SGX quote offline, then run a simulated enclave app and verify its quote.

    \b
    Part 1: the real SGX quote shipped with enklave, verified against its real Intel collateral. The
    collateral was valid in June-July 2025, so the quote is verified as of 2025-07-01; the policy accepts the
    platform's ConfigurationAndSWHardeningNeeded status explicitly and requires the report data the enclave
    bound ("Hello, world!").
    Part 2: the app `enklave new` writes, signed into a temporary directory with a throw-away key and run in
    simulation on this machine's simulated SGX platform (in $ENKLAVE_HOME, set up on first use): a quote
    over a fresh nonce, verified with the simulated root trusted explicitly and appraised; then a secret
    sealed and unsealed inside the enclave.
    """
    verified = _verify_real_quote()
    simulated = run_simulated_app()
    if as_json:
        click.echo(
            json.dumps({"real_quote": verified.to_dict(), "simulated_app": simulated.to_dict()}, indent=2)
        )
        return
    click.echo("enklave demo: verifying a real SGX DCAP quote (Phala Network's dcap-qvl sample) with its")
    click.echo(f"Intel collateral, offline, as of {SAMPLE_TIME:%Y-%m-%d} (inside the collateral's window).")
    print_verified(verified)
    platform = f"{verified.platform_tcb_status.value} {list(verified.platform_advisory_ids)}"
    click.echo(f"  platform: {platform}, QE: {verified.qe_tcb_status.value}")
    click.echo(f"  root is the pinned Intel SGX Root CA: {'yes' if verified.intel_root else 'no'}")
    _print_simulated(simulated)


def _print_simulated(result: SimulatedAppResult) -> None:
    click.echo("")
    click.echo("enklave demo, part 2: the app `enklave new` writes, signed with a throw-away key and run in")
    click.echo(f"simulation on the simulated SGX platform in {result.home}.")
    click.echo(f"  MRENCLAVE: {result.mr_enclave.hex()}")
    click.echo(f"  MRSIGNER:  {result.mr_signer.hex()}")
    click.echo(f"  enclave:   {result.greeting}")
    click.echo(
        f"  quote over a fresh nonce: verified (TCB {result.verified.platform_tcb_status.value}), MRENCLAVE "
        "matches the bundle, report data binds the nonce"
    )
    click.echo(f"  default policy: rejects it ({result.default_policy_error})")
    click.echo(
        f"  sealing:   a {_DEMO_SECRET_SIZE}-byte secret sealed ({result.sealed_size} bytes) and unsealed"
    )
    click.echo("  => simulated evidence, accepted only because the simulated root was trusted explicitly")
