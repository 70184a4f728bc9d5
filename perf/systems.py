"""Serving systems as data: memory tiers, compute, energy constants, decoding method.

A system is a :class:`System`: an off-chip tier (HBM), optionally an HB tier (hybrid-bonded DRAM
stacked on the compute die), compute (a GPU's MAC rate, or the project's PE arrays), static
power, a decoding method and what the HB tier caches. ``perf/data/systems.json`` holds the five
systems of SPEC section 9 with the source of every constant; ``--config FILE`` adds or overrides
systems in the same form (``based_on`` copies another system and overrides its fields).

Units: bandwidth GB/s (1e9 bytes per second), energy pJ per bit or per MAC, capacity GiB,
power W, clock MHz.
"""

import json
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path

from ..errors import UserError
from .models import check_table

DATA = Path(__file__).resolve().parent / "data"
DECODING = ("plain", "separate", "self", "elastic")
CACHES = ("none", "int8", "msb")
OVERLAPS = ("max", "sum")
ARRAY_KINDS = ("int8", "bit_sliced")
GIB = 1 << 30


def _number(owner, name, value, *, lo=0.0, lo_open=True, hi=None):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise UserError(f"{owner}: {name} must be a number, got {value!r}")
    if (value <= lo if lo_open else value < lo) or (hi is not None and value > hi) or value == float("inf"):
        rng = f"{'>' if lo_open else '>='} {lo:g}" + (f" and <= {hi:g}" if hi is not None else "")
        raise UserError(f"{owner}: {name} must be {rng}, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Tier:
    """A memory tier: ``gbps`` peak GB/s, ``efficiency`` (0, 1] achieved/peak when streaming,
    ``pj_per_bit`` energy per bit moved, ``capacity_gib``."""

    gbps: float
    efficiency: float = 1.0
    pj_per_bit: float = 0.0
    capacity_gib: float = 0.0
    source: str = ""

    def check(self, owner):
        _number(owner, "gbps (bandwidth)", self.gbps)
        _number(owner, "efficiency", self.efficiency, hi=1.0)
        _number(owner, "pj_per_bit", self.pj_per_bit, lo_open=False)
        _number(owner, "capacity_gib", self.capacity_gib, lo_open=False)

    @property
    def bytes_per_s(self):
        """Achieved bandwidth in bytes per second."""
        return self.gbps * 1e9 * self.efficiency


@dataclass(frozen=True)
class Array:
    """PE arrays of the accelerator: ``arrays`` copies of a ``rows x cols x lanes`` array at
    ``clock_mhz`` with ``pipeline`` PE stages; ``kind`` ``bit_sliced`` (DRAFT 1 cycle per beat,
    FULL 2) or ``int8``."""

    kind: str
    rows: int
    cols: int
    lanes: int
    arrays: int
    clock_mhz: float
    pipeline: int = 1
    source: str = ""

    def check(self, owner):
        if not isinstance(self.pipeline, int) or isinstance(self.pipeline, bool) or not 0 <= self.pipeline <= 4:
            raise UserError(f"{owner}: array pipeline must be an integer in 0 .. 4, got {self.pipeline!r}")
        if self.kind not in ARRAY_KINDS:
            raise UserError(f"{owner}: array kind must be one of {', '.join(ARRAY_KINDS)}, got {self.kind!r}")
        for name in ("rows", "cols", "lanes", "arrays"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise UserError(f"{owner}: array {name} must be a positive integer, got {v!r}")
        _number(owner, "array clock_mhz", self.clock_mhz)

    def macs_per_s(self, mode="full"):
        """Peak MAC rate; a FULL pass of the bit-sliced array takes two cycles per beat."""
        phases = 2 if (self.kind == "bit_sliced" and mode == "full") else 1
        return self.arrays * self.rows * self.cols * self.lanes * self.clock_mhz * 1e6 / phases


@dataclass(frozen=True)
class System:
    """One serving system (see the module docstring); ``pj_per_mac`` maps a mode (``full``,
    ``draft``) to pJ per MAC, ``macs_per_s`` is the GPU's rate (None for PE arrays)."""

    name: str
    label: str
    decoding: str
    cache: str
    weight_bits: int
    overlap: str
    offchip: Tier
    hb: Tier = None
    array: Array = None
    macs_per_s: float = None
    pj_per_mac: dict = field(default_factory=dict)
    static_w: float = 0.0
    sources: dict = field(default_factory=dict)
    kv_tier: str = "offchip"
    own_footing: str = ""
    pass_overhead: dict = field(default_factory=dict)     # pass kind (target, draft) -> time factor
    # speculative systems with an expert cache ("int8"): the experts the round's draft passes fetched
    # stay resident for its verification pass (SpecMoE-style prefetch reuse); off for every shipped system
    draft_reuse: bool = False
    # per-pass software cost of an offloading runtime, serial with the pass's transfers and compute
    # (see :func:`runtime_seconds`): {"s_per_moe_layer", "s_per_expert", "s_per_moe_layer_extra": {model: s}}
    runtime: dict = field(default_factory=dict)
    # energy per byte streamed into the accelerator core (buffers, interfaces), pJ; 0 = not modelled
    # (set from a bench-core result, :mod:`.bench_core`)
    onchip_pj_per_byte: float = 0.0

    def __post_init__(self):
        owner = f"system {self.name}"
        if self.decoding not in DECODING:
            raise UserError(f"{owner}: decoding must be one of {', '.join(DECODING)}, got {self.decoding!r}")
        if self.cache not in CACHES:
            raise UserError(f"{owner}: cache must be one of {', '.join(CACHES)}, got {self.cache!r}")
        if self.overlap not in OVERLAPS:
            raise UserError(f"{owner}: overlap must be one of {', '.join(OVERLAPS)}, got {self.overlap!r}")
        if self.weight_bits not in (4, 8, 16):
            raise UserError(f"{owner}: weight_bits must be 4, 8 or 16, got {self.weight_bits!r}")
        self.offchip.check(f"{owner} offchip")
        if self.hb is not None:
            self.hb.check(f"{owner} hb")
        if self.kv_tier not in ("offchip", "hb") or (self.kv_tier == "hb" and self.hb is None):
            raise UserError(f"{owner}: kv_tier must be offchip or (with an hb tier) hb, got {self.kv_tier!r}")
        if self.cache != "none" and self.hb is None:
            raise UserError(f"{owner}: cache {self.cache!r} needs an hb tier")
        if self.decoding == "elastic" and self.cache != "msb":
            raise UserError(f"{owner}: elastic decoding needs cache 'msb' (HB holds the draft's MSB planes)")
        if self.array is not None:
            self.array.check(owner)
        elif self.macs_per_s is None:
            raise UserError(f"{owner}: needs compute (a 'compute' table with macs_per_s, or an 'array')")
        else:
            _number(owner, "compute macs_per_s", self.macs_per_s)
        for mode, v in self.pj_per_mac.items():
            _number(owner, f"pj_per_mac[{mode}]", v, lo_open=False)
        _number(owner, "static_w", self.static_w, lo_open=False)
        check_runtime(owner, self.runtime)
        _number(owner, "onchip_pj_per_byte", self.onchip_pj_per_byte, lo_open=False)

    def peak_macs(self, mode="full"):
        """Peak MAC/s in a mode (a GPU runs every mode at one rate)."""
        return self.array.macs_per_s(mode) if self.array is not None else self.macs_per_s

    def mac_pj(self, mode="full"):
        return self.pj_per_mac.get(mode, self.pj_per_mac.get("full", 0.0))

    @property
    def tiers(self):
        return {"offchip": self.offchip, **({"hb": self.hb} if self.hb is not None else {})}

    def to_dict(self):
        return asdict(self)


RUNTIME_KEYS = {"s_per_moe_layer", "s_per_expert", "s_per_moe_layer_extra", "source"}


def check_runtime(owner, runtime):
    """Refuse a malformed ``runtime`` table (see :func:`runtime_seconds`)."""
    check_table(f"{owner}: runtime", runtime, RUNTIME_KEYS, what="a table")
    for key in ("s_per_moe_layer", "s_per_expert"):
        if key in runtime:
            _number(owner, f"runtime {key}", runtime[key], lo_open=False, hi=1.0)
    extra = runtime.get("s_per_moe_layer_extra", {})
    if not isinstance(extra, dict):
        raise UserError(f"{owner}: runtime s_per_moe_layer_extra must be a table keyed by model")
    for model, v in extra.items():
        _number(owner, f"runtime s_per_moe_layer_extra[{model}]", v, lo_open=False, hi=1.0)


def runtime_seconds(system, model, unique_experts):
    """Software time an offloading runtime adds to one pass, serially: per MoE layer its routing and
    dispatch (``s_per_moe_layer``, plus ``s_per_moe_layer_extra`` of the model where its MoE block has
    one more step) and per unique expert of the layer one expert call (``s_per_expert``). 0 for a
    system without ``runtime`` or a pass without experts (a separate dense draft)."""
    rt = system.runtime
    if not rt or not unique_experts:
        return 0.0
    per_layer = rt.get("s_per_moe_layer", 0.0) + rt.get("s_per_moe_layer_extra", {}).get(model.name, 0.0)
    return model.moe_layers * (per_layer + unique_experts * rt.get("s_per_expert", 0.0))


def _constants():
    return json.loads((DATA / "systems.json").read_text())["constants"]


def array_pj_per_mac(kind, measured=None):
    """pJ/MAC of the project's PE arrays at 7 nm: bench-pe's Nangate 45 figures x the node scale.

    ``measured``: ``{draft, full, int8}`` pJ/MAC at 45 nm from a bench-pe run (:func:`bench_pe_pj`);
    default the data file's figures (bench-pe at the default pipeline depth 3)."""
    c = _constants()
    scale = c["node_energy_scale"]["value"]
    pe = measured or c["pe_pj_per_mac_45nm"]
    if kind == "bit_sliced":
        return {"draft": pe["draft"] * scale, "full": pe["full"] * scale}
    return {"full": pe["int8"] * scale, "draft": pe["int8"] * scale}


def accel_defaults():
    """Array parameters the project's configuration fixes (``elmoe3d.config``), which replace the
    data file's for the built-in accelerators: rows, cols, lanes and pipeline of the Mixtral-class
    preset ``PRESETS["mixtral"]`` (else the default ``AccelConfig``). The clock is not one of them:
    the preset has no measured Fmax, so the clock is the data file's stated assumption, or the
    RTL core's Fmax from a bench-core result (:mod:`.bench_core`). Empty when the configuration
    has none of them.
    """
    from .. import config
    out = {}
    presets = getattr(config, "PRESETS", None) or {}
    accel = presets.get("mixtral")
    if accel is None and getattr(config, "AccelConfig", None) is not None:
        accel = config.AccelConfig()
    array = getattr(accel, "array", None)
    for key in ("rows", "cols", "lanes", "pipeline"):
        v = getattr(array, key, None)
        if isinstance(v, int) and not isinstance(v, bool):
            out[key] = v
    return out


SYSTEM_KEYS = {"label", "based_on", "decoding", "cache", "weight_bits", "overlap", "compute", "offchip", "hb",
               "array", "static_w", "static_source", "kv_tier", "own_footing", "runtime"}
TIER_KEYS = {"gbps", "efficiency", "pj_per_bit", "capacity_gib", "source"}
ARRAY_KEYS = {"kind", "rows", "cols", "lanes", "arrays", "clock_mhz", "pipeline", "source"}
COMPUTE_KEYS = {"macs_per_s", "pj_per_mac", "source"}


def _merge(base, over):
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _resolve(name, raw, table, seen=()):
    check_table(f"system {name}", raw, SYSTEM_KEYS)
    base = raw.get("based_on")
    if base is None:
        return raw
    if base in seen or base == name:
        raise UserError(f"system {name}: based_on forms a cycle through {base!r}")
    if base not in table:
        raise UserError(f"system {name}: based_on names an unknown system {base!r}")
    parent = _resolve(base, table[base], table, seen + (name,))
    return _merge(parent, {k: v for k, v in raw.items() if k != "based_on"})


def _sub(owner, raw, keys, what, required=()):
    if not isinstance(raw, dict):
        raise UserError(f"system {owner}: {what} must be a table, got {type(raw).__name__}")
    unknown = sorted(set(raw) - keys)
    if unknown:
        raise UserError(f"system {owner}: unknown {what} field(s) {', '.join(unknown)}")
    missing = [k for k in required if k not in raw]
    if missing:
        raise UserError(f"system {owner}: {what} is missing field(s) {', '.join(missing)}")
    return raw


def system_from_dict(name, raw, table=None, overrides=None):
    """A :class:`System` from a mapping (data file or ``--config``); ``table`` resolves ``based_on``;
    ``overrides`` replaces array fields (the project's configuration, for the built-in systems)."""
    raw = _resolve(name, raw, table or {})
    for key in ("decoding", "offchip"):
        if key not in raw:
            raise UserError(f"system {name}: missing field {key!r}")
    off = Tier(**_sub(name, raw["offchip"], TIER_KEYS, "offchip", ("gbps",)))
    hb = Tier(**_sub(name, raw["hb"], TIER_KEYS, "hb", ("gbps",))) if raw.get("hb") is not None else None
    array, macs, pj, sources = None, None, {}, {"offchip": off.source}
    if hb is not None:
        sources["hb"] = hb.source
    if raw.get("array") is not None:
        a = dict(_sub(name, raw["array"], ARRAY_KEYS, "array"))
        if not isinstance(a.get("pipeline", 0), int):
            raise UserError(f"system {name}: array pipeline must be an integer in 0 .. 4, got {a['pipeline']!r}")
        a.update(overrides or {})
        missing = sorted(ARRAY_KEYS - {"source", "pipeline"} - set(a))
        if missing:
            raise UserError(f"system {name}: missing array field(s) {', '.join(missing)}")
        array = Array(**a)
        array.check(f"system {name}")
        pj = array_pj_per_mac(array.kind)
        sources["array"] = array.source
    if raw.get("compute") is not None:
        c = _sub(name, raw["compute"], COMPUTE_KEYS, "compute")
        macs = c.get("macs_per_s")
        if "pj_per_mac" in c:
            v = c["pj_per_mac"]
            pj = dict(v) if isinstance(v, dict) else {"full": v, "draft": v}
        sources["compute"] = c.get("source", "")
    sources["static"] = raw.get("static_source", "")
    try:
        return System(name=name, label=raw.get("label", name), decoding=raw["decoding"], cache=raw.get("cache", "none"),
                      weight_bits=raw.get("weight_bits", 8), overlap=raw.get("overlap", "max"), offchip=off, hb=hb,
                      array=array, macs_per_s=None if array is not None else macs, pj_per_mac=pj,
                      static_w=raw.get("static_w", 0.0), sources=sources, kv_tier=raw.get("kv_tier", "offchip"),
                      own_footing=raw.get("own_footing", ""), runtime=raw.get("runtime") or {})
    except TypeError as exc:
        raise UserError(f"system {name}: {exc}") from None


def raw_systems():
    return json.loads((DATA / "systems.json").read_text())["systems"]


def systems_from_table(table, overrides=None):
    return {name: system_from_dict(name, raw, table, overrides) for name, raw in table.items()}


@lru_cache(maxsize=None)
def builtin_systems():
    """``{name: System}`` of ``data/systems.json``; array parameters that ``elmoe3d.config`` fixes
    (:func:`accel_defaults`) replace the data file's."""
    return systems_from_table(raw_systems(), accel_defaults())


# -- equal footing and the HB bandwidth rule ------------------------------------------------------
def footing_table():
    """``{"choices": {name: {hbm_efficiency, static_w, source}}, "default": name}`` (systems.json)."""
    return json.loads((DATA / "systems.json").read_text())["footing"]


FOOTINGS = ("equal", "equal-gpu", "stated")


def with_footing(system, footing="equal", hbm_efficiency=None, static_w=None):
    """``system`` with the shared off-chip efficiency and static power of ``footing`` (unless the
    system states ``own_footing``); ``hbm_efficiency`` / ``static_w`` override the choice's values."""
    if footing not in FOOTINGS:
        raise UserError(f"footing must be one of {', '.join(FOOTINGS)}, got {footing!r}")
    if system.own_footing:
        return system
    ch = footing_table()["choices"][footing]
    eff = hbm_efficiency if hbm_efficiency is not None else ch["hbm_efficiency"]
    w = static_w if static_w is not None else ch["static_w"]
    out = system
    if eff is not None:
        out = replace(out, offchip=replace(out.offchip, efficiency=float(eff)))
    if w is not None:
        out = replace(out, static_w=float(w))
    return out


def hb_gbps(capacity_gib):
    """HB bandwidth (GB/s) of ``capacity_gib`` by the one stated rule (constants.hb_gbps_per_gib)."""
    return capacity_gib * _constants()["hb_gbps_per_gib"]["value"]


def with_hb(system, capacity_gib=None, pj_per_bit=None):
    """``system`` with another HB capacity (bandwidth by :func:`hb_gbps`) and/or HB pJ/bit."""
    if system.hb is None or system.own_footing:
        return system
    hb = system.hb
    if capacity_gib is not None:
        hb = replace(hb, capacity_gib=float(capacity_gib), gbps=hb_gbps(capacity_gib))
    if pj_per_bit is not None:
        hb = replace(hb, pj_per_bit=float(pj_per_bit))
    return replace(system, hb=hb)


def bench_pe_pj(path):
    """``({draft, full, int8} pJ/MAC at 45 nm, pipeline, Fmax MHz or None)`` from a ``bench-pe --json`` file
    (its Nangate 45 rows at the first pipeline depth it ran)."""
    from pathlib import Path as _P
    try:
        data = json.loads(_P(path).read_text())
        bf = data["bit_fusion"]
        key = next(k for k in bf if "nangate45" in k and " p" not in k)
        row = bf[key]
        pe = {"draft": float(row["draft_pj_per_mac"]), "full": float(row["full_pj_per_mac"]),
              "int8": float(row["baseline_pj_per_mac"])}
        fmax = next((d.get("fmax_mhz") for d in data.get("designs", []) if "nangate45" in str(d.get("library", ""))
                     and d.get("design") == "pe_array" and d.get("pipeline") == data["pipelines"][0]), None)
        return pe, data["pipelines"][0], fmax
    except OSError as exc:
        raise UserError(f"cannot read --bench-pe {path}: {exc.strerror or exc}") from None
    except (ValueError, KeyError, TypeError, StopIteration, UnicodeDecodeError):
        raise UserError(f"--bench-pe {path} is not a bench-pe --json report with Nangate 45 rows") from None
