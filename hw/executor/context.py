"""The expert context: the routing table and, per loop iteration, the expert's token list and gate weights.

- ``route`` (one beat per token, from ROUTE's router results): token ``token`` chose ``count``
  experts ``expert[slot]`` with gate weights ``weight[slot]``; written into the routing table in
  the cycle it is taken (``ready`` is always 1).
- ``build`` (``expert``, ``shared``): walk the group's ``ntok`` tokens, one per cycle, and list
  those that run the expert (every token for a shared expert, with gate weight 1.0, i.e.
  ``1 << GATE_FRAC``); ``built`` is valid in the cycle after the last token, held until taken.
  ``build`` is ready only while no build runs.
- ``tlist[i]`` (i < ``nact``): the i-th token of the expert, in group order; ``weights[t]`` the gate
  weight of token ``t`` (valid for listed tokens); ``maxw`` the largest of them (the cache score).

A build of ``ntok`` tokens takes ``ntok + 1`` cycles from the ``build`` transfer to ``built``
(``elmoe3d/spec/timing.py`` charges them to the first body command of each expert).
"""

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ...spec.numerics import GATE_FRAC
from ..layouts import ArrayOf
from ..mux import pick
from .ports import token_list_layout


def route_layout(dims):
    """One token's routing: ``token``, ``count`` experts ``expert[slot]`` with ``weight[slot]``."""
    return data.StructLayout({"token": range(dims.tokens), "count": range(dims.slots + 1),
                              "expert": ArrayOf(range(dims.n_experts), dims.slots, index="slot"),
                              "weight": ArrayOf(GATE_FRAC + 1, dims.slots, index="slot")})


def build_layout(expert_bits):
    """A context request: the loop's ``expert`` id and whether it is a ``shared`` expert."""
    return data.StructLayout({"expert": expert_bits, "shared": 1})


class ExpertContext(wiring.Component):
    """See the module docstring. ``dims``: :class:`~.buffers.Dims`; ``expert_bits``: width of an expert id."""

    # Written into the generated interface documentation (hw/interface_doc.py).
    INTERFACE_NOTES = (
        "`route` (ready always 1): one beat per token, written into the routing table in the cycle "
        "it is taken: token `token` chose the first `count` of `expert[slot]`, with gate weights "
        "`weight[slot]` (fraction bits: 15).",
        "`build` (ready while no build runs): the context of expert `expert` (`shared`: every "
        "token runs it with weight 1.0). The unit walks tokens 0 .. `ntok`-1, one per cycle; "
        "`built` is valid `ntok` + 1 cycles after the `build` transfer and held until taken.",
        "Outputs (registers, stable from `built` to the next build): `nact` tokens, `tlist[i]` the "
        "i-th in group order, `weights[t]` token t's gate weight (listed tokens only), `maxw` the "
        "largest.",
    )

    def __init__(self, dims, expert_bits):
        self.dims = dims
        T = dims.tokens
        super().__init__({
            "route": In(stream.Signature(route_layout(dims))),
            "build": In(stream.Signature(build_layout(expert_bits))),
            "built": Out(stream.Signature(1)),
            "ntok": In(range(T + 1)),
            "tlist": Out(token_list_layout(T)),
            "weights": Out(ArrayOf(GATE_FRAC + 1, T, index="token")),
            "nact": Out(range(T + 1)),
            "maxw": Out(GATE_FRAC + 1),
        })

    def elaborate(self, platform):
        m = Module()
        d = self.dims
        T, K = d.tokens, d.slots

        # -- the routing table ------------------------------------------------------------------
        count = [Signal(range(K + 1), name=f"count{t}") for t in range(T)]
        rexp = [[Signal(range(d.n_experts), name=f"rexp{t}_{j}") for j in range(K)] for t in range(T)]
        rw = [[Signal(GATE_FRAC + 1, name=f"rw{t}_{j}") for j in range(K)] for t in range(T)]
        r = self.route.payload
        m.d.comb += self.route.ready.eq(1)
        with m.If(self.route.valid):
            for t in range(T):
                with m.If(r.token == t):
                    m.d.sync += count[t].eq(r.count)
                    for j in range(K):
                        m.d.sync += [rexp[t][j].eq(r.expert[j]), rw[t][j].eq(r.weight[j])]

        # -- the context of one expert -------------------------------------------------------------
        busy = Signal(name="busy")
        li = Signal(range(T + 1), name="token")          # the token being examined
        expert = Signal.like(self.build.payload.expert, name="expert")
        shared = Signal(name="shared")
        nact = Signal(range(T + 1), name="nact")
        maxw = Signal(GATE_FRAC + 1, name="maxw")
        tlist = [Signal(range(T), name=f"tlist{i}") for i in range(T)]
        tw = [Signal(GATE_FRAC + 1, name=f"tw{t}") for t in range(T)]
        m.d.comb += [self.nact.eq(nact), self.maxw.eq(maxw)]
        m.d.comb += [self.tlist[i].eq(tlist[i]) for i in range(T)]
        m.d.comb += [self.weights[t].eq(tw[t]) for t in range(T)]

        m.d.comb += self.build.ready.eq(~busy)
        with m.If(self.build.valid & ~busy):
            m.d.sync += [busy.eq(1), li.eq(0), nact.eq(0), maxw.eq(0), expert.eq(self.build.payload.expert),
                         shared.eq(self.build.payload.shared)]
        with m.If(busy):
            # token li of the group: does it run this expert, with which gate weight?
            act = Signal(name="active")
            wsel = Signal(GATE_FRAC + 1, name="weight")
            cnt_t = pick(count, li)
            hits = []
            for j in range(K):
                h_ = (j < cnt_t) & (pick([rexp[t][j] for t in range(T)], li) == expert)
                hits.append(h_)
                with m.If(h_):
                    m.d.comb += wsel.eq(pick([rw[t][j] for t in range(T)], li))
            m.d.comb += act.eq(shared | Cat(*hits).any())
            with m.If(shared):
                m.d.comb += wsel.eq(1 << GATE_FRAC)
            with m.If(li < self.ntok):
                with m.If(act):
                    for i in range(T):
                        with m.If(nact == i):
                            m.d.sync += tlist[i].eq(li)
                    for t in range(T):
                        with m.If(li == t):
                            m.d.sync += tw[t].eq(wsel)
                    m.d.sync += nact.eq(nact + 1)
                    with m.If(wsel > maxw):
                        m.d.sync += maxw.eq(wsel)
                m.d.sync += li.eq(li + 1)
            with m.Else():
                m.d.comb += self.built.valid.eq(1)
                with m.If(self.built.ready):
                    m.d.sync += busy.eq(0)
        return m
