"""Run numpy's BLAS single-threaded while the golden language model decodes.

The model's matrices are small (a decode pass multiplies at most ~100 tokens by 128 x 256
weights). OpenBLAS still splits such products over its threads, and on a machine whose cores are
busy (parallel pytest workers, other jobs) its spinning threads slow decoding about tenfold
(measured: 25 s vs 2.5 s for one 16-sequence Elastic-SD run on 2 shared cores).
``OPENBLAS_NUM_THREADS=1`` fixes it but must be set before numpy loads; :func:`single_threaded`
sets the thread count at run time through the OpenBLAS library numpy loaded, and does nothing
where that library is not found (another BLAS, another build).
"""

import contextlib
import ctypes
from pathlib import Path

import numpy as np

_NAMES = [("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
          ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
          ("openblas_get_num_threads", "openblas_set_num_threads")]


def _openblas():
    """``(get, set)`` functions of numpy's OpenBLAS, or None."""
    folder = Path(np.__file__).resolve().parent.parent / "numpy.libs"
    for lib in sorted(folder.glob("*openblas*")):
        try:
            handle = ctypes.CDLL(str(lib))
        except OSError:
            continue
        for get, set_ in _NAMES:
            if hasattr(handle, get) and hasattr(handle, set_):
                getattr(handle, set_).argtypes = [ctypes.c_int]
                return getattr(handle, get), getattr(handle, set_)
    return None


_FUNCS = _openblas()


@contextlib.contextmanager
def single_threaded():
    """Within the block numpy's OpenBLAS uses one thread (restored afterwards)."""
    if _FUNCS is None:
        yield
        return
    get, set_ = _FUNCS
    before = get()
    set_(1)
    try:
        yield
    finally:
        set_(before)
