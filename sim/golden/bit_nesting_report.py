"""The bit-nesting report: accuracy, traffic and golden-model speed of draft vs full passes.

For a MoE layer shape it measures, on random weights of a chosen distribution and Gaussian
tokens:

- relative RMS error against the float64 layer of the full INT8 layer, of the draft layer
  (MSB + augmentation) and of the truncation-only draft (MSB, no augmentation);
- the draft weight error ``q - q_d`` (mean and RMS, in INT8 steps) against truncation's;
- bytes of expert weights a draft pass reads per token versus a full pass (MSB planes only
  versus both planes);
- the golden model's GEMV throughput (MAC/s) for full and draft passes;
- for a whole layer, the integer path of SPEC section 7 (:mod:`elmoe3d.sim.golden.int_moe`, static scales
  calibrated on separate Gaussian tokens) in its verify and draft passes, and the share of tokens
  whose integer top-k set equals the float router's.
"""

import time

import numpy as np

from ..numerics.gemv import draft_gemv, full_gemv
from .int_moe import calibrate_layer, draft_pass, fold_layer, int_moe, quantize_tokens
from .moe_layer import (MoEWeights, expert_float, expert_int8, moe_float, moe_int8,
                        random_expert, random_moe, relative_rms_error, route)
from ..numerics.quant import quantize_activations
from ..numerics.slices import draft_weight, msb_slice, truncated_weight


def weight_error_stats(q):
    """Mean and RMS of ``q - q_d`` (augmented draft) and ``q - 16h`` (truncation), INT8 steps."""
    q64 = q.astype(np.int64)
    e_draft = q64 - draft_weight(q)
    e_trunc = q64 - truncated_weight(q)
    return {"draft_error_mean": float(e_draft.mean()), "draft_error_rms": float(np.sqrt((e_draft ** 2).mean())),
            "truncation_error_mean": float(e_trunc.mean()),
            "truncation_error_rms": float(np.sqrt((e_trunc ** 2).mean()))}


def pass_bytes(shape):
    """Expert-weight bytes per token: ``(draft, full)``; top-k experts, 3 projections each."""
    full = shape.top_k * shape.expert_params        # one byte per INT8 weight
    return full // 2, full                          # the draft reads the MSB planes only


def gemv_throughput(q, tokens, rng, repeats=3):
    """Golden-model MAC/s of ``(full, draft)`` GEMVs of ``q`` on ``tokens`` tokens (best of N)."""
    a, _ = quantize_activations(rng.standard_normal((tokens, q.shape[1])))
    h = msb_slice(q)
    macs = q.size * tokens
    best = {}
    for name, fn, w in (("full", full_gemv, q), ("draft", draft_gemv, h)):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn(w, a)
            times.append(time.perf_counter() - t0)
        best[name] = macs / min(times)
    return best["full"], best["draft"]


def layer_report(shape, seed=0, dist="outlier", tokens=64):
    """Figures for a whole MoE layer of ``shape`` (all experts materialized)."""
    rng = np.random.default_rng(seed)
    weights = random_moe(shape, rng, dist)
    qweights = weights.quantized()
    x = rng.standard_normal((tokens, shape.d_model))
    ref = moe_float(x, weights, shape.top_k)
    errors = {mode: relative_rms_error(moe_int8(x, qweights, shape.top_k, mode), ref)
              for mode in ("full", "draft", "truncated")}
    calib = rng.standard_normal((64, shape.d_model))
    layer = fold_layer(qweights, calibrate_layer(qweights, calib, shape.top_k), shape.top_k)
    a, xm, xe = quantize_tokens(x)
    verify = int_moe(layer, a, xm, xe)
    errors["integer"] = relative_rms_error(verify.out * layer.out_scale, ref)
    errors["integer_draft"] = relative_rms_error(
        int_moe(layer, a, xm, xe, draft_pass(shape.top_k)).out * layer.out_scale, ref)
    chosen, _ = route(x, weights.router, shape.top_k)
    errors["topk_agreement"] = float((np.sort(chosen, 1) == np.sort(verify.chosen, 1)).all(1).mean())
    q_all = np.concatenate([qe.gate.q.ravel() for qe in qweights.experts])
    mac_full, mac_draft = gemv_throughput(qweights.experts[0].gate.q, tokens, rng)
    return _figures(shape, seed, dist, tokens, "layer", errors, q_all, mac_full, mac_draft)


def expert_report(shape, seed=0, dist="outlier", tokens=16):
    """Figures for one expert of ``shape`` (for shapes too large to materialize every expert)."""
    rng = np.random.default_rng(seed)
    expert = random_expert(shape.d_model, shape.d_ffn, rng, dist)
    qexpert = MoEWeights(None, [expert]).quantized().experts[0]
    x = rng.standard_normal((tokens, shape.d_model))
    ref = expert_float(x, expert)
    errors = {mode: relative_rms_error(expert_int8(x, qexpert, mode), ref)
              for mode in ("full", "draft", "truncated")}
    mac_full, mac_draft = gemv_throughput(qexpert.gate.q, tokens, rng, repeats=2)
    return _figures(shape, seed, dist, tokens, "expert", errors, qexpert.gate.q.ravel(),
                    mac_full, mac_draft)


def _figures(shape, seed, dist, tokens, scope, errors, q, mac_full, mac_draft):
    draft_bytes, full_bytes = pass_bytes(shape)
    return {"shape": {"d_model": shape.d_model, "n_experts": shape.n_experts, "top_k": shape.top_k,
                      "d_ffn": shape.d_ffn, "n_shared": shape.n_shared},
            "seed": seed, "weights": dist, "tokens": tokens, "scope": scope,
            "rel_rms_full": errors["full"], "rel_rms_draft": errors["draft"],
            "rel_rms_truncated": errors["truncated"],
            "rel_rms_integer": errors.get("integer"), "rel_rms_integer_draft": errors.get("integer_draft"),
            "integer_topk_agreement": errors.get("topk_agreement"),
            **weight_error_stats(q),
            "draft_bytes_per_token": draft_bytes, "full_bytes_per_token": full_bytes,
            "gemv_mac_per_s_full": mac_full, "gemv_mac_per_s_draft": mac_draft}


def _pct(value, digits):
    return "n/a (no router)" if value is None else f"{value:.{digits}%}"


def format_report(rows):
    """A plain-text table of report rows (one column per shape)."""
    def shape_name(r):
        s = r["shape"]
        return f"d{s['d_model']} E{s['n_experts']} k{s['top_k']} F{s['d_ffn']} ({r['scope']})"

    lines = [("", [shape_name(r) for r in rows])]
    fmt = [("weights / tokens", lambda r: f"{r['weights']} / {r['tokens']}"),
           ("rel. RMS error, full INT8 vs float", lambda r: f"{r['rel_rms_full']:.4%}"),
           ("rel. RMS error, draft (MSB+aug) vs float", lambda r: f"{r['rel_rms_draft']:.3%}"),
           ("rel. RMS error, truncation vs float", lambda r: f"{r['rel_rms_truncated']:.3%}"),
           ("rel. RMS error, integer layer vs float", lambda r: _pct(r["rel_rms_integer"], 4)),
           ("rel. RMS error, integer draft vs float", lambda r: _pct(r["rel_rms_integer_draft"], 3)),
           ("integer top-k = float top-k (tokens)", lambda r: _pct(r["integer_topk_agreement"], 1)),
           ("weight error q-q_d: mean / RMS (steps)",
            lambda r: f"{r['draft_error_mean']:+.3f} / {r['draft_error_rms']:.3f}"),
           ("weight error q-16h: mean / RMS (steps)",
            lambda r: f"{r['truncation_error_mean']:+.3f} / {r['truncation_error_rms']:.3f}"),
           ("expert bytes per token, draft pass", lambda r: f"{r['draft_bytes_per_token'] / 2**20:.2f} MiB"),
           ("expert bytes per token, full pass", lambda r: f"{r['full_bytes_per_token'] / 2**20:.2f} MiB"),
           ("golden GEMV, full (MAC/s)", lambda r: f"{r['gemv_mac_per_s_full']:.3g}"),
           ("golden GEMV, draft (MAC/s)", lambda r: f"{r['gemv_mac_per_s_draft']:.3g}")]
    lines += [(label, [f(r) for r in rows]) for label, f in fmt]
    w0 = max(len(label) for label, _ in lines)
    widths = [max(len(cells[i]) for _, cells in lines) for i in range(len(rows))]
    return "\n".join(label.ljust(w0) + "  " + "  ".join(c.rjust(w) for c, w in zip(cells, widths))
                     for label, cells in lines)

