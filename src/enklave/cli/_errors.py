"""Exit codes and the one place where errors become a single line on standard error."""

from __future__ import annotations

from typing import Final

import click
from cryptography.hazmat.primitives.serialization import Encoding

from enklave.errors import (
    BadDataError,
    EnclaveRuntimeError,
    EnklaveError,
    PlatformError,
    TransportError,
    UntrustedRootError,
    UsageError,
    VerificationError,
)
from enklave.platform.simulated import simulated_root

EXIT_OK: Final = 0
EXIT_VERIFICATION: Final = 1
EXIT_USAGE: Final = 2
EXIT_BAD_INPUT: Final = 3
EXIT_IO: Final = 4
EXIT_PLATFORM: Final = 5
EXIT_ENCLAVE: Final = 6
EXIT_INTERNAL: Final = 70
EXIT_INTERRUPTED: Final = 130

EXIT_CODES: Final = {
    EXIT_OK: "success: the evidence verified and the policy accepted it",
    EXIT_VERIFICATION: "verification or appraisal failed (the reason is printed)",
    EXIT_USAGE: "usage error: bad option, missing argument or invalid value",
    EXIT_BAD_INPUT: "malformed input: the quote, collateral or file could not be parsed",
    EXIT_IO: "I/O failed: a file could not be read or written, or a service could not be reached",
    EXIT_PLATFORM: "platform unavailable: no SGX device or Gramine, or the simulated platform is not set up",
    EXIT_ENCLAVE: "the enclave failed: it raised, timed out or its process died",
    EXIT_INTERNAL: "internal error (a bug: please report it)",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C, or a termination signal to a long-running command)",
}

EXIT_CODES_HELP: Final = "\b\nExit codes:\n" + "\n".join(
    f"  {code:<3} {text}" for code, text in EXIT_CODES.items()
)


def exit_code_for(error: EnklaveError) -> int:
    """The exit code for an enklave error."""
    if isinstance(error, VerificationError):
        return EXIT_VERIFICATION
    if isinstance(error, BadDataError):
        return EXIT_BAD_INPUT
    if isinstance(error, TransportError):
        return EXIT_IO
    if isinstance(error, UsageError):
        return EXIT_USAGE
    if isinstance(error, PlatformError):
        return EXIT_PLATFORM
    if isinstance(error, EnclaveRuntimeError):
        return EXIT_ENCLAVE
    return EXIT_INTERNAL


def fail(message: str) -> None:
    """Print one error line."""
    click.echo(f"enklave: error: {message}", err=True)


def hint(error: EnklaveError) -> str:
    """What to add to the message of ``error`` to say how to get past it, or an empty string."""
    # Evidence from this installation's simulated platform is refused unless the command is told to trust it; a
    # newcomer trying the simulation would otherwise not know which option that is. Only the very root of this
    # installation gets the hint: another installation's simulated root is not trusted by these options either.
    if (
        isinstance(error, UntrustedRootError)
        and error.root is not None
        and error.root == _local_simulated_root()
    ):
        return (
            " (this evidence comes from this installation's simulated platform, trusted only with"
            " --allow-simulated, or --simulated for 'enklave quote verify'; for development only)"
        )
    return ""


def _local_simulated_root() -> bytes | None:
    try:
        return simulated_root().certificate.public_bytes(Encoding.DER)
    except EnklaveError:
        return None


def run_guarded(command: click.Command, argv: list[str] | None) -> int:
    """Run a click command; map every error to one line and an exit code."""
    try:
        result = command.main(args=argv, prog_name="enklave", standalone_mode=False)
    except click.exceptions.Abort:
        # Ctrl-C (or end of input at a prompt): 128 + SIGINT, as shells report an interrupted command.
        fail("aborted")
        return EXIT_INTERRUPTED
    except click.UsageError as exc:
        # One line, like every other error; the command's --help has the details.
        where = exc.ctx.command_path if exc.ctx is not None else "enklave"
        fail(f"{exc.format_message()} (see '{where} --help')")
        return EXIT_USAGE
    except click.ClickException as exc:
        fail(exc.format_message())
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except EnklaveError as exc:
        fail(str(exc) + hint(exc))
        return exit_code_for(exc)
    except OSError as exc:
        fail(f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""))
        return EXIT_IO
    except Exception as exc:
        fail(f"internal error: {type(exc).__name__}: {exc}")
        return EXIT_INTERNAL
    # With standalone_mode=False, click returns the code of ctx.exit(code) instead of raising.
    return result if isinstance(result, int) else EXIT_OK
