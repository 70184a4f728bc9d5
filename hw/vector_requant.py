"""Vector requantizer: ``requant(acc, m, e, bits)`` on a beat of ``width`` INT32 accumulators.

The gate (8 bits), up (16 bits) and down (32 bits) requantizations of ``sim/golden/int_moe.py`` all
run here: each element of a beat carries its own accumulator, mantissa product and shift, the
beat carries one saturation width. Bit-exact with :func:`elmoe3d.sim.golden.int_moe.requant`.
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .tops import Param, Top
from .vector_common import (REQUANT_STAGES, check_width, lockstep, requant_in_layout, requant_out_layout,
                          requant_stages)

DEFAULT_WIDTH = 16      # VectorConfig().width


class VectorRequant(wiring.Component):
    """``width`` lanes of ``sat(rshift_round(acc * m, e), bits)``, one beat per cycle.

    Parameters
    ----------
    width : int
        Elements per beat, 1..256 (``VectorConfig.width``).

    Members
    -------
    i_data : In(stream.Signature(StructLayout{bits: OutBits, elem: ArrayLayout({acc: signed(32), m: unsigned(30), e: unsigned(7)}, width)}))
    o_data : Out(stream.Signature(ArrayLayout(signed(32), width)))

    Latency ``LATENCY`` = 5 cycles from an ``i_data`` transfer to ``o_data.valid`` with a
    consumer that does not stall (an input register, then :func:`requant_stages`); throughput
    one beat per cycle. The input register keeps the producer's logic (the core forms ``m`` as a
    product of two mantissas) out of the multipliers' cycle.

    Raises
    ------
    UserError
        ``width`` not an integer in [1, 256].
    """

    LATENCY = 1 + REQUANT_STAGES

    INTERFACE_NOTES = (
        "Function: each element `i` of an `i_data` beat gives `o_data[i] = sat(rshift_round(acc * m, "
        "e), B)` with `rshift_round(v, s) = (v + 2**(s-1)) >> s` (arithmetic shift, round half up), "
        "`sat(v, B)` = clip to [-(2**(B-1) - 1), 2**(B-1) - 1] and B = 8, 16 or 32 from the beat's "
        "`bits` (B8, B16, B32); the result is sign-extended to 32 bits. The product `acc * m` is "
        "exact (63 bits). Golden definition: `elmoe3d.sim.golden.int_moe.requant`.",
        "Ranges: `m` is any 30-bit unsigned value (the product of two 15-bit mantissas, or one "
        "mantissa); `e` is a 7-bit shift that holds a sum of two exponents: `e` above 62 acts as "
        "62 (as in the golden model) and `e = 0`, which the golden model refuses, acts as 1. "
        "`bits` = 3 (not an encoding) saturates like B32. No input is refused and no flag is raised.",
        "Timing: a pipeline of {LATENCY} register stages (input, partial products, product, shift, "
        "round + saturate) that advances as one when its output register is empty or being taken: "
        "`i_data.ready = ~o_data.valid | o_data.ready`. Without stalls a beat leaves {LATENCY} "
        "cycles after its transfer and the block takes one beat per cycle.",
    )

    def __init__(self, *, width=DEFAULT_WIDTH):
        self.width = check_width(width)
        self.in_layout = requant_in_layout(self.width)
        self.out_layout = requant_out_layout(self.width)
        super().__init__({
            "i_data": In(stream.Signature(self.in_layout)),
            "o_data": Out(stream.Signature(self.out_layout)),
        })

    def elaborate(self, platform):
        m = Module()
        i, o = self.i_data, self.o_data
        en = lockstep(m, i, o, self.LATENCY)
        beat = Signal(self.in_layout, name="s0_beat")       # the input register
        with m.If(en):
            m.d.sync += beat.eq(i.payload)
        for lane in range(self.width):
            e = beat.elem[lane]
            out = requant_stages(m, en, f"elem_{lane}", e.acc, e.m, e.e, beat.bits)
            m.d.comb += o.payload[lane].eq(out)
        return m


GENERATE_TOPS = [
    Top(name="vector_requant", help="vector unit: requant(acc, m, e, 8/16/32) on a beat of INT32 accumulators",
        build=lambda **p: VectorRequant(**p),
        params=(Param("width", int, DEFAULT_WIDTH, "elements per beat (VectorConfig.width)"),)),
]
