"""elmoe3d perf (issue 18): the decoding rule against a Monte-Carlo, the measured acceptance, equal
footing and the ablation ladder, the elastic policy, sweeps, offloaded decoding and the GPU points."""

import json
import math
from dataclasses import replace

import numpy as np
import pytest

from elmoe3d.errors import UserError
from elmoe3d.perf import acceptance as acc
from elmoe3d.perf import studies
from elmoe3d.perf.decode import Settings, choose, run_round, sweep
from elmoe3d.perf.models import builtin_models
from elmoe3d.perf.systems import _constants, array_pj_per_mac, bench_pe_pj, builtin_systems, hb_gbps, with_footing
from elmoe3d.perf.validate import GPU_TOLERANCE, gpu_cases

S = builtin_systems()
M = builtin_models()
BIG = [m for n, m in M.items() if n != "shipped"]


# -- the decoding rule -------------------------------------------------------------------------------
def _monte_carlo(alpha, gamma, rounds, rng):
    """Rounds of greedy verification: each draft token accepted with probability alpha given the
    ones before it were; the target appends one token. Returns accepted, drafted, tokens, rounds."""
    u = rng.random((rounds, gamma)) < alpha
    j = np.where(u.all(axis=1), gamma, np.argmin(u, axis=1))      # first rejection
    return int(j.sum()), rounds * gamma, int((j + 1).sum()), rounds


@pytest.mark.parametrize("alpha, gamma", [(0.93, 4), (0.7, 4), (0.5, 2), (0.97, 8), (0.3, 1)])
def test_tokens_per_round_against_a_monte_carlo_of_the_decoding_rule(alpha, gamma):
    rng = np.random.default_rng(7)
    accepted, drafted, tokens, rounds = _monte_carlo(alpha, gamma, 200_000, rng)
    mean = accepted / drafted
    # inverting accepted/drafted recovers the per-token acceptance ...
    a_hat = acc.alpha_from_mean(mean, gamma)
    assert a_hat == pytest.approx(alpha, abs=0.005)
    # ... whose tokens per round are the simulated ones, at the measured gamma and at others
    assert acc.tokens_per_round(a_hat, gamma) == pytest.approx(tokens / rounds, rel=0.005)
    for g in (1, 3, 6):
        _, _, t2, r2 = _monte_carlo(alpha, g, 200_000, rng)
        assert acc.tokens_per_round(a_hat, g) == pytest.approx(t2 / r2, rel=0.01)
    # the old model fed accepted/drafted into the per-token formula: too few tokens whenever gamma > 1
    if gamma > 1 and 0 < alpha < 1:
        assert acc.tokens_per_round(mean, gamma) < 0.995 * tokens / rounds


def test_inversion_limits_and_refusal():
    assert acc.alpha_from_mean(0.0, 4) == 0.0 and acc.alpha_from_mean(1.0, 4) == 1.0
    assert acc.tokens_per_round(0.9, 0) == 1.0
    with pytest.raises(UserError, match=r"mean acceptance must be in \[0, 1\]"):
        acc.alpha_from_mean(1.2, 4)


def test_measured_acceptance_is_pooled_with_a_standard_error():
    data = acc.load_measured()
    assert data["n_prompts"] == 64
    for kind in acc.DRAFTS:
        alphas = []
        for g in acc.GAMMAS:
            m = acc.measured(kind, g)
            assert m["prompts"] == 64 and 0 < m["mean_se"] < 0.05, (kind, g)
            assert m["alpha_lo"] <= m["alpha"] <= m["alpha_hi"]
            alphas.append(m["alpha"])
        # the independent-acceptance model fits the shipped model: one alpha explains every gamma
        assert max(alphas) - min(alphas) < 0.05, (kind, alphas)
    # drafts rank as expected: the bit-elastic draft (all experts) beats half the experts, the separate model last
    a = {k: acc.measured(k, 4)["alpha"] for k in acc.DRAFTS}
    assert a["bit_elastic"] > a["elastic"] > a["separate"]


def test_pooled_standard_error_of_identical_clusters_is_zero():
    cl = [{"a": 3, "d": 4}] * 5
    r, se = acc.pooled(cl, "a", "d")
    assert r == 0.75 and se == 0.0


def test_batch_does_not_change_acceptance():
    st = Settings()
    assert run_round(S["elmoe3d"], M["mixtral-8x7b"], st, 1)["acceptance"] == \
        run_round(S["elmoe3d"], M["mixtral-8x7b"], st, 16)["acceptance"]


# -- equal footing and the ladder ----------------------------------------------------------------------
def test_equal_footing_shares_efficiency_and_static_power():
    eq = [with_footing(S[n], "equal") for n in studies.CORE]
    assert len({s.offchip.efficiency for s in eq}) == 1 and len({s.static_w for s in eq}) == 1
    # the host-offload GPU states why it differs and keeps its own values
    assert with_footing(S["offload"], "equal") == S["offload"]


def test_stated_footing_inflates_the_accelerators_against_the_xpu():
    m, st = M["mixtral-8x7b"], Settings()
    ratio = {}
    for ft in ("equal", "stated"):
        x, e = with_footing(S["xpu"], ft), with_footing(S["elmoe3d"], ft)
        ratio[ft] = run_round(e, m, st, 4)["tokens_per_s"] / run_round(x, m, st, 4)["tokens_per_s"]
    assert ratio["stated"] > 1.3 * ratio["equal"]


@pytest.mark.parametrize("objective", ["tokens_per_s", "j_per_token"])
def test_ladder_is_monotone_where_it_must_be(objective):
    eq = {n: with_footing(s, "equal") for n, s in S.items()}
    lad = studies.ladder(eq, BIG, Settings(), (1, 16), objective)
    key = "speedup" if objective == "tokens_per_s" else "energy_gain"
    for m, per in lad.items():
        for b, steps in per.items():
            assert steps[1]["speedup"] > 1.0, (m, b)           # HB adds bandwidth on the same HBM
            # a self-draft with gamma 0 allowed never loses to plain decoding; ELMoE-3D's k_d choices
            # include the bit-elastic draft's, so it never loses to it
            assert steps[3][key] >= 1.0 - 1e-12 and steps[4][key] >= 1.0 - 1e-12, (m, b, steps)


def test_policy_turns_speculation_off_when_nothing_is_accepted():
    st = Settings(acceptance=0.0)
    route = st.routing()
    for n in ("xpu_sd", "xpu_self", "elmoe3d"):
        r = choose(S[n], M["qwen3-30b-a3b"], st, route=route, batch=4)
        assert r["gamma"] == 0


def test_policy_picks_from_the_measured_k_d_fractions():
    rows = sweep([S["xpu"], S["elmoe3d"]], BIG, Settings(), (1, 8, 16), "tokens_per_s")
    for r in rows:
        if r["system"] == "elmoe3d" and r["gamma"]:
            top_k = M[r["model"]].top_k
            assert r["k_d"] in (math.ceil(top_k / 2), top_k)


# -- sweeps and ranges --------------------------------------------------------------------------------
def test_hb_bandwidth_rule_is_the_data_files():
    assert hb_gbps(16) == S["elmoe3d"].hb.gbps == S["hb3d"].hb.gbps == 4352
    assert "ASSUMPTION" in _constants()["hb_gbps_per_gib"]["source"]


def test_crossover_interpolates():
    assert studies.crossover([(4, 1.2), (8, 0.8)]) == pytest.approx(6.0)
    assert studies.crossover([(4, 1.2), (8, 1.1)]) is None
    assert studies.crossings([(4, 0.9), (8, 1.1), (16, 0.9)]) == [(pytest.approx(6.0), "up"), (pytest.approx(12.0), "down")]


def test_claim_ranges_hold_the_default_point():
    cl, grid = studies.claim_ranges(S, BIG[:2], Settings(), batches=(1, 16), scenarios=("shipped", "eagle-mixtral"),
                                    footings=("equal", "stated"), hb_sizes=(16, 32))
    assert len(grid) == 8
    for c in cl:
        assert c["lo"] <= c["default"] <= c["hi"]
        assert c["moves_most"] in ("acceptance scenario", "footing", "HB GiB")


# -- the RTL inputs ----------------------------------------------------------------------------------
def test_pe_energy_is_bench_pe_at_the_default_depth_and_a_report_replaces_it(tmp_path):
    pe = _constants()["pe_pj_per_mac_45nm"]
    # the data file holds bench-pe's Nangate 45 rows at the generator's default pipeline depth, as
    # docs/pe-array.md quotes them (columns by the table's own header)
    from pathlib import Path
    from elmoe3d.spec.timing import DEFAULT_PIPELINE
    text = (Path(__file__).resolve().parents[1] / "docs" / "pe-array.md").read_text().splitlines()
    head = next(line for line in text if line.startswith("library") and "pJ/MAC" in line)
    end = head.index("pJ/MAC") + len("pJ/MAC")            # right-aligned column
    rows = {(line.split()[1], line.split()[2]): float(line[:end].split()[-1]) for line in text
            if line.startswith("nangate45") and line.split()[3] == str(DEFAULT_PIPELINE)}
    assert (pe["draft"], pe["full"], pe["int8"]) == (rows[("pe_array", "draft")], rows[("pe_array", "full")],
                                                       rows[("mac_array_baseline", "int8")])
    report = {"pipelines": [3, 1], "designs": [],
              "bit_fusion": {"nangate45": {"draft_pj_per_mac": 1.0, "full_pj_per_mac": 2.0, "baseline_pj_per_mac": 1.5},
                             "nangate45 p1": {"draft_pj_per_mac": 9, "full_pj_per_mac": 9, "baseline_pj_per_mac": 9}}}
    f = tmp_path / "pe.json"
    f.write_text(json.dumps(report))
    got, pipeline, _ = bench_pe_pj(f)
    assert pipeline == 3 and got == {"draft": 1.0, "full": 2.0, "int8": 1.5}
    scale = _constants()["node_energy_scale"]["value"]
    assert array_pj_per_mac("bit_sliced", got)["full"] == pytest.approx(2.0 * scale)
    f.write_text("{}")
    with pytest.raises(UserError, match="is not a bench-pe --json report"):
        bench_pe_pj(f)


# -- validation ---------------------------------------------------------------------------------------
def test_xpu_validation_points():
    cases = gpu_cases()
    assert len(cases) >= 9
    for c in cases:
        assert abs(c["error"]) <= GPU_TOLERANCE, c
        # every published figure states where it comes from and on what it ran
        assert c["source"] and c["hardware"] and c["precision"] and c["software"], c
        assert c["status"].split(":")[0] in ("verified", "quoted"), c


def test_validation_covers_issue_18_item_8():
    """At least six published GPU decode measurements over at least three models, one at batch > 1."""
    gpu = gpu_cases()
    off = studies.offload_cases(S, M)
    assert len(gpu) + len(off) >= 6
    assert len({c["model"] for c in gpu} | {c["model"] for c in off}) >= 3
    batched = [c for c in gpu if c["batch"] > 1]
    assert len(batched) >= 3 and len({c["hardware"] for c in batched}) >= 3     # batch 8 on A100, H100, H200
    assert len({c["model"] for c in gpu}) >= 2


def test_offloaded_decoding_against_moe_infinity():
    cases = {c["model"]: c for c in studies.offload_cases(S, M)}
    assert set(cases) == {"deepseek-v2-lite", "mixtral-8x7b", "qwen3-30b-a3b"}
    # with the runtime's measured per-layer and per-expert software cost all three are within the bar
    for m, c in cases.items():
        assert abs(c["error"]) <= GPU_TOLERANCE, c
    # without it, the small-expert models fall far below the measurement (the mechanism issue 18 asked for):
    # PCIe-bound Mixtral (352 MB experts) barely moves, DeepSeek-V2-Lite and Qwen3-30B-A3B are lower bounds
    bare = dict(S, offload=replace(S["offload"], runtime={}))
    plain = {c["model"]: c for c in studies.offload_cases(bare, M)}
    for m in ("deepseek-v2-lite", "qwen3-30b-a3b"):
        assert plain[m]["error"] < -GPU_TOLERANCE
    assert abs(plain["mixtral-8x7b"]["error"]) <= GPU_TOLERANCE


def test_offload_runtime_cost_is_the_profiles_ranges_by_hand():
    """The runtime cost of one batch-1 pass against hand arithmetic from MoE-Infinity's NVTX ranges
    (A5000 profile: routing 95.0 + dispatch 24.8 us per MoE layer, 154.7 us per expert call,
    DeepSeekPrepare 272.2 us per layer of DeepSeek's block)."""
    from elmoe3d.perf.systems import runtime_seconds
    off = S["offload"]
    assert runtime_seconds(off, M["qwen3-30b-a3b"], 8) == pytest.approx(48 * (119.8e-6 + 8 * 154.7e-6))
    assert runtime_seconds(off, M["deepseek-v2-lite"], 6) == pytest.approx(26 * (119.8e-6 + 272.2e-6 + 6 * 154.7e-6))
    assert runtime_seconds(off, M["mixtral-8x7b"], 0) == 0.0          # a pass without experts
    assert runtime_seconds(S["xpu"], M["mixtral-8x7b"], 2) == 0.0       # only the offloading runtime states one
    # charged serially: the pass takes the bandwidth model's time plus the runtime's
    st = Settings(context=512)
    with_rt = run_round(off, M["qwen3-30b-a3b"], st, 1)
    without = run_round(replace(off, runtime={}), M["qwen3-30b-a3b"], st, 1)
    extra = runtime_seconds(off, M["qwen3-30b-a3b"], with_rt["target_unique_experts"])
    assert 1 / with_rt["tokens_per_s"] == pytest.approx(1 / without["tokens_per_s"] + extra)


def test_specmoe_in_its_setting_gains_little_without_prefetch_reuse():
    spec = studies.specmoe_setting(S, [M["mixtral-8x7b"]], Settings(), batches=(1, 16))
    assert 1.0 <= spec["mixtral-8x7b"] < 4.30
    # reusing the draft's fetched experts at verification is the input that moves it most; still below 4.30x
    reuse = studies.specmoe_setting(S, [M["mixtral-8x7b"]], Settings(), batches=(1, 16), reuse=True)
    assert spec["mixtral-8x7b"] < reuse["mixtral-8x7b"] < 4.30
    assert not any(s.draft_reuse for s in S.values())     # no shipped system assumes it


def test_unsourced_scenarios_stay_out_of_the_claim_ranges():
    from elmoe3d.perf import acceptance as acc
    assert all(sc["status"] in ("measured", "verified", "quoted", "unsourced") for sc in acc.SCENARIOS.values())
    assert "dense-4bit-self" not in acc.RANGE_SCENARIOS and "eagle-mixtral" in acc.RANGE_SCENARIOS
    assert acc.SCENARIOS["eagle-mixtral"]["status"] == "quoted"
