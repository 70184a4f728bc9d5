"""``elmoe3d bench-pe``: the figures it derives from synthesis reports, and its errors."""

import json
import subprocess
import sys

import pytest

from elmoe3d.cli import main
from elmoe3d.commands.bench_pe import augmentation_share, design_rows, format_tables


def _report(area, fmax, power, macs, groups=()):
    per_cycle = power * 10.0          # mW x 10 ns = pJ per cycle
    return {"area": {"total": {"area": area, "sequential_share": 0.2}, "groups": list(groups)},
            "timing": {"fmax_mhz": fmax, "clock_ns": 10.0, "worst_slack_ns": 1.0},
            "power_mw": {"total": power},
            "energy": {"macs_per_cycle": macs, "per_mac_pj": {m: per_cycle / n for m, n in macs.items()}}}


def test_design_rows_relative_throughput_per_area():
    sliced = _report(800.0, 200.0, 2.0, {"draft": 16, "full": 8},
                     groups=[{"module": "pe_array.aug_*", "area": 20.0, "share_of_design": 0.025, "instances": 4}])
    base = _report(1000.0, 100.0, 3.0, {"int8": 16})
    rows = {(r["design"], r["mode"]): r for r in design_rows("lib", sliced, base)}
    assert rows[("mac_array_baseline", "int8")]["tp_per_area_rel"] == pytest.approx(1.0)
    assert rows[("pe_array", "draft")]["tp_per_area_rel"] == pytest.approx((16 * 200 / 800) / (16 * 100 / 1000))
    assert rows[("pe_array", "full")]["tp_per_area_rel"] == pytest.approx((8 * 200 / 800) / (16 * 100 / 1000))
    assert rows[("pe_array", "full")]["pj_per_mac"] == pytest.approx(20.0 / 8)
    assert augmentation_share(sliced) == {"area_um2": 20.0, "share": 0.025, "instances": 4}
    text = format_tables({"designs": list(rows.values()), "augmentation": {"lib": augmentation_share(sliced)},
                          "bit_fusion": {}, "cycles": [{"design": "pe_array", "mode": "full", "k": 32,
                                                         "measured": 7, "model": 7}]})
    assert "TP/area vs INT8" in text and "2.50x" in text and "LSB augmentation (4 x aug_*)" in text


@pytest.mark.parametrize("argv, fragment", [
    (["--liberty", "/nonexistent.lib", "--no-sim"], "Liberty file not found: /nonexistent.lib"),
    (["--rows", "0"], "expected a positive integer, got '0'"),
    (["--k", "200000", "--no-sim"], "can overflow"),
    (["--activity", "2"], "expected a number in [0, 1], got '2'"),
])
def test_bench_pe_errors_one_line(argv, fragment, tmp_path):
    result = subprocess.run([sys.executable, "-m", "elmoe3d", "bench-pe", *argv, "-o", str(tmp_path / "b")],
                            capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], result.stderr


@pytest.mark.slow
@pytest.mark.synth
def test_bench_pe_small_end_to_end(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench-pe", "--rows", "2", "--cols", "2", "--liberty", "sky130hd", "--k", "8",
                 "-o", str(tmp_path / "b"), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert {r["mode"] for r in result["designs"]} == {"draft", "full", "int8"}
    assert all(r["measured"] == r["model"] for r in result["cycles"])
