"""Width adapter: a line stream of ``in_width`` bits -> a line stream of ``out_width`` bits.

Ports (both :func:`elmoe3d.hw.protocols.line_stream`, payload ``{data, last}``, ``data`` at bits
``[0, width)``, ``last`` at bit ``width``):

- ``i``: In(line_stream(in_width)), ``o``: Out(line_stream(out_width)).

One width is a multiple of the other; ``ratio`` is the larger divided by the smaller.

- **Upsizing** (``out_width = ratio * in_width``): ``ratio`` input lines make one output line,
  the first at the least significant bits (input ``j`` of a group at ``data[j*in_width ..]``).
  The output's ``last`` is the group's final input's ``last``. An input with ``last`` set before
  the group is full *flushes* the partial group: the output line carries the inputs received so
  far and zero bits above them, with ``last`` set; the next input starts a new group.
  ``o`` is a register (valid and payload held until the transfer); ``i.ready = ~o.valid |
  o.ready``, so one input per cycle while the sink takes every output.
- **Downsizing** (``in_width = ratio * out_width``): one input line becomes ``ratio`` output
  lines, least significant part first; ``last`` only on the final piece of an input with
  ``last`` (the other pieces have ``last = 0``). The input line is held in a register and the
  pieces leave one per cycle; ``i.ready = ~held | (o.ready & final piece)``, so the next input is
  taken in the cycle the last piece leaves: one output per cycle without stalls.
- **Equal widths**: a register stage (upsizing by 1): ``o`` registered, ``i.ready = ~o.valid |
  o.ready``, one line per cycle, latency 1.

Reset (synchronous ``rst``) empties the adapter: no output is valid, a partial group is dropped.
Throughput: upsizing takes one input per cycle, downsizing emits one output per cycle, as long
as the sink is ready; the first output of an upsized group leaves the cycle after its final input.
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..errors import UserError, check_int
from .protocols import line_stream
from .tops import Param, Top

MAX_WIDTH = 1 << 16


class WidthAdapter(wiring.Component):
    """Packs narrow lines into wide ones or splits wide lines into narrow ones (see the module).

    Parameters
    ----------
    in_width, out_width : int   data bits of a line on each side, 1..65536, one a multiple
                                of the other

    Members
    -------
    i : In(line_stream(in_width))
    o : Out(line_stream(out_width))
    ratio : int                 the larger width divided by the smaller
    mode : str                  ``"up"``, ``"down"`` or ``"equal"``

    Raises
    ------
    UserError
        on a width out of range or widths of which neither divides the other.
    """

    INTERFACE_NOTES = (
        "Mode {mode}, ratio {ratio}: `i` carries {in_width}-bit lines, `o` {out_width}-bit lines.",
        "Upsizing: {ratio} inputs make one output, the first at the least significant bits; the "
        "output's `last` is the final input's. An input with `last` before the group is full "
        "flushes the partial group, zero bits above the inputs received. `i.ready = ~o.valid | "
        "o.ready` (one input per cycle while the sink takes every output).",
        "Downsizing: one input becomes {ratio} outputs, least significant part first, `last` only on "
        "the final piece of an input with `last`; the next input is taken as the final piece leaves "
        "(one output per cycle).",
        "Equal widths: a register stage (one line per cycle, latency 1). Reset drops a partial group.",
    )

    def __init__(self, in_width, out_width):
        check_int("in_width", in_width, 1, MAX_WIDTH)
        check_int("out_width", out_width, 1, MAX_WIDTH)
        if in_width % out_width and out_width % in_width:
            raise UserError(f"in_width and out_width must be multiples of one another, "
                            f"got {in_width} and {out_width}")
        self.in_width, self.out_width = in_width, out_width
        self.ratio = max(in_width, out_width) // min(in_width, out_width)
        self.mode = "equal" if in_width == out_width else ("up" if out_width > in_width else "down")
        super().__init__({"i": In(line_stream(in_width)), "o": Out(line_stream(out_width))})

    def elaborate(self, platform):
        m = Module()
        i, o = self.i, self.o
        if self.mode == "equal":             # groups of one input: a register stage
            m.d.comb += i.ready.eq(~o.valid | o.ready)
            with m.If(o.valid & o.ready):
                m.d.sync += o.valid.eq(0)
            with m.If(i.valid & i.ready):
                m.d.sync += [o.payload.data.eq(i.payload.data), o.payload.last.eq(i.payload.last), o.valid.eq(1)]
            return m

        if self.mode == "up":
            count = Signal(range(self.ratio), name="up_count")     # inputs already in `acc`
            acc = Signal(self.out_width, name="up_acc")            # zero above the received inputs
            packed = Signal(self.out_width, name="up_packed")      # acc with the current input
            m.d.comb += packed.eq(acc)
            m.d.comb += packed.word_select(count, self.in_width).eq(i.payload.data)
            m.d.comb += i.ready.eq(~o.valid | o.ready)
            with m.If(o.valid & o.ready):
                m.d.sync += o.valid.eq(0)
            with m.If(i.valid & i.ready):
                with m.If(i.payload.last | (count == self.ratio - 1)):
                    m.d.sync += [o.payload.data.eq(packed), o.payload.last.eq(i.payload.last),
                                 o.valid.eq(1), acc.eq(0), count.eq(0)]
                with m.Else():
                    m.d.sync += [acc.eq(packed), count.eq(count + 1)]
            return m

        # down
        index = Signal(range(self.ratio), name="down_index")       # next piece to send
        held = Signal(name="down_held")
        line = Signal(self.in_width, name="down_line")
        line_last = Signal(name="down_last")
        final = Signal(name="down_final")
        m.d.comb += [final.eq(index == self.ratio - 1),
                     o.valid.eq(held),
                     o.payload.data.eq(line.word_select(index, self.out_width)),
                     o.payload.last.eq(line_last & final),
                     i.ready.eq(~held | (o.ready & final))]
        with m.If(o.valid & o.ready):
            m.d.sync += index.eq(index + 1)
            with m.If(final):
                m.d.sync += [held.eq(0), index.eq(0)]
        with m.If(i.valid & i.ready):
            m.d.sync += [line.eq(i.payload.data), line_last.eq(i.payload.last), held.eq(1), index.eq(0)]
        return m


def golden_adapt(lines, in_width, out_width):
    """The adapter's output for input ``lines`` (a list of ``(data, last)``), as ``(data, last)``.

    The golden definition the bench checks the RTL against (see the module docstring).
    """
    out = []
    if in_width == out_width:
        return list(lines)
    if out_width > in_width:
        ratio = out_width // in_width
        acc, count = 0, 0
        for d, last in lines:
            acc |= d << (count * in_width)
            count += 1
            if last or count == ratio:
                out.append((acc, int(last)))
                acc, count = 0, 0
        return out
    ratio = in_width // out_width
    mask = (1 << out_width) - 1
    for d, last in lines:
        for j in range(ratio):
            out.append(((d >> (j * out_width)) & mask, int(bool(last) and j == ratio - 1)))
    return out


GENERATE_TOPS = [
    Top(name="width_adapter",
        help="line stream width adapter: packs narrow lines into wide ones or splits wide lines",
        build=lambda **p: WidthAdapter(p["in_width"], p["out_width"]),
        params=(
            Param("in_width", int, 32, "input data bits per line"),
            Param("out_width", int, 128, "output data bits per line (a multiple or divisor of in_width)"),
        )),
]
