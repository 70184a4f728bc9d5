"""cocotb bench of the stream blocks: ``width_adapter``, ``stream_fifo`` and ``stream_arbiter``.

Configuration (``bench_config()``): ``kind`` (the top), the generator ``params``, ``seeds``,
``quick`` (fewer beats), ``idle``/``stall`` (probability of an idle cycle before each beat on
every source and of a not-ready cycle on every sink).

Golden behaviour (Python, in this module or beside the block):

- width adapter: :func:`elmoe3d.hw.width_adapter.golden_adapt` (packing/unpacking bit-exact,
  ``last`` flushing a partial group);
- FIFO: the output is the input, in order; ``level`` equals the beats inside (taken and not
  yet given) at every cycle;
- arbiter: a monitor samples every input's ``valid`` each cycle and predicts the grant of
  :func:`rr_grant` (the first valid input after the last granted one) whenever the output register
  can load (``~o.valid | o.ready``); the RTL must take exactly that input, and the output must
  carry each grant's payload and source, in grant order.

Payloads are packed and unpacked through the blocks' layouts. Every output goes through
:class:`~.streams.StreamSink`, which checks that ``valid`` and the payload hold until the
transfer. ``test_throughput`` runs without idle or stall and checks the cycle counts.
"""

import random

import cocotb
from amaranth.lib import data
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly, RisingEdge
from cocotb.utils import get_sim_time

from ...hw.tops import get_top
from ...hw.width_adapter import golden_adapt
from .runner import bench_config
from .streams import StreamSink, StreamSource

PERIOD_NS = 10


def cycle():
    return int(get_sim_time(unit="ns")) // PERIOD_NS


def pack(layout, value):
    return layout.const(value).as_value().value


def unpack(layout, word):
    return data.Const(layout, word)


def rr_grant(last, valids):
    """Round-robin grant: the first index with ``valids[k]`` after ``last`` (cyclically), or None."""
    n = len(valids)
    for step in range(1, n + 1):
        k = (last + step) % n
        if valids[k]:
            return k
    return None


async def _start(dut):
    cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns").start())


async def _reset(dut, drivers):
    for d in drivers:
        d.reset()
    dut.rst.value = 1
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0
    await RisingEdge(dut.clk)


def _component():
    cfg = bench_config()
    return cfg, get_top(cfg["kind"]).build(**cfg["params"])


def _rates(cfg):
    return [(0.0, 0.0), (cfg.get("idle", 0.3), cfg.get("stall", 0.3)), (0.7, 0.1), (0.1, 0.7)]


# -- width adapter ------------------------------------------------------------------------------------
async def _adapter_run(dut, comp, rng, count, idle, stall, seed, *, last_rate=0.15):
    lay_i, lay_o = comp.i.payload.shape(), comp.o.payload.shape()
    win, wout = comp.in_width, comp.out_width
    lines = []
    for _ in range(count):
        d = rng.choice([rng.getrandbits(win), 0, (1 << win) - 1, 1, 1 << (win - 1)])
        lines.append((d, int(rng.random() < last_rate)))
    exp = golden_adapt(lines, win, wout)
    src = StreamSource(dut, "i", dut.clk, idle=idle, rng=random.Random(seed * 7 + 1))
    snk = StreamSink(dut, "o", dut.clk, stall=stall, rng=random.Random(seed * 7 + 2))
    await _reset(dut, [src, snk])
    words = [pack(lay_i, {"data": d, "last": l}) for d, l in lines]
    task = cocotb.start_soon(src.send(words, cycle))
    got = await snk.recv(len(exp), cycle)
    await task
    for n, (word, (d, l)) in enumerate(zip(got, exp)):
        v = unpack(lay_o, word)
        assert (int(v.data), int(v.last)) == (d, l), \
            f"output {n}: expected data {d:#x} last {l}, got data {int(v.data):#x} last {int(v.last)}"
    return src, snk, len(exp)


# -- FIFO ---------------------------------------------------------------------------------------------
async def _fifo_run(dut, comp, rng, count, idle, stall, seed):
    width = comp.width
    beats = [rng.choice([rng.getrandbits(width), 0, (1 << width) - 1]) for _ in range(count)]
    src = StreamSource(dut, "i", dut.clk, idle=idle, rng=random.Random(seed * 7 + 1))
    snk = StreamSink(dut, "o", dut.clk, stall=stall, rng=random.Random(seed * 7 + 2))
    await _reset(dut, [src, snk])
    inside = {"n": 0, "checked": 0}
    done = {"stop": False}

    async def counter():
        # once per cycle, before the rising edge: level == beats inside, i.ready == (level < depth)
        while not done["stop"]:
            await FallingEdge(dut.clk)
            await ReadOnly()
            lvl = int(dut.level.value)
            assert lvl == inside["n"], f"level {lvl}, expected {inside['n']} at cycle {cycle()}"
            assert int(dut.i__ready.value) == (lvl < comp.depth), \
                f"i.ready {int(dut.i__ready.value)} at level {lvl} of {comp.depth}"
            inside["n"] += (int(dut.i__valid.value) and int(dut.i__ready.value)) - \
                (int(dut.o__valid.value) and int(dut.o__ready.value))
            inside["checked"] += 1

    mon = cocotb.start_soon(counter())
    task = cocotb.start_soon(src.send(beats, cycle))
    got = await snk.recv(len(beats), cycle)
    await task
    done["stop"] = True
    await ClockCycles(dut.clk, 2)
    mon.cancel()
    assert got == beats, f"order/data differ: first mismatch at {next(n for n, (a, b) in enumerate(zip(got, beats)) if a != b)}"
    assert inside["checked"] > 0
    return src, snk, len(beats)


# -- arbiter ------------------------------------------------------------------------------------------
async def _arbiter_run(dut, comp, rng, count, idle, stall, seed):
    n, width = comp.n, comp.width
    lay_o = comp.o.payload.shape()
    per = [[rng.getrandbits(width) for _ in range(rng.randint(count // (2 * n), 2 * count // n))]
           for _ in range(n)]
    # some inputs busier or sparser than the others (all at 0 when idle is 0: throughput runs)
    idles = [idle if not idle or rng.random() < 0.7 else rng.choice([0.0, 0.9]) for _ in range(n)]
    srcs = [StreamSource(dut, f"i__{k}", dut.clk, idle=idles[k], rng=random.Random(seed * 31 + k)) for k in range(n)]
    snk = StreamSink(dut, "o", dut.clk, stall=stall, rng=random.Random(seed * 7 + 2))
    await _reset(dut, [*srcs, snk])
    grants, state = [], {"last": n - 1, "stop": False, "left": [list(p) for p in per]}

    async def monitor():
        while not state["stop"]:
            await FallingEdge(dut.clk)
            await ReadOnly()
            valids = [int(getattr(dut, f"i__{k}__valid").value) for k in range(n)]
            takes = [v and int(getattr(dut, f"i__{k}__ready").value) for k, v in enumerate(valids)]
            load = (not int(dut.o__valid.value)) or int(dut.o__ready.value)
            exp = rr_grant(state["last"], valids) if load else None
            got = [k for k in range(n) if takes[k]]
            assert got == ([] if exp is None else [exp]), \
                f"cycle {cycle()}: valids {valids}, last grant {state['last']}, load {load}: " \
                f"expected grant {exp}, RTL took {got}"
            if exp is not None:
                grants.append((exp, state["left"][exp].pop(0)))
                state["last"] = exp

    mon = cocotb.start_soon(monitor())
    tasks = [cocotb.start_soon(s.send(p, cycle)) for s, p in zip(srcs, per)]
    total = sum(len(p) for p in per)
    got = await snk.recv(total, cycle)
    for t in tasks:
        await t
    state["stop"] = True
    await ClockCycles(dut.clk, 2)
    mon.cancel()
    outs = [(int(v.source), int(v.data)) for v in (unpack(lay_o, w) for w in got)]
    assert outs == grants, "output order differs from the grants: " + \
        str(next((j, a, b) for j, (a, b) in enumerate(zip(outs, grants)) if a != b))
    for k in range(n):
        assert [d for s, d in outs if s == k] == per[k], f"input {k}: beats lost or reordered"
    return srcs[0], snk, total


RUNS = {"width_adapter": _adapter_run, "stream_fifo": _fifo_run, "stream_arbiter": _arbiter_run}


@cocotb.test()
async def test_random(dut):
    """Random beats over every seed at several idle/stall mixes, bit-exact against the golden."""
    await _start(dut)
    cfg, comp = _component()
    run = RUNS[cfg["kind"]]
    count = 60 if cfg.get("quick") else 200
    total = 0
    for seed in cfg["seeds"]:
        rng = random.Random(seed)
        for idle, stall in _rates(cfg):
            total += (await run(dut, comp, rng, count, idle, stall, seed))[2]
    dut._log.info("%s %s: %d beats checked over seeds %s", cfg["kind"], cfg["params"], total, cfg["seeds"])


@cocotb.test()
async def test_corners(dut):
    """Corner inputs: all-`last` lines and no-`last` lines (adapter), single beats, long bursts."""
    await _start(dut)
    cfg, comp = _component()
    rng = random.Random(cfg["seeds"][0])
    kind = cfg["kind"]
    if kind == "width_adapter":
        for rate in (0.0, 1.0):
            await _adapter_run(dut, comp, rng, 37, 0.2, 0.2, 9, last_rate=rate)
    run = RUNS[kind]
    for count in (1, 2, 3):
        await run(dut, comp, rng, count, 0.0, 0.5, 11)


@cocotb.test()
async def test_throughput(dut):
    """No idle, no stall: one beat per cycle on the narrow side (adapter), one per cycle (FIFO at
    depth >= 2, arbiter)."""
    await _start(dut)
    cfg, comp = _component()
    kind = cfg["kind"]
    rng = random.Random(5)
    count = 64
    if kind == "width_adapter":
        src, snk, outs = await _adapter_run(dut, comp, rng, count, 0.0, 0.0, 5, last_rate=0.0)
        narrow = src if comp.mode == "up" else snk
        span = narrow.transfer_cycles[-1] - narrow.transfer_cycles[0] + 1
        expect = count if comp.mode != "down" else count * comp.ratio
        assert span == expect, f"{expect} narrow-side beats took {span} cycles"
    elif kind == "stream_fifo":
        src, snk, outs = await _fifo_run(dut, comp, rng, count, 0.0, 0.0, 5)
        span = snk.transfer_cycles[-1] - snk.transfer_cycles[0] + 1
        expect = count if comp.depth >= 2 else 2 * count - 1
        assert span == expect, f"{count} beats took {span} cycles (expected {expect})"
        first = snk.transfer_cycles[0] - src.transfer_cycles[0]
        assert first == comp.latency, f"first beat out {first} cycles after in, expected {comp.latency}"
    else:
        src, snk, outs = await _arbiter_run(dut, comp, rng, count, 0.0, 0.0, 5)
        span = snk.transfer_cycles[-1] - snk.transfer_cycles[0] + 1
        assert span == outs, f"{outs} arbitrated beats took {span} cycles"
    dut._log.info("%s %s: throughput ok (%d cycles)", kind, cfg["params"], span)
