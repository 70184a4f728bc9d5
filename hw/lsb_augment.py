"""LSB augmentation unit: the bit-sliced PE's 5-bit operand from stored nibbles (SPEC section 2).

Micro-architecture
------------------
For every weight of a tile, from its MSB nibble ``h`` and LSB nibble ``l``:

- draft operand ``m = {h, 1'b1}`` (``2h + 1``): the nibble with a constant 1 appended as new
  LSB -- pure wiring;
- correction operand ``c = {~l[3], l[2:0]}`` read as signed (``l - 8``): wiring and one inverter
  (the sign extension to 5 bits repeats that inverted bit);
- the operand of a cycle is ``m`` in the MSB phase and ``c`` in the LSB phase: a 5-bit 2:1 select
  per weight, shared by all batch lanes of the array (the time multiplexing any bit-serial unit
  has; in DRAFT mode the phase is constant MSB and synthesis keeps only ``m``).

The *nesting* is :func:`nest`: the draft term enters the accumulator shifted left by
``DRAFT_SHIFT`` (3), the correction term unshifted, so ``acc = 8*sum(a*m) + sum(a*c) = sum(a*q)``.
It is a 3-position shift mux in front of the accumulator's one adder (applied once per row
after the adder tree, not per multiplier; see ``hw/pe.py``).

:class:`LsbAugment` is the per-tile combinational block; it is also a ``generate`` top so its area
can be reported on its own.
"""

from amaranth.hdl import Cat, Const, Module, Mux
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..errors import UserError
from ..sim.numerics.slices import DRAFT_SHIFT, SLICE_BITS
from .layouts import NIBBLE, OPERAND, Plane
from .tops import Param, Top

# The constant appended below the MSB nibble (SPEC: m = {h, 1'b1}). A module attribute so the
# formal tests can break it on purpose and show the proof fails.
AUGMENT_BIT = 1


def augment_msb(h):
    """``m = {h, AUGMENT_BIT}`` as a signed 5-bit value, from a 4-bit MSB nibble (wiring)."""
    return Cat(Const(AUGMENT_BIT, 1), h).as_signed()


def correction_lsb(l):
    """``c = {~l[3], l[2:0]}`` as a signed 4-bit value ``l - 8``, from a 4-bit LSB nibble."""
    return Cat(l[:SLICE_BITS - 1], ~l[SLICE_BITS - 1]).as_signed()


def nest(term, shift):
    """The shift of bit nesting: ``term << DRAFT_SHIFT`` for a draft (MSB) term, else ``term``."""
    return Mux(shift, term << DRAFT_SHIFT, term)


def check_positive(name, value):
    """Refuse a size that is not an integer >= 1 (``UserError`` naming the parameter)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{name} must be an integer, got {value!r}")
    if value < 1:
        raise UserError(f"{name} must be at least 1, got {value}")
    return value


class LsbAugment(wiring.Component):
    """Operands of one cycle for ``width`` weights, from their MSB and LSB nibbles.

    Parameters
    ----------
    width : int
        Weights handled in parallel (>= 1; default 16, as the generator).

    Members
    -------
    i_msb : In(ArrayLayout(unsigned(4), width))
        MSB nibbles ``h`` (two's complement, [-8, 7]).
    i_lsb : In(ArrayLayout(unsigned(4), width))
        LSB nibbles ``l`` ([0, 15]).
    i_plane : In(Plane)
        ``MSB``: output ``m = 2h + 1``; ``LSB``: output ``c = l - 8``.
    o_operand : Out(ArrayLayout(signed(5), width))
        The PE operands.
    o_shift : Out(1)
        High in the MSB phase: the accumulator takes the term shifted by ``DRAFT_SHIFT``.

    Raises
    ------
    UserError
        ``width`` is not an integer >= 1.
    """

    # Written into the generated interface documentation (hw/interface_doc.py).
    INTERFACE_NOTES = (
        "Per weight i: `o_operand[i]` is `m = {{h, 1'b1}}` = 2h + 1 from the MSB nibble `i_msb[i]` "
        "when `i_plane` is MSB (and `o_shift` is 1), `c = {{~l[3], l[2:0]}}` = l - 8 from the LSB "
        "nibble `i_lsb[i]` when it is LSB (`o_shift` 0). Every nibble value is legal.",
    )

    def __init__(self, *, width=16):
        self.width = check_positive("width", width)
        super().__init__({
            "i_msb": In(data.ArrayLayout(NIBBLE, self.width)),
            "i_lsb": In(data.ArrayLayout(NIBBLE, self.width)),
            "i_plane": In(Plane),
            "o_operand": Out(data.ArrayLayout(OPERAND, self.width)),
            "o_shift": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        msb_phase = self.i_plane == Plane.MSB
        for i in range(self.width):
            m.d.comb += self.o_operand[i].eq(Mux(msb_phase, augment_msb(self.i_msb[i]),
                                                  correction_lsb(self.i_lsb[i])))
        m.d.comb += self.o_shift.eq(msb_phase)
        return m


GENERATE_TOPS = [
    Top(name="lsb_augment", help="LSB augmentation unit: m = {h,1}, c = {~l[3],l[2:0]}, phase select",
        build=lambda *, width: LsbAugment(width=width),
        params=(Param("width", int, 16, "weights handled in parallel"),)),
]
