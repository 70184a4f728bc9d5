"""Expert-cache traces: random and Zipf-skewed generators and recorded routing traces.

A *trace* is a list of ``(op, Key, score)`` (``sim/cache/expert_cache.py``: ``Op``, ``Key``); the score
is the router probability quantized to ``score_bits`` (``round(p * (2**score_bits - 1))``).

Recorded routing trace format (``.npz``, written by the language-model side)
----------------------------------------------------------------------------
One row per (decode step, MoE layer), in execution order:

================  ===========  =====================================================
array             shape/dtype  meaning
================  ===========  =====================================================
``step``          (T,) int     decode step (token position) of the row
``layer``         (T,) int     MoE layer index, 0-based
``experts``       (T, k) int   routed experts of the target pass, best first
``scores``        (T, k) float their router probabilities (softmax, before renormalization)
``n_experts``     () int       experts per layer
``n_layers``      () int       MoE layers
``draft_experts`` (T, kd) int  optional: the draft's experts for the same row (prefetch hints)
``draft_scores``  (T, kd) float optional: their router probabilities
================  ===========  =====================================================

Rows with several sequences of a batch simply follow one another.

The language model's own JSON Lines traces (``elmoe3d sd --traces``, ``sim/cache/routing_trace.py``) are
read too (:func:`routing_file_ops`): every token of a ``prefill`` or ``target`` pass looks up its
experts, every token of a ``draft`` pass prefetches the MSB planes of the experts the draft ran
(the draft's routing predicts the verifier's); scores are the router probabilities. :func:`routing_to_ops` turns the
rows into cache operations: for each row, first a ``PREFETCH`` of every draft expert's MSB plane
(when the arrays exist and ``prefetch`` is on), then a ``LOOKUP`` of every routed expert's MSB
plane (and its LSB plane with ``planes="both"``).
"""

from pathlib import Path

import numpy as np

from ...errors import UserError
from .expert_cache import Key, Op, Plane

REQUIRED = ("layer", "experts", "scores")


def quantize_score(p, score_bits):
    top = (1 << score_bits) - 1
    return int(min(top, max(0, round(float(p) * top))))


def zipf_popularity(n, alpha):
    """Probabilities ``~ 1 / rank**alpha`` over ``n`` items (``alpha = 0`` is uniform)."""
    if alpha < 0:
        raise UserError(f"Zipf alpha must be >= 0, got {alpha}")
    w = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** alpha
    return w / w.sum()


def zipf_routing(*, n_layers, n_experts, top_k, steps, alpha, seed=0, draft_k=0, draft_accuracy=0.8):
    """A synthetic routing trace with the recorded format's arrays (a dict).

    Each layer has its own random permutation of expert popularity, Zipf(``alpha``); a token draws
    ``top_k`` distinct experts with those probabilities; the scores are the renormalized
    probabilities with Dirichlet noise. With ``draft_k``, a draft prediction per row: each of the
    first ``draft_k`` target experts is kept with probability ``draft_accuracy``, otherwise replaced
    by another popular expert.
    """
    if top_k > n_experts:
        raise UserError(f"top_k ({top_k}) must be <= n_experts ({n_experts})")
    if draft_k > top_k:
        raise UserError(f"draft_k ({draft_k}) must be <= top_k ({top_k})")
    rng = np.random.default_rng(seed)
    pop = zipf_popularity(n_experts, alpha)
    perms = np.stack([rng.permutation(n_experts) for _ in range(n_layers)])
    rows = steps * n_layers
    layer = np.tile(np.arange(n_layers), steps)
    step = np.repeat(np.arange(steps), n_layers)
    p_rows = pop[perms[layer]]                               # (rows, n_experts)
    # top_k distinct experts drawn with probabilities p (Gumbel top-k = sampling without replacement)
    keys = np.log(p_rows) + rng.gumbel(size=p_rows.shape)
    chosen = np.argsort(-keys, axis=1, kind="stable")[:, :top_k]
    noise = rng.gamma(4.0, size=(rows, top_k))
    s = np.take_along_axis(p_rows, chosen, 1) * noise / noise.sum(1, keepdims=True)
    order = np.argsort(-s, axis=1, kind="stable")
    experts = np.take_along_axis(chosen, order, 1).astype(np.int64)
    s = np.take_along_axis(s, order, 1)
    scores = s / s.sum(1, keepdims=True)
    draft = experts[:, :draft_k].copy()
    if draft_k:
        other = np.argmax(np.log(p_rows)[:, None, :] + rng.gumbel(size=(rows, draft_k, n_experts)), axis=2)
        miss = rng.random((rows, draft_k)) >= draft_accuracy
        draft[miss] = other[miss]
    out = {"step": step, "layer": layer, "experts": experts, "scores": scores,
           "n_experts": np.int64(n_experts), "n_layers": np.int64(n_layers)}
    if draft_k:
        out["draft_experts"] = draft
        out["draft_scores"] = scores[:, :draft_k].copy()
    return out


def save_routing(path, trace):
    """Write a routing trace (a dict of the arrays above) as ``.npz``."""
    np.savez_compressed(path, **trace)


def load_routing(path):
    """Read and check a recorded routing trace; returns a dict of numpy arrays."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            trace = {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read routing trace {path}: {exc}") from None
    missing = [k for k in REQUIRED if k not in trace]
    if missing:
        raise UserError(f"routing trace {path} lacks array(s) {', '.join(missing)}; "
                        f"it has {', '.join(sorted(trace)) or 'none'}")
    t = len(trace["layer"])
    if trace["experts"].ndim != 2 or trace["experts"].shape[0] != t or trace["scores"].shape != trace["experts"].shape:
        raise UserError(f"routing trace {path}: experts and scores must both be (T, k) with T = len(layer) = {t}, "
                        f"got {trace['experts'].shape} and {trace['scores'].shape}")
    if "n_experts" not in trace:
        trace["n_experts"] = np.int64(int(trace["experts"].max()) + 1 if t else 1)
    if "n_layers" not in trace:
        trace["n_layers"] = np.int64(int(trace["layer"].max()) + 1 if t else 1)
    if t and (trace["experts"].min() < 0 or trace["experts"].max() >= int(trace["n_experts"])):
        raise UserError(f"routing trace {path}: expert ids must be in [0, {int(trace['n_experts'])})")
    return trace


def routing_to_ops(trace, *, score_bits=8, planes="msb", prefetch=True):
    """Cache operations ``[(op, Key, score)]`` from a routing trace (see the module docstring)."""
    if planes not in ("msb", "both"):
        raise UserError(f"planes must be 'msb' or 'both', got {planes!r}")
    ops = []
    has_draft = prefetch and "draft_experts" in trace
    for r in range(len(trace["layer"])):
        layer = int(trace["layer"][r])
        if has_draft:
            ds = trace.get("draft_scores")
            for j, e in enumerate(trace["draft_experts"][r]):
                s = quantize_score(ds[r, j], score_bits) if ds is not None else 0
                ops.append((Op.PREFETCH, Key(layer, int(e), Plane.MSB), s))
        for e, p in zip(trace["experts"][r], trace["scores"][r]):
            s = quantize_score(p, score_bits)
            ops.append((Op.LOOKUP, Key(layer, int(e), Plane.MSB), s))
            if planes == "both":
                ops.append((Op.LOOKUP, Key(layer, int(e), Plane.LSB), s))
    return ops


def random_ops(config, n, *, seed=0, alpha=1.0, n_keys=None, p_prefetch=0.1, p_pin=0.05, p_unpin=0.05):
    """A random mix of all four operations over a Zipf-skewed key population.

    ``n_keys`` keys (default ``3 * entries``) are drawn from the key space with Zipf(``alpha``)
    popularity; pins are balanced by unpins of pinned keys so the cache rarely pins solid (but
    sometimes does, so bypasses are exercised).
    """
    rng = np.random.default_rng(seed)
    n_keys = n_keys or 3 * config.entries
    space = config.n_layers * config.n_experts * 2
    n_keys = min(n_keys, space)
    ids = rng.choice(space, size=n_keys, replace=False)
    keys = [Key(int(i) // (2 * config.n_experts), (int(i) // 2) % config.n_experts, int(i) % 2) for i in ids]
    pop = zipf_popularity(n_keys, alpha)
    picks = rng.choice(n_keys, size=n, p=pop)
    kinds = rng.random(n)
    scores = rng.integers(0, 1 << config.score_bits, size=n)
    pinned = []
    ops = []
    for i in range(n):
        k = keys[picks[i]]
        u = kinds[i]
        if u < p_prefetch:
            ops.append((Op.PREFETCH, k, int(scores[i])))
        elif u < p_prefetch + p_pin:
            ops.append((Op.PIN, k, int(scores[i])))
            pinned.append(k)
        elif u < p_prefetch + p_pin + p_unpin:
            k = pinned.pop(int(rng.integers(len(pinned)))) if pinned else k
            ops.append((Op.UNPIN, k, 0))
        else:
            ops.append((Op.LOOKUP, k, int(scores[i])))
    return ops


def zipf_ops(config, *, steps, n_layers=None, n_experts=None, top_k=2, alpha=1.0, seed=0,
             draft_k=0, planes="msb"):
    """Cache operations of a synthetic Zipf routing trace that fits ``config``'s key widths."""
    trace = zipf_routing(n_layers=n_layers or config.n_layers, n_experts=n_experts or config.n_experts,
                         top_k=top_k, steps=steps, alpha=alpha, seed=seed, draft_k=draft_k)
    return routing_to_ops(trace, score_bits=config.score_bits, planes=planes, prefetch=draft_k > 0)


def _jsonl_ops(path, score_bits, planes, prefetch):
    """Cache operations of the language model's JSON Lines trace, as ``elmoe3d sd`` counts them.

    A pass loads each expert that any of its tokens uses once (the union over the batch and
    positions), so each pass record gives one operation per *unique* expert, in ascending order
    of the expert's mean router probability over the pass's tokens (its most important experts
    end most recently used), with that mean as the score: the order and scores of
    ``sim/sd/elastic_sd.py``. Target and prefill passes look up; draft passes prefetch.
    """
    from .routing_trace import read_trace
    header, records = read_trace(path)
    ops = []
    rows = 0
    for rec in records:
        layer = int(rec["layer"])
        rows += len(rec["experts"])
        draft = rec["kind"] == "draft"
        if (draft and not prefetch) or not rec["experts"]:
            continue
        used = sorted({int(e) for experts in rec["experts"] for e in experts})
        mean = np.asarray(rec["scores"], dtype=np.float64)[:, used].mean(axis=0)
        for e, p in sorted(zip(used, mean), key=lambda pair: pair[1]):
            s = quantize_score(p, score_bits)
            if draft:
                ops.append((Op.PREFETCH, Key(layer, e, Plane.MSB), s))
                continue
            ops.append((Op.LOOKUP, Key(layer, e, Plane.MSB), s))
            if planes == "both":
                ops.append((Op.LOOKUP, Key(layer, e, Plane.LSB), s))
    return ops, int(header["n_layers"]), int(header["n_experts"]), rows


def routing_file_ops(path, *, score_bits=8, planes="msb", prefetch=True):
    """``(ops, n_layers, n_experts, rows)`` of a recorded trace: ``.npz`` (this module's format) or
    the language model's JSON Lines (``.jsonl``)."""
    path = Path(path)
    if path.suffix == ".jsonl":
        try:
            return _jsonl_ops(path, score_bits, planes, prefetch)
        except (KeyError, TypeError, IndexError, ValueError) as exc:
            if isinstance(exc, UserError):
                raise
            raise UserError(f"routing trace {path}: malformed record ({exc!r})") from None
    trace = load_routing(path)
    return (routing_to_ops(trace, score_bits=score_bits, planes=planes, prefetch=prefetch),
            int(trace["n_layers"]), int(trace["n_experts"]), len(trace["layer"]))
