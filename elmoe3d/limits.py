"""Size limits derived from the machine: refuse work that would exhaust memory, before it starts.

A command estimates the bytes a request needs (its own formula, stated where it is computed)
and calls :func:`check_memory`, which compares it with the memory this machine has available
now (``MemAvailable`` of ``/proc/meminfo``, else the physical memory). The refusal names the
request, the estimate and the limit, so the user knows what to shrink.
"""

import os

from .errors import UserError

GIB = 2**30


def available_memory():
    """Bytes of memory available to a new allocation now (Linux ``MemAvailable``), or the
    physical memory where that cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (OSError, ValueError, AttributeError):
        return 8 * GIB


def fmt_bytes(n):
    for unit, size in (("TiB", 2**40), ("GiB", GIB), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} bytes"


def check_memory(what, need, available=None):
    """Refuse ``what`` (a phrase naming the request) when it needs more than the available memory.

    ``available`` defaults to :func:`available_memory`; tests pass their own.
    """
    have = available_memory() if available is None else available
    if need > have:
        raise UserError(f"{what} needs about {fmt_bytes(need)} of memory, more than the "
                        f"{fmt_bytes(have)} available on this machine; make it smaller")
    return need


# `compile --random D,E,K,F,S` holds a whole random layer several times over while it builds
# it: float64 weights (8 bytes each) while they are quantized, the int8 copy, the folded integer
# layer, and the off-chip image of its MSB and LSB planes. Measured peak resident memory
# (`/usr/bin/time -f %M elmoe3d compile --config mixtral --random ...`): 1024,8,2,2048,0 (50 M
# weights) 511 MiB, 2048,8,2,2048,0 (101 M) 977 MiB, 256,8,2,512,0 (3 M) 76 MiB: about 9.5 bytes
# per weight of the experts (routed + shared, 3 matrices of d_model x d_ffn each) and 50 MiB
# besides. The estimate adds a quarter for safety, so it errs high.
COMPILE_BYTES_PER_WEIGHT = 12
COMPILE_FIXED_BYTES = 128 * 2**20


def compile_random_bytes(d_model, n_experts, d_ffn, n_shared):
    """Bytes of memory ``compile --random D,E,K,F,S`` needs (an estimate that errs high).

    Parameters are the layer's sizes (``n_shared`` shared experts beside ``n_experts`` routed
    ones). The compiler builds the layer in memory at once today; a compiler that streams it
    (bounded memory) relaxes this function, and every caller follows.
    """
    weights = (n_experts + n_shared) * 3 * d_model * d_ffn
    return COMPILE_FIXED_BYTES + COMPILE_BYTES_PER_WEIGHT * weights


# A clock period is given in ns; synthesis hands ABC whole picoseconds and OpenSTA reports to
# the picosecond, so below 1 ps nothing is measured; above 1 ms (1 kHz) is no clock target.
CLOCK_NS_MIN, CLOCK_NS_MAX = 0.001, 1e6
