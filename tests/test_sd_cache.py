"""The Elastic-SD harness's own LRU expert cache and its per-layer split."""

import pytest

from elmoe3d.errors import UserError
from elmoe3d.sim.sd.sd_cache import LRUCache, PerLayerCache, make_cache


def test_lru_evicts_the_least_recently_used():
    c = LRUCache(2)
    assert not c.lookup("a") and c.fill("a") is None
    assert not c.lookup("b") and c.fill("b") is None
    assert c.lookup("a")                      # b is now least recent
    assert c.fill("c") == "b"
    assert c.contains("a") and c.contains("c") and not c.contains("b")
    assert c.stats == {"hits": 1, "misses": 2, "fills": 3, "prefetch_fills": 0, "evictions": 1}


def test_contains_changes_nothing_and_prefetch_is_counted():
    c = LRUCache(2)
    c.fill("a")
    c.fill("b", prefetch=True)
    assert c.contains("a")                    # a probe: a stays least recent
    assert c.fill("c") == "a"
    assert c.stats["prefetch_fills"] == 1 and c.stats["hits"] == 0


def test_zero_capacity_holds_nothing():
    c = LRUCache(0)
    assert c.fill("a") is None and not c.contains("a") and len(c) == 0


def test_per_layer_split_keeps_layers_apart():
    c = make_cache("lru", 4, "layer", n_layers=2)
    assert isinstance(c, PerLayerCache)
    for e in range(3):
        c.fill((0, e, "msb"))
    c.fill((1, 0, "msb"))
    assert sorted(c) == [(0, 1, "msb"), (0, 2, "msb"), (1, 0, "msb")]
    assert c.lookup((1, 0, "msb")) and c.stats["hits"] == 1 and c.stats["evictions"] == 1


@pytest.mark.parametrize("args, match", [
    (("fifo", 4), "unknown cache policy 'fifo'"),
    (("lru", -1), "capacity must be an integer"),
    (("lru", 4, "global"), "unknown cache scope 'global'"),
])
def test_bad_cache_parameters_are_refused(args, match):
    with pytest.raises(UserError, match=match):
        make_cache(*args)


def test_golden_lru_agrees_with_the_small_lru():
    """The golden cache model behind the harness interface makes the same LRU decisions."""
    import numpy as np
    rng = np.random.default_rng(0)
    small, golden = LRUCache(5), make_cache("lru", 5)
    for _ in range(2000):
        key = (int(rng.integers(2)), int(rng.integers(6)), "msb")
        if rng.random() < 0.2:
            assert small.contains(key) == golden.contains(key)
            continue
        hit = small.lookup(key)
        assert golden.lookup(key, float(rng.random())) == hit, key
        if not hit:
            assert small.fill(key) == golden.fill(key)
        assert sorted(small) == sorted(golden)
    assert small.stats["hits"] == golden.stats["hits"] and small.stats["evictions"] == golden.stats["evictions"]


@pytest.mark.parametrize("policy", ["lru", "lfu", "score"])
def test_every_golden_policy_serves_the_harness(policy):
    c = make_cache(policy, 3)
    for e in range(5):
        if not c.lookup((0, e, "msb"), 0.5):
            c.fill((0, e, "msb"), 0.5)
    c.fill((1, 0, "msb"), 0.9, prefetch=True)
    assert len(c) == 3 and c.policy == policy
    assert c.stats["misses"] == 5 and c.stats["prefetch_fills"] == 1
