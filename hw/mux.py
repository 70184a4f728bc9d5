"""Selection by index as a chain of multiplexers, shared by the blocks that need it."""

from amaranth.hdl import Mux


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
