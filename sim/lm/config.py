"""Configuration and weights file of the MoE language model (:mod:`elmoe3d.sim.lm.model`).

One frozen :class:`LMConfig` with validation and presets, and the ``.npz`` weights format that
the PyTorch trainer (:mod:`elmoe3d.sim.lm.train`) writes and the numpy model reads.

Weights file (``numpy.savez_compressed``, no pickles), every linear in ``(out, in)`` layout:

=========================  ==================  ============================================
key                        shape               meaning
=========================  ==================  ============================================
``config``                 () str              JSON of :class:`LMConfig`
``meta``                   () str              JSON: steps, corpus, held-out files, losses
``tok_emb``                (V, d)              byte embeddings
``layers.i.attn_norm``     (d,)                RMSNorm gain before attention
``layers.i.wq|wk|wv|wo``   (d, d)              attention projections
``layers.i.ffn_norm``      (d,)                RMSNorm gain before the MoE FFN
``layers.i.router``        (d, E)              router (kept in floating point, SPEC 3)
``layers.i.gate|up``       (E, F, d)           SwiGLU expert projections
``layers.i.down``          (E, d, F)           SwiGLU expert output projections
``norm``                   (d,)                final RMSNorm gain
``lm_head``                (V, d)              output projection to byte logits
=========================  ==================  ============================================

Floating-point arrays are stored as float16 (the shipped model fits in a few MB) and are
upcast to float64 on load; that float16-rounded model *is* the float reference.
"""

import json
import math
import zipfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from ...errors import UserError
from ..numerics.gemv import check_k

VOCAB = 256  # byte-level vocabulary


@dataclass(frozen=True)
class LMConfig:
    """Shape of the decoder-only MoE transformer.

    Parameters
    ----------
    d_model : int, >= 2, even per head        residual width
    n_layers : int, >= 1                      transformer blocks
    n_heads : int, >= 1, divides d_model      attention heads (head width even, for RoPE)
    n_experts : int, >= 1                     routed experts per MoE FFN
    top_k : int, 1..n_experts                 experts per token
    d_ffn : int, >= 1                         hidden width of each SwiGLU expert
    max_seq : int, >= 2                       longest sequence (prompt + generation) in bytes
    rope_base : float, > 1                    RoPE frequency base
    norm_eps : float, > 0                     RMSNorm epsilon
    vocab : int, 256                          byte vocabulary
    """

    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    n_experts: int = 8
    top_k: int = 2
    d_ffn: int = 256
    max_seq: int = 1024
    rope_base: float = 10000.0
    norm_eps: float = 1e-5
    vocab: int = VOCAB

    def __post_init__(self):
        for name in ("d_model", "n_layers", "n_heads", "n_experts", "top_k", "d_ffn", "max_seq"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise UserError(f"LMConfig.{name} must be a positive integer, got {value!r}")
        if self.vocab != VOCAB:
            raise UserError(f"LMConfig.vocab must be {VOCAB} (bytes), got {self.vocab!r}")
        if self.top_k > self.n_experts:
            raise UserError(f"LMConfig.top_k = {self.top_k} exceeds n_experts = {self.n_experts}")
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise UserError(f"LMConfig.d_model = {self.d_model} must split into {self.n_heads} "
                            f"heads of even width (RoPE rotates pairs)")
        if self.max_seq < 2:
            raise UserError(f"LMConfig.max_seq must be at least 2, got {self.max_seq}")
        if not self.rope_base > 1.0:
            raise UserError(f"LMConfig.rope_base must exceed 1, got {self.rope_base!r}")
        if not self.norm_eps > 0.0:
            raise UserError(f"LMConfig.norm_eps must be positive, got {self.norm_eps!r}")
        check_k(max(self.d_model, self.d_ffn))

    @property
    def head_dim(self):
        return self.d_model // self.n_heads

    @property
    def expert_params(self):
        """Weights of one SwiGLU expert (gate, up, down)."""
        return 3 * self.d_model * self.d_ffn

    @property
    def n_params(self):
        d = self.d_model
        per_layer = 4 * d * d + 2 * d + d * self.n_experts + self.n_experts * self.expert_params
        return 2 * self.vocab * d + d + self.n_layers * per_layer

    def to_json(self):
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text):
        """The config from its JSON text; ``UserError`` for bad JSON, unknown fields or a value of
        the wrong type (an integer field given a string or float, a float field a non-number)."""
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise UserError(f"model config is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise UserError(f"model config must be a JSON object, got {type(data).__name__}")
        known = {f.name: f for f in fields(cls)}
        unknown = set(data) - set(known)
        if unknown:
            raise UserError(f"model config has unknown fields: {', '.join(sorted(unknown))}")
        for name, value in data.items():
            want = known[name].type
            if want in (int, "int"):
                ok = isinstance(value, int) and not isinstance(value, bool)
            else:
                ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            if not ok:
                kind = "an integer" if want in (int, "int") else "a finite number"
                raise UserError(f"model config field {name} must be {kind}, got {value!r}")
        return cls(**data)


# The shipped target model (~3.5 M parameters) and the separate 1-layer dense draft baseline
# (one expert, top-1: an ordinary SwiGLU FFN) of the separate-draft SD baseline.
TARGET = LMConfig()
DRAFT_BASELINE = LMConfig(d_model=128, n_layers=1, n_heads=4, n_experts=1, top_k=1, d_ffn=512)
# A tiny random model for fast tests.
TINY = LMConfig(d_model=32, n_layers=2, n_heads=2, n_experts=4, top_k=2, d_ffn=48, max_seq=256)


def weight_shapes(cfg):
    """``{key: shape}`` of every weight array of a model with config ``cfg``."""
    d, E, F, V = cfg.d_model, cfg.n_experts, cfg.d_ffn, cfg.vocab
    shapes = {"tok_emb": (V, d), "norm": (d,), "lm_head": (V, d)}
    for i in range(cfg.n_layers):
        p = f"layers.{i}."
        shapes.update({p + "attn_norm": (d,), p + "wq": (d, d), p + "wk": (d, d), p + "wv": (d, d),
                       p + "wo": (d, d), p + "ffn_norm": (d,), p + "router": (d, E),
                       p + "gate": (E, F, d), p + "up": (E, F, d), p + "down": (E, d, F)})
    return shapes


def random_weights(cfg, seed=0, scale=1.0):
    """Random float64 weights (``scale / sqrt(fan_in)``), norms at 1: for tests and smoke runs."""
    rng = np.random.default_rng(seed)
    weights = {}
    for key, shape in weight_shapes(cfg).items():
        if key.endswith("norm"):
            weights[key] = np.ones(shape)
        elif key == "tok_emb":
            weights[key] = rng.standard_normal(shape)
        else:
            weights[key] = rng.standard_normal(shape) * scale / np.sqrt(shape[-1])
    return weights


def save_weights(path, cfg, weights, meta=None, dtype=np.float16):
    """Write a weights file (atomically: a temporary file, then a rename)."""
    shapes = weight_shapes(cfg)
    missing = set(shapes) - set(weights)
    if missing:
        raise UserError(f"weights lack {', '.join(sorted(missing))}")
    arrays = {k: np.asarray(weights[k], dtype=dtype) for k in shapes}
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, config=np.array(cfg.to_json()), meta=np.array(json.dumps(meta or {})),
                        **arrays)
    tmp.replace(path)


# Metadata keys that readers use, and the JSON types they expect.
_META_TYPES = {"steps": int, "python": str, "heldout_files": list, "phases": list, "seed": int,
               "batch": int, "seq": int, "train_minutes": (int, float), "unigram_bits_per_byte": (int, float),
               "heldout_bits_per_byte_torch": (int, float), "train_bits_per_byte": (int, float)}


def _meta(path, entry):
    """The ``meta`` entry as a dict; ``UserError`` when it is not a JSON object or a key that
    readers use has the wrong type."""
    try:
        meta = json.loads(str(entry))
    except (json.JSONDecodeError, RecursionError) as exc:
        raise UserError(f"weights file {path}: metadata is not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise UserError(f"weights file {path}: metadata must be a JSON object, got {type(meta).__name__}")
    for key, want in _META_TYPES.items():
        value = meta.get(key)
        if value is not None and (not isinstance(value, want) or isinstance(value, bool)):
            raise UserError(f"weights file {path}: metadata {key} has the wrong type ({value!r})")
    return meta


def load_weights(path):
    """Read a weights file: ``(config, {key: float64 array}, meta dict)``.

    Raises
    ------
    UserError
        The file is missing, not a valid ``.npz``, lacks arrays, or has wrong shapes.
    """
    if str(path) == "":
        raise UserError("weights file: an empty name")
    path = Path(path)
    if path.is_dir():
        raise UserError(f"weights file {path} is a folder")
    if not path.is_file():
        raise UserError(f"weights file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError) as exc:
        raise UserError(f"weights file {path} is corrupt or not an .npz file ({exc})") from None
    if "config" not in data:
        raise UserError(f"weights file {path} has no 'config' entry")
    try:
        cfg = LMConfig.from_json(str(data.pop("config")))
    except UserError as exc:
        raise UserError(f"weights file {path}: {exc}") from None
    meta = _meta(path, data.pop("meta")) if "meta" in data else {}
    weights = {}
    for key, shape in weight_shapes(cfg).items():
        if key not in data:
            raise UserError(f"weights file {path} lacks array {key!r}")
        arr = data[key]
        if arr.shape != shape:
            raise UserError(f"weights file {path}: {key} has shape {arr.shape}, expected {shape}")
        if not np.issubdtype(arr.dtype, np.floating) or not np.all(np.isfinite(arr)):
            raise UserError(f"weights file {path}: {key} is not a finite floating-point array")
        weights[key] = arr.astype(np.float64)
    return cfg, weights, meta
