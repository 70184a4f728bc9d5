"""Instruction-set simulator: runs command streams (``elmoe3d/spec/isa.py``) on memory images.

Bit-exact with the integer golden layer (:mod:`.int_moe`): the ISS reads every operand from the
images (:mod:`elmoe3d.firmware.layout`: tiled planes, multiplier tables, the SiLU table, the
token block), so a wrong layout, a wrong fill or a wrong decode shows up as a wrong output. The
arithmetic is the golden model's primitives, vectorized (numpy, no per-MAC Python loops).
Expert-cache decisions go through the golden cache (:class:`~.expert_cache.ExpertCache`); the
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

A malformed stream (unknown opcode, truncated word, field out of range, a register not set, an
address past an image, a loop past the end, a GEMV without its planes, no ``HALT``) is refused
with one line naming the instruction index.

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

from ..errors import UserError
from ..spec.image import (MULTIPLIER, SCALARS, SILU_BYTES, TOKEN_SCALE, constants_block, plane_sections,
                          signed_nibbles, tiled_bytes, token_scale_offset, untile_plane)
from ..spec.isa import Bits, Choice, InstructionSet, Op, Plane, Proj, Reg, Update
from ..spec.timing import CoreTiming
from .expert_cache import ExpertCache, Key
from .expert_cache import Op as CacheOp
from .gemv import correction_gemv, draft_gemv
from .int_moe import (GATE_FRAC, OUT_BITS, XE_MAX, combine, expert_output, gate_weights, sat,
                      select_experts, swiglu)

LOOP_OPS = (Op.EXPERTS, Op.SHARED)


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
    offchip, hb : uint8 arrays (the images, modified in place by STOREY and fills)
    cache : ExpertCache or None (a fresh one of ``config.cache`` by default)
    """

    def __init__(self, config, offchip, hb, cache=None):
        self.config = config
        self.isa = InstructionSet(config)
        self.offchip, self.hb = offchip, hb
        self.L = config.line_bytes
        self.cache = cache if cache is not None else ExpertCache(config.cache)
        self.timing = CoreTiming(config)

    # -- memory ----------------------------------------------------------------------------------
    def _read(self, image, name, addr, nbytes, index, op):
        start, end = addr * self.L, addr * self.L + nbytes
        if addr < 0 or end > len(image):
            raise UserError(f"instruction {index} ({op}): lines {addr}..{_ceil(end, self.L) - 1} "
                            f"past the {name} image of {len(image) // self.L} lines")
        return image[start:end]

    def _reg(self, name, index, op):
        if name not in self.regs:
            raise UserError(f"instruction {index} ({op}): register {name.name} not set")
        return self.regs[name]

    # -- the stream ----------------------------------------------------------------------------
    def run(self, words):
        """Execute a stream (a list of words or the binary ``bytes``); returns :class:`RunStats`."""
        if isinstance(words, (bytes, bytearray)):
            words = self.isa.from_bytes(words)
        decoded = self.isa.decode_all(words)
        self.regs, self.stats = {}, RunStats()
        self.route = None
        pc = 0
        while True:
            if pc >= len(decoded):
                raise UserError(f"instruction {pc}: the stream ends without halt")
            op, f = decoded[pc]
            if op == Op.HALT:
                self._count(op, 1)
                return self.stats
            if op in LOOP_OPS:
                body = decoded[pc + 1:pc + 1 + f["body"]]
                if len(body) < f["body"] or f["body"] == 0:
                    raise UserError(f"instruction {pc} ({op.name.lower()}): body of {f['body']} runs past the stream")
                for j, (bop, _) in enumerate(body):
                    if bop in LOOP_OPS or bop == Op.HALT:
                        raise UserError(f"instruction {pc + 1 + j} ({bop.name.lower()}): not allowed in a loop body")
                self._count(op, self.timing.loop(f["body"]))
                for ctx in self._loop(op, f, pc):
                    self.ctx, self.mults = ctx, None
                    self.new_ctx = True
                    for j, (bop, bf) in enumerate(body):
                        self._exec(bop, bf, pc + 1 + j)
                pc += 1 + f["body"]
                continue
            self._exec(op, f, pc)
            pc += 1

    def _count(self, op, cycles):
        if getattr(self, "new_ctx", False):     # the first body command builds the expert's token list
            cycles += self.timing.context(len(self.x))
            self.new_ctx = False
        self.stats.cycles += cycles
        self.stats.by_op[op.name.lower()] = self.stats.by_op.get(op.name.lower(), 0) + cycles
        self.stats.instructions += 1

    def _loop(self, op, f, index):
        name = op.name.lower()
        if self.route is None:
            raise UserError(f"instruction {index} ({name}): no ROUTE before the expert loop")
        chosen, weights = self.route
        if op == Op.EXPERTS:
            for e in np.unique(chosen):
                tok, slot = np.nonzero(chosen == e)
                self.stats.experts.append(int(e))
                yield {"expert": int(e), "tokens": tok, "weights": weights[tok, slot]}
        else:
            n_exp = self._reg(Reg.N_EXPERTS, index, name)
            e = n_exp + f["index"]
            if e >= self.config.cache.n_experts:
                raise UserError(f"instruction {index} (shared): expert {e} does not fit the cache key")
            T = len(self.x)
            yield {"expert": e, "tokens": np.arange(T), "weights": np.full(T, 1 << GATE_FRAC, dtype=np.int64)}

    # -- one instruction ------------------------------------------------------------------------
    def _exec(self, op, f, i):
        name = op.name.lower()
        cfg = self.config
        if op == Op.NOP:
            self._count(op, 1)
        elif op == Op.SETR:
            self.regs[Reg(f["reg"])] = f["value"]
            self._count(op, 1)
        elif op == Op.LOADX:
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
                raise UserError(f"instruction {i} (swiglu): gate and up projections not computed")
            self._need_mults(i, name)
            e = self.mults
            c["hidden"] = swiglu(self.params, e, c["gate"], c["up"], self.xm[c["tokens"]], self.xe[c["tokens"]])
            self._count(op, self.timing.swiglu(len(c["tokens"]), self.d_ffn))
        elif op == Op.COMBINE:
            c = self.ctx
            if "down" not in c:
                raise UserError(f"instruction {i} (combine): down projection not computed")
            y = expert_output(self.mults, c["down"])
            np.add.at(self.acc, c["tokens"], combine(y, c["weights"]))
            self._count(op, self.timing.combine(len(c["tokens"]), self.d_model))
        elif op == Op.STOREY:
            if not hasattr(self, "acc") or self.acc is None:
                raise UserError(f"instruction {i} (storey): no layer output (LOADX first)")
            out = sat(self.acc, OUT_BITS).astype("<i4").tobytes()
            addr = self._reg(Reg.Y_ADDR, i, name)
            dst = self._read(self.offchip, "off-chip", addr, len(out), i, name)
            dst[:] = np.frombuffer(out, dtype=np.uint8)
            self.stats.offchip_bytes += len(out)
            self._count(op, self.timing.storey(len(self.x), self.d_model))

    def _loadx(self, i, name):
        T = self._reg(Reg.TOKENS, i, name)
        d = self._reg(Reg.D_MODEL, i, name)
        self._reg(Reg.D_FFN, i, name)
        if not 1 <= T <= self.config.buffers.tokens:
            raise UserError(f"instruction {i} (loadx): TOKENS = {T} outside [1, {self.config.buffers.tokens}]")
        if not 1 <= d <= self.config.buffers.d_max:
            raise UserError(f"instruction {i} (loadx): D_MODEL = {d} outside [1, {self.config.buffers.d_max}]")
        addr = self._reg(Reg.X_ADDR, i, name)
        scale_off = token_scale_offset(self.config.buffers.tokens, d, self.L)
        raw = self._read(self.offchip, "off-chip", addr, scale_off + T * TOKEN_SCALE.size, i, name)
        x = raw[:T * d].view(np.int8).reshape(T, d).copy()
        sc = TOKEN_SCALE.decode(raw[scale_off:scale_off + T * TOKEN_SCALE.size])
        xm, xe = sc["xm"], sc["xe"]
        if x.min(initial=0) < -127:
            t = int(np.nonzero((x == -128).any(axis=1))[0][0])
            raise UserError(f"instruction {i} (loadx): token {t} holds -128 (inputs are symmetric INT8)")
        if np.any(xe < 1) or np.any(xe > XE_MAX):
            raise UserError(f"instruction {i} (loadx): a token scale exponent is outside [1, {XE_MAX}]")
        self.x, self.xm, self.xe, self.d_model = x, xm, xe, d
        self.d_ffn = self.regs[Reg.D_FFN]
        self.acc = np.zeros((T, d), dtype=np.int64)
        self.route = None
        self.stats.offchip_bytes += len(raw)
        self._count(Op.LOADX, self.timing.loadx(T, d))

    def _loadp(self, i, name):
        cfg = self.config
        E = self._reg(Reg.N_EXPERTS, i, name)
        d = self._reg(Reg.D_MODEL, i, name)
        addr = self._reg(Reg.P_ADDR, i, name)
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
        p.silu = np.frombuffer(raw[at["silu"]:n].tobytes(), dtype="<i2").astype(np.int64)
        self.params = p
        self.stats.offchip_bytes += n
        self._count(Op.LOADP, self.timing.loadp())

    def _route(self, f, i, name):
        if not hasattr(self, "params") or not hasattr(self, "x"):
            raise UserError(f"instruction {i} (route): LOADX and LOADP must come first")
        cfg = self.config
        E, top = self._reg(Reg.N_EXPERTS, i, name), self._reg(Reg.TOP_K, i, name)
        k = f["k"]
        if not 1 <= k <= min(top, E):
            raise UserError(f"instruction {i} (route): k = {k} outside [1, {min(top, E)}]")
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
        self.logits = logits
        T = len(self.x)
        plane = _ceil(E, cfg.array.rows) * cfg.array.rows * _ceil(self.d_model, cfg.array.cols) * cfg.array.cols // 2
        self._count(Op.ROUTE, self.timing.route(T, E, self.d_model, [chosen.shape[1]] * T,
                                                f["choice"] == Choice.CACHED, plane))

    def _plane_addr(self, expert, plane, i, name):
        base = self._reg(Reg.E_ADDR, i, name) + expert * self._reg(Reg.E_STRIDE, i, name)
        return base + plane * self._reg(Reg.PLANE_LINES, i, name)

    def _fetch(self, f, i, name):
        c, cfg = self.ctx, self.config
        layer = self._reg(Reg.LAYER, i, name)
        lines = self._reg(Reg.PLANE_LINES, i, name)
        nbytes = lines * self.L
        key = Key(layer, c["expert"], f["plane"])
        off_addr = self._plane_addr(c["expert"], f["plane"], i, name)
        off = self._read(self.offchip, "off-chip", off_addr, nbytes, i, name)
        hb_base = self._reg(Reg.HB_BASE, i, name)
        if f["update"] == Update.LOOKUP:
            w = int(c["weights"].max())
            score = min(w >> max(GATE_FRAC - cfg.cache.score_bits, 0), (1 << cfg.cache.score_bits) - 1)
            res = self.cache.apply(CacheOp.LOOKUP, key, score)
            self.stats.cache.append((key, res))
            if res.hit:
                src, tier = self._read(self.hb, "HB", hb_base + res.slot * lines, nbytes, i, name), "hb"
            else:
                src, tier = off, "offchip"
                if res.fill:        # the fill path: the plane streamed from off-chip is written to HB
                    self._read(self.hb, "HB", hb_base + res.slot * lines, nbytes, i, name)[:] = off
        else:
            slot = self.cache.resident().get(key)
            if slot is None:
                src, tier = off, "offchip"
            else:
                src, tier = self._read(self.hb, "HB", hb_base + slot * lines, nbytes, i, name), "hb"
        c[f"plane{f['plane']}"] = (np.asarray(src), tier)

    def _loadm(self, i, name):
        c = self.ctx
        d, F = self.d_model, self.d_ffn
        addr = self._plane_addr(c["expert"], 2, i, name)
        n = MULTIPLIER.size * (2 * F + d)
        rec = MULTIPLIER.decode(self._read(self.offchip, "off-chip", addr, n, i, name))
        m, e = rec["m"], rec["e"]
        if np.any(e < 1):
            raise UserError(f"instruction {i} (loadm): a multiplier exponent is 0 (corrupt table)")

        class _Mults:
            pass
        t = _Mults()
        t.gate_m, t.gate_e = m[:F], e[:F]
        t.up_m, t.up_e = m[F:2 * F], e[F:2 * F]
        t.down_m, t.down_e = m[2 * F:], e[2 * F:]
        self.mults = t
        self.stats.offchip_bytes += n
        self._count(Op.LOADM, self.timing.loadm(d, F))

    def _need_mults(self, i, name):
        if getattr(self, "mults", None) is None:
            raise UserError(f"instruction {i} ({name}): no LOADM for this expert")

    def _gemv(self, f, i, name):
        c, cfg = self.ctx, self.config
        proj, bits = Proj(f["proj"]), Bits(f["bits"])
        if "plane0" not in c or (bits == Bits.FULL and "plane1" not in c):
            need = "MSB and LSB planes" if bits == Bits.FULL else "MSB plane"
            raise UserError(f"instruction {i} (gemv): the {need} of expert {c['expert']} not fetched")
        r, co = cfg.array.rows, cfg.array.cols
        sections, _ = plane_sections(r, co, self.d_model, self.d_ffn)
        off, (N, K) = sections[proj.name.lower()]
        size = tiled_bytes(N, K, r, co)
        if proj == Proj.DOWN:
            if "hidden" not in c:
                raise UserError(f"instruction {i} (gemv): down projection before swiglu")
            a = c["hidden"].astype(np.int8)
        else:
            a = self.x[c["tokens"]]
        msb, msb_tier = c["plane0"]
        h = signed_nibbles(untile_plane(msb[off:off + size], N, K, r, co))
        acc = draft_gemv(h, a).astype(np.int64)
        streams = {msb_tier: size}
        if bits == Bits.FULL:
            lsb, lsb_tier = c["plane1"]
            acc += correction_gemv(untile_plane(lsb[off:off + size], N, K, r, co), a)
            streams[lsb_tier] = streams.get(lsb_tier, 0) + size
        c[proj.name.lower()] = acc
        groups = _ceil(len(c["tokens"]), cfg.array.lanes)
        for t, b in streams.items():
            if t == "hb":
                self.stats.hb_bytes += groups * b
            else:
                self.stats.offchip_bytes += groups * b
        self._count(Op.GEMV, self.timing.gemv(len(c["tokens"]), N, K, bits == Bits.FULL, streams))
