"""The vector unit of the accelerator core: its four blocks side by side in one top.

``VectorUnit`` instantiates :class:`~.vector_requant.VectorRequant`,
:class:`~.vector_swiglu.VectorSwiGLU`, :class:`~.vector_router.VectorRouter` and
:class:`~.vector_combine.VectorCombine` and forwards each block's ports unchanged under the
block's name (``requant__i_data__payload``, ``router__o_result__valid``, ...). The blocks share
nothing but the clock and the reset: each keeps its own interface, latency and rules (see its
module). The core's sequencer (issue 9, not here) drives them: the router from ``ROUTE``, the
requantizer and the SwiGLU step from ``SWIGLU``, the requantizer and the combine from
``COMBINE``, the final saturation from ``STOREY``. The shared widths, layouts and the
requantization datapath are in ``hw/vector_common.py``; this top is what ``elmoe3d synth``
measures as the vector unit's area and Fmax.
"""

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import Out

from ..config import VectorConfig
from .tops import Param, Top
from .vector_combine import VectorCombine
from .vector_common import check_width
from .vector_requant import VectorRequant
from .vector_router import DEFAULT_MAX_EXPERTS, DEFAULT_MAX_K, VectorRouter
from .vector_swiglu import VectorSwiGLU

BLOCKS = ("requant", "swiglu", "router", "combine")


class VectorUnit(wiring.Component):
    """The four vector-unit blocks in one top (ports prefixed with the block's name).

    Parameters
    ----------
    width : int
        Elements per beat of the requantizer, the SwiGLU step and the combine, 1..256
        (``VectorConfig.width``; default ``VectorConfig().width``).
    max_experts, max_k : int
        The router's limits (see :class:`~.vector_router.VectorRouter`).

    Members
    -------
    requant : Out(VectorRequant signature)    ``requant__i_data``, ``requant__o_data``
    swiglu : Out(VectorSwiGLU signature)      ``swiglu__i_table``, ``swiglu__i_data``, ``swiglu__o_data``
    router : Out(VectorRouter signature)      ``router__i_cmd``, ``router__i_logit``, ``router__o_result``
    combine : Out(VectorCombine signature)    ``combine__i_data``, ``combine__o_data``

    Raises
    ------
    UserError
        A parameter out of range (the block's own refusal).
    """

    INTERFACE_NOTES = (
        "Blocks: four independent blocks share `clk` and `rst`; every port is the block's own port "
        "with the block's name in front: `requant__*` (requant(acc, m, e, 8/16/32), latency "
        "{requant_latency}), `swiglu__*` (requant(SILU[g + 128] * v, hm, he, 8) with the run-time "
        "table on `swiglu__i_table`, latency {swiglu_latency}), `router__*` (top-k with ties to the "
        "lower expert, `cached` mask, gate weights; `router_cycles(n, count)` per token) and "
        "`combine__*` (acc + rshift_round(w * y, 15) into {combine_bits}-bit sums, `sat(., 32)` on "
        "`last`, latency {combine_latency}). `elmoe3d generate --top vector_requant` (and "
        "`vector_swiglu`, `vector_router`, `vector_combine`) documents each block's ports, ranges "
        "and out-of-range behaviour on its own; they are the same here.",
        "Elements per beat: {width}; router limits: {max_experts} experts, k <= {max_k}.",
    )

    def __init__(self, *, width=VectorConfig().width, max_experts=DEFAULT_MAX_EXPERTS, max_k=DEFAULT_MAX_K):
        self.width = check_width(width)
        self.requant_block = VectorRequant(width=width)
        self.swiglu_block = VectorSwiGLU(width=width)
        self.router_block = VectorRouter(max_experts=max_experts, max_k=max_k)
        self.combine_block = VectorCombine(width=width)
        self.max_experts, self.max_k = max_experts, max_k
        self.requant_latency = VectorRequant.LATENCY
        self.swiglu_latency = VectorSwiGLU.LATENCY
        self.combine_latency = VectorCombine.LATENCY
        self.combine_bits = VectorCombine.COMBINE_BITS
        super().__init__({name: Out(getattr(self, f"{name}_block").signature) for name in BLOCKS})

    def elaborate(self, platform):
        m = Module()
        for name in BLOCKS:
            block = getattr(self, f"{name}_block")
            m.submodules[name] = block
            wiring.connect(m, wiring.flipped(getattr(self, name)), block)
        return m


GENERATE_TOPS = [
    Top(name="vector_unit", help="vector unit: requant, SwiGLU step, router and combine side by side",
        build=lambda **p: VectorUnit(**p),
        params=(Param("width", int, VectorConfig().width, "elements per beat (VectorConfig.width)"),
                Param("max_experts", int, DEFAULT_MAX_EXPERTS, "largest number of experts ranked per token"),
                Param("max_k", int, DEFAULT_MAX_K, "largest number of experts chosen per token"))),
]
