"""Expert caches for the Elastic-SD harness: the HB-resident MSB planes.

Keys are ``(layer, expert, plane)`` tuples, ``plane`` is ``"msb"`` here (the HB memory holds the
MSB planes of the hot experts; SPEC sections 1 and 4). Capacity is counted in planes.

Interface (what :mod:`elmoe3d.sim.sd.elastic_sd` needs of any cache model):

- ``lookup(key, score=None) -> bool``: a demand access; a hit refreshes the key's recency, a
  miss does not insert (the caller decides whether to :meth:`fill`);
- ``fill(key, score=None, prefetch=False) -> evicted key or None``: insert after a miss or as a
  prefetch, evicting by the policy when full;
- ``contains(key) -> bool``: a probe that changes no state and counts nothing;
- ``stats`` (dict): hits, misses, fills, prefetch_fills, evictions;
- ``policy`` (str) and ``capacity`` (int).

The capacity is shared by all layers or split evenly per layer (:class:`PerLayerCache`): with a
shared LRU, a pass that touches more planes than fit evicts them in layer order and every plane
misses on the next pass (a cyclic scan), while a per-layer split keeps each layer's hot experts.

:func:`make_cache` gives the project's golden cache model (:mod:`elmoe3d.sim.cache.expert_cache`: LRU, LFU and a
router-score-aware policy, fully associative) behind this interface (:class:`GoldenCache`); the
small :class:`LRUCache` here serves capacities below the golden model's two entries and is the
cross-check of its LRU order (``tests/test_sd_cache.py``).
"""

from collections import OrderedDict

from ...config import POLICIES
from ...errors import UserError
from ..cache.expert_cache import CacheConfig, ExpertCache, Key, Op, Plane


class LRUCache:
    """Least-recently-used replacement over ``capacity`` planes (0 = no cache)."""

    policy = "lru"

    def __init__(self, capacity):
        if not isinstance(capacity, int) or capacity < 0:
            raise UserError(f"cache capacity must be an integer number of planes >= 0, got {capacity!r}")
        self.capacity = capacity
        self._keys = OrderedDict()
        self.stats = {"hits": 0, "misses": 0, "fills": 0, "prefetch_fills": 0, "evictions": 0}

    def contains(self, key):
        return key in self._keys

    def lookup(self, key, score=None):
        if key in self._keys:
            self._keys.move_to_end(key)
            self.stats["hits"] += 1
            return True
        self.stats["misses"] += 1
        return False

    def fill(self, key, score=None, prefetch=False):
        if self.capacity == 0:
            return None
        if key in self._keys:
            self._keys.move_to_end(key)
            return None
        evicted = None
        if len(self._keys) >= self.capacity:
            evicted, _ = self._keys.popitem(last=False)
            self.stats["evictions"] += 1
        self._keys[key] = True
        self.stats["prefetch_fills" if prefetch else "fills"] += 1
        return evicted

    def __len__(self):
        return len(self._keys)

    def __iter__(self):
        return iter(list(self._keys))


class GoldenCache:
    """The project's golden expert-cache model (:mod:`elmoe3d.sim.cache.expert_cache`) behind this interface.

    ``lookup`` is the golden ``LOOKUP`` (a miss allocates and fills at once, so the following
    :meth:`fill` finds the plane resident and does nothing); ``fill(prefetch=True)`` is
    ``PREFETCH``. Router scores in [0, 1] become the model's unsigned ``score_bits`` fractions.
    """

    def __init__(self, policy, capacity):
        self.policy, self.capacity = policy, capacity
        self._cache = ExpertCache(CacheConfig(entries=capacity, policy=policy))
        self._allocated = None     # (key, victim) of the last missed lookup

    def _key(self, key):
        layer, expert, plane = key
        return Key(layer, expert, Plane.LSB if plane == "lsb" else Plane.MSB)

    def _score(self, score):
        top = (1 << self._cache.config.score_bits) - 1
        return 0 if score is None else min(top, int(round(score * top)))

    def contains(self, key):
        return self._key(key) in self._cache.where

    def lookup(self, key, score=None):
        r = self._cache.apply(Op.LOOKUP, self._key(key), self._score(score))
        self._allocated = None if r.hit else (key, self._plain(r.victim) if r.evict else None)
        return r.hit

    def fill(self, key, score=None, prefetch=False):
        """After a missed :meth:`lookup` of ``key`` the plane is already in: report its victim."""
        if self.contains(key):
            allocated, self._allocated = self._allocated, None
            return allocated[1] if allocated and allocated[0] == key else None
        r = self._cache.apply(Op.PREFETCH if prefetch else Op.LOOKUP, self._key(key), self._score(score))
        return self._plain(r.victim) if r.evict else None

    @staticmethod
    def _plain(key):
        return (key.layer, key.expert, "lsb" if key.plane == Plane.LSB else "msb")

    @property
    def stats(self):
        s = self._cache.stats
        return {"hits": s.hits, "misses": s.misses, "fills": s.fills - s.prefetch_fills,
                "prefetch_fills": s.prefetch_fills, "evictions": s.evictions}

    def __len__(self):
        return len(self._cache.where)

    def __iter__(self):
        return iter([self._plain(k) for k in self._cache.where])


SCOPES = ("layer", "shared")


class PerLayerCache:
    """One cache per layer, the capacity split evenly (``capacity // n_layers`` planes each).

    Keys are routed by their first element (the layer); the interface is the single cache's.
    """

    def __init__(self, policy, capacity, n_layers):
        self.policy, self.capacity = policy, capacity
        self.parts = [make_cache(policy, capacity // n_layers) for _ in range(n_layers)]

    def contains(self, key):
        return self.parts[key[0]].contains(key)

    def lookup(self, key, score=None):
        return self.parts[key[0]].lookup(key, score)

    def fill(self, key, score=None, prefetch=False):
        return self.parts[key[0]].fill(key, score, prefetch)

    @property
    def stats(self):
        return {k: sum(p.stats[k] for p in self.parts) for k in self.parts[0].stats}

    def __len__(self):
        return sum(len(p) for p in self.parts)

    def __iter__(self):
        return iter([k for p in self.parts for k in p])


def make_cache(policy, capacity, scope="shared", n_layers=1):
    """A cache of ``capacity`` planes with replacement ``policy``, shared by all layers or
    split evenly per layer (``scope`` ``layer``)."""
    if scope not in SCOPES:
        raise UserError(f"unknown cache scope {scope!r}; choose from {', '.join(SCOPES)}")
    if policy not in POLICIES:
        raise UserError(f"unknown cache policy {policy!r}; choose from {', '.join(POLICIES)}")
    if not isinstance(capacity, int) or capacity < 0:
        raise UserError(f"cache capacity must be an integer number of planes >= 0, got {capacity!r}")
    if scope == "layer":
        return PerLayerCache(policy, capacity, n_layers)
    if capacity < 2:          # 0 or 1 slot: every policy behaves alike
        cache = LRUCache(capacity)
        cache.policy = policy
        return cache
    return GoldenCache(policy, capacity)
