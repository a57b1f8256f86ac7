"""The command line: every command answers --help, results are scriptable, errors are one line with a code."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import click
import pytest

from certificates import replace_certificate
from conftest import ASSETS
from enklave.cli import main
from enklave.cli._errors import EXIT_BAD_INPUT, EXIT_IO, EXIT_OK, EXIT_USAGE, EXIT_VERIFICATION, run_guarded
from enklave.errors import CertificateChainError, UntrustedRootError

REAL = ASSETS / "phala-dcap-qvl"
QUOTE = str(REAL / "sgx_quote")
COLLATERAL = str(REAL / "sgx_quote_collateral.json")
MRENCLAVE = "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"
ACCEPT = ["--accept-status", "ConfigurationAndSWHardeningNeeded"]


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    "command",
    [[], ["quote"], ["quote", "show"], ["quote", "verify"], ["collateral"], ["collateral", "fetch"],
     ["collateral", "show"], ["demo"]],
)  # fmt: skip
def test_every_command_has_help(capsys: pytest.CaptureFixture[str], command: list[str]) -> None:
    code, out, _ = run(capsys, *command, "--help")
    assert code == EXIT_OK
    assert "Usage:" in out


def test_top_level_help_documents_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "--help")
    for code in ("0", "1", "2", "3", "4", "70"):
        assert f"\n  {code} " in out.replace("\n    ", "\n  ")


def test_quote_show_json_has_the_required_fields(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "quote", "show", QUOTE, "--json")
    assert code == EXIT_OK
    view = json.loads(out)
    assert view["version"] == 3
    assert view["mrenclave"] == MRENCLAVE
    assert view["mrsigner"] == "815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6"
    assert view["isv_prod_id"] == 0
    assert view["isv_svn"] == 0
    assert view["debug"] is False
    assert view["report_data"].startswith(b"Hello, world!".hex())
    assert view["fmspc"] == "00a067110000"
    assert view["attributes"]["flag_names"] == ["INIT", "MODE64BIT"]


@pytest.mark.parametrize("encoding", ["hex", "base64", "base64url", "oe-legacy", "oe-evidence"])
def test_quote_show_reads_every_encoding(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, encoding: str
) -> None:
    from enklave.sgx.oe import wrap_quote_evidence, wrap_quote_legacy

    raw = Path(QUOTE).read_bytes()
    data = {
        "hex": raw.hex().encode(),
        "base64": base64.b64encode(raw),
        "base64url": base64.urlsafe_b64encode(raw).rstrip(b"="),
        "oe-legacy": wrap_quote_legacy(raw),
        "oe-evidence": wrap_quote_evidence(raw),
    }[encoding]
    path = tmp_path / "evidence"
    path.write_bytes(data)
    code, out, err = run(capsys, "quote", "show", str(path), "--json")
    assert code == EXIT_OK, err
    assert json.loads(out)["mrenclave"] == MRENCLAVE


def test_text_that_decodes_to_no_evidence_says_it_was_decoded(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # The bytes the message quotes are the decoded ones, not the file's: without saying so, they would puzzle.
    path = tmp_path / "notes.txt"
    path.write_text("helloworldthisisnotaquote000\n")
    code, _, err = run(capsys, "quote", "show", str(path))
    assert code == EXIT_BAD_INPUT
    assert f"{path} holds text, decoded as hex or base64 into 21 bytes: unrecognised evidence" in err
    binary = tmp_path / "binary"
    binary.write_bytes(b"\x07" + bytes(40))
    code, _, err = run(capsys, "quote", "show", str(binary))
    assert code == EXIT_BAD_INPUT and "holds text" not in err


def test_verify_passes_with_an_accepting_policy(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "quote", "verify", QUOTE, "--collateral", COLLATERAL, "--at", "2025-07-01T00:00:00Z",
                         "--mrenclave", MRENCLAVE, *ACCEPT, "--json")  # fmt: skip
    assert code == EXIT_OK
    result = json.loads(out)
    assert result["ok"] is True
    assert result["quote"]["tcb_status"] == "ConfigurationAndSWHardeningNeeded"
    assert "warning" not in err


def test_verify_without_an_enclave_identity_warns_that_any_enclave_passes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run(capsys, "quote", "verify", QUOTE, "--collateral", COLLATERAL, "--at", "2025-07-01T00:00:00Z",
                         *ACCEPT, "--json")  # fmt: skip
    assert code == EXIT_OK and json.loads(out)["ok"] is True
    assert (
        err.strip()
        == "enklave: warning: no --mrenclave or --mrsigner given, so any genuine enclave passes this policy"
    )


def test_verify_default_policy_rejects_the_platform_status(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "quote", "verify", QUOTE, "--collateral", COLLATERAL, "--at", "2025-07-01")
    assert code == EXIT_VERIFICATION
    assert err.count("\n") == 1
    assert "appraisal failed" in err and "ConfigurationAndSWHardeningNeeded" in err


def test_verify_wrong_mrenclave(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "quote", "verify", QUOTE, "--collateral", COLLATERAL, "--at", "2025-07-01",
                       "--mrenclave", "00" * 32, *ACCEPT, "--json")  # fmt: skip
    assert code == EXIT_VERIFICATION
    result = json.loads(out)
    assert result["ok"] is False and result["stage"] == "appraisal" and "mr" in result["reason"].lower()


MRSIGNER = "815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6"


@pytest.mark.parametrize(
    ("options", "field"),
    [
        (["--mrsigner", MRSIGNER], None),
        (["--mrsigner", MRSIGNER, "--isv-prod-id", "0", "--min-isv-svn", "0"], None),
        (["--mrsigner", "11" * 32], "mr_signer"),
        (["--mrenclave", MRENCLAVE, "--isv-prod-id", "3"], "isv_prod_id"),
        (["--mrenclave", MRENCLAVE, "--min-isv-svn", "1"], "isv_svn"),
    ],
    ids=["signer", "signer-product-svn", "other-signer", "other-product", "svn-too-low"],
)
def test_verify_appraises_every_identity_option(
    capsys: pytest.CaptureFixture[str], options: list[str], field: str | None
) -> None:
    # The sample quote: MRSIGNER 815f..., product id 0, ISV SVN 0.
    code, out, _ = run(capsys, "quote", "verify", QUOTE, "--collateral", COLLATERAL, "--at", "2025-07-01",
                       *options, *ACCEPT, "--json")  # fmt: skip
    result = json.loads(out)
    if field is None:
        assert code == EXIT_OK and result["ok"] is True
    else:
        assert code == EXIT_VERIFICATION and result["stage"] == "appraisal"
        assert field in result["reason"]


def test_verify_outside_the_window(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "quote", "verify", QUOTE, "--collateral", COLLATERAL, "--at", "2025-08-01")
    assert code == EXIT_VERIFICATION
    assert "verification failed" in err and "expired" in err


def test_verify_with_an_explicit_test_root(capsys: pytest.CaptureFixture[str]) -> None:
    sample = ASSETS / "intel-qvl-sampledata"
    args = ["quote", "verify", str(sample / "quote.dat"), "--collateral",
            str(sample / "derived" / "dcap_qvl_style_collateral.json"), "--at", "2025-01-01"]  # fmt: skip
    assert run(capsys, *args)[0] == EXIT_VERIFICATION
    assert run(capsys, *args, "--root", str(sample / "trustedRootCaCert.pem"))[0] == EXIT_OK


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["quote", "show", "/nonexistent/quote"], EXIT_IO),
        (["quote", "show", str(ASSETS / "README.md")], EXIT_BAD_INPUT),
        (["quote", "verify", QUOTE, "--collateral", str(ASSETS / "README.md")], EXIT_BAD_INPUT),
        (["quote", "verify", QUOTE, "--collateral", COLLATERAL, "--at", "yesterday"], EXIT_USAGE),
        (["quote", "verify", QUOTE, "--collateral", COLLATERAL, "--mrenclave", "zz"], EXIT_USAGE),
        (["quote", "verify", QUOTE], EXIT_USAGE),
        (["collateral", "fetch", "-o", "-"], EXIT_USAGE),
        (["collateral", "fetch", "--fmspc", "00", "--ca", "processor", "-o", "-"], EXIT_USAGE),
        (["no-such-command"], EXIT_USAGE),
    ],
)
def test_errors_are_one_line_with_a_code(
    capsys: pytest.CaptureFixture[str], args: list[str], expected: int
) -> None:
    code, _, err = run(capsys, *args)
    assert code == expected
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("enklave: error: ")


def test_quote_with_an_undecodable_certificate_name_is_a_clean_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # The PCK certificate's subject common name, a UTF8String made invalid UTF-8 (same length).
    name = b"Intel SGX PCK Certificate"

    def garble(der: bytes) -> bytes:
        assert der.count(name) == 1
        return der.replace(name, b"\xff" * len(name))

    path = tmp_path / "bad-name.bin"
    path.write_bytes(replace_certificate(Path(QUOTE).read_bytes(), 0, garble))
    code, _, err = run(capsys, "quote", "show", str(path))
    assert code == EXIT_BAD_INPUT
    assert "malformed" in err and len(err.strip().splitlines()) == 1


def test_truncated_quote_is_a_clean_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "short.bin"
    path.write_bytes(Path(QUOTE).read_bytes()[:700])
    code, _, err = run(capsys, "quote", "show", str(path))
    assert code == EXIT_BAD_INPUT
    assert "truncated" in err and len(err.strip().splitlines()) == 1


def test_collateral_show(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "collateral", "show", COLLATERAL, "--json")
    assert code == EXIT_OK
    view = json.loads(out)
    assert view["fmspc"] == "00a067110000"
    assert view["earliest_next_update"].startswith("2025-07-19T10:01:18")


def test_console_script_runs_as_a_module() -> None:
    result = subprocess.run([sys.executable, "-m", "enklave", "quote", "show", QUOTE, "--json"],
                            capture_output=True, text=True, check=False, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["version"] == 3


def test_verify_report_data_binding(capsys: pytest.CaptureFixture[str]) -> None:
    base = ["quote", "verify", QUOTE, "--collateral", COLLATERAL, "--at", "2025-07-01", *ACCEPT]
    assert run(capsys, *base, "--report-data", b"Hello, world!".hex())[0] == EXIT_OK
    code, _, err = run(capsys, *base, "--report-data", b"Hello, world?".hex())
    assert code == EXIT_VERIFICATION and "report_data" in err


@pytest.mark.parametrize(
    "case", ["this installation's root", "another root", "no root known", "not a root error"]
)
def test_evidence_from_the_simulated_platform_is_refused_with_the_option_that_trusts_it(
    case: str, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding

    from enklave.platform.simulated import provision, simulated_root

    provision()
    local = simulated_root().certificate.public_bytes(Encoding.DER)
    error = {
        "this installation's root": UntrustedRootError("chain ends in an untrusted root", root=local),
        "another root": UntrustedRootError("chain ends in an untrusted root", root=local[:-1] + b"\0"),
        "no root known": UntrustedRootError("chain ends in a certificate issued by no trusted root"),
        "not a root error": CertificateChainError("not issued by the simulated root"),
    }[case]

    @click.command()
    def command() -> None:
        raise error

    assert run_guarded(command, []) == EXIT_VERIFICATION
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and str(error) in err
    assert ("--allow-simulated" in err) is (case == "this installation's root")


@pytest.mark.parametrize(
    "command", [("kbs", "serve"), ("attestation-service", "serve"), ("inference", "serve")]
)
@pytest.mark.parametrize("option", ["--data", "--data-dir"])
def test_every_service_takes_its_data_directory_under_both_names(
    command: tuple[str, str], option: str, tmp_path: Path
) -> None:
    from enklave.cli import cli

    group = cli.commands[command[0]]
    assert isinstance(group, click.Group)
    serve = group.commands[command[1]]
    with serve.make_context(command[1], [option, str(tmp_path)]) as ctx:
        assert ctx.params["data_dir"] == tmp_path


@pytest.mark.parametrize(("minimum", "code"), [(17, EXIT_OK), (18, EXIT_VERIFICATION)])
def test_verify_can_refuse_collateral_from_before_a_tcb_recovery(
    minimum: int, code: int, capsys: pytest.CaptureFixture[str]
) -> None:
    # The sample's TCB info and QE identity both have tcbEvaluationDataNumber 17.
    at = ["--at", "2025-07-01T00:00:00Z"]
    result, _, err = run(capsys, "quote", "verify", QUOTE, "--collateral", COLLATERAL, *at, "--mrenclave", MRENCLAVE,
                         *ACCEPT, "--min-tcb-evaluation-data-number", str(minimum))  # fmt: skip
    assert result == code
    if code != EXIT_OK:
        assert "TCB evaluation data number 17 is below the minimum 18" in err
