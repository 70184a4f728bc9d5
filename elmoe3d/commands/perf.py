"""``elmoe3d perf``: tokens/s and J/token of MoE decoding on the serving systems, batch 1-16."""

import sys
from pathlib import Path

from ..cli import existing_file, float_in, positive_float, positive_int, unit_fraction
from ..errors import UserError

HELP = ("system speed and energy model: tokens/s and J/token of Elastic-SD against naive and prior "
        "serving systems, batch 1-16, per MoE model; ablation ladder, elastic policy, sweeps, claims as ranges")


def _names(text):
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise UserError(f"expected a comma-separated list of names, got {text!r}")
    return names


def add_arguments(p):
    from ..perf.acceptance import SCENARIOS
    from ..perf.decode import OBJECTIVES
    from ..perf.systems import FOOTINGS
    p.add_argument("--systems", type=_names, help="comma-separated systems (default: all; --list shows them)")
    p.add_argument("--models", type=_names, help="comma-separated models (default: all; --list shows them)")
    p.add_argument("--batch", type=positive_int, nargs="+", default=list(range(1, 17)),
                   help="batch sizes, 1-16 (default 1 .. 16)")
    p.add_argument("--gamma", type=int, default=None,
                   help="draft length 0-16 for every speculative system (default: the elastic policy picks "
                        "0-8 per model and batch; 0 = no speculation)")
    p.add_argument("--k-d", type=positive_int, default=None,
                   help="draft experts per token (default: the policy picks half or all of the top-k)")
    p.add_argument("--objective", choices=OBJECTIVES, default="tokens_per_s",
                   help="what the elastic policy optimises: tokens_per_s (default) or j_per_token")
    p.add_argument("--scenario", choices=list(SCENARIOS), default="shipped",
                   help="acceptance scenario (default shipped: measured on the shipped model; others: published)")
    p.add_argument("--footing", choices=FOOTINGS, default="equal",
                   help="shared HBM efficiency and static power: equal (0.834, 72 W; default), equal-gpu "
                        "(0.524, 72 W) or stated (each system's own, the pre-issue-18 model)")
    p.add_argument("--hbm-efficiency", type=float_in(0.01, 1.0), help="override the footing's HBM efficiency (0-1]")
    p.add_argument("--static-w", type=float_in(0.0, 10000.0), help="override the footing's static power (W)")
    p.add_argument("--hb-gib", type=float_in(0.5, 1024.0),
                   help="HB capacity in GiB (bandwidth by the one HB rule, 272 GB/s per GiB; default 16)")
    p.add_argument("--hb-pj", type=positive_float, help="HB energy in pJ/bit (default 0.88)")
    p.add_argument("--dense-bits", choices=["full", "draft"], default="full",
                   help="bits of the elastic draft's dense parts (default full)")
    p.add_argument("--context", type=positive_int, default=1024, help="KV-cache positions per sequence (default 1024)")
    p.add_argument("--policy", choices=["score", "lru"], default="score",
                   help="HB cache policy whose measured efficiency applies (default score)")
    p.add_argument("--acceptance", type=unit_fraction,
                   help="per-token acceptance alpha for every draft, in [0, 1] (default: the scenario's)")
    p.add_argument("--skew", type=float_in(0.0, 4.0), help="routing skew (Zipf exponent, default: calibrated)")
    p.add_argument("--config", type=existing_file, metavar="FILE",
                   help="TOML or JSON file adding or overriding systems and models")
    p.add_argument("--bench-pe", type=existing_file, metavar="FILE",
                   help="a bench-pe --json report: the PE arrays' pJ/MAC from its Nangate 45 rows")
    p.add_argument("--bench-core", metavar="FILE",
                   help="a bench-core result (bench_core.json, or the folder bench-core -o wrote): the accelerators' "
                        "clock, bit-sliced pJ/MAC and on-chip energy from its Nangate 45 synthesis, and the RTL core's "
                        "layer passes for the validation (bench-core writes results/bench_core/bench_core.json; "
                        "default: none read)")
    p.add_argument("--rtl-overhead", action="store_true",
                   help="scale the accelerators' passes by the RTL core's measured cycles over perf's estimate of "
                        "the same pass (verify and draft passes of a shipped-model layer; needs a bench-core result)")
    p.add_argument("--no-sensitivity", action="store_true",
                   help="skip the sensitivity table, the claim ranges and the sweeps")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG plots")
    p.add_argument("--list", action="store_true", help="list the systems and models and exit")
    p.add_argument("--json", metavar="FILE", help="also write every figure as JSON to FILE")
    p.add_argument("--results-page", action="store_true",
                   help="also write docs/results/perf.md (stamped with the commit and date)")
    p.add_argument("-o", "--out", default="results/perf",
                   help="output folder for perf.json, report.txt and the plots (default results/perf)")


def _select(kind, table, names):
    if names is None:        # default: the systems of one setting (the A100/HBM2e one); offload has its section
        return [v for v in table.values() if not getattr(v, "own_footing", "")]
    unknown = [n for n in names if n not in table]
    if unknown:
        raise UserError(f"unknown {kind} {unknown[0]!r}; choose from {', '.join(table)}")
    return [table[n] for n in names]


def run(args):
    import json
    import time
    from dataclasses import replace

    from ..paths import output_dir, output_file, write_text
    from ..perf import config_file, report, studies, validate
    from ..perf.decode import Settings, sweep
    from ..perf import bench_core
    from ..perf.systems import _constants, array_pj_per_mac, bench_pe_pj
    from ..spec.sd import GAMMA_MAX

    t0 = time.perf_counter()
    for b in args.batch:
        if b > 16:
            raise UserError(f"--batch {b}: a batch holds 1 to 16 sequences")
    if args.gamma is not None and not 0 <= args.gamma <= GAMMA_MAX:
        raise UserError(f"--gamma {args.gamma}: a draft length is 0 to {GAMMA_MAX}")
    systems_all, models_all = config_file.load(args.config)
    if args.bench_pe is not None:
        pe, pipeline, fmax = bench_pe_pj(args.bench_pe)
        for name, s in list(systems_all.items()):
            if s.array is not None:
                systems_all[name] = replace(s, pj_per_mac=array_pj_per_mac(s.array.kind, pe))
    core_path = bench_core.resolve(args.bench_core)
    core_data = bench_core.load(core_path) if core_path is not None else None
    if core_data is not None:
        systems_all = bench_core.apply(systems_all, core_data, _constants()["node_energy_scale"]["value"])
    if args.rtl_overhead:
        over = validate.core_overheads(core_data)
        for name, s in list(systems_all.items()):
            if s.array is not None:
                systems_all[name] = replace(s, pass_overhead=dict(over))
    if args.list:
        for s in systems_all.values():
            print(f"system {s.name:<12} {s.label}")
        for m in models_all.values():
            print(f"model  {m.name:<18} {m.total_params / 1e9:.3f} B weights, {m.active_params / 1e9:.3f} B active; {m.source}")
        return 0
    systems = _select("system", systems_all, args.systems)
    models = _select("model", models_all, args.models)
    for m in models:
        if args.k_d is not None and args.k_d > m.top_k:
            raise UserError(f"--k-d {args.k_d} exceeds top-k = {m.top_k} of model {m.name}")
    if args.json is not None:               # both outputs checked before either is created
        output_file(args.json, "--json")
    out = output_dir(args.out)
    free = tuple(n for n, v in (("gamma", args.gamma), ("k_d", args.k_d)) if v is None)
    settings = Settings(gamma=4 if args.gamma is None else args.gamma, k_d=args.k_d, dense_bits=args.dense_bits,
                        context=args.context, policy=args.policy, acceptance=args.acceptance, skew=args.skew,
                        scenario=args.scenario)
    footed = studies.footed(systems, args.footing, args.hbm_efficiency, args.static_w, args.hb_gib, args.hb_pj)
    all_footed = {s.name: s for s in studies.footed(list(systems_all.values()), args.footing, args.hbm_efficiency,
                                                    args.static_w, args.hb_gib, args.hb_pj)}
    route = settings.routing()
    batches = sorted(set(args.batch))
    objective = args.objective if free else None
    rows = sweep(footed, models, settings, batches, objective, free)
    t_sweep = time.perf_counter() - t0
    big = [m for m in models if m.name != "shipped"]
    have = {s.name for s in systems}
    lad = (studies.ladder(all_footed, models, settings, [b for b in studies.BATCHES if b in batches] or batches[:1],
                          args.objective) if {"xpu", "hb3d", "elmoe3d"} <= set(all_footed) else {})
    studies_ok = not args.no_sensitivity and big and set(studies.CORE) <= set(systems_all)
    sens = report.sensitivity(footed, models, settings, batches, objective, free) if not args.no_sensitivity else {}
    ranges, grid = (studies.claim_ranges(systems_all, big, settings, args.objective) if studies_ok else ([], {}))
    sw = studies.sweeps(systems_all, big, settings, args.objective) if studies_ok else {}
    gpu, rtl = validate.gpu_cases(), validate.rtl_checks() + validate.core_checks(core_data)
    off = studies.offload_cases(systems_all, models_all) if "offload" in systems_all else []
    spec_ok = {"offload", "specmoe"} <= set(systems_all) and big
    spec = studies.specmoe_setting(systems_all, big, settings, args.objective) if spec_ok else {}
    spec_reuse = studies.specmoe_setting(systems_all, big, settings, args.objective, reuse=True) if spec_ok else {}
    t_all = time.perf_counter() - t0
    from ..perf.acceptance import acceptance_table
    sections = [
        report.inputs_table(footed, models, settings, route, args.footing),
        bench_core.describe(core_path, core_data),
        acceptance_table(),
        report.main_table(rows),
        studies.choices_table(rows) if "elmoe3d" in have and objective else "",
        report.ratio_table(rows),
        studies.ladder_table(lad) if lad else "",
        *(report.breakdown_table(rows, m) for m in (big[:1] or [models[0].name])),
        report.claims_table(rows) if big else "(the papers' claims need a large model)",
        studies.claims_range_table(ranges) if ranges else "",
        studies.sweeps_table(sw) if sw else "",
        report.sensitivity_table(sens) if not args.no_sensitivity else "",
        report.validation_table(gpu, rtl),
        studies.offload_table(off, spec, spec_reuse) if off else "",
    ]
    text = "\n\n".join(s for s in sections if s)
    print(text)
    write_text(out / "report.txt", text + "\n")
    payload = {"settings": settings.__dict__, "free": list(free), "objective": args.objective, "footing": args.footing,
               "routing": {"skew": route.skew, "rho": route.rho, "eta": route.eta},
               "systems": {s.name: s.to_dict() for s in footed},
               "models": {m.name: m.to_dict() for m in models}, "rows": rows,
               "claims": report.claims(rows) if big else [], "claim_ranges": ranges, "claim_grid": grid,
               "ladder": lad, "sweeps": sw, "sensitivity": sens,
               "validation": {"gpu": gpu, "rtl": rtl, "offload": off},
               "rtl_inputs": {"bench_core": str(core_path) if core_path else None,
                              **bench_core.accelerator_inputs(core_data)}, "specmoe_setting": spec, "specmoe_setting_reuse": spec_reuse,
               "sweep_s": t_sweep, "total_s": t_all}
    blob = json.dumps(payload, indent=1, default=str)
    write_text(out / "perf.json", blob)
    written = [out / "report.txt", out / "perf.json"]
    if args.json is not None:
        write_text(args.json, blob)
        written.append(Path(args.json))
    if not args.no_plot:
        report.plot_roofline(rows, footed, out / "roofline.png")
        report.plot_batch(rows, out / "batch.png")
        written += [out / "roofline.png", out / "batch.png"]
    if args.results_page:
        from ..results_page import command_line, write_page
        cmd = command_line("perf", "elmoe3d perf --results-page")
        written.append(write_page("perf", "System speed and energy (elmoe3d perf)", cmd, "```\n" + text + "\n```\n"))
    print(f"elmoe3d perf: sweep of {len(systems)} systems x {len(models)} models x {len(batches)} batch sizes in "
          f"{t_sweep:.2f} s, everything in {t_all:.1f} s; wrote {', '.join(map(str, written))}", file=sys.stderr)
    return 0
