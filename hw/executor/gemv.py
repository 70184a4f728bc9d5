"""The GEMV engine: runs one GEMV job (ROUTE's router GEMV, an expert's gate/up/down GEMV) on the PE array.

A job (:func:`~.ports.gemv_job_layout`) comes in on ``job``; ``done`` carries one beat when the
last result of the job is written. Per lane group of tokens the engine

- requests the projection's MSB plane section (off-chip port 0, ``msb``, or HB, ``hb``) and, for a
  FULL job, the LSB section (off-chip port 1, ``lsb``); on a filling plane it arms the fill path
  (``arm``) with lane group 0's requests, so the off-chip stream is teed into HB;
- streams the planes through width adapters into the PE array (``pe``: one line of the tier in,
  one PE-array beat of ``4 W W`` bits out);
- gathers the activations from ``x`` (``h`` for DOWN) word by word, lane j from its token's bank,
  through a FIFO into the PE array, and issues one PE command per (group, row tile);
- writes each result beat, lane j into its token's bank of ``ga``/``ua``/``da`` (``dest``).

Three cursors walk (lane group, row tile) in the same order, so lane groups overlap: the weight
requests of group g+1 go out as soon as group g's are taken, the activation feed runs ahead
through its FIFO, PE commands follow one another, results retire behind. ``fill_idle`` is high
when no fill is armed or in flight (the fill path acknowledges each fill on ``fill_done`` once
HB has written it); a GEMV command ends only then.

``weights`` is high while the job's MSB plane streams on off-chip port 0: the executor routes
port 0's lines to ``msb`` then, to the load sequencers otherwise.
"""

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..mux import pick
from ..protocols import ReadPort, request_layout
from ..stream_fifo import StreamFifo
from ..width_adapter import WidthAdapter
from .ports import Dest, gemv_job_layout, request_register, token_list_layout

# Deep enough that the feed (buffer read, then FIFO latency 2) keeps one beat per cycle (DRAFT).
ACT_DEPTH = 8


def off_port(cfg):
    """The off-chip read port every executor unit uses (``hw/protocols.py`` ReadPort)."""
    return ReadPort(cfg.offchip.addr_bits, cfg.offchip.len_bits, cfg.offchip.width)


def hb_port(cfg):
    """The HB read port (lines of every channel side by side)."""
    return ReadPort(cfg.hb.addr_bits, cfg.hb.len_bits, cfg.hb.channels * cfg.hb.width)


def arm_signature(cfg):
    """The fill path's arm: the HB lines ``(base, length)`` the next off-chip stream on port 0 fills."""
    return stream.Signature(request_layout(cfg.hb.addr_bits, cfg.hb.len_bits))


class GemvEngine(wiring.Component):
    """See the module docstring. ``dims``: :class:`~.buffers.Dims`; ``pe``: the PE array's signature."""

    def __init__(self, dims, pe):
        self.dims = dims
        cfg = dims.config
        super().__init__({
            "job": In(stream.Signature(gemv_job_layout(dims))),
            "done": Out(stream.Signature(1)),
            "tlist": In(token_list_layout(dims.tokens)),
            "msb": Out(off_port(cfg)), "lsb": Out(off_port(cfg)), "hb": Out(hb_port(cfg)),
            "weights": Out(1),
            "arm": Out(arm_signature(cfg)),
            "fill_done": In(stream.Signature(1)),
            "fill_idle": Out(1),
            "pe": Out(pe.flip()),
            "x_rd": Out(dims.read_port("x")), "h_rd": Out(dims.read_port("h")),
            "ga_wr": Out(dims.write_port("ga")), "ua_wr": Out(dims.write_port("ua")),
            "da_wr": Out(dims.write_port("da")),
        })

    def elaborate(self, platform):
        m = Module()
        d = self.dims
        cfg, W, T, LANES = d.config, d.W, d.tokens, d.lanes
        BEAT = 4 * W * W
        LOG_W = W.bit_length() - 1
        pe = self.pe
        hb_bits = cfg.hb.channels * cfg.hb.width

        ad_msb_off = m.submodules.ad_msb_off = WidthAdapter(8 * W, BEAT)
        ad_lsb_off = m.submodules.ad_lsb_off = WidthAdapter(8 * W, BEAT)
        ad_msb_hb = m.submodules.ad_msb_hb = WidthAdapter(hb_bits, BEAT)
        act_fifo = m.submodules.act_fifo = StreamFifo(pe.i_act.payload.shape(), ACT_DEPTH)

        # -- the job, latched when taken ---------------------------------------------------------
        job = Signal(gemv_job_layout(d), name="job")
        busy = Signal(name="busy")
        start = Signal(name="start")
        finish = Signal(name="finish")
        done_pend = Signal(name="done_pending")
        m.d.comb += [self.job.ready.eq(~busy), start.eq(self.job.valid & ~busy)]
        with m.If(start):
            m.d.sync += job.eq(self.job.payload)
        # done: valid in the cycle of the last result (the sequencer waits on it) or until taken
        m.d.comb += self.done.valid.eq(finish | done_pend)
        with m.If(self.done.valid & self.done.ready):
            m.d.sync += done_pend.eq(0)
        with m.Elif(finish):
            m.d.sync += done_pend.eq(1)

        # -- request registers of the memory ports -----------------------------------------------
        def req_reg(port, name):
            return request_register(m, port, name)
        msb_v, msb_base, msb_len = req_reg(self.msb.req, "msb")
        lsb_v, lsb_base, lsb_len = req_reg(self.lsb.req, "lsb")
        hb_v, hb_base, hb_len = req_reg(self.hb.req, "hbr")
        arm_v, arm_base, arm_len = req_reg(self.arm, "arm")
        # fills in flight: +1 per arm taken, -1 per fill acknowledged (HB writes done)
        fills = Signal(range(4), name="fills")
        m.d.comb += [self.fill_done.ready.eq(1), self.fill_idle.eq(~arm_v & (fills == 0))]
        m.d.sync += fills.eq(fills + (self.arm.valid & self.arm.ready) - self.fill_done.valid)

        # -- plane streams into the PE array -------------------------------------------------------
        weights = Signal(name="weights_on_port0")
        m.d.comb += self.weights.eq(weights)
        wiring.connect(m, wiring.flipped(self.msb.data), ad_msb_off.i)
        wiring.connect(m, wiring.flipped(self.lsb.data), ad_lsb_off.i)
        wiring.connect(m, wiring.flipped(self.hb.data), ad_msb_hb.i)
        from_hb = job.msb_hb
        m.d.comb += [pe.i_msb.valid.eq(Mux(from_hb, ad_msb_hb.o.valid, ad_msb_off.o.valid)),
                     pe.i_msb.payload.eq(Mux(from_hb, ad_msb_hb.o.payload.data, ad_msb_off.o.payload.data)),
                     ad_msb_hb.o.ready.eq(from_hb & pe.i_msb.ready),
                     ad_msb_off.o.ready.eq(~from_hb & pe.i_msb.ready),
                     pe.i_lsb.valid.eq(ad_lsb_off.o.valid), pe.i_lsb.payload.eq(ad_lsb_off.o.payload.data),
                     ad_lsb_off.o.ready.eq(pe.i_lsb.ready)]
        wiring.connect(m, act_fifo.o, wiring.flipped(pe.i_act))

        # -- cursors (see the module docstring) ----------------------------------------------------
        q_group = Signal(range(d.g_max + 1), name="req_group")       # next group whose planes are requested
        f_group = Signal(range(d.g_max + 1), name="feed_group")      # activation feed
        a_rt = Signal.like(job.nt, name="feed_tile")
        a_kb = Signal.like(job.kb, name="feed_word")
        c_group = Signal(range(d.g_max + 1), name="cmd_group")       # PE command
        c_rt = Signal.like(job.nt, name="cmd_tile")
        r_group = Signal(range(d.g_max + 1), name="res_group")       # result
        r_rt = Signal.like(job.nt, name="res_tile")
        a_pend = Signal(name="feed_pending")

        def lane_tokens(group, prefix):
            toks, oks = [], []
            for j in range(LANES):
                idx = group * LANES + j
                t_ = Signal(range(T), name=f"{prefix}_tok{j}")
                ok_ = Signal(name=f"{prefix}_ok{j}")
                m.d.comb += [t_.eq(Mux(job.ident, idx, pick(list(self.tlist), idx))), ok_.eq(idx < job.ntok)]
                toks.append(t_)
                oks.append(ok_)
            return toks, oks

        # plane requests, one set per lane group (the fill arm with group 0's)
        free = Signal(name="req_free")
        m.d.comb += free.eq(~Mux(job.msb_hb, hb_v, msb_v) & ~(job.lsb & lsb_v) & ~arm_v)
        with m.If(busy & (q_group < job.groups) & free):
            with m.If(job.msb_hb):
                m.d.sync += [hb_v.eq(1), hb_base.eq(job.msb_base), hb_len.eq(job.msb_len)]
            with m.Else():
                m.d.sync += [msb_v.eq(1), msb_base.eq(job.msb_base), msb_len.eq(job.msb_len)]
            with m.If(job.lsb):
                m.d.sync += [lsb_v.eq(1), lsb_base.eq(job.lsb_base), lsb_len.eq(job.lsb_len)]
            with m.If(job.fill & (q_group == 0)):
                m.d.sync += [arm_v.eq(1), arm_base.eq(job.fill_base), arm_len.eq(job.fill_len)]
            m.d.sync += q_group.eq(q_group + 1)

        # activation feed: every bank reads word a_kb; lane j picks its token's bank a cycle later
        ftok, fok = lane_tokens(f_group, "feed")
        a_tok = [Signal(range(T), name=f"a_tok{j}") for j in range(LANES)]
        a_ok = [Signal(name=f"a_ok{j}") for j in range(LANES)]
        src = [Mux(job.src_h, self.h_rd.rdata[t].as_value(), self.x_rd.rdata[t].as_value()) for t in range(T)]
        act_word = Signal(pe.i_act.payload.shape(), name="act_word")
        for j in range(LANES):
            m.d.comb += act_word[j].eq(Mux(a_ok[j], pick(src, a_tok[j]), 0))
        m.d.comb += [act_fifo.i.valid.eq(a_pend), act_fifo.i.payload.eq(act_word)]
        a_issue = Signal(name="feed_issue")
        m.d.comb += a_issue.eq(busy & (f_group < job.groups) & (act_fifo.level + a_pend < ACT_DEPTH - 1))
        with m.If(a_issue):
            m.d.comb += [self.x_rd.raddr.eq(a_kb), self.x_rd.ren.eq(~job.src_h),
                         self.h_rd.raddr.eq(a_kb), self.h_rd.ren.eq(job.src_h)]
            m.d.sync += [a_tok[j].eq(ftok[j]) for j in range(LANES)]
            m.d.sync += [a_ok[j].eq(fok[j]) for j in range(LANES)]
            with m.If(a_kb == job.kb - 1):
                m.d.sync += a_kb.eq(0)
                with m.If(a_rt == job.nt - 1):
                    m.d.sync += [a_rt.eq(0), f_group.eq(f_group + 1)]
                with m.Else():
                    m.d.sync += a_rt.eq(a_rt + 1)
            with m.Else():
                m.d.sync += a_kb.eq(a_kb + 1)
        m.d.sync += a_pend.eq(a_issue)

        # PE commands, one per (group, row tile)
        m.d.comb += [pe.i_cmd.valid.eq(busy & (c_group < job.groups)),
                     pe.i_cmd.payload.k.eq(job.kb << LOG_W), pe.i_cmd.payload.mode.eq(job.mode)]
        with m.If(pe.i_cmd.valid & pe.i_cmd.ready):
            with m.If(c_rt == job.nt - 1):
                m.d.sync += [c_rt.eq(0), c_group.eq(c_group + 1)]
            with m.Else():
                m.d.sync += c_rt.eq(c_rt + 1)

        # results: lane j into its token's bank of the destination, word r_rt
        rtok, rok = lane_tokens(r_group, "res")
        m.d.comb += pe.o_result.ready.eq(busy)
        res_fire = Signal(name="res_fire")
        m.d.comb += res_fire.eq(pe.o_result.valid & busy)
        for t in range(T):
            hit = [rok[j] & (rtok[j] == t) for j in range(LANES)]
            word = Signal(len(pe.o_result.payload[0].as_value()), name=f"res_word{t}")   # one mux chain, three readers
            chain = pe.o_result.payload[0].as_value()
            for j in range(1, LANES):
                chain = Mux(hit[j], pe.o_result.payload[j].as_value(), chain)
            m.d.comb += word.eq(chain)
            for dst, code in ((self.ga_wr, Dest.GA), (self.ua_wr, Dest.UA), (self.da_wr, Dest.DA)):
                m.d.comb += [dst.waddr[t].eq(r_rt), dst.wdata[t].eq(word),
                             dst.we[t].eq(res_fire & Cat(*hit).any() & (job.dest == code))]
        with m.If(start):
            m.d.sync += [busy.eq(1), q_group.eq(0), f_group.eq(0), a_rt.eq(0), a_kb.eq(0), c_group.eq(0),
                         c_rt.eq(0), r_group.eq(0), r_rt.eq(0), weights.eq(~self.job.payload.msb_hb)]
        with m.If(res_fire):
            with m.If(r_rt == job.nt - 1):
                m.d.sync += [r_rt.eq(0), r_group.eq(r_group + 1)]
                with m.If(r_group == job.groups - 1):
                    m.d.sync += [busy.eq(0), weights.eq(0)]
                    m.d.comb += finish.eq(1)
            with m.Else():
                m.d.sync += r_rt.eq(r_rt + 1)
        return m
