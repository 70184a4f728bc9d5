"""cocotb bench of the core's GEMV engine (top ``exec_gemv``: ``hw/executor/gemv.py`` with its PE array and buffers).

Configuration (``bench_config()``): the top's ``params`` (``preset``, ``lanes``), ``seeds``,
``quick`` (fewer jobs), ``idle`` (probability of an idle cycle before each beat the bench drives:
jobs, plane lines, fill acknowledgements) and ``stall`` (probability of a not-ready cycle on every
stream the engine drives: done, the three read requests, the fill arm).

Per job (random: DRAFT or FULL, MSB plane from off-chip or HB, a filling plane or not,
activations from ``x`` or ``h``, destination ``ga``/``ua``/``da``, 1..T tokens in a random token
list or in order, 1..4 row tiles and words) the bench writes random activations into the source
buffer through its write port, sends the job, serves each read request from a model of the tier
(the plane section tiled as the PE array takes it: per row tile, per word, one ``rows x cols``
nibble beat, split into tier lines, element 0 at the least significant bits) and checks:

- every request against the job: one per lane group on the MSB tier, one per lane group on port 1
  for FULL, none on the other ports; one fill arm (``fill_base``, ``fill_len``) with lane group
  0's requests on a filling plane, none otherwise; ``weights`` high on every port-0 line;
- ``done`` once, then ``fill_idle`` after the bench acknowledges the fill (random delay);
- the destination buffer, every token and word the job may touch, bit for bit against the golden
  model (``sim/numerics/gemv.py``: ``draft_gemv`` of the MSB slices, ``full_gemv``) and a Python model of
  the buffers (tokens outside the list keep their words);
- the stream contract (valid and payload held until taken) on every stream the engine drives.
"""

import random
from collections import deque

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly, RisingEdge

from ...hw.core import core_config
from ...hw.executor.buffers import Dims
from ...hw.executor.ports import Dest, gemv_job_layout
from ...hw.layouts import Mode, plane_layout
from ...hw.protocols import line_layout, request_layout
from ..numerics.gemv import draft_gemv, full_gemv
from ..numerics.quant import ACT_MAX
from ..numerics.slices import lsb_slice, msb_slice
from . import buffer_ports
from .runner import bench_config
from .streams import StreamSink, StreamSource, cycle_counter, pack, unpack

PERIOD_NS = 10


def _lines(word, beat_bits, line_bits):
    """A beat (integer) as tier lines, the first line at the least significant bits."""
    mask = (1 << line_bits) - 1
    return [(word >> (i * line_bits)) & mask for i in range(beat_bits // line_bits)]


class TB:
    def __init__(self, dut, cfg, seed):
        self.dut = dut
        p = cfg["params"]
        self.config = c = core_config(p["preset"], p["lanes"])
        self.d = d = Dims(c, 8)
        self.W, self.T, self.lanes = d.W, d.tokens, d.lanes
        self.rng = random.Random(seed)
        self.np_rng = np.random.default_rng(seed)
        idle, stall = cfg.get("idle", 0.3), cfg.get("stall", 0.3)
        self.cycle = cycle_counter(PERIOD_NS)
        self.job_l = gemv_job_layout(d)
        self.plane_l = plane_layout(self.W, self.W)
        self.beat_bits = 4 * self.W * self.W
        self.off_bits, self.hb_bits = c.offchip.width, c.hb.channels * c.hb.width
        self.req_off = request_layout(c.offchip.addr_bits, c.offchip.len_bits)
        self.req_hb = request_layout(c.hb.addr_bits, c.hb.len_bits)
        self.line_off, self.line_hb = line_layout(self.off_bits), line_layout(self.hb_bits)
        r = lambda k: random.Random(seed * 31 + k)
        clk = dut.clk
        self.job = StreamSource(dut, "job", clk, idle=idle, rng=r(1))
        self.fill_done = StreamSource(dut, "fill_done", clk, idle=idle, rng=r(2))
        self.data = {port: StreamSource(dut, f"{port}__data", clk, idle=idle, rng=r(3 + i))
                     for i, port in enumerate(("msb", "lsb", "hb"))}
        self.reqs = {port: StreamSink(dut, f"{port}__req", clk, stall=stall, rng=r(6 + i))
                     for i, port in enumerate(("msb", "lsb", "hb"))}
        self.arm = StreamSink(dut, "arm", clk, stall=stall, rng=r(9))
        self.done = StreamSink(dut, "done", clk, stall=stall, rng=r(10))
        self.queues = {port: deque() for port in self.data}
        self.model = {name: np.zeros((self.T, d.buffers()[name][0], self.W), np.int64) for name in ("ga", "ua", "da")}

    async def start(self):
        """Reset the engine and start the plane-line servers (the clock runs already)."""
        dut = self.dut
        await FallingEdge(dut.clk)
        for s in (self.job, self.fill_done, *self.data.values()):
            s.reset()
        for s in (*self.reqs.values(), self.arm, self.done):
            s.reset()
        dut.tlist.value = 0
        for name in ("x", "h"):
            for t in range(self.T):
                getattr(dut, f"{name}_wr__we__{t}").value = 0
        for name in ("ga", "ua", "da"):
            getattr(dut, f"{name}_rd__ren").value = 0
        dut.rst.value = 1
        await ClockCycles(dut.clk, 3)
        dut.rst.value = 0
        await RisingEdge(dut.clk)
        self.servers = [cocotb.start_soon(src.serve(self._pull(port), on_transfer=self._on_line(port)))
                        for port, src in self.data.items()]

    async def stop(self):
        """Stop the plane-line servers (before the next seed's reset)."""
        for src in self.data.values():
            src.stop()
        for task in self.servers:
            await task

    def _pull(self, port):
        q = self.queues[port]
        return lambda cycle: q.popleft() if q else None

    def _on_line(self, port):
        def check(beat, cycle):
            if port == "msb":
                assert int(self.dut.weights.value) == 1, "a port-0 plane line while `weights` is low"
        return check

    # -- buffers -----------------------------------------------------------------------------
    async def write_buffer(self, name, words):
        """Write ``words`` (T x n x W) into words 0 .. n-1 of every bank of ``name``."""
        await buffer_ports.write_buffer(self.dut, self.d.word(name), self.T, name, words)

    async def read_buffer(self, name, n):
        """Words ``0 .. n-1`` of every bank of ``name`` (T x n x W)."""
        return await buffer_ports.read_buffer(self.dut, self.d.word(name), self.T, self.W, name, n)

    # -- one job --------------------------------------------------------------------------------
    def make_job(self, big=False):
        rng, d, W = self.rng, self.d, self.W
        full = rng.random() < 0.5
        msb_hb = rng.random() < 0.4
        fill = (not msb_hb) and rng.random() < 0.5
        src_h = rng.random() < 0.5
        dest = rng.choice([Dest.GA, Dest.UA, Dest.DA])
        ident = rng.random() < 0.3
        ntok = rng.randint(1, self.T)
        tokens = list(range(ntok)) if ident else rng.sample(range(self.T), ntok)
        most = 4 if not big else 8
        nt = rng.randint(1, min(most, self.model[["ga", "ua", "da"][dest]].shape[1]))
        kb = rng.randint(1, min(most, d.f_words if src_h else d.d_words))
        return dict(full=full, msb_hb=msb_hb, fill=fill, src_h=src_h, dest=dest, ident=ident, tokens=tokens,
                    nt=nt, kb=kb)

    async def run_job(self, j, index):
        dut, W, c = self.dut, self.W, self.config
        nt, kb, tokens = j["nt"], j["kb"], j["tokens"]
        ntok = len(tokens)
        groups = -(-ntok // self.lanes)
        src = "h" if j["src_h"] else "x"
        acts = self.np_rng.integers(-ACT_MAX, ACT_MAX + 1, (self.T, kb, W))
        await self.write_buffer(src, acts)
        q = self.np_rng.integers(-128, 128, (nt * W, kb * W)).astype(np.int8)
        msb_beats, lsb_beats = [], []
        for rt in range(nt):
            for kw in range(kb):
                tile = q[rt * W:(rt + 1) * W, kw * W:(kw + 1) * W]
                msb_beats.append(pack(self.plane_l, (msb_slice(tile) & 0xF).tolist()))
                lsb_beats.append(pack(self.plane_l, lsb_slice(tile).tolist()))
        msb_bits = self.hb_bits if j["msb_hb"] else self.off_bits
        msb_lines = [ln for b in msb_beats for ln in _lines(b, self.beat_bits, msb_bits)]
        lsb_lines = [ln for b in lsb_beats for ln in _lines(b, self.beat_bits, self.off_bits)]
        msb_port = "hb" if j["msb_hb"] else "msb"
        msb_req_l = self.req_hb if j["msb_hb"] else self.req_off
        msb_base = self.rng.randint(0, (1 << (c.hb.addr_bits if j["msb_hb"] else c.offchip.addr_bits)) - 1)
        lsb_base = self.rng.randint(0, (1 << c.offchip.addr_bits) - 1)
        fill_base = self.rng.randint(0, (1 << c.hb.addr_bits) - 1)
        fill_len = self.rng.randint(1, (1 << c.hb.len_bits) - 1)
        expect = {msb_port: (msb_base, len(msb_lines), msb_lines, self.line_hb if j["msb_hb"] else self.line_off)}
        if j["full"]:
            expect["lsb"] = (lsb_base, len(lsb_lines), lsb_lines, self.line_off)
        got = {port: 0 for port in self.reqs}
        arms = []
        tag = f"job {index} {j}"

        def on_req(port):
            layout = self.req_hb if port == "hb" else self.req_off
            def take(beat, cycle):
                r = unpack(layout, beat)
                assert port in expect, f"{tag}: a request on {port}, which this job does not use"
                base, length, lines, line_l = expect[port]
                assert (int(r.base), int(r.length)) == (base, length), \
                    f"{tag}: {port} request ({int(r.base)}, {int(r.length)}), expected ({base}, {length})"
                got[port] += 1
                for i, ln in enumerate(lines):
                    self.queues[port].append(pack(line_l, {"data": ln, "last": int(i == len(lines) - 1)}))
            return take

        def on_arm(beat, cycle):
            r = unpack(self.req_hb, beat)
            assert j["fill"], f"{tag}: a fill arm on a job that does not fill"
            assert got[msb_port] <= 1, f"{tag}: the fill arm after lane group 0"
            assert (int(r.base), int(r.length)) == (fill_base, fill_len), f"{tag}: arm ({int(r.base)}, {int(r.length)})"
            arms.append(cycle)
            cocotb.start_soon(self._ack_fill())

        tasks = [cocotb.start_soon(sink.serve(on_req(port))) for port, sink in self.reqs.items()]
        tasks.append(cocotb.start_soon(self.arm.serve(on_arm)))
        tl = 0
        for i, t in enumerate(tokens):
            tl |= t << (i * max(1, (self.T - 1).bit_length()))
        dut.tlist.value = tl if self.T > 1 else 0
        payload = dict(groups=groups, nt=nt, kb=kb, mode=Mode.FULL if j["full"] else Mode.DRAFT,
                       src_h=int(j["src_h"]), dest=j["dest"], ident=int(j["ident"]), ntok=ntok,
                       lsb=int(j["full"]), fill=int(j["fill"]), msb_hb=int(j["msb_hb"]),
                       msb_base=msb_base, msb_len=len(msb_lines), lsb_base=lsb_base, lsb_len=len(lsb_lines),
                       fill_base=fill_base, fill_len=fill_len)
        await self.job.send([pack(self.job_l, payload)])
        await self.done.recv(1)
        for _ in range(200):
            await FallingEdge(dut.clk)
            await ReadOnly()
            if int(dut.fill_idle.value):
                break
        else:
            raise AssertionError(f"{tag}: fill_idle still low 200 cycles after done")
        for sink in (*self.reqs.values(), self.arm):
            sink.stop()
        for t_ in tasks:
            await t_
        assert got[msb_port] == groups, f"{tag}: {got[msb_port]} MSB requests for {groups} lane groups"
        if j["full"]:
            assert got["lsb"] == groups, f"{tag}: {got['lsb']} LSB requests for {groups} lane groups"
        assert len(arms) == int(j["fill"]), f"{tag}: {len(arms)} fill arms"
        assert all(not q_ for q_ in self.queues.values()), f"{tag}: plane lines left untaken"
        # golden: every token of the list, every row tile
        name = ["ga", "ua", "da"][j["dest"]]
        a = acts.reshape(self.T, kb * W)[tokens].astype(np.int8)
        res = full_gemv(q, a) if j["full"] else draft_gemv(msb_slice(q), a)
        for i, t in enumerate(tokens):
            self.model[name][t, :nt] = np.asarray(res[i], np.int64).reshape(nt, W)
        out = await self.read_buffer(name, nt)
        exp = self.model[name][:, :nt]
        if not np.array_equal(out, exp):
            bad = np.argwhere(out != exp)[:4].tolist()
            raise AssertionError(f"{tag}: {name} differs from the golden model at (token, word, elem) {bad}")

    async def _ack_fill(self):
        await ClockCycles(self.dut.clk, self.rng.randint(1, 20))
        await self.fill_done.send([0])


async def _run(dut, jobs):
    cfg = bench_config()
    cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns").start())
    model = None
    for seed in cfg.get("seeds", [1]):
        tb = TB(dut, cfg, seed)
        if model is not None:
            tb.model = model        # the buffers keep their words across a reset
        model = tb.model
        await tb.start()
        n = 4 if cfg.get("quick") else jobs
        for i in range(n):
            await tb.run_job(tb.make_job(big=(i == n - 1)), i)
        await tb.stop()


@cocotb.test()
async def test_random_jobs(dut):
    """Random jobs back to back with random stalls on every stream, bit-exact against the golden GEMV."""
    await _run(dut, 12)
