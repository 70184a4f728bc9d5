"""Constrained-random command streams for the error checks: valid, mutated and truncated.

:class:`StreamFuzzer` compiles a small random layer (``firmware/compiler.py``) for one
configuration and makes :class:`Case` s from it: a compiler stream of a random pass (verify or a
draft, 1 to 4 tokens, a random input) and then one mutation of a :data:`KINDS` kind, each
aimed at one :class:`~elmoe3d.spec.isa.Status`:

- ``valid`` (NONE): the compiler's stream, unchanged;
- ``opcode`` (OPCODE): a word replaced by one with an opcode the set lacks;
- ``reserved`` (FIELD): a bit above an instruction's last field set; ``enum`` (FIELD): a SETR
  register or a GEMV projection outside its enum;
- ``register`` (REGISTER): one SETR left out;
- ``range`` (RANGE): TOKENS, D_MODEL, D_FFN or N_EXPERTS out of range (0, too large, not a
  multiple of the core's width), a ROUTE k of 0 or above the limit, a FETCH lsb lookup;
- ``address`` (ADDRESS): X_ADDR, Y_ADDR, P_ADDR, E_ADDR, E_STRIDE, PLANE_LINES or HB_BASE past
  the configured memory;
- ``input`` (INPUT): a -128 token, a token scale exponent outside 1..48 or mantissa of 2**15 or
  more, a zero exponent in an expert's multiplier table or in the layer's router/hidden scalars;
- ``order`` (ORDER): FETCH, LOADM, SWIGLU or a GEMV replaced by NOP, a body command before the
  loop, ROUTE before LOADP, STOREY before LOADX;
- ``loop`` (LOOP): a body of 0, no ROUTE before the loop, LOADX between ROUTE and the loop, a
  loop header or HALT inside a body;
- ``key`` (KEY): a SHARED index whose id ``N_EXPERTS + index`` does not fit the cache key;
- ``truncated`` (a :class:`~elmoe3d.sim.machine.dispatch.StreamEnd`): the stream cut before its HALT.

The images are padded to the configuration's whole off-chip and HB space, so "past the image"
(the ISS) and "past the memory" (the core) are the same addresses. The ISS (``Machine`` with the
core's :class:`~elmoe3d.sim.machine.iss.CoreLimits`) is the judge: :func:`expect` gives the
``(status, index, commands)`` it stops with; benches hold the RTL to it.
"""

import random
from dataclasses import dataclass

import numpy as np

from ...firmware.compiler import compile_model, compile_pass
from ...firmware.layout import write_input
from ...spec.image import MULTIPLIER, SCALARS, TOKEN_SCALE, constants_block
from ...spec.isa import InstructionSet, Op, Plane, Reg, Status, Update, field_widths
from ..machine.dispatch import MachineError, StreamEnd
from ..golden.int_moe import VERIFY, calibrate_layer, draft_pass, fold_layer, quantize_tokens
from ..machine.iss import Machine
from ..golden.moe_layer import MoEShape, random_moe

KINDS = ("valid", "opcode", "reserved", "enum", "register", "range", "address", "input", "order", "loop", "key",
         "truncated")
WANT = {"valid": Status.NONE, "opcode": Status.OPCODE, "reserved": Status.FIELD, "enum": Status.FIELD,
        "register": Status.REGISTER, "range": Status.RANGE, "address": Status.ADDRESS, "input": Status.INPUT,
        "order": Status.ORDER, "loop": Status.LOOP, "key": Status.KEY, "truncated": None}
INPUT_EDITS = ("x128", "xe", "xm", "table_e", "router_e", "hid_e")
ORDER_EDITS = ("fetch", "loadm", "swiglu", "gemv", "outside", "route_first", "storey_first")
PASSES = (VERIFY, draft_pass(1), draft_pass(2, "full"), draft_pass(1, "draft", "cached"))


@dataclass
class Case:
    """One stream and its images: ``kind``, what was done (``detail``), the Status it aims at
    (``want``; None for a truncated stream)."""

    kind: str
    detail: str
    words: list
    offchip: np.ndarray
    hb: np.ndarray
    want: object
    tokens: int


@dataclass(frozen=True, eq=False)
class Outcome:
    """Where the ISS stops: ``status`` (NONE after HALT or for a truncated stream), ``index`` (the
    offending word's, the awaited word's for a truncated one, HALT's otherwise), ``commands``
    completed, ``ended`` (True: the stream ran out of words), ``masks`` (each ROUTE's expert
    mask) and ``dispatches`` (executor commands started, the failing one included)."""

    status: Status
    index: int
    commands: int
    ended: bool
    masks: tuple
    dispatches: int
    message: str
    offchip: np.ndarray     # the ISS's off-chip image after the run (the Y block written by STOREY)


def expect(config, case, limits=None):
    """Run ``case`` on a fresh ISS (copies of its images); its :class:`Outcome`."""
    m = Machine(config, case.offchip.copy(), case.hb.copy(), core=limits)
    try:
        m.run(case.words)
        status, msg, ended = Status.NONE, "halted", False
    except StreamEnd as exc:
        status, msg, ended = Status.NONE, str(exc), True
    except MachineError as exc:
        status, msg, ended = exc.status, str(exc), False
    seq = m.sequencer
    return Outcome(status, seq.index, seq.commands, ended, tuple(m.route_masks), len(seq.dispatches), msg,
                   m.offchip)


class StreamFuzzer:
    """Cases for one configuration. ``limits``: the core's :class:`~elmoe3d.sim.machine.iss.CoreLimits`
    (D_MODEL/D_FFN multiples of ``limits.width``, k up to ``limits.max_k``); ``seed`` fixes the
    layer and every draw; ``max_tokens``: the largest token group drawn; ``pad``: images padded to the configured space (False for a large
    configuration whose RTL core is not run: addresses past the space are past the images too)."""

    def __init__(self, config, seed, limits=None, pad=True, max_tokens=4):
        self.config, self.limits, self.max_tokens = config, limits, max_tokens
        self.rng = random.Random(seed)
        self.isa = InstructionSet(config)
        W = max(config.vector.width, config.array.rows, config.array.cols)
        self.shape = MoEShape(d_model=2 * W, n_experts=4, top_k=2, d_ffn=2 * W, n_shared=1)
        nrng = np.random.default_rng(seed)
        qw = random_moe(self.shape, nrng).quantized()
        cal = nrng.standard_normal((64, self.shape.d_model))
        self.layer = fold_layer(qw, calibrate_layer(qw, cal, self.shape.top_k), self.shape.top_k)
        self.comp = compile_model(config, [self.layer])
        self.nrng = nrng
        off_bytes = config.offchip.lines * config.offchip.width // 8
        hb_bytes = config.hb.lines * config.hb.channels * config.hb.width // 8
        if pad:         # the whole space (tiny: 4 MiB, small: 8 MiB); else the compiled images only
            self.offchip = np.zeros(off_bytes, dtype=np.uint8)
            self.offchip[:len(self.comp.offchip)] = self.comp.offchip
            self.hb = np.zeros(hb_bytes, dtype=np.uint8)
        else:
            self.offchip, self.hb = self.comp.offchip.copy(), self.comp.hb.copy()
        self.off_image_lines = off_bytes // config.line_bytes
        self.value_max = (1 << field_widths(config)["value"]) - 1

    # -- helpers -------------------------------------------------------------------------------
    def _base(self, moe_pass=None):
        rng = self.rng
        T = rng.randint(1, self.max_tokens)
        p = moe_pass or rng.choice(PASSES)
        words = compile_pass(self.comp, 0, T, p)
        off = self.offchip.copy()
        x = self.nrng.standard_normal((T, self.shape.d_model)) * rng.choice([0.01, 1.0, 100.0])
        a, xm, xe = quantize_tokens(x)
        write_input(off, self.comp.map, a, xm, xe)
        return words, off, self.hb.copy(), T, p

    def _ops(self, words):
        return [w & 0xF for w in words]

    def _at(self, words, op, nth=0):
        return [i for i, o in enumerate(self._ops(words)) if o == op][nth]

    def _setr(self, words, reg):
        isa = self.isa
        return next(i for i, w in enumerate(words)
                    if w & 0xF == Op.SETR and isa.decode(w)[1]["reg"] == reg)

    def _set(self, words, reg, value):
        words[self._setr(words, reg)] = self.isa.encode(Op.SETR, reg=reg, value=value)

    # -- mutations -----------------------------------------------------------------------------
    def case(self, kind, what=None):
        """One :class:`Case` of ``kind`` (a :data:`KINDS` name); ``what`` picks the ``input`` or
        ``order`` mutation (:data:`INPUT_EDITS`, :data:`ORDER_EDITS`; random by default)."""
        rng, isa, cfg = self.rng, self.isa, self.config
        words, off, hb, T, p = self._base(VERIFY if kind == "address" else None)
        e = isa.encode
        mm, lm = self.comp.map, self.comp.map.layers[0]
        L = mm.line_bytes
        detail = kind
        if kind == "opcode":
            i = rng.randrange(len(words))
            words[i] = (rng.getrandbits(isa.word_bits) & ~0xF) | rng.choice([13, 14])
            detail = f"opcode at {i}"
        elif kind == "reserved":
            cands = [i for i, w in enumerate(words) if isa.used_bits(Op(w & 0xF)) < isa.word_bits]
            i = rng.choice(cands)
            bit = rng.randrange(isa.used_bits(Op(words[i] & 0xF)), isa.word_bits)
            words[i] |= 1 << bit
            detail = f"reserved bit {bit} at {i}"
        elif kind == "enum":
            cands = [i for i, w in enumerate(words) if w & 0xF in (Op.SETR, Op.GEMV)]
            i = rng.choice(cands)
            op = Op(words[i] & 0xF)
            spec = isa.fields[op][0]            # SETR reg, GEMV proj: the first field
            bad = rng.randint(spec.most + 1, (1 << spec.width) - 1)
            words[i] = (words[i] & ~(((1 << spec.width) - 1) << spec.offset)) | bad << spec.offset
            detail = f"{op.name.lower()} {spec.name} = {bad} at {i}"
        elif kind == "register":
            reg = rng.choice(list(Reg))
            del words[self._setr(words, reg)]
            detail = f"no SETR {reg.name}"
        elif kind == "range":
            detail = self._range(words)
        elif kind == "address":
            detail = self._address(words)
        elif kind == "input":
            detail = self._input(off, T, lm, L, what)
        elif kind == "order":
            detail = self._order(words, p, what)
        elif kind == "loop":
            detail = self._loop(words)
        elif kind == "key":
            i = self._at(words, Op.SHARED)
            body = isa.decode(words[i])[1]["body"]
            spec = next(s for s in isa.fields[Op.SHARED] if s.name == "index")
            index = rng.randint(cfg.cache.n_experts - self.shape.n_experts, spec.most)
            words[i] = e(Op.SHARED, index=index, body=body)
            loop = self._at(words, Op.EXPERTS)          # the routed loop out: KEY right after ROUTE
            del words[loop:loop + 1 + isa.decode(words[loop])[1]["body"]]
            detail = f"shared index {index}"
        elif kind == "truncated":
            cut = rng.randrange(len(words) - 1)
            words = words[:cut]
            detail = f"cut at {cut}"
        elif kind != "valid":
            raise ValueError(f"unknown kind {kind!r}")
        return Case(kind, detail, words, off, hb, WANT[kind], T)

    def _range(self, words):
        rng, isa, cfg = self.rng, self.isa, self.config
        width = self.limits.width if self.limits else 1
        what = rng.choice(["tokens", "d_model", "d_ffn", "n_experts", "k", "lsb_lookup"])
        if what == "tokens":
            v = rng.choice([0, rng.randint(cfg.buffers.tokens + 1, self.value_max)])
            self._set(words, Reg.TOKENS, v)
        elif what in ("d_model", "d_ffn"):
            reg, most = (Reg.D_MODEL, cfg.buffers.d_max) if what == "d_model" else (Reg.D_FFN, cfg.buffers.f_max)
            cands = [0, rng.randint(most + 1, self.value_max)]
            if width > 1:
                cands.append(self.shape.d_model + rng.randint(1, width - 1))
            v = rng.choice(cands)
            self._set(words, reg, v)
        elif what == "n_experts":
            most = (self.limits.max_experts if self.limits and self.limits.max_experts else cfg.cache.n_experts)
            v = rng.choice([0, 1, rng.randint(most + 1, self.value_max)])
            self._set(words, Reg.N_EXPERTS, v)
        elif what == "k":
            i = self._at(words, Op.ROUTE)
            f = isa.decode(words[i])[1]
            most = min(self.shape.top_k, self.shape.n_experts, *(
                [self.limits.max_k] if self.limits and self.limits.max_k else []))
            spec = next(s for s in isa.fields[Op.ROUTE] if s.name == "k")
            v = rng.choice([0, rng.randint(most + 1, spec.most)])
            words[i] = isa.encode(Op.ROUTE, k=v, choice=f["choice"])
        else:
            i = self._at(words, Op.FETCH)
            words[i] = isa.encode(Op.FETCH, plane=Plane.LSB, update=Update.LOOKUP)
            v = "lsb lookup"
        return f"{what} = {v}"

    def _address(self, words):
        rng = self.rng
        reg = rng.choice([Reg.X_ADDR, Reg.Y_ADDR, Reg.P_ADDR, Reg.E_ADDR, Reg.E_STRIDE, Reg.PLANE_LINES,
                          Reg.HB_BASE])
        cfg = self.config
        if reg == Reg.HB_BASE:
            space = cfg.hb.lines * cfg.hb.channels * cfg.hb.width // 8 // cfg.line_bytes
        else:
            space = self.off_image_lines
        v = rng.randint(min(space, self.value_max), self.value_max)
        self._set(words, reg, v)
        return f"{reg.name} = {v}"

    def _input(self, off, T, lm, L, what=None):
        rng, mm = self.rng, self.comp.map
        what = what or rng.choice(INPUT_EDITS)
        d = self.shape.d_model
        if what == "x128":
            t, j = rng.randrange(T), rng.randrange(d)
            off[mm.x_addr * L + t * d + j] = 0x80
            return f"token {t} element {j} = -128"
        if what in ("xe", "xm"):
            t = rng.randrange(T)
            at = mm.x_addr * L + mm.scale_offset + t * TOKEN_SCALE.size
            rec = TOKEN_SCALE.decode(off[at:at + TOKEN_SCALE.size])
            xm, xe = int(rec["xm"][0]), int(rec["xe"][0])
            if what == "xe":
                xe = rng.choice([0, rng.randint(49, 255)])
            else:
                xm = rng.randint(1 << 15, (1 << 16) - 1)
            off[at:at + TOKEN_SCALE.size] = TOKEN_SCALE.encode(xm=np.array([xm]), xe=np.array([xe])).reshape(-1)
            return f"token {t} scale ({xm}, {xe})"
        if what == "table_e":
            # the shared expert's table: it always runs (routed experts only when chosen)
            e = self.shape.n_experts
            n = 2 * self.shape.d_ffn + d
            j = rng.randrange(n)
            at = (lm.e_addr + e * lm.e_stride + 2 * lm.plane_lines) * L + j * MULTIPLIER.size
            off[at + {n: o for n, o, _ in MULTIPLIER.fields}["e"]] = 0
            return f"shared expert multiplier {j} exponent 0"
        cb = constants_block(lm.router_lines, L)
        at = (lm.p_addr + cb["scalars"]) * L
        off[at + {n: o for n, o, _ in SCALARS.fields}[what]] = 0
        return f"{what} = 0"

    def _order(self, words, p, what=None):
        rng, isa = self.rng, self.isa
        nop = isa.encode(Op.NOP)
        # the SHARED loop's body: it always runs (a routed expert's only when chosen; a cached
        # draft on an empty cache chooses none)
        loop = self._at(words, Op.SHARED)
        body = isa.decode(words[loop])[1]["body"]
        body_ops = [loop + 1 + j for j in range(body)]
        what = what or rng.choice(ORDER_EDITS)
        if what == "fetch":
            cands = [i for i in body_ops if words[i] & 0xF == Op.FETCH]
            words[rng.choice(cands)] = nop
        elif what in ("loadm", "swiglu"):
            words[next(i for i in body_ops if words[i] & 0xF == Op[what.upper()])] = nop
        elif what == "gemv":
            cands = [i for i in body_ops if words[i] & 0xF == Op.GEMV]
            words[rng.choice(cands)] = nop
        elif what == "outside":
            w = words[rng.choice(body_ops)]
            words.insert(self._at(words, Op.ROUTE) + rng.randint(0, 1), w)
        elif what == "route_first":
            i, j = self._at(words, Op.LOADP), self._at(words, Op.ROUTE)
            words[i], words[j] = words[j], words[i]
        else:
            words.insert(self._at(words, Op.LOADX), isa.encode(Op.STOREY))
        return what

    def _loop(self, words):
        rng, isa = self.rng, self.isa
        loop = rng.choice([self._at(words, Op.EXPERTS), self._at(words, Op.SHARED)])
        f = isa.decode(words[loop])[1]
        what = rng.choice(["body0", "no_route", "loadx", "nested", "halt"])
        if what == "body0":
            words[loop] = (words[loop] & ~self._mask(Op(words[loop] & 0xF), "body"))
        elif what == "no_route":
            words[self._at(words, Op.ROUTE)] = isa.encode(Op.NOP)
        elif what == "loadx":
            words.insert(self._at(words, Op.ROUTE) + 1, isa.encode(Op.LOADX))
        elif what == "nested":
            words[loop + 1 + rng.randrange(f["body"])] = rng.choice(
                [isa.encode(Op.EXPERTS, body=1), isa.encode(Op.SHARED, index=0, body=1)])
        else:
            words[loop + 1 + rng.randrange(f["body"])] = isa.encode(Op.HALT)
        return what

    def _mask(self, op, name):
        s = next(s for s in self.isa.fields[op] if s.name == name)
        return ((1 << s.width) - 1) << s.offset

    def edge_cases(self):
        """The ``input`` mutations the random draw may miss, one each: a -128 token, token
        scale exponent and mantissa, a table exponent, router and hidden exponents of 0."""
        return [self.case("input", what) for what in INPUT_EDITS]

    def cases(self, n, kinds=KINDS):
        """``n`` cases: every kind of ``kinds`` once (in order), then kinds drawn at random."""
        out = [self.case(k) for k in kinds[:n]]
        while len(out) < n:
            out.append(self.case(self.rng.choice(kinds)))
        return out
