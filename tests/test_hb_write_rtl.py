"""The HB write interface RTL (``hw/hb_write.py``) against per-channel Python models and the golden
address map of ``sim/golden/hb_memory.py``, plus its constructor refusals.

Each pytest node builds its own Verilog and Verilator model in ``tmp_path`` and runs every cocotb
test of ``sim/benches/tb_hb_write.py``: corner requests, random requests with 10 % illegal ones over
two seeds, random idle cycles on the client's request and data streams, random stalls on every
channel's command and data streams and on ``done``, random acknowledgement delays, and one run
without stalls that checks one line per cycle. Further parameter sets are ``slow``.
"""

import pytest

from elmoe3d.errors import UserError
from elmoe3d.hw.hb_write import HBWrite, max_bursts
from elmoe3d.sim.benches.launch import BENCHES, run_top_bench

FAST = [
    pytest.param(dict(channels=2, width=16, burst=4, lines=256), id="c2-w16-b4"),
    pytest.param(dict(channels=1, width=8, burst=1, lines=16, len_bits=5, fifo_depth=3, pending=1,
                      counter_bits=8), id="c1-w8-b1"),
]
SLOW = [
    pytest.param(dict(channels=3, width=24, burst=2, lines=1024, len_bits=6, pending=2), id="c3-w24-b2-len6"),
    pytest.param(dict(channels=4, width=32, burst=8, lines=65536, len_bits=16, fifo_depth=16), id="c4-w32-b8"),
    pytest.param(dict(channels=2, width=8, burst=16, lines=32, fifo_depth=3), id="c2-w8-b16"),
]


def test_registered():
    assert BENCHES["hb_write"] == "elmoe3d.sim.benches.tb_hb_write"


@pytest.mark.parametrize("params", FAST)
def test_hb_write_regression(params, tmp_path):
    run_top_bench("hb_write", params, tmp_path, seeds=(1, 2))


@pytest.mark.slow
@pytest.mark.parametrize("params", SLOW)
def test_hb_write_regression_more_params(params, tmp_path):
    run_top_bench("hb_write", params, tmp_path, seeds=(3, 4, 5), stall=0.5, ack_delay=20)


@pytest.mark.slow
@pytest.mark.parametrize("params", FAST)
def test_hb_write_heavy_stalls(params, tmp_path):
    run_top_bench("hb_write", params, tmp_path, seeds=(6, 7), idle=0.6, stall=0.7, ack_delay=30)


@pytest.mark.parametrize("kwargs, message", [
    (dict(channels=17), "channels must be in [1, 16], got 17"),
    (dict(width=12), "width must be a multiple of 8, got 12"),
    (dict(burst=3), "burst must be a power of two, got 3"),
    (dict(lines=3), "lines must be a power of two, got 3"),
    (dict(fifo_depth=2), "fifo_depth must be an integer in [3, 256], got 2"),
    (dict(fifo_depth=2.0), "fifo_depth must be an integer in [3, 256], got 2.0"),
    (dict(pending=0), "pending must be an integer in [1, 64], got 0"),
    (dict(pending=True), "pending must be an integer in [1, 64], got True"),
    (dict(counter_bits=65), "counter_bits must be an integer in [8, 64], got 65"),
])
def test_refusals(kwargs, message):
    with pytest.raises(UserError) as info:
        HBWrite(**kwargs)
    assert str(info.value) == message


def test_ports_and_widths():
    dut = HBWrite(channels=4, width=64, burst=16, lines=1 << 20, len_bits=16)
    assert dut.wr.req.payload.shape().size == 20 + 16
    assert HBWrite(lines=1 << 20).wr.req.payload.shape()["length"].width == 21     # derived
    assert dut.wr.data.payload.shape().size == 4 * 64 + 1
    assert dut.o_wcmd[3].payload.shape().size == 20 + 5
    assert dut.o_wdata[0].payload.shape().size == 64
    assert len(dut.i_wack) == 4
    # the most bursts of one request: below 2**len_bits lines, and at most `lines`
    assert max_bursts(dut.config) == -(-((1 << 16) - 1) // 16)
    assert max_bursts(HBWrite(burst=4, lines=16).config) == 4


@pytest.mark.parametrize("params", FAST)
def test_generated_verilog_is_lint_clean(params, tmp_path):
    from elmoe3d.hw.lint import lint
    from elmoe3d.hw.tops import get_top
    from elmoe3d.hw.verilog import write_verilog
    top = get_top("hb_write")
    p = top.resolve(params)
    ok, log = lint(write_verilog(top.build(**p), "hb_write", tmp_path, p), "hb_write")
    assert ok, log
