"""Matrices and memory images kept in files, read and written a block at a time.

One Mixtral-8x7B layer is 1.4 G INT8 weights and its off-chip image 1.4 GB; ``elmoe3d compile``
keeps both in files and holds in memory only the block it works on (``docs/scale.md``, "Compiler
and ISS memory"). Files are read into fresh buffers (``readinto``) and written with ``seek`` +
``write``, never memory-mapped: the pages of a mapped file count as the process's resident memory
once touched, so reading a whole mapped image would grow it by the image's size.

- :class:`StoredMatrix`: a read-only 2-D array in a file; ``m[a:b]`` reads rows ``a..b-1``.
- :class:`MatrixStore`: appends matrices to one file, a block of rows at a time.
- :class:`FileImage`: a memory image (flat bytes) in a file, indexed like a uint8 array, except
  that a slice is a copy (write back with ``image[a:b] = data``); ``private`` keeps writes in
  memory so the file is never changed.

Everything that takes an image (``Machine``, ``write_input``, ``read_output``) takes either a
numpy uint8 array or a :class:`FileImage`; everything that takes a weight matrix of an integer
layer (:func:`~elmoe3d.sim.golden.int_moe.projection`, the calibration) a numpy array or a
:class:`StoredMatrix`.
"""

import os

import numpy as np

from ...errors import UserError


def _slice(key, size):
    if not isinstance(key, slice) or key.step not in (None, 1):
        raise TypeError("a stored image or matrix is indexed with a contiguous slice")
    start, stop, _ = key.indices(size)
    return start, max(start, stop)


def _read(path, offset, nbytes):
    buf = np.empty(nbytes, dtype=np.uint8)
    if nbytes:
        with open(path, "rb") as f:
            f.seek(offset)
            got = f.readinto(memoryview(buf))
        if got != nbytes:
            raise UserError(f"{path}: {nbytes} bytes at offset {offset} are past its end (truncated file?)")
    return buf


def _write(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(memoryview(np.ascontiguousarray(data)).cast("B"))


class StoredMatrix:
    """A read-only row-major 2-D array stored in a file from byte ``offset``.

    ``m[a:b]`` reads rows ``a..b-1`` (a new array); ``np.asarray(m)`` reads it all (only for
    matrices known to be small); ``shape``, ``dtype``, ``ndim``, ``len`` as an array's."""

    ndim = 2

    def __init__(self, path, offset, shape, dtype):
        self.path, self.offset = str(path), int(offset)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)

    @property
    def size(self):
        return self.shape[0] * self.shape[1]

    @property
    def nbytes(self):
        return self.size * self.dtype.itemsize

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, key):
        start, stop = _slice(key, self.shape[0])
        row = self.shape[1] * self.dtype.itemsize
        raw = _read(self.path, self.offset + start * row, (stop - start) * row)
        return raw.view(self.dtype).reshape(stop - start, self.shape[1])

    def __array__(self, dtype=None, copy=None):
        a = self[:]
        return a if dtype is None else a.astype(dtype)


class MatrixStore:
    """Appends matrices to the file ``path`` (created empty): :meth:`begin` one, :meth:`append`
    its row blocks in order, :meth:`end` it to get its :class:`StoredMatrix`."""

    def __init__(self, path):
        self.path = str(path)
        self._f = open(self.path, "wb")
        self._open = None

    def begin(self, shape, dtype):
        self._open = (self._f.tell(), tuple(shape), np.dtype(dtype))

    def append(self, rows):
        dtype = self._open[2]
        self._f.write(memoryview(np.ascontiguousarray(rows, dtype=dtype)).cast("B"))

    def end(self):
        offset, shape, dtype = self._open
        self._f.flush()
        if self._f.tell() - offset != shape[0] * shape[1] * dtype.itemsize:
            raise AssertionError(f"stored {self._f.tell() - offset} bytes for a {shape} {dtype} matrix")
        self._open = None
        return StoredMatrix(self.path, offset, shape, dtype)

    def close(self):
        self._f.close()


def create_image(path, nbytes):
    """Create (or truncate) the file ``path`` as an image of ``nbytes`` zero bytes (a sparse file
    where the file system allows: nothing is written)."""
    with open(path, "wb") as f:
        f.truncate(nbytes)
    return FileImage(path)


class FileImage:
    """A memory image of ``len(image)`` bytes kept in the file ``path``.

    ``image[a:b]`` reads bytes ``a..b-1`` into a new uint8 array (not a view of the image);
    ``image[a:b] = data`` writes them (uint8 values, or anything that broadcasts to them). With
    ``private``, writes are kept in memory, :data:`PAGE` bytes at a time as they are first written,
    and reads see them; the file is never changed (what the ISS needs to run on ``compile``'s
    images without writing its output block or cache fills into them)."""

    PAGE = 1 << 16

    def __init__(self, path, private=False):
        self.path = str(path)
        self.size = os.path.getsize(self.path)
        self.private = private
        self._pages = {}

    def __len__(self):
        return self.size

    def _page(self, p):
        if p not in self._pages:
            start = p * self.PAGE
            self._pages[p] = _read(self.path, start, min(self.PAGE, self.size - start))
        return self._pages[p]

    def __getitem__(self, key):
        start, stop = _slice(key, self.size)
        out = _read(self.path, start, stop - start)
        for p in range(start // self.PAGE, -(-stop // self.PAGE)) if self._pages else ():
            if p in self._pages:
                base = p * self.PAGE
                lo, hi = max(start, base), min(stop, base + len(self._pages[p]))
                out[lo - start:hi - start] = self._pages[p][lo - base:hi - base]
        return out

    def __setitem__(self, key, value):
        start, stop = _slice(key, self.size)
        data = np.broadcast_to(np.asarray(value).astype(np.uint8, copy=False).reshape(-1), (stop - start,))
        if not self.private:
            _write(self.path, start, data)
            return
        pos = start
        while pos < stop:
            p = pos // self.PAGE
            page, base = self._page(p), p * self.PAGE
            n = min(stop, base + len(page)) - pos
            page[pos - base:pos - base + n] = data[pos - start:pos - start + n]
            pos += n
