"""``enklave demo``, the quick start: the real quote, then three services, an encrypted model and an attested
inference, checked against plain ONNX Runtime; and nothing left running afterwards, whether it ends well, fails
or is interrupted."""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from enklave.cli import _demo_inference, main
from enklave.cli._demo_inference import MODEL_FILE, SEED_KEY, InferenceDemoResult, demo_input
from enklave.cli._errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_VERIFICATION
from enklave.errors import VerificationError
from enklave.inference._enclave_handle import sign_inference_enclave
from enklave.runtime.bundle import load_bundle

REAL_MRENCLAVE = "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"
MODEL = Path(onnx.__file__).resolve().parent.parent / MODEL_FILE
# The package's `demo` attribute is the click command; the module is what the tests patch.
demo = importlib.import_module("enklave.cli.demo")
STEPS = [
    "attestation service started",
    "key broker started, HPKE seed created",
    "inference service started (seed released by the key broker)",
    "client attested the inference enclave",
    "model encrypted (fresh AES-256-GCM key)",
    "model uploaded, key sent inside the encryption",
    "attested, end-to-end encrypted inference",
    "plain ONNX Runtime on the same model and input",
    "everything stopped",
]


def children(pid: int | None = None) -> set[int]:
    """The live child processes of ``pid`` (default: this process), from /proc."""
    parent = os.getpid() if pid is None else pid
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue  # It exited while we looked.
        # The command name may hold spaces and parentheses: the fields after the last ")" are fixed.
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == parent and state != "Z":
            found.add(int(entry))
    return found


def alive(pids: set[int]) -> set[int]:
    return {pid for pid in pids if Path(f"/proc/{pid}").exists()}


def plain_top5() -> list[tuple[int, float]]:
    """The top five classes of the model on the demo input, on plain ONNX Runtime here (ties in index order)."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(MODEL.read_bytes(), options, providers=["CPUExecutionProvider"])
    row = session.run(None, {"gpu_0/data_0": demo_input()})[0].reshape(-1)
    order = np.argsort(-row, kind="stable")[:5]
    return [(int(i), float(row[i])) for i in order]


def watching(
    monkeypatch: pytest.MonkeyPatch, seen: set[int], change: Callable[[np.ndarray], np.ndarray] | None = None
) -> None:
    """Note this process's children while all three services run (when the plain ONNX Runtime step starts), and
    optionally ``change`` what plain ONNX Runtime answers."""
    original = _demo_inference._plain_onnxruntime

    def plain(model: bytes, x: np.ndarray) -> tuple[np.ndarray, float]:
        seen.update(children())
        output, seconds = original(model, x)
        return (output if change is None else change(output)), seconds

    monkeypatch.setattr(_demo_inference, "_plain_onnxruntime", plain)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("demo-home")


@pytest.fixture(scope="module")
def outcome(home: Path) -> dict[str, Any]:
    """``enklave demo --json`` run once in this process with a fresh ENKLAVE_HOME: the exit code, the output, the
    children before, during and after, and the result object the text report is made from."""
    kept: list[InferenceDemoResult] = []
    seen: set[int] = set()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ENKLAVE_HOME", str(home))
        original = demo.run_inference_demo

        def run(*args: Any, **kwargs: Any) -> InferenceDemoResult:
            kept.append(original(*args, **kwargs))
            return kept[-1]

        patch.setattr(demo, "run_inference_demo", run)
        watching(patch, seen)
        before = children()
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["demo", "--json"])
        after = children()
    return {"code": code, "out": out.getvalue(), "err": err.getvalue(), "before": before, "during": seen,
            "after": after, "result": kept[0] if kept else None}  # fmt: skip


def test_demo_json_summary(outcome: dict[str, Any], home: Path) -> None:
    assert outcome["code"] == EXIT_OK, outcome["err"]
    summary = json.loads(outcome["out"])
    assert summary["real_quote"]["mrenclave"] == REAL_MRENCLAVE
    assert summary["real_quote"]["simulated"] is False
    view = summary["inference"]
    enclave = view["enclave"]
    # The client pinned the MRENCLAVE of the packaged inference enclave, computed again here from its code.
    # The key broker's identity is measured too: the demo reports the one it pinned.
    kbs_policy = view["hpke_seed"]["trusted_key_broker"]
    assert len(bytes.fromhex(kbs_policy["mr_signer"])) == 32 and kbs_policy["isv_prod_id"] == 2
    bundle = sign_inference_enclave(
        home / "measure", SEED_KEY, kbs_policy=kbs_policy, kbs_allow_simulated=True
    )
    measured = load_bundle(bundle).mr_enclave
    assert enclave["mrenclave"] == enclave["pinned_mrenclave"] == bytes(measured).hex() != REAL_MRENCLAVE
    assert len(bytes.fromhex(enclave["mrsigner"])) == 32
    assert (enclave["isv_prod_id"], enclave["isv_svn"]) == (3, 1)
    assert enclave["tcb_status"] == "UpToDate"
    assert enclave["simulated"] is True and enclave["debug"] is False and enclave["attestation"] == "dcap"
    # The key broker released the HPKE seed to that enclave, on the attestation service's token.
    release = view["hpke_seed"]["release"]
    assert release["outcome"] == "released" and release["mrenclave"] == enclave["mrenclave"]
    assert release["iss"] == view["services"]["attestation"]
    assert view["model"]["sha256"] == hashlib.sha256(MODEL.read_bytes()).hexdigest()
    assert view["model"]["container_size"] > view["model"]["size"]
    # The output matched plain ONNX Runtime: the top five are the ones computed here.
    assert view["matches_onnxruntime"] is True and view["max_abs_diff"] <= 1e-6
    expected = plain_top5()
    assert [entry["class"] for entry in view["top5"]] == [index for index, _ in expected]
    probabilities = [entry["probability"] for entry in view["top5"]]
    assert len(probabilities) == 5 and probabilities == pytest.approx([p for _, p in expected], rel=1e-6)
    assert view["uniform"] is True  # onnx's light ResNet-50 has constant weights.
    assert [step["step"] for step in view["steps"]] == STEPS
    assert all(step["seconds"] >= 0 for step in view["steps"])
    assert 0 < view["inference_seconds"] < 30 and summary["total_seconds"] < 60
    assert (home / "sim" / "public" / "root_ca.pem").is_file()


def test_demo_stops_every_process_it_started(outcome: dict[str, Any]) -> None:
    new = outcome["during"] - outcome["before"]
    # Three enclave processes ran: the attestation service's, the key broker's and the inference service's.
    assert len(new) >= 3
    assert alive(new) == set()
    assert outcome["after"] - outcome["before"] == set()
    assert not [t for t in threading.enumerate() if t.name in ("attestation service", "key broker")]


def test_demo_text_report(
    outcome: dict[str, Any], home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    result: InferenceDemoResult = outcome["result"]

    def replay(home: Path, *, on_step: Callable[[str, float], None] | None = None) -> InferenceDemoResult:
        for step in result.steps:
            if on_step is not None:
                on_step(step.step, step.seconds)
        return result

    monkeypatch.setenv("ENKLAVE_HOME", str(home))
    monkeypatch.setattr(demo, "run_inference_demo", replay)
    code = main(["demo"])
    out, _ = capsys.readouterr()
    assert code == EXIT_OK
    real, inference = out.split("2. Confidential inference")
    assert REAL_MRENCLAVE in real and "ConfigurationAndSWHardeningNeeded (INTEL-SA-00289" in real
    for step in STEPS:
        assert step in inference
    who = result.attestation
    for text in (who.mr_enclave.hex(), who.mr_signer.hex(), "ISV prod id 3, ISV SVN 1, TCB UpToDate",
                 "simulated: yes, debug: no", "class 0: 0.0010", "equals plain ONNX Runtime's", str(home)):  # fmt: skip
        assert text in inference


def test_a_wrong_output_fails_the_demo_and_still_stops_everything(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ENKLAVE_HOME", str(home))
    seen: set[int] = set()

    def nudge(output: np.ndarray) -> np.ndarray:
        changed = output.copy()
        changed.reshape(-1)[7] += 1e-4
        return changed

    watching(monkeypatch, seen, nudge)
    before = children()
    code = main(["demo", "--json"])
    out, err = capsys.readouterr()
    assert code == EXIT_VERIFICATION
    assert out == ""
    assert err.strip().splitlines() == [
        "enklave: error: the enclave's output differs from plain ONNX Runtime's (max |difference| 0.0001)"
    ]
    assert len(seen - before) >= 3 and alive(seen - before) == set()


def test_the_output_check_refuses_other_shapes_values_and_the_wrong_reference() -> None:
    x = np.full((1, 1000), 0.001, np.float32)
    assert _demo_inference._compare(x, x.copy(), x.copy()) == 0.0
    for plain, reference in ((x.reshape(1000), x), (x.astype(np.float64), x), (x + 1e-5, x), (x, x * 2)):
        with pytest.raises(VerificationError):
            _demo_inference._compare(x, plain, reference)


def test_ctrl_c_stops_everything(home: Path) -> None:
    env = {**os.environ, "ENKLAVE_HOME": str(home)}
    code = "import sys; from enklave.cli import main; sys.exit(main(['demo']))"
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    watchdog = threading.Timer(90, process.kill)
    watchdog.start()
    try:
        assert process.stdout is not None
        # Interrupt once the attestation service and the key broker run (their enclaves are the children).
        for line in process.stdout:
            if "key broker started" in line:
                break
        started = children(process.pid)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
            process.wait()
    assert len(started) >= 2, err
    assert process.returncode == EXIT_INTERRUPTED
    assert err.strip().splitlines() == ["enklave: error: aborted"]
    assert "inference service started" not in out
    assert alive(started) == set()
