"""bench-core's power from simulated activity: a verify and a draft pass of the shipped model on
the simulated core (SAIF dumps, ``sim/benches/activity.py``), each block of the synthesized core
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
    from ..synth.flow import resolve_liberty
    from ..synth.power import power_entry as entry
    synth_dir = Path(synth_dir)
    macros = sorted((synth_dir / "macros").glob("*.lib"))       # SRAM macros the flow mapped onto
    return entry(synth_dir / "netlist_hier.v", resolve_liberty(liberty), "core", synth_dir / "power",
                 fmax_mhz=fmax_mhz, passes=passes, scope="core", onchip_blocks=DATA_MOVEMENT_BLOCKS,
                 extra_libs=macros)
