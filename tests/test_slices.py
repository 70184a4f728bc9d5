"""Exhaustive checks of the bit slices and LSB augmentation (SPEC section 2)."""

import numpy as np
import pytest

from elmoe3d.errors import UserError
from elmoe3d.sim.numerics.slices import (augment, correction, draft_weight, join_slices, lsb_from_plane,
                                lsb_slice, msb_from_plane, msb_slice, pack_plane, split_planes,
                                truncated_weight, unpack_plane)

ALL_INT8 = np.arange(-128, 128, dtype=np.int16).astype(np.int8)


def test_split_is_exact_for_every_int8():
    h, l = msb_slice(ALL_INT8), lsb_slice(ALL_INT8)
    assert h.dtype == np.int8 and l.dtype == np.uint8
    assert (h.min(), h.max()) == (-8, 7)
    assert (l.min(), l.max()) == (0, 15)
    np.testing.assert_array_equal(16 * h.astype(int) + l, ALL_INT8.astype(int))
    np.testing.assert_array_equal(join_slices(h, l), ALL_INT8)


def test_augmentation_is_exact_for_every_int8():
    m, c = augment(msb_slice(ALL_INT8)), correction(lsb_slice(ALL_INT8))
    assert (m.min(), m.max()) == (-15, 15) and np.all(m % 2 == 1)
    assert (c.min(), c.max()) == (-8, 7)
    np.testing.assert_array_equal(8 * m.astype(int) + c, ALL_INT8.astype(int))
    # c is the stored nibble with its top bit inverted, read as a signed 4-bit value
    l = lsb_slice(ALL_INT8).astype(int)
    flipped = l ^ 0b1000
    np.testing.assert_array_equal(np.where(flipped >= 8, flipped - 16, flipped), c)
    # m is {h, 1'b1}: h shifted left with a 1 appended
    np.testing.assert_array_equal(m, (msb_slice(ALL_INT8).astype(int) << 1) | 1)


def test_products_nest_for_every_weight_and_activation_pair():
    a = ALL_INT8.astype(np.int64)[:, None]
    q = ALL_INT8.astype(np.int64)[None, :]
    m = augment(msb_slice(ALL_INT8)).astype(np.int64)[None, :]
    c = correction(lsb_slice(ALL_INT8)).astype(np.int64)[None, :]
    np.testing.assert_array_equal(a * q, 8 * a * m + a * c)
    assert 65536 == (a * q).size


def test_draft_weight_is_the_interval_midpoint():
    q = ALL_INT8.astype(int)
    err_draft = q - draft_weight(ALL_INT8)
    err_trunc = q - truncated_weight(ALL_INT8)
    assert (err_draft.min(), err_draft.max()) == (-8, 7)
    assert (err_trunc.min(), err_trunc.max()) == (0, 15)
    assert err_draft.mean() == -0.5 and err_trunc.mean() == 7.5


@pytest.mark.parametrize("n", [1, 2, 7, 64, 1001])
@pytest.mark.parametrize("seed", [0, 1])
def test_planes_round_trip(n, seed):
    rng = np.random.default_rng(seed)
    q = rng.integers(-128, 128, size=(n, 3), dtype=np.int8)
    msb, lsb = split_planes(q)
    assert msb.nbytes == lsb.nbytes == (q.size + 1) // 2, "a plane holds half the matrix's bytes"
    np.testing.assert_array_equal(msb_from_plane(msb, q.shape), msb_slice(q))
    np.testing.assert_array_equal(lsb_from_plane(lsb, q.shape), lsb_slice(q))


def test_plane_nibble_order():
    # element 2i in the low nibble, 2i+1 in the high nibble
    assert pack_plane(np.array([0x1, 0x2, 0x3], dtype=np.uint8)).tolist() == [0x21, 0x03]
    assert unpack_plane(np.array([0x21, 0x03], dtype=np.uint8), (3,)).tolist() == [1, 2, 3]


@pytest.mark.parametrize("bad, match", [
    (np.zeros(4, dtype=np.int16), "int8"),
    (np.zeros(4, dtype=np.float32), "int8"),
])
def test_slices_refuse_wrong_dtype(bad, match):
    with pytest.raises(UserError, match=match):
        msb_slice(bad)
    with pytest.raises(UserError, match=match):
        lsb_slice(bad)


def test_operands_refuse_out_of_range_slices():
    with pytest.raises(UserError, match=r"MSB slice values must lie in \[-8, 7\]"):
        augment(np.array([8], dtype=np.int8))
    with pytest.raises(UserError, match=r"LSB slice values must lie in \[0, 15\]"):
        correction(np.array([16], dtype=np.uint8))
    with pytest.raises(UserError, match="cannot hold"):
        unpack_plane(np.zeros(3, dtype=np.uint8), (8,))
