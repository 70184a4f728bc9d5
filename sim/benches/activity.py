"""Switching activity of the core on recorded passes: Verilator SAIF dumps for power analysis.

:func:`replay_activity` replays ISS recordings (``elmoe3d.commands.bench_core.record_passes``)
on the native core bench (``native.py``: the memory models and the word feeder in HDL around the
core, so a pass runs at Verilator's speed with no Python per cycle;
``tb_core_native.native_replays_recorded_passes``, outputs and cache decisions checked against
the ISS) built with ``--trace-saif``: the nets of the bench, of the core and of its blocks (the
core's direct sub-modules, instance path ``core_bench/u_core/<block>``: :data:`CORE_SCOPE`).
First a run that replays nothing (the bench's set-up alone), then one run per recording, each
on a fresh core; the activity of a recording alone is the difference between its dump and the
first (``elmoe3d.synth.power.difference``), so the bench's set-up cancels out.
"""

import json
import pickle
import shutil
import time
from pathlib import Path

CORE_SCOPE = "u_core"          # the core's instance in the native bench (its blocks: u_core/<name>)


def replay_activity(params, recordings, model_path, out, progress=print):
    """Dumps of the core of ``params`` (``{"preset", "lanes"}``) replaying nothing, then each
    recording of ``recordings`` (a list of recordings, each a list of passes): returns
    ``[(saif path, rows)]``, the empty run first (``rows``: the bench's ``cycles.json``, one per
    replayed pass). Each run's folder is ``out/run_<n>``; the build is in the native cache."""
    from .native import run_native
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    for n, recording in enumerate([[], *recordings]):
        rec = out / f"recording_{n}.pkl"
        with open(rec, "wb") as f:
            pickle.dump(recording, f)
        run_dir = out / f"run_{n}"
        shutil.rmtree(run_dir, ignore_errors=True)
        progress(f"activity: run {n} of {len(recordings)} ({len(recording)} passes) on the native core "
                 f"with a SAIF dump ...", flush=True)
        t0, c0 = time.monotonic(), _children_cpu()
        seconds, _ = run_native(dict(params), run_dir, "native_replays_recorded_passes", saif=True,
                                replay=str(rec.resolve()), model=str(Path(model_path).resolve()))
        progress(f"activity: run {n}: {time.monotonic() - t0:.0f} s wall, {_children_cpu() - c0:.0f} CPU s "
                 f"(build {seconds:.0f} s)", flush=True)
        dump = out / f"run_{n}.saif"
        shutil.copyfile(run_dir / "dump.saif", dump)
        cycles = run_dir / "cycles.json"
        rows = json.loads(cycles.read_text()) if recording and cycles.exists() else []
        runs.append((dump, rows))
    return runs


def _children_cpu():
    import resource
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime
