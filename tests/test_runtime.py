"""The enclave runtime end to end: a real enclave process in simulation mode, loaded by the host API."""

from __future__ import annotations

import asyncio
import os
import shutil
import struct
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import cbor2
import pytest
import uvloop

from enklave import host
from enklave.errors import (
    BoundaryError,
    EcallError,
    EcallTimeout,
    EnclaveCrashedError,
    LaunchError,
    UsageError,
)
from enklave.runtime.bundle import Bundle, sign_bundle, write_bundle
from enklave.runtime.signing import generate_signing_key
from enklave.sgx.quote import Quote

PROBE = Path(__file__).parent / "assets" / "enclaves" / "runtime_probe"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("enklave-home")


@pytest.fixture(scope="module")
def probe_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Bundle]:
    source = tmp_path_factory.mktemp("probe-src")
    shutil.copytree(PROBE, source, dirs_exist_ok=True)
    bundle = sign_bundle(source / "enklave.toml", generate_signing_key())
    path = source / "build" / "runtime-probe.enclave"
    write_bundle(bundle, path)
    return path, bundle


def _upper(text: str) -> str:
    return text.upper()


def _fails() -> None:
    raise RuntimeError("host side failure")


def _lies() -> str:
    return "not an int"


OCALLS = {"host_upper": _upper, "host_fails": _fails, "host_lies": _lies, "host_unencodable": object}


@pytest.fixture(scope="module")
def enclave(probe_bundle: tuple[Path, Bundle], home: Path) -> Iterator[host.Enclave]:
    environ = {"PROBE_ALLOWED": "yes", "PROBE_SECRET_OF_HOST": "must not pass", "PYTHONPATH": "/nowhere"}
    with host.load(probe_bundle[0], mode="sim", home=home, ocalls=OCALLS, environ=environ) as loaded:
        yield loaded


def test_ecalls_round_trip_typed_values(enclave: host.Enclave) -> None:
    assert enclave.ecall.echo(b"\x00\xffdata") == b"\x00\xffdata"
    assert enclave.ecall.add(2, 40) == 42
    assert enclave.ecall.limited(b"x" * 16, ["a", "b"]) == 18
    assert enclave.ecall.limited(b"", None) == 0
    assert enclave.call("size", b"y" * 1000) == 1000


def test_the_interface_is_what_the_enclave_declared(enclave: host.Enclave) -> None:
    assert enclave.info.ecalls["add"].describe() == "add(a: int, b: int) -> int"
    assert (
        enclave.info.ecalls["limited"].describe()
        == "limited(data: bytes (max 16), tags: list[str] | None) -> int"
    )
    assert "host_upper" in enclave.info.ocalls
    assert "echo" in dir(enclave.ecall)
    with pytest.raises(AttributeError):
        _ = enclave.ecall.not_declared
    with pytest.raises(UsageError, match="no ecall"):
        enclave.call("not_declared")


@pytest.mark.parametrize(
    ("name", "args", "message"),
    [
        ("add", [1, "2"], r"add\(b\): expected int, got str"),
        ("add", [1, True], r"add\(b\): expected int, got bool"),
        ("add", [1, 1 << 70], r"CBOR tags are not accepted"),  # a bignum is a tag: refused while decoding
        ("add", [1], "expected 2 arguments, got 1"),
        ("echo", ["text"], "expected bytes, got str"),
        ("limited", [b"x" * 17, None], "length 17 exceeds the declared maximum 16"),
        ("limited", [b"", [1]], r"tags\)\[0\]: expected str, got int"),
    ],
)
def test_wrong_arguments_are_rejected_inside_the_enclave(
    enclave: host.Enclave, name: str, args: list[object], message: str
) -> None:
    with pytest.raises(BoundaryError, match=message):
        enclave.call(name, *args)
    # The enclave keeps serving.
    assert enclave.ecall.add(1, 1) == 2


def test_enclave_exceptions_arrive_typed_and_the_enclave_keeps_running(enclave: host.Enclave) -> None:
    with pytest.raises(EcallError, match="ValueError: bad request") as caught:
        enclave.ecall.fail("bad request")
    assert caught.value.type_name == "ValueError"
    with pytest.raises(EcallError, match="wrong_result result: expected int, got str"):
        enclave.ecall.wrong_result()
    assert enclave.ecall.echo(b"ok") == b"ok"


def test_ocalls_reach_the_host_and_their_results_are_checked(enclave: host.Enclave) -> None:
    assert enclave.ecall.upper_via_host("quiet") == "QUIET!"
    # A raising host function, one returning the wrong type, a missing one, and one returning what cannot be
    # encoded: each fails inside the enclave, and the channel stays in step for the next call.
    assert enclave.ecall.ocall_failures() == ["OcallError", "BoundaryError", "OcallError", "OcallError"]
    assert enclave.ecall.echo(b"next") == b"next"


def test_the_enclave_process_is_isolated(enclave: host.Enclave) -> None:
    environment = enclave.ecall.environment()
    assert environment.get("PROBE_ALLOWED") == "yes"
    assert "PROBE_SECRET_OF_HOST" not in environment
    assert "PYTHONPATH" not in environment
    assert set(environment) <= {"PROBE_ALLOWED", "ENKLAVE_BUNDLE", "ENKLAVE_CHANNEL", "ENKLAVE_MODE",
                                "ENKLAVE_HOME", "LC_CTYPE"}  # fmt: skip
    assert enclave.ecall.isolated() is True
    assert enclave.pid != os.getpid()


def test_code_and_files_come_from_the_measured_bundle(enclave: host.Enclave) -> None:
    assert enclave.ecall.greeting() == "hello from the bundle / measured data"


def test_identity_is_the_signed_one(enclave: host.Enclave, probe_bundle: tuple[Path, Bundle]) -> None:
    bundle = probe_bundle[1]
    me = enclave.ecall.identity()
    assert me["mr_enclave"] == bundle.mr_enclave == enclave.info.mr_enclave
    assert me["mr_signer"] == bundle.mr_signer
    assert int.from_bytes(me["isv_svn"], "little") == 2
    assert enclave.info.simulated is True
    assert enclave.info.mode == "sim"


def test_quotes_carry_the_enclave_identity_and_report_data(
    enclave: host.Enclave, probe_bundle: tuple[Path, Bundle]
) -> None:
    nonce = os.urandom(32)
    quote = Quote.from_bytes(enclave.ecall.quote(nonce))
    assert quote.body.mr_enclave == probe_bundle[1].mr_enclave
    assert quote.body.isv_prod_id == 7
    assert quote.body.debug is True
    assert quote.body.report_data == nonce.ljust(64, b"\0")


def test_sealed_data_survives_a_restart(
    enclave: host.Enclave, probe_bundle: tuple[Path, Bundle], home: Path
) -> None:
    blob = enclave.ecall.seal(b"the secret", "unique")
    assert b"the secret" not in blob
    with host.load(probe_bundle[0], mode="sim", home=home) as again:
        assert again.ecall.unseal(blob, "unique") == b"the secret"
        # A blob sealed to the product does not pass where the enclave expects one sealed to itself.
        product_blob = again.ecall.seal(b"for the product", "product")
        assert again.ecall.unseal(product_blob, "product") == b"for the product"
        with pytest.raises(EcallError, match="SealingError: the blob was sealed with the 'product' policy"):
            again.ecall.unseal(product_blob, "unique")


def test_concurrent_ecalls_run_on_all_threads_and_more_wait(enclave: host.Enclave) -> None:
    assert enclave.threads == 2
    names: list[str] = []
    started = time.monotonic()
    workers = [threading.Thread(target=lambda: names.append(enclave.ecall.nap(0.3))) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.monotonic() - started
    # Two TCS threads served four calls: both threads were used, and the calls ran two at a time.
    assert sorted(set(names)) == ["tcs-0", "tcs-1"]
    assert len(names) == 4
    assert elapsed >= 0.6


def test_async_ecalls(enclave: host.Enclave) -> None:
    async def run() -> list[int]:
        return list(await asyncio.gather(*(enclave.aecall.add(i, i) for i in range(5))))

    assert asyncio.run(run()) == [0, 2, 4, 6, 8]


# The async ecall path polls the channel's socket with the running loop: asyncio's own loop and uvloop (what
# uvicorn runs) differ in what polling does to the descriptor (uvloop makes it non-blocking).
LOOPS = pytest.mark.parametrize("run_loop", [asyncio.run, uvloop.run], ids=["asyncio", "uvloop"])


@LOOPS
def test_async_ecalls_take_every_path_and_leave_the_channels_in_step(
    enclave: host.Enclave, run_loop: Callable[[Coroutine[Any, Any, None]], None]
) -> None:
    # Small calls run on the event loop; an ocall, a large answer, large arguments and a call that finds every
    # thread busy continue on worker threads. Errors keep their types, and every channel stays usable.
    async def run() -> None:
        assert await enclave.aecall.echo(b"\x00small") == b"\x00small"
        with pytest.raises(EcallError, match="ValueError: bad request"):
            await enclave.aecall.fail("bad request")
        with pytest.raises(EcallError, match="wrong_result result: expected int, got str"):
            await enclave.aecall.wrong_result()
        with pytest.raises(BoundaryError, match="exceeds the declared maximum 16"):
            await enclave.aecall.limited(b"x" * 17, None)
        assert await enclave.aecall.upper_via_host("quiet") == "QUIET!"
        assert await enclave.aecall.filler(1_500_000) == b"\xab" * 1_500_000
        assert await enclave.aecall.size(b"y" * (1 << 20)) == 1 << 20
        started = time.monotonic()
        names = await asyncio.gather(*(enclave.aecall.nap(0.2) for _ in range(5)))
        assert sorted(set(names)) == ["tcs-0", "tcs-1"]
        assert time.monotonic() - started >= 0.6  # two threads, five naps: three rounds
        assert await asyncio.gather(*(enclave.aecall.add(i, 1) for i in range(6))) == [1, 2, 3, 4, 5, 6]
        # Calls on worker threads and from other threads still find blocking channels after polled ones.
        assert await enclave.aecall.size(b"z" * 300_000) == 300_000
        assert await asyncio.to_thread(enclave.ecall.echo, b"w" * 200_000) == b"w" * 200_000

    run_loop(run())


@LOOPS
def test_async_timeouts_and_cancellations_give_the_thread_back_once_the_call_ends(
    enclave: host.Enclave, run_loop: Callable[[Coroutine[Any, Any, None]], None]
) -> None:
    async def run() -> None:
        with pytest.raises(EcallTimeout, match=r"did not return within 0\.1 s"):
            await enclave.acall("nap", 0.4, timeout=0.1)
        cancelled = asyncio.ensure_future(enclave.aecall.nap(0.4))
        await asyncio.sleep(0.1)
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        # Both threads are still busy with the abandoned naps; once they end, both serve again.
        with pytest.raises(EcallTimeout, match="stayed busy"):
            await enclave.acall("add", 1, 1, timeout=0.05)
        await asyncio.sleep(0.5)
        names = await asyncio.gather(enclave.aecall.nap(0.1), enclave.aecall.nap(0.1))
        assert sorted(names) == ["tcs-0", "tcs-1"]

    run_loop(run())


def test_a_timeout_leaves_the_thread_busy_until_the_call_returns(enclave: host.Enclave) -> None:
    with pytest.raises(EcallTimeout, match=r"did not return within 0\.1 s"):
        enclave.call("nap", 0.5, timeout=0.1)
    # The other thread still serves, and the timed-out one comes back once its call ends.
    assert enclave.ecall.add(3, 4) == 7
    time.sleep(0.6)
    results = [enclave.ecall.add(i, 0) for i in range(4)]
    assert results == [0, 1, 2, 3]


def test_a_crash_mid_call_is_reported_and_the_enclave_loads_again(
    probe_bundle: tuple[Path, Bundle], home: Path
) -> None:
    with host.load(probe_bundle[0], mode="sim", home=home) as doomed:
        with pytest.raises(EnclaveCrashedError, match="exited with status 3"):
            doomed.ecall.crash(3)
        assert not doomed.alive
        with pytest.raises(EnclaveCrashedError, match="exited with status 3"):
            doomed.ecall.add(1, 2)
    with host.load(probe_bundle[0], mode="sim", home=home) as revived:
        assert revived.ecall.add(1, 2) == 3


def test_a_crash_mid_async_call_is_reported(probe_bundle: tuple[Path, Bundle], home: Path) -> None:
    with host.load(probe_bundle[0], mode="sim", home=home) as doomed:

        async def run() -> None:
            assert [await doomed.aecall.add(i, i) for i in range(20)] == [2 * i for i in range(20)]
            # Small calls one at a time ran on the event loop: no worker thread pool was ever needed.
            assert doomed._executor is None
            with pytest.raises(EnclaveCrashedError, match="exited with status 4"):
                await doomed.aecall.crash(4)
            with pytest.raises(EnclaveCrashedError, match="exited with status 4"):
                await doomed.aecall.add(1, 2)

        asyncio.run(run())
        assert not doomed.alive


def test_a_killed_enclave_is_reported_with_its_signal(probe_bundle: tuple[Path, Bundle], home: Path) -> None:
    with host.load(probe_bundle[0], mode="sim", home=home) as victim:
        os.kill(victim.pid, 9)
        with pytest.raises(EnclaveCrashedError, match="killed by signal SIGKILL"):
            victim.ecall.add(1, 2)


def test_a_tampered_bundle_does_not_start(
    probe_bundle: tuple[Path, Bundle], tmp_path: Path, home: Path
) -> None:
    data = bytearray(probe_bundle[0].read_bytes())
    index = data.index(b"def add(a: int, b: int) -> int:\n    return a + b")
    data[index + len("def add(a: int, b: int) -> int:\n    return a ")] = ord("-")
    tampered = tmp_path / "tampered.enclave"
    tampered.write_bytes(bytes(data))
    with pytest.raises(LaunchError, match="changed after signing"):
        host.load(tampered, mode="sim", home=home)


def test_asking_for_sgx_without_sgx_is_an_error(probe_bundle: tuple[Path, Bundle], home: Path) -> None:
    from enklave.errors import PlatformError

    if Path("/dev/sgx_enclave").exists():
        pytest.skip("this machine has SGX")  # pragma: no cover
    with pytest.raises(PlatformError, match="no SGX"):
        host.load(probe_bundle[0], mode="sgx", home=home)


def test_the_tcp_transport_works_too(probe_bundle: tuple[Path, Bundle], home: Path) -> None:
    with host.load(probe_bundle[0], mode="sim", home=home, transport="tcp", ocalls=OCALLS) as over_tcp:
        assert over_tcp.ecall.echo(b"x" * 300_000) == b"x" * 300_000
        assert over_tcp.ecall.upper_via_host("tcp") == "TCP!"


def test_the_host_never_opens_the_simulated_cpu_secrets(
    probe_bundle: tuple[Path, Bundle], tmp_path: Path
) -> None:
    # A fresh home: the enclave process provisions the simulated CPU. The host process is watched with an audit
    # hook (they cannot be removed, so it only records while the flag is set).
    opened: list[str] = []
    watching = threading.Event()

    def hook(event: str, args: tuple[object, ...]) -> None:
        if watching.is_set() and event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
            opened.append(os.fsdecode(args[0]))

    sys.addaudithook(hook)
    watching.set()
    try:
        with host.load(probe_bundle[0], mode="sim", home=tmp_path) as fresh:
            fresh.ecall.quote(b"nonce")
            fresh.ecall.seal(b"data", "product")
    finally:
        watching.clear()
    secret_dirs = [tmp_path / "sim" / "cpu", tmp_path / "sim" / "intel"]
    assert any(d.exists() for d in secret_dirs), "the enclave process provisioned the simulated platform"
    assert not [p for p in opened if any(p.startswith(str(d)) for d in secret_dirs)]


def test_malformed_and_oversized_frames_do_not_crash_the_enclave(
    probe_bundle: tuple[Path, Bundle], home: Path
) -> None:
    with host.load(probe_bundle[0], mode="sim", home=home) as target:
        channels = [target._free.get() for _ in range(target.threads)]
        try:
            for payload in (b"\xff\xfe garbage", cbor2.dumps({"not": "a list"}), cbor2.dumps([99, "x"]),
                            cbor2.dumps([0, "echo"]), cbor2.dumps([4, "stray ocall return"])):  # fmt: skip
                channels[0].sock.sendall(struct.pack(">I", len(payload)) + payload)
                reply = channels[0].receive()
                assert reply[0] == 2 and reply[1] == "boundary", reply
            # A frame longer than max_message_size (2 MiB) is skipped and reported, not buffered.
            big = 3 * 1024 * 1024
            channels[0].sock.sendall(struct.pack(">I", big) + bytes(big))
            reply = channels[0].receive()
            assert reply[1] == "boundary" and "exceeds the channel limit" in reply[3]
        finally:
            for channel in channels:
                target._free.put(channel)
        assert target.ecall.add(20, 22) == 42
        assert target.alive


def test_a_production_enclave_withholds_its_exception_messages(tmp_path: Path, home: Path) -> None:
    source = tmp_path / "production"
    shutil.copytree(PROBE, source)
    config = source / "enklave.toml"
    config.write_text(config.read_text().replace("debug = true", "debug = false"))
    path = source / "production.enclave"
    write_bundle(sign_bundle(config, generate_signing_key()), path)
    with host.load(path, mode="sim", home=home) as production:
        with pytest.raises(EcallError, match="withheld") as caught:
            production.ecall.leak("SECRET-KEY-MATERIAL")
        assert caught.value.type_name == "ValueError"
        assert "SECRET-KEY-MATERIAL" not in str(caught.value)
        # A message the enclave code chose to disclose, and enklave's own errors, still get through.
        with pytest.raises(EcallError, match="PublicError: quota exceeded"):
            production.ecall.public_failure("quota exceeded")
        with pytest.raises(EcallError, match="InvalidSealedBlob"):
            production.ecall.unseal(b"not a blob", "unique")


def test_closing_while_a_call_runs_fails_that_call_cleanly(
    probe_bundle: tuple[Path, Bundle], home: Path
) -> None:
    outcome: list[BaseException] = []
    target = host.load(probe_bundle[0], mode="sim", home=home)

    def call() -> None:
        try:
            target.ecall.nap(2.0)
        except BaseException as exc:
            outcome.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    time.sleep(0.3)
    target.close()
    caller.join(timeout=10)
    assert not caller.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], EnclaveCrashedError), outcome
    assert "closed while the call was running" in str(outcome[0])
    with pytest.raises(UsageError, match="closed"):
        target.ecall.add(1, 2)


@LOOPS
def test_closing_while_an_async_call_waits_fails_that_call_cleanly(
    probe_bundle: tuple[Path, Bundle], home: Path, run_loop: Callable[[Coroutine[Any, Any, None]], None]
) -> None:
    target = host.load(probe_bundle[0], mode="sim", home=home)

    async def run() -> None:
        # The call waits on the event loop for its answer when another thread closes the handle.
        closer = threading.Timer(0.3, target.close)
        closer.start()
        try:
            with pytest.raises(EnclaveCrashedError, match="closed while the call was running"):
                await asyncio.wait_for(target.aecall.nap(2.0), timeout=10)
        finally:
            closer.join()
        with pytest.raises(UsageError, match="closed"):
            await target.aecall.add(1, 2)

    run_loop(run())


# -- the enclave's interface description, as the host reads it ------------------------------------------------

_HELLO = {
    "mode": "simulation", "simulated": True, "mr_enclave": bytes(32), "mr_signer": bytes(range(32)),
    "isv_prod_id": 1, "isv_svn": 2, "ecalls": {}, "ocalls": {},
}  # fmt: skip


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("mr_enclave", 2**40),  # bytes(2**40) would allocate a terabyte
        ("mr_enclave", 2**64 - 1),
        ("mr_enclave", 32),  # bytes(32) would be 32 zero bytes
        ("mr_enclave", b"\x01"),
        ("mr_signer", "00" * 32),
        ("isv_prod_id", float("inf")),
        ("isv_prod_id", -5),
        ("isv_prod_id", 2**64 - 1),
        ("isv_svn", 1.5),
        ("simulated", 1),
        ("ecalls", [["f", {}]]),
        ("ecalls", {1: {}}),
        ("mode", None),
    ],
)
def test_a_malformed_interface_description_is_a_boundary_error(field: str, value: object) -> None:
    assert host._info(dict(_HELLO)).mr_signer == bytes(range(32))  # the well-formed one is read as it is
    with pytest.raises(BoundaryError, match="interface description is malformed"):
        host._info({**_HELLO, field: value})
