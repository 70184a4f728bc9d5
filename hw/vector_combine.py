"""Vector combine: ``acc + rshift_round(w * y, 15)`` into 37-bit sums, and the final ``sat(., 32)``.

A read-modify-write datapath: the core streams each expert output beat ``y`` (INT32, ``width``
elements) with the token's gate weight ``w`` and the current sums ``acc`` read from its output
buffer (``BufferConfig.out_bytes``: 5 bytes, 37 bits, per element), and writes the new sums
back. ``first`` starts a sum (``acc`` reads as 0), ``last`` saturates the result to INT32 (the
layer output). Bit-exact with :func:`elmoe3d.sim.golden.int_moe.combine` summed over a token's experts
and the closing ``sat(acc, OUT_BITS)`` of :func:`elmoe3d.sim.golden.int_moe.int_moe`.
"""

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..sim.golden.int_moe import GATE_FRAC, OUT_BITS
from .held_copy import held_copy
from .tops import Param, Top
from .vector_common import (COMBINE_ACC, COMBINE_BITS, OUT, PP_BITS, WEIGHT, check_width, combine_in_layout,
                          combine_out_layout, lockstep, saturate)

DEFAULT_WIDTH = 16      # VectorConfig().width


class VectorCombine(wiring.Component):
    """``width`` lanes of ``(0 if first else acc) + rshift_round(w * y, 15)``, saturated to 32
    bits when ``last``; one beat per cycle.

    Parameters
    ----------
    width : int
        Elements per beat, 1..256 (``VectorConfig.width``).

    Members
    -------
    i_data : In(stream.Signature(StructLayout{w: unsigned(16), first: 1, last: 1, elem: ArrayLayout({y: signed(32), acc: signed(37)}, width)}))
    o_data : Out(stream.Signature(ArrayLayout(signed(37), width)))

    Latency ``LATENCY`` = 5 cycles (input register, two 32 x 8 partial products, product,
    rounded sum, saturation): each stage fits a 2 ns cycle in Nangate 45.

    Raises
    ------
    UserError
        ``width`` not an integer in [1, 256].
    """

    LATENCY = 5
    COMBINE_BITS = COMBINE_BITS

    INTERFACE_NOTES = (
        "Function: each element `i` of an `i_data` beat gives `o_data[i] = a + rshift_round(w * y, "
        "15)` with `a = 0` when `first` is set, else `acc` (`rshift_round(x, 15) = (x + 2**14) >> 15`, "
        "arithmetic); when `last` is set the result is then saturated to [-(2**31 - 1), 2**31 - 1] "
        "(`sat(., 32)`), sign-extended to {COMBINE_BITS} bits. A token's layer output is one beat "
        "per expert (`first` on the first, `last` on the last; both on a single one), shared "
        "experts with `w = 2**15`; `w = 0` with `last` saturates a sum without adding. Golden "
        "definition: `elmoe3d.sim.golden.int_moe.combine` and the final `sat(acc, 32)` of `int_moe`.",
        "Ranges: `w` is computed as given (gate weights are 0 .. 2**15; a larger `w` is not "
        "refused). The sum wraps modulo 2**{COMBINE_BITS}: it is exact while the terms summed since "
        "`first` stay within the {COMBINE_BITS}-bit range, which any 32 terms with w <= 2**15 do "
        "(|term| <= 2**31).",
        "Timing: {LATENCY} register stages advancing as one: `i_data.ready = ~o_data.valid | "
        "o_data.ready`. Without stalls a beat leaves {LATENCY} cycles after its transfer; one beat "
        "per cycle.",
    )

    def __init__(self, *, width=DEFAULT_WIDTH):
        self.width = check_width(width)
        self.in_layout = combine_in_layout(self.width)
        self.out_layout = combine_out_layout(self.width)
        super().__init__({
            "i_data": In(stream.Signature(self.in_layout)),
            "o_data": Out(stream.Signature(self.out_layout)),
        })

    def elaborate(self, platform):
        m = Module()
        i, o = self.i_data, self.o_data
        en = lockstep(m, i, o, self.LATENCY)
        beat = Signal(self.in_layout, name="s0_beat")          # the input register
        last = [Signal(name=f"s{n}_last") for n in (1, 2)]
        with m.If(en):
            m.d.sync += [beat.eq(i.payload), last[0].eq(beat.last), last[1].eq(last[0])]
        pieces = [(lo, min(lo + PP_BITS, WEIGHT.width)) for lo in range(0, WEIGHT.width, PP_BITS)]
        for lane in range(self.width):
            e = beat.elem[lane]
            # the beat's scalars, one copy per element (hw/held_copy.py: copies synthesis keeps): one
            # w register fed every element's 32 x 8 partial products (16 x 32 gate inputs per
            # bit at width 16), which ABC buffered as a chain (1.4 ns in Nangate 45)
            w = held_copy(m, en, i.payload.w, f"elem_{lane}_s0_w")
            first = held_copy(m, en, i.payload.first, f"elem_{lane}_s0_first")
            last3 = held_copy(m, en, last[1], f"elem_{lane}_s3_last")
            pp = [Signal(signed(OUT.width + hi - lo + 1), name=f"elem_{lane}_s1_pp{j}")
                  for j, (lo, hi) in enumerate(pieces)]
            base1 = Signal(COMBINE_ACC, name=f"elem_{lane}_s1_acc")
            prod = Signal(signed(WEIGHT.width + OUT.width + 1), name=f"elem_{lane}_s2_prod")
            base2 = Signal(COMBINE_ACC, name=f"elem_{lane}_s2_acc")
            total = Signal(COMBINE_ACC, name=f"elem_{lane}_s3_sum")
            out = Signal(COMBINE_ACC, name=f"elem_{lane}_s4_out")
            # rshift_round(p, 15) = ((p >> 14) + 1) >> 1
            term = ((prod >> (GATE_FRAC - 1)) + 1) >> 1
            with m.If(en):
                m.d.sync += [*(p.eq(w[lo:hi] * e.y) for p, (lo, hi) in zip(pp, pieces)),
                             base1.eq(Mux(first, 0, e.acc)),
                             prod.eq(sum(p << lo for p, (lo, _) in zip(pp, pieces))),
                             base2.eq(base1),
                             total.eq(base2 + term),        # wraps to COMBINE_BITS
                             out.eq(Mux(last3, saturate(total, OUT_BITS), total))]
            m.d.comb += o.payload[lane].eq(out)
        return m


GENERATE_TOPS = [
    Top(name="vector_combine", help="vector unit: combine acc + rshift_round(w * y, 15) into 37-bit sums, final sat 32",
        build=lambda **p: VectorCombine(**p),
        params=(Param("width", int, DEFAULT_WIDTH, "elements per beat (VectorConfig.width)"),)),
]
