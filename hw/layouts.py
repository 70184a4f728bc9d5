"""Payload layouts and enums shared by the PE, the PE array, the INT8 baseline and their benches.

Every stream payload of the compute blocks is defined here, once. The cocotb benches pack and
unpack beats through these same layouts (``layout.const(...)`` / ``data.Const(layout, bits)``),
never through hand-written bit offsets. Array elements are little-endian: element 0 sits at the
least significant bits (Amaranth's convention), which makes a beat of 4-bit plane nibbles
bit-for-bit the little-endian integer of the bytes :func:`elmoe3d.sim.numerics.slices.pack_plane` writes
(element ``2i`` in the low nibble of byte ``i``).

Widths come from the golden model's constants (``sim/numerics/slices.py``, ``sim/numerics/quant.py``), never repeated.
"""

from amaranth.hdl import signed, unsigned
from amaranth.lib import data, enum

from ..sim.numerics.slices import OPERAND_BITS, SLICE_BITS

ACT_BITS = 8                  # INT8 activations (symmetric, [-127, 127])
WEIGHT_BITS = 2 * SLICE_BITS  # INT8 weights of the baseline
NIBBLE = unsigned(SLICE_BITS)  # one stored slice of a plane
OPERAND = signed(OPERAND_BITS)  # the bit-sliced PE's weight operand (m or c)
ACT = signed(ACT_BITS)


class Mode(enum.Enum, shape=1):
    """What a GEMV command computes on the bit-sliced array.

    ``DRAFT``: MSB planes only, result ``draft_gemv(h, a) = 8 * sum a*m``.
    ``FULL``: MSB and LSB planes, result ``full_gemv(q, a) = sum a*q`` (draft + correction).
    """
    DRAFT = 0
    FULL = 1


class Plane(enum.Enum, shape=1):
    """Which slice the operand of a cycle is formed from (the PE array's phase)."""
    MSB = 0
    LSB = 1


class ArrayOf(data.ArrayLayout):
    """An ``ArrayLayout`` whose index has a name (``lane``, ``row``, ``col``, ``channel``).

    Equal to the plain ``ArrayLayout`` of the same element and length (layouts compare by
    structure); the name only labels the index in the generated interface documentation
    (``hw/interface_doc.py``), so a reader of the Verilog sees ``payload[lane][col]``.
    """

    def __init__(self, elem_shape, length, *, index):
        super().__init__(elem_shape, length)
        self.index = str(index)

    def __repr__(self):
        return f"ArrayOf({self.elem_shape!r}, {self.length}, index={self.index!r})"


def k_shape(max_k):
    """Unsigned shape of a command's K field: holds 0 .. ``max_k``."""
    return unsigned(max(1, int(max_k).bit_length()))


def command_layout(max_k, *, with_mode=True):
    """A GEMV command: ``k`` (inputs, 0 .. ``max_k``) and, on the bit-sliced array, ``mode``."""
    fields = {"k": k_shape(max_k)}
    if with_mode:
        fields["mode"] = Mode
    return data.StructLayout(fields)


def act_layout(cols, lanes):
    """One activation beat: ``lanes`` tokens x ``cols`` consecutive inputs (``[lane][col]``)."""
    return ArrayOf(ArrayOf(ACT, cols, index="col"), lanes, index="lane")


def plane_layout(rows, cols):
    """One beat of a nibble plane: a ``rows x cols`` tile of 4-bit slices (``[row][col]``).

    Row-major like the plane in memory: bits ``4*(row*cols + col)`` upwards.
    """
    return ArrayOf(ArrayOf(NIBBLE, cols, index="col"), rows, index="row")


def int8_tile_layout(rows, cols):
    """One beat of INT8 weights for the baseline: a ``rows x cols`` tile (``[row][col]``)."""
    return ArrayOf(ArrayOf(signed(WEIGHT_BITS), cols, index="col"), rows, index="row")


def result_layout(rows, lanes, acc_bits):
    """One result beat: ``lanes`` tokens x ``rows`` output channels of signed accumulators."""
    return ArrayOf(ArrayOf(signed(acc_bits), rows, index="row"), lanes, index="lane")
