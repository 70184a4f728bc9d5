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
