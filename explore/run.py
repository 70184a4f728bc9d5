"""Running a sweep: grid, random or Optuna (TPE) search, each point a Ray task.

The command starts a local Ray by default (``num_cpus`` from the machine, no dashboard, quiet) or
joins a cluster with ``address``. A block synthesis is a task declaring one CPU and
:data:`SYNTH_MEMORY` bytes; a point is a task declaring one CPU that takes its blocks' results
as arguments (Ray runs it when they exist). Results are appended to ``points.jsonl`` as they
arrive, keyed by the point (:meth:`elmoe3d.explore.space.Space.key`); a rerun skips the points
done and retries the failed ones. A point that fails (a block the generator or the synthesis
refuses, a system the model refuses) is recorded with its error and the sweep goes on.

Ray is imported here only, inside :func:`explore`, so the other commands start fast.
"""

import json
import os
import sys
import time
from pathlib import Path

from ..errors import UserError
from . import blocks as blk
from .evaluate import evaluate
from .space import OBJECTIVES

SYNTH_MEMORY = 1 << 30       # bytes a block synthesis declares: the default space's largest block
                             # (pe_array 16x8, 2 lanes) peaked at 0.27 GB resident here
STORE = "points.jsonl"
# Ray reads these at start-up: no usage report, no dashboard, nothing asked of the user's shell.
RAY_ENV = {"RAY_DISABLE_USAGE_STATS": "1", "RAY_USAGE_STATS_ENABLED": "0", "RAY_USAGE_STATS_PROMPT_ENABLED": "0",
           "RAY_DEDUP_LOGS": "0", "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}


class Store:
    """The results of a sweep as JSON lines, one per point evaluation, appended as they come.

    A line cut short by an interrupt is ignored on reading; a later line for the same key
    replaces an earlier one (a retried failure).
    """

    def __init__(self, path):
        self.path = Path(path)
        self.records = {}
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if isinstance(rec, dict) and "key" in rec:
                    self.records[rec["key"]] = rec

    def done(self, key):
        rec = self.records.get(key)
        return rec is not None and rec.get("status") == "ok"

    def add(self, rec):
        self.records[rec["key"]] = rec
        with open(self.path, "a") as f:
            f.write(json.dumps(rec, sort_keys=True) + "\n")
            f.flush()


def _block_task(top, params, synth, cache_dir, key):
    """A block's figures, or ``{"error": ...}`` (the sweep records it and goes on)."""
    try:
        return blk.synthesize_block(top, params, synth, cache_dir, key)
    except Exception as exc:            # noqa: BLE001 -- any failure of a point is recorded, not raised
        return {"error": f"{top} {params}: {type(exc).__name__}: {exc}".replace("\n", " ")}


def _point_task(point, space_args, pe, cache):
    """One point's record fields (``status`` ok or failed), with the node that ran it."""
    start = time.monotonic()
    node = None
    try:
        import ray
        if ray.is_initialized():
            node = ray.get_runtime_context().get_node_id()
    except ImportError:
        pass
    blocks = {"pe_array": pe, "expert_cache": cache}
    errors = [b["error"] for b in blocks.values() if "error" in b]
    out = {"params": point, "node": node, "_blocks": blocks}
    if errors:
        out.update(status="failed", error="; ".join(errors))
    else:
        try:
            out.update(status="ok", error=None, **evaluate(point, blocks, **space_args))
        except Exception as exc:        # noqa: BLE001
            out.update(status="failed", error=f"{type(exc).__name__}: {exc}".replace("\n", " "))
    out["seconds"] = round(time.monotonic() - start, 4)
    return out


class Runner:
    """Submits points and hands back their records as they finish; on Ray, or in this process
    (``ray`` None: the serial run the Ray results are checked against)."""

    def __init__(self, space, cache_dir, ray=None):
        self.space, self.cache_dir, self.ray = space, Path(cache_dir), ray
        self.space_args = {"workloads": list(space.workloads), "system": space.system,
                           "energy_scale": space.synth["energy_scale"]}
        self.block_refs = {}          # block key -> figures or Ray object ref
        self.pending = {}             # Ray ref -> (key, point)
        self.done_serial = []
        self.blocks_cached = self.blocks_run = self.evaluated = self.submitted = 0
        self.slots = []               # point placement: node ids, each as often as it has CPUs
        if ray is not None:
            # blocks (seconds to minutes each, uneven): Ray's SPREAD, balanced as they run
            self._block = ray.remote(num_cpus=1, memory=SYNTH_MEMORY, max_retries=0,
                                     scheduling_strategy="SPREAD")(_block_task)
            self._point = ray.remote(num_cpus=1, max_retries=0)(_point_task)
            # points (milliseconds each, alike): dealt round-robin over the nodes in proportion
            # to their CPUs, with soft affinity (a node that dies hands its points to the others).
            # Ray's own placement sends short tasks to the node whose workers are already up, so
            # a node that joined late would see none of a quick sweep.
            nodes = [(n["NodeID"], int(n["Resources"].get("CPU", 0))) for n in ray.nodes() if n.get("Alive")]
            nodes = [(i, c) for i, c in sorted(nodes) if c >= 1]
            if len(nodes) > 1:
                self.slots = [i for k in range(max(c for _, c in nodes)) for i, c in nodes if c > k]

    def _blocks_of(self, point):
        out = {}
        for name, (top, params) in blk.point_blocks(point).items():
            key = blk.block_key(top, params, self.space.synth)
            if key not in self.block_refs:
                hit = blk.cached(self.cache_dir, key)
                if hit is not None:
                    self.block_refs[key] = hit
                    self.blocks_cached += 1
                elif self.ray is None:
                    self.block_refs[key] = _block_task(top, params, self.space.synth, str(self.cache_dir), key)
                else:
                    self.block_refs[key] = self._block.remote(top, params, self.space.synth, str(self.cache_dir), key)
                self.blocks_run += hit is None
            out[name] = self.block_refs[key]
        return out

    def submit(self, key, point):
        b = self._blocks_of(point)
        if self.ray is None:
            self.done_serial.append((key, _point_task(point, self.space_args, b["pe_array"], b["expert_cache"])))
        else:
            task = self._point
            if self.slots:
                from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
                node = self.slots[self.submitted % len(self.slots)]
                task = task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=True))
            self.submitted += 1
            ref = task.remote(point, self.space_args, b["pe_array"], b["expert_cache"])
            self.pending[ref] = key

    def busy(self):
        return len(self.pending) + len(self.done_serial)

    def next(self):
        """``(key, record)`` of the next finished point."""
        self.evaluated += 1
        if self.ray is None:
            key, out = self.done_serial.pop(0)
        else:
            ready, _ = self.ray.wait(list(self.pending), num_returns=1)
            key = self.pending.pop(ready[0])
            out = self.ray.get(ready[0])
        for fig in out.pop("_blocks").values():
            # a block synthesized on another node: keep its figures in this machine's cache too
            if "error" not in fig and blk.cached(self.cache_dir, fig["key"]) is None:
                blk.store(self.cache_dir, fig["key"], {k: v for k, v in fig.items() if k != "cached"})
        return key, {"key": key, **out}


def start_ray(address=None, num_cpus=None):
    """``ray`` connected to ``address`` (a running cluster) or to a new local instance."""
    for k, v in RAY_ENV.items():
        os.environ.setdefault(k, v)
    import logging

    import ray
    kw = dict(log_to_driver=False, logging_level=logging.ERROR, configure_logging=True)
    if address:
        try:
            ray.init(address=address, **kw)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise UserError(f"--address {address}: cannot join the Ray cluster: {str(exc).splitlines()[0]}") from None
    else:
        # "local": a new instance even where RAY_ADDRESS points elsewhere
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False, **kw)
    return ray


def explore(space, out_dir, cache_dir, *, address=None, serial=False, num_cpus=None, progress=True, stats=None):
    """Evaluate the space's points (skipping those ``points.jsonl`` in ``out_dir`` holds);
    returns the records of this space's points, in evaluation order of the search. ``stats``, a
    dict, receives ``seconds`` (wall time), ``blocks_run`` / ``blocks_cached`` (syntheses run and
    read from the cache), ``evaluated`` (points run now) and ``nodes`` (Ray nodes, 0 serial)."""
    from tqdm import tqdm
    start = time.monotonic()
    store = Store(Path(out_dir) / STORE)
    method, samples, seed = space.search["method"], space.search["samples"], space.search["seed"]
    todo = None
    if method != "optuna":
        points = list(space.grid()) if method == "grid" else space.sample(samples, seed)
        if method == "grid" and samples is not None:
            points = points[:samples]
        keys = [space.key(p) for p in points]
        todo = [(k, p) for k, p in zip(keys, points) if not store.done(k)]
        if len(todo) < len(points):
            print(f"elmoe3d explore: {len(points) - len(todo)} of {len(points)} points already done "
                  f"in {store.path}", file=sys.stderr)
    # no Ray for a sweep whose points are all done
    ray = None if serial or todo == [] else start_ray(address, num_cpus)
    runner = Runner(space, cache_dir, ray)
    try:
        if method == "optuna":
            keys = _optuna(space, store, runner, ray, samples, seed, progress, tqdm)
        else:
            bar = tqdm(total=len(todo), unit="point", desc="elmoe3d explore", file=sys.stderr,
                       disable=not progress, dynamic_ncols=True, mininterval=0.5)
            for k, p in todo:
                runner.submit(k, p)
            for _ in todo:
                key, rec = runner.next()
                store.add(rec)
                bar.update(1)
            bar.close()
        if stats is not None:
            stats["nodes"] = 0 if ray is None else len([n for n in ray.nodes() if n.get("Alive")])
    finally:
        if ray is not None:
            ray.shutdown()
    if stats is not None:
        stats.update(seconds=round(time.monotonic() - start, 1), blocks_run=runner.blocks_run,
                     blocks_cached=runner.blocks_cached, evaluated=runner.evaluated)
    return [store.records[k] for k in keys if k in store.records]


def _optuna(space, store, runner, ray, samples, seed, progress, tqdm):
    """Model-based search: Optuna's TPE sampler proposes points, Ray evaluates them, as many at
    a time as the cluster has CPUs. Points already in the store are told to the sampler first."""
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    objective = space.search["objective"]
    direction = "maximize" if OBJECTIVES[objective] == "max" else "minimize"
    study = optuna.create_study(direction=direction, sampler=optuna.samplers.TPESampler(seed=seed))
    varied = {n: v for n, v in space.params.items() if len(v) > 1}
    dists = {n: optuna.distributions.CategoricalDistribution(v) for n, v in varied.items()}
    fixed = {n: v[0] for n, v in space.params.items() if len(v) == 1}
    keys = []
    for rec in list(store.records.values()):      # resume: what is done teaches the sampler
        p = rec.get("params", {})
        if rec.get("status") == "ok" and set(p) == set(space.params) and space.key(p) == rec["key"] \
                and all(p[n] in v for n, v in space.params.items()):
            study.add_trial(optuna.trial.create_trial(params={n: p[n] for n in varied}, distributions=dists,
                                                      value=rec[objective]))
            keys.append(rec["key"])
    parallel = 1 if ray is None else max(1, int(ray.cluster_resources().get("CPU", 1)))
    left = max(0, samples - len(keys))
    bar = tqdm(total=left, unit="point", desc="elmoe3d explore (optuna)", file=sys.stderr,
               disable=not progress, dynamic_ncols=True, mininterval=0.5)
    inflight = {}                 # key -> trial under evaluation
    asked = 0
    while asked < left or inflight:
        while asked < left and len(inflight) < parallel:
            trial = study.ask(dists)
            point = {n: (trial.params[n] if n in varied else fixed[n]) for n in space.params}
            key = space.key(point)
            asked += 1
            if key in inflight or store.done(key):
                # the sampler proposed a point already evaluated (or under way): tell what is known
                rec = store.records.get(key)
                if rec is not None and rec.get("status") == "ok":
                    study.tell(trial, rec[objective])
                else:
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                bar.update(1)
                continue
            inflight[key] = trial
            runner.submit(key, point)
        if not runner.busy():
            break
        key, rec = runner.next()
        store.add(rec)
        trial = inflight.pop(key)
        if rec["status"] == "ok":
            study.tell(trial, rec[objective])
        else:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        if key not in keys:
            keys.append(key)
        bar.update(1)
    bar.close()
    return keys
