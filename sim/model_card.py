"""Measure the shipped language models on held-out text and write their model card.

    python -m elmoe3d.sim.model_card            # writes sim/data/MODEL_CARD.md

Held-out bits per byte (numpy golden model, 32 evenly spaced windows of 257 held-out bytes:
8192 predictions) of the target in float64, in INT8 and in the draft executions Elastic-SD
uses, of the separate draft model, and of a byte-unigram baseline; the experts' share of routed
tokens per layer; the golden model's decode speed.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from . import corpus
from .blas_threads import single_threaded
from .elastic_sd import SDSettings, generate
from .lm import FLOAT, TARGET, Execution, MoELM, bits_per_byte

DATA = Path(__file__).resolve().parent / "data"
WINDOWS, LENGTH = 32, 257

EXECUTIONS = [
    ("target, float64", FLOAT),
    ("target, INT8 (full)", TARGET),
    ("draft: INT8 experts MSB+aug, k_d = 2", Execution(expert_bits="draft", k=2)),
    ("draft: INT8 experts full, k_d = 1", Execution(k=1)),
    ("draft: INT8 experts MSB+aug, k_d = 1", Execution(expert_bits="draft", k=1)),
    ("draft: all projections MSB+aug, k_d = 1", Execution(expert_bits="draft", dense_bits="draft", k=1)),
]


def expert_shares(model, windows):
    """Per layer, the share of routed (token, slot) pairs each expert receives, (L, E)."""
    res = model.forward([w[:-1] for w in windows[:16]], model.new_cache(16), TARGET)
    return np.array([np.bincount(r.chosen.ravel(), minlength=model.cfg.n_experts) / r.chosen.size
                     for r in res.routing])


def decode_speed(model, prompts, n_new=32):
    """Plain-decoding tokens/s of the golden INT8 model at batch 1 and 16."""
    out = {}
    for b in (1, 16):
        t = time.perf_counter()
        generate(model, prompts[:b], n_new, SDSettings(method="plain"))
        out[b] = b * n_new / (time.perf_counter() - t)
    return out


def measure(target_path, draft_path):
    target, draft = MoELM.load(target_path), MoELM.load(draft_path)
    names = corpus.stdlib_files()
    train, held = corpus.split_files(names)
    train_bytes, held_bytes = corpus.load_bytes(train), corpus.load_bytes(held)
    windows = corpus.heldout_windows(held_bytes, WINDOWS, LENGTH)
    rows = [(name, bits_per_byte(target, windows, ex)) for name, ex in EXECUTIONS]
    rows += [("separate draft model, float64", bits_per_byte(draft, windows, FLOAT)),
             ("separate draft model, INT8", bits_per_byte(draft, windows, TARGET)),
             ("byte unigram (add-one, training files)", corpus.unigram_bits_per_byte(train_bytes, windows[:, 1:].ravel()))]
    with single_threaded():
        shares = expert_shares(target, windows)
    speed = decode_speed(target, list(corpus.heldout_windows(held_bytes, 16, 64)))
    return target, draft, train, held, train_bytes, held_bytes, rows, shares, speed


def _phases(name, meta):
    """One line on the training phases (a run stopped by its time budget, a continuation)."""
    phases = meta.get("phases") or [{k: meta.get(k) for k in ("steps", "lr", "steps_planned", "train_minutes")}]
    text = "; ".join(f"phase {i + 1}: {p['steps']} of {p['steps_planned']} planned steps at peak lr {p['lr']} "
                     f"({p['train_minutes']:.0f} min)" for i, p in enumerate(phases))
    return f"- {name} schedule: {text}. A phase stopped early by its time budget ends before its cosine decay does."


def card(target, draft, train, held, train_bytes, held_bytes, rows, shares, speed):
    tm, dm = target.meta, draft.meta
    c, d = target.cfg, draft.cfg
    lines = [
        "# Model card: the shipped byte-level MoE language models",
        "",
        "Written by `python -m elmoe3d.sim.model_card` from the shipped weights; trained by",
        "`python -m elmoe3d.sim.train_lm` (PyTorch, CPU).",
        "",
        "## Models",
        "",
        "| file | layers | d_model | heads | experts / top-k | expert FFN | parameters | steps | training time |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        f"| `moe_lm.npz` (target) | {c.n_layers} | {c.d_model} | {c.n_heads} | {c.n_experts} / {c.top_k} | "
        f"{c.d_ffn} (SwiGLU) | {c.n_params:,} | {tm.get('steps')} | "
        f"{tm.get('train_minutes', 0):.0f} min |",
        f"| `draft_lm.npz` (separate draft) | {d.n_layers} | {d.d_model} | {d.n_heads} | dense (1 / 1) | "
        f"{d.d_ffn} (SwiGLU) | {d.n_params:,} | {dm.get('steps')} | "
        f"{dm.get('train_minutes', 0):.0f} min |",
        "",
        "Architecture: pre-norm decoder, RMSNorm, RoPE attention (no biases), byte vocabulary (256),",
        "MoE FFN per SPEC section 3 (router softmax, top-k, Mixtral renormalization, SwiGLU experts).",
        "Weights are stored as float16 (`sim/lm_config.py` documents the file); the float16-rounded",
        "weights, upcast to float64, are the float reference below.",
        "",
        "## Training",
        "",
        f"- Corpus: the top-level `lib/python{'.'.join(tm.get('python', '?').split('.')[:2])}/*.py` files of "
        f"the training interpreter (Python {tm.get('python')}), {len(train) + len(held)} files, split by file with seed "
        f"{tm.get('seed')}: {len(train)} training files ({len(train_bytes):,} bytes), {len(held)} held out "
        f"({len(held_bytes):,} bytes): {', '.join(held)}.",
        f"- Batches of {tm.get('batch')} random windows of {tm.get('seq')} bytes; AdamW (betas 0.9/0.95, "
        "weight decay 0.1 on matrices), linear warm-up then cosine decay to 10 % over the planned steps "
        f"of a phase, gradient clipping at 1; load-balancing loss (Switch) weight {tm.get('lb_coef')}; "
        "one CPU thread, seed 0.",
        _phases("Target", tm),
        f"- Target: {tm.get('steps')} steps ({tm.get('steps', 0) * tm.get('batch', 0) * tm.get('seq', 0) / 1e6:.1f} M "
        f"bytes, {tm.get('steps', 0) * tm.get('batch', 0) * tm.get('seq', 0) / max(len(train_bytes), 1):.1f} epochs); "
        f"final training loss {tm.get('train_bits_per_byte', float('nan')):.3f} bits/byte (running mean).",
        _phases("Separate draft (same recipe)", dm),
        "",
        "The shipped weights came from (nice -n 10, on 2 CPU cores shared with other jobs):",
        "",
        "```sh",
        "python -m elmoe3d.sim.train_lm --steps 3000 --export-every 250 --max-minutes 52 -o phase1.npz",
        "python -m elmoe3d.sim.train_lm --init phase1.npz --steps 480 --warmup 20 --lr 1e-3 \\",
        "    --export-every 80 --max-minutes 12.5 -o sim/data/moe_lm.npz",
        "python -m elmoe3d.sim.train_lm --preset draft --steps 1000 --export-every 250 --max-minutes 9 \\",
        "    -o sim/data/draft_lm.npz",
        "python -m elmoe3d.sim.model_card      # this file",
        "```",
        "",
        "Time budgets make the step counts depend on the machine's load; the seeds fix the data order.",
        "",
        f"## Held-out bits per byte ({WINDOWS} windows x {LENGTH - 1} predictions, numpy golden model)",
        "",
        "| model / execution | bits per byte |",
        "| --- | --- |",
    ]
    lines += [f"| {name} | {bpb:.3f} |" for name, bpb in rows]
    lines += [
        "",
        f"PyTorch float32 on the same windows at export: {tm.get('heldout_bits_per_byte_torch', float('nan')):.3f} "
        "(target). The numpy float64 forward matches the PyTorch float64 forward to 1e-9 on the logits "
        "(`tests/test_lm.py::test_numpy_forward_matches_torch`, measured ~1e-15).",
        "",
        "## Routing (held-out, INT8 target)",
        "",
        "Share of routed (token, slot) pairs per expert, one row per layer (uniform = "
        f"{1 / c.n_experts:.3f}):",
        "",
        "| layer | " + " | ".join(f"e{e}" for e in range(c.n_experts)) + " |",
        "| --- | " + " | ".join("---" for _ in range(c.n_experts)) + " |",
    ]
    lines += [f"| {i} | " + " | ".join(f"{x:.3f}" for x in row) + " |" for i, row in enumerate(shares)]
    lines += [
        "",
        "## Golden-model decode speed",
        "",
        f"Plain INT8 decoding through the golden GEMVs (numpy, one BLAS thread, 2 shared cores): "
        f"{speed[1]:.0f} tokens/s at batch 1, {speed[16]:.0f} tokens/s at batch 16 (32 new bytes after "
        "64-byte prompts).",
        "",
        "## Limits",
        "",
        "A 3.5 M-parameter byte model trained for minutes on CPU: it completes Python syntax and common",
        "identifiers, not programs. Its routing is shaped by the load-balancing loss (near-uniform shares",
        "above), which is the hard case for an expert cache. Numbers depend on the interpreter's standard",
        "library; `elmoe3d sd` and the tests read the held-out files listed above.",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", default=DATA / "moe_lm.npz", type=Path)
    p.add_argument("--draft", default=DATA / "draft_lm.npz", type=Path)
    p.add_argument("-o", "--out", default=DATA / "MODEL_CARD.md", type=Path)
    a = p.parse_args(argv)
    text = card(*measure(a.target, a.draft))
    a.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
