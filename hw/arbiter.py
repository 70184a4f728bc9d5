"""Round-robin stream arbiter: ``n`` input streams -> one output stream tagged with the source.

Ports:

- ``i[k]``: In(stream of ``shape``), ``k = 0 .. n-1``;
- ``o``: Out(stream of ``{data: shape, source: range(n)}``), ``data`` at the least significant
  bits, ``source`` (the input index, at least one bit) above it.

Behaviour: ``o`` is a register. In every cycle in which it can load (``~o.valid | o.ready``) the
arbiter grants the first input with ``valid`` set after the last granted one (cyclically:
``last+1, last+2, .. , last``; after reset ``last = n-1``, so input 0 has priority first), takes
that beat (its ``ready`` is 1 in that cycle, every other input's is 0) and loads it into ``o``.
One beat per cycle while ``o`` is taken every cycle. Once ``o.valid`` is up, ``data`` and
``source`` hold until the transfer (no switching while offered). An input that keeps ``valid``
up is granted at least once every ``n`` grants. No per-input lock: consecutive beats of one input
may be interleaved with other inputs' beats (a packet that must stay together needs its own
framing).

``i[k].ready`` depends combinationally on ``o.ready`` and the other inputs' ``valid`` (it is not
a register); put a :class:`~elmoe3d.hw.stream_fifo.StreamFifo` of depth 2 in front where that
path must be cut.
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..errors import check_int
from .protocols import payload_width
from .tops import Param, Top

MAX_INPUTS = 64


def output_layout(shape, n):
    """``{data: shape, source: range(n)}`` (``source`` at least one bit)."""
    return data.StructLayout({"data": shape, "source": range(max(n, 2))})


class StreamArbiter(wiring.Component):
    """Round-robin arbiter of ``n`` streams into one registered, source-tagged stream.

    Parameters
    ----------
    shape : shape-castable   payload of each input
    n : int                  inputs, 1..64

    Members
    -------
    i : In(stream.Signature(shape)).array(n)
    o : Out(stream.Signature(output_layout(shape, n)))

    Raises
    ------
    UserError
        on ``n`` out of range or a shape that is not shape-castable.
    """

    INTERFACE_NOTES = (
        "{n} inputs of {width} bits; `o.payload` = `{{data, source}}`, `data` at the low bits.",
        "Round robin: whenever `o` can load (`~o.valid | o.ready`), the first valid input after the "
        "last granted one (cyclically; input 0 first after reset) is taken (its `ready` is 1, the "
        "others' 0) and registered on `o`; `o` holds data and source until its transfer.",
        "One beat per cycle; an input that keeps `valid` is served at least once every {n} grants.",
    )

    def __init__(self, shape, n):
        self.width = payload_width(shape)
        check_int("n", n, 1, MAX_INPUTS)
        self.shape, self.n = shape, n
        super().__init__({"i": In(stream.Signature(shape)).array(n),
                          "o": Out(stream.Signature(output_layout(shape, n)))})

    def elaborate(self, platform):
        m = Module()
        n, o = self.n, self.o
        last = Signal(range(max(n, 2)), init=n - 1, name="rr_last")
        grant = Signal(range(max(n, 2)), name="rr_grant")
        any_valid = Signal(name="rr_any")
        load = Signal(name="rr_load")
        m.d.comb += [load.eq(~o.valid | o.ready),
                     any_valid.eq(_any(self.i[k].valid for k in range(n)))]
        # grant: for each value of `last`, a priority chain over last+1 .. last+n (mod n)
        with m.Switch(last):
            for prev in range(n):
                with m.Case(prev):
                    order = [(prev + step) % n for step in range(1, n + 1)]
                    # the first in `order` with valid wins: assign in reverse so it wins last
                    for k in reversed(order):
                        with m.If(self.i[k].valid):
                            m.d.comb += grant.eq(k)
        for k in range(n):
            m.d.comb += self.i[k].ready.eq(load & any_valid & (grant == k))
        with m.If(o.valid & o.ready):
            m.d.sync += o.valid.eq(0)
        with m.If(load & any_valid):
            m.d.sync += [o.valid.eq(1), o.payload.source.eq(grant), last.eq(grant)]
            with m.Switch(grant):
                for k in range(n):
                    with m.Case(k):
                        m.d.sync += o.payload.data.eq(self.i[k].payload)
        return m


def _any(values):
    values = list(values)
    out = values[0]
    for v in values[1:]:
        out = out | v
    return out


GENERATE_TOPS = [
    Top(name="stream_arbiter",
        help="round-robin arbiter of n streams into one source-tagged stream",
        build=lambda width=32, n=4: StreamArbiter(width, n),
        params=(
            Param("width", int, 32, "payload bits of each input"),
            Param("n", int, 4, "inputs, 1..64"),
        )),
]
