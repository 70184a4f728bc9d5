"""cocotb bench of the HB write interface (``hw/hb_write.py``).

Configuration (``bench_config()``): the generator ``params``, ``seeds``, ``quick`` (fewer
requests), ``idle`` (probability of an idle cycle before each request and line on ``wr``),
``stall`` (probability of a not-ready cycle on every channel's command and data streams and on
``wr.done``), ``ack_delay`` (the most cycles a channel waits before acknowledging a burst).

Each channel is a Python model (:class:`Channel`): it takes burst commands and beats with its own
random stalls, pairs them in order, and acknowledges each complete burst after a random delay,
in order, writing the burst into its memory when the acknowledgement transfers. It checks that
the design holds ``valid`` and the payload of ``o_wcmd`` and ``o_wdata`` until the transfer.

The checks, against the golden model ``sim/golden/hb_memory.py``: every channel received exactly the
commands ``split_bursts`` gives, in order; every byte of the written image, located with
``address_map``, equals the byte the client sent; ``wr.done`` came once per request, in order,
with payload 1 exactly for the illegal ones, and only after every channel had acknowledged every
burst of that request (and of the ones before it); no line was taken for an illegal request; the
status counters equal the golden counts.
"""

import random
from collections import deque

import cocotb
from amaranth.lib import data
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly, RisingEdge

from ...hw.hb_write import write_command_layout, write_status_layout
from ...hw.protocols import line_layout, request_layout
from ...hw.tops import get_top
from ..golden.hb_memory import address_map, is_legal, split_bursts
from .runner import bench_config
from .streams import StreamSink, StreamSource, cycle_counter, pack

PERIOD_NS = 10


cycle = cycle_counter(PERIOD_NS)


class Channel:
    """One HB channel: command and data sinks with random stalls, in-order delayed acks."""

    def __init__(self, dut, c, cfg, rng, *, stall, ack_delay):
        self.c, self.cfg, self.rng = c, cfg, rng
        self.stall, self.ack_delay = stall, ack_delay
        self.clk = dut.clk
        self.cmd = [getattr(dut, f"o_wcmd__{c}__{s}") for s in ("valid", "ready", "payload")]
        self.dat = [getattr(dut, f"o_wdata__{c}__{s}") for s in ("valid", "ready", "payload")]
        self.ack = [getattr(dut, f"i_wack__{c}__{s}") for s in ("valid", "ready", "payload")]
        self.cmd_layout = write_command_layout(cfg)
        self.commands = []           # every command received, (row, beats)
        self.beats = []              # every beat received
        self.mem = {}                # row -> beat, written at the ack
        self.acks = 0
        self._paired = 0             # commands already paired with their beats
        self._used = 0               # beats already paired
        self._pending = deque()      # (earliest ack cycle, row, [beats], ack payload)

    def reset(self):
        self.cmd[1].value = 0
        self.dat[1].value = 0
        self.ack[0].value = 0
        self.ack[2].value = 0

    async def run(self):
        held = {"cmd": None, "dat": None}
        now = 0
        while True:
            await FallingEdge(self.clk)
            now += 1
            self.cmd[1].value = int(self.rng.random() >= self.stall)
            self.dat[1].value = int(self.rng.random() >= self.stall)
            ack_valid = bool(self._pending) and self._pending[0][0] <= now
            self.ack[0].value = int(ack_valid)
            if ack_valid:
                self.ack[2].value = self._pending[0][3]      # random, ignored by the design
            await ReadOnly()
            for name, (valid, ready, payload) in (("cmd", self.cmd), ("dat", self.dat)):
                v = int(valid.value)
                p = int(payload.value) if v else None
                if held[name] is not None:
                    assert v, f"channel {self.c} {name}: valid dropped before the transfer"
                    assert p == held[name], f"channel {self.c} {name}: payload changed before the transfer"
                if v and int(ready.value):
                    if name == "cmd":
                        cmd = data.Const(self.cmd_layout, p)
                        self.commands.append((int(cmd.row), int(cmd.beats)))
                    else:
                        self.beats.append(p)
                    held[name] = None
                else:
                    held[name] = p if v else None
            if ack_valid and int(self.ack[1].value):
                _, row, beats, _ = self._pending.popleft()
                for j, b in enumerate(beats):
                    self.mem[row + j] = b
                self.acks += 1
            # pair complete bursts (command and all its beats here) and schedule their acks
            while self._paired < len(self.commands):
                row, n = self.commands[self._paired]
                if len(self.beats) - self._used < n:
                    break
                beats = self.beats[self._used:self._used + n]
                self._paired += 1
                self._used += n
                self._pending.append((now + 1 + self.rng.randint(0, self.ack_delay), row, beats,
                                      self.rng.getrandbits(1)))


class TB:
    def __init__(self, dut, seed, *, idle, stall, ack_delay):
        conf = bench_config()
        self.dut = dut
        self.params = get_top("hb_write").resolve(conf["params"])
        self.comp = get_top("hb_write").build(**self.params)
        self.cfg = cfg = self.comp.config
        self.rng = random.Random(seed)
        clk = dut.clk
        self.req = StreamSource(dut, "wr__req", clk, idle=idle, rng=random.Random(seed * 7 + 1))
        self.data = StreamSource(dut, "wr__data", clk, idle=idle, rng=random.Random(seed * 7 + 2))
        self.done = StreamSink(dut, "wr__done", clk, stall=stall, rng=random.Random(seed * 7 + 3))
        self.channels = [Channel(dut, c, cfg, random.Random(seed * 101 + c), stall=stall, ack_delay=ack_delay)
                         for c in range(cfg.channels)]
        self.req_layout = request_layout(cfg.addr_bits, cfg.len_bits)
        self.line_layout = line_layout(cfg.channels * cfg.width)
        self.tasks = []

    async def reset(self):
        for s in (self.req, self.data, self.done, *self.channels):
            s.reset()
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 3)
        self.dut.rst.value = 0
        await RisingEdge(self.dut.clk)
        self.tasks = [cocotb.start_soon(ch.run()) for ch in self.channels]

    def stop(self):
        for t in self.tasks:
            t.cancel()

    def random_line(self):
        return self.rng.getrandbits(self.cfg.channels * self.cfg.width)

    async def run(self, requests):
        """Write ``requests`` [(base, length)] with random data; check everything. Returns lines written."""
        cfg = self.cfg
        lines = []                      # (row, line) in the order the client sends them
        for base, length in requests:
            if is_legal(cfg, base, length):
                lines += [(base + j, self.random_line()) for j in range(length)]
        words = [pack(self.req_layout, {"base": b, "length": n}) for b, n in requests]
        # `last` toggles at random: the design must ignore it
        line_words = [pack(self.line_layout, {"data": d, "last": self.rng.getrandbits(1)}) for _, d in lines]
        t_req = cocotb.start_soon(self.req.send(words))
        t_data = cocotb.start_soon(self.data.send(line_words))
        snapshot = lambda: [ch.acks for ch in self.channels]       # noqa: E731
        self.done.transfer_cycles = []
        got = await self.done.recv(len(requests), snapshot)
        await t_req
        await t_data
        # done: one per request, in order, 1 exactly for the illegal ones
        legal = [is_legal(cfg, b, n) for b, n in requests]
        assert got == [0 if ok else 1 for ok in legal], f"done payloads {got} for requests {requests}"
        # done only after every channel acknowledged every burst up to and including that request
        need = 0
        for i, (b, n) in enumerate(requests):
            need += len(split_bursts(cfg, b, n))
            acks = self.done.transfer_cycles[i]
            assert min(acks) >= need, f"done of request {i} {requests[i]} after acks {acks}, needs {need} each"
        # commands and beats per channel
        expect_cmds = [c for b, n in requests for c in split_bursts(cfg, b, n)]
        mask = (1 << cfg.width) - 1
        for ch in self.channels:
            assert ch.commands == expect_cmds, f"channel {ch.c}: commands {ch.commands} != {expect_cmds}"
            expect_beats = [(d >> (ch.c * cfg.width)) & mask for _, d in lines]
            assert ch.beats == expect_beats, f"channel {ch.c}: beats differ from the lines' channel slices"
            assert ch.acks == len(expect_cmds)
        # the written image, byte by byte through the golden address map
        image = {}
        for row, d in lines:
            for k in range(cfg.line_bytes):
                image[row * cfg.line_bytes + k] = (d >> (8 * k)) & 0xFF
        for addr, byte in image.items():
            c, row, k = address_map(cfg, addr)
            got_byte = (self.channels[c].mem[row] >> (8 * k)) & 0xFF
            assert got_byte == byte, f"byte {addr} (channel {c} row {row} byte {k}): {got_byte:#x} != {byte:#x}"
        for ch in self.channels:            # nothing written outside the requests
            assert set(ch.mem) <= {row for row, _ in lines}, f"channel {ch.c} wrote rows outside the requests"
        return len(lines)

    def status(self):
        return data.Const(write_status_layout(self.comp.counter_bits), int(self.dut.o_status.value))

    def check_status(self, requests, lines):
        cfg = self.cfg
        cb = self.comp.counter_bits
        legal = [r for r in requests if is_legal(cfg, *r)]
        st = self.status()
        wrap = (1 << cb) - 1
        exp = {"requests": len(legal) & wrap, "errors": (len(requests) - len(legal)) & wrap,
               "lines": lines & wrap, "bursts": sum(len(split_bursts(cfg, *r)) for r in legal) & wrap,
               "error": int(len(legal) != len(requests))}
        got = {k: int(getattr(st, k)) for k in exp}
        assert got == exp, f"status {got} != {exp}"


def random_requests(cfg, rng, count, illegal=0.1):
    top = min((1 << cfg.len_bits) - 1, cfg.lines)
    out = []
    for _ in range(count):
        if rng.random() < illegal:
            base = rng.randrange(cfg.lines)
            kind = rng.randrange(2)
            if kind == 0 or cfg.lines - base + 1 > (1 << cfg.len_bits) - 1:
                out.append((base, 0))
            else:
                out.append((base, rng.randint(cfg.lines - base + 1, (1 << cfg.len_bits) - 1)))
        else:
            n = rng.choice([1, rng.randint(1, min(top, 3 * cfg.burst + 1)), rng.randint(1, min(top, 8))])
            out.append((rng.randint(0, cfg.lines - n), n))
    return out


def corner_requests(cfg):
    top = min((1 << cfg.len_bits) - 1, cfg.lines)
    L, B = cfg.lines, cfg.burst
    reqs = [(0, 1), (L - 1, 1), (0, 0), (L - 1, 0), (L - 1, 2), (L - top, top), (0, min(B, top)),
            (L - min(B + 1, top), min(B + 1, top)), (1, top), (0, top)]
    if (1 << cfg.len_bits) - 1 > L:
        reqs.append((0, L + 1))
    return reqs


async def _start(dut):
    cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns").start())


@cocotb.test()
async def test_corners(dut):
    """Lengths 0, 1, burst, burst + 1, the largest; last row; one past the end; with stalls."""
    conf = bench_config()
    await _start(dut)
    tb = TB(dut, conf["seeds"][0], idle=conf.get("idle", 0.3), stall=conf.get("stall", 0.3),
            ack_delay=conf.get("ack_delay", 6))
    await tb.reset()
    reqs = corner_requests(tb.cfg)
    n = await tb.run(reqs)
    tb.check_status(reqs, n)
    tb.stop()
    dut._log.info("corners: %d requests, %d lines bit-exact", len(reqs), n)


@cocotb.test()
async def test_random(dut):
    """Random requests (10 % illegal) and data over every seed, random stalls and ack delays."""
    conf = bench_config()
    count = 20 if conf.get("quick") else 60
    await _start(dut)
    for seed in conf["seeds"]:
        tb = TB(dut, seed, idle=conf.get("idle", 0.3), stall=conf.get("stall", 0.3),
                ack_delay=conf.get("ack_delay", 6))
        await tb.reset()
        reqs = random_requests(tb.cfg, tb.rng, count)
        n = await tb.run(reqs)
        tb.check_status(reqs, n)
        tb.stop()
        dut._log.info("seed %d: %d requests, %d lines bit-exact", seed, len(reqs), n)


@cocotb.test()
async def test_full_rate(dut):
    """No stalls, immediate acks: a request's lines are taken one per cycle."""
    conf = bench_config()
    await _start(dut)
    tb = TB(dut, conf["seeds"][0], idle=0.0, stall=0.0, ack_delay=0)
    await tb.reset()
    cfg = tb.cfg
    n = min((1 << cfg.len_bits) - 1, cfg.lines, 4 * cfg.burst + 1)
    tb.data.transfer_cycles = []
    send = tb.data.send
    tb.data.send = lambda words: send(words, cycle)               # record the transfer cycles
    reqs = [(0, n), (cfg.lines - n, n)]
    lines = await tb.run(reqs)
    tb.check_status(reqs, lines)
    tb.stop()
    t = tb.data.transfer_cycles
    for start in (0, n):
        seg = t[start:start + n]
        assert seg == list(range(seg[0], seg[0] + n)), f"lines not one per cycle: {seg}"
