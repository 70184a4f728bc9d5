"""The design-space file of ``elmoe3d explore``: parameters, workloads, synthesis and search.

A space is a TOML file (``explore/spaces/default.toml`` is the built-in one)::

    [search]
    method = "grid"               # grid (every point), random, optuna (TPE, model-based)
    samples = 40                  # points to evaluate (random, optuna; grid: all of them)
    seed = 0
    objective = "tokens_per_s"    # tokens_per_s | j_per_token | area_mm2 | tokens_per_s_per_mm2

    [synth]                       # how a point's blocks are synthesized (elmoe3d.synth)
    liberty = "nangate45"         # a shipped library name or a .lib/.lib.gz path
    clock_ns = 2.0                # clock target, ns
    activity = 0.2                # input toggle rate per cycle for power, 0..1
    # energy_scale = 0.063        # pJ/MAC at the Liberty's node -> the system's node (default:
    #                             # elmoe3d.perf's 45 nm -> 7 nm scale; needed for other libraries)

    [system]
    clock_mhz = 1000              # the accelerator clock the system model assumes, MHz

    [params]                      # each: one value, a list, or {min, max, step} / {min, max, scale = "pow2"}
    rows = [8, 16]
    lanes = {min = 1, max = 4, scale = "pow2"}
    cache_policy = ["lru", "score"]

    [[workloads]]                 # one table per workload: model, batch (1..16), optional
    model = "mixtral-8x7b"        # acceptance (0..1), scenario, gamma, k_d (default: the system
    batch = 1                     # model's elastic policy picks them), context, name

Every mistake is a :class:`~elmoe3d.errors.UserError` of one line that names the file and the key
(``space.toml: params.rows: ...``), raised by :func:`load` before any work starts.
"""

import hashlib
import itertools
import json
import math
import random
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError, check_int

DEFAULT_SPACE = Path(__file__).resolve().parent / "spaces" / "default.toml"
METHODS = ("grid", "random", "optuna")
# objective -> "max" or "min"; tokens/s and J/token are geometric means over the workloads
OBJECTIVES = {"tokens_per_s": "max", "j_per_token": "min", "area_mm2": "min", "tokens_per_s_per_mm2": "max"}
# A space larger than this is refused up front: the JSONL store and the report hold every point
# in memory, and a grid this size would run for days on one machine.
MAX_POINTS = 100_000
MAX_SAMPLES = 100_000
TABLES = ("search", "synth", "system", "params", "workloads")
WORKLOAD_KEYS = ("name", "model", "batch", "acceptance", "scenario", "gamma", "k_d", "context")


def _array(**kw):
    from ..config import ArrayConfig
    return ArrayConfig(**kw)


def _cache(**kw):
    from ..config import CacheConfig
    return CacheConfig(**kw)


def _positive(name, hi):
    def check(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= hi:
            raise UserError(f"{name} must be a number in (0, {hi:g}], got {v!r}")
    return check


@dataclass(frozen=True)
class ParamSpec:
    """One explorable parameter: ``kind`` (int, float, str), ``default`` (None: as the system
    model's built-in accelerator), ``check(value)`` raising UserError, ``help`` with units."""

    kind: type
    default: object
    check: object
    help: str


# The parameters a point sets. Value checks reuse the one configuration (elmoe3d.config): a
# value it refuses is refused here, with its message.
PARAMS = {
    "rows": ParamSpec(int, 16, lambda v: _array(rows=v), "PE array output channels in parallel (pe_array rows)"),
    "cols": ParamSpec(int, 16, lambda v: _array(cols=v), "PE array inputs per beat (pe_array cols)"),
    "lanes": ParamSpec(int, 1, lambda v: _array(lanes=v), "tokens sharing a weight beat, 1..16 (pe_array lanes)"),
    "pipeline": ParamSpec(int, 3, lambda v: _array(pipeline=v), "PE pipeline stages, 0..3"),
    "arrays": ParamSpec(int, 4, lambda v: check_int("arrays", v, 1, 4096), "PE array copies on the die, 1..4096"),
    "cache_entries": ParamSpec(int, 16, lambda v: _cache(entries=v), "expert-cache slots (planes), 2..64 in RTL"),
    "cache_policy": ParamSpec(str, "lru", lambda v: _cache(policy=v), "expert-cache replacement policy"),
    "hb_capacity_gib": ParamSpec(float, None, _positive("hb_capacity_gib", 1 << 20),
                                 "HB capacity in GiB (default: the system model's)"),
    "hb_gbps": ParamSpec(float, None, _positive("hb_gbps", 1e7),
                         "HB peak bandwidth in GB/s (default: the system model's GB/s per GiB x capacity)"),
}


@dataclass(frozen=True)
class Space:
    """A validated design space. ``params``: ``{name: [values]}`` (every parameter, defaults as
    one-value lists); ``workloads``: list of dicts; ``synth``, ``system``, ``search``: dicts."""

    path: str
    params: dict
    workloads: tuple
    synth: dict
    system: dict
    search: dict
    text: str = field(default="", repr=False)

    @property
    def size(self):
        """Points in the full grid."""
        return math.prod(len(v) for v in self.params.values())

    @property
    def varied(self):
        """Names of the parameters with more than one value."""
        return [k for k, v in self.params.items() if len(v) > 1]

    def fingerprint(self):
        """What every point's figures depend on besides its parameters (synthesis settings, the
        system settings, the workloads): part of each point's key."""
        return {"synth": self.synth, "system": self.system, "workloads": list(self.workloads)}

    def key(self, point):
        """A point's key in the results store: a hash of its parameters and :meth:`fingerprint`."""
        blob = json.dumps({"params": point, "eval": self.fingerprint()}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def grid(self):
        """Every point, in a fixed order."""
        names = list(self.params)
        for values in itertools.product(*(self.params[n] for n in names)):
            yield dict(zip(names, values))

    def sample(self, n, seed):
        """``n`` distinct points drawn uniformly from the grid (all of it when it is smaller)."""
        total = self.size
        rng = random.Random(seed)
        picks = sorted(rng.sample(range(total), min(n, total)))
        names = list(self.params)
        out = []
        for idx in picks:
            point = {}
            for name in reversed(names):
                values = self.params[name]
                idx, r = divmod(idx, len(values))
                point[name] = values[r]
            out.append({n_: point[n_] for n_ in names})
        return out

    def workload_names(self):
        return [w["name"] for w in self.workloads]


def _where(path, key):
    return f"{path}: {key}"


def _values(shown, key, raw, spec):
    """The list of values of one parameter from its TOML form."""
    where = _where(shown, f"params.{key}")
    if isinstance(raw, dict):
        unknown = sorted(set(raw) - {"min", "max", "step", "scale"})
        if unknown:
            raise UserError(f"{where}: unknown range key(s) {', '.join(unknown)}; a range has min, max, step or scale")
        if "min" not in raw or "max" not in raw:
            raise UserError(f"{where}: a range needs min and max")
        lo, hi = raw["min"], raw["max"]
        for name, v in (("min", lo), ("max", hi)):
            if isinstance(v, bool) or not isinstance(v, int):
                raise UserError(f"{where}: range {name} must be an integer, got {v!r}")
        if lo > hi:
            raise UserError(f"{where}: range min {lo} is above max {hi}")
        scale = raw.get("scale", "linear")
        if scale == "pow2":
            if "step" in raw:
                raise UserError(f"{where}: a pow2 range takes no step")
            if lo < 1:
                raise UserError(f"{where}: a pow2 range needs min >= 1, got {lo}")
            values = [1 << e for e in range((lo - 1).bit_length(), hi.bit_length()) if lo <= 1 << e <= hi]
        elif scale == "linear":
            step = raw.get("step", 1)
            if isinstance(step, bool) or not isinstance(step, int) or step < 1:
                raise UserError(f"{where}: range step must be an integer >= 1, got {step!r}")
            if (hi - lo) // step + 1 > MAX_POINTS:
                raise UserError(f"{where}: the range has more than {MAX_POINTS} values")
            values = list(range(lo, hi + 1, step))
        else:
            raise UserError(f"{where}: range scale must be linear or pow2, got {scale!r}")
        if not values:
            raise UserError(f"{where}: the range holds no value")
    elif isinstance(raw, list):
        values = list(raw)
        if not values:
            raise UserError(f"{where}: an empty list")
    else:
        values = [raw]
    out = []
    for v in values:
        if spec.kind is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if spec.kind is int and (isinstance(v, bool) or not isinstance(v, int)):
            raise UserError(f"{where}: expected integers, got {v!r}")
        if spec.kind is float and not isinstance(v, float):
            raise UserError(f"{where}: expected numbers, got {v!r}")
        if spec.kind is str and not isinstance(v, str):
            raise UserError(f"{where}: expected strings, got {v!r}")
        try:
            spec.check(v)
        except UserError as exc:
            raise UserError(f"{where}: {exc}") from None
        if v in out:
            raise UserError(f"{where}: value {v!r} given twice")
        out.append(v)
    return out


def _table(shown, data, name, keys):
    raw = data.get(name, {})
    if not isinstance(raw, dict):
        raise UserError(f"{_where(shown, name)}: expected a table, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(keys))
    if unknown:
        raise UserError(f"{_where(shown, name + '.' + unknown[0])}: unknown key; {name} takes {', '.join(keys)}")
    return raw


def _int(shown, key, v, lo, hi):
    try:
        return check_int(key.rsplit(".", 1)[-1], v, lo, hi)
    except UserError as exc:
        raise UserError(f"{_where(shown, key)}: {exc}") from None


def _number(shown, key, v, lo, hi, lo_open=True):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (lo < v if lo_open else lo <= v) or not v <= hi:
        rng = f"({lo:g}, {hi:g}]" if lo_open else f"[{lo:g}, {hi:g}]"
        raise UserError(f"{_where(shown, key)}: expected a number in {rng}, got {v!r}")
    return float(v)


def _search(shown, data):
    raw = _table(shown, data, "search", ("method", "samples", "seed", "objective"))
    method = raw.get("method", "grid")
    if method not in METHODS:
        raise UserError(f"{_where(shown, 'search.method')}: expected one of {', '.join(METHODS)}, got {method!r}")
    objective = raw.get("objective", "tokens_per_s")
    if objective not in OBJECTIVES:
        raise UserError(f"{_where(shown, 'search.objective')}: expected one of {', '.join(OBJECTIVES)}, got {objective!r}")
    samples = raw.get("samples")
    if samples is not None:
        samples = _int(shown, "search.samples", samples, 1, MAX_SAMPLES)
    elif method != "grid":
        raise UserError(f"{_where(shown, 'search.samples')}: method {method} needs the number of points to evaluate")
    seed = _int(shown, "search.seed", raw.get("seed", 0), 0, 2**32 - 1)
    return {"method": method, "samples": samples, "seed": seed, "objective": objective}


def _synth(shown, data):
    from ..limits import CLOCK_NS_MAX, CLOCK_NS_MIN
    raw = _table(shown, data, "synth", ("liberty", "clock_ns", "activity", "energy_scale"))
    liberty = raw.get("liberty", "nangate45")
    if not isinstance(liberty, str) or not liberty:
        raise UserError(f"{_where(shown, 'synth.liberty')}: expected a library name or a file path, got {liberty!r}")
    from ..synth import flow
    try:
        flow.resolve_liberty(liberty)
    except UserError as exc:
        raise UserError(f"{_where(shown, 'synth.liberty')}: {exc}") from None
    out = {"liberty": liberty,
           "clock_ns": _number(shown, "synth.clock_ns", raw.get("clock_ns", 2.0), CLOCK_NS_MIN, CLOCK_NS_MAX, False),
           "activity": _number(shown, "synth.activity", raw.get("activity", 0.2), 0.0, 1.0, False),
           "energy_scale": None}
    if "energy_scale" in raw:
        out["energy_scale"] = _number(shown, "synth.energy_scale", raw["energy_scale"], 0.0, 1e3)
    elif liberty != "nangate45":
        raise UserError(f"{_where(shown, 'synth.energy_scale')}: needed with a Liberty other than nangate45 "
                        "(the system model's built-in scale is from 45 nm to its node)")
    return out


def _system(shown, data):
    raw = _table(shown, data, "system", ("clock_mhz",))
    out = {"clock_mhz": None}
    if "clock_mhz" in raw:
        out["clock_mhz"] = _number(shown, "system.clock_mhz", raw["clock_mhz"], 0.0, 1e5)
    return out


def _workloads(shown, data):
    raw = data.get("workloads")
    if raw is None:
        raise UserError(f"{_where(shown, 'workloads')}: missing; add at least one [[workloads]] table (model, batch)")
    if not isinstance(raw, list) or not raw:
        raise UserError(f"{_where(shown, 'workloads')}: expected a list of tables ([[workloads]])")
    out = []
    for i, w in enumerate(raw):
        key = f"workloads[{i}]"
        if not isinstance(w, dict):
            raise UserError(f"{_where(shown, key)}: expected a table, got {type(w).__name__}")
        unknown = sorted(set(w) - set(WORKLOAD_KEYS))
        if unknown:
            raise UserError(f"{_where(shown, key + '.' + unknown[0])}: unknown key; a workload takes "
                            f"{', '.join(WORKLOAD_KEYS)}")
        for req in ("model", "batch"):
            if req not in w:
                raise UserError(f"{_where(shown, key + '.' + req)}: missing")
        if not isinstance(w["model"], str):
            raise UserError(f"{_where(shown, key + '.model')}: expected a model name, got {w['model']!r}")
        item = {"model": w["model"], "batch": _int(shown, f"{key}.batch", w["batch"], 1, 16)}
        if "acceptance" in w:
            item["acceptance"] = _number(shown, f"{key}.acceptance", w["acceptance"], 0.0, 1.0, False)
        for name, lo, hi in (("gamma", 0, 16), ("k_d", 1, 64), ("context", 1, 1 << 24)):
            if name in w:
                item[name] = _int(shown, f"{key}.{name}", w[name], lo, hi)
        if "scenario" in w:
            if not isinstance(w["scenario"], str):
                raise UserError(f"{_where(shown, key + '.scenario')}: expected a scenario name, got {w['scenario']!r}")
            item["scenario"] = w["scenario"]
        name = w.get("name")
        if name is None:
            name = f"{item['model']}/b{item['batch']}" + (f"/a{item['acceptance']:g}" if "acceptance" in item else "")
        if not isinstance(name, str) or not name:
            raise UserError(f"{_where(shown, key + '.name')}: expected a non-empty string, got {name!r}")
        if name in [o["name"] for o in out]:
            raise UserError(f"{_where(shown, key)}: workload name {name!r} is used twice; give a distinct name")
        item["name"] = name
        out.append(item)
    return tuple(out)


def _probe_workloads(shown, space):
    """Refuse, before any work, a workload the system model cannot evaluate (unknown model, a
    k_d above its top-k, ...): each is tried once on the first point. A point's own values that
    the model refuses (a cache policy without a measured efficiency) fail that point only."""
    from .perf_adapter import system_figures
    point = next(space.grid())
    for i, w in enumerate(space.workloads):
        try:
            system_figures(point, None, w, space.system)
        except UserError as exc:
            if not str(exc).startswith("cache_policy"):
                raise UserError(f"{_where(shown, f'workloads[{i}]')}: {exc}") from None


def load(path=None):
    """The :class:`Space` of ``path`` (the built-in default when None), every value checked."""
    path = Path(path) if path is not None else DEFAULT_SPACE
    # the built-in space is named as it sits in the checkout, not by this machine's path
    shown = str(path) if path != DEFAULT_SPACE else "explore/spaces/default.toml"
    try:
        text = path.read_text()
    except OSError as exc:
        from ..paths import os_error_message
        raise UserError(os_error_message(exc, shown, "cannot read space file")) from None
    except UnicodeDecodeError:
        raise UserError(f"{shown}: not a text file") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{shown}: not valid TOML: {exc}") from None
    unknown = sorted(set(data) - set(TABLES))
    if unknown:
        raise UserError(f"{_where(shown, unknown[0])}: unknown table; a space has {', '.join(TABLES)}")
    raw_params = _table(shown, data, "params", tuple(PARAMS))
    params = {name: (_values(shown, name, raw_params[name], spec) if name in raw_params else [spec.default])
              for name, spec in PARAMS.items()}
    space = Space(path=shown, params=params, workloads=_workloads(shown, data), synth=_synth(shown, data),
                  system=_system(shown, data), search=_search(shown, data), text=text)
    _probe_workloads(shown, space)
    if space.search["method"] == "grid" and space.size > MAX_POINTS:
        raise UserError(f"{_where(shown, 'params')}: the grid has {space.size} points, more than {MAX_POINTS}; "
                        "use search.method = random or optuna with search.samples")
    return space
