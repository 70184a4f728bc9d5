"""Routing traces: which experts every pass of a decoding run used, for the cache and
performance models.

Format: JSON Lines (one JSON object per line, UTF-8), one line per (pass, MoE layer)::

    {"step": 12, "kind": "target", "layer": 0, "seq": [0, 0, 1],
     "pos": [40, 41, 37], "experts": [[3, 5], [3, 1], [6, 2]],
     "scores": [[0.01, ...], ...]}

- ``step``: index of the pass in the run (0, 1, ...; draft and target passes share the count,
  prefill is step 0 with ``kind`` ``"prefill"``);
- ``kind``: ``"prefill"``, ``"draft"`` or ``"target"`` (a verification or plain decoding pass);
- ``layer``: MoE layer index;
- ``seq``, ``pos``: sequence (0 .. batch-1) and position in that sequence of every token the
  pass computed, in the order of the rows below;
- ``experts``: per token, the experts the pass ran, best router score first (``k`` for the
  target, ``k_d`` or fewer for the draft);
- ``scores``: per token, the router softmax over all experts (4 decimals).

The first line is a header ``{"format": "elmoe3d-routing-trace", "version": 1, "n_layers": L,
"n_experts": E, "top_k": k, "settings": {...}}``. :func:`read_trace` yields the pass lines.
"""

import json
from pathlib import Path

import numpy as np

from ...errors import UserError

FORMAT = "elmoe3d-routing-trace"
VERSION = 1


class TraceWriter:
    """Writes a routing trace (see the module docstring); use as a context manager."""

    def __init__(self, path, cfg, settings=None):
        self.path = Path(path)
        self._f = open(self.path, "w", encoding="utf-8")
        header = {"format": FORMAT, "version": VERSION, "n_layers": cfg.n_layers,
                  "n_experts": cfg.n_experts, "top_k": cfg.top_k, "settings": settings or {}}
        self._f.write(json.dumps(header) + "\n")

    def write(self, step, kind, result):
        """Record the routing of one :class:`~elmoe3d.sim.lm.model.ForwardResult`."""
        seq, pos = result.seq_of_token.tolist(), result.positions.tolist()
        for layer, r in enumerate(result.routing):
            self._f.write(json.dumps({"step": step, "kind": kind, "layer": layer, "seq": seq, "pos": pos,
                                      "experts": r.chosen.tolist(),
                                      "scores": np.round(r.probs, 4).tolist()}) + "\n")

    def close(self):
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_trace(path):
    """``(header, iterator of pass records)`` of a trace file; a wrong format is a clear error."""
    path = Path(path)
    f = open(path, encoding="utf-8")
    try:
        header = json.loads(f.readline())
    except json.JSONDecodeError:
        f.close()
        raise UserError(f"{path} is not a routing trace (bad header)") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        f.close()
        raise UserError(f"{path} is not a routing trace (header format {header!r})")

    def records():
        with f:
            for line in f:
                yield json.loads(line)
    return header, records()
