"""The vector steps: SWIGLU, COMBINE and STOREY sequenced through the requantizers, the SwiGLU and
the combine blocks (one job at a time).

- ``job`` (``op``, ``order``, ``y_addr``: :func:`~.ports.vector_job_layout`; ready while no job
  runs): ``order`` 0 (the command's prerequisites did not run) ends the job with ``ORDER``.
- ``done``: one beat per job with its :class:`~elmoe3d.spec.isa.Status` (``NONE``, ``ORDER``,
  ``ADDRESS``), valid from the cycle after the job's last write, held until taken.
- Operands (levels, stable while a job runs): the group's ``ntok`` tokens of ``dwords`` /
  ``fwords`` words, the expert's ``nact`` tokens ``tlist`` and gate ``weights``, the token scales
  ``xm``/``xe``, the layer's ``hid_m``/``hid_e``; the running expert's multipliers on
  ``mult_a``/``mult_b`` (word ``a`` of its bank: gate words ``0 ..``, up ``F/W ..``, down
  ``2F/W ..``). ``clear`` (a pulse, LOADX): no token's output sum is started.

SWIGLU, per token of the list, per word of F: ``ga``/``ua`` and the gate/up multipliers through
the two requantizers (``sat 8``, ``sat 16``, multiplier ``xm * m``, shift ``xe + e``), then the
SwiGLU block (``hid_m``, ``hid_e``) into ``h``: ``sim/golden/int_moe.swiglu``.
COMBINE, per token, per word of d: ``da`` through requantizer g (``sat 32``, the down multipliers:
``expert_output``), then the combine block adds ``rshift_round(w * y, 15)`` to the token's
output sum in ``o`` (``first`` on a token no COMBINE has written since ``clear``); the tokens
of the list are then marked started.
STOREY: ADDRESS when the Y block (``ntok * d`` INT32, from image line ``y_addr``) passes the
off-chip space; else ``o`` saturated through the combine block (``w = 0``, ``last``; 0 for a
token never started), narrowed from 32 W to 8 W bits, to off-chip on ``wr``; done when the
write is acknowledged.

Each step issues one word per cycle (a two-stage read: buffer and multiplier words a cycle after
their address), so it takes its words plus its pipeline (``elmoe3d/spec/timing.py``:
``SWIGLU_FIXED``, ``COMBINE_FIXED``, ``STOREY_FIXED``).
"""

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ...spec.isa import Status, field_widths
from ...spec.numerics import GATE_FRAC
from ..command_processor import StatusShape, done_layout
from ..layouts import ArrayOf
from ..mux import pick, select
from ..protocols import WritePort
from ..vector_common import COMBINE_ACC, OutBits
from .loads import mult_words
from .ports import MultRead, VecOp, token_list_layout, vector_job_layout


def _log2(n):
    return n.bit_length() - 1


class VectorSteps(wiring.Component):
    """See the module docstring. ``dims``: :class:`~.buffers.Dims`; ``rq``, ``sw``, ``cb``: the
    signatures of :class:`~elmoe3d.hw.vector_requant.VectorRequant`,
    :class:`~elmoe3d.hw.vector_swiglu.VectorSwiGLU` (its ``i_data`` and ``o_data``) and
    :class:`~elmoe3d.hw.vector_combine.VectorCombine`."""

    # Written into the generated interface documentation (hw/interface_doc.py).
    INTERFACE_NOTES = (
        "`job` (ready while no job runs): `op` 0 SWIGLU, 1 COMBINE, 2 STOREY; `order` 0 ends it "
        "with ORDER; `y_addr`: STOREY's Y block (image line). `done` carries its Status (0 NONE, 7 "
        "ADDRESS, 9 ORDER) from the cycle after its last write.",
        "SWIGLU: ga/ua words of the token list through `rq_g`/`rq_u` and `sw_in`/`sw_out` into h. "
        "COMBINE: da through `rq_g` and `cb` into o. STOREY: o through `cb` (w 0, last) to `wr`. "
        "Multipliers on `mult_a`/`mult_b` (word of the running bank, a cycle after `addr`).",
    )

    def __init__(self, dims, rq, sw, cb):
        self.dims = d = dims
        cfg = d.config
        T, W = d.tokens, d.W
        off = cfg.offchip
        self.y_bits = field_widths(cfg)["value"]
        super().__init__({
            "job": In(stream.Signature(vector_job_layout(self.y_bits))),
            "done": Out(stream.Signature(done_layout())),
            "ntok": In(range(T + 1)), "nact": In(range(T + 1)),
            "dwords": In(range(d.d_words + 1)), "fwords": In(range(d.f_words + 1)),
            "tlist": In(token_list_layout(T)), "weights": In(ArrayOf(GATE_FRAC + 1, T, index="token")),
            "xm": In(ArrayOf(16, T, index="token")), "xe": In(ArrayOf(8, T, index="token")),
            "hid_m": In(16), "hid_e": In(8), "clear": In(1),
            "mult_a": Out(MultRead(W, mult_words(d))), "mult_b": Out(MultRead(W, mult_words(d))),
            "ga_rd": Out(d.read_port("ga")), "ua_rd": Out(d.read_port("ua")), "da_rd": Out(d.read_port("da")),
            "h_wr": Out(d.write_port("h")), "o_rd": Out(d.read_port("o")), "o_wr": Out(d.write_port("o")),
            "rq_g": Out(rq.flip()), "rq_u": Out(rq.flip()),
            "sw_in": Out(sw.members["i_data"].signature.flip()), "sw_out": In(sw.members["o_data"].signature),
            "cb": Out(cb.flip()),
            "wr": Out(WritePort(off.addr_bits, off.len_bits, off.width)),
        })

    def elaborate(self, platform):
        from ..width_adapter import WidthAdapter

        m = Module()
        d = self.dims
        cfg = d.config
        T, W = d.tokens, d.W
        R_OFF = cfg.line_bytes // W                       # off-chip lines per image line
        cw = COMBINE_ACC.width
        rqg, rqu, cb = self.rq_g, self.rq_u, self.cb
        sw_i, sw_o = self.sw_in, self.sw_out
        ga_r, ua_r, da_r, o_r, h_w, o_w = self.ga_rd, self.ua_rd, self.da_rd, self.o_rd, self.h_wr, self.o_wr
        ma, mb = self.mult_a, self.mult_b
        nact, ntok, dwords, fwords = self.nact, self.ntok, self.dwords, self.fwords
        tlist = [self.tlist[i] for i in range(T)]
        tw = [self.weights[t] for t in range(T)]
        xm = [self.xm[t] for t in range(T)]
        xe = [self.xe[t] for t in range(T)]

        err = Signal(StatusShape, name="err")
        order = Signal(name="order")
        y_addr = Signal(self.y_bits, name="y_addr")
        touched = Signal(T, name="touched")        # tokens whose output sum is started
        with m.If(self.clear):
            m.d.sync += touched.eq(0)
        # issue side (list index, word), stage B (COMBINE's output-sum read), output side
        li, fi = Signal(range(T + 1), name="li"), Signal(range(max(d.d_words, d.f_words) + 1), name="fi")
        lb, fb = Signal(range(T + 1), name="lb"), Signal.like(fi, name="fb")
        lc, fc = Signal(range(T + 1), name="lc"), Signal.like(fi, name="fc")
        s1_v, s1_tok = Signal(name="s1_v"), Signal(range(T), name="s1_tok")
        s1_xm, s1_xe = Signal(16, name="s1_xm"), Signal(8, name="s1_xe")
        b_v, b_tok = Signal(name="b_v"), Signal(range(T), name="b_tok")
        b_y = Signal(rqg.o_data.payload.shape(), name="b_y")
        n_out = Signal(range(T * d.d_words + 1), name="n_out")     # STOREY: words narrowed

        # STOREY's write port: the request register, the Y words narrowed to off-chip lines
        wr_v, wr_base, wr_len = (Signal(name="wr_v"), Signal.like(self.wr.req.payload.base, name="wr_base"),
                                 Signal.like(self.wr.req.payload.length, name="wr_len"))
        m.d.comb += [self.wr.req.valid.eq(wr_v), self.wr.req.payload.base.eq(wr_base),
                     self.wr.req.payload.length.eq(wr_len)]
        with m.If(self.wr.req.valid & self.wr.req.ready):
            m.d.sync += wr_v.eq(0)
        wr_seen = Signal(name="wr_seen")
        with m.If(self.wr.done.valid):
            m.d.sync += wr_seen.eq(1)
        ad_y = m.submodules.ad_y = WidthAdapter(32 * W, 8 * W)
        m.d.comb += [self.wr.data.valid.eq(ad_y.o.valid), self.wr.data.payload.eq(ad_y.o.payload),
                     ad_y.o.ready.eq(self.wr.data.ready), self.wr.done.ready.eq(1)]

        m.d.comb += self.done.payload.error.eq(err)

        def finish(code):
            m.d.sync += err.eq(code)
            m.next = "DONE"

        with m.FSM(name="vector"):
            with m.State("IDLE"):
                m.d.comb += self.job.ready.eq(1)
                with m.If(self.job.valid):
                    j = self.job.payload
                    m.d.sync += [order.eq(j.order), y_addr.eq(j.y_addr), li.eq(0), fi.eq(0), lb.eq(0), fb.eq(0),
                                 lc.eq(0), fc.eq(0), s1_v.eq(0), b_v.eq(0), n_out.eq(0), wr_seen.eq(0)]
                    with m.If(j.op == VecOp.STOREY):
                        m.next = "ST_CHECK"
                    with m.Elif(~j.order):
                        finish(Status.ORDER)
                    with m.Elif(j.op == VecOp.SWIGLU):
                        m.next = "SW_RUN"
                    with m.Else():
                        m.next = "CB_RUN"
            with m.State("DONE"):
                m.d.comb += self.done.valid.eq(1)
                with m.If(self.done.ready):
                    m.next = "IDLE"

            # ---- SWIGLU -----------------------------------------------------------------------------
            with m.State("SW_RUN"):
                adv = Signal(name="sw_adv")      # the issue stage moves
                more = Signal(name="sw_more")    # words left to issue
                m.d.comb += [adv.eq(~s1_v | (rqg.i_data.ready & rqu.i_data.ready)), more.eq(li < nact)]
                tok_i = pick(tlist, li)
                with m.If(adv):
                    m.d.comb += [ga_r.raddr.eq(fi), ga_r.ren.eq(1), ua_r.raddr.eq(fi), ua_r.ren.eq(1),
                                 ma.addr.eq(fi), mb.addr.eq(fwords + fi)]
                    m.d.sync += [s1_v.eq(more), s1_tok.eq(tok_i), s1_xm.eq(pick(xm, tok_i)), s1_xe.eq(pick(xe, tok_i))]
                    with m.If(more):
                        with m.If(fi == fwords - 1):
                            m.d.sync += [fi.eq(0), li.eq(li + 1)]
                        with m.Else():
                            m.d.sync += fi.eq(fi + 1)
                m.d.comb += [ma.en.eq(adv), mb.en.eq(adv)]
                gword = select(m, "sw_gword", [ga_r.rdata[t].as_value() for t in range(T)], s1_tok)
                uword = select(m, "sw_uword", [ua_r.rdata[t].as_value() for t in range(T)], s1_tok)
                m.d.comb += [rqg.i_data.valid.eq(s1_v), rqu.i_data.valid.eq(s1_v),
                             rqg.i_data.payload.bits.eq(OutBits.B8), rqu.i_data.payload.bits.eq(OutBits.B16)]
                for i in range(W):
                    m.d.comb += [rqg.i_data.payload.elem[i].acc.eq(gword[32 * i:32 * i + 32].as_signed()),
                                 rqg.i_data.payload.elem[i].m.eq(s1_xm * ma.data[i].m),
                                 rqg.i_data.payload.elem[i].e.eq(s1_xe + ma.data[i].e),
                                 rqu.i_data.payload.elem[i].acc.eq(uword[32 * i:32 * i + 32].as_signed()),
                                 rqu.i_data.payload.elem[i].m.eq(s1_xm * mb.data[i].m),
                                 rqu.i_data.payload.elem[i].e.eq(s1_xe + mb.data[i].e)]
                # requantized gate/up -> SwiGLU -> h
                m.d.comb += [sw_i.valid.eq(rqg.o_data.valid & rqu.o_data.valid),
                             rqg.o_data.ready.eq(sw_i.ready & rqu.o_data.valid),
                             rqu.o_data.ready.eq(sw_i.ready & rqg.o_data.valid),
                             sw_i.payload.hm.eq(self.hid_m), sw_i.payload.he.eq(self.hid_e)]
                for i in range(W):
                    m.d.comb += [sw_i.payload.elem[i].g.eq(rqg.o_data.payload[i]),
                                 sw_i.payload.elem[i].v.eq(rqu.o_data.payload[i])]
                m.d.comb += sw_o.ready.eq(1)
                tok_c = pick(tlist, lc)
                with m.If(sw_o.valid):
                    for t in range(T):
                        m.d.comb += [h_w.we[t].eq(tok_c == t), h_w.waddr[t].eq(fc), h_w.wdata[t].eq(sw_o.payload)]
                    with m.If(fc == fwords - 1):
                        m.d.sync += [fc.eq(0), lc.eq(lc + 1)]
                        with m.If(lc == nact - 1):
                            finish(Status.NONE)
                    with m.Else():
                        m.d.sync += fc.eq(fc + 1)

            # ---- COMBINE ----------------------------------------------------------------------------
            with m.State("CB_RUN"):
                adv = Signal(name="cb_adv")      # the issue stage moves
                more = Signal(name="cb_more")    # words left to issue
                m.d.comb += [adv.eq(~s1_v | rqg.i_data.ready), more.eq(li < nact)]
                tok_i = pick(tlist, li)
                with m.If(adv):
                    m.d.comb += [da_r.raddr.eq(fi), da_r.ren.eq(1), ma.addr.eq(2 * fwords + fi)]
                    m.d.sync += [s1_v.eq(more), s1_tok.eq(tok_i)]
                    with m.If(more):
                        with m.If(fi == dwords - 1):
                            m.d.sync += [fi.eq(0), li.eq(li + 1)]
                        with m.Else():
                            m.d.sync += fi.eq(fi + 1)
                m.d.comb += ma.en.eq(adv)
                dword_ = select(m, "cb_dword", [da_r.rdata[t].as_value() for t in range(T)], s1_tok)
                m.d.comb += [rqg.i_data.valid.eq(s1_v), rqg.i_data.payload.bits.eq(OutBits.B32)]
                for i in range(W):
                    m.d.comb += [rqg.i_data.payload.elem[i].acc.eq(dword_[32 * i:32 * i + 32].as_signed()),
                                 rqg.i_data.payload.elem[i].m.eq(ma.data[i].m),
                                 rqg.i_data.payload.elem[i].e.eq(ma.data[i].e)]
                # stage B: the output sum of (token, word) read while y waits in a register
                take_b = Signal(name="cb_take_b")
                m.d.comb += [take_b.eq(rqg.o_data.valid & (~b_v | cb.i_data.ready)), rqg.o_data.ready.eq(take_b)]
                tok_b = pick(tlist, lb)
                with m.If(take_b):
                    m.d.comb += [o_r.raddr.eq(fb), o_r.ren.eq(1)]
                    m.d.sync += [b_v.eq(1), b_y.eq(rqg.o_data.payload), b_tok.eq(tok_b)]
                    with m.If(fb == dwords - 1):
                        m.d.sync += [fb.eq(0), lb.eq(lb + 1)]
                    with m.Else():
                        m.d.sync += fb.eq(fb + 1)
                with m.Elif(cb.i_data.ready):
                    m.d.sync += b_v.eq(0)
                oword = select(m, "cb_oword", [o_r.rdata[t].as_value() for t in range(T)], b_tok)
                cp = cb.i_data.payload
                m.d.comb += [cb.i_data.valid.eq(b_v), cp.w.eq(pick(tw, b_tok)), cp.first.eq(~pick(list(touched), b_tok)),
                             cp.last.eq(0)]
                for i in range(W):
                    m.d.comb += [cp.elem[i].y.eq(b_y[i]), cp.elem[i].acc.eq(oword[cw * i:cw * i + cw].as_signed())]
                m.d.comb += cb.o_data.ready.eq(1)
                tok_c = pick(tlist, lc)
                with m.If(cb.o_data.valid):
                    for t in range(T):
                        m.d.comb += [o_w.we[t].eq(tok_c == t), o_w.waddr[t].eq(fc), o_w.wdata[t].eq(cb.o_data.payload)]
                    with m.If(fc == dwords - 1):
                        m.d.sync += [fc.eq(0), lc.eq(lc + 1)]
                        with m.If(lc == nact - 1):
                            m.next = "CB_END"
                    with m.Else():
                        m.d.sync += fc.eq(fc + 1)
            with m.State("CB_END"):
                for i in range(T):
                    with m.If(i < nact):
                        for t in range(T):
                            with m.If(tlist[i] == t):
                                m.d.sync += touched[t].eq(1)
                finish(Status.NONE)

            # ---- STOREY -----------------------------------------------------------------------------
            with m.State("ST_CHECK"):
                base = y_addr << _log2(R_OFF)
                n_lines = ntok * dwords * 4
                with m.If(~order):
                    finish(Status.ORDER)
                with m.Elif(base + n_lines > cfg.offchip.lines):
                    finish(Status.ADDRESS)
                with m.Else():
                    m.d.sync += [wr_v.eq(1), wr_base.eq(base), wr_len.eq(n_lines)]
                    m.next = "ST_RUN"
            with m.State("ST_RUN"):
                adv = Signal(name="st_adv")      # the issue stage moves
                more = Signal(name="st_more")    # words left to issue
                m.d.comb += [adv.eq(~s1_v | cb.i_data.ready), more.eq(li < ntok)]
                with m.If(adv):
                    m.d.comb += [o_r.raddr.eq(fi), o_r.ren.eq(1)]
                    m.d.sync += [s1_v.eq(more), s1_tok.eq(li)]
                    with m.If(more):
                        with m.If(fi == dwords - 1):
                            m.d.sync += [fi.eq(0), li.eq(li + 1)]
                        with m.Else():
                            m.d.sync += fi.eq(fi + 1)
                oword = select(m, "st_oword", [o_r.rdata[t].as_value() for t in range(T)], s1_tok)
                cp = cb.i_data.payload
                m.d.comb += [cb.i_data.valid.eq(s1_v), cp.w.eq(0), cp.first.eq(~pick(list(touched), s1_tok)),
                             cp.last.eq(1)]
                for i in range(W):
                    m.d.comb += [cp.elem[i].y.eq(0), cp.elem[i].acc.eq(oword[cw * i:cw * i + cw].as_signed())]
                m.d.comb += [ad_y.i.valid.eq(cb.o_data.valid),
                             ad_y.i.payload.data.eq(Cat(*[cb.o_data.payload[i][:32] for i in range(W)])),
                             ad_y.i.payload.last.eq(n_out == ntok * dwords - 1),
                             cb.o_data.ready.eq(ad_y.i.ready)]
                with m.If(cb.o_data.valid & ad_y.i.ready):
                    m.d.sync += n_out.eq(n_out + 1)
                with m.If((n_out == ntok * dwords) & (wr_seen | self.wr.done.valid)):
                    finish(Status.NONE)
        return m
