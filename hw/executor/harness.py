"""Bench tops of the executor's units: each unit with what it needs around it, ports for a cocotb bench.

``exec_gemv``: :class:`~.gemv.GemvEngine` with the PE array it drives and the token buffers it
reads and writes (the bench writes ``x``/``h`` and reads ``ga``/``ua``/``da`` through their
ports), its memory read ports, fill arm and fill acknowledgement as the top's ports
(``sim/benches/tb_exec_gemv.py``).

``exec_context``: :class:`~.context.ExpertContext` as it is (``sim/benches/tb_exec_context.py``).

``exec_vector``: :class:`~.vector.VectorSteps` with the blocks it drives (two requantizers, the
SwiGLU block, the combine block), the buffers it reads and writes (the bench writes ``ga``,
``ua``, ``da`` and ``o``, reads ``h`` and ``o``) and one bank of the multiplier table (the bench
writes it on ``mult_wr``); its operands, ``job``/``done``, the off-chip write port ``wr`` and the
SwiGLU block's ``table`` are the top's ports (``sim/benches/tb_exec_vector.py``).

``exec_group``: :class:`~.group.GroupLoads` with the ``x`` buffer it writes (the bench reads it
on ``x_rd``); its job/done, read port, SiLU-table stream and outputs are the top's ports
(``sim/benches/tb_exec_group.py``).

``exec_fetch``: :class:`~.fetch.Fetch` as it is (``sim/benches/tb_exec_fetch.py``).

``exec_route``: :class:`~.route.Route` with the router block it drives and the ``da`` buffer it
reads (the bench, standing in for the GEMV engine, writes the logits on ``da_wr`` when it takes
the router GEMV job on ``gemv`` and answers on ``gemv_done``; ``sim/benches/tb_exec_route.py``).
"""

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ...errors import check_int
from ..pe_array import PEArray
from ..tops import Param, Top
from .buffers import Buffers, Dims
from .context import ExpertContext
from .fetch import Fetch
from .gemv import GemvEngine
from .group import GroupLoads
from .route import Route
from .loads import mult_words
from .ports import record_layout
from .vector import VectorSteps


def _config(preset, lanes):
    from ..core import core_config
    return core_config(preset, lanes)


class GemvHarness(wiring.Component):
    """The GEMV engine of a preset's core (``lanes`` overrides its lanes) with its PE array and buffers."""

    # Written into the generated interface documentation (hw/interface_doc.py).
    INTERFACE_NOTES = (
        "A unit bench top: the core's GEMV engine (hw/executor/gemv.py) with the PE array it drives "
        "and the token buffers it reads (x, h) and writes (ga, ua, da). `job` takes one GEMV job "
        "(hw/executor/ports.py gemv_job_layout); `done` carries one beat when its last result is "
        "written. `msb`, `lsb` (off-chip ports 0 and 1) and `hb` are read ports (hw/protocols.py): "
        "each request is answered by `length` lines in order, `last` on the final one. `arm` "
        "carries the fill arm (HB lines of the plane section) with lane group 0's requests of a "
        "filling job; each arm is acknowledged by one beat on `fill_done`; `fill_idle` is high when "
        "no fill is armed or unacknowledged. `weights` is high while the MSB plane streams on port 0.",
        "Buffer ports: `x_wr`, `h_wr` write bank t's word `wdata[t]` at `waddr[t]` when `we[t]`; "
        "`ga_rd`, `ua_rd`, `da_rd` read word `raddr` of every bank when `ren`, on `rdata[t]` one "
        "cycle later (held while `ren` is low). Not while a job runs.",
    )

    def __init__(self, preset="tiny", lanes=0):
        from .control import check_core_config
        cfg = check_core_config(_config(preset, lanes))
        self.config = cfg
        self.dims = d = Dims(cfg, 8)
        W = d.W
        self.pe = PEArray(rows=W, cols=W, lanes=d.lanes, acc_bits=cfg.array.acc_bits,
                          max_k=W * max(d.d_words, d.f_words), pipeline=cfg.array.pipeline)
        self.engine = GemvEngine(d, self.pe.signature)
        self.bufs = Buffers(d, {"x": (("gemv",), ("tb",)), "h": (("gemv",), ("tb",)), "ga": (("tb",), ("gemv",)),
                                "ua": (("tb",), ("gemv",)), "da": (("tb",), ("gemv",))})
        eng = self.engine.signature.members
        super().__init__({
            **{name: eng[name] for name in ("job", "done", "tlist", "msb", "lsb", "hb", "weights", "arm",
                                            "fill_done", "fill_idle")},
            # the bench is the buffers' other client: it writes x and h, reads the accumulators
            "x_wr": In(d.write_port("x")), "h_wr": In(d.write_port("h")),
            "ga_rd": In(d.read_port("ga")), "ua_rd": In(d.read_port("ua")), "da_rd": In(d.read_port("da")),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.pe = self.pe
        m.submodules.gemv = eng = self.engine
        m.submodules.buffers = bufs = self.bufs
        connect = wiring.connect
        connect(m, eng.pe, self.pe)
        for name in ("job", "done", "msb", "lsb", "hb", "arm", "fill_done"):
            connect(m, wiring.flipped(getattr(self, name)), getattr(eng, name))
        m.d.comb += [eng.tlist.eq(self.tlist), self.weights.eq(eng.weights), self.fill_idle.eq(eng.fill_idle)]
        for name in ("x", "h"):
            connect(m, getattr(eng, f"{name}_rd"), getattr(bufs, f"{name}_rd_gemv"))
            connect(m, wiring.flipped(getattr(self, f"{name}_wr")), getattr(bufs, f"{name}_wr_tb"))
        for name in ("ga", "ua", "da"):
            connect(m, getattr(eng, f"{name}_wr"), getattr(bufs, f"{name}_wr_gemv"))
            connect(m, wiring.flipped(getattr(self, f"{name}_rd")), getattr(bufs, f"{name}_rd_tb"))
        return m


def build_context(preset="tiny", max_k=4):
    """The expert-context unit of a preset's core with ``max_k`` router slots."""
    cfg = _config(preset, 0)
    check_int("max_k", max_k, 1, 64)
    return ExpertContext(Dims(cfg, max_k), cfg.cache.expert_bits + 1)


class VectorHarness(wiring.Component):
    """The vector-step unit of a preset's core with its blocks, buffers and one multiplier bank."""

    # Written into the generated interface documentation (hw/interface_doc.py).
    INTERFACE_NOTES = (
        "A unit bench top: the core's vector steps (hw/executor/vector.py) with the requantizers, "
        "SwiGLU and combine blocks they drive, the token buffers they read (ga, ua, da, o) and "
        "write (h, o), and one bank of the multiplier table. `job` takes one step (`op` 0 SWIGLU, "
        "1 COMBINE, 2 STOREY; `order`; `y_addr`), `done` carries its Status. `wr` is STOREY's "
        "off-chip write port (request, lines, one `done` beat per request once written). `table` "
        "writes the SwiGLU block's SiLU table; `mult_wr` writes word `addr` of the multiplier "
        "bank when `en` (W entries of 32 bits, entry i at bits [32 i, 32 i + 32): `m` u16 in its "
        "bits 0-15, `e` u8 in bits 16-23, the image's MULTIPLIER record).",
        "Buffer ports: `ga_wr`, `ua_wr`, `da_wr`, `o_wr` write bank t's word `wdata[t]` at "
        "`waddr[t]` when `we[t]`; `h_rd`, `o_rd` read word `raddr` of every bank when `ren`, on "
        "`rdata[t]` one cycle later. Not while a job runs.",
    )

    def __init__(self, preset="tiny"):
        from ..vector_combine import VectorCombine
        from ..vector_requant import VectorRequant
        from ..vector_swiglu import VectorSwiGLU
        from .control import check_core_config
        cfg = check_core_config(_config(preset, 0))
        self.config = cfg
        self.dims = d = Dims(cfg, 8)
        W = d.W
        self.rq_g, self.rq_u = VectorRequant(width=W), VectorRequant(width=W)
        self.sw, self.cb = VectorSwiGLU(width=W), VectorCombine(width=W)
        self.unit = VectorSteps(d, self.rq_g.signature, self.sw.signature, self.cb.signature)
        self.bufs = Buffers(d, {"ga": (("vec",), ("tb",)), "ua": (("vec",), ("tb",)), "da": (("vec",), ("tb",)),
                                "h": (("tb",), ("vec",)), "o": (("vec", "tb"), ("vec", "tb"))})
        self.mult = Memory(shape=self.unit.mult_a.data.shape(), depth=mult_words(d), init=[])
        u = self.unit.signature.members
        super().__init__({
            **{name: u[name] for name in ("job", "done", "ntok", "nact", "dwords", "fwords", "tlist", "weights",
                                          "xm", "xe", "hid_m", "hid_e", "clear", "wr")},
            "table": self.sw.signature.members["i_table"],
            "mult_wr": In(wiring.Signature({"addr": Out(range(max(2, mult_words(d)))), "en": Out(1),
                                            "data": Out(self.unit.mult_a.data.shape().size)})),
            **{f"{b}_wr": In(d.write_port(b)) for b in ("ga", "ua", "da", "o")},
            **{f"{b}_rd": In(d.read_port(b)) for b in ("h", "o")},
        })

    def elaborate(self, platform):
        m = Module()
        u = self.unit
        for name in ("unit", "rq_g", "rq_u", "sw", "cb", "bufs", "mult"):
            m.submodules[name] = getattr(self, name)
        connect = wiring.connect
        for name in ("job", "wr"):
            connect(m, wiring.flipped(getattr(self, name)), getattr(u, name))
        connect(m, u.done, wiring.flipped(self.done))
        for name in ("ntok", "nact", "dwords", "fwords", "tlist", "weights", "xm", "xe", "hid_m", "hid_e", "clear"):
            m.d.comb += getattr(u, name).eq(getattr(self, name))
        connect(m, u.rq_g, self.rq_g)
        connect(m, u.rq_u, self.rq_u)
        connect(m, u.cb, self.cb)
        connect(m, u.sw_in, self.sw.i_data)
        connect(m, self.sw.o_data, u.sw_out)
        connect(m, wiring.flipped(self.table), self.sw.i_table)
        for name in ("ga_rd", "ua_rd", "da_rd", "h_wr", "o_rd", "o_wr"):
            buf, kind = name.split("_")
            connect(m, getattr(u, name), getattr(self.bufs, f"{buf}_{kind}_vec"))
        for name in ("ga_wr", "ua_wr", "da_wr", "o_wr", "h_rd", "o_rd"):
            buf, kind = name.split("_")
            connect(m, wiring.flipped(getattr(self, name)), getattr(self.bufs, f"{buf}_{kind}_tb"))
        wp = self.mult.write_port()
        m.d.comb += [wp.addr.eq(self.mult_wr.addr), wp.data.eq(self.mult_wr.data), wp.en.eq(self.mult_wr.en)]
        for port in (u.mult_a, u.mult_b):
            rp = self.mult.read_port()
            m.d.comb += [rp.addr.eq(port.addr), rp.en.eq(port.en), port.data.eq(rp.data)]
        return m


class GroupHarness(wiring.Component):
    """The group-load unit of a preset's core with the ``x`` buffer it writes."""

    # Written into the generated interface documentation (hw/interface_doc.py).
    INTERFACE_NOTES = (
        "A unit bench top: the core's group loads (hw/executor/group.py: LOADX, LOADP) with the "
        "x buffer they write. `job` takes one load (`op` 0 LOADX, 1 LOADP, and the registers it "
        "reads), `done` carries its Status. `rd` is off-chip read port 0 (each request answered by "
        "`length` lines in order, `last` on the final one); `table` carries the SiLU table's "
        "entries (index, value) in order.",
        "`x_rd` reads word `raddr` of every bank of x when `ren`, on `rdata[t]` one cycle later "
        "(not while a job runs). The other ports are the unit's outputs: `x_ok`, `p_ok`, "
        "`started`, the group's sizes, token scales and layer scalars.",
    )

    def __init__(self, preset="tiny"):
        from ..vector_swiglu import VectorSwiGLU
        from .control import check_core_config
        cfg = check_core_config(_config(preset, 0))
        self.config = cfg
        self.dims = d = Dims(cfg, 8)
        table = VectorSwiGLU(width=d.W).signature.members["i_table"].signature.flip()
        self.unit = GroupLoads(d, table)
        self.bufs = Buffers(d, {"x": (("tb",), ("grp",))})
        u = self.unit.signature.members
        super().__init__({
            **{name: u[name] for name in ("job", "done", "rd", "table", "started", "x_ok", "p_ok", "ntok", "dwords",
                                          "fwords", "sec_lines", "router_lines", "xm", "xe", "router_m", "router_e",
                                          "hid_m", "hid_e")},
            "x_rd": In(d.read_port("x")),
        })

    def elaborate(self, platform):
        m = Module()
        u = self.unit
        m.submodules.unit, m.submodules.bufs = u, self.bufs
        connect = wiring.connect
        connect(m, wiring.flipped(self.job), u.job)
        for name in ("done", "rd", "table"):
            connect(m, getattr(u, name), wiring.flipped(getattr(self, name)))
        for name in ("started", "x_ok", "p_ok", "ntok", "dwords", "fwords", "sec_lines", "router_lines", "xm", "xe",
                     "router_m", "router_e", "hid_m", "hid_e"):
            m.d.comb += getattr(self, name).eq(getattr(u, name))
        connect(m, u.x_wr, self.bufs.x_wr_grp)
        connect(m, wiring.flipped(self.x_rd), self.bufs.x_rd_tb)
        return m


def build_fetch(preset="tiny"):
    """The fetch unit of a preset's core."""
    from .control import check_core_config
    return Fetch(check_core_config(_config(preset, 0)))


class RouteHarness(wiring.Component):
    """The route unit of a preset's core with its router block and the ``da`` buffer."""

    # Written into the generated interface documentation (hw/interface_doc.py).
    INTERFACE_NOTES = (
        "A unit bench top: the core's route unit (hw/executor/route.py) with the router block it "
        "drives and the da buffer it reads the logits from. `job` takes one ROUTE, `done` carries "
        "its Status; `gemv` carries the router GEMV job (hw/executor/ports.py gemv_job_layout), "
        "answered by one beat on `gemv_done` once the logits are in da (written on `da_wr`: bank "
        "t's word `wdata[t]` at `waddr[t]` when `we[t]`); `route` carries one beat per token; "
        "`probe_req`/`probe_resp` are the expert cache's probe port.",
        "Operands (levels): `ntok`, `dwords`, `router_lines`, `xm`, `xe`, `router_m`, `router_e`; "
        "`clear` clears `mask`; `started` and `routed` are one-cycle pulses.",
    )

    def __init__(self, preset="tiny", max_k=4):
        from ..vector_router import VectorRouter
        from .control import check_core_config
        cfg = check_core_config(_config(preset, 0))
        check_int("max_k", max_k, 1, 64)
        self.config = cfg
        self.dims = d = Dims(cfg, max_k)
        self.router = VectorRouter(max_experts=d.n_experts, max_k=d.slots)
        self.unit = Route(d, self.router.signature)
        self.bufs = Buffers(d, {"da": (("route",), ("tb",))})
        u = self.unit.signature.members
        super().__init__({
            **{name: u[name] for name in ("job", "done", "ntok", "dwords", "router_lines", "xm", "xe", "router_m",
                                          "router_e", "clear", "probe_req", "probe_resp", "gemv", "gemv_done",
                                          "route", "mask", "started", "routed")},
            "da_wr": In(d.write_port("da")),
        })

    def elaborate(self, platform):
        m = Module()
        u = self.unit
        m.submodules.unit, m.submodules.router, m.submodules.bufs = u, self.router, self.bufs
        connect = wiring.connect
        for name in ("job", "probe_resp", "gemv_done"):
            connect(m, wiring.flipped(getattr(self, name)), getattr(u, name))
        for name in ("done", "probe_req", "gemv", "route"):
            connect(m, getattr(u, name), wiring.flipped(getattr(self, name)))
        for name in ("ntok", "dwords", "router_lines", "xm", "xe", "router_m", "router_e", "clear"):
            m.d.comb += getattr(u, name).eq(getattr(self, name))
        for name in ("mask", "started", "routed"):
            m.d.comb += getattr(self, name).eq(getattr(u, name))
        connect(m, u.router, self.router)
        connect(m, u.da_rd, self.bufs.da_rd_route)
        connect(m, wiring.flipped(self.da_wr), self.bufs.da_wr_tb)
        return m


GENERATE_TOPS = [
    Top(name="exec_gemv", help="the core's GEMV engine (hw/executor/gemv.py) with its PE array and token buffers "
                               "(a unit bench top)",
        build=lambda preset="tiny", lanes=0: GemvHarness(preset, lanes),
        params=(Param("preset", str, "tiny", "accelerator configuration preset"),
                Param("lanes", int, 0, "PE-array lanes; 0 keeps the preset's"))),
    Top(name="exec_context", help="the core's expert context (hw/executor/context.py): routing table, the "
                                  "expert's token list and gate weights (a unit bench top)",
        build=build_context,
        params=(Param("preset", str, "tiny", "accelerator configuration preset"),
                Param("max_k", int, 4, "router slots (most experts a token may choose)"))),
    Top(name="exec_vector", help="the core's vector steps (hw/executor/vector.py: SWIGLU, COMBINE, STOREY) with "
                                 "their blocks, buffers and a multiplier bank (a unit bench top)",
        build=lambda preset="tiny": VectorHarness(preset),
        params=(Param("preset", str, "tiny", "accelerator configuration preset"),)),
    Top(name="exec_group", help="the core's group loads (hw/executor/group.py: LOADX, LOADP) with the x buffer "
                                "(a unit bench top)",
        build=lambda preset="tiny": GroupHarness(preset),
        params=(Param("preset", str, "tiny", "accelerator configuration preset"),)),
    Top(name="exec_fetch", help="the core's fetch unit (hw/executor/fetch.py: FETCH, the expert's planes) "
                                "(a unit bench top)",
        build=build_fetch,
        params=(Param("preset", str, "tiny", "accelerator configuration preset"),)),
    Top(name="exec_route", help="the core's route unit (hw/executor/route.py: ROUTE) with its router block and "
                                "the da buffer (a unit bench top)",
        build=lambda preset="tiny", max_k=4: RouteHarness(preset, max_k),
        params=(Param("preset", str, "tiny", "accelerator configuration preset"),
                Param("max_k", int, 4, "router slots (most experts a token may choose)"))),
]
