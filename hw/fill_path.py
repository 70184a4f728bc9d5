"""Fill path: the cache-miss fill, as a tee on the off-chip weight stream into HB.

Plane lines from the off-chip interface arrive on ``i_line`` (``in_width`` data bits) and always
leave, unchanged and in order, on ``o_line`` (to the consumer). ``i_arm`` ``(base, length)`` arms
a fill: the next incoming lines that make ``length`` HB lines (``hb_width`` bits each) are also
written into HB from line ``base``, through the :class:`~elmoe3d.hw.protocols.WritePort` ``wr``
(connect it to :class:`elmoe3d.hw.hb_write.HBWrite`'s ``wr``). Lines that arrive while no fill is
armed only pass through.

Widths: ``in_width`` and ``hb_width`` must be multiples of one another (ratio ``k``, the larger
over the smaller; :class:`~elmoe3d.hw.width_adapter.WidthAdapter` does the packing):

- ``hb_width = k * in_width`` (upsizing, and ``k = 1``): a fill takes ``k * length`` incoming
  lines; incoming line ``j`` of the fill is HB line ``j // k``'s bits ``[(j % k) * in_width ..)``.
- ``in_width = k * hb_width`` (downsizing): a fill takes ``ceil(length / k)`` incoming lines;
  incoming line ``j`` makes HB lines ``j*k .. j*k + k - 1`` (least significant part first), and
  the HB lines past ``length`` (the tail of the final line when ``k`` does not divide
  ``length``) are dropped.

Arming: ``i_arm`` is taken (``i_arm.ready``) only while no fill is in progress (the previous
fill's HB lines have all been handed to ``wr.data``) and the previous request has left on
``wr.req``. A fill covers the lines that transfer on ``i_line`` *after* the cycle its arm
transfers. Every arm becomes one ``wr.req`` ``(base, length)`` unchanged. An arm with ``length
== 0`` or ``base + length > 2**hb_addr_bits`` is illegal (the HB holds ``2**hb_addr_bits`` lines,
as ``HBWrite`` with ``lines = 2**hb_addr_bits``): its request still goes to ``wr.req`` (the HB
side refuses it, counts it and answers ``done`` with payload 1) but no line is filled; it counts
in ``o_status.errors``. ``wr.done`` is forwarded to ``o_done`` unchanged, one per arm in order,
so a controller knows when a fill is readable from HB.

Flow: an incoming line is taken into a one-line stage when the stage is free; the stage hands
the line to ``o_line`` and (filling) to the width adapter, each as soon as that side is ready,
and frees when both have it; so a line is neither lost nor duplicated, and with ready sinks one
line per cycle passes (``o_line`` one cycle after ``i_line``), except while a downsizing fill runs:
then each incoming line waits for its ``k`` HB lines, one per cycle on ``wr.data`` (one incoming
line per ``k`` cycles). ``wr.data.last`` is set on each fill's final HB line. At equal widths the
adapter is a register stage of this module's own.
"""

from types import SimpleNamespace

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import DEFAULT
from ..errors import UserError
from .protocols import WritePort, line_stream, request_layout
from .tops import Param, Top
from .width_adapter import MAX_WIDTH, WidthAdapter


# Defaults: an HB line of the accelerator's configuration, fed by incoming lines half as wide.
HB_WIDTH = DEFAULT.hb.channels * DEFAULT.hb.width
IN_WIDTH = HB_WIDTH // 2


def fill_status_layout(counter_bits):
    return data.StructLayout({"fills": counter_bits, "errors": counter_bits, "lines": counter_bits,
                              "hb_lines": counter_bits})


def _check_int(name, value, lo, hi):
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise UserError(f"{name} must be an integer in [{lo}, {hi}], got {value!r}")


def fill_in_lines(in_width, hb_width, length):
    """Incoming lines a fill of ``length`` HB lines takes (the golden rule of the module docstring)."""
    if hb_width >= in_width:
        return length * (hb_width // in_width)
    k = in_width // hb_width
    return -(-length // k)


class FillPath(wiring.Component):
    """Tee of the off-chip line stream into an HB write port (see the module docstring).

    Parameters
    ----------
    in_width : int       data bits of an incoming line, 1..65536
    hb_width : int       data bits of an HB line (``channels * width`` of the HB), 1..65536;
                         a multiple or a divisor of ``in_width``
    hb_addr_bits : int   HB line address bits, 1..32 (the HB holds ``2**hb_addr_bits`` lines)
    hb_len_bits : int    HB request length bits, 1..33
    counter_bits : int   width of the status counters, 8..64

    Members
    -------
    i_line : In(line_stream(in_width))       incoming plane lines
    o_line : Out(line_stream(in_width))      the same lines, to the consumer
    i_arm : In(stream of request_layout)     ``(base, length)``: fill the next ``length`` HB lines
    wr : Out(WritePort(hb_addr_bits, hb_len_bits, hb_width))   to ``HBWrite.wr``
    o_done : Out(stream of 1 bit)            ``wr.done`` forwarded (1: the arm was illegal)
    o_status : Out(fill_status_layout)       counters

    Raises
    ------
    UserError
        on a parameter out of range or widths of which neither divides the other.
    """

    INTERFACE_NOTES = (
        "Pass-through: every `i_line` transfer leaves on `o_line` unchanged and in order "
        "(`data` and `last`), one cycle later at the earliest, one line per cycle with ready sinks "
        "(while a downsizing fill runs, one per in_width / hb_width cycles: the HB side takes one "
        "HB line per cycle).",
        "Widths: {in_width}-bit incoming lines, {hb_width}-bit HB lines. When hb_width = k * in_width "
        "a fill of `length` HB lines takes k * length incoming lines, the first at the least "
        "significant bits of its HB line; when in_width = k * hb_width it takes ceil(length / k) "
        "incoming lines, each split into k HB lines least significant part first, and the HB "
        "lines past `length` are dropped.",
        "Arming: `i_arm` `(base, length)` is taken only while no fill is in progress and the "
        "previous `wr.req` has left; the fill covers the lines that transfer on `i_line` after the "
        "arm's transfer cycle. Every arm is sent on `wr.req` unchanged; HB line j of the fill is "
        "written at line base + j.",
        "Out of range: an arm with `length == 0` or `base + length > 2**{hb_addr_bits}` fills no "
        "line (its request still goes to `wr.req`, which refuses it and answers `done` = 1) and "
        "counts in `o_status.errors`.",
        "Done: `wr.done` is forwarded to `o_done` combinationally (one per arm, in arm order; "
        "payload 1 for an illegal arm).",
        "Counters (`o_status`, {counter_bits} bits, wrapping): `fills` legal arms, `errors` "
        "illegal arms, `lines` lines passed to `o_line`, `hb_lines` lines sent on `wr.data`.",
    )

    def __init__(self, *, in_width=IN_WIDTH, hb_width=HB_WIDTH, hb_addr_bits=DEFAULT.hb.addr_bits,
                 hb_len_bits=DEFAULT.hb.len_bits, counter_bits=32):
        _check_int("in_width", in_width, 1, MAX_WIDTH)
        _check_int("hb_width", hb_width, 1, MAX_WIDTH)
        if in_width % hb_width and hb_width % in_width:
            raise UserError(f"in_width and hb_width must be multiples of one another, got {in_width} and {hb_width}")
        _check_int("hb_addr_bits", hb_addr_bits, 1, 32)
        _check_int("hb_len_bits", hb_len_bits, 1, 33)
        _check_int("counter_bits", counter_bits, 8, 64)
        self.in_width, self.hb_width = in_width, hb_width
        self.hb_addr_bits, self.hb_len_bits, self.counter_bits = hb_addr_bits, hb_len_bits, counter_bits
        self.ratio = max(in_width, hb_width) // min(in_width, hb_width)
        self.mode = "down" if in_width > hb_width else ("up" if hb_width > in_width else "equal")
        super().__init__({
            "i_line": In(line_stream(in_width)),
            "o_line": Out(line_stream(in_width)),
            "i_arm": In(stream.Signature(request_layout(hb_addr_bits, hb_len_bits))),
            "wr": Out(WritePort(hb_addr_bits, hb_len_bits, hb_width)),
            "o_done": Out(stream.Signature(1)),
            "o_status": Out(fill_status_layout(counter_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        k, down = self.ratio, self.mode == "down"
        cb = self.counter_bits
        if self.mode == "equal":
            # a register stage of our own: WidthAdapter at ratio 1 declares a zero-width counter,
            # which Verilator's lint refuses (ASCRANGE)
            adapter = SimpleNamespace(i=line_stream(self.in_width).flip().create(path=("adapter", "i")),
                                      o=line_stream(self.in_width).create(path=("adapter", "o")))
            m.d.comb += adapter.i.ready.eq(~adapter.o.valid | adapter.o.ready)
            with m.If(adapter.o.valid & adapter.o.ready):
                m.d.sync += adapter.o.valid.eq(0)
            with m.If(adapter.i.valid & adapter.i.ready):
                m.d.sync += [adapter.o.valid.eq(1), adapter.o.payload.eq(adapter.i.payload)]
        else:
            adapter = m.submodules.adapter = WidthAdapter(self.in_width, self.hb_width)
        arm, req, st = self.i_arm, self.wr.req, self.o_status
        fills, errors, lines_n, hb_lines = (Signal(cb, name=n) for n in ("fills", "errors", "lines", "hb_lines"))
        m.d.comb += [st.fills.eq(fills), st.errors.eq(errors), st.lines.eq(lines_n), st.hb_lines.eq(hb_lines)]

        # --- fill state ------------------------------------------------------------------------------
        max_len = (1 << self.hb_len_bits) - 1
        # incoming lines (up/equal) or HB lines (down) still to take into the fill
        in_left = Signal(range((max_len * k if not down else max_len) + 1))
        out_left = Signal(self.hb_len_bits)      # HB lines still to send on wr.data
        owed = Signal(range(k + 1))              # down: pieces the adapter still has to emit

        # --- one-line stage between i_line and its two destinations ------------------------------------
        s_valid, s_hb, s_hb_last, sent_o, sent_hb = (
            Signal(name=n) for n in ("stage_valid", "stage_to_hb", "stage_hb_last", "stage_sent_line", "stage_sent_hb"))
        s_data = Signal(self.in_width, name="stage_data")
        s_last = Signal(name="stage_last")
        o, ai = self.o_line, adapter.i
        m.d.comb += [o.valid.eq(s_valid & ~sent_o), o.payload.data.eq(s_data), o.payload.last.eq(s_last),
                     ai.valid.eq(s_valid & s_hb & ~sent_hb), ai.payload.data.eq(s_data),
                     ai.payload.last.eq(s_hb_last)]
        done_o, done_hb, free = (Signal(name=n) for n in ("done_o", "done_hb", "free"))
        m.d.comb += [done_o.eq(sent_o | (o.valid & o.ready)),
                     done_hb.eq(~s_hb | sent_hb | (ai.valid & ai.ready)),
                     free.eq(~s_valid | (done_o & done_hb)),
                     self.i_line.ready.eq(free)]
        with m.If(o.valid & o.ready):
            m.d.sync += lines_n.eq(lines_n + 1)
        take = self.i_line.valid & self.i_line.ready
        with m.If(take):
            m.d.sync += [s_valid.eq(1), s_data.eq(self.i_line.payload.data), s_last.eq(self.i_line.payload.last),
                         s_hb.eq(in_left != 0), s_hb_last.eq(in_left <= (k if down else 1)),
                         sent_o.eq(0), sent_hb.eq(0)]
            with m.If(in_left != 0):
                if down:
                    m.d.sync += in_left.eq(Mux(in_left > k, in_left - k, 0))
                else:
                    m.d.sync += in_left.eq(in_left - 1)
        with m.Elif(free):
            m.d.sync += s_valid.eq(0)
        with m.Else():
            m.d.sync += [sent_o.eq(done_o), sent_hb.eq(done_hb)]

        # --- adapter output -> wr.data (down: the pieces past `length` are dropped) -----------------------
        ao, wd = adapter.o, self.wr.data
        forward = out_left != 0
        m.d.comb += [wd.valid.eq(ao.valid & forward), wd.payload.data.eq(ao.payload.data),
                     wd.payload.last.eq(out_left == 1),
                     ao.ready.eq(Mux(forward, wd.ready, 1))]
        with m.If(wd.valid & wd.ready):
            m.d.sync += [out_left.eq(out_left - 1), hb_lines.eq(hb_lines + 1)]
        if down:
            m.d.sync += owed.eq(owed + Mux(ai.valid & ai.ready, k, 0) - (ao.valid & ao.ready))

        # --- arming -----------------------------------------------------------------------------------------
        stage_owes = s_valid & s_hb & ~sent_hb
        busy = (in_left != 0) | stage_owes | (out_left != 0) | (owed != 0)
        req_valid = Signal()
        req_payload = Signal(request_layout(self.hb_addr_bits, self.hb_len_bits))
        m.d.comb += [arm.ready.eq(~busy & ~req_valid), req.valid.eq(req_valid), req.payload.eq(req_payload)]
        a = arm.payload
        legal = (a.length != 0) & (a.base + a.length <= (1 << self.hb_addr_bits))
        with m.If(req.valid & req.ready):
            m.d.sync += req_valid.eq(0)
        with m.If(arm.valid & arm.ready):
            m.d.sync += [req_valid.eq(1), req_payload.eq(a)]
            with m.If(legal):
                m.d.sync += [fills.eq(fills + 1), out_left.eq(a.length),
                             in_left.eq(a.length if down else a.length * k)]
            with m.Else():
                m.d.sync += errors.eq(errors + 1)

        # --- done ------------------------------------------------------------------------------------------
        m.d.comb += [self.o_done.valid.eq(self.wr.done.valid), self.o_done.payload.eq(self.wr.done.payload),
                     self.wr.done.ready.eq(self.o_done.ready)]
        return m


GENERATE_TOPS = [
    Top(name="fill_path",
        help="cache-miss fill: tee of the off-chip line stream into an HB write port through a width adapter",
        build=lambda **p: FillPath(**p),
        params=(
            Param("in_width", int, IN_WIDTH, "data bits of an incoming (off-chip) line"),
            Param("hb_width", int, HB_WIDTH, "data bits of an HB line (channels * width)"),
            Param("hb_addr_bits", int, DEFAULT.hb.addr_bits, "HB line address bits"),
            Param("hb_len_bits", int, DEFAULT.hb.len_bits, "HB request length bits"),
            Param("counter_bits", int, 32, "status counter width"),
        )),
]
