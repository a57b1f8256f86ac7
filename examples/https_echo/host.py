"""The untrusted half of the HTTPS echo: own the socket, relay TLS records, never see a request.

Run it with ``enklave run examples/https_echo`` (from the repository root), then talk to it with ``curl -k`` or
with the attested client in README.md. It:

1. loads the signed enclave bundle (build/https_echo.enclave, written by ``enklave run`` or ``enklave sign``);
2. asks the enclave for its RA-TLS certificate (public: the key stays inside) and prints its fingerprint;
3. listens on the address given and relays every connection's TLS records to the enclave's ``tls_*`` ecalls,
   until Ctrl-C.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path

from enklave import host
from enklave.channels.relay import serve
from enklave.errors import EnklaveError
from enklave.platform.mode import resolve_mode
from enklave.runtime.bundle import load_bundle

APP = Path(__file__).resolve().parent
BUNDLE = APP / "build" / "https_echo.enclave"


def main(args: list[str]) -> int:
    parser = argparse.ArgumentParser(description="HTTPS echo whose TLS ends inside the enclave")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8443, help="port to listen on (default: 8443; 0: any)")
    options = parser.parse_args(args)
    mode = resolve_mode(os.environ.get("ENKLAVE_MODE"))
    # 1. The MRENCLAVE of the bundle is what clients pin when they verify the certificate.
    expected = load_bundle(BUNDLE).mr_enclave
    with host.load(BUNDLE, mode=mode) as enclave:
        print(f"started the enclave in {mode} mode; MRENCLAVE {expected.hex()}")
        # 2. Making the certificate takes a quote; doing it now keeps it off the first client's handshake.
        certificate = enclave.ecall.tls_certificate()
        print(f"RA-TLS certificate SHA-256 {hashlib.sha256(certificate).hexdigest()}")
        # 3. The relay reads a chunk, hands it to the enclave, writes back what the enclave returns: records only.
        with serve(enclave, options.host, options.port) as relay:
            print(f"listening on https://{options.host}:{relay.port}/ (Ctrl-C to stop)", flush=True)
            try:
                relay.wait()
            except KeyboardInterrupt:
                print("stopping")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except EnklaveError as error:
        print(f"https_echo: {type(error).__name__}: {error}", file=sys.stderr)
        sys.exit(1)
