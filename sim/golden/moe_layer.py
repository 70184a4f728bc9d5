"""Reference MoE layer (SPEC section 3): router, top-k with renormalization, SwiGLU experts.

Two executions of the same layer:

- :func:`moe_float`: everything in float64, the accuracy reference;
- :func:`moe_int8`: router logits in floating point, every expert projection an INT8 GEMV of
  section 2 with activations re-quantized per token before each projection; each expert runs
  its ``full`` weights or its ``draft`` (MSB + augmentation) weights, chosen per expert.

Weights follow the ``(out_features, in_features)`` convention of :mod:`elmoe3d.sim.numerics.gemv`; tokens are rows.
"""

from dataclasses import dataclass, field

import numpy as np

from ...errors import UserError
from ..numerics.gemv import check_k, draft_gemv, full_gemv, truncated_gemv
from ..numerics.quant import dequantize, quantize_activations, quantize_weights
from ..numerics.slices import msb_slice

EXPERT_MODES = ("full", "draft", "truncated")
WEIGHT_DISTRIBUTIONS = ("gaussian", "outlier", "laplace", "uniform")


@dataclass(frozen=True)
class MoEShape:
    """Shape of one MoE layer.

    Parameters
    ----------
    d_model : int, >= 1        model (input and output) width
    n_experts : int, >= 1      routed experts
    top_k : int, 1..n_experts  experts per token
    d_ffn : int, >= 1          hidden width of each SwiGLU expert
    n_shared : int, >= 0       shared experts, always on
    """

    d_model: int = 1024
    n_experts: int = 8
    top_k: int = 2
    d_ffn: int = 2816
    n_shared: int = 0

    def __post_init__(self):
        for name in ("d_model", "n_experts", "top_k", "d_ffn"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise UserError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.n_shared, int) or self.n_shared < 0:
            raise UserError(f"n_shared must be an integer >= 0, got {self.n_shared!r}")
        if self.top_k > self.n_experts:
            raise UserError(f"top_k = {self.top_k} exceeds the number of experts ({self.n_experts})")
        check_k(max(self.d_model, self.d_ffn))

    @property
    def expert_params(self):
        """Weights of one expert (gate, up and down projections)."""
        return 3 * self.d_model * self.d_ffn


# Mixtral-8x7B's expert shape (d_model 4096, FFN 14336, 8 experts, top-2).
MIXTRAL_8X7B = MoEShape(d_model=4096, n_experts=8, top_k=2, d_ffn=14336)
DEFAULT = MoEShape()


@dataclass
class Expert:
    """One SwiGLU expert in float: ``down(silu(gate(x)) * up(x))``; gate/up (F, d), down (d, F)."""

    gate: np.ndarray
    up: np.ndarray
    down: np.ndarray


@dataclass
class QLinear:
    """An INT8 projection: weights ``q`` (int8, (N, K)) and per-channel scales ``s_w`` ((N,))."""

    q: np.ndarray
    s_w: np.ndarray

    @classmethod
    def from_float(cls, w):
        return cls(*quantize_weights(w))


@dataclass
class QExpert:
    gate: QLinear
    up: QLinear
    down: QLinear

    @classmethod
    def from_float(cls, expert):
        return cls(*(QLinear.from_float(w) for w in (expert.gate, expert.up, expert.down)))


@dataclass
class MoEWeights:
    """A layer's weights: router ``(d_model, n_experts)`` in float, routed and shared experts."""

    router: np.ndarray
    experts: list
    shared: list = field(default_factory=list)

    def quantized(self):
        return QMoEWeights(self.router, [QExpert.from_float(e) for e in self.experts],
                           [QExpert.from_float(e) for e in self.shared])


@dataclass
class QMoEWeights:
    router: np.ndarray
    experts: list
    shared: list = field(default_factory=list)


def sample_weights(shape, rng, dist="gaussian", scale=1.0):
    """Random weights of a given shape, ``scale / sqrt(fan_in)`` standard deviation.

    ``dist``: ``gaussian``; ``outlier`` (Gaussian with 0.2% of entries 4x larger, the heavy
    tails of trained LLM weights); ``laplace``; ``uniform``.
    """
    std = scale / np.sqrt(shape[-1])
    if dist == "gaussian":
        return rng.standard_normal(shape) * std
    if dist == "outlier":
        w = rng.standard_normal(shape) * std
        w[rng.random(shape) < 0.002] *= 4.0
        return w
    if dist == "laplace":
        return rng.laplace(0.0, std / np.sqrt(2.0), shape)
    if dist == "uniform":
        return rng.uniform(-np.sqrt(3.0) * std, np.sqrt(3.0) * std, shape)
    raise UserError(f"unknown weight distribution {dist!r}; choose from {', '.join(WEIGHT_DISTRIBUTIONS)}")


def random_expert(d_model, d_ffn, rng, dist="gaussian"):
    return Expert(gate=sample_weights((d_ffn, d_model), rng, dist),
                  up=sample_weights((d_ffn, d_model), rng, dist),
                  down=sample_weights((d_model, d_ffn), rng, dist))


def random_moe(shape, rng, dist="gaussian"):
    """Random float weights for a layer of the given :class:`MoEShape`."""
    return MoEWeights(
        router=sample_weights((shape.d_model, shape.n_experts), rng, "gaussian"),
        experts=[random_expert(shape.d_model, shape.d_ffn, rng, dist) for _ in range(shape.n_experts)],
        shared=[random_expert(shape.d_model, shape.d_ffn, rng, dist) for _ in range(shape.n_shared)])


def softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def silu(x):
    return x / (1.0 + np.exp(-x))


def router_probs(x, router):
    """Softmax of the router logits ``x @ W_r`` (kept in floating point), shape (T, E)."""
    return softmax(np.asarray(x, dtype=np.float64) @ router)


def top_k(probs, k):
    """Indices (T, k) of the k largest probabilities per token, best first (ties: lower index)."""
    if not 1 <= k <= probs.shape[-1]:
        raise UserError(f"top-k of {k} is impossible with {probs.shape[-1]} experts")
    return np.argsort(-probs, axis=-1, kind="stable")[:, :k]


def renormalize(probs, chosen):
    """Routing weights (T, k): the chosen experts' probabilities renormalized to sum to 1."""
    w = np.take_along_axis(probs, chosen, axis=-1)
    return w / w.sum(axis=-1, keepdims=True)


def route(x, router, k):
    """Mixtral-style routing: ``(experts (T, k), weights (T, k))``."""
    probs = router_probs(x, router)
    chosen = top_k(probs, k)
    return chosen, renormalize(probs, chosen)


def expert_float(x, e):
    return (silu(x @ e.gate.T) * (x @ e.up.T)) @ e.down.T


def linear_int8(x, ql, mode="full"):
    """One projection through the INT8 path: quantize ``x`` per token, GEMV, dequantize.

    ``mode``: ``full`` (all 8 bits), ``draft`` (MSB planes + augmentation) or ``truncated``
    (MSB planes, no augmentation: the biased baseline).
    """
    a, s_a = quantize_activations(x)
    if mode == "full":
        acc = full_gemv(ql.q, a)
    elif mode == "draft":
        acc = draft_gemv(msb_slice(ql.q), a)
    elif mode == "truncated":
        acc = truncated_gemv(msb_slice(ql.q), a)
    else:
        raise UserError(f"unknown expert mode {mode!r}; choose from {', '.join(EXPERT_MODES)}")
    return dequantize(acc, s_a, ql.s_w)


def expert_int8(x, qe, mode="full"):
    hidden = silu(linear_int8(x, qe.gate, mode)) * linear_int8(x, qe.up, mode)
    return linear_int8(hidden, qe.down, mode)


def _check_tokens(x, d_model):
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise UserError(f"tokens must be a floating-point array, got dtype {x.dtype}")
    if x.ndim != 2 or x.shape[1] != d_model:
        raise UserError(f"tokens must have shape (T, {d_model}), got {x.shape}")
    return x.astype(np.float64, copy=False)


def _moe(x, weights, k, run_expert, modes):
    x = _check_tokens(x, weights.router.shape[0])
    chosen, gates = route(x, weights.router, k)
    out = np.zeros_like(x)
    for e in np.unique(chosen):                   # each expert once, on the tokens routed to it
        tok, slot = np.nonzero(chosen == e)
        out[tok] += gates[tok, slot, None] * run_expert(x[tok], weights.experts[e], modes[e])
    for shared in weights.shared:
        out += run_expert(x, shared, "full")
    return out


def moe_float(x, weights, k):
    """Float64 MoE layer on tokens ``x`` (T, d_model)."""
    return _moe(x, weights, k, lambda xs, e, _: expert_float(xs, e), [None] * len(weights.experts))


def moe_int8(x, qweights, k, modes="full"):
    """INT8 MoE layer; ``modes`` is one mode for all experts or one per routed expert."""
    n = len(qweights.experts)
    modes = [modes] * n if isinstance(modes, str) else list(modes)
    if len(modes) != n:
        raise UserError(f"expected {n} expert modes, got {len(modes)}")
    for mode in modes:
        if mode not in EXPERT_MODES:
            raise UserError(f"unknown expert mode {mode!r}; choose from {', '.join(EXPERT_MODES)}")
    return _moe(x, qweights, k, expert_int8, modes)


def relative_rms_error(y, ref):
    """``||y - ref|| / ||ref||`` (Frobenius)."""
    return float(np.linalg.norm(y - ref) / np.linalg.norm(ref))
