"""Golden model of the expert cache: the HB-resident planes of (layer, expert, plane).

The cache holds expert *planes* (``sim/numerics/slices.py``: all MSB nibbles of an expert, or all LSB
nibbles); its capacity is counted in planes. It is fully associative: any plane may sit in any of
``entries`` slots (the RTL in ``hw/expert_cache.py`` compares every tag in parallel; see the README
for why and for its area cost). This model is the specification the RTL reproduces decision for
decision, so every rule below, tie-breaks included, is normative for ``hw/expert_cache.py``.

Operations (:class:`Op`)
------------------------
``LOOKUP key score``
    A demand access. Hit: the slot, and the replacement state is touched. Miss: a slot is
    allocated (see *victim*), a fill request ``(key, slot)`` goes to the off-chip side, the new
    entry is touched as a fill. No slot free of pins: the miss *bypasses* the cache (the plane is
    streamed from off-chip and not kept; no fill is issued).
``PIN key score``
    A ``LOOKUP`` that also pins the entry: a pinned plane is in use and is never a victim.
``UNPIN key``
    Clears the pin of a resident entry; no replacement-state update. Absent: no effect.
``PREFETCH key score``
    Resident: no effect at all (a hint must not disturb the replacement order). Absent: allocated
    and filled like a miss (the fill carries ``prefetch=1``), or dropped when every slot is pinned.

Victim choice (normative)
-------------------------
1. The lowest-numbered invalid slot, if any.
2. Otherwise, among valid *unpinned* slots, by policy:

   - ``lru``: the least recently touched. Each slot has a rank (0 = most recent); ranks are a
     permutation of ``0..entries-1`` starting as the slot index; touching a slot of rank ``r``
     makes it 0 and adds 1 to every rank below ``r``. The victim has the largest rank.
   - ``lfu``: the smallest use count (a saturating ``count_bits`` counter: a fill sets it to 1, a
     hit adds 1); ties go to the lowest slot index.
   - ``score``: router-score-aware, an exponentially decayed sum of router scores per slot
     ("how much routing probability mass has this plane carried recently"). Every touch first
     decays *all* slots, ``v -= v >> decay_shift``, then a hit adds the request's score scaled by
     ``2**decay_shift`` (fixed point with ``decay_shift`` fraction bits, saturating at
     ``score_bits + 2*decay_shift`` bits) and a fill sets ``v = score * 2**decay_shift``. The victim
     has the smallest ``v``; ties go to the lowest slot index. A plane that experts are routed
     to with high confidence survives even when it was not touched last; a plane that tokens only
     brush with a small top-k weight leaves first.
3. No candidate (every valid slot pinned): bypass.

Timing of the RTL (not part of the semantics)
---------------------------------------------
This model has no clock: it applies operations in service order, and the RTL must make the same
decisions in that order whatever its timing. ``hw/expert_cache.py`` is pipelined (take, compare
and select, update): a response comes ``LOOKUP_LATENCY`` = 3 cycles after the request's handshake,
up to ``MAX_HAZARD_CYCLES`` = 2 more for a miss right behind an operation that changed the
replacement state (so it sees that change, as here); it takes one request per cycle otherwise.
(Before the pipeline: 2 cycles of latency and one request every 2 cycles.)

Statistics count demand hits and misses (``LOOKUP`` and ``PIN``), evictions (a valid entry
replaced), fills (demand and prefetch), bypasses, bytes served from the HB tier (hits) and bytes
filled from the off-chip tier, each split by plane (MSB, LSB), and useful prefetches (a prefetched
plane hit by a demand access before it left).
"""

import enum
from dataclasses import asdict, dataclass, field

from ...config import POLICIES, CacheConfig  # noqa: F401  (re-exported: the golden model's parameters)
from ...errors import UserError, check_int



class Op(enum.IntEnum):
    """Trace and request operations; the values are the RTL encoding."""

    LOOKUP = 0
    PREFETCH = 1
    PIN = 2
    UNPIN = 3


class Plane(enum.IntEnum):
    """Which bit slice of an expert a plane holds; the values are the RTL encoding."""

    MSB = 0
    LSB = 1


TINY = CacheConfig(entries=4, layer_bits=1, expert_bits=3)
DEFAULT = CacheConfig()


@dataclass(frozen=True)
class Key:
    layer: int
    expert: int
    plane: int = Plane.MSB


@dataclass(frozen=True)
class Result:
    """What one operation did; the RTL's response carries the same fields.

    ``slot`` is meaningful when ``hit`` or when a slot was allocated (``fill``); ``victim`` when
    ``evict``.
    """

    op: int
    key: Key
    hit: bool
    slot: int = 0
    fill: bool = False
    evict: bool = False
    victim: Key = None
    bypass: bool = False


@dataclass
class Stats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    fills: int = 0
    prefetch_fills: int = 0
    prefetch_hits: int = 0
    useful_prefetches: int = 0
    bypasses: int = 0
    hb_bytes: dict = field(default_factory=lambda: {"msb": 0, "lsb": 0})
    offchip_bytes: dict = field(default_factory=lambda: {"msb": 0, "lsb": 0})

    @property
    def accesses(self):
        return self.hits + self.misses

    @property
    def hit_rate(self):
        return self.hits / self.accesses if self.accesses else 0.0

    def to_dict(self):
        d = asdict(self)
        d["hit_rate"] = self.hit_rate
        return d


class ExpertCache:
    """The golden cache. ``apply(op, key, score)`` returns a :class:`Result`.

    Members
    -------
    valid, keys, pinned, rank, count, value : per-slot state (lists), as in the RTL
    stats : :class:`Stats`
    """

    def __init__(self, config=DEFAULT):
        if not isinstance(config, CacheConfig):
            raise UserError(f"config must be a CacheConfig, got {config!r}")
        self.config = config
        n = config.entries
        self.valid = [False] * n
        self.keys = [None] * n
        self.pinned = [False] * n
        self.rank = list(range(n))
        self.count = [0] * n
        self.value = [0] * n
        self.prefetched = [False] * n
        self.where = {}
        self.stats = Stats()

    # -- replacement state -------------------------------------------------------------------
    def _touch(self, slot, score, fill):
        # Only the policy in use keeps its state (the others' would not change any decision).
        cfg = self.config
        if cfg.policy == "lru":
            r = self.rank[slot]
            self.rank = [x + 1 if x < r else x for x in self.rank]
            self.rank[slot] = 0
        elif cfg.policy == "lfu":
            self.count[slot] = 1 if fill else min(self.count[slot] + 1, (1 << cfg.count_bits) - 1)
        else:
            d = cfg.decay_shift
            self.value = [v - (v >> d) for v in self.value]
            add = score << d          # d fraction bits, so decay reaches down to a fraction of one score step
            self.value[slot] = add if fill else min(self.value[slot] + add, (1 << cfg.value_bits) - 1)

    def victim(self):
        """The slot a miss would take now, or ``None`` (bypass)."""
        for j in range(self.config.entries):
            if not self.valid[j]:
                return j
        cands = [j for j in range(self.config.entries) if not self.pinned[j]]
        if not cands:
            return None
        policy = self.config.policy
        if policy == "lru":
            return max(cands, key=lambda j: self.rank[j])
        if policy == "lfu":
            return min(cands, key=lambda j: (self.count[j], j))
        return min(cands, key=lambda j: (self.value[j], j))

    def _plane_name(self, key):
        return "lsb" if key.plane == Plane.LSB else "msb"

    # -- operations ----------------------------------------------------------------------------
    def apply(self, op, key, score=0):
        cfg = self.config
        op = Op(op)
        if not (0 <= key.layer < cfg.n_layers and 0 <= key.expert < cfg.n_experts and key.plane in (0, 1)):
            raise UserError(f"key {key} does not fit layer_bits={cfg.layer_bits}, expert_bits={cfg.expert_bits}")
        if not 0 <= score < (1 << cfg.score_bits):
            raise UserError(f"score must be in [0, {(1 << cfg.score_bits) - 1}], got {score}")
        st = self.stats
        slot = self.where.get(key)
        demand = op in (Op.LOOKUP, Op.PIN)
        if op == Op.UNPIN:
            if slot is None:
                return Result(op, key, hit=False)
            self.pinned[slot] = False
            return Result(op, key, hit=True, slot=slot)
        if slot is not None:
            if op == Op.PREFETCH:
                st.prefetch_hits += 1
                return Result(op, key, hit=True, slot=slot)
            st.hits += 1
            st.hb_bytes[self._plane_name(key)] += cfg.plane_bytes
            if self.prefetched[slot]:
                st.useful_prefetches += 1
                self.prefetched[slot] = False
            self._touch(slot, score, fill=False)
            if op == Op.PIN:
                self.pinned[slot] = True
            return Result(op, key, hit=True, slot=slot)
        if demand:
            st.misses += 1
            st.offchip_bytes[self._plane_name(key)] += cfg.plane_bytes
        v = self.victim()
        if v is None:
            if demand:
                st.bypasses += 1
            return Result(op, key, hit=False, bypass=True)
        evict = self.valid[v]
        old = self.keys[v]
        if evict:
            st.evictions += 1
            del self.where[old]
        self.valid[v] = True
        self.keys[v] = key
        self.where[key] = v
        self.pinned[v] = op == Op.PIN
        self.prefetched[v] = op == Op.PREFETCH
        st.fills += 1
        if op == Op.PREFETCH:
            st.prefetch_fills += 1
            st.offchip_bytes[self._plane_name(key)] += cfg.plane_bytes
        self._touch(v, score, fill=True)
        return Result(op, key, hit=False, slot=v, fill=True, evict=evict, victim=old if evict else None)

    def run(self, ops):
        """Apply a trace (an iterable of ``(op, key, score)``); returns the list of results."""
        return [self.apply(op, key, score) for op, key, score in ops]

    def resident(self):
        """``{key: slot}`` of the planes now in the cache."""
        return dict(self.where)
