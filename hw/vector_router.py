"""Vector router: top-k over one token's integer logits, then its fixed-point gate weights.

Bit-exact with :func:`elmoe3d.sim.golden.int_moe.select_experts` followed by
:func:`elmoe3d.sim.golden.int_moe.gate_weights` for one token (``topk`` and ``cached`` choices).

Micro-architecture (one token at a time)::

    i_cmd {n, k, cached, allowed, xm, xe, rm, re}
      |
    IDLE --> SCAN: n logits on i_logit, one per cycle, expert 0 first; each allowed one is
      |      inserted into a sorted list of max_k (logit, expert) registers (descending; a new
      |      logit goes behind every equal one, so ties go to the lower expert)
      v
    WEIGHTS: for each chosen slot j < count = min(k, list length), one per cycle through a
      |      6-cycle pipeline: D = r[c_1] - r[c_j] (33 bits), D * (xm * rm) (four 33 x 8
      |      partial products, then their sum plus 2**(s-1): 63 bits), u = . >> s (which is
      |      rshift_round) with s = min(xe + re, 62), the POW2 ROM (64 x 17 bits) read at u & 63, p_j = POW2 >>
      |      (u >> 6) or 0 past a shift of 16; S = sum p_j accumulates as the p_j arrive
      v
    DIVIDE: max_k restoring dividers in parallel, one quotient bit per cycle, 16 cycles:
      |     w_j = (p_j << 15) // S (S >= p_1 = 2**16, never 0)
      v
    DONE: o_result {count, expert[slot], weight[slot]} held until taken
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..errors import UserError, check_int
from ..sim.golden.int_moe import EXP_FRAC, GATE_FRAC, MANT_BITS, MAX_SHIFT, POW2
from ..spec.timing import DIVIDE_CYCLES, WEIGHT_PIPELINE, router_cycles  # noqa: F401
from .mux import pick
from .tops import Param, Top
from .vector_common import (ACC, POW2_BITS, PP_BITS, SHIFT_LIMIT, WEIGHT, clamp_shift_minus_one, count_shape,
                          index_shape, router_cmd_layout, router_result_layout)

DEFAULT_MAX_EXPERTS = 64    # CacheConfig().n_experts: the expert field of a cache key
DEFAULT_MAX_K = 8
MAX_EXPERTS = 1024          # CacheConfig.expert_bits <= 10
MAX_K = 64

class VectorRouter(wiring.Component):
    """Top-k of one token's logits (ties to the lower expert) and its gate weights.

    Parameters
    ----------
    max_experts : int
        Largest number of experts a command may rank, 2..1024 (the width of ``allowed``).
    max_k : int
        Largest number of experts chosen per token, 1..min(64, max_experts).

    Members
    -------
    i_cmd : In(stream.Signature(StructLayout{n, k, cached, allowed[max_experts], xm, xe, rm, re}))
    i_logit : In(stream.Signature(signed(32)))     one logit per beat, expert 0 first
    o_result : Out(stream.Signature(StructLayout{count, expert[max_k], weight[max_k]}))

    Raises
    ------
    UserError
        A parameter out of range, or ``max_k > max_experts``.
    """

    INTERFACE_NOTES = (
        "Command: an `i_cmd` transfer starts one token: `n` logits follow on `i_logit` (one per "
        "beat, expert 0 first, as signed 32-bit integers); the block chooses the `k` largest, "
        "ties to the lower expert index, best first. With `cached` set only experts whose "
        "`allowed[e]` bit is 1 are ranked, and `count = min(k, number allowed)` (0 when none is "
        "allowed: the result has count 0). Without `cached`, `allowed` is ignored. Golden "
        "definition: `elmoe3d.sim.golden.int_moe.select_experts`.",
        "Gate weights: for the chosen `c_1..c_count`, `D_j = r[c_1] - r[c_j]`, `u_j = "
        "rshift_round(D_j * xm * rm, xe + re)` (a shift above 62 acts as 62, 0 as 1), `p_j = "
        "POW2[u_j & 63] >> (u_j >> 6)` (0 past a shift of 16; POW2 a 64 x 17-bit ROM), "
        "`w_j = (p_j << 15) // sum(p)`. Golden definition: `elmoe3d.sim.golden.int_moe.gate_weights` "
        "(`router_m = rm`, `router_e = re`, the token's `xm`, `xe`).",
        "Result: one `o_result` beat per command, held until taken: `count`, `expert[slot]` and "
        "`weight[slot]` (0 .. 2**15) for slot < count, zeros in the other slots. The next command "
        "is taken only after that transfer.",
        "Ranges: `k` above max_k ({max_k}) acts as max_k and `k = 0` chooses nothing (count 0; the "
        "golden model refuses both, and k > n). `n` may be 0 (count 0) or above max_experts "
        "({max_experts}): the block then takes all `n` logits but never chooses an expert at "
        "index max_experts or above. Any 32-bit logits are exact (D_j < 2**32).",
        "Timing: `i_cmd.ready` is high only between tokens, `i_logit.ready` only while logits are "
        "due. Without stalls a token takes `elmoe3d.hw.vector_router.router_cycles(n, count)` = "
        "1 + n + (count + 6 + 16 if count else 1) + 1 cycles from its command transfer to the next.",
    )

    def __init__(self, *, max_experts=DEFAULT_MAX_EXPERTS, max_k=DEFAULT_MAX_K):
        self.max_experts = check_int("max_experts", max_experts, 2, MAX_EXPERTS)
        self.max_k = check_int("max_k", max_k, 1, MAX_K)
        if max_k > max_experts:
            raise UserError(f"max_k must be at most max_experts ({max_experts}), got {max_k}")
        self.cmd_layout = router_cmd_layout(self.max_experts, self.max_k)
        self.result_layout = router_result_layout(self.max_experts, self.max_k)
        super().__init__({
            "i_cmd": In(stream.Signature(self.cmd_layout)),
            "i_logit": In(stream.Signature(ACC)),
            "o_result": Out(stream.Signature(self.result_layout)),
        })

    def cycles(self, n, count):
        return router_cycles(n, count)

    def elaborate(self, platform):
        m = Module()
        cmd, lg, res = self.i_cmd, self.i_logit, self.o_result
        K, E = self.max_k, self.max_experts
        c = cmd.payload

        # -- the command, latched -------------------------------------------------------------
        n = Signal.like(c.n, name="n")
        k = Signal.like(c.k, name="k")
        cached = Signal(name="cached")
        allowed = Signal(E, name="allowed")
        xm = Signal.like(c.xm, name="xm")
        rm = Signal.like(c.rm, name="rm")
        sm1 = Signal(range(MAX_SHIFT), name="shift_minus_one")
        rnd = Signal(unsigned(MAX_SHIFT), name="round_term")            # 2**(s-1), set with sm1
        scale = Signal(unsigned(2 * MANT_BITS), name="scale")          # xm * rm
        idx = Signal.like(c.n, name="index")                         # the logit now arriving

        # -- the sorted list -------------------------------------------------------------------
        val = [Signal(ACC, name=f"slot_{j}_logit") for j in range(K)]
        exp = [Signal(index_shape(E), name=f"slot_{j}_expert") for j in range(K)]
        filled = Signal(count_shape(K), name="filled")
        count = Signal(count_shape(K), name="count")
        m.d.comb += count.eq(Mux(k < filled, k, filled))

        # -- weights -----------------------------------------------------------------------------
        s_bits = (K << (POW2_BITS - 1)).bit_length()                    # S <= max_k * 2**16
        p = [Signal(POW2_BITS, name=f"slot_{j}_p") for j in range(K)]
        total = Signal(s_bits, name="sum_p")
        rem = [Signal(s_bits + 1, name=f"slot_{j}_remainder") for j in range(K)]
        low = [Signal(name=f"slot_{j}_low_bit") for j in range(K)]
        quot = [Signal(WEIGHT, name=f"slot_{j}_weight") for j in range(K)]
        issue = Signal(count_shape(K), name="issue")
        step = Signal(range(16), name="divide_step")

        # Weight pipeline: stage registers named by stage (w1 .. w5); the tag is the slot.
        v = [Signal(name=f"w{s}_valid") for s in range(1, 6)]
        tag = [Signal(index_shape(K), name=f"w{s}_slot") for s in range(1, 6)]
        gap = Signal(unsigned(ACC.width + 1), name="w1_gap")
        # the product gap * (xm * rm) as 33 x 8 partial products (w2), their sum with the rounding
        # term 2**(s-1) of rshift_round (w3), so that w4 is the shift alone: no stage holds more
        # than one multiplier or one carry chain (2 ns in Nangate 45)
        pieces = [(b, min(b + PP_BITS, 2 * MANT_BITS)) for b in range(0, 2 * MANT_BITS, PP_BITS)]
        pp = [Signal(unsigned(len(gap) + hi_ - lo_), name=f"w2_pp{j}") for j, (lo_, hi_) in enumerate(pieces)]
        prod = Signal(unsigned(len(gap) + 2 * MANT_BITS), name="w3_prod")
        shifted = Signal(unsigned(len(prod)), name="w4_shifted")
        over = Signal(name="w5_over")
        pshift = Signal(range(SHIFT_LIMIT + 1), name="w5_shift")
        u = Signal(unsigned(len(prod)), name="w4_u")
        rom = Memory(shape=unsigned(POW2_BITS), depth=len(POW2), init=[int(x) for x in POW2])
        m.submodules.pow2 = rom
        rd = rom.read_port()
        m.d.comb += [u.eq(shifted), rd.addr.eq(u[:EXP_FRAC])]
        issuing = Signal(name="issuing")
        drained = Signal(name="drained")
        m.d.comb += drained.eq((issue == count) & ~Cat(*v).any())
        pval = Signal(POW2_BITS, name="w6_p")
        m.d.comb += pval.eq(Mux(over, 0, rd.data >> pshift))

        sel_val = pick(val, issue)
        m.d.sync += [
            v[0].eq(issuing), tag[0].eq(issue),
            gap.eq((val[0] - sel_val).as_unsigned()),                 # >= 0: slot 0 is the largest
            v[1].eq(v[0]), tag[1].eq(tag[0]),
            *(q.eq(gap * scale[lo_:hi_]) for q, (lo_, hi_) in zip(pp, pieces)),
            v[2].eq(v[1]), tag[2].eq(tag[1]),
            prod.eq(sum(q << lo_ for q, (lo_, _) in zip(pp, pieces)) + rnd),           # + 2**(s-1)
            v[3].eq(v[2]), tag[3].eq(tag[2]),
            shifted.eq(prod >> (sm1 + 1)),                            # rshift_round(gap * scale, s)
            v[4].eq(v[3]), tag[4].eq(tag[3]),
            over.eq((u >> EXP_FRAC) > SHIFT_LIMIT),
            pshift.eq((u >> EXP_FRAC)[:len(pshift)]),
        ]
        with m.If(v[4]):
            m.d.sync += total.eq(total + pval)
            for j in range(K):
                with m.If(tag[4] == j):
                    m.d.sync += p[j].eq(pval)

        # -- the result -------------------------------------------------------------------------
        for j in range(K):
            used = j < count
            m.d.comb += [res.payload.expert[j].eq(Mux(used, exp[j], 0)),
                         res.payload.weight[j].eq(Mux(used, quot[j], 0))]
        m.d.comb += res.payload.count.eq(count)

        with m.FSM(name="ctrl"):
            with m.State("IDLE"):
                m.d.comb += cmd.ready.eq(1)
                with m.If(cmd.valid):
                    m.d.sync += [n.eq(c.n), k.eq(c.k), cached.eq(c.cached), allowed.eq(c.allowed.as_value()),
                                 xm.eq(c.xm), rm.eq(c.rm), sm1.eq(clamp_shift_minus_one(c.xe + c.re)),
                                 rnd.eq(1 << clamp_shift_minus_one(c.xe + c.re)),
                                 idx.eq(0), filled.eq(0), issue.eq(0), total.eq(0)]
                    m.d.sync += [pj.eq(0) for pj in p]
                    with m.If(c.n == 0):
                        m.next = "WEIGHTS"
                    with m.Else():
                        m.next = "SCAN"
            with m.State("SCAN"):
                m.d.comb += lg.ready.eq(1)
                m.d.sync += scale.eq(xm * rm)
                with m.If(lg.valid):
                    new = lg.payload
                    ok = (idx < E) & (~cached | allowed.bit_select(idx, 1))
                    with m.If(ok):
                        ahead = [Signal(name=f"slot_{j}_ahead") for j in range(K)]
                        for j in range(K):
                            m.d.comb += ahead[j].eq((j < filled) & (val[j] >= new))
                            with m.If(~ahead[j]):
                                if j == 0:
                                    m.d.sync += [val[j].eq(new), exp[j].eq(idx)]
                                else:
                                    with m.If(ahead[j - 1]):
                                        m.d.sync += [val[j].eq(new), exp[j].eq(idx)]
                                    with m.Else():
                                        m.d.sync += [val[j].eq(val[j - 1]), exp[j].eq(exp[j - 1])]
                        with m.If(filled < K):
                            m.d.sync += filled.eq(filled + 1)
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(idx == n - 1):
                        m.next = "WEIGHTS"
            with m.State("WEIGHTS"):
                with m.If(count == 0):
                    m.next = "DONE"
                with m.Elif(issue != count):
                    m.d.comb += issuing.eq(1)
                    m.d.sync += issue.eq(issue + 1)
                with m.Elif(drained):
                    m.d.sync += step.eq(0)
                    for j in range(K):
                        m.d.sync += [rem[j].eq(p[j] >> 1), low[j].eq(p[j][0]), quot[j].eq(0)]
                    m.next = "DIVIDE"
            with m.State("DIVIDE"):
                for j in range(K):
                    trial = Signal(len(rem[j]), name=f"slot_{j}_trial")
                    m.d.comb += trial.eq(Cat(low[j], rem[j]))
                    m.d.sync += low[j].eq(0)
                    with m.If(trial >= total):
                        m.d.sync += [rem[j].eq(trial - total), quot[j].eq(Cat(Const(1, 1), quot[j]))]
                    with m.Else():
                        m.d.sync += [rem[j].eq(trial), quot[j].eq(Cat(Const(0, 1), quot[j]))]
                m.d.sync += step.eq(step + 1)
                with m.If(step == DIVIDE_CYCLES - 1):
                    m.next = "DONE"
            with m.State("DONE"):
                m.d.comb += res.valid.eq(1)
                with m.If(res.ready):
                    m.next = "IDLE"
        return m


GENERATE_TOPS = [
    Top(name="vector_router", help="vector unit: router top-k (ties to the lower expert, cached mask) and gate weights",
        build=lambda **p: VectorRouter(**p),
        params=(Param("max_experts", int, DEFAULT_MAX_EXPERTS, "largest number of experts ranked per token"),
                Param("max_k", int, DEFAULT_MAX_K, "largest number of experts chosen per token"))),
]
