"""cocotb bench of the core at native speed: ``core_bench`` (``native.py``), memory models in HDL.

The same checks as ``tb_core.py`` (its :func:`~.tb_core.run_passes`: outputs bit for bit against
the ISS and the integer golden layer, every cache decision, cycles against the ISS's estimate),
but the memories, the word feeder and the event log run inside the simulator: Python writes a
stream, raises ``i_go`` for one cycle and waits for the rising edge of ``o_done``; the clock is
the simulator's (cocotb's GPI clock), so nothing in Python runs per cycle.

Tests (the launcher's ``bench_config()`` chooses with ``testcase``):

- ``native_matches_iss``: seeds x layer shapes (one with a shared expert) x every pass kind at
  batch 1, 4 and 16, without and with random stalls (``stall``) and out-of-order HB bursts;
- ``native_equals_python_models``: the same passes through the Python memory models of
  ``tb_core.py`` (``i_native = 0``, one build) and through the HDL models: outputs, cache
  decisions and cycles compared pass by pass;
- ``native_reports_errors``: streams that must stop the core with a Status code and the
  offending index (bad opcode, address past the off-chip space, a command out of order);
- ``native_speed``: simulated cycles per second over a number of passes (``elmoe3d bench-sim``);
- ``native_sd``: Elastic-SD on the shipped model with every MoE layer on this core
  (``rtl_engine.py``).
"""

import json
import random
import time

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge, with_timeout
from cocotb.triggers import SimTimeoutError

from elmoe3d.hw.command_processor import status_layout
from elmoe3d.hw.core import core_config
from elmoe3d.hw.expert_cache import response_layout
from elmoe3d.sim.benches import tb_core
from elmoe3d.sim.benches.native import EVENTS, HB_HEX, OFF_HEX, WORDS, hex_lines
from elmoe3d.sim.benches.runner import bench_config
from elmoe3d.sim.benches.streams import unpack
from elmoe3d.spec.isa import Status

PERIOD_NS = tb_core.PERIOD_NS


def stall_level(stall):
    """``i_stall`` (0..255) for a stall probability in [0, 1)."""
    return max(0, min(255, round(stall * 256)))


class NativeCore:
    """Drives ``core_bench`` with its HDL memory models (``i_native = 1``).

    The off-chip image is mirrored in ``self.off`` (a numpy byte array the caller may edit, as
    ``tb_core``'s memories are): before each stream the lines that differ from what the HDL
    memory holds are written through the GPI; after it, the lines the core wrote are read back.
    ``events``: every cache decision, as ``tb_core`` records them.
    """

    def __init__(self, dut, cfg, offchip, hb):
        self.dut, self.cfg = dut, cfg
        self.off, self.hb = offchip, hb
        self.W = cfg.offchip.line_bytes
        self.status_l = status_layout()
        self.resp_l = response_layout(cfg.cache)
        self.events = []
        self.n_events = 0
        self.cycle = 0              # simulated cycles so far (for tb_core's bookkeeping)
        self.running = True
        self.sim_cycles = 0         # cycles spent inside streams, and the wall time they took
        self.wall = 0.0
        self.cpu = 0.0              # CPU seconds of this process (simulator included) in them

    async def start(self, seed, stall):
        """Load the images ($readmemh), seed the stall generators, reset."""
        d = self.dut
        with open(OFF_HEX, "w") as f:
            f.write(hex_lines(self.off, self.W))
        C, cw = self.cfg.hb.channels, self.cfg.hb.beat_bytes
        rows = np.asarray(self.hb, dtype=np.uint8).reshape(-1, C, cw)
        for c in range(C):
            with open(HB_HEX.format(c), "w") as f:
                f.write(hex_lines(rows[:, c, :].reshape(-1), cw))
        self.shadow = np.array(self.off, dtype=np.uint8)   # what the HDL memory holds
        d.i_native.value = 1
        d.i_seed.value = seed & 0xFFFFFFFF
        d.i_stall.value = stall_level(stall)
        d.i_go.value = 0
        d.i_nwords.value = 0
        d.rst.value = 1
        d.i_load.value = 1
        await RisingEdge(d.clk)
        d.i_load.value = 0
        await RisingEdge(d.clk)
        await RisingEdge(d.clk)
        d.rst.value = 0
        await RisingEdge(d.clk)
        self.n_events = int(d.o_events.value)

    def _sync_in(self):
        """Write the lines of ``self.off`` that changed since the HDL memory last matched."""
        W = self.W
        diff = np.nonzero((self.off != self.shadow).reshape(-1, W).any(axis=1))[0]
        mem = self.dut.off_mem
        for line in diff.tolist():
            mem[line].value = int.from_bytes(self.off[line * W:(line + 1) * W].tobytes(), "little")
        self.shadow[:] = self.off

    def _sync_out(self, lo, hi):
        """Read back off-chip lines ``lo..hi`` (the core wrote them)."""
        W = self.W
        mem = self.dut.off_mem
        for line in range(lo, hi + 1):
            v = int(mem[line].value)
            self.off[line * W:(line + 1) * W] = np.frombuffer(v.to_bytes(W, "little"), dtype=np.uint8)
        self.shadow[lo * W:(hi + 1) * W] = self.off[lo * W:(hi + 1) * W]

    async def stream(self, words, limit):
        """Push ``words``; wait (on ``o_done``, at most ``limit`` cycles) for HALT or an error;
        returns the status (``tb_core``'s unpacked ``o_status``)."""
        d = self.dut
        if len(words) > WORDS:
            raise ValueError(f"a stream of {len(words)} words: the bench holds {WORDS}")
        self._sync_in()
        mem = d.words
        for i, w in enumerate(words):
            mem[i].value = int(w)
        d.i_nwords.value = len(words)
        d.i_go.value = 1
        await RisingEdge(d.clk)
        d.i_go.value = 0
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            await with_timeout(RisingEdge(d.o_done), limit * PERIOD_NS, "ns")
        except SimTimeoutError:
            raise AssertionError(f"the core did not halt within {limit} cycles") from None
        self.wall += time.perf_counter() - t0
        self.cpu += time.process_time() - c0
        st = unpack(self.status_l, int(d.o_status.value))
        self.sim_cycles += int(st.cycles)
        self.cycle += int(st.cycles)
        assert not int(d.o_oob.value), "the core accessed memory beyond the bench's models"
        n = int(d.o_events.value)
        ev = d.ev_mem
        for i in range(self.n_events, n):
            r = unpack(self.resp_l, int(ev[i % EVENTS].value))
            self.events.append((int(r.key.layer), int(r.key.expert), int(r.key.plane), int(r.hit), int(r.fill),
                                int(r.slot)))
        self.n_events = n
        lo, hi = int(d.o_wlo.value), int(d.o_whi.value)
        if hi >= lo:
            self._sync_out(lo, hi)
        return st


_clock_started = set()


async def native_session(dut, cfg, offchip, hb, rng, stall, old=None):
    """:func:`tb_core.session` for the HDL memory models (same arguments)."""
    if old is not None:
        old.running = False
    if id(dut) not in _clock_started:
        cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns", impl="gpi").start())
        _clock_started.add(id(dut))
    core = NativeCore(dut, cfg, offchip, hb)
    await core.start(rng.getrandbits(32), stall)
    return core


async def native_stream(core, words, limit):
    return await core.stream(words, limit)


def _cfg():
    conf = bench_config()
    return conf, core_config(conf["params"]["preset"], conf["params"].get("lanes", 0))


@cocotb.test()
async def native_matches_iss(dut):
    """Every seed, shape and pass kind on the HDL memory models, without and with stalls."""
    conf, cfg = _cfg()
    shapes = tb_core.model_cases(cfg, conf["seeds"], conf["quick"])
    tokens = conf.get("tokens", [1, 4, 16])
    records, core = [], None
    for seed in conf["seeds"]:
        for shape in shapes:
            for stall in (0.0, conf.get("stall", 0.3)):
                res, core = await tb_core.run_passes(dut, cfg, shape, seed, stall, tokens, tb_core.PASSES, core,
                                                     native_session, native_stream)
                records += res
    with open(conf["cycles_json"], "w") as f:
        json.dump(records, f, indent=1)
    for r in records:
        if r["stall"] == 0.0:
            ratio = r["core"] / r["iss"]
            assert abs(ratio - 1) <= tb_core.CYCLE_TOLERANCE, f"{r}: core/ISS cycles {ratio:.3f}"


@cocotb.test()
async def native_equals_python_models(dut):
    """The same passes through the Python memory models and the HDL ones (no stalls): equal
    cycles within 1 % per pass (the HB write acknowledgements wait a random 1..5 cycles in
    both, from different generators); outputs and cache decisions are each checked against
    the ISS inside ``run_passes``."""
    conf, cfg = _cfg()
    shape = tb_core.model_cases(cfg, conf["seeds"], True)[0]
    seed = conf["seeds"][0]
    passes = tb_core.PASSES[:conf.get("compare_passes", len(tb_core.PASSES))]
    core = None
    native, core = await tb_core.run_passes(dut, cfg, shape, seed, 0.0, [1, 4, 16], passes, core,
                                            native_session, native_stream)
    dut.i_native.value = 0
    python, mems = await tb_core.run_passes(dut, cfg, shape, seed, 0.0, [1, 4, 16], passes, core)
    mems.running = False
    rows = []
    for n, p in zip(native, python):
        assert (n["pass"], n["T"]) == (p["pass"], p["T"])
        rows.append({"pass": n["pass"], "T": n["T"], "native": n["core"], "python": p["core"], "iss": n["iss"]})
        assert abs(n["core"] - p["core"]) <= 0.01 * p["core"] + 8, f"cycles differ: {rows[-1]}"
    assert len(rows) == len(native) == len(python) and rows
    with open(conf["cycles_json"], "w") as f:
        json.dump(rows, f, indent=1)
    dut.i_native.value = 1


@cocotb.test()
async def native_reports_errors(dut):
    """Streams that stop the core with a Status code at the offending index, without a hang:
    a bad opcode, an X block past the off-chip space, a FETCH before any GEMV."""
    from elmoe3d.firmware.compiler import compile_pass
    from elmoe3d.firmware.layout import write_input
    from elmoe3d.sim.golden.int_moe import quantize_tokens
    from elmoe3d.spec.isa import Op, Reg
    conf, cfg = _cfg()
    shape = tb_core.model_cases(cfg, conf["seeds"], True)[0]
    layers, comp, nrng = tb_core._compiled(cfg, shape, 7)
    a, xm, xe = quantize_tokens(nrng.standard_normal((4, shape.d_model)))
    write_input(comp.offchip, comp.map, a, xm, xe)
    rng = random.Random(conf["seeds"][0])
    words = compile_pass(comp, 0, 4)
    isa = comp.isa
    ops = [isa.decode(w)[0] for w in words]
    bad = list(words)
    bad[ops.index(Op.LOADP)] = 0xE                      # an opcode the set does not have
    far = [isa.encode(Op.SETR, reg=Reg.X_ADDR, value=cfg.offchip.lines - 1)
           if isa.decode(w)[0] == Op.SETR and isa.decode(w)[1]["reg"] == Reg.X_ADDR else w for w in words]
    early = list(words)
    fetch = ops.index(Op.FETCH)
    early.insert(ops.index(Op.LOADX), words[fetch])     # a FETCH before its GEMV (and before ROUTE)
    cases = [("bad opcode", bad, Status.OPCODE, ops.index(Op.LOADP)),
             ("X past the off-chip space", far, Status.ADDRESS, ops.index(Op.LOADX)),
             ("FETCH first", early, Status.ORDER, ops.index(Op.LOADX))]
    core = None
    for what, stream, want, index in cases:
        core = await native_session(dut, cfg, comp.offchip.copy(), comp.hb.copy(), rng, 0.1, core)
        st = await core.stream(stream, 5000)
        got = tb_core.code(st)
        dut._log.info(f"{what}: {got.name} at {int(st.index)}")
        assert got != Status.NONE and int(st.index) == index, f"{what}: {got.name} at {int(st.index)}"
        if want is not None:
            assert got == want, f"{what}: {got.name}, want {want.name}"
        for _ in range(20):                             # stopped: takes no more words
            await RisingEdge(dut.clk)
        assert int(dut.c_i_word__ready.value) == 0, f"{what}: the core takes words after an error"


@cocotb.test()
async def native_speed(dut):
    """Simulated cycles per second: ``passes`` layer passes of the first shape at batch 16,
    memory models in HDL (``i_native = 1``) or in Python (``models = "python"``: at most
    ``python_passes``). Writes ``{cycles, seconds, passes}`` to ``cycles_json``."""
    conf, cfg = _cfg()
    shape = tb_core.model_cases(cfg, conf["seeds"], True)[0]
    n = conf.get("passes", 8)
    python = conf.get("models") == "python"
    todo = (tb_core.PASSES * 8)[:n]
    t0, c0 = time.perf_counter(), time.process_time()
    if python:
        dut.i_native.value = 0
        core = None
        cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns", impl="gpi").start())
        _clock_started.add(id(dut))
        res, mems = await tb_core.run_passes(dut, cfg, shape, conf["seeds"][0], 0.0, [16], todo, _Dummy())
        mems.running = False
        sim_s = sim_cpu = None
    else:
        res, core = await tb_core.run_passes(dut, cfg, shape, conf["seeds"][0], 0.0, [16], todo, None,
                                             native_session, native_stream)
        sim_s, sim_cpu = core.wall, core.cpu
    total, cpu = time.perf_counter() - t0, time.process_time() - c0
    cycles = sum(r["core"] for r in res)
    with open(conf["cycles_json"], "w") as f:
        json.dump({"cycles": cycles, "seconds": total, "cpu_seconds": cpu, "stream_seconds": sim_s,
                   "stream_cpu_seconds": sim_cpu, "passes": len(res)}, f)


class _Dummy:
    """Stands for the previous memories of ``tb_core.session`` (the clock already runs)."""
    running = True


@cocotb.test()
async def native_sd(dut):
    """Elastic-SD on a model (``model``) with every MoE layer pass on this core (``rtl_engine``):
    ``jobs`` (``{batch, settings}``: :class:`~elmoe3d.sim.sd.elastic_sd.SDSettings` fields) over
    ``prompts``, ``n_new`` bytes each, one simulation for all of them. Writes the generated
    bytes, the decoding statistics and the RTL figures per job to ``sd_json``."""
    from dataclasses import asdict

    from cocotb.task import bridge, resume

    from elmoe3d.firmware.engine import IssEngine
    from elmoe3d.sim.benches.rtl_engine import RtlEngine
    from elmoe3d.sim.sd.elastic_sd import SDSettings, generate
    from elmoe3d.sim.lm.model import MoELM
    conf, cfg = _cfg()
    model = MoELM.load(conf["model"])
    iss = IssEngine(model, cfg, record=[])
    core = await native_session(dut, cfg, iss.compiled.offchip.copy(), iss.compiled.hb.copy(),
                                random.Random(conf["seeds"][0]), conf.get("stall", 0.0))
    engine = RtlEngine(iss, core, resume(core.stream), progress=conf.get("progress", True))
    prompts = [np.array(p, dtype=np.int64) for p in conf["prompts"]]

    def work():
        model.moe_engine = engine
        out = []
        for job in conf["jobs"]:
            s = SDSettings(**{**job["settings"], "integer": True})
            before = engine.summary()
            t0 = time.monotonic()
            r = generate(model, prompts[:job["batch"]], conf["n_new"], s, seed=conf.get("seed", 0))
            after = engine.summary()
            kinds = {}
            for name, k in after["kinds"].items():
                b = before["kinds"].get(name, {"passes": 0, "cycles": 0, "iss_cycles": 0})
                d = {f: k[f] - b[f] for f in ("passes", "cycles", "iss_cycles")}
                if d["passes"]:
                    kinds[name] = {**d, "ratio": d["cycles"] / d["iss_cycles"]}
            lookups = after["lookups"] - before["lookups"]
            out.append({"batch": job["batch"], "settings": asdict(s), "tokens": [t.tolist() for t in r.tokens],
                        "stats": {k: (v.item() if isinstance(v, np.generic) else v) for k, v in r.stats.items()
                                  if isinstance(v, (int, float, str, bool, np.generic)) or v is None},
                        "rtl": {"kinds": kinds, "cycles": after["cycles"] - before["cycles"],
                                "passes": after["passes"] - before["passes"], "lookups": lookups,
                                "hits": after["hits"] - before["hits"],
                                "generated": job["batch"] * conf["n_new"],
                                "seconds": time.monotonic() - t0}})
        return out

    rows = await bridge(work)()
    summary = engine.summary()
    summary["sim_seconds"], summary["sim_cpu_seconds"] = core.wall, core.cpu
    with open(conf["sd_json"], "w") as f:
        json.dump({"jobs": rows, "rtl": summary}, f, indent=1)


@cocotb.test()
async def native_replays_recorded_passes(dut):
    """``tb_core.core_replays_recorded_passes`` on the HDL memory models: passes recorded on the
    ISS (``bench_core.record_passes``) replayed in order; outputs and cache decisions equal the
    ISS's; cycles per pass written (no PE-beat count). Runs only when given ``replay`` (a pickle
    of the recording) and ``model`` (the model file)."""
    import pickle
    from elmoe3d.sim.lm.model import MoELM
    conf, cfg = _cfg()
    if "replay" not in conf:
        dut._log.info("no recording given: nothing to replay")
        return
    with open(conf["replay"], "rb") as f:
        recording = pickle.load(f)
    comp = tb_core.compile_model(cfg, MoELM.load(conf["model"]).int_layers)
    core_off, core_hb = comp.offchip.copy(), comp.hb.copy()
    core = await native_session(dut, cfg, core_off, core_hb, random.Random(1), 0.0)
    out = []
    for i, rec in enumerate(recording):
        tb_core.write_input(core_off, comp.map, rec["x"], rec["xm"], rec["xe"])
        n_ev = len(core.events)
        st = await native_stream(core, rec["words"], 50 * rec["cycles"] + 10000)
        what = f"recorded pass {i} ({rec['pass_']}, T={rec['tokens']})"
        assert tb_core.code(st) == Status.NONE, f"{what}: core stopped with {tb_core.code(st).name}"
        got = tb_core.read_output(core_off, comp.map, rec["tokens"])
        assert np.array_equal(got, rec["out"]), f"{what}: output differs from the ISS"
        assert [e[:5] for e in core.events[n_ev:]] == [tuple(c) for c in rec["cache"]], f"{what}: cache decisions differ"
        out.append({"index": i, "tokens": rec["tokens"], "core": int(st.cycles), "iss": rec["cycles"],
                    "offchip_bytes": rec["offchip_bytes"], "hb_bytes": rec["hb_bytes"]})
    with open(conf["cycles_json"], "w") as f:
        json.dump(out, f, indent=1)
