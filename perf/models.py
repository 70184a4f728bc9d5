"""MoE model shapes for the speed and energy model: parameters, bytes and MACs per part.

A :class:`ModelShape` holds what decode traffic depends on: attention (GQA or DeepSeek's MLA), the
router, routed experts (SwiGLU: gate, up, down), always-on shared experts, leading dense FFN
layers, the LM head and the KV cache. The shipped model's shape is read from its weights file
(``sim/data/moe_lm.npz``), the large models' from ``perf/data/models.json`` (each with its
source, the model's ``config.json``).

Units: parameters are counts of weights; ``*_bytes`` helpers take the weight width in bits.
"""

import json
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from pathlib import Path

from ..errors import UserError

DATA = Path(__file__).resolve().parent / "data"
ATTENTION = ("gqa", "mla")
SHIPPED = "shipped"


def _need_int(owner, name, value, lo=1):
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise UserError(f"model {owner}: {name} must be an integer >= {lo}, got {value!r}")


@dataclass(frozen=True)
class ModelShape:
    """Shape of a decoder-only MoE transformer.

    Parameters
    ----------
    name : str
    d_model, n_layers, n_heads, n_kv_heads, head_dim : int    transformer widths
    n_experts, top_k, d_expert : int    routed experts per MoE layer, experts per token, expert width
    d_shared : int          summed intermediate width of the shared expert(s), 0 if none
    dense_layers, d_dense : int   leading layers with a dense SwiGLU FFN of width ``d_dense``
    vocab : int
    attention : ``gqa`` | ``mla``   MLA: ``kv_lora_rank``, ``qk_rope_dim``, ``qk_nope_dim``, ``v_head_dim``
    draft_fraction : float  separate draft model's weights / target's active weights (xPU + SD)
    published_total_b, published_active_b : float   model-card counts in billions (checks only)
    source : str
    """

    name: str
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    n_experts: int
    top_k: int
    d_expert: int
    vocab: int
    d_shared: int = 0
    dense_layers: int = 0
    d_dense: int = 0
    attention: str = "gqa"
    kv_lora_rank: int = 0
    qk_rope_dim: int = 0
    qk_nope_dim: int = 0
    v_head_dim: int = 0
    draft_fraction: float = 0.1
    published_total_b: float = 0.0
    published_active_b: float = 0.0
    active_excludes_embeddings: bool = False
    source: str = ""

    def __post_init__(self):
        for name in ("d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim", "n_experts", "top_k",
                     "d_expert", "vocab"):
            _need_int(self.name, name, getattr(self, name))
        for name in ("d_shared", "dense_layers", "d_dense", "kv_lora_rank", "qk_rope_dim", "qk_nope_dim", "v_head_dim"):
            _need_int(self.name, name, getattr(self, name), lo=0)
        if self.top_k > self.n_experts:
            raise UserError(f"model {self.name}: top_k = {self.top_k} exceeds n_experts = {self.n_experts}")
        if self.dense_layers >= self.n_layers:
            raise UserError(f"model {self.name}: dense_layers = {self.dense_layers} leaves no MoE layer "
                            f"of {self.n_layers}")
        if self.attention not in ATTENTION:
            raise UserError(f"model {self.name}: attention must be one of {', '.join(ATTENTION)}, got {self.attention!r}")
        if self.attention == "mla" and not (self.kv_lora_rank and self.qk_rope_dim and self.qk_nope_dim and self.v_head_dim):
            raise UserError(f"model {self.name}: MLA attention needs kv_lora_rank, qk_rope_dim, qk_nope_dim and v_head_dim")
        if not (isinstance(self.draft_fraction, (int, float)) and 0 < self.draft_fraction <= 1):
            raise UserError(f"model {self.name}: draft_fraction must be in (0, 1], got {self.draft_fraction!r}")

    # -- parameter counts (weights) per part ----------------------------------------------------
    @property
    def moe_layers(self):
        return self.n_layers - self.dense_layers

    @property
    def attn_params(self):
        """Attention weights of one layer."""
        d, h = self.d_model, self.n_heads
        if self.attention == "mla":       # DeepSeek-V2-Lite: q_proj, kv_a (with rope key), kv_b, o_proj
            q = d * h * (self.qk_nope_dim + self.qk_rope_dim)
            kv_a = d * (self.kv_lora_rank + self.qk_rope_dim)
            kv_b = self.kv_lora_rank * h * (self.qk_nope_dim + self.v_head_dim)
            return q + kv_a + kv_b + h * self.v_head_dim * d
        q_o = 2 * d * h * self.head_dim
        return q_o + 2 * d * self.n_kv_heads * self.head_dim

    @property
    def expert_params(self):
        """One routed SwiGLU expert (gate, up, down)."""
        return 3 * self.d_model * self.d_expert

    @property
    def dense_params(self):
        """Weights every token reads once per pass whatever its routing: attention, router, shared
        experts, dense FFN layers, LM head (the embedding is a row lookup, left out)."""
        d = self.d_model
        per_moe = d * self.n_experts + 3 * d * self.d_shared
        return (self.n_layers * self.attn_params + self.moe_layers * per_moe
                + self.dense_layers * 3 * d * self.d_dense + self.vocab * d)

    @property
    def total_params(self):
        """All weights, embedding included."""
        return self.dense_params + self.moe_layers * self.n_experts * self.expert_params + self.vocab * self.d_model

    @property
    def active_params(self):
        """Weights one token uses (embedding included unless the card leaves it out)."""
        emb = 0 if self.active_excludes_embeddings else self.vocab * self.d_model
        return self.dense_params + self.moe_layers * self.top_k * self.expert_params + emb

    # -- per token ------------------------------------------------------------------------------
    def kv_bytes_per_token(self, kv_bits=16):
        """KV-cache bytes one context position holds over all layers."""
        if self.attention == "mla":
            per_layer = self.kv_lora_rank + self.qk_rope_dim
        else:
            per_layer = 2 * self.n_kv_heads * self.head_dim
        return self.n_layers * per_layer * kv_bits / 8

    def attn_macs_per_token(self, context):
        """Score and value MACs of one new position against ``context`` positions, all layers."""
        if self.attention == "mla":   # weights absorbed: scores over (latent + rope), values over the latent
            per = self.n_heads * (2 * self.kv_lora_rank + self.qk_rope_dim)
        else:
            per = 2 * self.n_heads * self.head_dim
        return self.n_layers * per * context

    def to_dict(self):
        d = asdict(self)
        d.update(total_params=self.total_params, active_params=self.active_params,
                 dense_params=self.dense_params, expert_params=self.expert_params)
        return d


FIELDS = {f.name for f in fields(ModelShape)}


def check_table(owner, data, allowed, what="a table of fields"):
    """Refuse ``data`` (from a data file or ``--config``) unless it is a mapping whose keys are
    all in ``allowed``; the one-line message names ``owner``."""
    if not isinstance(data, dict):
        raise UserError(f"{owner}: expected {what}, got {type(data).__name__}")
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise UserError(f"{owner}: unknown field(s) {', '.join(unknown)}")


def model_from_dict(name, data):
    """A :class:`ModelShape` from a mapping (data file or ``--config``), refusing unknown keys."""
    check_table(f"model {name}", data, FIELDS)
    missing = sorted(f for f in ("d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim", "n_experts",
                                 "top_k", "d_expert", "vocab") if f not in data)
    if missing:
        raise UserError(f"model {name}: missing field(s) {', '.join(missing)}")
    try:
        return ModelShape(name=name, **{k: v for k, v in data.items() if k != "name"})
    except TypeError as exc:
        raise UserError(f"model {name}: {exc}") from None


def shipped_model():
    """The shipped byte-level model (``sim/data/moe_lm.npz``) and its separate draft."""
    import numpy as np

    from ..sim.lm import config as lm_config
    from ..sim import DATA as sim_data
    with np.load(sim_data / "moe_lm.npz") as z:
        cfg = json.loads(str(z["config"]))
    with np.load(sim_data / "draft_lm.npz") as z:
        dcfg = json.loads(str(z["config"]))
    d = cfg["d_model"]
    shape = dict(d_model=d, n_layers=cfg["n_layers"], n_heads=cfg["n_heads"], n_kv_heads=cfg["n_heads"],
                 head_dim=d // cfg["n_heads"], n_experts=cfg["n_experts"], top_k=cfg["top_k"],
                 d_expert=cfg["d_ffn"], vocab=cfg["vocab"])
    target = ModelShape(name=SHIPPED, source="sim/data/moe_lm.npz (config key)", draft_fraction=0.5, **shape)
    # measured draft fraction: the 1-layer dense draft's weights over the target's active weights
    dd = dcfg["d_model"]
    draft_params = dcfg["n_layers"] * (4 * dd * dd + dcfg["n_experts"] * 3 * dd * dcfg["d_ffn"]) + dcfg["vocab"] * dd
    active = target.active_params - target.vocab * target.d_model
    shape["draft_fraction"] = round(draft_params / active, 4)
    return ModelShape(name=SHIPPED, source="sim/data/moe_lm.npz and draft_lm.npz (config keys)", **shape)


@lru_cache(maxsize=None)
def builtin_models():
    """``{name: ModelShape}``: the large models of ``data/models.json`` and the shipped one."""
    data = json.loads((DATA / "models.json").read_text())
    out = {name: model_from_dict(name, m) for name, m in data["models"].items()}
    out[SHIPPED] = shipped_model()
    return out
