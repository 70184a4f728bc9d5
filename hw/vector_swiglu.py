"""Vector SwiGLU step: ``h = requant(SILU[g + 128] * v, hm, he, 8)`` on a beat of ``width`` pairs.

The SiLU table (256 INT16 entries, folded offline from the layer's gate scale) lives in an
``amaranth.lib.memory.Memory`` with one write port (``i_table``: the core loads it from the
layer's constants at run time) and one synchronous read port per element. Bit-exact with the
last line of :func:`elmoe3d.sim.golden.int_moe.swiglu`.
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..sim.golden.int_moe import SILU_ENTRIES
from .held_copy import held_copy
from .tops import Param, Top
from .vector_common import (ACC, REQUANT_STAGES, SILU, SILU_WRITE, SWIGLU_ELEM, check_width,
                          lockstep, requant_stages, swiglu_in_layout, swiglu_out_layout)

DEFAULT_WIDTH = 16      # VectorConfig().width


class VectorSwiGLU(wiring.Component):
    """``width`` lanes of ``sat(rshift_round(SILU[g + 128] * v * hm, he), 8)``, one beat per cycle.

    Parameters
    ----------
    width : int
        Elements per beat, 1..256 (``VectorConfig.width``).

    Members
    -------
    i_table : In(stream.Signature(StructLayout{index: unsigned(8), value: signed(16)}))
        SiLU table writes (always ready).
    i_data : In(stream.Signature(StructLayout{hm: unsigned(15), he: unsigned(7), elem: ArrayLayout({g: signed(8), v: signed(16)}, width)}))
    o_data : Out(stream.Signature(ArrayLayout(signed(8), width)))

    Latency ``LATENCY`` = 7 cycles (table read, its register, product, the four requantization
    stages).

    Raises
    ------
    UserError
        ``width`` not an integer in [1, 256].
    """

    LATENCY = 3 + REQUANT_STAGES

    INTERFACE_NOTES = (
        "Function: each element `i` of an `i_data` beat gives `o_data[i] = sat(rshift_round(SILU[g + "
        "128] * v * hm, he), 8)` (`rshift_round(x, s) = (x + 2**(s-1)) >> s`, `sat` clips to "
        "[-127, 127]); `SILU` is the 256-entry INT16 table written through `i_table`, entry "
        "`g + 128` (g = -128 reads entry 0). Golden definition: `elmoe3d.sim.golden.int_moe.swiglu` "
        "(`requant(SILU[g + 128] * v, hm, he, 8)`).",
        "Table: `i_table.ready` is always 1; a transfer writes `value` into entry `index` at that "
        "clock edge. An `i_data` beat transferred at the same edge or earlier reads the old entry; "
        "one transferred later reads the new one. The table's content after reset is undefined "
        "(all zeros in simulation): write all {SILU_ENTRIES} entries before the first beat.",
        "Ranges: every `g`, `v`, `hm` and every table value is computed exactly (|SILU * v| < "
        "2**31); `he` above 62 acts as 62 and `he = 0` acts as 1. No input is refused.",
        "Timing: {LATENCY} register stages (table read, read register, product, partial products, product, "
        "shift, round + saturate) advancing as one: `i_data.ready = ~o_data.valid | "
        "o_data.ready`. Without stalls a beat leaves {LATENCY} cycles after its transfer; one "
        "beat per cycle.",
    )

    SILU_ENTRIES = SILU_ENTRIES

    def __init__(self, *, width=DEFAULT_WIDTH):
        self.width = check_width(width)
        self.in_layout = swiglu_in_layout(self.width)
        self.out_layout = swiglu_out_layout(self.width)
        self.table_layout = SILU_WRITE
        super().__init__({
            "i_table": In(stream.Signature(self.table_layout)),
            "i_data": In(stream.Signature(self.in_layout)),
            "o_data": Out(stream.Signature(self.out_layout)),
        })

    def elaborate(self, platform):
        m = Module()
        i, o, t = self.i_data, self.o_data, self.i_table
        en = lockstep(m, i, o, self.LATENCY)

        table = Memory(shape=SILU, depth=SILU_ENTRIES, init=[])
        m.submodules.silu = table
        wr = table.write_port()
        reads = [table.read_port() for _ in range(self.width)]
        m.d.comb += [t.ready.eq(1), wr.en.eq(t.valid), wr.addr.eq(t.payload.index),
                     wr.data.eq(t.payload.value)]

        # Stage 1: the table read (synchronous port, enabled with the pipeline) beside the
        # registered up value and the scalars. Stage 2 registers the read data: the sky130
        # macro gives it at the clock's falling edge, which left the product half a period
        # (101 MHz); stage 3 is the product.
        hm1 = Signal.like(i.payload.hm, name="s1_hm")
        he1 = Signal.like(i.payload.he, name="s1_he")
        hm2 = Signal.like(i.payload.hm, name="s2_hm")
        he2 = Signal.like(i.payload.he, name="s2_he")
        with m.If(en):
            m.d.sync += [hm1.eq(i.payload.hm), he1.eq(i.payload.he), hm2.eq(hm1), he2.eq(he1)]
        for lane, rd in enumerate(reads):
            # Stage 3's scalars, one copy per element (hw/held_copy.py: copies synthesis keeps):
            # one hm register fed the multipliers of every element, 32 x width partial-product
            # bits per bit, which ABC buffered as a chain (1.5 ns at width 16 in Nangate 45).
            hm3 = held_copy(m, en, hm2, f"elem_{lane}_s3_hm")
            he3 = held_copy(m, en, he2, f"elem_{lane}_s3_he")
            e = i.payload.elem[lane]
            v1 = Signal(SWIGLU_ELEM["v"].shape, name=f"elem_{lane}_s1_v")
            v2 = Signal(SWIGLU_ELEM["v"].shape, name=f"elem_{lane}_s2_v")
            silu2 = Signal(SILU, name=f"elem_{lane}_s2_silu")
            prod = Signal(ACC, name=f"elem_{lane}_s3_prod")
            # index g + 128 of a two's-complement g: its sign bit inverted
            m.d.comb += [rd.en.eq(en), rd.addr.eq(e.g.as_unsigned() ^ (SILU_ENTRIES // 2))]
            with m.If(en):
                m.d.sync += [v1.eq(e.v), v2.eq(v1), silu2.eq(rd.data), prod.eq(silu2 * v2)]
            out = requant_stages(m, en, f"elem_{lane}", prod, hm3, he3, 8)
            m.d.comb += o.payload[lane].eq(out)
        return m


GENERATE_TOPS = [
    Top(name="vector_swiglu", help="vector unit: SwiGLU step requant(SILU[g + 128] * v, hm, he, 8), run-time SiLU table",
        build=lambda **p: VectorSwiGLU(**p),
        params=(Param("width", int, DEFAULT_WIDTH, "elements per beat (VectorConfig.width)"),)),
]
