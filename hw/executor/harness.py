"""Bench tops of the executor's units: each unit with what it needs around it, ports for a cocotb bench.

``exec_gemv``: :class:`~.gemv.GemvEngine` with the PE array it drives and the token buffers it
reads and writes (the bench writes ``x``/``h`` and reads ``ga``/``ua``/``da`` through their
ports), its memory read ports, fill arm and fill acknowledgement as the top's ports
(``sim/benches/tb_exec_gemv.py``).

``exec_context``: :class:`~.context.ExpertContext` as it is (``sim/benches/tb_exec_context.py``).
"""

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In

from ...errors import check_int
from ..pe_array import PEArray
from ..tops import Param, Top
from .buffers import Buffers, Dims
from .context import ExpertContext
from .gemv import GemvEngine


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
]
