"""cocotb bench of the bit-sliced PE array (``pe_array``) and the INT8 baseline (``mac_array_baseline``).

Configuration (``bench_config()``): ``kind`` (the top), the generator ``params``, ``seeds``,
``quick`` (fewer cases), ``idle``/``stall`` (probabilities of an idle cycle on each source and
of a not-ready cycle on the result sink).

Every result is compared bit-exactly with the golden model (``sim/numerics/gemv.py``): ``draft_gemv`` in
DRAFT mode, ``full_gemv`` in FULL mode, ``int8_gemv`` on the baseline. Beats are packed and
unpacked through the layouts of ``hw/layouts.py``. A mismatch prints the command, weights and
activations that produced it. ``test_cycles`` runs without stalls and checks the measured
cycles of a GEMV (one and three row tiles back to back) against
:func:`elmoe3d.hw.pe_array.gemv_cycles`; it writes them to
``cycles.json`` in the build folder for ``elmoe3d bench-pe``.
"""

import json
import random
from pathlib import Path

import cocotb
import numpy as np
from amaranth.lib import data
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge
from cocotb.utils import get_sim_time

from ...hw.layouts import Mode, act_layout, command_layout, int8_tile_layout, plane_layout, result_layout
from ...spec.timing import gemv_cycles
from ..numerics.gemv import draft_gemv, full_gemv, int8_gemv
from ..numerics.quant import ACT_MAX
from ..numerics.slices import lsb_slice, msb_slice
from .runner import bench_config
from .streams import StreamSink, StreamSource

PERIOD_NS = 10


class Case:
    """One command: a ``rows x k`` weight tile, ``lanes x k`` activations and a mode."""

    def __init__(self, q, a, mode, note=""):
        self.q, self.a, self.mode, self.note = q, a, mode, note

    @property
    def k(self):
        return self.q.shape[1]

    def expected(self):
        if self.mode == "draft":
            return draft_gemv(msb_slice(self.q), self.a)
        if self.mode == "full":
            return full_gemv(self.q, self.a)
        return int8_gemv(self.q, self.a)

    def describe(self):
        with np.printoptions(threshold=100000, linewidth=160):
            return (f"mode={self.mode} k={self.k} {self.note}\nweights q (rows x k) =\n{self.q}\n"
                    f"activations a (lanes x k) =\n{self.a}")


class TB:
    """Owns the clock, reset and the stream drivers of one array."""

    def __init__(self, dut, cfg, *, idle, stall, seed):
        self.dut, self.cfg = dut, cfg
        p = cfg["params"]
        self.rows, self.cols, self.lanes = p["rows"], p["cols"], p["lanes"]
        self.acc_bits, self.max_k, self.pipeline = p["acc_bits"], p["max_k"], p["pipeline"]
        self.baseline = cfg["kind"] == "mac_array_baseline"
        self.rng = random.Random(seed)
        self.cmd_layout = command_layout(self.max_k, with_mode=not self.baseline)
        self.act_layout = act_layout(self.cols, self.lanes)
        self.res_layout = result_layout(self.rows, self.lanes, self.acc_bits)
        clk = dut.clk
        mk = lambda port, r: StreamSource(dut, port, clk, idle=idle, rng=random.Random(r))
        self.cmd = mk("i_cmd", seed * 7 + 1)
        self.act = mk("i_act", seed * 7 + 2)
        if self.baseline:
            self.weight_layout = int8_tile_layout(self.rows, self.cols)
            self.weight = mk("i_weight", seed * 7 + 3)
            self.sources = [self.cmd, self.act, self.weight]
        else:
            self.weight_layout = plane_layout(self.rows, self.cols)
            self.msb = mk("i_msb", seed * 7 + 3)
            self.lsb = mk("i_lsb", seed * 7 + 4)
            self.sources = [self.cmd, self.act, self.msb, self.lsb]
        self.res = StreamSink(dut, "o_result", clk, stall=stall, rng=random.Random(seed * 7 + 5))

    @staticmethod
    def cycle():
        return int(get_sim_time(unit="ns")) // PERIOD_NS

    async def start(self):
        """Start the clock (once per cocotb test) and reset."""
        cocotb.start_soon(Clock(self.dut.clk, PERIOD_NS, unit="ns").start())
        await self.reset()

    async def reset(self):
        for s in self.sources:
            s.reset()
        self.res.reset()
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 3)
        self.dut.rst.value = 0
        await RisingEdge(self.dut.clk)

    def _garbage(self, shape, lo, hi):
        return np.array([self.rng.randint(lo, hi) for _ in range(int(np.prod(shape)))], np.int64).reshape(shape)

    def beats(self, case):
        """The command word and the activation/weight beats of one case (integers)."""
        fields = {"k": case.k} if self.baseline else {"k": case.k, "mode": Mode[case.mode.upper()]}
        cmd = self.cmd_layout.const(fields).as_value().value
        nbeats = -(-case.k // self.cols)
        pad = nbeats * self.cols - case.k
        # Columns beyond k carry garbage: the array must mask them.
        a = np.concatenate([case.a, self._garbage((self.lanes, pad), -128, 127)], axis=1)
        q = np.concatenate([case.q, self._garbage((self.rows, pad), -128, 127)], axis=1).astype(np.int8)
        acts, msbs, lsbs, weights = [], [], [], []
        for b in range(nbeats):
            cols = slice(b * self.cols, (b + 1) * self.cols)
            acts.append(self.act_layout.const(a[:, cols].tolist()).as_value().value)
            tile = q[:, cols]
            if self.baseline:
                weights.append(self.weight_layout.const(tile.tolist()).as_value().value)
            else:
                msbs.append(self.weight_layout.const((msb_slice(tile) & 0xF).tolist()).as_value().value)
                if case.mode == "full":
                    lsbs.append(self.weight_layout.const(lsb_slice(tile).tolist()).as_value().value)
        return cmd, acts, (weights if self.baseline else (msbs, lsbs))

    def unpack(self, word):
        view = data.Const(self.res_layout, word)
        return np.array([[view[lane][r] for r in range(self.rows)] for lane in range(self.lanes)],
                        dtype=np.int64)

    async def run(self, cases):
        """Queue every case back to back on all streams; check each result in order."""
        cmds, acts, ws, msbs, lsbs = [], [], [], [], []
        for case in cases:
            cmd, a, w = self.beats(case)
            cmds.append(cmd)
            acts += a
            if self.baseline:
                ws += w
            else:
                msbs += w[0]
                lsbs += w[1]
        tasks = [cocotb.start_soon(self.cmd.send(cmds, self.cycle)),
                 cocotb.start_soon(self.act.send(acts))]
        if self.baseline:
            tasks.append(cocotb.start_soon(self.weight.send(ws)))
        else:
            tasks += [cocotb.start_soon(self.msb.send(msbs)), cocotb.start_soon(self.lsb.send(lsbs))]
        got = await self.res.recv(len(cases), self.cycle)
        for t in tasks:
            await t
        for i, (case, word) in enumerate(zip(cases, got)):
            exp, out = case.expected(), self.unpack(word)
            if not np.array_equal(exp, out):
                raise AssertionError(f"case {i} mismatch\n{case.describe()}\nexpected (lanes x rows) =\n"
                                     f"{exp}\ngot =\n{out}")
        return got

    # -- case generators ----------------------------------------------------------------------
    def modes(self):
        return ["int8"] if self.baseline else ["draft", "full"]

    def corner_cases(self):
        ks = sorted({1, self.cols, min(self.max_k, 2 * self.cols + 1), self.max_k if self.max_k <= 64 else 64})
        cases = []
        for mode in self.modes():
            for wv in (-128, 127, 0):
                for av in (-ACT_MAX, ACT_MAX, 0):
                    for k in ks:
                        q = np.full((self.rows, k), wv, dtype=np.int8)
                        a = np.full((self.lanes, k), av, dtype=np.int8)
                        cases.append(Case(q, a, mode, f"corner w={wv} a={av}"))
            cases.append(Case(np.zeros((self.rows, 0), np.int8), np.zeros((self.lanes, 0), np.int8),
                              mode, "k=0"))
            if self.max_k > 64 and not self.cfg.get("quick"):   # the longest legal command once, at the extremes
                cases.append(Case(np.full((self.rows, self.max_k), -128, np.int8),
                                  np.full((self.lanes, self.max_k), -ACT_MAX, np.int8), mode, "k=max_k"))
        return cases

    def random_cases(self, count):
        cases = []
        for _ in range(count):
            k = self.rng.randint(1, min(self.max_k, 6 * self.cols + 2))
            q = np.array([[self.rng.randint(-128, 127) for _ in range(k)] for _ in range(self.rows)], np.int8)
            a = np.array([[self.rng.randint(-ACT_MAX, ACT_MAX) for _ in range(k)]
                          for _ in range(self.lanes)], np.int8)
            cases.append(Case(q, a, self.rng.choice(self.modes()), "random"))
        return cases


def _stalls(cfg):
    return cfg.get("idle", 0.3), cfg.get("stall", 0.3)


@cocotb.test()
async def test_corners(dut):
    """All weights -128/127/0 x activations -127/127/0, k = 0, 1, cols, 2*cols+1, max; stalls."""
    cfg = bench_config()
    idle, stall = _stalls(cfg)
    tb = TB(dut, cfg, idle=idle, stall=stall, seed=cfg["seeds"][0])
    await tb.start()
    cases = tb.corner_cases()
    await tb.run(cases)
    dut._log.info("%d corner commands bit-exact", len(cases))


@cocotb.test()
async def test_random(dut):
    """Random weights, activations, k and modes per seed, random idle/backpressure on every stream."""
    cfg = bench_config()
    idle, stall = _stalls(cfg)
    count = 6 if cfg.get("quick") else 24
    total = 0
    for i, seed in enumerate(cfg["seeds"]):
        tb = TB(dut, cfg, idle=idle, stall=stall, seed=seed)
        await (tb.reset() if i else tb.start())
        cases = tb.random_cases(count)
        await tb.run(cases)
        total += len(cases)
    dut._log.info("%d random commands bit-exact over seeds %s", total, cfg["seeds"])


@cocotb.test()
async def test_cycles(dut):
    """No stalls: the cycles of a GEMV (one row tile, and three tiles back to back), from the first
    command transfer to the last result transfer, equal the analytical model."""
    cfg = bench_config()
    tb = TB(dut, cfg, idle=0.0, stall=0.0, seed=cfg["seeds"][0])
    await tb.start()
    ks = cfg.get("cycle_ks") or [tb.cols * 4, tb.cols * 4 + 1, tb.cols]
    ks = [k for k in ks if k <= tb.max_k]
    rows, mismatches = [], []
    for mode in tb.modes():
        for k in ks:
            for tiles in (1, 3):
                case = Case(np.ones((tb.rows, k), np.int8), np.ones((tb.lanes, k), np.int8), mode)
                first = len(tb.cmd.transfer_cycles)
                await tb.run([case] * tiles)
                measured = tb.res.transfer_cycles[-1] - tb.cmd.transfer_cycles[first] + 1
                model = gemv_cycles(k=k, cols=tb.cols, mode=mode, pipeline=tb.pipeline, n=tiles * tb.rows,
                                    rows=tb.rows)
                rows.append({"mode": mode, "k": k, "tiles": tiles, "measured": measured, "model": model})
                if measured != model:
                    mismatches.append(rows[-1])
                await ClockCycles(dut.clk, 2)
    out = Path(cfg.get("cycles_json", "cycles.json"))
    out.write_text(json.dumps({"params": cfg["params"], "kind": cfg["kind"], "rows": rows}, indent=2))
    for r in rows:
        dut._log.info("cycles of a GEMV: mode %-5s k %5d tiles %d measured %6d model %6d",
                      r["mode"], r["k"], r["tiles"], r["measured"], r["model"])
    assert not mismatches, f"cycle count differs from the model: {mismatches}"
