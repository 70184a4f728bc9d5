"""HB write interface: write requests and lines -> per-channel burst commands and beats -> ``done``.

The write side of the HB interface (the read side is ``hw/hb_memory.py``), with the same address
map (``sim/golden/hb_memory.py``): a line is one ``width``-bit beat of every channel, channel ``c``'s
beat at bits ``[c*width, (c+1)*width)`` of the line, and line ``r`` is row ``r`` of every
channel. The client side is one :class:`~elmoe3d.hw.protocols.WritePort`:

- ``wr.req`` ``(base, length)``: write lines ``base .. base+length-1``;
- ``wr.data`` ``(data, last)``: then exactly ``length`` lines (``last`` is ignored: the
  request's length decides which line is the last);
- ``wr.done`` (1 bit): one transfer per request, in request order, once every channel has
  acknowledged every burst of the request, so a read issued after ``done`` sees the new data.
  The payload is 1 for a request refused as illegal, 0 otherwise.

A legal request is split into ``ceil(length / burst)`` bursts of at most ``burst`` lines
(:func:`elmoe3d.sim.golden.hb_memory.split_bursts`); every burst command ``(row, beats)`` goes to every
channel's ``o_wcmd``, in order. Each line taken on ``wr.data`` is split over the channels into
one small FIFO per channel (``fifo_depth`` beats), which feeds ``o_wdata[c]``; a line is taken
only when every channel's FIFO has room, so each channel may stall its command and data streams
independently without losing or duplicating a beat. Commands and data of one channel are not
aligned with each other: beat ``k`` on ``o_wdata[c]`` belongs to the burst whose command is the
one that covers the ``k``-th beat in command order. A channel acknowledges each burst on
``i_wack[c]`` (payload ignored), in command order, once all its beats are written.

An illegal request (``length == 0`` or ``base + length > lines``) is consumed in one cycle, takes
NO lines from ``wr.data``, sends no command, sets the sticky ``o_status.error`` (cleared only by
reset), counts in ``o_status.errors`` and still gets its ``done`` (payload 1), in request order,
so a client never hangs.
"""

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from ..config import DEFAULT, HBConfig
from ..errors import UserError
from .protocols import WritePort
from .tops import Param, Top


def write_command_layout(cfg):
    """A burst write command: ``beats`` (1..burst) lines from channel row ``row``."""
    return data.StructLayout({"row": cfg.addr_bits, "beats": cfg.burst_bits})


def write_beat_layout(cfg):
    return data.StructLayout({"data": cfg.width})


def write_status_layout(counter_bits):
    return data.StructLayout({"error": 1, "errors": counter_bits, "requests": counter_bits,
                              "lines": counter_bits, "bursts": counter_bits})


def max_bursts(cfg):
    """The most bursts one legal request can have (its length is below 2**len_bits and <= lines)."""
    return -(-min((1 << cfg.len_bits) - 1, cfg.lines) // cfg.burst)


def _check_int(name, value, lo, hi):
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise UserError(f"{name} must be an integer in [{lo}, {hi}], got {value!r}")


class HBWrite(wiring.Component):
    """Multi-channel HB write interface.

    Parameters
    ----------
    channels, width, burst, lines, len_bits
        as :class:`elmoe3d.config.HBConfig` (``len_bits=0``: a length field that holds ``lines``)
    fifo_depth : int     beats buffered per channel between ``wr.data`` and ``o_wdata[c]``, 3..256 (3: full rate)
    pending : int        requests awaiting their ``done`` before ``wr.req`` stalls, 1..64
    counter_bits : int   width of the status counters, 8..64

    Members
    -------
    wr : In(WritePort(addr_bits, len_bits, channels * width))   the client's write port
    o_wcmd : Out(stream of write_command_layout) x channels       burst commands ``(row, beats)``
    o_wdata : Out(stream of write_beat_layout) x channels         the beats, in command order
    i_wack : In(stream of 1 bit) x channels                        one acknowledgement per burst
    o_status : Out(write_status_layout)                            error flag and counters

    Raises
    ------
    UserError
        on a parameter out of range (the message names it and its value).
    """

    INTERFACE_NOTES = (
        "Requests: `wr.req.payload` is `(base, length)` in lines; then exactly `length` lines "
        "follow on `wr.data` (their `last` bit is ignored). A line is one {width}-bit beat of each "
        "of the {channels} channels: channel c's beat at `data` bits [c*{width}, (c+1)*{width}), "
        "written at row `base + j` of every channel for the request's line j (the address map of "
        "the read side, `hb_memory`).",
        "Length field: {len_bits} bits. Out of range: a request with `length == 0` or `base + "
        "length > lines` ({lines}) is consumed in one cycle, takes no line from `wr.data`, sends "
        "no command, sets the sticky `o_status.error` (cleared only by reset), counts in "
        "`o_status.errors`, and still gets its `done` with payload 1, in request order.",
        "Bursts: a legal request becomes ceil(length / {burst}) commands `(row, beats)` (1 <= beats "
        "<= {burst}), sent in order, the same command on every channel's `o_wcmd`. A channel "
        "receives the request's lines' beats on `o_wdata` in row order, each channel at its own "
        "pace (a per-channel FIFO of {fifo_depth} beats; `wr.data.ready` is high only while every "
        "channel's FIFO has room). Commands may run ahead of or behind the data.",
        "Acknowledgements: a channel sends one `i_wack` transfer per burst command, in command "
        "order, once the burst's beats are written (payload ignored; `i_wack.ready` is always 1). "
        "A channel must not acknowledge a burst before it has received the burst's command and "
        "all its beats.",
        "Done: `wr.done` carries one transfer per request, in request order, once every channel "
        "has acknowledged every burst of that request (payload 0), or at once for an illegal "
        "request (payload 1). At most {pending} requests await their `done`; then `wr.req` stalls.",
        "Timing: a request occupies the splitter (`wr.req.ready` low) for one cycle plus one per "
        "burst, and until its last line has been taken from `wr.data`; lines are taken one per "
        "cycle.",
        "Counters (`o_status`, {counter_bits} bits, wrapping): `requests` legal requests taken, "
        "`errors` illegal ones, `lines` lines taken from `wr.data`, `bursts` burst commands sent "
        "(one per burst, not per channel).",
    )

    def __init__(self, *, channels=DEFAULT.hb.channels, width=DEFAULT.hb.width, burst=DEFAULT.hb.burst,
                 lines=DEFAULT.hb.lines, len_bits=0, fifo_depth=4, pending=4, counter_bits=32):
        # outstanding only sizes the read side's reorder buffer; 2 keeps HBConfig's check quiet
        self.config = HBConfig(channels=channels, width=width, burst=burst, outstanding=2,
                               lines=lines, len_bits=len_bits)
        _check_int("fifo_depth", fifo_depth, 3, 256)
        _check_int("pending", pending, 1, 64)
        _check_int("counter_bits", counter_bits, 8, 64)
        self.fifo_depth, self.pending, self.counter_bits = fifo_depth, pending, counter_bits
        cfg = self.config
        super().__init__({
            "wr": In(WritePort(cfg.addr_bits, cfg.len_bits, cfg.channels * cfg.width)),
            "o_wcmd": Out(stream.Signature(write_command_layout(cfg))).array(cfg.channels),
            "o_wdata": Out(stream.Signature(write_beat_layout(cfg))).array(cfg.channels),
            "i_wack": In(stream.Signature(1)).array(cfg.channels),
            "o_status": Out(write_status_layout(counter_bits)),
        })

    def elaborate(self, platform):
        cfg = self.config
        m = Module()
        C, B, W = cfg.channels, cfg.burst, cfg.width
        cb = self.counter_bits
        st = self.o_status
        req, line, done = self.wr.req, self.wr.data, self.wr.done

        # --- request tracker: one entry per request taken, retired when its bursts are acked ---
        nb_bits = max_bursts(cfg).bit_length()
        entry = data.StructLayout({"bursts": nb_bits, "error": 1})
        tracker = m.submodules.tracker = SyncFIFOBuffered(width=entry.size, depth=self.pending)

        # --- request splitter ----------------------------------------------------------------------
        active = Signal()                      # burst commands left to send
        row = Signal(cfg.addr_bits)
        left = Signal(cfg.len_bits)            # lines not yet covered by a command
        data_left = Signal(cfg.len_bits)       # lines still to take from wr.data
        errors, requests, lines_n, bursts = (Signal(cb, name=n) for n in ("errors", "requests", "lines", "bursts"))
        error = Signal()
        m.d.comb += [st.error.eq(error), st.errors.eq(errors), st.requests.eq(requests),
                     st.lines.eq(lines_n), st.bursts.eq(bursts)]
        legal = Signal()
        m.d.comb += [legal.eq((req.payload.length != 0) & (req.payload.base + req.payload.length <= cfg.lines)),
                     req.ready.eq(~active & (data_left == 0) & tracker.w_rdy)]
        push = data.View(entry, tracker.w_data)
        # ceil(length / burst): burst is a power of two
        shift = (B - 1).bit_length()
        m.d.comb += [push.bursts.eq(Mux(legal, (req.payload.length + (B - 1)) >> shift, 0)),
                     push.error.eq(~legal), tracker.w_en.eq(req.valid & req.ready)]
        with m.If(req.valid & req.ready):
            with m.If(legal):
                m.d.sync += [active.eq(1), row.eq(req.payload.base), left.eq(req.payload.length),
                             data_left.eq(req.payload.length), requests.eq(requests + 1)]
            with m.Else():
                m.d.sync += [error.eq(1), errors.eq(errors + 1)]

        # --- burst commands: the same command on every channel, each channel at its own pace -----
        cur_beats = Signal(cfg.burst_bits)
        m.d.comb += cur_beats.eq(Mux(left > B, B, left))
        issued = [Signal(name=f"ch_{c}_issued") for c in range(C)]
        took = []
        for c in range(C):
            cmd = self.o_wcmd[c]
            m.d.comb += [cmd.valid.eq(active & ~issued[c]), cmd.payload.row.eq(row),
                         cmd.payload.beats.eq(cur_beats)]
            took.append(issued[c] | (cmd.valid & cmd.ready))
        commit = Signal()
        m.d.comb += commit.eq(active & Cat(*took).all())
        with m.If(commit):
            m.d.sync += [row.eq(row + cur_beats), left.eq(left - cur_beats), bursts.eq(bursts + 1)]
            m.d.sync += [issued[c].eq(0) for c in range(C)]
            with m.If(left == cur_beats):
                m.d.sync += active.eq(0)
        with m.Else():
            m.d.sync += [issued[c].eq(took[c]) for c in range(C)]

        # --- data: a line is taken when every channel's FIFO has room --------------------------------
        fifos = []
        for c in range(C):
            fifo = SyncFIFOBuffered(width=W, depth=self.fifo_depth)
            m.submodules[f"ch_{c}_data_fifo"] = fifo
            fifos.append(fifo)
            out = self.o_wdata[c]
            m.d.comb += [fifo.w_data.eq(line.payload.data[c * W:(c + 1) * W]),
                         fifo.w_en.eq(line.valid & line.ready),
                         out.valid.eq(fifo.r_rdy), out.payload.data.eq(fifo.r_data), fifo.r_en.eq(out.ready)]
        m.d.comb += line.ready.eq((data_left != 0) & Cat(*(f.w_rdy for f in fifos)).all())
        with m.If(line.valid & line.ready):
            m.d.sync += [data_left.eq(data_left - 1), lines_n.eq(lines_n + 1)]

        # --- acknowledgements and done -------------------------------------------------------------
        head = data.View(entry, tracker.r_data)
        acked_bits = (self.pending * max_bursts(cfg)).bit_length()
        acked = [Signal(acked_bits, name=f"ch_{c}_acked") for c in range(C)]
        done_valid, done_error = Signal(name="done_valid"), Signal(name="done_error")
        m.d.comb += [done.valid.eq(done_valid), done.payload.eq(done_error)]
        retire = Signal()
        m.d.comb += retire.eq(tracker.r_rdy & Cat(*(a >= head.bursts for a in acked)).all() &
                              (~done_valid | done.ready))
        m.d.comb += tracker.r_en.eq(retire)
        for c in range(C):
            ack = self.i_wack[c]
            m.d.comb += ack.ready.eq(1)
            m.d.sync += acked[c].eq(acked[c] + ack.valid - Mux(retire, head.bursts, 0))
        with m.If(retire):
            m.d.sync += [done_valid.eq(1), done_error.eq(head.error)]
        with m.Elif(done.ready):
            m.d.sync += done_valid.eq(0)
        return m


GENERATE_TOPS = [
    Top(name="hb_write",
        help="HB write interface: write requests striped over channels as bursts, per-channel data FIFOs, done per request",
        build=lambda **p: HBWrite(**p),
        params=(
            # Defaults: the accelerator's one configuration (elmoe3d.config.DEFAULT.hb).
            Param("channels", int, DEFAULT.hb.channels, "HB channels, 1..16"),
            Param("width", int, DEFAULT.hb.width, "bits per beat per channel"),
            Param("burst", int, DEFAULT.hb.burst, "lines per burst (power of two)"),
            Param("lines", int, DEFAULT.hb.lines, "address space in lines (power of two)"),
            Param("len_bits", int, 0, "request length field width (0: log2(lines) + 1, the whole space)"),
            Param("fifo_depth", int, 4, "beats buffered per channel"),
            Param("pending", int, 4, "requests awaiting done before wr.req stalls"),
            Param("counter_bits", int, 32, "status counter width"),
        )),
]
