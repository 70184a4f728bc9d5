"""``elmoe3d bench-cache``: figures, outputs and refusals (golden-model part; RTL and synthesis
measurements are covered by the RTL tests and the synthesis flow's own tests)."""

import json
import subprocess
import sys

import pytest

from elmoe3d.cli import main
from elmoe3d.sim.cache.traces import save_routing, zipf_routing


def test_hit_rate_sweep_with_recorded_trace(tmp_path, capsys):
    trace = tmp_path / "routing.npz"
    save_routing(trace, zipf_routing(n_layers=2, n_experts=8, top_k=2, steps=60, alpha=1.2, seed=1, draft_k=1))
    out = tmp_path / "out"
    assert main(["bench-cache", "-o", str(out), "--no-rtl", "--no-synth", "--steps", "60", "--layers", "2",
                 "--experts", "8", "--capacities", "2,4,8", "--trace", str(trace), "--prefetch"]) == 0
    text = capsys.readouterr().out
    assert "| lru |" in text and "recorded routing.npz" in text and "of peak (model)" in text
    res = json.loads((out / "bench_cache.json").read_text())
    sweeps = list(res["hit_rate"].values())
    assert len(sweeps) == 2 and set(sweeps[0]) == {"lru", "lfu", "score"}
    for sweep in sweeps:
        for rows in sweep.values():
            rates = [r["hit_rate"] for r in rows]
            assert rates[-1] >= rates[0] and 0 <= min(rates) and max(rates) <= 1
    assert (out / "hit_rate.png").stat().st_size > 1000 and (out / "report.md").exists()
    assert res["hb_model"]["achieved_fraction_4_planes"] > 0.99


@pytest.mark.parametrize("argv, fragment", [
    (["--capacities", "1,4"], "capacities must be in [2, 4096], got '1,4'"),
    (["--policies", "lru,fifo"], "policies must be among lru, lfu, score, got 'lru,fifo'"),
    (["--top-k", "9", "--experts", "8"], "--top-k (9) must be <= --experts (8)"),
    (["--trace", "/nonexistent.npz"], "no such file: '/nonexistent.npz'"),
    (["--hb-burst", "3"], "burst must be a power of two, got 3"),
])
def test_refusals_are_one_line(tmp_path, argv, fragment):
    r = subprocess.run([sys.executable, "-m", "elmoe3d", "bench-cache", "-o", str(tmp_path / "o"), "--no-rtl",
                        "--no-synth", *argv], capture_output=True, text=True)
    assert r.returncode == 2 and fragment in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
