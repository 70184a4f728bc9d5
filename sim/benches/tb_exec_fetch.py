"""cocotb bench of the core's fetch unit (top ``exec_fetch``: ``hw/executor/fetch.py``).

Configuration (``bench_config()``): the top's ``params`` (``preset``), ``seeds``, ``quick`` (fewer
jobs), ``idle`` (probability of an idle cycle before each beat the bench drives: jobs, cache and
probe responses) and ``stall`` (probability of a not-ready cycle on every stream the unit
drives: ``done``, ``cache_req``, ``probe_req``).

Random FETCH jobs (plane MSB or LSB, PEEK or LOOKUP, random registers, some planes past the
off-chip space, some HB slots past the HB space) with random cache and probe responses, and
random ``forget`` pulses between them. A Python model of the command (``sim/machine/iss.py``'s
FETCH as the core runs it: plane address in off-chip lines, the cache key, the score from the
largest gate weight, the slot's HB lines) gives, per job, the request it must send (a LOOKUP on
``cache_req`` with its key and score, a PEEK's key on ``probe_req``, none for a refused job), its
Status (NONE; RANGE for an LSB LOOKUP; ADDRESS for a plane past the off-chip space or a slot past
the HB space) and the ``planes`` it leaves (valid, hb, fill, first off-chip and HB lines of each
plane); the bench compares them bit for bit and checks that every Status is raised.
"""

import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly, RisingEdge

from ...hw.core import core_config
from ...hw.executor.fetch import probe_resp_layout
from ...hw.executor.ports import fetch_job_layout, planes_layout
from ...hw.expert_cache import OpCode, key_layout, request_layout, response_layout
from ...spec.isa import Status, Update
from ...spec.numerics import GATE_FRAC
from .runner import bench_config
from .streams import StreamSink, StreamSource, cycle_counter, pack, unpack

PERIOD_NS = 10


class TB:
    def __init__(self, dut, cfg, seed, *, idle, stall):
        self.dut = dut
        p = cfg["params"]
        self.config = c = core_config(p["preset"])
        self.rng = random.Random(seed)
        self.cycle = cycle_counter(PERIOD_NS)
        W, L = c.vector.width, c.line_bytes
        self.r_off, self.r_hb = L // W, L // (c.hb.channels * c.hb.width // 8)
        self.job_l, self.planes_l = fetch_job_layout(c), planes_layout(c)
        self.creq_l, self.cresp_l = request_layout(c.cache), response_layout(c.cache)
        self.key_l, self.presp_l = key_layout(c.cache), probe_resp_layout(c.cache)
        r = lambda k: random.Random(seed * 47 + k)
        clk = dut.clk
        self.job = StreamSource(dut, "job", clk, idle=idle, rng=r(1))
        self.cresp = StreamSource(dut, "cache_resp", clk, idle=idle, rng=r(2))
        self.presp = StreamSource(dut, "probe_resp", clk, idle=idle, rng=r(3))
        self.done = StreamSink(dut, "done", clk, stall=stall, rng=r(4))
        self.creq = StreamSink(dut, "cache_req", clk, stall=stall, rng=r(5))
        self.preq = StreamSink(dut, "probe_req", clk, stall=stall, rng=r(6))
        self.model = dict(valid=[0, 0], hb=[0, 0], fill=0, off=[0, 0], hbase=[0, 0])
        self.seen = set()

    async def reset(self):
        dut = self.dut
        await FallingEdge(dut.clk)
        for s in (self.job, self.cresp, self.presp):
            s.reset()
        for s in (self.done, self.creq, self.preq):
            s.reset()
        dut.forget.value = 0
        dut.rst.value = 1
        await ClockCycles(dut.clk, 3)
        dut.rst.value = 0
        await RisingEdge(dut.clk)

    async def forget(self):
        await FallingEdge(self.dut.clk)
        self.dut.forget.value = 1
        await FallingEdge(self.dut.clk)
        self.dut.forget.value = 0
        self.model.update(valid=[0, 0], hb=[0, 0], fill=0)

    def make_job(self):
        rng, c = self.rng, self.config
        plane_lines = rng.randint(1, 1 << 10)
        job = dict(plane=rng.randint(0, 1), update=rng.choice([Update.PEEK, Update.LOOKUP]),
                   expert=rng.randrange(1 << (c.cache.expert_bits + 1)), maxw=rng.randint(0, 1 << GATE_FRAC),
                   layer=rng.randrange(1 << c.cache.layer_bits), e_stride=rng.randint(1, 3 * plane_lines),
                   plane_lines=plane_lines)
        top = c.offchip.lines // self.r_off
        room = top - (job["expert"] * job["e_stride"] + (job["plane"] + 1) * plane_lines)
        job["e_addr"] = rng.randint(0, max(0, room)) if rng.random() < 0.85 else max(0, room) + rng.randint(1, 50)
        hb_top = c.hb.lines // self.r_hb
        slots = 1 << c.cache.slot_bits
        job["hb_base"] = (rng.randint(0, max(0, hb_top - slots * plane_lines)) if rng.random() < 0.7
                          else rng.randint(max(0, hb_top - plane_lines), hb_top))
        return job

    async def run_job(self, job, tag):
        rng, c, md = self.rng, self.config, self.model
        p, lookup = job["plane"], job["update"] == Update.LOOKUP
        base = (job["e_addr"] + job["expert"] * job["e_stride"] + p * job["plane_lines"]) * self.r_off
        if p and lookup:
            expect, kind = Status.RANGE, None
        elif base + job["plane_lines"] * self.r_off > c.offchip.lines:
            expect, kind = Status.ADDRESS, None
        else:
            expect, kind = None, "cache" if lookup else "probe"
        key = dict(layer=job["layer"] & ((1 << c.cache.layer_bits) - 1),
                   expert=job["expert"] & ((1 << c.cache.expert_bits) - 1), plane=p)
        sb = c.cache.score_bits
        score = min(job["maxw"] >> max(GATE_FRAC - sb, 0), (1 << sb) - 1)
        resp = dict(hit=rng.randint(0, 1), fill=rng.randint(0, 1), slot=rng.randrange(1 << c.cache.slot_bits))
        if kind == "probe":
            resp["fill"] = 0
        got = []

        def on_creq(beat, cycle):
            r = unpack(self.creq_l, beat)
            got.append("cache")
            assert kind == "cache", f"{tag}: a cache request, expected {kind}"
            k = {n: int(getattr(r.key, n)) for n in key}
            op = OpCode(r.op)
            assert (op, k, int(r.score)) == (OpCode.LOOKUP, key, score), \
                f"{tag}: cache request {op.name} {k} score {int(r.score)}, expected LOOKUP {key} score {score}"
            cocotb.start_soon(self.cresp.send([pack(self.cresp_l, dict(
                op=OpCode.LOOKUP, key=key, hit=resp["hit"], fill=resp["fill"], evict=0, bypass=0, slot=resp["slot"],
                victim=dict(layer=0, expert=0, plane=0)))]))

        def on_preq(beat, cycle):
            r = unpack(self.key_l, beat)
            got.append("probe")
            assert kind == "probe", f"{tag}: a probe, expected {kind}"
            k = {n: int(getattr(r, n)) for n in key}
            assert k == key, f"{tag}: probe {k}, expected {key}"
            cocotb.start_soon(self.presp.send([pack(self.presp_l, dict(key=key, hit=resp["hit"], slot=resp["slot"]))]))
        tasks = [cocotb.start_soon(self.creq.serve(on_creq)), cocotb.start_soon(self.preq.serve(on_preq))]
        await self.job.send([pack(self.job_l, job)])
        beats = await self.done.recv(1)
        for s in (self.creq, self.preq):
            s.stop()
        for t_ in tasks:
            await t_
        st = Status(int(beats[0]))
        assert got == ([kind] if kind else []), f"{tag}: requests {got}, expected {kind}"
        if kind:
            md["off"][p] = base & ((1 << (c.offchip.addr_bits + 2)) - 1)
            if kind == "cache":
                md["hb"][0], md["fill"] = resp["hit"], resp["fill"]
            else:
                md["hb"][p] = resp["hit"]
                if p == 0:
                    md["fill"] = 0
            hbase = (job["hb_base"] + resp["slot"] * job["plane_lines"]) * self.r_hb
            uses_hb = (md["hb"][0] or md["fill"]) if p == 0 else md["hb"][1]
            if uses_hb and hbase + job["plane_lines"] * self.r_hb > c.hb.lines:
                expect = Status.ADDRESS
            else:
                expect = Status.NONE
                md["valid"][p], md["hbase"][p] = 1, hbase & ((1 << (c.hb.addr_bits + 2)) - 1)
        assert st == expect, f"{tag}: ended with {st.name}, expected {expect.name}"
        self.seen.add(st)
        await ReadOnly()
        pl = unpack(self.planes_l, int(self.dut.planes.value))
        have = dict(valid=[(int(pl.valid) >> i) & 1 for i in range(2)], hb=[(int(pl.hb) >> i) & 1 for i in range(2)],
                    fill=int(pl.fill), off=[int(pl.off[i]) for i in range(2)], hbase=[int(pl.hbase[i]) for i in range(2)])
        assert have == md, f"{tag}: planes {have}, expected {md}"
        await FallingEdge(self.dut.clk)


async def _run(dut, *, idle, stall):
    cfg = bench_config()
    cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns").start())
    for seed in cfg.get("seeds", [1]):
        tb = TB(dut, cfg, seed, idle=idle, stall=stall)
        await tb.reset()
        for i in range(60 if cfg.get("quick") else 200):
            if tb.rng.random() < 0.15:
                await tb.forget()
            job = tb.make_job()
            await tb.run_job(job, f"seed {seed} job {i} {job}")
        missing = {Status.NONE, Status.RANGE, Status.ADDRESS} - tb.seen
        assert not missing, f"seed {seed}: never raised {sorted(s.name for s in missing)}"


@cocotb.test()
async def test_random_stalls(dut):
    """Random FETCH jobs and responses with random idle cycles and stalls on every stream."""
    cfg = bench_config()
    await _run(dut, idle=cfg.get("idle", 0.3), stall=cfg.get("stall", 0.3))


@cocotb.test()
async def test_no_stalls(dut):
    """The same without idle cycles or stalls."""
    await _run(dut, idle=0.0, stall=0.0)
