# amaranth: UnusedElaboratable=no
"""The executor as units (``hw/executor/``): every signal of the generated core has a name, the
buffer block merges its clients' ports as a model does, HBMemory speaks the shared port
protocol, and the units' cocotb benches (``sim/benches/tb_exec_gemv.py``, ``tb_exec_context.py``,
``tb_exec_vector.py``, ``tb_exec_group.py``, ``tb_exec_fetch.py``, ``tb_exec_route.py``) are
registered (their Verilator runs are ``slow`` but for one short run of the vector steps, the
group loads, the fetch unit and the route unit; ``elmoe3d regress`` runs them)."""

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


@pytest.mark.parametrize("top", ["exec_gemv", "exec_context", "exec_vector", "exec_group", "exec_fetch",
                                 "exec_route"])
def test_every_executor_unit_bench_is_registered(top):
    assert BENCHES[top] == f"elmoe3d.sim.benches.tb_{top}"
    assert any(e.top == top and e.quick for e in REGRESSION)


@pytest.mark.slow
@pytest.mark.parametrize("params", [dict(preset="tiny"), dict(preset="tiny", lanes=3)], ids=["tiny", "tiny-lanes3"])
def test_gemv_engine_bench(params, tmp_path):
    run_top_bench("exec_gemv", params, tmp_path, seeds=(1, 2), quick=False, quick_build=True)


def _unit_cases(top, tiny, small):
    """One seed on tiny in the default run; more seeds and the small preset behind -m slow."""
    return [pytest.param(top, tiny, (1,), id=f"{top}-tiny"),
            pytest.param(top, tiny, (2, 3), marks=pytest.mark.slow, id=f"{top}-tiny-seeds"),
            pytest.param(top, small, (1, 2), marks=pytest.mark.slow, id=f"{top}-small")]


# exec_vector (hw/executor/vector.py): SWIGLU, COMBINE and STOREY bit-exact against sim/golden/int_moe,
#   every Status they raise, with random stalls and without (latency);
# exec_group (group.py): LOADX and LOADP against sections laid out by elmoe3d/spec/image.py, valid and
#   mutated toward NONE, RANGE, ADDRESS and INPUT;
# exec_fetch (fetch.py): FETCH's requests, Status and planes against a model;
# exec_route (route.py): the router GEMV job, probes, and each token's experts and gate weights
#   against sim/golden/int_moe select_experts / gate_weights
@pytest.mark.parametrize("top, params, seeds", [
    *_unit_cases("exec_vector", dict(preset="tiny"), dict(preset="small")),
    *_unit_cases("exec_group", dict(preset="tiny"), dict(preset="small")),
    *_unit_cases("exec_fetch", dict(preset="tiny"), dict(preset="small")),
    *_unit_cases("exec_route", dict(preset="tiny", max_k=4), dict(preset="small", max_k=8)),
])
def test_sequencer_unit_bench(top, params, seeds, tmp_path):
    run_top_bench(top, params, tmp_path, seeds=seeds, quick=True, quick_build=True)


@pytest.mark.slow
def test_expert_context_bench(tmp_path):
    run_top_bench("exec_context", dict(preset="tiny", max_k=4), tmp_path, seeds=(1, 2), quick=False)


class _LoadsTop:
    """The loads unit and the port share as control.py joins them: client ``a`` (the GEMV
    engine's LSB port in the core) driven by the bench, client ``b`` the loads unit."""

    def __new__(cls, dims, depth):
        from amaranth.hdl import Module
        from amaranth.lib import wiring
        from elmoe3d.hw.executor.loads import MultLoads, PortShare

        class Top(wiring.Component):
            def __init__(self):
                self.share = PortShare(dims.config, depth)
                self.loads = MultLoads(dims)
                super().__init__({})

            def elaborate(self, platform):
                m = Module()
                m.submodules.share, m.submodules.loads = self.share, self.loads
                wiring.connect(m, self.share.b, self.loads.rd)
                return m
        return Top()


@pytest.mark.parametrize("seed", [1, 2])
def test_loads_unit_and_port_share_deliver_each_line_to_its_owner(seed):
    """Random requests of a client and multiplier loads on one read port, served in order with
    random gaps and random backpressure of the client: each client gets exactly its own lines in
    order; each load writes its lines into its bank (one sub-bank per line in turn), flags an
    exponent of 0 as ``bad``, names itself in ``tag_*`` and is ``loaded`` until ``use``."""
    from elmoe3d.hw.executor.loads import mult_words
    from elmoe3d.spec.image import MULT_BYTES
    d = _small_dims()
    top = _LoadsTop(d, 3)
    share, loads = top.share, top.loads
    rng = np.random.default_rng(seed)
    per = d.W // MULT_BYTES
    n_words = mult_words(d)

    async def bench(ctx):
        queue, served = [], []                  # requests taken by the port; lines served so far
        a_want, a_got = [], []                  # lines client a expects, in order / received
        jobs, written = [], {}                  # loads: (base, length, bank) and {(bank, word, sub): data}
        a_pending = None
        job = None
        bads = []
        cycle = 0
        use = used = False
        while cycle < 3000 and (cycle < 400 or queue or a_pending or job or ctx.get(loads.busy)):
            if used:
                assert not ctx.get(loads.loaded)       # taken by the last cycle's use
            ctx.set(loads.use, int(use))
            use, used = False, use
            # client a: a random request now and then (ready at random)
            if a_pending is None and rng.random() < 0.05 and cycle < 400:
                a_pending = (int(rng.integers(0, 64)), int(rng.integers(1, 5)))
            ctx.set(share.a.req.valid, int(a_pending is not None))
            if a_pending:
                ctx.set(share.a.req.payload, {"base": a_pending[0], "length": a_pending[1]})
            a_ready = int(rng.random() < 0.7)
            ctx.set(share.a.data.ready, a_ready)
            # the loads unit: a job when free
            if job is None and not ctx.get(loads.busy) and rng.random() < 0.1 and cycle < 400:
                lines = int(rng.integers(1, 4 * n_words + 1))
                job = (int(rng.integers(0, 64)), lines, int(rng.integers(2)))
            ctx.set(loads.job.valid, int(job is not None))
            if job:
                ctx.set(loads.job.payload, {"base": job[0], "length": job[1], "bank": job[2]})
            # the memory: in order, one line per cycle with random gaps; line i of a request is
            # (base << 8) + i, with some zero exponents
            line_v = bool(queue) and rng.random() < 0.8
            if line_v:
                base, length, i = queue[0]
                entries = [{"m": (base * 7 + i * 3 + k) & 0xFFFF,
                            "e": 0 if rng.random() < 0.01 else 1 + ((base + i + k) % 40)} for k in range(per)]
                word = 0
                for k, e in enumerate(entries):
                    word |= (e["m"] | (e["e"] << 16)) << (8 * MULT_BYTES * k)
                ctx.set(share.port.data.valid, 1)
                ctx.set(share.port.data.payload, {"data": word, "last": int(i == length - 1)})
            else:
                ctx.set(share.port.data.valid, 0)
            port_ready = int(rng.random() < 0.6)
            ctx.set(share.port.req.ready, port_ready)
            # sample this cycle's transfers before the edge
            req_fire = ctx.get(share.port.req.valid) and port_ready
            req = ctx.get(share.port.req.payload) if req_fire else None
            a_req_fire = a_pending is not None and ctx.get(share.a.req.ready)
            job_fire = job is not None and ctx.get(loads.job.ready)
            data_fire = line_v and ctx.get(share.port.data.ready)
            a_line = ctx.get(share.a.data.valid) and a_ready
            wr_en = ctx.get(loads.wr.en)
            wr = (ctx.get(loads.wr.bank), ctx.get(loads.wr.addr))
            await ctx.tick()
            cycle += 1
            if req_fire:
                queue.append([req.base, req.length, 0])
            if a_req_fire:
                a_want += [(a_pending[0], i) for i in range(a_pending[1])]
                a_pending = None
            if job_fire:
                jobs.append(job)
                bads.append(False)
                job = None
            if data_fire:
                base, length, i = queue[0]
                served.append((base, i, word))
                if a_line:
                    a_got.append((base, i))
                if wr_en:
                    assert bin(wr_en).count("1") == 1
                    sub = wr_en.bit_length() - 1
                    written[(wr[0], wr[1], sub)] = word
                    if any(((word >> (8 * MULT_BYTES * k + 16)) & 0xFF) == 0 for k in range(per)):
                        bads[-1] = True
                queue[0][2] += 1
                if queue[0][2] == length:
                    queue.pop(0)
                    if wr_en and not ctx.get(loads.busy):
                        # a load completed: tag, loaded and bad name it
                        b_, l_, k_ = jobs[-1]
                        assert (ctx.get(loads.tag_base), ctx.get(loads.tag_len), ctx.get(loads.tag_bank)) == (b_, l_, k_)
                        assert ctx.get(loads.loaded) and ctx.get(loads.bad) == bads[-1]
                        use = True
        assert not queue and a_pending is None and job is None, f"seed {seed}: did not finish"
        assert a_got == a_want, f"seed {seed}: client a got {a_got[:8]}.. expected {a_want[:8]}.."
        assert len(jobs) >= 3 and len(a_want) >= 20
        # the last load of each bank wrote line i at word i // 4, sub-bank i % 4
        for bank in (0, 1):
            last = [j for j in jobs if j[2] == bank]
            if last:
                base, length, _ = last[-1]
                lines = [w for (b_, i, w) in served if b_ == base][-length:]
                for i, w in enumerate(lines):
                    assert written[(bank, i // 4, i % 4)] == w

    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
