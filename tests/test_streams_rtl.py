"""Stream blocks (``hw/width_adapter.py``, ``hw/stream_fifo.py``, ``hw/arbiter.py``): refusals, the
golden adapter, and the cocotb regression of each block (``sim/benches/tb_streams.py``).

Each pytest node builds its own Verilator model in its own folder and runs every cocotb test of
the bench: random beats at several idle/stall mixes bit-exact against the golden behaviour,
corner cases, and exact cycle counts without stalls. The default run keeps a few small
parameter sets; the others are ``slow``.
"""

import pytest

from elmoe3d.errors import UserError
from elmoe3d.hw.arbiter import StreamArbiter, output_layout
from elmoe3d.hw.lint import lint
from elmoe3d.hw.stream_fifo import StreamFifo
from elmoe3d.hw.tops import get_top
from elmoe3d.hw.verilog import write_verilog
from elmoe3d.hw.width_adapter import WidthAdapter, golden_adapt
from elmoe3d.sim.benches.launch import BENCHES, run_top_bench
from elmoe3d.sim.benches.tb_streams import rr_grant

FAST = [
    pytest.param("width_adapter", dict(in_width=8, out_width=32), id="adapter-8-32"),
    pytest.param("stream_fifo", dict(width=9, depth=2), id="fifo-skid"),
    pytest.param("stream_arbiter", dict(width=8, n=3), id="arbiter-3"),
]
SLOW = [   # (the default run keeps one set per block: the suite's time budget)
    pytest.param("width_adapter", dict(in_width=64, out_width=16), id="adapter-64-16"),
    pytest.param("stream_fifo", dict(width=16, depth=5), id="fifo-5"),
    pytest.param("width_adapter", dict(in_width=12, out_width=12), id="adapter-equal"),
    pytest.param("width_adapter", dict(in_width=1, out_width=8), id="adapter-1-8"),
    pytest.param("width_adapter", dict(in_width=128, out_width=64), id="adapter-128-64"),
    pytest.param("width_adapter", dict(in_width=16, out_width=16 * 7), id="adapter-16-112"),
    pytest.param("stream_fifo", dict(width=1, depth=1), id="fifo-1"),
    pytest.param("stream_fifo", dict(width=33, depth=3), id="fifo-3"),
    pytest.param("stream_fifo", dict(width=8, depth=64), id="fifo-64"),
    pytest.param("stream_arbiter", dict(width=5, n=1), id="arbiter-1"),
    pytest.param("stream_arbiter", dict(width=16, n=2), id="arbiter-2"),
    pytest.param("stream_arbiter", dict(width=7, n=9), id="arbiter-9"),
]


@pytest.mark.parametrize("name, params", FAST)
def test_stream_block_regression_verilator(name, params, tmp_path):
    run_top_bench(name, params, tmp_path, seeds=(1,), quick=True)


@pytest.mark.slow
@pytest.mark.parametrize("name, params", SLOW + FAST)
def test_stream_block_regression_more(name, params, tmp_path):
    run_top_bench(name, params, tmp_path, seeds=(2, 3, 4))


@pytest.mark.parametrize("name, params", [("width_adapter", dict(in_width=8, out_width=32)),
                                          ("width_adapter", dict(in_width=64, out_width=16)),
                                          ("stream_fifo", dict(width=8, depth=2)),
                                          ("stream_fifo", dict(width=8, depth=4)),
                                          ("stream_arbiter", dict(width=8, n=3))])
def test_lint_clean(name, params, tmp_path):
    top = get_top(name)
    ok, log = lint(write_verilog(top.build(**top.resolve(params)), name, tmp_path, top.resolve(params)), name)
    assert ok, log


def test_registered_in_the_bench_registry():
    for name in ("width_adapter", "stream_fifo", "stream_arbiter"):
        assert BENCHES[name] == "elmoe3d.sim.benches.tb_streams"
        get_top(name)


# -- refusals --------------------------------------------------------------------------------------
@pytest.mark.parametrize("build, message", [
    (lambda: WidthAdapter(0, 8), "in_width must be in [1, 65536], got 0"),
    (lambda: WidthAdapter(8, 0), "out_width must be in [1, 65536], got 0"),
    (lambda: WidthAdapter(8.0, 16), "in_width must be an integer, got 8.0"),
    (lambda: WidthAdapter(True, 16), "in_width must be an integer, got True"),
    (lambda: WidthAdapter(8, 1 << 17), "out_width must be in [1, 65536], got 131072"),
    (lambda: WidthAdapter(12, 8), "in_width and out_width must be multiples of one another, got 12 and 8"),
    (lambda: WidthAdapter(8, 20), "in_width and out_width must be multiples of one another, got 8 and 20"),
    (lambda: StreamFifo(8, 0), "depth must be in [1, 65536], got 0"),
    (lambda: StreamFifo(8, 65537), "depth must be in [1, 65536], got 65537"),
    (lambda: StreamFifo(8, "4"), "depth must be an integer, got '4'"),
    (lambda: StreamFifo("wide", 4), "shape must be a width, Shape or layout, got 'wide'"),
    (lambda: StreamFifo(0, 4), "shape must have at least one bit, got 0"),
    (lambda: StreamArbiter(8, 0), "n must be in [1, 64], got 0"),
    (lambda: StreamArbiter(8, 65), "n must be in [1, 64], got 65"),
    (lambda: StreamArbiter(8, 2.5), "n must be an integer, got 2.5"),
    (lambda: StreamArbiter(None, 2), "shape must be a width, Shape or layout, got None"),
])
def test_refusals(build, message):
    with pytest.raises(UserError) as info:
        build()
    assert str(info.value) == message


def test_generator_refusal_is_a_user_error():
    top = get_top("width_adapter")
    with pytest.raises(UserError, match="multiples of one another"):
        top.build(**top.resolve(dict(in_width=24, out_width=64)))


# -- derived properties and the golden model --------------------------------------------------------
def test_derived():
    assert (WidthAdapter(8, 32).mode, WidthAdapter(8, 32).ratio) == ("up", 4)
    assert (WidthAdapter(64, 16).mode, WidthAdapter(64, 16).ratio) == ("down", 4)
    assert (WidthAdapter(5, 5).mode, WidthAdapter(5, 5).ratio) == ("equal", 1)
    assert [StreamFifo(3, d).latency for d in (1, 2, 3, 100)] == [1, 1, 2, 2]
    assert StreamFifo(output_layout(4, 3), 4).width == 6
    assert output_layout(8, 1).size == 9 and output_layout(8, 5).size == 11


def test_golden_adapter():
    lines = [(0x1, 0), (0x2, 0), (0x3, 1), (0x4, 0), (0x5, 0), (0x6, 0), (0x7, 0), (0x8, 1)]
    assert golden_adapt(lines, 4, 8) == [(0x21, 0), (0x03, 1), (0x54, 0), (0x76, 0), (0x08, 1)]
    assert golden_adapt([(0xABCD, 1), (0x1234, 0)], 16, 4) == [
        (0xD, 0), (0xC, 0), (0xB, 0), (0xA, 1), (0x4, 0), (0x3, 0), (0x2, 0), (0x1, 0)]
    assert golden_adapt(lines, 4, 4) == lines
    # up then down is the identity on whole groups
    words = [(v, 0) for v in range(16)]
    assert [d for d, _ in golden_adapt(golden_adapt(words, 4, 16), 16, 4)] == list(range(16))


def test_rr_grant_model():
    assert rr_grant(2, [1, 1, 1]) == 0 and rr_grant(0, [1, 1, 1]) == 1
    assert rr_grant(1, [1, 0, 0]) == 0 and rr_grant(0, [1, 0, 0]) == 0
    assert rr_grant(0, [0, 0, 0]) is None
