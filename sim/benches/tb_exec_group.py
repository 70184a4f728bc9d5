"""cocotb bench of the core's group loads (top ``exec_group``: ``hw/executor/group.py``, LOADX and
LOADP, with the ``x`` buffer).

Configuration (``bench_config()``): the top's ``params`` (``preset``), ``seeds``, ``quick`` (fewer
jobs), ``idle`` (probability of an idle cycle before each beat the bench drives: jobs, lines)
and ``stall`` (probability of a not-ready cycle on every stream the unit drives: ``done``,
``rd.req``, ``table``).

The bench keeps an off-chip memory model (lines of W bytes, byte 0 at the least significant
bits; lines never written hold random bytes) and lays each job's sections out with
``elmoe3d/spec/image.py`` (the X block's rows and ``token_scale_offset``, the constants block's
``constants_block`` with router planes of ``tiled_bytes``, the ``SCALARS`` and ``TOKEN_SCALE``
records, the SiLU table), independently of the unit's address arithmetic. Random jobs, valid or
mutated toward every Status:

- LOADX: random ``tokens``, ``d_model``, ``d_ffn`` and ``X_ADDR`` (the last address that fits
  too): ``x`` (every token's words, read back through ``x_rd``), ``xm``/``xe`` of the listed
  tokens, ``ntok``, ``dwords``, ``fwords``, ``sec_lines`` (the up projection's offset in a plane,
  ``plane_sections``) and ``x_ok``; a -128, a scale exponent of 0 or 49 or a mantissa of 2**15 on
  a listed token give INPUT (``x_ok`` 0), the same past the listed tokens nothing; sizes out of
  range RANGE and the first address past the space ADDRESS, with no request and no ``started``;
- LOADP: random ``n_experts``, ``d_model``, ``P_ADDR``: the scalars, ``router_lines``, ``p_ok``
  and the SiLU table's 256 entries in order on ``table``; ``router_e`` or ``hid_e`` of 0 gives
  INPUT, shapes out of range RANGE, the first address past the space ADDRESS (no request, no
  table entry).

Every request is checked against the section it must read; ``done`` comes once per job with its
Status; every Status the unit raises (NONE, RANGE, ADDRESS, INPUT) is raised.
"""

import random
from collections import deque

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly, RisingEdge

from ...hw.core import core_config
from ...hw.executor.buffers import Dims
from ...hw.executor.ports import GroupOp, group_job_layout
from ...hw.layouts import ArrayOf
from ...hw.protocols import line_layout, request_layout
from ...hw.vector_common import SILU_WRITE
from ...spec.image import (SCALARS, SILU_BYTES, TOKEN_SCALE, ceil_div, constants_block, plane_sections, tiled_bytes,
                           token_scale_offset)
from ...spec.isa import Status, field_widths
from ...spec.numerics import MANT_BITS, SILU_ENTRIES, XE_MAX
from .runner import bench_config
from .streams import StreamSink, StreamSource, cycle_counter, pack, unpack

PERIOD_NS = 10


class TB:
    def __init__(self, dut, cfg, seed, *, idle, stall):
        self.dut = dut
        p = cfg["params"]
        self.config = c = core_config(p["preset"])
        self.d = d = Dims(c, 8)
        self.W, self.T, self.G = d.W, d.tokens, c.buffers.tokens
        self.L = c.line_bytes
        self.r_off = self.L // self.W
        self.off_lines = c.offchip.lines
        self.seed = seed
        self.rng = random.Random(seed)
        self.cycle = cycle_counter(PERIOD_NS)
        self.vw = field_widths(c)["value"]
        self.job_l = group_job_layout(self.vw)
        self.req_l = request_layout(c.offchip.addr_bits, c.offchip.len_bits)
        self.line_l = line_layout(c.offchip.width)
        r = lambda k: random.Random(seed * 43 + k)
        clk = dut.clk
        self.job = StreamSource(dut, "job", clk, idle=idle, rng=r(1))
        self.data = StreamSource(dut, "rd__data", clk, idle=idle, rng=r(2))
        self.done = StreamSink(dut, "done", clk, stall=stall, rng=r(3))
        self.req = StreamSink(dut, "rd__req", clk, stall=stall, rng=r(4))
        self.table = StreamSink(dut, "table", clk, stall=stall, rng=r(5))
        self.mem = {}
        self.queue = deque()
        self.seen = set()
        self.x_ok = self.p_ok = 0

    async def reset(self):
        dut = self.dut
        await FallingEdge(dut.clk)
        for s in (self.job, self.data):
            s.reset()
        for s in (self.done, self.req, self.table):
            s.reset()
        dut.x_rd__ren.value = 0
        dut.rst.value = 1
        await ClockCycles(dut.clk, 3)
        dut.rst.value = 0
        await RisingEdge(dut.clk)
        self.server = cocotb.start_soon(self.data.serve(lambda cycle: self.queue.popleft() if self.queue else None))

    # -- the memory model ---------------------------------------------------------------------
    def line(self, i):
        if i not in self.mem:
            self.mem[i] = random.Random(i * 7919 + self.seed).getrandbits(8 * self.W)
        return self.mem[i]

    def write_bytes(self, at, values):
        """Bytes ``values`` (uint8) from byte ``at`` of the off-chip space."""
        W = self.W
        for k, v in enumerate(np.asarray(values, np.uint8).reshape(-1)):
            b = at + k
            ln = self.line(b // W)
            sh = 8 * (b % W)
            self.mem[b // W] = (ln & ~(0xFF << sh)) | (int(v) << sh)

    async def read_x(self, ntok, words):
        dut = self.dut
        word_l = self.d.word("x")
        out = np.zeros((ntok, words, self.W), np.int64)
        for a in range(words):
            await FallingEdge(dut.clk)
            dut.x_rd__raddr.value, dut.x_rd__ren.value = a, 1
            await FallingEdge(dut.clk)
            dut.x_rd__ren.value = 0
            await ReadOnly()
            for t in range(ntok):
                v = unpack(word_l, int(getattr(dut, f"x_rd__rdata__{t}").value))
                out[t, a] = [int(v[i]) for i in range(self.W)]
        return out

    # -- one job ----------------------------------------------------------------------------------
    async def run(self, payload, sections, tag):
        """Send one job; serve its requests (each must be the next of ``sections``, ``(base,
        length)`` in off-chip lines); returns (Status, requests served, table entries, started)."""
        reqs, entries, started = [], [], []
        watching = [True]

        def on_req(beat, cycle):
            r = unpack(self.req_l, beat)
            got = (int(r.base), int(r.length))
            assert len(reqs) < len(sections), f"{tag}: an unexpected request {got}"
            assert got == sections[len(reqs)], f"{tag}: request {len(reqs)} is {got}, expected {sections[len(reqs)]}"
            reqs.append(got)
            for i in range(got[1]):
                self.queue.append(pack(self.line_l, {"data": self.line(got[0] + i), "last": int(i == got[1] - 1)}))

        def on_entry(beat, cycle):
            e = unpack(SILU_WRITE, beat)
            entries.append((int(e.index), int(e.value)))

        async def watch():
            while watching[0]:
                await RisingEdge(self.dut.clk)
                await ReadOnly()
                if int(self.dut.started.value):
                    started.append(1)
                await FallingEdge(self.dut.clk)
        tasks = [cocotb.start_soon(self.req.serve(on_req)), cocotb.start_soon(self.table.serve(on_entry)),
                 cocotb.start_soon(watch())]
        await self.job.send([pack(self.job_l, payload)], self.cycle)
        beats = await self.done.recv(1, self.cycle)
        for s in (self.req, self.table):
            s.stop()
        watching[0] = False
        for t_ in tasks:
            await t_
        assert not self.queue, f"{tag}: lines left untaken"
        st = Status(int(beats[0]))
        self.seen.add(st)
        return st, reqs, entries, len(started)

    async def loadx(self, quick, tag, kind):
        rng, W, T, G, L = self.rng, self.W, self.T, self.G, self.L
        c = self.config
        n = rng.randint(1, T)
        d = W * rng.randint(1, min(self.d.d_words, 3 if quick else 6))
        f = W * rng.randint(1, min(self.d.f_words, 3 if quick else 6))
        tso = token_scale_offset(G, d, L)
        scale_lines = ceil_div(n * TOKEN_SCALE.size, W)
        last_good = (self.off_lines - scale_lines - tso // W) // self.r_off
        x_addr = last_good if kind == "last" else rng.randrange(0, 4000)
        x = np.array([[rng.randint(-127, 127) for _ in range(d)] for _ in range(G)], np.int64)
        xm = np.array([rng.randrange(1 << (MANT_BITS - 1), 1 << MANT_BITS) for _ in range(G)])
        xe = np.array([rng.randint(1, XE_MAX) for _ in range(G)])
        expect = Status.NONE
        if kind == "neg128":
            x[rng.randrange(n), rng.randrange(d)] = -128
            expect = Status.INPUT
        elif kind == "scale":
            t = rng.randrange(n)
            what = rng.choice(["xe0", "xe49", "xm"])
            if what == "xm":
                xm[t] = 1 << MANT_BITS
            else:
                xe[t] = 0 if what == "xe0" else XE_MAX + 1
            expect = Status.INPUT
        elif kind == "past" and n < G:
            # bad values past the listed tokens (the last scale line's spare entries) are ignored
            t = rng.randrange(n, G)
            x[t, rng.randrange(d)] = -128
            xe[t] = 0
        tokens, d_model, d_ffn = n, d, f
        if kind == "range":
            what = rng.choice(["t0", "tbig", "d0", "dodd", "dbig", "f0", "fodd", "fbig"])
            tokens = {"t0": 0, "tbig": T + 1 + rng.randrange(100)}.get(what, n)
            d_model = {"d0": 0, "dodd": d + rng.randint(1, W - 1), "dbig": c.buffers.d_max + W}.get(what, d)
            d_ffn = {"f0": 0, "fodd": f + rng.randint(1, W - 1), "fbig": c.buffers.f_max + W}.get(what, f)
            expect = Status.RANGE
        elif kind == "address":
            x_addr = last_good + 1
            expect = Status.ADDRESS
        x_addr = min(x_addr, (1 << self.vw) - 1)
        base = x_addr * L
        self.write_bytes(base, x.astype(np.int8).view(np.uint8))
        self.write_bytes(base + tso, TOKEN_SCALE.encode(xm=np.minimum(xm, 0xFFFF), xe=xe))
        payload = dict(op=GroupOp.LOADX, tokens=tokens, d_model=d_model, d_ffn=d_ffn,
                       n_experts=rng.randrange(1 << self.vw), addr=x_addr)
        sections = [(x_addr * self.r_off, n * d // W), ((base + tso) // W, scale_lines)]
        tag = f"{tag} LOADX {kind} (tokens {tokens}, d {d_model}, f {d_ffn}, X_ADDR {x_addr})"
        st, reqs, entries, started = await self.run(payload, sections if expect in (Status.NONE, Status.INPUT) else [],
                                                    tag)
        assert st == expect, f"{tag}: ended with {st.name}, expected {expect.name}"
        assert not entries, f"{tag}: SiLU table entries from a LOADX"
        dut = self.dut
        await ReadOnly()
        if expect in (Status.RANGE, Status.ADDRESS):
            assert not reqs and not started, f"{tag}: a refused LOADX read or started a group"
            assert int(dut.x_ok.value) == self.x_ok, f"{tag}: a refused LOADX changed x_ok"
            await FallingEdge(dut.clk)
            return
        assert len(reqs) == 2 and started == 1, f"{tag}: {len(reqs)} requests, started {started} times"
        self.x_ok = int(expect == Status.NONE)
        assert int(dut.x_ok.value) == self.x_ok, f"{tag}: x_ok {int(dut.x_ok.value)}"
        sizes = (int(dut.ntok.value), int(dut.dwords.value), int(dut.fwords.value), int(dut.sec_lines.value))
        want = (n, d // W, f // W, plane_sections(W, W, d, f)[0]["up"][0] // L)
        assert sizes == want, f"{tag}: (ntok, dwords, fwords, sec_lines) {sizes}, expected {want}"
        gm = unpack(ArrayOf(16, T, index="token"), int(dut.xm.value))
        ge = unpack(ArrayOf(8, T, index="token"), int(dut.xe.value))
        got = [(int(gm[t]), int(ge[t])) for t in range(n)]
        assert got == [(int(xm[t]) & 0xFFFF, int(xe[t])) for t in range(n)], f"{tag}: token scales {got}"
        await FallingEdge(dut.clk)
        xs = await self.read_x(n, d // W)
        assert np.array_equal(xs.reshape(n, d), x[:n]), f"{tag}: x differs from the X block"

    async def loadp(self, quick, tag, kind):
        rng, W, L = self.rng, self.W, self.L
        c = self.config
        E = rng.randint(2, self.d.n_experts)
        d = W * rng.randint(1, min(self.d.d_words, 3 if quick else 6))
        router_lines = ceil_div(tiled_bytes(E, d, W, W), L)
        cb = constants_block(router_lines, L)
        last_good = (self.off_lines - SILU_BYTES // W) // self.r_off - cb["silu"]
        p_addr = last_good if kind == "last" else rng.randrange(0, 4000)
        sc = dict(router_m=rng.randrange(1 << 14, 1 << 15), router_e=rng.randint(1, 60),
                  hid_m=rng.randrange(1 << 14, 1 << 15), hid_e=rng.randint(1, 60))
        silu = [rng.randint(-(1 << 15), (1 << 15) - 1) for _ in range(SILU_ENTRIES)]
        expect = Status.NONE
        n_experts, d_model = E, d
        if kind == "input":
            sc[rng.choice(["router_e", "hid_e"])] = 0
            expect = Status.INPUT
        elif kind == "range":
            what = rng.choice(["e1", "ebig", "d0", "dodd", "dbig"])
            n_experts = {"e1": rng.randint(0, 1), "ebig": self.d.n_experts + 1}.get(what, E)
            d_model = {"d0": 0, "dodd": d + rng.randint(1, W - 1), "dbig": c.buffers.d_max + W}.get(what, d)
            expect = Status.RANGE
        elif kind == "address":
            p_addr = last_good + 1
            expect = Status.ADDRESS
        base = p_addr * L
        self.write_bytes(base + cb["scalars"] * L, SCALARS.encode(**sc))
        self.write_bytes(base + cb["silu"] * L, np.array(silu, "<i2").view(np.uint8))
        payload = dict(op=GroupOp.LOADP, tokens=rng.randrange(1 << self.vw), d_model=d_model,
                       d_ffn=rng.randrange(1 << self.vw), n_experts=n_experts, addr=p_addr)
        sections = [((base + cb["scalars"] * L) // W, ceil_div(SCALARS.size, W)),
                    ((base + cb["silu"] * L) // W, SILU_BYTES // W)]
        tag = f"{tag} LOADP {kind} (E {n_experts}, d {d_model}, P_ADDR {p_addr})"
        st, reqs, entries, started = await self.run(payload, sections if expect in (Status.NONE, Status.INPUT) else [],
                                                    tag)
        assert st == expect, f"{tag}: ended with {st.name}, expected {expect.name}"
        assert not started, f"{tag}: a LOADP started a group"
        dut = self.dut
        await ReadOnly()
        if expect in (Status.RANGE, Status.ADDRESS):
            assert not reqs and not entries, f"{tag}: a refused LOADP read or wrote the table"
            assert int(dut.p_ok.value) == self.p_ok, f"{tag}: a refused LOADP changed p_ok"
            await FallingEdge(dut.clk)
            return
        assert len(reqs) == 2, f"{tag}: {len(reqs)} requests"
        assert entries == list(enumerate(silu)), f"{tag}: SiLU table entries differ (first {entries[:3]})"
        self.p_ok = int(expect == Status.NONE)
        assert int(dut.p_ok.value) == self.p_ok, f"{tag}: p_ok {int(dut.p_ok.value)}"
        got = {k: int(getattr(dut, k).value) for k in sc}
        assert got == sc, f"{tag}: scalars {got}, expected {sc}"
        assert int(dut.router_lines.value) == router_lines, \
            f"{tag}: router_lines {int(dut.router_lines.value)}, expected {router_lines}"
        await FallingEdge(dut.clk)


async def _run(dut, *, idle, stall):
    cfg = bench_config()
    cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns").start())
    quick = cfg.get("quick")
    for seed in cfg.get("seeds", [1]):
        tb = TB(dut, cfg, seed, idle=idle, stall=stall)
        await tb.reset()
        n = 24 if quick else 60
        # every kind of job at least once (LOADX: ok, last address, -128, bad scale, bad values
        # past the listed tokens, RANGE, ADDRESS; LOADP: ok, last address, INPUT, RANGE,
        # ADDRESS), the rest drawn at random
        jobs = [("x", k) for k in ("ok", "last", "neg128", "scale", "past", "range", "address")]
        jobs += [("p", k) for k in ("ok", "last", "input", "range", "address")]
        while len(jobs) < n:
            jobs.append(("x", tb.rng.choice(["ok", "ok", "ok", "last", "neg128", "scale", "past", "range", "address"]))
                        if tb.rng.random() < 0.55 else
                        ("p", tb.rng.choice(["ok", "ok", "ok", "last", "input", "range", "address"])))
        tb.rng.shuffle(jobs)
        for i, (which, kind) in enumerate(jobs):
            if which == "x":
                await tb.loadx(quick, f"seed {seed} job {i}", kind)
            else:
                await tb.loadp(quick, f"seed {seed} job {i}", kind)
        tb.data.stop()
        await tb.server
        missing = {Status.NONE, Status.RANGE, Status.ADDRESS, Status.INPUT} - tb.seen
        assert not missing, f"seed {seed}: never raised {sorted(s.name for s in missing)}"


@cocotb.test()
async def test_random_stalls(dut):
    """Random LOADX and LOADP jobs, valid and mutated, with random idle cycles and stalls."""
    cfg = bench_config()
    await _run(dut, idle=cfg.get("idle", 0.3), stall=cfg.get("stall", 0.3))


@cocotb.test()
async def test_no_stalls(dut):
    """The same without idle cycles or stalls."""
    await _run(dut, idle=0.0, stall=0.0)
