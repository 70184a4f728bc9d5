"""Integer MoE layer (SPEC section 7): primitives, folding, against the INT8 and float layers."""

import numpy as np
import pytest

from elmoe3d.errors import UserError
from elmoe3d.sim.golden.int_moe import (GATE_FRAC, POW2, IntPass, calibrate_layer, draft_pass, fixed, fixed_value,
                                 fold_layer, gate_weights, int_moe, quantize_tokens, requant, rshift_round,
                                 sat, select_experts)
from elmoe3d.sim.golden.moe_layer import MoEShape, moe_float, moe_int8, random_moe, relative_rms_error, route

SHAPES = [MoEShape(d_model=32, n_experts=4, top_k=1, d_ffn=48),
          MoEShape(d_model=48, n_experts=8, top_k=2, d_ffn=64, n_shared=1),
          MoEShape(d_model=64, n_experts=6, top_k=3, d_ffn=40, n_shared=2)]


def make_layer(shape, seed):
    rng = np.random.default_rng(seed)
    w = random_moe(shape, rng)
    qw = w.quantized()
    layer = fold_layer(qw, calibrate_layer(qw, rng.standard_normal((128, shape.d_model)), shape.top_k), shape.top_k)
    return w, qw, layer, rng


def test_rshift_round_is_round_half_up():
    v = np.array([-5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5])
    assert rshift_round(v, 1).tolist() == [-2, -2, -1, -1, 0, 0, 1, 1, 2, 2, 3]   # floor(v/2 + 1/2)
    assert rshift_round(np.int64(1) << 61, 62) == 1 and rshift_round(-(np.int64(1) << 60), 62) == 0
    with pytest.raises(UserError, match="at least 1"):
        rshift_round(3, 0)


def test_sat_is_symmetric_and_requant_saturates():
    assert sat([-200, -128, 127, 300], 8).tolist() == [-127, -127, 127, 127]
    assert requant(np.array([1 << 30, -(1 << 30)]), 1 << 14, 1, 8).tolist() == [127, -127]


@pytest.mark.parametrize("x", [1e-6, 0.0137, 0.5, 1.0, 3.75, 1000.0])
def test_fixed_point_multiplier_is_within_half_an_ulp(x):
    m, e = fixed(x)
    assert (1 << 14) <= m < (1 << 15) and e >= 1
    assert abs(fixed_value(m, e) - x) <= x * 2.0 ** -15
    with pytest.raises(UserError, match="too large"):
        fixed(1 << 14)


def test_pow2_table():
    assert POW2[0] == 1 << 16 and POW2[-1] == round(2 ** 16 * 2 ** (-63 / 64))
    assert np.all(np.diff(POW2) < 0)


def test_topk_ties_go_to_the_lower_index_and_cached_restricts():
    logits = np.array([[5, 7, 7, 1], [3, 3, 3, 3]])
    assert select_experts(logits, 2).tolist() == [[1, 2], [0, 1]]
    allowed = np.array([True, False, True, False])
    assert select_experts(logits, 2, allowed).tolist() == [[2, 0], [0, 2]]
    assert select_experts(logits, 2, np.zeros(4, bool)).shape == (2, 0)


def test_gate_weights_sum_to_one_and_follow_softmax():
    _, _, layer, rng = make_layer(SHAPES[1], 0)
    a, xm, xe = quantize_tokens(rng.standard_normal((16, 48)))
    logits = a.astype(np.int64) @ layer.router.astype(np.int64).T
    chosen = select_experts(logits, 2)
    w = gate_weights(layer, logits, chosen, xm, xe)
    assert np.all(np.abs(w.sum(axis=1) - (1 << GATE_FRAC)) <= 2)          # floor division loses < 1 each
    s_x = xm * 2.0 ** -xe
    z = np.take_along_axis(logits, chosen, 1) * (s_x[:, None] * layer.scales["s_r"])
    ref = np.exp(z - z[:, :1]) / np.exp(z - z[:, :1]).sum(1, keepdims=True)
    assert np.max(np.abs(w / (1 << GATE_FRAC) - ref)) < 0.01           # 64-step exp table: ~0.5 % per weight
    assert np.all(gate_weights(layer, logits, chosen[:, :1], xm, xe) == 1 << GATE_FRAC)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"d{s.d_model}e{s.n_experts}k{s.top_k}s{s.n_shared}")
@pytest.mark.parametrize("seed", [0, 1])
def test_integer_layer_tracks_the_int8_layer(shape, seed):
    w, qw, layer, rng = make_layer(shape, seed)
    x = rng.standard_normal((32, shape.d_model))
    a, xm, xe = quantize_tokens(x)
    res = int_moe(layer, a, xm, xe)
    out = res.out * layer.out_scale
    ref, flt = moe_int8(x, qw, shape.top_k), moe_float(x, w, shape.top_k)
    chosen_f, _ = route(x, w.router, shape.top_k)
    agree = (np.sort(chosen_f, 1) == np.sort(res.chosen, 1)).all(1)
    assert agree.mean() >= 0.9, f"top-k agreement {agree.mean()}"
    # On tokens routed alike (a flipped near-tie sends a token to another expert altogether).
    # Measured: 3.8-5.7 % from float on those tokens (static scales, INT8 hidden); INT8 path 1.6-1.8 %.
    assert relative_rms_error(out[agree], flt[agree]) < 0.08
    assert relative_rms_error(out[agree], ref[agree]) < 0.08
    # A draft pass reads only MSB planes: a larger but bounded error; k_d = 1 uses one expert.
    d = int_moe(layer, a, xm, xe, draft_pass(1))
    assert d.chosen.shape == (32, 1) and np.array_equal(d.chosen[:, 0], res.chosen[:, 0])
    assert relative_rms_error(d.out * layer.out_scale, flt) < 0.9


def test_integer_layer_refuses_bad_inputs():
    _, _, layer, rng = make_layer(SHAPES[0], 0)
    a, xm, xe = quantize_tokens(rng.standard_normal((2, 32)))
    bad = a.copy()
    bad[0, 0] = -128
    with pytest.raises(UserError, match="-128"):
        int_moe(layer, bad, xm, xe)
    with pytest.raises(UserError, match="shape"):
        int_moe(layer, a[:, :5], xm, xe)
    with pytest.raises(UserError, match="exceeds"):
        int_moe(layer, a, xm, xe, IntPass(k=2))
    with pytest.raises(UserError, match="resident"):
        int_moe(layer, a, xm, xe, IntPass(choice="cached"))
    with pytest.raises(UserError, match="bits"):
        IntPass(bits="half")


def test_saturating_inputs_stay_exact_and_bounded():
    _, _, layer, _ = make_layer(SHAPES[1], 3)
    a = np.full((4, 48), 127, dtype=np.int8)
    a[1] = -127
    xm, xe = np.full(4, (1 << 15) - 1), np.full(4, 1)     # the largest token scale: saturates every stage
    res = int_moe(layer, a, xm, xe)
    assert np.all(np.abs(res.out) <= (1 << 31) - 1)


def test_numerics_report_has_the_integer_path():
    from elmoe3d.sim.golden.bit_nesting_report import format_report, layer_report
    r = layer_report(MoEShape(d_model=64, n_experts=4, top_k=2, d_ffn=96), seed=0, tokens=32)
    # Measured: 5.6 % (integer) vs 3.5 % (INT8) on the default layer; 15.9 % here (small layer with
    # outlier weights, and a flipped near-tie over 32 tokens sends a token to another expert).
    assert r["rel_rms_full"] < r["rel_rms_integer"] < 0.25
    assert r["rel_rms_integer_draft"] > r["rel_rms_integer"]
    assert r["integer_topk_agreement"] >= 0.9
    assert "integer layer vs float" in format_report([r])
