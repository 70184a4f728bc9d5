"""``elmoe3d bench-pe``: area, Fmax, power and energy of the bit-sliced PE array vs the INT8 baseline.

For one array shape (default 16 x 16, one lane) and each Liberty library (default: the shipped
sky130 hd and Nangate 45), synthesizes ``pe_array`` and ``mac_array_baseline`` with
``elmoe3d.synth.flow.synthesize`` and reports per mode (DRAFT, FULL, INT8): area, sequential
share, Fmax, power at the target clock and activity, pJ per MAC, and throughput per area
relative to the baseline of the same pipeline depth (MACs per cycle x Fmax / area). Each depth
of ``--pipeline`` (default: the generator's default, 3, beside the old default, 1) gets its own
rows, and ``vs p1`` compares a design and mode with itself at depth 1. It also simulates both arrays (cocotb,
no stalls) and prints the cycles per GEMV command measured against ``gemv_cycles``, and sets the
figures beside the Bit Fusion reference (ISCA'18: a fixed 8x8 MAC is 687.6 um^2 and 0.34 pJ per
cycle at 45 nm, 500 MHz; its bit-flexible unit costs about 2.5x that area).
"""

import json
import sys
from pathlib import Path

from ..cli import clock_ns, positive_int, unit_fraction
from ..errors import UserError

HELP = "benchmark the bit-sliced PE array (DRAFT/FULL) against the INT8 MAC array: area, Fmax, mW, pJ/MAC, cycles"

DEFAULT_CLOCK_NS = {"sky130hd": 10.0, "nangate45": 2.0}   # 100 MHz / 500 MHz (Bit Fusion's clock)
BIT_FUSION = {"mac_area_um2": 687.6, "pj_per_cycle": 0.34, "node": "45 nm", "clock_mhz": 500,
              "flexible_area_factor": 2.5}


def add_arguments(p):
    p.add_argument("--rows", type=positive_int, default=16, help="array rows (default %(default)s)")
    p.add_argument("--cols", type=positive_int, default=16, help="array columns (default %(default)s)")
    p.add_argument("--lanes", type=positive_int, default=1, help="batch lanes (default %(default)s)")
    p.add_argument("--pipeline", type=int, action="append", metavar="P",
                   help="PE pipeline depth (0-3); repeatable (default: the generator's default 3 and the "
                        "old default 1, side by side)")
    p.add_argument("--liberty", action="append", metavar="LIB",
                   help="a shipped library (sky130hd, nangate45) or a Liberty path; repeatable "
                        "(default: both shipped libraries)")
    p.add_argument("--clock-ns", type=clock_ns,
                   help="clock target for every library (default: sky130hd 10 ns, nangate45 2 ns, others 5 ns)")
    p.add_argument("--activity", type=unit_fraction, default=0.2, help="input activity for power (default %(default)s)")
    p.add_argument("--k", type=positive_int, default=4096, help="GEMV length for the cycle count (default %(default)s)")
    p.add_argument("--no-sim", action="store_true", help="skip the cycle-count simulation")
    p.add_argument("--reuse", action="store_true",
                   help="reuse a synthesis report already in -o DIR when its parameters, library, clock "
                        "and activity match (re-render the tables without re-synthesizing)")
    p.add_argument("-o", "--out", metavar="DIR", default="results/bench-pe",
                   help="folder for synthesis and simulation runs (default %(default)s)")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON to FILE")


def _libraries(args):
    from ..toolchain import LIBERTY_FILES, PDK_DIR
    libs = args.liberty or [n for n in LIBERTY_FILES if (PDK_DIR / LIBERTY_FILES[n]).is_file()]
    if not libs:
        raise UserError(f"no shipped Liberty file in {PDK_DIR}: pass --liberty FILE")
    return libs


def _clock(lib, args):
    return args.clock_ns or DEFAULT_CLOCK_NS.get(lib, 5.0)


def design_rows(lib, sliced, base, pipeline=None):
    """Per-mode rows ``{design, mode, area, ...}`` from two synthesis reports (see module doc)."""
    rows = []
    base_tp = base["energy"]["macs_per_cycle"]["int8"] * base["timing"]["fmax_mhz"] / base["area"]["total"]["area"]
    for report, design in ((sliced, "pe_array"), (base, "mac_array_baseline")):
        area = report["area"]["total"]
        for mode, macs in report["energy"]["macs_per_cycle"].items():
            tp_area = macs * report["timing"]["fmax_mhz"] / area["area"]
            rows.append({
                "library": lib, "design": design, "mode": mode, "pipeline": pipeline,
                "area_um2": area["area"], "sequential_share": area["sequential_share"],
                "fmax_mhz": report["timing"]["fmax_mhz"], "clock_ns": report["timing"]["clock_ns"],
                "worst_slack_ns": report["timing"]["worst_slack_ns"],
                "power_mw": report["power_mw"]["total"], "macs_per_cycle": macs,
                "pj_per_mac": report["energy"]["per_mac_pj"][mode],
                "gmacs_at_fmax": macs * report["timing"]["fmax_mhz"] / 1000.0,
                "tp_per_area_rel": tp_area / base_tp,
            })
    return rows


def relative_to_depth(rows, depth=1):
    """Add ``tp_per_area_vs_p{depth}``: throughput per area over the same library, design and mode
    at pipeline ``depth`` (None where that depth was not run)."""
    ref = {(r["library"], r["design"], r["mode"]): r for r in rows if r.get("pipeline") == depth}
    for r in rows:
        base = ref.get((r["library"], r["design"], r["mode"]))
        r[f"tp_per_area_vs_p{depth}"] = None if base is None else (
            (r["gmacs_at_fmax"] / r["area_um2"]) / (base["gmacs_at_fmax"] / base["area_um2"]))
    return rows


def augmentation_share(report):
    """Area of the LSB-augmentation instances (``aug_*``) in a ``pe_array`` report."""
    for group in report["area"].get("groups", []):
        if group["module"].endswith(".aug_*"):
            return {"area_um2": group["area"], "share": group["share_of_design"], "instances": group["instances"]}
    return None


def format_tables(result):
    out = []
    hdr = (f"{'library':<10} {'design':<19} {'mode':<6} {'pipe':>4} {'area um2':>10} {'seq %':>6} {'Fmax MHz':>9} "
           f"{'clk ns':>6} {'mW@clk':>8} {'MAC/cyc':>7} {'pJ/MAC':>7} {'GMAC/s':>7} {'TP/area vs INT8':>15} "
           f"{'vs p1':>6}")
    out += [hdr, "-" * len(hdr)]
    for r in result["designs"]:
        pipe = "" if r.get("pipeline") is None else r["pipeline"]
        vs = r.get("tp_per_area_vs_p1")
        out.append(f"{r['library']:<10} {r['design']:<19} {r['mode']:<6} {pipe:>4} {r['area_um2']:>10.0f} "
                   f"{100 * r['sequential_share']:>6.1f} {r['fmax_mhz']:>9.1f} {r['clock_ns']:>6.1f} "
                   f"{r['power_mw']:>8.2f} {r['macs_per_cycle']:>7g} {r['pj_per_mac']:>7.3f} "
                   f"{r['gmacs_at_fmax']:>7.2f} {r['tp_per_area_rel']:>14.2f}x "
                   + ("     -" if vs is None else f"{vs:>5.2f}x"))
    for lib, aug in result["augmentation"].items():
        if aug:
            out.append(f"{lib}: LSB augmentation ({aug['instances']} x aug_*): {aug['area_um2']:.0f} um2 = "
                       f"{100 * aug['share']:.2f} % of the bit-sliced array")
    for lib, ref in result["bit_fusion"].items():
        out.append(f"{lib}: area per MAC unit, INT8 baseline {ref['baseline_um2_per_mac']:.0f} um2, bit-sliced "
                   f"{ref['sliced_um2_per_mac']:.0f} um2 ({ref['sliced_vs_baseline']:.2f}x; Bit Fusion's "
                   f"bit-flexible unit {BIT_FUSION['flexible_area_factor']}x of its "
                   f"{BIT_FUSION['mac_area_um2']} um2 fixed 8x8 MAC at {BIT_FUSION['node']})")
        out.append(f"{lib}: energy, INT8 baseline {ref['baseline_pj_per_mac']:.3f} pJ/MAC, DRAFT "
                   f"{ref['draft_pj_per_mac']:.3f}, FULL {ref['full_pj_per_mac']:.3f} (Bit Fusion fixed 8x8 "
                   f"MAC: {BIT_FUSION['pj_per_cycle']} pJ/cycle at {BIT_FUSION['clock_mhz']} MHz)")
    if result.get("cycles"):
        out.append("")
        hdr = f"{'design':<19} {'mode':<6} {'pipe':>4} {'K':>6} {'measured cycles':>16} {'model':>8}"
        out += [hdr, "-" * len(hdr)]
        for r in result["cycles"]:
            pipe = "" if r.get("pipeline") is None else r["pipeline"]
            out.append(f"{r['design']:<19} {r['mode']:<6} {pipe:>4} {r['k']:>6} {r['measured']:>16} {r['model']:>8}")
    return "\n".join(out)


def _cycles(args, out, pipelines):
    from ..sim.benches.launch import run_top_bench
    rows = []
    ks = sorted({args.cols, args.k, args.k + 1})
    for pipeline in pipelines:
        for design in ("pe_array", "mac_array_baseline"):
            build = out / f"sim-{design}-p{pipeline}"
            print(f"elmoe3d bench-pe: simulating {design} (pipeline {pipeline}) for cycle counts ...",
                  file=sys.stderr, flush=True)
            run_top_bench(design, dict(rows=args.rows, cols=args.cols, lanes=args.lanes, pipeline=pipeline,
                                       max_k=max(4096, args.k + 1)),
                          build, seeds=(1,), testcase="test_cycles", cycle_ks=ks)
            data = json.loads((build / "cycles.json").read_text())
            rows += [{"design": design, "pipeline": pipeline, **r} for r in data["rows"]]
    return rows


def _reusable(folder, design, params, clock, activity):
    """The report in ``folder`` if it was made for the same design and settings, else None."""
    path = folder / "report.json"
    if not path.is_file():
        return None
    try:
        report = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise UserError(f"--reuse: {path} is not a JSON synthesis report ({exc}); delete it or "
                        "run without --reuse") from None
    if not isinstance(report, dict) or not isinstance(report.get("params", {}), dict):
        raise UserError(f"--reuse: {path} is not a synthesis report (not a JSON object with params)")
    same = (report.get("top") == design and report.get("clock_ns") == clock and report.get("activity") == activity
            and all(report.get("params", {}).get(k) == v for k, v in params.items()))
    if not same:
        return None
    missing = _missing_figures(report)
    if missing:
        raise UserError(f"--reuse: {path} lacks {missing}; delete it or run without --reuse")
    print(f"elmoe3d bench-pe: reusing {path}", file=sys.stderr)
    return report


def _missing_figures(report):
    """The first key path that :func:`design_rows` needs and ``report`` lacks, or None."""
    need = [("area", "total", "area"), ("area", "total", "sequential_share"), ("timing", "fmax_mhz"),
            ("timing", "clock_ns"), ("timing", "worst_slack_ns"), ("power_mw", "total"),
            ("energy", "macs_per_cycle"), ("energy", "per_mac_pj")]
    for keys in need:
        node = report
        for k in keys:
            if not isinstance(node, dict) or k not in node:
                return "/".join(keys)
            node = node[k]
        if keys[-1] not in ("macs_per_cycle", "per_mac_pj") and not isinstance(node, (int, float)):
            return "/".join(keys) + " as a number"
    return None


def run(args):
    from ..paths import output_dir, output_file, write_text
    if args.json is not None:
        output_file(args.json, "--json")
    from ..hw.pe import DEFAULT_PIPELINE, check_acc, check_pipeline
    from ..hw.pe_array import MAX_COLS, MAX_LANES, MAX_ROWS, check_size
    check_size("rows", args.rows, MAX_ROWS)            # refuse bad shapes before slow work
    check_size("cols", args.cols, MAX_COLS)
    check_size("lanes", args.lanes, MAX_LANES)
    check_acc(32, max(4096, args.k + 1))
    pipelines = list(dict.fromkeys(args.pipeline or [DEFAULT_PIPELINE, 1]))
    for pipeline in pipelines:
        check_pipeline(pipeline)
    libs = _libraries(args)
    try:
        from ..synth.flow import resolve_liberty, synthesize
    except ImportError:
        raise UserError("the synthesis flow (elmoe3d.synth.flow) is not installed") from None
    for lib in libs:                       # a missing or bad Liberty is refused before any work
        resolve_liberty(lib)
    out = output_dir(args.out)
    params = dict(rows=args.rows, cols=args.cols, lanes=args.lanes)
    result = {"params": params, "pipelines": pipelines, "activity": args.activity, "designs": [], "augmentation": {},
              "bit_fusion": {}, "reports": {}, "bit_fusion_reference": BIT_FUSION}
    for lib in libs:
        clock = _clock(lib, args)
        for pipeline in pipelines:
            reports = {}
            pparams = {**params, "pipeline": pipeline}
            for design in ("pe_array", "mac_array_baseline"):
                folder = out / f"{Path(lib).name.split('.')[0]}-{design}-p{pipeline}"
                reports[design] = (_reusable(folder, design, pparams, clock, args.activity) if args.reuse else None) \
                    or synthesize(design, pparams, folder, liberty=lib, clock_ns=clock, activity=args.activity)
                result["reports"][f"{lib}/{design}/p{pipeline}"] = str(folder / "report.md")
                if reports[design]["timing"] is None:
                    raise UserError(f"{lib}: synthesis gave no timing/power (is OpenSTA installed?)")
            sliced, base = reports["pe_array"], reports["mac_array_baseline"]
            result["designs"] += design_rows(lib, sliced, base, pipeline)
            key = lib if pipeline == pipelines[0] else f"{lib} p{pipeline}"
            result["augmentation"][key] = augmentation_share(sliced)
            units = args.rows * args.cols * args.lanes
            result["bit_fusion"][key] = {
                "baseline_um2_per_mac": base["area"]["total"]["area"] / units,
                "sliced_um2_per_mac": sliced["area"]["total"]["area"] / units,
                "sliced_vs_baseline": sliced["area"]["total"]["area"] / base["area"]["total"]["area"],
                "baseline_pj_per_mac": base["energy"]["per_mac_pj"]["int8"],
                "draft_pj_per_mac": sliced["energy"]["per_mac_pj"]["draft"],
                "full_pj_per_mac": sliced["energy"]["per_mac_pj"]["full"],
            }
    relative_to_depth(result["designs"], 1)
    if not args.no_sim:
        result["cycles"] = _cycles(args, out, pipelines)
        bad = [r for r in result["cycles"] if r["measured"] != r["model"]]
        if bad:
            print(f"elmoe3d bench-pe: cycle counts differ from the model: {bad}", file=sys.stderr)
    print(f"bit-sliced PE array vs INT8 baseline, {args.rows} x {args.cols} x {args.lanes} lane(s), "
          f"pipeline {', '.join(map(str, pipelines))}, activity {args.activity}")
    print(format_tables(result))
    if args.json is not None:
        write_text(args.json, json.dumps(result, indent=2) + "\n")
    return 0 if all(r["measured"] == r["model"] for r in result.get("cycles", [])) else 1
