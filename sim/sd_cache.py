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


def make_cache(policy, capacity):
    """A cache of ``capacity`` planes with replacement ``policy``."""
    if policy == "lru":
        return LRUCache(capacity)
    raise UserError(f"unknown cache policy {policy!r}; choose from {', '.join(POLICIES)}")
