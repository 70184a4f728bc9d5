"""A small expert cache for the Elastic-SD harness: the HB-resident MSB planes.

Keys are ``(layer, expert, plane)`` tuples, ``plane`` is ``"msb"`` here (the HB memory holds the
MSB planes of the hot experts; SPEC sections 1 and 4). Capacity is counted in planes.

Interface (what :mod:`.elastic_sd` needs of any cache model):

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

Only LRU is implemented here. The project's golden cache model (``sim/expert_cache.py``, with
LFU and a score-aware policy) plugs in through :func:`make_cache` when it is present.
"""

from collections import OrderedDict

from ..errors import UserError

POLICIES = ("lru",)


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
    if scope == "layer":
        return PerLayerCache(policy, capacity, n_layers)
    if policy == "lru":
        return LRUCache(capacity)
    raise UserError(f"unknown cache policy {policy!r}; choose from {', '.join(POLICIES)}")
