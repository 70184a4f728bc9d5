"""cocotb bench of ``hw/hb_memory.py``: a model of the HB channels and the golden ``sim/hb_memory.py``.

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
  bandwidth.

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
from elmoe3d.sim.hb_memory import HBConfig, HBMemory, split_bursts


class Channel:
    """One HB channel: takes tagged burst commands, returns their beats after a latency."""

    def __init__(self, tb, c, rng, lat, gap, cmd_stall):
        d = tb.dut
        self.c, self.rng, self.lat, self.gap, self.cmd_stall = c, rng, lat, gap, cmd_stall
        self.cmd_valid = getattr(d, f"o_cmd__{c}__valid")
        self.cmd_ready = getattr(d, f"o_cmd__{c}__ready")
        self.cmd_payload = getattr(d, f"o_cmd__{c}__payload")
        self.beat_valid = getattr(d, f"i_beat__{c}__valid")
        self.beat_ready = getattr(d, f"i_beat__{c}__ready")
        self.beat_payload = getattr(d, f"i_beat__{c}__payload")
        self.tb = tb
        self.bursts = []         # [tag, row, beats left, ready cycle]
        self.cur = None          # the burst whose beat is on the bus
        self.fifo = False        # return bursts oldest first (an in-order channel)
        self.ready = 0

    def drive(self, cycle):
        r = int(self.rng.random() >= self.cmd_stall)
        if r != self.ready:
            self.cmd_ready.value = self.ready = r
        if self.cur is None:
            due = [b for b in self.bursts if b[3] <= cycle]
            if due and self.rng.random() >= self.gap:
                b = due[0] if self.fifo else self.rng.choice(due)
                self.cur = b
                self.beat_payload.value = self.tb.beat_l.const(
                    {"data": self.tb.golden.contents(self.c, b[1]), "tag": b[0]}).as_value().value
                self.beat_valid.value = 1
            else:
                self.beat_valid.value = 0

    def sample(self, cycle):
        if self.ready and self.cmd_valid.value:
            cmd = self.tb.cmd_l.from_bits(int(self.cmd_payload.value))
            lat = self.rng.randint(*self.lat)
            self.bursts.append([int(cmd.tag), int(cmd.row), int(cmd.beats), cycle + lat])
            self.tb.cmds[self.c].append((int(cmd.row), int(cmd.beats)))
        if self.cur is not None and self.beat_ready.value:
            b = self.cur
            b[1] += 1
            b[2] -= 1
            if b[2] == 0:
                self.bursts.remove(b)
            self.cur = None


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
        dut.rst.value = 1
        dut.i_req__valid.value = 0
        dut.i_req__payload.value = 0
        dut.o_data__ready.value = 0
        for c in range(self.cfg.channels):
            getattr(dut, f"i_beat__{c}__valid").value = 0
            getattr(dut, f"i_beat__{c}__payload").value = 0
            getattr(dut, f"o_cmd__{c}__ready").value = 0
        cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())

    async def reset(self):
        d = self.dut
        await FallingEdge(d.clk)
        d.i_req__valid.value = 0
        d.o_data__ready.value = 0
        for c in range(self.cfg.channels):      # nothing left over from the previous case
            getattr(d, f"i_beat__{c}__valid").value = 0
            getattr(d, f"o_cmd__{c}__ready").value = 0
        d.rst.value = 1
        for _ in range(2):
            await FallingEdge(d.clk)
        d.rst.value = 0

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
        await self.reset()
        rng = random.Random(case.get("seed", 0))
        full = case["kind"] == "fullrate"
        stall = 0.0 if full else case.get("stall", 0.0)
        lat = [cfg.latency, cfg.latency] if full else case.get("lat", [1, 2 * cfg.latency])
        self.golden = HBMemory(cfg)
        self.cmds = [[] for _ in range(cfg.channels)]
        chans = [Channel(self, c, rng, lat, 0.0 if full else case.get("gap", 0.0),
                         0.0 if full else case.get("cmd_stall", 0.0)) for c in range(cfg.channels)]
        for ch in chans:
            ch.fifo = full or case.get("in_order", False)
        reqs = deque(self._requests(case, rng))
        expected = deque()
        accepted = []
        n_lines = 0
        cur = None
        out_ready = 0
        cycle = 0
        first_req = last_line = None
        req_done = False
        while reqs or cur is not None or expected:
            await FallingEdge(d.clk)
            cycle += 1
            if cycle > 200 * (n_lines + len(reqs) + 10) + 5000:
                names = ["inflight", "head", "alloc", "rptr", "active", "left"] + [f"ch_{c}_slot_{t}_count" for c in range(cfg.channels) for t in range(cfg.slots)] + [f"slot_{t}_len" for t in range(cfg.slots)]
                dbg = {n: str(getattr(d, n).value) for n in names if hasattr(d, n)}
                raise AssertionError(f"{dbg} deadlock: {len(expected)} lines outstanding after {cycle} cycles; "
                                     f"channel bursts {[ch.bursts for ch in chans]}, commands {[c[-3:] for c in self.cmds]}")
            if cur is None:
                if reqs and rng.random() >= stall:
                    cur = reqs.popleft()
                    d.i_req__payload.value = self.req_l.const({"base": cur[0], "length": cur[1]}).as_value().value
                    d.i_req__valid.value = 1
                elif req_done:
                    d.i_req__valid.value = 0
            r = int(rng.random() >= stall)
            if r != out_ready:
                d.o_data__ready.value = out_ready = r
            for ch in chans:
                ch.drive(cycle)
            await ReadOnly()
            req_done = False
            if cur is not None and d.i_req__ready.value:
                if first_req is None:
                    first_req = cycle
                lines = self.golden.request(*cur)
                if lines is not None:
                    accepted.append(cur)
                    for i, line in enumerate(lines):
                        expected.append((line, i == len(lines) - 1))
                    n_lines += len(lines)
                cur = None
                req_done = True
            for ch in chans:
                ch.sample(cycle)
            if out_ready and d.o_data__valid.value:
                got = self.line_l.from_bits(int(d.o_data__payload.value))
                assert expected, f"cycle {cycle}: a line no request asked for"
                line, last = expected.popleft()
                actual = [int(got.data[c]) for c in range(cfg.channels)]
                assert actual == line and bool(got.last) == last, \
                    f"cycle {cycle}: line {actual} last={bool(got.last)}, expected {line} last={last}"
                last_line = cycle
        for _ in range(3 * cfg.latency + 10):       # nothing more may come out
            await FallingEdge(d.clk)
            d.i_req__valid.value = 0
            d.o_data__ready.value = 1
            for ch in chans:
                ch.drive(cycle)
            cycle += 1
            await ReadOnly()
            assert not d.o_data__valid.value, "an extra line after the last request"
            for ch in chans:
                ch.sample(cycle)
        status = self.status_l.from_bits(int(d.o_status.value))
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
        out = {"case": case, "lines": n_lines, "cycles": cycle, "counters": g, "busy": busy}
        if first_req is not None and last_line is not None:
            span = last_line - first_req + 1
            out.update(span_cycles=span, achieved_fraction=n_lines / span)
        exp_cmds = []
        for base, length in accepted:
            exp_cmds += split_bursts(cfg, base, length)
        for c in range(cfg.channels):
            assert self.cmds[c] == exp_cmds, f"channel {c} commands differ from the golden burst split"
        return out


@cocotb.test()
async def hb_matches_golden(dut):
    conf = bench_config()
    tb = TB(dut, conf["params"])
    report = []
    for case in conf["cases"]:
        out = await tb.run_case(case)
        dut._log.info("case %s: %d lines in %d cycles %s", case, out["lines"], out["cycles"],
                      f"achieved {out.get('achieved_fraction', 0):.4f} of peak" if case["kind"] == "fullrate" else "")
        report.append(out)
    if conf.get("report"):
        with open(conf["report"], "w") as f:
            json.dump(report, f, indent=2)
