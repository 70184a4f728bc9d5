"""Elastic self-speculative decoding (SPEC section 4) on the numpy MoE model, with baselines.

Three methods share one harness (:func:`generate`) and one traffic model:

- ``plain``: one target pass per generated token per sequence;
- ``elastic``: the draft is the target itself with an expert budget ``k_d``, a bit mode for the
  experts (``draft`` = MSB planes + augmentation) and optionally for the dense parts, and an
  expert choice ``topk`` (best ``k_d`` by router score) or ``cached`` (best ``k_d`` among experts
  whose MSB plane is in the HB cache). It shares the target's KV cache: drafted positions are
  written and then overwritten by the verification pass, so committed positions always hold the
  target's keys and values;
- ``separate``: SD with a separate small draft model (its own KV cache).

A round drafts ``gamma`` tokens per sequence (fixed, or adaptive: ``gamma = round(a / (1 - a))``,
the expected run of accepted tokens at a per-token acceptance ``a``, from each sequence's running
acceptance, clipped to 1 .. ``gamma_max``), then one target pass verifies the ``gamma``
positions plus one. Greedy verification keeps the longest prefix equal to the target's argmax and
appends the target's token; sampling verification is standard speculative sampling (accept ``t``
with probability ``min(1, p(t)/q(t))``, on rejection sample ``normalize(max(0, p - q))``; after a
fully accepted draft sample the bonus token from the last ``p``). A sequence never drafts past
the ``n_new`` tokens it needs.

Traffic model (what the statistics count; bytes are 4 bits per weight per plane):

- HB memory holds the MSB planes of the cached experts (an expert cache of ``cache_capacity``
  planes, split evenly per layer or shared by all, keyed ``(layer, expert, "msb")``), plus the MSB planes of the dense
  projections (attention, LM head; pinned) and the whole separate draft model if there is one.
- Off-chip memory holds everything else: every LSB plane and the MSB planes of uncached experts.
- A pass loads each expert that any of its tokens uses **once** (the union over batch and
  positions). A target pass looks up each such expert's MSB plane: a hit reads HB, a miss reads
  off-chip and fills the cache (replacement per policy); it always reads the LSB plane off-chip.
  Within a pass the lookups go in ascending order of the experts' mean router score, so the
  pass's most important experts are the most recently used ones.
  A draft pass reads MSB planes (and LSB planes when its expert bits are ``full``) of its experts
  without changing the cache; with ``prefetch`` the experts the draft's router ranks in the top
  ``k`` for the drafted tokens are filled ahead of verification (SpecMoE-style; counted as
  off-chip MSB bytes).
- The prompt's prefill pass warms the cache; statistics cover the decode phase only.
"""

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from ...errors import UserError
from ...spec.sd import GAMMA_MAX, check_gamma, check_k_d  # noqa: F401  (GAMMA_MAX: the bound sd documents)
from ..lm.blas_threads import single_threaded
from ..lm.model import TARGET, Execution, MoELM
from ..golden.moe_layer import softmax
from ..cache.routing_trace import TraceWriter
from .sd_cache import POLICIES, SCOPES, make_cache

METHODS = ("plain", "elastic", "separate")
EXPERT_CHOICES = ("topk", "cached")
BIT_MODES = ("full", "draft")


@dataclass(frozen=True)
class SDSettings:
    """One decoding configuration.

    Parameters
    ----------
    method : ``plain`` | ``elastic`` | ``separate``
    k_d : int or None          draft experts per token, 1 .. k (elastic; None = k)
    expert_bits : ``draft`` | ``full``   bit mode of the draft's experts (elastic)
    dense_bits : ``full`` | ``draft``    bit mode of the draft's attention and LM head (elastic)
    expert_choice : ``topk`` | ``cached``
    gamma : int, 1 .. 16       draft length (the start value when adaptive)
    adaptive : bool            adapt gamma per sequence from its running acceptance
    gamma_max : int            upper bound of adaptive gamma
    cache_policy : str         expert-cache replacement policy
    cache_capacity : int >= 0  HB expert cache size in MSB planes
    cache_scope : ``layer`` | ``shared``  capacity split evenly per layer, or shared by all
    prefetch : bool            fill the draft's predicted top-k experts before verification
    integer : bool             every MoE layer of target and draft on the integer path (SPEC 7)
    sampling : bool            speculative sampling (True) or greedy (False)
    temperature : float > 0    sampling temperature (target and draft alike)
    """

    method: str = "elastic"
    k_d: int = None
    expert_bits: str = "draft"
    dense_bits: str = "full"
    expert_choice: str = "topk"
    gamma: int = 4
    adaptive: bool = False
    gamma_max: int = 8
    cache_policy: str = "lru"
    cache_capacity: int = 16
    cache_scope: str = "layer"
    prefetch: bool = False
    integer: bool = False
    sampling: bool = False
    temperature: float = 1.0

    def __post_init__(self):
        def choose(name, options):
            if getattr(self, name) not in options:
                raise UserError(f"unknown {name.replace('_', ' ')} {getattr(self, name)!r}; "
                                f"choose from {', '.join(options)}")
        choose("method", METHODS)
        choose("expert_bits", BIT_MODES)
        choose("dense_bits", BIT_MODES)
        choose("expert_choice", EXPERT_CHOICES)
        choose("cache_policy", POLICIES)
        choose("cache_scope", SCOPES)
        check_gamma(self.gamma)
        check_gamma(self.gamma_max, "gamma_max")
        check_k_d(self.k_d)
        if not isinstance(self.cache_capacity, (int, np.integer)) or self.cache_capacity < 0:
            raise UserError(f"cache capacity must be an integer >= 0 planes, got {self.cache_capacity!r}")
        if not (isinstance(self.temperature, (int, float)) and self.temperature > 0):
            raise UserError(f"temperature must be positive, got {self.temperature!r}")

    def label(self):
        """A short name for tables: ``elastic k1 draft/full topk g4 lru16`` (``lru16s``: shared
        by all layers; ``+pf``: prefetch; ``g4a``: adaptive from 4)."""
        cache = (f"{self.cache_policy}{self.cache_capacity}" + ("s" if self.cache_scope == "shared" else "")
                 + ("+pf" if self.prefetch else ""))
        if self.method == "plain":
            return f"plain {cache}"
        g = f"g{self.gamma}" + ("a" if self.adaptive else "")
        if self.method == "separate":
            return f"separate {g} {cache}"
        return (f"elastic k{self.k_d} {self.expert_bits}/{self.dense_bits} {self.expert_choice} "
                f"{g} {cache}")


@dataclass
class Counters:
    """Raw counts of a run's decode phase (see :meth:`summary` for the derived figures)."""

    tokens: int = 0
    target_passes: int = 0        # batched target passes
    draft_passes: int = 0         # batched draft passes
    seq_target_passes: int = 0    # sum over target passes of the sequences they verified
    drafted: int = 0
    accepted: int = 0
    target_expert_loads: int = 0  # sum over target passes and layers of the unique experts
    draft_expert_loads: int = 0
    lookups: int = 0
    hits: int = 0
    bytes: dict = field(default_factory=lambda: {"expert_hb_msb": 0, "expert_offchip_msb": 0,
                                                 "expert_offchip_lsb": 0, "prefetch_offchip_msb": 0,
                                                 "dense_hb_msb": 0, "dense_offchip_lsb": 0,
                                                 "draft_model_hb": 0})

    def summary(self, n_new, batch):
        tok = max(self.tokens, 1)
        b = self.bytes
        hb = b["expert_hb_msb"] + b["dense_hb_msb"] + b["draft_model_hb"]
        off = b["expert_offchip_msb"] + b["expert_offchip_lsb"] + b["prefetch_offchip_msb"] + b["dense_offchip_lsb"]
        msb = b["expert_hb_msb"] + b["expert_offchip_msb"] + b["prefetch_offchip_msb"] + b["dense_hb_msb"]
        lsb = b["expert_offchip_lsb"] + b["dense_offchip_lsb"]
        return {
            "tokens": self.tokens, "target_passes": self.target_passes, "draft_passes": self.draft_passes,
            "acceptance_rate": self.accepted / self.drafted if self.drafted else float("nan"),
            "tokens_per_target_pass": self.tokens / max(self.seq_target_passes, 1),
            "pass_speedup": n_new / max(self.target_passes, 1),
            "experts_per_target_pass": self.target_expert_loads / max(self.target_passes, 1),
            "experts_per_token": (self.target_expert_loads + self.draft_expert_loads) / tok,
            "target_experts_per_token": self.target_expert_loads / tok,
            "hit_rate": self.hits / self.lookups if self.lookups else float("nan"),
            "bytes_per_token_hb": hb / tok, "bytes_per_token_offchip": off / tok,
            "bytes_per_token_msb": msb / tok, "bytes_per_token_lsb": lsb / tok,
            "bytes_per_token": (hb + off) / tok,
            **{f"bytes_per_token_{k}": v / tok for k, v in b.items()},
        }


@dataclass
class SDResult:
    """Generated tokens (one int array of ``n_new`` bytes per sequence) and the run's figures."""

    tokens: list
    stats: dict


def greedy_verify(p, drafts):
    """Greedy verification: ``(accepted count j, next token)``; ``p`` (gamma+1, V) target rows."""
    target = np.argmax(p, axis=-1)
    j = 0
    while j < len(drafts) and drafts[j] == target[j]:
        j += 1
    return j, int(target[j])


def speculative_sample(p, q, drafts, rng):
    """Speculative sampling: ``(accepted count j, next token)``.

    ``p`` (gamma+1, V): target distributions at the drafted positions and one more; ``q``
    (gamma, V): the draft's distributions the drafts were sampled from.
    """
    for j, t in enumerate(drafts):
        if rng.random() * q[j, t] < p[j, t]:          # accept with probability min(1, p/q)
            continue
        residual = np.maximum(p[j] - q[j], 0.0)
        total = residual.sum()
        # total == 0 only when p == q, where rejection has probability 0 (guard rounding)
        return j, int(rng.choice(len(residual), p=residual / total)) if total > 0 else int(t)
    return len(drafts), int(rng.choice(p.shape[1], p=p[-1]))


def _check_prompts(prompts, max_seq, n_new):
    if not 1 <= len(prompts) <= 16:
        raise UserError(f"a batch must hold 1 to 16 prompts, got {len(prompts)}")
    out = []
    for b, p in enumerate(prompts):
        arr = np.frombuffer(p, dtype=np.uint8) if isinstance(p, (bytes, bytearray)) else np.asarray(p)
        if arr.ndim != 1 or arr.size == 0:
            raise UserError(f"prompt {b} is empty: a prompt needs at least one byte")
        if not np.issubdtype(arr.dtype, np.integer) or arr.min() < 0 or arr.max() > 255:
            raise UserError(f"prompt {b} must be bytes (integers 0 .. 255)")
        if arr.size + n_new > max_seq:
            raise UserError(f"prompt {b} ({arr.size} bytes) plus {n_new} new bytes exceeds max_seq = {max_seq}")
        out.append([int(x) for x in arr])
    return out


class _Run:
    """State of one :func:`generate` call."""

    def __init__(self, target, settings, draft_model, seed, trace):
        self.t, self.s, self.dm = target, settings, draft_model
        self.rng = np.random.default_rng(seed)
        self.cache = make_cache(settings.cache_policy, int(settings.cache_capacity), settings.cache_scope,
                                target.cfg.n_layers)
        self.c = Counters()
        self.trace, self.step = trace, 0
        k = target.cfg.top_k
        k_d = k if settings.k_d is None else settings.k_d
        if k_d > k:
            raise UserError(f"k_d = {k_d} exceeds the target's top-k = {k}")
        self.draft_exec = Execution(expert_bits=settings.expert_bits, dense_bits=settings.dense_bits, k=k_d,
                                    int_moe=settings.integer)
        self.target_exec = Execution(int_moe=settings.integer)

    # -- traffic ------------------------------------------------------------------------------
    def _experts_used(self, result):
        return [np.unique(r.chosen) for r in result.routing]

    def _scores(self, r, e):
        return float(r.probs[:, e].mean())

    def target_traffic(self, result, count=True):
        plane, by = self.t.plane_bytes, self.c.bytes
        for layer, (r, used) in enumerate(zip(result.routing, self._experts_used(result))):
            # least important first: the pass's heaviest experts end most recently used
            for e in sorted(used, key=lambda e: self._scores(r, e)):
                key, score = (layer, int(e), "msb"), self._scores(r, e)
                hit = self.cache.lookup(key, score)
                if not hit:
                    self.cache.fill(key, score)
                if count:
                    self.c.lookups += 1
                    self.c.hits += hit
                    by["expert_hb_msb" if hit else "expert_offchip_msb"] += plane
                    by["expert_offchip_lsb"] += plane
            if count:
                self.c.target_expert_loads += len(used)
        if count:
            by["dense_hb_msb"] += self.t.dense_plane_bytes
            by["dense_offchip_lsb"] += self.t.dense_plane_bytes

    def draft_traffic(self, result):
        by = self.c.bytes
        if self.s.method == "separate":
            by["draft_model_hb"] += 2 * (self.dm.plane_bytes * self.dm.cfg.n_layers * self.dm.cfg.n_experts
                                         + self.dm.dense_plane_bytes)
            return
        plane = self.t.plane_bytes
        for layer, used in enumerate(self._experts_used(result)):
            for e in used:
                resident = self.cache.contains((layer, int(e), "msb"))
                by["expert_hb_msb" if resident else "expert_offchip_msb"] += plane
                if self.s.expert_bits == "full":
                    by["expert_offchip_lsb"] += plane
            self.c.draft_expert_loads += len(used)
        by["dense_hb_msb"] += self.t.dense_plane_bytes
        if self.s.dense_bits == "full":
            by["dense_offchip_lsb"] += self.t.dense_plane_bytes
        if self.s.prefetch:
            k = self.t.cfg.top_k
            for layer, r in enumerate(result.routing):
                predicted = np.argsort(-r.probs, axis=-1, kind="stable")[:, :k]
                for e in np.unique(predicted):
                    key = (layer, int(e), "msb")
                    if not self.cache.contains(key):
                        self.cache.fill(key, self._scores(r, e), prefetch=True)
                        by["prefetch_offchip_msb"] += plane

    def allowed(self):
        """Per layer, the experts whose MSB plane is in the HB cache (``cached`` choice)."""
        cfg = self.t.cfg
        masks = np.zeros((cfg.n_layers, cfg.n_experts), dtype=bool)
        for layer, e, _ in self.cache:
            masks[layer, e] = True
        return list(masks)

    def record(self, kind, result):
        if self.trace is not None:
            self.trace.write(self.step, kind, result)
        self.step += 1

    def dist(self, logits):
        z = logits / self.s.temperature
        return softmax(z)


def generate(target, prompts, n_new, settings=SDSettings(), draft_model=None, seed=0,
             trace_path=None, verifier=None):
    """Decode ``n_new`` bytes after each prompt (a batch of 1 to 16) with ``settings``.

    Parameters
    ----------
    target : MoELM                  the target model
    prompts : list of bytes or 1-D int arrays (each at least one byte)
    n_new : int >= 1                bytes to generate per sequence
    settings : SDSettings
    draft_model : MoELM             the separate draft model (method ``separate`` only)
    seed : int                      seed of the sampling random numbers
    trace_path : path or None       write a routing trace (:mod:`elmoe3d.sim.cache.routing_trace`)
    verifier : callable or None     sampling acceptance rule ``(p, q, drafts, rng) -> (j, token)``;
                                    default :func:`speculative_sample` (tests swap in broken ones)

    Returns
    -------
    SDResult
    """
    if not isinstance(target, MoELM):
        raise UserError(f"target must be a MoELM, got {type(target).__name__}")
    if not isinstance(settings, SDSettings):
        raise UserError(f"settings must be SDSettings, got {type(settings).__name__}")
    if not isinstance(n_new, (int, np.integer)) or n_new < 1:
        raise UserError(f"n_new must be a positive integer, got {n_new!r}")
    if settings.method == "separate" and not isinstance(draft_model, MoELM):
        raise UserError("method 'separate' needs a draft_model (a MoELM)")
    seqs = _check_prompts(prompts, target.cfg.max_seq, n_new)
    verifier = verifier or speculative_sample
    trace = TraceWriter(trace_path, target.cfg, asdict(settings)) if trace_path else None
    try:
        with single_threaded():
            return _generate(_Run(target, settings, draft_model, seed, trace), seqs, n_new, verifier)
    finally:
        if trace is not None:
            trace.close()


def _generate(run, seqs, n_new, verifier):
    t, s, c = run.t, run.s, run.c
    B = len(seqs)
    start_len = [len(x) for x in seqs]
    tcache = t.new_cache(B)
    dcache = run.dm.new_cache(B) if s.method == "separate" else None
    prefill = [x[:-1] for x in seqs]
    if sum(len(p) for p in prefill):
        res = t.forward(prefill, tcache, run.target_exec)
        run.target_traffic(res, count=False)              # warms the expert cache
        run.record("prefill", res)
        if dcache is not None:
            run.dm.forward(prefill, dcache, TARGET)
    gamma = np.full(B, s.gamma)
    acc_rate = np.full(B, np.nan)
    t0 = time.perf_counter()
    while True:
        remaining = np.array([n_new - (len(x) - L) for x, L in zip(seqs, start_len)])
        active = remaining > 0
        if not active.any():
            break
        gam = np.where(active, np.minimum(gamma, remaining - 1), 0) if s.method != "plain" else np.zeros(B, int)
        base_len = np.array([len(x) for x in seqs])
        drafts = [[] for _ in range(B)]
        qs = [[] for _ in range(B)]
        # -- draft phase -------------------------------------------------------------------
        for i in range(int(gam.max(initial=0))):
            if s.method == "separate":
                model, cache, exe, allowed = run.dm, dcache, TARGET, None
            else:
                model, cache, exe = t, tcache, run.draft_exec
                allowed = run.allowed() if s.expert_choice == "cached" else None
            feed = []
            for b in range(B):
                if i >= gam[b]:
                    feed.append([])
                elif i == 0:
                    feed.append(seqs[b][cache.lengths[b]:])
                else:
                    feed.append([drafts[b][-1]])
            res = model.forward(feed, cache, exe, allowed)
            c.draft_passes += 1
            run.draft_traffic(res)
            run.record("draft", res)
            for b in range(B):
                if feed[b]:
                    q = run.dist(res.logits[b][-1])
                    tok = int(run.rng.choice(len(q), p=q)) if s.sampling else int(np.argmax(q))
                    drafts[b].append(tok)
                    qs[b].append(q)
        # -- verification: one target pass over the drafted positions plus one --------------
        for b in range(B):
            tcache.truncate(b, base_len[b] - 1)            # drop the draft's own entries
        feed = [seqs[b][-1:] + drafts[b] if active[b] else [] for b in range(B)]
        res = t.forward(feed, tcache, run.target_exec)
        c.target_passes += 1
        c.seq_target_passes += int(active.sum())
        run.target_traffic(res)
        run.record("target", res)
        for b in np.nonzero(active)[0]:
            p = run.dist(res.logits[b])
            if s.sampling:
                j, nxt = verifier(p, np.array(qs[b]).reshape(-1, p.shape[1]), drafts[b], run.rng)
            else:
                j, nxt = greedy_verify(p, drafts[b])
            seqs[b].extend(drafts[b][:j] + [nxt])
            tcache.truncate(b, base_len[b] + j)
            if dcache is not None:
                dcache.truncate(b, min(dcache.lengths[b], base_len[b] + j))
            c.tokens += j + 1
            if gam[b] > 0:
                c.drafted += int(gam[b])
                c.accepted += j
                rate = j / gam[b]
                acc_rate[b] = rate if np.isnan(acc_rate[b]) else 0.7 * acc_rate[b] + 0.3 * rate
                if s.adaptive:
                    a = min(acc_rate[b], 0.95)
                    gamma[b] = int(np.clip(round(a / (1 - a)), 1, s.gamma_max))
    wall = time.perf_counter() - t0
    stats = {"label": s.label(), "batch": B, "n_new": n_new, **asdict(s), **c.summary(n_new, B),
             "wall_s": wall, "tokens_per_s": c.tokens / wall if wall > 0 else float("nan")}
    return SDResult([np.array(x[L:], dtype=np.int64) for x, L in zip(seqs, start_len)], stats)
