"""cocotb bench of the command processor (``hw/command_processor.py``), top ``command_processor``.

Configuration (``bench_config()``): ``params`` (``preset``), ``seeds``, ``quick`` (fewer streams),
``idle`` (probability of an idle cycle before each ``i_word`` beat), ``stall`` (probability that
the executor model holds ``o_exec.ready`` low), ``max_delay`` (the executor answers each command
0 .. max_delay cycles after taking it).

Golden: :class:`elmoe3d.sim.machine.dispatch.DispatchModel` (the ISS's sequencing, at the ports;
tests/test_command_processor_rtl.py checks it against ``sim/machine/iss.py``) run on the same words with
the same executor answers. Checked exactly: every dispatched beat ``(op, word, expert, shared,
in_loop, index)`` in order, ``commands`` at every HALT, the SETR registers and ``o_regs_set``,
the final status (error code and index), and, without stalls, ``cycles`` at every HALT against
the model's cycle count. The executor model checks that ``o_exec`` holds ``valid`` and its
payload until the transfer and never dispatches while a command is owed. Streams: compiler
output (``firmware/compiler.py`` on random small integer layers of ``sim/golden/int_moe.py``, verify
and draft passes, shared experts), random hand-built streams (loops with NOP and SETR in their
bodies, bodies up to the memory's size, masks with bits at and above N_EXPERTS), and one stream
per error code; after an error the bench checks for a while that nothing is taken or dispatched.
"""

import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly, RisingEdge

from ...config import PRESETS
from ...firmware.compiler import compile_model, compile_pass
from ...spec.isa import Bits, Choice, InstructionSet, Op, Plane, Proj, Reg, Status, Update, field_widths
from ...hw.command_processor import (StatusShape, done_layout, exec_layout, regs_layout,
                                     status_layout)
from ..machine.dispatch import DispatchModel
from ..golden.int_moe import VERIFY, IntPass, calibrate_layer, draft_pass, fold_layer
from ..golden.moe_layer import MoEShape, random_moe
from .runner import bench_config
from .streams import StreamSource

PERIOD_NS = 10
EXECUTOR_ERRORS = (Status.REGISTER, Status.RANGE, Status.ADDRESS, Status.INPUT, Status.ORDER)


class Policy:
    """The executor's answers, the same for the golden model and the RTL: the n-th ROUTE gets
    ``masks[n]`` (cycled), dispatch number ``error_at`` gets ``error`` instead of NONE."""

    def __init__(self, masks, error_at=None, error=Status.NONE):
        self.masks, self.error_at, self.error = list(masks) or [0], error_at, error
        self.n = self.routes = 0

    def __call__(self, op, word, expert, shared, in_loop, index):
        n, self.n = self.n, self.n + 1
        mask = None
        if op == Op.ROUTE:
            mask = self.masks[self.routes % len(self.masks)]
            self.routes += 1
        return (self.error if n == self.error_at else Status.NONE), mask


class TB:
    def __init__(self, dut, config, seed, *, idle, stall, max_delay):
        self.dut, self.config, self.rng = dut, config, random.Random(seed)
        self.isa = InstructionSet(config)
        self.idle, self.stall, self.max_delay = idle, stall, max_delay
        self.exec_layout, self.done_layout = exec_layout(config), done_layout()
        self.src = StreamSource(dut, "i_word", dut.clk, idle=idle, rng=random.Random(seed * 7 + 1))
        self.cycle = 0
        self.halts = []

    async def reset(self):
        self.src.reset()
        self.dut.o_exec__ready.value = 0
        self.dut.i_done__valid.value = 0
        self.dut.i_done__payload.value = 0
        self.dut.i_experts.value = 0
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 2)
        self.dut.rst.value = 0
        await RisingEdge(self.dut.clk)

    async def monitor(self):
        """Every HALT (``halted`` rising): ``(commands, cycles)``; counts cycles."""
        was = 0
        while True:
            await RisingEdge(self.dut.clk)
            await ReadOnly()
            self.cycle += 1
            h = self.status()["halted"]
            if h and not was:
                s = self.status()
                self.halts.append((s["commands"], s["cycles"]))
            was = h

    def status(self):
        c = status_layout().from_bits(int(self.dut.o_status.value))
        return {"busy": int(c.busy), "halted": int(c.halted), "error": c.error.value, "index": int(c.index),
                "commands": int(c.commands), "cycles": int(c.cycles)}

    async def executor(self, policy, *, delay=None):
        """The executor model: takes ``o_exec`` beats (random stalls), answers each on ``i_done``
        after 0 .. max_delay cycles (or exactly ``delay``), with ``policy``'s code and mask."""
        dut, rng = self.dut, self.rng
        self.got = []
        state, wait, answer, held = "idle", 0, None, None
        n_mask = 1 << self.config.cache.expert_bits
        while True:
            await FallingEdge(dut.clk)
            dut.o_exec__ready.value = int(not (self.stall and rng.random() < self.stall))
            if state == "idle":
                dut.i_done__valid.value = 0
                dut.i_experts.value = rng.randrange(n_mask)        # sampled only at a ROUTE's done
            elif state == "delay":
                if wait == 0:
                    code, mask = answer
                    dut.i_done__valid.value = 1
                    dut.i_done__payload.value = int(self.done_layout.const({"error": StatusShape(int(code))}).as_bits())
                    dut.i_experts.value = rng.randrange(n_mask) if mask is None else mask
                    state = "done"
                else:
                    wait -= 1
            await ReadOnly()
            valid = int(dut.o_exec__valid.value)
            if state != "idle":
                assert not valid, f"o_exec: a dispatch while command {len(self.got) - 1} is owed"
                if state == "done" and int(dut.i_done__ready.value):
                    state = "idle"
                continue
            payload = int(dut.o_exec__payload.value) if valid else None
            if held is not None:
                assert valid, "o_exec: valid dropped before the transfer"
                assert payload == held, "o_exec: payload changed before the transfer"
            if valid and int(dut.o_exec__ready.value):
                b = self.exec_layout.from_bits(payload)
                beat = (b.op.value, int(b.word), int(b.expert), int(b.shared), int(b.in_loop), int(b.index))
                self.got.append(beat)
                answer = policy(Op(beat[0]), *beat[1:])
                wait = rng.randint(0, self.max_delay) if delay is None else delay
                state, held = "delay", None
            else:
                held = payload

    async def run(self, words, policy, *, expect_error=False, delay=None, limit=None, waits_after=None):
        """Feed ``words``; returns when they are all taken and the processor is idle, or it stopped.
        ``waits_after``: the stream is truncated; return once this many commands are done and
        nothing is dispatched (the processor then waits for more words)."""
        self.halts = []
        mon = cocotb.start_soon(self.monitor())
        exe = cocotb.start_soon(self.executor(policy, delay=delay))
        src = cocotb.start_soon(self.src.send(words))
        limit = limit or 200 + 60 * len(words) * (2 + self.max_delay) * 4
        for _ in range(limit):
            await RisingEdge(self.dut.clk)
            await ReadOnly()
            s = self.status()
            if s["error"]:
                break
            if src.done() and not s["busy"] and int(self.dut.o_exec__valid.value) == 0:
                break
            if (waits_after is not None and src.done() and s["commands"] == waits_after
                    and int(self.dut.o_exec__valid.value) == 0):
                for _ in range(20):         # waiting: nothing more happens
                    await RisingEdge(self.dut.clk)
                    await ReadOnly()
                    assert not int(self.dut.o_exec__valid.value), "a dispatch after the last word"
                break
        else:
            raise AssertionError(f"no end after {limit} cycles: status {self.status()}")
        if self.status()["error"]:
            # Stopped: for a while nothing is taken and nothing dispatched.
            for _ in range(20):
                await RisingEdge(self.dut.clk)
                await ReadOnly()
                assert not int(self.dut.i_word__ready.value), "i_word.ready after an error"
                assert not int(self.dut.o_exec__valid.value), "o_exec.valid after an error"
            src.cancel()
        await RisingEdge(self.dut.clk)
        for t in (mon, exe):
            t.cancel()
        return self.status()


def _regs(dut, config):
    layout = regs_layout(config)
    c = layout.from_bits(int(dut.o_regs.value))
    return {r: int(getattr(c, r.name.lower())) for r in Reg}, int(dut.o_regs_set.value)


def check(tb, model, status, *, cycles=False, name=""):
    got, want = tb.got, model.dispatches
    tb.dut._log.info(f"{name}: {len(got)} dispatches, halts (commands, cycles) {tb.halts}, "
                     f"status {Status(status['error']).name} at {status['index']}")
    for n, (g, w) in enumerate(zip(got, want)):
        assert g == w, f"dispatch {n}: got (op, word, expert, shared, in_loop, index) = {g}, want {w}"
    assert len(got) == len(want), f"{len(got)} dispatches, want {len(want)}"
    assert status["error"] == int(model.error), f"error {Status(status['error']).name}, want {model.error.name}"
    if model.error != Status.NONE:
        assert status["index"] == model.index, f"stopped at index {status['index']}, want {model.index}"
    if cycles:
        assert tb.halts == model.halts, f"(commands, cycles) per HALT {tb.halts}, want {model.halts}"
    else:
        assert [c for c, _ in tb.halts] == [c for c, _ in model.halts], \
            f"commands per HALT {tb.halts}, want {model.halts}"
    regs, regs_set = _regs(tb.dut, tb.config)
    want_set = sum(1 << int(r) for r in model.regs)
    assert regs_set == want_set, f"o_regs_set {regs_set:#x}, want {want_set:#x}"
    for r, v in model.regs.items():
        assert regs[r] == v, f"register {r.name} = {regs[r]}, want {v}"


# -- streams ----------------------------------------------------------------------------------------
def compiled_streams(config, rng, count):
    """``count`` compiler passes over a random small model (random layer, tokens, pass)."""
    shape = MoEShape(d_model=24, n_experts=6, top_k=2, d_ffn=40, n_shared=2)
    nrng = np.random.default_rng(rng.randrange(1 << 30))
    layers = []
    for _ in range(2):
        qw = random_moe(shape, nrng).quantized()
        layers.append(fold_layer(qw, calibrate_layer(qw, nrng.standard_normal((32, shape.d_model)), shape.top_k),
                                 shape.top_k))
    comp = compile_model(config, layers)
    passes = [VERIFY, draft_pass(1), draft_pass(2, "full"), draft_pass(1, "draft", "cached"), IntPass(k=1)]
    words = []
    for _ in range(count):
        words += compile_pass(comp, rng.randrange(2), rng.randint(1, config.buffers.tokens), rng.choice(passes))
    return words, shape.n_experts


def random_masks(config, n_routed, rng, count=8):
    n = config.cache.n_experts
    out = [0, (1 << n) - 1]
    for _ in range(count):
        m = sum(1 << e for e in range(n_routed) if rng.random() < 0.4)
        if rng.random() < 0.3:
            m |= 1 << rng.randrange(n)                  # chosen at or above N_EXPERTS: filtered
        out.append(m)
    rng.shuffle(out)
    return out


def random_stream(isa, rng, n_experts, *, length=40):
    """A legal hand-built stream: SETRs, NOPs, executor commands and loops (ROUTE before each)."""
    cfg = isa.config
    width = field_widths(cfg)
    max_body = (1 << cfg.body_bits) - 1

    def enc_any(op):
        f = {}
        for s in isa.fields[op]:
            f[s.name] = rng.choice([int(v) for v in s.enum]) if s.enum else rng.randrange(1 << s.width)
        return isa.encode(op, **f)

    plain = [Op.NOP, Op.SETR, Op.LOADP, Op.FETCH, Op.LOADM, Op.GEMV, Op.SWIGLU, Op.COMBINE, Op.STOREY]
    words = [isa.encode(Op.SETR, reg=Reg.N_EXPERTS, value=n_experts)]
    while len(words) < length:
        r = rng.random()
        if r < 0.15:
            words += [isa.encode(Op.LOADX), isa.encode(Op.ROUTE, k=rng.randrange(1 << width["k"]),
                                                        choice=rng.choice(list(Choice)))]
            nb = rng.choice([1, 2, rng.randint(1, max_body), max_body])
            body = [enc_any(rng.choice(plain)) for _ in range(nb)]
            body = [w for w in body if not (w & 0xF == Op.SETR and (w >> 4) & 0xF == Reg.N_EXPERTS)] or [0]
            if rng.random() < 0.5:
                words += [isa.encode(Op.EXPERTS, body=len(body))] + body
            shared_max = cfg.cache.n_experts - 1 - n_experts
            if shared_max >= 0 and rng.random() < 0.5:
                words += [isa.encode(Op.SHARED, index=rng.randint(0, shared_max), body=len(body))] + body
        else:
            w = enc_any(rng.choice(plain))
            if w & 0xF == Op.SETR and (w >> 4) & 0xF == Reg.N_EXPERTS:
                continue
            words.append(w)
    return words + [isa.encode(Op.HALT)]


def error_cases(isa, n_experts):
    """``(name, words, policy)``: one stream per way a stream can stop."""
    cfg = isa.config
    e = isa.encode
    pre = [e(Op.SETR, reg=Reg.N_EXPERTS, value=n_experts), e(Op.SETR, reg=Reg.TOKENS, value=3)]
    route = [e(Op.LOADX), e(Op.LOADP), e(Op.ROUTE, k=1, choice=Choice.TOPK)]
    body = [e(Op.FETCH, plane=Plane.MSB, update=Update.LOOKUP), e(Op.NOP), e(Op.GEMV, proj=Proj.UP, bits=Bits.FULL)]
    loop = [e(Op.EXPERTS, body=len(body))] + body
    halt = [e(Op.HALT)]
    gemv = e(Op.GEMV, proj=Proj.GATE, bits=Bits.DRAFT)
    proj = next(s for s in isa.fields[Op.GEMV] if s.name == "proj")
    reg = next(s for s in isa.fields[Op.SETR] if s.name == "reg")
    masks = [0b1011]
    cases = [
        ("opcode", pre + route + [0xD] + halt, Policy(masks)),
        ("opcode-in-body", pre + route + [e(Op.EXPERTS, body=2), body[0], 0xE] + halt, Policy(masks)),
        ("reserved-bits", pre + [e(Op.HALT) | 1 << (isa.word_bits - 1)], Policy(masks)),
        ("reserved-bits-in-body", pre + route + [e(Op.EXPERTS, body=1), e(Op.LOADM) | 1 << 5] + halt, Policy(masks)),
        ("enum-proj", pre + route + [gemv | 3 << proj.offset] + halt, Policy(masks)),
        ("enum-reg", pre + [e(Op.SETR, reg=Reg.LAYER, value=1) | 15 << reg.offset] + halt, Policy(masks)),
        ("body-0", pre + route + [e(Op.EXPERTS, body=0)] + body + halt, Policy(masks)),
        ("shared-body-0", pre + route + [e(Op.SHARED, index=0, body=0)] + body + halt, Policy(masks)),
        ("nested-loop", pre + route + [e(Op.EXPERTS, body=3), body[0], e(Op.SHARED, index=0, body=1), body[2]] + halt,
         Policy(masks)),
        ("halt-in-body", pre + route + [e(Op.SHARED, index=0, body=2), body[0]] + halt + halt, Policy(masks)),
        ("no-route", pre + [e(Op.LOADX)] + loop + halt, Policy(masks)),
        ("loadx-after-route", pre + route + [e(Op.LOADX)] + loop + halt, Policy(masks)),
        ("route-failed", pre + route + loop + halt, Policy(masks, error_at=2, error=Status.RANGE)),
        ("route-next-stream", pre + route + halt + loop + halt, Policy(masks)),
        ("no-n-experts", [e(Op.LOADX), e(Op.ROUTE, k=1, choice=Choice.TOPK)] + loop + halt, Policy(masks)),
        ("shared-key", pre + route + [e(Op.SHARED, index=cfg.cache.n_experts - n_experts, body=1), body[0]] + halt,
         Policy(masks)),
        ("executor-in-loop", pre + route + loop + halt, Policy(masks, error_at=4, error=Status.ORDER)),
        ("executor-first", pre + route + loop + halt, Policy(masks, error_at=0, error=Status.INPUT)),
        ("executor-address", pre + route + [e(Op.STOREY)] + halt, Policy(masks, error_at=3, error=Status.ADDRESS)),
        ("executor-register", pre + route + [e(Op.STOREY)] + halt, Policy(masks, error_at=3, error=Status.REGISTER)),
    ]
    return cases


# -- tests ------------------------------------------------------------------------------------------
# Stall settings when the launcher gives none (an ``elmoe3d regress`` run).
DEFAULTS = {"idle": 0.3, "stall": 0.3, "max_delay": 3, "quick": False}


def _setup(dut):
    cfg = {**DEFAULTS, **bench_config()}
    config = PRESETS[cfg["params"]["preset"]]
    cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns").start())
    return cfg, config


def _model(config, words, policy, delay=0):
    return DispatchModel(config, policy, delay=delay).feed(words)


@cocotb.test()
async def test_compiled_streams(dut):
    """Compiler streams back to back, random stalls and answer delays, random expert masks."""
    cfg, config = _setup(dut)
    for seed in cfg["seeds"]:
        rng = random.Random(seed)
        tb = TB(dut, config, seed, idle=cfg["idle"], stall=cfg["stall"], max_delay=cfg["max_delay"])
        await tb.reset()
        words, n_routed = compiled_streams(config, rng, 2 if cfg["quick"] else 4)
        masks = random_masks(config, n_routed, rng)
        model = _model(config, words, Policy(masks))
        assert model.error == Status.NONE and len(model.halts) >= 2
        status = await tb.run(words, Policy(masks))
        check(tb, model, status, name=f"compiled seed {seed}")
        assert status["halted"] and not status["busy"]


@cocotb.test()
async def test_random_streams(dut):
    """Hand-built streams: NOP/SETR inside bodies, bodies up to 2**body_bits - 1, masks beyond N_EXPERTS."""
    cfg, config = _setup(dut)
    isa = InstructionSet(config)
    for seed in cfg["seeds"]:
        rng = random.Random(seed * 101)
        tb = TB(dut, config, seed, idle=cfg["idle"], stall=cfg["stall"], max_delay=cfg["max_delay"])
        await tb.reset()
        n_exp = rng.randint(1, config.cache.n_experts - 1)
        words = []
        for _ in range(2 if cfg["quick"] else 4):
            words += random_stream(isa, rng, n_exp, length=rng.randint(10, 60))
        masks = random_masks(config, n_exp, rng)
        model = _model(config, words, Policy(masks))
        assert model.error == Status.NONE
        status = await tb.run(words, Policy(masks))
        check(tb, model, status, name=f"random seed {seed}")


@cocotb.test()
async def test_cycles(dut):
    """No stalls: SETR/NOP one per cycle, dispatch the cycle after i_done, cycles = the model's."""
    cfg, config = _setup(dut)
    isa = InstructionSet(config)
    rng = random.Random(cfg["seeds"][0])
    words_c, n_routed = compiled_streams(config, rng, 2)
    setr = [isa.encode(Op.SETR, reg=rng.choice(list(Reg)), value=rng.randrange(1 << field_widths(config)["value"]))
            if rng.random() < 0.7 else isa.encode(Op.NOP) for _ in range(37)] + [isa.encode(Op.HALT)]
    masks = random_masks(config, n_routed, rng)
    for delay in (0, 3):
        for words in (setr, words_c + setr):
            tb = TB(dut, config, 1, idle=0.0, stall=0.0, max_delay=0)
            await tb.reset()
            model = _model(config, words, Policy(masks), delay=delay)
            status = await tb.run(words, Policy(masks), delay=delay)
            check(tb, model, status, cycles=True, name=f"cycles delay {delay}")
    # SETR-only stream: words are taken on consecutive cycles and each stream costs one cycle per word.
    assert model.halts[-1][1] == len(setr)
    assert tb.halts[-1] == (len(setr), len(setr))


@cocotb.test()
async def test_errors(dut):
    """Every error code: the status names the code and the offending index, and the processor stops."""
    cfg, config = _setup(dut)
    isa = InstructionSet(config)
    n_exp = 6
    for name, words, policy in error_cases(isa, n_exp):
        for seed in cfg["seeds"][:1 if cfg["quick"] else 2]:
            tb = TB(dut, config, seed, idle=cfg["idle"], stall=cfg["stall"], max_delay=cfg["max_delay"])
            await tb.reset()
            model = _model(config, words, Policy(policy.masks, policy.error_at, policy.error))
            assert model.error != Status.NONE, name
            status = await tb.run(words, Policy(policy.masks, policy.error_at, policy.error))
            try:
                check(tb, model, status, name=name)
            except AssertionError as exc:
                raise AssertionError(f"case {name}: {exc}") from None
            assert not status["busy"] and not status["halted"], name


@cocotb.test()
async def test_fuzzed_streams(dut):
    """Streams of the stream fuzzer (``stream_fuzz.py``: valid, mutated toward every Status,
    truncated), the executor answering as the ISS did (its ROUTE masks, its error at the
    command it stopped at): the processor stops at the ISS's index with the ISS's code."""
    from .stream_fuzz import KINDS, StreamFuzzer, expect
    cfg, config = _setup(dut)
    for seed in cfg["seeds"][:1 if cfg["quick"] else 2]:
        fz = StreamFuzzer(config, seed, pad=False)
        for case in fz.cases(len(KINDS) if cfg["quick"] else 3 * len(KINDS)):
            out = expect(config, case, None)
            error_at = out.dispatches - 1 if out.status in EXECUTOR_ERRORS else None
            policy = Policy(out.masks, error_at, out.status)
            model = DispatchModel(config, policy, delay=0).feed(case.words, one_stream=True)
            assert (model.error, model.index) == (out.status, out.index), f"{case.kind}: model != ISS"
            tb = TB(dut, config, seed, idle=cfg["idle"], stall=cfg["stall"], max_delay=cfg["max_delay"])
            await tb.reset()
            status = await tb.run(case.words, Policy(out.masks, error_at, out.status),
                                  waits_after=out.commands if out.ended else None)
            try:
                check(tb, model, status, name=case.kind)
            except AssertionError as exc:
                raise AssertionError(f"fuzzed {case.kind} ({case.detail}): {exc}") from None
            assert (status["error"], status["index"]) == (int(out.status), out.index), case.kind
            assert status["busy"] == int(out.ended and bool(case.words)), case.kind


@cocotb.test()
async def test_index_saturates(dut):
    """70 000 NOPs then SETR and a bad opcode: the index saturates at 65535 (skipped when quick)."""
    cfg, config = _setup(dut)
    if cfg["quick"]:
        return
    isa = InstructionSet(config)
    words = [isa.encode(Op.NOP)] * 70000 + [isa.encode(Op.SETR, reg=Reg.LAYER, value=1), 0xD]
    tb = TB(dut, config, 1, idle=0.0, stall=0.0, max_delay=0)
    await tb.reset()
    model = _model(config, words, Policy([0]))
    assert (model.error, model.index) == (Status.OPCODE, (1 << 16) - 1)
    status = await tb.run(words, Policy([0]), limit=80000)
    check(tb, model, status, name="index saturation")
    assert status["commands"] == 70001
