"""Run the language model's MoE layers on the instruction-set simulator.

:class:`IssEngine` is an engine for :attr:`elmoe3d.sim.lm.model.MoELM.moe_engine`: each MoE layer
call is split into token groups of ``buffers.tokens``, each group's tokens are written into the
off-chip image's input block, the compiler's stream for that pass runs on one persistent
:class:`~elmoe3d.sim.machine.iss.Machine` (so the expert cache and the HB image carry over from layer to
layer and pass to pass, as on the accelerator), and the output block is read back.

The ``cached`` expert choice is the machine's own: ``ROUTE choice=cached`` reads the ISS's
cache, so the ``allowed`` mask the caller passes is not used (greedy Elastic-SD emits the
target's bytes whatever the draft chooses).
"""

import numpy as np

from ..sim.golden.int_moe import IntResult
from ..sim.machine.iss import Machine
from .compiler import compile_model, compile_pass
from .layout import read_output, write_input


class IssEngine:
    """The MoE layers of ``model`` (its integer layers) on the ISS of ``config``.

    ``record``: a list to which every token group's pass is appended (``layer``, ``tokens``,
    ``pass``, the command ``words``, the inputs ``x``/``xm``/``xe``, the ISS's ``out``, ``cycles``,
    ``cache`` decisions and bytes per tier), so the same passes can be replayed on the RTL core
    (``sim/benches/tb_core.py``) in the same order, from the same cache state.
    """

    def __init__(self, model, config, record=None):
        self.config = config
        self.record = record
        self.compiled = compile_model(config, model.int_layers)
        self.machine = Machine(config, self.compiled.offchip, self.compiled.hb)
        self.streams = {}
        self.passes = 0
        self.cycles = 0

    def _stream(self, layer, tokens, moe_pass):
        key = (layer, tokens, moe_pass)
        if key not in self.streams:
            self.streams[key] = compile_pass(self.compiled, layer, tokens, moe_pass)
        return self.streams[key]

    def __call__(self, layer, x, xm, xe, moe_pass, allowed=None):
        G = self.config.buffers.tokens
        outs, chosen, weights, logits = [], [], [], []
        for start in range(0, len(x), G):
            rows = slice(start, start + G)
            T = len(x[rows])
            write_input(self.compiled.offchip, self.compiled.map, x[rows], xm[rows], xe[rows])
            words = self._stream(layer, T, moe_pass)
            stats = self.machine.run(words)
            self.passes += 1
            self.cycles += stats.cycles
            outs.append(read_output(self.compiled.offchip, self.compiled.map, T))
            if self.record is not None:
                self.record.append(dict(
                    layer=layer, tokens=T, pass_=moe_pass, words=list(words), x=np.array(x[rows]),
                    xm=np.array(xm[rows]), xe=np.array(xe[rows]), out=outs[-1], cycles=stats.cycles,
                    cache=[(k.layer, k.expert, k.plane, int(r.hit), int(r.fill)) for k, r in stats.cache],
                    offchip_bytes=stats.offchip_bytes, hb_bytes=stats.hb_bytes))
            c, w = self.machine.route
            chosen.append(c)
            weights.append(w)
            logits.append(self.machine.logits)
        k = max(c.shape[1] for c in chosen)
        pad = [np.pad(c, ((0, 0), (0, k - c.shape[1]))) for c in chosen]  # uneven only with `cached`
        padw = [np.pad(w, ((0, 0), (0, k - w.shape[1]))) for w in weights]
        return IntResult(np.concatenate(outs), np.concatenate(pad), np.concatenate(padw), np.concatenate(logits))
