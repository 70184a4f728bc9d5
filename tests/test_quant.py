"""Per-channel weight and per-token activation quantization (SPEC section 2)."""

import numpy as np
import pytest

from elmoe3d.errors import UserError
from elmoe3d.sim.numerics.quant import quantize_activations, quantize_weights


@pytest.mark.parametrize("seed", range(4))
def test_weight_quantization_is_per_channel_symmetric(seed):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((16, 64)) * rng.uniform(0.01, 10, size=(16, 1))
    q, s = quantize_weights(w)
    assert q.dtype == np.int8 and s.shape == (16,)
    np.testing.assert_allclose(s, np.abs(w).max(axis=1) / 127)
    assert np.all(np.abs(q).max(axis=1) == 127), "each channel's largest weight maps to +-127"
    assert np.all(np.abs(w - s[:, None] * q) <= s[:, None] / 2 + 1e-12)


def test_rounding_is_half_to_even_and_zero_safe():
    w = np.array([[127.0, 0.5, 1.5, 2.5, -0.5, -1.5], [0, 0, 0, 0, 0, 0]])
    q, s = quantize_weights(w)
    assert q[0].tolist() == [127, 0, 2, 2, 0, -2]
    assert s[1] == 1.0 and q[1].tolist() == [0] * 6
    a, s_a = quantize_activations(np.zeros((2, 5)))
    assert s_a.tolist() == [1.0, 1.0] and not a.any()


@pytest.mark.parametrize("seed", range(4))
def test_activation_quantization_is_per_token(seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((8, 100)) * rng.uniform(0.1, 100, size=(8, 1))
    a, s = quantize_activations(x)
    assert a.dtype == np.int8 and a.min() >= -127
    np.testing.assert_allclose(s, np.abs(x).max(axis=1) / 127)
    assert np.all(np.abs(x - s[:, None] * a) <= s[:, None] / 2 + 1e-9)
    a1, s1 = quantize_activations(x[3])
    np.testing.assert_array_equal(a1, a[3])
    assert s1 == s[3]


@pytest.mark.parametrize("bad, match", [
    (np.zeros((2, 2), dtype=np.int32), "floating-point"),
    (np.zeros(4), "2-D"),
    (np.array([[np.nan, 1.0]]), "NaN"),
])
def test_weight_quantization_refuses_bad_input(bad, match):
    with pytest.raises(UserError, match=match):
        quantize_weights(bad)
