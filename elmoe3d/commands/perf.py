"""``elmoe3d perf``: tokens/s and J/token of MoE decoding on the serving systems, batch 1-16."""

import sys
from pathlib import Path

from ..cli import existing_file, float_in, positive_int, unit_fraction
from ..errors import UserError

HELP = ("system speed and energy model: tokens/s and J/token of Elastic-SD against naive and prior "
        "serving systems, batch 1-16, per MoE model")


def _names(text):
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise UserError(f"expected a comma-separated list of names, got {text!r}")
    return names


def add_arguments(p):
    p.add_argument("--systems", type=_names, help="comma-separated systems (default: all; --list shows them)")
    p.add_argument("--models", type=_names, help="comma-separated models (default: all; --list shows them)")
    p.add_argument("--batch", type=positive_int, nargs="+", default=list(range(1, 17)),
                   help="batch sizes, 1-16 (default 1 .. 16)")
    p.add_argument("--gamma", type=positive_int, default=4, help="draft length (default 4)")
    p.add_argument("--k-d", type=positive_int, default=1, help="draft experts per token (default 1)")
    p.add_argument("--dense-bits", choices=["full", "draft"], default="full",
                   help="bits of the elastic draft's dense parts (default full)")
    p.add_argument("--context", type=positive_int, default=1024, help="KV-cache positions per sequence (default 1024)")
    p.add_argument("--policy", choices=["score", "lru"], default="score",
                   help="HB cache policy whose measured efficiency applies (default score)")
    p.add_argument("--acceptance", type=unit_fraction,
                   help="per-token acceptance for every draft, in [0, 1] (default: measured on the shipped model)")
    p.add_argument("--skew", type=float_in(0.0, 4.0), help="routing skew (Zipf exponent, default: calibrated)")
    p.add_argument("--config", type=existing_file, metavar="FILE",
                   help="TOML or JSON file adding or overriding systems and models")
    p.add_argument("--no-sensitivity", action="store_true", help="skip the sensitivity sweeps")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG plots")
    p.add_argument("--list", action="store_true", help="list the systems and models and exit")
    p.add_argument("--json", metavar="FILE", type=Path, help="also write every figure as JSON to FILE")
    p.add_argument("-o", "--out", type=Path, default=Path("results/perf"),
                   help="output folder for perf.json, report.txt and the plots (default results/perf)")


def _select(kind, table, names):
    if names is None:
        return list(table.values())
    unknown = [n for n in names if n not in table]
    if unknown:
        raise UserError(f"unknown {kind} {unknown[0]!r}; choose from {', '.join(table)}")
    return [table[n] for n in names]


def _out_dir(path):
    if path.exists() and not path.is_dir():
        raise UserError(f"cannot write into {path}: it is a file")
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise UserError(f"cannot write into {path}: {parent} is a file")
    path.mkdir(parents=True, exist_ok=True)
    return path


def run(args):
    import json
    import time

    from ..cli import writable_path
    from ..perf import config_file, report, validate
    from ..perf.decode import Settings, sweep

    t0 = time.perf_counter()
    for b in args.batch:
        if b > 16:
            raise UserError(f"--batch {b}: a batch holds 1 to 16 sequences")
    systems_all, models_all = config_file.load(args.config)
    if args.list:
        for s in systems_all.values():
            print(f"system {s.name:<12} {s.label}")
        for m in models_all.values():
            print(f"model  {m.name:<18} {m.total_params / 1e9:.3f} B weights, {m.active_params / 1e9:.3f} B active; {m.source}")
        return 0
    systems = _select("system", systems_all, args.systems)
    models = _select("model", models_all, args.models)
    for m in models:
        if args.k_d > m.top_k:
            raise UserError(f"--k-d {args.k_d} exceeds top-k = {m.top_k} of model {m.name}")
    out = _out_dir(args.out)
    if args.json is not None:
        writable_path(str(args.json))
    settings = Settings(gamma=args.gamma, k_d=args.k_d, dense_bits=args.dense_bits, context=args.context,
                        policy=args.policy, acceptance=args.acceptance, skew=args.skew)
    route = settings.routing()
    batches = sorted(set(args.batch))
    rows = sweep(systems, models, settings, batches)
    t_sweep = time.perf_counter() - t0
    sens = {} if args.no_sensitivity else report.sensitivity(systems, models, settings, batches)
    gpu, rtl = validate.gpu_cases(), validate.rtl_checks()
    big = [m.name for m in models if m.name != "shipped"]
    sections = [
        report.inputs_table(systems, models, settings, route),
        report.main_table(rows),
        report.ratio_table(rows),
        *(report.breakdown_table(rows, m) for m in (big[:1] or [models[0].name])),
        report.claims_table(rows) if big else "(the papers' claims need a large model)",
        report.sensitivity_table(sens) if not args.no_sensitivity else "",
        report.validation_table(gpu, rtl),
    ]
    text = "\n\n".join(s for s in sections if s)
    print(text)
    (out / "report.txt").write_text(text + "\n")
    payload = {"settings": settings.__dict__, "routing": {"skew": route.skew, "rho": route.rho, "eta": route.eta},
               "systems": {s.name: s.to_dict() for s in systems},
               "models": {m.name: m.to_dict() for m in models}, "rows": rows,
               "claims": report.claims(rows) if big else [],
               "sensitivity": sens, "validation": {"gpu": gpu, "rtl": rtl}, "sweep_s": t_sweep}
    blob = json.dumps(payload, indent=1, default=str)
    (out / "perf.json").write_text(blob)
    if args.json is not None:
        Path(args.json).write_text(blob)
    written = [out / "report.txt", out / "perf.json"] + ([args.json] if args.json is not None else [])
    if not args.no_plot:
        report.plot_roofline(rows, systems, out / "roofline.png")
        report.plot_batch(rows, out / "batch.png")
        written += [out / "roofline.png", out / "batch.png"]
    print(f"elmoe3d perf: sweep of {len(systems)} systems x {len(models)} models x {len(batches)} batch sizes in "
          f"{t_sweep:.2f} s; wrote {', '.join(map(str, written))}", file=sys.stderr)
    return 0
