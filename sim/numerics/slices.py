"""Bit slices, planes and LSB augmentation of INT8 weights (SPEC section 2, normative).

For every INT8 weight ``q``:

- MSB slice ``h = q >> 4`` (arithmetic), in [-8, 7];
- LSB slice ``l = q & 0xF``, in [0, 15];   ``q = 16*h + l``;
- augmented draft operand ``m = 2*h + 1`` (``{h, 1'b1}``), odd, in [-15, 15];
- correction operand ``c = l - 8`` (``{~l[3], l[2:0]}`` read as signed), in [-8, 7];
  ``q = 8*m + c``.

A **plane** is the packed nibble layout memory holds: two 4-bit slices per byte, element
``2i`` in the low nibble and ``2i + 1`` in the high nibble, row-major over the matrix.
"""

import numpy as np

from ...errors import UserError
from ...spec.image import pack_plane, unpack_plane  # noqa: F401  (the plane format is defined there)
from ...spec.numerics import DRAFT_SHIFT, OPERAND_BITS, SLICE_BITS  # noqa: F401

H_MIN, H_MAX = -(1 << (SLICE_BITS - 1)), (1 << (SLICE_BITS - 1)) - 1
L_MIN, L_MAX = 0, (1 << SLICE_BITS) - 1
M_MIN, M_MAX = 2 * H_MIN + 1, 2 * H_MAX + 1
C_MIN, C_MAX = L_MIN - 8, L_MAX - 8


def check_int8(q, name="weights"):
    """Refuse anything but an int8 array (a clear ``UserError``)."""
    q = np.asarray(q)
    if q.dtype != np.int8:
        raise UserError(f"{name} must be an int8 array, got dtype {q.dtype}")
    return q


def msb_slice(q):
    """MSB slice ``h = q >> 4`` of INT8 weights, int8 in [-8, 7]."""
    return np.right_shift(check_int8(q), SLICE_BITS)


def lsb_slice(q):
    """LSB slice ``l = q & 0xF`` of INT8 weights, uint8 in [0, 15]."""
    return (check_int8(q).view(np.uint8) & L_MAX).astype(np.uint8)


def join_slices(h, l):
    """Inverse of the split: ``q = 16*h + l`` as int8."""
    h, l = check_msb(h), check_lsb(l)
    return (h.astype(np.int16) * 16 + l).astype(np.int8)


def check_msb(h):
    h = np.asarray(h)
    if h.dtype != np.int8:
        raise UserError(f"MSB slice must be an int8 array, got dtype {h.dtype}")
    if h.size and (h.min() < H_MIN or h.max() > H_MAX):
        raise UserError(f"MSB slice values must lie in [{H_MIN}, {H_MAX}], got [{h.min()}, {h.max()}]")
    return h


def check_lsb(l):
    l = np.asarray(l)
    if l.dtype != np.uint8:
        raise UserError(f"LSB slice must be a uint8 array, got dtype {l.dtype}")
    if l.size and l.max() > L_MAX:
        raise UserError(f"LSB slice values must lie in [{L_MIN}, {L_MAX}], got max {l.max()}")
    return l


def augment(h):
    """Draft operand ``m = 2*h + 1`` (``{h, 1'b1}``) from the MSB slice, int8 in [-15, 15]."""
    return (check_msb(h) * 2 + 1).astype(np.int8)


def correction(l):
    """Correction operand ``c = l - 8`` (``{~l[3], l[2:0]}`` signed) from the LSB slice, int8 in [-8, 7]."""
    return (check_lsb(l).astype(np.int8) - 8).astype(np.int8)


def draft_weight(q):
    """Draft weight ``q_d = 8*m = 16*h + 8``, int16 in [-120, 120]: the midpoint of h's interval."""
    return augment(msb_slice(q)).astype(np.int16) << DRAFT_SHIFT


def truncated_weight(q):
    """Plain truncation ``16*h`` (the biased baseline that augmentation improves on), int16."""
    return msb_slice(q).astype(np.int16) << SLICE_BITS


def split_planes(q):
    """Memory image of an INT8 matrix: ``(msb_plane, lsb_plane)``, each ``ceil(q.size / 2)`` bytes."""
    return pack_plane(msb_slice(q)), pack_plane(lsb_slice(q))


def msb_from_plane(plane, shape):
    """MSB slice (int8, [-8, 7]) read back from its plane: sign-extend each nibble."""
    nib = unpack_plane(plane, shape).astype(np.int8)
    return np.where(nib > H_MAX, nib - 16, nib).astype(np.int8)


def lsb_from_plane(plane, shape):
    """LSB slice (uint8, [0, 15]) read back from its plane."""
    return unpack_plane(plane, shape)
