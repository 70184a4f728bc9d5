"""cocotb bench of the off-chip memory interface (``hw/offchip.py``, top ``offchip``).

Configuration (``bench_config()``): the generator ``params``, ``seeds``, ``quick``, ``idle``/
``stall`` (probability of an idle cycle on every source, of a not-ready cycle on every sink,
the memory model's command, read-data and write-data sides included).

The memory model (:class:`MemoryModel`) holds an image of ``lines`` lines and applies the bus
commands strictly in order: it answers a read command transferred in cycle ``c`` with exactly
``length`` lines, the first no earlier than cycle ``c + latency``, taking random idle cycles,
and takes a write command's ``length`` lines from ``o_bus_wdata`` with random stalls. It checks
that every output stream of the interface holds valid and payload until the transfer, that
every command is legal (``1 <= length <= burst``, inside the image), and counts cycles in which
read data waited on ``i_bus_rdata.ready`` (none may, at ``latency >= 2``: credits).

Tests:

- ``test_random``: rounds of random read requests on every port and write requests (legal and
  illegal) running concurrently; a round's reads avoid the lines its writes touch, later rounds
  read them back (read after ``done``). Read data bit-exact, ``done`` payloads, status counters
  and the final image are checked.
- ``test_alternating``: two ports read long spans (several FIFO depths) while one consumer takes
  one line from port 0, then one from port 1, and so on: no deadlock, data exact.
- ``test_throughput``: no stalls: one read of ``n`` lines on port 0 takes exactly
  ``latency + n + READ_OVERHEAD`` cycles from the request transfer to the last line's transfer;
  reads on two ports at once share the bus at one line per cycle.
"""

import random
from collections import deque

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly, RisingEdge
from cocotb.utils import get_sim_time

from ...hw.offchip import READ_OVERHEAD, wdata_layout
from ...hw.protocols import line_layout, request_layout
from ...hw.tops import get_top
from .runner import bench_config
from .streams import StreamSink, StreamSource
from .tb_streams import pack, unpack

PERIOD_NS = 10


def cycle():
    return int(get_sim_time(unit="ns")) // PERIOD_NS


class MemoryModel:
    """The memory behind the bus (see the module docstring)."""

    def __init__(self, dut, comp, image, rng, *, stall=0.0, idle=0.0):
        self.dut, self.comp, self.image, self.rng = dut, comp, image, rng
        self.stall, self.idle = stall, idle
        self.queue = deque()              # [write, base, length, ready cycle, done]
        self.waited = 0                   # cycles read data was valid and not taken
        self.commands = 0
        self.stop = False

    def reset(self):
        self.dut.o_bus_cmd__ready.value = 0
        self.dut.o_bus_wdata__ready.value = 0
        self.dut.i_bus_rdata__valid.value = 0
        self.dut.i_bus_rdata__payload.value = 0

    async def run(self, limit):
        d, comp, r = self.dut, self.comp, self.rng
        lay_w = wdata_layout(comp.width)
        held = {"cmd": None, "wdata": None}
        r_holding = False
        while not self.stop:
            await FallingEdge(d.clk)
            c = cycle()
            assert c < limit, f"memory model: no progress by cycle {limit} (deadlock?)"
            d.o_bus_cmd__ready.value = int(not (self.stall and r.random() < self.stall))
            head = self.queue[0] if self.queue else None
            if not r_holding:
                if head and not head[0] and c >= head[3] and not (self.idle and r.random() < self.idle):
                    d.i_bus_rdata__payload.value = pack(lay_w, {"data": self.image[head[1] + head[4]]})
                    d.i_bus_rdata__valid.value = 1
                else:
                    d.i_bus_rdata__valid.value = 0
            w_ready = bool(head and head[0]) and not (self.stall and r.random() < self.stall)
            d.o_bus_wdata__ready.value = int(w_ready)
            await ReadOnly()
            # hold checks on the interface's outputs
            for port in ("cmd", "wdata"):
                valid = int(getattr(d, f"o_bus_{port}__valid").value)
                payload = int(getattr(d, f"o_bus_{port}__payload").value) if valid else None
                if held[port] is not None:
                    assert valid and payload == held[port], f"o_bus_{port}: valid/payload changed before transfer"
                ready = int(getattr(d, f"o_bus_{port}__ready").value)
                held[port] = payload if valid and not ready else None
            if int(d.o_bus_cmd__valid.value) and int(d.o_bus_cmd__ready.value):
                cmd = unpack(comp.cmd_layout, int(d.o_bus_cmd__payload.value))
                write, base, length = int(cmd.write), int(cmd.base), int(cmd.length)
                assert 1 <= length <= comp.burst and base + length <= comp.lines, f"illegal command {cmd}"
                self.queue.append([write, base, length, c + comp.latency, 0])
                self.commands += 1
            rv, rr = int(d.i_bus_rdata__valid.value), int(d.i_bus_rdata__ready.value)
            if rv and rr:
                head[4] += 1
                if head[4] == head[2]:
                    self.queue.popleft()
                r_holding = False
            else:
                r_holding = bool(rv)
                self.waited += bool(rv)
            if int(d.o_bus_wdata__valid.value) and w_ready:
                self.image[head[1] + head[4]] = int(unpack(lay_w, int(d.o_bus_wdata__payload.value)).data)
                head[4] += 1
                if head[4] == head[2]:
                    self.queue.popleft()


class TB:
    def __init__(self, dut, seed, *, idle, stall):
        cfg = bench_config()
        self.cfg, self.dut = cfg, dut
        self.comp = comp = get_top("offchip").build(**cfg["params"])
        self.rng = random.Random(seed)
        self.image = [self.rng.getrandbits(comp.width) for _ in range(comp.lines)]
        self.mem = MemoryModel(dut, comp, list(self.image), random.Random(seed * 3 + 1), stall=stall, idle=idle)
        clk = dut.clk
        P = comp.read_ports
        self.req_lay = request_layout(comp.addr_bits, comp.len_bits)
        self.line_lay = line_layout(comp.width)
        self.rreq = [StreamSource(dut, f"rd__{p}__req", clk, idle=idle, rng=random.Random(seed * 5 + p)) for p in range(P)]
        self.rdat = [StreamSink(dut, f"rd__{p}__data", clk, stall=stall, rng=random.Random(seed * 7 + p)) for p in range(P)]
        self.wreq = StreamSource(dut, "wr__req", clk, idle=idle, rng=random.Random(seed * 11))
        self.wdat = StreamSource(dut, "wr__data", clk, idle=idle, rng=random.Random(seed * 13))
        self.done = StreamSink(dut, "wr__done", clk, stall=stall, rng=random.Random(seed * 17))
        self.errors = self.read_lines = self.written = 0

    async def reset(self, limit=200000):
        for s in (*self.rreq, *self.rdat, self.wreq, self.wdat, self.done, self.mem):
            s.reset()
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 3)
        self.dut.rst.value = 0
        await RisingEdge(self.dut.clk)
        self.mem_task = cocotb.start_soon(self.mem.run(cycle() + limit))

    def req(self, base, length):
        return pack(self.req_lay, {"base": base, "length": length})

    async def read(self, port, reqs):
        """Send ``reqs`` [(base, length)] on port ``port``; check the lines against the image."""
        comp = self.comp
        legal = [(b, n) for b, n in reqs if n and b + n <= comp.lines]
        self.errors += len(reqs) - len(legal)
        exp = []
        for b, n in legal:
            exp += [(self.image[b + j], int(j == n - 1)) for j in range(n)]
        task = cocotb.start_soon(self.rreq[port].send([self.req(b, n) for b, n in reqs], cycle))
        got = await self.rdat[port].recv(len(exp), cycle)
        await task
        for j, (word, (dv, last)) in enumerate(zip(got, exp)):
            v = unpack(self.line_lay, word)
            assert (int(v.data), int(v.last)) == (dv, last), \
                f"port {port} line {j}: expected {dv:#x} last {last}, got {int(v.data):#x} last {int(v.last)}"
        self.read_lines += len(exp)
        return got

    async def write(self, reqs):
        """Send write requests [(base, [lines])]; an illegal one sends no lines. Checks ``done``."""
        comp = self.comp
        words, dones = [], []
        for b, lines in reqs:
            ok = bool(lines) and b + len(lines) <= comp.lines
            dones.append(0 if ok else 1)
            if ok:
                words += [pack(self.line_lay, {"data": v, "last": int(j == len(lines) - 1)})
                          for j, v in enumerate(lines)]
                self.written += len(lines)
            else:
                self.errors += 1
        t1 = cocotb.start_soon(self.wreq.send([self.req(b, len(l)) for b, l in reqs], cycle))
        t2 = cocotb.start_soon(self.wdat.send(words, cycle))
        got = await self.done.recv(len(reqs), cycle)
        await t1
        await t2
        assert got == dones, f"done payloads {got}, expected {dones}"
        for b, lines in reqs:          # in request order: a later write wins
            if lines and b + len(lines) <= comp.lines:
                self.image[b:b + len(lines)] = lines

    def check_status(self):
        s = int(self.dut.o_status.value)
        st = unpack(self.comp.o_status.shape(), s)
        assert int(st.errors) == self.errors and int(st.error) == int(self.errors > 0), \
            f"status errors {int(st.errors)} flag {int(st.error)}, expected {self.errors}"
        assert int(st.reads) == self.read_lines, f"status reads {int(st.reads)}, expected {self.read_lines}"
        assert int(st.writes) == self.written, f"status writes {int(st.writes)}, expected {self.written}"
        assert self.mem.image == self.image, "memory image differs from the expected one"
        if self.comp.latency >= 2:
            assert self.mem.waited == 0, f"read data waited {self.mem.waited} cycles on i_bus_rdata.ready"


async def _start(dut):
    cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns").start())


def _random_reqs(tb, count, avoid=()):
    """Random read requests (a few illegal), avoiding the line set ``avoid``."""
    comp, r = tb.comp, tb.rng
    out = []
    while len(out) < count:
        kind = r.random()
        if kind < 0.08:
            out.append((r.randrange(comp.lines), 0))
            continue
        if kind < 0.14:
            base = r.randrange(comp.lines)
            out.append((base, comp.lines - base + r.randint(1, 3)))
            continue
        n = r.choice([1, 2, comp.burst, comp.burst + 1, r.randint(1, 3 * comp.burst), r.randint(1, comp.depth)])
        n = min(n, comp.lines)
        base = r.randint(0, comp.lines - n)
        if any(a in avoid for a in range(base, base + n)):
            continue
        out.append((base, n))
    return out


@cocotb.test()
async def test_random(dut):
    await _start(dut)
    cfg = bench_config()
    rounds = 4 if cfg.get("quick") else 8
    for seed in cfg["seeds"]:
        mixes = ((cfg.get("idle", 0.3), cfg.get("stall", 0.3)), (0.0, 0.0), (0.1, 0.6), (0.6, 0.1))
        for n, (idle, stall) in enumerate(mixes):
            tb = TB(dut, seed * 16 + n, idle=idle, stall=stall)
            await tb.reset()
            comp, r = tb.comp, tb.rng
            for _ in range(rounds):
                writes = []
                for _ in range(r.randint(1, 4)):
                    kind = r.random()
                    if kind < 0.1:
                        writes.append((r.randrange(comp.lines), []))
                    elif kind < 0.15:
                        writes.append((comp.lines - 1, [1, 2]))
                    else:
                        n = min(r.choice([1, comp.burst, r.randint(1, 3 * comp.burst)]), comp.lines)
                        writes.append((r.randint(0, comp.lines - n), [r.getrandbits(comp.width) for _ in range(n)]))
                touched = {b + j for b, l in writes for j in range(len(l)) if b + len(l) <= comp.lines}
                tasks = [cocotb.start_soon(tb.read(p, _random_reqs(tb, r.randint(1, 5), touched)))
                         for p in range(comp.read_ports)]
                tasks.append(cocotb.start_soon(tb.write(writes)))
                for t in tasks:
                    await t
            await ClockCycles(dut.clk, 3)
            tb.check_status()
            tb.mem.stop = True
            dut._log.info("seed %d idle %.1f stall %.1f: %d lines read, %d written, %d errors, %d bus commands",
                          seed, idle, stall, tb.read_lines, tb.written, tb.errors, tb.mem.commands)
            await ClockCycles(dut.clk, 2)


async def _alternate(tb, spans, stall):
    """One consumer: a line from port 0, then port 1, ... (``spans`` [(base, n)] per port)."""
    d, comp = tb.dut, tb.comp
    exp = [[(tb.image[b + j], int(j == n - 1)) for j in range(n)] for b, n in spans]
    for p, (b, n) in enumerate(spans):
        cocotb.start_soon(tb.rreq[p].send([tb.req(b, n)], cycle))
    got = [[], []]
    turn = 0
    while len(got[0]) + len(got[1]) < len(exp[0]) + len(exp[1]):
        if len(got[turn]) == len(exp[turn]):
            turn ^= 1
        await FallingEdge(d.clk)
        ready = not (stall and tb.rng.random() < stall)
        getattr(d, f"rd__{turn}__data__ready").value = int(ready)
        getattr(d, f"rd__{turn ^ 1}__data__ready").value = 0
        await ReadOnly()
        if ready and int(getattr(d, f"rd__{turn}__data__valid").value):
            v = unpack(tb.line_lay, int(getattr(d, f"rd__{turn}__data__payload").value))
            got[turn].append((int(v.data), int(v.last)))
            turn ^= 1
    await FallingEdge(d.clk)
    d.rd__0__data__ready.value = 0
    d.rd__1__data__ready.value = 0
    for p in range(2):
        assert got[p] == exp[p], f"port {p}: alternating read differs at line " \
            f"{next(j for j, (a, b) in enumerate(zip(got[p], exp[p])) if a != b)}"
        tb.read_lines += len(exp[p])


@cocotb.test()
async def test_alternating(dut):
    await _start(dut)
    cfg = bench_config()
    tb = TB(dut, cfg["seeds"][0], idle=0.0, stall=0.0)
    comp = tb.comp
    if comp.read_ports < 2:
        return
    n = min(4 * comp.depth, comp.lines // 2)
    for stall in (0.0, cfg.get("stall", 0.3)):
        tb.mem.stall = tb.mem.idle = stall
        await tb.reset(limit=50 * n + 2000)
        await _alternate(tb, [(0, n), (comp.lines - n, n)], stall)
        await ClockCycles(dut.clk, 3)
        tb.check_status()
        tb.mem.stop = True
        await ClockCycles(dut.clk, 2)
        tb.read_lines = 0
        tb.mem = type(tb.mem)(dut, comp, list(tb.image), random.Random(9), stall=stall, idle=stall)
    dut._log.info("alternating consumption of %d + %d lines on ports 0 and 1: no deadlock, data exact", n, n)


@cocotb.test()
async def test_throughput(dut):
    await _start(dut)
    cfg = bench_config()
    tb = TB(dut, cfg["seeds"][0], idle=0.0, stall=0.0)
    comp = tb.comp
    await tb.reset()
    n = min(4 * comp.depth + 3, comp.lines)
    await tb.read(0, [(0, n)])
    took = tb.rdat[0].transfer_cycles[-1] - tb.rreq[0].transfer_cycles[0]
    dut._log.info("one read of %d lines, latency %d: %d cycles = latency + lines + %d (READ_OVERHEAD %d)",
                  n, comp.latency, took, took - comp.latency - n, READ_OVERHEAD)
    assert took == comp.latency + n + READ_OVERHEAD, \
        f"{n} lines took {took} cycles, expected latency + lines + {READ_OVERHEAD} = {comp.latency + n + READ_OVERHEAD}"
    if comp.read_ports >= 2:
        m = min(2 * comp.depth, comp.lines // 2)
        start = cycle()
        t = cocotb.start_soon(tb.read(1, [(comp.lines - m, m)]))
        await tb.read(0, [(0, m)])
        await t
        end = max(tb.rdat[0].transfer_cycles[-1], tb.rdat[1].transfer_cycles[-1])
        both = end - start
        dut._log.info("two ports reading %d lines each: %d cycles (latency + 2 * lines + %d)",
                      m, both, both - comp.latency - 2 * m)
        assert both <= comp.latency + 2 * m + READ_OVERHEAD + 2, f"two ports: {both} cycles for {2 * m} lines"
    await ClockCycles(dut.clk, 3)
    tb.check_status()
    tb.mem.stop = True
    await ClockCycles(dut.clk, 2)
