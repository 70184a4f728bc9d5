"""The RTL core (``hw/core.py``): whole MoE layer passes from compiler streams, bit-exact with the ISS
and the integer golden layer, cache decisions, cycle counts within 10 % of the ISS's estimate,
error stops; plus its buffer block alone, its configuration refusals and ``generate --top core``.

The cocotb bench (``sim/benches/tb_core.py``) runs each case twice on one Verilator build: once
without stalls (cycles checked against ``elmoe3d/spec/timing.py`` through the ISS) and once with
random stalls on every memory interface and out-of-order HB bursts (results and cache decisions
checked). These runs, with Python memory models at about 2 000 cycles/s, are all ``slow`` now:
the default run checks the same passes on the native-speed bench (``tests/test_sim_native.py``,
HDL memory models around the same core).
"""

import json
import subprocess
import sys

import numpy as np
import pytest
from amaranth.hdl import signed
from amaranth.sim import Simulator

from elmoe3d.config import PRESETS, AccelConfig, ArrayConfig, OffchipConfig, VectorConfig
from elmoe3d.errors import UserError
from elmoe3d.hw.executor import check_core_config
from elmoe3d.hw.token_buffer import TokenBuffer
from elmoe3d.sim.benches.launch import BENCHES, REGRESSION, run_top_bench

TINY = dict(preset="tiny", max_k=4)


def test_core_is_in_the_bench_registry():
    assert BENCHES["core"] == "elmoe3d.sim.benches.tb_core"
    assert any(e.top == "core" for e in REGRESSION)


@pytest.mark.parametrize("seed", [1, 2])
def test_token_buffer_matches_a_model(seed):
    """Every bank reads the common address a cycle later (holding while ``ren`` is low) and
    writes its own address; checked against a numpy model over random traffic."""
    T, depth, W = 3, 5, 2
    dut = TokenBuffer(tokens=T, depth=depth, width=W, elem=signed(6))
    rng = np.random.default_rng(seed)
    model = np.zeros((T, depth, W), dtype=np.int64)

    async def bench(ctx):
        held = None
        for cycle in range(300):
            ren = int(rng.integers(2))
            raddr = int(rng.integers(depth))
            ctx.set(dut.ren, ren)
            ctx.set(dut.raddr, raddr)
            writes = []
            for t in range(T):
                we = int(rng.integers(2))
                wa = int(rng.integers(depth))
                wd = rng.integers(-32, 32, W)
                ctx.set(dut.we[t], we)
                ctx.set(dut.waddr[t], wa)
                ctx.set(dut.wdata[t], [int(v) for v in wd])
                if we:
                    writes.append((t, wa, wd))
            want = model[:, raddr].copy() if ren else held
            await ctx.tick()
            for t, wa, wd in writes:
                model[t, wa] = wd
            if want is not None:
                got = np.array([[ctx.get(dut.rdata[t][i]) for i in range(W)] for t in range(T)])
                assert np.array_equal(got, want), f"seed {seed} cycle {cycle}: {got} != {want}"
            held = want

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("edit, message", [
    (dict(array=ArrayConfig(rows=8, cols=4, lanes=4)), "array.rows = array.cols = vector.width"),
    (dict(vector=VectorConfig(width=8)), "array.rows = array.cols = vector.width"),
    (dict(offchip=OffchipConfig(width=64, latency=20, lines=1 << 20, len_bits=16)), "offchip.width = 8 * vector.width"),
])
def test_core_refuses_configurations_it_cannot_build(edit, message):
    cfg = PRESETS["tiny"].to_dict()
    base = AccelConfig.from_dict(cfg)
    from dataclasses import replace
    with pytest.raises(UserError, match=message.replace("*", r"\*").replace("+", r"\+")):
        check_core_config(replace(base, **edit))


def test_generate_core_writes_verilog_json_and_the_command_header(tmp_path):
    out = tmp_path / "core"
    r = subprocess.run([sys.executable, "-m", "elmoe3d", "generate", "--top", "core", "--preset", "tiny",
                        "--max-k", "4", "-o", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (out / "core.v").read_text().count("module core(") == 1
    meta = json.loads((out / "core.json").read_text())
    assert meta["accelerator_config"]["name"] == "tiny" and meta["params"]["max_k"] == 4
    header = (out / "core_commands.h").read_text()
    assert "#define ELMOE3D_OP_ROUTE 4u" in header and "#define ELMOE3D_REG_HB_BASE 12u" in header
    assert "#define ELMOE3D_STATUS_ADDRESS 7u" in header and "#define ELMOE3D_STATUS_ORDER 9u" in header


# tiny: W = 4, one multiplier entry and one token scale per off-chip line, 4 lanes; small with
# 2 lanes: W = 8 (several entries per line, an off-chip line a quarter of an image line, HB line =
# PE beat) and 8 lane groups at batch 16, on a PE array as cheap to simulate as tiny's.
# The default run keeps the wider one (the test budget); -m slow runs tiny too.
FAST = [pytest.param(dict(preset="small", lanes=2), id="small-lanes2")]


# slow since the native bench (tests/test_sim_native.py) covers the same passes at native speed,
# and compares these Python memory models with the HDL ones on one build
@pytest.mark.slow
@pytest.mark.parametrize("params", FAST)
def test_core_runs_layer_passes_bit_exact(params, tmp_path):
    run_top_bench("core", params, tmp_path, seeds=(1,), quick=True, quick_build=True)
    records = json.loads((tmp_path / "cycles.json").read_text())
    assert {r["T"] for r in records if r["stall"]} == {1, 4, 16} and {r["stall"] for r in records} == {0.0, 0.3}
    ratios = [r["core"] / r["iss"] for r in records if r["stall"] == 0.0]
    assert len(ratios) == 6 and all(0.9 <= q <= 1.1 for q in ratios), ratios


@pytest.mark.slow
@pytest.mark.parametrize("params", [TINY, dict(preset="small")], ids=["tiny", "small"])
def test_core_more_shapes_and_seeds(params, tmp_path):
    run_top_bench("core", params, tmp_path, seeds=(1,), quick=True)
    run_top_bench("core", params, tmp_path, seeds=(2, 3), quick=False)


@pytest.mark.slow
def test_elastic_sd_steps_with_every_moe_layer_on_the_rtl_core(tmp_path):
    """Greedy Elastic-SD of the shipped model with every MoE layer on the ISS emits the golden
    integer model's bytes; every one of those layer passes, replayed in order on the RTL core
    (``small`` preset), gives the ISS's output and cache decisions, so the RTL core emits the same
    bytes."""
    import pickle
    from pathlib import Path

    from elmoe3d.config import preset
    from elmoe3d.firmware.engine import IssEngine
    from elmoe3d.sim.sd.elastic_sd import SDSettings, generate
    from elmoe3d.sim.lm.model import MoELM
    shipped = Path(__file__).resolve().parent.parent / "sim" / "data" / "moe_lm.npz"
    prompts = [list(b"def main(argv):\n    "), list(b"import os\nimport sys\n")]
    model = MoELM.load(shipped)
    record = []
    model.moe_engine = IssEngine(model, preset("small"), record=record)
    try:
        got = generate(model, prompts, 4, SDSettings(method="elastic", k_d=1, integer=True, gamma=2))
    finally:
        model.moe_engine = model.golden_engine
    ref = generate(model, prompts, 4, SDSettings(method="plain", integer=True))
    assert all(np.array_equal(x, y) for x, y in zip(got.tokens, ref.tokens))
    assert len(record) > 8 and {r["layer"] for r in record} == set(range(model.cfg.n_layers))
    path = tmp_path / "recording.pkl"
    path.write_bytes(pickle.dumps(record))
    run_top_bench("core", dict(preset="small"), tmp_path / "rtl", seeds=(1,),
                  testcase="core_replays_recorded_passes", replay=str(path), model=str(shipped))
    rows = json.loads((tmp_path / "rtl" / "cycles.json").read_text())
    assert len(rows) == len(record)


def test_bench_core_refuses_bad_input_in_one_line(tmp_path):
    for argv, cause in ((["--layer", "9"], "--layer must be below 4"),
                        (["--preset", "tiny"], "invalid choice: 'tiny'"),    # not offered: it cannot hold the model
                        (["--layer", "-1"], "expected an integer >= 0, got '-1'")):
        r = subprocess.run([sys.executable, "-m", "elmoe3d", "bench-core", *argv, "--no-synth", "-o",
                            str(tmp_path / "out")], capture_output=True, text=True)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and cause in r.stderr, r.stderr


def test_bench_core_results_page(tmp_path, monkeypatch, capsys):
    """--results-page writes the report to docs/results/bench-core.md (here a temporary folder)
    with the command, commit and date stamp; the RTL replay is stood in for (its rows as
    replay_on_rtl returns them), so this checks the page, not the core."""
    from elmoe3d import results_page
    from elmoe3d.cli import main
    from elmoe3d.commands import bench_core
    rows = [dict(name="verify, cold cache", tokens=16, core=1100, iss=1000, floor=1000, pe_beats=550, golden=True)]
    monkeypatch.setattr(bench_core, "replay_on_rtl", lambda *a, **k: rows)
    monkeypatch.setattr(results_page, "RESULTS_DIR", tmp_path / "results")
    assert main(["bench-core", "--no-synth", "--results-page", "-o", str(tmp_path / "out")]) == 0
    page = (tmp_path / "results" / "bench-core.md").read_text()
    assert "Measured by `elmoe3d bench-core" in page and "at commit `" in page
    assert "| verify, cold cache | 16 | 1,100 | 1,000 | 1,000 | 1.10x | 50.0 % | bit-exact |" in page
    assert "wrote" in capsys.readouterr().err
