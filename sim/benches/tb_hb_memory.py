"""cocotb bench of ``hw/hb_memory.py``: a model of the HB channels and the golden ``sim/golden/hb_memory.py``.

Configuration (``bench_config()``): ``{"params": HBMemory kwargs, "cases": [case, ...], "report":
path or None}``. A case:

- ``{"kind": "random", "n": requests, "seed", "max_len", "stall", "cmd_stall", "gap", "lat": [lo, hi],
  "illegal"}``: random request lengths ``1..max_len`` at random bases, a fraction ``illegal`` of them
  illegal (length 0 or past the end); ``stall`` is the probability of an idle cycle on ``i_req``
  and of a not-ready cycle on ``o_data``, ``cmd_stall`` of a not-ready cycle on each channel's
  command stream, ``gap`` of an idle cycle on each channel's beat stream; each burst's latency is
  drawn from ``lat`` and a channel returns the beats of its ready bursts in random order,
  interleaved (each burst's own beats in order).
- ``{"kind": "fullrate", "n": planes, "plane_lines"}`` or ``{"kind": "fullrate", "lengths": [...]}``:
  back-to-back plane reads (of ``plane_lines`` each, or of the given lengths), no stalls, fixed
  latency ``params["latency"]``, channels answering in order; reports cycles and achieved / peak
  bandwidth, and checks the cycles against the analytical model ``sim.hb_memory.stream_cycles``.

Without ``cases`` (the regression, ``elmoe3d regress``) the bench makes its own from ``seeds`` and
``quick``: per seed a random case with stalls everywhere, one with long out-of-order latencies, one
with a stalled output, and a full-rate case.

Streams go through the shared drivers of ``sim/benches/streams.py``: a source on ``i_req`` and on
each channel's ``i_beat[c]`` (the channel model pulls its due beats), sinks on ``o_data`` and each
``o_cmd[c]`` (the channel model takes commands), every sink checking that valid and payload hold
until the transfer.

Every output line must equal the golden model's line (every byte exactly once, in order, ``last``
on each request's final line); at the end the status counters must equal the golden counters and
``busy + idle`` must equal the cycles since reset on every channel.
"""

import json
import random
from collections import deque

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly

from elmoe3d.hw.hb_memory import beat_layout, command_layout, line_layout, request_layout, status_layout
from elmoe3d.sim.benches.runner import bench_config
from elmoe3d.sim.benches.streams import StreamSink, StreamSource, cycle_counter, pack, unpack
from elmoe3d.sim.golden.hb_memory import HBConfig, HBMemory, split_bursts, stream_cycles

PERIOD_NS = 10


def default_cases(seeds, quick):
    """The regression's cases when the launcher gives none."""
    n = 30 if quick else 80
    cases = []
    for s in seeds:
        base = {"kind": "random", "n": n, "seed": s, "stall": 0.3, "cmd_stall": 0.3, "gap": 0.3, "illegal": 0.1}
        cases += [base, {**base, "seed": 100 + s, "stall": 0.0, "cmd_stall": 0.0, "gap": 0.6, "lat": [1, 40]},
                  {**base, "seed": 200 + s, "stall": 0.7, "cmd_stall": 0.0, "gap": 0.0},
                  {"kind": "fullrate", "lengths": [1, 5, 3, 12, 12][: 3 if quick else 5]}]
    return cases


class Channel:
    """One HB channel: takes tagged burst commands (a sink on ``o_cmd[c]``), returns their beats
    after a latency (a source on ``i_beat[c]``), bursts in random order and interleaved unless
    ``fifo``."""

    def __init__(self, tb, c, rng, lat, gap, cmd_stall, fifo):
        d = tb.dut
        self.tb, self.c, self.rng, self.lat, self.fifo = tb, c, rng, lat, fifo
        self.cmd = StreamSink(d, f"o_cmd__{c}", d.clk, stall=cmd_stall, rng=random.Random(rng.random()))
        self.beat = StreamSource(d, f"i_beat__{c}", d.clk, idle=gap, rng=random.Random(rng.random()))
        self.bursts = []         # [tag, row, beats left, ready cycle]
        self.cur = None          # the burst whose beat is on the bus

    def on_cmd(self, bits, cycle):
        cmd = unpack(self.tb.cmd_l, bits)
        self.bursts.append([int(cmd.tag), int(cmd.row), int(cmd.beats), cycle + self.rng.randint(*self.lat)])
        self.tb.cmds[self.c].append((int(cmd.row), int(cmd.beats)))

    def pull(self, cycle):
        due = [b for b in self.bursts if b[3] <= cycle]
        if not due:
            return None
        self.cur = b = due[0] if self.fifo else self.rng.choice(due)
        return pack(self.tb.beat_l, {"data": self.tb.golden.contents(self.c, b[1]), "tag": b[0]})

    def on_beat(self, beat, cycle):
        b = self.cur
        b[1] += 1
        b[2] -= 1
        if b[2] == 0:
            self.bursts.remove(b)
        self.cur = None

    def start(self, cycle_of):
        return [cocotb.start_soon(self.cmd.serve(self.on_cmd, cycle_of)),
                cocotb.start_soon(self.beat.serve(self.pull, cycle_of, self.on_beat))]

    def stop(self):
        self.cmd.stop()
        self.beat.stop()


class TB:
    def __init__(self, dut, params):
        self.dut = dut
        self.params = params
        p = dict(params)
        p.pop("counter_bits", None)
        self.cfg = HBConfig(**p)
        self.req_l, self.line_l = request_layout(self.cfg), line_layout(self.cfg)
        self.cmd_l, self.beat_l = command_layout(self.cfg), beat_layout(self.cfg)
        self.status_l = status_layout(self.cfg, params.get("counter_bits", 32))
        self.cycle = cycle_counter(PERIOD_NS)
        dut.rst.value = 1
        dut.i_req__valid.value = 0
        dut.i_req__payload.value = 0
        dut.o_data__ready.value = 0
        for c in range(self.cfg.channels):
            getattr(dut, f"i_beat__{c}__valid").value = 0
            getattr(dut, f"i_beat__{c}__payload").value = 0
            getattr(dut, f"o_cmd__{c}__ready").value = 0
        cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns").start())

    async def reset(self, drivers):
        """Reset with every driver idle; returns the cycle number at which reset is released."""
        d = self.dut
        await FallingEdge(d.clk)
        for drv in drivers:                     # nothing left over from the previous case
            drv.reset()
        d.rst.value = 1
        for _ in range(2):
            await FallingEdge(d.clk)
        d.rst.value = 0
        return self.cycle()

    def _requests(self, case, rng):
        cfg = self.cfg
        if case["kind"] == "fullrate":
            lengths = case.get("lengths") or [case["plane_lines"]] * case["n"]
            return [((i * L) % (cfg.lines - L + 1), L) for i, L in enumerate(lengths)]
        out = []
        for _ in range(case["n"]):
            length = rng.randint(1, case.get("max_len", 3 * cfg.burst))
            base = rng.randrange(0, cfg.lines - length + 1)
            u = rng.random()
            if u < case.get("illegal", 0) / 2:
                length = 0
            elif u < case.get("illegal", 0):
                base = cfg.lines - rng.randint(0, length - 1) - 1 if length > 1 else cfg.lines - 1
                length = cfg.lines - base + rng.randint(1, 4)
                length = min(length, (1 << cfg.len_bits) - 1)
            out.append((base, length))
        return out

    async def run_case(self, case):
        d = self.dut
        cfg = self.cfg
        rng = random.Random(case.get("seed", 0))
        full = case["kind"] == "fullrate"
        stall = 0.0 if full else case.get("stall", 0.0)
        lat = [cfg.latency, cfg.latency] if full else case.get("lat", [1, 2 * cfg.latency])
        self.golden = HBMemory(cfg)
        self.cmds = [[] for _ in range(cfg.channels)]
        chans = [Channel(self, c, rng, lat, 0.0 if full else case.get("gap", 0.0),
                         0.0 if full else case.get("cmd_stall", 0.0), full or case.get("in_order", False))
                 for c in range(cfg.channels)]
        req = StreamSource(d, "i_req", d.clk, idle=stall, rng=random.Random(rng.random()))
        out = StreamSink(d, "o_data", d.clk, stall=stall, rng=random.Random(rng.random()))
        sinks = [out] + [ch.cmd for ch in chans]
        t0 = await self.reset([req, *sinks, *[ch.beat for ch in chans]])
        reqs = self._requests(case, rng)
        expected = deque()
        accepted = []
        st = {"lines": 0, "first_req": None, "last_line": None, "taken": 0}

        def on_req(beat, cycle):
            cur = reqs[st["taken"]]
            st["taken"] += 1
            if st["first_req"] is None:
                st["first_req"] = cycle
            lines = self.golden.request(*cur)
            if lines is not None:
                accepted.append(cur)
                for i, line in enumerate(lines):
                    expected.append((line, i == len(lines) - 1))
                st["lines"] += len(lines)

        def on_line(bits, cycle):
            got = unpack(self.line_l, bits)
            assert expected, f"cycle {cycle}: a line no request asked for"
            line, last = expected.popleft()
            mask = (1 << cfg.width) - 1       # channel c's beat: bits [c*width, (c+1)*width) of data
            actual = [(int(got.data) >> (c * cfg.width)) & mask for c in range(cfg.channels)]
            assert actual == line and bool(got.last) == last, \
                f"cycle {cycle}: line {actual} last={bool(got.last)}, expected {line} last={last}"
            st["last_line"] = cycle

        words = [pack(self.req_l, {"base": b, "length": n}) for b, n in reqs]
        sender = cocotb.start_soon(req.send(words, self.cycle, on_req))
        tasks = [cocotb.start_soon(out.serve(on_line, self.cycle))]
        for ch in chans:
            tasks += ch.start(self.cycle)
        while st["taken"] < len(reqs) or expected:
            await FallingEdge(d.clk)
            cycle = self.cycle() - t0
            if cycle > 200 * (st["lines"] + len(reqs) - st["taken"] + 10) + 5000:
                raise AssertionError(f"deadlock: {len(expected)} lines outstanding after {cycle} cycles; "
                                     f"channel bursts {[ch.bursts for ch in chans]}, "
                                     f"commands {[c[-3:] for c in self.cmds]}")
        await sender
        out.stall = 0.0
        for _ in range(3 * cfg.latency + 10):       # nothing more may come out (on_line refuses it)
            await FallingEdge(d.clk)
        await ReadOnly()
        cycle = self.cycle() - t0
        status = unpack(self.status_l, int(d.o_status.value))
        for drv in [out, *chans]:
            drv.stop()
        for t in tasks:
            await t
        g = self.golden.counters()
        mod = 1 << self.params.get("counter_bits", 32)       # the counters wrap
        for name in ("requests", "errors", "bursts"):
            assert int(getattr(status, name)) == g[name] % mod, f"{name}: RTL {int(getattr(status, name))}, golden {g[name]}"
        assert bool(status.error) == (g["errors"] > 0)
        busy = [int(status.busy[c]) for c in range(cfg.channels)]
        for c in range(cfg.channels):
            assert int(status.beats[c]) == g["beats"][c] % mod, f"channel {c} beats {int(status.beats[c])}, golden {g['beats'][c]}"
            assert (busy[c] + int(status.idle[c])) % mod == cycle % mod, f"channel {c}: busy + idle != {cycle} cycles"
        # every command matches the golden burst split (the address map)
        n_lines = st["lines"]
        result = {"case": case, "lines": n_lines, "cycles": cycle, "counters": g, "busy": busy,
                  "held_cycles": sum(s.hold.checked for s in sinks)}
        if st["first_req"] is not None and st["last_line"] is not None:
            span = st["last_line"] - st["first_req"] + 1
            result.update(span_cycles=span, achieved_fraction=n_lines / span)
            if full:
                model = stream_cycles(cfg, [n for _, n in reqs])
                assert span == model, f"full-rate reads of {[n for _, n in reqs]} lines: {span} cycles, model {model}"
        exp_cmds = []
        for base, length in accepted:
            exp_cmds += split_bursts(cfg, base, length)
        for c in range(cfg.channels):
            assert self.cmds[c] == exp_cmds, f"channel {c} commands differ from the golden burst split"
        return result


@cocotb.test()
async def hb_matches_golden(dut):
    conf = bench_config()
    tb = TB(dut, conf["params"])
    report = []
    cases = conf.get("cases") or default_cases(conf.get("seeds", [1]), conf.get("quick", False))
    for case in cases:
        out = await tb.run_case(case)
        dut._log.info("case %s: %d lines in %d cycles %s", case, out["lines"], out["cycles"],
                      f"achieved {out.get('achieved_fraction', 0):.4f} of peak" if case["kind"] == "fullrate" else "")
        report.append(out)
    if conf.get("report"):
        with open(conf["report"], "w") as f:
            json.dump(report, f, indent=2)
