"""The executor's internal protocols: one named ``wiring.Signature`` or layout per protocol, declared once.

- :class:`BufferRead` (client's view): ``raddr``, ``ren`` out, ``rdata[t]`` in. Every bank of a
  :class:`~elmoe3d.hw.token_buffer.TokenBuffer` reads word ``raddr`` when ``ren`` is high; the
  words come back on ``rdata[t]`` one cycle later and hold while ``ren`` is low.
- :class:`BufferWrite` (client's view): ``we[t]``, ``waddr[t]``, ``wdata[t]`` out, one per bank.
- :func:`gemv_job_layout`: one GEMV job for :class:`~elmoe3d.hw.executor.gemv.GemvEngine` (what
  ROUTE and GEMV hand it; every field is in words of W elements or in tier lines).
- :func:`vector_job_layout` (with :class:`VecOp`): one job for
  :class:`~elmoe3d.hw.executor.vector.VectorSteps` (SWIGLU, COMBINE, STOREY).
- :class:`MultRead` (client's view): a read port of the multiplier table's running bank.
- :func:`group_job_layout` (with :class:`GroupOp`): one job for
  :class:`~elmoe3d.hw.executor.group.GroupLoads` (LOADX, LOADP).
- :func:`fetch_job_layout`, :func:`planes_layout`: one job for
  :class:`~elmoe3d.hw.executor.fetch.Fetch` and where the expert's planes are.
- :func:`route_job_layout`: one job for :class:`~elmoe3d.hw.executor.route.Route`.
"""

from amaranth.lib import enum

from amaranth.hdl import Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..layouts import ArrayOf, Mode


def _abits(depth):
    return max(1, (depth - 1).bit_length())


class BufferRead(wiring.Signature):
    """A token buffer's read port as a client sees it (``tokens`` banks of ``depth`` words ``word``)."""

    def __init__(self, tokens, depth, word):
        self.tokens, self.depth, self.word = tokens, depth, word
        super().__init__({"raddr": Out(_abits(depth)), "ren": Out(1), "rdata": In(word).array(tokens)})

    def __eq__(self, other):
        return type(other) is type(self) and (self.tokens, self.depth, self.word) == (other.tokens, other.depth, other.word)

    def __repr__(self):
        return f"BufferRead({self.tokens}, {self.depth}, {self.word!r})"


class BufferWrite(wiring.Signature):
    """A token buffer's write port as a client sees it: bank ``t`` writes ``wdata[t]`` at ``waddr[t]`` when ``we[t]``."""

    def __init__(self, tokens, depth, word):
        self.tokens, self.depth, self.word = tokens, depth, word
        a = _abits(depth)
        super().__init__({"we": Out(1).array(tokens), "waddr": Out(a).array(tokens), "wdata": Out(word).array(tokens)})

    def __eq__(self, other):
        return type(other) is type(self) and (self.tokens, self.depth, self.word) == (other.tokens, other.depth, other.word)

    def __repr__(self):
        return f"BufferWrite({self.tokens}, {self.depth}, {self.word!r})"


class Dest:
    """The accumulator buffer a GEMV job writes (``gemv_job_layout.dest``): gate, up, down/router."""
    GA, UA, DA = 0, 1, 2


def gemv_job_layout(dims):
    """One GEMV job (see :class:`~elmoe3d.hw.executor.gemv.GemvEngine`); ``dims`` is the
    executor's :class:`~elmoe3d.hw.executor.buffers.Dims`.

    ``groups`` lane groups of ``ntok`` tokens (lane j of group g takes token ``tlist[g*lanes+j]``,
    or ``g*lanes+j`` itself when ``ident``); ``nt`` row tiles (words written per token), ``kb``
    words of activations per row tile, ``mode`` DRAFT/FULL; activations from ``h`` when ``src_h``
    (else ``x``); results into ``dest`` (:class:`Dest`); the MSB plane from HB when ``msb_hb``
    (else off-chip port 0) at ``msb_base``/``msb_len`` tier lines; ``lsb``: a FULL GEMV whose LSB
    plane streams on port 1 from ``lsb_base``/``lsb_len``; ``fill``: lane group 0's off-chip MSB
    stream is teed into HB lines ``fill_base``/``fill_len`` (the fill arm).
    """
    cfg = dims.config
    return data.StructLayout({
        "groups": range(dims.g_max + 1),
        "nt": range(max(dims.d_words, dims.f_words, dims.e_words) + 1),
        "kb": range(max(dims.d_words, dims.f_words) + 1),
        "mode": Mode, "src_h": 1, "dest": 2, "ident": 1,
        "ntok": range(dims.tokens + 1), "lsb": 1, "fill": 1, "msb_hb": 1,
        "msb_base": max(cfg.offchip.addr_bits, cfg.hb.addr_bits) + 2,
        "msb_len": max(cfg.offchip.len_bits, cfg.hb.len_bits) + 2,
        "lsb_base": cfg.offchip.addr_bits + 2, "lsb_len": cfg.offchip.len_bits + 2,
        "fill_base": cfg.hb.addr_bits + 2, "fill_len": cfg.hb.len_bits + 2,
    })


def token_list_layout(tokens):
    """The expert's token list: entry i is the group index of its i-th token."""
    return ArrayOf(range(tokens), tokens, index="entry")


def record_layout(record):
    """A memory-image record of ``elmoe3d/spec/image.py`` (``SCALARS``, ``MULTIPLIER``,
    ``TOKEN_SCALE``) as a data layout: each field at the bit offset and width ``record.bits()``
    gives, the record ``8 * record.size`` bits wide (the rest is padding)."""
    return data.FlexibleLayout(8 * record.size, {name: data.Field(unsigned(width), offset)
                                                 for name, (offset, width) in record.bits().items()})


def request_register(m, port, name):
    """Registers ``(valid, base, length)`` driving the request stream ``port`` of a memory port
    (``{name}_v``, ``{name}_base``, ``{name}_len``); ``valid`` clears when the request is taken."""
    v = Signal(name=f"{name}_v")
    base = Signal.like(port.payload.base, name=f"{name}_base")
    length = Signal.like(port.payload.length, name=f"{name}_len")
    m.d.comb += [port.valid.eq(v), port.payload.base.eq(base), port.payload.length.eq(length)]
    with m.If(port.valid & port.ready):
        m.d.sync += v.eq(0)
    return v, base, length


class MultRead(wiring.Signature):
    """A read port of the multiplier table's running bank (client's view): word ``addr`` (W
    entries of the image's ``MULTIPLIER`` record) read when ``en``, on ``data`` one cycle later
    (held while ``en`` is low). ``W``: vector width; ``words``: words of one bank."""

    def __init__(self, W, words):
        from ...spec.image import MULTIPLIER
        self.W, self.words = W, words
        super().__init__({"addr": Out(range(max(2, words))), "en": Out(1),
                          "data": In(ArrayOf(record_layout(MULTIPLIER), W, index="entry"))})

    def __eq__(self, other):
        return type(other) is type(self) and (self.W, self.words) == (other.W, other.words)

    def __repr__(self):
        return f"MultRead({self.W}, {self.words})"


class VecOp(enum.Enum, shape=2):
    """The vector step a :class:`~elmoe3d.hw.executor.vector.VectorSteps` job runs."""
    SWIGLU = 0
    COMBINE = 1
    STOREY = 2


def vector_job_layout(y_bits):
    """One vector-step job: ``op`` (:class:`VecOp`), ``order`` (the command's prerequisites ran:
    ORDER when 0) and, for STOREY, ``y_addr`` (the Y block's image line, ``y_bits`` bits)."""
    return data.StructLayout({"op": VecOp, "order": 1, "y_addr": y_bits})


class GroupOp(enum.Enum, shape=1):
    """The load a :class:`~elmoe3d.hw.executor.group.GroupLoads` job runs."""
    LOADX = 0
    LOADP = 1


def group_job_layout(value_bits):
    """One LOADX / LOADP job: ``op`` (:class:`GroupOp`) and the registers it reads (each
    ``value_bits`` wide, as SETR sets them): ``tokens``, ``d_model``, ``d_ffn`` (LOADX),
    ``n_experts`` (LOADP) and ``addr`` (``X_ADDR`` for LOADX, ``P_ADDR`` for LOADP; image lines)."""
    return data.StructLayout({"op": GroupOp, "tokens": value_bits, "d_model": value_bits, "d_ffn": value_bits,
                              "n_experts": value_bits, "addr": value_bits})


def fetch_job_layout(cfg):
    """One FETCH job: the command's ``plane`` (0 MSB, 1 LSB) and ``update``
    (:class:`~elmoe3d.spec.isa.Update`), the loop's ``expert``, the expert's largest gate weight
    ``maxw`` (the cache score) and the registers it reads (``layer``, ``e_addr``, ``e_stride``,
    ``plane_lines``, ``hb_base``; image lines)."""
    from ...spec.isa import field_widths
    from ...spec.numerics import GATE_FRAC
    vw = field_widths(cfg)["value"]
    return data.StructLayout({"plane": 1, "update": 1, "expert": cfg.cache.expert_bits + 1, "maxw": GATE_FRAC + 1,
                              "layer": vw, "e_addr": vw, "e_stride": vw, "plane_lines": vw, "hb_base": vw})


def planes_layout(cfg):
    """Where the running expert's planes are (FETCH's result, GEMV's operands): per plane p
    (0 MSB, 1 LSB) ``valid[p]`` (fetched), ``hb[p]`` (read from HB), ``off[p]`` (its first
    off-chip line), ``hbase[p]`` (its HB slot's first HB line); ``fill``: the MSB plane is being
    filled into HB (a LOOKUP that missed and fills)."""
    return data.StructLayout({"valid": 2, "hb": 2, "fill": 1,
                              "off": ArrayOf(unsigned(cfg.offchip.addr_bits + 2), 2, index="plane"),
                              "hbase": ArrayOf(unsigned(cfg.hb.addr_bits + 2), 2, index="plane")})


def route_job_layout(cfg):
    """One ROUTE job: the command's ``k`` and ``cached`` (the choice), ``order`` (LOADX and LOADP
    ran) and the registers it reads (``top_k``, ``n_experts``, ``p_addr``, ``layer``)."""
    from ...spec.isa import field_widths
    vw = field_widths(cfg)["value"]
    return data.StructLayout({"k": vw, "cached": 1, "order": 1, "top_k": vw, "n_experts": vw, "p_addr": vw,
                              "layer": vw})
