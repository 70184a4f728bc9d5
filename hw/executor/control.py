"""The core's executor: carries out each dispatched command on the buffers, the PE array and the vector unit.

The command processor (``hw/command_processor.py``) fetches, decodes and sequences the stream
(registers, loops); it hands the executor one command at a time on ``exec`` and waits for its
``done`` (with an error code, :class:`elmoe3d.spec.isa.Status`). The executor is the
datapath's controller: it owns the on-chip buffers (``hw/token_buffer.py``, one bank per token)
and drives, through ports that ``hw/core.py`` connects, the PE array, the vector blocks, the
expert cache, the off-chip read ports (0: MSB / data, 1: LSB), the off-chip write port, the HB
read port and the fill path. Every operand comes from the memory images; the numerics are the
integer layer of ``sim/golden/int_moe.py`` and the ISS (``sim/machine/iss.py``) is the golden machine.

The executor itself is the dispatcher: it checks a command's registers and the loop order, has
the context unit build the expert's context, and hands the command to its unit as a job
(LOADX / LOADP: :class:`~.group.GroupLoads`; ROUTE: :class:`~.route.Route`; FETCH:
:class:`~.fetch.Fetch`; SWIGLU / COMBINE / STOREY: :class:`~.vector.VectorSteps`), whose
``done`` it forwards as its own in the same cycle; LOADM (the loads unit's job, the tag compare)
and GEMV (the engine's job from the planes FETCH left) are its own few states. Each unit raises
its command's Status codes; the processor reports them with the command's index.

Core restrictions (checked by :func:`check_core_config`): a square array with ``rows = cols =
vector.width = W``, W a power of two >= 4, an off-chip line of W bytes, a power-of-two image line;
at run time ``D_MODEL`` and ``D_FFN`` multiples of W (``RANGE`` otherwise).

Buffers (words of W elements; ``T`` = buffers.tokens banks each)
-----------------------------------------------------------------
``x`` INT8 (d_max/W words), ``h`` hidden INT8 (f_max/W), ``ga``/``ua`` gate/up accumulators INT32
(f_max/W), ``da`` down accumulators and router logits INT32, ``o`` layer-output sums (37 bits,
d_max/W), the multiplier table (two banks of 2 f_max + d_max entries, m u16 and e u8, four
sub-banks; written by the loads unit), token scales and the routing table in registers.

Commands (what the executor does; the ISS is the definition of the result)
--------------------------------------------------------------------------
- ``LOADX``: off-chip port 0 reads ``T*d/W`` lines into ``x`` (line = one word), then the token
  scales; a ``-128`` or a scale exponent outside [1, 48] gives ``INPUT`` after the stream.
- ``LOADP``: the scalars and the SiLU table (written into the SwiGLU block's table). The router
  planes stay off-chip: ``ROUTE`` streams them.
- ``ROUTE``: per lane group of tokens a FULL GEMV of the router planes (MSB on port 0, LSB on
  port 1) into ``da``; then, token by token, the router block (``cached``: the allowed mask from
  cache probes of every expert's MSB key); the routing table and the expert mask.
- ``FETCH``: MSB ``LOOKUP`` a cache request (score from the largest gate weight of the expert's
  tokens), ``PEEK`` a probe; the plane's tier (HB slot or off-chip) and, on a fill, the fill arm.
- ``LOADM``: the expert's multipliers (gate F, up F, down d). The loads unit (``loads.py``, on
  off-chip port 1 beside the LSB planes) fetches them ahead into the bank the running expert
  does not use: after ``ROUTE`` the mask's first expert, after each ``LOADM`` the next one; LOADM
  waits for that load when it is its own (same lines), else starts its own; ``INPUT`` on a zero
  exponent, then the bank becomes the expert's.
- ``GEMV``: per lane group of the expert's tokens, the projection's section of the plane(s)
  streamed from their tier through a width adapter into the PE array, the activations gathered
  from ``x`` (``h`` for DOWN) by token bank, results scattered into ``ga``/``ua``/``da``. On a
  filling MSB plane, lane group 0's off-chip stream is teed into HB (the fill path); the command
  ends when the HB writes are acknowledged.
- ``SWIGLU``: ``ga``, ``ua``, scales and multipliers through two requantizers and the SwiGLU
  block into ``h``. ``COMBINE``: ``da`` through a requantizer (32 bits) and the combine block into
  ``o``. ``STOREY``: ``o`` saturated through the combine block (``w = 0``, ``last``) to off-chip.
"""

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ...errors import UserError
from ...spec.isa import NEEDS, Bits, Choice, InstructionSet, Op, Proj, Reg, Status, field_widths
from ...spec.image import MULT_BYTES, MULTIPLIER
from ..command_processor import StatusShape, done_layout, exec_layout, regs_layout
from ..expert_cache import key_layout, request_layout as cache_request_layout, response_layout as cache_response_layout
from ..layouts import ArrayOf, Mode
from ..protocols import WritePort
from .buffers import Buffers, Dims
from .context import ExpertContext
from .gemv import GemvEngine, arm_signature, hb_port, off_port
from .loads import MultLoads, PortShare, mult_words as loads_mult_words
from .fetch import Fetch, probe_resp_layout
from .group import GroupLoads
from .route import Route
from .ports import GroupOp, VecOp, record_layout
from .vector import VectorSteps



def _log2(n):
    return n.bit_length() - 1


def _is_pow2(n):
    return n > 0 and n & (n - 1) == 0


def check_core_config(config):
    """Refuse a configuration the core cannot be built for (one line naming the field)."""
    a, W = config.array, config.vector.width
    if not (a.rows == a.cols == W):
        raise UserError(f"the core needs array.rows = array.cols = vector.width, got {a.rows}, {a.cols}, {W}")
    if not _is_pow2(W) or W < 4:
        raise UserError(f"the core needs vector.width a power of two >= 4, got {W}")
    if config.offchip.width != 8 * W:
        raise UserError(f"the core needs offchip.width = 8 * vector.width = {8 * W} bits, got {config.offchip.width}")
    if not _is_pow2(config.line_bytes):
        raise UserError(f"the core needs a power-of-two image line, got {config.line_bytes} bytes")
    if a.lanes > config.buffers.tokens:
        raise UserError(f"array.lanes ({a.lanes}) must be at most buffers.tokens ({config.buffers.tokens})")
    return config


# the executor's member that drives each compute block (hw/core.py compute_blocks() builds them)
BLOCK_PORTS = {"pe": "pe_port", "rq_g": "rqg_port", "rq_u": "rqu_port", "swiglu": "sw_port",
               "combine": "cb_port", "router": "router_port"}


class Executor(wiring.Component):
    """The core's datapath controller (see the module docstring). ``max_k``: most experts per token."""

    def __init__(self, config, *, max_k=8, blocks):
        """``blocks``: the compute blocks of :func:`compute_blocks` (only their signatures are used)."""
        self.config = check_core_config(config)
        cfg = config
        self.isa = InstructionSet(cfg)
        self.dims = d = Dims(cfg, max_k)
        self.W, self.T, self.lanes = d.W, d.tokens, d.lanes
        self.n_experts, self.max_k = d.n_experts, d.slots
        self.d_words, self.f_words, self.e_words = d.d_words, d.f_words, d.e_words
        self.pe_sig = blocks["pe"].signature
        self.vec_sigs = (blocks["rq_g"].signature, blocks["swiglu"].signature, blocks["combine"].signature)
        self.table_sig = blocks["swiglu"].signature.members["i_table"].signature.flip()
        self.router_sig = blocks["router"].signature
        ports = {BLOCK_PORTS[name]: Out(blk.signature.flip()) for name, blk in blocks.items()}
        off = cfg.offchip
        self.off_port, self.hb_port = off_port(cfg), hb_port(cfg)
        super().__init__({
            "exec": In(stream.Signature(exec_layout(cfg))),
            "done": Out(stream.Signature(done_layout())),
            "experts": Out(self.n_experts),
            "regs": In(regs_layout(cfg)),
            "regs_set": In(len(Reg)),
            "rd0": Out(self.off_port), "rd1": Out(self.off_port),
            "wr": Out(WritePort(off.addr_bits, off.len_bits, off.width)),
            "hb": Out(self.hb_port),
            "arm": Out(arm_signature(cfg)),
            "fill_done": In(stream.Signature(1)),
            "cache_req": Out(stream.Signature(cache_request_layout(cfg.cache))),
            "cache_resp": In(stream.Signature(cache_response_layout(cfg.cache))),
            "probe_req": Out(stream.Signature(key_layout(cfg.cache))),
            "probe_resp": In(stream.Signature(probe_resp_layout(cfg.cache))),
            **ports,
        })

    # ------------------------------------------------------------------------------------------
    def elaborate(self, platform):
        cfg, W, T, LANES = self.config, self.W, self.T, self.lanes
        m = Module()
        r = self.regs
        L = cfg.line_bytes
        R_OFF = L // W                                   # off-chip lines per image line
        hb_bits = cfg.hb.channels * cfg.hb.width
        R_HB = L // (hb_bits // 8)                       # HB lines per image line
        isa = self.isa
        vw = field_widths(cfg)["value"]

        def field(name, op):
            spec = {s.name: s for s in isa.fields[op]}[name]
            return cmd_word[spec.offset:spec.offset + spec.width]

        # -- units: the token buffers (a port per client) and the GEMV engine -----------------
        dims = self.dims
        bufs = m.submodules.buffers = Buffers(dims, {
            "x": (("gemv",), ("grp",)), "h": (("gemv",), ("vec",)), "ga": (("vec",), ("gemv",)),
            "ua": (("vec",), ("gemv",)), "da": (("route", "vec"), ("gemv",)), "o": (("vec",), ("vec",))})
        eng = m.submodules.gemv = GemvEngine(dims, self.pe_sig)
        connect = wiring.connect
        for name in ("x", "h"):
            connect(m, getattr(eng, f"{name}_rd"), getattr(bufs, f"{name}_rd_gemv"))
        for name in ("ga", "ua", "da"):
            connect(m, getattr(eng, f"{name}_wr"), getattr(bufs, f"{name}_wr_gemv"))

        # ROUTE (the router GEMV job, the router block, the routing table): logits from da
        rte = m.submodules.route = Route(dims, self.router_sig)
        connect(m, rte.da_rd, bufs.da_rd_route)
        connect(m, rte.router, wiring.flipped(self.router_port))
        # the group loads (LOADX, LOADP): x, the token scales, the scalars, the SiLU table
        grp = m.submodules.group = GroupLoads(dims, self.table_sig)
        connect(m, grp.x_wr, bufs.x_wr_grp)
        connect(m, grp.table, wiring.flipped(self.sw_port.i_table))
        # the vector steps (SWIGLU, COMBINE, STOREY): their buffer ports, blocks and write port
        vec = m.submodules.vector = VectorSteps(dims, *self.vec_sigs)
        for name in ("ga_rd", "ua_rd", "da_rd", "h_wr", "o_rd", "o_wr"):
            buf, kind = name.split("_")
            connect(m, getattr(vec, name), getattr(bufs, f"{buf}_{kind}_vec"))
        connect(m, vec.rq_g, wiring.flipped(self.rqg_port))
        connect(m, vec.rq_u, wiring.flipped(self.rqu_port))
        connect(m, vec.cb, wiring.flipped(self.cb_port))
        connect(m, vec.sw_in, wiring.flipped(self.sw_port.i_data))
        connect(m, wiring.flipped(self.sw_port.o_data), vec.sw_out)
        connect(m, vec.wr, wiring.flipped(self.wr))
        # multiplier table: two banks (the running expert's and the one loaded ahead, hw/executor/
        # loads.py) of 4 sub-banks of W/4 entries {m u16, e u8}; word a of bank b is entries a*W ..
        mult_entry = record_layout(MULTIPLIER)                  # as in the image
        mult_words = loads_mult_words(dims)
        from amaranth.lib.memory import Memory
        mrd_a, mrd_b, mwr = [], [], []
        for s in range(4):
            mem = Memory(shape=ArrayOf(mult_entry, W // 4, index="entry"), depth=2 * mult_words, init=[])
            m.submodules[f"mult{s}"] = mem
            mrd_a.append(mem.read_port())
            mrd_b.append(mem.read_port())
            mwr.append(mem.write_port())
        # the loads unit writes them; the vector steps read the bank of the expert's LOADM
        loads = m.submodules.loads = MultLoads(dims)
        mbank = Signal(name="mult_bank")               # the bank LOADM took last
        mw = loads.wr
        for s in range(4):
            m.d.comb += [mwr[s].addr.eq(mw.addr + Mux(mw.bank, mult_words, 0)), mwr[s].data.eq(mw.data),
                         mwr[s].en.eq(mw.en[s])]
        # the vector steps read the running bank on ports a and b (one cycle after the address)
        for s in range(4):
            for rd, port in ((mrd_a[s], vec.mult_a), (mrd_b[s], vec.mult_b)):
                m.d.comb += [rd.addr.eq(port.addr + Mux(mbank, mult_words, 0)), rd.en.eq(port.en)]
                m.d.comb += [port.data[s * (W // 4) + i].eq(rd.data[i]) for i in range(W // 4)]

        # -- latched command and state -----------------------------------------------------------
        op = Signal(4)
        cmd_word = Signal(cfg.word_bits)        # the command being executed
        expert = Signal(cfg.cache.expert_bits + 1)
        shared = Signal()
        in_loop = Signal()
        err = Signal(StatusShape)

        # the group's sizes, token scales and layer scalars (the group loads' outputs)
        ntok, dwords, fwords, x_ok, p_ok = grp.ntok, grp.dwords, grp.fwords, grp.x_ok, grp.p_ok
        xm = [grp.xm[t] for t in range(T)]
        xe = [grp.xe[t] for t in range(T)]
        router_m, router_e, hid_m, hid_e = grp.router_m, grp.router_e, grp.hid_m, grp.hid_e
        sec_lines = grp.sec_lines             # image lines of one projection's section (F*d/(2L))
        router_lines = grp.router_lines       # image lines of one router plane
        # the experts the group chose (for the command processor's loops)
        mask = rte.mask
        m.d.comb += self.experts.eq(mask)
        # expert context
        ctx_valid = Signal()
        ctx_expert = Signal.like(expert)
        ctx_shared = Signal()
        # the routing table and the expert's token list and gate weights live in the context unit
        ctx = m.submodules.context = ExpertContext(dims, len(expert))
        nact, maxw = ctx.nact, ctx.maxw
        tlist = [ctx.tlist[i] for i in range(T)]
        m.d.comb += ctx.ntok.eq(ntok)
        connect(m, rte.route, ctx.route)
        m.d.comb += [rte.ntok.eq(ntok), rte.dwords.eq(dwords), rte.router_lines.eq(router_lines),
                     rte.router_m.eq(router_m), rte.router_e.eq(router_e), rte.clear.eq(grp.started)]
        m.d.comb += [rte.xm[t].eq(xm[t]) for t in range(T)]
        m.d.comb += [rte.xe[t].eq(xe[t]) for t in range(T)]
        # the vector steps' operands
        m.d.comb += [vec.ntok.eq(ntok), vec.nact.eq(nact), vec.dwords.eq(dwords), vec.fwords.eq(fwords),
                     vec.tlist.eq(ctx.tlist), vec.weights.eq(ctx.weights), vec.hid_m.eq(hid_m), vec.hid_e.eq(hid_e)]
        m.d.comb += [vec.xm[t].eq(xm[t]) for t in range(T)]
        m.d.comb += [vec.xe[t].eq(xe[t]) for t in range(T)]
        vjob = vec.job.payload
        gjob = grp.job.payload
        # a LOADX that passed its checks starts a new group: no routing, context or output sum
        with m.If(grp.started):
            m.d.comb += vec.clear.eq(1)
            m.d.sync += ctx_valid.eq(0)
        with m.If(rte.started):                  # a new routing: no expert's context
            m.d.sync += ctx_valid.eq(0)
        # where the expert's planes are: the fetch unit's (FETCH), read by GEMV
        fetch = m.submodules.fetch = Fetch(cfg)
        connect(m, fetch.cache_req, wiring.flipped(self.cache_req))
        connect(m, wiring.flipped(self.cache_resp), fetch.cache_resp)
        # the probe port: the fetch unit's (PEEK) or the route unit's (cached choice); one
        # command runs at a time, so at most one of them requests or waits for a response
        m.d.comb += [self.probe_req.valid.eq(fetch.probe_req.valid | rte.probe_req.valid),
                     self.probe_req.payload.eq(Mux(rte.probe_req.valid, rte.probe_req.payload, fetch.probe_req.payload)),
                     fetch.probe_req.ready.eq(self.probe_req.ready), rte.probe_req.ready.eq(self.probe_req.ready),
                     fetch.probe_resp.valid.eq(self.probe_resp.valid), fetch.probe_resp.payload.eq(self.probe_resp.payload),
                     rte.probe_resp.valid.eq(self.probe_resp.valid), rte.probe_resp.payload.eq(self.probe_resp.payload),
                     self.probe_resp.ready.eq(fetch.probe_resp.ready | rte.probe_resp.ready)]
        pl_valid, pl_hb, pl_fill = fetch.planes.valid, fetch.planes.hb, fetch.planes.fill
        pl_off, pl_hbase = fetch.planes.off, fetch.planes.hbase
        fjob = fetch.job.payload
        mults_ok = Signal()
        done_g, done_u, done_d, done_h = (Signal(name=f"done_{p}") for p in "gudh")

        # -- done ------------------------------------------------------------------------------
        m.d.comb += self.done.payload.error.eq(err)

        # -- memory ports --------------------------------------------------------------------------
        # off-chip port 0: the GEMV engine's plane requests or the group loads' (never both at once)
        grp_rd0 = grp.rd
        m.d.comb += [self.rd0.req.valid.eq(eng.msb.req.valid | grp_rd0.req.valid),
                     self.rd0.req.payload.eq(Mux(eng.msb.req.valid, eng.msb.req.payload, grp_rd0.req.payload)),
                     eng.msb.req.ready.eq(self.rd0.req.ready), grp_rd0.req.ready.eq(self.rd0.req.ready),
                     eng.msb.data.payload.eq(self.rd0.data.payload), grp_rd0.data.payload.eq(self.rd0.data.payload),
                     eng.msb.data.valid.eq(self.rd0.data.valid & eng.weights),
                     grp_rd0.data.valid.eq(self.rd0.data.valid & ~eng.weights),
                     self.rd0.data.ready.eq(Mux(eng.weights, eng.msb.data.ready, grp_rd0.data.ready))]
        # off-chip port 1: the engine's LSB planes and the multiplier loads, each request's lines to its owner
        share1 = m.submodules.port1 = PortShare(cfg, dims.g_max + 2)
        connect(m, share1.a, eng.lsb)
        connect(m, share1.b, loads.rd)
        connect(m, wiring.flipped(self.rd1), share1.port)
        connect(m, wiring.flipped(self.hb), eng.hb)
        connect(m, wiring.flipped(self.arm), eng.arm)
        connect(m, wiring.flipped(self.fill_done), eng.fill_done)
        connect(m, wiring.flipped(self.pe_port), eng.pe)

        off_lines = cfg.offchip.lines
        # the expert's token list, for the engine's lanes
        job = eng.job.payload
        # the engine's jobs: the route unit's router GEMV, or GEMV's (G_START, below, which
        # overrides these; the route unit is idle then)
        m.d.comb += [eng.job.valid.eq(rte.gemv.valid), eng.job.payload.eq(rte.gemv.payload),
                     rte.gemv.ready.eq(eng.job.ready),
                     rte.gemv_done.valid.eq(eng.done.valid), eng.done.ready.eq(rte.gemv_done.ready)]
        m.d.comb += [eng.tlist[i].eq(tlist[i]) for i in range(T)]

        # ==========================================================================================
        # the dispatcher, LOADM and GEMV
        # ==========================================================================================
        missing = Signal()
        for o_, regs_ in NEEDS.items():
            with m.If(op == o_):
                m.d.comb += missing.eq(~Cat(*[self.regs_set[int(x)] for x in regs_]).all())

        # LOADM's lines, GEMV's projection and bits
        tmp_off = Signal(cfg.offchip.addr_bits + vw + 20)
        proj = Signal(2)
        bits_full = Signal()

        def fail(code):
            m.d.sync += err.eq(code)
            m.next = "DONE"

        def ok():
            m.d.sync += err.eq(Status.NONE)
            m.next = "DONE"


        # -- multipliers loaded ahead (hw/executor/loads.py): after ROUTE the first expert of the
        # mask, after each LOADM the next one above it; LOADM's own load overrides (LM_ISSUE)
        pf_want = Signal(name="pf_want")
        pf_from = Signal(len(expert) + 1, name="pf_from")
        cand = Signal(self.n_experts, name="pf_cand")
        m.d.comb += cand.eq(Cat(*[mask[e] & (pf_from <= e) for e in range(self.n_experts)]))
        nxt = Signal(range(self.n_experts), name="pf_expert")
        for e in reversed(range(self.n_experts)):
            with m.If(cand[e]):
                m.d.comb += nxt.eq(e)
        pf_base = Signal.like(tmp_off, name="pf_base")
        pf_len = Signal(cfg.offchip.len_bits + 2, name="pf_len")
        m.d.comb += [pf_base.eq((r.e_addr + nxt * r.e_stride + 2 * r.plane_lines) << _log2(R_OFF)),
                     pf_len.eq((2 * fwords + dwords) * MULT_BYTES)]
        pf_regs = Cat(*[self.regs_set[int(x)] for x in NEEDS[Op.LOADM]]).all()
        with m.If(pf_want & loads.job.ready):
            with m.If(cand.any() & pf_regs & (pf_base + pf_len <= off_lines)):
                m.d.comb += [loads.job.valid.eq(1), loads.job.payload.base.eq(pf_base),
                             loads.job.payload.length.eq(pf_len), loads.job.payload.bank.eq(~mbank)]
            m.d.sync += pf_want.eq(0)
        with m.If(rte.routed):                   # ROUTE's last token: load the mask's first expert
            m.d.sync += [pf_want.eq(1), pf_from.eq(0)]

        with m.FSM(name="exec"):
            with m.State("IDLE"):
                m.d.comb += self.exec.ready.eq(1)
                with m.If(self.exec.valid):
                    p = self.exec.payload
                    m.d.sync += [op.eq(p.op), cmd_word.eq(p.word), expert.eq(p.expert), shared.eq(p.shared),
                                 in_loop.eq(p.in_loop)]
                    m.next = "CHECK"
            with m.State("DONE"):
                m.d.comb += self.done.valid.eq(1)
                with m.If(self.done.ready):
                    m.next = "IDLE"
            with m.State("ROUTE"):
                m.d.comb += [self.done.valid.eq(rte.done.valid), self.done.payload.eq(rte.done.payload),
                             rte.done.ready.eq(self.done.ready)]
                with m.If(rte.done.valid & self.done.ready):
                    m.next = "IDLE"
            with m.State("FETCH"):
                m.d.comb += [self.done.valid.eq(fetch.done.valid), self.done.payload.eq(fetch.done.payload),
                             fetch.done.ready.eq(self.done.ready)]
                with m.If(fetch.done.valid & self.done.ready):
                    m.next = "IDLE"
            with m.State("GROUP"):
                m.d.comb += [self.done.valid.eq(grp.done.valid), self.done.payload.eq(grp.done.payload),
                             grp.done.ready.eq(self.done.ready)]
                with m.If(grp.done.valid & self.done.ready):
                    m.next = "IDLE"
            with m.State("VEC"):
                m.d.comb += [self.done.valid.eq(vec.done.valid), self.done.payload.eq(vec.done.payload),
                             vec.done.ready.eq(self.done.ready)]
                with m.If(vec.done.valid & self.done.ready):
                    with m.If((op == Op.SWIGLU) & (vec.done.payload.error == StatusShape.NONE)):
                        m.d.sync += done_h.eq(1)
                    m.next = "IDLE"
            with m.State("CHECK"):
                body_ops = Cat(*[op == o_ for o_ in (Op.FETCH, Op.LOADM, Op.GEMV, Op.SWIGLU, Op.COMBINE)]).any()
                with m.If(missing):
                    fail(Status.REGISTER)
                with m.Elif(body_ops & ~in_loop):
                    fail(Status.ORDER)
                with m.Elif(body_ops & (~ctx_valid | (ctx_expert != expert) | (ctx_shared != shared))):
                    m.d.sync += [ctx_expert.eq(expert), ctx_shared.eq(shared),
                                 mults_ok.eq(0),
                                 done_g.eq(0), done_u.eq(0), done_d.eq(0), done_h.eq(0)]
                    m.d.comb += [fetch.forget.eq(1), ctx.build.valid.eq(1), ctx.build.payload.expert.eq(expert),
                                 ctx.build.payload.shared.eq(shared)]
                    m.next = "CTX"
                with m.Else():
                    m.next = "DISPATCH"
            with m.State("CTX"):
                # the context unit walks the group's tokens (one per cycle)
                m.d.comb += ctx.built.ready.eq(1)
                with m.If(ctx.built.valid):
                    m.d.sync += ctx_valid.eq(1)
                    m.next = "DISPATCH"
            with m.State("DISPATCH"):
                with m.Switch(op):
                    with m.Case(Op.LOADX, Op.LOADP):
                        # a group-load job (hw/executor/group.py); its done is the command's
                        m.d.comb += [grp.job.valid.eq(1), gjob.op.eq(Mux(op == Op.LOADX, GroupOp.LOADX, GroupOp.LOADP)),
                                     gjob.tokens.eq(r.tokens), gjob.d_model.eq(r.d_model), gjob.d_ffn.eq(r.d_ffn),
                                     gjob.n_experts.eq(r.n_experts), gjob.addr.eq(Mux(op == Op.LOADX, r.x_addr, r.p_addr))]
                        with m.If(grp.job.ready):
                            m.next = "GROUP"
                    with m.Case(Op.ROUTE):
                        # a route job (hw/executor/route.py); its done is the command's
                        rj = rte.job.payload
                        m.d.comb += [rte.job.valid.eq(1), rj.k.eq(field("k", Op.ROUTE)),
                                     rj.cached.eq(field("choice", Op.ROUTE) == Choice.CACHED), rj.order.eq(x_ok & p_ok),
                                     rj.top_k.eq(r.top_k), rj.n_experts.eq(r.n_experts), rj.p_addr.eq(r.p_addr),
                                     rj.layer.eq(r.layer)]
                        with m.If(rte.job.ready):
                            m.next = "ROUTE"
                    with m.Case(Op.FETCH):
                        # a fetch job (hw/executor/fetch.py); its done is the command's
                        m.d.comb += [fetch.job.valid.eq(1), fjob.plane.eq(field("plane", Op.FETCH)),
                                     fjob.update.eq(field("update", Op.FETCH)), fjob.expert.eq(expert),
                                     fjob.maxw.eq(maxw), fjob.layer.eq(r.layer), fjob.e_addr.eq(r.e_addr),
                                     fjob.e_stride.eq(r.e_stride), fjob.plane_lines.eq(r.plane_lines),
                                     fjob.hb_base.eq(r.hb_base)]
                        with m.If(fetch.job.ready):
                            m.next = "FETCH"
                    with m.Case(Op.LOADM):
                        m.next = "LM_CHECK"
                    with m.Case(Op.GEMV):
                        m.d.sync += [proj.eq(field("proj", Op.GEMV)), bits_full.eq(field("bits", Op.GEMV) == Bits.FULL)]
                        m.next = "G_CHECK"
                    with m.Case(Op.SWIGLU, Op.COMBINE, Op.STOREY):
                        # a vector-step job (hw/executor/vector.py); its done is the command's
                        m.d.comb += [vec.job.valid.eq(1), vjob.y_addr.eq(r.y_addr)]
                        with m.Switch(op):
                            with m.Case(Op.SWIGLU):
                                m.d.comb += [vjob.op.eq(VecOp.SWIGLU), vjob.order.eq(done_g & done_u & mults_ok)]
                            with m.Case(Op.COMBINE):
                                m.d.comb += [vjob.op.eq(VecOp.COMBINE), vjob.order.eq(done_d & mults_ok)]
                            with m.Default():
                                m.d.comb += [vjob.op.eq(VecOp.STOREY), vjob.order.eq(x_ok)]
                        with m.If(vec.job.ready):
                            m.next = "VEC"
                    with m.Default():
                        ok()

            # ---- LOADM ------------------------------------------------------------------------------
            with m.State("LM_CHECK"):
                base = (r.e_addr + expert * r.e_stride + 2 * r.plane_lines) << _log2(R_OFF)
                n_lines = (2 * fwords + dwords) * MULT_BYTES
                with m.If(base + n_lines > off_lines):
                    fail(Status.ADDRESS)
                with m.Elif((loads.busy | loads.loaded) & (loads.tag_base == base) & (loads.tag_len == n_lines)):
                    m.d.sync += mults_ok.eq(0)
                    m.next = "LM_WAIT"          # loaded ahead (or loading): wait for its last line
                with m.Else():
                    m.d.sync += [mults_ok.eq(0), tmp_off.eq(base)]
                    m.next = "LM_ISSUE"
            with m.State("LM_ISSUE"):
                # a load of its own into the other bank, once the unit is free
                m.d.comb += [loads.job.valid.eq(1), loads.job.payload.base.eq(tmp_off),
                             loads.job.payload.length.eq((2 * fwords + dwords) * MULT_BYTES),
                             loads.job.payload.bank.eq(~mbank)]
                with m.If(loads.job.ready):
                    m.next = "LM_WAIT"
            with m.State("LM_WAIT"):
                with m.If(~loads.busy):
                    m.d.comb += loads.use.eq(1)
                    m.d.sync += [mbank.eq(loads.tag_bank), pf_want.eq(1), pf_from.eq(expert + 1)]
                    with m.If(loads.bad):
                        fail(Status.INPUT)
                    with m.Else():
                        m.d.sync += mults_ok.eq(1)
                        ok()

            # ---- GEMV -------------------------------------------------------------------------------
            with m.State("G_CHECK"):
                with m.If(~pl_valid[0] | (bits_full & ~pl_valid[1]) | ((proj == Proj.DOWN) & ~done_h)):
                    fail(Status.ORDER)
                with m.Elif(bits_full & pl_hb[1]):
                    fail(Status.RANGE)          # an LSB plane read from HB: not supported by this core
                with m.Else():
                    m.next = "G_START"
            with m.State("G_START"):
                # the projection's section of the expert's planes, per lane group of its tokens
                is_down = proj == Proj.DOWN
                sec_off = proj * sec_lines << _log2(R_OFF)
                sec_hb = proj * sec_lines * R_HB
                m.d.comb += [eng.job.valid.eq(1),
                             job.groups.eq((nact + LANES - 1) // LANES if LANES > 1 else nact),
                             job.nt.eq(Mux(is_down, dwords, fwords)), job.kb.eq(Mux(is_down, fwords, dwords)),
                             job.mode.eq(Mux(bits_full, Mode.FULL, Mode.DRAFT)), job.src_h.eq(is_down),
                             job.dest.eq(proj), job.ident.eq(0), job.ntok.eq(nact), job.lsb.eq(bits_full),
                             job.fill.eq(pl_fill & ~pl_hb[0]), job.msb_hb.eq(pl_hb[0]),
                             job.msb_base.eq(Mux(pl_hb[0], pl_hbase[0] + sec_hb, pl_off[0] + sec_off)),
                             job.msb_len.eq(Mux(pl_hb[0], sec_lines * R_HB, sec_lines << _log2(R_OFF))),
                             job.lsb_base.eq(pl_off[1] + sec_off), job.lsb_len.eq(sec_lines << _log2(R_OFF)),
                             job.fill_base.eq(pl_hbase[0] + sec_hb), job.fill_len.eq(sec_lines * R_HB)]
                with m.If(eng.job.ready):
                    m.next = "G_WAIT"
            with m.State("G_WAIT"):
                m.d.comb += eng.done.ready.eq(1)
                with m.If(eng.done.valid):
                    m.next = "G_FILL"
            with m.State("G_FILL"):
                # a filling plane: the command ends once HB has acknowledged the section's writes
                with m.If(eng.fill_idle):
                    with m.Switch(proj):
                        with m.Case(Proj.GATE):
                            m.d.sync += done_g.eq(1)
                        with m.Case(Proj.UP):
                            m.d.sync += done_u.eq(1)
                        with m.Default():
                            m.d.sync += done_d.eq(1)
                    ok()

        return m
