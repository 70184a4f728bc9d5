"""Stream FIFO: ``depth`` beats of any shape between two ``lib.stream`` ports, plus its fill level.

Ports:

- ``i``: In(stream of ``shape``), ``o``: Out(stream of ``shape``) (the payload as it is: a
  struct layout keeps its fields at the same bits);
- ``level``: Out(range(depth + 1)), the beats inside (taken on ``i``, not yet given on ``o``),
  registered: it changes the cycle after a transfer.

Structure by depth:

- ``depth == 1``: one register (``SyncFIFOBuffered`` at depth 1): ``i.ready = ~o.valid``, so a
  beat per two cycles at most. Latency 1.
- ``depth == 2``: a *skid buffer*: an output register and one spare register. Full throughput,
  registered output (``o.valid`` and payload come from flip-flops), and ``i.ready`` is a
  register (``~spare_valid``), not combinationally dependent on ``o.ready``: it cuts both the
  forward and the backward timing paths of a stream. Latency 1.
- ``depth >= 3``: ``amaranth.lib.fifo.SyncFIFOBuffered`` (its ``w_stream``/``r_stream``): a
  ``lib.memory`` of ``depth - 1`` beats and an output register. Full throughput, registered
  output, ``i.ready`` registered (the FIFO is not full). Latency 2 (a beat into an empty FIFO
  is on ``o`` two cycles after its transfer). ``SyncFIFOBuffered`` at depth 2 takes only one beat
  every other cycle while streaming, hence the skid buffer above.

``i.ready`` is low exactly when ``level == depth`` (the bench checks it every cycle).
Reset (synchronous ``rst``) empties the FIFO.
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from ..errors import check_int
from .protocols import payload_width
from .tops import Param, Top

MAX_DEPTH = 1 << 16


class StreamFifo(wiring.Component):
    """A stream FIFO of ``depth`` beats (see the module docstring for each depth's structure).

    Parameters
    ----------
    shape : shape-castable     the payload (an int width, a ``Shape`` or a layout)
    depth : int                beats, 1..65536

    Members
    -------
    i : In(stream.Signature(shape))
    o : Out(stream.Signature(shape))
    level : Out(range(depth + 1))
    width : int                payload bits
    latency : int              cycles from an input transfer into an empty FIFO to ``o.valid``

    Raises
    ------
    UserError
        on a depth out of range or a shape that is not shape-castable.
    """

    INTERFACE_NOTES = (
        "Depth {depth}, payload {width} bits; `level` (registered) counts the beats inside.",
        "Stream rules on both sides; `o` is registered (valid and payload from flip-flops); "
        "`i.ready` is registered (never a combinational function of `o.ready`).",
        "Throughput: one beat per cycle at depth >= 2, one per two cycles at depth 1. Latency "
        "{latency} cycle(s) from an input transfer into an empty FIFO to `o.valid`.",
    )

    def __init__(self, shape, depth):
        self.width = payload_width(shape)
        check_int("depth", depth, 1, MAX_DEPTH)
        self.shape, self.depth = shape, depth
        self.latency = 2 if depth >= 3 else 1
        super().__init__({"i": In(stream.Signature(shape)), "o": Out(stream.Signature(shape)),
                          "level": Out(range(depth + 1))})

    def elaborate(self, platform):
        m = Module()
        i, o = self.i, self.o
        if self.depth == 2:
            spare = Signal(self.width, name="skid_spare")
            spare_valid = Signal(name="skid_spare_valid")
            m.d.comb += [i.ready.eq(~spare_valid), self.level.eq(o.valid + spare_valid)]
            take = i.valid & i.ready
            give = o.valid & o.ready
            with m.If(give | ~o.valid):
                # the output register is free this cycle: the spare (older) goes first
                with m.If(spare_valid):
                    m.d.sync += [o.payload.eq(spare), o.valid.eq(1), spare_valid.eq(0)]
                    with m.If(take):
                        m.d.sync += [spare.eq(i.payload), spare_valid.eq(1)]
                with m.Else():
                    m.d.sync += [o.payload.eq(i.payload), o.valid.eq(take)]
            with m.Elif(take):
                m.d.sync += [spare.eq(i.payload), spare_valid.eq(1)]
            return m

        fifo = m.submodules.fifo = SyncFIFOBuffered(width=self.width, depth=self.depth)
        w, r = fifo.w_stream, fifo.r_stream
        m.d.comb += [w.payload.eq(i.payload), w.valid.eq(i.valid), i.ready.eq(w.ready),
                     o.payload.eq(r.payload), o.valid.eq(r.valid), r.ready.eq(o.ready),
                     self.level.eq(fifo.level)]
        return m


GENERATE_TOPS = [
    Top(name="stream_fifo",
        help="stream FIFO (SyncFIFOBuffered; depth 2 a skid buffer) with its fill level",
        build=lambda width=32, depth=16: StreamFifo(width, depth),
        params=(
            Param("width", int, 32, "payload bits"),
            Param("depth", int, 16, "beats, 1..65536 (2: skid buffer)"),
        )),
]
