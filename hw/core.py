# amaranth: UnusedElaboratable=no
"""The accelerator core: one MoE layer pass per command stream, from the one configuration.

This file only wires blocks together (each is its own file and verified alone)::

    i_word -> CommandProcessor --exec/done--> Executor --+-- PEArray (bit-sliced, lanes x rows x cols)
                     ^  regs, expert mask      |  |     +-- VectorRequant x2, VectorSwiGLU, VectorCombine,
                     +-------------------------+  |     |   VectorRouter
                                                  |     +-- ExpertCache (lookup, probe)
               OffchipInterface (read ports 0, 1, write) <-+-- FillPath (tee on port 0) -- HBWrite
               HBMemory (read) <---------------------------+

External ports (what a bench or an SoC drives)
----------------------------------------------
- ``i_word``: the command stream (``elmoe3d/spec/isa.py`` words, little-endian fields), any stalls.
- Off-chip bus (``hw/offchip.py``): ``o_bus_cmd`` ``{write, base, length}`` in off-chip lines,
  ``o_bus_wdata``, ``i_bus_rdata``; commands are served in order, each read answered by
  ``length`` lines.
- HB channels: read side as ``hw/hb_memory.py`` (``o_hb_cmd[c]``, ``i_hb_beat[c]``: tagged bursts,
  any order between bursts), write side as ``hw/hb_write.py`` (``o_hb_wcmd[c]``,
  ``o_hb_wdata[c]``, ``i_hb_wack[c]``).
- ``o_status``: the command processor's status (``busy``, ``halted``, ``error`` a
  :class:`~elmoe3d.spec.isa.Status` code, ``index`` of the command that stopped it,
  ``commands``, ``cycles``).
- ``o_cache_event``: a monitor copy of every expert-cache response the executor takes (``valid``
  for one cycle per response), so a bench checks every cache decision.
- ``o_cache_counters``: the expert cache's counters.

The memory images are the compiler's (``firmware/layout.py``): addresses in the stream are image
lines; the core converts them to each tier's lines.
"""

from amaranth.hdl import Module
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import PRESETS, preset as named_preset
from ..errors import UserError
from .command_processor import CommandProcessor, status_layout
from .executor import BLOCK_PORTS, Dims, Executor, check_core_config
from .expert_cache import ExpertCache, response_layout
from .fill_path import FillPath
from .hb_memory import HBMemory
from .hb_write import HBWrite
from .offchip import OffchipInterface
from .tops import Param, Top
from .verilog import digest, part


def compute_block_specs(config, max_k=8):
    """``{name: (class, parameters)}`` of the PE array and vector blocks the executor drives,
    for ``config`` (the parameters fully determine each block's logic)."""
    from .pe_array import PEArray
    from .vector_combine import VectorCombine
    from .vector_requant import VectorRequant
    from .vector_router import VectorRouter
    from .vector_swiglu import VectorSwiGLU
    d = Dims(check_core_config(config), max_k)
    W = d.W
    return {"pe": (PEArray, dict(rows=W, cols=W, lanes=d.lanes, acc_bits=config.array.acc_bits,
                                 max_k=W * max(d.d_words, d.f_words), pipeline=config.array.pipeline)),
            "rq_g": (VectorRequant, dict(width=W)), "rq_u": (VectorRequant, dict(width=W)),
            "swiglu": (VectorSwiGLU, dict(width=W)), "combine": (VectorCombine, dict(width=W)),
            "router": (VectorRouter, dict(max_experts=d.n_experts, max_k=d.slots))}


def compute_blocks(config, max_k=8):
    """The PE array and vector blocks the executor drives, built for ``config``: ``{name: block}``.

    The core owns (elaborates) them and connects them to the executor's ``*_port`` members
    (:data:`~elmoe3d.hw.executor.BLOCK_PORTS`); the executor only takes their signatures.
    """
    return {name: cls(**params) for name, (cls, params) in compute_block_specs(config, max_k).items()}


class Core(wiring.Component):
    """The core of one :class:`~elmoe3d.config.AccelConfig` (see the module docstring).

    ``max_k``: the most experts a token may choose (the router's slots), 1..64. ``burst``: off-chip
    burst in lines; 0 (default) derives one PE-array beat's worth, so the MSB and LSB streams of
    a FULL GEMV, which share the off-chip bus, interleave beat by beat.
    """

    # Written into the generated interface documentation (hw/interface_doc.py).
    INTERFACE_NOTES = (
        "Stream: `i_word` takes one command word per transfer (elmoe3d/spec/isa.py: opcode in bits "
        "[3:0], fields upwards, reserved bits zero; `{word_bits}`-bit words). NOP and SETR take one "
        "cycle; every other command runs to completion before the next is dispatched. After HALT "
        "`o_status.halted` is set and the core takes the next stream (registers and the expert "
        "cache keep their state; `index` restarts at 0).",
        "Errors: a command the core cannot execute stops it: `o_status.error` holds the Status code "
        "(elmoe3d/spec/isa.py: OPCODE 1, FIELD 2, LOOP 3, KEY 4, REGISTER 5, RANGE 6, ADDRESS 7, INPUT 8, "
        "ORDER 9) and `o_status.index` the offending command's index in its stream; `i_word.ready` "
        "stays 0 until reset. ADDRESS: a request past the off-chip space ({off_lines} lines of "
        "{off_bytes} bytes) or the HB space ({hb_lines} lines). RANGE: TOKENS outside 1..{tokens}, "
        "D_MODEL outside 1..{d_max} or D_FFN outside 1..{f_max} or either not a multiple of {W}, k "
        "outside 1..min(TOP_K, N_EXPERTS, {max_k}), N_EXPERTS outside 2..{n_experts}, a FETCH lsb "
        "lookup, a FULL GEMV whose LSB plane is in HB. INPUT: a token of -128, a token scale "
        "exponent outside 1..48, a multiplier exponent of 0. ORDER: a command before its "
        "prerequisite (ROUTE before LOADX and LOADP, GEMV before FETCH, DOWN before SWIGLU, SWIGLU "
        "before gate/up or LOADM, COMBINE before DOWN or LOADM, a body command outside a loop).",
        "Memories: off-chip addresses on `o_bus_cmd` are off-chip lines of {off_bytes} bytes "
        "(image line a = off-chip lines a*{r_off} ..); the bus serves commands in order, each read "
        "answered by `length` lines on `i_bus_rdata`, each write followed by `length` lines on "
        "`o_bus_wdata`. HB channel c: read bursts `(row, beats, tag)` answered by `beats` beats "
        "carrying the tag (bursts in any order, each burst's beats in row order); write bursts "
        "`(row, beats)` followed by `beats` beats and acknowledged on `i_hb_wack[c]` once written; "
        "HB line r is row r of every channel (channel c at bits [c*{hb_w}, (c+1)*{hb_w})).",
        "Fills: a LOOKUP that misses and fills writes the plane into its HB slot while the "
        "expert's GEMVs stream it from off-chip (each GEMV writes its projection's section, from its "
        "first lane group, and ends when HB has acknowledged it), not at the FETCH: a stream that "
        "looks up an MSB plane runs the gate, up and down GEMVs of that expert in the same loop "
        "iteration, as the compiler's streams do.",
        "Monitors: `o_cache_event.valid` is 1 for one cycle per expert-cache response the executor "
        "takes, with the response (key, hit, fill, evict, bypass, slot, victim); `o_status.cycles` "
        "counts from the cycle after a stream's first word to its HALT, `o_status.commands` the "
        "commands executed (loop repeats included).",
    )

    def __init__(self, config, *, max_k=8, burst=0):
        self.config = check_core_config(config)
        cfg = config
        # The sub-blocks are built here (their signatures make the core's ports) and elaborated
        # by elaborate(); the file's `amaranth: UnusedElaboratable=no` line keeps a core that is
        # only constructed (its interface described, its configuration refused) quiet.
        self.proc = CommandProcessor(cfg)
        self.block_specs = compute_block_specs(cfg, max_k)
        self.blocks = {name: cls(**params) for name, (cls, params) in self.block_specs.items()}
        self.ex = Executor(cfg, max_k=max_k, blocks=self.blocks)
        c = cfg.cache
        self.cache = ExpertCache(entries=c.entries, policy=c.policy, layer_bits=c.layer_bits,
                                 expert_bits=c.expert_bits, count_bits=c.count_bits, score_bits=c.score_bits,
                                 decay_shift=c.decay_shift)
        o = cfg.offchip
        if not burst:
            burst = max(1, (4 * cfg.array.rows * cfg.array.cols) // o.width)
        self.off = OffchipInterface(width=o.width, lines=o.lines, len_bits=o.len_bits, latency=o.latency,
                                    read_ports=2, burst=burst)
        h = cfg.hb
        self.hbr = HBMemory(channels=h.channels, width=h.width, burst=h.burst, outstanding=h.outstanding,
                            latency=h.latency, lines=h.lines, len_bits=h.len_bits)
        self.hbw = HBWrite(channels=h.channels, width=h.width, burst=h.burst, lines=h.lines, len_bits=h.len_bits)
        self.fill = FillPath(in_width=o.width, hb_width=h.channels * h.width, hb_addr_bits=h.addr_bits,
                             hb_len_bits=h.len_bits)
        # values the interface notes quote
        self.word_bits, self.W, self.max_k = cfg.word_bits, cfg.vector.width, self.ex.max_k
        self.off_lines, self.off_bytes, self.hb_lines = o.lines, o.line_bytes, h.lines
        self.r_off, self.hb_w = cfg.line_bytes // o.line_bytes, h.width
        self.tokens, self.d_max, self.f_max = cfg.buffers.tokens, cfg.buffers.d_max, cfg.buffers.f_max
        self.n_experts = self.ex.n_experts
        members = {
            "i_word": In(stream.Signature(cfg.word_bits)),
            "o_status": Out(status_layout()),
            "o_cache_event": Out(data.StructLayout({"valid": 1, "resp": response_layout(c)})),
        }
        for name in ("o_bus_cmd", "o_bus_wdata", "i_bus_rdata"):
            members[name] = self.off.signature.members[name]
        members["o_hb_cmd"] = self.hbr.signature.members["o_cmd"]
        members["i_hb_beat"] = self.hbr.signature.members["i_beat"]
        members["o_hb_wcmd"] = self.hbw.signature.members["o_wcmd"]
        members["o_hb_wdata"] = self.hbw.signature.members["o_wdata"]
        members["i_hb_wack"] = self.hbw.signature.members["i_wack"]
        members["o_cache_counters"] = self.cache.signature.members["o_counters"]
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        ex, proc, cache, off, hbr, hbw, fill = self.ex, self.proc, self.cache, self.off, self.hbr, self.hbw, self.fill
        for name in ("proc", "cache", "off", "hbr", "hbw", "fill"):
            m.submodules[name] = getattr(self, name)
        # the executor and the compute blocks, the bulk of the core, are each converted on their
        # own (hw/verilog.part): a conversion's memory follows its largest block
        part(m, "ex", ex, "executor", dict(c=digest(self.config, self.max_k)))
        for name, blk in self.blocks.items():
            cls, params = self.block_specs[name]
            part(m, name, blk, cls.__name__.lower(), params)
        connect = wiring.connect
        # command processor <-> executor
        connect(m, wiring.flipped(self.i_word), proc.i_word)
        connect(m, proc.o_exec, ex.exec)
        connect(m, ex.done, proc.i_done)
        m.d.comb += [proc.i_experts.eq(ex.experts), ex.regs.eq(proc.o_regs), ex.regs_set.eq(proc.o_regs_set),
                     self.o_status.eq(proc.o_status)]
        # executor <-> compute blocks
        for name, blk in self.blocks.items():
            connect(m, getattr(ex, BLOCK_PORTS[name]), blk)
        # expert cache: lookups and probes from the executor; prefetch unused; fills by the fill path
        connect(m, ex.cache_req, cache.i_lookup)
        connect(m, cache.o_resp, ex.cache_resp)
        connect(m, ex.probe_req, cache.i_probe)
        connect(m, cache.o_probe, ex.probe_resp)
        m.d.comb += [cache.i_prefetch.valid.eq(0), cache.o_fill.ready.eq(1),
                     self.o_cache_event.valid.eq(cache.o_resp.valid & cache.o_resp.ready),
                     self.o_cache_event.resp.eq(cache.o_resp.payload),
                     self.o_cache_counters.eq(cache.o_counters)]
        # off-chip: port 0 through the fill tee, port 1, the write port
        connect(m, ex.rd0.req, off.rd[0].req)
        connect(m, off.rd[0].data, fill.i_line)
        connect(m, fill.o_line, ex.rd0.data)
        connect(m, ex.rd1, off.rd[1])
        connect(m, ex.wr, off.wr)
        for name in ("o_bus_cmd", "o_bus_wdata", "i_bus_rdata"):
            port = getattr(self, name)
            connect(m, wiring.flipped(port), getattr(off, name))
        # HB: reads from the executor, writes from the fill path
        connect(m, ex.hb.req, hbr.i_req)
        connect(m, hbr.o_data, ex.hb.data)
        connect(m, ex.arm, fill.i_arm)
        connect(m, fill.wr, hbw.wr)
        connect(m, fill.o_done, ex.fill_done)
        for c in range(self.config.hb.channels):
            connect(m, wiring.flipped(self.o_hb_cmd[c]), hbr.o_cmd[c])
            connect(m, wiring.flipped(self.i_hb_beat[c]), hbr.i_beat[c])
            connect(m, wiring.flipped(self.o_hb_wcmd[c]), hbw.o_wcmd[c])
            connect(m, wiring.flipped(self.o_hb_wdata[c]), hbw.o_wdata[c])
            connect(m, wiring.flipped(self.i_hb_wack[c]), hbw.i_wack[c])
        return m


def core_config(preset="default", lanes=0):
    """The configuration of a preset; ``lanes`` (1..tokens) overrides its PE-array lanes (0 keeps them)."""
    from dataclasses import replace
    cfg = named_preset(preset)
    if lanes:
        if isinstance(lanes, bool) or not isinstance(lanes, int) or not 1 <= lanes <= cfg.buffers.tokens:
            raise UserError(f"lanes must be in [1, {cfg.buffers.tokens}] (0: the preset's), got {lanes!r}")
        cfg = replace(cfg, name=f"{cfg.name}-lanes{lanes}", array=replace(cfg.array, lanes=lanes))
    return cfg


def build_core(preset="default", max_k=8, lanes=0):
    """The core of a preset (see :func:`core_config`)."""
    return Core(core_config(preset, lanes), max_k=max_k)


GENERATE_TOPS = [
    Top(name="core", help="the accelerator core: command processor, executor, PE array, vector unit, "
                          "expert cache, off-chip and HB interfaces, fill path",
        build=build_core,
        params=(Param("preset", str, "default", "accelerator configuration preset", choices=tuple(PRESETS)),
                Param("max_k", int, 8, "most experts a token may choose (router slots)"),
                Param("lanes", int, 0, "PE-array lanes (tokens per lane group); 0 keeps the preset's"))),
]
