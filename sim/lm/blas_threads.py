"""Run numpy's BLAS single-threaded while the golden language model decodes.

The model's matrices are small (a decode pass multiplies at most ~100 tokens by 128 x 256
weights). OpenBLAS still splits such products over its threads, and on a machine whose cores are
busy (parallel pytest workers, other jobs) its spinning threads slow decoding about tenfold
(measured: 25 s vs 2.5 s for one 16-sequence Elastic-SD run on 2 shared cores).
``OPENBLAS_NUM_THREADS=1`` would fix it but must be set before numpy loads; threadpoolctl sets
the thread count at run time instead, for whichever BLAS numpy uses.
"""

from threadpoolctl import threadpool_limits


def single_threaded():
    """A context manager: BLAS on one thread inside it, as before outside it."""
    return threadpool_limits(limits=1, user_api="blas")
