"""``elmoe3d explore``: design-space exploration on Ray (see ``docs/explore.md``)."""

import sys
from pathlib import Path

from ..cli import positive_int

HELP = ("design-space exploration on Ray: array, cache and HB parameters against workloads; "
        "synthesis + system model per point, Pareto front, best point per workload")


def add_arguments(p):
    p.add_argument("space", nargs="?", metavar="SPACE.toml",
                   help="design-space file (default: the built-in explore/spaces/default.toml)")
    p.add_argument("-o", "--out", default="results/explore", metavar="DIR",
                   help="folder for points.jsonl (the resumable store), report.md, front.png, results.json "
                        "and configs/ (default %(default)s)")
    p.add_argument("--cache", default="results/explore-cache", metavar="DIR",
                   help="synthesis cache shared by runs, keyed by block, tools and Liberty (default %(default)s)")
    p.add_argument("--address", metavar="HOST:PORT",
                   help="join this Ray cluster (default: start a local Ray for the run)")
    p.add_argument("--num-cpus", type=positive_int, metavar="N",
                   help="CPUs of the local Ray (default: the machine's)")
    p.add_argument("--serial", action="store_true",
                   help="evaluate the points one after the other in this process, without Ray")
    p.add_argument("--json", metavar="FILE", help="also write every point, the front and the best points as JSON")
    p.add_argument("--page", metavar="NAME",
                   help="also write the results page docs/results/NAME.md and its plot NAME.png")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args):
    import json
    import re

    from ..errors import UserError
    from ..paths import output_dir, output_file, write_text
    from ..explore import report, space as space_mod
    from ..explore.run import explore

    if args.serial and args.address:
        raise UserError("--serial and --address exclude each other (--serial runs without Ray)")
    if args.serial and args.num_cpus:
        raise UserError("--num-cpus applies to the local Ray; --serial runs without Ray")
    if args.address is not None and not re.fullmatch(r"(auto|(ray://)?[\w.\-]+:\d{1,5})", args.address):
        raise UserError(f"--address {args.address!r}: expected HOST:PORT, ray://HOST:PORT or auto")
    if args.page is not None and not re.fullmatch(r"[\w\-]{1,64}", args.page):
        raise UserError(f"--page {args.page!r}: expected a name of letters, digits, '-' and '_'")
    if args.space is not None and not Path(args.space).is_file():
        raise UserError(f"no such space file: {args.space!r}" if not Path(args.space).exists()
                        else f"space file {args.space}: not a file")
    space = space_mod.load(args.space)
    if args.json is not None:
        output_file(args.json)
    for path in (args.out, args.cache):
        if Path(path).exists() and not Path(path).is_dir():        # before either folder is made
            raise UserError(f"cannot write into {path}: it is a file")
    out = output_dir(args.out)
    cache = output_dir(args.cache, "--cache")
    stats = {}
    records = explore(space, out, cache, address=args.address, serial=args.serial, num_cpus=args.num_cpus,
                      progress=not args.no_progress, stats=stats)
    from ..results_page import command_line
    command = command_line("explore")
    text = report.write(out, space, records, command, stats)
    blob = json.dumps(report.payload(records, space), indent=1, default=str)
    write_text(out / "results.json", blob)
    if args.json is not None:
        write_text(Path(args.json), blob)
    print(text)
    if args.page is not None:
        from ..results_page import RESULTS_DIR, write_page
        import shutil
        body = text
        if (out / "front.png").exists():
            RESULTS_DIR.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(out / "front.png", RESULTS_DIR / f"{args.page}.png")
            body = f"![Pareto front]({args.page}.png)\n\n" + text
        path = write_page(args.page, "Design-space exploration", command, body)
        print(f"elmoe3d explore: wrote {path}", file=sys.stderr)
    ok = sum(r["status"] == "ok" for r in records)
    print(f"elmoe3d explore: {ok} of {len(records)} points ok; wrote {out / 'report.md'}, {out / 'points.jsonl'}",
          file=sys.stderr)
    return 0
