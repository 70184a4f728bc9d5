"""The training corpus: the running interpreter's own standard-library sources, as bytes.

Every machine with Python has it, so the language model trains and is evaluated without a
download. The corpus is the top-level ``lib/pythonX.Y/*.py`` files (no sub-packages) of the
running interpreter, split **by file** into training and held-out sets with a fixed seed: a
held-out file is never seen in training. The split is a pure function of the sorted file names
and the seed, so the trainer and the numpy evaluation agree; the shipped model records its
held-out file names and the Python version it was trained on.

Bytes are the vocabulary (256 symbols); files are joined by a NUL byte, which never occurs in
the sources, so a model sees file boundaries.
"""

import random
import sysconfig
from pathlib import Path

import numpy as np

from ...errors import UserError

SEPARATOR = b"\0"
HELDOUT_FRACTION = 0.1
DEFAULT_SEED = 0


def stdlib_dir():
    """The folder of the running interpreter's standard library (``lib/pythonX.Y``)."""
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files(root=None):
    """Sorted names of the top-level ``*.py`` files of the standard library."""
    root = Path(root) if root is not None else stdlib_dir()
    names = sorted(p.name for p in root.glob("*.py") if p.is_file())
    if not names:
        raise UserError(f"no *.py files in {root}: cannot build the corpus")
    return names


def split_files(names, seed=DEFAULT_SEED, heldout_fraction=HELDOUT_FRACTION):
    """``(train, heldout)`` lists of file names: a seeded shuffle, the first fraction held out."""
    if not 0.0 < heldout_fraction < 1.0:
        raise UserError(f"held-out fraction must lie in (0, 1), got {heldout_fraction}")
    order = sorted(names)
    random.Random(seed).shuffle(order)
    n_held = max(1, round(heldout_fraction * len(order)))
    return sorted(order[n_held:]), sorted(order[:n_held])


def load_bytes(names, root=None):
    """The files joined by :data:`SEPARATOR`, as a uint8 array (missing files are an error)."""
    root = Path(root) if root is not None else stdlib_dir()
    parts = []
    for name in names:
        path = root / name
        if not path.is_file():
            raise UserError(f"corpus file {path} is missing (this Python's standard library differs "
                            f"from the one the model was trained on)")
        parts.append(path.read_bytes())
    return np.frombuffer(SEPARATOR.join(parts), dtype=np.uint8)


def heldout_windows(data, n_windows, length):
    """``n_windows`` evenly spaced, non-overlapping windows of ``length`` bytes, shape (n, length).

    Deterministic (no randomness): the trainer and the numpy evaluation score the same bytes.
    """
    if n_windows < 1 or length < 2:
        raise UserError(f"need at least one window of at least 2 bytes, got {n_windows} x {length}")
    if len(data) < n_windows * length:
        raise UserError(f"held-out text has {len(data)} bytes, fewer than {n_windows} x {length}")
    starts = np.linspace(0, len(data) - length, n_windows).astype(np.int64)
    return np.stack([data[s:s + length] for s in starts])


def heldout_tiling(data, length):
    """Consecutive windows of ``length`` bytes overlapping by one byte, shape (n, length).

    Window ``i`` starts at ``i * (length - 1)``, so its ``length - 1`` predictions (positions
    1 .. length-1) are each byte of ``data`` after the first exactly once, up to the last whole
    window: the whole held-out text, less fewer than ``length - 1`` bytes at its end. Each window
    is scored from an empty context, as in :func:`heldout_windows`.
    """
    if length < 2:
        raise UserError(f"a window needs at least 2 bytes, got {length}")
    n = (len(data) - 1) // (length - 1)
    if n < 1:
        raise UserError(f"held-out text has {len(data)} bytes, fewer than one window of {length}")
    starts = np.arange(n, dtype=np.int64) * (length - 1)
    return np.stack([data[s:s + length] for s in starts])


def unigram_bits_per_byte(train, heldout):
    """Held-out cross-entropy (bits/byte) of the add-one-smoothed byte unigram of ``train``."""
    counts = np.bincount(train, minlength=256).astype(np.float64) + 1.0
    logp = np.log2(counts / counts.sum())
    return float(-logp[heldout].mean())
