"""cocotb bench of one bit-sliced PE (``pe``): nested MSB/LSB cycles against the golden model.

Configuration (``bench_config()``): the generator ``params`` (``terms``, ``acc_bits``, ``max_k``,
``pipeline``), ``seeds``, ``quick``, ``gap`` (probability of an idle cycle, with random inputs and
``i_valid`` low, between any two cycles).

A case is a dot product of ``k`` weights with ``k`` activations (padded with zero activations to
whole beats of ``terms``). DRAFT drives one MSB cycle per beat (operand ``m``, ``i_shift`` high);
FULL drives an MSB cycle then an LSB cycle (operand ``c``) per beat. The clear comes alone before
the first term or, at random, with it (the sum restarts at that term). Operands come from the
golden model (``sim/slices.augment`` / ``correction``) and are packed through ``hw/layouts``;
the accumulator is compared with ``draft_gemv`` / ``full_gemv``.
"""

import random

import cocotb
import numpy as np
from amaranth.lib import data
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly, RisingEdge

from ...hw.layouts import ACT, OPERAND
from ..numerics.gemv import draft_gemv, full_gemv
from ..numerics.quant import ACT_MAX
from ..numerics.slices import augment, correction, lsb_slice, msb_slice
from .runner import bench_config

PERIOD_NS = 10


class TB:
    """Owns the clock and reset of one PE and drives its cycles."""

    def __init__(self, dut, cfg, seed):
        self.dut, self.cfg = dut, cfg
        p = cfg["params"]
        self.terms, self.acc_bits, self.max_k, self.pipeline = (
            p["terms"], p["acc_bits"], p["max_k"], p["pipeline"])
        self.act_layout = data.ArrayLayout(ACT, self.terms)
        self.op_layout = data.ArrayLayout(OPERAND, self.terms)
        self.rng = random.Random(seed)
        self.gap = cfg.get("gap", 0.3)

    async def start(self):
        cocotb.start_soon(Clock(self.dut.clk, PERIOD_NS, unit="ns").start())
        for name in ("i_act", "i_operand", "i_valid", "i_shift", "i_clear"):
            getattr(self.dut, name).value = 0
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 2)
        self.dut.rst.value = 0
        await RisingEdge(self.dut.clk)

    async def drive(self, act, op, *, valid, shift, clear=0):
        await FallingEdge(self.dut.clk)
        self.dut.i_act.value = self.act_layout.const(list(act)).as_value().value
        self.dut.i_operand.value = self.op_layout.const(list(op)).as_value().value
        self.dut.i_valid.value, self.dut.i_shift.value, self.dut.i_clear.value = valid, shift, clear

    async def idle(self):
        """Random gap cycles: garbage inputs, ``i_valid`` low."""
        while self.gap and self.rng.random() < self.gap:
            await self.drive([self.rng.randint(-128, 127) for _ in range(self.terms)],
                             [self.rng.randint(-16, 15) for _ in range(self.terms)],
                             valid=0, shift=self.rng.randint(0, 1))

    async def dot(self, q, a, mode):
        """Run one dot product; returns the accumulator (signed)."""
        nbeats = -(-len(q) // self.terms)
        pad = nbeats * self.terms - len(q)
        qp = np.concatenate([q, np.zeros(pad, np.int8)])
        ap = np.concatenate([a, np.zeros(pad, np.int8)]).astype(int).tolist()
        m = augment(msb_slice(qp)).tolist()
        c = correction(lsb_slice(qp)).tolist()
        # the clear alone, or with the first term (the sum restarts at that term), at random
        merged = self.rng.random() < 0.5
        if not merged:
            await self.drive(ap[:self.terms], m[:self.terms], valid=0, shift=0, clear=1)
        for b in range(nbeats):
            sl = slice(b * self.terms, (b + 1) * self.terms)
            await self.idle()
            await self.drive(ap[sl], m[sl], valid=1, shift=1, clear=int(merged and b == 0))
            if mode == "full":
                await self.idle()
                await self.drive(ap[sl], c[sl], valid=1, shift=0)
        await self.drive([0] * self.terms, [0] * self.terms, valid=0, shift=0)
        for _ in range(self.pipeline):
            await FallingEdge(self.dut.clk)
        await ReadOnly()
        return self.dut.o_acc.value.to_signed()

    async def check(self, q, a, mode, note=""):
        q, a = np.asarray(q, np.int8), np.asarray(a, np.int8)
        exp = (draft_gemv(msb_slice(q)[None, :], a) if mode == "draft" else full_gemv(q[None, :], a))[0]
        got = await self.dot(q, a, mode)
        if got != exp:
            with np.printoptions(threshold=100000, linewidth=160):
                raise AssertionError(f"PE mismatch: mode={mode} k={len(q)} {note}\nq = {q}\na = {a}\n"
                                     f"expected {exp}, got {got}")


@cocotb.test()
async def test_every_weight(dut):
    """Every INT8 weight value in both modes, at activations -127, 127, 0 and a random one."""
    cfg = bench_config()
    tb = TB(dut, cfg, cfg["seeds"][0])
    await tb.start()
    acts = [-ACT_MAX, ACT_MAX, 0, tb.rng.randint(-ACT_MAX, ACT_MAX)]
    step = 17 if cfg.get("quick") else 1
    count = 0
    for v in range(-128, 128, step):
        for av in acts:
            for mode in ("draft", "full"):
                await tb.check([v] * tb.terms, [av] * tb.terms, mode, f"weight {v} act {av}")
                count += 1
    dut._log.info("%d single-beat dot products bit-exact", count)


@cocotb.test()
async def test_long_extremes(dut):
    """The longest legal dot product at the extremes: the accumulator must not overflow."""
    cfg = bench_config()
    tb = TB(dut, cfg, cfg["seeds"][0])
    tb.gap = 0.0
    await tb.start()
    k = min(tb.max_k, 512)
    for wv, av in ((-128, -ACT_MAX), (-128, ACT_MAX), (127, ACT_MAX), (127, -ACT_MAX)):
        for mode in ("draft", "full"):
            await tb.check([wv] * k, [av] * k, mode, "extreme")


@cocotb.test()
async def test_random(dut):
    """Random dot products per seed, random gaps between cycles."""
    cfg = bench_config()
    count = 8 if cfg.get("quick") else 40
    for i, seed in enumerate(cfg["seeds"]):
        tb = TB(dut, cfg, seed)
        if i == 0:
            await tb.start()
        for _ in range(count):
            k = tb.rng.randint(1, min(tb.max_k, 5 * tb.terms))
            q = [tb.rng.randint(-128, 127) for _ in range(k)]
            a = [tb.rng.randint(-ACT_MAX, ACT_MAX) for _ in range(k)]
            await tb.check(q, a, tb.rng.choice(("draft", "full")), f"seed {seed}")
