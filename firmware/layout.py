"""Memory images: where every plane, table and token block lives (SPEC section 8).

Addresses are in *image lines* of ``config.line_bytes`` bytes (the larger of the HB and off-chip
lines; each tier's line divides it and the PE array's beat). Every section starts on a line.

Off-chip image, per layer ``l`` (in order), then the I/O area::

    constants block (P_ADDR):  router MSB plane | router LSB plane | scalars | SiLU table
    expert blocks (E_ADDR + e * E_STRIDE, routed experts 0..E-1 then shared E..E+S-1):
        MSB plane (PLANE_LINES) | LSB plane (PLANE_LINES) | multipliers (gate F, up F, down d)
    I/O: input block X (tokens, then token scales) | output block Y

- **Planes** (:func:`tile_plane`): a matrix ``(N, K)`` of 4-bit slices is padded with zeros to
  ``rows x cols`` tiles and stored tile by tile, row tiles outermost, each tile one PE-array
  beat (``[row][col]`` nibbles, :func:`~elmoe3d.sim.slices.pack_plane` order). An expert plane is
  its gate, up and down matrices in that order; the router's planes hold ``(E, d)``.
- **Scalars**: ``router_m`` (u16) ``router_e`` (u8) pad (u8) ``hid_m`` (u16) ``hid_e`` (u8) pad (u8).
- **SiLU table**: 256 little-endian int16, index ``g + 128``.
- **Multipliers**: per channel 4 bytes, ``m`` (u16), ``e`` (u8), pad (u8).
- **X**: ``buffers.tokens`` rows of ``d`` int8 (row ``t`` at byte ``t*d``), then per token 4 bytes
  ``xm`` (u16), ``xe`` (u8), pad. **Y**: ``buffers.tokens x d`` little-endian int32.

HB image: ``cache.entries`` slots of ``PLANE_LINES`` lines from ``HB_BASE = 0``; slot ``s`` holds
the plane the expert cache maps to ``s`` (:mod:`~elmoe3d.sim.expert_cache`).
"""

from dataclasses import dataclass

import numpy as np

from ..errors import UserError
from ..sim.slices import lsb_slice, msb_slice, pack_plane, unpack_plane

SCALAR_BYTES = 8
MULT_BYTES = 4


def _ceil(a, b):
    return -(-a // b)


def tiled_shape(n, k, rows, cols):
    return _ceil(n, rows) * rows, _ceil(k, cols) * cols


def tiled_bytes(n, k, rows, cols):
    pn, pk = tiled_shape(n, k, rows, cols)
    return pn * pk // 2


def tile_plane(nibbles, rows, cols):
    """Bytes of a ``(N, K)`` nibble matrix laid out as PE-array beats (see the module docstring)."""
    n, k = nibbles.shape
    pn, pk = tiled_shape(n, k, rows, cols)
    padded = np.zeros((pn, pk), dtype=np.uint8)
    padded[:n, :k] = np.asarray(nibbles).astype(np.uint8) & 0xF
    tiles = padded.reshape(pn // rows, rows, pk // cols, cols).transpose(0, 2, 1, 3)
    return pack_plane(tiles.reshape(-1))


def untile_plane(data, n, k, rows, cols):
    """Inverse of :func:`tile_plane`: the unsigned nibbles ``(N, K)``."""
    pn, pk = tiled_shape(n, k, rows, cols)
    flat = unpack_plane(np.frombuffer(bytes(data), dtype=np.uint8), (pn * pk,))
    return flat.reshape(pn // rows, pk // cols, rows, cols).transpose(0, 2, 1, 3).reshape(pn, pk)[:n, :k]


def signed_nibbles(u):
    """MSB slices (int8, [-8, 7]) from unsigned nibbles."""
    return (np.asarray(u, dtype=np.uint8) << 4).view(np.int8) >> 4     # sign-extend the 4-bit field


@dataclass(frozen=True)
class LayerMap:
    """Where one layer lives in the off-chip image (image lines)."""

    p_addr: int
    e_addr: int
    e_stride: int
    plane_lines: int
    router_lines: int        # lines of one router plane


@dataclass(frozen=True)
class ModelMap:
    """The memory map of a compiled model: shapes, per-layer maps, the I/O blocks, image sizes."""

    line_bytes: int
    d_model: int
    d_ffn: int
    n_experts: int
    n_shared: int
    top_k: int
    layers: tuple
    x_addr: int
    y_addr: int
    offchip_lines: int
    hb_lines: int
    scale_offset: int        # bytes from X to the token scales

    def to_dict(self):
        d = {k: v for k, v in self.__dict__.items() if k != "layers"}
        d["layers"] = [lm.__dict__ for lm in self.layers]
        return d


def plane_sections(config, d, f):
    """Byte offset and shape ``(N, K)`` of the gate, up and down matrices inside an expert plane."""
    r, c = config.array.rows, config.array.cols
    out, off = {}, 0
    for name, shape in (("gate", (f, d)), ("up", (f, d)), ("down", (d, f))):
        out[name] = (off, shape)
        off += tiled_bytes(*shape, r, c)
    return out, off


def model_map(config, n_layers, n_experts, n_shared, d, f, top_k):
    """Compute the memory map (no data) and check the model fits the configuration."""
    L = config.line_bytes
    r, c = config.array.rows, config.array.cols
    _, plane_bytes = plane_sections(config, d, f)
    plane_lines = _ceil(plane_bytes, L)
    config.check_model(n_layers=n_layers, n_experts=n_experts, n_shared=n_shared, d_model=d, d_ffn=f,
                       top_k=top_k, plane_bytes=plane_lines * L)
    router_lines = _ceil(tiled_bytes(n_experts, d, r, c), L)
    const_lines = 2 * router_lines + _ceil(SCALAR_BYTES, L) + _ceil(512, L)
    mult_lines = _ceil(MULT_BYTES * (2 * f + d), L)
    e_stride = 2 * plane_lines + mult_lines
    layers, addr = [], 0
    for _ in range(n_layers):
        layers.append(LayerMap(addr, addr + const_lines, e_stride, plane_lines, router_lines))
        addr += const_lines + (n_experts + n_shared) * e_stride
    G = config.buffers.tokens
    scale_offset = _ceil(G * d, L) * L
    x_addr = addr
    y_addr = x_addr + _ceil(scale_offset + G * MULT_BYTES, L)
    total = y_addr + _ceil(G * d * 4, L)
    off_need = total * (L // config.offchip.line_bytes)
    if off_need > config.offchip.lines:
        raise UserError(f"offchip.lines = {config.offchip.lines} cannot hold the model's image ({off_need} lines)")
    return ModelMap(L, d, f, n_experts, n_shared, top_k, tuple(layers), x_addr, y_addr, total,
                    config.cache.entries * plane_lines, scale_offset)


def _put(image, line_bytes, addr, data):
    data = np.frombuffer(bytes(data), dtype=np.uint8)
    start = addr * line_bytes
    image[start:start + len(data)] = data


def _mults(m, e):
    out = np.zeros((len(m), MULT_BYTES), dtype=np.uint8)
    m = np.asarray(m, dtype=np.int64)
    out[:, 0], out[:, 1], out[:, 2] = m & 0xFF, m >> 8, np.asarray(e, dtype=np.int64)
    return out.tobytes()


def expert_planes(config, expert, d, f):
    """``(msb_bytes, lsb_bytes)`` of one expert's planes."""
    r, c = config.array.rows, config.array.cols
    mats = (expert.gate, expert.up, expert.down)
    msb = b"".join(tile_plane(msb_slice(q), r, c) for q in mats)
    lsb = b"".join(tile_plane(lsb_slice(q), r, c) for q in mats)
    return msb, lsb


def build_image(config, layers):
    """The off-chip image (uint8) and :class:`ModelMap` of a model given as a list of
    :class:`~elmoe3d.sim.int_moe.IntMoELayer` (all of one shape)."""
    first = layers[0]
    d, f, E, S = first.d_model, first.d_ffn, first.n_experts, len(first.shared)
    mm = model_map(config, len(layers), E, S, d, f, first.top_k)
    L = mm.line_bytes
    r, c = config.array.rows, config.array.cols
    image = np.zeros(mm.offchip_lines * L, dtype=np.uint8)
    for lm, layer in zip(mm.layers, layers):
        if (layer.d_model, layer.d_ffn, layer.n_experts, len(layer.shared)) != (d, f, E, S):
            raise UserError("every layer of a compiled model must have the same shape")
        a = lm.p_addr
        _put(image, L, a, tile_plane(msb_slice(layer.router), r, c))
        _put(image, L, a + lm.router_lines, tile_plane(lsb_slice(layer.router), r, c))
        scal = np.zeros(SCALAR_BYTES, dtype=np.uint8)
        scal[0:2] = np.frombuffer(int(layer.router_m).to_bytes(2, "little"), np.uint8)
        scal[2] = layer.router_e
        scal[4:6] = np.frombuffer(int(layer.hid_m).to_bytes(2, "little"), np.uint8)
        scal[6] = layer.hid_e
        _put(image, L, a + 2 * lm.router_lines, scal.tobytes())
        _put(image, L, a + 2 * lm.router_lines + _ceil(SCALAR_BYTES, L), layer.silu.astype("<i2").tobytes())
        for e, ex in enumerate(list(layer.experts) + list(layer.shared)):
            base = lm.e_addr + e * lm.e_stride
            msb, lsb = expert_planes(config, ex, d, f)
            _put(image, L, base, msb)
            _put(image, L, base + lm.plane_lines, lsb)
            _put(image, L, base + 2 * lm.plane_lines,
                 _mults(ex.gate_m, ex.gate_e) + _mults(ex.up_m, ex.up_e) + _mults(ex.down_m, ex.down_e))
    return image, mm


def write_input(image, mm, x, xm, xe):
    """Host side: the token group into the X block."""
    T, d = x.shape
    L = mm.line_bytes
    base = mm.x_addr * L
    image[base:base + T * d] = np.asarray(x, dtype=np.int8).view(np.uint8).reshape(-1)
    sc = np.zeros((T, MULT_BYTES), dtype=np.uint8)
    xm = np.asarray(xm, dtype=np.int64)
    sc[:, 0], sc[:, 1], sc[:, 2] = xm & 0xFF, xm >> 8, np.asarray(xe, dtype=np.int64)
    image[base + mm.scale_offset:base + mm.scale_offset + T * MULT_BYTES] = sc.reshape(-1)


def read_output(image, mm, T):
    """Host side: the layer output (T, d) INT32 from the Y block."""
    base = mm.y_addr * mm.line_bytes
    return np.frombuffer(image[base:base + T * mm.d_model * 4].tobytes(), dtype="<i4").reshape(T, mm.d_model).astype(np.int64)
