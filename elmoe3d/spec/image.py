"""The memory-image format: how planes, constants, multipliers and token blocks are laid out.

The compiler (``firmware/layout.py``) writes images in this format, the ISS (``sim/machine/iss.py``)
reads them, the RTL core (``hw/executor/``) fetches them line by line and the benches check
them; all of them take the sizes, field offsets and tiling from here. ``docs/memory-image.md``
describes the same format for someone with only the Verilog.

Bytes and lines
---------------
Every multi-byte field is little-endian. A *line* of a tier (off-chip or HB) is
``line_bytes`` consecutive image bytes; byte ``i`` of a line is bits ``[8i+7 : 8i]`` of the line's
data word on the RTL's line streams (the lowest address in the lowest bits).

Planes
------
A plane holds 4-bit slices, two per byte: element ``2i`` in the low nibble of byte ``i``,
``2i + 1`` in the high nibble (:func:`pack_plane`). A matrix ``(N, K)`` of slices is padded with
zeros to whole ``rows x cols`` tiles and stored tile by tile, row tiles outermost, each tile one
PE-array beat of ``rows * cols`` nibbles in ``[row][col]`` order (:func:`tile_plane`). An expert
plane is its gate ``(F, d)``, up ``(F, d)`` and down ``(d, F)`` matrices in that order, each
starting on the byte after the previous one (:func:`plane_sections`).

Records
-------
- :data:`SCALARS` (8 bytes, a layer's constants): ``router_m`` u16, ``router_e`` u8, pad u8,
  ``hid_m`` u16, ``hid_e`` u8, pad u8;
- :data:`MULTIPLIER` (4 bytes, one output channel's requantizer): ``m`` u16, ``e`` u8, pad u8;
- :data:`TOKEN_SCALE` (4 bytes, one token's activation scale): ``xm`` u16, ``xe`` u8, pad u8;
- the SiLU table: :data:`SILU_ENTRIES` little-endian int16, entry ``g + 128`` for INT8 ``g``;
- the output block: ``tokens x d`` little-endian int32, row-major.
"""

from dataclasses import dataclass

import numpy as np

from ..errors import UserError
from .numerics import SILU_ENTRIES, SLICE_BITS

NIBBLE_MASK = (1 << SLICE_BITS) - 1
SILU_ENTRY_BYTES = 2
SILU_BYTES = SILU_ENTRIES * SILU_ENTRY_BYTES
OUT_ELEMENT_BYTES = 4          # the Y block's int32 elements
X_ELEMENT_BYTES = 1            # the X block's int8 elements


@dataclass(frozen=True)
class Record:
    """A little-endian record of unsigned fields: ``fields`` is ``((name, byte_offset, nbytes), ...)``
    and ``size`` the record's bytes (the rest is zero padding)."""

    name: str
    fields: tuple
    size: int

    def bits(self):
        """``{name: (bit_offset, bit_width)}``: where each field sits in the record read as one
        little-endian integer (what the RTL slices out of a line)."""
        return {n: (8 * off, 8 * nb) for n, off, nb in self.fields}

    def encode(self, **columns):
        """``(n, size)`` uint8 records from integer arrays (or scalars) per field."""
        n = max(np.size(v) for v in columns.values())
        out = np.zeros((n, self.size), dtype=np.uint8)
        for name, off, nb in self.fields:
            v = np.broadcast_to(np.asarray(columns[name], dtype=np.int64), (n,))
            if np.any(v < 0) or np.any(v >= (1 << (8 * nb))):
                raise UserError(f"{self.name}.{name} must be in [0, {(1 << (8 * nb)) - 1}]")
            for b in range(nb):
                out[:, off + b] = (v >> (8 * b)) & 0xFF
        return out

    def decode(self, raw):
        """``{field: int64 array}`` from ``n * size`` bytes (any uint8 array or bytes)."""
        recs = np.frombuffer(bytes(raw), dtype=np.uint8).reshape(-1, self.size).astype(np.int64)
        return {name: sum(recs[:, off + b] << (8 * b) for b in range(nb)) for name, off, nb in self.fields}


SCALARS = Record("scalars", (("router_m", 0, 2), ("router_e", 2, 1), ("hid_m", 4, 2), ("hid_e", 6, 1)), 8)
MULTIPLIER = Record("multiplier", (("m", 0, 2), ("e", 2, 1)), 4)
TOKEN_SCALE = Record("token_scale", (("xm", 0, 2), ("xe", 2, 1)), 4)
SCALAR_BYTES = SCALARS.size
MULT_BYTES = MULTIPLIER.size
PROJECTION_SHAPES = ("gate", "up", "down")


def ceil_div(a, b):
    return -(-a // b)


def pack_plane(nibbles):
    """Pack 4-bit values (any integer dtype; only the low 4 bits are kept) into a plane.

    Returns a flat uint8 array of ``ceil(n / 2)`` bytes: element ``2i`` in the low nibble of byte
    ``i``, element ``2i + 1`` in its high nibble (a trailing odd element pairs with a zero nibble).
    """
    flat = np.asarray(nibbles).reshape(-1).astype(np.uint8) & NIBBLE_MASK
    if flat.size % 2:
        flat = np.append(flat, np.uint8(0))
    return (flat[0::2] | (flat[1::2] << SLICE_BITS)).astype(np.uint8)


def unpack_plane(plane, shape):
    """Inverse of :func:`pack_plane`: unsigned nibbles (uint8, [0, 15]) of the given shape."""
    plane = np.asarray(plane)
    if plane.dtype != np.uint8 or plane.ndim != 1:
        raise UserError(f"a plane must be a 1-D uint8 array, got {plane.dtype} of shape {plane.shape}")
    count = int(np.prod(shape))
    if plane.size != (count + 1) // 2:
        raise UserError(f"a plane of {plane.size} bytes cannot hold {count} nibbles")
    nib = np.empty(plane.size * 2, dtype=np.uint8)
    nib[0::2], nib[1::2] = plane & NIBBLE_MASK, plane >> SLICE_BITS
    return nib[:count].reshape(shape)


def signed_nibbles(u):
    """MSB slices (int8, [-8, 7]) from unsigned nibbles."""
    return (np.asarray(u, dtype=np.uint8) << 4).view(np.int8) >> 4     # sign-extend the 4-bit field


def tiled_shape(n, k, rows, cols):
    """The ``(N, K)`` matrix padded to whole ``rows x cols`` tiles."""
    return ceil_div(n, rows) * rows, ceil_div(k, cols) * cols


def tiled_bytes(n, k, rows, cols):
    """Bytes of an ``(n, k)`` slice matrix stored as tiles."""
    pn, pk = tiled_shape(n, k, rows, cols)
    return pn * pk // 2


def tile_plane(nibbles, rows, cols):
    """Bytes of a ``(N, K)`` nibble matrix laid out as PE-array beats (row tiles outermost)."""
    n, k = nibbles.shape
    pn, pk = tiled_shape(n, k, rows, cols)
    padded = np.zeros((pn, pk), dtype=np.uint8)
    padded[:n, :k] = np.asarray(nibbles).astype(np.uint8) & NIBBLE_MASK
    tiles = padded.reshape(pn // rows, rows, pk // cols, cols).transpose(0, 2, 1, 3)
    return pack_plane(tiles.reshape(-1))


def untile_plane(data, n, k, rows, cols):
    """Inverse of :func:`tile_plane`: the unsigned nibbles ``(N, K)``."""
    pn, pk = tiled_shape(n, k, rows, cols)
    flat = unpack_plane(np.frombuffer(bytes(data), dtype=np.uint8), (pn * pk,))
    return flat.reshape(pn // rows, pk // cols, rows, cols).transpose(0, 2, 1, 3).reshape(pn, pk)[:n, :k]


# The compiler, the ISS and the golden layer handle a weight matrix a block of whole rows at a
# time (of a plane: whole row bands), at most this many weights (nibbles) per block, or one band
# if a band is larger: a block's float64 GEMV operand is then 8 MiB whatever the layer's size
# (docs/scale.md, "Compiler and ISS memory"; 4x larger blocks measured no faster, with 3x the
# system time: allocations past glibc's 32 MiB mmap threshold are page-faulted in afresh each time).
BLOCK_WEIGHTS = 1 << 20


def row_band_blocks(n, k, rows, cols, nibbles=None):
    """The tiled plane of an ``(n, k)`` slice matrix cut into blocks of whole row bands, in
    plane order: ``(row_start, row_count, byte_offset, byte_count)`` per block. Row tiles are
    outermost, so rows ``row_start ..`` of the matrix are the ``byte_count`` bytes from
    ``byte_offset``: ``tile_plane`` of those rows, and ``untile_plane`` of those bytes with
    ``row_count`` rows. A block has at most ``max(nibbles, one band)`` nibbles (default
    :data:`BLOCK_WEIGHTS`)."""
    _, pk = tiled_shape(n, k, rows, cols)
    step = max(1, (nibbles or BLOCK_WEIGHTS) // (rows * pk)) * rows
    for start in range(0, n, step):
        count = min(step, n - start)
        yield start, count, start * pk // 2, ceil_div(count, rows) * rows * pk // 2


def plane_sections(rows, cols, d, f):
    """``({projection: (byte_offset, (N, K))}, plane_bytes)``: the gate, up and down matrices
    inside an expert plane for a ``rows x cols`` PE array, model width ``d``, expert width ``f``."""
    out, off = {}, 0
    for name, shape in zip(PROJECTION_SHAPES, ((f, d), (f, d), (d, f))):
        out[name] = (off, shape)
        off += tiled_bytes(*shape, rows, cols)
    return out, off


def constants_block(router_lines, line_bytes):
    """Line offsets inside a layer's constants block and its length in lines:
    router MSB plane | router LSB plane | scalars | SiLU table, each starting on a line."""
    scal = 2 * router_lines
    silu = scal + ceil_div(SCALAR_BYTES, line_bytes)
    return {"router_msb": 0, "router_lsb": router_lines, "scalars": scal, "silu": silu,
            "lines": silu + ceil_div(SILU_BYTES, line_bytes)}


def expert_block(plane_lines, d, f, line_bytes):
    """Line offsets inside an expert's block: MSB plane | LSB plane | multipliers (gate F, up F,
    down d), and its length (the expert stride) in lines."""
    mult = 2 * plane_lines
    return {"msb": 0, "lsb": plane_lines, "mult": mult,
            "lines": mult + ceil_div(MULT_BYTES * (2 * f + d), line_bytes)}


def token_scale_offset(tokens, d, line_bytes):
    """Byte offset of the token scales inside the X block (after ``tokens x d`` int8, rounded
    up to a line)."""
    return ceil_div(tokens * d * X_ELEMENT_BYTES, line_bytes) * line_bytes
