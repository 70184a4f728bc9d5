"""Golden expert-cache model and traces: policies, pins, prefetch, statistics, refusals."""

import numpy as np
import pytest

from elmoe3d.errors import UserError
from elmoe3d.sim.cache.expert_cache import CacheConfig, ExpertCache, Key, Op, Plane
from elmoe3d.sim.cache.traces import (load_routing, random_ops, routing_to_ops, save_routing, zipf_ops,
                                zipf_popularity, zipf_routing)

K = [Key(0, e) for e in range(8)]


def _cache(policy, entries=3):
    return ExpertCache(CacheConfig(entries=entries, policy=policy, layer_bits=1, expert_bits=3, decay_shift=3))


def test_fills_lowest_free_slot_first_then_hits():
    c = _cache("lru")
    r = [c.apply(Op.LOOKUP, K[i], 10) for i in range(3)]
    assert [(x.hit, x.slot, x.fill, x.evict) for x in r] == [(False, i, True, False) for i in range(3)]
    assert c.apply(Op.LOOKUP, K[1], 10) == type(r[0])(Op.LOOKUP, K[1], hit=True, slot=1)
    assert c.stats.hits == 1 and c.stats.misses == 3 and c.stats.fills == 3


def test_lru_evicts_least_recently_used():
    c = _cache("lru")
    for i in (0, 1, 2, 0):
        c.apply(Op.LOOKUP, K[i])
    r = c.apply(Op.LOOKUP, K[3])
    assert (r.slot, r.evict, r.victim) == (1, True, K[1])


def test_lfu_evicts_least_used_ties_to_lowest_slot():
    c = _cache("lfu")
    for i in (0, 1, 2, 0, 2):
        c.apply(Op.LOOKUP, K[i])
    assert c.apply(Op.LOOKUP, K[3]).victim == K[1]          # counts 2, 1, 2
    c2 = _cache("lfu")
    for i in (0, 1, 2):
        c2.apply(Op.LOOKUP, K[i])
    assert c2.apply(Op.LOOKUP, K[3]).slot == 0               # all 1: lowest slot


def test_score_policy_keeps_high_confidence_plane():
    c = _cache("score")
    c.apply(Op.LOOKUP, K[0], 250)
    c.apply(Op.LOOKUP, K[1], 5)
    c.apply(Op.LOOKUP, K[2], 5)
    c.apply(Op.LOOKUP, K[1], 5)       # K[0] least recent, but its score mass is the largest
    r = c.apply(Op.LOOKUP, K[3], 5)
    assert r.victim == K[2]
    assert c.value[r.slot] == 5 * 8                          # 3 fraction bits
    # decay: every touch removes 1/8 of every slot's value
    v = 250 * 8
    for _ in range(4):
        v -= v >> 3
    assert c.value[0] == v


def test_score_value_saturates():
    c = ExpertCache(CacheConfig(entries=2, policy="score", layer_bits=1, expert_bits=1, score_bits=4, decay_shift=1))
    for _ in range(10):
        c.apply(Op.LOOKUP, Key(0, 0), 15)
    assert c.value[0] == 60       # converges to score * 4 = 60 inside 6 bits: value_bits never overflows


def test_pinned_planes_are_never_victims_and_all_pinned_bypasses():
    c = _cache("lru", entries=2)
    c.apply(Op.PIN, K[0], 1)
    c.apply(Op.PIN, K[1], 1)
    r = c.apply(Op.LOOKUP, K[2], 1)
    assert r.bypass and not r.fill and c.stats.bypasses == 1 and c.stats.misses == 3
    assert c.apply(Op.UNPIN, K[0]).hit
    assert c.apply(Op.LOOKUP, K[2], 1).victim == K[0]
    assert not c.apply(Op.UNPIN, K[5]).hit


def test_prefetch_fills_without_disturbing_order_and_counts_useful():
    c = _cache("lru")
    for i in (0, 1, 2):
        c.apply(Op.LOOKUP, K[i])
    hit = c.apply(Op.PREFETCH, K[0])
    assert hit.hit and c.rank[0] == 2                       # a resident hint changes nothing
    r = c.apply(Op.PREFETCH, K[4])
    assert r.fill and r.victim == K[0] and c.stats.prefetch_fills == 1
    assert c.stats.hits == 0 and c.stats.misses == 3
    c.apply(Op.LOOKUP, K[4])
    assert c.stats.useful_prefetches == 1


def test_bytes_per_tier():
    c = ExpertCache(CacheConfig(entries=2, layer_bits=1, expert_bits=1, plane_bytes=100))
    for k in (Key(0, 0, Plane.MSB), Key(0, 0, Plane.MSB), Key(0, 1, Plane.LSB)):
        c.apply(Op.LOOKUP, k)
    assert c.stats.hb_bytes == {"msb": 100, "lsb": 0}
    assert c.stats.offchip_bytes == {"msb": 100, "lsb": 100}


@pytest.mark.parametrize("policy", ["lru", "lfu", "score"])
def test_invariants_on_random_trace(policy):
    cfg = CacheConfig(entries=8, policy=policy, layer_bits=2, expert_bits=3)
    c = ExpertCache(cfg)
    evictions = 0
    for op, k, s in random_ops(cfg, 3000, seed=5):
        pinned_before = list(c.pinned)
        r = c.apply(op, k, s)
        assert sorted(c.rank) == list(range(8)) or policy != "lru"
        assert len(c.where) == sum(c.valid)
        if r.evict:     # the victim was unpinned before the operation (a pinned plane is in use)
            assert not pinned_before[r.slot], f"{op} evicted pinned slot {r.slot}"
            evictions += 1
    assert evictions > 100          # the check above was exercised
    st = c.stats
    assert st.fills == st.misses - st.bypasses + st.prefetch_fills


def test_zipf_skew_raises_hit_rate():
    cfg = CacheConfig(entries=16, policy="lru", layer_bits=2, expert_bits=5)
    rates = []
    for alpha in (0.0, 1.2):
        c = ExpertCache(cfg)
        c.run(zipf_ops(cfg, steps=300, alpha=alpha, seed=1))
        rates.append(c.stats.hit_rate)
    assert rates[1] > rates[0] + 0.2


def test_zipf_popularity():
    p = zipf_popularity(4, 1.0)
    assert np.isclose(p.sum(), 1) and np.allclose(p / p[0], [1, 1 / 2, 1 / 3, 1 / 4])
    with pytest.raises(UserError, match=r"^Zipf alpha must be >= 0, got -1$"):
        zipf_popularity(4, -1)


def test_routing_trace_round_trip(tmp_path):
    tr = zipf_routing(n_layers=2, n_experts=8, top_k=2, steps=5, alpha=1.0, seed=0, draft_k=1)
    save_routing(tmp_path / "t.npz", tr)
    back = load_routing(tmp_path / "t.npz")
    assert back["experts"].shape == (10, 2) and int(back["n_experts"]) == 8
    ops = routing_to_ops(back, planes="both")
    assert len(ops) == 10 * (1 + 2 * 2)
    assert ops[0][0] == Op.PREFETCH and ops[1][0] == Op.LOOKUP and ops[2][1].plane == Plane.LSB


def test_routing_trace_refusals(tmp_path):
    np.savez(tmp_path / "bad.npz", layer=np.zeros(3, int), experts=np.zeros((3, 2), int))
    with pytest.raises(UserError, match=r"lacks array\(s\) scores; it has experts, layer$"):
        load_routing(tmp_path / "bad.npz")
    np.savez(tmp_path / "shape.npz", layer=np.zeros(3, int), experts=np.zeros((3, 2), int), scores=np.zeros((2, 2)))
    with pytest.raises(UserError, match=r"experts and scores must both be \(T, k\)"):
        load_routing(tmp_path / "shape.npz")
    (tmp_path / "junk.npz").write_text("no")
    with pytest.raises(UserError, match=r"^cannot read routing trace"):
        load_routing(tmp_path / "junk.npz")


@pytest.mark.parametrize("kwargs, message", [
    ({"entries": 1}, "entries must be in [2, 4096], got 1"),
    ({"entries": 4097}, "entries must be in [2, 4096], got 4097"),
    ({"entries": 4.0}, "entries must be an integer, got 4.0"),
    ({"policy": "fifo"}, "policy must be one of lru, lfu, score, got 'fifo'"),
    ({"layer_bits": 0}, "layer_bits must be in [1, 8], got 0"),
    ({"expert_bits": 11}, "expert_bits must be in [1, 10], got 11"),
    ({"count_bits": 1}, "count_bits must be in [2, 16], got 1"),
    ({"decay_shift": 9}, "decay_shift must be in [1, 8], got 9"),
])
def test_config_refusals(kwargs, message):
    with pytest.raises(UserError) as info:
        CacheConfig(**kwargs)
    assert str(info.value) == message


def test_request_refusals():
    c = _cache("lru")
    with pytest.raises(UserError, match=r"does not fit layer_bits=1, expert_bits=3"):
        c.apply(Op.LOOKUP, Key(2, 0))
    with pytest.raises(UserError, match=r"^score must be in \[0, 255\], got 256$"):
        c.apply(Op.LOOKUP, Key(0, 0), 256)


def test_language_model_jsonl_trace(tmp_path):
    import json
    from elmoe3d.sim.cache.traces import routing_file_ops
    path = tmp_path / "t.jsonl"
    recs = [{"format": "elmoe3d-routing-trace", "version": 1, "n_layers": 2, "n_experts": 4, "top_k": 2},
            {"step": 1, "kind": "draft", "layer": 1, "seq": [0], "pos": [5], "experts": [[2]],
             "scores": [[0.1, 0.2, 0.6, 0.1]]},
            {"step": 2, "kind": "target", "layer": 1, "seq": [0, 0], "pos": [5, 6], "experts": [[2, 1], [0, 3]],
             "scores": [[0.1, 0.2, 0.6, 0.1], [0.5, 0.1, 0.1, 0.3]]}]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    from elmoe3d.sim.cache.traces import quantize_score
    ops, n_l, n_e, rows = routing_file_ops(path)
    assert (n_l, n_e, rows) == (2, 4, 3)
    # one lookup per unique expert of the pass (as elmoe3d sd counts), ascending mean score
    mean = {0: 0.3, 1: 0.15, 2: 0.35, 3: 0.2}
    assert [(op, k.expert, s) for op, k, s in ops] == [(Op.PREFETCH, 2, quantize_score(0.6, 8))] + [
        (Op.LOOKUP, e, quantize_score(mean[e], 8)) for e in (1, 3, 0, 2)]
    assert len(routing_file_ops(path, prefetch=False, planes="both")[0]) == 8
