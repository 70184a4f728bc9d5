# amaranth: UnusedElaboratable=no
"""The executor as units (``hw/executor/``): every signal of the generated core has a name, the
buffer block merges its clients' ports as a model does, HBMemory speaks the shared port
protocol, and the units' cocotb benches (``sim/benches/tb_exec_gemv.py``, ``tb_exec_context.py``)
are registered (their Verilator runs are ``slow``; ``elmoe3d regress`` runs them)."""

from dataclasses import replace

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.sim import Simulator

from elmoe3d.config import PRESETS
from elmoe3d.hw.core import build_core
from elmoe3d.hw.executor import Buffers, Dims, GemvEngine
from elmoe3d.hw.executor.gemv import hb_port
from elmoe3d.hw.hb_memory import HBMemory
from elmoe3d.hw.protocols import line_stream, request_stream
from elmoe3d.sim.benches.launch import BENCHES, REGRESSION, run_top_bench


@pytest.mark.slow
def test_generated_core_has_no_unnamed_signal():
    """Amaranth names a signal it cannot name ``$signal``: the core's Verilog has none. (The
    default run checks the same on the Verilog it already generates:
    ``tests/test_interface_doc.py::test_generated_files_agree_with_the_verilog[core]``.)"""
    text = verilog.convert(build_core("tiny", max_k=4), name="core", emit_src=False)
    assert "module core(" in text
    assert "$signal" not in text


def test_hb_memory_ports_are_the_shared_read_port():
    cfg = PRESETS["tiny"]
    h = cfg.hb
    dut = HBMemory(channels=h.channels, width=h.width, burst=h.burst, latency=h.latency, lines=h.lines,
                   len_bits=h.len_bits)
    port = hb_port(cfg)
    # the memory side of the executor's HB ReadPort: i_req and o_data are its req and data, flipped
    assert dut.signature.members["i_req"].signature == port.members["req"].signature.flip()
    assert dut.signature.members["o_data"].signature == port.members["data"].signature.flip()
    assert port.members["req"].signature == request_stream(h.addr_bits, h.len_bits)
    assert port.members["data"].signature.flip() == line_stream(h.channels * h.width)


def _small_dims():
    cfg = PRESETS["tiny"]
    return Dims(replace(cfg, buffers=replace(cfg.buffers, tokens=3, d_max=12, f_max=12),
                        array=replace(cfg.array, lanes=3)), 4)


@pytest.mark.parametrize("seed", [1, 2])
def test_buffers_merge_client_ports_like_a_model(seed):
    """Two readers and two writers on one buffer, at most one of each enabled per cycle per bank
    (the executor's contract): every read returns the model's word a cycle later (held while no
    reader reads) and every write lands, whichever client made it."""
    d = _small_dims()
    dut = Buffers(d, {"x": (("a", "b"), ("a", "b"))})
    T, depth, W = d.tokens, d.buffers()["x"][0], d.W
    rng = np.random.default_rng(seed)
    model = np.zeros((T, depth, W), np.int64)

    async def bench(ctx):
        held = None
        for cycle in range(200):
            reader = int(rng.integers(3))          # 0: nobody reads, 1: a, 2: b
            raddr = int(rng.integers(depth))
            for c, port in ((1, dut.x_rd_a), (2, dut.x_rd_b)):
                ctx.set(port.ren, int(reader == c))
                ctx.set(port.raddr, raddr if reader == c else int(rng.integers(depth)))
            writes = []
            for t in range(T):
                writer = int(rng.integers(3))
                for c, port in ((1, dut.x_wr_a), (2, dut.x_wr_b)):
                    wa, wd = int(rng.integers(depth)), [int(v) for v in rng.integers(-128, 128, W)]
                    ctx.set(port.we[t], int(writer == c))
                    ctx.set(port.waddr[t], wa)
                    ctx.set(port.wdata[t], wd)
                    if writer == c:
                        writes.append((t, wa, wd))
            want = model[:, raddr].copy() if reader else held
            await ctx.tick()
            for t, wa, wd in writes:
                model[t, wa] = wd
            if want is not None:
                for port in (dut.x_rd_a, dut.x_rd_b):
                    got = np.array([[ctx.get(port.rdata[t][i]) for i in range(W)] for t in range(T)])
                    assert np.array_equal(got, want), f"seed {seed} cycle {cycle}"
            held = want

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


def test_gemv_engine_declares_its_streams():
    d = Dims(PRESETS["tiny"], 8)
    from elmoe3d.hw.pe_array import PEArray
    pe = PEArray(rows=d.W, cols=d.W, lanes=d.lanes, max_k=d.W * d.f_words)
    eng = GemvEngine(d, pe.signature)
    members = eng.signature.members
    assert {"job", "done", "msb", "lsb", "hb", "arm", "fill_done", "pe"} <= set(members)
    assert members["x_rd"].signature == d.read_port("x")
    assert members["ga_wr"].signature == d.write_port("ga")


@pytest.mark.parametrize("top", ["exec_gemv", "exec_context"])
def test_every_executor_unit_bench_is_registered(top):
    assert BENCHES[top] == f"elmoe3d.sim.benches.tb_{top}"
    assert any(e.top == top and e.quick for e in REGRESSION)


@pytest.mark.slow
@pytest.mark.parametrize("params", [dict(preset="tiny"), dict(preset="tiny", lanes=3)], ids=["tiny", "tiny-lanes3"])
def test_gemv_engine_bench(params, tmp_path):
    run_top_bench("exec_gemv", params, tmp_path, seeds=(1, 2), quick=False, quick_build=True)


@pytest.mark.slow
def test_expert_context_bench(tmp_path):
    run_top_bench("exec_context", dict(preset="tiny", max_k=4), tmp_path, seeds=(1, 2), quick=False)
