"""Key/value cache of a batch of sequences that grow at different rates.

Per layer two arrays ``(B, H, capacity, head_dim)`` (keys and values, float64) and one length per
sequence. A forward pass appends each sequence's new positions at its own length; speculative
decoding rolls a sequence back by :meth:`KVCache.truncate` after a rejection. Capacity grows by
doubling, up to the model's ``max_seq``.
"""

import numpy as np

from ...errors import UserError


class KVCache:
    """Keys and values of ``batch`` sequences for ``n_layers`` layers.

    Parameters
    ----------
    n_layers, batch, n_heads, head_dim : int, >= 1
    max_seq : int, >= 1    the longest sequence any entry may reach (positions 0 .. max_seq-1)
    """

    def __init__(self, n_layers, batch, n_heads, head_dim, max_seq, capacity=64):
        if batch < 1:
            raise UserError(f"a batch needs at least one sequence, got {batch}")
        self.n_layers, self.batch, self.max_seq = n_layers, batch, max_seq
        self._shape = (batch, n_heads, min(capacity, max_seq), head_dim)
        self.k = [np.zeros(self._shape) for _ in range(n_layers)]
        self.v = [np.zeros(self._shape) for _ in range(n_layers)]
        self.lengths = np.zeros(batch, dtype=np.int64)

    @property
    def capacity(self):
        return self.k[0].shape[2]

    def reserve(self, new_lengths):
        """Make room for sequences of ``new_lengths`` (refusing anything past ``max_seq``)."""
        need = int(np.max(new_lengths))
        if need > self.max_seq:
            raise UserError(f"sequence of {need} positions exceeds the model's max_seq = {self.max_seq}")
        if need > self.capacity:
            cap = min(self.max_seq, max(need, 2 * self.capacity))
            for store in (self.k, self.v):
                for i, arr in enumerate(store):
                    grown = np.zeros(arr.shape[:2] + (cap,) + arr.shape[3:])
                    grown[:, :, :arr.shape[2]] = arr
                    store[i] = grown

    def write(self, layer, b, k, v):
        """Store keys/values ``(H, n, hd)`` of sequence ``b`` at positions ``lengths[b] ..``;
        returns all keys and values of the sequence so far, ``(H, lengths[b] + n, hd)`` each."""
        start, n = int(self.lengths[b]), k.shape[1]
        self.k[layer][b, :, start:start + n] = k
        self.v[layer][b, :, start:start + n] = v
        return self.k[layer][b, :, :start + n], self.v[layer][b, :, :start + n]

    def advance(self, counts):
        """Commit ``counts[b]`` new positions per sequence (after every layer has written)."""
        self.lengths = self.lengths + np.asarray(counts, dtype=np.int64)

    def truncate(self, b, length):
        """Roll sequence ``b`` back to its first ``length`` positions."""
        if not 0 <= length <= self.lengths[b]:
            raise UserError(f"cannot truncate sequence {b} of length {self.lengths[b]} to {length}")
        self.lengths[b] = length
