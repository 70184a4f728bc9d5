"""cocotb bench of ``hw/expert_cache.py`` against the golden model ``sim/cache/expert_cache.py``.

Configuration (``bench_config()``): ``{"params": ExpertCache kwargs, "cases": [case, ...],
"report": path or None}``; a case is ``{"kind": "random" | "zipf", "n": ops (random) or "steps"
(zipf), "seed", "stall": probability of an idle cycle before each beat on every input stream and
of a not-ready cycle on every output stream, "alpha", "draft_k", "probes"}``. The DUT is reset
before each case, and the golden model starts afresh. Without ``cases`` (the regression,
``elmoe3d regress``) the bench makes its own from ``seeds`` and ``quick``: per seed a random case
with stalls, one without and a Zipf case with draft prefetches.

Streams go through the shared drivers of ``sim/benches/streams.py``: sources on ``i_lookup``,
``i_prefetch`` and ``i_probe`` with random idle cycles, sinks on ``o_resp``, ``o_fill`` and
``o_probe`` with random stalls, each sink checking that valid and payload hold until the transfer.

Every response must equal the golden model's result for the request the controller served (the
bench learns the service order of the two input ports from ``o_resp.op``, checks it is an
interleaving of the two request queues, and applies the golden model in that order); every fill
must equal the golden fill; at the end of a case the counters must equal the golden statistics.
The counters' sticky ``overflow`` flags must be set exactly for the counters whose golden count
reached ``2**counter_bits``. ``probes`` random keys (default ``n // 4`` or ``steps``) are sent on
``i_probe`` meanwhile; each answer must equal the golden ``resident()`` after exactly the requests
transferred before the probe (``hit`` and ``slot``; the key echoed), and a probe must not change
anything (the golden model never sees it, so every later response and the counters check that).
With ``stall == 0`` the bench also checks the lookup latency (request handshake to response
valid): ``LOOKUP_LATENCY`` cycles, or up to ``MAX_HAZARD_CYCLES`` more for a miss right behind an
operation that changed the replacement state (the pipeline's hazard bubbles), and the probe
latency ``PROBE_LATENCY``; the report gives the set of latencies seen.
"""

import json
import random
from collections import deque

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly

from elmoe3d.hw.expert_cache import (COUNTERS, LOOKUP_LATENCY, MAX_HAZARD_CYCLES, PROBE_LATENCY, counters_layout,
                                     fill_layout, key_layout, prefetch_layout, probe_layout, request_layout,
                                     response_layout)
from elmoe3d.sim.benches.runner import bench_config
from elmoe3d.sim.benches.streams import StreamSink, StreamSource, cycle_counter, pack, unpack
from elmoe3d.sim.cache.expert_cache import CacheConfig, ExpertCache, Key, Op
from elmoe3d.sim.cache.traces import random_ops, zipf_ops

PERIOD_NS = 10
INPUTS = ("i_lookup", "i_prefetch", "i_probe")
OUTPUTS = ("o_resp", "o_fill", "o_probe")


def _cfg(params):
    p = dict(params)
    p.pop("counter_bits", None)
    return CacheConfig(**p)


def _key_dict(k):
    return {"plane": int(k.plane), "expert": k.expert, "layer": k.layer}


def _key(view):
    return Key(int(view.layer), int(view.expert), int(view.plane))


def default_cases(seeds, quick):
    """The regression's cases when the launcher gives none: per seed, random with stalls, random
    without (latency), Zipf with draft prefetches."""
    n = 600 if quick else 3000
    cases = []
    for s in seeds:
        cases += [{"kind": "random", "n": n, "seed": 100 + s, "stall": 0.3},
                  {"kind": "random", "n": n // 2, "seed": 200 + s, "stall": 0.0, "alpha": 0.6},
                  {"kind": "zipf", "steps": n // 20, "seed": 300 + s, "stall": 0.2, "draft_k": 1}]
    return cases


class TB:
    """Owns the clock, reset and the six streams; one `run_case` per trace."""

    def __init__(self, dut, params):
        self.dut = dut
        self.params = params
        self.cfg = _cfg(params)
        self.req_l = request_layout(self.cfg)
        self.pf_l = prefetch_layout(self.cfg)
        self.key_l = key_layout(self.cfg)
        self.resp_l = response_layout(self.cfg)
        self.fill_l = fill_layout(self.cfg)
        self.probe_l = probe_layout(self.cfg)
        self.cnt_l = counters_layout(params.get("counter_bits", 32))
        self.cycle = cycle_counter(PERIOD_NS)
        # defined inputs before the first clock edge (Icarus starts them at X)
        dut.rst.value = 1
        for port in INPUTS:
            getattr(dut, f"{port}__valid").value = 0
            getattr(dut, f"{port}__payload").value = 0
        for port in OUTPUTS:
            getattr(dut, f"{port}__ready").value = 0
        cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns").start())

    async def reset(self, drivers):
        d = self.dut
        await FallingEdge(d.clk)
        for drv in drivers:
            drv.reset()
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
        d, cfg = self.dut, self.cfg
        rng = random.Random(case["seed"] * 7919 + 1)
        stall = case.get("stall", 0.0)
        src = {p: StreamSource(d, p, d.clk, idle=stall, rng=random.Random(rng.random())) for p in INPUTS}
        snk = {p: StreamSink(d, p, d.clk, stall=stall, rng=random.Random(rng.random())) for p in OUTPUTS}
        await self.reset([*src.values(), *snk.values()])
        ops = self._ops(case)
        golden = ExpertCache(cfg)
        lk, pf = [], []
        for op, k, s in ops:
            if op == Op.PREFETCH:
                pf.append((op, k, s, pack(self.pf_l, {"key": _key_dict(k), "score": s})))
            else:
                lk.append((op, k, s, pack(self.req_l, {"op": int(op), "key": _key_dict(k), "score": s})))
        n_probes = case.get("probes", case.get("n", case.get("steps", 0)) // 4)
        probe_keys = [Key(rng.randrange(cfg.n_layers), rng.randrange(cfg.n_experts), rng.randrange(2))
                      for _ in range(n_probes)]
        # the keys the cache holds now and then are the likelier probes: half the probes repeat a request's key
        probe_keys = [ops[rng.randrange(len(ops))][1] if i % 2 and ops else k for i, k in enumerate(probe_keys)]
        probes = [(k, pack(self.key_l, _key_dict(k))) for k in probe_keys]

        st = {"served": 0, "latencies": set(), "probe_latencies": set(), "last_resp": 0, "probes_done": 0,
              "probe_hits": 0}
        pending = {"i_lookup": deque(lk), "i_prefetch": deque(pf), "i_probe": deque(probes)}
        sent = {"i_lookup": deque(), "i_prefetch": deque()}
        taken = {"i_lookup": 0, "i_prefetch": 0}
        fills, rtl_fills = deque(), deque()
        asked = deque()            # probes transferred: [key, requests before it, expected or None, cycle]
        answered = deque()         # probe answers not yet checked: (key, hit, slot, cycle)

        def took(port):
            def on_transfer(beat, cycle):
                item = pending[port].popleft()
                assert item[-1] == beat
                if port == "i_probe":
                    before = taken["i_lookup"] + taken["i_prefetch"]
                    assert st["served"] >= before - 1, \
                        f"probe of {item[0]} taken at cycle {cycle} with {before - st['served']} requests in flight"
                    asked.append([item[0], before, None, cycle])
                    settle_probes()
                else:
                    taken[port] += 1
                    sent[port].append(item + (cycle,))
            return on_transfer

        def settle_probes():
            """Golden answers of the probes whose requests have all been applied; compare."""
            for p in asked:
                if p[2] is None and p[1] == st["served"]:
                    slot = golden.resident().get(p[0])
                    p[2] = (slot is not None, slot or 0)
            while asked and asked[0][2] is not None and answered:
                key, before, want, asked_at = asked.popleft()
                got_key, hit, slot, cycle = answered.popleft()
                assert got_key == key, f"probe answer for {got_key}, expected {key} (probes answer in order)"
                assert (hit, slot if hit else 0) == want and (hit or slot == 0), \
                    (f"probe {st['probes_done']} of {key} after {before} requests (cycle {asked_at}): "
                     f"RTL (hit, slot) = {(hit, slot)}, golden resident() gives {want}")
                if stall == 0:
                    st["probe_latencies"].add(cycle - asked_at)
                st["probes_done"] += 1
                st["probe_hits"] += hit

        def on_resp(bits, cycle):
            got = unpack(self.resp_l, bits)
            gop = Op(got.op.value)
            queue = sent["i_prefetch"] if gop == Op.PREFETCH else sent["i_lookup"]
            served = st["served"]
            assert queue, f"op {served}: response {gop.name} {_key(got.key)} with no such request outstanding"
            op, k, s, _, at = queue.popleft()
            if stall == 0:
                st["latencies"].add(cycle - at)
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
            st["served"] += 1
            st["last_resp"] = cycle
            settle_probes()
            match_fills()

        def match_fills():
            # a fill may be taken before or after its response: compare the two fill sequences
            while fills and rtl_fills:
                want, actual = fills.popleft(), rtl_fills.popleft()
                assert actual == want, f"fill (key, slot, prefetch) {actual} != golden {want}"
            assert len(rtl_fills) <= 1, f"fills without a golden fill: {list(rtl_fills)}"

        def on_fill(bits, cycle):
            got = unpack(self.fill_l, bits)
            rtl_fills.append((_key(got.key), int(got.slot), bool(got.prefetch)))
            match_fills()

        def on_probe(bits, cycle):
            got = unpack(self.probe_l, bits)
            answered.append((_key(got.key), bool(got.hit), int(got.slot), cycle))
            assert len(answered) <= len(asked), f"a probe answer ({answered[-1]}) with no probe outstanding"
            settle_probes()

        tasks = [cocotb.start_soon(src[p].send([item[-1] for item in pending[p]], self.cycle, took(p)))
                 for p in INPUTS]
        sinks = [cocotb.start_soon(snk[p].serve(cb, self.cycle))
                 for p, cb in (("o_resp", on_resp), ("o_fill", on_fill), ("o_probe", on_probe))]
        start = self.cycle()
        limit = 20 * (len(ops) + len(probes)) + 1000
        while st["served"] < len(ops) or st["probes_done"] < len(probes) or fills:
            await FallingEdge(d.clk)
            if st["served"] == len(ops):
                snk["o_fill"].stall = 0.0          # the last fills drain
            if self.cycle() - start > limit:
                raise AssertionError(f"deadlock: {st['served']} of {len(ops)} requests served, "
                                     f"{st['probes_done']} of {len(probes)} probes answered after {limit} cycles")
        for t in tasks:
            await t
        for p in OUTPUTS:
            snk[p].stop()
        for t in sinks:
            await t
        await ReadOnly()
        assert not fills and not rtl_fills, f"fills unmatched: golden {list(fills)}, RTL {list(rtl_fills)}"
        assert not int(d.o_resp__valid.value) and not int(d.o_probe__valid.value), "an extra response or probe answer"
        cnt = unpack(self.cnt_l, int(d.o_counters.value))
        gst = golden.stats
        mod = 1 << self.params.get("counter_bits", 32)
        for name in COUNTERS:
            assert int(getattr(cnt, name)) == getattr(gst, name) % mod, \
                f"counter {name}: RTL {int(getattr(cnt, name))}, golden {getattr(gst, name)}"
            flag, wrapped = int(getattr(cnt.overflow, name)), getattr(gst, name) >= mod
            assert flag == wrapped, f"counter {name}: overflow flag {flag}, golden count {getattr(gst, name)} of {mod}"
        latencies = st["latencies"]
        if stall == 0:
            allowed = set(range(LOOKUP_LATENCY, LOOKUP_LATENCY + MAX_HAZARD_CYCLES + 1))
            assert latencies <= allowed, f"lookup latency {sorted(latencies)} cycles, expected {sorted(allowed)}"
            assert st["probe_latencies"] <= {PROBE_LATENCY}, \
                f"probe latency {sorted(st['probe_latencies'])} cycles, expected {PROBE_LATENCY}"
        held = sum(s.hold.checked for s in snk.values())
        return {"case": case, "ops": len(ops), "cycles": st["last_resp"] - start, "stats": gst.to_dict(),
                "latency": sorted(latencies), "probes": len(probes), "probe_latency": sorted(st["probe_latencies"]),
                "probe_hits": st["probe_hits"], "held_cycles": held}


@cocotb.test()
async def cache_matches_golden(dut):
    conf = bench_config()
    tb = TB(dut, conf["params"])
    report = []
    cases = conf.get("cases") or default_cases(conf.get("seeds", [1]), conf.get("quick", False))
    for case in cases:
        out = await tb.run_case(case)
        dut._log.info("case %s: %d ops in %d cycles, hit rate %.3f", case, out["ops"], out["cycles"],
                      out["stats"]["hit_rate"])
        report.append(out)
    if conf.get("report"):
        with open(conf["report"], "w") as f:
            json.dump(report, f, indent=2)
