"""cocotb bench of the fill path (``hw/fill_path.py``).

Configuration (``bench_config()``): the generator ``params``, ``seeds``, ``quick`` (fewer arms),
``idle`` (probability of an idle cycle before each incoming line and each arm), ``stall``
(probability of a not-ready cycle on ``o_line``, ``wr.req``, ``wr.data`` and ``o_done``),
``done_delay`` (the most cycles the HB side model waits before answering ``done``).

The bench sends random lines on ``i_line`` and random arms (legal and illegal) on ``i_arm`` with
random gaps, keeps sending lines until every arm's fill is complete, and answers the write port
like ``HBWrite`` does: a ``done`` per request, in order, after a legal request's ``length`` lines
(payload 1 for an illegal one). The golden (:func:`golden_fill`) decides from the recorded
transfer cycles which lines each fill covers (those after its arm's transfer cycle) and forms
the HB lines with :func:`elmoe3d.hw.width_adapter.golden_adapt`, dropping the ones past
``length``. Checks: ``o_line`` carries every input line bit-exact in order; ``wr.req`` carries
every arm unchanged in order; ``wr.data`` carries exactly the golden HB lines (``last`` on each
fill's final one); ``o_done`` forwards the dones; the status counters; every output stream holds
``valid`` and its payload until the transfer.
"""

import random

import cocotb
from amaranth.lib import data
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly, RisingEdge

from ...hw.fill_path import fill_in_lines, fill_status_layout
from ...hw.protocols import line_layout, request_layout
from ...hw.tops import get_top
from ...hw.width_adapter import golden_adapt
from .runner import bench_config
from .streams import StreamSource, cycle_counter, pack

PERIOD_NS = 10


cycle = cycle_counter(PERIOD_NS)


class Monitor:
    """A sink that runs until stopped: random ``ready``, records ``(payload, cycle)``, checks holds."""

    def __init__(self, dut, port, clk, *, stall, rng):
        self.valid = getattr(dut, f"{port}__valid")
        self.ready = getattr(dut, f"{port}__ready")
        self.payload = getattr(dut, f"{port}__payload")
        self.name, self.clk, self.stall, self.rng = port, clk, stall, rng
        self.got = []

    def reset(self):
        self.ready.value = 0

    async def run(self):
        held = None
        while True:
            await FallingEdge(self.clk)
            ready = self.rng.random() >= self.stall
            self.ready.value = int(ready)
            await ReadOnly()
            v = int(self.valid.value)
            p = int(self.payload.value) if v else None
            if held is not None:
                assert v, f"{self.name}: valid dropped before the transfer"
                assert p == held, f"{self.name}: payload changed before the transfer"
            if v and ready:
                self.got.append((p, cycle()))
                held = None
            else:
                held = p if v else None


def golden_fill(comp, arms, arm_cycles, lines, line_cycles):
    """HB lines ``[(data, last)]`` the design must send on ``wr.data``, and whether every fill is complete.

    ``arms``: ``[(base, length)]``; ``lines``: ``[(data, last)]`` in transfer order, with their
    transfer cycles. A fill covers the lines transferred after its arm's cycle; the next arm is
    taken only after the previous fill's lines (the design's rule), so the arms apply in order.
    """
    out, a, left, cur = [], 0, 0, None
    covered = []

    def finish():
        hb = golden_adapt([(d, int(j == len(covered) - 1)) for j, (d, _) in enumerate(covered)],
                          comp.in_width, comp.hb_width)[:cur[1]]
        out.extend((d, int(j == len(hb) - 1)) for j, (d, _) in enumerate(hb))

    for (d, last), t in zip(lines, line_cycles):
        while left == 0 and a < len(arm_cycles) and arm_cycles[a] < t:
            base, length = arms[a]
            a += 1
            if length and base + length <= (1 << comp.hb_addr_bits):
                cur, covered = (base, length), []
                left = fill_in_lines(comp.in_width, comp.hb_width, length)
        if left:
            covered.append((d, last))
            left -= 1
            if left == 0:
                finish()
    # arms taken after the last line: illegal ones complete at once, a legal one is incomplete
    complete = left == 0 and all(not (n and b + n <= (1 << comp.hb_addr_bits)) for b, n in arms[a:])
    return out, complete and len(arm_cycles) == len(arms)


class TB:
    def __init__(self, dut, seed, *, idle, stall, done_delay):
        conf = bench_config()
        self.dut = dut
        top = get_top("fill_path")
        self.params = top.resolve(conf["params"])
        self.comp = c = top.build(**self.params)
        self.rng = random.Random(seed)
        self.done_delay = done_delay
        clk = dut.clk
        r = lambda n: random.Random(seed * 31 + n)          # noqa: E731
        self.src_line = StreamSource(dut, "i_line", clk, idle=idle, rng=r(1))
        self.src_arm = StreamSource(dut, "i_arm", clk, idle=max(idle, 0.5), rng=r(2))
        self.src_done = StreamSource(dut, "wr__done", clk, idle=0.0, rng=r(3))
        self.mons = {p: Monitor(dut, p, clk, stall=stall, rng=r(4 + n))
                     for n, p in enumerate(("o_line", "wr__req", "wr__data", "o_done"))}
        self.line_layout = line_layout(c.in_width)
        self.hb_line_layout = line_layout(c.hb_width)
        self.req_layout = request_layout(c.hb_addr_bits, c.hb_len_bits)
        self.tasks = []

    async def reset(self):
        for s in (self.src_line, self.src_arm, self.src_done, *self.mons.values()):
            s.reset()
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 3)
        self.dut.rst.value = 0
        await RisingEdge(self.dut.clk)
        self.tasks = [cocotb.start_soon(mon.run()) for mon in self.mons.values()]
        self.tasks.append(cocotb.start_soon(self.hb_side()))

    def stop(self):
        for t in self.tasks:
            t.cancel()

    def legal(self, base, length):
        return length != 0 and base + length <= (1 << self.comp.hb_addr_bits)

    async def hb_side(self):
        """Answers the write port: done per request once its lines arrived, after a random delay."""
        answered, lines_used = 0, 0
        reqs, data_in = self.mons["wr__req"].got, self.mons["wr__data"].got
        while True:
            await FallingEdge(self.dut.clk)
            if answered < len(reqs):
                req = data.Const(self.req_layout, reqs[answered][0])
                base, length = int(req.base), int(req.length)
                need = length if self.legal(base, length) else 0
                if len(data_in) >= lines_used + need:
                    await ClockCycles(self.dut.clk, self.rng.randint(0, self.done_delay))
                    await self.src_done.send([0 if need else 1])
                    lines_used += need
                    answered += 1

    def random_arm(self, hb_lines):
        c, r = self.comp, self.rng
        top = min((1 << c.hb_len_bits) - 1, hb_lines)
        if r.random() < 0.15:
            base = r.randrange(hb_lines)
            if r.random() < 0.5 or hb_lines - base + 1 > (1 << c.hb_len_bits) - 1:
                return (base, 0)
            return (base, r.randint(hb_lines - base + 1, (1 << c.hb_len_bits) - 1))
        n = r.choice([1, r.randint(1, min(top, 9))])
        return (r.randint(0, hb_lines - n), n)

    async def run(self, arms, first_chunk=None):
        c = self.comp
        words = [pack(self.req_layout, {"base": b, "length": n}) for b, n in arms]
        self.src_arm.transfer_cycles, self.src_line.transfer_cycles = [], []
        arm_task = cocotb.start_soon(self.src_arm.send(words, cycle))
        lines = []
        for _ in range(10000):   # lines in chunks until every fill is complete
            size = first_chunk if first_chunk and not lines else self.rng.randint(1, 6)
            chunk = [(self.rng.getrandbits(c.in_width), self.rng.getrandbits(1)) for _ in range(size)]
            lines += chunk
            await self.src_line.send([pack(self.line_layout, {"data": d, "last": la}) for d, la in chunk], cycle)
            _, complete = golden_fill(c, arms, self.src_arm.transfer_cycles, lines,
                                      self.src_line.transfer_cycles)
            if complete:
                break
        else:
            raise AssertionError(f"fills incomplete after {len(lines)} lines: arms taken at {self.src_arm.transfer_cycles}")
        await arm_task
        expect_hb, _ = golden_fill(c, arms, self.src_arm.transfer_cycles, lines, self.src_line.transfer_cycles)
        mons = self.mons
        for _ in range(2000):
            if (len(mons["o_line"].got) >= len(lines) and len(mons["o_done"].got) >= len(arms)
                    and len(mons["wr__data"].got) >= len(expect_hb)):
                break
            await RisingEdge(self.dut.clk)
        await ClockCycles(self.dut.clk, 20)       # anything extra would show up now
        got_lines = [(int(x.data), int(x.last)) for x in (data.Const(self.line_layout, p) for p, _ in mons["o_line"].got)]
        assert got_lines == lines, f"o_line: {len(got_lines)} lines, first difference at " \
            f"{next((i for i, (g, e) in enumerate(zip(got_lines, lines)) if g != e), min(len(got_lines), len(lines)))}"
        got_reqs = [(int(x.base), int(x.length)) for x in (data.Const(self.req_layout, p) for p, _ in mons["wr__req"].got)]
        assert got_reqs == arms, f"wr.req {got_reqs} != arms {arms}"
        got_hb = [(int(x.data), int(x.last)) for x in (data.Const(self.hb_line_layout, p) for p, _ in mons["wr__data"].got)]
        assert got_hb == expect_hb, f"wr.data: {len(got_hb)} lines, expected {len(expect_hb)}; first difference at " \
            f"{next((i for i, (g, e) in enumerate(zip(got_hb, expect_hb)) if g != e), min(len(got_hb), len(expect_hb)))}"
        assert [p for p, _ in mons["o_done"].got] == [0 if self.legal(*a) else 1 for a in arms]
        st = data.Const(fill_status_layout(c.counter_bits), int(self.dut.o_status.value))
        wrap = (1 << c.counter_bits) - 1
        legal = sum(self.legal(*a) for a in arms)
        exp = {"fills": legal & wrap, "errors": (len(arms) - legal) & wrap, "lines": len(lines) & wrap,
               "hb_lines": len(expect_hb) & wrap}
        assert {k: int(getattr(st, k)) for k in exp} == exp, f"status {st} != {exp}"
        return len(lines), len(expect_hb)


async def _start(dut):
    cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns").start())


def _tb(dut, seed, conf, **kw):
    opts = dict(idle=conf.get("idle", 0.3), stall=conf.get("stall", 0.3), done_delay=conf.get("done_delay", 5))
    opts.update(kw)
    return TB(dut, seed, **opts)


@cocotb.test()
async def test_corners(dut):
    """Length 1, the ratio's boundaries, the last line, one past the end, length 0, no arm at all."""
    conf = bench_config()
    await _start(dut)
    tb = _tb(dut, conf["seeds"][0], conf)
    await tb.reset()
    c = tb.comp
    L = 1 << c.hb_addr_bits
    top = min((1 << c.hb_len_bits) - 1, L, 3 * tb.comp.ratio + 1)
    arms = [(0, 1), (L - 1, 1), (0, 0), (L - 1, 2), (L - top, top), (0, min(top, c.ratio)),
            (0, min(top, c.ratio + 1)), (1, min(top, max(1, c.ratio - 1)))]
    n, h = await tb.run(arms)
    tb.stop()
    dut._log.info("corners: %d arms, %d lines passed, %d HB lines bit-exact", len(arms), n, h)


@cocotb.test()
async def test_random(dut):
    """Random armed/unarmed sequences over every seed, random gaps and stalls on every stream."""
    conf = bench_config()
    count = 8 if conf.get("quick") else 25
    await _start(dut)
    for seed in conf["seeds"]:
        tb = _tb(dut, seed, conf)
        await tb.reset()
        arms = [tb.random_arm(1 << tb.comp.hb_addr_bits) for _ in range(count)]
        n, h = await tb.run(arms)
        tb.stop()
        dut._log.info("seed %d: %d arms, %d lines passed, %d HB lines bit-exact", seed, len(arms), n, h)


@cocotb.test()
async def test_full_rate(dut):
    """No gaps or stalls: one line per cycle on i_line (one per ``ratio`` cycles while a downsizing
    fill runs), o_line one cycle behind, also while filling."""
    conf = bench_config()
    await _start(dut)
    tb = _tb(dut, conf["seeds"][0], conf, idle=0.0, stall=0.0, done_delay=0)
    tb.src_arm.idle = 0.0
    await tb.reset()
    c = tb.comp
    n = min((1 << c.hb_len_bits) - 1, 1 << c.hb_addr_bits, 8)
    first = fill_in_lines(c.in_width, c.hb_width, n) + 4
    await tb.run([(0, n)], first_chunk=first)
    ins = tb.src_line.transfer_cycles[:first]
    outs = [t for _, t in tb.mons["o_line"].got][:first]
    # downsizing while filling: an incoming line makes `ratio` HB lines, one per cycle on wr.data
    gap = c.ratio if c.mode == "down" else 1
    assert all(0 < b - a <= gap for a, b in zip(ins, ins[1:])), f"i_line slower than one per {gap} cycles: {ins}"
    if c.mode != "down":
        assert ins == list(range(ins[0], ins[0] + len(ins))), f"i_line not one per cycle: {ins}"
    assert outs == [t + 1 for t in ins], f"o_line not one cycle behind i_line: {ins} {outs}"
    tb.stop()
