"""What the vector unit's blocks share: widths, payload layouts, checks, the requantization datapath.

The vector unit (``hw/vector_unit.py``) executes the integer steps of the MoE layer that are not GEMVs (SPEC section 7;
``sim/golden/int_moe.py`` is the normative definition and every block here is bit-exact with it). It
is four blocks, one file each, each a ``wiring.Component`` with ``lib.stream`` ports and each a
generate-able top (``vector_unit`` puts the four side by side):

=====================  =====================================  ===========================================
top                    file                                   golden function
=====================  =====================================  ===========================================
``vector_requant``     ``hw/vector_requant.py``               ``requant(acc, m, e, bits)``, bits 8/16/32
``vector_swiglu``      ``hw/vector_swiglu.py``                ``requant(SILU[g + 128] * v, hm, he, 8)``
``vector_router``      ``hw/vector_router.py``                ``select_experts`` + ``gate_weights``
``vector_combine``     ``hw/vector_combine.py``               ``acc + rshift_round(w * y, 15)``, ``sat(., 32)``
=====================  =====================================  ===========================================

This module holds what they share: the widths (derived from the constants of
``sim/golden/int_moe.py``, never repeated), the payload layouts of every port (the benches pack and
unpack beats through these same layouts), the parameter checks, and :func:`requant_stages`, the
pipelined ``sat(rshift_round(acc * m, e), bits)`` that the requantizer and the SwiGLU step both
instantiate.

Pipelines
---------
Every streaming block (requant, SwiGLU, combine) is a fixed-depth pipeline that moves as one:
all its registers advance when ``en = ~o.valid | o.ready`` (the output register is empty or
being emptied), and ``i.ready = en``. A beat therefore appears on ``o`` exactly ``LATENCY``
cycles after its transfer when the consumer never stalls, the blocks take one beat per cycle,
and a stalled consumer freezes the whole pipeline without losing or duplicating a beat.
``i.ready`` depends combinationally on ``o.ready`` (never on ``i.valid``); ``o.valid`` is a
register and never waits for ``o.ready``.
"""

from amaranth.hdl import Mux, Shape, Signal, signed, unsigned
from amaranth.lib import data, enum

from ..errors import check_int
from ..sim.numerics.gemv import ACC_BITS
from ..sim.golden.int_moe import (GATE_FRAC, MANT_BITS, MAX_SHIFT, OUT_BITS, POW2_ONE,
                           SILU_ENTRIES, UP_BITS)
from .layouts import ArrayOf

MAX_WIDTH = 256                          # VectorConfig.width: 1..256 elements per beat

ACC = signed(ACC_BITS)                   # an INT32 accumulator from the PE array
MANT = unsigned(2 * MANT_BITS)           # a requantization mantissa: a product of two 15-bit ones
SCALE_MANT = unsigned(MANT_BITS)         # one fixed-point mantissa (xm, rm, hm)
EXP = unsigned(MAX_SHIFT.bit_length())   # one exponent (xe <= 48, re, he <= 62)
SHIFT = unsigned((2 * MAX_SHIFT).bit_length())   # a sum of two exponents (xe + ge <= 110)
GATE = signed(8)                         # the INT8 gate value, the SiLU table's index - 128
UP = signed(UP_BITS)                     # the INT16 up value
SILU = signed(16)                        # one SiLU table entry (INT16)
SILU_INDEX = unsigned((SILU_ENTRIES - 1).bit_length())
HIDDEN = signed(8)                       # the INT8 hidden value (SwiGLU output)
OUT = signed(OUT_BITS)                   # an INT32 layer output / expert output
COMBINE_BITS = OUT_BITS + 5              # the combine's exact sum: 32 terms of |w*y >> 15| <= 2**31
COMBINE_ACC = signed(COMBINE_BITS)
WEIGHT = unsigned(GATE_FRAC + 1)         # a gate weight, 0 .. 2**15
POW2_BITS = POW2_ONE.bit_length()        # POW2[0] = 2**16 needs 17 bits
SHIFT_LIMIT = 16                         # POW2 shifted past 16 gives 0 (sim/int_moe.gate_weights)


class OutBits(enum.Enum, shape=2):
    """Saturation width of a requantization: ``sat(., 8)``, ``sat(., 16)`` or ``sat(., 32)``."""
    B8 = 0
    B16 = 1
    B32 = 2


OUT_BITS_OF = {OutBits.B8: 8, OutBits.B16: 16, OutBits.B32: 32}


def check_width(width):
    """Elements per beat, as ``VectorConfig.width`` (1..256)."""
    return check_int("width", width, 1, MAX_WIDTH)


# -- layouts ------------------------------------------------------------------------------------------
REQUANT_ELEM = data.StructLayout({"acc": ACC, "m": MANT, "e": SHIFT})


def requant_in_layout(width):
    """A requantization beat: ``bits`` (the saturation width) and ``width`` elements
    ``{acc, m, e}``: ``requant(acc, m, e, bits)`` each."""
    return data.StructLayout({"bits": OutBits, "elem": ArrayOf(REQUANT_ELEM, width, index="elem")})


def requant_out_layout(width):
    """``width`` requantized values, sign-extended to 32 bits."""
    return ArrayOf(OUT, width, index="elem")


SWIGLU_ELEM = data.StructLayout({"g": GATE, "v": UP})


def swiglu_in_layout(width):
    """A SwiGLU beat: the layer's hidden multiplier ``(hm, he)`` and ``width`` pairs ``{g, v}``."""
    return data.StructLayout({"hm": SCALE_MANT, "he": SHIFT,
                              "elem": ArrayOf(SWIGLU_ELEM, width, index="elem")})


def swiglu_out_layout(width):
    return ArrayOf(HIDDEN, width, index="elem")


SILU_WRITE = data.StructLayout({"index": SILU_INDEX, "value": SILU})
"""One SiLU table write: entry ``index`` (= g + 128) gets ``value``."""

COMBINE_ELEM = data.StructLayout({"y": OUT, "acc": COMBINE_ACC})


def combine_in_layout(width):
    """A combine beat: the gate weight ``w``, flags ``first`` (the sum starts here: ``acc`` reads
    as 0) and ``last`` (saturate the result to 32 bits), and ``width`` elements ``{y, acc}``."""
    return data.StructLayout({"w": WEIGHT, "first": 1, "last": 1,
                              "elem": ArrayOf(COMBINE_ELEM, width, index="elem")})


def combine_out_layout(width):
    return ArrayOf(COMBINE_ACC, width, index="elem")


def count_shape(most):
    """Unsigned shape holding 0 .. ``most``."""
    return unsigned(max(1, int(most).bit_length()))


def index_shape(count):
    """Unsigned shape of an index 0 .. ``count - 1``."""
    return unsigned(max(1, (int(count) - 1).bit_length()))


def router_cmd_layout(max_experts, max_k):
    """One token's routing command: ``n`` logits follow on ``i_logit``; ``k`` experts to choose;
    ``cached`` restricts the choice to ``allowed[e]``; the token scale ``(xm, xe)`` and the
    router's multiplier ``(rm, re)``."""
    return data.StructLayout({
        "n": count_shape(max_experts), "k": count_shape(max_k), "cached": 1,
        "allowed": ArrayOf(unsigned(1), max_experts, index="expert"),
        "xm": SCALE_MANT, "xe": EXP, "rm": SCALE_MANT, "re": EXP})


def router_result_layout(max_experts, max_k):
    """One token's routing: ``count`` experts chosen, ``expert[slot]`` best first and their gate
    weights ``weight[slot]``; slots at or beyond ``count`` are zero."""
    return data.StructLayout({
        "count": count_shape(max_k),
        "expert": ArrayOf(index_shape(max_experts), max_k, index="slot"),
        "weight": ArrayOf(WEIGHT, max_k, index="slot")})


# -- shared datapath ------------------------------------------------------------------------------------
def clamp_shift_minus_one(shift):
    """``min(max(shift, 1), 62) - 1``: the golden clamp of a right shift, minus one (0..61)."""
    s = Shape.cast(shift.shape()).width
    top = MAX_SHIFT - 1
    return Mux(shift == 0, 0, Mux(shift > MAX_SHIFT, top, (shift - 1)[:max(s, 6)]))


def saturate(value, bits):
    """``sat(value, bits)``: clip to ``[-(2**(bits-1) - 1), 2**(bits-1) - 1]``."""
    hi = (1 << (bits - 1)) - 1
    return Mux(value > hi, hi, Mux(value < -hi, -hi, value))


def requant_stages(m, en, prefix, acc, mant, shift, bits):
    """Append the four pipeline stages of ``sat(rshift_round(acc * mant, shift), bits)``.

    ``acc`` (signed), ``mant`` (unsigned) and ``shift`` (unsigned, clamped here to [1, 62] as the
    golden model does) are sampled when ``en`` is high; ``bits`` is an ``int`` or a signal of
    :class:`OutBits` sampled with them. Returns the registered result (signed, 32 bits) that holds
    the value four ``en`` cycles later.

    Stages (each ends in registers that load on ``en``):

    1. partial products ``acc * mant[8j:8j + 8]`` (32 x 8 multipliers, :data:`PP_BITS`; four for
       a 30-bit mantissa, two for a 15-bit one), and ``s - 1`` of the clamped shift;
    2. the exact product plus the rounding term, ``p = sum(pp_j << 8j) + 2**(s-1)`` (64 bits
       signed: ``|acc| <= 2**31``, ``mant < 2**30``, ``s <= 62``), and ``s``;
    3. ``r = p >> s`` (arithmetic), which is ``rshift_round(acc * mant, s)``;
    4. ``sat(r, bits)`` (comparisons with constants: no carry chain in this stage).

    Each stage's longest carry chain is one 64-bit sum (stage 2): with the 32 x 8 multipliers of
    stage 1 it fits a 2 ns cycle in Nangate 45 (``docs/vector-unit.md``).
    """
    mw = Shape.cast(mant.shape()).width
    pieces = [(lo, min(lo + PP_BITS, mw)) for lo in range(0, mw, PP_BITS)]
    pp = [Signal(signed(len(acc) + (hi - lo) + 1), name=f"{prefix}_s1_pp{j}") for j, (lo, hi) in enumerate(pieces)]
    sm1_1 = Signal(range(MAX_SHIFT), name=f"{prefix}_s1_sm1")
    rnd = Signal(unsigned(MAX_SHIFT), name=f"{prefix}_s2_rnd")        # 2**(s-1), s - 1 <= 61
    # |acc * mant| < 2**(len(acc) + mw - 1) and the rounding term <= 2**(MAX_SHIFT - 1): their sum fits
    sum_bits = max(len(acc) + mw, MAX_SHIFT) + 1
    prod = Signal(signed(sum_bits), name=f"{prefix}_s2_prod")
    s_2 = Signal(range(MAX_SHIFT + 1), name=f"{prefix}_s2_s")
    shifted = Signal(signed(sum_bits), name=f"{prefix}_s3_shifted")
    out = Signal(OUT, name=f"{prefix}_s4_out")
    carried = not isinstance(bits, int)          # a per-beat OutBits field, or a fixed width
    if carried:
        bits_1 = Signal(OutBits, name=f"{prefix}_s1_bits")
        bits_2 = Signal(OutBits, name=f"{prefix}_s2_bits")
        bits_3 = Signal(OutBits, name=f"{prefix}_s3_bits")
        sat = Mux(bits_3 == OutBits.B8, saturate(shifted, 8),
                  Mux(bits_3 == OutBits.B16, saturate(shifted, 16), saturate(shifted, 32)))
    else:
        sat = saturate(shifted, bits)
    m.d.comb += rnd.eq(1 << sm1_1)
    with m.If(en):
        # Amaranth multiplies signed by unsigned exactly (no overflow inside an expression).
        m.d.sync += [*(p.eq(acc * mant[lo:hi]) for p, (lo, hi) in zip(pp, pieces)),
                     sm1_1.eq(clamp_shift_minus_one(shift)),
                     prod.eq(sum(p << lo for p, (lo, _) in zip(pp, pieces)) + rnd),
                     s_2.eq(sm1_1 + 1),
                     shifted.eq(prod >> s_2),
                     out.eq(sat)]
        if carried:
            m.d.sync += [bits_1.eq(bits), bits_2.eq(bits_1), bits_3.eq(bits_2)]
    return out


REQUANT_STAGES = 4
PP_BITS = 8        # mantissa bits per partial product: 32 x 8 multipliers fit a 2 ns cycle in Nangate 45


def lockstep(m, i, o, latency):
    """The shared control of a pipeline whose ``latency`` stages advance as one: returns ``en``.

    ``en = i.ready = ~o.valid | o.ready`` (the pipeline moves when its output register is empty
    or being taken); a valid bit per stage (``s1_valid`` .. ``s<latency>_valid``) follows the beat,
    the last one is ``o.valid``.
    """
    en = Signal(name="en")
    valid = [Signal(name=f"s{n + 1}_valid") for n in range(latency)]
    m.d.comb += [en.eq(~o.valid | o.ready), i.ready.eq(en), o.valid.eq(valid[-1])]
    with m.If(en):
        m.d.sync += valid[0].eq(i.valid)
        m.d.sync += [valid[n].eq(valid[n - 1]) for n in range(1, latency)]
    return en
