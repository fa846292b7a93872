"""A seeded permutation of ``range(n)`` evaluated lazily at the positions a rank draws.

``LazyPermutation(n, key)[positions]`` is a bijection of ``[0, n)`` (a keyed Feistel network on the
next power of four, cycle-walked back into range), so rank r of W computes the items at positions
r, r + W, ... of one shared epoch order in O(n / W) time and memory, never materialising the n-item
permutation that every rank would otherwise build (16 M items: ~3 s and 128 MB per rank per
epoch on this machine). The shards of the W ranks then partition the items exactly, as slicing one
permutation does.
"""

from __future__ import annotations

import numpy as np

_ROUNDS = 6
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _mix(x: np.ndarray, key: np.uint64) -> np.ndarray:
    """splitmix64's finaliser of ``x ^ key`` (uint64, wrapping)."""
    z = x ^ key
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


class LazyPermutation:
    """A seeded bijection of ``[0, n)``, evaluated only at the positions asked for."""

    def __init__(self, n: int, seed_sequence: np.random.SeedSequence | list[int] | int):
        """``n`` items; round keys drawn from ``seed_sequence`` (e.g. ``[seed, epoch]``)."""
        if n < 1:
            raise ValueError(f"a permutation needs n >= 1, got {n}")
        self.n = int(n)
        self.half_bits = max(1, (int(self.n - 1).bit_length() + 1) // 2)
        self.mask = np.uint64((1 << self.half_bits) - 1)
        self.keys = np.random.default_rng(seed_sequence).integers(0, 2**63, size=_ROUNDS, dtype=np.uint64)

    def _feistel(self, x: np.ndarray) -> np.ndarray:
        bits = np.uint64(self.half_bits)
        left, right = x >> bits, x & self.mask
        for key in self.keys:
            left, right = right, left ^ (_mix(right, key) & self.mask)
        return (left << bits) | right

    def __getitem__(self, positions: np.ndarray) -> np.ndarray:
        """The items at ``positions`` (int64 in ``[0, n)``) of the permutation."""
        x = np.asarray(positions, dtype=np.uint64)
        if x.size and int(x.max()) >= self.n:
            raise IndexError(f"positions must be < {self.n}")
        out = self._feistel(x)
        outside = out >= self.n
        while outside.any():  # cycle-walk: a bijection on [0, 4^k) restricted to [0, n)
            out[outside] = self._feistel(out[outside])
            outside = out >= self.n
        return out.astype(np.int64)
