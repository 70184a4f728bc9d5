"""Off-chip memory interface (``hw/offchip.py``): refusals, derived sizes, lint, and the cocotb
regression (``sim/benches/tb_offchip.py``) against a Python memory model with latency and random
stalls on every bus stream.

Each pytest node builds its own Verilator model in its own folder. The default run keeps two
small parameter sets; the others are ``slow``.
"""

import pytest

from elmoe3d.errors import UserError
from elmoe3d.hw.lint import lint
from elmoe3d.hw.offchip import CREDIT_LOOP, OffchipInterface, derived_depth
from elmoe3d.hw.tops import get_top
from elmoe3d.hw.verilog import write_verilog
from elmoe3d.sim.benches.launch import BENCHES, run_top_bench

FAST = [
    pytest.param(dict(width=32, lines=256, len_bits=9, latency=8, burst=4, read_ports=2), id="w32-l8-b4-p2"),
]
SLOW = [   # (the default run keeps one set: the suite's time budget)
    pytest.param(dict(width=16, lines=128, len_bits=8, latency=3, burst=1, read_ports=3), id="w16-l3-b1-p3"),
    pytest.param(dict(width=8, lines=64, len_bits=7, latency=1, burst=2, read_ports=1, depth=4), id="w8-l1-b2-p1-d4"),
    pytest.param(dict(width=64, lines=512, len_bits=10, latency=20, burst=16, read_ports=2), id="w64-l20-b16-p2"),
    pytest.param(dict(width=24, lines=256, len_bits=9, latency=5, burst=8, read_ports=4, depth=8), id="w24-b8-p4-d8"),
]


@pytest.mark.parametrize("params", FAST)
def test_offchip_regression_verilator(params, tmp_path):
    run_top_bench("offchip", params, tmp_path, seeds=(1,), quick=True)


@pytest.mark.slow
@pytest.mark.parametrize("params", SLOW + FAST)
def test_offchip_regression_more(params, tmp_path):
    run_top_bench("offchip", params, tmp_path, seeds=(2, 3))


@pytest.mark.parametrize("params", [dict(width=32, lines=256, len_bits=9, latency=8, burst=4),
                                    dict(width=16, lines=128, len_bits=8, latency=3, burst=1, read_ports=1)])
def test_lint_clean(params, tmp_path):
    top = get_top("offchip")
    full = top.resolve(params)
    ok, log = lint(write_verilog(top.build(**full), "offchip", tmp_path, full), "offchip")
    assert ok, log


def test_registered():
    assert BENCHES["offchip"] == "elmoe3d.sim.benches.tb_offchip"
    assert get_top("offchip").defaults()["burst"] == 16


@pytest.mark.parametrize("kwargs, message", [
    (dict(read_ports=0), "read_ports must be in [1, 8], got 0"),
    (dict(read_ports=9), "read_ports must be in [1, 8], got 9"),
    (dict(burst=0), "burst must be in [1, 256], got 0"),
    (dict(burst=512), "burst must be in [1, 256], got 512"),
    (dict(burst=12), "burst must be a power of two, got 12"),
    (dict(burst=4.0), "burst must be an integer, got 4.0"),
    (dict(depth=-1), "depth must be in [0, 65536], got -1"),
    (dict(burst=16, depth=8), "depth must be 0 (derived) or at least max(2, burst) = 16, got 8"),
    (dict(burst=1, depth=1), "depth must be 0 (derived) or at least max(2, burst) = 2, got 1"),
    (dict(counter_bits=7), "counter_bits must be in [8, 64], got 7"),
    (dict(width=12), "offchip.width must be a multiple of 8, got 12"),
    (dict(lines=1000), "offchip.lines must be a power of two, got 1000"),
    (dict(latency=0), "offchip.latency must be in [1, 4096], got 0"),
])
def test_refusals(kwargs, message):
    with pytest.raises(UserError) as info:
        OffchipInterface(**kwargs)
    assert str(info.value) == message


def test_keyword_only():
    with pytest.raises(TypeError):
        OffchipInterface(128)


def test_derived_sizes():
    c = OffchipInterface(width=32, lines=256, len_bits=9, latency=8, burst=4)
    assert (c.addr_bits, c.burst_bits, c.depth) == (8, 3, 32)
    assert c.cmd_layout.size == 1 + 8 + 3
    assert derived_depth(100, 16) == 256 and derived_depth(8, 4) == 32 and derived_depth(3, 1) == 16
    for lat, b in [(1, 1), (100, 16), (4096, 256), (13, 2)]:
        d = derived_depth(lat, b)
        assert d >= lat + 2 * b + CREDIT_LOOP and d & (d - 1) == 0 and d // 2 < lat + 2 * b + CREDIT_LOOP
    assert OffchipInterface(depth=64).depth == 64
    default = OffchipInterface()
    assert (default.width, default.lines, default.len_bits, default.read_ports) == (128, 1 << 24, 24, 2)
