"""Bit-sliced PE array: constructor refusals, layouts, cycle model, and the cocotb regression.

One Verilator build per parameter set runs every cocotb test of ``sim/benches/tb_pe_array.py``
(corner cases, random cases over several seeds, cycle counts), with random idle cycles on every
source and random backpressure on the result sink; each pytest node builds in its own folder.
"""

import json

import numpy as np
import pytest

from elmoe3d.errors import UserError
from elmoe3d.hw.layouts import Mode, act_layout, command_layout, plane_layout, result_layout
from elmoe3d.hw.pe_array import PEArray, gemv_cycles
from elmoe3d.hw.tops import get_top
from elmoe3d.sim.benches.launch import run_top_bench
from elmoe3d.sim.numerics.slices import lsb_slice, msb_slice, pack_plane

# (square, old depth 1) / (non-square, unpipelined) / (non-square, 2 lanes, tightest accumulator,
# the default depth 3) / (the middle depth 2: input registers and the term)
PARAM_SETS = [
    pytest.param(dict(rows=2, cols=2, lanes=1, pipeline=1), id="2x2-p1"),
    pytest.param(dict(rows=4, cols=3, lanes=1, pipeline=0), id="4x3-p0"),
    pytest.param(dict(rows=3, cols=5, lanes=2, pipeline=3, acc_bits=20, max_k=31), id="3x5-l2-acc20-p3"),
    pytest.param(dict(rows=2, cols=4, lanes=1, pipeline=2), id="2x4-p2"),
]


@pytest.mark.parametrize("params", PARAM_SETS)
def test_pe_array_regression_verilator(params, tmp_path):
    run_top_bench("pe_array", params, tmp_path, seeds=(1, 2, 3))
    cycles = json.loads((tmp_path / "cycles.json").read_text())
    assert all(r["measured"] == r["model"] for r in cycles["rows"])
    assert {r["mode"] for r in cycles["rows"]} == {"draft", "full"}


@pytest.mark.icarus
def test_pe_array_smoke_icarus(tmp_path):
    run_top_bench("pe_array", dict(rows=2, cols=3, lanes=2), tmp_path, seeds=(5,), quick=True,
                  simulator="icarus")


@pytest.mark.slow
@pytest.mark.parametrize("params", [dict(rows=16, cols=16, lanes=1), dict(rows=8, cols=4, lanes=4)],
                         ids=["16x16", "8x4-l4"])
def test_pe_array_regression_large(params, tmp_path):
    run_top_bench("pe_array", params, tmp_path, seeds=(11, 12))


@pytest.mark.parametrize("kwargs, message", [
    (dict(rows=0, cols=2), "rows must be at least 1, got 0"),
    (dict(rows=2, cols=-1), "cols must be at least 1, got -1"),
    (dict(rows=2, cols=2, lanes=0), "lanes must be at least 1, got 0"),
    (dict(rows=2, cols=2, lanes=17), "lanes must be at most 16, got 17"),
    (dict(rows=300, cols=2), "rows must be at most 256, got 300"),
    (dict(rows=2, cols=257), "cols must be at most 256, got 257"),
    (dict(rows=2.5, cols=2), "rows must be an integer, got 2.5"),
    (dict(rows=True, cols=2), "rows must be an integer, got True"),
    (dict(rows=2, cols=2, acc_bits=24),
     "acc_bits = 24 can overflow for max_k = 4096: a 24-bit accumulator holds at most 511 inputs; "
     "use acc_bits >= 28"),
    (dict(rows=2, cols=2, max_k=200000),
     "acc_bits = 32 can overflow for max_k = 200000: a 32-bit accumulator holds at most 131071 inputs; "
     "use acc_bits >= 33"),
    (dict(rows=2, cols=2, acc_bits=15, max_k=1),
     "accumulator of 15 bits is too narrow: it needs at least 16 bits for K = 1"),
    (dict(rows=2, cols=2, acc_bits=65), "acc_bits must be at most 64, got 65"),
    (dict(rows=2, cols=2, acc_bits="32"), "acc_bits must be an integer, got '32'"),
    (dict(rows=2, cols=2, max_k=0), "max_k must be at least 1, got 0"),
    (dict(rows=2, cols=2, pipeline=4), "pipeline must be an integer in 0..3, got 4"),
    (dict(rows=2, cols=2, pipeline=-1), "pipeline must be an integer in 0..3, got -1"),
    (dict(rows=2, cols=2, pipeline=True), "pipeline must be an integer in 0..3, got True"),
    (dict(rows=2, cols=2, pipeline=1.0), "pipeline must be an integer in 0..3, got 1.0"),
])
def test_refusals(kwargs, message):
    with pytest.raises(UserError) as info:
        PEArray(**kwargs)
    assert str(info.value) == message


def test_keyword_only():
    with pytest.raises(TypeError):
        PEArray(2, 2)


def test_signature_and_derived_widths():
    a = PEArray(rows=3, cols=5, lanes=2, acc_bits=20, max_k=31)
    assert a.cmd_layout.size == 5 + 1          # k in 0..31, mode
    assert a.act_layout.size == 2 * 5 * 8
    assert a.result_layout.size == 2 * 3 * 20
    assert len(a.i_msb.payload.as_value()) == len(a.i_lsb.payload.as_value()) == 3 * 5 * 4
    assert a.pipeline == 3                     # the timing-closed default
    assert a.cycles(31, "full") == gemv_cycles(k=31, cols=5, mode="full", pipeline=3)


def test_plane_beat_is_the_packed_plane():
    """A nibble-plane beat is bit for bit the little-endian bytes of ``pack_plane`` of the tile."""
    rng = np.random.default_rng(0)
    q = rng.integers(-128, 128, size=(3, 6), dtype=np.int8)
    layout = plane_layout(3, 6)
    for nibbles in (msb_slice(q) & 0xF, lsb_slice(q)):
        beat = layout.const(nibbles.tolist()).as_value().value
        assert beat == int.from_bytes(pack_plane(nibbles).tobytes(), "little")


def test_layouts_round_trip():
    from amaranth.lib import data
    cmd = command_layout(31).const({"k": 17, "mode": Mode.FULL})
    view = data.Const(command_layout(31), cmd.as_value().value)
    assert view.k == 17 and view.mode == Mode.FULL
    acts = [[-127, 0, 5], [127, -1, 3]]
    bits = act_layout(3, 2).const(acts).as_value().value
    assert [list(data.Const(act_layout(3, 2), bits)[i]) for i in range(2)] == acts
    res = result_layout(2, 1, 32).const([[-(2**31), 2**31 - 1]]).as_value().value
    assert list(data.Const(result_layout(2, 1, 32), res)[0]) == [-(2**31), 2**31 - 1]


# beats + (tiles - 1) * max(beats, pipeline + 3) + pipeline + 3 (accept, capture, transfer)
@pytest.mark.parametrize("k, cols, mode, pipeline, n, rows, cycles", [
    (0, 4, "draft", 1, None, None, 1 + 1 + 3),          # k = 0 counts one beat (its marker)
    (0, 4, "full", 0, None, None, 1 + 0 + 3),
    (1, 4, "draft", 1, None, None, 1 + 1 + 3),
    (16, 4, "draft", 1, None, None, 4 + 1 + 3),
    (16, 4, "full", 1, None, None, 8 + 1 + 3),
    (17, 4, "full", 0, None, None, 10 + 0 + 3),
    (4096, 16, "full", 1, 64, 16, 4 * 512 + 1 + 3),     # long tiles: beats back to back
    (4096, 16, "int8", 1, None, None, 256 + 1 + 3),
    (4096, 16, "draft", 3, None, None, 256 + 3 + 3),
    (4096, 16, "full", 2, 64, 16, 4 * 512 + 2 + 3),
    (0, 4, "full", 3, None, None, 1 + 3 + 3),
    (4, 4, "draft", 3, 12, 4, 1 + 2 * (3 + 3) + 3 + 3),  # short tiles: one per pipeline + 3 cycles
    (8, 4, "draft", 3, 0, 4, 0),                         # no outputs, no command
])
def test_cycle_model(k, cols, mode, pipeline, n, rows, cycles):
    assert gemv_cycles(k=k, cols=cols, mode=mode, pipeline=pipeline, n=n, rows=rows) == cycles


def test_cycle_model_refuses_unknown_mode():
    with pytest.raises(UserError, match="mode must be one of draft, full, int8, got 'half'"):
        gemv_cycles(k=4, cols=2, mode="half")
    with pytest.raises(UserError, match="pipeline must be an integer in 0..3, got 5"):
        gemv_cycles(k=4, cols=2, mode="draft", pipeline=5)


def test_default_depth_follows_the_generator():
    """The model's default depth is the generator's: one source for both."""
    a = PEArray(rows=2, cols=2)
    assert gemv_cycles(k=8, cols=2, mode="draft") == a.cycles(8, "draft") == 4 + 3 + 3


def test_registry_entry():
    top = get_top("pe_array")
    p = top.resolve({})
    assert (p["rows"], p["cols"], p["lanes"], p["acc_bits"], p["pipeline"]) == (16, 16, 1, 32, 3)
    assert top.macs_per_cycle(**p) == {"draft": 256, "full": 128}
    assert top.macs_per_cycle(**top.resolve({"lanes": 4})) == {"draft": 1024, "full": 512}
