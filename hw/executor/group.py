"""The group loads: LOADX (the token group and its scales) and LOADP (the layer's scalars and SiLU
table), one job at a time, on off-chip read port 0.

- ``job`` (:func:`~.ports.group_job_layout`: ``op`` and the registers it reads; ready while no
  job runs); ``done``: one beat per job with its :class:`~elmoe3d.spec.isa.Status` (``NONE``,
  ``RANGE``, ``ADDRESS``, ``INPUT``), valid from the cycle after its last line, held until taken.
- LOADX: RANGE unless ``1 <= tokens <= T``, ``d_model`` in ``1..d_max`` and ``d_ffn`` in
  ``1..f_max``, both multiples of W; ADDRESS when the X block's token scales (its last read) pass
  the off-chip space. Else ``started`` pulses (a new group: the dispatcher forgets the routing,
  the context and the output sums), ``x_ok`` clears, and ``tokens * d/W`` lines from ``X_ADDR``
  are written into ``x`` (token t's words in bank t), then the token scales (from
  :func:`~elmoe3d.spec.image.token_scale_offset`) into ``xm``/``xe``; INPUT when a byte was -128
  or a listed token's scale has ``xe`` outside 1..48 or ``xm >= 2**15``, else ``x_ok`` is set.
  ``ntok``, ``dwords``, ``fwords`` (words of d and F) and ``sec_lines`` (image lines of one
  projection's plane section, ``d F / (2 L)``) hold the group's sizes.
- LOADP: RANGE unless ``2 <= n_experts <= N_EXPERTS`` and ``d_model`` is as for LOADX; ADDRESS
  when the SiLU table passes the off-chip space. Else ``p_ok`` clears, the scalars
  (``router_m``, ``router_e``, ``hid_m``, ``hid_e``) are read, and the SiLU table streams on
  ``table`` (one entry per transfer, index 0 first); INPUT when ``router_e`` or ``hid_e`` is 0,
  else ``p_ok`` is set. ``router_lines``: image lines of one router plane (constants block,
  :func:`~elmoe3d.spec.image.constants_block`).

LOADX takes its two reads (X, then the scales) plus a few cycles, LOADP its scalar read plus one
cycle per SiLU entry (``elmoe3d/spec/timing.py``: ``CoreTiming.loadx``, ``loadp``).
"""

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ...spec.image import SCALAR_BYTES, SCALARS, SILU_BYTES, SILU_ENTRY_BYTES, TOKEN_SCALE
from ...spec.isa import Status, field_widths
from ...spec.numerics import MANT_BITS, XE_MAX
from ..command_processor import StatusShape, done_layout
from ..layouts import ArrayOf
from ..mux import pick
from .gemv import off_port
from .ports import GroupOp, group_job_layout, record_layout, request_register


def _log2(n):
    return n.bit_length() - 1


class GroupLoads(wiring.Component):
    """See the module docstring. ``dims``: :class:`~.buffers.Dims`; ``table``: the signature of the
    SwiGLU block's ``i_table`` stream (:class:`~elmoe3d.hw.vector_swiglu.VectorSwiGLU`)."""

    # Written into the generated interface documentation (hw/interface_doc.py).
    INTERFACE_NOTES = (
        "`job` (ready while no job runs): `op` 0 LOADX, 1 LOADP, with the registers it reads "
        "(`tokens`, `d_model`, `d_ffn`, `n_experts`, `addr`: X_ADDR or P_ADDR in image lines). "
        "`done` carries its Status (0 NONE, 6 RANGE, 7 ADDRESS, 8 INPUT) from the cycle after its "
        "last line. `rd` is off-chip read port 0 (one request per section, `length` lines back).",
        "LOADX writes `x` (token t in bank t) and `xm`/`xe`, sets `x_ok` when no input was bad, "
        "pulses `started` once its checks pass; LOADP sets `router_m`/`router_e`/`hid_m`/`hid_e`, "
        "streams the SiLU table on `table` and sets `p_ok`. Sizes: `ntok`, `dwords`, `fwords`, "
        "`sec_lines`, `router_lines`.",
    )

    def __init__(self, dims, table):
        self.dims = d = dims
        cfg = d.config
        T = d.tokens
        self.vw = vw = field_widths(cfg)["value"]
        super().__init__({
            "job": In(stream.Signature(group_job_layout(vw))),
            "done": Out(stream.Signature(done_layout())),
            "rd": Out(off_port(cfg)),
            "x_wr": Out(d.write_port("x")),
            "table": Out(table),
            "started": Out(1), "x_ok": Out(1), "p_ok": Out(1),
            "ntok": Out(range(T + 1)), "dwords": Out(range(d.d_words + 1)), "fwords": Out(range(d.f_words + 1)),
            "sec_lines": Out(vw + 2 * 17), "router_lines": Out(vw + 17),
            "xm": Out(ArrayOf(16, T, index="token")), "xe": Out(ArrayOf(8, T, index="token")),
            "router_m": Out(16), "router_e": Out(8), "hid_m": Out(16), "hid_e": Out(8),
        })

    def elaborate(self, platform):
        m = Module()
        d = self.dims
        cfg = d.config
        T, W = d.tokens, d.W
        L = cfg.line_bytes
        R_OFF = L // W                                   # off-chip lines per image line
        LOG_W = _log2(W)
        off_lines = cfg.offchip.lines
        w_mask = W - 1
        vw = self.vw
        rd, x_w, tbl = self.rd, self.x_wr, self.table
        ntok, dwords, fwords = self.ntok, self.dwords, self.fwords
        x_ok, p_ok = self.x_ok, self.p_ok

        err = Signal(StatusShape, name="err")
        m.d.comb += self.done.payload.error.eq(err)
        # the job's registers
        tokens, d_model, d_ffn = Signal(vw, name="tokens"), Signal(vw, name="d_model"), Signal(vw, name="d_ffn")
        n_experts, addr = Signal(vw, name="n_experts"), Signal(vw, name="addr")
        T_ = tokens[:max(1, T.bit_length())]
        words_d = d_model >> LOG_W
        words_f = d_ffn >> LOG_W
        rd_v, rd_base, rd_len = request_register(m, rd.req, "rd")
        bad = Signal(name="bad")                        # an input of the load was bad
        n_b = Signal(range(max(2, SILU_BYTES // W + 1, T + 1)), name="n_b")     # lines taken
        q = Signal(range(max(2, W // SILU_ENTRY_BYTES)), name="q")              # SiLU entry of the line
        scal = Signal(max(64, 8 * W * max(1, 8 // W)), name="scal")             # the scalar lines
        silu_off = Signal(cfg.offchip.addr_bits + vw + 20, name="silu_off")
        xm = [self.xm[t] for t in range(T)]
        xe = [self.xe[t] for t in range(T)]
        # the X block's token scales: from the line after T * d bytes (spec/image.token_scale_offset)
        sbase = (addr << _log2(R_OFF)) + (((cfg.buffers.tokens * d_model + L - 1) >> _log2(L)) << (_log2(L) - LOG_W))

        def finish(code):
            m.d.sync += err.eq(code)
            m.next = "DONE"

        with m.FSM(name="group"):
            with m.State("IDLE"):
                m.d.comb += self.job.ready.eq(1)
                with m.If(self.job.valid):
                    j = self.job.payload
                    m.d.sync += [tokens.eq(j.tokens), d_model.eq(j.d_model), d_ffn.eq(j.d_ffn),
                                 n_experts.eq(j.n_experts), addr.eq(j.addr), bad.eq(0), n_b.eq(0), q.eq(0)]
                    with m.If(j.op == GroupOp.LOADX):
                        m.next = "LX_CHECK"
                    with m.Else():
                        m.next = "LP_CHECK"
            with m.State("DONE"):
                m.d.comb += self.done.valid.eq(1)
                with m.If(self.done.ready):
                    m.next = "IDLE"

            # ---- LOADX ------------------------------------------------------------------------------
            with m.State("LX_CHECK"):
                xbase = addr << _log2(R_OFF)
                with m.If((T_ == 0) | (tokens > T) | (d_model == 0) | (d_model > cfg.buffers.d_max) |
                          (d_model & w_mask).any() | (d_ffn == 0) | (d_ffn > cfg.buffers.f_max) |
                          (d_ffn & w_mask).any()):
                    finish(Status.RANGE)
                with m.Elif(sbase + ((T_ * TOKEN_SCALE.size + W - 1) >> LOG_W) > off_lines):
                    finish(Status.ADDRESS)      # the token scales, the block's last read, past the space
                with m.Else():
                    m.d.comb += self.started.eq(1)
                    m.d.sync += [rd_v.eq(1), rd_base.eq(xbase), rd_len.eq(T_ * words_d), x_ok.eq(0),
                                 ntok.eq(T_), dwords.eq(words_d), fwords.eq(words_f),
                                 self.sec_lines.eq((d_model * d_ffn) >> (1 + _log2(L)))]
                    m.next = "LX_X"
            with m.State("LX_X"):
                line = rd.data.payload.data
                m.d.comb += rd.data.ready.eq(1)
                tok = Signal(range(T + 1), name="lx_tok")
                wa = Signal(range(d.d_words + 1), name="lx_word")
                with m.If(rd.data.valid):
                    for t in range(T):
                        m.d.comb += [x_w.we[t].eq(tok == t), x_w.waddr[t].eq(wa), x_w.wdata[t].eq(line)]
                    with m.If(Cat(*[line[8 * i:8 * i + 8] == 0x80 for i in range(W)]).any()):
                        m.d.sync += bad.eq(1)
                    with m.If(wa == dwords - 1):
                        m.d.sync += [wa.eq(0), tok.eq(tok + 1)]
                    with m.Else():
                        m.d.sync += wa.eq(wa + 1)
                    with m.If(rd.data.payload.last):
                        m.d.sync += [tok.eq(0), wa.eq(0), rd_v.eq(1), rd_base.eq(sbase),
                                     rd_len.eq((ntok * TOKEN_SCALE.size + W - 1) >> LOG_W)]
                        m.next = "LX_S"
            with m.State("LX_S"):
                line = rd.data.payload.data
                m.d.comb += rd.data.ready.eq(1)
                per = W // TOKEN_SCALE.size
                scales = data.View(ArrayOf(record_layout(TOKEN_SCALE), per, index="entry"), line)
                with m.If(rd.data.valid):
                    for k_ in range(per):
                        ent = scales[k_]
                        idx = n_b * per + k_
                        for t in range(T):
                            with m.If(idx == t):
                                m.d.sync += [xm[t].eq(ent.xm), xe[t].eq(ent.xe)]
                        # INPUT: xe outside 1..XE_MAX or xm >= 2**MANT_BITS (sim/golden/int_moe.check_inputs)
                        with m.If((idx < ntok) & ((ent.xe == 0) | (ent.xe > XE_MAX) | ent.xm[MANT_BITS:].any())):
                            m.d.sync += bad.eq(1)
                    m.d.sync += n_b.eq(n_b + 1)
                    with m.If(rd.data.payload.last):
                        m.next = "LX_END"
            with m.State("LX_END"):
                with m.If(bad):
                    finish(Status.INPUT)
                with m.Else():
                    m.d.sync += x_ok.eq(1)
                    finish(Status.NONE)

            # ---- LOADP ------------------------------------------------------------------------------
            SC_LINES = max(1, SCALAR_BYTES // W)
            with m.State("LP_CHECK"):
                e_tiles = (n_experts + W - 1) >> LOG_W
                with m.If((n_experts < 2) | (n_experts > d.n_experts) | (d_model == 0) |
                          (d_model > cfg.buffers.d_max) | (d_model & w_mask).any()):
                    finish(Status.RANGE)
                with m.Else():
                    # both factors are in range here (RANGE otherwise): the product of their in-range
                    # bits is the same number from a narrow multiplier (it was the cut-down core's
                    # critical path at full register width)
                    e_in = e_tiles[:max(1, ((d.n_experts + W - 1) >> LOG_W).bit_length())]
                    d_in = d_model[:cfg.buffers.d_max.bit_length()]
                    m.d.sync += self.router_lines.eq((e_in * d_in) >> (1 + _log2(L) - LOG_W))
                    m.next = "LP_ADDR"
            with m.State("LP_ADDR"):
                # the constants block: router MSB and LSB planes, scalars, SiLU table
                sc_img = addr + 2 * self.router_lines
                silu_img = sc_img + max(1, SCALAR_BYTES // L)
                with m.If(((silu_img << _log2(R_OFF)) + SILU_BYTES // W) > off_lines):
                    finish(Status.ADDRESS)
                with m.Else():
                    m.d.sync += [rd_v.eq(1), rd_base.eq(sc_img << _log2(R_OFF)), rd_len.eq(SC_LINES), p_ok.eq(0),
                                 silu_off.eq(silu_img << _log2(R_OFF))]
                    m.next = "LP_SC"
            with m.State("LP_SC"):
                m.d.comb += rd.data.ready.eq(1)
                with m.If(rd.data.valid):
                    for k_ in range(SC_LINES):
                        with m.If(n_b == k_):
                            m.d.sync += scal[8 * W * k_:8 * W * (k_ + 1)].eq(rd.data.payload.data)
                    m.d.sync += n_b.eq(n_b + 1)
                    with m.If(rd.data.payload.last):
                        m.d.sync += [rd_v.eq(1), rd_base.eq(silu_off), rd_len.eq(SILU_BYTES // W), n_b.eq(0)]
                        m.next = "LP_SILU"
            with m.State("LP_SILU"):
                sc = data.View(record_layout(SCALARS), scal[:8 * SCALAR_BYTES])
                m.d.sync += [self.router_m.eq(sc.router_m), self.router_e.eq(sc.router_e),
                             self.hid_m.eq(sc.hid_m), self.hid_e.eq(sc.hid_e)]
                per = W // SILU_ENTRY_BYTES
                eb = 8 * SILU_ENTRY_BYTES
                ent = pick([rd.data.payload.data[eb * k_:eb * k_ + eb] for k_ in range(per)], q)
                m.d.comb += [tbl.valid.eq(rd.data.valid), tbl.payload.index.eq(n_b * per + q),
                             tbl.payload.value.eq(ent)]
                with m.If(rd.data.valid & tbl.ready):
                    with m.If(q == per - 1):
                        m.d.comb += rd.data.ready.eq(1)
                        m.d.sync += [q.eq(0), n_b.eq(n_b + 1)]
                        with m.If(rd.data.payload.last):
                            with m.If((sc.router_e == 0) | (sc.hid_e == 0)):
                                finish(Status.INPUT)    # router_e or hid_e of 0 (sim/golden/int_moe.check_layer)
                            with m.Else():
                                m.d.sync += p_ok.eq(1)
                                finish(Status.NONE)
                    with m.Else():
                        m.d.sync += q.eq(q + 1)
        return m
