"""The reference MoE layer: routing, float vs INT8 vs draft accuracy, bad parameters."""

import numpy as np
import pytest

from elmoe3d.errors import UserError
from elmoe3d.sim.golden.moe_layer import (MoEShape, expert_float, moe_float, moe_int8, random_moe,
                                   relative_rms_error, route)

# Bounds over the shapes and seeds below (Gaussian-with-outliers weights, Gaussian tokens), as
# measured: full INT8 1.9-2.6 % relative RMS error, draft 14-26 %, truncation 27-71 %.
FULL_TOL, DRAFT_TOL = 0.05, 0.45

SHAPES = [MoEShape(d_model=64, n_experts=4, top_k=1, d_ffn=128),
          MoEShape(d_model=256, n_experts=8, top_k=2, d_ffn=512),
          MoEShape(d_model=128, n_experts=6, top_k=3, d_ffn=96, n_shared=1)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("seed", [0, 1])
def test_int8_tracks_float_and_draft_within_a_larger_bound(shape, seed):
    rng = np.random.default_rng(seed)
    w = random_moe(shape, rng, "outlier")
    x = rng.standard_normal((32, shape.d_model))
    ref = moe_float(x, w, shape.top_k)
    qw = w.quantized()
    e_full = relative_rms_error(moe_int8(x, qw, shape.top_k), ref)
    e_draft = relative_rms_error(moe_int8(x, qw, shape.top_k, "draft"), ref)
    e_trunc = relative_rms_error(moe_int8(x, qw, shape.top_k, "truncated"), ref)
    assert e_full < FULL_TOL, e_full
    assert e_full < e_draft < DRAFT_TOL, e_draft
    assert e_draft < e_trunc


def test_routing_is_topk_renormalized():
    rng = np.random.default_rng(3)
    x, router = rng.standard_normal((10, 8)), rng.standard_normal((8, 5))
    chosen, gates = route(x, router, 2)
    logits = x @ router
    for t in range(10):
        assert set(chosen[t]) == set(np.argsort(-logits[t])[:2])
    np.testing.assert_allclose(gates.sum(axis=1), 1.0)
    assert np.all(gates[:, 0] >= gates[:, 1])


def test_layer_equals_explicit_sum_over_chosen_experts():
    shape = MoEShape(d_model=32, n_experts=4, top_k=2, d_ffn=48, n_shared=1)
    rng = np.random.default_rng(7)
    w = random_moe(shape, rng)
    x = rng.standard_normal((5, 32))
    chosen, gates = route(x, w.router, 2)
    expected = np.stack([sum(gates[t, s] * expert_float(x[t:t + 1], w.experts[chosen[t, s]])[0]
                             for s in range(2)) + expert_float(x[t:t + 1], w.shared[0])[0]
                         for t in range(5)])
    np.testing.assert_allclose(moe_float(x, w, 2), expected, rtol=1e-12, atol=1e-12)


def test_per_expert_modes_switch_only_that_expert():
    shape = MoEShape(d_model=32, n_experts=4, top_k=4, d_ffn=48)
    rng = np.random.default_rng(1)
    qw = random_moe(shape, rng).quantized()
    x = rng.standard_normal((3, 32))
    full = moe_int8(x, qw, 4)
    assert np.array_equal(moe_int8(x, qw, 4, ["full"] * 4), full)
    mixed = moe_int8(x, qw, 4, ["full", "draft", "full", "full"])
    assert not np.array_equal(mixed, full)


@pytest.mark.parametrize("kwargs, match", [
    (dict(top_k=9), "top_k = 9 exceeds the number of experts"),
    (dict(d_model=0), "d_model must be a positive integer"),
    (dict(d_ffn=-3), "d_ffn must be a positive integer"),
    (dict(n_shared=-1), "n_shared"),
    (dict(d_model=200_000), "can overflow"),
])
def test_bad_shapes_are_refused(kwargs, match):
    with pytest.raises(UserError, match=match):
        MoEShape(**kwargs)


def test_bad_layer_calls_are_refused():
    shape = MoEShape(d_model=16, n_experts=2, top_k=1, d_ffn=8)
    qw = random_moe(shape, np.random.default_rng(0)).quantized()
    x = np.zeros((2, 16))
    with pytest.raises(UserError, match="top-k of 3 is impossible with 2 experts"):
        moe_int8(x, qw, 3)
    with pytest.raises(UserError, match="unknown expert mode 'half'"):
        moe_int8(x, qw, 1, "half")
    with pytest.raises(UserError, match=r"shape \(T, 16\)"):
        moe_int8(np.zeros((2, 15)), qw, 1)
    with pytest.raises(UserError, match="expected 2 expert modes"):
        moe_int8(x, qw, 1, ["full"])
