"""INT8 x INT8 MAC array: the fixed-precision baseline of the bit-sliced PE array.

Micro-architecture
------------------
The same generator as :class:`elmoe3d.hw.pe_array.PEArray` (command, activation and result
streams, control FSM, column masking, one :class:`elmoe3d.hw.pe.PE` per row and lane with an
adder tree and accumulator), with two differences only:

- the weight port ``i_weight`` carries a ``rows x cols`` tile of INT8 weights per beat
  (one byte per weight, where the bit-sliced array reads a nibble per plane);
- the PEs multiply by the full 8-bit weight (``operand_bits = 8``) with no nesting shift.

One beat is one cycle: the INT8 result ``int8_gemv(q, a)`` at the DRAFT rate, so the
area, power and throughput of the bit slicing are measured against it, not claimed.
"""

from amaranth.lib import stream
from amaranth.lib.wiring import In

from .layouts import WEIGHT_BITS, int8_tile_layout
from .pe_array import ARRAY_PARAMS, GemvArrayBase
from .tops import Top


class MacArray(GemvArrayBase):
    """INT8 x INT8 GEMV array of the same shape and streams as the bit-sliced array.

    Parameters
    ----------
    rows, cols, lanes, acc_bits, max_k, pipeline
        As for :class:`elmoe3d.hw.pe_array.PEArray`.

    Members
    -------
    i_cmd : In(stream.Signature(StructLayout{k}))
    i_act : In(stream.Signature(ArrayLayout(ArrayLayout(signed(8), cols), lanes)))
    i_weight : In(stream.Signature(ArrayLayout(ArrayLayout(signed(8), cols), rows)))
    o_result : Out(stream.Signature(ArrayLayout(ArrayLayout(signed(acc_bits), rows), lanes)))

    Raises
    ------
    UserError
        As :class:`~elmoe3d.hw.pe_array.PEArray`.
    """

    OPERAND_BITS = WEIGHT_BITS
    _command_has_mode = False

    def _weight_members(self):
        return {"i_weight": In(stream.Signature(int8_tile_layout(self.rows, self.cols)))}

    def _weights(self, m, running, act_valid, mode, restart, may_end):
        w = self.i_weight
        fire = running & act_valid & w.valid & may_end
        m.d.comb += w.ready.eq(fire)
        operands = [w.payload[r] for r in range(self.rows)]
        return fire, fire, operands, None


def _baseline_macs(*, rows, cols, lanes, **_):
    return {"int8": rows * cols * lanes}


GENERATE_TOPS = [
    Top(name="mac_array_baseline", help="INT8 x INT8 MAC array of the same shape (the baseline)",
        build=lambda **p: MacArray(**p), params=ARRAY_PARAMS, macs_per_cycle=_baseline_macs),
]
