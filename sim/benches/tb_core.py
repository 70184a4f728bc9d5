"""cocotb bench of the core (``hw/core.py``): whole MoE layer passes from compiler command streams.

The bench loads the compiler's off-chip and HB images (``firmware/compiler.py``) into memory
models: an in-order off-chip bus with the configuration's latency, and HB channels whose read
bursts come back after the configuration's latency (plus a random extra in the stalled runs), in
random order between bursts, with write bursts acknowledged after a random delay; in the stalled
runs every ready and valid the bench drives stalls at random; every output stream of the core is
checked to hold valid and payload until its transfer. It
pushes each pass's command stream and checks, against the ISS (``sim/machine/iss.py``, run on its own
copy of the images with its own golden cache) and the integer golden layer (``sim/golden/int_moe.py``):

- the layer output in the Y block, bit for bit;
- every expert-cache response (key, hit, fill, slot) in order;
- the cycle count of the pass (first word to ``HALT``) against the ISS's estimate: the ratio is
  printed and written to the cycles file; the pytest launcher bounds it.

Error cases: a stream with an unknown opcode and one whose X block lies past the off-chip space
must stop the core with ``OPCODE`` / ``ADDRESS`` and the offending index, without hanging.
"""

import json
import random
from collections import deque

import cocotb
import numpy as np
from amaranth.lib import data
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

from elmoe3d.firmware.compiler import compile_model, compile_pass
from elmoe3d.spec.isa import Op, Reg, Status
from elmoe3d.firmware.layout import read_output, write_input
from elmoe3d.hw.command_processor import status_layout
from elmoe3d.hw.core import core_config
from elmoe3d.hw.expert_cache import response_layout
from elmoe3d.hw.hb_memory import beat_layout, command_layout
from elmoe3d.hw.hb_write import write_command_layout
from elmoe3d.sim.benches.runner import bench_config
from elmoe3d.sim.benches.streams import HoldCheck, pack, unpack
from elmoe3d.sim.cache.expert_cache import Key
from elmoe3d.sim.golden.int_moe import VERIFY, IntPass, calibrate_layer, draft_pass, fold_layer, int_moe, quantize_tokens
from elmoe3d.sim.machine.iss import Machine
from elmoe3d.sim.golden.moe_layer import MoEShape, random_moe

PERIOD_NS = 2


_bits, _unpack = pack, unpack


def code(st):
    """The status's error code as a :class:`Status`."""
    v = st.error
    return Status(int(getattr(v, "value", v)))


class Memories:
    """The off-chip bus and the HB channels around the core, driven in one per-cycle loop."""

    def __init__(self, dut, cfg, offchip, hb, rng, stall):
        self.dut, self.cfg, self.rng, self.stall = dut, cfg, rng, stall
        self.off, self.hb = offchip, hb
        self.W = cfg.offchip.width // 8
        self.C, self.cw = cfg.hb.channels, cfg.hb.width // 8
        self.hbl = self.C * self.cw
        self.hb_cmd_l, self.hb_beat_l = command_layout(cfg.hb), beat_layout(cfg.hb)
        self.hb_wcmd_l = write_command_layout(cfg.hb)
        self.status_l = status_layout()
        self.resp_l = response_layout(cfg.cache)
        self.event_l = data.StructLayout({"valid": 1, "resp": self.resp_l})
        self.bus = deque()          # [write, base, length, due, done]
        self.rd = [[] for _ in range(self.C)]      # [tag, row, beats, due]
        self.rd_cur = [None] * self.C
        self.wcmds = [deque() for _ in range(self.C)]
        self.wbeats = [deque() for _ in range(self.C)]
        self.acks = [deque() for _ in range(self.C)]
        self.words = deque()
        self.events = []
        self.cycle = 0
        self.held = {}
        self.handles = {}
        self.running = True

    def _s(self, name):
        """The DUT's signal ``name`` (handles cached: looking them up each cycle is slow)."""
        handle = self.handles.get(name)
        if handle is None:
            handle = self.handles[name] = getattr(self.dut, name)
        return handle

    def _hold(self, name):
        """This cycle's transfer on output stream ``name`` (checked by the shared HoldCheck:
        valid and payload hold until the transfer)."""
        check = self.held.get(name)
        if check is None:
            check = self.held[name] = HoldCheck(name, self._s(f"{name}__valid"), self._s(f"{name}__payload"))
        ready = bool(int(self._s(f"{name}__ready").value))
        valid, payload = check.sample(ready, self.cycle)
        return bool(valid and ready), payload

    def _ready(self, name):
        self._s(f"{name}__ready").value = int(self.rng.random() >= self.stall)

    async def profile(self):
        """Cycles per executed command (from the executor's exec/done handshakes)."""
        d = self.dut
        self.prof = {}
        start, cur = None, None
        while self.running:
            await RisingEdge(d.clk)
            await ReadOnly()
            try:
                ex = d.ex
                if int(ex.exec__valid.value) and int(ex.exec__ready.value):
                    cur, start = int(ex.exec__payload.value) & 0xF, self.cycle
                if int(ex.done__valid.value) and int(ex.done__ready.value) and cur is not None:
                    name = Op(cur).name.lower()
                    self.prof[name] = self.prof.get(name, 0) + self.cycle - start + 1
                    cur = None
            except AttributeError:
                return

    async def run(self):
        d = self.dut
        lat = self.cfg.offchip.latency
        hb_lat = self.cfg.hb.latency
        word_v = None
        while self.running:
            await FallingEdge(d.clk)
            self.cycle += 1
            # -- drive ------------------------------------------------------------------------
            if word_v is None and self.words and self.rng.random() >= self.stall:
                word_v = self.words[0]
            self._s("i_word__valid").value = int(word_v is not None)
            self._s("i_word__payload").value = word_v or 0
            for name in ("o_bus_cmd", "o_bus_wdata"):
                self._ready(name)
            head = self.bus[0] if self.bus else None
            rline = None
            if head and not head[0] and head[3] <= self.cycle and self.rng.random() >= self.stall:
                a = head[1] + head[4]
                rline = int.from_bytes(self.off[a * self.W:(a + 1) * self.W].tobytes(), "little")
            self._s("i_bus_rdata__valid").value = int(rline is not None)
            self._s("i_bus_rdata__payload").value = rline or 0
            if not (head and head[0]):
                self._s("o_bus_wdata__ready").value = 0
            beats = [None] * self.C
            for c in range(self.C):
                self._ready(f"o_hb_cmd__{c}")
                self._ready(f"o_hb_wcmd__{c}")
                self._ready(f"o_hb_wdata__{c}")
                if self.rd_cur[c] is None:
                    due = [b for b in self.rd[c] if b[3] <= self.cycle]
                    if due and self.rng.random() >= self.stall:
                        self.rd_cur[c] = self.rng.choice(due)
                b = self.rd_cur[c]
                if b is not None:
                    row = b[1]
                    at = row * self.hbl + c * self.cw
                    beats[c] = _bits(self.hb_beat_l, {"data": int.from_bytes(self.hb[at:at + self.cw].tobytes(), "little"),
                                                      "tag": b[0]})
                self._s(f"i_hb_beat__{c}__valid").value = int(b is not None)
                self._s(f"i_hb_beat__{c}__payload").value = beats[c] or 0
                ack = bool(self.acks[c]) and self.acks[c][0] <= self.cycle
                self._s(f"i_hb_wack__{c}__valid").value = int(ack)
                self._s(f"i_hb_wack__{c}__payload").value = 0
            await ReadOnly()
            # -- sample -----------------------------------------------------------------------
            if word_v is not None and int(self._s("i_word__ready").value):
                self.words.popleft()
                word_v = None
            fire, p = self._hold("o_bus_cmd")
            if fire:
                cmd = _unpack(self.off_cmd_l, p)
                self.bus.append([int(cmd.write), int(cmd.base), int(cmd.length), self.cycle + lat, 0])
            if rline is not None and int(self._s("i_bus_rdata__ready").value):
                head[4] += 1
                if head[4] == head[2]:
                    self.bus.popleft()
            fire, p = self._hold("o_bus_wdata")
            if fire:
                head = self.bus[0]
                assert head[0], "write data with no write command at the head of the bus"
                a = head[1] + head[4]
                self.off[a * self.W:(a + 1) * self.W] = np.frombuffer(
                    (p & ((1 << (8 * self.W)) - 1)).to_bytes(self.W, "little"), dtype=np.uint8)
                head[4] += 1
                if head[4] == head[2]:
                    self.bus.popleft()
            for c in range(self.C):
                fire, p = self._hold(f"o_hb_cmd__{c}")
                if fire:
                    cmd = _unpack(self.hb_cmd_l, p)
                    # the configuration's latency; with stalls also a random extra (bursts then
                    # come back out of order)
                    extra = self.rng.randint(0, hb_lat) if self.stall else 0
                    self.rd[c].append([int(cmd.tag), int(cmd.row), int(cmd.beats), self.cycle + hb_lat + extra])
                if beats[c] is not None and int(self._s(f"i_hb_beat__{c}__ready").value):
                    b = self.rd_cur[c]
                    b[1] += 1
                    b[2] -= 1
                    if b[2] == 0:
                        self.rd[c].remove(b)
                    self.rd_cur[c] = None
                fire, p = self._hold(f"o_hb_wcmd__{c}")
                if fire:
                    cmd = _unpack(self.hb_wcmd_l, p)
                    self.wcmds[c].append([int(cmd.row), int(cmd.beats), 0])
                fire, p = self._hold(f"o_hb_wdata__{c}")
                if fire:
                    self.wbeats[c].append(p)
                while self.wcmds[c] and len(self.wbeats[c]) >= self.wcmds[c][0][1]:
                    row, n, _ = self.wcmds[c].popleft()
                    for j in range(n):
                        beat = self.wbeats[c].popleft()
                        at = (row + j) * self.hbl + c * self.cw
                        self.hb[at:at + self.cw] = np.frombuffer(beat.to_bytes(self.cw, "little"), dtype=np.uint8)
                    self.acks[c].append(self.cycle + 1 + self.rng.randint(0, 4))
                if self.acks[c] and self.acks[c][0] <= self.cycle and int(self._s(f"i_hb_wack__{c}__ready").value):
                    self.acks[c].popleft()
            bits = int(self._s("o_cache_event").value)
            ev = _unpack(self.event_l, bits) if bits & 1 else None      # `valid` is bit 0
            if ev is not None:
                r = ev.resp
                self.events.append((int(r.key.layer), int(r.key.expert), int(r.key.plane), int(r.hit),
                                    int(r.fill), int(r.slot)))

    def status(self):
        return _unpack(self.status_l, int(self._s("o_status").value))


def model_cases(cfg, seeds, quick):
    W = cfg.vector.width
    shapes = [MoEShape(d_model=2 * W, n_experts=4, top_k=2, d_ffn=3 * W, n_shared=1),
              MoEShape(d_model=W, n_experts=6, top_k=3, d_ffn=2 * W)]
    return shapes[:1] if quick else shapes


def _off_cmd_layout(cfg):
    from elmoe3d.hw.offchip import OffchipInterface
    return OffchipInterface(width=cfg.offchip.width, lines=cfg.offchip.lines, len_bits=cfg.offchip.len_bits,
                            latency=cfg.offchip.latency).cmd_layout


async def session(dut, cfg, offchip, hb, rng, stall, old=None):
    """Reset the core and start memory models on the given images (stopping ``old`` ones)."""
    if old is None:
        cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns").start())
    else:
        old.running = False
        await RisingEdge(dut.clk)
        await RisingEdge(dut.clk)
    mems = Memories(dut, cfg, offchip, hb, rng, stall)
    mems.off_cmd_l = _off_cmd_layout(cfg)
    dut.rst.value = 1
    dut.i_word__valid.value = 0
    for _ in range(3):
        await RisingEdge(dut.clk)
    dut.rst.value = 0
    cocotb.start_soon(mems.run())
    if bench_config().get("profile"):
        cocotb.start_soon(mems.profile())
    return mems


async def run_stream(mems, words, limit):
    """Push a stream; wait for HALT (or an error); returns the status."""
    mems.words.extend(words)
    start = mems.cycle
    while True:
        await RisingEdge(mems.dut.clk)
        st = mems.status()
        if code(st) != Status.NONE:
            return st
        if int(st.halted) and not mems.words and not int(st.busy):
            return st
        assert mems.cycle - start < limit, f"the core did not halt within {limit} cycles"


def _compiled(cfg, shape, seed):
    rng = np.random.default_rng(seed)
    layers = []
    for _ in range(2):
        qw = random_moe(shape, rng).quantized()
        cal = rng.standard_normal((64, shape.d_model))
        layers.append(fold_layer(qw, calibrate_layer(qw, cal, shape.top_k), shape.top_k))
    return layers, compile_model(cfg, layers), rng


CYCLE_TOLERANCE = 0.10     # the core's cycles per pass within 10 % of the ISS's estimate


async def run_passes(dut, cfg, shape, seed, stall, tokens, passes, mems=None, session_fn=None, stream_fn=None):
    """Run ``passes`` on a fresh core and ISS; check outputs and cache decisions; returns the
    per-pass cycle records and the memories. ``session_fn``/``stream_fn`` replace :func:`session`
    and :func:`run_stream` (the HDL memory models of ``native.py`` use the same checks)."""
    session_fn, stream_fn = session_fn or session, stream_fn or run_stream
    rng = random.Random(seed)
    layers, comp, nrng = _compiled(cfg, shape, seed)
    iss_off, iss_hb = comp.offchip.copy(), comp.hb.copy()
    core_off, core_hb = comp.offchip.copy(), comp.hb.copy()
    machine = Machine(cfg, iss_off, iss_hb)
    mems = await session_fn(dut, cfg, core_off, core_hb, rng, stall, mems)
    results = []
    for i, p in enumerate(passes):
        if p.k is not None and p.k > shape.top_k:
            continue
        T = tokens[i % len(tokens)]
        layer = i % len(layers)
        x = nrng.standard_normal((T, shape.d_model)) * nrng.choice([0.01, 1.0, 100.0])
        a, xm, xe = quantize_tokens(x)
        allowed = (np.array([Key(layer, e, 0) in machine.cache.resident() for e in range(shape.n_experts)])
                   if p.choice == "cached" else None)
        want = int_moe(layers[layer], a, xm, xe, p, allowed)
        write_input(iss_off, comp.map, a, xm, xe)
        write_input(core_off, comp.map, a, xm, xe)
        words = compile_pass(comp, layer, T, p)
        stats = machine.run(words)
        assert np.array_equal(read_output(iss_off, comp.map, T), want.out), "ISS differs from the golden layer"
        n_ev = len(mems.events)
        what = f"{shape} seed {seed} stall {stall} pass {i} ({p}) T={T} layer {layer}"
        st = await stream_fn(mems, words, 50 * stats.cycles + 10000)
        assert code(st) == Status.NONE, f"{what}: core stopped with {code(st).name} at {int(st.index)}"
        got = read_output(core_off, comp.map, T)
        bad = np.argwhere(got != want.out)
        assert bad.size == 0, (f"{what}: {len(bad)} outputs differ, first at {tuple(bad[0])}: core "
                               f"{got[tuple(bad[0])]} golden {want.out[tuple(bad[0])]}; core row "
                               f"{got[bad[0][0]][:8].tolist()} golden row {want.out[bad[0][0]][:8].tolist()}")
        gold_ev = [(k.layer, k.expert, k.plane, int(r.hit), int(r.fill), int(r.slot) if r.slot is not None else 0)
                   for k, r in stats.cache]
        got_ev = mems.events[n_ev:]
        assert [e[:5] for e in got_ev] == [e[:5] for e in gold_ev], f"{what}: cache decisions {got_ev} != {gold_ev}"
        for g_, w_ in zip(got_ev, gold_ev):
            if g_[3] or g_[4]:
                assert g_[5] == w_[5], f"{what}: slot {g_} != {w_}"
        cycles = int(st.cycles)
        dut._log.info(f"{what}: core {cycles} cycles, ISS estimate {stats.cycles} ({cycles / stats.cycles:.3f})")
        if getattr(mems, "prof", None) is not None:
            dut._log.info(f"  core per op: {mems.prof}")
            dut._log.info(f"  ISS per op:  {stats.by_op}")
            mems.prof = {}
        results.append({"shape": str(shape), "pass": i, "T": T, "k": p.k, "draft": p.draft, "choice": p.choice,
                        "stall": stall, "core": cycles, "iss": stats.cycles})
    return results, mems


PASSES = [VERIFY, draft_pass(1), draft_pass(2, "full"), draft_pass(1, "draft", "cached"), IntPass(k=1), VERIFY,
          draft_pass(3, "draft", "cached"), draft_pass(2)]


@cocotb.test()
async def core_matches_iss(dut):
    """Every case: a stall-free run (cycles checked against the ISS estimate) and a run with
    random stalls on every memory interface (bit-exactness and cache decisions only)."""
    conf = bench_config()
    cfg = core_config(conf["params"]["preset"], conf["params"].get("lanes", 0))
    shapes = model_cases(cfg, conf["seeds"], conf["quick"])
    tokens = conf.get("tokens", [1, 4, 16])
    passes = PASSES[:6] if conf["quick"] else PASSES
    records, mems = [], None
    for seed in conf["seeds"]:
        for shape in shapes:
            for stall in (0.0, conf.get("stall", 0.3)):
                # quick: the stalled run repeats the first three passes (batch 1, 4 and 16)
                todo = passes[:3] if conf["quick"] and stall else passes
                res, mems = await run_passes(dut, cfg, shape, seed, stall, tokens, todo, mems)
                records += res
    out = conf.get("cycles_json")
    if out:
        with open(out, "w") as f:
            json.dump(records, f, indent=1)
    for r in records:
        if r["stall"] == 0.0:
            ratio = r["core"] / r["iss"]
            assert abs(ratio - 1) <= CYCLE_TOLERANCE, f"{r}: core/ISS cycles {ratio:.3f} outside 1 +- {CYCLE_TOLERANCE}"
    mems.running = False


@cocotb.test()
async def core_reports_errors(dut):
    """A bad opcode and an address past the off-chip space stop the core with the index."""
    conf = bench_config()
    cfg = core_config(conf["params"]["preset"], conf["params"].get("lanes", 0))
    rng = random.Random(conf["seeds"][0])
    shape = model_cases(cfg, conf["seeds"], True)[0]
    layers, comp, nrng = _compiled(cfg, shape, 7)
    a, xm, xe = quantize_tokens(nrng.standard_normal((4, shape.d_model)))
    write_input(comp.offchip, comp.map, a, xm, xe)
    mems = await session(dut, cfg, comp.offchip.copy(), comp.hb.copy(), rng, 0.1)
    words = compile_pass(comp, 0, 4)
    isa = comp.isa
    loadp = [isa.decode(w)[0] for w in words].index(Op.LOADP)
    bad = list(words)
    bad[loadp] = 0xE            # an opcode the set does not have
    st = await run_stream(mems, bad, 5000)
    assert code(st) == Status.OPCODE and int(st.index) == loadp, f"{code(st).name} at {int(st.index)}"
    for _ in range(20):         # stopped: takes no more words
        await RisingEdge(dut.clk)
    assert int(dut.i_word__ready.value) == 0 and mems.words, "the core took words after an error"
    # after a reset: X_ADDR past the off-chip space
    mems = await session(dut, cfg, comp.offchip.copy(), comp.hb.copy(), rng, 0.1, mems)
    far = [isa.encode(Op.SETR, reg=Reg.X_ADDR, value=cfg.offchip.lines - 1)
           if isa.decode(w)[0] == Op.SETR and isa.decode(w)[1]["reg"] == Reg.X_ADDR else w for w in words]
    loadx = [isa.decode(w)[0] for w in words].index(Op.LOADX)
    st = await run_stream(mems, far, 5000)
    assert code(st) == Status.ADDRESS and int(st.index) == loadx, f"{code(st).name} at {int(st.index)}"
    mems.running = False


async def _count_pe_beats(dut, counter):
    """PE-array weight beats (MSB and LSB cycles) per clock: the array's busy cycles."""
    while counter["on"]:
        await RisingEdge(dut.clk)
        await ReadOnly()
        try:
            counter["beats"] += int(dut.pe.msb_fire.value) + int(dut.pe.lsb_fire.value)
        except (AttributeError, ValueError):
            return


@cocotb.test()
async def core_replays_recorded_passes(dut):
    """Passes recorded on the ISS (``IssEngine(record=...)``: the shipped model's layers, real
    activations) replayed on the core in the same order: outputs and cache decisions equal the
    ISS's; cycles, bytes per tier and PE-array busy cycles written per pass. Runs only when the
    launcher passes ``replay`` (a pickle of the recording) and ``model`` (the model file)."""
    import pickle
    from elmoe3d.sim.lm.model import MoELM
    conf = bench_config()
    if "replay" not in conf:
        dut._log.info("no recording given: nothing to replay")
        return
    cfg = core_config(conf["params"]["preset"], conf["params"].get("lanes", 0))
    with open(conf["replay"], "rb") as f:
        recording = pickle.load(f)
    model = MoELM.load(conf["model"])
    comp = compile_model(cfg, model.int_layers)
    core_off, core_hb = comp.offchip.copy(), comp.hb.copy()
    mems = await session(dut, cfg, core_off, core_hb, random.Random(1), conf.get("stall", 0.0))
    counter = {"on": True, "beats": 0}
    cocotb.start_soon(_count_pe_beats(dut, counter))
    out = []
    for i, rec in enumerate(recording):
        write_input(core_off, comp.map, rec["x"], rec["xm"], rec["xe"])
        n_ev, beats0 = len(mems.events), counter["beats"]
        st = await run_stream(mems, rec["words"], 50 * rec["cycles"] + 10000)
        what = f"recorded pass {i} (layer {rec['layer']}, {rec['pass_']}, T={rec['tokens']})"
        assert code(st) == Status.NONE, f"{what}: core stopped with {code(st).name} at {int(st.index)}"
        got = read_output(core_off, comp.map, rec["tokens"])
        assert np.array_equal(got, rec["out"]), f"{what}: output differs from the ISS"
        ev = [e[:5] for e in mems.events[n_ev:]]
        assert ev == [tuple(c) for c in rec["cache"]], f"{what}: cache decisions differ"
        cycles = int(st.cycles)
        dut._log.info(f"{what}: core {cycles} cycles, ISS estimate {rec['cycles']}")
        out.append({"index": i, "layer": rec["layer"], "tokens": rec["tokens"], "draft": rec["pass_"].draft,
                    "k": rec["pass_"].k, "choice": rec["pass_"].choice, "core": cycles, "iss": rec["cycles"],
                    "offchip_bytes": rec["offchip_bytes"], "hb_bytes": rec["hb_bytes"],
                    "pe_beats": counter["beats"] - beats0})
    counter["on"] = False
    mems.running = False
    with open(conf["cycles_json"], "w") as f:
        json.dump(out, f, indent=1)
