"""The multiplier loads: LOADM's table fetched ahead, into the bank the running expert does not use.

The multiplier table (``2 F + d`` entries ``{m u16, e u8}`` of the image's ``MULTIPLIER`` record,
four sub-banks of W/4 entries per word) has two banks. The unit runs one load at a time: a job
``{base, length, bank}`` (off-chip lines on its own read port ``rd``) streams the lines into the
bank, one line per cycle, and checks every exponent (``bad``: an exponent of 0, which LOADM
reports as ``INPUT``). ``tag`` says which lines the last load read and into which bank, ``loaded``
that it is complete, ``busy`` that it still runs; ``use`` (a pulse from LOADM) marks the load
taken, so the next one is started into the other bank.

The executor (``control.py``) starts a load ahead: after ``ROUTE`` for the first expert of its
mask, and after each ``LOADM`` for the next expert of the mask (a prefetch of the running
expert's successor while its GEMVs stream). ``LOADM`` compares its own lines with ``tag``: the
same (the common case) waits until the load completes, anything else starts its own load. So a
prediction that misses costs time, never a wrong table; ``INPUT`` is still reported at ``LOADM``.
The cycle model (``elmoe3d/spec/timing.py``, ``CoreTiming.loadm_*``) and the ISS follow it.
"""

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ...spec.image import MULT_BYTES, MULTIPLIER
from ..layouts import ArrayOf
from .gemv import off_port
from .ports import record_layout, request_register


def mult_words(dims):
    """Words of W entries in one bank of the multiplier table (gate F, up F, down d)."""
    return 2 * dims.f_words + dims.d_words


def load_layout(dims):
    """One load: ``length`` off-chip lines from ``base`` into ``bank``."""
    cfg = dims.config
    return data.StructLayout({"base": cfg.offchip.addr_bits + 2, "length": cfg.offchip.len_bits + 2, "bank": 1})


class MultWrite(wiring.Signature):
    """The multiplier table's write side (unit's view): sub-bank ``s`` writes ``data`` at word
    ``addr`` of bank ``bank`` when ``en[s]``."""

    def __init__(self, dims):
        self.dims = dims
        W = dims.W
        super().__init__({"en": Out(4), "bank": Out(1), "addr": Out(range(max(2, mult_words(dims)))),
                          "data": Out(ArrayOf(record_layout(MULTIPLIER), W // MULT_BYTES, index="entry"))})

    def __eq__(self, other):
        return type(other) is type(self) and self.dims is other.dims

    def __repr__(self):
        return "MultWrite(...)"


class MultLoads(wiring.Component):
    """See the module docstring. ``dims``: :class:`~.buffers.Dims`."""

    # Written into the generated interface documentation (hw/interface_doc.py).
    INTERFACE_NOTES = (
        "`job` (ready while no load runs): read `length` off-chip lines from `base` on `rd` into "
        "bank `bank` of the multiplier table (`wr`), one line per cycle, checking each exponent.",
        "`tag_*` name the last load; `loaded` is high once all of its lines are written and until "
        "`use`; `busy` while it runs; `bad` when one of its exponents was 0.",
    )

    def __init__(self, dims):
        self.dims = dims
        cfg = dims.config
        lay = load_layout(dims)
        super().__init__({
            "job": In(stream.Signature(lay)),
            "rd": Out(off_port(cfg)),
            "wr": Out(MultWrite(dims)),
            "busy": Out(1), "loaded": Out(1), "bad": Out(1), "use": In(1),
            "tag_base": Out(lay.members["base"]), "tag_len": Out(lay.members["length"]), "tag_bank": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        d = self.dims
        W = d.W
        busy, loaded, bad = Signal(name="busy"), Signal(name="loaded"), Signal(name="bad")
        n = Signal(range(max(2, 4 * mult_words(d) + 1)), name="lines")      # lines written
        v, base, length = request_register(m, self.rd.req, "ld")
        m.d.comb += [self.busy.eq(busy), self.loaded.eq(loaded), self.bad.eq(bad), self.job.ready.eq(~busy)]
        with m.If(self.use):
            m.d.sync += loaded.eq(0)
        with m.If(self.job.valid & ~busy):
            j = self.job.payload
            m.d.sync += [busy.eq(1), loaded.eq(0), bad.eq(0), n.eq(0), v.eq(1), base.eq(j.base), length.eq(j.length),
                         self.tag_base.eq(j.base), self.tag_len.eq(j.length), self.tag_bank.eq(j.bank)]
        line = data.View(ArrayOf(record_layout(MULTIPLIER), W // MULT_BYTES, index="entry"), self.rd.data.payload.data)
        m.d.comb += [self.rd.data.ready.eq(1), self.wr.bank.eq(self.tag_bank), self.wr.addr.eq(n >> 2),
                     self.wr.data.eq(line)]
        with m.If(self.rd.data.valid):
            m.d.comb += self.wr.en.eq(1 << n[:2])
            with m.If(Cat(*[line[i].e == 0 for i in range(W // MULT_BYTES)]).any()):
                m.d.sync += bad.eq(1)
            m.d.sync += n.eq(n + 1)
            with m.If(self.rd.data.payload.last):
                m.d.sync += [busy.eq(0), loaded.eq(1)]
        return m


class PortShare(wiring.Component):
    """Two clients (``a`` first, ``b``) on one off-chip read port (``port``): requests merged
    (``a`` wins a tie), each request's owner queued, and its lines (up to the one marked ``last``)
    handed to that owner. ``depth``: most requests in flight."""

    def __init__(self, cfg, depth):
        self.depth = depth
        sig = off_port(cfg)
        super().__init__({"a": In(sig), "b": In(sig), "port": Out(sig)})

    def elaborate(self, platform):
        m = Module()
        D = self.depth
        owner = Signal(D, name="owner")                  # one bit per queued request (1: b)
        head, tail = Signal(range(D), name="head"), Signal(range(D), name="tail")
        count = Signal(range(D + 1), name="count")
        a, b, p = self.a, self.b, self.port
        room = count < D
        pick_b = ~a.req.valid
        m.d.comb += [p.req.valid.eq((a.req.valid | b.req.valid) & room),
                     p.req.payload.eq(a.req.payload),
                     a.req.ready.eq(p.req.ready & room),
                     b.req.ready.eq(p.req.ready & room & pick_b)]
        with m.If(pick_b):
            m.d.comb += p.req.payload.eq(b.req.payload)
        push = p.req.valid & p.req.ready
        to_b = owner.bit_select(head, 1)
        queued = count != 0
        m.d.comb += [a.data.payload.eq(p.data.payload), b.data.payload.eq(p.data.payload),
                     a.data.valid.eq(p.data.valid & queued & ~to_b),
                     b.data.valid.eq(p.data.valid & queued & to_b),
                     p.data.ready.eq(queued & Mux(to_b, b.data.ready, a.data.ready))]
        pop = p.data.valid & p.data.ready & p.data.payload.last
        with m.If(push):
            m.d.sync += [owner.bit_select(tail, 1).eq(pick_b), tail.eq(_next(tail, D))]
        with m.If(pop):
            m.d.sync += head.eq(_next(head, D))
        m.d.sync += count.eq(count + push - pop)
        return m


def _next(ptr, depth):
    """``ptr + 1`` modulo ``depth``."""
    return Mux(ptr == depth - 1, 0, ptr + 1)
