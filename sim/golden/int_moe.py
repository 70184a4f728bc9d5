"""Integer MoE layer (SPEC section 7): the one definition the ISS and the RTL core match bit for bit.

Every floating-point quantity of the reference layer (:mod:`elmoe3d.sim.golden.moe_layer`) is folded offline by
:func:`fold_layer` into integers: fixed-point multipliers, a SiLU table, a power-of-two table,
fixed-point gate weights. What runs per token is integer arithmetic only. The formulas below are
normative for ``firmware/`` (the ISS) and the RTL core; the README section "Integer MoE layer"
repeats them.

Primitives
----------
- **Fixed-point multiplier** ``(m, e)`` stands for ``m * 2**-e`` with ``m`` unsigned,
  ``2**14 <= m < 2**15`` (``MANT_BITS = 15``; ``m = 0`` only for zero) and ``e >= 1``.
- ``rshift_round(v, s) = (v + 2**(s-1)) >> s``: arithmetic shift with round-half-up, ``s`` in
  ``[1, 62]``; a larger ``s`` acts as 62 (the result is then 0 for every reachable ``v``).
- ``sat(v, b) = clip(v, -(2**(b-1) - 1), 2**(b-1) - 1)``: symmetric saturation (-128 never occurs
  at 8 bits, as in SPEC section 2).
- ``requant(acc, m, e, b) = sat(rshift_round(acc * m, e), b)``, computed exactly in 64 bits:
  ``|acc| < 2**31`` and ``m < 2**30`` (a product of two mantissas) keep it below ``2**62``.

Layer (one token group of ``T <= 16`` tokens; ``d`` model width, ``F`` expert width)
-----------------------------------------------------------------------------------
Input per token: ``x`` INT8 in [-127, 127] (``d``) and its scale ``s_x`` as ``(xm, xe)``
(:func:`token_scale`; the host quantizes the normed hidden state as in SPEC section 2).

1. **Router.** ``r[e] = sum_i x_i * qr[e, i]`` (INT8 GEMV, one per-tensor router scale so the
   integer logits of a token compare across experts).
2. **Top-k.** The ``k`` largest ``r[e]``, ties to the lower expert index, best first. Choice
   ``cached`` ranks only the *allowed* experts (MSB plane resident in the HB cache) and uses
   ``min(k, allowed)`` of them; none allowed: the routed part adds nothing.
3. **Gate weights.** For chosen ``c_1..c_k`` (``c_1`` best): ``D_j = r[c_1] - r[c_j] >= 0``,
   ``u_j = rshift_round(D_j * xm * rm, xe + re)`` (the logit gap in log2 units, ``EXP_FRAC = 6``
   fraction bits), ``p_j = POW2[u_j & 63] >> (u_j >> 6)`` (``POW2[f] = round(2**16 * 2**(-f/64))``;
   a shift past 16 gives 0), ``S = sum_j p_j``, ``w_j = (p_j << 15) // S`` (``GATE_FRAC = 15``
   fraction bits; ``w_1 = 2**15`` when ``k = 1``).
4. **Expert ``e``** on the tokens that chose it (shared experts: every token, ``w = 2**15``),
   each projection a bit-nested GEMV (SPEC section 2: ``draft_gemv`` of the MSB slices in a pass
   with draft bits, shared experts included; ``full_gemv`` otherwise):

   - ``G = gemv(gate_e, x)``, ``U = gemv(up_e, x)`` (``F`` values each);
   - ``g = requant(G[f], xm * gm[f], xe + ge[f], 8)`` (INT8, the SiLU table's index);
   - ``v = requant(U[f], xm * um[f], xe + ue[f], 16)`` (INT16);
   - ``h = requant(SILU[g] * v, hm, he, 8)`` (``SILU`` an INT16 table of 256 entries, index ``g + 128``);
   - ``Y = gemv(down_e, h)`` (``d`` values);
   - ``y = requant(Y[j], dm[j], de[j], 32)``.
5. **Combine.** ``o[j] = sum over the token's experts of rshift_round(w * y[j], 15)``, summed
   exactly (a 37-bit accumulator holds it), then ``sat(o, 32)``. Output ``o`` is INT32 in units of
   the layer's ``out_scale`` (a float the host multiplies by).

Calibration (:func:`calibrate_layer`) fixes, per layer, static scales from calibration tokens: ``S_g``
(gate pre-activation / 127), ``S_u`` (up / 32767), ``S_h`` (``silu(gate) * up`` / 127) and
``S_o`` (layer output / ``2**OUT_HEADROOM_BITS``); folding (:func:`fold_layer`) then sets
``(gm, ge)[f] = fixed(s_gate[f] / S_g)``, ``(um, ue)[f] = fixed(s_up[f] / S_u)``,
``SILU[i] = round(silu(i * S_g) * 2**8 / S_g)``, ``(hm, he) = fixed(S_g * S_u / (2**8 * S_h))``,
``(dm, de)[j] = fixed(S_h * s_down[j] / S_o)`` and ``(rm, re) = fixed(s_r * log2(e) * 2**6)``.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...errors import UserError
from ...spec.numerics import (BIT_MODES, CHOICES, EXP_FRAC, GATE_FRAC, MANT_BITS, MAX_SHIFT,  # noqa: F401
                             OUT_BITS, OUT_HEADROOM_BITS, POW2, POW2_ONE, PROJECTIONS, SILU_ENTRIES,
                             SILU_FRAC, UP_BITS, XE_MAX)
from ...spec import image as image_format
from ..numerics.gemv import draft_gemv, full_gemv, int8_gemv
from ..numerics.quant import quantize_activations, quantize_weights
from ..numerics.slices import msb_slice



# -- primitives ------------------------------------------------------------------------------
def fixed(x):
    """Fixed-point multipliers ``(m, e)`` with ``x ~ m * 2**-e``, ``2**14 <= m < 2**15``, ``e >= 1``.

    ``x`` (scalar or array) must be finite, >= 0 and below ``2**14 - 2**-2`` (so that ``e >= 1``:
    from ``2**14 - 2**-2`` on, ``m`` rounds up to ``2**15`` and renormalizes to exponent 0,
    which every level refuses as an input error)."""
    x = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(x)) or np.any(x < 0):
        raise UserError("a fixed-point multiplier must be finite and >= 0")
    if np.any(x >= 2.0 ** (MANT_BITS - 1)):
        raise UserError(f"a scale ratio of {float(np.max(x)):.4g} is too large for a fixed-point "
                        f"multiplier (at most 2**{MANT_BITS - 1}): the calibration is degenerate")
    safe = np.where(x > 0, x, 1.0)
    e = (MANT_BITS - 1) - np.floor(np.log2(safe)).astype(np.int64)
    m = np.rint(safe * 2.0 ** e).astype(np.int64)
    up = m >= (1 << MANT_BITS)                      # rounding carried into the next power of two
    m, e = np.where(up, m >> 1, m), np.where(up, e - 1, e)
    m, e = np.where(x > 0, m, 0), np.where(x > 0, e, 1)
    if np.any(e < 1):                               # x in [2**14 - 2**-2, 2**14): rounded up to 2**14
        raise UserError(f"a scale ratio of {float(np.max(x)):.4g} is too large for a fixed-point "
                        f"multiplier (it rounds to 2**{MANT_BITS - 1}): the calibration is degenerate")
    if np.any(e > MAX_SHIFT):
        raise UserError(f"a scale ratio of {float(np.min(x[x > 0])):.4g} is too small for a fixed-point multiplier")
    return m.astype(np.int64), e.astype(np.int64)


def fixed_value(m, e):
    """The real value ``m * 2**-e`` of fixed-point multipliers (for reports and tests)."""
    return np.asarray(m, dtype=np.float64) * 2.0 ** (-np.asarray(e, dtype=np.float64))


def token_scale(s_x):
    """The host's fixed-point encoding ``(xm, xe)`` of per-token activation scales ``s_x`` (> 0,
    below ``2**14 - 2**-2``, see :func:`fixed`): ``s_x ~ xm * 2**-xe``, ``2**14 <= xm < 2**15``,
    ``1 <= xe``."""
    s_x = np.asarray(s_x, dtype=np.float64)
    if np.any(~(s_x > 0)):
        raise UserError("token scales must be positive")
    return fixed(s_x)


def rshift_round(v, s):
    """``(v + 2**(s-1)) >> s`` on int64, ``s`` in [1, 62] (larger acts as 62)."""
    v = np.asarray(v, dtype=np.int64)
    s = np.minimum(np.asarray(s, dtype=np.int64), MAX_SHIFT)
    if np.any(s < 1):
        raise UserError("a right shift must be at least 1")
    return (v + (np.int64(1) << (s - 1))) >> s


def sat(v, bits):
    """Symmetric saturation to ``bits``: ``[-(2**(bits-1) - 1), 2**(bits-1) - 1]``."""
    hi = (1 << (bits - 1)) - 1
    return np.clip(np.asarray(v, dtype=np.int64), -hi, hi)


def requant(acc, m, e, bits):
    """``sat(rshift_round(acc * m, e), bits)``: INT32 accumulators to a narrower integer."""
    return sat(rshift_round(np.asarray(acc, dtype=np.int64) * np.asarray(m, dtype=np.int64), e), bits)


# -- folded parameters -------------------------------------------------------------------------
@dataclass
class IntExpert:
    """One expert's integer parameters: INT8 weights ``(out, in)`` and per-channel multipliers."""

    gate: np.ndarray            # (F, d) int8
    up: np.ndarray              # (F, d) int8
    down: np.ndarray            # (d, F) int8
    gate_m: np.ndarray          # (F,) requantization multipliers, gate -> INT8
    gate_e: np.ndarray
    up_m: np.ndarray            # (F,) up -> INT16
    up_e: np.ndarray
    down_m: np.ndarray          # (d,) down -> output units
    down_e: np.ndarray


@dataclass
class IntMoELayer:
    """A whole layer folded to integers (see the module docstring for every field's role)."""

    router: np.ndarray          # (E, d) int8, one per-tensor scale
    router_m: int               # logit gap -> log2 units, with the token scale
    router_e: int
    experts: list               # IntExpert, routed
    silu: np.ndarray            # (256,) int16, index g + 128
    hid_m: int                  # SILU * up -> INT8 hidden
    hid_e: int
    out_scale: float            # host: output = o * out_scale
    top_k: int
    shared: list = field(default_factory=list)
    scales: dict = field(default_factory=dict)   # calibration (S_g, S_u, S_h, S_o, s_r), for reports

    @property
    def d_model(self):
        return self.router.shape[1]

    @property
    def n_experts(self):
        return self.router.shape[0]

    @property
    def d_ffn(self):
        return self.experts[0].gate.shape[0] if self.experts else self.shared[0].gate.shape[0]


@dataclass(frozen=True)
class IntPass:
    """One pass over a layer: ``bits`` (``full`` | ``draft``: MSB planes + augmentation for the
    experts), ``k`` experts per token (None: the layer's ``top_k``), ``choice`` (``topk`` |
    ``cached``: only experts whose MSB plane is resident), ``update``: whether the pass's plane
    fetches update the expert cache (the target's verify pass) or only peek (a draft). The
    arithmetic does not depend on ``update``."""

    bits: str = "full"
    k: int = None
    choice: str = "topk"
    update: bool = True

    def __post_init__(self):
        if self.bits not in BIT_MODES:
            raise UserError(f"pass bits must be one of {', '.join(BIT_MODES)}, got {self.bits!r}")
        if self.choice not in CHOICES:
            raise UserError(f"expert choice must be one of {', '.join(CHOICES)}, got {self.choice!r}")
        if self.k is not None and (isinstance(self.k, bool) or not isinstance(self.k, (int, np.integer)) or self.k < 1):
            raise UserError(f"experts per token must be a positive integer, got {self.k!r}")

    @property
    def draft(self):
        return self.bits == "draft"


VERIFY = IntPass()


def draft_pass(k_d, bits="draft", choice="topk"):
    """A draft pass: ``k_d`` experts, ``bits``, ``choice``; it never updates the cache."""
    return IntPass(bits=bits, k=k_d, choice=choice, update=False)


def silu_table(s_g):
    """``SILU[i] = round(silu(g * S_g) * 2**8 / S_g)`` for ``g = i - 128``, INT16."""
    g = np.arange(SILU_ENTRIES, dtype=np.float64) - SILU_ENTRIES // 2
    x = g * s_g
    y = x / (1.0 + np.exp(-x))
    return sat(np.rint(y * (1 << SILU_FRAC) / s_g), 16).astype(np.int16)


RANGE_FLOOR = 1e-12


def _calibrated(values, floor=RANGE_FLOOR):
    """Calibration range: the largest magnitude seen (never zero)."""
    return max(float(np.max(np.abs(values))) if np.size(values) else 0.0, floor)


def _expert_ranges(qe, a, sa):
    """The largest magnitudes of one expert's gate and up pre-activations, its ``silu(gate) * up``
    and its output on the calibration tokens ``a`` (INT8, scales ``sa`` (N, 1)), in float."""
    from .moe_layer import silu as silu_f

    gate = sa * qe.gate.s_w * by_row_blocks(full_gemv, qe.gate.q, a)
    up = sa * qe.up.s_w * by_row_blocks(full_gemv, qe.up.q, a)
    hidden = silu_f(gate) * up
    ha, hs = quantize_activations(hidden)
    out = hs[:, None] * qe.down.s_w * by_row_blocks(full_gemv, qe.down.q, ha)
    return [float(np.max(np.abs(v))) if np.size(v) else 0.0 for v in (gate, up, hidden, out)]


def calibrate_layer(qweights, calib_x, top_k):
    """Static scales of a layer from calibration tokens ``calib_x`` (N, d) float (normed hidden
    states): ``{"s_r", "S_g", "S_u", "S_h", "S_o"}`` (floats). Every expert sees every
    calibration token, so the ranges cover tokens the router would not send it too. The experts
    are measured one at a time (only the largest magnitudes are kept), so the weights may be
    :class:`~elmoe3d.sim.golden.stored.StoredMatrix` handles of a layer that is never in memory whole."""
    calib_x = np.asarray(calib_x, dtype=np.float64)
    if calib_x.ndim != 2 or calib_x.shape[0] == 0:
        raise UserError(f"calibration tokens must be a non-empty (N, d) array, got shape {calib_x.shape}")
    s_r = _calibrated(np.asarray(qweights.router, dtype=np.float64)) / 127.0
    a, s_a = quantize_activations(calib_x)
    sa = s_a[:, None]
    every = list(qweights.experts) + list(qweights.shared)
    g_max, u_max, h_max, o_max = (max(col) for col in zip(*(_expert_ranges(qe, a, sa) for qe in every)))
    s_g = max(g_max, RANGE_FLOOR) / 127.0
    s_u = max(u_max, RANGE_FLOOR) / ((1 << (UP_BITS - 1)) - 1)
    s_h = max(h_max, RANGE_FLOOR) / 127.0
    s_o = max(o_max, RANGE_FLOOR) * (top_k + len(qweights.shared)) / (1 << OUT_HEADROOM_BITS)
    # Keep every down multiplier below 2**13 (fixed() needs < 2**14) even for tiny experts.
    s_o = max(s_o, s_h * max(float(np.max(qe.down.s_w)) for qe in every) / (1 << (MANT_BITS - 2)))
    return {"s_r": s_r, "S_g": s_g, "S_u": s_u, "S_h": s_h, "S_o": s_o}


SCALE_KEYS = ("s_r", "S_g", "S_u", "S_h", "S_o")


def fold_layer(qweights, scales, top_k):
    """Fold a quantized layer (:class:`~elmoe3d.sim.golden.moe_layer.QMoEWeights`, float router) with its static
    ``scales`` (:func:`calibrate_layer`) into an :class:`IntMoELayer`."""
    try:
        s_r, s_g, s_u, s_h, s_o = (float(scales[k]) for k in SCALE_KEYS)
    except (KeyError, TypeError, ValueError):
        raise UserError(f"layer scales must map {', '.join(SCALE_KEYS)} to numbers, got {scales!r}") from None
    if not all(np.isfinite(v) and v > 0 for v in (s_r, s_g, s_u, s_h, s_o)):
        raise UserError(f"layer scales must be positive and finite, got {scales!r}")
    qr = np.clip(np.rint(np.asarray(qweights.router, dtype=np.float64).T / s_r), -127, 127).astype(np.int8)

    def expert(qe):
        gm, ge = fixed(qe.gate.s_w / s_g)
        um, ue = fixed(qe.up.s_w / s_u)
        dm, de = fixed(s_h * qe.down.s_w / s_o)
        return IntExpert(qe.gate.q, qe.up.q, qe.down.q, gm, ge, um, ue, dm, de)

    rm, re = fixed(s_r * np.log2(np.e) * (1 << EXP_FRAC))
    hm, he = fixed(s_g * s_u / ((1 << SILU_FRAC) * s_h))
    return IntMoELayer(router=qr, router_m=int(rm), router_e=int(re),
                       experts=[expert(qe) for qe in qweights.experts], silu=silu_table(s_g),
                       hid_m=int(hm), hid_e=int(he), out_scale=s_o, top_k=top_k,
                       shared=[expert(qe) for qe in qweights.shared], scales=dict(zip(SCALE_KEYS, (s_r, s_g, s_u, s_h, s_o))))


# -- the layer, step by step ------------------------------------------------------------------
def router_logits(layer, x):
    """Integer router logits ``(T, E)``: an INT8 GEMV."""
    return int8_gemv(layer.router, x).astype(np.int64)


def select_experts(logits, k, allowed=None):
    """Top-``k`` experts per token ``(T, k')``, best first, ties to the lower index.

    ``allowed`` (E,) bool restricts the choice (``cached``); ``k' = min(k, allowed.sum())``."""
    logits = np.asarray(logits, dtype=np.int64)
    n_exp = logits.shape[1]
    if not 1 <= k <= n_exp:
        raise UserError(f"top-k of {k} is impossible with {n_exp} experts")
    if allowed is not None:
        allowed = np.asarray(allowed, dtype=bool)
        if allowed.shape != (n_exp,):
            raise UserError(f"allowed experts must be a mask of shape ({n_exp},), got {allowed.shape}")
        k = min(k, int(allowed.sum()))
        if k == 0:
            return np.zeros((logits.shape[0], 0), dtype=np.int64)
        # Disallowed experts rank below every allowed one; the order among allowed is unchanged.
        logits = np.where(allowed, logits, -(np.int64(1) << 40))   # below any INT32 logit
    return np.argsort(-logits, axis=1, kind="stable")[:, :k].astype(np.int64)


def gate_weights(layer, logits, chosen, xm, xe):
    """Fixed-point gate weights ``(T, k')`` (``GATE_FRAC`` fraction bits) over the chosen experts."""
    if chosen.shape[1] == 0:
        return np.zeros(chosen.shape, dtype=np.int64)
    r = np.take_along_axis(logits, chosen, axis=1)
    gap = r[:, :1] - r
    u = rshift_round(gap * (np.asarray(xm, dtype=np.int64)[:, None] * layer.router_m),
                     np.asarray(xe, dtype=np.int64)[:, None] + layer.router_e)
    shift = u >> EXP_FRAC
    p = np.where(shift > 16, 0, POW2[u & ((1 << EXP_FRAC) - 1)] >> np.minimum(shift, 16))
    return (p << GATE_FRAC) // p.sum(axis=1, keepdims=True)


def by_row_blocks(gemv, q, x):
    """``gemv(q, x)`` computed on blocks of at most ``spec.image.BLOCK_WEIGHTS`` weights (whole
    rows of ``q``, a numpy array or a :class:`~elmoe3d.sim.golden.stored.StoredMatrix`) put side by side: the same
    integers, with temporaries (the GEMV's float64 operand) bounded whatever the matrix's size."""
    n, k = q.shape
    step = max(1, image_format.BLOCK_WEIGHTS // max(k, 1))
    if n <= step:
        return gemv(np.asarray(q), x)
    return np.concatenate([gemv(q[i:i + step], x) for i in range(0, n, step)], axis=-1)


def _draft(q, x):
    return draft_gemv(msb_slice(q), x)


def projection(q, x, draft):
    """One bit-nested GEMV: ``draft_gemv`` of the MSB slices in a draft pass, else ``full_gemv``."""
    return by_row_blocks(_draft if draft else full_gemv, q, x).astype(np.int64)


def swiglu(layer, e, acc_gate, acc_up, xm, xe):
    """INT8 hidden ``(n, F)`` of expert ``e`` from its gate and up accumulators."""
    xm, xe = np.asarray(xm, np.int64)[:, None], np.asarray(xe, np.int64)[:, None]
    g = requant(acc_gate, xm * e.gate_m, xe + e.gate_e, 8)
    v = requant(acc_up, xm * e.up_m, xe + e.up_e, UP_BITS)
    return requant(layer.silu.astype(np.int64)[g + SILU_ENTRIES // 2] * v, layer.hid_m, layer.hid_e, 8)


def expert_output(e, acc_down):
    """Expert output ``(n, d)`` in the layer's output units (INT32)."""
    return requant(acc_down, e.down_m, e.down_e, OUT_BITS)


def combine(y, w):
    """One gated term ``rshift_round(w * y, GATE_FRAC)`` of the output sum."""
    return rshift_round(np.asarray(w, dtype=np.int64)[:, None] * y, GATE_FRAC)


def run_expert(layer, e, x, xm, xe, draft):
    """The expert's output ``(n, d)`` on tokens ``x`` (n, d): gate/up, SwiGLU, down, requant."""
    h = swiglu(layer, e, projection(e.gate, x, draft), projection(e.up, x, draft), xm, xe)
    return expert_output(e, projection(e.down, h.astype(np.int8), draft))


@dataclass
class IntResult:
    """Output ``out`` (T, d) INT32 (units of ``out_scale``), the routing ``chosen`` (T, k') and
    gate weights ``weights`` (T, k'), and the router logits (T, E)."""

    out: np.ndarray
    chosen: np.ndarray
    weights: np.ndarray
    logits: np.ndarray


def check_layer(layer):
    """Refuse a layer whose multiplier exponents include 0 (``router_e``, ``hid_e``, any table
    exponent): :func:`fixed` never makes one, so it is a corrupt layer; the ISS and the core
    refuse the same constants with ``INPUT`` at ``LOADP`` / ``LOADM``."""
    if layer.router_e < 1 or layer.hid_e < 1:
        raise UserError(f"layer multiplier exponents must be >= 1, got router_e = {layer.router_e}, "
                        f"hid_e = {layer.hid_e}")
    for e in list(layer.experts) + list(layer.shared):
        if min(np.min(e.gate_e), np.min(e.up_e), np.min(e.down_e)) < 1:
            raise UserError("expert multiplier exponents must be >= 1, got 0")


def check_inputs(layer, x, xm, xe):
    x = np.asarray(x)
    if x.dtype != np.int8 or x.ndim != 2 or x.shape[1] != layer.d_model:
        raise UserError(f"layer input must be int8 of shape (T, {layer.d_model}), got {x.dtype} {x.shape}")
    if x.size and x.min() < -127:
        raise UserError("layer input must lie in [-127, 127] (symmetric INT8); got -128")
    xm, xe = np.asarray(xm, dtype=np.int64), np.asarray(xe, dtype=np.int64)
    if xm.shape != (x.shape[0],) or xe.shape != (x.shape[0],):
        raise UserError(f"token scales must have shape ({x.shape[0]},)")
    if np.any(xm < 0) or np.any(xm >= 1 << MANT_BITS) or np.any(xe < 1) or np.any(xe > XE_MAX):
        raise UserError(f"token scales must have 0 <= xm < 2**{MANT_BITS} and 1 <= xe <= {XE_MAX}")
    return x, xm, xe


def int_moe(layer, x, xm, xe, moe_pass=VERIFY, allowed=None):
    """The integer MoE layer on a token group: :class:`IntResult`.

    ``x`` (T, d) int8, ``(xm, xe)`` (T,) token scales (:func:`token_scale`), ``allowed`` (E,)
    bool for the ``cached`` choice (required then, ignored otherwise).
    """
    check_layer(layer)
    x, xm, xe = check_inputs(layer, x, xm, xe)
    k = layer.top_k if moe_pass.k is None else moe_pass.k
    if k > layer.top_k:
        raise UserError(f"experts per token k = {k} exceeds the layer's top_k = {layer.top_k}")
    if moe_pass.choice == "cached" and allowed is None:
        raise UserError("the cached expert choice needs the mask of resident experts")
    logits = router_logits(layer, x)
    chosen = select_experts(logits, k, allowed if moe_pass.choice == "cached" else None)
    weights = gate_weights(layer, logits, chosen, xm, xe)
    acc = np.zeros((x.shape[0], layer.d_model), dtype=np.int64)
    for e in np.unique(chosen):
        tok, slot = np.nonzero(chosen == e)
        y = run_expert(layer, layer.experts[e], x[tok], xm[tok], xe[tok], moe_pass.draft)
        np.add.at(acc, tok, combine(y, weights[tok, slot]))
    for e in layer.shared:                               # shared experts: every token, weight 1
        acc += run_expert(layer, e, x, xm, xe, moe_pass.draft)
    return IntResult(sat(acc, OUT_BITS), chosen, weights, logits)


def quantize_tokens(h):
    """The host side of the layer input: INT8 tokens and their fixed-point scales."""
    a, s_a = quantize_activations(np.atleast_2d(h))
    xm, xe = token_scale(s_a)
    return a, xm, xe


# -- a random layer, a block of rows at a time ------------------------------------------------------
CALIBRATION_TOKENS = 64


def random_int_layer(shape, seed, store=None, calib_tokens=CALIBRATION_TOKENS):
    """The integer layer of a random Gaussian layer of :class:`~elmoe3d.sim.golden.moe_layer.MoEShape` ``shape``
    (what ``elmoe3d compile --random`` compiles), built a block of rows at a time.

    Bit for bit ``fold_layer(qw, calibrate_layer(qw, rng.standard_normal((calib_tokens, d)), k), k)``
    with ``qw = random_moe(shape, rng).quantized()`` and ``rng = np.random.default_rng(seed)``:
    the same draws in the same order (a Gaussian block of rows continues the stream exactly
    where the previous block stopped) and per-output-channel quantization is per row. With
    ``store`` (a :class:`~elmoe3d.sim.golden.stored.MatrixStore`) the INT8 weights go to its file and the layer
    holds :class:`~elmoe3d.sim.golden.stored.StoredMatrix` handles: no float or INT8 copy of the whole layer is
    ever in memory."""
    from .moe_layer import QExpert, QLinear, QMoEWeights, sample_weights

    rng = np.random.default_rng(seed)
    d, f = shape.d_model, shape.d_ffn
    router = sample_weights((d, shape.n_experts), rng)

    def matrix(n, k):
        step = max(1, image_format.BLOCK_WEIGHTS // k)
        blocks, scales = [], []
        if store is not None:
            store.begin((n, k), np.int8)
        for start in range(0, n, step):
            q, s_w = quantize_weights(sample_weights((min(step, n - start), k), rng))
            scales.append(s_w)
            if store is None:
                blocks.append(q)
            else:
                store.append(q)
        return QLinear(np.concatenate(blocks) if store is None else store.end(), np.concatenate(scales))

    def expert():
        return QExpert(matrix(f, d), matrix(f, d), matrix(d, f))

    experts = [expert() for _ in range(shape.n_experts)]
    shared = [expert() for _ in range(shape.n_shared)]
    qw = QMoEWeights(router, experts, shared)
    return fold_layer(qw, calibrate_layer(qw, rng.standard_normal((calib_tokens, d)), shape.top_k), shape.top_k)


# -- the scales file beside a weights file ------------------------------------------------------
def scales_path(weights_path):
    """``<stem>.int_scales.json`` beside a weights file ``<stem>.npz``."""
    p = Path(weights_path)
    return p.with_name(p.stem + ".int_scales.json")


def save_int_scales(path, scales, source=""):
    """Write per-layer static scales (a list of dicts) as JSON, with how they were measured."""
    Path(path).write_text(json.dumps({"source": source, "layers": scales}, indent=1) + "\n")


def load_int_scales(path):
    """Per-layer static scales from :func:`save_int_scales`'s JSON (one-line errors)."""
    try:
        data = json.loads(Path(path).read_text())
        layers = data["layers"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"cannot read integer MoE scales {path}: {exc}") from None
    if not isinstance(layers, list) or not all(isinstance(x, dict) for x in layers):
        raise UserError(f"integer MoE scales {path}: 'layers' must be a list of objects")
    return layers
