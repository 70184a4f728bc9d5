"""Switching activity of the core on recorded passes: Verilator SAIF dumps for power analysis.

:func:`replay_activity` replays ISS recordings (``elmoe3d.commands.bench_core.record_passes``)
on the core with the cocotb core bench (``tb_core.core_replays_recorded_passes``, Python memory
models) built with ``--trace-saif``: one run per prefix of the recording, on one build, so the
activity of pass ``i`` alone is the difference between the dumps of the prefixes ``[:i + 1]``
and ``[:i]`` (the bench's own set-up and images, the same in both, cancel out;
``elmoe3d.synth.power.difference``). The first run replays nothing (set-up only).
"""

import json
import pickle
import shutil
from pathlib import Path


def replay_activity(params, recording, model_path, out, progress=print):
    """Dumps of the core of ``params`` (``{"preset", "lanes"}``) replaying ``recording[:i]`` for
    ``i`` = 0 .. len: returns ``[(saif path, rows)]`` (``rows``: the bench's ``cycles.json``, one
    per replayed pass). The build is in ``out/rtl``."""
    from .launch import run_top_bench
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    for n in range(len(recording) + 1):
        rec = out / f"recording_{n}.pkl"
        with open(rec, "wb") as f:
            pickle.dump(recording[:n], f)
        progress(f"activity: replaying {n} of {len(recording)} passes on the core with a SAIF dump ...", flush=True)
        run_top_bench("core", dict(params), out / "rtl", seeds=(1,), testcase="core_replays_recorded_passes",
                      replay=str(rec.resolve()), model=str(model_path), waves="saif", quick_build=True)
        dump = out / f"prefix_{n}.saif"
        shutil.copyfile(out / "rtl" / "dump.saif", dump)
        cycles = out / "rtl" / "cycles.json"
        rows = json.loads(cycles.read_text()) if n and cycles.exists() else []
        runs.append((dump, rows))
    return runs
