"""cocotb bench of the core's expert context (top ``exec_context``: ``hw/executor/context.py``).

Configuration (``bench_config()``): the top's ``params`` (``preset``, ``max_k``), ``seeds``,
``quick`` (fewer rounds), ``idle`` (probability of an idle cycle before each ``route`` and
``build`` beat) and ``stall`` (probability of a not-ready cycle on ``built``).

Per round the bench writes a random routing table (every token: 0..max_k distinct experts with
random gate weights, tokens in random order) through ``route``, sets ``ntok`` and asks for the
context of random experts (some chosen by no token, some shared) through ``build``. A Python
model of the unit's protocol gives, after each ``built``: the token list (tokens in group order
that chose the expert, every token for a shared one), their gate weights (``1 << GATE_FRAC`` for a
shared expert), the count and the largest weight; the bench compares them bit for bit. The
no-stall test also checks the latency: ``built`` comes ``ntok + 1`` cycles after ``build``.
"""

import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly, RisingEdge

from ...hw.core import core_config
from ...hw.executor.buffers import Dims
from ...hw.executor.context import build_layout, route_layout
from ...hw.executor.ports import token_list_layout
from ...hw.layouts import ArrayOf
from ...spec.numerics import GATE_FRAC
from .runner import bench_config
from .streams import StreamSink, StreamSource, cycle_counter, pack, unpack

PERIOD_NS = 10


class TB:
    def __init__(self, dut, cfg, seed, *, idle, stall):
        self.dut = dut
        p = cfg["params"]
        c = core_config(p["preset"])
        self.d = d = Dims(c, p["max_k"])
        self.T, self.K, self.E = d.tokens, d.slots, d.n_experts
        self.rng = random.Random(seed)
        self.route_l, self.build_l = route_layout(d), build_layout(c.cache.expert_bits + 1)
        self.tlist_l = token_list_layout(self.T)
        self.weights_l = ArrayOf(GATE_FRAC + 1, self.T, index="token")
        self.cycle = cycle_counter(PERIOD_NS)
        clk = dut.clk
        self.route = StreamSource(dut, "route", clk, idle=idle, rng=random.Random(seed * 5 + 1))
        self.build = StreamSource(dut, "build", clk, idle=idle, rng=random.Random(seed * 5 + 2))
        self.built = StreamSink(dut, "built", clk, stall=stall, rng=random.Random(seed * 5 + 3))
        self.table = {t: ([], []) for t in range(self.T)}

    async def reset(self):
        for s in (self.route, self.build):
            s.reset()
        self.built.reset()
        self.dut.ntok.value = 0
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 3)
        self.dut.rst.value = 0
        await RisingEdge(self.dut.clk)

    async def write_table(self):
        beats = []
        for t in self.rng.sample(range(self.T), self.T):
            count = self.rng.randint(0, self.K)
            experts = self.rng.sample(range(self.E), count)
            weights = [self.rng.randint(0, 1 << GATE_FRAC) for _ in range(count)]
            self.table[t] = (experts, weights)
            pad = self.K - count        # slots past count carry garbage: the unit must ignore them
            beats.append(pack(self.route_l, {
                "token": t, "count": count,
                "expert": experts + [self.rng.randrange(self.E) for _ in range(pad)],
                "weight": weights + [self.rng.randint(0, 1 << GATE_FRAC) for _ in range(pad)]}))
        await self.route.send(beats)

    def model(self, expert, shared, ntok):
        toks, w = [], {}
        for t in range(ntok):
            experts, weights = self.table[t]
            if shared:
                toks.append(t)
                w[t] = 1 << GATE_FRAC
            elif expert in experts:
                toks.append(t)
                w[t] = weights[experts.index(expert)]
        return toks, w, max(w.values(), default=0)

    async def one_build(self, expert, shared, ntok, tag, check_latency=False):
        await self.build.send([pack(self.build_l, {"expert": expert, "shared": int(shared)})], self.cycle)
        await self.built.recv(1, self.cycle)
        if check_latency:
            lat = self.built.transfer_cycles[-1] - self.build.transfer_cycles[-1]
            assert lat == ntok + 1, f"{tag}: built {lat} cycles after build, expected ntok + 1 = {ntok + 1}"
        await ReadOnly()
        dut = self.dut
        nact, maxw = int(dut.nact.value), int(dut.maxw.value)
        tl, ws = unpack(self.tlist_l, int(dut.tlist.value)), unpack(self.weights_l, int(dut.weights.value))
        toks, w, mx = self.model(expert, shared, ntok)
        got = [int(tl[i]) for i in range(nact)] if self.T > 1 else [0] * nact
        assert nact == len(toks) and got == toks, f"{tag}: token list {got}, expected {toks}"
        gw = {t: int(ws[t]) for t in toks}
        assert gw == w, f"{tag}: gate weights {gw}, expected {w}"
        assert maxw == mx, f"{tag}: largest weight {maxw}, expected {mx}"
        await FallingEdge(dut.clk)

    async def rounds(self, n, check_latency=False):
        for r in range(n):
            await self.write_table()
            ntok = self.rng.randint(1, self.T)
            await FallingEdge(self.dut.clk)
            self.dut.ntok.value = ntok
            chosen = sorted({e for ex, _ in self.table.values() for e in ex})
            for b in range(6):
                shared = self.rng.random() < 0.2
                expert = self.rng.choice(chosen) if chosen and self.rng.random() < 0.8 else self.rng.randrange(self.E)
                await self.one_build(expert, shared, ntok, f"round {r} build {b} (expert {expert}, shared "
                                                           f"{shared}, ntok {ntok})", check_latency)


async def _run(dut, *, idle, stall, check_latency):
    cfg = bench_config()
    cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns").start())
    for seed in cfg.get("seeds", [1]):
        tb = TB(dut, cfg, seed, idle=idle, stall=stall)
        await tb.reset()
        await tb.rounds(3 if cfg.get("quick") else 8, check_latency)


@cocotb.test()
async def test_random_stalls(dut):
    """Random tables and builds with random idle cycles and stalls on every stream."""
    cfg = bench_config()
    await _run(dut, idle=cfg.get("idle", 0.3), stall=cfg.get("stall", 0.3), check_latency=False)


@cocotb.test()
async def test_latency(dut):
    """Without stalls: ``built`` exactly ``ntok + 1`` cycles after ``build`` (the cycle model's)."""
    await _run(dut, idle=0.0, stall=0.0, check_latency=True)
