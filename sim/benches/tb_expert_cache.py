"""cocotb bench of ``hw/expert_cache.py`` against the golden model ``sim/expert_cache.py``.

Configuration (``bench_config()``): ``{"params": ExpertCache kwargs, "cases": [case, ...],
"report": path or None}``; a case is ``{"kind": "random" | "zipf", "n": ops (random) or "steps"
(zipf), "seed", "stall": probability of an idle/not-ready cycle on every stream, "alpha",
"draft_k"}``. The DUT is reset before each case, and the golden model starts afresh.

Every response must equal the golden model's result for the request the controller served (the
bench learns the service order of the two input ports from ``o_resp.op``, checks it is an
interleaving of the two request queues, and applies the golden model in that order); every fill
must equal the golden fill; at the end of a case the counters must equal the golden statistics.
The counters' sticky ``overflow`` flags must be set exactly for the counters whose golden count
reached ``2**counter_bits``. With ``stall == 0`` the bench also checks the lookup latency
(request handshake to response valid): ``LOOKUP_LATENCY`` cycles, or up to
``MAX_HAZARD_CYCLES`` more for a miss right behind an operation that changed the replacement
state (the pipeline's hazard bubbles); the report gives the set of latencies seen.
"""

import json
import random
from collections import deque

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly

from elmoe3d.hw.expert_cache import (COUNTERS, LOOKUP_LATENCY, MAX_HAZARD_CYCLES, counters_layout, prefetch_layout,
                                     request_layout, response_layout, fill_layout)
from elmoe3d.sim.benches.runner import bench_config
from elmoe3d.sim.expert_cache import CacheConfig, ExpertCache, Key, Op
from elmoe3d.sim.traces import random_ops, zipf_ops


def _cfg(params):
    p = dict(params)
    p.pop("counter_bits", None)
    return CacheConfig(**p)


def _key_dict(k):
    return {"plane": int(k.plane), "expert": k.expert, "layer": k.layer}


def _key(view):
    return Key(int(view.layer), int(view.expert), int(view.plane))


class TB:
    """Owns the clock, reset and the four streams; one `run_case` per trace."""

    def __init__(self, dut, params):
        self.dut = dut
        self.params = params
        self.cfg = _cfg(params)
        self.req_l = request_layout(self.cfg)
        self.pf_l = prefetch_layout(self.cfg)
        self.resp_l = response_layout(self.cfg)
        self.fill_l = fill_layout(self.cfg)
        self.cnt_l = counters_layout(params.get("counter_bits", 32))
        # defined inputs before the first clock edge (Icarus starts them at X)
        dut.rst.value = 1
        for s in (dut.i_lookup__valid, dut.i_prefetch__valid, dut.o_resp__ready, dut.o_fill__ready,
                  dut.i_lookup__payload, dut.i_prefetch__payload):
            s.value = 0
        cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())

    async def reset(self):
        d = self.dut
        await FallingEdge(d.clk)
        for s in (d.i_lookup__valid, d.i_prefetch__valid, d.o_resp__ready, d.o_fill__ready):
            s.value = 0
        d.rst.value = 1
        for _ in range(3):
            await FallingEdge(d.clk)
        d.rst.value = 0

    def _ops(self, case):
        if case["kind"] == "random":
            return random_ops(self.cfg, case["n"], seed=case["seed"], alpha=case.get("alpha", 1.0))
        return zipf_ops(self.cfg, steps=case["steps"], top_k=case.get("top_k", 2), alpha=case.get("alpha", 1.0),
                        seed=case["seed"], draft_k=case.get("draft_k", 0))

    async def run_case(self, case):
        d = self.dut
        await self.reset()
        ops = self._ops(case)
        golden = ExpertCache(self.cfg)
        rng = random.Random(case["seed"] * 7919 + 1)
        stall = case.get("stall", 0.0)
        lk = deque()
        pf = deque()
        for op, k, s in ops:
            if op == Op.PREFETCH:
                pf.append((op, k, s, self.pf_l.const({"key": _key_dict(k), "score": s}).as_value().value))
            else:
                lk.append((op, k, s, self.req_l.const({"op": int(op), "key": _key_dict(k), "score": s}).as_value().value))
        sent_lk, sent_pf = deque(), deque()
        fills = deque()
        rtl_fills = deque()
        cur_lk = cur_pf = None
        served = 0
        cycle = 0
        latencies = set()
        resp_ready = fill_ready = 0
        lk_done = pf_done = False
        while served < len(ops):
            await FallingEdge(d.clk)
            cycle += 1
            if cycle > 20 * len(ops) + 1000:
                raise AssertionError(f"deadlock: {served} of {len(ops)} served after {cycle} cycles")
            # valid rises only with a new item and holds until its transfer (stream contract)
            if cur_lk is None:
                if lk and rng.random() >= stall:
                    cur_lk = lk.popleft()
                    d.i_lookup__payload.value = cur_lk[3]
                    d.i_lookup__valid.value = 1
                elif lk_done:
                    d.i_lookup__valid.value = 0
            if cur_pf is None:
                if pf and rng.random() >= stall:
                    cur_pf = pf.popleft()
                    d.i_prefetch__payload.value = cur_pf[3]
                    d.i_prefetch__valid.value = 1
                elif pf_done:
                    d.i_prefetch__valid.value = 0
            r = int(rng.random() >= stall)
            if r != resp_ready:
                d.o_resp__ready.value = resp_ready = r
            f = int(rng.random() >= stall)
            if f != fill_ready:
                d.o_fill__ready.value = fill_ready = f
            await ReadOnly()
            if cur_lk is not None and d.i_lookup__ready.value:
                sent_lk.append(cur_lk + (cycle,))
                cur_lk = None
                lk_done = True
            else:
                lk_done = False
            if cur_pf is not None and d.i_prefetch__ready.value:
                sent_pf.append(cur_pf + (cycle,))
                cur_pf = None
                pf_done = True
            else:
                pf_done = False
            if resp_ready and d.o_resp__valid.value:
                if not d.o_resp__payload.value.is_resolvable:
                    raise AssertionError(f"o_resp payload {d.o_resp__payload.value} at cycle {cycle}")
                got = self.resp_l.from_bits(int(d.o_resp__payload.value))
                gop = Op(got.op.value)
                queue = sent_pf if gop == Op.PREFETCH else sent_lk
                assert queue, f"op {served}: response {gop.name} {_key(got.key)} with no such request outstanding"
                op, k, s, _, taken = queue.popleft()
                if stall == 0:
                    latencies.add(cycle - taken)
                assert (op, k) == (gop, _key(got.key)), \
                    f"op {served}: response for {gop.name} {_key(got.key)}, expected {op.name} {k}"
                exp = golden.apply(op, k, s)
                actual = (bool(got.hit), int(got.slot), bool(got.fill), bool(got.evict), bool(got.bypass),
                          _key(got.victim) if got.evict else None)
                want = (exp.hit, exp.slot, exp.fill, exp.evict, exp.bypass, exp.victim)
                assert actual == want, (f"op {served} ({op.name} {k} score {s}): RTL (hit, slot, fill, evict, bypass, "
                                        f"victim) = {actual}, golden {want}")
                if exp.fill:
                    fills.append((k, exp.slot, op == Op.PREFETCH))
                served += 1
            if fill_ready and d.o_fill__valid.value:
                got = self.fill_l.from_bits(int(d.o_fill__payload.value))
                rtl_fills.append((_key(got.key), int(got.slot), bool(got.prefetch)))
            # a fill may be taken before or after its response: compare the two fill sequences
            while fills and rtl_fills:
                want, actual = fills.popleft(), rtl_fills.popleft()
                assert actual == want, f"fill (key, slot, prefetch) {actual} != golden {want}"
            assert len(rtl_fills) <= 1, f"fills without a golden fill: {list(rtl_fills)}"
        for _ in range(50):
            if not fills:
                break
            await FallingEdge(d.clk)
            d.o_fill__ready.value = fill_ready = 1
            await ReadOnly()
            if d.o_fill__valid.value:
                got = self.fill_l.from_bits(int(d.o_fill__payload.value))
                want = fills.popleft()
                assert (_key(got.key), int(got.slot), bool(got.prefetch)) == want
        assert not fills and not rtl_fills, f"fills unmatched: golden {list(fills)}, RTL {list(rtl_fills)}"
        await FallingEdge(d.clk)
        await ReadOnly()
        cnt = self.cnt_l.from_bits(int(d.o_counters.value))
        st = golden.stats
        mod = 1 << self.params.get("counter_bits", 32)
        for name in COUNTERS:
            assert int(getattr(cnt, name)) == getattr(st, name) % mod, \
                f"counter {name}: RTL {int(getattr(cnt, name))}, golden {getattr(st, name)}"
            flag, wrapped = int(getattr(cnt.overflow, name)), getattr(st, name) >= mod
            assert flag == wrapped, f"counter {name}: overflow flag {flag}, golden count {getattr(st, name)} of {mod}"
        if stall == 0:
            allowed = set(range(LOOKUP_LATENCY, LOOKUP_LATENCY + MAX_HAZARD_CYCLES + 1))
            assert latencies <= allowed, f"lookup latency {sorted(latencies)} cycles, expected {sorted(allowed)}"
        return {"case": case, "ops": len(ops), "cycles": cycle, "stats": st.to_dict(),
                "latency": sorted(latencies)}


@cocotb.test()
async def cache_matches_golden(dut):
    conf = bench_config()
    tb = TB(dut, conf["params"])
    report = []
    for case in conf["cases"]:
        out = await tb.run_case(case)
        dut._log.info("case %s: %d ops in %d cycles, hit rate %.3f", case, out["ops"], out["cycles"],
                      out["stats"]["hit_rate"])
        report.append(out)
    if conf.get("report"):
        with open(conf["report"], "w") as f:
            json.dump(report, f, indent=2)
