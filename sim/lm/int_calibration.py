"""Calibrate the integer MoE path of the shipped model and measure its accuracy (SPEC section 7).

    python -m elmoe3d.sim.lm.int_calibration            # writes sim/data/moe_lm.int_scales.json

The static scales come from TARGET passes over evenly spaced windows of the *training* files
(never the held-out ones); :func:`accuracy` then scores the held-out text.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

from . import corpus
from .blas_threads import single_threaded
from ..golden.int_moe import save_int_scales, scales_path
from .model import INT_TARGET, TARGET, Execution, MoELM, bits_per_byte, router_probs
from ..golden.moe_layer import top_k

from .. import DATA
CALIB_WINDOWS, CALIB_LENGTH = 32, 257

# The executions SPEC section 7's accuracy bar covers: the target and each draft setting, each
# on the INT8 reference path and on the integer MoE path.
SETTINGS = [
    ("target", {}),
    ("draft k_d = 2, MSB+aug", {"expert_bits": "draft", "k": 2}),
    ("draft k_d = 1, full bits", {"k": 1}),
    ("draft k_d = 1, MSB+aug", {"expert_bits": "draft", "k": 1}),
]


def calibration_windows():
    train, _ = corpus.split_files(corpus.stdlib_files())
    return corpus.heldout_windows(corpus.load_bytes(train), CALIB_WINDOWS, CALIB_LENGTH)


def accuracy(model, windows):
    """Held-out bits/byte per setting on the INT8 path and the integer path:
    ``[(name, int8_bpb, int_bpb)]``."""
    return [(name, bits_per_byte(model, windows, Execution(**kw)),
             bits_per_byte(model, windows, Execution(int_moe=True, **kw))) for name, kw in SETTINGS]


def topk_agreement(model, windows):
    """Share of held-out (token, layer) pairs whose integer top-k set equals the float router's,
    and the number of pairs: ``(share, n)``."""
    same = total = 0
    with single_threaded():
        for start in range(0, len(windows), 16):
            chunk = windows[start:start + 16]
            res = model.forward([w[:-1] for w in chunk], model.new_cache(len(chunk)), INT_TARGET, capture=True)
            for i, (h, r) in enumerate(zip(res.moe_inputs, res.routing)):
                ref = top_k(router_probs(h, model.w[f"layers.{i}.router"]), model.cfg.top_k)
                same += int((np.sort(ref, axis=1) == np.sort(r.chosen, axis=1)).all(axis=1).sum())
                total += len(h)
    return same / total, total


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default=str(DATA / "moe_lm.npz"))
    args = ap.parse_args(argv)
    model = MoELM.load(args.weights)
    with single_threaded():
        scales = model.calibrate_int(calibration_windows())
    out = scales_path(args.weights)
    save_int_scales(out, scales, f"python -m elmoe3d.sim.lm.int_calibration: TARGET passes over "
                                 f"{CALIB_WINDOWS} evenly spaced windows of {CALIB_LENGTH} training bytes")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
