"""``elmoe3d bench-core``'s result file as an input of the system model.

``elmoe3d bench-core -o DIR`` writes ``DIR/bench_core.json``: the RTL core's cycles on passes of a
shipped-model layer (``passes``: ``name``, ``tokens``, ``core`` = cycles measured on the RTL core,
``iss``, ``floor``, ``pe_beats``, ``golden``) and its synthesis per Liberty library
(``synthesis``: ``{LIB: {clock_ns, area_um2, fmax_mhz, ..., power: {pj_per_mac: {draft, full},
pj_per_byte_onchip, energy_per_pass_nj, ...}}}``). An absent key means not measured.

``elmoe3d perf --bench-core FILE`` (a file or the folder holding ``bench_core.json``, e.g.
:data:`DEFAULT_PATH`, bench-core's default output) reads it; without the option no file is read
(an implicit default would make perf's figures, and the ``perf --config`` arguments ``elmoe3d
explore`` prints, depend on what happens to lie in ``results/``). From the file perf takes

- the accelerators' clock: the core's Fmax in Nangate 45 (:data:`LIB`), as measured, not scaled
  to 7 nm (a 7 nm implementation would clock higher; the model does not assume it);
- the bit-sliced arrays' pJ/MAC per mode: the synthesized core's whole energy per MAC of its
  simulated passes (``synth/power.py``: every block, so its on-chip buffers and interfaces are
  inside it), Nangate 45 figures times the one node rule of the data file
  (``constants.node_energy_scale``, 45 -> 7 nm). The file's ``pj_per_byte_onchip`` is a part of
  that energy and is not added again; only where the file has no ``pj_per_mac`` (the arrays keep
  bench-pe's array-only figure) is it charged per byte streamed into the core;
- the RTL core's cycles per pass, which the "layer pass" validation compares with perf's own cycle
  estimate of the same pass (:func:`.validate.core_checks`) and ``--rtl-overhead`` applies.

What the file does not hold falls back to the data file's sourced constants (clock: assumption;
pJ/MAC: bench-pe; no on-chip energy), and :func:`describe` says which was used. A file that is not
a bench-core result is refused in one line.
"""

import json
import math
from pathlib import Path

from ..errors import UserError

DEFAULT_PATH = Path("results") / "bench_core" / "bench_core.json"
FILE_NAME = "bench_core.json"
LIB = "nangate45"           # the node rule (constants.node_energy_scale) scales from 45 nm


def _positive(value):
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def resolve(arg):
    """The file to read: ``arg`` (a file, or a folder holding ``bench_core.json``); None without one."""
    if arg is None:
        return None
    path = Path(arg)
    if path.is_dir():
        path = path / FILE_NAME
    if not path.is_file():
        raise UserError(f"--bench-core {arg}: no bench-core result there (expected a bench_core.json file or "
                        "the folder bench-core -o wrote)")
    return path


def load(path):
    """The checked contents of a bench-core result file (see the module docstring)."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise UserError(f"cannot read --bench-core {path}: {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError):
        raise UserError(f"--bench-core {path} is not a bench-core result (not JSON)") from None
    bad = _problem(data)
    if bad:
        raise UserError(f"--bench-core {path} is not a bench-core result: {bad}")
    return data


def _problem(data):
    """What makes ``data`` not a bench-core result (None when it is one)."""
    if not isinstance(data, dict):
        return "expected a JSON object"
    if "passes" not in data and "synthesis" not in data:
        return "it has neither 'passes' nor 'synthesis'"
    if "preset" in data and not isinstance(data["preset"], str):
        return "'preset' must be a string"
    passes = data.get("passes", [])
    if not isinstance(passes, list):
        return "'passes' must be a list"
    for i, r in enumerate(passes):
        if not isinstance(r, dict):
            return f"passes[{i}] must be an object"
        if not isinstance(r.get("name"), str):
            return f"passes[{i}] has no name"
        for key in ("tokens", "core"):
            if not _positive(r.get(key)):
                return f"passes[{i}] {key} must be a positive number, got {r.get(key)!r}"
        for key in ("floor", "iss", "offchip_bytes", "hb_bytes"):
            if key in r and not (_positive(r[key]) or r[key] == 0):
                return f"passes[{i}] {key} must be a number >= 0, got {r[key]!r}"
        if "floor" not in r and not {"offchip_bytes", "hb_bytes"} <= set(r):
            return f"passes[{i}] has neither floor nor bytes per tier"
    if passes and not isinstance(data.get("preset"), str):
        return "'passes' need the 'preset' they ran on"
    syn = data.get("synthesis", {})
    if not isinstance(syn, dict):
        return "'synthesis' must be an object keyed by library"
    for lib, s in syn.items():
        if not isinstance(s, dict):
            return f"synthesis[{lib}] must be an object"
        for key in ("clock_ns", "fmax_mhz", "area_um2"):
            if key in s and s[key] is not None and not _positive(s[key]):
                return f"synthesis[{lib}] {key} must be a positive number, got {s[key]!r}"
        power = s.get("power", {})
        if not isinstance(power, dict):
            return f"synthesis[{lib}] power must be an object"
        pj = power.get("pj_per_mac")
        if pj is not None:
            if (not isinstance(pj, dict) or not pj or set(pj) - {"draft", "full"}
                    or not all(_positive(v) for v in pj.values())):
                return f"synthesis[{lib}] power pj_per_mac must map draft and/or full to positive figures"
        if "pj_per_byte_onchip" in power and not _positive(power["pj_per_byte_onchip"]):
            return f"synthesis[{lib}] power pj_per_byte_onchip must be a positive number"
    return None


def accelerator_inputs(data):
    """``{fmax_mhz, pj_per_mac_45nm, pj_per_byte_onchip_45nm, lib, commit}`` from a loaded file; an
    entry is None where the file did not measure it (Nangate 45 synthesis only, see :data:`LIB`)."""
    syn = (data or {}).get("synthesis", {}).get(LIB, {})
    power = syn.get("power", {}) if isinstance(syn.get("power", {}), dict) else {}
    pj = power.get("pj_per_mac")
    return {"fmax_mhz": syn.get("fmax_mhz") if _positive(syn.get("fmax_mhz")) else None,
            "pj_per_mac_45nm": {m: float(v) for m, v in pj.items()} if pj else None,
            "pj_per_byte_onchip_45nm": power.get("pj_per_byte_onchip"),
            "lib": LIB if syn else None, "commit": (data or {}).get("commit"),
            "other_libs": sorted(set((data or {}).get("synthesis", {})) - {LIB})}


def describe(path, data):
    """One paragraph: which accelerator inputs came from the RTL and which are the data file's."""
    if data is None:
        return ("Accelerator inputs: no bench-core result given (--bench-core FILE|DIR; bench-core writes "
                + str(DEFAULT_PATH) + "): clock 1000 MHz (assumption), pJ/MAC from bench-pe (perf/data/systems.json), "
                "no on-chip energy term; the RTL core's layer-pass check is skipped.")
    a = accelerator_inputs(data)
    head = f"Accelerator inputs from bench-core {path}" + (f" (commit {a['commit']})" if a["commit"] else "") + ":"
    parts = []
    parts.append(f"clock = the core's Fmax in {LIB}, {a['fmax_mhz']:.0f} MHz (not scaled to 7 nm)" if a["fmax_mhz"]
                 else "clock 1000 MHz (assumption; the file has no " + LIB + " Fmax)")
    pj = a["pj_per_mac_45nm"] or {}
    for mode in ("draft", "full"):
        parts.append(f"bit-sliced {mode} pJ/MAC {pj[mode]:.3g} at 45 nm (the whole core's, on-chip buffers included) "
                     "x the node rule" if mode in pj
                     else f"bit-sliced {mode} pJ/MAC from bench-pe (the file has no {LIB} {mode} figure)")
    parts.append("INT8 array pJ/MAC from bench-pe (the core has no INT8 array)")
    if pj:
        parts.append("on-chip energy inside the core's pJ/MAC" + (
            f" (its on-chip part, {a['pj_per_byte_onchip_45nm']:.3g} pJ/B, not added again)"
            if a["pj_per_byte_onchip_45nm"] else ""))
    else:
        parts.append(f"on-chip {a['pj_per_byte_onchip_45nm']:.3g} pJ/B at 45 nm x the node rule per byte into the core"
                     if a["pj_per_byte_onchip_45nm"] else "no on-chip energy term (the file has no " + LIB + " power)")
    if a["other_libs"]:
        parts.append(f"{', '.join(a['other_libs'])} rows not used (the node rule scales from 45 nm)")
    n = len(data.get("passes", []))
    parts.append(f"{n} RTL core pass(es) for the layer-pass check" if n else "no RTL passes: the layer-pass check is skipped")
    return head + " " + "; ".join(parts) + "."


def apply(systems, data, node_scale):
    """``systems`` (a name -> System dict) with the accelerators' clock, bit-sliced pJ/MAC and on-chip
    energy replaced by the file's figures where it has them."""
    from dataclasses import replace
    a = accelerator_inputs(data)
    out = dict(systems)
    for name, s in systems.items():
        if s.array is None:
            continue
        if a["fmax_mhz"]:
            s = replace(s, array=replace(s.array, clock_mhz=float(a["fmax_mhz"])))
        if a["pj_per_mac_45nm"] and s.array.kind == "bit_sliced":
            s = replace(s, pj_per_mac={**s.pj_per_mac, **{m: v * node_scale for m, v in a["pj_per_mac_45nm"].items()}})
        elif a["pj_per_byte_onchip_45nm"] and not a["pj_per_mac_45nm"]:
            s = replace(s, onchip_pj_per_byte=float(a["pj_per_byte_onchip_45nm"]) * node_scale)
        out[name] = s
    return out
