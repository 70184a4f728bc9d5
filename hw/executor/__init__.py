"""The core's executor, as units (see ``docs/core.md``).

- :mod:`.control`: :class:`Executor`, the dispatcher (register and order checks, the expert's
  context, LOADM and GEMV's few states) that hands each other command to its unit below as a
  job and forwards the unit's done; it joins the units with ``wiring.connect``.
- :mod:`.route`: :class:`Route`, ROUTE (probes, the router GEMV job, the router block token by
  token into the routing table and the expert mask; job stream in, done stream out).
- :mod:`.fetch`: :class:`Fetch`, FETCH (cache lookup or probe, the expert's planes; job stream
  in, done stream out with the Status).
- :mod:`.group`: :class:`GroupLoads`, LOADX (``x``, token scales, the group's sizes) and LOADP
  (scalars, SiLU table) on off-chip port 0 (job stream in, done stream out with the Status).
- :mod:`.vector`: :class:`VectorSteps`, SWIGLU, COMBINE and STOREY through the requantizers, the
  SwiGLU and combine blocks (job stream in, done stream out with the Status).
- :mod:`.context`: :class:`ExpertContext`, the routing table and the expert's token list and gate
  weights (``route`` and ``build`` streams in, ``built`` out).
- :mod:`.gemv`: :class:`GemvEngine`, one GEMV job (job stream in, done stream out) on the PE array.
- :mod:`.loads`: :class:`MultLoads`, the multiplier loads (job stream in, a bank of the table
  written, fetched ahead of LOADM) and :class:`PortShare` (two clients on one off-chip read port).
- :mod:`.buffers`: :class:`Dims` (every size the units share) and :class:`Buffers` (the token
  buffers, one port per client).
- :mod:`.ports`: the units' protocols (buffer ports, the GEMV job, the vector-step job, the
  group-load job, the fetch job and the planes it leaves, the route job, the multiplier
  table's read port).
- :mod:`.harness`: bench tops of the units (``exec_gemv``, ``exec_context``, ``exec_vector``,
  ``exec_group``, ``exec_fetch``, ``exec_route``), registered for ``generate`` and ``regress``.
"""

from .buffers import Buffers, Dims
from .context import ExpertContext
from .control import BLOCK_PORTS, Executor, check_core_config
from .fetch import Fetch, probe_resp_layout
from .gemv import GemvEngine
from .group import GroupLoads
from .route import Route
from .loads import MultLoads, PortShare
from .harness import GENERATE_TOPS
from .vector import VectorSteps

__all__ = ["BLOCK_PORTS", "Buffers", "Dims", "Executor", "ExpertContext", "Fetch", "GENERATE_TOPS", "GemvEngine",
           "GroupLoads", "MultLoads", "PortShare", "Route", "VectorSteps", "check_core_config", "probe_resp_layout"]
