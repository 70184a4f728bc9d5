"""Switching activity of the core on recorded passes: Verilator SAIF dumps for power analysis.

:func:`replay_activity` replays ISS recordings (``elmoe3d.commands.bench_core.record_passes``)
on the core with the cocotb core bench (``tb_core.core_replays_recorded_passes``, Python memory
models) built with ``--trace-saif``: first a run that replays nothing (the bench's set-up
alone), then one run per recording, each on a fresh core; the activity of a recording alone is
the difference between its dump and the first (``elmoe3d.synth.power.difference``), so the
bench's set-up cancels out.
"""

import json
import pickle
import shutil
from pathlib import Path


def replay_activity(params, recordings, model_path, out, progress=print):
    """Dumps of the core of ``params`` (``{"preset", "lanes"}``) replaying nothing, then each
    recording of ``recordings`` (a list of recordings, each a list of passes): returns
    ``[(saif path, rows)]``, the empty run first (``rows``: the bench's ``cycles.json``, one per
    replayed pass). The build is in ``out/rtl``."""
    from .launch import run_top_bench
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    for n, recording in enumerate([[], *recordings]):
        rec = out / f"recording_{n}.pkl"
        with open(rec, "wb") as f:
            pickle.dump(recording, f)
        progress(f"activity: run {n} of {len(recordings)} ({len(recording)} passes) on the core with a SAIF dump ...",
                 flush=True)
        run_top_bench("core", dict(params), out / "rtl", seeds=(1,), testcase="core_replays_recorded_passes",
                      replay=str(rec.resolve()), model=str(model_path), waves="saif", quick_build=True)
        dump = out / f"run_{n}.saif"
        shutil.copyfile(out / "rtl" / "dump.saif", dump)
        cycles = out / "rtl" / "cycles.json"
        rows = json.loads(cycles.read_text()) if recording and cycles.exists() else []
        runs.append((dump, rows))
    return runs
