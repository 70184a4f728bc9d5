"""``elmoe3d generate``: Verilog (and a JSON of parameters and ports) for a registered top."""

import sys

from ..errors import UserError
from ..paths import output_dir
from ._top_args import add_top_arguments, option_name, top_params

HELP = "write the Verilog of a hardware top (pe, pe_array, mac_array_baseline, ...) and its port JSON"


def add_arguments(p):
    p.add_argument("-o", "--out", metavar="DIR", help="output folder (created if missing)")
    p.add_argument("--list", action="store_true", help="list the tops and their parameters, then exit")
    add_top_arguments(p)
    for action in p._actions:          # --list needs no --top; run() asks for it otherwise
        if action.dest == "top":
            action.required = False


def list_tops(tops):
    lines = []
    for top in tops.values():
        lines.append(f"{top.name}: {top.help}")
        for param in top.params:
            choices = f" (one of {', '.join(map(str, param.choices))})" if param.choices else ""
            lines.append(f"    {option_name(param.name):<16} {param.type.__name__:<5} default {param.default!s:<6} "
                         f"{param.help}{choices}")
    return "\n".join(lines)


def run(args):
    if args.list:
        print(list_tops(args._top_registry))
        return 0
    if not args.top:
        raise UserError("elmoe3d generate: --top NAME is required (or --list)")
    if args.out is None:
        raise UserError("elmoe3d generate: -o/--out DIR is required")
    top, params = top_params(args)
    component = top.build(**params)            # UserError for illegal values, before a folder is made
    from ..hw.sim_budget import check_core_generation
    check_core_generation(component, "generate")  # a core too large to convert here: refused now
    out = output_dir(args.out)                 # created (nested too) and checked before writing
    from ..config import AccelConfig
    from ..hw.verilog import write_verilog
    from ..paths import write_text
    path = write_verilog(component, top.name, out, params)
    config = getattr(component, "config", None)
    if isinstance(config, AccelConfig):
        # a top that executes command streams: the C header of its command set beside it
        from ..firmware.cheader import c_header
        from ..spec.isa import InstructionSet
        write_text(out / f"{top.name}_commands.h", c_header(InstructionSet(config)))
    shown = ", ".join(f"{k}={v}" for k, v in params.items())
    print(f"wrote {path} and {path.with_suffix('.json')} ({shown})", file=sys.stderr)
    print(path)
    return 0
