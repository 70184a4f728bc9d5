"""Cycle formulas: the one place the accelerator's timing is written down.

Everything here is pure Python on the configuration and the shape of the work, with no memory
stalls. The RTL benches measure the blocks against these formulas (exactly, or within the
tolerance a bench states), the ISS (``sim/machine/iss.py``) charges them per command, the generated
interface pages quote them, and ``perf`` builds its PE-array time from :func:`gemv_cycles`.

PE array (``hw/pe_array.py``)
-----------------------------
A GEMV of ``n`` outputs is ``ceil(n / rows)`` row-tile commands, each of ``beats = phases *
ceil(k / cols)`` beats (2 phases in FULL, 1 in DRAFT and on the INT8 baseline; a ``k = 0``
command counts one). The result register is double-buffered: the next command is taken in the
cycle of the last beat and its beats stream while the last result drains, so a run of ``T``
commands costs ``1`` (accept) ``+ beats + (T - 1) * max(beats, pipeline + 3) + pipeline`` (drain)
``+ 2`` (capture, result transfer) cycles, from the first command transfer to the last result
transfer, with a consumer that is always ready. ``pipeline + 3`` is the shortest period: a
command's last beat waits until the previous result has been captured and taken. Batch lanes
cost nothing extra.

Vector router (``hw/vector_router.py``)
---------------------------------------
One token: accept (1), ``n`` logits, the weight pipeline (``count + WEIGHT_PIPELINE``) and the
divider (``DIVIDE_CYCLES``) when ``count`` experts are chosen (one cycle otherwise), result
transfer (1).

Off-chip interface (``hw/offchip.py``)
--------------------------------------
A read of ``n`` lines takes ``latency + n + READ_OVERHEAD`` cycles from the request transfer to
the last line's transfer: request -> splitter (1), arbiter register (1), tag/FIFO pipeline (2),
last line. The HB read interface adds the same overhead beyond its latency.

The core (``hw/core.py``): per command
--------------------------------------
:class:`CoreTiming` says how many clock cycles the core takes for each command, from the
configuration and the command's shape, with no memory stalls; the ISS charges it. It follows the
core's micro-architecture (``hw/executor/``), so the core bench can hold the RTL to it (within
10 % per pass):

- a read request of ``n`` lines of a tier costs ``latency + READ_OVERHEAD + n`` cycles (the off-chip
  interface and the HB interface each add ``READ_OVERHEAD`` = 3 cycles: request split, reorder/tag
  queue, output register);
- every command the executor runs costs a fixed handshake and state overhead (``*_FIXED``,
  measured on the RTL and named per command);
- a GEMV streams its weights once per lane group of ``lanes`` tokens, the groups pipelined and
  their row tiles back to back on the array: the first stream's latency is paid once, then the
  slower of the PE array (:func:`gemv_cycles` of all the groups' row tiles) and the weight
  streams (the lines every group reads; two planes of the same tier share that tier's one line
  per cycle);
- ``ROUTE``: the router planes' GEMV as above (both planes off-chip), then the router block
  token by token (``router_cycles`` plus one cycle per word of logits read);
- the SiLU table has one write port: ``LOADP`` writes its 256 entries one per cycle;
- multipliers are loaded ahead (``hw/executor/loads.py``): after ``ROUTE`` the first expert of its
  mask and after each ``LOADM`` the next one are read on the loads unit's port while the
  commands go on (:meth:`CoreTiming.mult_load` from that point); ``LOADM`` waits only for what
  is left of that load, or loads its own when it was not the one loaded ahead; the load's lines
  share the off-chip bus with the next GEMV that streams off-chip (the ISS adds them to its
  off-chip stream);
- the vector steps take one word of ``width`` elements per cycle plus their pipeline depth;
- the first body command of an expert (a new loop iteration) first builds the expert's token
  list, one token of the group per cycle.
"""

from ..errors import UserError
from .image import MULTIPLIER, OUT_ELEMENT_BYTES, SCALARS, SILU_ENTRIES, TOKEN_SCALE, ceil_div as _ceil
from .numerics import GATE_FRAC

# -- PE array ---------------------------------------------------------------------------------
MODES = ("draft", "full", "int8")
MAX_PIPELINE = 3
DEFAULT_PIPELINE = 3     # the timing-closed default (1 before issue 11)
PIPELINE_CHOICES = tuple(range(MAX_PIPELINE + 1))
ARRAY_OVERHEAD = 3       # accept, result capture, result transfer: once per run of row tiles
                         # (+ pipeline: also the shortest period of one tile in a run)


def check_pipeline(pipeline):
    """Refuse a PE pipeline depth outside ``0..MAX_PIPELINE``."""
    if isinstance(pipeline, bool) or not isinstance(pipeline, int) or pipeline not in PIPELINE_CHOICES:
        raise UserError(f"pipeline must be an integer in 0..{MAX_PIPELINE}, got {pipeline!r}")
    return pipeline


def phases(mode):
    """Passes over the weights per GEMV: 2 in FULL (MSB then LSB plane), 1 otherwise."""
    return 2 if mode == "full" else 1


def gemv_cycles(*, k, cols, mode, pipeline=DEFAULT_PIPELINE, n=None, rows=None):
    """Clock cycles of a GEMV with no stalls (what the benches measure), from the first command
    transfer to the last result transfer: one row tile of ``k`` inputs, or with ``n`` and
    ``rows`` the whole GEMV of ``ceil(n / rows)`` row tiles issued back to back."""
    if mode not in MODES:
        raise UserError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    check_pipeline(pipeline)
    tiles = 1 if n is None else _ceil(n, rows)
    if tiles == 0:
        return 0
    beats = max(1, phases(mode) * _ceil(k, cols))
    period = max(beats, pipeline + ARRAY_OVERHEAD)
    return beats + (tiles - 1) * period + pipeline + ARRAY_OVERHEAD


# -- vector router ----------------------------------------------------------------------------
WEIGHT_PIPELINE = 6         # cycles from issuing slot j to its p_j being written
DIVIDE_CYCLES = GATE_FRAC + 1   # quotient bits of w = (p << 15) // S <= 2**15


def router_cycles(n, count):
    """Cycles of one token's routing (``n`` logits, ``count`` experts chosen), command transfer
    to the next command's, with no stalls."""
    weights = count + WEIGHT_PIPELINE + DIVIDE_CYCLES if count else 1
    return 1 + n + weights + 1


# -- off-chip and HB reads --------------------------------------------------------------------
READ_OVERHEAD = 3        # request to last line beyond latency + lines
CREDIT_LOOP = 4          # off-chip credit loop beyond the memory latency


def read_cycles(latency, lines):
    """A read of ``lines`` lines from a tier of ``latency`` cycles, request to last line."""
    return latency + READ_OVERHEAD + lines


# -- the core, per command --------------------------------------------------------------------
LOADX_FIXED = 10
LOADP_FIXED = 10
LOADM_FIXED = 8          # LOADM itself: check, tag compare, take the load
MULT_LOAD_FIXED = 2      # a multiplier load (hw/executor/loads.py): job to request, last line to done
STOREY_FIXED = 11
FETCH_FIXED = 9          # + 1 for a LOOKUP (the cache's response is one stage later than a probe's)
SWIGLU_FIXED = 17        # read, two requantizers (5 stages each), SwiGLU pipeline (7 stages), write
COMBINE_FIXED = 17       # read, requantizer (5 stages), output-sum read, combine pipeline (5 stages), write
GEMV_FIXED = 14
ROUTE_FIXED = 8
ROUTER_TOKEN_EXTRA = 0   # command and result handshakes per token
PROBE_CYCLES = 3         # one expert-cache probe (cached choice), request to answer taken
LOOP_FIXED = 2           # a loop's capture of its body, beyond one cycle per body word


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
            return read_cycles(self.config.hb.latency, _ceil(nbytes, self.hb_line))
        return read_cycles(self.config.offchip.latency, _ceil(nbytes, self.off_line))

    def lines(self, tier, nbytes):
        return _ceil(nbytes, self.hb_line if tier == "hb" else self.off_line)

    def loadx(self, tokens, d):
        return (LOADX_FIXED + self.read("offchip", tokens * d) + self.read("offchip", tokens * TOKEN_SCALE.size))

    def loadp(self):
        return (LOADP_FIXED + self.read("offchip", SCALARS.size) +
                read_cycles(self.config.offchip.latency, SILU_ENTRIES))

    def mult_load(self, d, f):
        """The loads unit's multiplier load of one expert (``hw/executor/loads.py``), from its job
        to its last line written: one off-chip read on its own port."""
        return MULT_LOAD_FIXED + self.read("offchip", MULTIPLIER.size * (2 * f + d))

    def loadm(self, d, f, ahead=None):
        """``LOADM`` when the load it needs was started ahead and still needs ``ahead`` cycles
        (0: complete), or (``ahead=None``) when it starts its own load."""
        if ahead is None:
            return LOADM_FIXED + self.mult_load(d, f)
        return LOADM_FIXED + max(0, ahead)

    def storey(self, tokens, d):
        return STOREY_FIXED + self.lines("offchip", OUT_ELEMENT_BYTES * tokens * d)

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
        tier to the bytes one lane group reads from it. The lane groups' row tiles run back to
        back on the array (double-buffered results), so the GEMV costs the slower of the array
        (:func:`gemv_cycles` of every group's tiles) and the weight streams (the lines of every
        group, then the last tile's drain, capture and transfer)."""
        a = self.config.array
        groups = _ceil(n_tokens, a.lanes)
        tiles = groups * _ceil(n, a.rows)
        compute = gemv_cycles(k=k, cols=a.cols, mode="full" if full else "draft", pipeline=a.pipeline,
                              n=tiles * a.rows, rows=a.rows)
        memory = groups * max(self.lines(t, b) for t, b in streams.items()) + a.pipeline + ARRAY_OVERHEAD
        latency = max(self.read(t, 0) for t in streams)
        return GEMV_FIXED + latency + max(compute, memory)

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
