"""The core at native simulator speed (``sim/benches/native.py``, ``tb_core_native.py``) and
Elastic-SD live on it (``sim/benches/rtl_engine.py``, ``elmoe3d sd --engine rtl``).

One Verilator build per core configuration, shared by every test (``native.build`` keeps it
under the cache folder, named by the hash of the Verilog and the options). The default run uses
the ``small`` preset with 2 lanes (W = 8: several entries per off-chip line, 8 lane groups at
batch 16) and ``tiny`` (W = 4, its own line layout), both built without C++ optimization (the
build dominates a short run); ``-m slow`` runs the 16-lane ``small`` core, more seeds, a longer
decode on the ``sd --quick`` prompts and a ``default``-preset layer pass.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from elmoe3d.sim.benches.native import hex_lines, run_native

SMALL2 = dict(preset="small", lanes=2)
TINY = dict(preset="tiny", max_k=4)
SHIPPED = Path(__file__).resolve().parent.parent / "sim" / "data" / "moe_lm.npz"


def test_hex_lines_hold_one_little_endian_line_each():
    assert hex_lines(np.arange(10, dtype=np.uint8), 4).split() == ["03020100", "07060504", "00000908"]


def _kinds(records):
    return {(r["draft"], r["choice"], r["k"]) for r in records}


@pytest.mark.parametrize("params, seeds, shapes", [
    (SMALL2, (1, 2), 2),
    pytest.param(TINY, (1, 2, 3), 1, marks=pytest.mark.slow),     # a second build: -m slow
], ids=["small-lanes2", "tiny"])
def test_native_core_matches_the_iss_on_every_pass_kind(params, seeds, shapes, tmp_path):
    """Seeds x layer shapes (small: two, one of them with a shared expert) x every pass kind (verify, draft MSB +
    augmentation, draft full bits, cached choice, k = 1) at batch 1, 4 and 16, without and
    with random stalls and out-of-order HB bursts: outputs and cache decisions equal the ISS's
    (checked in the bench), stall-free cycles within 10 % of its estimate."""
    run_native(params, tmp_path, "native_matches_iss", seeds=seeds, quick=shapes == 1, build_quick=True)
    records = json.loads((tmp_path / "cycles.json").read_text())
    assert {r["T"] for r in records} == {1, 4, 16} and {r["stall"] for r in records} == {0.0, 0.3}
    assert {(False, "topk", None), (True, "topk", 1), (False, "topk", 2), (True, "cached", 1)} <= _kinds(records)
    assert len({r["shape"] for r in records}) == shapes and any("n_shared=1" in r["shape"] for r in records)
    ratios = [r["core"] / r["iss"] for r in records if r["stall"] == 0.0]
    assert ratios and all(0.9 <= q <= 1.1 for q in ratios), ratios


@pytest.mark.slow     # the Python models run at ~2 000 cycles/s; one minute of the default budget
def test_native_and_python_memory_models_give_the_same_cycles(tmp_path):
    """Batch 1, 4 and 16 through tb_core.py's Python models and through the HDL models on one
    build: equal results (each checked against the ISS) and cycles within 1 %."""
    run_native(SMALL2, tmp_path, "native_equals_python_models", compare_passes=3, build_quick=True)
    rows = json.loads((tmp_path / "cycles.json").read_text())
    assert [r["T"] for r in rows] == [1, 4, 16]
    assert all(abs(r["native"] - r["python"]) <= 0.01 * r["python"] + 8 for r in rows), rows


def test_native_core_stops_on_errors(tmp_path):
    """OPCODE, ADDRESS and ORDER stop the core at the offending command, without a hang."""
    run_native(SMALL2, tmp_path, "native_reports_errors", build_quick=True)


def _live(tmp_path, params, prompts, n_new, settings, build_quick=False):
    from elmoe3d.sim.benches.rtl_engine import run_sd_on_rtl
    from elmoe3d.sim.sd.elastic_sd import SDSettings, generate
    from elmoe3d.sim.lm.model import MoELM
    model = MoELM.load(SHIPPED)
    jobs, summary = run_sd_on_rtl(SHIPPED, params, [(len(prompts), s) for s in settings], prompts, n_new,
                                  tmp_path / "rtl", quiet=True, build_quick=build_quick)
    plain = generate(model, prompts, n_new, SDSettings(method="plain", integer=True))
    for s, job in zip(settings, jobs):
        # the same setting on the integer golden layer (sampling: the same random numbers)
        gold = generate(model, prompts, n_new, s) if s.sampling else plain
        assert job["tokens"] == [t.tolist() for t in gold.tokens], (job["settings"], job["tokens"])
    return jobs, summary


def test_live_elastic_sd_on_the_rtl_core_emits_the_golden_bytes(tmp_path):
    """Greedy Elastic-SD of the shipped model (two 3-byte prompts, 2 new bytes), every MoE layer
    pass on one running core: the bytes equal the golden integer model's, every pass's cycles
    within 10 % of the cycle model."""
    from elmoe3d.sim.sd.elastic_sd import SDSettings
    prompts = [list(b"def"), list(b"imp")]
    jobs, summary = _live(tmp_path, SMALL2, prompts, 2, [SDSettings(k_d=1, gamma=1, integer=True)], build_quick=True)
    kinds = jobs[0]["rtl"]["kinds"]
    assert "verify" in kinds and "draft MSB+aug" in kinds, kinds
    assert summary["worst_cycle_error"] <= 0.10, summary
    assert summary["lookups"] > 0 and 0 <= summary["hit_rate"] <= 1


@pytest.mark.slow
def test_sd_command_on_the_rtl_core(tmp_path):
    """``elmoe3d sd --engine rtl`` end to end on a 2-lane small core: it checks the bytes against the
    integer golden model itself (a difference exits 2) and writes its table with the RTL's cycles."""
    r = subprocess.run([sys.executable, "-m", "elmoe3d", "sd", "--engine", "rtl", "--preset", "small", "--lanes", "2",
                        "--batch", "2", "--k-d", "1", "--bits", "draft", "--dense-bits", "full", "--choice", "topk",
                        "--gamma", "1", "--new", "2", "--prompt-len", "3", "--no-baselines", "-o", str(tmp_path / "sd")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "bytes equal the golden integer model's" in r.stdout + r.stderr
    assert "with 2 lanes" in r.stderr
    rows = json.loads((tmp_path / "sd" / "sd.json").read_text())["rows"]
    assert len(rows) == 1 and rows[0]["rtl_equals_golden"] and rows[0]["rtl_cycles"] > 0


@pytest.mark.slow
def test_live_elastic_sd_on_the_quick_prompts(tmp_path):
    """The held-out prompts of ``sd --quick`` (batch 4, 64 bytes, 16 new) on the 16-lane
    ``small`` core: greedy (top-k and cached draft experts) and speculative sampling."""
    from elmoe3d.sim.lm import corpus
    from elmoe3d.sim.sd.elastic_sd import SDSettings
    held = corpus.load_bytes(corpus.split_files(corpus.stdlib_files())[1])
    prompts = [list(p) for p in corpus.heldout_windows(held, 4, 64)]
    settings = [SDSettings(k_d=1, integer=True), SDSettings(k_d=2, expert_choice="cached", integer=True),
                SDSettings(k_d=1, integer=True, sampling=True)]
    jobs, summary = _live(tmp_path, dict(preset="small"), prompts, 16, settings)
    assert summary["worst_cycle_error"] <= 0.10, summary


@pytest.mark.slow
@pytest.mark.parametrize("params", [dict(preset="small"), TINY], ids=["small", "tiny"])
def test_native_core_more_seeds(params, tmp_path):
    run_native(params, tmp_path, "native_matches_iss", seeds=(4, 5, 6), quick=False)


@pytest.mark.slow
def test_default_preset_layer_passes(tmp_path):
    run_native(dict(preset="default"), tmp_path, "native_speed", passes=4)
    assert json.loads((tmp_path / "cycles.json").read_text())["passes"] == 4


@pytest.mark.parametrize("argv, cause", [
    (["bench-sim", "--presets", "mixtral"], "--presets mixtral"),
    (["sd", "--engine", "rtl", "--preset", "tiny", "--no-baselines"], "hb.len_bits"),
])
def test_refusals_in_one_line(argv, cause, tmp_path):
    r = subprocess.run([sys.executable, "-m", "elmoe3d", *argv, "-o", str(tmp_path / "out")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and cause in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()
