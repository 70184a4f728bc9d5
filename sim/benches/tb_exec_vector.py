"""cocotb bench of the core's vector steps (top ``exec_vector``: ``hw/executor/vector.py`` with its
requantizers, SwiGLU and combine blocks, buffers and one multiplier bank).

Configuration (``bench_config()``): the top's ``params`` (``preset``), ``seeds``, ``quick`` (fewer
rounds), ``idle`` (probability of an idle cycle before each beat the bench drives: jobs, write
acknowledgements) and ``stall`` (probability of a not-ready cycle on every stream the unit
drives: ``done``, ``wr.req``, ``wr.data``).

Per round (a token group): random sizes (``ntok`` tokens, ``dwords``/``fwords`` words), token
scales, ``hid_m``/``hid_e``, a random SiLU table, then ``clear``; per expert a random token list
(a subset of the group, or every token as a shared expert would), gate weights, multipliers and
accumulators (``ga``, ``ua``, ``da``, written through the buffers' ports), a SWIGLU job and a
COMBINE job; then a STOREY job. The bench checks, bit for bit:

- ``h`` after SWIGLU: the listed tokens' words against ``sim/golden/int_moe.swiglu``, the other
  tokens' words unchanged;
- ``o`` after COMBINE: each listed token's sums ``acc + combine(expert_output(da), w)``
  (``acc`` 0 for a token not started since ``clear``), the others unchanged;
- STOREY: one write request (``y_addr`` in off-chip lines, ``ntok * d / W * 4`` lines), the
  lines ``sat(o, 32)`` token by token, word by word, element 0 at the least significant bits,
  ``last`` on the final one (0 for a token no COMBINE started); ``done`` only after the write's
  acknowledgement;
- every Status the unit raises: ``NONE``; ``ORDER`` on a job whose ``order`` is 0 (SWIGLU,
  COMBINE and STOREY), nothing written; ``ADDRESS`` on a STOREY past the off-chip space, no
  request made;
- without stalls (the second test), each step's latency from ``job`` to ``done`` is its words
  (STOREY: its off-chip lines, four per word; the write acknowledged a cycle after its last
  line) plus one constant per step, whatever the sizes.
"""

import random
from types import SimpleNamespace

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, RisingEdge

from ...hw.core import core_config
from ...hw.executor.buffers import Dims
from ...hw.executor.ports import VecOp, record_layout, token_list_layout, vector_job_layout
from ...hw.layouts import ArrayOf
from ...hw.protocols import line_layout, request_layout
from ...hw.vector_common import SILU_WRITE
from ...spec.image import MULTIPLIER
from ...spec.isa import Status, field_widths
from ...spec.numerics import GATE_FRAC, OUT_BITS, SILU_ENTRIES
from ..golden.int_moe import combine, expert_output, sat, swiglu
from . import buffer_ports
from .runner import bench_config
from .streams import StreamSink, StreamSource, cycle_counter, pack, unpack

PERIOD_NS = 10


class TB:
    def __init__(self, dut, cfg, seed, *, idle, stall):
        self.dut = dut
        p = cfg["params"]
        self.config = c = core_config(p["preset"])
        self.d = d = Dims(c, 8)
        self.W, self.T = d.W, d.tokens
        self.r_off = c.line_bytes // self.W
        self.rng = random.Random(seed)
        self.np = np.random.default_rng(seed)
        self.cycle = cycle_counter(PERIOD_NS)
        self.y_bits = field_widths(c)["value"]
        self.job_l = vector_job_layout(self.y_bits)
        self.req_l = request_layout(c.offchip.addr_bits, c.offchip.len_bits)
        self.line_l = line_layout(c.offchip.width)
        self.mult_l = ArrayOf(record_layout(MULTIPLIER), self.W, index="entry")
        r = lambda k: random.Random(seed * 41 + k)
        clk = dut.clk
        self.job = StreamSource(dut, "job", clk, idle=idle, rng=r(1))
        self.wr_done = StreamSource(dut, "wr__done", clk, idle=idle, rng=r(2))
        self.table = StreamSource(dut, "table", clk, idle=idle, rng=r(3))
        self.done = StreamSink(dut, "done", clk, stall=stall, rng=r(4))
        self.wr_req = StreamSink(dut, "wr__req", clk, stall=stall, rng=r(5))
        self.wr_data = StreamSink(dut, "wr__data", clk, stall=stall, rng=r(6))
        self.h = np.full((self.T, d.f_words, self.W), -999, np.int64)   # -999: not read yet
        self.o = {}                         # token -> d_words sums of W (the started tokens)
        self.latency = {}                   # op -> latency - words (no-stall runs)
        self.seen = set()                   # Status codes raised

    async def reset(self):
        dut = self.dut
        await FallingEdge(dut.clk)
        for s in (self.job, self.wr_done, self.table):
            s.reset()
        for s in (self.done, self.wr_req, self.wr_data):
            s.reset()
        for name in ("ga", "ua", "da", "o"):
            for t in range(self.T):
                getattr(dut, f"{name}_wr__we__{t}").value = 0
        for name in ("h", "o"):
            getattr(dut, f"{name}_rd__ren").value = 0
        dut.mult_wr__en.value = 0
        dut.clear.value = 0
        dut.rst.value = 1
        await ClockCycles(dut.clk, 3)
        dut.rst.value = 0
        await RisingEdge(dut.clk)

    # -- buffers and the multiplier bank ------------------------------------------------------
    async def write_buffer(self, name, words):
        """Write ``words`` (T x n x W) into words 0 .. n-1 of every bank of ``name``."""
        await buffer_ports.write_buffer(self.dut, self.d.word(name), self.T, name, words)

    async def read_buffer(self, name, n):
        """Words ``0 .. n-1`` of every bank of ``name`` (T x n x W)."""
        return await buffer_ports.read_buffer(self.dut, self.d.word(name), self.T, self.W, name, n)

    async def write_mults(self, m, e):
        """Multiplier entries ``(m[i], e[i])`` into the bank (word i // W)."""
        dut = self.dut
        W = self.W
        for a in range(len(m) // W):
            await FallingEdge(dut.clk)
            dut.mult_wr__addr.value = a
            dut.mult_wr__data.value = pack(self.mult_l, [{"m": int(m[a * W + i]), "e": int(e[a * W + i])}
                                                          for i in range(W)])
            dut.mult_wr__en.value = 1
        await FallingEdge(dut.clk)
        dut.mult_wr__en.value = 0

    # -- a group --------------------------------------------------------------------------------
    async def new_group(self, quick):
        dut, rng, W, T = self.dut, self.rng, self.W, self.T
        d = self.d
        self.ntok = rng.randint(1, T)
        self.dw = rng.randint(1, min(3 if quick else 6, d.d_words))
        self.fw = rng.randint(1, min(4 if quick else 8, d.f_words))
        self.xm = self.np.integers(1 << 14, 1 << 15, T)
        self.xe = self.np.integers(20, 27, T)
        self.hid_m, self.hid_e = rng.randrange(1 << 14, 1 << 15), rng.randint(30, 44)
        self.silu = self.np.integers(-(1 << 15) + 1, 1 << 15, SILU_ENTRIES)
        await self.table.send([pack(SILU_WRITE, {"index": i, "value": int(v)})
                               for i, v in enumerate(self.silu)])
        await FallingEdge(dut.clk)
        dut.ntok.value, dut.dwords.value, dut.fwords.value = self.ntok, self.dw, self.fw
        dut.xm.value = pack(ArrayOf(16, T, index="token"), [int(v) for v in self.xm])
        dut.xe.value = pack(ArrayOf(8, T, index="token"), [int(v) for v in self.xe])
        dut.hid_m.value, dut.hid_e.value = self.hid_m, self.hid_e
        dut.clear.value = 1
        await FallingEdge(dut.clk)
        dut.clear.value = 0
        self.o = {}

    async def new_expert(self):
        """A token list, gate weights, multipliers (gate F, up F, down d) and accumulators."""
        dut, rng, W, T = self.dut, self.rng, self.W, self.T
        shared = rng.random() < 0.2
        n = self.ntok if shared else rng.randint(1, self.ntok)
        self.toks = list(range(self.ntok)) if shared else sorted(rng.sample(range(self.ntok), n))
        self.w = {t: (1 << GATE_FRAC) if shared else rng.randint(0, 1 << GATE_FRAC) for t in self.toks}
        F, D = self.fw * W, self.dw * W
        self.gate_m, self.up_m, self.down_m = (self.np.integers(1 << 14, 1 << 15, k) for k in (F, F, D))
        self.gate_e, self.up_e, self.down_e = (self.np.integers(14, 23, F), self.np.integers(6, 15, F),
                                               self.np.integers(10, 31, D))
        m_all = np.concatenate([self.gate_m, self.up_m, self.down_m])
        e_all = np.concatenate([self.gate_e, self.up_e, self.down_e])
        # the bank: gate words 0.., up words fwords.., down words 2 fwords.. (of the group's sizes)
        await self.write_mults(m_all, e_all)
        dut.tlist.value = pack(token_list_layout(T), self.toks + [0] * (T - n)) if T > 1 else 0
        dut.nact.value = n
        dut.weights.value = pack(ArrayOf(GATE_FRAC + 1, T, index="token"),
                                 [self.w.get(t, rng.randint(0, 1 << GATE_FRAC)) for t in range(T)])
        self.ga = self.np.integers(-(1 << 20), 1 << 20, (T, self.fw, W))
        self.ua = self.np.integers(-(1 << 20), 1 << 20, (T, self.fw, W))
        self.da = self.np.integers(-(1 << 24), 1 << 24, (T, self.dw, W))
        for name in ("ga", "ua", "da"):
            await self.write_buffer(name, getattr(self, name))

    async def run_job(self, op, order=1, y_addr=0, words=None, tag=""):
        """One job; returns its Status (checks the latency when ``words`` is given)."""
        await self.job.send([pack(self.job_l, {"op": op, "order": order, "y_addr": y_addr})], self.cycle)
        beats = await self.done.recv(1, self.cycle)
        status = Status(int(beats[0]))
        if words is not None:
            lat = self.done.transfer_cycles[-1] - self.job.transfer_cycles[-1] - words
            want = self.latency.setdefault(op, lat)
            assert lat == want, f"{tag}: {op.name} took {words} words + {lat} cycles, another job {want}"
        self.seen.add(status)
        return status

    async def swiglu(self, tag, check_latency):
        h_before = await self.read_buffer("h", self.fw) if self.rng.random() < 0.5 else None
        words = len(self.toks) * self.fw if check_latency else None
        st = await self.run_job(VecOp.SWIGLU, words=words, tag=tag)
        assert st == Status.NONE, f"{tag}: SWIGLU ended with {st.name}"
        got = await self.read_buffer("h", self.fw)
        layer = SimpleNamespace(silu=self.silu, hid_m=self.hid_m, hid_e=self.hid_e)
        e = SimpleNamespace(gate_m=self.gate_m, gate_e=self.gate_e, up_m=self.up_m, up_e=self.up_e)
        tk = self.toks
        W = self.W
        want = swiglu(layer, e, self.ga[tk].reshape(len(tk), -1), self.ua[tk].reshape(len(tk), -1),
                      self.xm[tk], self.xe[tk]).reshape(len(tk), self.fw, W)
        for i, t in enumerate(tk):
            if not np.array_equal(got[t], want[i]):
                bad = np.argwhere(got[t] != want[i])[:3].tolist()
                raise AssertionError(f"{tag}: h of token {t} differs from int_moe.swiglu at (word, elem) {bad}")
        if h_before is not None:
            for t in range(self.T):
                if t not in tk:
                    assert np.array_equal(got[t], h_before[t]), f"{tag}: SWIGLU wrote token {t}, not in its list"
        return got

    async def combine(self, tag, check_latency):
        words = len(self.toks) * self.dw if check_latency else None
        st = await self.run_job(VecOp.COMBINE, words=words, tag=tag)
        assert st == Status.NONE, f"{tag}: COMBINE ended with {st.name}"
        e = SimpleNamespace(down_m=self.down_m, down_e=self.down_e)
        tk = self.toks
        y = expert_output(e, self.da[tk].reshape(len(tk), -1))
        terms = combine(y, [self.w[t] for t in tk])
        for i, t in enumerate(tk):
            self.o[t] = self.o.get(t, 0) + terms[i].reshape(self.dw, self.W)
        got = await self.read_buffer("o", self.dw)
        for t, want in self.o.items():
            if not np.array_equal(got[t], want):
                bad = np.argwhere(got[t] != want)[:3].tolist()
                raise AssertionError(f"{tag}: o of token {t} differs from the golden sum at (word, elem) {bad}")

    async def storey(self, tag, check_latency):
        c, W = self.config, self.W
        n_lines = self.ntok * self.dw * 4
        y_addr = self.rng.randint(0, (c.offchip.lines - n_lines) // self.r_off)
        reqs, lines = [], []
        ack = []

        def on_req(beat, cycle):
            reqs.append(unpack(self.req_l, beat))

        def on_line(beat, cycle):
            ln = unpack(self.line_l, beat)
            lines.append((int(ln.data), int(ln.last)))
            if len(lines) == n_lines:
                ack.append(cocotb.start_soon(self._ack()))
        tasks = [cocotb.start_soon(self.wr_req.serve(on_req)), cocotb.start_soon(self.wr_data.serve(on_line))]
        words = n_lines if check_latency else None          # four off-chip lines per word
        st = await self.run_job(VecOp.STOREY, y_addr=y_addr, words=words, tag=tag)
        assert st == Status.NONE, f"{tag}: STOREY ended with {st.name}"
        assert ack and ack[0].done(), f"{tag}: STOREY done before the write was acknowledged"
        for s in (self.wr_req, self.wr_data):
            s.stop()
        for t_ in tasks:
            await t_
        assert len(reqs) == 1, f"{tag}: {len(reqs)} write requests"
        assert (int(reqs[0].base), int(reqs[0].length)) == (y_addr * self.r_off, n_lines), \
            f"{tag}: write request ({int(reqs[0].base)}, {int(reqs[0].length)}), expected ({y_addr * self.r_off}, {n_lines})"
        lb = c.offchip.width
        want = []
        for t in range(self.ntok):
            sums = sat(self.o.get(t, np.zeros((self.dw, W), np.int64)), OUT_BITS)
            for a in range(self.dw):
                word = 0
                for i in range(W):
                    word |= (int(sums[a, i]) & 0xFFFFFFFF) << (32 * i)
                want += [(word >> (lb * k)) & ((1 << lb) - 1) for k in range(4)]
        got = [data for data, _ in lines]
        assert len(got) == n_lines, f"{tag}: {len(got)} lines written, expected {n_lines}"
        if got != want:
            i = next(i for i in range(n_lines) if got[i] != want[i])
            raise AssertionError(f"{tag}: Y line {i} (token {i // (4 * self.dw)}) is {got[i]:#x}, expected {want[i]:#x}")
        assert [last for _, last in lines] == [0] * (n_lines - 1) + [1], f"{tag}: `last` not on the final line only"

    async def _ack(self):
        await ClockCycles(self.dut.clk, self.rng.randint(1, 12) if self.job.idle else 1)
        await self.wr_done.send([0])

    async def errors(self, tag):
        """ORDER for each op with ``order`` 0; ADDRESS for a STOREY past the off-chip space: no
        write request, no buffer written."""
        c = self.config
        o_before = await self.read_buffer("o", self.dw)
        h_before = await self.read_buffer("h", self.fw)
        reqs = []
        task = cocotb.start_soon(self.wr_req.serve(lambda beat, cycle: reqs.append(beat)))
        for op in (VecOp.SWIGLU, VecOp.COMBINE, VecOp.STOREY):
            st = await self.run_job(op, order=0, y_addr=self.rng.randrange(1 << self.y_bits))
            assert st == Status.ORDER, f"{tag}: {op.name} with order 0 ended with {st.name}"
        n_lines = self.ntok * self.dw * 4
        first_bad = -(-(c.offchip.lines - n_lines + 1) // self.r_off)
        if first_bad < 1 << self.y_bits:
            st = await self.run_job(VecOp.STOREY, y_addr=self.rng.randint(first_bad, (1 << self.y_bits) - 1))
            assert st == Status.ADDRESS, f"{tag}: STOREY past the off-chip space ended with {st.name}"
            # the last Y block that fits is accepted (checked by a full STOREY elsewhere)
        self.wr_req.stop()
        await task
        assert not reqs, f"{tag}: a write request on a job that failed"
        assert np.array_equal(await self.read_buffer("o", self.dw), o_before), f"{tag}: a failed job wrote o"
        assert np.array_equal(await self.read_buffer("h", self.fw), h_before), f"{tag}: a failed job wrote h"


async def _run(dut, *, idle, stall, check_latency):
    cfg = bench_config()
    cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns").start())
    quick = cfg.get("quick")
    for seed in cfg.get("seeds", [1]):
        tb = TB(dut, cfg, seed, idle=idle, stall=stall)
        await tb.reset()
        for r in range(2 if quick else 4):
            await tb.new_group(quick)
            if r == 0 and tb.rng.random() < 0.5:
                await tb.storey(f"seed {seed} round {r} STOREY before any COMBINE", check_latency)
            for x in range(2 if quick else 3):
                tag = f"seed {seed} round {r} expert {x} (ntok {tb.ntok}, d/W {tb.dw}, F/W {tb.fw})"
                await tb.new_expert()
                await tb.swiglu(tag, check_latency)
                await tb.combine(tag, check_latency)
            await tb.storey(f"seed {seed} round {r}", check_latency)
            if r == 0:
                await tb.errors(f"seed {seed} round {r}")
        assert tb.seen == {Status.NONE, Status.ORDER, Status.ADDRESS}, f"seed {seed}: raised {tb.seen}"
        if check_latency:
            dut._log.info("latency beyond the words: " + ", ".join(f"{op.name} {v}" for op, v in tb.latency.items()))


@cocotb.test()
async def test_random_stalls(dut):
    """Random groups and experts with random idle cycles and stalls on every stream, bit-exact."""
    cfg = bench_config()
    await _run(dut, idle=cfg.get("idle", 0.3), stall=cfg.get("stall", 0.3), check_latency=False)


@cocotb.test()
async def test_latency(dut):
    """Without stalls: each step takes its words plus one constant per step."""
    await _run(dut, idle=0.0, stall=0.0, check_latency=True)
