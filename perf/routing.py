"""Routing model: unique experts per pass and HB hit rates, calibrated on measured routing.

The model
---------
Per MoE layer, expert ``e`` (ranked by popularity) is chosen by a token with probability
``q_e``: Zipf popularity ``p_e ~ rank^-skew``, ``q_e = min(1, k p_e)`` with the excess of capped
experts spread over the others so that ``sum q_e = k`` (``skew`` 0 is uniform routing). A pass
over ``B`` sequences of ``T`` positions each acts like ``n = B (1 + (T - 1)(1 - rho))``
independent tokens: ``rho`` is the share of a sequence's later positions that re-use the experts
of its earlier ones (consecutive tokens route alike). Expected unique experts per layer::

    U(n) = sum_e 1 - (1 - q_e)^n

An HB cache holding the MSB planes of a fraction ``f`` of a layer's experts keeps the most
popular ones (a score/LFU-like policy); the hit rate of a pass is the share of its unique
experts that are resident, ``H_static(f, n) = sum_{e in top f E} u_e / U`` (a partly resident
boundary expert counts pro rata), scaled by a policy efficiency ``eta`` that reaches 1 when
everything fits: ``H = H_static (eta + (1 - eta) f)``.

Calibration (:func:`calibrate`)
-------------------------------
``skew`` is fitted to the unique experts per target pass that ``elmoe3d sd`` measured for plain
decoding (``T = 1``, batch 1-16) on the shipped model, ``rho`` to Elastic-SD's verification
passes (``T = gamma + 1``), and ``eta`` per policy to the measured hit rates of those passes
(``perf/data/measured_sd.json``). The large models reuse ``skew`` and ``rho`` (an assumption:
their routers are also trained with a load-balancing loss); ``elmoe3d perf`` sweeps both as a
sensitivity.
"""

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import UserError

DATA = Path(__file__).resolve().parent / "data"


def inclusion_probs(n_experts, top_k, skew):
    """``q_e``, the probability a token picks expert ``e`` (most popular first); sums to ``top_k``."""
    if not skew >= 0:
        raise UserError(f"routing skew must be >= 0, got {skew!r}")
    p = np.arange(1, n_experts + 1, dtype=float) ** -float(skew)
    p /= p.sum()
    q = top_k * p
    for _ in range(n_experts):          # cap at 1 and spread the excess over the uncapped experts
        over = q > 1.0
        if not over.any():
            break
        excess = (q[over] - 1.0).sum()
        q[over] = 1.0
        free = ~over & (q < 1.0)
        q[free] += excess * q[free] / q[free].sum()
    return np.minimum(q, 1.0)


def effective_tokens(batch, positions, rho):
    """Independent tokens a pass of ``batch`` sequences x ``positions`` positions acts like."""
    return batch * (1.0 + (positions - 1) * (1.0 - rho))


def unique_experts(q, n):
    """Expected unique experts per layer among ``n`` independent tokens."""
    return float(np.sum(1.0 - (1.0 - q) ** n))


def static_hit(q, n, f):
    """Share of a pass's unique experts among the most popular ``f`` of the layer's experts."""
    u = 1.0 - (1.0 - q) ** n
    total = u.sum()
    if total <= 0:
        return 0.0
    m = f * len(q)
    whole = int(np.floor(m))
    resident = u[:whole].sum() + (u[whole] * (m - whole) if whole < len(q) else 0.0)
    return float(resident / total)


@dataclass(frozen=True)
class Routing:
    """Calibrated routing: ``skew``, ``rho`` and the policy efficiencies ``eta`` (per policy)."""

    skew: float
    rho: float
    eta: dict = field(default_factory=dict)
    fit: dict = field(default_factory=dict)

    def q(self, n_experts, top_k):
        return _q_cached(n_experts, top_k, round(self.skew, 6))

    def unique(self, n_experts, top_k, batch, positions):
        """Expected unique experts per layer of a pass."""
        return unique_experts(self.q(n_experts, top_k), effective_tokens(batch, positions, self.rho))

    def hit(self, n_experts, top_k, batch, positions, f, policy="score"):
        """Expected HB hit rate of a pass's unique experts with a resident fraction ``f``."""
        if f >= 1.0:
            return 1.0
        if f <= 0.0:
            return 0.0
        eta = self.eta.get(policy, 1.0)
        n = effective_tokens(batch, positions, self.rho)
        return static_hit(self.q(n_experts, top_k), n, f) * (eta + (1.0 - eta) * f)


@lru_cache(maxsize=4096)
def _q_cached(n_experts, top_k, skew):
    q = inclusion_probs(n_experts, top_k, skew)
    q.setflags(write=False)
    return q


def load_measured():
    """The checked-in ``elmoe3d sd`` measurements (``perf/data/measured_sd.json``)."""
    return json.loads((DATA / "measured_sd.json").read_text())


def _rows(measured, method, policy=None, **match):
    out = []
    for run in measured["runs"]:
        if policy is not None and run["policy"] != policy:
            continue
        for r in run["rows"]:
            if r["method"] == method and all(r.get(k) == v for k, v in match.items()):
                out.append(r)
    return out


@lru_cache(maxsize=1)
def calibrate():
    """Fit ``skew``, ``rho`` and ``eta`` to the shipped model's measured routing (module docstring)."""
    m = load_measured()
    E, k, L = m["n_experts"], m["top_k"], m["n_layers"]
    f = m["cache_planes"] / (L * E)
    plain = _rows(m, "plain", policy="lru")
    elastic = _rows(m, "elastic", policy="lru", k_d=1, expert_bits="draft", dense_bits="full", expert_choice="topk")
    skews = np.round(np.arange(0.0, 2.0001, 0.01), 2)

    def err_plain(s):
        q = inclusion_probs(E, k, s)
        return sum((unique_experts(q, r["batch"]) - r["experts_per_target_pass"] / L) ** 2 for r in plain)

    skew = float(min(skews, key=err_plain))
    q = inclusion_probs(E, k, skew)
    rhos = np.round(np.arange(0.0, 1.0001, 0.01), 2)

    def err_elastic(rho):
        return sum((unique_experts(q, effective_tokens(r["batch"], r["gamma"] + 1, rho))
                    - r["experts_per_target_pass"] / L) ** 2 for r in elastic)

    rho = float(min(rhos, key=err_elastic))
    eta, fit = {}, {"skew_rows": [], "rho_rows": [], "eta_rows": {}}
    for r in plain:
        fit["skew_rows"].append((r["batch"], r["experts_per_target_pass"] / L, unique_experts(q, r["batch"])))
    for r in elastic:
        fit["rho_rows"].append((r["batch"], r["experts_per_target_pass"] / L,
                                unique_experts(q, effective_tokens(r["batch"], r["gamma"] + 1, rho))))
    for run in m["runs"]:
        rows = _rows(m, "elastic", policy=run["policy"], k_d=1, expert_bits="draft", dense_bits="full",
                     expert_choice="topk")
        ratios = []
        for r in rows:
            h = static_hit(q, effective_tokens(r["batch"], r["gamma"] + 1, rho), f)
            # measured = h (eta + (1 - eta) f)  ->  eta = (measured / h - f) / (1 - f)
            ratios.append(((r["hit_rate"] / h) - f) / (1 - f))
            fit["eta_rows"].setdefault(run["policy"], []).append((r["batch"], r["hit_rate"], h))
        eta[run["policy"]] = float(np.clip(np.mean(ratios), 0.0, 1.0))
    return Routing(skew=skew, rho=rho, eta=eta, fit=fit)


def measured_acceptance(kind):
    """``{batch: acceptance}`` measured on the shipped model for a drafting method.

    ``kind``: ``elastic`` (k_d 1, MSB+aug experts, full dense, topk: the default Elastic-SD
    setting), ``self`` (k_d 1, full-precision experts: the SpecMoE-style self-draft) or
    ``separate`` (the shipped 1-layer dense draft).
    """
    m = load_measured()
    if kind == "separate":
        rows = _rows(m, "separate", policy="lru")
    elif kind in ("elastic", "self"):
        rows = _rows(m, "elastic", policy="lru", k_d=1, expert_bits="draft" if kind == "elastic" else "full",
                     dense_bits="full", expert_choice="topk")
    else:
        raise UserError(f"no measured acceptance for {kind!r}")
    return {r["batch"]: r["acceptance_rate"] for r in rows}


def interpolate(table, batch):
    """Linear interpolation of ``{batch: value}`` in the batch size (clamped at the ends)."""
    xs = sorted(table)
    return float(np.interp(batch, xs, [table[x] for x in xs]))
