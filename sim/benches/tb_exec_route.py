"""cocotb bench of the core's route unit (top ``exec_route``: ``hw/executor/route.py`` with the
router block and the ``da`` buffer).

Configuration (``bench_config()``): the top's ``params`` (``preset``, ``max_k``), ``seeds``,
``quick`` (fewer jobs), ``idle`` (probability of an idle cycle before each beat the bench drives:
jobs, probe responses, the GEMV's completion) and ``stall`` (probability of a not-ready cycle on
every stream the unit drives: ``done``, ``probe_req``, ``gemv``, ``route``).

Per job: random operands (tokens, words of d, router plane lines, token scales, router
multiplier), registers and ``k``, the cached choice or top-k, valid or mutated toward ORDER
(``order`` 0), RANGE (``k`` 0 or above ``min(TOP_K, N_EXPERTS, max_k)``) and ADDRESS (router planes
past the off-chip space). The bench answers every probe (expert ``n``'s MSB key, in order) with a
random hit, checks the router GEMV job field by field, writes random logits into ``da`` and then
completes the job after a random delay. It checks, bit for bit, each token's beat on ``route``
(in token order) against ``sim/golden/int_moe.py``'s ``select_experts`` (with the probed mask
for ``cached``) and ``gate_weights``, the expert ``mask`` (their union), one ``started`` and one
``routed`` pulse, the Status, and that a refused job probes, computes and routes nothing.
"""

import random
from types import SimpleNamespace

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly, RisingEdge

from ...hw.core import core_config
from ...hw.executor.buffers import Dims
from ...hw.executor.context import route_layout
from ...hw.executor.fetch import probe_resp_layout
from ...hw.executor.ports import Dest, gemv_job_layout, route_job_layout
from ...hw.expert_cache import key_layout
from ...hw.layouts import ArrayOf, Mode
from ...spec.isa import Status, field_widths
from ..golden.int_moe import gate_weights, select_experts
from .runner import bench_config
from .streams import StreamSink, StreamSource, cycle_counter, pack, unpack

PERIOD_NS = 10


class TB:
    def __init__(self, dut, cfg, seed, *, idle, stall):
        self.dut = dut
        p = cfg["params"]
        self.config = c = core_config(p["preset"])
        self.d = d = Dims(c, p["max_k"])
        self.W, self.T, self.E, self.K = d.W, d.tokens, d.n_experts, d.slots
        self.r_off = c.line_bytes // self.W
        self.vw = field_widths(c)["value"]
        self.rng = random.Random(seed)
        self.np = np.random.default_rng(seed)
        self.cycle = cycle_counter(PERIOD_NS)
        self.job_l, self.gemv_l, self.route_l = route_job_layout(c), gemv_job_layout(d), route_layout(d)
        self.key_l, self.presp_l = key_layout(c.cache), probe_resp_layout(c.cache)
        r = lambda k: random.Random(seed * 53 + k)
        clk = dut.clk
        self.idle = idle
        self.job = StreamSource(dut, "job", clk, idle=idle, rng=r(1))
        self.presp = StreamSource(dut, "probe_resp", clk, idle=idle, rng=r(2))
        self.gdone = StreamSource(dut, "gemv_done", clk, idle=idle, rng=r(3))
        self.done = StreamSink(dut, "done", clk, stall=stall, rng=r(4))
        self.preq = StreamSink(dut, "probe_req", clk, stall=stall, rng=r(5))
        self.gemv = StreamSink(dut, "gemv", clk, stall=stall, rng=r(6))
        self.route = StreamSink(dut, "route", clk, stall=stall, rng=r(7))
        self.mask = 0
        self.seen = set()

    async def reset(self):
        dut = self.dut
        await FallingEdge(dut.clk)
        for s in (self.job, self.presp, self.gdone):
            s.reset()
        for s in (self.done, self.preq, self.gemv, self.route):
            s.reset()
        for t in range(self.T):
            getattr(dut, f"da_wr__we__{t}").value = 0
        dut.clear.value = 0
        dut.rst.value = 1
        await ClockCycles(dut.clk, 3)
        dut.rst.value = 0
        await RisingEdge(dut.clk)

    async def write_da(self, logits):
        """Logits (T x E) into da: token t's expert e at word e // W, element e % W of bank t."""
        dut, W = self.dut, self.W
        word_l = self.d.word("da")
        n_words = -(-self.E // W)
        padded = np.zeros((self.T, n_words * W), np.int64)
        padded[:, :logits.shape[1]] = logits
        for a in range(n_words):
            await FallingEdge(dut.clk)
            for t in range(self.T):
                getattr(dut, f"da_wr__we__{t}").value = 1
                getattr(dut, f"da_wr__waddr__{t}").value = a
                getattr(dut, f"da_wr__wdata__{t}").value = pack(word_l, [int(v) for v in padded[t, a * W:(a + 1) * W]])
        await FallingEdge(dut.clk)
        for t in range(self.T):
            getattr(dut, f"da_wr__we__{t}").value = 0

    async def one_job(self, tag, kind):
        rng, dut, c, T, E, W = self.rng, self.dut, self.config, self.T, self.E, self.W
        ntok = rng.randint(1, T)
        dwords = rng.randint(1, min(self.d.d_words, 4))
        n_exp = rng.randint(2, E)
        top_k = rng.randint(1, n_exp + 2)
        kmax = min(top_k, n_exp, self.K)
        k = rng.randint(1, kmax)
        cached = rng.random() < 0.4
        router_lines = rng.randint(1, 64)
        last_good = self.config.offchip.lines // self.r_off - 2 * router_lines
        p_addr = rng.randint(0, min(last_good, 5000))
        xm = [rng.randrange(1 << 14, 1 << 15) for _ in range(T)]
        xe = [rng.randint(10, 30) for _ in range(T)]
        router_m, router_e = rng.randrange(1 << 14, 1 << 15), rng.randint(5, 25)
        order, expect = 1, Status.NONE
        if kind == "order":
            order, expect = 0, Status.ORDER
        elif kind == "range":
            k = rng.choice([0, kmax + 1 + rng.randrange(4)])
            expect = Status.RANGE
        elif kind == "address":
            p_addr, expect = last_good + 1, Status.ADDRESS
        elif kind == "last":
            p_addr = last_good
        layer = rng.randrange(1 << c.cache.layer_bits)
        await FallingEdge(dut.clk)
        dut.ntok.value, dut.dwords.value, dut.router_lines.value = ntok, dwords, router_lines
        dut.xm.value = pack(ArrayOf(16, T, index="token"), xm)
        dut.xe.value = pack(ArrayOf(8, T, index="token"), xe)
        dut.router_m.value, dut.router_e.value = router_m, router_e
        logits = self.np.integers(-(1 << 12), 1 << 12, (T, E))
        logits[:, n_exp:] = self.np.integers(-(1 << 31), 1 << 31, (T, E - n_exp))   # past N_EXPERTS: unused
        allowed = [0] * E
        probes, jobs, beats, pulses = [], [], [], {"started": 0, "routed": 0}
        tag = f"{tag} ({kind}: ntok {ntok}, E {n_exp}, TOP_K {top_k}, k {k}, cached {cached}, P_ADDR {p_addr})"

        def on_probe(beat, cycle):
            key = unpack(self.key_l, beat)
            n = len(probes)
            assert (int(key.layer), int(key.expert), int(key.plane)) == (layer, n, 0), \
                f"{tag}: probe {len(probes)} is ({int(key.layer)}, {int(key.expert)}, {int(key.plane)})"
            probes.append(n)
            allowed[n] = rng.randint(0, 1)
            cocotb.start_soon(self.presp.send([pack(self.presp_l, dict(key=dict(layer=layer, expert=n, plane=0),
                                                                         hit=allowed[n], slot=0))]))

        def on_gemv(beat, cycle):
            j = unpack(self.gemv_l, beat)
            plen = router_lines * self.r_off
            want = dict(groups=-(-ntok // self.d.lanes), nt=-(-n_exp // W), kb=dwords, mode=Mode.FULL, src_h=0,
                        dest=Dest.DA, ident=1, ntok=ntok, lsb=1, fill=0, msb_hb=0, msb_base=p_addr * self.r_off,
                        msb_len=plen, lsb_base=(p_addr + router_lines) * self.r_off, lsb_len=plen)
            got = {f: getattr(j, f) for f in want}
            got = {f: (v if f == "mode" else int(v)) for f, v in got.items()}
            assert got == want, f"{tag}: GEMV job {got}, expected {want}"
            jobs.append(1)
            cocotb.start_soon(self._serve_gemv(logits))

        def on_route(beat, cycle):
            beats.append(unpack(self.route_l, beat))

        async def watch():
            # sampled once per cycle after the falling edge, when the sinks' ready has settled
            while running[0]:
                await FallingEdge(dut.clk)
                await ReadOnly()
                for name in pulses:
                    pulses[name] += int(getattr(dut, name).value)
        running = [True]
        tasks = [cocotb.start_soon(self.preq.serve(on_probe)), cocotb.start_soon(self.gemv.serve(on_gemv)),
                 cocotb.start_soon(self.route.serve(on_route)), cocotb.start_soon(watch())]
        payload = dict(k=k, cached=int(cached), order=order, top_k=top_k, n_experts=n_exp, p_addr=p_addr, layer=layer)
        await self.job.send([pack(self.job_l, payload)])
        st = Status(int((await self.done.recv(1))[0]))
        for s in (self.preq, self.gemv, self.route):
            s.stop()
        running[0] = False
        for t_ in tasks:
            await t_
        assert st == expect, f"{tag}: ended with {st.name}, expected {expect.name}"
        self.seen.add(st)
        await ReadOnly()
        mask = int(dut.mask.value)
        if expect != Status.NONE:
            assert not probes and not jobs and not beats, f"{tag}: a refused ROUTE probed, computed or routed"
            assert pulses == {"started": 0, "routed": 0}, f"{tag}: pulses {pulses}"
            assert mask == self.mask, f"{tag}: a refused ROUTE changed the mask"
            await FallingEdge(dut.clk)
            return
        assert probes == (list(range(n_exp)) if cached else []), f"{tag}: probes {probes}"
        assert len(jobs) == 1 and pulses == {"started": 1, "routed": 1}, f"{tag}: {len(jobs)} GEMV jobs, pulses {pulses}"
        lg = logits[:ntok, :n_exp]
        chosen = select_experts(lg, k, np.array(allowed[:n_exp], bool) if cached else None)
        weights = gate_weights(SimpleNamespace(router_m=router_m, router_e=router_e), lg, chosen,
                               xm[:ntok], xe[:ntok])
        assert len(beats) == ntok, f"{tag}: {len(beats)} routing beats for {ntok} tokens"
        want_mask = 0
        for t, b in enumerate(beats):
            count = int(b.count)
            got = (int(b.token), count, [int(b.expert[s]) for s in range(count)], [int(b.weight[s]) for s in range(count)])
            want = (t, chosen.shape[1], chosen[t].tolist(), weights[t].tolist())
            assert got == want, f"{tag}: token {t}: (token, count, experts, weights) {got}, expected {want}"
            for e in chosen[t]:
                want_mask |= 1 << int(e)
        assert mask == want_mask, f"{tag}: mask {mask:#x}, expected {want_mask:#x}"
        self.mask = mask
        await FallingEdge(dut.clk)

    async def _serve_gemv(self, logits):
        await self.write_da(logits)
        if self.idle:
            await ClockCycles(self.dut.clk, self.rng.randint(1, 8))
        await self.gdone.send([0])

    async def clear(self):
        await FallingEdge(self.dut.clk)
        self.dut.clear.value = 1
        await FallingEdge(self.dut.clk)
        self.dut.clear.value = 0
        await ReadOnly()
        assert int(self.dut.mask.value) == 0, "clear left the mask set"
        self.mask = 0
        await FallingEdge(self.dut.clk)


async def _run(dut, *, idle, stall):
    cfg = bench_config()
    cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns").start())
    for seed in cfg.get("seeds", [1]):
        tb = TB(dut, cfg, seed, idle=idle, stall=stall)
        await tb.reset()
        n = 16 if cfg.get("quick") else 40
        # every refusal and the last address that fits at least once, the rest valid jobs
        kinds = ["order", "range", "address", "last"] + ["ok"] * (n - 4)
        tb.rng.shuffle(kinds)
        for i, kind in enumerate(kinds):
            if tb.rng.random() < 0.1:
                await tb.clear()
            await tb.one_job(f"seed {seed} job {i}", kind)
        missing = {Status.NONE, Status.ORDER, Status.RANGE, Status.ADDRESS} - tb.seen
        assert not missing, f"seed {seed}: never raised {sorted(s.name for s in missing)}"


@cocotb.test()
async def test_random_stalls(dut):
    """Random ROUTE jobs with random idle cycles and stalls on every stream, bit-exact."""
    cfg = bench_config()
    await _run(dut, idle=cfg.get("idle", 0.3), stall=cfg.get("stall", 0.3))


@cocotb.test()
async def test_no_stalls(dut):
    """The same without idle cycles or stalls."""
    await _run(dut, idle=0.0, stall=0.0)
