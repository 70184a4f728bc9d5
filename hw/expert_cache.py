"""Expert-cache controller: tags of the HB-resident planes, hit/miss, replacement, pins, fills.

The decisions are fixed by the golden model ``sim/cache/expert_cache.py`` (its docstring is the
specification: operations, victim choice, tie-breaks); this block reproduces them decision for
decision. It is **fully associative**: every slot's tag is compared in one cycle. Experts per
layer are few (8 to 64) and a Zipf-hot set spans layers, so a set-associative index would put hot
planes of different layers in the same set and miss where a fully associative cache of the same
size hits; the cost is one comparator per slot, measured by ``elmoe3d bench-cache`` (area per slot
in sky130 hd).

Pipeline (three stages, so Fmax does not fall with the slot count the way one compare-and-
replace cycle did):

- **take**: a request is taken (``i_lookup`` has priority over ``i_prefetch``) into stage A's
  register;
- **A, compare and select**: every slot's tag is compared with the key (one comparator per
  slot, the match vector one-hot by the invariant that a key is in at most one slot) and the
  victim is taken from the selection tree (lowest free slot, else the policy's choice among
  unpinned slots). The tree reads the replacement state alone, not the request, so it runs
  every cycle, registered half-way down: its result is that of the previous cycle's state.
  Match vector and victim are registered into stage B;
- **B, update**: the hit slot or the victim is touched, the state (tags, valid, pins, ranks /
  counts / values, counters) is updated and the response and fill registers are loaded.

Hazards keep the golden semantics for back-to-back requests: the allocation that B performs in
a cycle is forwarded into A's match vector (the new key now matches its slot, the evicted one
no longer does); a *miss* in A within a cycle of an operation that B completed with a state
change (a touch, a fill, a pin or unpin) waits until the selection tree has seen the new state
(at most 2 cycles). So a request is answered ``LOOKUP_LATENCY`` = 3 cycles after its handshake
(up to 5 for such a miss), and the cache takes one request per cycle while ``o_resp``/``o_fill``
are ready, except for those bubbles: hits stream at one per cycle, a miss behind a state change
costs up to 3. Every operation answers on ``o_resp`` (prefetches too, with
``op = PREFETCH``), so a consumer sees the order the two input ports were served in. A fill (a
miss that got a slot) also sends ``(key, slot, prefetch)`` on ``o_fill``; stage B completes only
once the previous response and fill are accepted.

Probe (``i_probe`` -> ``o_probe``): reads whether a key is resident, changing nothing (no touch
of the replacement state, no counter). A probe is taken only while no request is in the pipeline
(stages A and B empty) and neither ``i_lookup`` nor ``i_prefetch`` is valid: requests have
priority, and a probe sees the state after every request whose response has been offered (and of
no later one). Its key is registered, compared with every tag in the next cycle (the match vector
registered), and ``o_probe`` carries ``(key, hit, slot)`` ``PROBE_LATENCY`` = 2 cycles after the
probe's transfer; one probe at most every 2 cycles.

Counters wrap at ``counter_bits``, never silently: each has a sticky ``overflow`` flag in
``o_counters`` that is set when it wraps (cleared by reset only).
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out

from ..errors import UserError
from ..config import DEFAULT, POLICIES, CacheConfig
from .tops import Param, Top


class OpCode(enum.Enum, shape=2):
    """Request operations (values equal ``sim.expert_cache.Op``)."""

    LOOKUP = 0
    PREFETCH = 1
    PIN = 2
    UNPIN = 3


def key_layout(cfg):
    """A cache key: plane (0 MSB, 1 LSB) at the LSB, then expert, then layer."""
    return data.StructLayout({"plane": 1, "expert": cfg.expert_bits, "layer": cfg.layer_bits})


def request_layout(cfg):
    return data.StructLayout({"op": OpCode, "key": key_layout(cfg), "score": cfg.score_bits})


def prefetch_layout(cfg):
    return data.StructLayout({"key": key_layout(cfg), "score": cfg.score_bits})


def response_layout(cfg):
    return data.StructLayout({
        "op": OpCode, "key": key_layout(cfg), "hit": 1, "fill": 1, "evict": 1, "bypass": 1,
        "slot": cfg.slot_bits, "victim": key_layout(cfg)})


def fill_layout(cfg):
    return data.StructLayout({"key": key_layout(cfg), "slot": cfg.slot_bits, "prefetch": 1})


def probe_layout(cfg):
    """A probe's answer: the probed key, ``hit`` (resident), ``slot`` (its slot when ``hit``, else 0)."""
    return data.StructLayout({"key": key_layout(cfg), "hit": 1, "slot": cfg.slot_bits})


# Every slot's tag is compared in one cycle; beyond this a set-associative design would be the choice.
MAX_ENTRIES = 64

# Cycles from a request's handshake to its response's valid (checked by the bench); a miss within a
# cycle of a state change takes up to MAX_HAZARD_CYCLES more (see the module doc).
LOOKUP_LATENCY = 3
MAX_HAZARD_CYCLES = 2
# Cycles from a probe's handshake to its answer's valid; a probe is taken at most every PROBE_INTERVAL cycles.
PROBE_LATENCY = 2
PROBE_INTERVAL = 2

COUNTERS = ("hits", "misses", "evictions", "fills", "prefetch_fills", "bypasses")

# Design switches that the formal tests (tests/test_formal_cache.py) turn off to show that each
# property catches the bug it guards against. Always True in a real design.
FORWARD_ALLOC = True        # forward B's allocation into A's match vector
HAZARD_STALL = True         # a miss behind a state change re-selects its victim
EXCLUDE_PINNED = True       # pinned slots are no victim candidates
FLAG_OVERFLOW = True        # a wrapping counter sets its sticky overflow flag
PROBE_WHEN_IDLE = True      # a probe waits until no request is in the pipeline (the bench's broken variant)


def counters_layout(counter_bits):
    """The counters the core reads, each ``counter_bits`` wide (wrapping), and ``overflow``:
    one sticky flag per counter, set when that counter wraps."""
    return data.StructLayout({**{name: counter_bits for name in COUNTERS},
                              "overflow": data.StructLayout({name: 1 for name in COUNTERS})})


class ExpertCache(wiring.Component):
    """Fully associative expert-plane cache controller.

    Parameters
    ----------
    entries : int        slots (planes held), 2..64
    policy : str         ``lru``, ``lfu`` or ``score`` (fixed at generation time)
    layer_bits, expert_bits, count_bits, score_bits, decay_shift
                         as :class:`elmoe3d.sim.cache.expert_cache.CacheConfig`
    counter_bits : int   width of each statistics counter, 8..64

    Members
    -------
    i_lookup : In(stream of request_layout)     LOOKUP, PIN, UNPIN (or PREFETCH) requests
    i_prefetch : In(stream of prefetch_layout)  prefetch hints, served when i_lookup is idle
    o_resp : Out(stream of response_layout)     one response per served request, in service order
    o_fill : Out(stream of fill_layout)         fill requests to the off-chip side
    i_probe : In(stream of key_layout)          residency queries, served when no request is in flight
    o_probe : Out(stream of probe_layout)       ``(key, hit, slot)`` per probe, in order
    o_counters : Out(counters_layout)           hits, misses, evictions, fills, prefetch fills, bypasses,
                                                and a sticky overflow flag per counter

    Raises
    ------
    UserError
        on a parameter out of range (the message names it and its value).
    """

    # Written into the generated interface documentation (hw/interface_doc.py).
    INTERFACE_NOTES = (
        "Keys: a plane is `(layer, expert, plane)` with `plane` 0 = MSB, 1 = LSB at the key's "
        "LSB, then `expert`, then `layer` (the field tables give the bits). Every key value is "
        "legal; `score` is an unsigned fraction score / 2**score_bits, used by the `score` policy "
        "(this one: {policy}) and ignored by the others.",
        "Operations (`op`): LOOKUP looks a plane up and fills it on a miss; PIN is a LOOKUP that "
        "also pins the plane; UNPIN clears the pin of a resident plane (of an absent one: "
        "nothing); PREFETCH (on `i_prefetch`, or as an `op` on `i_lookup`) fills an absent plane "
        "like a miss and changes nothing for a resident one. A miss takes the lowest free slot, "
        "else the policy's victim among unpinned slots; with all {entries} slots pinned it is a "
        "bypass (the plane is not kept). All four encodings are legal; nothing is refused.",
        "Service: `i_lookup` has priority over `i_prefetch`; one request per cycle, its "
        "response on `o_resp` 3 cycles after the request's transfer (a miss right behind an "
        "operation that changed the replacement state waits up to 2 cycles more), every request "
        "answered (prefetches too, `op = PREFETCH`) in service order. A fill (a miss that got a "
        "slot) also sends `(key, slot, prefetch)` on `o_fill`; a request completes only once the "
        "previous response and fill are accepted. In a response, `slot` is the hit or filled slot (else 0) and `victim` the "
        "evicted key when `evict` is 1 (else 0); `bypass` is 1 for a LOOKUP, PIN or PREFETCH miss "
        "that found every slot pinned.",
        "Counters (`o_counters`, {counter_bits} bits, wrapping; each has a sticky flag in "
        "`o_counters.overflow`, set when it wraps) count demand operations only, "
        "LOOKUP and PIN: `hits` those that hit, `misses` those that missed (bypasses included), "
        "`bypasses` those that missed with every slot pinned. A PREFETCH never counts as a hit, a "
        "miss or a bypass (a prefetch that finds every slot pinned answers `bypass = 1` but is "
        "not counted). `fills` counts every slot taken (demand and prefetch), `prefetch_fills` "
        "those taken by a PREFETCH, `evictions` fills that replaced a valid plane. UNPIN counts "
        "nothing.",
        "Probe (`i_probe` -> `o_probe`): is a key resident, and in which slot. A probe changes "
        "nothing (no replacement-state touch, no counter). It is taken (`i_probe.ready`) only while "
        "no request is in the pipeline and neither `i_lookup` nor `i_prefetch` is valid: requests "
        "have priority, so a steady request stream holds probes off. A probe sees the state after "
        "every request whose response has been offered on `o_resp`, and of no later one. Its answer "
        "`(key, hit, slot)` (`slot` the key's slot when `hit`, else 0) comes on `o_probe` 2 cycles "
        "after the probe's transfer, in probe order; one probe at most every 2 cycles.",
    )

    def __init__(self, *, entries=16, policy="lru", layer_bits=4, expert_bits=6, count_bits=8,
                 score_bits=8, decay_shift=6, counter_bits=32):
        if isinstance(entries, int) and not isinstance(entries, bool) and not 2 <= entries <= MAX_ENTRIES:
            raise UserError(f"entries must be in [2, {MAX_ENTRIES}], got {entries}")
        self.config = CacheConfig(entries=entries, policy=policy, layer_bits=layer_bits,
                                  expert_bits=expert_bits, count_bits=count_bits,
                                  score_bits=score_bits, decay_shift=decay_shift)
        if isinstance(counter_bits, bool) or not isinstance(counter_bits, int) or not 8 <= counter_bits <= 64:
            raise UserError(f"counter_bits must be an integer in [8, 64], got {counter_bits!r}")
        self.counter_bits = counter_bits
        cfg = self.config
        super().__init__({
            "i_lookup": In(stream.Signature(request_layout(cfg))),
            "i_prefetch": In(stream.Signature(prefetch_layout(cfg))),
            "o_resp": Out(stream.Signature(response_layout(cfg))),
            "o_fill": Out(stream.Signature(fill_layout(cfg))),
            "i_probe": In(stream.Signature(key_layout(cfg))),
            "o_probe": Out(stream.Signature(probe_layout(cfg))),
            "o_counters": Out(counters_layout(counter_bits)),
        })

    def _select_max(self, m, cands, metrics, name, cut=None):
        """(found, index) of the candidate with the largest metric, ties to the lowest index.

        With ``cut``, the nodes after ``cut`` levels of the tree are registered: the result then
        belongs to the inputs of the previous cycle.
        """
        sb = self.config.slot_bits
        level = [(c, mt, Const(i, sb)) for i, (c, mt) in enumerate(zip(cands, metrics))]
        depth = 0
        while len(level) > 1:
            if depth == cut:
                regs = []
                for j, (v, mt, ix) in enumerate(level):
                    tag = f"{name}_cut_{j}"
                    rv, rm, ri = Signal(name=f"{tag}_found"), Signal(len(mt), name=f"{tag}_metric"), Signal(sb, name=f"{tag}_slot")
                    m.d.sync += [rv.eq(v), rm.eq(mt), ri.eq(ix)]
                    regs.append((rv, rm, ri))
                level = regs
            nxt = []
            for j in range(0, len(level), 2):
                if j + 1 == len(level):
                    nxt.append(level[j])
                    continue
                (lv, lm, li), (rv, rm, ri) = level[j], level[j + 1]
                tag = f"{name}_{depth}_{j // 2}"
                take_r = Signal(name=f"{tag}_take_right")
                v, mt, ix = Signal(name=f"{tag}_found"), Signal(len(lm), name=f"{tag}_metric"), Signal(sb, name=f"{tag}_slot")
                # Strict '>' keeps the left (lower-numbered) candidate on a tie.
                m.d.comb += [take_r.eq(rv & (~lv | (rm > lm))),
                             v.eq(lv | rv), mt.eq(Mux(take_r, rm, lm)), ix.eq(Mux(take_r, ri, li))]
                nxt.append((v, mt, ix))
            level = nxt
            depth += 1
        return level[0][0], level[0][2]

    def elaborate(self, platform):
        cfg = self.config
        m = Module()
        n, sb = cfg.entries, cfg.slot_bits
        kw = key_layout(cfg).size
        rank_bits = max(1, (n - 1).bit_length())

        valid = [Signal(name=f"entry_{i}_valid") for i in range(n)]
        tag = [Signal(kw, name=f"entry_{i}_tag") for i in range(n)]
        pinned = [Signal(name=f"entry_{i}_pinned") for i in range(n)]
        if cfg.policy == "lru":
            rank = [Signal(rank_bits, init=i, name=f"entry_{i}_rank") for i in range(n)]
        elif cfg.policy == "lfu":
            count = [Signal(cfg.count_bits, name=f"entry_{i}_count") for i in range(n)]
        else:
            value = [Signal(cfg.value_bits, name=f"entry_{i}_value") for i in range(n)]

        counters = {name: Signal(self.counter_bits, name=f"count_{name}") for name in COUNTERS}
        overflow = {name: Signal(name=f"count_{name}_overflow") for name in COUNTERS}
        m.d.comb += [getattr(self.o_counters, name).eq(sig) for name, sig in counters.items()]
        m.d.comb += [getattr(self.o_counters.overflow, name).eq(sig) for name, sig in overflow.items()]

        # --- stage registers --------------------------------------------------------------------
        a_full, a_req = Signal(name="a_full"), Signal(request_layout(cfg), name="a_req")
        b_full, b_req = Signal(name="b_full"), Signal(request_layout(cfg), name="b_req")
        b_match = Signal(n, name="b_match")          # one-hot (or zero): the slot holding b's key
        b_victim = Signal(sb, name="b_victim")       # the slot a miss of b takes (if b_found)
        b_victim_oh = Signal(n, name="b_victim_oh")
        b_found = Signal(name="b_found")
        resp_pending = Signal(name="resp_pending")
        fill_pending = Signal(name="fill_pending")
        m.d.comb += [self.o_resp.valid.eq(resp_pending), self.o_fill.valid.eq(fill_pending)]
        # Kept for the formal harness (tests/test_formal_cache.py), which reads the state.
        self.state = dict(valid=valid, tag=tag, pinned=pinned, a_full=a_full, a_req=a_req,
                          b_full=b_full, b_req=b_req, b_match=b_match, b_victim=b_victim,
                          b_victim_oh=b_victim_oh, b_found=b_found, counters=counters,
                          overflow=overflow, resp_pending=resp_pending, fill_pending=fill_pending)

        # --- stage B: touch, update, respond ------------------------------------------------------
        op = b_req.op
        demand = (op == OpCode.LOOKUP) | (op == OpCode.PIN)
        b_fire = Signal(name="b_fire")               # b completes this cycle
        m.d.comb += b_fire.eq(b_full & (~resp_pending | self.o_resp.ready) &
                              (~fill_pending | self.o_fill.ready))
        hit = Signal(name="b_hit")
        alloc = Signal(name="b_alloc")               # a miss that takes a slot
        touch = Signal(name="b_touch")               # replacement-state update of touch_oh
        touch_oh = Signal(n, name="b_touch_oh")
        evict = Signal(name="b_evict")
        hit_slot = Signal(sb, name="b_hit_slot")
        victim_tag = Signal(kw, name="b_victim_tag")
        m.d.comb += [hit.eq(b_match.any()),
                     hit_slot.eq(_encode(b_match, sb)),
                     alloc.eq((op != OpCode.UNPIN) & ~hit & b_found),
                     touch.eq((demand & hit) | alloc),
                     touch_oh.eq(Mux(hit, b_match, b_victim_oh)),
                     evict.eq(alloc & (b_victim_oh & Cat(*valid)).any()),
                     victim_tag.eq(_and_or(b_victim_oh, tag))]
        self.state.update(b_fire=b_fire, b_alloc=alloc, b_hit=hit, b_hit_slot=hit_slot)
        # Did b change what stage A's victim choice reads (ranks/counts/values, valid, pins)?
        b_changes = Signal(name="b_changes")
        m.d.comb += b_changes.eq(b_fire & (alloc | (hit & (op != OpCode.PREFETCH))))

        with m.If(self.o_resp.ready):
            m.d.sync += resp_pending.eq(0)
        with m.If(self.o_fill.ready):
            m.d.sync += fill_pending.eq(0)
        with m.If(b_fire):
            m.d.sync += [
                resp_pending.eq(1), fill_pending.eq(alloc),
                self.o_resp.payload.op.eq(op), self.o_resp.payload.key.eq(b_req.key),
                self.o_resp.payload.hit.eq(hit), self.o_resp.payload.fill.eq(alloc),
                self.o_resp.payload.evict.eq(evict),
                self.o_resp.payload.bypass.eq((op != OpCode.UNPIN) & ~hit & ~b_found),
                self.o_resp.payload.slot.eq(Mux(hit, hit_slot, Mux(alloc, b_victim, 0))),
                self.o_resp.payload.victim.eq(Mux(evict, victim_tag, 0)),
                self.o_fill.payload.key.eq(b_req.key), self.o_fill.payload.slot.eq(b_victim),
                self.o_fill.payload.prefetch.eq(op == OpCode.PREFETCH),
            ]
            incs = {"hits": demand & hit, "misses": demand & ~hit, "evictions": evict, "fills": alloc,
                    "prefetch_fills": alloc & (op == OpCode.PREFETCH), "bypasses": demand & ~hit & ~b_found}
            top = (1 << self.counter_bits) - 1
            for name, inc in incs.items():
                m.d.sync += counters[name].eq(counters[name] + inc)
                if FLAG_OVERFLOW:
                    with m.If(inc & (counters[name] == top)):
                        m.d.sync += overflow[name].eq(1)

        key_b = b_req.key.as_value()
        if cfg.policy == "lru":
            r_touched = Signal(rank_bits, name="b_rank_touched")
            m.d.comb += r_touched.eq(_and_or(touch_oh, rank))
        for i in range(n):
            this = touch & touch_oh[i]
            with m.If(b_fire):
                with m.If(alloc & b_victim_oh[i]):
                    m.d.sync += [valid[i].eq(1), tag[i].eq(key_b), pinned[i].eq(op == OpCode.PIN)]
                with m.If(hit & b_match[i]):
                    with m.If(op == OpCode.PIN):
                        m.d.sync += pinned[i].eq(1)
                    with m.If(op == OpCode.UNPIN):
                        m.d.sync += pinned[i].eq(0)
                if cfg.policy == "lru":
                    with m.If(this):
                        m.d.sync += rank[i].eq(0)
                    with m.Elif(touch & (rank[i] < r_touched)):
                        m.d.sync += rank[i].eq(rank[i] + 1)
                elif cfg.policy == "lfu":
                    ctop = (1 << cfg.count_bits) - 1
                    with m.If(this):
                        m.d.sync += count[i].eq(Mux(alloc, 1, Mux(count[i] == ctop, ctop, count[i] + 1)))
                else:
                    vtop = (1 << cfg.value_bits) - 1
                    decayed = Signal(cfg.value_bits, name=f"entry_{i}_decayed")
                    summed = Signal(cfg.value_bits + 1, name=f"entry_{i}_summed")
                    add = Cat(Const(0, cfg.decay_shift), b_req.score)   # score with decay_shift fraction bits
                    m.d.comb += [decayed.eq(value[i] - (value[i] >> cfg.decay_shift)),
                                 summed.eq(decayed + add)]
                    with m.If(this):
                        m.d.sync += value[i].eq(Mux(alloc, add, Mux(summed > vtop, vtop, summed)))
                    with m.Elif(touch):
                        m.d.sync += value[i].eq(decayed)

        # --- stage A: compare every tag, choose the victim from the state -----------------------
        key_a = a_req.key.as_value()
        same_key = Signal(name="a_same_key_as_b")
        m.d.comb += same_key.eq(key_a == key_b)
        match = []
        for i in range(n):
            raw = Signal(name=f"entry_{i}_match")
            fwd = Signal(name=f"entry_{i}_match_fwd")
            m.d.comb += raw.eq(valid[i] & (tag[i] == key_a))
            if FORWARD_ALLOC:
                # B fills slot i this cycle: a's key matches it iff it is b's key.
                m.d.comb += fwd.eq(Mux(b_fire & alloc & b_victim_oh[i], same_key, raw))
            else:
                m.d.comb += fwd.eq(raw)
            match.append(fwd)
        a_hit = Signal(name="a_hit")
        m.d.comb += a_hit.eq(Cat(*match).any())

        # One selection tree: a free slot outranks every valid one (lowest free first), then the
        # policy's metric among valid unpinned slots.
        if cfg.policy == "lru":
            metrics = rank
        elif cfg.policy == "lfu":
            metrics = [~c for c in count]
        else:
            metrics = [~v for v in value]
        mbits = len(metrics[0])
        cands, keyed = [], []
        for i in range(n):
            free = ~valid[i]
            cand = free | (valid[i] & ~pinned[i]) if EXCLUDE_PINNED else Const(1)
            cands.append(cand)
            keyed.append(Mux(free, Const(1 << mbits, mbits + 1), Cat(metrics[i], Const(0, 1))))
        # The tree spans two cycles (registers half-way down, VICTIM_CUT): its result belongs to
        # last cycle's state, so it is stale for a cycle after each state change.
        levels = (n - 1).bit_length()
        found, victim = self._select_max(m, cands, keyed, "victim", cut=(levels + 1) // 2)
        sel_stale = Signal(init=1, name="victim_stale")
        m.d.sync += sel_stale.eq(b_changes)
        self.state["victim_stale"] = sel_stale

        a_needs_victim = ~a_hit & (a_req.op != OpCode.UNPIN)
        a_blocked = Signal(name="a_blocked")
        m.d.comb += a_blocked.eq(a_needs_victim & (b_changes | sel_stale) if HAZARD_STALL else 0)
        a_advance = Signal(name="a_advance")
        m.d.comb += a_advance.eq(a_full & ~a_blocked & (~b_full | b_fire))
        with m.If(b_fire):
            m.d.sync += b_full.eq(0)
        with m.If(a_advance):
            m.d.sync += [b_full.eq(1), b_req.eq(a_req), b_match.eq(Cat(*match)), b_found.eq(found),
                         b_victim.eq(victim), b_victim_oh.eq(Cat(*[victim == i for i in range(n)]))]

        # --- take: a new request into stage A -----------------------------------------------------
        a_take = Signal(name="a_take")
        m.d.comb += [a_take.eq(~a_full | a_advance),
                     self.i_lookup.ready.eq(a_take),
                     self.i_prefetch.ready.eq(a_take & ~self.i_lookup.valid)]
        with m.If(a_advance):
            m.d.sync += a_full.eq(0)
        with m.If(self.i_lookup.valid & self.i_lookup.ready):
            m.d.sync += [a_req.eq(self.i_lookup.payload), a_full.eq(1)]
        with m.Elif(self.i_prefetch.valid & self.i_prefetch.ready):
            m.d.sync += [a_req.op.eq(OpCode.PREFETCH), a_req.key.eq(self.i_prefetch.payload.key),
                         a_req.score.eq(self.i_prefetch.payload.score), a_full.eq(1)]

        # --- probe: key register, registered tag compare, answer ------------------------------------
        # Taken only with the pipeline empty and no request offered, so no state update is under way
        # in the cycle of the compare (a request taken one cycle later updates the state 2 cycles
        # after that). The answer register is free by the compare cycle (taken only when it empties).
        p_full, p_key = Signal(name="probe_full"), Signal(kw, name="probe_key")
        q_match = Signal(n, name="probe_match")
        q_key = Signal(kw, name="probe_answer_key")
        q_full = Signal(name="probe_answer_full")
        p_take = Signal(name="probe_take")
        quiet = ~a_full & ~b_full if PROBE_WHEN_IDLE else Const(1)
        m.d.comb += [p_take.eq(quiet & ~self.i_lookup.valid & ~self.i_prefetch.valid & ~p_full &
                               (~q_full | self.o_probe.ready)),
                     self.i_probe.ready.eq(p_take)]
        with m.If(self.o_probe.ready):
            m.d.sync += q_full.eq(0)
        m.d.sync += p_full.eq(self.i_probe.valid & p_take)
        with m.If(self.i_probe.valid & p_take):
            m.d.sync += p_key.eq(self.i_probe.payload.as_value())
        with m.If(p_full):
            m.d.sync += [q_full.eq(1), q_key.eq(p_key),
                         q_match.eq(Cat(*[valid[i] & (tag[i] == p_key) for i in range(n)]))]
        m.d.comb += [self.o_probe.valid.eq(q_full),
                     self.o_probe.payload.key.eq(q_key),
                     self.o_probe.payload.hit.eq(q_match.any()),
                     self.o_probe.payload.slot.eq(_encode(q_match, sb))]
        self.state.update(probe_full=p_full, probe_answer_full=q_full, probe_match=q_match)
        return m


def _encode(onehot, width):
    """Index of the set bit of a one-hot (or zero) vector: an OR tree per index bit."""
    n = len(onehot)
    return Cat(*[Cat(*[onehot[i] for i in range(n) if i >> b & 1] or [Const(0)]).any()
                 for b in range(width)])


def _and_or(onehot, values):
    """``values[i]`` for the set bit ``i`` of a one-hot vector (0 if none): AND-OR, log depth."""
    width = len(values[0])
    terms = [Mux(onehot[i], values[i], Const(0, width)) for i in range(len(values))]
    while len(terms) > 1:
        terms = [terms[j] | terms[j + 1] if j + 1 < len(terms) else terms[j] for j in range(0, len(terms), 2)]
    return terms[0]


def Cat_any(bits):
    """OR of a list of 1-bit values."""
    return Cat(*bits).any()


GENERATE_TOPS = [
    Top(name="expert_cache",
        help="expert-cache controller: fully associative plane tags, LRU/LFU/score replacement, pins, fills, prefetch",
        build=lambda **p: ExpertCache(**p),
        params=(
            # Defaults: the accelerator's one configuration (elmoe3d.config.DEFAULT.cache).
            Param("entries", int, DEFAULT.cache.entries, "cache slots (planes held), 2..64"),
            Param("policy", str, DEFAULT.cache.policy, "replacement policy", choices=POLICIES),
            Param("layer_bits", int, DEFAULT.cache.layer_bits, "layer field width of a key"),
            Param("expert_bits", int, DEFAULT.cache.expert_bits, "expert field width of a key"),
            Param("count_bits", int, DEFAULT.cache.count_bits, "LFU counter width"),
            Param("score_bits", int, DEFAULT.cache.score_bits, "router score width"),
            Param("decay_shift", int, DEFAULT.cache.decay_shift, "score policy: v -= v >> decay_shift per touch"),
            Param("counter_bits", int, 32, "statistics counter width"),
        )),
]
