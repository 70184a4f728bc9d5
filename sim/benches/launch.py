"""Generate a registered top and run its cocotb bench: the one path tests and ``regress`` share.

:data:`BENCHES` maps a top to its cocotb module; :data:`REGRESSION` lists the runs ``elmoe3d
regress`` makes (every top in ``BENCHES`` has at least one; ``tests/test_regress.py`` checks it).
A bench run without explicit cases (the regression) makes its own from ``seeds`` and ``quick``.
:func:`run_top_bench` writes the top's Verilog (``hw/verilog.write_verilog``) into the run's own
build folder and calls :func:`elmoe3d.sim.benches.runner.run_bench` (which adapts it for Icarus when asked).
"""

from dataclasses import dataclass, field
from pathlib import Path

from ...errors import UserError
from ...hw.tops import get_top
from ...hw.verilog import write_verilog
from .runner import run_bench

@dataclass(frozen=True)
class Entry:
    """One regression run: a top, its parameters, and whether ``--quick`` keeps it."""

    name: str
    top: str
    params: dict = field(default_factory=dict)
    quick: bool = False       # part of the quick subset
    seeds: tuple = (1, 2, 3)
    native: bool = False      # the top's NATIVE_BENCHES bench (HDL memory models; Verilator only)


# The regression ``elmoe3d regress`` runs (the pytest launchers cover the same ground).
REGRESSION = [
    Entry("pe-t1", "pe", dict(terms=1, pipeline=1), quick=True),
    Entry("pe-t3-p0", "pe", dict(terms=3, pipeline=0)),
    Entry("pe-t2-acc20", "pe", dict(terms=2, acc_bits=20, max_k=31)),
    Entry("pe_array-2x2", "pe_array", dict(rows=2, cols=2), quick=True),
    Entry("pe_array-4x3-p0", "pe_array", dict(rows=4, cols=3, pipeline=0)),
    Entry("pe_array-3x5-l2-acc20", "pe_array", dict(rows=3, cols=5, lanes=2, acc_bits=20, max_k=31), quick=True),
    Entry("pe_array-16x16", "pe_array", dict(rows=16, cols=16), seeds=(1,)),
    Entry("mac_array-4x3-l2", "mac_array_baseline", dict(rows=4, cols=3, lanes=2), quick=True),
    Entry("mac_array-3x5-acc20", "mac_array_baseline", dict(rows=3, cols=5, acc_bits=20, max_k=31)),
    Entry("mac_array-16x16", "mac_array_baseline", dict(rows=16, cols=16), seeds=(1,)),
    Entry("vector_unit-w2-e6-k3", "vector_unit", dict(width=2, max_experts=6, max_k=3), quick=True, seeds=(1, 2)),
    Entry("vector_unit-w3-e4-k4", "vector_unit", dict(width=3, max_experts=4, max_k=4), seeds=(1, 2)),
    Entry("hb_write-2ch-b4", "hb_write", dict(channels=2, width=16, burst=4, lines=256), quick=True, seeds=(1, 2)),
    Entry("fill_path-32to64", "fill_path", dict(in_width=32, hb_width=64, hb_addr_bits=8, hb_len_bits=9), quick=True, seeds=(1, 2)),
    Entry("expert_cache-lru8", "expert_cache", dict(entries=8, policy="lru", layer_bits=2, expert_bits=3),
          quick=True, seeds=(1, 2)),
    Entry("expert_cache-lfu4-c8", "expert_cache",
          dict(entries=4, policy="lfu", layer_bits=1, expert_bits=2, count_bits=2, counter_bits=8), seeds=(1, 2)),
    Entry("expert_cache-score16", "expert_cache",
          dict(entries=16, policy="score", layer_bits=3, expert_bits=4, score_bits=6, decay_shift=2), seeds=(1,)),
    Entry("hb_memory-2ch-b4", "hb_memory",
          dict(channels=2, width=16, burst=4, outstanding=4, latency=6, lines=256, len_bits=8), quick=True, seeds=(1, 2)),
    Entry("hb_memory-1ch-b1-c8", "hb_memory",
          dict(channels=1, width=8, burst=1, outstanding=2, latency=3, lines=16, len_bits=5, counter_bits=8), seeds=(1, 2)),
    Entry("hb_memory-3ch-b2", "hb_memory",
          dict(channels=3, width=24, burst=2, outstanding=8, latency=10, lines=1024, len_bits=11), seeds=(1,)),
    Entry("command_processor-tiny", "command_processor", dict(preset="tiny"), quick=True, seeds=(1, 2)),
    Entry("command_processor-default", "command_processor", dict(preset="default"), seeds=(1,)),
    Entry("width_adapter-8to32", "width_adapter", dict(in_width=8, out_width=32), quick=True, seeds=(1,)),
    Entry("width_adapter-64to16", "width_adapter", dict(in_width=64, out_width=16), seeds=(1,)),
    Entry("stream_fifo-d2", "stream_fifo", dict(width=8, depth=2), quick=True, seeds=(1,)),
    Entry("stream_fifo-d5", "stream_fifo", dict(width=8, depth=5), seeds=(1,)),
    Entry("stream_arbiter-3", "stream_arbiter", dict(width=8, n=3), quick=True, seeds=(1,)),
    Entry("offchip-w32-b4", "offchip", dict(width=32, lines=1024, len_bits=10, latency=8, burst=4), quick=True,
          seeds=(1,)),
    Entry("exec_gemv-tiny", "exec_gemv", dict(preset="tiny"), quick=True, seeds=(1,)),
    Entry("exec_gemv-tiny-lanes3", "exec_gemv", dict(preset="tiny", lanes=3), seeds=(2,)),
    Entry("exec_context-tiny", "exec_context", dict(preset="tiny", max_k=4), quick=True, seeds=(1, 2)),
    Entry("exec_vector-tiny", "exec_vector", dict(preset="tiny"), quick=True, seeds=(1, 2)),
    Entry("exec_vector-small", "exec_vector", dict(preset="small"), seeds=(1,)),
    Entry("exec_group-tiny", "exec_group", dict(preset="tiny"), quick=True, seeds=(1, 2)),
    Entry("exec_group-small", "exec_group", dict(preset="small"), seeds=(1,)),
    Entry("exec_fetch-tiny", "exec_fetch", dict(preset="tiny"), quick=True, seeds=(1, 2)),
    Entry("exec_fetch-small", "exec_fetch", dict(preset="small"), seeds=(1,)),
    Entry("exec_route-tiny", "exec_route", dict(preset="tiny", max_k=4), quick=True, seeds=(1, 2)),
    Entry("exec_route-small", "exec_route", dict(preset="small", max_k=8), seeds=(1,)),
    Entry("core-tiny", "core", dict(preset="tiny", max_k=4), quick=True, seeds=(1,)),
    Entry("core-small-lanes2", "core", dict(preset="small", lanes=2), seeds=(1,)),
    Entry("core-small", "core", dict(preset="small"), seeds=(1,)),
    Entry("core-small-native", "core", dict(preset="small"), seeds=(1,), native=True),
]

BENCHES = {
    "core": "elmoe3d.sim.benches.tb_core",
    "exec_gemv": "elmoe3d.sim.benches.tb_exec_gemv",
    "exec_context": "elmoe3d.sim.benches.tb_exec_context",
    "exec_vector": "elmoe3d.sim.benches.tb_exec_vector",
    "exec_group": "elmoe3d.sim.benches.tb_exec_group",
    "exec_fetch": "elmoe3d.sim.benches.tb_exec_fetch",
    "exec_route": "elmoe3d.sim.benches.tb_exec_route",
    "pe": "elmoe3d.sim.benches.tb_pe",
    "pe_array": "elmoe3d.sim.benches.tb_pe_array",
    "mac_array_baseline": "elmoe3d.sim.benches.tb_pe_array",
    "hb_write": "elmoe3d.sim.benches.tb_hb_write",
    "fill_path": "elmoe3d.sim.benches.tb_fill_path",
    **{top: "elmoe3d.sim.benches.tb_vector_unit" for top in
       ("vector_unit", "vector_requant", "vector_swiglu", "vector_combine", "vector_router")},
    "command_processor": "elmoe3d.sim.benches.tb_command_processor",
    "expert_cache": "elmoe3d.sim.benches.tb_expert_cache",
    "hb_memory": "elmoe3d.sim.benches.tb_hb_memory",
    "width_adapter": "elmoe3d.sim.benches.tb_streams",
    "stream_fifo": "elmoe3d.sim.benches.tb_streams",
    "stream_arbiter": "elmoe3d.sim.benches.tb_streams",
    "offchip": "elmoe3d.sim.benches.tb_offchip",
}


# Further benches of a top, run with ``run_top_bench(..., module=...)`` on the same generated
# Verilog: the core's error bench (streams mutated toward every Status, against the ISS).
EXTRA_BENCHES = {"core": ("elmoe3d.sim.benches.tb_core_errors",)}


# Benches whose memory models run in HDL around the top (``native.py``: Verilator at native
# speed; ``elmoe3d bench-sim``, ``sd --engine rtl``); launched by ``native.run_native``.
NATIVE_BENCHES = {"core": "elmoe3d.sim.benches.tb_core_native"}


def top_modules(top_name):
    """Every cocotb module that runs on one build of ``top_name``: its bench, then its extra ones."""
    return (BENCHES[top_name], *EXTRA_BENCHES.get(top_name, ()))


def run_top_bench(top_name, params, build_dir, *, seeds=(1, 2, 3), quick=False, simulator="verilator",
                  waves=False, testcase=None, quick_build=False, module=None, **extra):
    """Build ``top_name`` with ``params`` (defaults filled in) and run its bench in ``build_dir``.

    ``module``: the cocotb module(s) to run instead of the top's :data:`BENCHES` one: a name or
    a tuple of names among that one and the top's :data:`EXTRA_BENCHES` (several run on one build).

    ``extra`` goes into the bench configuration (``idle``, ``stall``, ``gap``, ``cycle_ks``, ...).
    Returns the results XML path; raises ``AssertionError`` when a cocotb test fails.
    """
    top = get_top(top_name)
    if top_name not in BENCHES:
        raise UserError(f"top {top_name!r} has no cocotb bench; benches exist for {', '.join(sorted(BENCHES))}")
    mods = (module,) if isinstance(module, str) else tuple(module or (BENCHES[top_name],))
    unknown = [m for m in mods if m not in top_modules(top_name)]
    if unknown or not mods:
        raise UserError(f"top {top_name!r} has no bench {unknown[0] if unknown else module!r}")
    params = top.resolve(params)
    build_dir = Path(build_dir)
    verilog = write_verilog(top.build(**params), top_name, build_dir, params)
    config = {"kind": top_name, "params": params, "seeds": list(seeds), "quick": quick,
              "cycles_json": str((build_dir / "cycles.json").resolve()), **extra}
    return run_bench(verilog=verilog, toplevel=top_name, module=mods[0] if len(mods) == 1 else list(mods), build_dir=build_dir,
                     config=config, simulator=simulator, waves=waves, testcase=testcase, quick_build=quick_build)
