"""Cycle model of the RTL core (``hw/core.py``): what the ISS charges per command.

The ISS (:mod:`.iss`) computes results; this module says how many clock cycles the core takes
for each command, from the configuration and the command's shape, with no memory stalls. It
follows the core's micro-architecture (``hw/executor.py``), so the core bench can hold the RTL
to it (within 10 % per pass):

- a read request of ``n`` lines of a tier costs ``latency + READ_EXTRA + n`` cycles (the off-chip
  interface and the HB interface each add ``READ_EXTRA`` = 3 cycles: request split, reorder/tag
  queue, output register);
- every command the executor runs costs a fixed handshake and state overhead (``*_FIXED``,
  measured on the RTL and named per command);
- a GEMV streams its weights once per lane group of ``lanes`` tokens, the groups pipelined: the
  first stream's latency is paid once, then each group costs the slower of the PE array
  (``gemv_cycles`` of its row tiles) and the weight stream (the lines it reads; two planes of
  the same tier share that tier's one line per cycle);
- ``ROUTE``: the router planes' GEMV as above (both planes off-chip), then the router block
  token by token (``router_cycles`` plus one cycle per word of logits read);
- the SiLU table has one write port: ``LOADP`` writes its 256 entries one per cycle;
- the vector steps take one word of ``width`` elements per cycle plus their pipeline depth;
- the first body command of an expert (a new loop iteration) first builds the expert's token
  list, one token of the group per cycle.
"""

from ..hw.pe_array import gemv_cycles
from ..hw.vector_router import router_cycles
from .int_moe import SILU_ENTRIES

READ_EXTRA = 3           # off-chip / HB interface: request to first line beyond the tier latency
LOADX_FIXED = 10
LOADP_FIXED = 10
LOADM_FIXED = 8
STOREY_FIXED = 11
FETCH_FIXED = 9          # + 1 for a LOOKUP (the cache's response is one stage later than a probe's)
SWIGLU_FIXED = 15        # read, two requantizers, SwiGLU pipeline, write
COMBINE_FIXED = 14       # read, requantizer, output-sum read, combine pipeline, write
GEMV_FIXED = 14
ROUTE_FIXED = 8
ROUTER_TOKEN_EXTRA = 0   # command and result handshakes per token
PROBE_CYCLES = 3         # one expert-cache probe (cached choice), request to answer taken
LOOP_FIXED = 2           # a loop's capture of its body, beyond one cycle per body word
SCALAR_BYTES = 8
MULT_BYTES = 4


def _ceil(a, b):
    return -(-a // b)


class CoreTiming:
    """Per-command cycle counts of the core for one :class:`~elmoe3d.config.AccelConfig`."""

    def __init__(self, config):
        self.config = config
        self.off_line = config.offchip.line_bytes
        self.hb_line = config.hb.line_bytes
        self.W = config.vector.width

    def read(self, tier, nbytes):
        """A read request of ``nbytes`` from ``tier`` (``"offchip"`` or ``"hb"``)."""
        if tier == "hb":
            return self.config.hb.latency + READ_EXTRA + _ceil(nbytes, self.hb_line)
        return self.config.offchip.latency + READ_EXTRA + _ceil(nbytes, self.off_line)

    def lines(self, tier, nbytes):
        return _ceil(nbytes, self.hb_line if tier == "hb" else self.off_line)

    def loadx(self, tokens, d):
        return (LOADX_FIXED + self.read("offchip", tokens * d) + self.read("offchip", tokens * MULT_BYTES))

    def loadp(self):
        return (LOADP_FIXED + self.read("offchip", SCALAR_BYTES) +
                self.config.offchip.latency + READ_EXTRA + SILU_ENTRIES)

    def loadm(self, d, f):
        return LOADM_FIXED + self.read("offchip", MULT_BYTES * (2 * f + d))

    def storey(self, tokens, d):
        return STOREY_FIXED + self.lines("offchip", 4 * tokens * d)

    def fetch(self, lookup):
        return FETCH_FIXED + int(bool(lookup))

    def context(self, tokens):
        """Building an expert's token list (the first body command of a loop iteration)."""
        return tokens + 1

    def swiglu(self, n, f):
        return SWIGLU_FIXED + n * _ceil(f, self.W)

    def combine(self, n, d):
        return COMBINE_FIXED + n * _ceil(d, self.W)

    def gemv(self, n_tokens, n, k, full, streams):
        """A GEMV of ``n`` outputs over ``k`` inputs for ``n_tokens`` tokens; ``streams`` maps a
        tier to the bytes one lane group reads from it."""
        a = self.config.array
        groups = _ceil(n_tokens, a.lanes)
        compute = gemv_cycles(k=k, cols=a.cols, mode="full" if full else "draft", pipeline=a.pipeline,
                              n=n, rows=a.rows)
        memory = max(self.lines(t, b) for t, b in streams.items())
        latency = max(self.read(t, 0) for t in streams)
        return GEMV_FIXED + latency + groups * max(compute, memory)

    def route(self, tokens, n_experts, d, counts, cached, plane_bytes):
        """Router GEMV (both planes off-chip) and the router block per token (``counts``: experts
        chosen per token)."""
        probes = PROBE_CYCLES * n_experts if cached else 0
        g = self.gemv(tokens, n_experts, d, True, {"offchip": 2 * plane_bytes})
        per_token = sum(router_cycles(n_experts, int(c)) + ROUTER_TOKEN_EXTRA + _ceil(n_experts, self.W)
                        for c in counts)
        return ROUTE_FIXED + probes + g + per_token

    def loop(self, body):
        return LOOP_FIXED + body
