"""FETCH: where the running expert's plane is (HB slot or off-chip), from the expert cache.

- ``job`` (:func:`~.ports.fetch_job_layout`; ready while no job runs): RANGE for an LSB plane
  with ``LOOKUP`` (this core never caches LSB planes); ADDRESS when the plane (``e_addr + expert
  * e_stride + plane * plane_lines``, image lines) passes the off-chip space. Else ``LOOKUP``
  sends a cache request (key ``{layer, expert, plane}``, score ``maxw >> (15 - score_bits)``
  saturated) on ``cache_req`` and takes its response on ``cache_resp`` (hit, fill, slot);
  ``PEEK`` sends the key on ``probe_req`` and takes ``probe_resp`` (hit, slot; never a fill).
  When the plane is read from HB or filled into it, ADDRESS if its slot (``hb_base + slot *
  plane_lines``) passes the HB space; else the plane is marked fetched.
- ``done``: one beat per job with its :class:`~elmoe3d.spec.isa.Status` (``NONE``, ``RANGE``,
  ``ADDRESS``), valid from the cycle after the response, held until taken.
- ``planes`` (:func:`~.ports.planes_layout`): the expert's planes as FETCH left them (valid, HB
  or off-chip, the fill, first lines), what GEMV reads; ``forget`` (a pulse: a new expert's
  context) marks both planes not fetched.

A FETCH takes its request and response plus three cycles (``elmoe3d/spec/timing.py``).
"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ...spec.isa import Status, Update
from ...spec.numerics import GATE_FRAC
from ..command_processor import StatusShape, done_layout
from ..expert_cache import OpCode as CacheOp
from ..expert_cache import key_layout, request_layout as cache_request_layout, response_layout as cache_response_layout
from ..mux import pick
from .ports import fetch_job_layout, planes_layout


def _log2(n):
    return n.bit_length() - 1


def probe_resp_layout(cache):
    """The expert cache's probe response as the executor takes it: ``key``, ``hit``, ``slot``."""
    from amaranth.lib import data
    return data.StructLayout({"key": key_layout(cache), "hit": 1, "slot": cache.slot_bits})


class Fetch(wiring.Component):
    """See the module docstring. ``config``: the core's :class:`~elmoe3d.config.AccelConfig`."""

    # Written into the generated interface documentation (hw/interface_doc.py).
    INTERFACE_NOTES = (
        "`job` (ready while no job runs): one FETCH (`plane`, `update` 0 PEEK / 1 LOOKUP, the "
        "loop's `expert`, its largest gate weight `maxw`, the registers LAYER, E_ADDR, E_STRIDE, "
        "PLANE_LINES, HB_BASE). `done` carries its Status (0 NONE, 6 RANGE, 7 ADDRESS).",
        "LOOKUP: one request on `cache_req`, its response on `cache_resp`; PEEK: one key on "
        "`probe_req`, its response on `probe_resp`. `planes`: where the expert's planes are "
        "(valid, hb, fill, off, hbase per plane); `forget` clears `valid`, `hb` and `fill`.",
    )

    def __init__(self, config):
        self.config = cfg = config
        super().__init__({
            "job": In(stream.Signature(fetch_job_layout(cfg))),
            "done": Out(stream.Signature(done_layout())),
            "cache_req": Out(stream.Signature(cache_request_layout(cfg.cache))),
            "cache_resp": In(stream.Signature(cache_response_layout(cfg.cache))),
            "probe_req": Out(stream.Signature(key_layout(cfg.cache))),
            "probe_resp": In(stream.Signature(probe_resp_layout(cfg.cache))),
            "planes": Out(planes_layout(cfg)),
            "forget": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        W = cfg.vector.width
        L = cfg.line_bytes
        R_OFF = L // W                                   # off-chip lines per image line
        R_HB = L // (cfg.hb.channels * cfg.hb.width // 8)   # HB lines per image line
        sb = cfg.cache.score_bits
        pl = self.planes
        err = Signal(StatusShape, name="err")
        m.d.comb += self.done.payload.error.eq(err)
        j = Signal.like(self.job.payload, name="fetch_job")
        plane, upd, expert = j.plane, j.update, j.expert
        hb_slot = Signal(cfg.cache.slot_bits, name="hb_slot")
        with m.If(self.forget):
            m.d.sync += [pl.valid.eq(0), pl.hb.eq(0), pl.fill.eq(0)]

        def finish(code):
            m.d.sync += err.eq(code)
            m.next = "DONE"

        with m.FSM(name="fetch"):
            with m.State("IDLE"):
                m.d.comb += self.job.ready.eq(1)
                with m.If(self.job.valid):
                    m.d.sync += j.eq(self.job.payload)
                    m.next = "F_CHECK"
            with m.State("DONE"):
                m.d.comb += self.done.valid.eq(1)
                with m.If(self.done.ready):
                    m.next = "IDLE"
            with m.State("F_CHECK"):
                base = (j.e_addr + expert * j.e_stride + plane * j.plane_lines) << _log2(R_OFF)
                with m.If(plane & (upd == Update.LOOKUP)):
                    finish(Status.RANGE)        # LSB planes are never cached by this core
                with m.Elif(base + (j.plane_lines << _log2(R_OFF)) > cfg.offchip.lines):
                    finish(Status.ADDRESS)
                with m.Else():
                    for p_ in range(2):
                        with m.If(plane == p_):
                            m.d.sync += pl.off[p_].eq(base)
                    m.next = "F_REQ"
            with m.State("F_REQ"):
                score = j.maxw >> max(GATE_FRAC - sb, 0)
                with m.If(upd == Update.LOOKUP):
                    cr = self.cache_req.payload
                    m.d.comb += [self.cache_req.valid.eq(1), cr.op.eq(CacheOp.LOOKUP),
                                 cr.key.layer.eq(j.layer), cr.key.expert.eq(expert), cr.key.plane.eq(plane),
                                 cr.score.eq(Mux(score > (1 << sb) - 1, (1 << sb) - 1, score))]
                    with m.If(self.cache_req.ready):
                        m.next = "F_RESP"
                with m.Else():
                    pr = self.probe_req.payload
                    m.d.comb += [self.probe_req.valid.eq(1), pr.layer.eq(j.layer), pr.expert.eq(expert),
                                 pr.plane.eq(plane)]
                    with m.If(self.probe_req.ready):
                        m.next = "F_PROBE"
            with m.State("F_RESP"):
                m.d.comb += self.cache_resp.ready.eq(1)
                with m.If(self.cache_resp.valid):
                    rs = self.cache_resp.payload
                    m.d.sync += [pl.hb[0].eq(rs.hit), pl.fill.eq(rs.fill), hb_slot.eq(rs.slot)]
                    m.next = "F_HB"
            with m.State("F_PROBE"):
                m.d.comb += self.probe_resp.ready.eq(1)
                with m.If(self.probe_resp.valid):
                    rs = self.probe_resp.payload
                    for p_ in range(2):
                        with m.If(plane == p_):
                            m.d.sync += pl.hb[p_].eq(rs.hit)
                    with m.If(plane == 0):
                        m.d.sync += pl.fill.eq(0)
                    m.d.sync += hb_slot.eq(rs.slot)
                    m.next = "F_HB"
            with m.State("F_HB"):
                hbase = (j.hb_base + hb_slot * j.plane_lines) * R_HB
                uses_hb = pick([pl.hb[0] | pl.fill, pl.hb[1]], plane)
                with m.If(uses_hb & (hbase + j.plane_lines * R_HB > cfg.hb.lines)):
                    finish(Status.ADDRESS)
                with m.Elif(plane == 1):
                    m.d.sync += [pl.hbase[1].eq(hbase), pl.valid[1].eq(1)]
                    finish(Status.NONE)
                with m.Else():
                    m.d.sync += [pl.hbase[0].eq(hbase), pl.valid[0].eq(1)]
                    finish(Status.NONE)
        return m
