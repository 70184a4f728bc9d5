"""``elmoe3d bench-cache``: expert-cache hit rates, HB bandwidth, lookup latency, area and Fmax."""

import json
import sys
import time
from pathlib import Path

from ..cli import clock_ns, existing_file, finite_float, nonnegative_int, positive_int

HELP = ("expert cache and HB memory benchmark: hit rate vs capacity per policy (Zipf or recorded "
        "routing), achieved vs peak HB bandwidth, lookup latency, area and Fmax in sky130 hd")


def _int_list(text):
    import argparse
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 2 or v > 4096 for v in values):
        raise argparse.ArgumentTypeError(f"capacities must be in [2, 4096], got {text!r}")
    return sorted(set(values))


def _policy_list(text):
    import argparse
    from ..sim.cache.expert_cache import POLICIES
    values = [x.strip() for x in text.split(",") if x.strip()]
    bad = [v for v in values if v not in POLICIES]
    if bad or not values:
        raise argparse.ArgumentTypeError(f"policies must be among {', '.join(POLICIES)}, got {text!r}")
    return values


def add_arguments(p):
    p.add_argument("-o", "--out", default="results/cache", metavar="DIR",
                   help="output folder (default %(default)s): bench_cache.json, report.md, hit_rate.png")
    p.add_argument("--policies", type=_policy_list, default=["lru", "lfu", "score"], help="comma list (default lru,lfu,score)")
    p.add_argument("--capacities", type=_int_list, default=[8, 16, 32, 64, 128],
                   help="cache capacities in planes, comma list (default 8,16,32,64,128)")
    p.add_argument("--layers", type=positive_int, default=8, help="Zipf trace: MoE layers (default %(default)s)")
    p.add_argument("--experts", type=positive_int, default=32, help="Zipf trace: experts per layer (default %(default)s)")
    p.add_argument("--top-k", type=positive_int, default=2, help="Zipf trace: experts per token (default %(default)s)")
    p.add_argument("--alpha", type=finite_float, default=1.0, help="Zipf exponent of expert popularity (default %(default)s)")
    p.add_argument("--steps", type=positive_int, default=1000, help="Zipf trace: decode steps (default %(default)s)")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="random seed (default %(default)s)")
    p.add_argument("--decay-shift", type=positive_int, default=6, help="score policy decay shift (default %(default)s)")
    p.add_argument("--prefetch", action="store_true",
                   help="prefetch what the draft predicts, SpecMoE style: on the Zipf trace one prefetch per "
                        "row (80%% accurate), on a recorded trace the experts of its draft passes")
    p.add_argument("--trace", type=existing_file, metavar="FILE",
                   help="also sweep a recorded routing trace: .npz (format in sim/cache/traces.py) or the .jsonl "
                        "that `elmoe3d sd --traces` writes")
    p.add_argument("--planes", choices=("msb", "both"), default="msb",
                   help="planes each routed expert looks up (default msb: the HB cache holds MSB planes)")
    p.add_argument("--plane-kib", type=positive_int, default=1024, help="bytes per plane in KiB (default %(default)s)")
    p.add_argument("--hb-channels", type=positive_int, default=4, help="HB channels (default %(default)s)")
    p.add_argument("--hb-width", type=positive_int, default=32, help="HB bits per beat per channel (default %(default)s)")
    p.add_argument("--hb-burst", type=positive_int, default=8, help="HB lines per burst (default %(default)s)")
    p.add_argument("--hb-latency", type=positive_int, default=24, help="HB channel latency in cycles (default %(default)s)")
    p.add_argument("--clock-ns", type=clock_ns, default=5.0,
                   help="synthesis clock target in ns, 0.001 to 1e6 (default %(default)s)")
    p.add_argument("--liberty", default="sky130hd", help="Liberty for synthesis (default %(default)s)")
    p.add_argument("--synth-entries", type=_int_list, default=[8, 16, 32, 64],
                   help="cache sizes to synthesize with the first policy, comma list (default 8,16,32,64; each "
                        "<= 64); the other policies are synthesized at 16")
    p.add_argument("--no-rtl", action="store_true", help="skip the Verilator measurements (latency, bandwidth)")
    p.add_argument("--no-synth", action="store_true", help="skip synthesis (area, Fmax)")


def _log(msg):
    print(f"elmoe3d bench-cache: {msg}", file=sys.stderr, flush=True)


def _bits(n):
    return max(1, (int(n) - 1).bit_length())


def hit_rate_sweep(ops, n_layers, n_experts, policies, capacities, decay_shift, plane_bytes):
    """``{policy: [{capacity, hit_rate, ...stats}]}`` of the golden model on ``ops``."""
    from ..sim.cache.expert_cache import CacheConfig, ExpertCache
    out = {}
    for policy in policies:
        rows = []
        for cap in capacities:
            cfg = CacheConfig(entries=cap, policy=policy, layer_bits=_bits(n_layers), expert_bits=_bits(n_experts),
                              decay_shift=decay_shift, plane_bytes=plane_bytes)
            cache = ExpertCache(cfg)
            cache.run(ops)
            rows.append({"capacity": cap, **cache.stats.to_dict()})
        out[policy] = rows
    return out


def _sweep_table(title, sweep, capacities):
    lines = [f"### {title}", "", "| policy | " + " | ".join(f"{c} planes" for c in capacities) + " |",
             "| --- |" + " ---: |" * len(capacities)]
    for policy, rows in sweep.items():
        lines.append(f"| {policy} | " + " | ".join(f"{r['hit_rate']:.3f}" for r in rows) + " |")
    return lines


def _plot(path, sweeps):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(sweeps), figsize=(5.5 * len(sweeps), 4), squeeze=False)
    for ax, (title, sweep) in zip(axes[0], sweeps.items()):
        for policy, rows in sweep.items():
            ax.plot([r["capacity"] for r in rows], [r["hit_rate"] for r in rows], marker="o", label=policy)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("cache capacity (planes)")
        ax.set_ylabel("demand hit rate")
        ax.set_ylim(0, 1)
        ax.set_title(title, fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _measure_rtl(out, hb_params):
    """Lookup latency and throughput of the cache, full-rate bandwidth of the HB interface (Verilator)."""
    from ..hw.expert_cache import ExpertCache
    from ..hw.hb_memory import HBMemory
    from ..hw.verilog import write_verilog
    from ..sim.benches.runner import run_bench
    res = {}
    d = (out / "rtl" / "expert_cache").resolve()
    params = dict(entries=16, policy="lru", layer_bits=3, expert_bits=5)
    v = write_verilog(ExpertCache(**params), "expert_cache", d, params)
    run_bench(verilog=v, toplevel="expert_cache", module="elmoe3d.sim.benches.tb_expert_cache", build_dir=d,
              config={"params": params, "report": str(d / "report.json"),
                      "cases": [{"kind": "random", "n": 3000, "seed": 1, "stall": 0.0}]})
    rep = json.loads((d / "report.json").read_text())[0]
    res["cache"] = {"params": params, "lookup_latency_cycles": rep["latency"], "ops": rep["ops"],
                    "cycles": rep["cycles"], "cycles_per_op": rep["cycles"] / rep["ops"]}
    d = (out / "rtl" / "hb_memory").resolve()
    v = write_verilog(HBMemory(**hb_params), "hb_memory", d, hb_params)
    run_bench(verilog=v, toplevel="hb_memory", module="elmoe3d.sim.benches.tb_hb_memory", build_dir=d,
              config={"params": hb_params, "report": str(d / "report.json"),
                      "cases": [{"kind": "fullrate", "n": 4, "plane_lines": 1024},
                                {"kind": "fullrate", "n": 1, "plane_lines": 1024}]})
    rep = json.loads((d / "report.json").read_text())
    res["hb"] = {"params": hb_params, "four_planes": {k: rep[0][k] for k in ("lines", "span_cycles", "achieved_fraction")},
                 "one_plane": {k: rep[1][k] for k in ("lines", "span_cycles", "achieved_fraction")}}
    return res


def _synth(out, args, hb_params):
    from ..synth.flow import synthesize
    rows = []

    def one(top, params):
        from ..errors import UserError
        t = time.monotonic()
        try:
            r = synthesize(top, params, out / "synth" / f"{top}_{'_'.join(str(v) for v in params.values())}",
                           liberty=args.liberty, clock_ns=args.clock_ns, log=None)
        except (UserError, RuntimeError, OSError) as exc:     # one failed run must not lose the others
            _log(f"synthesis of {top} {params} failed: {exc}")
            rows.append({"top": top, "params": params, "error": str(exc).splitlines()[0]})
            return
        total = r["area"]["total"]                  # the whole design, submodules included
        timing, power = r.get("timing") or {}, r.get("power_mw") or {}
        row = {"top": top, "params": params, "area_um2": total["area"], "sequential_um2": total["sequential_area"],
               "cells": total["cells"], "fmax_mhz": timing.get("fmax_mhz", float("nan")),
               "power_mw": power.get("total", float("nan")),
               "seconds": round(time.monotonic() - t, 1)}
        _log(f"synthesized {top} {params}: {row['area_um2']:.0f} um^2, Fmax {row['fmax_mhz']:.0f} MHz")
        rows.append(row)

    # area per slot with the first policy, then every other policy at 16 slots
    first, others = args.policies[0], args.policies[1:]
    for n in args.synth_entries:
        one("expert_cache", {"entries": n, "policy": first})
    for policy in others:
        one("expert_cache", {"entries": 16, "policy": policy})
    one("hb_memory", hb_params)
    return rows


# The golden cache simulates one operation in about 25 us on this repository's 2-core machine
# (measured: 800 000 operations of an 8 x 32 Zipf trace, both planes, prefetch) and a trace
# holds about 300 bytes per operation. A sweep is refused when it would run past an hour or
# need more memory than the machine has.
SECONDS_PER_OP, BYTES_PER_OP, MAX_SWEEP_SECONDS = 25e-6, 320, 3600
MAX_LAYERS, MAX_EXPERTS = 1 << 8, 1 << 10           # the cache key's layer and expert fields (8, 10 bits)


# Slot counts the expert-cache generator builds (hw/expert_cache.py refuses others).
MIN_SYNTH_ENTRIES, MAX_SYNTH_ENTRIES = 2, 64


def _trace_error(path, why):
    from ..errors import UserError
    return UserError(f"routing trace {path}: {why}")


def _integral(values):
    """True when every value is a finite whole number (ints, or floats such as 3.0)."""
    import numpy as np
    a = np.asarray(values)
    if a.dtype.kind in "iu":
        return True
    if a.dtype.kind != "f":
        return False
    return bool(np.all(np.isfinite(a)) and np.all(a == np.round(a)))


def check_trace(path):
    """Refuse a routing trace file that is not one, before any work: a file that is not an
    ``.npz`` archive (random bytes, truncated, empty), one without records, expert or layer ids
    that are not whole numbers, scores that are not finite probabilities. ``.jsonl`` (the
    language model's, ``sim/cache/routing_trace.py``) or ``.npz`` (``sim/cache/traces.py``)."""
    import zipfile

    import numpy as np

    from ..errors import UserError
    path = Path(path)
    if path.suffix == ".jsonl":
        from ..sim.cache.routing_trace import read_trace as read_lm_trace
        records = None
        try:
            header, records = read_lm_trace(path)
            n = 0
            for n, rec in enumerate(records, 1):
                if not isinstance(rec, dict) or not {"layer", "experts", "scores", "kind"} <= set(rec):
                    raise _trace_error(path, f"record {n} lacks layer, kind, experts or scores")
                experts, scores = rec["experts"], np.asarray(rec["scores"], dtype=np.float64)
                if not _integral([rec["layer"]]) or any(not _integral(e) for e in experts):
                    raise _trace_error(path, f"record {n}: layer and expert ids must be whole numbers")
                if not np.all(np.isfinite(scores)):
                    raise _trace_error(path, f"record {n}: scores must be finite numbers")
        except UserError:
            raise
        except UnicodeDecodeError:
            raise _trace_error(path, "not a text file (a .jsonl trace is UTF-8 JSON Lines)") from None
        except (json.JSONDecodeError, TypeError, ValueError) as exc:
            raise _trace_error(path, f"a record is not valid JSON ({str(exc).splitlines()[0]})") from None
        finally:
            if records is not None:
                records.close()                  # the generator closes the file it holds
        if n == 0:
            raise _trace_error(path, "has a header and no records")
        return
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise _trace_error(path, f"cannot read it ({exc.strerror or exc})") from None
    if magic != b"PK\x03\x04":
        why = "empty" if magic == b"" else "not an .npz archive (no zip header)"
        raise _trace_error(path, why)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise _trace_error(path, f"a truncated or corrupt .npz archive ({type(exc).__name__})") from None
    for key in ("layer", "experts", "scores"):
        if key not in arrays:
            raise _trace_error(path, f"lacks the array {key!r} (format in sim/cache/traces.py)")
    if arrays["layer"].size == 0 or arrays["experts"].size == 0:
        raise _trace_error(path, "has no records")
    for key in ("layer", "experts", "draft_experts", "n_experts", "n_layers"):
        if key in arrays and not _integral(arrays[key]):
            raise _trace_error(path, f"{key} must hold whole numbers")
    for key in ("scores", "draft_scores"):
        if key in arrays:
            a = arrays[key]
            if a.dtype.kind not in "iuf" or not np.all(np.isfinite(a)) or np.any(a < 0) or np.any(a > 1):
                raise _trace_error(path, f"{key} must be probabilities in [0, 1] (finite)")


def read_trace(path, *, planes, prefetch):
    """``(ops, n_layers, n_experts, rows)`` of a recorded trace (``sim.traces.routing_file_ops``),
    after :func:`check_trace`."""
    from ..sim.cache.traces import routing_file_ops
    check_trace(path)
    return routing_file_ops(path, planes=planes, prefetch=prefetch)


def zipf_ops_count(args):
    """Operations of the Zipf trace: one lookup per routed (step, layer, expert) and plane, plus
    one prefetch per (step, layer) with --prefetch."""
    planes = 2 if args.planes == "both" else 1
    return args.steps * args.layers * (args.top_k * planes + (planes if args.prefetch else 0))


def check_sweep_size(args):
    """Refuse --layers/--experts/--steps whose sweep would exhaust memory or run for hours."""
    from ..errors import UserError
    from ..limits import check_memory
    if args.layers > MAX_LAYERS or args.experts > MAX_EXPERTS:
        raise UserError(f"--layers {args.layers} --experts {args.experts}: the cache key holds at most "
                        f"{MAX_LAYERS} layers and {MAX_EXPERTS} experts")
    ops = zipf_ops_count(args)
    runs = len(args.policies) * len(args.capacities)
    seconds = ops * runs * SECONDS_PER_OP
    if seconds > MAX_SWEEP_SECONDS:
        most = int(MAX_SWEEP_SECONDS / (SECONDS_PER_OP * runs * max(1, ops // args.steps)))
        raise UserError(f"--steps {args.steps} x --layers {args.layers}: {ops:,} cache operations x {runs} "
                        f"sweeps would take about {seconds / 3600:.1f} h at {SECONDS_PER_OP * 1e6:.0f} us each; "
                        f"the limit is {MAX_SWEEP_SECONDS // 60} min (here at most --steps {most})")
    check_memory(f"the Zipf trace of --steps {args.steps} x --layers {args.layers} ({ops:,} cache operations)",
                 ops * BYTES_PER_OP)


def run(args):
    import numpy as np

    from ..errors import UserError
    from ..sim.golden.hb_memory import HBConfig, achieved_fraction, plane_lines, plane_read_time_ns, stream_cycles
    from ..sim.cache.traces import routing_to_ops, zipf_routing

    if args.top_k > args.experts:
        raise UserError(f"--top-k ({args.top_k}) must be <= --experts ({args.experts})")
    if args.alpha < 0:
        raise UserError(f"--alpha must be >= 0, got {args.alpha}")
    if args.decay_shift > 8:
        raise UserError(f"--decay-shift must be in [1, 8], got {args.decay_shift}")
    check_sweep_size(args)
    bad = [n for n in args.synth_entries if not MIN_SYNTH_ENTRIES <= n <= MAX_SYNTH_ENTRIES]
    if bad and not args.no_synth:
        raise UserError(f"--synth-entries {bad[0]}: the expert cache has {MIN_SYNTH_ENTRIES} to "
                        f"{MAX_SYNTH_ENTRIES} slots")
    if not args.no_synth:               # a missing or bad Liberty is refused, not logged per run
        from ..synth.flow import resolve_liberty
        try:
            resolve_liberty(args.liberty)
        except UserError as exc:
            raise UserError(f"--liberty: {exc} (or skip synthesis with --no-synth)") from None
    hb_params = dict(channels=args.hb_channels, width=args.hb_width, burst=args.hb_burst, latency=args.hb_latency,
                     lines=1 << 20, len_bits=16)
    hb = HBConfig(**hb_params, clock_mhz=1000.0 / args.clock_ns)   # refuses bad HB parameters before the slow work
    space = hb_params["lines"] * hb.line_bytes
    if args.plane_kib * 1024 > space:
        raise UserError(f"--plane-kib {args.plane_kib}: a plane must fit the HB address space, "
                        f"{hb_params['lines']} lines x {hb.line_bytes} bytes = {space // 1024} KiB")
    trace = read_trace(args.trace, planes=args.planes, prefetch=args.prefetch) if args.trace else None
    from ..paths import output_dir, write_text
    out = output_dir(args.out)                  # created (nested too) and checked before any work
    plane_bytes = args.plane_kib * 1024
    result = {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if not k.startswith("_")}}

    # --- hit rate vs capacity -----------------------------------------------------------------------
    sweeps = {}
    _log(f"Zipf trace: {args.layers} layers x {args.experts} experts, top-{args.top_k}, alpha {args.alpha}, "
         f"{args.steps} steps ...")
    z = zipf_routing(n_layers=args.layers, n_experts=args.experts, top_k=args.top_k, steps=args.steps,
                     alpha=args.alpha, seed=args.seed, draft_k=1 if args.prefetch else 0)
    ops = routing_to_ops(z, planes=args.planes, prefetch=args.prefetch)
    title = (f"Zipf a={args.alpha}: {args.layers}x{args.experts} experts, top-{args.top_k}"
             + (", draft prefetch" if args.prefetch else ""))
    sweeps[title] = hit_rate_sweep(ops, args.layers, args.experts, args.policies, args.capacities,
                                   args.decay_shift, plane_bytes)
    if trace is not None:
        ops_t, n_l, n_e, n_rows = trace
        if n_l > 256 or n_e > 1024:
            raise UserError(f"routing trace has {n_l} layers and {n_e} experts; at most 256 and 1024")
        title_t = f"recorded {Path(args.trace).name}: {n_l}x{n_e} experts, {n_rows} token rows"
        _log(f"recorded trace {args.trace}: {len(ops_t)} operations ...")
        sweeps[title_t] = hit_rate_sweep(ops_t, n_l, n_e, args.policies, args.capacities, args.decay_shift, plane_bytes)
    result["hit_rate"] = sweeps
    _plot(out / "hit_rate.png", sweeps)

    # --- HB bandwidth (analytical, then RTL) ----------------------------------------------------------
    L = plane_lines(hb, plane_bytes)
    result["hb_model"] = {"config": hb.to_dict(), "line_bytes": hb.line_bytes, "plane_lines": L,
                          "peak_bytes_per_cycle": hb.peak_bytes_per_cycle, "peak_gbps_at_clock": hb.peak_gbps,
                          "plane_read_ns": plane_read_time_ns(hb, plane_bytes),
                          "achieved_fraction_4_planes": achieved_fraction(hb, [L] * 4),
                          "cycles_4_planes": stream_cycles(hb, [L] * 4)}
    if not args.no_rtl:
        _log("measuring the RTL in Verilator (lookup latency, full-rate HB bandwidth) ...")
        result["rtl"] = _measure_rtl(out, hb_params)
    if not args.no_synth:
        _log(f"synthesizing in {args.liberty} at {args.clock_ns} ns ...")
        result["synth"] = _synth(out, args, hb_params)

    # --- report ---------------------------------------------------------------------------------------
    md = ["## Expert cache hit rate (demand hits / demand lookups, golden model)", ""]
    for title, sweep in sweeps.items():
        md += _sweep_table(title, sweep, args.capacities) + [""]
    hm = result["hb_model"]
    md += ["## HB memory", "",
           f"{hb.channels} channels x {hb.width} bits, burst {hb.burst}, {hb.slots} bursts in flight, latency "
           f"{hb.latency} cycles: peak {hb.peak_bytes_per_cycle} B/cycle ({hb.peak_gbps:.1f} GB/s at {hb.clock_mhz:.0f} MHz).",
           f"A {args.plane_kib} KiB plane is {L} lines: {plane_read_time_ns(hb, plane_bytes):.0f} ns alone; "
           f"four back to back reach {hm['achieved_fraction_4_planes']:.4f} of peak (model)."]
    if "rtl" in result:
        from ..hw.expert_cache import LOOKUP_LATENCY
        r = result["rtl"]
        h4, h1 = r["hb"]["four_planes"], r["hb"]["one_plane"]
        md += ["", f"RTL (Verilator, channels answering in order at fixed latency, no stalls): four "
                   f"{h4['lines'] // 4}-line reads back to back, {h4['lines']} lines in {h4['span_cycles']} cycles = "
                   f"**{h4['achieved_fraction']:.4f} of peak**; one plane {h1['span_cycles']} cycles "
                   f"({h1['achieved_fraction']:.4f}).",
               f"Expert cache lookup latency {', '.join(map(str, r['cache']['lookup_latency_cycles']))} cycles (request handshake to "
               f"response valid; {LOOKUP_LATENCY} when no miss waits behind a state change), "
               f"{r['cache']['cycles_per_op']:.3f} cycles per operation without stalls "
               f"({r['cache']['ops']} random operations, {r['cache']['params']['entries']} slots, "
               f"{r['cache']['params']['policy']})."]
    if "synth" in result:
        md += ["", f"## Area and Fmax ({args.liberty}, target {args.clock_ns} ns)", "",
               "| block | parameters | area um^2 | sequential um^2 | cells | Fmax MHz | power mW |",
               "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
        for row in result["synth"]:
            if "error" in row:
                md.append(f"| {row['top']} | {', '.join(f'{k}={v}' for k, v in row['params'].items())} | "
                          f"failed: {row['error'][:80]} | | | | |")
                continue
            md.append(f"| {row['top']} | {', '.join(f'{k}={v}' for k, v in row['params'].items())} | "
                      f"{row['area_um2']:.0f} | {row['sequential_um2']:.0f} | {row['cells']} | "
                      f"{row['fmax_mhz']:.0f} | {row['power_mw']:.2f} |")
    text = "\n".join(md) + "\n"
    write_text(out / "report.md", text)
    write_text(out / "bench_cache.json", json.dumps(result, indent=2, default=lambda o: o.item()
                                                     if isinstance(o, np.generic) else str(o)) + "\n")
    print(text)
    _log(f"wrote {out / 'report.md'}, {out / 'bench_cache.json'} and {out / 'hit_rate.png'}")
    return 0
