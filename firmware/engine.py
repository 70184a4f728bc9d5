"""Run the language model's MoE layers on the instruction-set simulator.

:class:`IssEngine` is an engine for :attr:`elmoe3d.sim.lm.MoELM.moe_engine`: each MoE layer
call is split into token groups of ``buffers.tokens``, each group's tokens are written into the
off-chip image's input block, the compiler's stream for that pass runs on one persistent
:class:`~elmoe3d.sim.iss.Machine` (so the expert cache and the HB image carry over from layer to
layer and pass to pass, as on the accelerator), and the output block is read back.

The ``cached`` expert choice is the machine's own: ``ROUTE choice=cached`` reads the ISS's
cache, so the ``allowed`` mask the caller passes is not used (greedy Elastic-SD emits the
target's bytes whatever the draft chooses).
"""

import numpy as np

from ..sim.int_moe import IntResult
from ..sim.iss import Machine
from .compiler import compile_model, compile_pass
from .layout import read_output, write_input


class IssEngine:
    """The MoE layers of ``model`` (its integer layers) on the ISS of ``config``."""

    def __init__(self, model, config):
        self.config = config
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
            stats = self.machine.run(self._stream(layer, T, moe_pass))
            self.passes += 1
            self.cycles += stats.cycles
            outs.append(read_output(self.compiled.offchip, self.compiled.map, T))
            c, w = self.machine.route
            chosen.append(c)
            weights.append(w)
            logits.append(self.machine.logits)
        k = max(c.shape[1] for c in chosen)
        pad = [np.pad(c, ((0, 0), (0, k - c.shape[1]))) for c in chosen]  # uneven only with `cached`
        padw = [np.pad(w, ((0, 0), (0, k - w.shape[1]))) for w in weights]
        return IntResult(np.concatenate(outs), np.concatenate(pad), np.concatenate(padw), np.concatenate(logits))
