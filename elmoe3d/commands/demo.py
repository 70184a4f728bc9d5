"""``elmoe3d demo``: the main job on built-in defaults (what the README's first command runs).

Four steps, each an ordinary sub-command: the golden bit-nesting report (``numerics``), the
Verilog of a 4x4 bit-sliced PE array (``generate``), the quick cocotb regression of that same
array against the golden model (``regress --top pe_array --rows 4 --cols 4``; the demo checks
that the simulated Verilog equals the generated file byte for byte) and its synthesis in sky130
hd (``synth``; technology-independent area when ``../shared/pdk`` is absent). Outputs go under
``-o DIR``, created if missing (nested too) and reused by a second run.
"""

import sys

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
    from ..paths import output_dir
    from ..toolchain import shipped_liberty, simulator_missing

    # created (nested too) and checked before any work; a second run reuses it
    out = None if args.no_hw else output_dir(args.out)
    numerics = ["numerics"] + (["--d-model", "256", "--d-ffn", "512", "--no-mixtral"] if args.quick else [])
    status = _step("golden bit-nesting report", numerics)
    if args.no_hw:
        return status
    status |= _step("Verilog of a 4x4 bit-sliced PE array", ["generate", *ARRAY, "-o", str(out / "verilog")])
    simulator = "verilator" if not simulator_missing("verilator") else "icarus"
    regress = out / "regress"
    status |= _step("quick cocotb regression of that array against the golden model",
                    ["regress", "--quick", *ARRAY, "--simulator", simulator, "-o", str(regress)])
    status |= _same_verilog(out / "verilog" / "pe_array.v", regress)
    liberty = ["--liberty", "sky130hd"] if shipped_liberty("sky130hd") else []
    status |= _step("synthesis: area, timing, power", ["synth", *ARRAY, *liberty, "--clock-ns", "10",
                                                       "-o", str(out / "synth")])
    print(f"\nelmoe3d demo: outputs in {out}/", flush=True)
    return status


def _same_verilog(generated, regress_dir):
    """1 unless the regression simulated exactly the Verilog the generate step wrote."""
    simulated = sorted(regress_dir.glob("*/pe_array.v"))
    if simulated and all(v.read_bytes() == generated.read_bytes() for v in simulated):
        print(f"elmoe3d demo: the regression simulated {generated} byte for byte", flush=True)
        return 0
    print(f"elmoe3d demo: the regression did not simulate {generated}", file=sys.stderr)
    return 1
