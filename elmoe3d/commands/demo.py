"""``elmoe3d demo``: the main job on built-in defaults (what the README's first command runs).

Four steps, each an ordinary sub-command: the golden bit-nesting report (``numerics``), the
Verilog of a 4x4 bit-sliced PE array (``generate``), its quick cocotb regression against the
golden model (``regress``) and its synthesis in sky130 hd (``synth``; technology-independent
area when ``../shared/pdk`` is absent). Outputs go under ``-o DIR``.
"""

import sys
from pathlib import Path

HELP = "run the main job on built-in defaults: numerics report, Verilog, quick regression, synthesis"

ARRAY = ["--top", "pe_array", "--rows", "4", "--cols", "4"]


def add_arguments(p):
    p.add_argument("-o", "--out", metavar="DIR", default="results/demo",
                   help="folder for the Verilog, regression and synthesis outputs (default %(default)s)")
    p.add_argument("--quick", action="store_true",
                   help="smaller numerics shapes and no Mixtral column, for a smoke test")
    p.add_argument("--no-hw", action="store_true", help="only the numerics report")


def _step(title, argv):
    from ..cli import build_parser
    print(f"\n== elmoe3d {' '.join(argv)}   ({title})", flush=True)
    args = build_parser().parse_args(argv)
    status = args._run(args) or 0
    if status:
        print(f"elmoe3d demo: step '{title}' exited with status {status}", file=sys.stderr)
    return status


def run(args):
    from ..cli import writable_path
    from ..toolchain import shipped_liberty, simulator_missing

    out = Path(args.out)
    writable_path(out)                       # refuse a missing parent before any work
    numerics = ["numerics"] + (["--d-model", "256", "--d-ffn", "512", "--no-mixtral"] if args.quick else [])
    status = _step("golden bit-nesting report", numerics)
    if args.no_hw:
        return status
    out.mkdir(exist_ok=True)
    status |= _step("Verilog of a 4x4 bit-sliced PE array", ["generate", *ARRAY, "-o", str(out / "verilog")])
    simulator = "verilator" if not simulator_missing("verilator") else "icarus"
    status |= _step("quick cocotb regression against the golden model",
                    ["regress", "--quick", "--only", "pe_array-2x2", "--simulator", simulator,
                     "-o", str(out / "regress")])
    liberty = ["--liberty", "sky130hd"] if shipped_liberty("sky130hd") else []
    status |= _step("synthesis: area, timing, power", ["synth", *ARRAY, *liberty, "--clock-ns", "10",
                                                       "-o", str(out / "synth")])
    print(f"\nelmoe3d demo: outputs in {out}/", flush=True)
    return status
