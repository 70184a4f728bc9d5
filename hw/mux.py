"""Selection by index as a chain of multiplexers, shared by the blocks that need it."""

from amaranth.hdl import Mux, Signal


def pick(values, index):
    """``values[index]`` as a chain of muxes (continuous assignments in Verilog; ``index`` beyond
    the list gives ``values[0]``).

    ``Array`` indexing becomes an ``always @*`` block that Icarus does not evaluate at time 0 when
    its inputs never change, which leaves X on a valid signal.
    """
    out = values[0]
    for i in range(1, len(values)):
        out = Mux(index == i, values[i], out)
    return out


def select(m, name, values, index):
    """:func:`pick` as a signal ``name`` of module ``m`` (combinational, driven where the call is).

    A value used by several statements (its slices, one per element) is emitted once per
    statement by Amaranth's lowering: a wide pick used that way is a named signal instead, one
    mux chain in the netlist whatever the number of readers.
    """
    out = Signal(len(values[0]), name=name)
    m.d.comb += out.eq(pick(values, index))
    return out
