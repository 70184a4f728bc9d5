"""Bit-nested INT8 GEMV on signed accumulators (SPEC section 2, normative).

- ``draft_gemv(h, a)    = 8 * sum_i a_i * m_i``  (MSB planes only, ``m = 2h + 1``);
- ``correction_gemv(l, a) = sum_i a_i * c_i``    (LSB planes, ``c = l - 8``);
- ``full_gemv(q, a)      = draft + correction = sum_i a_i * q_i``, identical to INT8 GEMV.

Weights are ``(N, K)`` (one output channel per row); activations ``(K,)`` for one token or
``(T, K)`` for a batch; results ``(N,)`` or ``(T, N)``.

Accumulators are signed ``acc_bits`` wide (32 by default). Every product obeys
``|a * q| <= 127 * 128 < 2**14``, so a length-``K`` dot product cannot overflow while
``K <= 2**(acc_bits - 15) - 1`` (131071 for 32 bits); a longer ``K`` is refused.

The sums are computed with float64 BLAS: every operand, product and partial sum is an integer
below ``2**53``, so each float64 operation is exact in any summation order; the result is checked
against the accumulator range and returned as integers.
"""

import numpy as np

from ...errors import UserError
from ...spec.numerics import ACC_BITS, ACT_MAX
from .slices import (DRAFT_SHIFT, SLICE_BITS, augment, check_int8, check_lsb, check_msb,
                     correction, lsb_slice, msb_slice)

PRODUCT_BOUND = ACT_MAX * 128           # max |a * q| for a in [-127, 127], q in [-128, 127]
_PRODUCT_BITS = PRODUCT_BOUND.bit_length()  # 14: every |product| < 2**14


def max_k(acc_bits=ACC_BITS):
    """Largest dot-product length that a signed ``acc_bits`` accumulator holds without overflow."""
    if acc_bits <= _PRODUCT_BITS + 1:
        raise UserError(f"accumulator of {acc_bits} bits is too narrow: it needs at least "
                        f"{_PRODUCT_BITS + 2} bits for K = 1")
    return (1 << (acc_bits - 1 - _PRODUCT_BITS)) - 1


def required_acc_bits(k):
    """Narrowest signed accumulator that holds any length-``k`` dot product (32 at least)."""
    bits = ACC_BITS
    while max_k(bits) < k:
        bits += 1
    return bits


def check_k(k, acc_bits=ACC_BITS):
    """Refuse a dot-product length the accumulator cannot hold (the overflow rule)."""
    if k > max_k(acc_bits):
        raise UserError(f"K = {k} can overflow a {acc_bits}-bit accumulator (at most "
                        f"{max_k(acc_bits)} inputs); use at least {required_acc_bits(k)} bits")


def check_activations(a):
    a = np.asarray(a)
    if a.dtype != np.int8:
        raise UserError(f"activations must be an int8 array, got dtype {a.dtype}")
    if a.ndim not in (1, 2):
        raise UserError(f"activations must be 1-D (K,) or 2-D (T, K), got shape {a.shape}")
    if a.size and a.min() < -ACT_MAX:
        raise UserError(f"activations must lie in [-{ACT_MAX}, {ACT_MAX}] (symmetric INT8); got -128")
    return a


def _dot(w, a, acc_bits):
    """Exact ``a @ w.T`` of integer operands, checked against the accumulator width."""
    if w.ndim != 2:
        raise UserError(f"weights must be 2-D (N, K), got shape {w.shape}")
    if a.shape[-1] != w.shape[1]:
        raise UserError(f"activations have K = {a.shape[-1]} but weights have K = {w.shape[1]}")
    check_k(w.shape[1], acc_bits)
    acc = np.rint(a.astype(np.float64) @ w.T.astype(np.float64)).astype(np.int64)
    return acc


def _to_acc(acc, acc_bits):
    lo, hi = -(1 << (acc_bits - 1)), (1 << (acc_bits - 1)) - 1
    if acc.size and (acc.min() < lo or acc.max() > hi):  # unreachable once check_k passed
        raise AssertionError("accumulator overflow despite the K bound")
    return acc.astype(np.int32 if acc_bits <= 32 else np.int64)


def draft_gemv(h, a, acc_bits=ACC_BITS):
    """Draft pass ``8 * sum_i a_i * m_i`` from MSB slices ``h`` (int8, [-8, 7])."""
    m = augment(check_msb(h))
    return _to_acc(_dot(m, check_activations(a), acc_bits) << DRAFT_SHIFT, acc_bits)


def correction_gemv(l, a, acc_bits=ACC_BITS):
    """Correction pass ``sum_i a_i * c_i`` from LSB slices ``l`` (uint8, [0, 15])."""
    c = correction(check_lsb(l))
    return _to_acc(_dot(c, check_activations(a), acc_bits), acc_bits)


def full_gemv(q, a, acc_bits=ACC_BITS):
    """Full result ``draft + correction``, the bit-nested INT8 GEMV of weights ``q`` (int8)."""
    q = check_int8(q)
    draft = draft_gemv(msb_slice(q), a, acc_bits).astype(np.int64)
    return _to_acc(draft + correction_gemv(lsb_slice(q), a, acc_bits), acc_bits)


def truncated_gemv(h, a, acc_bits=ACC_BITS):
    """Truncation-only draft ``16 * sum_i a_i * h_i``: the biased baseline, for comparison."""
    return _to_acc(_dot(check_msb(h), check_activations(a), acc_bits) << SLICE_BITS, acc_bits)


def int8_gemv(q, a, acc_bits=ACC_BITS):
    """Plain INT8 GEMV in int64 (``numpy.matmul``), the reference the nested passes must equal."""
    q, a = check_int8(q), check_activations(a)
    if a.shape[-1] != q.shape[-1]:
        raise UserError(f"activations have K = {a.shape[-1]} but weights have K = {q.shape[-1]}")
    check_k(q.shape[1], acc_bits)
    return _to_acc(np.matmul(a.astype(np.int64), q.T.astype(np.int64)), acc_bits)


def array_gemv(mode, q, a, acc_bits=ACC_BITS):
    """What the PE array (and the INT8 baseline) compute for any command their fields can carry.

    ``mode`` is ``"draft"`` (``8 * sum a*m`` from the MSB slices of ``q``), ``"full"``
    (``sum a*q``) or ``"int8"`` (the baseline, ``sum a*q``). Unlike :func:`draft_gemv` and
    friends, which keep to the numerics of SPEC section 2, this is the hardware's definition
    outside that range, matched by the RTL (``tests/test_interface_doc.py``):

    - an activation of -128 is computed as -128 (two's complement; no saturation, no flag);
    - ``K`` is not limited to the generator's ``max_k``: a command ``k`` up to the largest its
      field carries (``2**bit_length(max_k) - 1``) is computed like any other. The result is
      the exact sum, wrapped to a signed ``acc_bits`` accumulator; it never actually wraps there,
      since ``|a*q| <= 2**14`` and a width that holds ``max_k`` inputs holds
      ``2**bit_length(max_k) - 1`` (:func:`max_k` is always one less than a power of two).
    """
    q = check_int8(q)
    a = np.asarray(a)
    if a.dtype != np.int8:
        raise UserError(f"activations must be an int8 array, got dtype {a.dtype}")
    if mode not in ("draft", "full", "int8"):
        raise UserError(f"mode must be draft, full or int8, got {mode!r}")
    if a.shape[-1] != q.shape[-1]:
        raise UserError(f"activations have K = {a.shape[-1]} but weights have K = {q.shape[-1]}")
    w = (augment(msb_slice(q)).astype(np.int64) << DRAFT_SHIFT) if mode == "draft" else q.astype(np.int64)
    return wrap(np.matmul(a.astype(np.int64), w.T), acc_bits)


def wrap(acc, acc_bits):
    """``acc`` (int64) reduced to a signed ``acc_bits`` two's-complement value, as the RTL's adder."""
    half = 1 << (acc_bits - 1)
    return (np.asarray(acc, np.int64) + half) % (2 * half) - half
