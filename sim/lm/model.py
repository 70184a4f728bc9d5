"""Decoder-only MoE language model in numpy: the golden model Elastic-SD runs on.

Network (pre-norm, the PyTorch twin is :class:`elmoe3d.sim.lm.train.MoELM`)::

    x = tok_emb[byte]
    for each layer:  x += wo(attention(RoPE(wq h), RoPE(wk h), wv h)),  h = RMSNorm(x)
                     x += MoE(RMSNorm(x))                       # SPEC section 3
    logits = lm_head(RMSNorm(x))

Every pass takes a **batch** of sequences (1 to 16, any lengths): each sequence appends zero or
more new bytes to its own rows of a :class:`~elmoe3d.sim.lm.kv_cache.KVCache`. All new tokens of all sequences
are stacked into one ``(T, d_model)`` matrix for the projections and the MoE FFN, so an expert
runs once per pass on every token routed to it (the union of the batch's experts is what a
pass loads); attention runs per sequence against its cached keys and values.

An :class:`Execution` says how a pass computes:

- ``int8=True`` (the target of SPEC section 4): every projection (attention, experts, LM head)
  is an INT8 GEMV of the golden model (:func:`~elmoe3d.sim.golden.moe_layer.linear_int8`: activations quantized per
  token, :func:`~elmoe3d.sim.numerics.gemv.full_gemv`, dequantized); the router, RMSNorm, RoPE, the attention
  score/value products (activation x activation) and the embedding lookup stay in float64.
  ``int8=False`` is the float64 reference.
- ``expert_bits``: ``full`` or ``draft`` (MSB planes + LSB augmentation, :func:`~elmoe3d.sim.numerics.gemv.draft_gemv`)
  for the experts; ``dense_bits`` the same for the attention projections and the LM head.
- ``k``: experts per token (the draft's budget ``k_d``); ``None`` means the model's ``top_k``.
- ``int_moe``: every MoE layer on the integer path of SPEC section 7 (:mod:`elmoe3d.sim.golden.int_moe`): the host
  quantizes the normed hidden state per token (INT8 and a fixed-point scale), the layer runs in
  integers (router, top-k, gate weights, SwiGLU, combine) and its INT32 output is dequantized
  by the layer's ``out_scale`` into the residual stream. The layer runs on
  :attr:`MoELM.moe_engine`: the golden :func:`~elmoe3d.sim.golden.int_moe.int_moe` by default, or any engine with
  the same call (the instruction-set simulator, ``elmoe3d.firmware.engine``).

``allowed`` (per layer, a boolean mask over experts) restricts the choice to the experts whose
MSB planes are in the HB cache: the draft's ``cached`` expert choice. Routing weights are always
renormalized over the experts actually used.
"""

from dataclasses import dataclass, field

import numpy as np

from ...errors import UserError
from .blas_threads import single_threaded
from .kv_cache import KVCache
from .config import LMConfig, load_weights, weight_shapes
from ..golden.int_moe import IntPass, calibrate_layer, fold_layer, int_moe, load_int_scales, quantize_tokens
from ..golden.int_moe import scales_path as int_scales_path
from ..golden.moe_layer import (Expert, QExpert, QLinear, QMoEWeights, expert_float, expert_int8,
                        linear_int8, renormalize, router_probs, softmax, top_k)

BIT_MODES = ("full", "draft")
MAX_BATCH = 16
DENSE_KEYS = ("wq", "wk", "wv", "wo")


@dataclass(frozen=True)
class Execution:
    """How one forward pass computes (see the module docstring).

    Parameters
    ----------
    int8 : bool               INT8 golden GEMVs (True) or float64 (False)
    expert_bits : str         ``full`` | ``draft`` for expert projections (INT8 only)
    dense_bits : str          ``full`` | ``draft`` for attention projections and LM head (INT8 only)
    k : int or None           experts per token, 1 .. top_k; None = the model's top_k
    """

    int8: bool = True
    expert_bits: str = "full"
    dense_bits: str = "full"
    k: int = None
    int_moe: bool = False

    def __post_init__(self):
        for name in ("expert_bits", "dense_bits"):
            if getattr(self, name) not in BIT_MODES:
                raise UserError(f"unknown {name.replace('_', ' ')} {getattr(self, name)!r}; "
                                f"choose from {', '.join(BIT_MODES)}")
        if not self.int8 and (self.expert_bits, self.dense_bits) != ("full", "full"):
            raise UserError("draft bit modes need the INT8 path (int8=True)")
        if self.k is not None and (not isinstance(self.k, (int, np.integer)) or self.k < 1):
            raise UserError(f"experts per token must be a positive integer, got {self.k!r}")
        if self.int_moe and not self.int8:
            raise UserError("the integer MoE path needs the INT8 path (int8=True)")


TARGET = Execution()
FLOAT = Execution(int8=False)
INT_TARGET = Execution(int_moe=True)


@dataclass
class Routing:
    """One MoE layer's routing in one pass: ``chosen`` (T, k_used) expert ids, best first;
    ``probs`` (T, E) router softmax over all experts (the scores traces record)."""

    chosen: np.ndarray
    probs: np.ndarray


@dataclass
class ForwardResult:
    """Logits per sequence (``(n_b, 256)`` each, float64) and the routing of every layer.

    ``seq_of_token`` (T,) names the sequence of each stacked token, in the order of the rows of
    ``routing[layer].chosen``; ``positions`` (T,) their positions in their sequences."""

    logits: list
    routing: list = field(default_factory=list)
    seq_of_token: np.ndarray = None
    positions: np.ndarray = None
    moe_inputs: list = None


def rms_norm(x, gain, eps):
    """``x / sqrt(mean(x^2) + eps) * gain`` over the last axis."""
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * gain


def rope(x, positions, base):
    """Rotary embedding of ``x`` (T, H, hd) at integer ``positions`` (T,): the pair
    ``(x[i], x[i + hd/2])`` rotates by ``position * base**(-2i/hd)`` (GPT-NeoX layout)."""
    hd = x.shape[-1]
    inv = base ** (-np.arange(hd // 2, dtype=np.float64) * 2 / hd)
    ang = positions[:, None].astype(np.float64) * inv[None, :]
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
    return np.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)


class MoELM:
    """The numpy MoE transformer.

    Parameters
    ----------
    cfg : LMConfig
    weights : dict of float arrays, the :func:`~elmoe3d.sim.lm.config.weight_shapes` layout

    Use :meth:`load` for a weights file and :meth:`new_cache` for a batch's KV cache.
    """

    def __init__(self, cfg, weights, meta=None):
        if not isinstance(cfg, LMConfig):
            raise UserError(f"cfg must be an LMConfig, got {type(cfg).__name__}")
        for key, shape in weight_shapes(cfg).items():
            if key not in weights:
                raise UserError(f"weights lack {key!r}")
            if np.shape(weights[key]) != shape:
                raise UserError(f"weight {key} has shape {np.shape(weights[key])}, expected {shape}")
        self.cfg, self.meta = cfg, dict(meta or {})
        self.w = {k: np.asarray(weights[k], dtype=np.float64) for k in weight_shapes(cfg)}
        self.q = {}  # INT8 weights of every projection, quantized once
        for i in range(cfg.n_layers):
            for name in DENSE_KEYS:
                self.q[f"layers.{i}.{name}"] = QLinear.from_float(self.w[f"layers.{i}.{name}"])
        self.q["lm_head"] = QLinear.from_float(self.w["lm_head"])
        self.experts = [[Expert(*(self.w[f"layers.{i}.{p}"][e] for p in ("gate", "up", "down")))
                         for e in range(cfg.n_experts)] for i in range(cfg.n_layers)]
        self.qexperts = [[QExpert.from_float(e) for e in layer] for layer in self.experts]
        self.int_scales = None      # per layer, the static scales of the integer MoE path
        self._int_layers = None
        self.moe_engine = self.golden_engine

    # -- the integer MoE path (SPEC section 7) -----------------------------------------------
    def qlayer(self, layer):
        """Layer ``layer``'s MoE weights, quantized (:class:`~elmoe3d.sim.golden.moe_layer.QMoEWeights`)."""
        return QMoEWeights(self.w[f"layers.{layer}.router"], self.qexperts[layer])

    def set_int_scales(self, scales):
        """Use per-layer static scales (a list of :func:`~elmoe3d.sim.golden.int_moe.calibrate_layer` dicts)."""
        if not isinstance(scales, (list, tuple)) or len(scales) != self.cfg.n_layers:
            raise UserError(f"integer MoE scales must be a list of {self.cfg.n_layers} layers")
        self._int_layers = [fold_layer(self.qlayer(i), sc, self.cfg.top_k) for i, sc in enumerate(scales)]
        self.int_scales = [dict(layer.scales) for layer in self._int_layers]

    def calibrate_int(self, windows):
        """Fix the integer path's static scales from the MoE inputs of TARGET passes over
        ``windows`` (n, L) bytes; returns them (what :meth:`set_int_scales` takes)."""
        windows = np.asarray(windows)
        inputs = [[] for _ in range(self.cfg.n_layers)]
        for start in range(0, len(windows), MAX_BATCH):
            chunk = windows[start:start + MAX_BATCH]
            res = self.forward(list(chunk), self.new_cache(len(chunk)), TARGET, capture=True)
            for i, h in enumerate(res.moe_inputs):
                inputs[i].append(h)
        scales = [calibrate_layer(self.qlayer(i), np.concatenate(h), self.cfg.top_k) for i, h in enumerate(inputs)]
        self.set_int_scales(scales)
        return self.int_scales

    @property
    def int_layers(self):
        """The folded integer layers (:class:`~elmoe3d.sim.golden.int_moe.IntMoELayer`), one per MoE layer."""
        if self._int_layers is None:
            raise UserError("the integer MoE path needs calibrated scales: load a model with its "
                            "scales file, or call calibrate_int()")
        return self._int_layers

    def golden_engine(self, layer, x, xm, xe, moe_pass, allowed):
        """The default engine of the integer path: the golden :func:`~elmoe3d.sim.golden.int_moe.int_moe`."""
        return int_moe(self.int_layers[layer], x, xm, xe, moe_pass, allowed)

    @classmethod
    def load(cls, path):
        """A model from a weights file (:func:`~elmoe3d.sim.lm.config.load_weights`; clear errors), with the
        integer path's scales from ``<stem>.int_scales.json`` beside it when that file exists."""
        cfg, weights, meta = load_weights(path)
        model = cls(cfg, weights, meta)
        scales = int_scales_path(path)
        if scales.exists():
            model.set_int_scales(load_int_scales(scales))
        return model

    # -- sizes the traffic model needs ------------------------------------------------------
    @property
    def plane_bytes(self):
        """Bytes of one expert's MSB (or LSB) plane: 4 bits per weight."""
        return self.cfg.expert_params // 2

    @property
    def dense_plane_bytes(self):
        """Bytes of one 4-bit plane of all dense projections (attention and LM head)."""
        d = self.cfg.d_model
        return (self.cfg.n_layers * 4 * d * d + self.cfg.vocab * d) // 2

    def new_cache(self, batch):
        """An empty KV cache for ``batch`` sequences (1 .. 16)."""
        if not 1 <= batch <= MAX_BATCH:
            raise UserError(f"batch must hold 1 to {MAX_BATCH} sequences, got {batch}")
        c = self.cfg
        return KVCache(c.n_layers, batch, c.n_heads, c.head_dim, c.max_seq)

    # -- building blocks ---------------------------------------------------------------------
    def _proj(self, x, key, execution, bits):
        if not execution.int8:
            return x @ self.w[key].T
        return linear_int8(x, self.q[key], bits)

    def _attention(self, layer, h, cache, counts, positions, execution):
        c, p = self.cfg, f"layers.{layer}."
        T = h.shape[0]
        q, k, v = (self._proj(h, p + n, execution, execution.dense_bits).reshape(T, c.n_heads, c.head_dim)
                   for n in ("wq", "wk", "wv"))
        q, k = rope(q, positions, c.rope_base), rope(k, positions, c.rope_base)
        out = np.empty_like(q)
        start = 0
        for b, n in enumerate(counts):
            if n == 0:
                continue
            rows = slice(start, start + n)
            keys, values = cache.write(layer, b, k[rows].transpose(1, 0, 2), v[rows].transpose(1, 0, 2))
            scores = q[rows].transpose(1, 0, 2) @ keys.transpose(0, 2, 1) / np.sqrt(c.head_dim)
            future = np.arange(keys.shape[1])[None, :] > positions[rows][:, None]   # causal mask
            scores = np.where(future[None], -np.inf, scores)
            out[rows] = (softmax(scores) @ values).transpose(1, 0, 2)
            start += n
        return self._proj(out.reshape(T, c.d_model), p + "wo", execution, execution.dense_bits)

    def _moe(self, layer, h, execution, allowed):
        """MoE FFN of SPEC section 3 with the draft's expert budget and allowed set."""
        c = self.cfg
        probs = router_probs(h, self.w[f"layers.{layer}.router"])
        k = c.top_k if execution.k is None else execution.k
        if k > c.top_k:
            raise UserError(f"experts per token k = {k} exceeds the model's top_k = {c.top_k}")
        if execution.int_moe:
            a, xm, xe = quantize_tokens(h)
            # The target (k None, full bits) updates the expert cache; a draft only peeks.
            moe_pass = IntPass(bits=execution.expert_bits, k=k, choice="topk" if allowed is None else "cached",
                               update=execution.k is None and execution.expert_bits == "full")
            mask = None if allowed is None else np.asarray(allowed, dtype=bool)
            res = self.moe_engine(layer, a, xm, xe, moe_pass, mask)
            return res.out * self._int_layers[layer].out_scale, Routing(res.chosen, probs)
        scores = probs
        if allowed is not None:
            allowed = np.asarray(allowed, dtype=bool)
            if allowed.shape != (c.n_experts,):
                raise UserError(f"allowed experts must be a mask of shape ({c.n_experts},), got {allowed.shape}")
            k = min(k, int(allowed.sum()))
            scores = np.where(allowed, probs, -1.0)     # disallowed experts rank last
        out = np.zeros_like(h)
        if k == 0:                                      # no expert usable: the FFN adds nothing
            return out, Routing(np.zeros((h.shape[0], 0), dtype=np.int64), probs)
        chosen = top_k(scores, k)
        gates = renormalize(probs, chosen)
        for e in np.unique(chosen):
            tok, slot = np.nonzero(chosen == e)
            if execution.int8:
                y = expert_int8(h[tok], self.qexperts[layer][e], execution.expert_bits)
            else:
                y = expert_float(h[tok], self.experts[layer][e])
            out[tok] += gates[tok, slot, None] * y
        return out, Routing(chosen, probs)

    # -- the pass ----------------------------------------------------------------------------
    def forward(self, new_tokens, cache, execution=TARGET, allowed=None, capture=False):
        """Append ``new_tokens[b]`` (bytes, 1-D ints, possibly empty) to sequence ``b`` of
        ``cache`` and return their logits and routing (:class:`ForwardResult`).

        ``allowed``: None, or per layer a boolean mask (n_experts,) of the usable experts.
        ``capture``: also return each MoE layer's input (the normed hidden state, (T, d)).
        """
        c = self.cfg
        if len(new_tokens) != cache.batch:
            raise UserError(f"got tokens for {len(new_tokens)} sequences, the cache holds {cache.batch}")
        toks = [np.asarray(t).reshape(-1) for t in new_tokens]
        for b, t in enumerate(toks):
            if t.size and (not np.issubdtype(t.dtype, np.integer) or t.min() < 0 or t.max() >= c.vocab):
                raise UserError(f"sequence {b}: tokens must be integers in [0, {c.vocab}), got {t[:8]}")
        counts = np.array([t.size for t in toks], dtype=np.int64)
        if counts.sum() == 0:
            raise UserError("a forward pass needs at least one token")
        if allowed is not None and len(allowed) != c.n_layers:
            raise UserError(f"allowed needs one mask per layer ({c.n_layers}), got {len(allowed)}")
        cache.reserve(cache.lengths + counts)
        seq_of = np.repeat(np.arange(cache.batch), counts)
        positions = np.concatenate([np.arange(L, L + n) for L, n in zip(cache.lengths, counts)])
        x = self.w["tok_emb"][np.concatenate(toks).astype(np.int64)]
        routing, inputs = [], []
        for i in range(c.n_layers):
            p = f"layers.{i}."
            x = x + self._attention(i, rms_norm(x, self.w[p + "attn_norm"], c.norm_eps), cache,
                                    counts, positions, execution)
            h = rms_norm(x, self.w[p + "ffn_norm"], c.norm_eps)
            if capture:
                inputs.append(h)
            y, r = self._moe(i, h, execution, None if allowed is None else allowed[i])
            x = x + y
            routing.append(r)
        cache.advance(counts)
        logits = self._proj(rms_norm(x, self.w["norm"], c.norm_eps), "lm_head", execution,
                            execution.dense_bits)
        return ForwardResult(np.split(logits, np.cumsum(counts)[:-1]), routing, seq_of, positions,
                             inputs if capture else None)

    def logits(self, sequences, execution=TARGET):
        """Logits of every position of whole sequences (a fresh cache): a list of (n_b, 256)."""
        cache = self.new_cache(len(sequences))
        return self.forward(sequences, cache, execution).logits


def bits_per_byte(model, windows, execution=TARGET, batch=MAX_BATCH):
    """Mean next-byte cross-entropy in bits over windows ``(n, L)`` (positions 1 .. L-1)."""
    windows = np.asarray(windows)
    total, count = 0.0, 0
    with single_threaded():
        for start in range(0, len(windows), batch):
            chunk = windows[start:start + batch]
            for w, logits in zip(chunk, model.logits([w[:-1] for w in chunk], execution)):
                z = logits - logits.max(axis=-1, keepdims=True)
                logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
                total -= logp[np.arange(len(w) - 1), w[1:]].sum()
                count += len(w) - 1
    return total / count / np.log(2)
