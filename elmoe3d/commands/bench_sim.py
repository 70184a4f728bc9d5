"""``elmoe3d bench-sim``: how fast the core simulates, with memory models in HDL and in Python."""

import sys

from ..errors import UserError

HELP = "simulated cycles per second of the RTL core in Verilator, memory models in HDL and in Python, and the build time"


def add_arguments(p):
    from ..config import PRESETS
    from ..cli import nonnegative_int, positive_int
    p.add_argument("--presets", nargs="+", default=["tiny", "small", "default"], choices=[n for n in PRESETS],
                   metavar="PRESET", help="presets to measure (default tiny small default)")
    p.add_argument("--passes", type=positive_int, default=24,
                   help="layer passes (batch 16, every pass kind in turn) per preset on the HDL models (default 24)")
    p.add_argument("--python-passes", type=nonnegative_int, default=2,
                   help="passes on the Python memory models of tb_core.py (default 2; 0 skips them)")
    p.add_argument("--quick-build", action="store_true",
                   help="compile the C++ without optimization (-O0): faster build, slower simulation")
    p.add_argument("--results-page", action="store_true",
                   help="also write docs/results/bench-sim.md (the figures the docs quote)")
    p.add_argument("-o", "--out", default="results/bench-sim", metavar="DIR", help="output folder (default %(default)s)")


def _load():
    """The machine's load (1-minute average) and core count, for the record."""
    import os
    try:
        return os.getloadavg()[0], os.cpu_count()
    except OSError:
        return float("nan"), os.cpu_count()


def run(args):
    import json
    import time

    from ..hw.core import core_config
    from ..paths import output_dir, write_text
    from ..sim.benches import native
    if "mixtral" in args.presets:
        raise UserError("--presets mixtral: its core is far too large to build for simulation here")
    for name in args.presets:
        cfg = core_config(name)
        from ..hw.executor import check_core_config
        check_core_config(cfg)
    out = output_dir(args.out)
    rows = []
    for name in args.presets:
        params = {"preset": name, "lanes": 0, "max_k": 4 if name == "tiny" else 8}
        print(f"elmoe3d bench-sim: {name}: building (or reusing) the Verilator model ...", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        build_dir, _ = native.build(name, max_k=params["max_k"], quick=args.quick_build)
        built = json.loads((build_dir / "built.json").read_text())
        load0 = _load()
        row = {"preset": name, "build_s": built["seconds"], "build_reused": time.monotonic() - t0 < built["seconds"],
               "quick_build": args.quick_build, "load_before": load0[0], "cpus": load0[1]}
        for models, n in (("hdl", args.passes), ("python", args.python_passes)):
            if not n:
                continue
            print(f"elmoe3d bench-sim: {name}: {n} passes, memory models in {models} ...", file=sys.stderr, flush=True)
            test_dir = out / f"{name}-{models}"
            native.run_native(params, test_dir, "native_speed", build_quick=args.quick_build, passes=n,
                              models=models)
            m = json.loads((test_dir / "cycles.json").read_text())
            wall = m["stream_seconds"] if models == "hdl" else m["seconds"]
            cpu = m["stream_cpu_seconds"] if models == "hdl" else m["cpu_seconds"]
            row[models] = {"passes": m["passes"], "cycles": m["cycles"], "seconds": wall, "cpu_seconds": cpu,
                           "cycles_per_s": m["cycles"] / wall, "cycles_per_cpu_s": m["cycles"] / cpu}
        row["load_after"] = _load()[0]
        rows.append(row)
    text = format_table(rows)
    write_text(out / "bench-sim.json", json.dumps({"rows": rows, "verilator_args": native.VERILATOR_ARGS,
                                                    "cxx": native.CXX_QUICK if args.quick_build else native.CXX_OPT},
                                                   indent=1))
    write_text(out / "bench-sim.txt", text + "\n")
    print(text)
    if args.results_page:
        from ..results_page import command_line, write_page
        cmd = command_line("bench-sim")
        page = write_page("bench-sim", "Simulation speed of the core (elmoe3d bench-sim)", cmd,
                          "```\n" + text + "\n```\n\nVerilator options: `" + " ".join(native.VERILATOR_ARGS)
                          + "`, C++ `" + (native.CXX_QUICK if args.quick_build else native.CXX_OPT)
                          + "`, one thread; why: docs/simulation.md.\n")
        print(f"wrote {page}", file=sys.stderr)
    print(f"wrote {out / 'bench-sim.txt'}, {out / 'bench-sim.json'}", file=sys.stderr)
    return 0


def format_table(rows):
    """Cycles per wall second and per CPU second (the process's, simulator included: the
    figure a machine of its own would give), per preset and memory model."""
    head = (f"{'preset':<8} {'models':<7} {'passes':>6} {'cycles':>9} {'wall s':>7} {'cycles/s':>9} "
            f"{'CPU s':>7} {'cycles/CPU s':>12} {'build s':>8} {'load':>9}")
    lines = [head, "-" * len(head)]
    for r in rows:
        for models in ("hdl", "python"):
            m = r.get(models)
            if not m:
                continue
            lines.append(f"{r['preset']:<8} {models:<7} {m['passes']:>6} {m['cycles']:>9} {m['seconds']:>7.1f} "
                         f"{m['cycles_per_s']:>9.0f} {m['cpu_seconds']:>7.1f} {m['cycles_per_cpu_s']:>12.0f} "
                         f"{r['build_s']:>8.0f} {r['load_before']:>4.1f}/{r['cpus']}")
    lines.append("cycles/s: simulated cycles per wall-clock second inside the streams (HDL models) or over the "
                 "whole run (Python models); cycles/CPU s: per second of this process's CPU time; build s: "
                 "the Verilator build (C++ included) when it was made; load: 1-minute load average / CPUs.")
    return "\n".join(lines)
