"""Memory images: where every plane, table and token block lives (SPEC section 8).

Addresses are in *image lines* of ``config.line_bytes`` bytes (the larger of the HB and off-chip
lines; each tier's line divides it and the PE array's beat). Every section starts on a line.

Off-chip image, per layer ``l`` (in order), then the I/O area::

    constants block (P_ADDR):  router MSB plane | router LSB plane | scalars | SiLU table
    expert blocks (E_ADDR + e * E_STRIDE, routed experts 0..E-1 then shared E..E+S-1):
        MSB plane (PLANE_LINES) | LSB plane (PLANE_LINES) | multipliers (gate F, up F, down d)
    I/O: input block X (tokens, then token scales) | output block Y

The byte-level format of each section (plane tiling and nibble order, the scalar, multiplier
and token-scale records, the SiLU table, the Y block) is defined once in
:mod:`elmoe3d.spec.image`; this module only places the sections and fills them.

- **X**: ``buffers.tokens`` rows of ``d`` int8 (row ``t`` at byte ``t*d``), then, from the next
  line (:func:`~elmoe3d.spec.image.token_scale_offset`), one token-scale record per token.
  **Y**: ``buffers.tokens x d`` little-endian int32.

HB image: ``cache.entries`` slots of ``PLANE_LINES`` lines from ``HB_BASE = 0``; slot ``s`` holds
the plane the expert cache maps to ``s`` (:mod:`~elmoe3d.sim.expert_cache`).
"""

from dataclasses import dataclass

import numpy as np

from ..errors import UserError
from ..sim.slices import lsb_slice, msb_slice
from ..spec.image import (MULTIPLIER, OUT_ELEMENT_BYTES, SCALARS, TOKEN_SCALE,
                          ceil_div as _ceil, constants_block, expert_block, plane_sections,
                          tile_plane, tiled_bytes, token_scale_offset)


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


def model_map(config, n_layers, n_experts, n_shared, d, f, top_k):
    """Compute the memory map (no data) and check the model fits the configuration."""
    L = config.line_bytes
    r, c = config.array.rows, config.array.cols
    _, plane_bytes = plane_sections(r, c, d, f)
    plane_lines = _ceil(plane_bytes, L)
    config.check_model(n_layers=n_layers, n_experts=n_experts, n_shared=n_shared, d_model=d, d_ffn=f,
                       top_k=top_k, plane_bytes=plane_lines * L)
    router_lines = _ceil(tiled_bytes(n_experts, d, r, c), L)
    const_lines = constants_block(router_lines, L)["lines"]
    e_stride = expert_block(plane_lines, d, f, L)["lines"]
    layers, addr = [], 0
    for _ in range(n_layers):
        layers.append(LayerMap(addr, addr + const_lines, e_stride, plane_lines, router_lines))
        addr += const_lines + (n_experts + n_shared) * e_stride
    G = config.buffers.tokens
    scale_offset = token_scale_offset(G, d, L)
    x_addr = addr
    y_addr = x_addr + _ceil(scale_offset + G * TOKEN_SCALE.size, L)
    total = y_addr + _ceil(G * d * OUT_ELEMENT_BYTES, L)
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
    return MULTIPLIER.encode(m=m, e=e).tobytes()


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
        cb = constants_block(lm.router_lines, L)
        _put(image, L, a + cb["router_msb"], tile_plane(msb_slice(layer.router), r, c))
        _put(image, L, a + cb["router_lsb"], tile_plane(lsb_slice(layer.router), r, c))
        _put(image, L, a + cb["scalars"], SCALARS.encode(router_m=layer.router_m, router_e=layer.router_e,
                                                         hid_m=layer.hid_m, hid_e=layer.hid_e).tobytes())
        _put(image, L, a + cb["silu"], layer.silu.astype("<i2").tobytes())
        eb = expert_block(lm.plane_lines, d, f, L)
        for e, ex in enumerate(list(layer.experts) + list(layer.shared)):
            base = lm.e_addr + e * lm.e_stride
            msb, lsb = expert_planes(config, ex, d, f)
            _put(image, L, base + eb["msb"], msb)
            _put(image, L, base + eb["lsb"], lsb)
            _put(image, L, base + eb["mult"],
                 _mults(ex.gate_m, ex.gate_e) + _mults(ex.up_m, ex.up_e) + _mults(ex.down_m, ex.down_e))
    return image, mm


def write_input(image, mm, x, xm, xe):
    """Host side: the token group into the X block."""
    T, d = x.shape
    L = mm.line_bytes
    base = mm.x_addr * L
    image[base:base + T * d] = np.asarray(x, dtype=np.int8).view(np.uint8).reshape(-1)
    sc = TOKEN_SCALE.encode(xm=xm, xe=xe)
    image[base + mm.scale_offset:base + mm.scale_offset + sc.size] = sc.reshape(-1)


def read_output(image, mm, T):
    """Host side: the layer output (T, d) INT32 from the Y block."""
    base = mm.y_addr * mm.line_bytes
    return np.frombuffer(image[base:base + T * mm.d_model * OUT_ELEMENT_BYTES].tobytes(), dtype="<i4").reshape(T, mm.d_model).astype(np.int64)
