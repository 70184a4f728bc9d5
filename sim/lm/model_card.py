"""Measure the shipped language models on held-out text and write their model card.

    python -m elmoe3d.sim.lm.model_card            # writes sim/data/MODEL_CARD.md and heldout_bits.json
    python -m elmoe3d.sim.lm.model_card --reuse    # re-render the card from heldout_bits.json

Held-out bits per byte over the **whole** held-out text (numpy golden model): the text is cut
into consecutive windows of 257 bytes that overlap by one byte (``corpus.heldout_tiling``), so
every held-out byte but the first and a short tail is predicted exactly once, from the context
of its own window (0 to 255 bytes). Each figure is the mean over all those predictions, with its
standard error from the spread of per-block means (blocks of 16 neighbouring windows, so that
the correlation of neighbouring text is counted). Rows: the target in float64, in INT8 and in
the draft executions Elastic-SD uses, the separate draft model, and a byte-unigram baseline.
The per-window figures go to ``heldout_bits.json`` beside the card, which the tests recompute on
a sample of windows. Also: the experts' share of routed tokens per layer and the golden
model's decode speed.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from . import corpus
from .blas_threads import single_threaded
from ..sd.elastic_sd import SDSettings, generate
from .model import FLOAT, MAX_BATCH, TARGET, Execution, MoELM

from .. import DATA
BITS_JSON = DATA / "heldout_bits.json"
LENGTH = 257              # bytes per window: 256 predictions
BLOCK = 16                # windows per block for the standard error
SHARE_WINDOWS = 16        # windows the routing shares are counted on
REFERENCE = "target, INT8 (full)"     # paired differences are taken against this row

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
    windows = windows[:16]
    res = model.forward([w[:-1] for w in windows], model.new_cache(len(windows)), TARGET)
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


def window_bits(model, windows, execution, batch=MAX_BATCH):
    """Mean next-byte cross-entropy in bits of each window ``(n, L)`` (positions 1 .. L-1), (n,)."""
    windows = np.asarray(windows)
    out = np.empty(len(windows))
    with single_threaded():
        for start in range(0, len(windows), batch):
            chunk = windows[start:start + batch]
            for i, (w, logits) in enumerate(zip(chunk, model.logits([w[:-1] for w in chunk], execution))):
                z = logits - logits.max(axis=-1, keepdims=True)
                logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
                out[start + i] = -logp[np.arange(len(w) - 1), w[1:]].mean() / np.log(2)
    return out


def unigram_window_bits(train_bytes, windows):
    """Per-window bits of the add-one byte unigram of the training text, (n,)."""
    counts = np.bincount(train_bytes, minlength=256).astype(np.float64) + 1.0
    logp = np.log2(counts / counts.sum())
    return -logp[np.asarray(windows)[:, 1:]].mean(axis=1)


def summarize(bits, block=BLOCK):
    """``(mean, standard error)`` of per-window figures: the standard error of the mean of
    ``block``-window block means (batch means), which counts correlation between neighbours."""
    bits = np.asarray(bits, dtype=np.float64)
    n_blocks = len(bits) // block
    if n_blocks >= 2:
        means = bits[:n_blocks * block].reshape(n_blocks, block).mean(axis=1)
        se = means.std(ddof=1) / np.sqrt(n_blocks)
    else:
        se = bits.std(ddof=1) / np.sqrt(len(bits)) if len(bits) > 1 else float("nan")
    return float(bits.mean()), float(se)


def card_rows():
    """The card's rows: ``[(name, model, execution)]``; ``model`` is "target", "draft" or "unigram"."""
    rows = [(name, "target", ex) for name, ex in EXECUTIONS]
    rows += [("separate draft model, float64", "draft", FLOAT), ("separate draft model, INT8", "draft", TARGET),
             ("byte unigram (add-one, training files)", "unigram", None)]
    return rows


_JOB = {}


def _row_bits(index):
    """One row of the card (a worker of :func:`measure_bits`; the models come from ``_JOB``)."""
    name, which, ex = card_rows()[index]
    start = time.perf_counter()
    if which == "unigram":
        bits = unigram_window_bits(_JOB["train_bytes"], _JOB["windows"])
    else:
        bits = window_bits(_JOB[which], _JOB["windows"], ex)
    return name, bits, time.perf_counter() - start


def measure_bits(target, draft, train_bytes, windows, log=None, jobs=1):
    """``{row name: per-window bits}`` over ``windows`` for every row of the card; ``jobs``
    processes share the rows (each single-threaded)."""
    _JOB.update(target=target, draft=draft, train_bytes=train_bytes, windows=windows)
    rows = range(len(card_rows()))
    out = {}
    if jobs > 1:
        import multiprocessing
        with multiprocessing.get_context("fork").Pool(jobs) as pool:
            results = pool.imap_unordered(_row_bits, rows)
            for name, bits, seconds in results:
                out[name] = bits
                if log:
                    log(f"{name}: {bits.mean():.4f} bits/byte over {len(windows)} windows ({seconds:.0f} s)")
    else:
        for i in rows:
            name, bits, seconds = _row_bits(i)
            out[name] = bits
            if log:
                log(f"{name}: {bits.mean():.4f} bits/byte over {len(windows)} windows ({seconds:.0f} s)")
    return {name: out[name] for name, _, _ in card_rows()}      # in the card's order


def measure(target_path, draft_path, reuse=False, bits_json=BITS_JSON, log=None, max_windows=None, jobs=1,
            every=1):
    target, draft = MoELM.load(target_path), MoELM.load(draft_path)
    names = corpus.stdlib_files()
    train, held = corpus.split_files(names)
    train_bytes, held_bytes = corpus.load_bytes(train), corpus.load_bytes(held)
    tiling = corpus.heldout_tiling(held_bytes, LENGTH)
    windows = tiling[::every][:max_windows]
    if reuse:
        saved = json.loads(Path(bits_json).read_text())
        if saved["n_windows"] != len(tiling) or saved["held_bytes"] != len(held_bytes):
            raise SystemExit(f"{bits_json} was measured on other held-out text; run without --reuse")
        every = saved["every"]
        windows = tiling[::every]
        bits = {name: np.array(v) for name, v in saved["rows"].items()}
    else:
        bits = measure_bits(target, draft, train_bytes, windows, log, jobs)
        Path(bits_json).write_text(json.dumps({
            "length": LENGTH, "n_windows": len(tiling), "every": every, "held_bytes": len(held_bytes),
            "block": BLOCK, "python": sys.version.split()[0], "heldout_files": held,
            "rows": {name: [round(float(x), 9) for x in v] for name, v in bits.items()}}) + "\n")
    ref = bits[REFERENCE]
    rows = [(name, *summarize(v), *summarize(v - ref)) for name, v in bits.items()]
    # the trainer's check: 32 evenly spaced windows, for the comparison the card states
    sample = float(window_bits(target, corpus.heldout_windows(held_bytes, 32, LENGTH), TARGET).mean())
    with single_threaded():
        shares = expert_shares(target, windows[:: max(1, len(windows) // SHARE_WINDOWS)][:SHARE_WINDOWS])
    speed = decode_speed(target, list(corpus.heldout_windows(held_bytes, 16, 64)))
    return target, draft, train, held, train_bytes, held_bytes, rows, shares, speed, len(tiling), every, sample


def _phases(name, meta):
    """One line on the training phases (a run stopped by its time budget, a continuation)."""
    phases = meta.get("phases") or [{k: meta.get(k) for k in ("steps", "lr", "steps_planned", "train_minutes")}]
    text = "; ".join(f"phase {i + 1}: {p['steps']} of {p['steps_planned']} planned steps at peak lr {p['lr']} "
                     f"({p['train_minutes']:.0f} min)" for i, p in enumerate(phases))
    return f"- {name} schedule: {text}. A phase stopped early by its time budget ends before its cosine decay does."


def card(target, draft, train, held, train_bytes, held_bytes, rows, shares, speed, n_windows, every, sample32):
    tm, dm = target.meta, draft.meta
    c, d = target.cfg, draft.cfg
    lines = [
        "# Model card: the shipped byte-level MoE language models",
        "",
        "Written by `python -m elmoe3d.sim.lm.model_card` from the shipped weights; trained by",
        "`python -m elmoe3d.sim.lm.train` (PyTorch, CPU).",
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
        "Weights are stored as float16 (`sim/lm/config.py` documents the file); the float16-rounded",
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
        "python -m elmoe3d.sim.lm.train --steps 3000 --export-every 250 --max-minutes 52 -o phase1.npz",
        "python -m elmoe3d.sim.lm.train --init phase1.npz --steps 480 --warmup 20 --lr 1e-3 \\",
        "    --export-every 80 --max-minutes 12.5 -o sim/data/moe_lm.npz",
        "python -m elmoe3d.sim.lm.train --preset draft --steps 1000 --export-every 250 --max-minutes 9 \\",
        "    -o sim/data/draft_lm.npz",
        "python -m elmoe3d.sim.lm.model_card      # this file",
        "```",
        "",
        "Time budgets make the step counts depend on the machine's load; the seeds fix the data order.",
        "",
        "## Held-out bits per byte ("
        + ("the whole held-out text" if every == 1 else f"every {every}th window of the held-out text")
        + ", numpy golden model)",
        "",
        f"All {len(held_bytes):,} held-out bytes cut into {n_windows:,} consecutive windows of {LENGTH} bytes "
        f"overlapping by one, {n_windows * (LENGTH - 1):,} predictions: each held-out byte once (but the first "
        f"and the last {len(held_bytes) - 1 - n_windows * (LENGTH - 1)}), from the context of its own window "
        f"(0 to {LENGTH - 2} bytes). "
        + ("All of them are scored. " if every == 1 else
           f"Scored: every {every}th window, {len(range(0, n_windows, every)):,} windows = "
           f"{len(range(0, n_windows, every)) * (LENGTH - 1):,} predictions spread evenly over the whole text "
           f"(`python -m elmoe3d.sim.lm.model_card --every 1` scores all, about {every} times longer). ")
        + f"Standard error: of the mean of {BLOCK}-window block means ({len(range(0, n_windows, every)) // BLOCK} "
        "blocks), so that neighbouring windows' correlation counts. Per-window figures: `heldout_bits.json`.",
        "",
        "",
        f"The last column is the paired difference from the {REFERENCE} row on the same windows, with its own "
        "standard error: harder and easier stretches of text move every row together, so differences between "
        "executions are known far more precisely than the rows themselves.",
        "",
        f"| model / execution | bits per byte | standard error | minus {REFERENCE} (± standard error) |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| {name} | {bpb:.3f} | {se:.3f} | {d:+.4f} ± {dse:.4f} |" for name, bpb, se, d, dse in rows]
    lines += [
        "",
        f"The trainer's own held-out check at export (PyTorch float32) scored only 32 evenly spaced windows "
        f"(8,192 predictions): {tm.get('heldout_bits_per_byte_torch', float('nan')):.3f} for the target "
        f"(numpy INT8 on the same windows: {sample32:.3f}); those windows are a sample, easier than the "
        "held-out text as a whole, and earlier versions of this card quoted them. The numpy float64 forward "
        "matches the PyTorch float64 forward to 1e-9 on the logits "
        "(`tests/test_lm.py::test_numpy_forward_matches_torch`, measured ~1e-15).",
        "",
        "## Routing (held-out, INT8 target)",
        "",
        f"Share of routed (token, slot) pairs per expert on {SHARE_WINDOWS} windows spread over the held-out "
        f"text ({SHARE_WINDOWS * (LENGTH - 1):,} tokens), one row per layer (uniform = {1 / c.n_experts:.3f}):",
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
    p.add_argument("--bits-json", default=BITS_JSON, type=Path, help="per-window figures (written, or read with --reuse)")
    p.add_argument("--reuse", action="store_true", help="take the bits per byte from --bits-json instead of measuring")
    p.add_argument("--max-windows", type=int, help="only the first N windows (a smoke run, not for the card)")
    p.add_argument("--jobs", type=int, default=1, help="processes sharing the rows (default 1)")
    p.add_argument("--every", type=int, default=1, help="score every N-th window of the tiling (default 1: all)")
    a = p.parse_args(argv)
    text = card(*measure(a.target, a.draft, a.reuse, a.bits_json, max_windows=a.max_windows, jobs=a.jobs,
                         every=a.every,
                         log=lambda m: print(f"model_card: {m}", file=sys.stderr, flush=True)))
    a.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
