"""Validation of the speed model: published GPU decode measurements and RTL cycle counts.

``perf/data/validation.json`` holds

- published decode measurements of MoE models on GPUs: five batch-1 Mixtral-8x7B cases on
  A100-80GB (gpt-fast INT8 on one GPU and BF16 on 2/4/8 with tensor parallelism, TensorRT-LLM
  INT8 on one), Mixtral-8x7B at batch 8 on two H200 (vLLM's nightly latency test) and
  Qwen3-30B-A3B at batch 1 on one A100 (tt-inference-server's GPU reference). The xPU model
  predicts each with the efficiency the same software reaches on a *dense* model on the same GPU
  (stated, or computed from a ``dense_reference``: bytes per step / (step time x peak)), so the
  MoE figure is a prediction; the bar is 25 %;
- cycles the project's RTL measured in Verilator: PE-array GEMV commands (16 x 16, DRAFT and
  FULL, ``k`` = 128, 256, 4096) and HB-interface plane streams at ``HBConfig()``'s defaults. The
  accelerator model (:func:`.decode.gemv_tile_cycles` for compute; bytes / (peak x efficiency)
  for HB) must agree within 10 %, per command and for a whole expert-layer pass of the shipped
  model (gate, up, down of one expert plus the stream of its two planes).
"""

import json
import math
from dataclasses import replace
from pathlib import Path

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
    measured_cmd = {}
    for r in pe["measured"]:
        phases = 2 if r["mode"] == "full" else 1
        model = gemv_tile_cycles(pe["rows"], r["k"], pe["rows"], pe["cols"], phases, pe["pipeline"])
        measured_cmd[(r["mode"], r["k"])] = r["cycles"]
        out.append({"what": f"PE array {pe['rows']}x{pe['cols']} {r['mode']} GEMV, k={r['k']}",
                    "measured": r["cycles"], "model": model})
    for r in hb["measured"]:
        out.append({"what": f"HB stream, {r['planes']} plane(s) of {r['lines'] // r['planes']} lines",
                    "measured": r["cycles"], "model": hb_model_cycles(r["lines"], hb_eff)})
    # one expert of the shipped model, FULL mode, one 16x16 array, one token: gate and up are
    # 256 x 128 (16 row tiles of k = 128), down 128 x 256 (8 tiles of k = 256); its two planes
    # (48 KiB each) stream over HB while the array computes (overlap), so the layer takes the max
    m = builtin_models()["shipped"]
    tiles_gu = math.ceil(m.d_expert / pe["rows"])
    tiles_d = math.ceil(m.d_model / pe["rows"])
    rtl_compute = 2 * tiles_gu * measured_cmd[("full", m.d_model)] + tiles_d * measured_cmd[("full", m.d_expert)]
    model_compute = (2 * tiles_gu * gemv_tile_cycles(pe["rows"], m.d_model, pe["rows"], pe["cols"], 2, pe["pipeline"])
                     + tiles_d * gemv_tile_cycles(pe["rows"], m.d_expert, pe["rows"], pe["cols"], 2, pe["pipeline"]))
    one_plane = next(r for r in hb["measured"] if r["planes"] == 1)
    rtl_stream = 2 * one_plane["cycles"]
    model_stream = hb_model_cycles(2 * one_plane["lines"], hb_eff)
    out.append({"what": "shipped expert, FULL: PE-array cycles (gate, up, down)", "measured": rtl_compute,
                "model": model_compute})
    out.append({"what": "shipped expert: HB stream of its MSB and LSB planes", "measured": rtl_stream,
                "model": model_stream})
    out.append({"what": "shipped expert-layer pass, overlapped (max of the two)",
                "measured": max(rtl_compute, rtl_stream), "model": max(model_compute, model_stream)})
    for r in out:
        r["error"] = r["model"] / r["measured"] - 1
    return out


def core_checks():
    """``[{what, measured, model, error}]``: the RTL core's cycles per pass of a shipped-model layer
    against the memory-bound floor, which is what perf charges for a pass (its slowest resource)."""
    out = []
    for r in load()["rtl_core"]["passes"]:
        out.append({"what": f"RTL core, {r['name']}, {r['tokens']} token(s)", "measured": r["core_cycles"],
                    "model": r["floor_cycles"], "error": r["floor_cycles"] / r["core_cycles"] - 1, "kind": r["kind"]})
    return out


def core_overheads():
    """``{"target": f, "draft": f}``: mean core / floor cycles of the RTL core's verify and draft passes."""
    rows = load()["rtl_core"]["passes"]
    out = {}
    for kind in ("target", "draft"):
        ratios = [r["core_cycles"] / r["floor_cycles"] for r in rows if r["kind"] == kind]
        out[kind] = sum(ratios) / len(ratios)
    return out
