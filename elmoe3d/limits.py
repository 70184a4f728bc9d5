"""Size limits derived from the machine: refuse work that would exhaust memory or disk, before it starts.

A command estimates the bytes a request needs (its own formula, stated where it is computed)
and calls :func:`check_memory`, which compares it with the memory this machine has available
now (``MemAvailable`` of ``/proc/meminfo``, else the physical memory), or :func:`check_disk`
for the files it writes (the space free where they go). The refusal names the request, the
estimate and the limit, so the user knows what to shrink.
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


def free_disk(path):
    """Bytes free to an ordinary user on the file system that holds ``path`` (or, if it does
    not exist yet, its nearest existing parent); None where that cannot be read or the file
    system counts no blocks (sysfs, procfs: writing there fails for other reasons)."""
    p = os.path.abspath(os.fspath(path))
    while not os.path.exists(p) and os.path.dirname(p) != p:
        p = os.path.dirname(p)
    try:
        st = os.statvfs(p)
    except (OSError, AttributeError):
        return None
    return st.f_bavail * st.f_frsize if st.f_blocks > 0 else None


def check_disk(what, need, path, available=None):
    """Refuse ``what`` when the files it writes under ``path`` need more than the disk space free
    there (``available`` defaults to :func:`free_disk`; tests pass their own)."""
    have = free_disk(path) if available is None else available
    if have is not None and need > have:
        raise UserError(f"{what} needs about {fmt_bytes(need)} of disk in {path} (images and scratch files), "
                        f"more than the {fmt_bytes(have)} free there; make it smaller or write elsewhere (-o)")
    return need


# `compile` keeps a layer's weights and images in files and holds only blocks of them
# (elmoe3d.spec.image.BLOCK_WEIGHTS weights, or one row band of a plane, at a time; docs/scale.md,
# "Compiler and ISS memory"), so its memory does not grow with the number of weights: it is the
# interpreter with numpy and the command line's imports (about 70 MiB), the blocks' temporaries
# (a float64 block and its quantization or GEMV copies, a few times 8 MiB) and, per expert, the
# calibration's arrays of 64 tokens x d_ffn. Measured peak resident memory (`/usr/bin/time -v
# elmoe3d compile --config mixtral --random ...`, figures in docs/scale.md): 76 MiB for
# 1024,8,2,4096,0 (100 M weights). The estimate is a fixed part with room to spare plus twelve
# float64 arrays of 64 x max(d_model, d_ffn), so it errs high.
COMPILE_FIXED_BYTES = 192 * 2**20
COMPILE_BYTES_PER_FFN = 64 * 8 * 12


def compile_random_bytes(d_model, n_experts, d_ffn, n_shared):
    """Bytes of memory ``compile --random D,E,K,F,S`` needs (an estimate that errs high): bounded,
    whatever the number of experts; only the calibration's per-expert arrays grow with
    ``max(d_model, d_ffn)``."""
    return COMPILE_FIXED_BYTES + COMPILE_BYTES_PER_FFN * max(d_model, d_ffn)


def compile_disk_bytes(offchip_bytes, hb_bytes, weights, fill_bytes):
    """Bytes of disk ``compile`` writes: the off-chip and HB images it outputs (the HB image is
    all zero, a sparse file where the file system allows, but counted whole), its scratch copy
    of a random layer's INT8 weights (``weights`` bytes; 0 for the shipped model) and the ISS's
    scratch HB (the ``fill_bytes`` its pass can fill). Deleted scratch included, as the peak."""
    return offchip_bytes + hb_bytes + weights + fill_bytes


# A clock period is given in ns; synthesis hands ABC whole picoseconds and OpenSTA reports to
# the picosecond, so below 1 ps nothing is measured; above 1 ms (1 kHz) is no clock target.
CLOCK_NS_MIN, CLOCK_NS_MAX = 0.001, 1e6
