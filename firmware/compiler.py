"""The compiler: (layer weights, configuration, pass, token group) -> command stream + images.

:func:`compile_model` folds nothing itself: it takes the integer layers of
:mod:`elmoe3d.sim.golden.int_moe` (the float-to-integer folding is the golden model's, done once) and
lays out the off-chip image (:mod:`.layout`) and an empty HB image. :func:`compile_pass` emits
the command stream of one layer pass over a token group (:mod:`.isa` documents the commands):

- **verify** (the target): ``k = top_k``, FULL bits, MSB planes looked up in the expert cache
  (``FETCH msb, lookup``: a hit reads HB, a miss streams off-chip and fills HB), LSB planes
  streamed off-chip;
- **draft**: ``k = k_d``, DRAFT bits (MSB + augmentation; FULL with ``bits="full"``), choice
  ``topk`` or ``cached``; its MSB planes are *peeked* (``FETCH msb, peek``: no cache state
  changes, a miss streams from off-chip without a fill), as the Elastic-SD traffic model counts.
"""

from dataclasses import dataclass

import numpy as np

from ..errors import UserError
from ..sim.golden.int_moe import IntPass
from ..spec.isa import Bits, Choice, InstructionSet, Op, Plane, Proj, Reg, Update
from ..sim.golden.stored import FileImage, create_image
from .layout import build_image, write_image


@dataclass
class Compiled:
    """A compiled model: the command set, the off-chip and HB images (uint8 arrays, or
    :class:`~elmoe3d.sim.golden.stored.FileImage` from :func:`compile_to_files`) and the memory map."""

    isa: InstructionSet
    offchip: object
    hb: object
    map: object


def compile_model(config, layers):
    """Images of a model (a list of :class:`~elmoe3d.sim.golden.int_moe.IntMoELayer`, one per layer)."""
    if not layers:
        raise UserError("a model needs at least one layer")
    offchip, mm = build_image(config, layers)
    hb = np.zeros(mm.hb_lines * mm.line_bytes, dtype=np.uint8)
    return Compiled(InstructionSet(config), offchip, hb, mm)


def compile_to_files(config, layers, offchip_path, hb_path):
    """:func:`compile_model` with the images written to files (byte for byte the same) instead
    of held in memory: the off-chip image a block at a time (:func:`~.layout.write_image`), the
    HB image empty (all zero, a sparse file where the file system allows). Its images are
    :class:`~elmoe3d.sim.golden.stored.FileImage` of those files."""
    if not layers:
        raise UserError("a model needs at least one layer")
    mm = write_image(config, layers, offchip_path)
    return Compiled(InstructionSet(config), FileImage(offchip_path), create_image(hb_path, mm.hb_lines * mm.line_bytes), mm)


def expert_body(isa, moe_pass):
    """The loop body run per expert: fetch, multipliers, gate/up, SwiGLU, down, combine."""
    bits = Bits.DRAFT if moe_pass.draft else Bits.FULL
    body = [isa.encode(Op.FETCH, plane=Plane.MSB, update=Update.LOOKUP if moe_pass.update else Update.PEEK)]
    if bits == Bits.FULL:
        body.append(isa.encode(Op.FETCH, plane=Plane.LSB, update=Update.PEEK))
    body += [isa.encode(Op.LOADM),
             isa.encode(Op.GEMV, proj=Proj.GATE, bits=bits),
             isa.encode(Op.GEMV, proj=Proj.UP, bits=bits),
             isa.encode(Op.SWIGLU),
             isa.encode(Op.GEMV, proj=Proj.DOWN, bits=bits),
             isa.encode(Op.COMBINE)]
    return body


def compile_pass(compiled, layer, tokens, moe_pass=IntPass()):
    """The command words of one pass of layer ``layer`` over ``tokens`` tokens.

    ``moe_pass``: :class:`~elmoe3d.sim.golden.int_moe.IntPass` (bits, k, choice, and whether its MSB
    fetches update the cache: the target's do, a draft's only peek).
    """
    isa, mm = compiled.isa, compiled.map
    cfg = isa.config
    if not 0 <= layer < len(mm.layers):
        raise UserError(f"layer {layer} does not exist (the model has {len(mm.layers)})")
    if not 1 <= tokens <= cfg.buffers.tokens:
        raise UserError(f"a token group holds 1 to {cfg.buffers.tokens} tokens, got {tokens}")
    k = mm.top_k if moe_pass.k is None else moe_pass.k
    if not 1 <= k <= mm.top_k:
        raise UserError(f"experts per token k = {k} must be in [1, {mm.top_k}]")
    lm = mm.layers[layer]
    regs = [(Reg.LAYER, layer), (Reg.TOKENS, tokens), (Reg.D_MODEL, mm.d_model), (Reg.D_FFN, mm.d_ffn),
            (Reg.N_EXPERTS, mm.n_experts), (Reg.TOP_K, mm.top_k), (Reg.PLANE_LINES, lm.plane_lines),
            (Reg.X_ADDR, mm.x_addr), (Reg.Y_ADDR, mm.y_addr), (Reg.P_ADDR, lm.p_addr),
            (Reg.E_ADDR, lm.e_addr), (Reg.E_STRIDE, lm.e_stride), (Reg.HB_BASE, 0)]
    words = [isa.encode(Op.SETR, reg=r, value=v) for r, v in regs]
    words += [isa.encode(Op.LOADX), isa.encode(Op.LOADP),
              isa.encode(Op.ROUTE, k=k, choice=Choice.CACHED if moe_pass.choice == "cached" else Choice.TOPK)]
    body = expert_body(isa, moe_pass)
    words += [isa.encode(Op.EXPERTS, body=len(body))] + body
    for s in range(mm.n_shared):
        words += [isa.encode(Op.SHARED, index=s, body=len(body))] + body
    words += [isa.encode(Op.STOREY), isa.encode(Op.HALT)]
    return words
