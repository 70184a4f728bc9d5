"""``elmoe3d synth``: area, timing and power of a generated top (Yosys + OpenSTA)."""

from pathlib import Path

from ..cli import clock_ns, existing_file, unit_fraction
from ._top_args import add_top_arguments, given_params, option_name, top_params

HELP = "synthesize a top with Yosys and OpenSTA: area per module, slack/Fmax, power, pJ per MAC"


def add_arguments(p):
    p.add_argument("-o", "--out", required=True, metavar="DIR",
                   help="folder for report.md, report.json, the Verilog, netlist and tool logs")
    p.add_argument("--liberty", metavar="FILE",
                   help="Liberty timing library (.lib or .lib.gz), or a shipped one: sky130hd, "
                        "nangate45; without it only a technology-independent area is reported")
    p.add_argument("--clock-ns", type=clock_ns, default=5.0, metavar="T",
                   help="clock period target in ns, 0.001 to 1e6 (default %(default)s)")
    p.add_argument("--activity", type=unit_fraction, default=0.2, metavar="A",
                   help="toggle rate per cycle of the inputs for power (default %(default)s)")
    p.add_argument("--idle", action="append", default=[], metavar="PORT",
                   help="hold input ports matching this pattern still in the power analysis (activity "
                        "0), e.g. 'i_lsb__*' for the power of a mode that leaves them idle; repeatable")
    p.add_argument("--no-macros", action="store_true",
                   help="keep memories as flip-flops (default: memories on the library's SRAM macros, "
                        "fakeram45 for nangate45, the OpenRAM sky130 macro for sky130hd)")
    p.add_argument("--flatten", action="store_true",
                   help="synthesize flat (optimizes across modules; area only for the whole design)")
    p.add_argument("--verilog", metavar="FILE", nargs="+", type=existing_file,
                   help="synthesize these Verilog files instead; --top then names their top module")
    add_top_arguments(p)


def run(args):
    from ..errors import UserError
    from ..synth import flow
    from ..paths import output_dir
    if args.verilog:
        given = given_params(args)
        if given:
            raise UserError(f"{', '.join(option_name(n) for n in sorted(given))}: top parameters apply "
                            "to registered tops, not to --verilog files")
    else:
        top, params = top_params(args)
        from ..hw.sim_budget import check_core_synthesis
        # refuses illegal values (UserError), and a core too large to convert, before a folder is made
        check_core_synthesis(top.build(**params), "synth")
    liberty = flow.resolve_liberty(args.liberty)          # a bad Liberty is refused before any work
    out = output_dir(args.out)
    settings = dict(liberty=liberty, clock_ns=args.clock_ns, activity=args.activity,
                    flatten=args.flatten, idle_ports=args.idle, macros=not args.no_macros)
    if args.verilog:
        report = flow.synthesize_verilog(args.verilog, args.top, out, **settings)
    else:
        report = flow.synthesize(top.name, params, out, **settings)
    print(flow.format_markdown(report), end="")
    return 0
