"""``elmoe3d sd``: an Elastic-SD study on the shipped MoE language model."""

import sys
from pathlib import Path

from ..cli import nonnegative_int, positive_float, positive_int
from ..errors import UserError

HELP = "Elastic-SD study on the shipped MoE model: acceptance, traffic and speed-up over a grid of draft settings"


def _default_model(name):
    """The shipped weights (the installed package's data folder, or the source tree's)."""
    from .. import sim
    return sim.DATA / name


def add_arguments(p):
    p.add_argument("--model", type=Path, help="target weights (.npz; default: the shipped moe_lm.npz)")
    p.add_argument("--draft-model", type=Path,
                   help="separate draft model for the baseline (default: the shipped draft_lm.npz)")
    p.add_argument("--batch", type=positive_int, nargs="+", default=[1, 4, 16], help="batch sizes, 1-16 (default 1 4 16)")
    p.add_argument("--k-d", type=positive_int, nargs="+", default=[1, 2], help="draft experts per token (default 1 2)")
    p.add_argument("--bits", choices=["draft", "full"], nargs="+", default=["draft", "full"],
                   help="bit modes of the draft's experts (default draft full)")
    p.add_argument("--dense-bits", choices=["full", "draft"], nargs="+", default=["full", "draft"],
                   help="bit modes of the draft's attention and LM head (default full draft)")
    p.add_argument("--choice", choices=["topk", "cached"], nargs="+", default=["topk", "cached"],
                   help="draft expert choice (default topk cached)")
    p.add_argument("--gamma", type=positive_int, nargs="+", default=[4], help="draft lengths (default 4)")
    p.add_argument("--adaptive", action="store_true", help="also run each gamma adaptively")
    p.add_argument("--capacity", type=nonnegative_int, default=16,
                   help="HB expert cache in MSB planes (default 16: half of 4 layers x 8 experts)")
    p.add_argument("--scope", choices=["layer", "shared"], default="layer",
                   help="cache capacity split per layer or shared (default layer)")
    from ..sim.sd.sd_cache import POLICIES
    p.add_argument("--policy", choices=POLICIES, default="lru", help="cache replacement policy (default lru)")
    p.add_argument("--prefetch", action="store_true", help="prefetch the draft's predicted experts")
    p.add_argument("--new", type=positive_int, default=32, help="bytes generated per sequence (default 32)")
    p.add_argument("--prompt-len", type=positive_int, default=64, help="prompt bytes (default 64)")
    p.add_argument("--sampling", action="store_true", help="speculative sampling instead of greedy")
    p.add_argument("--temperature", type=positive_float, default=1.0, help="sampling temperature (default 1)")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="sampling seed (default 0)")
    p.add_argument("--no-baselines", action="store_true", help="skip plain decoding and the separate draft")
    p.add_argument("--traces", action="store_true", help="write a routing trace per run to OUT/traces/")
    p.add_argument("--quick", action="store_true",
                   help="small grid: batch 1 4, k_d 1 2, draft expert bits, full dense bits, topk, 16 new bytes")
    p.add_argument("--engine", choices=["golden", "iss", "rtl"],
                   help="run the integer model with every MoE layer pass on: golden (the integer golden layer), "
                        "iss (the instruction-set simulator), rtl (a Verilated core, memory models in HDL, one "
                        "simulation for the whole run: slow, use a small grid); default: the float model")
    from ..config import PRESETS as _PRESETS
    p.add_argument("--preset", choices=list(_PRESETS), default="small",
                   help="accelerator of --engine iss|rtl (default small)")
    p.add_argument("--lanes", type=nonnegative_int, default=0,
                   help="PE-array lanes of that accelerator (1 .. its buffers.tokens; default 0 keeps the preset's; "
                        "fewer lanes simulate faster with --engine rtl)")
    p.add_argument("-o", "--out", default="results/sd", metavar="DIR", help="output folder (default %(default)s)")


def _settings_grid(args, top_k):
    from ..sim.sd.elastic_sd import SDSettings
    common = dict(cache_policy=args.policy, cache_capacity=args.capacity, cache_scope=args.scope,
                  prefetch=args.prefetch, sampling=args.sampling, temperature=args.temperature,
                  integer=getattr(args, "engine", None) is not None)
    grid = []
    if not args.no_baselines:
        grid.append(SDSettings(method="plain", **common))
    for gamma in args.gamma:
        for adaptive in ([False, True] if args.adaptive else [False]):
            g = dict(gamma=gamma, adaptive=adaptive, gamma_max=max(8, gamma))
            if not args.no_baselines:
                grid.append(SDSettings(method="separate", **g, **common))
            for k_d in args.k_d:
                if k_d > top_k:
                    raise UserError(f"--k-d {k_d} exceeds the model's top-k = {top_k}")
                for bits in args.bits:
                    for dense in args.dense_bits:
                        for choice in args.choice:
                            grid.append(SDSettings(k_d=k_d, expert_bits=bits, dense_bits=dense,
                                                   expert_choice=choice, **g, **common))
    return grid


MAX_CACHE_ENTRIES = 4096      # the golden expert cache's largest size (elmoe3d.config.CacheConfig.entries)

COLUMNS = ["batch", "label", "method", "k_d", "expert_bits", "dense_bits", "expert_choice", "gamma",
           "adaptive", "acceptance_rate", "tokens_per_target_pass", "pass_speedup", "target_passes",
           "experts_per_target_pass", "experts_per_token", "hit_rate", "bytes_per_token",
           "bytes_per_token_hb", "bytes_per_token_offchip", "bytes_per_token_msb", "bytes_per_token_lsb",
           "tokens_per_s"]


def run(args):
    import json

    import numpy as np
    from tqdm import tqdm

    from ..paths import output_dir, write_text
    from ..sim.lm import corpus
    from ..sim.sd.elastic_sd import generate
    from ..sim.lm.model import MoELM

    if args.quick:
        args.batch, args.k_d, args.bits, args.choice, args.new = [1, 4], [1, 2], ["draft"], ["topk"], 16
        args.dense_bits = ["full"]
    for b in args.batch:
        if b > 16:
            raise UserError(f"--batch {b}: a batch holds 1 to 16 sequences")
    model_path = args.model or _default_model("moe_lm.npz")
    draft_path = args.draft_model or _default_model("draft_lm.npz")
    target = MoELM.load(model_path)
    draft = None if args.no_baselines else MoELM.load(draft_path)
    grid = _settings_grid(args, target.cfg.top_k)
    most = MAX_CACHE_ENTRIES
    per_cache = args.capacity // target.cfg.n_layers if args.scope == "layer" else args.capacity
    if per_cache > most:
        total = most * (target.cfg.n_layers if args.scope == "layer" else 1)
        raise UserError(f"--capacity {args.capacity}: the golden expert cache holds at most {most} planes "
                        f"({total} with --scope {args.scope} on {target.cfg.n_layers} layers)")
    held = corpus.load_bytes(corpus.split_files(corpus.stdlib_files())[1])
    prompts = list(corpus.heldout_windows(held, max(args.batch), args.prompt_len))
    if args.prompt_len + args.new > target.cfg.max_seq:      # the rule of elastic_sd's prompt check
        raise UserError(f"--prompt-len {args.prompt_len} + --new {args.new} = {args.prompt_len + args.new} positions: "
                        f"the model holds at most max_seq = {target.cfg.max_seq}")
    if args.lanes and args.engine not in ("iss", "rtl"):
        raise UserError("--lanes sets the accelerator of --engine iss|rtl; give one of them")
    if args.engine in ("iss", "rtl"):
        _check_engine(args, target)            # the accelerator can hold the model: before any work
    args.out = output_dir(args.out)            # created (nested too) and checked before any work
    if args.traces:
        output_dir(args.out / "traces")
    print(f"elmoe3d sd: {model_path.name} ({target.meta.get('steps', '?')} steps), {len(grid)} settings x "
          f"batch {' '.join(map(str, args.batch))}, {args.new} new bytes after {args.prompt_len}-byte "
          f"held-out prompts, {'sampling' if args.sampling else 'greedy'}", file=sys.stderr)
    rows = []
    jobs = [(b, s) for b in args.batch for s in grid]
    if args.engine == "rtl":
        rows = _run_rtl(args, target, model_path, jobs, prompts)
    if args.engine == "iss":
        from ..firmware.engine import IssEngine
        from ..hw.core import core_config
        target.moe_engine = IssEngine(target, core_config(args.preset, args.lanes))
    for b, s in tqdm(jobs if args.engine != "rtl" else [], desc="elmoe3d sd", unit="run", file=sys.stderr):
        trace = args.out / "traces" / f"{s.label().replace(' ', '_').replace('/', '-')}_b{b}.jsonl" if args.traces else None
        r = generate(target, prompts[:b], args.new, s, draft_model=draft, seed=args.seed, trace_path=trace)
        rows.append({k: r.stats[k] for k in COLUMNS})

    _write_table(rows, args.out)
    write_text(args.out / "sd.json", json.dumps(
        {"model": str(model_path), "model_steps": target.meta.get("steps"),
         "new": args.new, "prompt_len": args.prompt_len, "capacity": args.capacity,
         "scope": args.scope, "policy": args.policy, "rows": rows}, indent=1,
        default=lambda x: x.item() if isinstance(x, np.generic) else str(x)))
    _plot(rows, args.out / "sd.png")
    print(format_table(rows))
    for line in best_per_batch(rows, target.cfg.top_k):
        print(line)
    print(f"wrote {args.out / 'sd.csv'}, {args.out / 'sd.json'}, {args.out / 'sd.png'}", file=sys.stderr)
    return 0


def _check_engine(args, target):
    """One line (UserError) when ``--preset``'s accelerator cannot run the model's layers:
    the compiler's checks; for ``rtl`` also the core's, the bench's memories and the estimated
    Verilator build (``hw/sim_budget.py``)."""
    from ..hw.core import core_config
    cfg = core_config(args.preset, args.lanes)         # refuses lanes outside 1 .. buffers.tokens
    if args.engine == "iss":
        from ..firmware.compiler import compile_model
        compile_model(cfg, target.int_layers)
        return
    if args.traces:
        raise UserError("--traces is not available with --engine rtl")
    from ..sim.benches.rtl_engine import check_fits
    check_fits(cfg, target)
    from ..hw.sim_budget import check_core_simulation
    check_core_simulation(cfg, "sd --engine rtl")


def _run_rtl(args, target, model_path, jobs, prompts):
    """``--engine rtl``: the jobs on one Verilated core (``sim/benches/rtl_engine.py``); each
    job's bytes checked against the same setting on the integer golden layer; prints the RTL's
    cycles per pass kind and per generated byte and its cache hit rate. Returns the rows."""
    from ..sim.benches.rtl_engine import run_sd_on_rtl
    from ..sim.sd.elastic_sd import generate
    if any(s.method == "separate" for _, s in jobs):
        # the separate draft model is another model: only the target's layers run on the core
        print("elmoe3d sd: --engine rtl leaves out the separate-draft baseline", file=sys.stderr)
        jobs = [(b, s) for b, s in jobs if s.method != "separate"]
    print(f"elmoe3d sd: --engine rtl: {len(jobs)} runs on a Verilated {args.preset} core"
          f"{f' with {args.lanes} lanes' if args.lanes else ''} (building it first "
          f"unless built before; one line per layer pass follows)", file=sys.stderr, flush=True)
    results, summary = run_sd_on_rtl(model_path, {"preset": args.preset, "lanes": args.lanes}, jobs, prompts, args.new,
                                     args.out / "rtl", seed=args.seed)
    rows = []
    for (b, s), res in zip(jobs, results):
        gold = generate(target, prompts[:b], args.new, s, seed=args.seed)      # the integer golden layer
        same = all(list(g) == t for g, t in zip(gold.tokens, res["tokens"]))
        if not same:
            raise UserError(f"{s.label()} batch {b}: the RTL's bytes differ from the integer golden model's")
        rtl = res["rtl"]
        row = {k: res["stats"][k] for k in COLUMNS}
        row.update(rtl_cycles=rtl["cycles"], rtl_cycles_per_token=rtl["cycles"] / rtl["generated"],
                   rtl_hit_rate=rtl["hits"] / rtl["lookups"] if rtl["lookups"] else float("nan"),
                   rtl_kinds=rtl["kinds"], rtl_equals_golden=same)
        rows.append(row)
        print(f"RTL batch {b} {s.label()}: {rtl['passes']} layer passes, {rtl['cycles']} cycles, "
              f"{row['rtl_cycles_per_token']:.0f} cycles per generated byte, cache hit rate "
              f"{row['rtl_hit_rate']:.2f}, bytes equal the golden integer model's")
        for name, k in rtl["kinds"].items():
            print(f"    {name:<22} {k['passes']:>4} passes {k['cycles'] / k['passes']:>9.0f} cycles each "
                  f"(cycle model {k['iss_cycles'] / k['passes']:.0f}, ratio {k['ratio']:.3f})")
    print(f"RTL in all: {summary['passes']} passes, {summary['cycles']} cycles, hit rate {summary['hit_rate']:.2f}, "
          f"largest cycle difference from the cycle model {100 * summary['worst_cycle_error']:.1f} %, "
          f"{summary['cycles'] / max(summary['sim_seconds'], 1e-9):.0f} simulated cycles/s", file=sys.stderr)
    return rows


def _write_table(rows, out):
    import csv
    import io

    from ..paths import write_text
    text = io.StringIO(newline="")
    w = csv.DictWriter(text, fieldnames=COLUMNS, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    write_text(out / "sd.csv", text.getvalue())


def format_table(rows):
    """A fixed-width text table of the main figures (bytes in KiB per generated token)."""
    head = (f"{'batch':>5} {'setting':<40} {'accept':>6} {'tok/pass':>8} {'speedup':>7} {'exp/tok':>7} "
            f"{'hit':>5} {'KiB/tok':>8} {'HB':>7} {'offchip':>7} {'tok/s':>6}")
    lines = [head, "-" * len(head)]
    for r in rows:
        acc = "-" if r["acceptance_rate"] != r["acceptance_rate"] else f"{r['acceptance_rate']:.2f}"
        lines.append(f"{r['batch']:>5} {r['label']:<40} {acc:>6} {r['tokens_per_target_pass']:>8.2f} "
                     f"{r['pass_speedup']:>6.2f}x {r['experts_per_token']:>7.2f} {r['hit_rate']:>5.2f} "
                     f"{r['bytes_per_token'] / 1024:>8.0f} {r['bytes_per_token_hb'] / 1024:>7.0f} "
                     f"{r['bytes_per_token_offchip'] / 1024:>7.0f} {r['tokens_per_s']:>6.0f}")
    return "\n".join(lines)


def is_target_copy(row, top_k):
    """A draft identical to the target (all experts, all bits): always accepted, no cheaper."""
    return (row["method"] == "elastic" and row["k_d"] == top_k and row["expert_bits"] == "full"
            and row["dense_bits"] == "full" and row["expert_choice"] == "topk")


def best_per_batch(rows, top_k):
    """Per batch size, the setting with the largest target-pass speed-up (drafts identical to the
    target left out) and the one with the least off-chip traffic per token (the memory-bound
    cost)."""
    out = []
    for b in sorted({r["batch"] for r in rows}):
        rs = [r for r in rows if r["batch"] == b]
        fast = max([r for r in rs if not is_target_copy(r, top_k)] or rs, key=lambda r: (r["pass_speedup"], -r["bytes_per_token_offchip"]))
        lean = min(rs, key=lambda r: (r["bytes_per_token_offchip"], -r["pass_speedup"]))
        out.append(f"batch {b:>2}: best speed-up {fast['label']} ({fast['pass_speedup']:.2f}x target passes, "
                   f"{fast['bytes_per_token_offchip'] / 1024:.0f} KiB/token off-chip); least off-chip traffic "
                   f"{lean['label']} ({lean['bytes_per_token_offchip'] / 1024:.0f} KiB/token, "
                   f"{lean['pass_speedup']:.2f}x)")
    return out


def _plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = sorted({r["batch"] for r in rows})
    metrics = [("acceptance_rate", "acceptance rate"), ("bytes_per_token_offchip", "off-chip KiB / token"),
               ("bytes_per_token", "total KiB / token"), ("pass_speedup", "speed-up in target passes")]
    fig, axes = plt.subplots(len(metrics), len(batches), figsize=(4.2 * len(batches), 2.8 * len(metrics)),
                             squeeze=False)
    for col, b in enumerate(batches):
        rs = [r for r in rows if r["batch"] == b]
        elastic = [r for r in rs if r["method"] == "elastic"]
        curves = sorted({(r["expert_bits"], r["dense_bits"], r["expert_choice"], r["gamma"], r["adaptive"])
                         for r in elastic})
        for row, (key, name) in enumerate(metrics):
            ax = axes[row][col]
            scale = 1024 if "bytes" in key else 1
            for c in curves:
                pts = sorted((r["k_d"], r[key] / scale) for r in elastic
                             if (r["expert_bits"], r["dense_bits"], r["expert_choice"], r["gamma"], r["adaptive"]) == c)
                ax.plot(*zip(*pts), marker="o",
                        label=f"experts {c[0]}, dense {c[1]}, {c[2]}, g{c[3]}{'a' if c[4] else ''}")
            for r, style in ((r, s) for r in rs for m, s in (("plain", ":"), ("separate", "--")) if r["method"] == m):
                if r[key] == r[key]:
                    ax.axhline(r[key] / scale, linestyle=style, color="gray",
                               label=f"{r['method']}{'' if r['method'] == 'plain' else ' g' + str(r['gamma'])}")
            ax.set_xticks(sorted({r["k_d"] for r in elastic}) or [1])
            ax.set_xlabel("draft experts per token k_d")
            ax.set_ylabel(name)
            if row == 0:
                ax.set_title(f"batch {b}")
            ax.grid(alpha=0.3)
    uniq = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            uniq.setdefault(lab, h)
    fig.legend(uniq.values(), uniq.keys(), loc="lower center", ncol=min(4, len(uniq)), fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
