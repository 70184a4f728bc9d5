"""Studies of ``elmoe3d perf`` beyond the main sweep: the ablation ladder, the claims as ranges over
the defensible inputs, the capacity / technology / context sweeps with their crossovers, and the
host-offload setting (offloaded decoding against published measurements, SpecMoE in its setting).

Every study takes the systems through :func:`.systems.with_footing` (one shared HBM efficiency and
static power) and the speculative systems through the elastic policy (:func:`.decode.choose`).
Means are over :data:`BATCHES` (batch 1, 2, 4, 8, 16) to keep the full study in seconds.
"""

import json
import statistics
from dataclasses import replace
from pathlib import Path

from . import acceptance as acc
from .decode import Settings, choose, sweep
from .systems import FOOTINGS, with_footing, with_hb

DATA = Path(__file__).resolve().parent / "data"
BATCHES = (1, 2, 4, 8, 16)
PAPER = {"speedup_vs_xpu": 6.6, "energy_gain_vs_xpu": 4.4, "speedup_vs_best_prior": 2.2,
         "energy_gain_vs_best_prior": 1.4}
CLAIM_TEXT = {"speedup_vs_xpu": "ELMoE-3D vs naive xPU, speed-up",
              "energy_gain_vs_xpu": "ELMoE-3D vs naive xPU, energy efficiency",
              "speedup_vs_best_prior": "ELMoE-3D vs best prior, speed-up",
              "energy_gain_vs_best_prior": "ELMoE-3D vs best prior, energy efficiency"}
HB_SIZES = (4, 8, 16, 32, 64)
HB_PJ = (0.44, 0.88, 1.76)
CONTEXTS = (256, 1024, 4096, 16384)
CORE = ("xpu", "xpu_sd", "xpu_self", "hb3d", "elmoe3d")


def _mean(xs):
    xs = [x for x in xs if x == x]
    return statistics.fmean(xs) if xs else float("nan")


def footed(systems, footing="equal", hbm_efficiency=None, static_w=None, hb_gib=None, hb_pj=None):
    """The systems on one footing, with HB capacity / pJ per bit replaced where given."""
    return [with_hb(with_footing(s, footing, hbm_efficiency, static_w), hb_gib, hb_pj) for s in systems]


# -- the ablation ladder ----------------------------------------------------------------------------
LADDER = ("naive xPU", "+ HB tier, plain decoding (prior HB-3D)", "+ MSB planes as the expert cache",
          "+ bit-elastic self-draft (all top-k experts, MSB planes)", "+ expert-elastic draft (ELMoE-3D)")


def ladder(S, models, settings, batches=BATCHES, objective="tokens_per_s"):
    """``{model: {batch: [{step, system, tokens_per_s, j_per_token, gamma, k_d, speedup, energy_gain}]}}``:
    each step adds one idea; ``speedup`` / ``energy_gain`` are against the step before."""
    route = settings.routing()
    xpu, hb3d, el = S["xpu"], S["hb3d"], S["elmoe3d"]
    msb_plain = replace(el, name="msb_plain", decoding="plain")
    out = {}
    for m in models:
        out[m.name] = {}
        for b in batches:
            rows = [choose(xpu, m, settings, b, route, objective),
                    choose(hb3d, m, settings, b, route, objective),
                    choose(msb_plain, m, settings, b, route, objective),
                    choose(el, m, replace(settings, k_d=m.top_k), b, route, objective, free=("gamma",)),
                    choose(el, m, settings, b, route, objective, free=("gamma", "k_d"))]
            steps = []
            for i, (name, r) in enumerate(zip(LADDER, rows)):
                prev = rows[i - 1] if i else r
                steps.append({"step": name, "system": r["system"], "tokens_per_s": r["tokens_per_s"],
                              "j_per_token": r["j_per_token"], "gamma": r["gamma"], "k_d": r["k_d"],
                              "speedup": r["tokens_per_s"] / prev["tokens_per_s"],
                              "energy_gain": prev["j_per_token"] / r["j_per_token"],
                              "vs_xpu": r["tokens_per_s"] / rows[0]["tokens_per_s"],
                              "energy_vs_xpu": rows[0]["j_per_token"] / r["j_per_token"]})
            out[m.name][b] = steps
    return out


def ladder_table(lad, batches=(1, 16)):
    out = ["Ablation ladder (equal footing; each step's speed-up and energy gain over the step before; "
           "gamma/k_d: the policy's choice):"]
    for m, per in lad.items():
        for b in batches:
            if b not in per:
                continue
            out.append(f"  {m} b{b}")
            for st in per[b]:
                g = "" if not st["gamma"] else f"  gamma {st['gamma']} k_d {st['k_d']}"
                out.append(f"    {st['step']:<58} {st['tokens_per_s']:>9.4g} tok/s {st['j_per_token'] * 1e3:>8.3g} mJ"
                           f"  x{st['speedup']:.2f} speed, x{st['energy_gain']:.2f} energy"
                           f"  (vs xPU x{st['vs_xpu']:.2f} / x{st['energy_vs_xpu']:.2f}){g}")
    return "\n".join(out)


# -- the policy's choices ------------------------------------------------------------------------
def choices_table(rows, system="elmoe3d"):
    """The elastic policy's gamma and k_d per model and batch."""
    models = list(dict.fromkeys(r["model"] for r in rows if r["system"] == system))
    batches = sorted({r["batch"] for r in rows})
    by = {(r["model"], r["batch"]): r for r in rows if r["system"] == system}
    out = [f"Elastic policy of {system}: gamma / k_d per model and batch (gamma 0: no speculation)"]
    out.append(f"  {'model':<18}" + "".join(f"{'b' + str(b):>7}" for b in batches))
    for m in models:
        cells = []
        for b in batches:
            r = by[(m, b)]
            cells.append(f"{r['gamma']}/{r['k_d'] if r['k_d'] else '-'}" if r["gamma"] else "0")
        out.append(f"  {m:<18}" + "".join(f"{c:>7}" for c in cells))
    return "\n".join(out)


# -- claims as ranges ------------------------------------------------------------------------------
def _claims_point(S, models, settings, objective, footing, hb_gib, batches):
    systems = footed([S[n] for n in CORE], footing, hb_gib=hb_gib)
    rows = sweep(systems, models, settings, batches, objective)
    out = {}
    for key in PAPER:
        per = {m.name: _mean(r[key] for r in rows if r["system"] == "elmoe3d" and r["model"] == m.name)
               for m in models}
        out[key] = _mean(per.values())
    return out


def claim_ranges(S, models, settings, objective="tokens_per_s", batches=BATCHES,
                 scenarios=acc.RANGE_SCENARIOS, footings=FOOTINGS, hb_sizes=(8, 16, 32)):
    """Each claim's range over scenario x footing x HB size (means over ``models`` and ``batches``),
    the default point (measured acceptance, equal footing, 16 GiB) and the input that moves it most
    (the widest span when only that input leaves the default)."""
    big = [m for m in models if m.name != "shipped"]
    grid = {}
    for sc in scenarios:
        st = replace(settings, scenario=sc)
        for ft in footings:
            for hb in hb_sizes:
                grid[(sc, ft, hb)] = _claims_point(S, big, st, objective, ft, hb, batches)
    default = ("shipped", "equal", 16)
    out = []
    for key in PAPER:
        vals = [v[key] for v in grid.values()]
        spans = {}
        for axis, opts in (("acceptance scenario", scenarios), ("footing", footings), ("HB GiB", hb_sizes)):
            pts = []
            for o in opts:
                k = list(default)
                k[("acceptance scenario", "footing", "HB GiB").index(axis)] = o
                if tuple(k) in grid:
                    pts.append((o, grid[tuple(k)][key]))
            spans[axis] = (max(p[1] for p in pts) - min(p[1] for p in pts), pts)
        most = max(spans, key=lambda a: spans[a][0])
        out.append({"claim": CLAIM_TEXT[key], "key": key, "paper": PAPER[key], "default": grid[default][key],
                    "lo": min(vals), "hi": max(vals), "moves_most": most,
                    "moves_most_points": spans[most][1],
                    "paper_inside": min(vals) <= PAPER[key] <= max(vals)})
    return out, {f"{k[0]}|{k[1]}|{k[2]}": v for k, v in grid.items()}


def claims_range_table(cl):
    out = ["Claims as ranges over acceptance scenario x footing x HB size (8/16/32 GiB); mean over the five large "
           "models and batch 1, 2, 4, 8, 16; [default] = measured acceptance, equal footing, 16 GiB:"]
    for c in cl:
        pts = ", ".join(f"{o} {v:.2f}x" for o, v in c["moves_most_points"])
        out.append(f"  {c['claim']:<44} paper {c['paper']:.2f}x  ours {c['lo']:.2f}-{c['hi']:.2f}x "
                   f"[default {c['default']:.2f}x]; moved most by {c['moves_most']} ({pts})")
    return "\n".join(out)


# -- capacity, technology and context sweeps --------------------------------------------------------
def _ratio(S, models, settings, objective, batches, key, **kw):
    systems = footed([S[n] for n in CORE], "equal", **{k: v for k, v in kw.items() if k in ("hb_gib", "hb_pj")})
    st = replace(settings, context=kw["context"]) if "context" in kw else settings
    rows = sweep(systems, models, st, batches, objective)
    return {m.name: _mean(r[key] for r in rows if r["system"] == "elmoe3d" and r["model"] == m.name) for m in models}


def crossover(points):
    """First value where the ratio crosses 1 (linear interpolation between grid points), or None."""
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if (y0 - 1) * (y1 - 1) < 0:
            return x0 + (1 - y0) * (x1 - x0) / (y1 - y0)
        if y1 == 1:
            return x1
    return None


def crossings(points):
    """Every crossing of 1x: ``[(value, "up" | "down")]`` (linear interpolation between grid points)."""
    out = []
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if (y0 - 1) * (y1 - 1) < 0:
            out.append((x0 + (1 - y0) * (x1 - x0) / (y1 - y0), "up" if y1 > y0 else "down"))
    return out


SWEEPS = (("HB GiB", HB_SIZES, "hb_gib", "speedup_vs_best_prior"),
          ("HB GiB", HB_SIZES, "hb_gib", "energy_gain_vs_best_prior"),
          ("HB pJ/bit", HB_PJ, "hb_pj", "energy_gain_vs_best_prior"),
          ("context", CONTEXTS, "context", "speedup_vs_best_prior"))


def sweeps(S, models, settings, objective="tokens_per_s", batches=BATCHES):
    """``{"axis / metric": {"values", "ratio": {model: [...]}, "crossover": {model: value or None}}}``:
    ELMoE-3D against the best prior (equal footing; speed-up, or energy gain) as one input moves:
    HB capacity (bandwidth by the one HB rule), HB pJ/bit, context length."""
    out = {}
    for axis, values, key, metric in SWEEPS:
        series = [(v, _ratio(S, models, settings, objective, batches, metric, **{key: v})) for v in values]
        ratio = {m.name: [s[1][m.name] for s in series] for m in models}
        out[f"{axis} / {metric.split('_vs_')[0].replace('_', ' ')}"] = {
            "values": list(values), "ratio": ratio,
            "crossover": {m: crossings(list(zip(values, r))) for m, r in ratio.items()}}
    return out


def sweeps_table(sw):
    out = ["ELMoE-3D against the best prior (equal footing, mean over batch 1, 2, 4, 8, 16) as one input moves; "
           "crossings of 1x (interpolated; down = ELMoE-3D stops beating the best prior):"]
    for axis, d in sw.items():
        out.append(f"  {axis:<28}" + "".join(f"{v!s:>8}" for v in d["values"]) + "   crossings")
        for m, r in d["ratio"].items():
            x = d["crossover"][m]
            out.append(f"    {m:<26}" + "".join(f"{v:>7.2f}x" for v in r) + "   "
                       + (", ".join(f"{d} at {v:.3g}" for v, d in x) if x else "none in range"))
    return "\n".join(out)


# -- the host-offload setting ------------------------------------------------------------------------
def offload_cases(S, models):
    """``[{name, measured_s, predicted_s, error}]``: the offload system (plain) against published
    per-token latencies of offloaded decoding (perf/data/validation.json ``offload``)."""
    data = json.loads((DATA / "validation.json").read_text()).get("offload", [])
    out = []
    for case in data:
        sys_ = S["offload"]
        st = Settings(context=case["context"])
        r = choose(sys_, models[case["model"]], st, case["batch"], st.routing())
        pred = 1.0 / r["tokens_per_s"] * case["batch"]
        out.append({"name": case["name"], "model": case["model"], "measured_s": case["seconds_per_token"],
                    "predicted_s": pred, "error": pred / case["seconds_per_token"] - 1, "source": case["source"]})
    return out


def specmoe_setting(S, models, settings, objective="tokens_per_s", batches=BATCHES, reuse=False):
    """SpecMoE-style self-speculation against plain offloaded decoding on the same GPU: per model
    the best speed-up over the batches (SpecMoE reports 'up to 4.30x'). ``reuse``: the verification
    pass finds the experts the round's draft fetched already in GPU memory (``System.draft_reuse``)."""
    route = settings.routing()
    spec_sys = replace(S["specmoe"], draft_reuse=True) if reuse else S["specmoe"]
    out = {}
    for m in models:
        best = 0.0
        for b in batches:
            base = choose(S["offload"], m, settings, b, route)
            spec = choose(spec_sys, m, settings, b, route, objective)
            best = max(best, spec["tokens_per_s"] / base["tokens_per_s"])
        out[m.name] = best
    return out


def offload_table(cases, spec, spec_reuse=None):
    out = ["Host-offload setting (A5000 24 GB, FP16, experts in host memory behind PCIe 4.0 x16):"]
    for c in cases:
        out.append(f"  {c['name']:<56} measured {c['measured_s']:.3f} s/token  model {c['predicted_s']:.3f}  "
                   f"{c['error'] * 100:+6.1f} %")
    out.append("  SpecMoE-style self-speculation vs plain offloaded decoding, best over batch (paper: up to 4.30x): "
               + ", ".join(f"{m} {v:.2f}x" for m, v in spec.items()))
    if spec_reuse:
        out.append("  the same, with the draft's fetched experts reused by the verification pass (SpecMoE's prefetch): "
                   + ", ".join(f"{m} {v:.2f}x" for m, v in spec_reuse.items()))
    return "\n".join(out)
