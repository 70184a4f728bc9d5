"""The language model's MoE layers on a running, Verilated core (Elastic-SD live on the RTL).

:class:`RtlEngine` is an engine for :attr:`elmoe3d.sim.lm.model.MoELM.moe_engine`, like
:class:`elmoe3d.firmware.engine.IssEngine` (whose compiled streams and token grouping it uses):
every token group of every MoE layer call runs as a compiler stream on one core simulation
(``tb_core_native.NativeCore``, memory models in HDL) that stays alive across layers, passes
and decoding steps, so the expert cache and the HB contents carry over as in hardware.

The output block the model continues with is the core's. The ISS runs the same stream in
lockstep, for two things the output block does not carry (the routing ``chosen``/``weights``
and the router logits that Elastic-SD's statistics read) and as a check: the core's output and
every cache decision must equal the ISS's, else :class:`RtlMismatch`. Greedy decoding then emits
the golden integer model's bytes; the caller checks that too.

The engine is synchronous (Elastic-SD is plain Python); ``run_stream`` is a blocking function
that drives the simulator (``cocotb.task.resume`` around ``NativeCore.stream``), called from a
``cocotb.task.bridge`` thread.
"""

import sys
import time

import numpy as np

from ...errors import UserError
from ..golden.int_moe import IntResult


class RtlMismatch(AssertionError):
    """The core's output, status or cache decisions differ from the ISS's."""


def pass_kind(moe_pass):
    """A short name of a layer pass kind, for per-kind cycle tables."""
    if moe_pass.update:
        return "verify"
    bits = "MSB+aug" if moe_pass.bits == "draft" else "full bits"
    return f"draft {bits}" + (" cached" if moe_pass.choice == "cached" else "")


def check_fits(config, model):
    """Refuse, in one line, a configuration whose core cannot run ``model``'s layers in this
    bench (before anything is built): the compiler's checks (buffers, HB request sizes, the
    expert cache's key fields), the core's (``check_core_config``) and the bench's memory models."""
    from ...firmware.compiler import compile_model
    from ...hw.executor import check_core_config
    from .native import memory_depths
    check_core_config(config)
    comp = compile_model(config, model.int_layers)
    off, hb = memory_depths(config)
    need_off = -(-len(comp.offchip) // config.offchip.line_bytes)
    need_hb = -(-len(comp.hb) // config.hb.line_bytes)
    if need_off > off or need_hb > hb:
        raise UserError(f"configuration {config.name}: the model's images ({len(comp.offchip)} off-chip bytes, "
                        f"{len(comp.hb)} HB bytes) exceed the bench's memory models ({off} and {hb} lines)")
    return comp


class RtlEngine:
    """Run ``iss`` (an :class:`~elmoe3d.firmware.engine.IssEngine` built with ``record=[]``)
    and, pass by pass, the same streams on ``core`` through ``run_stream(words, limit)``.

    ``core`` holds the off-chip image (``core.off``, a numpy byte array) and the cache
    decisions (``core.events``); it must have been started on a copy of ``iss.compiled``'s
    images taken before the ISS ran anything. ``progress``: print a line per pass on stderr.

    Members
    -------
    kinds : dict  per pass kind: ``passes``, RTL ``cycles``, ISS-estimated ``iss_cycles``
    lookups, hits : int  expert-cache decisions the core made, and how many hit
    """

    def __init__(self, iss, core, run_stream, progress=True):
        if iss.record is None:
            raise ValueError("the ISS engine must record its passes (IssEngine(..., record=[]))")
        self.iss, self.core, self.run_stream, self.progress = iss, core, run_stream, progress
        self.kinds = {}
        self.lookups = self.hits = 0
        self.passes = 0
        self.worst = 0.0            # largest |RTL/ISS cycles - 1| over the passes
        self.t0 = time.monotonic()

    @property
    def cycles(self):
        return sum(k["cycles"] for k in self.kinds.values())

    def __call__(self, layer, x, xm, xe, moe_pass, allowed=None):
        from ...firmware.layout import read_output, write_input
        from ...spec.isa import Status
        res = self.iss(layer, x, xm, xe, moe_pass, allowed)
        comp = self.iss.compiled
        outs = []
        for rec in self.iss.record:
            T = rec["tokens"]
            write_input(self.core.off, comp.map, rec["x"], rec["xm"], rec["xe"])
            n_ev = len(self.core.events)
            st = self.run_stream(rec["words"], 50 * rec["cycles"] + 10000)
            what = f"RTL pass {self.passes} (layer {layer}, {pass_kind(moe_pass)}, T={T})"
            code = Status(int(getattr(st.error, "value", st.error)))
            if code != Status.NONE:
                raise RtlMismatch(f"{what}: the core stopped with {code.name} at command {int(st.index)}")
            got = read_output(self.core.off, comp.map, T)
            if not np.array_equal(got, rec["out"]):
                bad = np.argwhere(got != rec["out"])
                raise RtlMismatch(f"{what}: {len(bad)} outputs differ from the ISS, first at {tuple(bad[0])}")
            ev = self.core.events[n_ev:]
            if [e[:5] for e in ev] != [tuple(c) for c in rec["cache"]]:
                raise RtlMismatch(f"{what}: cache decisions {ev} differ from the ISS's {rec['cache']}")
            outs.append(got)
            cycles = int(st.cycles)
            k = self.kinds.setdefault(pass_kind(moe_pass), {"passes": 0, "cycles": 0, "iss_cycles": 0})
            k["passes"] += 1
            k["cycles"] += cycles
            k["iss_cycles"] += rec["cycles"]
            self.worst = max(self.worst, abs(cycles / rec["cycles"] - 1))
            self.lookups += len(ev)
            self.hits += sum(e[3] for e in ev)
            self.passes += 1
            if self.progress:
                print(f"  {what}: {cycles} cycles (ISS {rec['cycles']}), {self.cycles} in all, "
                      f"{time.monotonic() - self.t0:.0f} s", file=sys.stderr, flush=True)
        self.iss.record.clear()
        return IntResult(np.concatenate(outs), res.chosen, res.weights, res.logits)

    def summary(self):
        """Per pass kind and in all: passes, RTL cycles, the ISS's estimate and their ratio;
        the expert-cache hit rate the core saw."""
        kinds = {name: {**k, "ratio": k["cycles"] / k["iss_cycles"]} for name, k in sorted(self.kinds.items())}
        return {"kinds": kinds, "passes": self.passes, "cycles": self.cycles,
                "lookups": self.lookups, "hits": self.hits,
                "hit_rate": self.hits / self.lookups if self.lookups else float("nan"),
                "worst_cycle_error": self.worst}


def run_sd_on_rtl(model_path, params, jobs, prompts, n_new, out_dir, *, seed=0, quiet=True, build_quick=False):
    """Elastic-SD with every MoE layer pass on a Verilated core (the Python API behind
    ``elmoe3d sd --engine rtl``).

    Parameters
    ----------
    model_path : path      the model (``MoELM.save`` file)
    params : dict          the core: ``preset`` (a name in ``elmoe3d.config.PRESETS``), ``lanes``
    jobs : list of (batch, SDSettings)   decoded in turn on one simulation (the cache carries over)
    prompts : list of byte sequences     job ``(b, s)`` decodes the first ``b``
    n_new : int            bytes generated per sequence
    out_dir : path         the simulation's working folder (images, ``sd.json``)
    build_quick : bool     build the core's C++ without optimization (a short run: the build dominates)

    Returns the list of per-job results (``tokens``, ``stats``, ``rtl``: cycles per pass kind,
    passes, lookups, hits, generated bytes, seconds) and the run's RTL summary.
    Raises :class:`~elmoe3d.errors.UserError` (one line) when the configuration cannot hold the
    model, before anything is built.
    """
    import json
    from dataclasses import asdict
    from pathlib import Path

    from ...hw.core import core_config
    from ..lm.model import MoELM
    from . import native
    cfg = core_config(params.get("preset", "small"), params.get("lanes", 0))
    model = MoELM.load(model_path)
    check_fits(cfg, model)
    out_dir = Path(out_dir)
    sd_json = out_dir / "sd.json"
    native.run_native(params, out_dir, "native_sd", model=str(Path(model_path).resolve()),
                      prompts=[[int(b) for b in p] for p in prompts], n_new=n_new, seed=seed,
                      jobs=[{"batch": b, "settings": asdict(s)} for b, s in jobs], sd_json=str(sd_json.resolve()),
                      quiet=quiet, build_quick=build_quick)
    result = json.loads(sd_json.read_text())
    return result["jobs"], result["rtl"]
