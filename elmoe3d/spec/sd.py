"""Elastic-SD settings: the allowed ranges every level (golden decoder, system model) checks.

The golden decoder (``sim/sd/elastic_sd.py``) runs a draft of ``gamma`` tokens per round, so it
needs ``gamma >= 1``; the system model (``perf/decode.py``) also evaluates ``gamma = 0``, plain
decoding on a speculative system (its elastic policy may switch speculation off). Both take the
upper bound, the draft-expert count and the bit modes from here.
"""

import numbers

from ..errors import UserError
from .numerics import BIT_MODES

GAMMA_MAX = 16             # longest draft, tokens per round
DENSE_BITS = BIT_MODES     # the draft's attention and LM head: full bits or MSB+aug


def check_gamma(value, name="gamma", allow_zero=False):
    """An integer draft length in ``[1 | 0, GAMMA_MAX]`` (0 only where plain decoding is meant)."""
    lo = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not lo <= value <= GAMMA_MAX:
        raise UserError(f"{name} must be an integer in {lo} .. {GAMMA_MAX}, got {value!r}")
    return int(value)


def check_k_d(value):
    """Draft experts per token: ``None`` (the method's default) or an integer >= 1 (callers that
    know the model's top-k also check ``k_d <= top_k``)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1):
        raise UserError(f"k_d must be a positive integer, got {value!r}")
    return value


def check_dense_bits(value):
    if value not in DENSE_BITS:
        raise UserError(f"dense_bits must be one of {', '.join(DENSE_BITS)}, got {value!r}")
    return value
