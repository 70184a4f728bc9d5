"""The fill path RTL (``hw/fill_path.py``) against its golden rule (``fill_in_lines`` and
``hw/width_adapter.golden_adapt``), plus its constructor refusals.

Each pytest node builds its own Verilog and Verilator model in ``tmp_path`` and runs every cocotb
test of ``sim/benches/tb_fill_path.py``: corner arms (length 1, ratio boundaries, the last line,
out of range, length 0), random armed/unarmed sequences over two seeds with random gaps on
``i_line``/``i_arm`` and random stalls on ``o_line``, ``wr.req``, ``wr.data`` and ``o_done``, an
HB side that answers ``done`` after random delays, and one run without stalls that checks one
line per cycle. Downsizing and other ratios are ``slow``.
"""

import pytest

from elmoe3d.errors import UserError
from elmoe3d.hw.fill_path import FillPath, fill_in_lines
from elmoe3d.hw.lint import lint
from elmoe3d.hw.tops import get_top
from elmoe3d.hw.verilog import write_verilog
from elmoe3d.sim.benches.launch import BENCHES, run_top_bench

FAST = [
    pytest.param(dict(in_width=32, hb_width=64, hb_addr_bits=8, hb_len_bits=9), id="up-32to64"),
    pytest.param(dict(in_width=32, hb_width=32, hb_addr_bits=5, hb_len_bits=4, counter_bits=8), id="equal-32"),
]
SLOW = [
    pytest.param(dict(in_width=48, hb_width=16, hb_addr_bits=6, hb_len_bits=7), id="down-48to16"),
    pytest.param(dict(in_width=64, hb_width=16, hb_addr_bits=4, hb_len_bits=5), id="down-64to16-small"),
    pytest.param(dict(in_width=8, hb_width=40, hb_addr_bits=7, hb_len_bits=3), id="up-8to40"),
]


def test_registered():
    assert BENCHES["fill_path"] == "elmoe3d.sim.benches.tb_fill_path"


@pytest.mark.parametrize("params", FAST)
def test_fill_path_regression(params, tmp_path):
    run_top_bench("fill_path", params, tmp_path, seeds=(1, 2))


@pytest.mark.slow
@pytest.mark.parametrize("params", SLOW + FAST)
def test_fill_path_regression_more(params, tmp_path):
    run_top_bench("fill_path", params, tmp_path, seeds=(3, 4, 5), idle=0.5, stall=0.6, done_delay=15)


@pytest.mark.parametrize("params", FAST + SLOW)
def test_generated_verilog_is_lint_clean(params, tmp_path):
    top = get_top("fill_path")
    p = top.resolve(params)
    ok, log = lint(write_verilog(top.build(**p), "fill_path", tmp_path, p), "fill_path")
    assert ok, log


@pytest.mark.parametrize("kwargs, message", [
    (dict(in_width=0), "in_width must be an integer in [1, 65536], got 0"),
    (dict(hb_width=32.0), "hb_width must be an integer in [1, 65536], got 32.0"),
    (dict(in_width=48, hb_width=64), "in_width and hb_width must be multiples of one another, got 48 and 64"),
    (dict(hb_addr_bits=0), "hb_addr_bits must be an integer in [1, 32], got 0"),
    (dict(hb_len_bits=34), "hb_len_bits must be an integer in [1, 33], got 34"),
    (dict(counter_bits=True), "counter_bits must be an integer in [8, 64], got True"),
])
def test_refusals(kwargs, message):
    with pytest.raises(UserError) as info:
        FillPath(**kwargs)
    assert str(info.value) == message


def test_ports_modes_and_line_counts():
    fp = FillPath(in_width=32, hb_width=128, hb_addr_bits=10, hb_len_bits=11)
    assert (fp.mode, fp.ratio) == ("up", 4)
    assert fp.i_line.payload.shape().size == 33 and fp.wr.data.payload.shape().size == 129
    assert fp.i_arm.payload.shape().size == 21 and fp.wr.req.payload.shape().size == 21
    assert (FillPath(in_width=96, hb_width=32).mode, FillPath(in_width=96, hb_width=32).ratio) == ("down", 3)
    assert FillPath(in_width=64, hb_width=64).mode == "equal"
    assert [fill_in_lines(32, 128, n) for n in (1, 3)] == [4, 12]
    assert [fill_in_lines(96, 32, n) for n in (1, 2, 3, 4)] == [1, 1, 1, 2]
    assert fill_in_lines(64, 64, 7) == 7
