"""elmoe3d perf: model shapes, routing calibration, decode model limits, validation, CLI refusals."""

import json
import math
import time
from dataclasses import replace

import pytest

from elmoe3d.cli import main
from elmoe3d.errors import UserError
from elmoe3d.perf import routing as rt
from elmoe3d.perf.decode import Settings, placement, run_round, sweep, tokens_per_verify
from elmoe3d.perf.models import builtin_models
from elmoe3d.perf.systems import Tier, builtin_systems
from elmoe3d.perf.validate import GPU_TOLERANCE, RTL_TOLERANCE, gpu_cases, rtl_checks

S = builtin_systems()
M = builtin_models()


# -- models -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [n for n in M if n != "shipped"])
def test_parameter_counts_match_model_cards(name):
    m = M[name]
    assert m.total_params / 1e9 == pytest.approx(m.published_total_b, rel=0.03)
    assert m.active_params / 1e9 == pytest.approx(m.published_active_b, rel=0.05)


def test_shipped_model_matches_its_weights():
    m = M["shipped"]
    assert m.total_params == 3_477_504          # README: 3.48 M parameters
    assert (m.n_layers, m.n_experts, m.top_k, m.d_expert) == (4, 8, 2, 256)
    assert 0 < m.draft_fraction < 1


# -- routing ------------------------------------------------------------------------------------------
def test_inclusion_probabilities_sum_to_top_k_and_cap_at_one():
    for E, k, s in ((8, 2, 0.0), (8, 2, 2.0), (128, 8, 1.5), (4, 3, 3.0)):
        q = rt.inclusion_probs(E, k, s)
        assert q.sum() == pytest.approx(k)
        assert q.max() <= 1.0 + 1e-12
        assert all(q[i] >= q[i + 1] - 1e-12 for i in range(E - 1))


def test_uniform_routing_unique_experts_closed_form():
    q = rt.inclusion_probs(8, 2, 0.0)
    for n in (1, 2, 4, 16):
        assert rt.unique_experts(q, n) == pytest.approx(8 * (1 - 0.75 ** n))


def test_calibration_reproduces_measured_unique_experts():
    r = rt.calibrate()
    assert 0.0 <= r.skew <= 2.0 and 0.0 <= r.rho <= 1.0
    for batch, measured, model in r.fit["skew_rows"]:      # plain decoding, batch 1-16
        assert model == pytest.approx(measured, rel=0.02), batch
    for batch, measured, model in r.fit["rho_rows"]:       # verification passes of gamma + 1 positions
        assert model == pytest.approx(measured, rel=0.12), batch
    # the score policy kept about 0.38-0.44 of the planes a pass needed at half capacity
    assert r.eta["score"] > r.eta["lru"]


def test_hit_rate_limits():
    r = rt.calibrate()
    assert r.hit(64, 8, 4, 5, 1.0) == 1.0
    assert r.hit(64, 8, 4, 5, 0.0) == 0.0
    lo, hi = r.hit(64, 8, 4, 5, 0.25), r.hit(64, 8, 4, 5, 0.75)
    assert 0 < lo < hi < 1


# -- decode model -------------------------------------------------------------------------------------
def test_tokens_per_verify_limits():
    assert tokens_per_verify(0.0, 4) == 1.0
    assert tokens_per_verify(1.0, 4) == 5.0
    assert tokens_per_verify(0.5, 1) == pytest.approx(1.5)


def test_energy_and_time_add_up():
    r = run_round(S["elmoe3d"], M["mixtral-8x7b"], Settings(), 4)
    assert r["j_per_token"] == pytest.approx(sum(r["energy_per_token"].values()))
    assert 1 / r["tokens_per_s"] == pytest.approx(max(r["busy_per_token"].values()), rel=0.5)
    assert set(r["busy_per_token"]) == {"offchip", "hb", "compute"}


def test_plain_xpu_batch1_is_weight_streaming():
    """Batch 1 on the xPU: active INT8 weights + KV over the achieved bandwidth, nothing else."""
    m, x = M["mixtral-8x7b"], S["xpu"]
    st = Settings(context=1)
    r = run_round(x, m, st, 1)
    emb = m.vocab * m.d_model
    nbytes = (m.active_params - emb) + m.kv_bytes_per_token()
    assert 1 / r["tokens_per_s"] == pytest.approx(nbytes / x.offchip.bytes_per_s, rel=1e-3)


def test_infinite_bandwidth_is_compute_bound():
    fast = Tier(gbps=1e12, efficiency=1.0, pj_per_bit=3.9, capacity_gib=80)
    x = replace(S["xpu"], offchip=fast)
    m = M["mixtral-8x7b"]
    r = run_round(x, m, Settings(), 16)
    assert r["bound"] == "compute"
    assert r["tokens_per_s"] == pytest.approx(x.macs_per_s / r["macs_per_token"], rel=1e-3)
    acc = replace(S["elmoe3d"], offchip=fast, hb=replace(S["elmoe3d"].hb, gbps=1e12))
    assert run_round(acc, m, Settings(), 16)["bound"] == "compute"


def test_zero_acceptance_makes_speculation_a_loss():
    st = Settings(acceptance=0.0)
    for m in ("mixtral-8x7b", "qwen3-30b-a3b"):
        for b in (1, 16):
            plain = run_round(S["xpu"], M[m], st, b)["tokens_per_s"]
            for sd in ("xpu_sd", "xpu_self"):
                assert run_round(S[sd], M[m], st, b)["tokens_per_s"] < plain
            # the same accelerator decoding plainly beats Elastic-SD that is never accepted
            acc_plain = replace(S["elmoe3d"], decoding="plain")
            assert (run_round(S["elmoe3d"], M[m], st, b)["tokens_per_s"]
                    < run_round(acc_plain, M[m], st, b)["tokens_per_s"])


def test_acceptance_helps_monotonically():
    tps = [run_round(S["elmoe3d"], M["mixtral-8x7b"], Settings(acceptance=a), 4)["tokens_per_s"]
           for a in (0.0, 0.5, 0.9, 1.0)]
    assert tps == sorted(tps)


def test_batch_16_against_batch_1():
    """Batching amortizes weights but the union of experts grows: more than 1x, less than 16x."""
    for s in S.values():
        for m in ("mixtral-8x7b", "olmoe-1b-7b"):
            r1 = run_round(s, M[m], Settings(), 1)
            r16 = run_round(s, M[m], Settings(), 16)
            assert 1.0 < r16["tokens_per_s"] / r1["tokens_per_s"] < 16.0, (s.name, m)
            assert r16["j_per_token"] < r1["j_per_token"]
            assert r16["target_unique_experts"] > r1["target_unique_experts"]


def test_placement_fills_hb_in_order():
    p = placement(S["elmoe3d"], M["mixtral-8x7b"])
    assert p["dense_msb"] == p["dense_lsb"] == 1.0
    assert 0 < p["expert_msb"] < 1 and p["expert_lsb"] == 0.0
    assert placement(S["elmoe3d"], M["olmoe-1b-7b"])["expert_lsb"] == 1.0      # 6.9 GB fits in 16 GiB
    q = placement(S["hb3d"], M["mixtral-8x7b"])
    assert q["dense"] == 1.0 and q["expert"] == pytest.approx((16 * 2**30 - M["mixtral-8x7b"].dense_params)
                                                              / (32 * 8 * M["mixtral-8x7b"].expert_params))


def test_full_sweep_is_fast_and_complete():
    t = time.perf_counter()
    rows = sweep(list(S.values()), list(M.values()), Settings())
    assert time.perf_counter() - t < 10.0
    assert len(rows) == len(S) * len(M) * 16
    for r in rows:
        assert r["tokens_per_s"] > 0 and r["j_per_token"] > 0
        assert r["speedup_vs_xpu"] > 0 and "speedup_vs_best_prior" in r
    xs = [r for r in rows if r["system"] == "xpu"]
    assert all(r["speedup_vs_xpu"] == 1.0 for r in xs)


# -- validation -----------------------------------------------------------------------------------------
def test_xpu_reproduces_published_gpu_decode_measurements():
    cases = gpu_cases()
    assert len(cases) >= 2
    for c in cases:
        assert abs(c["error"]) <= GPU_TOLERANCE, c


def test_cycle_model_matches_rtl():
    checks = rtl_checks()
    assert any("PE array" in c["what"] for c in checks) and any("HB stream" in c["what"] for c in checks)
    # the layer pass is the RTL core's (tests/test_perf_bench_core.py), never a composition of these
    assert not any("layer pass" in c["what"] for c in checks)
    for c in checks:
        assert abs(c["error"]) <= RTL_TOLERANCE, c


def test_cycle_model_matches_gemv_cycles_of_the_rtl_generator():
    """perf's tile formula against hw/pe_array.gemv_cycles (which the Verilator benches check)."""
    from elmoe3d.hw.pe_array import gemv_cycles
    from elmoe3d.perf.decode import gemv_tile_cycles
    for n, k, rows, cols, mode in ((256, 128, 16, 16, "full"), (4096, 14336, 64, 64, "draft"), (60, 2048, 64, 64, "full")):
        phases = 2 if mode == "full" else 1
        assert gemv_tile_cycles(n, k, rows, cols, phases, 1) == gemv_cycles(k=k, cols=cols, mode=mode, pipeline=1, n=n, rows=rows)


# -- settings and configuration refusals ---------------------------------------------------------------
@pytest.mark.parametrize("kw, msg", [
    (dict(acceptance=1.5), "acceptance must be in [0, 1], got 1.5"),
    (dict(gamma=-1), "gamma must be an integer in 0 .. 16, got -1"),
    (dict(gamma=17), "gamma must be an integer in 0 .. 16, got 17"),
    (dict(scenario="gpt"), "unknown acceptance scenario 'gpt'; choose from shipped, eagle-mixtral, mtp-deepseek, dense-4bit-self"),
    (dict(skew=-1.0), "skew must be in [0, 4], got -1.0"),
])
def test_settings_refusals(kw, msg):
    with pytest.raises(UserError) as e:
        Settings(**kw)
    assert str(e.value) == msg


def _cli(capsys, *argv):
    code = main(["perf", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("argv, msg", [
    (["--systems", "tpu"], "unknown system 'tpu'; choose from xpu, xpu_sd, xpu_self, hb3d, elmoe3d, offload, specmoe"),
    (["--gamma", "17"], "--gamma 17: a draft length is 0 to 16"),
    (["--models", "gpt-5"], "unknown model 'gpt-5'"),
    (["--acceptance", "1.5"], "argument --acceptance: expected a number in [0, 1], got '1.5'"),
    (["--acceptance", "-0.1"], "expected a number in [0, 1], got '-0.1'"),
    (["--batch", "17"], "--batch 17: a batch holds 1 to 16 sequences"),
])
def test_cli_refusals(capsys, tmp_path, argv, msg):
    code, out, err = _cli(capsys, *argv, "-o", str(tmp_path / "o"), "--no-plot", "--no-sensitivity")
    assert code == 2
    assert msg in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("text, suffix, msg", [
    ("[systems.fast]\nbased_on = \"xpu\"\noffchip = { gbps = -5 }\n", ".toml",
     "system fast offchip: gbps (bandwidth) must be > 0, got -5"),
    ("[systems.fast]\nbased_on = \"xpu\"\noffchip = { gbps = 0 }\n", ".toml",
     "system fast offchip: gbps (bandwidth) must be > 0, got 0"),
    ("[systems.fast\nbased_on = 1\n", ".toml", "is not valid TOML"),
    ('{"systems": {"z": {"decoding": "plain", "offchip": {"efficiency": 0.5}, "compute": {"macs_per_s": 1e12}}}}', ".json",
     "system z: offchip is missing field(s) gbps"),
    ('{"systems": {"x": {"based_on": "nope"}}}', ".json", "system x: based_on names an unknown system 'nope'"),
    ('{"gpus": {}}', ".json", "unknown top-level key(s) gpus"),
    ('{"models": {"m": {"d_model": 8}}}', ".json", "model m: missing field(s)"),
    ('{"systems": {"y": {"based_on": "xpu", "turbo": 1}}}', ".json", "system y: unknown field(s) turbo"),
    ('{"systems": {"r": {"based_on": "offload", "runtime": {"s_per_expert": -1}}}}', ".json",
     "system r: runtime s_per_expert must be >= 0 and <= 1, got -1"),
    ('{"systems": {"r": {"based_on": "offload", "runtime": {"per_token": 1}}}}', ".json",
     "system r: runtime: unknown field(s) per_token"),
])
def test_cli_refuses_bad_config_files(capsys, tmp_path, text, suffix, msg):
    cfg = tmp_path / f"c{suffix}"
    cfg.write_text(text)
    code, out, err = _cli(capsys, "--config", str(cfg), "-o", str(tmp_path / "o"), "--no-plot", "--no-sensitivity")
    assert code == 2
    assert msg in err and err.count("\n") == 1


def test_cli_refuses_output_path_that_is_a_file(capsys, tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    code, out, err = _cli(capsys, "-o", str(f / "sub"), "--no-plot")
    assert code == 2 and f"{f} is a file" in err


def test_cli_config_adds_system_and_model(capsys, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[systems.big_hb]\nbased_on = "elmoe3d"\nhb = { gbps = 8704, capacity_gib = 32 }\n'
                   '[models.tiny]\nd_model = 512\nn_layers = 4\nn_heads = 8\nn_kv_heads = 8\nhead_dim = 64\n'
                   'n_experts = 16\ntop_k = 2\nd_expert = 1024\nvocab = 1000\n')
    out_dir = tmp_path / "a" / "b"
    code, out, err = _cli(capsys, "--config", str(cfg), "--systems", "xpu,elmoe3d,big_hb", "--models",
                          "mixtral-8x7b,tiny", "--batch", "1", "16", "-o", str(out_dir), "--json", str(tmp_path / "p.json"),
                          "--no-sensitivity")
    assert code == 0, err
    data = json.loads((tmp_path / "p.json").read_text())
    rows = {(r["system"], r["model"], r["batch"]): r for r in data["rows"]}
    assert len(rows) == 3 * 2 * 2
    # twice the HB: more of Mixtral's planes resident, faster than the built-in ELMoE-3D
    assert rows[("big_hb", "mixtral-8x7b", 16)]["tokens_per_s"] > rows[("elmoe3d", "mixtral-8x7b", 16)]["tokens_per_s"]
    for name in ("report.txt", "perf.json", "roofline.png", "batch.png"):
        assert (out_dir / name).is_file()
    assert "6.60x" in out and "Why they differ" in out
    assert not math.isnan(data["claims"][0]["ours"])
