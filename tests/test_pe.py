"""Bit-sliced PE: refusals, the LSB augmentation unit, and the cocotb regression of one PE."""

import pytest
from amaranth.sim import Simulator

from elmoe3d.errors import UserError
from elmoe3d.hw.layouts import Plane
from elmoe3d.hw.lsb_augment import LsbAugment
from elmoe3d.hw.pe import PE
from elmoe3d.hw.tops import get_top
from elmoe3d.sim.benches.launch import run_top_bench
from elmoe3d.sim.numerics.slices import augment, correction, lsb_slice, msb_slice
import numpy as np

PARAM_SETS = [
    pytest.param(dict(terms=1, pipeline=1), id="t1-p1"),
    pytest.param(dict(terms=3, pipeline=0), id="t3-p0"),
    pytest.param(dict(terms=2, pipeline=1, acc_bits=20, max_k=31), id="t2-acc20"),
    pytest.param(dict(terms=5, pipeline=3), id="t5-p3"),
    pytest.param(dict(terms=1, pipeline=3), id="t1-p3"),
    pytest.param(dict(terms=4, pipeline=2, acc_bits=20, max_k=31), id="t4-p2-acc20"),
]


@pytest.mark.parametrize("params", PARAM_SETS)
def test_pe_regression_verilator(params, tmp_path):
    run_top_bench("pe", params, tmp_path, seeds=(1, 2, 3))


@pytest.mark.icarus
def test_pe_smoke_icarus(tmp_path):
    run_top_bench("pe", dict(terms=2), tmp_path, seeds=(3,), quick=True, simulator="icarus")


@pytest.mark.parametrize("kwargs, message", [
    (dict(terms=0), "terms must be at least 1, got 0"),
    (dict(terms=1.0), "terms must be an integer, got 1.0"),
    (dict(operand_bits=6), "operand_bits must be 5 (bit-sliced) or 8 (INT8 baseline), got 6"),
    (dict(pipeline=4), "pipeline must be an integer in 0..3, got 4"),
    (dict(pipeline=True), "pipeline must be an integer in 0..3, got True"),
    (dict(acc_bits=20, max_k=32),
     "acc_bits = 20 can overflow for max_k = 32: a 20-bit accumulator holds at most 31 inputs; "
     "use acc_bits >= 21"),
    (dict(acc_bits=14, max_k=1), "accumulator of 14 bits is too narrow: it needs at least 16 bits for K = 1"),
    (dict(acc_bits=64, max_k=2**60),
     f"max_k must be at most {2**49 - 1} (a 64-bit accumulator), got {2**60}"),
    (dict(max_k=-3), "max_k must be at least 1, got -3"),
])
def test_pe_refusals(kwargs, message):
    with pytest.raises(UserError) as info:
        PE(**kwargs)
    assert str(info.value) == message


@pytest.mark.parametrize("width, message", [(0, "width must be at least 1, got 0"),
                                            ("3", "width must be an integer, got '3'")])
def test_lsb_augment_refusals(width, message):
    with pytest.raises(UserError) as info:
        LsbAugment(width=width)
    assert str(info.value) == message


def test_pe_widths():
    pe = PE(terms=4, acc_bits=40, max_k=100)
    assert len(pe.o_acc) == 40 and pe.o_acc.shape().signed
    assert len(pe.i_operand.as_value()) == 4 * 5 and pe.nested
    base = PE(terms=4, operand_bits=8)
    assert len(base.i_operand.as_value()) == 32 and not base.nested
    assert "i_shift" not in base.signature.members


def test_lsb_augment_every_nibble():
    """All 256 INT8 weights: the unit's m and c equal the golden ``augment`` and ``correction``."""
    q = np.arange(-128, 128, dtype=np.int8)
    h, l = msb_slice(q), lsb_slice(q)
    dut = LsbAugment(width=1)

    async def bench(ctx):
        for i in range(256):
            ctx.set(dut.i_msb[0], int(h[i]) & 0xF)
            ctx.set(dut.i_lsb[0], int(l[i]))
            ctx.set(dut.i_plane, Plane.MSB)
            assert ctx.get(dut.o_operand[0]) == augment(h[i:i + 1])[0] and ctx.get(dut.o_shift) == 1
            ctx.set(dut.i_plane, Plane.LSB)
            assert ctx.get(dut.o_operand[0]) == correction(l[i:i + 1])[0] and ctx.get(dut.o_shift) == 0
            assert 8 * augment(h[i:i + 1])[0] + correction(l[i:i + 1])[0] == q[i]

    sim = Simulator(dut)
    sim.add_testbench(bench)
    sim.run()


def test_registry_entries():
    assert get_top("pe").macs_per_cycle(**get_top("pe").resolve({"terms": 4})) == {"draft": 4, "full": 2}
    assert get_top("lsb_augment").resolve({}) == {"width": 16}
