"""Decode model: bytes per memory tier, MACs, time and energy of one decode round.

A *round* of a serving system on a batch of ``B`` sequences:

- ``plain``: one target pass over one position per sequence; ``B`` tokens;
- ``separate`` / ``self`` / ``elastic``: ``gamma`` draft passes (one position per sequence) and
  one verification pass over ``gamma + 1`` positions per sequence; ``B * tau`` tokens, where
  ``tau = (1 - alpha^(gamma+1)) / (1 - alpha)`` is the expected tokens per verification at
  per-token acceptance ``alpha`` (:mod:`.acceptance`: measured on the shipped model pooled over
  64 held-out prompts and inverted from accepted/drafted at the nearest measured gamma, or a
  published scenario). ``gamma = 0`` is plain decoding on the same system.

A pass reads every dense weight (attention, router, shared experts, dense FFN layers, LM head)
once, each unique expert of the pass once (the union over the batch's positions,
:mod:`.routing`), and the KV cache of every sequence once (``context`` positions, BF16). Where
the weights come from depends on the system's cache:

- ``none``: everything from the off-chip tier;
- ``int8`` (prior HB-3D accelerator): HB holds the dense weights, then whole INT8 experts, most
  popular first, as capacity allows; a pass's experts hit HB at the routing model's hit rate;
- ``msb`` (ELMoE-3D): HB is filled with the dense MSB and LSB planes (every pass reads them),
  then expert MSB planes (most popular first), then expert LSB planes; a verification pass reads both planes of each expert (resident ones from
  HB, the rest off-chip), a draft pass only the MSB planes of its ``k_d`` experts per token and
  the dense planes its ``dense_bits`` asks for (SPEC section 4).

The KV cache always lives off-chip. MACs are ``positions x weights used`` plus attention over the
context. Time of a pass: each resource's busy time (bytes / achieved bandwidth per tier; MACs /
peak rate on a GPU; the PE-array cycle model :func:`array_cycles` on an accelerator), combined by
the system's ``overlap``: ``max`` (streams double-buffered, the slowest binds) or ``sum``.
Energy: bits x pJ/bit per tier + MACs x pJ/MAC per mode + static power x time.
"""

import math
from dataclasses import dataclass, field, replace

from ..errors import UserError
from ..spec.sd import check_dense_bits, check_gamma, check_k_d
from ..spec.timing import gemv_cycles
from . import acceptance as acc
from . import routing as rt
from .systems import runtime_seconds

KV_BITS = 16


@dataclass(frozen=True)
class Settings:
    """Decoding settings shared by a sweep.

    Parameters
    ----------
    gamma : int >= 0        draft length (0: plain decoding on a speculative system)
    k_d : int >= 1 or None  draft experts per token (self and elastic drafts; None: half the
                            model's top-k, rounded up, the fraction the shipped model measured)
    scenario : str          acceptance scenario (:data:`.acceptance.SCENARIOS`, default measured)
    dense_bits : ``full`` | ``draft``   the elastic draft's dense parts (MSB+aug when ``draft``)
    context : int >= 1      KV-cache positions each pass attends over
    policy : str            HB cache policy whose measured efficiency applies (``score``, ``lru``)
    acceptance : float or None   per-token acceptance for every SD method (None: measured)
    skew, rho : float or None    routing overrides (None: calibrated)
    """

    gamma: int = 4
    k_d: int = None
    dense_bits: str = "full"
    context: int = 1024
    policy: str = "score"
    acceptance: float = None
    skew: float = None
    rho: float = None
    scenario: str = "shipped"

    def __post_init__(self):
        if self.scenario not in acc.SCENARIOS:
            raise UserError(f"unknown acceptance scenario {self.scenario!r}; choose from {', '.join(acc.SCENARIOS)}")
        check_gamma(self.gamma, allow_zero=True)
        check_k_d(self.k_d)
        check_dense_bits(self.dense_bits)
        if isinstance(self.context, bool) or not isinstance(self.context, int) or self.context < 1:
            raise UserError(f"context must be an integer >= 1, got {self.context!r}")
        if self.acceptance is not None and not (isinstance(self.acceptance, (int, float)) and 0.0 <= self.acceptance <= 1.0):
            raise UserError(f"acceptance must be in [0, 1], got {self.acceptance!r}")
        if self.skew is not None and not (isinstance(self.skew, (int, float)) and 0.0 <= self.skew <= 4.0):
            raise UserError(f"skew must be in [0, 4], got {self.skew!r}")
        if self.rho is not None and not (isinstance(self.rho, (int, float)) and 0.0 <= self.rho <= 1.0):
            raise UserError(f"rho must be in [0, 1], got {self.rho!r}")

    def routing(self):
        base = rt.calibrate()
        if self.skew is None and self.rho is None:
            return base
        return rt.Routing(skew=base.skew if self.skew is None else float(self.skew),
                          rho=base.rho if self.rho is None else float(self.rho), eta=base.eta)


def tokens_per_verify(a, gamma):
    """Expected tokens per sequence per verification pass at per-token acceptance ``a``
    (:func:`.acceptance.tokens_per_round`)."""
    return acc.tokens_per_round(a, gamma)


def draft_experts(settings, model):
    """``k_d`` of a self-draft on ``model`` (default: half its top-k, rounded up)."""
    k = settings.k_d if settings.k_d is not None else math.ceil(model.top_k / 2)
    return min(k, model.top_k)


def draft_kind(system, settings, model):
    """The measured draft (:data:`.acceptance.DRAFTS`) a system's draft stands for: an elastic
    draft with all top-k experts is the bit-elastic one, with fewer the expert-elastic one."""
    if system.decoding == "elastic":
        return "bit_elastic" if draft_experts(settings, model) >= model.top_k else "elastic"
    return system.decoding


def acceptance(system, settings, batch, model=None):
    """Per-token acceptance ``alpha`` of the system's drafts (None for plain decoding). Batch does
    not change it: greedy decoding of a sequence does not depend on its batch."""
    if system.decoding == "plain" or settings.gamma == 0:
        return None
    if settings.acceptance is not None:
        return float(settings.acceptance)
    kind = draft_kind(system, settings, model) if model is not None else system.decoding
    return acc.alpha_for(kind, settings.gamma, settings.scenario)


# -- HB placement ---------------------------------------------------------------------------------
def placement(system, model):
    """Resident fractions in HB: ``dense``, ``expert`` (int8 cache) or ``dense_msb``, ``expert_msb``,
    ``dense_lsb``, ``expert_lsb`` (msb cache); experts are resident most popular first."""
    w = system.weight_bits / 8
    dense = model.dense_params * w
    experts = model.moe_layers * model.n_experts * model.expert_params * w
    if system.cache == "none":
        return {}
    left = system.hb.capacity_gib * (1 << 30)

    def take(nbytes):
        nonlocal left
        if nbytes <= 0:
            return 1.0
        got = min(left, nbytes)
        left -= got
        return got / nbytes

    if system.cache == "int8":
        return {"dense": take(dense), "expert": take(experts)}
    # every pass reads the dense planes (drafts too, with dense_bits full): pinned first
    out = {"dense_msb": take(dense / 2), "dense_lsb": take(dense / 2)}
    out["expert_msb"] = take(experts / 2)
    out["expert_lsb"] = take(experts / 2)
    return out


# -- PE-array cycle model ---------------------------------------------------------------------------
def matrices(model):
    """``[(N, K, count, part)]``: every weight matrix of one pass (``part``: dense or expert);
    ``count`` copies (layers). Expert matrices are per expert."""
    d, L, Lm = model.d_model, model.n_layers, model.moe_layers
    out = []
    if model.attention == "mla":
        h = model.n_heads
        out += [(h * (model.qk_nope_dim + model.qk_rope_dim), d, L, "dense"),
                (model.kv_lora_rank + model.qk_rope_dim, d, L, "dense"),
                (h * (model.qk_nope_dim + model.v_head_dim), model.kv_lora_rank, L, "dense"),
                (d, h * model.v_head_dim, L, "dense")]
    else:
        hq, hk = model.n_heads * model.head_dim, model.n_kv_heads * model.head_dim
        out += [(hq, d, L, "dense"), (hk, d, 2 * L, "dense"), (d, hq, L, "dense")]
    out.append((model.n_experts, d, Lm, "dense"))
    if model.d_shared:
        out += [(model.d_shared, d, 2 * Lm, "dense"), (d, model.d_shared, Lm, "dense")]
    if model.dense_layers:
        out += [(model.d_dense, d, 2 * model.dense_layers, "dense"), (d, model.d_dense, model.dense_layers, "dense")]
    out.append((model.vocab, d, 1, "dense"))
    out += [(model.d_expert, d, 2, "expert"), (d, model.d_expert, 1, "expert")]
    return out


def gemv_tile_cycles(n, k, rows, cols, phases, pipeline=1):
    """Cycles of one ``n x k`` GEMV on one array for up to ``lanes`` tokens: the PE array's
    formula, :func:`elmoe3d.spec.timing.gemv_cycles` (``phases`` 2 is FULL, 1 DRAFT/INT8)."""
    return gemv_cycles(k=int(k), cols=cols, mode="full" if phases == 2 else "draft", pipeline=pipeline,
                       n=int(n), rows=rows)


def array_cycles(array, model, tokens, experts_per_layer, mode_dense, mode_expert):
    """Cycles of a pass on ``array.arrays`` arrays (tiles spread evenly over them).

    ``tokens``: positions in the pass; ``experts_per_layer``: unique experts per MoE layer, each
    running the ``tokens * k / U`` positions routed to it (in groups of ``lanes``).
    """
    def phases(mode):
        return 2 if (array.kind == "bit_sliced" and mode == "full") else 1

    total = 0.0
    routed = tokens * model.top_k / max(experts_per_layer, 1e-9)
    for n, k, count, part in matrices(model):
        if part == "dense":
            groups = math.ceil(tokens / array.lanes)
            total += count * groups * gemv_tile_cycles(n, k, array.rows, array.cols, phases(mode_dense), array.pipeline)
        else:
            groups = math.ceil(max(routed, 1.0) / array.lanes)
            total += (count * model.moe_layers * experts_per_layer * groups
                      * gemv_tile_cycles(n, k, array.rows, array.cols, phases(mode_expert), array.pipeline))
    return total / array.arrays


# -- one pass ---------------------------------------------------------------------------------------
@dataclass
class Pass:
    """Traffic, work, time and energy of one pass (bytes, MACs, seconds, joules)."""

    bytes: dict = field(default_factory=dict)        # (tier, part) -> bytes
    macs: dict = field(default_factory=dict)         # mode -> MACs
    busy: dict = field(default_factory=dict)         # resource -> seconds
    time: float = 0.0
    energy: dict = field(default_factory=dict)       # component -> J
    unique_experts: float = 0.0                      # per MoE layer
    hit_rate: float = float("nan")
    lookups: float = 0.0

    def add(self, tier, part, nbytes):
        if nbytes:
            self.bytes[(tier, part)] = self.bytes.get((tier, part), 0.0) + nbytes


def run_pass(system, model, settings, route, batch, positions, kind, prefetched=0.0):
    """One pass (:func:`_run_pass`), its time scaled by the system's measured ``pass_overhead``
    (``target`` or ``draft``; e.g. the RTL core's cycles over its memory floor). ``prefetched``: the
    fraction of the pass's unique experts already resident because this round's draft fetched them
    (``int8`` expert caches only; see ``System.draft_reuse``)."""
    p = _run_pass(system, model, settings, route, batch, positions, kind, prefetched)
    f = system.pass_overhead.get("target" if kind == "target" else "draft", 1.0)
    if f != 1.0:
        p.time *= f
        p.energy["static"] = system.static_w * p.time
    sw = runtime_seconds(system, model, p.unique_experts)
    if sw:
        p.busy["runtime"] = sw
        p.time += sw
        p.energy["static"] = system.static_w * p.time
    return p


def _run_pass(system, model, settings, route, batch, positions, kind, prefetched=0.0):
    """One pass. ``kind``: ``target`` (full model), ``draft_self`` (``k_d`` experts, full bits),
    ``draft_elastic`` (``k_d`` experts, MSB planes; dense per ``settings.dense_bits``) or
    ``draft_separate`` (the dense draft model, ``draft_fraction`` of the active weights)."""
    p = Pass()
    w = system.weight_bits / 8
    tokens = batch * positions
    ctx = settings.context
    kv = batch * ctx * model.kv_bytes_per_token(KV_BITS)
    p.add(system.kv_tier, "kv", kv * (model.draft_fraction if kind == "draft_separate" else 1.0))
    attn_macs = tokens * model.attn_macs_per_token(ctx) * (model.draft_fraction if kind == "draft_separate" else 1.0)

    if kind == "draft_separate":
        draft_w = model.draft_fraction * (model.active_params - (0 if model.active_excludes_embeddings else
                                                                   model.vocab * model.d_model))
        p.add("offchip", "draft", draft_w * w)
        p.macs["full"] = tokens * draft_w + attn_macs
        return _finish(p, system, model, tokens, None, "full", "full")

    k_eff = model.top_k if kind == "target" else draft_experts(settings, model)
    U = route.unique(model.n_experts, k_eff, batch, positions)
    p.unique_experts = U
    dense_b = model.dense_params * w
    expert_b = model.moe_layers * U * model.expert_params * w
    res = placement(system, model)
    dense_mode, expert_mode = "full", "full"

    if system.cache == "none":
        p.add("offchip", "dense", dense_b)
        p.add("offchip", "experts", expert_b)
    elif system.cache == "int8":
        h = route.hit(model.n_experts, k_eff, batch, positions, res["expert"], settings.policy)
        h += (1.0 - h) * prefetched
        p.hit_rate, p.lookups = h, U * model.moe_layers
        p.add("hb", "dense", dense_b * res["dense"])
        p.add("offchip", "dense", dense_b * (1 - res["dense"]))
        p.add("hb", "experts", expert_b * h)
        p.add("offchip", "experts", expert_b * (1 - h))
    else:   # msb planes: half the bytes each
        draft = kind == "draft_elastic"
        h_msb = route.hit(model.n_experts, k_eff, batch, positions, res["expert_msb"], settings.policy)
        p.hit_rate, p.lookups = h_msb, U * model.moe_layers
        p.add("hb", "dense", dense_b / 2 * res["dense_msb"])
        p.add("offchip", "dense", dense_b / 2 * (1 - res["dense_msb"]))
        if not (draft and settings.dense_bits == "draft"):
            p.add("hb", "dense", dense_b / 2 * res["dense_lsb"])
            p.add("offchip", "dense", dense_b / 2 * (1 - res["dense_lsb"]))
        else:
            dense_mode = "draft"
        p.add("hb", "experts", expert_b / 2 * h_msb)
        p.add("offchip", "experts", expert_b / 2 * (1 - h_msb))
        if draft:
            expert_mode = "draft"
        else:
            h_lsb = route.hit(model.n_experts, k_eff, batch, positions, res["expert_lsb"], settings.policy)
            p.add("hb", "experts", expert_b / 2 * h_lsb)
            p.add("offchip", "experts", expert_b / 2 * (1 - h_lsb))

    dense_macs = tokens * model.dense_params
    expert_macs = tokens * k_eff * model.moe_layers * model.expert_params
    p.macs[dense_mode] = p.macs.get(dense_mode, 0.0) + dense_macs + attn_macs
    p.macs[expert_mode] = p.macs.get(expert_mode, 0.0) + expert_macs
    return _finish(p, system, model, tokens, U, dense_mode, expert_mode, k_eff)


def _finish(p, system, model, tokens, U, dense_mode, expert_mode, k_eff=None):
    for tier_name, tier in system.tiers.items():
        nbytes = sum(v for (t, _), v in p.bytes.items() if t == tier_name)
        p.busy[tier_name] = nbytes / tier.bytes_per_s
        p.energy[tier_name] = nbytes * 8 * tier.pj_per_bit * 1e-12
    if system.array is not None and U is not None:
        m = model if k_eff in (None, model.top_k) else _with_top_k(model, k_eff)
        cycles = array_cycles(system.array, m, tokens, U, dense_mode, expert_mode)
        attn = p.macs.get(dense_mode, 0.0) - tokens * model.dense_params
        p.busy["compute"] = cycles / (system.array.clock_mhz * 1e6) + attn / system.peak_macs(dense_mode)
    else:
        p.busy["compute"] = sum(m / system.peak_macs(mode) for mode, m in p.macs.items())
    p.energy["compute"] = sum(m * system.mac_pj(mode) * 1e-12 for mode, m in p.macs.items())
    if system.onchip_pj_per_byte:
        p.energy["onchip"] = sum(p.bytes.values()) * system.onchip_pj_per_byte * 1e-12
    p.time = max(p.busy.values()) if system.overlap == "max" else sum(p.busy.values())
    p.energy["static"] = system.static_w * p.time
    return p


def _with_top_k(model, k):
    from dataclasses import replace
    return replace(model, top_k=k)


# -- one round and the sweep --------------------------------------------------------------------------
DRAFT_KIND = {"separate": "draft_separate", "self": "draft_self", "elastic": "draft_elastic"}


def run_round(system, model, settings, batch, route=None):
    """Figures of one decode round at ``batch`` (a dict; see :data:`ROW_KEYS`)."""
    if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= 16:
        raise UserError(f"batch must be an integer in 1 .. 16, got {batch!r}")
    route = route or settings.routing()
    a = acceptance(system, settings, batch, model)
    passes = []
    if system.decoding == "plain" or settings.gamma == 0:
        target = run_pass(system, model, settings, route, batch, 1, "target")
        passes.append((1, target))
        tokens = float(batch)
    else:
        draft = run_pass(system, model, settings, route, batch, 1, DRAFT_KIND[system.decoding])
        reuse = 0.0
        if system.draft_reuse and system.cache == "int8" and system.decoding != "separate":
            # the draft's experts (the union over its gamma positions) are a subset of the experts the
            # verification of those positions routes to (the draft shares the target's router)
            u_draft = route.unique(model.n_experts, draft_experts(settings, model), batch, settings.gamma)
            u_verify = route.unique(model.n_experts, model.top_k, batch, settings.gamma + 1)
            reuse = min(1.0, u_draft / u_verify)
        target = run_pass(system, model, settings, route, batch, settings.gamma + 1, "target", reuse)
        passes += [(settings.gamma, draft), (1, target)]
        tokens = batch * tokens_per_verify(a, settings.gamma)
    t = sum(n * p.time for n, p in passes)
    busy, energy, nbytes, macs = {}, {}, {}, {}
    for n, p in passes:
        for key, v in p.busy.items():
            busy[key] = busy.get(key, 0.0) + n * v
        for key, v in p.energy.items():
            energy[key] = energy.get(key, 0.0) + n * v
        for key, v in p.bytes.items():
            nbytes[key] = nbytes.get(key, 0.0) + n * v
        for key, v in p.macs.items():
            macs[key] = macs.get(key, 0.0) + n * v
    total_bytes = sum(nbytes.values())
    total_macs = sum(macs.values())
    e = sum(energy.values())
    bound = max(target.busy, key=target.busy.get)
    return {
        "system": system.name, "model": model.name, "batch": batch, "acceptance": a,
        "gamma": 0 if (system.decoding == "plain" or settings.gamma == 0) else settings.gamma,
        "k_d": None if system.decoding in ("plain", "separate") or settings.gamma == 0 else draft_experts(settings, model),
        "tokens_per_round": tokens, "round_s": t,
        "tokens_per_s": tokens / t, "j_per_token": e / tokens,
        "busy_per_token": {k: v / tokens for k, v in busy.items()},
        "energy_per_token": {k: v / tokens for k, v in energy.items()},
        "bytes_per_token": {f"{tier}/{part}": v / tokens for (tier, part), v in sorted(nbytes.items())},
        "macs_per_token": total_macs / tokens,
        "intensity_mac_per_byte": total_macs / total_bytes if total_bytes else float("inf"),
        "achieved_macs_per_s": total_macs / t,
        "target_unique_experts": target.unique_experts, "target_hit_rate": target.hit_rate,
        "bound": bound,
    }


ROW_KEYS = ("system", "model", "batch", "acceptance", "tokens_per_s", "j_per_token", "busy_per_token",
            "energy_per_token", "bytes_per_token", "bound")


GAMMA_CHOICES = (0, 1, 2, 3, 4, 6, 8)
OBJECTIVES = ("tokens_per_s", "j_per_token")


def kd_choices(system, model):
    """Draft experts the elastic policy may pick: half the top-k (rounded up) and all of it, the
    two fractions whose acceptance the shipped model measured; a SpecMoE-style self-draft keeps half."""
    if system.decoding == "elastic":
        return sorted({math.ceil(model.top_k / 2), model.top_k})
    if system.decoding == "self":
        return [math.ceil(model.top_k / 2)]
    return [None]


def choose(system, model, settings, batch, route, objective="tokens_per_s", free=("gamma", "k_d")):
    """The elastic policy: the best :func:`run_round` of a speculative system over ``gamma`` in
    :data:`GAMMA_CHOICES` (0: no speculation) and ``k_d`` in :func:`kd_choices` (those named in
    ``free``; the others stay at ``settings``'), maximising tokens/s or minimising J/token."""
    if objective not in OBJECTIVES:
        raise UserError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    if system.decoding == "plain":
        return run_round(system, model, settings, batch, route)
    gammas = GAMMA_CHOICES if "gamma" in free else (settings.gamma,)
    kds = kd_choices(system, model) if "k_d" in free else (settings.k_d,)
    best = None
    for g in gammas:
        for k in (kds if g else kds[:1]):
            r = run_round(system, model, replace(settings, gamma=g, k_d=k), batch, route)
            better = (best is None or (r["tokens_per_s"] > best["tokens_per_s"] if objective == "tokens_per_s"
                                       else r["j_per_token"] < best["j_per_token"]))
            if better:
                best = r
    return best


def prior_names(systems):
    """Systems a result is compared with as 'best prior': all but ELMoE-3D and those on another
    machine (``own_footing``, e.g. the host-offload GPU)."""
    return [s.name for s in systems if s.name != "elmoe3d" and not s.own_footing]


def sweep(systems, models, settings, batches=range(1, 17), objective=None, free=("gamma", "k_d")):
    """Every system x model x batch: a list of :func:`run_round` rows (with ``objective``, each
    speculative system's round is the elastic policy's choice, :func:`choose`) with
    ``speedup_vs_xpu``, ``energy_gain_vs_xpu``, ``speedup_vs_best_prior`` and
    ``energy_gain_vs_best_prior`` added (the best prior system per model and batch: the fastest,
    and the least J/token, of :func:`prior_names`; ratios against a system need it in the sweep)."""
    route = settings.routing()
    if objective is None:
        rows = [run_round(s, m, settings, b, route) for m in models for s in systems for b in batches]
    else:
        rows = [choose(s, m, settings, b, route, objective, free) for m in models for s in systems for b in batches]
    by = {(r["system"], r["model"], r["batch"]): r for r in rows}
    prior = prior_names(systems)
    for r in rows:
        base = by.get(("xpu", r["model"], r["batch"]))
        if base is not None:
            r["speedup_vs_xpu"] = r["tokens_per_s"] / base["tokens_per_s"]
            r["energy_gain_vs_xpu"] = base["j_per_token"] / r["j_per_token"]
        ps = [by[(n, r["model"], r["batch"])] for n in prior]
        if ps:
            fast = max(ps, key=lambda x: x["tokens_per_s"])
            lean = min(ps, key=lambda x: x["j_per_token"])
            r["best_prior_speed"], r["best_prior_energy"] = fast["system"], lean["system"]
            r["speedup_vs_best_prior"] = r["tokens_per_s"] / fast["tokens_per_s"]
            r["energy_gain_vs_best_prior"] = lean["j_per_token"] / r["j_per_token"]
    return rows
