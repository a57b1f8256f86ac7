"""MRENCLAVE: the ECREATE/EADD/EEXTEND records, byte for byte, against a hand-built SHA-256 sequence."""

from __future__ import annotations

import hashlib
import struct
import time

import pytest

from enklave.errors import UsageError
from enklave.runtime.config import EnclaveConfig
from enklave.runtime.layout import plan_layout
from enklave.sgx import Measurement, SecinfoFlags

REG_R = SecinfoFlags.PT_REG | SecinfoFlags.R
REG_RW = SecinfoFlags.PT_REG | SecinfoFlags.R | SecinfoFlags.W


def _ecreate(ssa: int, size: int) -> bytes:
    return b"ECREATE\x00" + ssa.to_bytes(4, "little") + size.to_bytes(8, "little") + bytes(44)


def _eadd(offset: int, flags: int) -> bytes:
    return b"EADD\x00\x00\x00\x00" + offset.to_bytes(8, "little") + flags.to_bytes(8, "little") + bytes(40)


def _eextend(offset: int, chunk: bytes) -> bytes:
    return b"EEXTEND\x00" + offset.to_bytes(8, "little") + bytes(48) + chunk


def test_flag_values_are_the_sdm_ones() -> None:
    assert (SecinfoFlags.R, SecinfoFlags.W, SecinfoFlags.X) == (1, 2, 4)
    assert SecinfoFlags.PT_TCS == 0x100
    assert SecinfoFlags.PT_REG == 0x200


def test_records_match_a_hand_built_hash() -> None:
    page = bytes(range(256)) * 16
    tcs = b"\x07" * 4096
    measurement = Measurement()
    measurement.ecreate(1, 0x10000)
    measurement.add_page(0, page, REG_R, measured=True)
    measurement.add_page(0x1000, tcs, SecinfoFlags.PT_TCS, measured=True)
    measurement.add_page(0x2000, page, REG_RW, measured=False)
    measurement.eadd_many(0x3000, 3, REG_RW)
    digest = measurement.finish()

    expected = hashlib.sha256()
    record = _ecreate(1, 0x10000)
    assert len(record) == 64
    expected.update(record)
    expected.update(_eadd(0, 0x201))
    for index in range(16):
        expected.update(_eextend(index * 256, page[index * 256 : (index + 1) * 256]))
    expected.update(_eadd(0x1000, 0x100))
    for index in range(16):
        expected.update(_eextend(0x1000 + index * 256, tcs[index * 256 : (index + 1) * 256]))
    expected.update(_eadd(0x2000, 0x203))
    for offset in (0x3000, 0x4000, 0x5000):
        expected.update(_eadd(offset, 0x203))
    assert digest == expected.digest()
    assert len(_eadd(0, 0)) == 64
    assert len(_eextend(0, bytes(256))) == 64 + 256


def test_eadd_many_equals_single_eadds() -> None:
    one, many = Measurement(), Measurement()
    for measurement in (one, many):
        measurement.ecreate(1, 1 << 20)
    for index in range(100):
        one.eadd(0x4000 + index * 4096, REG_RW)
    many.eadd_many(0x4000, 100, REG_RW)
    assert one.finish() == many.finish()


def test_the_empty_enclave_has_a_known_hash() -> None:
    measurement = Measurement()
    measurement.ecreate(2, 0x2000)
    assert measurement.finish() == hashlib.sha256(_ecreate(2, 0x2000)).digest()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m: m.eadd(0, REG_R), "ECREATE must come first"),
        (lambda m: m.ecreate(1, 0x3000), "power of two"),
        (lambda m: (m.ecreate(1, 0x2000), m.ecreate(1, 0x2000)), "only come once"),
        (lambda m: m.ecreate(0, 0x2000), "SSA frame size"),
        (lambda m: (m.ecreate(1, 0x2000), m.eadd(0x100, REG_R)), "aligned"),
        (lambda m: (m.ecreate(1, 0x2000), m.eadd(0x2000, REG_R)), "outside"),
        (lambda m: (m.ecreate(1, 0x2000), m.eadd_many(0x1000, 2, REG_R)), "outside"),
        (lambda m: (m.ecreate(1, 0x2000), m.eextend(0x80, bytes(256))), "aligned"),
        (lambda m: (m.ecreate(1, 0x2000), m.eextend(0, bytes(255))), "256 bytes"),
        (lambda m: (m.ecreate(1, 0x2000), m.add_page(0, bytes(10), REG_R, measured=True)), "4096"),
        (lambda m: (m.ecreate(1, 0x2000), m.finish(), m.eadd(0, REG_R)), "already finished"),
    ],
)
def test_misuse_is_a_usage_error(call: object, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        call(Measurement())  # type: ignore[operator]


def test_a_64_mib_heap_measures_quickly() -> None:
    config = EnclaveConfig(name="perf", heap_size=64 << 20, threads=4)
    layout = plan_layout(config, {"enclave.py": b"x = 1\n"})
    start = time.perf_counter()
    layout.measure()
    elapsed = time.perf_counter() - start
    assert layout.pages > 16384
    # The target is well under 100 ms; the bound leaves room for slow shared CI machines.
    assert elapsed < 0.5, elapsed


def test_layout_records_are_what_plan_layout_says() -> None:
    """The layout's MRENCLAVE equals the records replayed by hand from its regions."""
    config = EnclaveConfig(name="tiny", heap_size=8192, threads=1)
    layout = plan_layout(config, {"enclave.py": b"print('hi')\n"})
    expected = hashlib.sha256(_ecreate(1, layout.size))
    for region in layout.regions:
        for index in range(region.pages):
            offset = region.offset + index * 4096
            expected.update(_eadd(offset, int(region.flags)))
            if region.measured:
                page = region.content[index * 4096 : (index + 1) * 4096]
                for chunk in range(16):
                    expected.update(_eextend(offset + chunk * 256, page[chunk * 256 : (chunk + 1) * 256]))
    assert layout.measure() == expected.digest()
    names = [region.name for region in layout.regions]
    assert names == ["config", "file-table", "file:enclave.py", "tcs[0]", "ssa[0]", "stack[0]", "heap"]
    tcs = next(region for region in layout.regions if region.name == "tcs[0]")
    assert tcs.flags == SecinfoFlags.PT_TCS
    ossa, _cssa, nssa = struct.unpack_from("<QII", tcs.content, 16)
    assert (ossa, nssa) == (tcs.offset + 4096, 1)
    assert layout.size == 1 << (layout.pages * 4096 - 1).bit_length()
