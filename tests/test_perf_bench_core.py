"""elmoe3d perf with a bench-core result: the accelerator's Fmax and energies from the RTL's synthesis,
the layer-pass validation against the RTL core's own cycles (skipped without one), --rtl-overhead."""

import json
import math
from dataclasses import replace

import pytest

from elmoe3d.cli import main
from elmoe3d.errors import UserError
from elmoe3d.perf import bench_core, validate
from elmoe3d.perf.decode import Settings, run_round
from elmoe3d.perf.models import builtin_models
from elmoe3d.perf.systems import _constants, builtin_systems

S = builtin_systems()
M = builtin_models()
SCALE = _constants()["node_energy_scale"]["value"]


def _result(**over):
    """A small bench-core result in the schema bench-core writes (figures made up for the test)."""
    data = {"commit": "abc1234", "preset": "small", "layer": 0,
            "passes": [{"name": "verify, cold cache", "tokens": 16, "core": 120000, "iss": 118000, "floor": 100000,
                        "pe_beats": 9000, "golden": True},
                       {"name": "draft k_d=1 MSB+aug", "tokens": 16, "core": 24000, "iss": 23000, "floor": 10752,
                        "pe_beats": 8000, "golden": True, "offchip_bytes": 8000, "hb_bytes": 344064}],
            "synthesis": {"nangate45": {"clock_ns": 2.5, "area_um2": 1.0e6, "fmax_mhz": 400.0,
                                        "power": {"pj_per_mac": {"draft": 2.0, "full": 4.0}, "pj_per_byte_onchip": 3.0}},
                          "sky130hd": {"clock_ns": 10.0, "fmax_mhz": 90.0}}}
    data.update(over)
    return data


def _write(tmp_path, data, name="bench_core.json"):
    f = tmp_path / name
    f.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return f


def _tile(n, k, rows, cols, phases, pipeline):
    """One GEMV: the single cycle rule of elmoe3d/spec/timing.py (which the RTL benches hold the PE
    array to); what this file checks by hand is the composition of a layer pass from it."""
    from elmoe3d.spec.timing import gemv_cycles
    return gemv_cycles(k=k, cols=cols, mode="full" if phases == 2 else "draft", pipeline=pipeline, n=n, rows=rows)


def test_layer_pass_estimate_against_hand_arithmetic():
    cfg = validate._core_config("small")
    m = M["shipped"]                          # d 128, F 256, 8 experts, top-2
    route = Settings().routing()
    a = cfg.array
    # a verify pass of 16 tokens: router over both planes, then each unique expert's FULL GEMVs
    u = route.unique(8, 2, 16, 1)
    router = _tile(8, 128, a.rows, a.cols, 2, a.pipeline)
    one = 2 * _tile(256, 128, a.rows, a.cols, 2, a.pipeline) + _tile(128, 256, a.rows, a.cols, 2, a.pipeline)
    est, compute, got_u = validate.layer_pass_estimate(cfg, m, 16, False, None, route, memory_cycles=1)
    assert got_u == pytest.approx(u) and compute == pytest.approx(router + u * one) and est == compute
    # memory-bound when the memory term is larger; a DRAFT pass runs one phase per beat
    assert validate.layer_pass_estimate(cfg, m, 16, False, None, route, 10 ** 7)[0] == 10 ** 7
    u1 = route.unique(8, 1, 1, 1)
    one_d = 2 * _tile(256, 128, a.rows, a.cols, 1, a.pipeline) + _tile(128, 256, a.rows, a.cols, 1, a.pipeline)
    assert validate.layer_pass_estimate(cfg, m, 1, True, 1, route, 1)[1] == pytest.approx(router + u1 * one_d)


def test_core_checks_use_the_rtl_passes_and_skip_without_them():
    skipped = validate.core_checks(None)
    assert len(skipped) == 1 and skipped[0]["skipped"] and "SKIPPED" in skipped[0]["what"]
    assert validate.core_checks(_result(preset="nonesuch"))[0]["skipped"]
    rows = validate.core_checks(_result())
    assert [r["kind"] for r in rows] == ["target", "draft"]
    assert rows[0]["measured"] == 120000 and rows[0]["memory_cycles"] == 100000          # the file's floor
    assert rows[1]["memory_cycles"] == max(math.ceil(8000 / 8), math.ceil(344064 / 32))   # bytes per tier / line
    for r in rows:
        assert r["error"] == pytest.approx(r["model"] / r["measured"] - 1)
    # lanes from the preset name bench-core writes (small-lanes2)
    assert validate._core_config("small-lanes2").array.lanes == 2


def test_rtl_overhead_needs_both_pass_kinds_and_slows_the_accelerator():
    over = validate.core_overheads(_result())
    rows = validate.core_checks(_result())
    assert over["target"] == pytest.approx(120000 / rows[0]["model"])
    assert over["draft"] == pytest.approx(24000 / rows[1]["model"])
    with pytest.raises(UserError, match="--rtl-overhead needs the RTL core's verify and draft passes"):
        validate.core_overheads(None)
    m, st = M["mixtral-8x7b"], Settings()
    slow = replace(S["elmoe3d"], pass_overhead=over)
    assert run_round(slow, m, st, 4)["tokens_per_s"] < run_round(S["elmoe3d"], m, st, 4)["tokens_per_s"]


def test_synthesis_figures_replace_the_constants():
    data = _result()
    out = bench_core.apply(dict(S), data, SCALE)
    el, hb, xpu = out["elmoe3d"], out["hb3d"], out["xpu"]
    assert el.array.clock_mhz == hb.array.clock_mhz == 400.0                     # Nangate 45 Fmax, not sky130's
    assert el.pj_per_mac == {"draft": pytest.approx(2.0 * SCALE), "full": pytest.approx(4.0 * SCALE)}
    assert hb.pj_per_mac == S["hb3d"].pj_per_mac                                  # no INT8 array in the core
    # the core's pJ/MAC holds its on-chip buffers: their pJ/B is not added again
    assert el.onchip_pj_per_byte == 0.0 and xpu == S["xpu"]
    text = bench_core.describe("x.json", data)
    assert "400 MHz" in text and "sky130hd rows not used" in text and "INT8 array pJ/MAC from bench-pe" in text
    assert "not added again" in text
    # a file with only the on-chip figure: the arrays keep bench-pe's array-only pJ/MAC, plus pJ/B per byte
    only = _result()
    del only["synthesis"]["nangate45"]["power"]["pj_per_mac"]
    el2 = bench_core.apply(dict(S), only, SCALE)["elmoe3d"]
    assert el2.pj_per_mac == S["elmoe3d"].pj_per_mac and el2.onchip_pj_per_byte == pytest.approx(3.0 * SCALE)
    r = run_round(el2, M["mixtral-8x7b"], Settings(), 4)
    per_tok = sum(r["bytes_per_token"].values()) * el2.onchip_pj_per_byte * 1e-12
    assert r["energy_per_token"]["onchip"] == pytest.approx(per_tok)
    # one mode measured: that mode from the file, the other from bench-pe
    half = _result()
    half["synthesis"]["nangate45"]["power"]["pj_per_mac"] = {"draft": 2.0}
    el3 = bench_core.apply(dict(S), half, SCALE)["elmoe3d"]
    assert el3.pj_per_mac["draft"] == pytest.approx(2.0 * SCALE) and el3.pj_per_mac["full"] == S["elmoe3d"].pj_per_mac["full"]
    # a file without synthesis keeps the constants and says so
    bare = _result()
    del bare["synthesis"]
    assert bench_core.apply(dict(S), bare, SCALE)["elmoe3d"] == S["elmoe3d"]
    assert "clock 1000 MHz (assumption" in bench_core.describe("x.json", bare)
    assert "no bench-core result" in bench_core.describe(None, None)


@pytest.mark.parametrize("data, msg", [
    ("[1, 2]", "expected a JSON object"),
    ("{not json", "not JSON"),
    ({"commit": "x"}, "neither 'passes' nor 'synthesis'"),
    ({"preset": "small", "passes": [{"name": "v", "tokens": 0, "core": 5, "floor": 3}]}, "passes[0] tokens must be a positive"),
    ({"preset": "small", "passes": [{"name": "v", "tokens": 1, "core": 5}]}, "neither floor nor bytes per tier"),
    ({"passes": [{"name": "v", "tokens": 1, "core": 5, "floor": 3}]}, "need the 'preset'"),
    ({"synthesis": {"nangate45": {"fmax_mhz": -1}}}, "fmax_mhz must be a positive number"),
    ({"synthesis": {"nangate45": {"power": {"pj_per_mac": {"draft": -1}}}}}, "pj_per_mac must map draft and/or full to positive"),
])
def test_malformed_results_are_refused_in_one_line(tmp_path, data, msg):
    f = _write(tmp_path, data)
    with pytest.raises(UserError) as e:
        bench_core.load(f)
    assert msg in str(e.value) and "\n" not in str(e.value)


def test_cli_reads_a_bench_core_folder_and_says_what_it_used(capsys, tmp_path):
    _write(tmp_path, _result())
    code = main(["perf", "--bench-core", str(tmp_path), "--rtl-overhead", "--models", "mixtral-8x7b", "--batch", "1", "4",
                 "--no-plot", "--no-sensitivity", "-o", str(tmp_path / "o"), "--json", str(tmp_path / "p.json")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "Accelerator inputs from bench-core" in out and "400 MHz" in out and "RTL core (small), verify" in out
    data = json.loads((tmp_path / "p.json").read_text())
    assert data["rtl_inputs"]["fmax_mhz"] == 400.0 and data["systems"]["elmoe3d"]["array"]["clock_mhz"] == 400.0
    assert data["systems"]["elmoe3d"]["pass_overhead"]["draft"] > 1.0
    code = main(["perf", "--rtl-overhead", "--models", "shipped", "--batch", "1", "--no-plot",
                 "--no-sensitivity", "-o", str(tmp_path / "o2")])
    out, err = capsys.readouterr()
    assert code == 2 and "--rtl-overhead needs" in err and err.count("\n") == 1
