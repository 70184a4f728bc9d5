"""Instruction-set simulator: runs command streams (``elmoe3d/spec/isa.py``) on memory images.

Bit-exact with the integer golden layer (:mod:`elmoe3d.sim.golden.int_moe`): the ISS reads every operand from the
images (:mod:`elmoe3d.firmware.layout`: tiled planes, multiplier tables, the SiLU table, the
token block), so a wrong layout, a wrong fill or a wrong decode shows up as a wrong output. The
arithmetic is the golden model's primitives, vectorized (numpy, no per-MAC Python loops).
Expert-cache decisions go through the golden cache (:class:`~elmoe3d.sim.cache.expert_cache.ExpertCache`); the
HB image is written by every fill, and a hit reads its plane back from HB.

Instructions
------------
``SETR reg value``  writes a register. ``LOADX`` reads the group's ``TOKENS`` tokens and scales
from ``X_ADDR`` (-128 in a token, or a scale outside the documented range, stops the machine).
``LOADP`` reads the router planes, the scalars and the SiLU table from ``P_ADDR``. ``ROUTE k
choice`` computes the router logits, the top-k (``CACHED``: among experts whose MSB plane is
resident now) and the gate weights; the expert list is the chosen experts in ascending id.
``EXPERTS body`` runs the next ``body`` commands once per listed expert (its tokens active, their
gate weights); ``SHARED index body`` once for shared expert ``index`` (id ``N_EXPERTS + index``,
every token, weight ``2**15``). ``FETCH plane update``: key ``(LAYER, expert, plane)``; ``PEEK``
reads HB if resident, else off-chip; ``LOOKUP`` is a demand access (score: the expert's largest
gate weight over its tokens, ``w >> (15 - score_bits)``, capped), a miss's fill copies the plane
off-chip -> HB. ``LOADM`` reads the expert's multipliers. ``GEMV proj bits`` runs one projection
on the active tokens (``DRAFT``: ``draft_gemv`` of the MSB plane; ``FULL``: plus the correction
from the LSB plane, which must have been fetched). ``SWIGLU``, ``COMBINE`` and ``STOREY`` are the
golden formulas; ``STOREY`` writes INT32 little-endian to ``Y_ADDR``. ``HALT`` ends the stream.

Errors (``docs/errors.md``): the ISS stops where the RTL core stops, with the same code. The
stream is sequenced by :class:`~elmoe3d.sim.machine.dispatch.DispatchModel` (the command processor's golden model:
words decoded as they are reached, loops, ``OPCODE``/``FIELD``/``LOOP``/``KEY``/``REGISTER``),
and each dispatched command is checked in the executor's order: the registers it needs
(:data:`NEEDS`, ``REGISTER``), an expert context for body commands (``ORDER`` outside a loop),
its prerequisites (``ORDER``), shapes (``RANGE``), addresses (``ADDRESS``: past the image given),
then its data (``INPUT``). Each raises :class:`~elmoe3d.sim.machine.dispatch.MachineError` (a ``UserError``) with
``status`` and ``index``; a stream that ends without ``HALT`` raises
:class:`~elmoe3d.sim.machine.dispatch.StreamEnd` at the index of the word the core would wait for. ``core``
(:class:`CoreLimits`) adds the RTL core's own limits (shapes multiples of its vector width, the
router's slots).

Cycle estimate (what the RTL core is held to, within 10 %)
---------------------------------------------------------
Per instruction, from :class:`~elmoe3d.spec.timing.CoreTiming`, the cycle model of the RTL core
(``hw/core.py``): ``NOP``, ``SETR`` and ``HALT`` 1; a loop ``2 + body`` (its body captured once)
plus its iterations; every other command its read requests (``latency + 3 + lines`` per request),
its pipelined work (GEMV lane groups overlapped, ``max(PE array, weight lines)`` per group; vector
steps one word per cycle) and a fixed overhead measured on the RTL. See ``elmoe3d/spec/timing.py``.
"""

from dataclasses import dataclass, field

import numpy as np

from ...spec import image as image_format
from ...spec.image import (MULTIPLIER, SCALARS, SILU_BYTES, TOKEN_SCALE, constants_block,
                          plane_sections, row_band_blocks, signed_nibbles, tiled_bytes, token_scale_offset,
                          untile_plane)
from ...spec.isa import NEEDS, Bits, Choice, InstructionSet, Op, Plane, Proj, Reg, Status, Update
from ...spec.timing import CoreTiming
from ..cache.expert_cache import ExpertCache, Key
from ..cache.expert_cache import Op as CacheOp
from ..numerics.gemv import correction_gemv, draft_gemv
from .dispatch import LOOP_OPS, DispatchModel, MachineError, StreamEnd
from ..golden.int_moe import (GATE_FRAC, MANT_BITS, OUT_BITS, XE_MAX, combine, expert_output, gate_weights, sat,
                      select_experts, swiglu)

# Commands that act on the current expert: only inside a loop body (ORDER otherwise).
BODY_OPS = (Op.FETCH, Op.LOADM, Op.GEMV, Op.SWIGLU, Op.COMBINE)


@dataclass(frozen=True)
class CoreLimits:
    """Limits of an RTL core beyond the command set's (``RANGE`` when a stream exceeds them).

    ``width``: D_MODEL and D_FFN must be multiples of it (the core's vector width; 1: any);
    ``max_k``: the most experts ROUTE may choose per token (the router's slots; None: no limit
    beyond TOP_K and N_EXPERTS); ``max_experts``: the most routed experts LOADP accepts (None:
    ``config.cache.n_experts``). A core's values come from its generator's dimensions
    (``sim/benches/tb_core_errors.core_limits``); the ISS alone uses the defaults.
    """

    width: int = 1
    max_k: int = None
    max_experts: int = None


def _ceil(a, b):
    return -(-a // b)


@dataclass
class RunStats:
    """What a stream did: cycles (total and per opcode), bytes per tier, cache results."""

    cycles: int = 0
    by_op: dict = field(default_factory=dict)
    instructions: int = 0
    hb_bytes: int = 0
    offchip_bytes: int = 0
    cache: list = field(default_factory=list)     # (key, Result) of every LOOKUP
    experts: list = field(default_factory=list)   # routed experts run, in order


class _Params:
    """Decoded layer constants (LOADP)."""


class Machine:
    """One accelerator: registers, on-chip buffers, the two memory images and the expert cache.

    Parameters
    ----------
    config : AccelConfig
    offchip, hb : the images, modified in place by STOREY and fills: uint8 arrays, or
        :class:`~elmoe3d.sim.golden.stored.FileImage` (images in files; read a block at a time, so a layer of any
        size runs in bounded memory: a FETCH notes where the plane is, a GEMV reads it a block of
        row bands at a time, a fill copies it a block at a time)
    cache : ExpertCache or None (a fresh one of ``config.cache`` by default)
    """

    def __init__(self, config, offchip, hb, cache=None, core=None):
        self.config = config
        self.core = core if core is not None else CoreLimits()
        self.isa = InstructionSet(config)
        self.offchip, self.hb = offchip, hb
        self.L = config.line_bytes
        self.cache = cache if cache is not None else ExpertCache(config.cache)
        self.timing = CoreTiming(config)

    # -- memory ----------------------------------------------------------------------------------
    def _span(self, image, name, addr, nbytes, index, op):
        """The first byte of ``nbytes`` from line ``addr`` (ADDRESS if they pass the image's end)."""
        start, end = addr * self.L, addr * self.L + nbytes
        if addr < 0 or end > len(image):
            raise MachineError(Status.ADDRESS, index, Op[op.upper()],
                               f"lines {addr}..{_ceil(end, self.L) - 1} past the {name} image of "
                               f"{len(image) // self.L} lines")
        return start

    def _read(self, image, name, addr, nbytes, index, op):
        start = self._span(image, name, addr, nbytes, index, op)
        return image[start:start + nbytes]

    def _write(self, image, name, addr, data, index, op):
        start = self._span(image, name, addr, len(data), index, op)
        image[start:start + len(data)] = data

    def _reg(self, name, index, op):
        if name not in self.regs:
            raise MachineError(Status.REGISTER, index, Op[op.upper()], f"register {name.name} not set")
        return self.regs[name]

    def _fail(self, status, index, op, detail):
        raise MachineError(status, index, Op[op.upper()] if isinstance(op, str) else op, detail)

    # -- the stream ----------------------------------------------------------------------------
    def run(self, words):
        """Execute one stream (a list of words or the binary ``bytes``) up to its ``HALT``;
        returns :class:`RunStats`. Raises :class:`~elmoe3d.sim.machine.dispatch.MachineError` where the core stops."""
        if isinstance(words, (bytes, bytearray)):
            words = self.isa.from_bytes(words)
        self.stats = RunStats()
        self.route = None               # the routing table (chosen, weights) of the last ROUTE
        self.ctx = self.mults = None     # the expert context (rebuilt when the expert changes)
        self.x_ok = False
        self.params = None
        self.ahead = None               # the multiplier load started ahead (see _load_ahead)
        seq = self.sequencer = _Sequencer(self)
        self.route_masks = []           # each ROUTE's chosen-expert mask (what the core samples)
        self.regs = seq.regs
        seq.feed(words, one_stream=True)
        if seq.exc is not None:
            raise seq.exc
        if not seq.halts:
            raise StreamEnd(seq.index, "the stream ends inside a loop body" if seq.in_body
                            else "the stream ends without halt")
        return self.stats

    def _execute(self, op, word, expert, shared, in_loop, i):
        """One dispatched command (the executor's part): checks in the core's order, then runs it.
        Returns ``(Status.NONE, mask)``; ``mask`` is the chosen-expert mask after a ROUTE."""
        f = self.isa.decode(word, i)[1]
        name = op.name.lower()
        for r in NEEDS.get(op, ()):
            self._reg(r, i, name)
        if op in BODY_OPS:
            if not in_loop:
                self._fail(Status.ORDER, i, op, "a command on an expert outside an expert loop")
            self._context(expert, shared)
        self._exec(op, f, i)
        mask = 0
        if op == Op.ROUTE:
            for e in np.unique(self.route[0]):
                mask |= 1 << int(e)
            self.route_masks.append(mask)
        return Status.NONE, mask

    def _context(self, expert, shared):
        """The expert context (active tokens, their gate weights): kept while the same expert
        runs, rebuilt (planes, multipliers and projections forgotten) when it changes or after a
        LOADX or ROUTE, as the core's."""
        c = self.ctx
        if c is not None and c["expert"] == expert and c["shared"] == shared:
            return
        T = len(self.x)
        if shared:
            tok, weights = np.arange(T), np.full(T, 1 << GATE_FRAC, dtype=np.int64)
        else:
            chosen, w = self.route
            tok, slot = np.nonzero(chosen[:T] == expert)
            weights = w[tok, slot]
        self.ctx = {"expert": expert, "shared": shared, "tokens": tok, "weights": weights}
        self.mults = None
        self.new_ctx = True
        if not shared:
            self.stats.experts.append(int(expert))

    def _count(self, op, cycles):
        if getattr(self, "new_ctx", False):     # the first body command builds the expert's token list
            cycles += self.timing.context(len(self.x))
            self.new_ctx = False
        self.stats.cycles += cycles
        self.stats.by_op[op.name.lower()] = self.stats.by_op.get(op.name.lower(), 0) + cycles
        self.stats.instructions += 1

    # -- one instruction ------------------------------------------------------------------------
    def _exec(self, op, f, i):
        name = op.name.lower()
        cfg = self.config
        if op == Op.LOADX:
            self._loadx(i, name)
        elif op == Op.LOADP:
            self._loadp(i, name)
        elif op == Op.ROUTE:
            self._route(f, i, name)
        elif op == Op.FETCH:
            self._fetch(f, i, name)
            self._count(op, self.timing.fetch(f["update"] == Update.LOOKUP))
        elif op == Op.LOADM:
            self._loadm(i, name)
        elif op == Op.GEMV:
            self._gemv(f, i, name)
        elif op == Op.SWIGLU:
            c = self.ctx
            if "gate" not in c or "up" not in c:
                self._fail(Status.ORDER, i, op, "gate and up projections not computed")
            self._need_mults(i, name)
            e = self.mults
            c["hidden"] = swiglu(self.params, e, c["gate"], c["up"], self.xm[c["tokens"]], self.xe[c["tokens"]])
            self._count(op, self.timing.swiglu(len(c["tokens"]), self.d_ffn))
        elif op == Op.COMBINE:
            c = self.ctx
            if "down" not in c:
                self._fail(Status.ORDER, i, op, "down projection not computed")
            self._need_mults(i, name)
            y = expert_output(self.mults, c["down"])
            np.add.at(self.acc, c["tokens"], combine(y, c["weights"]))
            self._count(op, self.timing.combine(len(c["tokens"]), self.d_model))
        elif op == Op.STOREY:
            if not self.x_ok:
                self._fail(Status.ORDER, i, op, "no layer output (LOADX first)")
            out = sat(self.acc, OUT_BITS).astype("<i4").view(np.uint8).reshape(-1)
            self._write(self.offchip, "off-chip", self._reg(Reg.Y_ADDR, i, name), out, i, name)
            self.stats.offchip_bytes += len(out)
            self._count(op, self.timing.storey(len(self.x), self.d_model))

    def _shape(self, reg, value, most, i, name):
        """RANGE unless ``1 <= value <= most`` and a multiple of the core's width."""
        w = self.core.width
        if not 1 <= value <= most or value % w:
            extra = f" and a multiple of {w}" if w > 1 else ""
            self._fail(Status.RANGE, i, name, f"{reg} = {value} outside [1, {most}]{extra}")

    def _loadx(self, i, name):
        T = self.regs[Reg.TOKENS]
        d = self.regs[Reg.D_MODEL]
        F = self.regs[Reg.D_FFN]
        buf = self.config.buffers
        if not 1 <= T <= buf.tokens:
            self._fail(Status.RANGE, i, name, f"TOKENS = {T} outside [1, {buf.tokens}]")
        self._shape("D_MODEL", d, buf.d_max, i, name)
        self._shape("D_FFN", F, buf.f_max, i, name)
        addr = self.regs[Reg.X_ADDR]
        scale_off = token_scale_offset(buf.tokens, d, self.L)
        raw = self._read(self.offchip, "off-chip", addr, scale_off + T * TOKEN_SCALE.size, i, name)
        x = raw[:T * d].view(np.int8).reshape(T, d).copy()
        sc = TOKEN_SCALE.decode(raw[scale_off:scale_off + T * TOKEN_SCALE.size])
        xm, xe = sc["xm"], sc["xe"]
        if x.min(initial=0) < -127:
            t = int(np.nonzero((x == -128).any(axis=1))[0][0])
            self._fail(Status.INPUT, i, name, f"token {t} holds -128 (inputs are symmetric INT8)")
        if np.any(xe < 1) or np.any(xe > XE_MAX):
            self._fail(Status.INPUT, i, name, f"a token scale exponent is outside [1, {XE_MAX}]")
        if np.any(xm >= 1 << MANT_BITS):
            self._fail(Status.INPUT, i, name, f"a token scale mantissa is 2**{MANT_BITS} or more")
        self.x, self.xm, self.xe, self.d_model = x, xm, xe, d
        self.d_ffn = F
        self.acc = np.zeros((T, d), dtype=np.int64)
        self.x_ok, self.ctx = True, None
        self.stats.offchip_bytes += len(raw)
        self._count(Op.LOADX, self.timing.loadx(T, d))

    def _loadp(self, i, name):
        cfg = self.config
        E, d, addr = self.regs[Reg.N_EXPERTS], self.regs[Reg.D_MODEL], self.regs[Reg.P_ADDR]
        most = self.core.max_experts or cfg.cache.n_experts
        if not 2 <= E <= most:
            self._fail(Status.RANGE, i, name, f"N_EXPERTS = {E} outside [2, {most}]")
        self._shape("D_MODEL", d, cfg.buffers.d_max, i, name)
        r, c = cfg.array.rows, cfg.array.cols
        size = tiled_bytes(E, d, r, c)
        cb = constants_block(_ceil(size, self.L), self.L)
        at = {k: v * self.L for k, v in cb.items()}      # byte offsets
        n = at["silu"] + SILU_BYTES
        raw = self._read(self.offchip, "off-chip", addr, n, i, name)
        h = signed_nibbles(untile_plane(raw[at["router_msb"]:][:size], E, d, r, c))
        low = untile_plane(raw[at["router_lsb"]:][:size], E, d, r, c)
        p = _Params()
        p.router_h, p.router_l = h, low
        s = {k: int(v[0]) for k, v in SCALARS.decode(raw[at["scalars"]:at["scalars"] + SCALARS.size]).items()}
        p.router_m, p.router_e, p.hid_m, p.hid_e = s["router_m"], s["router_e"], s["hid_m"], s["hid_e"]
        if p.router_e < 1 or p.hid_e < 1:
            self._fail(Status.INPUT, i, name, f"a layer multiplier exponent is 0 (router_e = {p.router_e}, "
                                              f"hid_e = {p.hid_e}; corrupt constants)")
        p.silu = np.frombuffer(raw[at["silu"]:n].tobytes(), dtype="<i2").astype(np.int64)
        self.params = p
        self.stats.offchip_bytes += n
        self._count(Op.LOADP, self.timing.loadp())

    def _route(self, f, i, name):
        if self.params is None or not self.x_ok:
            self._fail(Status.ORDER, i, name, "LOADX and LOADP must come first")
        cfg = self.config
        E, top = self.regs[Reg.N_EXPERTS], self.regs[Reg.TOP_K]
        k = f["k"]
        most = min(top, E) if self.core.max_k is None else min(top, E, self.core.max_k)
        if not 1 <= k <= most:
            self._fail(Status.RANGE, i, name, f"k = {k} outside [1, {most}]")
        p = self.params
        logits = (draft_gemv(p.router_h, self.x).astype(np.int64) + correction_gemv(p.router_l, self.x))
        allowed = None
        if f["choice"] == Choice.CACHED:
            layer = self._reg(Reg.LAYER, i, name)
            res = self.cache.resident()
            allowed = np.array([Key(layer, e, Plane.MSB) in res for e in range(E)])
        chosen = select_experts(logits, k, allowed)
        weights = gate_weights(p, logits, chosen, self.xm, self.xe)
        self.route = (chosen, weights)
        self.ctx = None
        self.logits = logits
        T = len(self.x)
        plane = _ceil(E, cfg.array.rows) * cfg.array.rows * _ceil(self.d_model, cfg.array.cols) * cfg.array.cols // 2
        self._count(Op.ROUTE, self.timing.route(T, E, self.d_model, [chosen.shape[1]] * T,
                                                f["choice"] == Choice.CACHED, plane))
        self._load_ahead(-1)

    def _load_ahead(self, after):
        """The core's loads unit starts the multipliers of the next routed expert above ``after``
        (after ROUTE: the first) at this point; LOADM then waits only for what is left of it."""
        if self.route is None or any(r not in self.regs for r in NEEDS[Op.LOADM]):
            return
        nxt = [int(e) for e in np.unique(self.route[0]) if e > after]
        if not nxt:
            return
        d, F = self.d_model, self.d_ffn
        addr = self._plane_addr(nxt[0], 2, 0, "loadm")
        n = MULTIPLIER.size * (2 * F + d)
        if addr * self.L + n > len(self.offchip):
            return
        start = self.stats.cycles if self.ahead is None else max(self.stats.cycles, self.ahead["done"])
        self.ahead = {"key": (addr, n), "done": start + self.timing.mult_load(d, F), "bus": n}

    def _plane_addr(self, expert, plane, i, name):
        base = self._reg(Reg.E_ADDR, i, name) + expert * self._reg(Reg.E_STRIDE, i, name)
        return base + plane * self._reg(Reg.PLANE_LINES, i, name)

    def _fetch(self, f, i, name):
        c, cfg = self.ctx, self.config
        layer = self._reg(Reg.LAYER, i, name)
        lines = self._reg(Reg.PLANE_LINES, i, name)
        nbytes = lines * self.L
        key = Key(layer, c["expert"], f["plane"])
        if f["plane"] == Plane.LSB and f["update"] == Update.LOOKUP:
            self._fail(Status.RANGE, i, name, "an LSB plane is never cached (FETCH lsb takes peek only)")
        off = (self.offchip, self._span(self.offchip, "off-chip", self._plane_addr(c["expert"], f["plane"], i, name),
                                        nbytes, i, name), "offchip")
        hb_base = self._reg(Reg.HB_BASE, i, name)

        def hb(slot):
            return self.hb, self._span(self.hb, "HB", hb_base + slot * lines, nbytes, i, name), "hb"
        if f["update"] == Update.LOOKUP:
            w = int(c["weights"].max())
            score = min(w >> max(GATE_FRAC - cfg.cache.score_bits, 0), (1 << cfg.cache.score_bits) - 1)
            res = self.cache.apply(CacheOp.LOOKUP, key, score)
            self.stats.cache.append((key, res))
            if res.hit:
                src = hb(res.slot)
            else:
                src = off
                if res.fill:        # the fill path: the plane streamed from off-chip is written to HB
                    dst, step = hb(res.slot)[1], image_format.BLOCK_WEIGHTS // 2
                    for at in range(0, nbytes, step):
                        n = min(step, nbytes - at)
                        self.hb[dst + at:dst + at + n] = self.offchip[off[1] + at:off[1] + at + n]
        else:
            slot = self.cache.resident().get(key)
            src = off if slot is None else hb(slot)
        # Where the plane is (image, first byte, tier): the GEMVs read it from there, a block at a time.
        c[f"plane{f['plane']}"] = src

    def _loadm(self, i, name):
        c = self.ctx
        d, F = self.d_model, self.d_ffn
        addr = self._plane_addr(c["expert"], 2, i, name)
        n = MULTIPLIER.size * (2 * F + d)
        rec = MULTIPLIER.decode(self._read(self.offchip, "off-chip", addr, n, i, name))
        m, e = rec["m"], rec["e"]
        now = self.stats.cycles + (self.timing.context(len(self.x)) if getattr(self, "new_ctx", False) else 0)
        a = self.ahead
        if a is not None and a["key"] == (addr, n):
            cycles = self.timing.loadm(d, F, ahead=a["done"] - now)     # loaded ahead
        else:                           # its own load, once the unit is free
            busy = max(0, a["done"] - now) if a is not None else 0
            cycles = busy + self.timing.loadm(d, F)
        self.ahead = None
        if np.any(e < 1):
            self._fail(Status.INPUT, i, name, "a multiplier exponent is 0 (corrupt table)")

        class _Mults:
            pass
        t = _Mults()
        t.gate_m, t.gate_e = m[:F], e[:F]
        t.up_m, t.up_e = m[F:2 * F], e[F:2 * F]
        t.down_m, t.down_e = m[2 * F:], e[2 * F:]
        self.mults = t
        self.stats.offchip_bytes += n
        self._count(Op.LOADM, cycles)
        if not c["shared"]:
            self._load_ahead(c["expert"])

    def _need_mults(self, i, name):
        if getattr(self, "mults", None) is None:
            self._fail(Status.ORDER, i, name, "no LOADM for this expert")

    def _gemv(self, f, i, name):
        c, cfg = self.ctx, self.config
        proj, bits = Proj(f["proj"]), Bits(f["bits"])
        if "plane0" not in c or (bits == Bits.FULL and "plane1" not in c):
            need = "MSB and LSB planes" if bits == Bits.FULL else "MSB plane"
            self._fail(Status.ORDER, i, name, f"the {need} of expert {c['expert']} not fetched")
        if proj == Proj.DOWN and "hidden" not in c:
            self._fail(Status.ORDER, i, name, "down projection before swiglu")
        if bits == Bits.FULL and c["plane1"][2] == "hb":
            self._fail(Status.RANGE, i, name, "an LSB plane read from HB (the core streams LSB planes off-chip)")
        r, co = cfg.array.rows, cfg.array.cols
        sections, _ = plane_sections(r, co, self.d_model, self.d_ffn)
        off, (N, K) = sections[proj.name.lower()]
        size = tiled_bytes(N, K, r, co)
        if proj == Proj.DOWN:
            a = c["hidden"].astype(np.int8)
        else:
            a = self.x[c["tokens"]]
        msb, msb_at, msb_tier = c["plane0"]
        lsb, lsb_at, lsb_tier = c["plane1"] if bits == Bits.FULL else (None, 0, None)
        acc = np.empty(a.shape[:-1] + (N,), dtype=np.int64)
        for row, count, at, nbytes in row_band_blocks(N, K, r, co):
            at += off
            h = signed_nibbles(untile_plane(msb[msb_at + at:msb_at + at + nbytes], count, K, r, co))
            block = draft_gemv(h, a).astype(np.int64)
            if bits == Bits.FULL:
                block += correction_gemv(untile_plane(lsb[lsb_at + at:lsb_at + at + nbytes], count, K, r, co), a)
            acc[..., row:row + count] = block
        streams = {msb_tier: size}
        if bits == Bits.FULL:
            streams[lsb_tier] = streams.get(lsb_tier, 0) + size
        c[proj.name.lower()] = acc
        groups = _ceil(len(c["tokens"]), cfg.array.lanes)
        for t, b in streams.items():
            if t == "hb":
                self.stats.hb_bytes += groups * b
            else:
                self.stats.offchip_bytes += groups * b
        a = self.ahead
        if "offchip" in streams and a is not None and a.get("bus") and a["done"] > self.stats.cycles:
            # the load ahead shares the off-chip bus with this GEMV's stream
            streams = dict(streams)
            streams["offchip"] += _ceil(a.pop("bus"), groups)
        self._count(Op.GEMV, self.timing.gemv(len(c["tokens"]), N, K, bits == Bits.FULL, streams))


class _Sequencer(DispatchModel):
    """The ISS's sequencer: :class:`~elmoe3d.sim.machine.dispatch.DispatchModel` with :class:`Machine` as its
    executor, counting the cycles of the commands the processor runs itself."""

    def __init__(self, machine):
        super().__init__(machine.config, machine._execute)
        self.machine = machine

    def counted(self, op, fields, index):
        m = self.machine
        m._count(op, m.timing.loop(fields["body"]) if op in LOOP_OPS else 1)
