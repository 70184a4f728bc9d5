"""Validation of the speed model: published GPU decode measurements and RTL cycle counts.

``perf/data/validation.json`` holds

- published decode measurements of MoE models on GPUs: five batch-1 Mixtral-8x7B cases on
  A100-80GB (gpt-fast INT8 on one GPU and BF16 on 2/4/8 with tensor parallelism, TensorRT-LLM
  INT8 on one), Mixtral-8x7B at batch 8 on two A100, two H100 and two H200 (vLLM's nightly latency
  test, one build per GPU, each with its Llama-3.1-8B reference) and
  Qwen3-30B-A3B at batch 1 on one A100 (tt-inference-server's GPU reference). The xPU model
  predicts each with the efficiency the same software reaches on a *dense* model on the same GPU
  (stated, or computed from a ``dense_reference``: bytes per step / (step time x peak)), so the
  MoE figure is a prediction; the bar is 25 %;
- cycles the project's RTL measured in Verilator: PE-array GEMVs (16 x 16 at depth 3, DRAFT and
  FULL, ``k`` = 128, 256, 4096, one row tile and three back to back) and HB-interface plane streams at ``HBConfig()``'s defaults. The
  accelerator model (:func:`.decode.gemv_tile_cycles` for compute; bytes / (peak x efficiency)
  for HB) must agree within 10 % per command;
- the layer pass: the RTL core's own cycles on passes of a shipped-model layer, read from a
  bench-core result (:mod:`.bench_core`), against perf's estimate of the same pass
  (:func:`core_checks`). No composition of block measurements stands in for it: without a
  bench-core result the check says it was skipped.
"""

import json
import math
import re
from dataclasses import replace
from pathlib import Path

from ..errors import UserError

from .decode import Settings, gemv_tile_cycles, run_round
from .models import builtin_models
from .systems import Tier, builtin_systems

DATA = Path(__file__).resolve().parent / "data"
GPU_TOLERANCE = 0.25
RTL_TOLERANCE = 0.10


def load():
    return json.loads((DATA / "validation.json").read_text())


def case_efficiency(case):
    """The xPU efficiency of a GPU case: stated, or the achieved bandwidth of its dense reference (bytes one
    decode step reads / (step time x peak)), both from the same software on the same GPU."""
    if case.get("efficiency") is not None:
        return case["efficiency"]
    ref = case["dense_reference"]
    return ref["bytes_per_step"] / (ref["step_s"] * case["gbps"] * 1e9)


def gpu_cases(models=None):
    """``[{name, model, batch, measured, predicted, error, ...}]``: the xPU model against each GPU
    measurement; tokens/s are per sequence (a batch-b case decodes b sequences in each step)."""
    models = models or builtin_models()
    xpu = builtin_systems()["xpu"]
    out = []
    for case in load()["gpu"]:
        eff = case_efficiency(case)
        batch = case.get("batch", 1)
        # tensor parallelism: each GPU streams its share of the weights with its own memory
        tier = Tier(gbps=case["gbps"] * case["gpus"], efficiency=eff, pj_per_bit=xpu.offchip.pj_per_bit,
                    capacity_gib=xpu.offchip.capacity_gib * case["gpus"], source=case["source"])
        system = replace(xpu, name="xpu-validation", offchip=tier, weight_bits=case["weight_bits"],
                         macs_per_s=case.get("macs_per_s", xpu.macs_per_s) * case["gpus"])
        r = run_round(system, models[case["model"]], Settings(context=case["context"]), batch)
        pred = r["tokens_per_s"] / batch
        out.append({"name": case["name"], "model": case["model"], "batch": batch, "measured": case["tokens_per_s"],
                    "predicted": pred, "error": pred / case["tokens_per_s"] - 1, "efficiency": eff,
                    "hardware": case.get("hardware", ""), "precision": case.get("precision", ""),
                    "software": case.get("software", ""), "status": case.get("status", ""), "source": case["source"]})
    return out


def hb_model_cycles(lines, efficiency):
    """HB cycles the perf model charges for ``lines`` (bytes / line_bytes at the tier's efficiency)."""
    return lines / efficiency


def rtl_checks():
    """``[{what, measured, model, error}]``: PE-array commands, HB streams and one expert-layer pass."""
    data = load()["rtl"]
    pe, hb = data["pe_array"], data["hb_memory"]
    hb_eff = builtin_systems()["elmoe3d"].hb.efficiency
    out = []
    for r in pe["measured"]:
        phases = 2 if r["mode"] == "full" else 1
        tiles = r.get("tiles", 1)
        model = gemv_tile_cycles(tiles * pe["rows"], r["k"], pe["rows"], pe["cols"], phases, pe["pipeline"])
        out.append({"what": f"PE array {pe['rows']}x{pe['cols']} {r['mode']} GEMV, k={r['k']}, {tiles} row tile(s)",
                    "measured": r["cycles"], "model": model})
    for r in hb["measured"]:
        out.append({"what": f"HB stream, {r['planes']} plane(s) of {r['lines'] // r['planes']} lines",
                    "measured": r["cycles"], "model": hb_model_cycles(r["lines"], hb_eff)})
    for r in out:
        r["error"] = r["model"] / r["measured"] - 1
    return out


PASS_K = re.compile(r"k_d\s*=\s*(\d+)")


def _core_config(preset):
    """The :class:`~elmoe3d.config.AccelConfig` a bench-core run names (``small``, ``small-lanes2``)."""
    from dataclasses import replace as _replace

    from .. import config
    base, _, lanes = preset.partition("-lanes")
    if base not in config.PRESETS or (lanes and not lanes.isdigit()):
        return None
    cfg = config.PRESETS[base]
    return _replace(cfg, array=_replace(cfg.array, lanes=int(lanes))) if lanes else cfg


def pass_kind(row):
    """``(draft, k)`` of a bench-core pass row: its ``draft`` and ``k`` fields, else its name
    (``draft k_d=1 MSB+aug``; a verify pass uses the model's top-k)."""
    draft = row["draft"] if isinstance(row.get("draft"), bool) else "draft" in row["name"].lower()
    k = row.get("k") if isinstance(row.get("k"), int) and row.get("k") > 0 else None
    if k is None:
        m = PASS_K.search(row["name"])
        k = int(m.group(1)) if m else None
    return draft, k


def layer_pass_estimate(cfg, model, tokens, draft, k, route, memory_cycles):
    """perf's own cycle estimate of one MoE-layer pass on the core ``cfg``: the slowest busy resource,
    as for a whole decode pass (:mod:`.decode`) - the memory term ``memory_cycles`` (bytes per tier /
    line bytes, the tiers in parallel) against the PE array (:func:`.decode.gemv_tile_cycles`: the
    router GEMV over both planes, then each unique expert of the pass - the routing model's count -
    running its routed tokens in groups of ``lanes``, gate and up ``d_expert x d`` and down
    ``d x d_expert``, DRAFT or FULL). Per-command latencies and handshakes are not in it."""
    a = cfg.array
    k = min(k or model.top_k, model.top_k)
    groups = math.ceil(tokens / a.lanes)
    router = groups * gemv_tile_cycles(model.n_experts, model.d_model, a.rows, a.cols, 2, a.pipeline)
    u = route.unique(model.n_experts, k, tokens, 1)
    per_expert_groups = math.ceil(max(tokens * k / u, 1.0) / a.lanes)
    ph = 1 if draft else 2
    one = (2 * gemv_tile_cycles(model.d_expert, model.d_model, a.rows, a.cols, ph, a.pipeline)
           + gemv_tile_cycles(model.d_model, model.d_expert, a.rows, a.cols, ph, a.pipeline))
    compute = router + u * per_expert_groups * one
    return max(memory_cycles, compute), compute, u


def core_checks(data=None):
    """``[{what, measured, model, error, kind}]``: the RTL core's cycles per pass of a shipped-model layer
    (a bench-core result, :mod:`.bench_core`) against perf's own estimate of the same pass
    (:func:`layer_pass_estimate`). Without a bench-core result one row says the check was skipped."""
    if not data or not data.get("passes"):
        return [{"what": "RTL core layer passes: SKIPPED (no bench-core result with passes; run elmoe3d bench-core "
                         "or give --bench-core FILE)", "skipped": True}]
    cfg = _core_config(data["preset"])
    if cfg is None:
        return [{"what": f"RTL core layer passes: SKIPPED (bench-core ran preset {data['preset']!r}, which this "
                         "configuration does not define)", "skipped": True}]
    model = builtin_models()["shipped"]
    from .routing import calibrate
    route = calibrate()
    out = []
    for r in data["passes"]:
        draft, k = pass_kind(r)
        if "offchip_bytes" in r and "hb_bytes" in r:
            mem = max(math.ceil(r["offchip_bytes"] / cfg.offchip.line_bytes), math.ceil(r["hb_bytes"] / cfg.hb.line_bytes))
        else:
            mem = r["floor"]
        est, compute, u = layer_pass_estimate(cfg, model, int(r["tokens"]), draft, k, route, mem)
        out.append({"what": f"RTL core ({data['preset']}), {r['name']}, {int(r['tokens'])} token(s)",
                    "measured": r["core"], "model": est, "error": est / r["core"] - 1,
                    "kind": "draft" if draft else "target", "memory_cycles": mem, "compute_cycles": compute,
                    "unique_experts": u, "iss": r.get("iss")})
    return out


def core_overheads(data):
    """``{"target": f, "draft": f}``: mean core cycles / perf's estimate over the RTL core's verify and
    draft passes (``--rtl-overhead``); refused without a bench-core result holding both kinds."""
    rows = [r for r in core_checks(data) if not r.get("skipped")]
    out = {}
    for kind in ("target", "draft"):
        ratios = [r["measured"] / r["model"] for r in rows if r["kind"] == kind]
        if not ratios:
            raise UserError("--rtl-overhead needs the RTL core's verify and draft passes: run elmoe3d bench-core "
                            "(its result goes to results/bench_core/bench_core.json) or give --bench-core FILE")
        out[kind] = sum(ratios) / len(ratios)
    return out
