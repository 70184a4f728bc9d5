"""Train the MoE byte-level language model in PyTorch and export it for the numpy model.

PyTorch is an optional extra (``pip install elmoe3d[train]``; on the project machines
``pip install torch==2.13.0`` takes a CPU build). Usage::

    python -m elmoe3d.sim.lm.train --steps 4000 -o sim/data/moe_lm.npz            # target
    python -m elmoe3d.sim.lm.train --preset draft --steps 800 -o sim/data/draft_lm.npz

Corpus: the running interpreter's top-level standard-library ``*.py`` files, split by file
(:mod:`elmoe3d.sim.lm.corpus`, fixed seed). Each step samples ``batch`` random windows of ``seq`` + 1 bytes
from the training files. The loss is the next-byte cross-entropy plus ``lb_coef`` times the
Switch-Transformer load-balancing loss ``E * sum_e f_e * P_e`` per MoE layer (``f_e``: share of
routed slots sent to expert ``e``; ``P_e``: mean router probability), averaged over layers.
AdamW, linear warm-up then cosine decay to 10 %, gradient clipping at 1.

The forward pass is the same network as :mod:`elmoe3d.sim.lm.model` (pre-norm blocks, RMSNorm, RoPE attention,
Mixtral-style routing of SPEC section 3, SwiGLU experts). Every ``--export-every`` steps the
model is evaluated on held-out windows and written (float16, :mod:`elmoe3d.sim.lm.config` format), so a
partial run leaves a usable model. ``--init`` continues from an exported model with a fresh
optimizer and schedule (a second, lower-rate phase; the metadata records both phases).
"""

import argparse
import json
import math
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import corpus
from .config import DRAFT_BASELINE, TARGET, LMConfig, load_weights, save_weights, weight_shapes


class RMSNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope(x, base):
    """Rotate pairs ``(x[i], x[i + hd/2])`` by ``pos * base**(-2i/hd)``; x (B, H, T, hd)."""
    hd, T = x.shape[-1], x.shape[-2]
    inv = base ** (-torch.arange(0, hd // 2, dtype=torch.float64) * 2 / hd)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv[None, :]
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d, E, Fh = cfg.d_model, cfg.n_experts, cfg.d_ffn
        self.cfg = cfg
        self.attn_norm, self.ffn_norm = RMSNorm(d, cfg.norm_eps), RMSNorm(d, cfg.norm_eps)
        self.wq, self.wk, self.wv, self.wo = (nn.Linear(d, d, bias=False) for _ in range(4))
        self.router = nn.Parameter(torch.randn(d, E) * 0.02)
        self.gate = nn.Parameter(torch.randn(E, Fh, d) / math.sqrt(d))
        self.up = nn.Parameter(torch.randn(E, Fh, d) / math.sqrt(d))
        self.down = nn.Parameter(torch.randn(E, d, Fh) / math.sqrt(Fh) / math.sqrt(2 * cfg.n_layers))
        nn.init.normal_(self.wo.weight, std=0.02 / math.sqrt(2 * cfg.n_layers))

    def attention(self, x):
        B, T, d = x.shape
        H, hd = self.cfg.n_heads, self.cfg.head_dim
        q, k, v = (w(x).view(B, T, H, hd).transpose(1, 2) for w in (self.wq, self.wk, self.wv))
        q, k = rope(q, self.cfg.rope_base), rope(k, self.cfg.rope_base)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.wo(y.transpose(1, 2).reshape(B, T, d))

    def moe(self, x):
        """Top-k MoE FFN; returns ``(output, load-balancing loss)``."""
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        probs = torch.softmax(x @ self.router, dim=-1)
        w, idx = probs.topk(self.cfg.top_k, dim=-1)
        w = w / w.sum(-1, keepdim=True)
        out = torch.zeros_like(x)
        for e in range(self.cfg.n_experts):
            tok, slot = (idx == e).nonzero(as_tuple=True)
            if tok.numel() == 0:
                continue
            xe = x[tok]
            h = F.silu(xe @ self.gate[e].T) * (xe @ self.up[e].T)
            out.index_add_(0, tok, (h @ self.down[e].T) * w[tok, slot, None])
        frac = F.one_hot(idx, self.cfg.n_experts).sum(1).float().mean(0) / self.cfg.top_k
        lb = self.cfg.n_experts * (frac * probs.mean(0)).sum()
        return out.view(shape), lb

    def forward(self, x):
        x = x + self.attention(self.attn_norm(x))
        y, lb = self.moe(self.ffn_norm(x))
        return x + y, lb


class MoELM(nn.Module):
    """The PyTorch twin of :class:`elmoe3d.sim.lm.model.MoELM`."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab, cfg.d_model)
        nn.init.normal_(self.tok_emb.weight, std=1.0)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab, bias=False)
        nn.init.normal_(self.lm_head.weight, std=0.02)

    def forward(self, tokens):
        """Logits (B, T, V) and the mean load-balancing loss over layers."""
        x = self.tok_emb(tokens)
        lbs = []
        for layer in self.layers:
            x, lb = layer(x)
            lbs.append(lb)
        return self.lm_head(self.norm(x)), torch.stack(lbs).mean()

    def parameter_map(self):
        """``{key: parameter}`` in the :mod:`elmoe3d.sim.lm.config` layout (what export and load share)."""
        out = {"tok_emb": self.tok_emb.weight, "norm": self.norm.weight, "lm_head": self.lm_head.weight}
        for i, b in enumerate(self.layers):
            p = f"layers.{i}."
            out.update({p + "attn_norm": b.attn_norm.weight, p + "ffn_norm": b.ffn_norm.weight,
                        p + "wq": b.wq.weight, p + "wk": b.wk.weight, p + "wv": b.wv.weight,
                        p + "wo": b.wo.weight, p + "router": b.router, p + "gate": b.gate,
                        p + "up": b.up, p + "down": b.down})
        return out

    def export(self):
        """``{key: float64 numpy array}`` in the :mod:`elmoe3d.sim.lm.config` layout."""
        return {k: v.detach().double().numpy() for k, v in self.parameter_map().items()}

    def load(self, weights):
        """Load ``{key: array}`` (the :mod:`elmoe3d.sim.lm.config` layout) into the parameters."""
        own = self.parameter_map()
        assert set(own) == set(weight_shapes(self.cfg))
        with torch.no_grad():
            for k, param in own.items():
                param.copy_(torch.as_tensor(np.asarray(weights[k]), dtype=param.dtype))
        return self


def load_torch_model(path, dtype=torch.float64):
    """A :class:`MoELM` holding the weights of a ``.npz`` file (for the numpy-vs-torch test)."""
    cfg, weights, _ = load_weights(path)
    return MoELM(cfg).to(dtype).load(weights)


def bits_per_byte(model, windows):
    """Mean held-out next-byte cross-entropy in bits over windows (n, L) of bytes."""
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for chunk in torch.as_tensor(windows.astype(np.int64)).split(8):
            logits, _ = model(chunk[:, :-1])
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), chunk[:, 1:].reshape(-1),
                                   reduction="sum")
            total, count = total + float(loss), count + chunk[:, 1:].numel()
    model.train()
    return total / count / math.log(2)


def lr_at(step, steps, lr, warmup):
    if step < warmup:
        return lr * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def train(cfg, steps, out, batch=16, seq=256, lr=3e-3, warmup=100, lb_coef=0.01, seed=0,
          export_every=250, eval_windows=32, threads=1, max_minutes=None, init=None, log=print):
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    names = corpus.stdlib_files()
    train_names, held_names = corpus.split_files(names, seed=corpus.DEFAULT_SEED)
    data = torch.as_tensor(corpus.load_bytes(train_names).astype(np.int64))
    held = corpus.load_bytes(held_names)
    windows = corpus.heldout_windows(held, eval_windows, seq + 1)
    unigram = corpus.unigram_bits_per_byte(corpus.load_bytes(train_names), held)
    log(f"corpus: {len(train_names)} training files ({len(data)} bytes), {len(held_names)} held-out "
        f"({len(held)} bytes); unigram {unigram:.3f} bits/byte")
    model = MoELM(cfg)
    prior = {}
    if init is not None:                      # continue from an exported model (fresh optimizer)
        init_cfg, weights, prior = load_weights(init)
        if init_cfg != cfg:
            raise ValueError(f"--init model has config {init_cfg}, expected {cfg}")
        model.load(weights)
        log(f"continuing from {init} ({prior.get('steps')} steps)")
    log(f"model: {cfg} = {sum(p.numel() for p in model.parameters())} parameters")
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95))
    meta = {"python": sys.version.split()[0], "corpus": "stdlib top-level *.py",
            "heldout_files": held_names, "n_train_files": len(train_names), "seed": seed,
            "batch": batch, "seq": seq, "lr": lr, "lb_coef": lb_coef, "steps_planned": steps,
            "unigram_bits_per_byte": unigram}
    if init is not None:
        meta["phases"] = prior.get("phases", [{k: prior.get(k) for k in ("steps", "lr", "steps_planned", "train_minutes")}])
    base_steps, base_minutes = prior.get("steps", 0), prior.get("train_minutes", 0.0)
    gen = torch.Generator().manual_seed(seed + base_steps)   # a continuation sees new windows
    t0, run_loss = time.time(), None
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, lr, warmup)
        starts = torch.randint(0, len(data) - seq - 1, (batch,), generator=gen)
        x = torch.stack([data[s:s + seq + 1] for s in starts.tolist()])
        logits, lb = model(x[:, :-1])
        ce = F.cross_entropy(logits.reshape(-1, cfg.vocab), x[:, 1:].reshape(-1))
        loss = ce + lb_coef * lb
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ce_val = ce.detach().item()
        run_loss = ce_val if run_loss is None else 0.98 * run_loss + 0.02 * ce_val
        done = step + 1
        if done % 25 == 0 or done == 1:
            el = time.time() - t0
            log(f"step {done}/{steps}  train {run_loss / math.log(2):.3f} bits/byte  lb {lb.detach().item():.3f}  "
                f"{el / done:.2f} s/step  elapsed {el / 60:.1f} min")
        out_of_time = max_minutes is not None and time.time() - t0 > 60 * max_minutes
        if done % export_every == 0 or done == steps or out_of_time:
            bpb = bits_per_byte(model, windows)
            meta.update({"steps": base_steps + done, "train_bits_per_byte": run_loss / math.log(2),
                         "heldout_bits_per_byte_torch": bpb,
                         "train_minutes": base_minutes + (time.time() - t0) / 60})
            if init is not None:
                meta["phases"] = meta["phases"][:1] + [{"steps": done, "lr": lr, "steps_planned": steps,
                                                        "train_minutes": (time.time() - t0) / 60}]
            save_weights(out, cfg, model.export(), meta)
            log(f"step {done}: held-out {bpb:.3f} bits/byte (torch float32); wrote {out}")
            if out_of_time:
                log(f"stopped at step {done} of {steps}: the {max_minutes}-minute budget is spent")
                break
    return model, meta


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", choices=["target", "draft"], default="target")
    p.add_argument("--config", help="JSON of an LMConfig, overrides --preset")
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--lb-coef", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--export-every", type=int, default=250)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--max-minutes", type=float, help="stop (and export) once this much time is spent")
    p.add_argument("--init", help="continue from this exported model (a fresh optimizer and schedule)")
    p.add_argument("-o", "--out", required=True)
    a = p.parse_args(argv)
    cfg = LMConfig.from_json(a.config) if a.config else (TARGET if a.preset == "target" else DRAFT_BASELINE)
    _, meta = train(cfg, a.steps, a.out, a.batch, a.seq, a.lr, a.warmup, a.lb_coef, a.seed,
                    a.export_every, threads=a.threads, max_minutes=a.max_minutes, init=a.init, log=lambda s: print(s, flush=True))
    print(json.dumps({k: v for k, v in meta.items() if k != "heldout_files"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
