"""ROUTE: the router GEMV, then the router block token by token, into the routing table.

- ``job`` (:func:`~.ports.route_job_layout`: the command's ``k`` and ``cached``, ``order`` (LOADX
  and LOADP ran) and the registers it reads; ready while no job runs): ORDER when ``order`` is 0;
  RANGE unless ``1 <= k <= min(TOP_K, N_EXPERTS, max_k)``; ADDRESS when the router planes pass
  the off-chip space. Else the expert mask clears, and:
- ``cached``: every expert's MSB key is probed (``probe_req``/``probe_resp``, one in flight):
  the allowed mask;
- one GEMV job (``gemv``/``gemv_done``: FULL, the router MSB plane on port 0 and LSB plane on port
  1 from ``P_ADDR``, ``E/W`` row tiles of ``d/W`` words, tokens in order, logits into ``da``);
- per token: a router command (``router.i_cmd``: ``N_EXPERTS``, ``k``, ``cached``, the allowed
  mask, the token's scale, the layer's router multiplier), its logits from ``da`` one per cycle
  (``router.i_logit``), the result (``router.o_result``) onto ``route`` (the context unit's
  routing table) and into ``mask``.
- ``done``: one beat per job with its :class:`~elmoe3d.spec.isa.Status` (``NONE``, ``ORDER``,
  ``RANGE``, ``ADDRESS``); ``routed`` pulses with the last token's result (the multiplier loads
  start then), ``started`` once its checks pass (the dispatcher forgets the expert's context);
  ``clear`` (LOADX) clears ``mask``.

Its cycles: ``elmoe3d/spec/timing.py`` ``CoreTiming.route``.
"""

from amaranth.hdl import Const, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ...spec.isa import Status, field_widths
from ..command_processor import StatusShape, done_layout
from ..expert_cache import key_layout
from ..layouts import ArrayOf, Mode
from ..mux import pick, select
from .context import route_layout
from .fetch import probe_resp_layout
from .ports import Dest, gemv_job_layout, route_job_layout


def _log2(n):
    return n.bit_length() - 1


class Route(wiring.Component):
    """See the module docstring. ``dims``: :class:`~.buffers.Dims`; ``router``: the signature of
    :class:`~elmoe3d.hw.vector_router.VectorRouter`."""

    # Written into the generated interface documentation (hw/interface_doc.py).
    INTERFACE_NOTES = (
        "`job` (ready while no job runs): one ROUTE (`k`, `cached`, `order`, the registers TOP_K, "
        "N_EXPERTS, P_ADDR, LAYER). `done` carries its Status (0 NONE, 6 RANGE, 7 ADDRESS, 9 "
        "ORDER). `gemv` hands the router GEMV job out, `gemv_done` takes its completion; `da_rd` "
        "reads the logits; `router` drives the router block; `route` carries one beat per token "
        "(token, count, expert[slot], weight[slot]); `probe_req`/`probe_resp` probe every expert's "
        "MSB key for the cached choice.",
        "`mask`: the experts the group chose (cleared by a ROUTE that passes its checks and by "
        "`clear`); `started` is high for one cycle when the checks pass, `routed` with the last "
        "token's result.",
    )

    def __init__(self, dims, router):
        self.dims = d = dims
        cfg = d.config
        T = d.tokens
        super().__init__({
            "job": In(stream.Signature(route_job_layout(cfg))),
            "done": Out(stream.Signature(done_layout())),
            "ntok": In(range(T + 1)), "dwords": In(range(d.d_words + 1)),
            "router_lines": In(field_widths(cfg)["value"] + 17),
            "xm": In(ArrayOf(16, T, index="token")), "xe": In(ArrayOf(8, T, index="token")),
            "router_m": In(16), "router_e": In(8), "clear": In(1),
            "probe_req": Out(stream.Signature(key_layout(cfg.cache))),
            "probe_resp": In(stream.Signature(probe_resp_layout(cfg.cache))),
            "gemv": Out(stream.Signature(gemv_job_layout(d))),
            "gemv_done": In(stream.Signature(1)),
            "da_rd": Out(d.read_port("da")),
            "router": Out(router.flip()),
            "route": Out(stream.Signature(route_layout(d))),
            "mask": Out(d.n_experts), "started": Out(1), "routed": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        d = self.dims
        cfg = d.config
        T, W, LANES, E = d.tokens, d.W, d.lanes, d.n_experts
        K = d.slots
        L = cfg.line_bytes
        R_OFF = L // W
        LOG_W = _log2(W)
        rt, da_r, mask = self.router, self.da_rd, self.mask
        ntok = self.ntok
        xm = [self.xm[t] for t in range(T)]
        xe = [self.xe[t] for t in range(T)]
        err = Signal(StatusShape, name="err")
        m.d.comb += self.done.payload.error.eq(err)
        j = Signal.like(self.job.payload, name="route_job")
        E_ = j.n_experts
        n_a = Signal(range(max(E, T) + 2), name="n_a")          # experts probed / logits sent
        q = Signal(range(max(W, 2)), name="q")                    # logit of the da word
        li = Signal(range(T + 1), name="li")                      # token
        fi = Signal(range(d.e_words + 2), name="fi")              # da word
        allowed = Signal(E, name="allowed")
        with m.If(self.clear):
            m.d.sync += mask.eq(0)

        def finish(code):
            m.d.sync += err.eq(code)
            m.next = "DONE"

        job = self.gemv.payload
        with m.FSM(name="route"):
            with m.State("IDLE"):
                m.d.comb += self.job.ready.eq(1)
                with m.If(self.job.valid):
                    m.d.sync += j.eq(self.job.payload)
                    m.next = "RT_CHECK"
            with m.State("DONE"):
                m.d.comb += self.done.valid.eq(1)
                with m.If(self.done.ready):
                    m.next = "IDLE"
            with m.State("RT_CHECK"):
                top = Mux(j.top_k < E_, j.top_k, E_)
                with m.If(~j.order):
                    finish(Status.ORDER)
                with m.Elif((j.k == 0) | (j.k > top) | (j.k > K)):
                    finish(Status.RANGE)
                with m.Elif(((j.p_addr + 2 * self.router_lines) << _log2(R_OFF)) > cfg.offchip.lines):
                    finish(Status.ADDRESS)
                with m.Else():
                    m.d.comb += self.started.eq(1)
                    m.d.sync += [mask.eq(0), allowed.eq(0), n_a.eq(0)]
                    m.next = "RT_PROBE"
            with m.State("RT_PROBE"):
                # cached choice: probe every expert's MSB key (sequentially; one in flight)
                with m.If(~j.cached | (n_a == E_)):
                    m.next = "RT_GEMV"
                with m.Else():
                    m.d.comb += [self.probe_req.valid.eq(1), self.probe_req.payload.layer.eq(j.layer),
                                 self.probe_req.payload.expert.eq(n_a), self.probe_req.payload.plane.eq(0)]
                    with m.If(self.probe_req.ready):
                        m.next = "RT_PROBE_WAIT"
            with m.State("RT_PROBE_WAIT"):
                m.d.comb += self.probe_resp.ready.eq(1)
                with m.If(self.probe_resp.valid):
                    for e in range(E):
                        with m.If(n_a == e):
                            m.d.sync += allowed[e].eq(self.probe_resp.payload.hit)
                    m.d.sync += n_a.eq(n_a + 1)
                    m.next = "RT_PROBE"
            with m.State("RT_GEMV"):
                m.next = "RT_START"
            with m.State("RT_START"):
                # the router GEMV: FULL, router planes on ports 0 and 1, logits into da, tokens in order
                plen = self.router_lines << _log2(R_OFF)
                m.d.comb += [self.gemv.valid.eq(1),
                             job.groups.eq((ntok + LANES - 1) // LANES if LANES > 1 else ntok),
                             job.nt.eq((E_ + W - 1) >> LOG_W), job.kb.eq(self.dwords), job.mode.eq(Mode.FULL),
                             job.src_h.eq(0), job.dest.eq(Dest.DA), job.ident.eq(1), job.ntok.eq(ntok), job.lsb.eq(1),
                             job.fill.eq(0), job.fill_base.eq(0), job.fill_len.eq(0),   # no fill arm: driven, not left
                             job.msb_hb.eq(0), job.msb_base.eq(j.p_addr << _log2(R_OFF)),
                             job.msb_len.eq(plen), job.lsb_base.eq((j.p_addr + self.router_lines) << _log2(R_OFF)),
                             job.lsb_len.eq(plen)]
                with m.If(self.gemv.ready):
                    m.next = "RT_WAIT"
            with m.State("RT_WAIT"):
                m.d.comb += self.gemv_done.ready.eq(1)
                with m.If(self.gemv_done.valid):
                    m.d.sync += [n_a.eq(0), q.eq(0), li.eq(0)]
                    m.next = "RT_CMD"
            with m.State("RT_CMD"):
                # token li: a router command, then its E logits from da (word by word)
                c = rt.i_cmd.payload
                m.d.comb += [rt.i_cmd.valid.eq(1), c.n.eq(E_), c.k.eq(j.k), c.cached.eq(j.cached),
                             c.allowed.eq(allowed), c.xm.eq(pick(xm, li)), c.xe.eq(pick(xe, li)),
                             c.rm.eq(self.router_m), c.re.eq(self.router_e)]
                with m.If(rt.i_cmd.ready):
                    m.d.sync += [n_a.eq(0), fi.eq(0)]
                    m.next = "RT_READ"
            with m.State("RT_READ"):
                m.d.comb += [da_r.raddr.eq(fi), da_r.ren.eq(1)]
                m.d.sync += [fi.eq(fi + 1), q.eq(0)]
                m.next = "RT_LOGIT"
            with m.State("RT_LOGIT"):
                word = select(m, "rt_word", [da_r.rdata[t].as_value() for t in range(T)], li)
                lg = pick([word[32 * k_:32 * k_ + 32] for k_ in range(W)], q)
                m.d.comb += [rt.i_logit.valid.eq(1), rt.i_logit.payload.eq(lg)]
                with m.If(rt.i_logit.ready):
                    m.d.sync += [n_a.eq(n_a + 1), q.eq(q + 1)]
                    with m.If(n_a == E_ - 1):
                        m.next = "RT_RESULT"
                    with m.Elif(q == W - 1):
                        m.next = "RT_READ"
            with m.State("RT_RESULT"):
                res = rt.o_result.payload
                # token li's experts and gate weights into the context unit's routing table
                rp = self.route.payload
                m.d.comb += [rt.o_result.ready.eq(self.route.ready), self.route.valid.eq(rt.o_result.valid),
                             rp.token.eq(li), rp.count.eq(res.count)]
                m.d.comb += [rp.expert[s].eq(res.expert[s]) for s in range(K)]
                m.d.comb += [rp.weight[s].eq(res.weight[s]) for s in range(K)]
                with m.If(rt.o_result.valid & self.route.ready):
                    onehot = 0
                    for s in range(K):
                        onehot = onehot | Mux(s < res.count, Const(1, E) << res.expert[s], 0)
                    m.d.sync += [mask.eq(mask | onehot), li.eq(li + 1)]
                    with m.If(li == ntok - 1):
                        m.d.comb += self.routed.eq(1)
                        finish(Status.NONE)
                    with m.Else():
                        m.next = "RT_CMD"
        return m
