"""``elmoe3d explore``: the space file, the block cache, the perf adapter, the Pareto front, the
search methods, and a real two-node Ray cluster on localhost whose results equal a serial run.

Blocks are tiny (a 2x2 PE array, a 2-slot expert cache: seconds of Yosys + OpenSTA each) and
synthesized once into a cache shared by the tests of this module.
"""

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from elmoe3d.cli import main
from elmoe3d.errors import UserError
from elmoe3d.explore import blocks as blk
from elmoe3d.explore import report, space as space_mod
from elmoe3d.explore.perf_adapter import system_figures
from elmoe3d.explore.run import Store, explore

BIN = Path(sys.executable).parent
TINY = """
[search]
method = "{method}"
{search}
[synth]
clock_ns = 5.0
[params]
rows = 2
cols = 2
lanes = 1
pipeline = 0
cache_entries = 2
{params}
[[workloads]]
model = "olmoe-1b-7b"
batch = 1
[[workloads]]
model = "mixtral-8x7b"
batch = 4
acceptance = 0.8
"""


def tiny_space(tmp_path, params='arrays = [1024, 4096]\ncache_policy = "lru"', method="grid", search="",
               name="space.toml"):
    path = tmp_path / name
    path.write_text(TINY.format(method=method, search=search, params=params))
    return path


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A synthesis cache shared by this module's tests (the blocks are synthesized once)."""
    return tmp_path_factory.mktemp("explore_cache")


def figures_only(rec):
    """A record without what depends on where and when it ran."""
    return {k: v for k, v in rec.items() if k not in ("node", "seconds")}


# -- the space file ---------------------------------------------------------------------------------
def test_default_space_loads():
    space = space_mod.load()
    assert space.size == 288
    assert space.search["method"] == "grid"
    assert len({space.key(p) for p in space.grid()}) == space.size
    # two blocks per point; the grid has 8 PE arrays and 4 expert caches to synthesize
    tops = {(t, json.dumps(p, sort_keys=True)) for pt in space.grid() for t, p in blk.point_blocks(pt).values()}
    assert len(tops) == 12


def test_ranges_and_sampling(tmp_path):
    path = tiny_space(tmp_path, params='arrays = {min = 1, max = 64, scale = "pow2"}\n'
                                       'hb_capacity_gib = {min = 4, max = 16, step = 4}')
    space = space_mod.load(path)
    assert space.params["arrays"] == [1, 2, 4, 8, 16, 32, 64]
    assert space.params["hb_capacity_gib"] == [4.0, 8.0, 12.0, 16.0]
    a, b = space.sample(10, seed=3), space.sample(10, seed=3)
    assert a == b and len({space.key(p) for p in a}) == 10
    assert all(p in list(space.grid()) for p in a)
    assert len(space.sample(1000, seed=0)) == space.size


SPACE_ERRORS = [
    ("[nosuch]\n", "nosuch: unknown table"),
    ("[params]\nrows = 0\n", "params.rows: array.rows must be in [1, 256], got 0"),
    ("[params]\nrows = []\n", "params.rows: an empty list"),
    ("[params]\nrows = [8, 8]\n", "params.rows: value 8 given twice"),
    ("[params]\nrows = 'x'\n", "params.rows: expected integers"),
    ("[params]\nwidth = 3\n", "params.width: unknown key"),
    ("[params]\nlanes = {min = 4, max = 2}\n", "params.lanes: range min 4 is above max 2"),
    ("[params]\ncache_policy = ['fifo']\n", "params.cache_policy: policy must be one of"),
    ("[params]\nhb_capacity_gib = -1\n", "params.hb_capacity_gib"),
    ("[search]\nmethod = 'anneal'\n", "search.method: expected one of grid, random, optuna"),
    ("[search]\nmethod = 'random'\n", "search.samples: method random needs"),
    ("[search]\nobjective = 'speed'\n", "search.objective"),
    ("[synth]\nclock_ns = 0\n", "synth.clock_ns"),
    ("[synth]\nliberty = 'sky130hd'\n", "synth.energy_scale: needed"),
    ("[synth]\nliberty = 'nosuch.lib'\n", "synth.liberty"),
    ("[system]\nclock_mhz = 'fast'\n", "system.clock_mhz"),
    ("[[workloads]]\nbatch = 1\n", "workloads[0].model: missing"),
    ("[[workloads]]\nmodel = 'gpt-5'\nbatch = 1\n", "workloads[0]: model 'gpt-5' is not one of"),
    ("[[workloads]]\nmodel = 'mixtral-8x7b'\nbatch = 1\nscenario = 'dream'\n", "workloads[0]: unknown acceptance scenario"),
    ("[[workloads]]\nmodel = 'mixtral-8x7b'\nbatch = 17\n", "workloads[0].batch: batch must be in [1, 16]"),
    ("[[workloads]]\nmodel = 'mixtral-8x7b'\nbatch = 1\nk_d = 3\n", "workloads[0]: k_d 3 exceeds top-k"),
    ("[[workloads]]\nmodel = 'mixtral-8x7b'\nbatch = 1\nspeed = 3\n", "workloads[0].speed: unknown key"),
    ("rows = [1, 2\n", "not valid TOML"),
]


@pytest.mark.parametrize("text, cause", SPACE_ERRORS, ids=[c for _, c in SPACE_ERRORS])
def test_space_errors_name_the_key(tmp_path, text, cause):
    path = tmp_path / "bad.toml"
    workloads = "" if "[[workloads]]" in text else "\n[[workloads]]\nmodel = 'olmoe-1b-7b'\nbatch = 1\n"
    path.write_text(text + workloads)
    with pytest.raises(UserError) as exc:
        space_mod.load(path)
    assert str(exc.value).startswith(f"{path}: ")
    assert cause in str(exc.value)


def test_missing_workloads_is_refused(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[params]\nrows = 8\n")
    with pytest.raises(UserError, match="workloads: missing"):
        space_mod.load(path)


# -- the pieces ---------------------------------------------------------------------------------------
def test_block_cache(cache):
    """A block is synthesized once; the same inputs are then read back, other inputs are not."""
    synth = space_mod.load(tiny_space(Path(tempfile.mkdtemp()))).synth
    params = {"rows": 2, "cols": 2, "lanes": 1, "pipeline": 0}
    first = blk.synthesize_block("pe_array", params, synth, cache)
    again = blk.synthesize_block("pe_array", params, synth, cache)
    assert again["cached"] and {**first, "cached": True} == again
    assert first["area_um2"] > 0 and first["fmax_mhz"] > 0 and first["power_mw"] > 0
    assert first["pj_per_mac"]["full"] == pytest.approx(2 * first["pj_per_mac"]["draft"])
    key = blk.block_key("pe_array", params, synth)
    assert key != blk.block_key("pe_array", {**params, "pipeline": 1}, synth)
    assert key != blk.block_key("pe_array", params, {**synth, "clock_ns": 4.0})
    assert key != blk.block_key("pe_array", params, {**synth, "liberty": "sky130hd"})


def test_perf_adapter_is_what_perf_computes(tmp_path, capsys):
    """The figures of a point equal those `elmoe3d perf --config` prints for its system."""
    space = space_mod.load(tiny_space(tmp_path))
    point = next(space.grid())
    hw = {"pj_per_mac": {"draft": 1.0, "full": 2.0}}
    w = space.workloads[1]
    fig = system_figures(point, hw, w, space.system)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"systems": {"explore": fig["perf_system"]}}))
    out = tmp_path / "perf"
    assert main(["perf", "--config", str(config), *fig["perf_args"], "--no-sensitivity", "--no-plot",
                 "-o", str(out)]) == 0
    capsys.readouterr()
    rows = json.loads((out / "perf.json").read_text())["rows"]
    row = next(r for r in rows if r["system"] == "explore")
    assert row["tokens_per_s"] == pytest.approx(fig["tokens_per_s"], rel=1e-12)
    assert row["j_per_token"] == pytest.approx(fig["j_per_token"], rel=1e-12)
    # more arrays: not slower; more energy per MAC: not less energy per token
    more = system_figures({**point, "arrays": point["arrays"] * 4}, hw, w, space.system)
    assert more["tokens_per_s"] >= fig["tokens_per_s"]
    hot = system_figures(point, {"pj_per_mac": {"draft": 10.0, "full": 20.0}}, w, space.system)
    assert hot["j_per_token"] > fig["j_per_token"]


def test_pareto_front():
    def rec(key, t, j, a):
        return {"key": key, "status": "ok", "tokens_per_s": t, "j_per_token": j, "area_mm2": a}
    recs = [rec("a", 10, 1.0, 1.0), rec("b", 20, 1.0, 2.0), rec("c", 5, 2.0, 2.0),    # c: dominated by a
            rec("d", 20, 0.5, 2.0), rec("e", 1, 0.1, 9.0), {"key": "f", "status": "failed"}]
    assert [r["key"] for r in report.pareto(recs)] == ["d", "a", "e"]       # b: dominated by d


def test_store_skips_a_cut_line(tmp_path):
    path = tmp_path / "points.jsonl"
    path.write_text(json.dumps({"key": "k1", "status": "ok"}) + "\n" + '{"key": "k2", "sta')
    store = Store(path)
    assert store.done("k1") and not store.done("k2")


# -- sweeps -------------------------------------------------------------------------------------------
def test_serial_sweep_records_failures_and_resumes(tmp_path, cache, capsys):
    """lfu has no measured hit-rate efficiency in the system model: those points fail with the
    error recorded, the others go on; a rerun skips the done points and retries the failed."""
    path = tiny_space(tmp_path, params='arrays = [1024, 4096]\ncache_policy = ["lru", "lfu"]')
    space = space_mod.load(path)
    out = tmp_path / "out"
    out.mkdir()
    recs = explore(space, out, cache, serial=True, progress=False)
    assert len(recs) == 4
    bad = [r for r in recs if r["status"] != "ok"]
    assert [r["params"]["cache_policy"] for r in bad] == ["lfu", "lfu"]
    assert all("cache_policy 'lfu'" in r["error"] for r in bad)
    good = [r for r in recs if r["status"] == "ok"]
    assert all(r["tokens_per_s"] > 0 and r["area_mm2"] > 0 for r in good)
    assert good[1]["area_mm2"] > good[0]["area_mm2"]              # 4096 arrays against 1024
    lines = (out / "points.jsonl").read_text().splitlines()
    again = explore(space, out, cache, serial=True, progress=False)
    assert [figures_only(r) for r in again if r["status"] == "ok"] == [figures_only(r) for r in good]
    assert len((out / "points.jsonl").read_text().splitlines()) == len(lines) + 2     # the two retried
    text = report.write(out, space, again)
    assert "## Pareto front" in text and "elmoe3d perf --config" in text and (out / "front.png").stat().st_size > 0


def test_optuna_search_serial(tmp_path, cache):
    path = tiny_space(tmp_path, params='arrays = [256, 1024, 4096]\nhb_capacity_gib = [4, 8, 16]\ncache_policy = "lru"',
                      method="optuna", search="samples = 4\nseed = 1")
    space = space_mod.load(path)
    out = tmp_path / "out"
    out.mkdir()
    recs = explore(space, out, cache, serial=True, progress=False)
    assert 1 <= len(recs) <= 4 and all(r["status"] == "ok" for r in recs)
    # resumed: the done points are told to the sampler, and 4 more trials run
    space2 = space_mod.load(tiny_space(tmp_path, params='arrays = [256, 1024, 4096]\nhb_capacity_gib = [4, 8, 16]\n'
                                       'cache_policy = "lru"', method="optuna", search="samples = 8\nseed = 1"))
    recs2 = explore(space2, out, cache, serial=True, progress=False)
    assert {r["key"] for r in recs} <= {r["key"] for r in recs2}


# -- a real two-node Ray cluster on localhost ------------------------------------------------------------
def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop_groups(pgids):
    """Stop the processes ``ray start`` left in its own process groups (ours, by id): SIGTERM to
    all, then SIGKILL to what is left after a few seconds."""
    def alive(pgid):
        try:
            os.killpg(pgid, 0)
            return True
        except ProcessLookupError:
            return False
    for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
        for pgid in pgids:
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                pass
        end = time.monotonic() + wait
        while time.monotonic() < end and any(alive(g) for g in pgids):
            time.sleep(0.1)
        if not any(alive(g) for g in pgids):
            return


WAIT_FOR_NODES = """
import time, ray
ray.init(address="127.0.0.1:%d", log_to_driver=False)
end = time.monotonic() + 60
while time.monotonic() < end:
    alive = [n for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU")]
    if len(alive) == 2:
        break
    time.sleep(0.2)
print(len(alive))
"""


@pytest.fixture
def ray_cluster():
    """A Ray head and a second Ray node on 127.0.0.1, one CPU each, token-authenticated, in a
    temp folder of their own; torn down (their process groups) at the end."""
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")       # short: Ray's socket paths live under it
    env = {**os.environ, "RAY_DISABLE_USAGE_STATS": "1", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    port = _free_port()
    groups = []

    def start(*args):
        argv = [str(BIN / "ray"), "start", *args, "--node-ip-address", "127.0.0.1", "--num-cpus", "1",
                "--dashboard-agent-listen-port", str(_free_port()), "--disable-usage-stats"]
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        groups.append(proc.pid)
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out[-2000:]

    try:
        # every port of our own: another Ray on this machine (a local explore run) keeps its own
        start("--head", "--port", str(port), "--temp-dir", temp, "--include-dashboard=false",
              "--dashboard-port", str(_free_port()))
        start("--address", f"127.0.0.1:{port}")
        # both nodes registered with their CPU before the sweep reads the cluster's nodes
        out = subprocess.run([sys.executable, "-c", WAIT_FOR_NODES % port], env=env, capture_output=True,
                             text=True, timeout=120)
        assert out.stdout.strip().endswith("2"), out.stdout[-500:] + out.stderr[-2000:]
        yield f"127.0.0.1:{port}", env
    finally:
        _stop_groups(groups)
        shutil.rmtree(temp, ignore_errors=True)


def test_two_node_cluster_equals_serial(tmp_path, cache, ray_cluster, capsys):
    address, env = ray_cluster
    path = tiny_space(tmp_path, params="arrays = [128, 256, 512, 1024, 2048, 4096]\n"
                                       "hb_capacity_gib = [4, 8, 16, 32]\ncache_policy = \"lru\"")
    serial_out = tmp_path / "serial"
    assert main(["explore", str(path), "--serial", "-o", str(serial_out), "--cache", str(cache), "--no-progress"]) == 0
    capsys.readouterr()
    ray_out = tmp_path / "ray"
    run = subprocess.run([str(BIN / "elmoe3d"), "explore", str(path), "--address", address, "-o", str(ray_out),
                          "--cache", str(cache), "--no-progress", "--json", str(tmp_path / "all.json")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    serial = {r["key"]: r for r in map(json.loads, (serial_out / "points.jsonl").read_text().splitlines())}
    ray = {r["key"]: r for r in map(json.loads, (ray_out / "points.jsonl").read_text().splitlines())}
    assert len(ray) == len(serial) == 24
    assert all(r["status"] == "ok" for r in ray.values())
    assert {k: figures_only(r) for k, r in ray.items()} == {k: figures_only(r) for k, r in serial.items()}
    nodes = {r["node"] for r in ray.values()}
    assert len(nodes) == 2, f"points ran on {len(nodes)} node(s)"
    assert json.loads((tmp_path / "all.json").read_text())["front"]
