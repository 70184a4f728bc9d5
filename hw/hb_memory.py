"""HB memory interface: plane read requests -> per-channel bursts -> one in-order line stream.

The address map and burst split are fixed by the golden model ``sim/golden/hb_memory.py``: a request
``(base, length)`` in lines reads rows ``base .. base+length-1`` of every channel, in bursts of at
most ``burst`` beats; every burst's command goes to all channels. Each burst owns one of ``slots``
reorder-buffer slots (``outstanding``, or derived from ``latency``); its command carries the slot
number as a *tag*, and a channel may return the beats of its outstanding bursts in any order and
interleaved, as long as each burst's own beats come in row order (the tag says which burst a beat
belongs to). Beat ``j`` of the burst in slot ``t`` is written at ``t * burst + j`` of the channel's
buffer (a ``lib.memory.Memory`` of ``slots * burst`` beats per channel). The output side reads the
oldest slot's lines as soon as every channel has delivered them, so ``o_data`` carries the lines
in request order, one ``channels * width``-bit line per cycle, with ``last`` on a request's final
line. Space for a burst is reserved before its command is sent, so the channels never see
backpressure (``i_beat[c].ready`` is always 1).

An illegal request (``length == 0`` or ``base + length > lines``) is consumed, produces no data,
sets the sticky ``o_status.error`` flag and counts in ``o_status.errors``.

Per channel, ``busy`` counts the cycles in which the channel owes beats (a command sent whose beats
have not all come back) and ``idle`` the others; ``beats`` counts the beats it returned.
"""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..errors import UserError
from ..config import DEFAULT, HBConfig
from .layouts import ArrayOf
from .mux import pick
from . import protocols
from .tops import Param, Top


def request_layout(cfg):
    """A read request ``(base, length)`` in lines: the shared request of ``hw/protocols.py``."""
    return protocols.request_layout(cfg.addr_bits, cfg.len_bits)


def line_layout(cfg):
    """An output line, the shared line of ``hw/protocols.py``: channel ``c``'s beat at bits
    ``[c*width, (c+1)*width)`` of ``data`` (channel 0 at the LSB)."""
    return protocols.line_layout(cfg.channels * cfg.width)


def command_layout(cfg):
    return data.StructLayout({"row": cfg.addr_bits, "beats": cfg.burst_bits, "tag": cfg.tag_bits})


def beat_layout(cfg):
    return data.StructLayout({"data": cfg.width, "tag": cfg.tag_bits})


def status_layout(cfg, counter_bits):
    cnt = ArrayOf(counter_bits, cfg.channels, index="channel")
    return data.StructLayout({"error": 1, "errors": counter_bits, "requests": counter_bits,
                              "bursts": counter_bits, "beats": cnt, "busy": cnt, "idle": cnt})


class HBMemory(wiring.Component):
    """Multi-channel HB read interface with a tagged reorder buffer.

    Parameters
    ----------
    channels, width, burst, outstanding, latency, lines, len_bits
        as :class:`elmoe3d.config.HBConfig` (``outstanding=0``: enough bursts in flight to
        cover ``latency`` at full rate; ``len_bits=0``: a length field that holds ``lines``)
    counter_bits : int   width of the status counters, 8..64

    Members
    -------
    i_req : In(stream of request_layout)        read requests ``(base, length)`` in lines (``hw/protocols.py``)
    o_data : Out(stream of line_layout)         the lines, in request order
    o_cmd : Out(stream of command_layout) x channels   burst commands ``(row, beats, tag)``
    i_beat : In(stream of beat_layout) x channels      returned beats ``(data, tag)``
    o_status : Out(status_layout)               error flag and counters

    Raises
    ------
    UserError
        on a parameter out of range (the message names it and its value).
    """

    # Written into the generated interface documentation (hw/interface_doc.py).
    INTERFACE_NOTES = (
        "Requests: `i_req.payload` is `(base, length)` in lines; a line is one `width`-bit beat of "
        "every channel, byte address `a` in channel `(a / (width/8)) mod channels`, row "
        "`a / line_bytes`. The request reads rows `base .. base+length-1` of every channel.",
        "Length field: {len_bits} bits, so one request reads at most 2**{len_bits} - 1 lines (the "
        "default width, log2(lines) + 1, covers the whole space: a plane of any size that fits is "
        "one request).",
        "Out of range: a request with `length == 0` or `base + length > lines` ({lines}) is "
        "consumed in one cycle, produces no line and no burst, sets the sticky `o_status.error` "
        "(cleared only by reset) and counts in `o_status.errors`. Every other request is legal.",
        "Bursts: a legal request becomes ceil(length / {burst}) commands, sent in order, one per "
        "cycle, the same command `(row, beats, tag)` on every channel's `o_cmd` (1 <= beats <= "
        "{burst}; `tag` names one of {slots} reorder slots). A channel must answer each command with "
        "exactly `beats` beats on `i_beat`, each carrying the command's `tag`, in row order within "
        "the burst; beats of different bursts may come in any order and interleaved. "
        "`i_beat.ready` is always 1 (space is reserved before a command is sent).",
        "Output: `o_data` carries the lines in request order, channel c's beat at bits "
        "[c*width, (c+1)*width) of `data`, with `last` on each request's final line.",
        "Timing: a request occupies the splitter (`i_req.ready` low) for one cycle plus one per "
        "burst; a line leaves 2 cycles after its beat arrives, so back-to-back requests take "
        "`elmoe3d.sim.golden.hb_memory.stream_cycles` cycles: `sum(L) + latency + 3` when every request "
        "has at least two lines and burst >= 2, one more cycle per request boundary at burst 1.",
        "Counters (`o_status`, {counter_bits} bits, wrapping): `requests` legal requests taken, "
        "`errors` illegal ones, `bursts` burst commands sent (one per burst, not per channel); per "
        "channel `beats` beats received, `busy` cycles in which the channel owes beats (a command "
        "sent whose beats have not all arrived) and `idle` the other cycles since reset "
        "(`busy + idle` = cycles since reset).",
    )

    def __init__(self, *, channels=4, width=64, burst=16, outstanding=0, latency=24, lines=1 << 20,
                 len_bits=0, counter_bits=32):
        self.config = HBConfig(channels=channels, width=width, burst=burst, outstanding=outstanding,
                               latency=latency, lines=lines, len_bits=len_bits)
        if isinstance(counter_bits, bool) or not isinstance(counter_bits, int) or not 8 <= counter_bits <= 64:
            raise UserError(f"counter_bits must be an integer in [8, 64], got {counter_bits!r}")
        self.counter_bits = counter_bits
        cfg = self.config
        super().__init__({
            # the read port's two streams as hw/protocols.py declares them (ReadPort, memory side)
            "i_req": In(protocols.request_stream(cfg.addr_bits, cfg.len_bits)),
            "o_data": Out(protocols.line_stream(cfg.channels * cfg.width)),
            "o_cmd": Out(stream.Signature(command_layout(cfg))).array(cfg.channels),
            "i_beat": In(stream.Signature(beat_layout(cfg))).array(cfg.channels),
            "o_status": Out(status_layout(cfg, counter_bits)),
        })

    def elaborate(self, platform):
        cfg = self.config
        m = Module()
        C, S, B = cfg.channels, cfg.slots, cfg.burst
        off_bits = (B - 1).bit_length()          # beat offset inside a slot
        cb = self.counter_bits
        st = self.o_status

        # --- request splitter ------------------------------------------------------------------
        active = Signal()
        row = Signal(cfg.addr_bits)
        left = Signal(cfg.len_bits)
        m.d.comb += self.i_req.ready.eq(~active)
        errors, requests, bursts = (Signal(cb, name=n) for n in ("errors", "requests", "bursts"))
        error = Signal()
        m.d.comb += [st.error.eq(error), st.errors.eq(errors), st.requests.eq(requests), st.bursts.eq(bursts)]
        req = self.i_req.payload
        legal = Signal()
        m.d.comb += legal.eq((req.length != 0) & (req.base + req.length <= cfg.lines))
        with m.If(self.i_req.valid & self.i_req.ready):
            with m.If(legal):
                m.d.sync += [active.eq(1), row.eq(req.base), left.eq(req.length), requests.eq(requests + 1)]
            with m.Else():
                m.d.sync += [error.eq(1), errors.eq(errors + 1)]

        # --- burst commands, one slot per burst ----------------------------------------------------
        inflight = Signal(range(S + 1))
        alloc = Signal(cfg.tag_bits)
        head = Signal(cfg.tag_bits)
        slot_len = Array(Signal(cfg.burst_bits, name=f"slot_{t}_len") for t in range(S))
        slot_last = Array(Signal(name=f"slot_{t}_last") for t in range(S))
        cur_beats = Signal(cfg.burst_bits)
        m.d.comb += cur_beats.eq(Mux(left > B, B, left))
        can_issue = active & (inflight != S)
        issued = [Signal(name=f"ch_{c}_issued") for c in range(C)]
        done = []
        for c in range(C):
            cmd = self.o_cmd[c]
            m.d.comb += [cmd.valid.eq(can_issue & ~issued[c]), cmd.payload.row.eq(row),
                         cmd.payload.beats.eq(cur_beats), cmd.payload.tag.eq(alloc)]
            done.append(issued[c] | (cmd.valid & cmd.ready))
        commit = Signal()
        m.d.comb += commit.eq(can_issue & Cat(*done).all())
        freed = Signal()
        with m.If(commit):
            m.d.sync += [row.eq(row + cur_beats), left.eq(left - cur_beats), alloc.eq(alloc + 1),
                         slot_len[alloc].eq(cur_beats), slot_last[alloc].eq(left == cur_beats),
                         bursts.eq(bursts + 1)]
            m.d.sync += [issued[c].eq(0) for c in range(C)]
            with m.If(left == cur_beats):
                m.d.sync += active.eq(0)
        with m.Else():
            m.d.sync += [issued[c].eq(done[c]) for c in range(C)]
        m.d.sync += inflight.eq(inflight + commit - freed)

        # --- per-channel reorder buffers -----------------------------------------------------------
        rptr = Signal(cfg.burst_bits)
        advance = Signal()
        have = []
        read_data = []
        for c in range(C):
            buf = Memory(shape=cfg.width, depth=S * B, init=[])
            m.submodules[f"ch_{c}_buffer"] = buf
            wr = buf.write_port()
            rd = buf.read_port()
            beat = self.i_beat[c]
            wcnt = Array(Signal(cfg.burst_bits, name=f"ch_{c}_slot_{t}_count") for t in range(S))
            m.d.comb += beat.ready.eq(1)
            fire = beat.valid & beat.ready
            tag = beat.payload.tag
            wpos = Signal(cfg.burst_bits, name=f"ch_{c}_write_offset")
            m.d.comb += [wpos.eq(pick(list(wcnt), tag)), wr.addr.eq(Cat(wpos[:off_bits], tag)), wr.data.eq(beat.payload.data),
                         wr.en.eq(fire)]
            with m.If(fire):
                m.d.sync += wcnt[tag].eq(wpos + 1)
            with m.If(freed):
                m.d.sync += wcnt[head].eq(0)
            m.d.comb += [rd.addr.eq(Cat(rptr[:off_bits], head)), rd.en.eq(advance)]
            have.append(pick(list(wcnt), head) > rptr)
            read_data.append(rd.data)
            # counters
            owed = Signal(range(S * B + 1), name=f"ch_{c}_owed")
            cmd = self.o_cmd[c]
            cmd_fire = cmd.valid & cmd.ready
            m.d.sync += owed.eq(owed + Mux(cmd_fire, cur_beats, 0) - fire)
            beats_n, busy_n, idle_n = (Signal(cb, name=f"ch_{c}_{k}") for k in ("beats", "busy", "idle"))
            m.d.sync += [beats_n.eq(beats_n + fire)]
            with m.If(owed != 0):
                m.d.sync += busy_n.eq(busy_n + 1)
            with m.Else():
                m.d.sync += idle_n.eq(idle_n + 1)
            m.d.comb += [st.beats[c].eq(beats_n), st.busy[c].eq(busy_n), st.idle[c].eq(idle_n)]

        # --- in-order output: the head slot's next line once every channel has it --------------------
        avail = Signal()
        last_of_slot = Signal()
        out_valid = Signal()
        out_last = Signal()
        m.d.comb += [avail.eq((inflight != 0) & Cat(*have).all()),
                     last_of_slot.eq(rptr + 1 == pick(list(slot_len), head)),
                     advance.eq(~out_valid | self.o_data.ready),
                     freed.eq(advance & avail & last_of_slot),
                     self.o_data.valid.eq(out_valid), self.o_data.payload.last.eq(out_last),
                     self.o_data.payload.data.eq(Cat(*read_data))]
        # The read ports hold their data while `advance` is low, so the output holds under backpressure.
        with m.If(advance):
            m.d.sync += [out_valid.eq(avail), out_last.eq(avail & last_of_slot & pick(list(slot_last), head))]
            with m.If(avail):
                with m.If(last_of_slot):
                    m.d.sync += [rptr.eq(0), head.eq(head + 1)]
                with m.Else():
                    m.d.sync += rptr.eq(rptr + 1)
        return m


GENERATE_TOPS = [
    Top(name="hb_memory",
        help="HB memory interface: plane reads striped over channels, tagged reorder buffer, in-order line stream",
        build=lambda **p: HBMemory(**p),
        params=(
            # Defaults: the accelerator's one configuration (elmoe3d.config.DEFAULT.hb).
            Param("channels", int, DEFAULT.hb.channels, "HB channels, 1..16"),
            Param("width", int, DEFAULT.hb.width, "bits per beat per channel"),
            Param("burst", int, DEFAULT.hb.burst, "lines per burst (power of two)"),
            Param("outstanding", int, DEFAULT.hb.outstanding, "bursts in flight (power of two; 0 derives it from latency)"),
            Param("latency", int, DEFAULT.hb.latency, "channel latency in cycles the buffers are sized for"),
            Param("lines", int, DEFAULT.hb.lines, "address space in lines (power of two)"),
            Param("len_bits", int, 0, "request length field width (0: log2(lines) + 1, the whole space)"),
            Param("counter_bits", int, 32, "status counter width"),
        )),
]
