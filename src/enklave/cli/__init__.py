"""The ``enklave`` command line: thin commands over the library layers.

Every command has ``--help``. Errors print one line on standard error, never a traceback, and exit with a
documented code (see :data:`EXIT_CODES`).
"""

from __future__ import annotations

import logging
import sys

import click

from enklave import __version__
from enklave.cli._errors import EXIT_CODES, EXIT_CODES_HELP, run_guarded
from enklave.cli.app import new, run
from enklave.cli.attestation_service import attestation_service
from enklave.cli.build import build
from enklave.cli.collateral import collateral
from enklave.cli.demo import demo
from enklave.cli.enclave import info, sign, signerid, uniqueid
from enklave.cli.infer import infer
from enklave.cli.inference import inference
from enklave.cli.kbs import kbs
from enklave.cli.model import model
from enklave.cli.quote import quote
from enklave.cli.sim import sim

__all__ = ["EXIT_CODES", "cli", "main"]


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
    epilog=EXIT_CODES_HELP,
)
@click.version_option(__version__, prog_name="enklave")
@click.option("-v", "--verbose", count=True, help="More log output on standard error (repeat for debug).")
def cli(verbose: int) -> None:
    """enklave: enclave-aware applications on Intel SGX.

    Create, build, sign and run enclave-aware apps (on SGX through Gramine, or simulated); read and verify SGX
    DCAP evidence and fetch collateral; serve the attestation service, the key broker and confidential inference.
    """
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


cli.add_command(quote)
cli.add_command(build)
cli.add_command(collateral)
cli.add_command(demo)
cli.add_command(sim)
cli.add_command(sign)
cli.add_command(uniqueid)
cli.add_command(signerid)
cli.add_command(info)
cli.add_command(new)
cli.add_command(run)
cli.add_command(attestation_service)
cli.add_command(kbs)
cli.add_command(inference)
cli.add_command(infer)
cli.add_command(model)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (also the process exit code via the console script)."""
    return run_guarded(cli, argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
