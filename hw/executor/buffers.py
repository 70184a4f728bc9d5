"""The executor's dimensions and its on-chip token buffers, one read and one write port per client.

:class:`Dims` derives every size the executor's units share from the configuration (once).
:class:`Buffers` owns the six :class:`~elmoe3d.hw.token_buffer.TokenBuffer` s (words of W
elements, ``T`` = buffers.tokens banks each):

========  ==================  ============  =============================================
buffer    element             words         holds
========  ==================  ============  =============================================
``x``     INT8                d_max/W       the token group's activations (LOADX)
``h``     INT8                f_max/W       the expert's hidden vectors (SWIGLU)
``ga``    INT32               f_max/W       gate accumulators (GEMV GATE)
``ua``    INT32               f_max/W       up accumulators (GEMV UP)
``da``    INT32               max(d, E)/W   down accumulators (GEMV DOWN), router logits (ROUTE)
``o``     COMBINE_ACC (37 b)  d_max/W       the layer-output sums (COMBINE, STOREY)
========  ==================  ============  =============================================

Each buffer has one :class:`~.ports.BufferRead` / :class:`~.ports.BufferWrite` member per
client, named ``<buffer>_rd_<client>`` / ``<buffer>_wr_<client>`` (``clients``). Clients never
access one buffer in the same cycle (one command runs at a time and each command has one owner
of each port), so the ports are merged by priority on their enables: the first client whose
``ren`` (``we[t]``) is high sets the address (and data); ``rdata`` goes to every reader.
"""

from dataclasses import dataclass

from amaranth.hdl import Module, Mux, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In

from ...config import AccelConfig
from ..layouts import ArrayOf
from ..token_buffer import TokenBuffer
from ..vector_common import COMBINE_ACC
from .ports import BufferRead, BufferWrite


@dataclass(frozen=True)
class Dims:
    """Sizes the executor's units share, from one :class:`~elmoe3d.config.AccelConfig`.

    ``W`` vector width (elements per buffer word), ``tokens`` banks per buffer, ``lanes`` PE-array
    lanes, ``g_max`` most lane groups, ``d_words``/``f_words``/``e_words`` buffer words of
    d_max, f_max and the experts, ``n_experts`` experts the router holds, ``max_k`` router slots.
    """

    config: AccelConfig
    max_k: int

    @property
    def W(self):
        return self.config.vector.width

    @property
    def tokens(self):
        return self.config.buffers.tokens

    @property
    def lanes(self):
        return self.config.array.lanes

    @property
    def n_experts(self):
        return min(self.config.cache.n_experts, 1024)

    @property
    def slots(self):
        """Router slots: most experts a token may choose (at most the experts)."""
        return min(self.max_k, self.n_experts)

    @property
    def d_words(self):
        return -(-self.config.buffers.d_max // self.W)

    @property
    def f_words(self):
        return -(-self.config.buffers.f_max // self.W)

    @property
    def e_words(self):
        return -(-self.n_experts // self.W)

    @property
    def g_max(self):
        return -(-self.tokens // self.lanes)

    def buffers(self):
        """``{name: (depth, element shape)}`` of the token buffers (see the module docstring)."""
        return {"x": (self.d_words, signed(8)), "h": (self.f_words, signed(8)),
                "ga": (self.f_words, signed(32)), "ua": (self.f_words, signed(32)),
                "da": (max(self.d_words, self.e_words), signed(32)), "o": (self.d_words, COMBINE_ACC)}

    def word(self, name):
        depth, elem = self.buffers()[name]
        return ArrayOf(elem, self.W, index="elem")

    def read_port(self, name):
        depth, _ = self.buffers()[name]
        return BufferRead(self.tokens, depth, self.word(name))

    def write_port(self, name):
        depth, _ = self.buffers()[name]
        return BufferWrite(self.tokens, depth, self.word(name))


class Buffers(wiring.Component):
    """The token buffers of :class:`Dims` with one port per client (see the module docstring).

    ``clients``: ``{buffer: (readers, writers)}``, each a tuple of client names.
    """

    def __init__(self, dims, clients):
        self.dims, self.clients = dims, clients
        members = {}
        for name, (readers, writers) in clients.items():
            for c in readers:
                members[f"{name}_rd_{c}"] = In(dims.read_port(name))
            for c in writers:
                members[f"{name}_wr_{c}"] = In(dims.write_port(name))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        d = self.dims
        for name, (readers, writers) in self.clients.items():
            depth, elem = d.buffers()[name]
            buf = m.submodules[name] = TokenBuffer(tokens=d.tokens, depth=depth, width=d.W, elem=elem)
            rds = [getattr(self, f"{name}_rd_{c}") for c in readers]
            wrs = [getattr(self, f"{name}_wr_{c}") for c in writers]
            raddr, ren = rds[-1].raddr, rds[-1].ren
            for p in reversed(rds[:-1]):
                raddr, ren = Mux(p.ren, p.raddr, raddr), p.ren | ren
            m.d.comb += [buf.raddr.eq(raddr), buf.ren.eq(ren)]
            for p in rds:
                m.d.comb += [p.rdata[t].eq(buf.rdata[t]) for t in range(d.tokens)]
            for t in range(d.tokens):
                we, waddr, wdata = wrs[-1].we[t], wrs[-1].waddr[t], wrs[-1].wdata[t].as_value()
                for p in reversed(wrs[:-1]):
                    we, waddr, wdata = (p.we[t] | we, Mux(p.we[t], p.waddr[t], waddr),
                                        Mux(p.we[t], p.wdata[t].as_value(), wdata))
                m.d.comb += [buf.we[t].eq(we), buf.waddr[t].eq(waddr), buf.wdata[t].eq(wdata)]
        return m
