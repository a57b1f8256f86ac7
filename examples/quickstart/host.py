"""The untrusted half of the quick start: start the enclave, make sure it is the right one, keep its vault.

Run it with ``enklave run examples/quickstart`` (from the repository root). Each run:

1. loads the signed enclave bundle (build/quickstart.enclave, written by ``enklave run`` or ``enklave sign``);
2. says hello across the boundary;
3. asks the enclave for a quote over a fresh random nonce and verifies it: the signatures up to a trusted root,
   the collateral (TCB info, QE identity, revocation lists), then the appraisal policy (is this *our* enclave,
   and is the quote about *our* nonce?);
4. opens the vault: restores the secret the previous run sealed to build/vault.sealed, or creates one;
5. stores the vault sealed again, for the next run.
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from enklave import host
from enklave.attestation import (
    CollateralSource,
    EnclavePolicy,
    PcsCollateralSource,
    TrustedRoot,
    VerifiedQuote,
    collateral_request,
    intel_sgx_root,
    verify_quote,
)
from enklave.errors import EcallError, EnklaveError
from enklave.platform.mode import resolve_mode
from enklave.platform.simulated import SimulatedCollateralSource, simulated_root
from enklave.runtime.bundle import load_bundle
from enklave.sgx.quote import Quote

APP = Path(__file__).resolve().parent
BUNDLE = APP / "build" / "quickstart.enclave"
VAULT = APP / "build" / "vault.sealed"


def trust_for(mode: str) -> tuple[CollateralSource, TrustedRoot]:
    """Where collateral comes from and which root CA we trust, for the platform we run on."""
    if mode == "sgx":
        # Real SGX: quotes chain up to Intel's SGX Root CA (built into enklave, pinned), and Intel's
        # Provisioning Certification Service publishes the collateral. A PCCS inside your network serves the
        # same API: PcsCollateralSource("https://pccs.example:8081").
        return PcsCollateralSource(), intel_sgx_root()
    # Simulation: this machine's simulated platform (in ENKLAVE_HOME) has its own Intel-style PKI. Its quotes
    # verify only because we name its root here, on purpose, and the verified result is marked simulated.
    return SimulatedCollateralSource(), simulated_root()


def verify_evidence(quote: bytes, nonce: bytes, expected_mrenclave: bytes, mode: str) -> VerifiedQuote:
    """Step 3: raises a VerificationError (never returns False) when the quote must not be trusted."""
    collateral_source, root = trust_for(mode)
    # The quote names the platform it comes from (its FMSPC, in the PCK certificate it carries); the collateral
    # for that platform says which CPU microcode and quoting enclave versions are up to date.
    wanted = collateral_request(Quote.from_bytes(quote))
    collateral = collateral_source.fetch(wanted.fmspc, wanted.ca)
    verified = verify_quote(quote, collateral, now=datetime.now(UTC), roots=[root])
    # A valid signature only says "some enclave on some SGX machine said this". The policy says which enclave
    # we accept: MRENCLAVE is the hash of the enclave's code and configuration, so pinning it to the value in
    # the bundle we signed accepts exactly that code. report_data_binds checks that the quote carries
    # SHA-256(nonce), i.e. that it was made for this request.
    # Simulated evidence is refused unless we run in simulation ourselves.
    policy = EnclavePolicy(
        mr_enclave=expected_mrenclave, report_data_binds=nonce, allow_simulated=(mode == "sim")
    )
    policy.appraise(verified)
    return verified


def open_vault(enclave: host.Enclave) -> None:
    """Steps 4 and 5: restore (or create) the enclave's secret and store it sealed for the next run."""
    sealed: bytes | None = VAULT.read_bytes() if VAULT.exists() else None
    try:
        resealed = enclave.ecall.open_vault(sealed)
        if sealed is None:
            print("vault: no sealed secret yet, the enclave created a new one")
        else:
            print("vault: restored sealed state from previous run")
    except EcallError as error:
        if error.type_name not in ("SealingError", "InvalidSealedBlob"):
            raise
        # The blob was sealed by a different enclave: most often this one before its code changed and it was
        # signed again. A new MRENCLAVE derives a different sealing key; that is the protection working.
        print(f"vault: {VAULT.name} was sealed by another enclave (MRENCLAVE changed?); starting a new one")
        resealed = enclave.ecall.open_vault(None)
    VAULT.write_bytes(resealed)
    print(f"vault: secret fingerprint {enclave.ecall.fingerprint()}, sealed to build/{VAULT.name}")


def main(args: list[str]) -> int:
    mode = resolve_mode(os.environ.get("ENKLAVE_MODE"))
    # 1. load_bundle checks the bundle's signature and measurement, as the CPU does when it starts an enclave.
    expected = load_bundle(BUNDLE).mr_enclave
    with host.load(BUNDLE, mode=mode, ocalls={"log": lambda line: print(f"enclave says: {line}")}) as enclave:
        print(f"started the enclave in {mode} mode; MRENCLAVE {expected.hex()}")
        # 2. Arguments and results cross the boundary serialized and type-checked; no object is shared.
        print(enclave.ecall.hello(args[0] if args else "reader"))
        # 3. A fresh nonce per request: the verifier's own randomness, so the evidence cannot be a replay.
        nonce = os.urandom(32)
        verified = verify_evidence(enclave.ecall.attest(nonce), nonce, expected, mode)
        where = "SIMULATED platform (trusted explicitly)" if verified.simulated else "genuine SGX platform"
        tcb = verified.platform_tcb_status.value
        print(f"attestation: quote verified, enclave accepted, {where}, TCB {tcb}")
        open_vault(enclave)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except EnklaveError as error:
        print(f"quickstart: {type(error).__name__}: {error}", file=sys.stderr)
        sys.exit(1)
