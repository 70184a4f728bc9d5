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
the plane the expert cache maps to ``s`` (:mod:`~elmoe3d.sim.cache.expert_cache`).

:func:`build_image` fills an image in memory; :func:`write_image` writes the same bytes to a file
a section at a time, the planes a block of row bands at a time
(:func:`~elmoe3d.spec.image.row_band_blocks`), reading the weights a block at a time too (a
layer's weights may be :class:`~elmoe3d.sim.golden.stored.StoredMatrix` handles), so its memory does not
grow with the layer.
"""

from dataclasses import dataclass

import numpy as np

from ..errors import UserError
from ..sim.numerics.slices import lsb_slice, msb_slice
from ..sim.golden.stored import create_image
from ..spec.image import (MULTIPLIER, OUT_ELEMENT_BYTES, PROJECTION_SHAPES, SCALARS, TOKEN_SCALE,
                          ceil_div as _ceil, constants_block, expert_block, plane_sections,
                          row_band_blocks, tile_plane, tiled_bytes, token_scale_offset)


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


def _mults(m, e):
    return MULTIPLIER.encode(m=m, e=e).reshape(-1)


def expert_plane_blocks(config, expert, d, f):
    """An expert's planes a block of row bands at a time: ``(byte offset in the plane, MSB
    bytes, LSB bytes)`` for its gate, up and down matrices in plane order."""
    r, c = config.array.rows, config.array.cols
    sections, _ = plane_sections(r, c, d, f)
    for name in PROJECTION_SHAPES:
        off, (n, k) = sections[name]
        q = getattr(expert, name)
        for start, count, at, _ in row_band_blocks(n, k, r, c):
            rows = np.asarray(q[start:start + count])
            yield off + at, tile_plane(msb_slice(rows), r, c), tile_plane(lsb_slice(rows), r, c)


def image_sections(config, layers, mm):
    """Every written section of the off-chip image of ``layers`` (laid out by ``mm``), in
    address order: ``(byte offset, uint8 array)``; the bytes between them are zero."""
    first = layers[0]
    d, f, E, S = first.d_model, first.d_ffn, first.n_experts, len(first.shared)
    L = mm.line_bytes
    r, c = config.array.rows, config.array.cols
    for lm, layer in zip(mm.layers, layers):
        if (layer.d_model, layer.d_ffn, layer.n_experts, len(layer.shared)) != (d, f, E, S):
            raise UserError("every layer of a compiled model must have the same shape")
        a = lm.p_addr
        cb = constants_block(lm.router_lines, L)
        yield (a + cb["router_msb"]) * L, tile_plane(msb_slice(layer.router), r, c)
        yield (a + cb["router_lsb"]) * L, tile_plane(lsb_slice(layer.router), r, c)
        yield (a + cb["scalars"]) * L, SCALARS.encode(router_m=layer.router_m, router_e=layer.router_e,
                                                      hid_m=layer.hid_m, hid_e=layer.hid_e).reshape(-1)
        yield (a + cb["silu"]) * L, layer.silu.astype("<i2").view(np.uint8)
        eb = expert_block(lm.plane_lines, d, f, L)
        for e, ex in enumerate(list(layer.experts) + list(layer.shared)):
            base = lm.e_addr + e * lm.e_stride
            for at, msb, lsb in expert_plane_blocks(config, ex, d, f):
                yield (base + eb["msb"]) * L + at, msb
                yield (base + eb["lsb"]) * L + at, lsb
            yield (base + eb["mult"]) * L, np.concatenate(
                [_mults(ex.gate_m, ex.gate_e), _mults(ex.up_m, ex.up_e), _mults(ex.down_m, ex.down_e)])


def _model_map(config, layers):
    first = layers[0]
    return model_map(config, len(layers), first.n_experts, len(first.shared), first.d_model, first.d_ffn,
                     first.top_k)


def build_image(config, layers):
    """The off-chip image (uint8, in memory) and :class:`ModelMap` of a model given as a list of
    :class:`~elmoe3d.sim.golden.int_moe.IntMoELayer` (all of one shape)."""
    mm = _model_map(config, layers)
    image = np.zeros(mm.offchip_lines * mm.line_bytes, dtype=np.uint8)
    for at, data in image_sections(config, layers, mm):
        image[at:at + len(data)] = data
    return image, mm


def write_image(config, layers, path):
    """Write the off-chip image of :func:`build_image` to the file ``path``, byte for byte, a
    section (a block of a plane) at a time; returns the :class:`ModelMap`."""
    mm = _model_map(config, layers)
    create_image(path, mm.offchip_lines * mm.line_bytes)
    with open(path, "r+b") as out:
        for at, data in image_sections(config, layers, mm):
            out.seek(at)
            out.write(memoryview(np.ascontiguousarray(data)).cast("B"))
    return mm


def write_input(image, mm, x, xm, xe):
    """Host side: the token group into the X block (``image``: a uint8 array or a
    :class:`~elmoe3d.sim.golden.stored.FileImage`)."""
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
