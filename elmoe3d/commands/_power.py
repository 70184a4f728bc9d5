"""bench-core's power from simulated activity: a verify and a draft pass of the shipped model on
the simulated core (SAIF dumps of the native bench, ``sim/benches/activity.py``), each block of the synthesized core
annotated with them in OpenSTA (``synth/power.py``).

:func:`simulate_passes` records the passes on the ISS and replays them on the core with SAIF
dumps; :func:`power_entry` fills the ``"power"`` entry of one library's synthesis in
``bench_core.json`` from them.
"""

from pathlib import Path

# the blocks that move data between the memory tiers and the core's buffers (pJ per byte moved on chip)
DATA_MOVEMENT_BLOCKS = ("hbr", "hbw", "off", "fill", "cache")


def power_plan(G, verify, draft_pass):
    """The passes whose activity is measured, each on a fresh core (cold cache): a verify pass of
    ``G`` tokens and a draft (k_d = 1, MSB + augmentation) of the same tokens."""
    return [("verify", verify, 0, G), ("draft k_d=1 MSB+aug", draft_pass(1), 0, G)]


def simulate_passes(params, model, model_path, layer, out, progress=print):
    """Per-pass activity on the core of ``params`` (``{"preset", "lanes"}``): ``[{"name",
    "mode", "activity", "cycles", "macs", "onchip_bytes", "tokens"}]`` for
    :func:`elmoe3d.synth.power.power_entry`. Each pass is recorded on a fresh ISS and replayed on
    a fresh core; its activity is the difference between its run's dump and that of a run that
    replays nothing (the bench's set-up cancels out)."""
    from ..hw.core import core_config
    from ..sim.benches.activity import replay_activity
    from ..synth.power import difference, load_activity, pass_macs
    from .bench_core import record_passes
    cfg = core_config(params["preset"], params.get("lanes", 0))
    recordings = [record_passes(cfg, model, layer, lambda G, v, d, i=i: [power_plan(G, v, d)[i]])
                  for i in range(len(power_plan(cfg.buffers.tokens, None, lambda k: None)))]
    runs = replay_activity(params, recordings, model_path, Path(out), progress=progress)
    empty = load_activity(runs[0][0])
    passes = []
    for (dump, rows), (rec,) in zip(runs[1:], recordings):
        row = rows[0]
        passes.append({"name": rec["name"], "mode": "draft" if rec["pass_"].draft else "full",
                       "activity": difference(load_activity(dump), empty),
                       "cycles": row["core"], "macs": pass_macs(model.int_layers[layer], rec),
                       "onchip_bytes": row["hb_bytes"] + row["offchip_bytes"], "tokens": rec["tokens"]})
    return passes


def power_entry(synth_dir, liberty, fmax_mhz, passes):
    """The ``"power"`` entry of one library's synthesis (``synth_dir`` holds its
    ``netlist_hier.v``): :func:`elmoe3d.synth.power.power_entry` at ``fmax_mhz``, the simulated
    core's instance ``core``, pJ per byte from :data:`DATA_MOVEMENT_BLOCKS`."""
    from ..sim.benches.activity import CORE_SCOPE
    from ..synth.flow import resolve_liberty
    from ..synth.power import power_entry as entry
    synth_dir = Path(synth_dir)
    macros = sorted((synth_dir / "macros").glob("*.lib"))       # SRAM macros the flow mapped onto
    return entry(synth_dir / "netlist_hier.v", resolve_liberty(liberty), "core", synth_dir / "power",
                 fmax_mhz=fmax_mhz, passes=passes, scope=CORE_SCOPE, onchip_blocks=DATA_MOVEMENT_BLOCKS,
                 extra_libs=macros)


def format_power(pw):
    """Markdown lines of a ``"power"`` entry (:func:`power_entry`): power per block for each
    simulated pass beside activity 0.2, then energy per pass, pJ per MAC (DRAFT, FULL), pJ per
    byte moved on chip and leakage, simulated and at activity 0.2."""
    flat_key = next((k for k in pw if k.startswith("at_activity_")), None)
    flat = pw.get(flat_key, {})
    flat_name = f"activity {flat.get('activity', '?')}"
    nan = float("nan")
    names = list(pw.get("energy_per_pass_nj", {}))
    per_pass = pw.get("blocks_mw_per_pass", {})
    annotated = pw.get("ports_annotated", {})
    lines = [f"Power at {pw['clock_mhz']:.1f} MHz from simulated activity (per block, OpenSTA): "
             f"{pw['total_mw']:.2f} mW over the passes (leakage {pw['leakage_mw']:.3f} mW); at {flat_name}: "
             f"{flat.get('total_mw', nan):.2f} mW", "",
             "| block | " + " | ".join(f"{n} mW" for n in names) + f" | {flat_name} mW | leakage mW | inputs annotated |",
             "| --- | " + " | ".join("---:" for _ in names) + " | ---: | ---: | ---: |"]
    for block, mw in sorted(pw["blocks_mw"].items(), key=lambda kv: -kv[1]):
        a = annotated.get(block)
        lines.append(f"| {block} | " + " | ".join(f"{per_pass.get(n, {}).get(block, nan):.2f}" for n in names)
                     + f" | {flat.get('blocks_mw', {}).get(block, nan):.2f} | "
                     f"{pw.get('blocks_leakage_mw', {}).get(block, nan):.3f} | {f'{a[0]} of {a[1]}' if a else '-'} |")
    lines.append("| **core** | " + " | ".join(f"**{sum(per_pass.get(n, {}).values()):.2f}**" for n in names)
                 + f" | **{flat.get('total_mw', nan):.2f}** | **{pw['leakage_mw']:.3f}** | |")
    lines += ["", f"| figure | simulated | {flat_name} |", "| --- | ---: | ---: |"]
    info = pw.get("passes", {})
    for n in names:
        cyc = info.get(n, {}).get("cycles")
        lines.append(f"| energy, {n}{f' ({cyc:,} cycles)' if cyc else ''}, nJ | {pw['energy_per_pass_nj'][n]:.2f} | "
                     f"{flat.get('energy_per_pass_nj', {}).get(n, nan):.2f} |")
    for mode, pj in pw.get("pj_per_mac", {}).items():
        lines.append(f"| pJ per MAC, whole core, {mode.upper()} | {pj:.3f} | {flat.get('pj_per_mac', {}).get(mode, nan):.3f} |")
    if "pj_per_byte_onchip" in pw:
        lines.append(f"| pJ per byte moved on chip ({', '.join(DATA_MOVEMENT_BLOCKS)}) | {pw['pj_per_byte_onchip']:.3f} | "
                     f"{flat.get('pj_per_byte_onchip', nan):.3f} |")
    lines.append(f"| leakage, mW | {pw['leakage_mw']:.3f} | {flat.get('leakage_mw', nan):.3f} |")
    if pw.get("macros_mw"):
        lines.append(f"| of the power: SRAM macros, mW | {pw['macros_mw']:.2f} | {flat.get('macros_mw', nan):.2f} |")
    for where, why in pw.get("fallback", {}).items():
        lines += ["", f"{where}: {why}"]
    return lines
