"""cocotb bench of the vector unit's tops: ``vector_requant``, ``vector_swiglu``, ``vector_router``
and ``vector_combine`` (``hw/vector_*.py``).

Configuration (``bench_config()``): ``kind`` (the top: one block, or ``vector_unit``, whose four
blocks are driven one after the other through their prefixed ports), the generator ``params``, ``seeds``,
``quick`` (fewer cases), ``idle``/``stall`` (probability of an idle cycle before each beat on
every source and of a not-ready cycle on every sink).

Every output is compared with the golden functions of ``sim/golden/int_moe.py``: ``requant``
(requantizer; SwiGLU step as ``requant(SILU[g + 128] * v, hm, he, 8)``), ``select_experts`` and
``gate_weights`` (router), ``combine`` and ``sat`` (combine). Beats are packed and unpacked
through the layouts of ``hw/vector_unit.py``. A mismatch names the beat and its inputs.
``test_cycles`` runs without stalls and checks the latency of the pipelines (``LATENCY``) and
the router's cycles per token (``router_cycles``).
"""

import random
from types import SimpleNamespace

import cocotb
import numpy as np
from amaranth.hdl import Shape
from amaranth.lib import data
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge
from cocotb.utils import get_sim_time

from ...hw.tops import get_top
from ...hw.vector_common import OUT_BITS_OF, COMBINE_BITS, OutBits
from ...hw.vector_router import router_cycles
from ...hw.vector_unit import BLOCKS
from ..golden.int_moe import (GATE_FRAC, MANT_BITS, MAX_SHIFT, OUT_BITS, SILU_ENTRIES, XE_MAX, combine,
                       gate_weights, requant, sat, select_experts)
from .runner import bench_config
from .streams import StreamSink, StreamSource

PERIOD_NS = 10
I32 = (-(1 << 31), (1 << 31) - 1)
M30 = (1 << (2 * MANT_BITS)) - 1
M15 = (1 << MANT_BITS) - 1


def _golden_shift(e):
    """The documented out-of-range rule: a shift of 0 acts as 1 (above 62 the golden clamps)."""
    return max(int(e), 1)


class TB:
    """Clock, reset, and one source per input stream / one sink per output stream of the top."""

    def __init__(self, dut, cfg, component, prefix, *, idle, stall, seed, inputs, outputs):
        self.dut, self.cfg, self.seed = dut, cfg, seed
        self.rng = random.Random(seed)
        self.component = component
        clk = dut.clk
        self.src = {p: StreamSource(dut, prefix + p, clk, idle=idle, rng=random.Random(seed * 11 + n))
                    for n, p in enumerate(inputs)}
        self.snk = {p: StreamSink(dut, prefix + p, clk, stall=stall, rng=random.Random(seed * 13 + n))
                    for n, p in enumerate(outputs)}

    @staticmethod
    def cycle():
        return int(get_sim_time(unit="ns")) // PERIOD_NS

    async def reset(self):
        for s in (*self.src.values(), *self.snk.values()):
            s.reset()
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 3)
        self.dut.rst.value = 0
        await RisingEdge(self.dut.clk)

    async def stream(self, port_in, beats, port_out, count=None):
        """Send ``beats`` on ``port_in`` while receiving ``count`` (default: as many) beats."""
        task = cocotb.start_soon(self.src[port_in].send(beats, self.cycle))
        got = await self.snk[port_out].recv(len(beats) if count is None else count, self.cycle)
        await task
        return got


def pack(layout, value):
    return layout.const(value).as_value().value


# -- requant ------------------------------------------------------------------------------------------
class Requant:
    inputs, outputs = ("i_data",), ("o_data",)

    def __init__(self, tb):
        self.tb, self.c = tb, tb.component
        self.width = self.c.width

    def corner_beats(self):
        accs = [I32[0], I32[1], 0, -1, 1, 12345, -12345]
        ms = [0, M30, 1 << 14, M15, (1 << 29) + 7]
        es = [0, 1, 2, 31, 62, 63, 127]
        elems = [dict(acc=a, m=m_, e=e) for a in accs for m_ in ms for e in es]
        beats = []
        for bits in OutBits:
            for i in range(0, len(elems), self.width):
                chunk = elems[i:i + self.width]
                chunk += elems[:self.width - len(chunk)]
                beats.append(dict(bits=bits, elem=chunk))
        if self.tb.cfg.get("quick"):
            beats = beats[::3]
        return beats

    def random_beats(self, count):
        r = self.tb.rng
        beats = []
        for _ in range(count):
            elem = []
            for _ in range(self.width):
                acc = r.choice([r.randint(*I32), r.randint(-(1 << 20), 1 << 20), r.randint(-300, 300)])
                m_ = r.choice([r.randint(0, M30), r.randint(1 << 14, M15) * r.randint(1 << 14, M15),
                               r.randint(1 << 14, M15)])
                e = r.choice([r.randint(1, 62), r.randint(1, 48) + r.randint(1, 62), r.randint(10, 40)])
                elem.append(dict(acc=acc, m=m_, e=e))
            beats.append(dict(bits=r.choice(list(OutBits)), elem=elem))
        return beats

    def expected(self, beat):
        b = OUT_BITS_OF[beat["bits"]]
        return [int(requant(x["acc"], x["m"], _golden_shift(x["e"]), b)) for x in beat["elem"]]

    async def check(self, beats):
        words = [pack(self.c.in_layout, b) for b in beats]
        got = await self.tb.stream("i_data", words, "o_data")
        for i, (beat, word) in enumerate(zip(beats, got)):
            out = list(data.Const(self.c.out_layout, word))
            exp = self.expected(beat)
            assert out == exp, f"requant beat {i}: {beat}\nexpected {exp}\ngot      {out}"
        return len(beats)


# -- SwiGLU ------------------------------------------------------------------------------------------
class SwiGLU(Requant):
    inputs, outputs = ("i_table", "i_data"), ("o_data",)

    def __init__(self, tb):
        super().__init__(tb)
        self.table = None

    async def load_table(self, table):
        words = [pack(self.c.table_layout, {"index": i, "value": int(v)}) for i, v in enumerate(table)]
        await self.tb.src["i_table"].send(words)
        self.table = np.asarray(table, dtype=np.int64)

    def random_table(self):
        r = self.tb.rng
        kind = r.choice(["silu", "random"])
        if kind == "silu":   # the folded table of a random gate scale (as fold_layer makes it)
            from ..golden.int_moe import silu_table
            return silu_table(r.uniform(0.005, 0.2)).astype(np.int64)
        return np.array([r.randint(-32768, 32767) for _ in range(SILU_ENTRIES)], dtype=np.int64)

    def corner_beats(self):
        gs = [-128, -127, -1, 0, 1, 127]
        vs = [-32768, -32767, 32767, 0, 1, -1]
        scales = [(0, 1), (M15, 1), (1 << 14, 62), (M15, 63), (M15, 0), (1 << 14, 20), (20000, 127)]
        elems = [dict(g=g, v=v) for g in gs for v in vs]
        beats = []
        for hm, he in scales:
            for i in range(0, len(elems), self.width):
                chunk = elems[i:i + self.width]
                chunk += elems[:self.width - len(chunk)]
                beats.append(dict(hm=hm, he=he, elem=chunk))
        return beats

    def random_beats(self, count):
        r = self.tb.rng
        return [dict(hm=r.choice([r.randint(1 << 14, M15), r.randint(0, M15)]),
                     he=r.choice([r.randint(1, 62), r.randint(15, 35)]),
                     elem=[dict(g=r.randint(-128, 127), v=r.choice([r.randint(-32768, 32767), r.randint(-500, 500)]))
                           for _ in range(self.width)]) for _ in range(count)]

    def expected(self, beat):
        return [int(requant(self.table[x["g"] + SILU_ENTRIES // 2] * x["v"], beat["hm"], _golden_shift(beat["he"]), 8))
                for x in beat["elem"]]


# -- combine -----------------------------------------------------------------------------------------
class Combine(Requant):
    def corner_beats(self):
        ys = [I32[0] + 1, I32[1], 0, -1, 1, I32[0]]
        accs = [0, (1 << 36) - 1 - (1 << 31), -(1 << 36) + (1 << 31), (1 << 31) - 1, -(1 << 31) + 1, 5 << 31]
        ws = [0, 1, 1 << 14, 1 << GATE_FRAC, (1 << 16) - 1]
        elems = [dict(y=y, acc=a) for y in ys for a in accs]
        beats = []
        for w in ws:
            for first in (0, 1):
                for last in (0, 1):
                    for i in range(0, len(elems), self.width):
                        chunk = elems[i:i + self.width]
                        chunk += elems[:self.width - len(chunk)]
                        beats.append(dict(w=w, first=first, last=last, elem=chunk))
        if self.tb.cfg.get("quick"):
            beats = beats[::3]
        return beats

    def random_beats(self, count):
        r = self.tb.rng
        lim = (1 << (COMBINE_BITS - 1)) - (1 << 32)       # no wrap: the golden sum is exact
        return [dict(w=r.choice([r.randint(0, 1 << GATE_FRAC), 1 << GATE_FRAC, r.randint(0, 4000)]),
                     first=int(r.random() < 0.3), last=int(r.random() < 0.3),
                     elem=[dict(y=r.choice([r.randint(*I32), r.randint(-(1 << 20), 1 << 20)]),
                                acc=r.choice([r.randint(-lim, lim), r.randint(-(1 << 33), 1 << 33)]))
                           for _ in range(self.width)]) for _ in range(count)]

    def expected(self, beat):
        y = np.array([[x["y"] for x in beat["elem"]]], dtype=np.int64)
        base = np.array([0 if beat["first"] else x["acc"] for x in beat["elem"]], dtype=np.int64)
        total = base + combine(y, np.array([beat["w"]]))[0]
        half = 1 << (COMBINE_BITS - 1)
        total = (total + half) % (2 * half) - half            # the documented wrap (corners only)
        if beat["last"]:
            total = sat(total, OUT_BITS)
        return [int(v) for v in total]

    async def chained(self, tokens, experts):
        """Whole sums as the core runs them: per token, one beat per expert, each beat's ``acc``
        the previous output; the final outputs equal ``sat(sum combine(y, w), 32)``."""
        r = self.tb.rng
        checked = 0
        for _ in range(tokens):
            ys = np.array([[r.randint(*I32) if r.random() < 0.3 else r.randint(-(1 << 24), 1 << 24)
                            for _ in range(self.width)] for _ in range(experts)], dtype=np.int64)
            ws = [r.randint(0, 1 << GATE_FRAC) for _ in range(experts)]
            acc = [0] * self.width
            for j in range(experts):
                beat = dict(w=ws[j], first=int(j == 0), last=int(j == experts - 1),
                            elem=[dict(y=int(ys[j, i]), acc=acc[i]) for i in range(self.width)])
                got = await self.tb.stream("i_data", [pack(self.c.in_layout, beat)], "o_data")
                acc = list(data.Const(self.c.out_layout, got[0]))
            golden = sat(sum(combine(ys[j:j + 1], np.array([ws[j]]))[0] for j in range(experts)), OUT_BITS)
            assert acc == [int(v) for v in golden], f"chained sum: expected {golden}, got {acc}"
            checked += 1
        return checked


# -- router ------------------------------------------------------------------------------------------
class Router:
    inputs, outputs = ("i_cmd", "i_logit"), ("o_result",)

    def __init__(self, tb):
        self.tb, self.c = tb, tb.component
        self.E, self.K = self.c.max_experts, self.c.max_k

    def case(self, logits, k, cached=False, allowed=None, xm=None, xe=None, rm=None, re=None, note=""):
        r = self.tb.rng
        return dict(logits=[int(v) for v in logits], k=k, cached=cached,
                    allowed=[bool(a) for a in (allowed if allowed is not None else [True] * self.E)],
                    xm=r.randint(1 << 14, M15) if xm is None else xm, xe=r.randint(1, XE_MAX) if xe is None else xe,
                    rm=r.randint(1 << 14, M15) if rm is None else rm, re=r.randint(1, MAX_SHIFT) if re is None else re,
                    note=note)

    def expected(self, case):
        """The golden routing, with the documented rules outside its domain: logits at index
        ``max_experts`` or above are never chosen, ``k`` above ``max_k`` acts as ``max_k``, and
        ``k = 0`` or ``n = 0`` chooses nothing."""
        lg = case["logits"][:self.E]
        k = min(case["k"], self.K)
        if not lg or k == 0:
            return 0, [0] * self.K, [0] * self.K
        logits = np.array([lg], dtype=np.int64)
        allowed = np.array(case["allowed"][:len(lg)]) if case["cached"] else None
        chosen = select_experts(logits, min(k, len(lg)), allowed)
        layer = SimpleNamespace(router_m=case["rm"], router_e=case["re"])
        w = gate_weights(layer, logits, chosen, np.array([case["xm"]]), np.array([case["xe"]]))
        c = chosen.shape[1]
        pad = [0] * (self.K - c)
        return c, [int(e) for e in chosen[0]] + pad, [int(v) for v in w[0]] + pad

    def corner_cases(self):
        E, K, r = self.E, self.K, self.tb.rng
        cases = []
        for k in sorted({1, K}):
            cases.append(self.case([7] * E, k, note="all tied"))
            cases.append(self.case([I32[0]] * (E - 1) + [I32[1]], k, note="extremes, best last"))
            cases.append(self.case([I32[1]] + [I32[0]] * (E - 1), k, note="largest gap"))
            cases.append(self.case([3, 5, 5, 3] * (E // 4) + [5] * (E % 4), k, note="pairs of ties"))
            cases.append(self.case(list(range(E)), k, note="ascending"))
            cases.append(self.case([r.randint(-3, 3) for _ in range(E)], k, xm=M15, xe=1, rm=M15, re=1,
                                   note="small gaps, shift 2"))
            cases.append(self.case([r.randint(-3, 3) for _ in range(E)], k, xm=M15, xe=XE_MAX, rm=M15, re=MAX_SHIFT,
                                   note="shift clamped at 62"))
            cases.append(self.case([r.randint(-9, 9) for _ in range(E)], k, xm=0, note="xm = 0: equal weights"))
            cases.append(self.case([r.randint(-50, 50) for _ in range(E)], k, cached=True,
                                   allowed=[False] * E, note="no allowed expert"))
            cases.append(self.case([r.randint(-50, 50) for _ in range(E)], k, cached=True,
                                   allowed=[e == E - 1 for e in range(E)], note="one allowed expert"))
            cases.append(self.case([r.randint(-50, 50) for _ in range(E)], k, cached=True,
                                   allowed=[e % 2 == 0 for e in range(E)], note="even experts allowed"))
            cases.append(self.case([r.randint(-50, 50) for _ in range(E)], k, cached=False,
                                   allowed=[False] * E, note="mask ignored without cached"))
        cases.append(self.case([r.randint(-9, 9) for _ in range(K)], K, note="n = k = max_k"))
        cases.append(self.case([4], 1, note="n = 1"))
        # outside the golden domain (the documented rules of the interface notes)
        cases.append(self.case([], 1, note="n = 0"))
        cases.append(self.case([r.randint(-9, 9) for _ in range(E)], 0, note="k = 0"))
        n_top = (1 << Shape.cast(self.c.cmd_layout["n"].shape).width) - 1
        if n_top > E:
            cases.append(self.case([1] * E + [100] * min(2, n_top - E), 1,
                                   note="n > max_experts: the extra logits are never chosen"))
        k_top = (1 << Shape.cast(self.c.cmd_layout["k"].shape).width) - 1
        if k_top > K:
            cases.append(self.case([r.randint(-9, 9) for _ in range(E)], k_top, note="k > max_k acts as max_k"))
        return cases

    def random_cases(self, count):
        r, E, K = self.tb.rng, self.E, self.K
        cases = []
        for _ in range(count):
            n = r.randint(1, E)
            k = r.randint(1, min(K, n))
            spread = r.choice([3, 100, 5000, 1 << 20, 1 << 31])
            logits = [max(I32[0], min(I32[1], r.randint(-spread, spread))) for _ in range(n)]
            cached = r.random() < 0.35
            allowed = [r.random() < 0.6 for _ in range(E)]
            cases.append(self.case(logits, k, cached, allowed, xe=r.choice([r.randint(1, XE_MAX), r.randint(5, 20)]),
                                   re=r.choice([r.randint(1, MAX_SHIFT), r.randint(10, 25)]), note="random"))
        return cases

    def words(self, case):
        cmd = pack(self.c.cmd_layout, dict(n=len(case["logits"]), k=case["k"], cached=int(case["cached"]),
                                           allowed=[int(a) for a in case["allowed"]], xm=case["xm"],
                                           xe=case["xe"], rm=case["rm"], re=case["re"]))
        return cmd, [v & 0xFFFFFFFF for v in case["logits"]]

    async def run(self, cases):
        cmds, logits = [], []
        for case in cases:
            cmd, lg = self.words(case)
            cmds.append(cmd)
            logits += lg
        tasks = [cocotb.start_soon(self.tb.src["i_cmd"].send(cmds, self.tb.cycle)),
                 cocotb.start_soon(self.tb.src["i_logit"].send(logits))]
        got = await self.tb.snk["o_result"].recv(len(cases), self.tb.cycle)
        for t in tasks:
            await t
        for i, (case, word) in enumerate(zip(cases, got)):
            view = data.Const(self.c.result_layout, word)
            out = (view.count, list(view.expert), list(view.weight))
            exp = self.expected(case)
            assert out == exp, (f"router case {i} ({case['note']}): {case}\nexpected (count, experts, weights) "
                                f"{exp}\ngot {out}")
        return got

    async def check(self, cases):
        await self.run(cases)
        return len(cases)


KINDS = {"vector_requant": Requant, "vector_swiglu": SwiGLU, "vector_combine": Combine, "vector_router": Router}


def _blocks(cfg):
    """``[(kind, component, port prefix)]``: the block(s) of the top under test."""
    component = get_top(cfg["kind"]).build(**cfg["params"])
    if cfg["kind"] == "vector_unit":
        return [(f"vector_{b}", getattr(component, f"{b}_block"), f"{b}__") for b in BLOCKS]
    return [(cfg["kind"], component, "")]


def _setup(dut, seed, *, idle=None, stall=None):
    """``[(tb, unit)]`` for each block of the top (one TB per block: its own streams)."""
    cfg = bench_config()
    idle = cfg.get("idle", 0.3) if idle is None else idle
    stall = cfg.get("stall", 0.3) if stall is None else stall
    out = []
    for kind_name, component, prefix in _blocks(cfg):
        kind = KINDS[kind_name]
        tb = TB(dut, cfg, component, prefix, idle=idle, stall=stall, seed=seed, inputs=kind.inputs,
                outputs=kind.outputs)
        out.append((kind_name, tb, kind(tb)))
    return cfg, out


async def _start(dut):
    cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns").start())


@cocotb.test()
async def test_corners(dut):
    """Saturation at both ends, shifts 0/1/62/63/127, zero mantissas, ties, k = 1 and max_k, no
    allowed expert, first/last combinations; random stalls on every stream."""
    seed = bench_config()["seeds"][0]
    cfg, blocks = _setup(dut, seed)
    await _start(dut)
    for kind, tb, unit in blocks:
        await tb.reset()
        if isinstance(unit, Router):
            n = await unit.check(unit.corner_cases())
        else:
            if isinstance(unit, SwiGLU):
                await unit.load_table([tb.rng.choice([-32768, 32767, 0, tb.rng.randint(-32768, 32767)])
                                       for _ in range(SILU_ENTRIES)])
            n = await unit.check(unit.corner_beats())
            if isinstance(unit, Combine):
                n += await unit.chained(tokens=4, experts=4)
        dut._log.info("%s: %d corner beats/cases bit-exact (seed %d)", kind, n, seed)


@cocotb.test()
async def test_random(dut):
    """Random inputs over every seed, random idle/backpressure on every stream."""
    cfg = bench_config()
    count = 12 if cfg.get("quick") else 48
    totals = {}
    await _start(dut)
    for seed in cfg["seeds"]:
        cfg, blocks = _setup(dut, seed)
        for kind, tb, unit in blocks:
            await tb.reset()
            total = 0
            if isinstance(unit, Router):
                total += await unit.check(unit.random_cases(count))
            else:
                if isinstance(unit, SwiGLU):
                    await unit.load_table(unit.random_table())
                    total += await unit.check(unit.random_beats(count // 2))
                    # rewrite part of the table between beats: later beats see the new entries
                    table = unit.table.copy()
                    for idx in tb.rng.sample(range(SILU_ENTRIES), 16):
                        table[idx] = tb.rng.randint(-32768, 32767)
                    await unit.load_table(table)
                total += await unit.check(unit.random_beats(count))
            totals[kind] = totals.get(kind, 0) + total
    for kind, total in totals.items():
        dut._log.info("%s: %d random beats/cases bit-exact over seeds %s", kind, total, cfg["seeds"])


@cocotb.test()
async def test_cycles(dut):
    """No stalls: pipelines deliver each beat LATENCY cycles after its transfer and take one beat
    per cycle; the router's cycles per token equal ``router_cycles``."""
    cfg, blocks = _setup(dut, bench_config()["seeds"][0], idle=0.0, stall=0.0)
    await _start(dut)
    for kind, tb, unit in blocks:
        await tb.reset()
        if isinstance(unit, Router):
            E, K = unit.E, unit.K
            cases = [unit.case([tb.rng.randint(-9, 9) for _ in range(n)], k, cached, allowed)
                     for n, k, cached, allowed in [(E, K, False, None), (E, 1, False, None), (min(3, E), min(2, K), False, None),
                                                   (E, K, True, [False] * E), (E, K, True, [e < 1 for e in range(E)])]
                     if k <= n]
            cases.append(cases[0])         # closes the last measured period
            await unit.run(cases)
            starts = tb.src["i_cmd"].transfer_cycles
            for i, case in enumerate(cases[:-1]):
                count = unit.expected(case)[0]
                measured, model = starts[i + 1] - starts[i], router_cycles(len(case["logits"]), count)
                dut._log.info("router n %d count %d: %d cycles (model %d)", len(case["logits"]), count, measured, model)
                assert measured == model, f"router cycles, n={len(case['logits'])} count={count}: {measured} != {model}"
            continue
        if isinstance(unit, SwiGLU):
            await unit.load_table(unit.random_table())
        beats = unit.random_beats(8)
        await unit.check(beats)
        ins, outs = tb.src["i_data"].transfer_cycles, tb.snk["o_data"].transfer_cycles
        lat = unit.c.LATENCY
        assert [o - i for i, o in zip(ins, outs)] == [lat] * len(beats), (ins, outs, lat)
        assert ins == list(range(ins[0], ins[0] + len(beats))), f"not one beat per cycle: {ins}"
        dut._log.info("%s: latency %d cycles, one beat per cycle", kind, lat)
