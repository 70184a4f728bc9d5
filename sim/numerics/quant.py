"""Symmetric INT8 quantization (SPEC section 2, normative).

- Weights: per output channel (row ``j`` of a ``(N, K)`` matrix), ``q`` in [-128, 127],
  ``s_w[j] = max_i |W[j, i]| / 127`` (an all-zero row gets ``s_w = 1``).
- Activations: per token (row of a ``(T, K)`` array, or one ``(K,)`` vector), ``a`` in
  [-127, 127], ``s_a = max|x| / 127`` (a zero vector gets ``s_a = 1``).

Rounding is round-half-to-even (``numpy.rint``) in both.
"""

import numpy as np

from ...errors import UserError
from ...spec.numerics import ACT_MAX  # activations are symmetric: -128 is never produced

INT8_MIN, INT8_MAX = -128, 127


def _scale(absmax):
    """Scale ``absmax / 127`` with zero rows mapped to 1 (zero-safe)."""
    return np.where(absmax > 0, absmax / 127.0, 1.0)


def _check_float(x, name):
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise UserError(f"{name} must be a floating-point array, got dtype {x.dtype}")
    if not np.all(np.isfinite(x)):
        raise UserError(f"{name} contains NaN or infinity")
    return x.astype(np.float64, copy=False)


def quantize_weights(w):
    """Per-output-channel symmetric INT8 quantization.

    Parameters
    ----------
    w : float array, shape (N, K)
        Weights, one output channel per row.

    Returns
    -------
    q : int8 array, shape (N, K), values in [-128, 127]
    s_w : float64 array, shape (N,), all > 0
    """
    w = _check_float(w, "weights")
    if w.ndim != 2:
        raise UserError(f"weights must be 2-D (out_features, in_features), got shape {w.shape}")
    s_w = _scale(np.abs(w).max(axis=1, initial=0.0))
    q = np.clip(np.rint(w / s_w[:, None]), INT8_MIN, INT8_MAX).astype(np.int8)
    return q, s_w


def quantize_activations(x):
    """Per-token symmetric INT8 quantization.

    Parameters
    ----------
    x : float array, shape (K,) or (T, K)

    Returns
    -------
    a : int8 array, same shape, values in [-127, 127]
    s_a : float64 scalar (for a vector) or array of shape (T,), all > 0
    """
    x = _check_float(x, "activations")
    if x.ndim not in (1, 2):
        raise UserError(f"activations must be 1-D or 2-D (tokens, features), got shape {x.shape}")
    s_a = _scale(np.abs(x).max(axis=-1, initial=0.0))
    a = np.clip(np.rint(x / np.expand_dims(s_a, -1)), -ACT_MAX, ACT_MAX).astype(np.int8)
    return a, s_a


def dequantize(acc, s_a, s_w):
    """Output ``y[..., j] = s_a * s_w[j] * acc[..., j]`` as float64."""
    return np.expand_dims(np.asarray(s_a, dtype=np.float64), -1) * s_w * acc
