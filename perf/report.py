"""Tables and plots of ``elmoe3d perf``: tokens/s and J/token per system, model and batch, ratios,
breakdowns, the comparison with the papers' claims, sensitivity, validation, a roofline plot."""

import statistics
from dataclasses import replace

from .decode import Settings, sweep, tokens_per_verify

# The papers' headline figures (abstracts of arXiv 2604.14626 and 2604.10152).
CLAIMS = [
    ("elmoe3d vs naive xPU, speed-up, mean over batch 1-16", 6.6, "ELMoE-3D (arXiv 2604.14626)"),
    ("elmoe3d vs naive xPU, energy efficiency, mean over batch 1-16", 4.4, "ELMoE-3D (arXiv 2604.14626)"),
    ("elmoe3d vs best prior accelerator, speed-up", 2.2, "ELMoE-3D (arXiv 2604.14626)"),
    ("elmoe3d vs best prior accelerator, energy efficiency", 1.4, "ELMoE-3D (arXiv 2604.14626)"),
    ("self-speculation (SpecMoE-style) vs naive xPU, best speed-up", 4.30, "SpecMoE (arXiv 2604.10152), 'up to'"),
]


def _mean(xs):
    xs = [x for x in xs if x == x]
    return statistics.fmean(xs) if xs else float("nan")


def fmt_si(x, unit):
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1, ""), (1e-3, "m"), (1e-6, "u"), (1e-9, "n")):
        if abs(x) >= scale:
            return f"{x / scale:.3g} {prefix}{unit}"
    return f"{x:.3g} {unit}"


def inputs_table(systems, models, settings, route, footing="stated"):
    """The constants every figure rests on, with their sources (one line each)."""
    lines = [f"Systems (bandwidth achieved = peak x efficiency; footing {footing}: one shared HBM efficiency and "
             "static power unless a system states its own):"]
    for s in systems:
        tiers = "; ".join(f"{n} {t.gbps:g} GB/s x {t.efficiency:.3f}, {t.pj_per_bit:g} pJ/bit, {t.capacity_gib:g} GiB"
                          for n, t in s.tiers.items())
        comp = (f"{s.array.arrays} x {s.array.kind} {s.array.rows}x{s.array.cols}x{s.array.lanes} @ {s.array.clock_mhz:g} MHz "
                f"= {fmt_si(s.peak_macs('full'), 'MAC/s')} full" if s.array is not None
                else f"{fmt_si(s.macs_per_s, 'MAC/s')}")
        pj = ", ".join(f"{k} {v:.3g}" for k, v in sorted(s.pj_per_mac.items()))
        lines.append(f"  {s.name:<9} {s.decoding:<8} cache {s.cache:<4} W{s.weight_bits}  {tiers}; {comp}; pJ/MAC {pj}; "
                     f"static {s.static_w:g} W")
    lines.append("Models (billions of weights: total / active per token; KV KiB per position):")
    for m in models:
        lines.append(f"  {m.name:<18} {m.total_params / 1e9:7.3f} / {m.active_params / 1e9:6.3f}  L{m.n_layers} "
                     f"E{m.n_experts} k{m.top_k} d{m.d_model} f{m.d_expert}  KV {m.kv_bytes_per_token() / 1024:.0f}")
    lines.append(f"Decoding: gamma {settings.gamma}, k_d {settings.k_d or 'half the top-k'} unless the elastic policy "
                 f"picks them, draft dense bits {settings.dense_bits}, context {settings.context}, HB policy "
                 f"{settings.policy}; acceptance "
                 + (f"scenario {settings.scenario} (perf/acceptance.py; shipped = measured pooled over 64 held-out "
                    "prompts, perf/data/acceptance.json)" if settings.acceptance is None
                    else f"alpha {settings.acceptance:g} for every draft"))
    lines.append(f"Routing: skew {route.skew:g}, rho {route.rho:g}, policy efficiency "
                 + ", ".join(f"{k} {v:.2f}" for k, v in sorted(route.eta.items()))
                 + " (calibrated on the shipped model's measured routing)")
    return "\n".join(lines)


def main_table(rows, batches=(1, 2, 4, 8, 16)):
    """Per model: tokens/s and mJ/token per system at a few batch sizes."""
    models = list(dict.fromkeys(r["model"] for r in rows))
    systems = list(dict.fromkeys(r["system"] for r in rows))
    by = {(r["system"], r["model"], r["batch"]): r for r in rows}
    batches = [b for b in batches if any(r["batch"] == b for r in rows)]
    out = []
    for m in models:
        out.append(f"{m}: tokens/s | mJ/token")
        head = f"  {'system':<9}" + "".join(f"{'b' + str(b):>10}" for b in batches) + " |" + "".join(f"{'b' + str(b):>9}" for b in batches)
        out.append(head)
        for s in systems:
            tps = "".join(f"{by[(s, m, b)]['tokens_per_s']:>10.4g}" for b in batches)
            mj = "".join(f"{by[(s, m, b)]['j_per_token'] * 1e3:>9.3g}" for b in batches)
            out.append(f"  {s:<9}{tps} |{mj}")
    return "\n".join(out)


def ratio_table(rows):
    """Per model and system: mean over the swept batches of the speed-up and energy gain against
    the naive xPU and against the best prior system."""
    models = list(dict.fromkeys(r["model"] for r in rows))
    systems = list(dict.fromkeys(r["system"] for r in rows))
    head = (f"{'model':<18} {'system':<9} {'speedup/xPU':>11} {'energy/xPU':>10} {'speedup/best prior':>18} "
            f"{'energy/best prior':>17}")
    out = [head, "-" * len(head)]
    for m in models:
        for s in systems:
            rs = [r for r in rows if r["model"] == m and r["system"] == s]
            vals = [_mean(r.get(k, float("nan")) for r in rs) for k in
                    ("speedup_vs_xpu", "energy_gain_vs_xpu", "speedup_vs_best_prior", "energy_gain_vs_best_prior")]
            cells = [f"{v:.2f}x" if v == v else "-" for v in vals]
            out.append(f"{m:<18} {s:<9} {cells[0]:>11} {cells[1]:>10} {cells[2]:>18} {cells[3]:>17}")
    return "\n".join(out)


def breakdown_table(rows, model, batches=(1, 16)):
    """Time (busy seconds per token per resource; the slowest binds) and energy per token by component."""
    out = [f"{model}: per generated token, busy time per resource (us) and energy per component (mJ)"]
    head = (f"  {'system':<9} {'b':>2} {'off-chip':>9} {'HB':>8} {'compute':>8} {'bound':>8} | {'off-chip':>9} {'HB':>8} "
            f"{'compute':>8} {'static':>8} {'total':>8}")
    out.append(head)
    for r in rows:
        if r["model"] != model or r["batch"] not in batches:
            continue
        b, e = r["busy_per_token"], r["energy_per_token"]
        out.append(f"  {r['system']:<9} {r['batch']:>2} {b.get('offchip', 0) * 1e6:>9.1f} {b.get('hb', 0) * 1e6:>8.1f} "
                   f"{b.get('compute', 0) * 1e6:>8.1f} {r['bound']:>8} | {e.get('offchip', 0) * 1e3:>9.3f} "
                   f"{e.get('hb', 0) * 1e3:>8.3f} {e.get('compute', 0) * 1e3:>8.3f} {e.get('static', 0) * 1e3:>8.3f} "
                   f"{r['j_per_token'] * 1e3:>8.3f}")
    return "\n".join(out)


def claims(rows, models=None):
    """``[{claim, paper, ours, range, why}]``: our figures for the papers' headline claims, over the
    large models (the shipped model is not in the papers)."""
    models = models or [m for m in dict.fromkeys(r["model"] for r in rows) if m != "shipped"]
    have = {r["system"] for r in rows}

    def per_model(system, key):
        return {m: _mean(r.get(key, float("nan")) for r in rows if r["system"] == system and r["model"] == m)
                for m in models}

    out = []
    if "elmoe3d" in have and "xpu" in have:
        for (claim, paper, src), key in zip(CLAIMS[:4], ("speedup_vs_xpu", "energy_gain_vs_xpu",
                                                         "speedup_vs_best_prior", "energy_gain_vs_best_prior")):
            pm = per_model("elmoe3d", key)
            out.append({"claim": claim, "source": src, "paper": paper, "ours": _mean(pm.values()), "per_model": pm})
    if "xpu_self" in have and "xpu" in have:
        pm = {m: max((r["speedup_vs_xpu"] for r in rows if r["system"] == "xpu_self" and r["model"] == m),
                     default=float("nan")) for m in models}
        out.append({"claim": CLAIMS[4][0], "source": CLAIMS[4][2], "paper": CLAIMS[4][1], "ours": max(pm.values()),
                    "per_model": pm})
    return out


WHY = ("docs/perf.md explains each difference with the input that causes it; the claim ranges below span "
       "acceptance scenario x footing x HB size")


def claims_table(rows):
    cl = claims(rows)
    head = f"{'claim':<64} {'paper':>6} {'ours':>6}  per model"
    out = [head, "-" * len(head)]
    for c in cl:
        pm = ", ".join(f"{m} {v:.2f}" for m, v in c["per_model"].items())
        out.append(f"{c['claim']:<64} {c['paper']:>5.2f}x {c['ours']:>5.2f}x  {pm}")
    out.append(f"Why they differ: {WHY}")
    return "\n".join(out)


def sensitivity(systems, models, settings, batches, objective=None, free=("gamma", "k_d")):
    """ELMoE-3D's mean speed-up over the naive xPU (batch mean) against acceptance, routing skew
    and context: ``{axis: [(value, {model: speedup})]}``."""
    names = {s.name for s in systems}
    if not {"elmoe3d", "xpu"} <= names:
        return {}
    pick = [s for s in systems if s.name in ("xpu", "elmoe3d")]
    out = {}
    axes = {"acceptance": [0.0, 0.5, 0.7, 0.9, 1.0], "skew": [0.0, 0.5, 1.0, 1.5]}
    for axis, values in axes.items():
        series = []
        for v in values:
            st = replace(settings, **{axis: v})
            rows = sweep(pick, models, st, batches, objective, free)
            series.append((v, {m.name: _mean(r["speedup_vs_xpu"] for r in rows
                                             if r["system"] == "elmoe3d" and r["model"] == m.name) for m in models}))
        out[axis] = series
    return out


def sensitivity_table(sens):
    if not sens:
        return "(sensitivity needs the xpu and elmoe3d systems)"
    out = ["ELMoE-3D speed-up over the naive xPU (mean over the batches) when one input changes:"]
    for axis, series in sens.items():
        models = list(series[0][1])
        out.append(f"  {axis:<10} " + "".join(f"{m[:16]:>17}" for m in models))
        for v, pm in series:
            out.append(f"  {v!s:<10} " + "".join(f"{pm[m]:>16.2f}x" for m in models))
    return "\n".join(out)


def validation_table(gpu, rtl):
    out = ["xPU model against published GPU decode measurements (tokens/s per sequence; efficiency: what the same "
           "software reaches on a dense model on the same GPUs; sources in perf/data/validation.json):"]
    for c in gpu:
        out.append(f"  {c['name']:<62} batch {c.get('batch', 1):>2}  measured {c['measured']:>7.2f} tok/s  "
                   f"model {c['predicted']:>7.2f}  {c['error'] * 100:+6.1f} %  (efficiency {c['efficiency']:.3f})")
    out.append("Accelerator cycle model against cycles measured in the RTL (Verilator). PE-array commands and HB "
               "streams: the model's formulas; RTL core rows (a bench-core result): the core's own cycles on a "
               "shipped-model layer pass against perf's estimate of the same pass (slowest of memory and PE array; "
               "--rtl-overhead applies their ratios):")
    for c in rtl:
        if c.get("skipped"):
            out.append(f"  {c['what']}")
            continue
        extra = (f"  (memory {c['memory_cycles']:.0f}, array {c['compute_cycles']:.0f})" if "memory_cycles" in c else "")
        out.append(f"  {c['what']:<58} RTL {c['measured']:>7.0f}  model {c['model']:>8.1f}  {c['error'] * 100:+6.2f} %"
                   + extra)
    return "\n".join(out)


def plot_roofline(rows, systems, path):
    """Achieved MAC/s against operational intensity (MACs per byte moved, all tiers), one panel per
    model, with each system's roofs (peak MAC/s; summed achieved bandwidth x intensity)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    models = list(dict.fromkeys(r["model"] for r in rows))
    cols = min(3, len(models))
    nrow = -(-len(models) // cols)
    fig, axes = plt.subplots(nrow, cols, figsize=(5.2 * cols, 4.2 * nrow), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    x = np.logspace(-1, 4, 200)
    for i, m in enumerate(models):
        ax = axes[i // cols][i % cols]
        for j, s in enumerate(systems):
            c = colors[j % len(colors)]
            bw = sum(t.bytes_per_s for t in s.tiers.values())
            ax.plot(x, np.minimum(s.peak_macs("full"), x * bw), color=c, lw=1, alpha=0.6)
            pts = sorted((r["intensity_mac_per_byte"], r["achieved_macs_per_s"], r["batch"]) for r in rows
                         if r["model"] == m and r["system"] == s.name)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", ms=3, color=c, label=s.name)
                ax.annotate(f"b{pts[-1][2]}", (pts[-1][0], pts[-1][1]), fontsize=6, color=c)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(m, fontsize=9)
        ax.set_xlabel("MACs per byte moved")
        ax.set_ylabel("achieved MAC/s")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=6)
    for k in range(len(models), nrow * cols):
        axes[k // cols][k % cols].axis("off")
    fig.suptitle("Roofline of MoE decoding (lines: each system's roofs; points: batch 1..16)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_batch(rows, path):
    """Tokens/s and J/token against batch size, per model and system."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in rows))
    systems = list(dict.fromkeys(r["system"] for r in rows))
    fig, axes = plt.subplots(2, len(models), figsize=(3.4 * len(models), 6), squeeze=False)
    for i, m in enumerate(models):
        for s in systems:
            pts = sorted((r["batch"], r["tokens_per_s"], r["j_per_token"]) for r in rows if r["model"] == m and r["system"] == s)
            axes[0][i].plot([p[0] for p in pts], [p[1] for p in pts], "o-", ms=2, label=s)
            axes[1][i].plot([p[0] for p in pts], [p[2] * 1e3 for p in pts], "o-", ms=2, label=s)
        axes[0][i].set_title(m, fontsize=9)
        axes[0][i].set_yscale("log")
        axes[1][i].set_yscale("log")
        axes[1][i].set_xlabel("batch")
        for ax in axes[:, i]:
            ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("tokens / s")
    axes[1][0].set_ylabel("mJ / token")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


__all__ = ["Settings", "tokens_per_verify"]
