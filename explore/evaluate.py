"""One design point: its hardware figures (from its synthesized blocks) and its system figures
(from the system model, per workload). Pure functions of their inputs, so a point evaluated in a
Ray task anywhere gives the figures a serial run gives.
"""

import math

from .perf_adapter import system_figures


def geomean(values):
    values = list(values)
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def hardware(point, blocks):
    """Die figures of a point from its blocks' figures (``{block: figures}``, see
    :func:`elmoe3d.explore.blocks.synthesize_block`): ``arrays`` PE arrays and one expert cache.

    Returns ``{"area_mm2", "power_mw", "fmax_mhz", "pj_per_mac"}``: area in mm^2 and power in mW
    (at the synthesis clock target and activity) summed over the blocks, Fmax the slowest block's
    in MHz, ``pj_per_mac`` the PE array's per mode, at the Liberty's node.
    """
    pe, cache = blocks["pe_array"], blocks["expert_cache"]
    n = point["arrays"]
    fmax = [b["fmax_mhz"] for b in (pe, cache) if b.get("fmax_mhz")]
    power = [b["power_mw"] for b in (pe, cache)]
    return {"area_mm2": (n * pe["area_um2"] + cache["area_um2"]) / 1e6,
            "power_mw": None if None in power else n * pe["power_mw"] + cache["power_mw"],
            "fmax_mhz": min(fmax) if fmax else None,
            "pj_per_mac": pe.get("pj_per_mac")}


def evaluate(point, blocks, workloads, system, energy_scale=None, name="explore"):
    """The record fields of one point (everything but its key, node and timing).

    ``blocks``: ``{block: figures}``; ``workloads``: the space's workloads; ``system``: its
    ``[system]`` table. Tokens/s and J/token are given per workload and as geometric means.
    """
    hw = hardware(point, blocks)
    per = {}
    perf = None
    for w in workloads:
        fig = system_figures(point, hw if hw["pj_per_mac"] else None, w, system, energy_scale, name)
        per[w["name"]] = {"tokens_per_s": fig["tokens_per_s"], "j_per_token": fig["j_per_token"],
                          "bound": fig["bound"], "gamma": fig["gamma"], "k_d": fig["k_d"],
                          "perf_args": fig["perf_args"]}
        perf = fig["perf_system"]
    tps = geomean(v["tokens_per_s"] for v in per.values())
    return {"hw": hw,
            "blocks": {b: {k: f.get(k) for k in ("key", "area_um2", "fmax_mhz", "power_mw", "pj_per_mac", "met")}
                       for b, f in blocks.items()},
            "workloads": per, "perf_system": perf,
            "tokens_per_s": tps, "j_per_token": geomean(v["j_per_token"] for v in per.values()),
            "area_mm2": hw["area_mm2"], "tokens_per_s_per_mm2": tps / hw["area_mm2"]}
