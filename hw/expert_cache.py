"""Expert-cache controller: tags of the HB-resident planes, hit/miss, replacement, pins, fills.

The decisions are fixed by the golden model ``sim/expert_cache.py`` (its docstring is the
specification: operations, victim choice, tie-breaks); this block reproduces them decision for
decision. It is **fully associative**: every slot's tag is compared in one cycle. Experts per
layer are few (8 to 64) and a Zipf-hot set spans layers, so a set-associative index would put hot
planes of different layers in the same set and miss where a fully associative cache of the same
size hits; the cost is one comparator per slot, measured by ``elmoe3d bench-cache`` (area per slot
in sky130 hd).

Pipeline: a request is taken (``i_lookup`` has priority over ``i_prefetch``), compared against
every tag and replaced in the next cycle, and answered from registers the cycle after: a lookup
latency of 2 cycles and one operation every 2 cycles while ``o_resp``/``o_fill`` are ready. Every
operation answers on ``o_resp`` (prefetches too, with ``op = PREFETCH``), so a consumer sees the
order the two input ports were served in. A fill (a miss that got a slot) also sends
``(key, slot, prefetch)`` on ``o_fill``; the next request is taken only once both are accepted.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out

from ..errors import UserError
from ..config import POLICIES, CacheConfig
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


# Every slot's tag is compared in one cycle; beyond this a set-associative design would be the choice.
MAX_ENTRIES = 64

# Cycles from a request's handshake to its response's valid (checked by the bench).
LOOKUP_LATENCY = 2

COUNTERS = ("hits", "misses", "evictions", "fills", "prefetch_fills", "bypasses")


def counters_layout(counter_bits):
    """The counters the core reads, each ``counter_bits`` wide (wrapping)."""
    return data.StructLayout({name: counter_bits for name in COUNTERS})


class ExpertCache(wiring.Component):
    """Fully associative expert-plane cache controller.

    Parameters
    ----------
    entries : int        slots (planes held), 2..64
    policy : str         ``lru``, ``lfu`` or ``score`` (fixed at generation time)
    layer_bits, expert_bits, count_bits, score_bits, decay_shift
                         as :class:`elmoe3d.sim.expert_cache.CacheConfig`
    counter_bits : int   width of each statistics counter, 8..64

    Members
    -------
    i_lookup : In(stream of request_layout)     LOOKUP, PIN, UNPIN (or PREFETCH) requests
    i_prefetch : In(stream of prefetch_layout)  prefetch hints, served when i_lookup is idle
    o_resp : Out(stream of response_layout)     one response per served request, in service order
    o_fill : Out(stream of fill_layout)         fill requests to the off-chip side
    o_counters : Out(counters_layout)           hits, misses, evictions, fills, prefetch fills, bypasses

    Raises
    ------
    UserError
        on a parameter out of range (the message names it and its value).
    """

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
            "o_counters": Out(counters_layout(counter_bits)),
        })

    def _select_max(self, m, cands, metrics, name):
        """(found, index) of the candidate with the largest metric, ties to the lowest index."""
        sb = self.config.slot_bits
        level = [(c, mt, Const(i, sb)) for i, (c, mt) in enumerate(zip(cands, metrics))]
        depth = 0
        while len(level) > 1:
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
        m.d.comb += [getattr(self.o_counters, name).eq(sig) for name, sig in counters.items()]

        # --- request stage: take one request when the response registers free up ---------------
        req = Signal(request_layout(cfg))
        look = Signal()                      # a request is in the compare/replace stage
        resp_pending = Signal()
        fill_pending = Signal()
        free = ~look & (~resp_pending | self.o_resp.ready) & (~fill_pending | self.o_fill.ready)
        m.d.comb += [self.i_lookup.ready.eq(free),
                     self.i_prefetch.ready.eq(free & ~self.i_lookup.valid)]
        m.d.sync += look.eq(0)
        with m.If(self.i_lookup.valid & self.i_lookup.ready):
            m.d.sync += [req.eq(self.i_lookup.payload), look.eq(1)]
        with m.Elif(self.i_prefetch.valid & self.i_prefetch.ready):
            m.d.sync += [req.op.eq(OpCode.PREFETCH), req.key.eq(self.i_prefetch.payload.key),
                         req.score.eq(self.i_prefetch.payload.score), look.eq(1)]
        with m.If(self.o_resp.ready):
            m.d.sync += resp_pending.eq(0)
        with m.If(self.o_fill.ready):
            m.d.sync += fill_pending.eq(0)
        m.d.comb += [self.o_resp.valid.eq(resp_pending), self.o_fill.valid.eq(fill_pending)]

        # --- compare stage: tag match, victim, replacement update --------------------------------
        key = req.key.as_value()
        match = [Signal(name=f"entry_{i}_match") for i in range(n)]
        m.d.comb += [match[i].eq(valid[i] & (tag[i] == key)) for i in range(n)]
        hit = Signal()
        hit_slot = Signal(sb)
        m.d.comb += [hit.eq(Cat_any(match)), hit_slot.eq(_first(match))]
        any_free = Signal()
        first_free = Signal(sb)
        m.d.comb += [any_free.eq(Cat_any([~v for v in valid])), first_free.eq(_first([~v for v in valid]))]
        cands = [valid[i] & ~pinned[i] for i in range(n)]
        if cfg.policy == "lru":
            metrics = rank
        elif cfg.policy == "lfu":
            metrics = [~c for c in count]
        else:
            metrics = [~v for v in value]
        tree_found, tree_slot = self._select_max(m, cands, metrics, "victim")
        found = Signal()
        victim = Signal(sb)
        m.d.comb += [found.eq(any_free | tree_found), victim.eq(Mux(any_free, first_free, tree_slot))]

        op = req.op
        demand = (op == OpCode.LOOKUP) | (op == OpCode.PIN)
        alloc = Signal()       # a miss that takes a slot
        touch = Signal()       # replacement-state update of touch_slot
        touch_fill = Signal()
        touch_slot = Signal(sb)
        m.d.comb += [alloc.eq(look & (op != OpCode.UNPIN) & ~hit & found),
                     touch.eq(look & ((demand & hit) | alloc)),
                     touch_fill.eq(alloc),
                     touch_slot.eq(Mux(hit, hit_slot, victim))]
        evict = Signal()
        victim_tag = Signal(kw)
        m.d.comb += [evict.eq(alloc & _pick(valid, victim)), victim_tag.eq(_pick(tag, victim))]

        with m.If(look):
            m.d.sync += [
                resp_pending.eq(1), fill_pending.eq(alloc),
                self.o_resp.payload.op.eq(op), self.o_resp.payload.key.eq(req.key),
                self.o_resp.payload.hit.eq(hit), self.o_resp.payload.fill.eq(alloc),
                self.o_resp.payload.evict.eq(evict),
                self.o_resp.payload.bypass.eq((op != OpCode.UNPIN) & ~hit & ~found),
                self.o_resp.payload.slot.eq(Mux(hit | alloc, touch_slot, 0)),
                self.o_resp.payload.victim.eq(Mux(evict, victim_tag, 0)),
                self.o_fill.payload.key.eq(req.key), self.o_fill.payload.slot.eq(victim),
                self.o_fill.payload.prefetch.eq(op == OpCode.PREFETCH),
                counters["hits"].eq(counters["hits"] + (demand & hit)),
                counters["misses"].eq(counters["misses"] + (demand & ~hit)),
                counters["evictions"].eq(counters["evictions"] + evict),
                counters["fills"].eq(counters["fills"] + alloc),
                counters["prefetch_fills"].eq(counters["prefetch_fills"] + (alloc & (op == OpCode.PREFETCH))),
                counters["bypasses"].eq(counters["bypasses"] + (demand & ~hit & ~found)),
            ]

        if cfg.policy == "lru":
            r_touched = Signal(rank_bits)
            m.d.comb += r_touched.eq(_pick(rank, touch_slot))
        for i in range(n):
            this = touch & (touch_slot == i)
            with m.If(alloc & (victim == i)):
                m.d.sync += [valid[i].eq(1), tag[i].eq(key), pinned[i].eq(op == OpCode.PIN)]
            with m.If(look & hit & (hit_slot == i)):
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
                top = (1 << cfg.count_bits) - 1
                with m.If(this):
                    m.d.sync += count[i].eq(Mux(touch_fill, 1, Mux(count[i] == top, top, count[i] + 1)))
            else:
                vtop = (1 << cfg.value_bits) - 1
                decayed = Signal(cfg.value_bits, name=f"entry_{i}_decayed")
                summed = Signal(cfg.value_bits + 1, name=f"entry_{i}_summed")
                add = Cat(Const(0, cfg.decay_shift), req.score)     # score with decay_shift fraction bits
                m.d.comb += [decayed.eq(value[i] - (value[i] >> cfg.decay_shift)),
                             summed.eq(decayed + add)]
                with m.If(this):
                    m.d.sync += value[i].eq(Mux(touch_fill, add, Mux(summed > vtop, vtop, summed)))
                with m.Elif(touch):
                    m.d.sync += value[i].eq(decayed)
        return m


def _first(bits):
    """Index of the lowest set bit (0 if none), as a chain of muxes.

    Written as expressions, not ``m.If`` chains: Yosys turns those into ``always @*`` blocks that
    Icarus does not evaluate at time 0 when their inputs never change, leaving X.
    """
    out = Const(0)
    for i in reversed(range(len(bits))):
        out = Mux(bits[i], i, out)
    return out


def _pick(values, index):
    """``values[index]`` as a chain of muxes (see :func:`_first` for why not ``Array``)."""
    out = values[0]
    for i in range(1, len(values)):
        out = Mux(index == i, values[i], out)
    return out


def Cat_any(bits):
    """OR of a list of 1-bit values."""
    return Cat(*bits).any()


GENERATE_TOPS = [
    Top(name="expert_cache",
        help="expert-cache controller: fully associative plane tags, LRU/LFU/score replacement, pins, fills, prefetch",
        build=lambda **p: ExpertCache(**p),
        params=(
            Param("entries", int, 16, "cache slots (planes held), 2..64"),
            Param("policy", str, "lru", "replacement policy", choices=POLICIES),
            Param("layer_bits", int, 4, "layer field width of a key"),
            Param("expert_bits", int, 6, "expert field width of a key"),
            Param("count_bits", int, 8, "LFU counter width"),
            Param("score_bits", int, 8, "router score width"),
            Param("decay_shift", int, 6, "score policy: v -= v >> decay_shift per touch"),
            Param("counter_bits", int, 32, "statistics counter width"),
        )),
]
