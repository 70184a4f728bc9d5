"""Off-chip memory interface: read ports and a write port -> one in-order burst bus to the memory.

Client side (ports as :mod:`elmoe3d.hw.protocols` defines them, seen from the client):

- ``rd[p]``: In(ReadPort(addr_bits, len_bits, width)), ``p = 0 .. read_ports-1``: a request
  ``(base, length)`` in lines on ``rd[p].req``, answered with exactly ``length`` lines on
  ``rd[p].data`` (``{data, last}``), in order, ``last`` on the final one. Requests of one port are
  answered in order; ports are independent.
- ``wr``: In(WritePort(addr_bits, len_bits, width)): a request on ``wr.req``, then its ``length``
  lines on ``wr.data`` (``last`` ignored); one ``wr.done`` beat per request, in request order,
  after the request's last line has been transferred onto the bus (payload 0), or as soon as
  the request reaches the head of the done queue for an illegal request (payload 1).

Bus side (to the memory):

- ``o_bus_cmd``: Out(stream ``{write: 1, base: addr_bits, length: burst_bits}``) burst commands,
  ``1 <= length <= burst``;
- ``o_bus_wdata``: Out(stream ``{data: width}``): the lines of the write commands, in command
  order, ``length`` per write command, never ahead of their command;
- ``i_bus_rdata``: In(stream ``{data: width}``): the memory answers each read command with
  exactly ``length`` lines, in command order, and applies commands in order (a read issued after
  a write command sees its data);
- ``o_status``: ``{error, errors, reads, writes}``: sticky ``error`` (cleared only by reset),
  ``errors`` illegal requests, ``reads`` lines received from the bus, ``writes`` lines sent on
  it (``counter_bits``-bit counters, wrapping).

Behaviour:

- Each port has a *splitter* that takes one request at a time (``req.ready`` is high when the
  previous request's bursts have all been granted) and offers bursts of at most ``burst``
  lines, one per grant, to a :class:`~elmoe3d.hw.arbiter.StreamArbiter` with ``read_ports + 1``
  inputs (read ports ``0 ..``, the write port last), which picks round-robin among the offered
  bursts; its output is ``o_bus_cmd``.
- Credits: each read port has a :class:`~elmoe3d.hw.stream_fifo.StreamFifo` of ``depth`` lines
  on its ``data`` side. A read burst is offered only when ``reserved + length <= depth``, where
  ``reserved`` counts the lines granted to the port and not yet taken by its client; so every
  line the memory returns has room, ``i_bus_rdata`` is never back-pressured for lack of space,
  and two ports consumed alternately (one line from each in turn) never deadlock.
- Read data routing: each read command's ``(port, length, final)`` goes into a tag queue (a
  ``StreamFifo``) as it leaves on ``o_bus_cmd``; returned lines go to the head tag's port, with
  ``last`` on the final line of a request's final burst. ``i_bus_rdata.ready`` is the head tag's
  presence: it is low only while the tag of the answered command is still in the tag queue's
  2-cycle pipeline (a memory answering within 2 cycles of the command) or no read is owed.
- Write data: ``wr.data`` passes to ``o_bus_wdata`` only for lines of write commands already
  sent on ``o_bus_cmd`` (a counter of owed lines).
- Out of range: a request with ``length == 0`` or ``base + length > lines`` is consumed in one
  cycle, produces no burst and no data, sets the sticky ``o_status.error`` and counts in
  ``o_status.errors``; a refused write request's ``done`` has payload 1 and its lines must not
  be sent. The core checks addresses before issuing.

Timing (no stalls, measured by the bench): a read request accepted in cycle 0 has its first
burst command on ``o_bus_cmd`` in cycle 2; a memory of latency ``L`` (first line on the bus ``L``
cycles after the command transfer) gives the first line on ``rd[p].data`` ``L + 4`` cycles after
the request and, with ``depth`` the derived default, one line per cycle after it: ``length``
lines take ``L + length + READ_OVERHEAD`` cycles from the request transfer to the last line's
transfer (``READ_OVERHEAD`` below).
"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import OffchipConfig
from ..errors import UserError, check_int
from ..spec.timing import CREDIT_LOOP, READ_OVERHEAD  # noqa: F401  (documented there)
from .arbiter import StreamArbiter
from .protocols import ReadPort, WritePort, line_layout
from .stream_fifo import StreamFifo
from .tops import Param, Top

DONE_QUEUE = 4           # write requests whose done is pending


def derived_depth(latency, burst):
    """The per-port read FIFO (lines) at ``depth=0``: the next power of two >= latency + 2*burst +
    CREDIT_LOOP, so one port streams at one line per cycle."""
    need = latency + 2 * burst + CREDIT_LOOP
    return 1 << (need - 1).bit_length()


def cmd_layout(addr_bits, burst_bits):
    return data.StructLayout({"write": 1, "base": addr_bits, "length": burst_bits})


def wdata_layout(width):
    return data.StructLayout({"data": width})


def status_layout(counter_bits):
    return data.StructLayout({"error": 1, "errors": counter_bits, "reads": counter_bits,
                              "writes": counter_bits})


def _split_layout(addr_bits, burst_bits):
    """What a splitter offers the arbiter: a burst and whether it is its request's final one."""
    return data.StructLayout({"base": addr_bits, "length": burst_bits, "final": 1})


class OffchipInterface(wiring.Component):
    """Read ports and a write port over one burst bus, round-robin, credit-based read buffering.

    Parameters
    ----------
    width, lines, len_bits, latency
        as :class:`elmoe3d.config.OffchipConfig` (``latency``: the memory's, which sizes the
        derived FIFO depth)
    read_ports : int     1..8
    burst : int          lines per bus command at most, a power of two 1..256
    depth : int          per-port read FIFO lines; 0 derives it (:func:`derived_depth`);
                         otherwise burst..65536 and at least 2
    counter_bits : int   status counter width, 8..64

    Members
    -------
    rd : In(ReadPort(addr_bits, len_bits, width)).array(read_ports)
    wr : In(WritePort(addr_bits, len_bits, width))
    o_bus_cmd : Out(stream of cmd_layout)
    o_bus_wdata : Out(stream of wdata_layout)
    i_bus_rdata : In(stream of wdata_layout)
    o_status : Out(status_layout)

    Raises
    ------
    UserError
        on a parameter out of range (the message names it and its value).
    """

    INTERFACE_NOTES = (
        "Requests `(base, length)` in {width}-bit lines; addresses {addr_bits} bits, lengths "
        "{len_bits} bits; {read_ports} read port(s) `rd[p]` and one write port `wr`.",
        "Bus: `o_bus_cmd` `{{write, base, length}}` bursts of 1..{burst} lines, round-robin over the "
        "read ports and the write port (write last); the memory answers each read command with "
        "exactly `length` lines on `i_bus_rdata`, in command order, and applies commands in order. "
        "`o_bus_wdata` carries each write command's `length` lines after the command.",
        "Credits: a read burst is issued only when its port's FIFO ({depth} lines) has room for it, "
        "so read data is never back-pressured for space; `i_bus_rdata.ready` is low only while the "
        "answered command's tag is in the 2-cycle tag queue (or no read is owed).",
        "Write `done`: one beat per request, in order, after its last line left on `o_bus_wdata` "
        "(payload 0); payload 1 for a refused request (whose lines must not be sent).",
        "Out of range: `length == 0` or `base + length > lines` ({lines}): consumed, no burst, no "
        "data, sticky `o_status.error`, counted in `o_status.errors`.",
        "Timing (no stalls): a read of L lines from a memory of latency {latency} takes "
        "latency + L + {read_overhead} cycles from the request transfer to the last line's transfer.",
    )

    def __init__(self, *, width=128, lines=1 << 24, len_bits=24, latency=100, read_ports=2, burst=16,
                 depth=0, counter_bits=32):
        self.config = OffchipConfig(width=width, latency=latency, lines=lines, len_bits=len_bits)
        check_int("read_ports", read_ports, 1, 8)
        check_int("burst", burst, 1, 256)
        if burst & (burst - 1):
            raise UserError(f"burst must be a power of two, got {burst}")
        check_int("depth", depth, 0, 1 << 16)
        if depth and depth < max(2, burst):
            raise UserError(f"depth must be 0 (derived) or at least max(2, burst) = {max(2, burst)}, got {depth}")
        check_int("counter_bits", counter_bits, 8, 64)
        self.width, self.lines, self.len_bits, self.latency = width, lines, len_bits, latency
        self.addr_bits = self.config.addr_bits
        self.read_ports, self.burst, self.counter_bits = read_ports, burst, counter_bits
        self.burst_bits = burst.bit_length()
        self.depth = depth or derived_depth(latency, burst)
        self.read_overhead = READ_OVERHEAD
        self.cmd_layout = cmd_layout(self.addr_bits, self.burst_bits)
        super().__init__({
            "rd": In(ReadPort(self.addr_bits, len_bits, width)).array(read_ports),
            "wr": In(WritePort(self.addr_bits, len_bits, width)),
            "o_bus_cmd": Out(stream.Signature(self.cmd_layout)),
            "o_bus_wdata": Out(stream.Signature(wdata_layout(width))),
            "i_bus_rdata": In(stream.Signature(wdata_layout(width))),
            "o_status": Out(status_layout(counter_bits)),
        })

    def _splitter(self, m, name, req, offer, legal, refused):
        """Request -> bursts on ``offer`` (a stream of _split_layout). ``legal``/``refused`` are
        comb signals set to pulse when a request is taken legal / illegal."""
        active = Signal(name=f"{name}_active")
        base = Signal(self.addr_bits, name=f"{name}_base")
        left = Signal(self.len_bits, name=f"{name}_left")
        p = req.payload
        ok = Signal(name=f"{name}_ok")
        m.d.comb += [ok.eq((p.length != 0) & (p.base + p.length <= self.lines)),
                     req.ready.eq(~active)]
        final = Signal(name=f"{name}_final")
        m.d.comb += [final.eq(left <= self.burst),
                     offer.payload.base.eq(base),
                     offer.payload.length.eq(left),
                     offer.payload.final.eq(final)]
        with m.If(~final):
            m.d.comb += offer.payload.length.eq(self.burst)
        with m.If(req.valid & req.ready):
            m.d.comb += [legal.eq(ok), refused.eq(~ok)]
            with m.If(ok):
                m.d.sync += [active.eq(1), base.eq(p.base), left.eq(p.length)]
        with m.If(offer.valid & offer.ready):
            m.d.sync += [base.eq(base + offer.payload.length), left.eq(left - offer.payload.length)]
            with m.If(final):
                m.d.sync += active.eq(0)
        return active

    def elaborate(self, platform):
        m = Module()
        P, B, D = self.read_ports, self.burst, self.depth
        cb = self.counter_bits
        split = _split_layout(self.addr_bits, self.burst_bits)
        arb = m.submodules.arbiter = StreamArbiter(split, P + 1)
        st = self.o_status
        error, errors, reads, writes = (Signal(w, name=n) for w, n in ((1, "error"), (cb, "errors"), (cb, "reads"), (cb, "writes")))
        m.d.comb += [st.error.eq(error), st.errors.eq(errors), st.reads.eq(reads), st.writes.eq(writes)]
        refusals = []

        # --- read ports: splitter, credits, FIFO -----------------------------------------------
        fifos = []
        for p in range(P):
            rd = self.rd[p]
            offer = stream.Signature(split).create(path=(f"rd{p}_offer",))
            legal, refused = Signal(name=f"rd{p}_legal"), Signal(name=f"rd{p}_refused")
            active = self._splitter(m, f"rd{p}", rd.req, offer, legal, refused)
            refusals.append(refused)
            reserved = Signal(range(D + 1), name=f"rd{p}_reserved")
            room = Signal(name=f"rd{p}_room")
            m.d.comb += room.eq(reserved + offer.payload.length <= D)
            m.d.comb += [offer.valid.eq(active & room)]
            wiring.connect(m, producer=offer, consumer=arb.i[p])
            fifo = m.submodules[f"rd{p}_fifo"] = StreamFifo(line_layout(self.width), D)
            fifos.append(fifo)
            wiring.connect(m, producer=fifo.o, consumer=wiring.flipped(rd.data))
            granted = Signal(self.burst_bits, name=f"rd{p}_granted")
            m.d.comb += granted.eq(Mux(offer.valid & offer.ready, offer.payload.length, 0))
            m.d.sync += reserved.eq(reserved + granted - (rd.data.valid & rd.data.ready))

        # --- write port: splitter, done queue ----------------------------------------------------
        wr = self.wr
        woffer = stream.Signature(split).create(path=("wr_offer",))
        wlegal, wrefused = Signal(name="wr_legal"), Signal(name="wr_refused")
        done_layout = data.StructLayout({"length": self.len_bits, "refused": 1})
        doneq = m.submodules.done_queue = StreamFifo(done_layout, DONE_QUEUE)
        # a write request is taken only when its done entry has room
        wreq = stream.Signature(wr.req.payload.shape()).create(path=("wr_req",))
        m.d.comb += [wreq.payload.eq(wr.req.payload), wreq.valid.eq(wr.req.valid & doneq.i.ready),
                     wr.req.ready.eq(wreq.ready & doneq.i.ready)]
        wactive = self._splitter(m, "wr", wreq, woffer, wlegal, wrefused)
        refusals.append(wrefused)
        m.d.comb += [doneq.i.valid.eq(wreq.valid & wreq.ready),
                     doneq.i.payload.length.eq(Mux(wlegal, wr.req.payload.length, 0)),
                     doneq.i.payload.refused.eq(wrefused),
                     woffer.valid.eq(wactive)]
        wiring.connect(m, producer=woffer, consumer=arb.i[P])

        # --- command stage: arbiter output -> bus, read tags -------------------------------------
        tag_layout = data.StructLayout({"port": range(max(P, 2)), "length": self.burst_bits, "final": 1})
        tags = m.submodules.tags = StreamFifo(tag_layout, max(4, 1 << (P * D - 1).bit_length()))
        a = arb.o.payload
        is_write = Signal()
        m.d.comb += is_write.eq(a.source == P)
        cmd = self.o_bus_cmd
        m.d.comb += [cmd.payload.write.eq(is_write), cmd.payload.base.eq(a.data.base),
                     cmd.payload.length.eq(a.data.length),
                     cmd.valid.eq(arb.o.valid & (is_write | tags.i.ready)),
                     arb.o.ready.eq(cmd.ready & (is_write | tags.i.ready)),
                     tags.i.valid.eq(cmd.valid & cmd.ready & ~is_write),
                     tags.i.payload.port.eq(a.source), tags.i.payload.length.eq(a.data.length),
                     tags.i.payload.final.eq(a.data.final)]

        # --- write data: only lines of commands already sent -------------------------------------
        owed = Signal(self.len_bits + 3, name="wr_owed")   # <= the done queue's lengths
        wd = self.o_bus_wdata
        m.d.comb += [wd.payload.data.eq(wr.data.payload.data), wd.valid.eq(wr.data.valid & (owed != 0)),
                     wr.data.ready.eq(wd.ready & (owed != 0))]
        sent_cmd = Signal(self.burst_bits)
        m.d.comb += sent_cmd.eq(Mux(cmd.valid & cmd.ready & is_write, cmd.payload.length, 0))
        m.d.sync += owed.eq(owed + sent_cmd - (wd.valid & wd.ready))

        # done: lines sent and not yet acknowledged; the head's done once they cover its length
        unacked = Signal(self.len_bits + 3, name="wr_unacked")
        head = doneq.o.payload
        m.d.comb += [wr.done.valid.eq(doneq.o.valid & (unacked >= head.length)),
                     wr.done.payload.eq(head.refused),
                     doneq.o.ready.eq(wr.done.ready & (unacked >= head.length))]
        m.d.sync += unacked.eq(unacked + (wd.valid & wd.ready) -
                               Mux(wr.done.valid & wr.done.ready, head.length, 0))

        # --- read data: route by the head tag ----------------------------------------------------
        rdat = self.i_bus_rdata
        t = tags.o.payload
        beat = Signal(self.burst_bits, name="rd_beat")
        space = Signal()
        m.d.comb += space.eq(Mux(t.port == 0, fifos[0].i.ready, 0))
        for p in range(1, P):
            with m.If(t.port == p):
                m.d.comb += space.eq(fifos[p].i.ready)
        m.d.comb += rdat.ready.eq(tags.o.valid & space)
        take = rdat.valid & rdat.ready
        end = Signal()
        m.d.comb += end.eq(beat == t.length - 1)
        for p in range(P):
            f = fifos[p].i
            m.d.comb += [f.payload.data.eq(rdat.payload.data), f.payload.last.eq(t.final & end),
                         f.valid.eq(rdat.valid & tags.o.valid & (t.port == p))]
        m.d.comb += tags.o.ready.eq(take & end)
        with m.If(take):
            m.d.sync += beat.eq(Mux(end, 0, beat + 1))

        # --- status ------------------------------------------------------------------------------
        any_refused = Signal()
        m.d.comb += any_refused.eq(_sum(refusals) != 0)
        m.d.sync += [errors.eq(errors + _sum(refusals)), reads.eq(reads + take),
                     writes.eq(writes + (wd.valid & wd.ready))]
        with m.If(any_refused):
            m.d.sync += error.eq(1)
        return m


def _sum(values):
    values = list(values)
    out = values[0]
    for v in values[1:]:
        out = out + v
    return out


GENERATE_TOPS = [
    Top(name="offchip",
        help="off-chip memory interface: read ports and a write port over one burst bus, credit-based",
        build=lambda **p: OffchipInterface(**p),
        params=(
            Param("width", int, 128, "bits per line"),
            Param("lines", int, 1 << 24, "address space in lines (power of two)"),
            Param("len_bits", int, 24, "request length field width"),
            Param("latency", int, 100, "memory latency in cycles the read FIFOs are sized for"),
            Param("read_ports", int, 2, "read ports, 1..8"),
            Param("burst", int, 16, "lines per bus command at most (power of two, 1..256)"),
            Param("depth", int, 0, "per-port read FIFO lines (0: derived from latency and burst)"),
            Param("counter_bits", int, 32, "status counter width"),
        )),
]
