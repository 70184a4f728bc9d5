"""``elmoe3d regress``: the cocotb regression of every registered bench, outside pytest, with a summary.

The entries are data: ``REGRESSION`` in ``sim/benches/launch.py`` (a top, its parameters, seeds,
whether ``--quick`` keeps it); the benches are ``BENCHES`` there. A top's ``EXTRA_BENCHES`` (the
core's error bench) run on the same build as its bench; a ``native`` entry runs the top's
``NATIVE_BENCHES`` bench (the core with memory models in HDL, Verilator only: left out with
``--simulator icarus``). ``--list`` shows the entries,
a run ends with a pass/fail table (entry, top, params, seeds, tests, result, seconds) and exits 1
when any entry fails.
"""

import contextlib
import os
import sys
import time

from ..errors import UserError

HELP = "run the cocotb regression of every registered bench against its golden model; pass/fail table"


def add_arguments(p):
    p.add_argument("--simulator", choices=("verilator", "icarus"), default="verilator",
                   help="simulator (default %(default)s; icarus needs no C++ tool chain)")
    p.add_argument("--quick", action="store_true", help="the quick subset, fewer cases per bench")
    p.add_argument("--waves", action="store_true", help="dump waveforms (dump.vcd) in each run's folder")
    p.add_argument("--only", metavar="TEXT", action="append",
                   help="run only entries whose name contains TEXT (repeatable)")
    p.add_argument("--list", action="store_true", help="list the regression entries and exit")
    p.add_argument("-o", "--out", metavar="DIR", default="results/regress",
                   help="folder for build folders, logs and results (default %(default)s)")
    from ..hw.tops import all_tops
    from ..sim.benches.launch import BENCHES
    from ._top_args import add_top_arguments
    add_top_arguments(p, {name: top for name, top in all_tops().items() if name in BENCHES})
    for action in p._actions:          # --top is optional here: without it the table runs
        if action.dest == "top":
            action.required = False
            action.help = ("instead of the table, regress this top with the parameters given (the same "
                           "Verilog `elmoe3d generate` writes for them): " + action.help.split("(", 1)[-1].rstrip(")"))


def _selected(args):
    from ..sim.benches.launch import REGRESSION, Entry
    from ._top_args import given_params, top_params
    if args.top is None and given_params(args):
        raise UserError("top parameters need --top NAME")
    if args.top is not None:
        if args.only:
            raise UserError("--only selects table entries; it cannot be combined with --top")
        top, params = top_params(args)
        from ..sim.benches.launch import BENCHES
        if top.name not in BENCHES:
            raise UserError(f"top {top.name!r} has no cocotb bench; benches exist for {', '.join(sorted(BENCHES))}")
        top.build(**params)              # refuses illegal values (UserError) before a folder is made
        if top.name == "core":           # a core too large to build in Verilator here: refused now
            from ..hw.core import core_config
            from ..hw.sim_budget import check_core_simulation
            check_core_simulation(core_config(params["preset"], params.get("lanes", 0)), "regress --top core")
        given = given_params(args)
        name = "-".join([top.name] + [f"{k}{given[k]}" for k in sorted(given)])
        return [Entry(name, top.name, {k: params[k] for k in given}, quick=True)]
    entries = [e for e in REGRESSION if (e.quick or not args.quick) and not (e.native and args.simulator != "verilator")]
    if args.only:
        entries = [e for e in entries if any(t in e.name for t in args.only)]
        if not entries:
            raise UserError(f"no regression entry matches {', '.join(args.only)}; "
                            f"see elmoe3d regress --list")
    return entries


COLUMNS = (("entry", "name", "<"), ("top", "top", "<"), ("params", "params", "<"), ("seeds", "seeds", "<"),
           ("tests", "tests", ">"), ("result", "result", "<"), ("seconds", "wall_s", ">"))


def format_table(rows):
    """The summary: one row per entry (keys ``name, top, params, seeds, tests, result, wall_s``),
    then ``N of M passed``."""
    cells = [[r["name"], r["top"], r["params"] or "-", r["seeds"], str(r["tests"]), r["result"], f"{r['wall_s']:.1f}"]
             for r in rows]
    widths = [max([len(title)] + [len(c[i]) for c in cells]) for i, (title, _, _) in enumerate(COLUMNS)]

    def line(values):
        return " ".join(f"{v:{a}{w}}" for v, w, (_, _, a) in zip(values, widths, COLUMNS)).rstrip()
    head = line([title for title, _, _ in COLUMNS])
    lines = [head, "-" * len(head)] + [line(c) for c in cells]
    passed = sum(r["result"] == "PASS" for r in rows)
    lines.append(f"{passed} of {len(rows)} passed")
    return "\n".join(lines)


def _params(params):
    return ",".join(f"{k}={v}" for k, v in params.items())


@contextlib.contextmanager
def _output_to(path):
    """Send this process's (and its children's) stdout and stderr to ``path`` for a while."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(path, "w") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def run(args):
    from ..toolchain import simulator_missing
    entries = _selected(args)
    if args.list:
        for e in entries:
            seeds = e.seeds[:1] if args.quick else e.seeds
            print(f"{e.name:<24} {e.top:<20} {_params(e.params) or '-'}  seeds {','.join(map(str, seeds))}"
                  f"{'  (quick)' if e.quick else ''}")
        return 0
    why = simulator_missing(args.simulator)
    if why:
        raise UserError(why)
    from ..paths import output_dir
    out = output_dir(args.out)
    from cocotb_tools.check_results import get_results
    from ..sim.benches.launch import run_top_bench, top_modules
    from ..sim.benches.native import run_native
    rows = []
    for e in entries:
        build = out / f"{e.name}-{args.simulator}"
        build.mkdir(parents=True, exist_ok=True)
        log = build / "regress.log"
        print(f"elmoe3d regress: {e.name} ({args.simulator}) ... ", end="", file=sys.stderr, flush=True)
        start = time.time()
        result, why = "PASS", ""
        seeds = e.seeds[:1] if args.quick else e.seeds
        xml = build / "results.xml"
        if xml.exists():
            xml.unlink()                 # a result of an earlier run must not stand for this one
        try:
            with _output_to(log):
                if e.native:
                    run_native(e.params, build, "native_matches_iss", seeds=seeds, quick=args.quick)
                else:            # the top's bench and its extra ones (the core's error bench) on one build
                    run_top_bench(e.top, e.params, build, seeds=seeds, module=top_modules(e.top),
                                  quick=args.quick, simulator=args.simulator, waves=args.waves)
        except UserError:
            raise
        except (AssertionError, SystemExit, RuntimeError) as exc:
            result, why = "FAIL", f" ({(str(exc).splitlines() or [type(exc).__name__])[0]}; see {log})"
        except Exception as exc:         # a build that broke (compiler, simulator): reported, the table goes on
            result, why = "ERROR", f" ({type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}; see {log})"
        tests = get_results(xml)[0] if xml.exists() else 0
        if not xml.exists():
            result = "ERROR"
        print(f"{result}{why}", file=sys.stderr, flush=True)
        rows.append({"name": e.name, "top": e.top, "params": _params(e.params), "seeds": ",".join(map(str, seeds)),
                     "tests": tests, "result": result, "wall_s": time.time() - start})
    print(format_table(rows))
    print(f"logs and build folders: {out}", file=sys.stderr)
    return 0 if all(r["result"] == "PASS" for r in rows) else 1
