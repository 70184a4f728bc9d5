"""Vector combine: ``acc + rshift_round(w * y, 15)`` into 37-bit sums, and the final ``sat(., 32)``.

A read-modify-write datapath: the core streams each expert output beat ``y`` (INT32, ``width``
elements) with the token's gate weight ``w`` and the current sums ``acc`` read from its output
buffer (``BufferConfig.out_bytes``: 5 bytes, 37 bits, per element), and writes the new sums
back. ``first`` starts a sum (``acc`` reads as 0), ``last`` saturates the result to INT32 (the
layer output). Bit-exact with :func:`elmoe3d.sim.int_moe.combine` summed over a token's experts
and the closing ``sat(acc, OUT_BITS)`` of :func:`elmoe3d.sim.int_moe.int_moe`.
"""

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..sim.int_moe import GATE_FRAC, OUT_BITS
from .tops import Param, Top
from .vector_common import (COMBINE_ACC, COMBINE_BITS, OUT, WEIGHT, check_width, combine_in_layout,
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

    Latency ``LATENCY`` = 3 cycles (product, rounded sum, saturation).

    Raises
    ------
    UserError
        ``width`` not an integer in [1, 256].
    """

    LATENCY = 3
    COMBINE_BITS = COMBINE_BITS

    INTERFACE_NOTES = (
        "Function: each element `i` of an `i_data` beat gives `o_data[i] = a + rshift_round(w * y, "
        "15)` with `a = 0` when `first` is set, else `acc` (`rshift_round(x, 15) = (x + 2**14) >> 15`, "
        "arithmetic); when `last` is set the result is then saturated to [-(2**31 - 1), 2**31 - 1] "
        "(`sat(., 32)`), sign-extended to {COMBINE_BITS} bits. A token's layer output is one beat "
        "per expert (`first` on the first, `last` on the last; both on a single one), shared "
        "experts with `w = 2**15`; `w = 0` with `last` saturates a sum without adding. Golden "
        "definition: `elmoe3d.sim.int_moe.combine` and the final `sat(acc, 32)` of `int_moe`.",
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
        last1, last2 = Signal(name="s1_last"), Signal(name="s2_last")
        with m.If(en):
            m.d.sync += [last1.eq(i.payload.last), last2.eq(last1)]
        for lane in range(self.width):
            e = i.payload.elem[lane]
            prod = Signal(signed(WEIGHT.width + OUT.width + 1), name=f"elem_{lane}_s1_prod")
            base = Signal(COMBINE_ACC, name=f"elem_{lane}_s1_acc")
            total = Signal(COMBINE_ACC, name=f"elem_{lane}_s2_sum")
            out = Signal(COMBINE_ACC, name=f"elem_{lane}_s3_out")
            # rshift_round(p, 15) = ((p >> 14) + 1) >> 1
            term = ((prod >> (GATE_FRAC - 1)) + 1) >> 1
            with m.If(en):
                m.d.sync += [prod.eq(i.payload.w * e.y),
                             base.eq(Mux(i.payload.first, 0, e.acc)),
                             total.eq(base + term),        # wraps to COMBINE_BITS
                             out.eq(Mux(last2, saturate(total, OUT_BITS), total))]
            m.d.comb += o.payload[lane].eq(out)
        return m


GENERATE_TOPS = [
    Top(name="vector_combine", help="vector unit: combine acc + rshift_round(w * y, 15) into 37-bit sums, final sat 32",
        build=lambda **p: VectorCombine(**p),
        params=(Param("width", int, DEFAULT_WIDTH, "elements per beat (VectorConfig.width)"),)),
]
