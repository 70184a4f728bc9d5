"""Normative numeric constants (bit slices, GEMV accumulator, integer MoE layer).

The formulas that use them live in the golden model (``sim/numerics/slices.py``, ``sim/numerics/gemv.py``,
``sim/golden/int_moe.py``); the RTL generators derive their widths from the same names. See
``docs/numerics.md`` for the rules these constants parameterise.
"""

import numpy as np

# -- bit slices (normative) ------------------------------------------------------------------
SLICE_BITS = 4                 # bits per slice
OPERAND_BITS = SLICE_BITS + 1  # the PE's signed weight operand: a slice plus the augmentation bit
DRAFT_SHIFT = 3                # draft weight q_d = m << 3

# -- GEMV -------------------------------------------------------------------------------------
ACT_MAX = 127                  # activations are symmetric INT8, [-127, 127]
ACC_BITS = 32                  # the golden model's accumulator width

# -- integer MoE layer ------------------------------------------------------------------------
MANT_BITS = 15              # fixed-point mantissas: 2**14 <= m < 2**15
EXP_FRAC = 6                # router logit gaps in log2 units, 6 fraction bits
POW2_ONE = 1 << 16          # POW2 table: 2**-f in 16 fraction bits
POW2 = np.array([round(POW2_ONE * 2.0 ** (-f / (1 << EXP_FRAC))) for f in range(1 << EXP_FRAC)], dtype=np.int64)
GATE_FRAC = 15              # gate weights w / 2**15
SILU_FRAC = 8               # SiLU table in units of S_g / 2**8
SILU_ENTRIES = 256          # indexed by g + 128
UP_BITS = 16                # up projection requantized to INT16
OUT_BITS = 32               # layer output INT32
OUT_HEADROOM_BITS = 24      # calibrated |output| maps to 2**24, leaving 7 bits of headroom
MAX_SHIFT = 62
XE_MAX = 48                 # token scales down to about 2**-34
BIT_MODES = ("full", "draft")
CHOICES = ("topk", "cached")
PROJECTIONS = ("gate", "up", "down")
