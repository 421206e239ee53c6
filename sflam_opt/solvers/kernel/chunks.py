"""Cache-sized passes over the devices that sum exactly as numpy does.

At N ~ 1e6 every (M, N) temporary is 8 MB per row, and a sequence of whole-array numpy
operations streams each through memory: the round-time search then costs memory traffic, not
arithmetic. :class:`Chunks` cuts the device axis into blocks small enough to stay in cache, so a
dozen element-wise steps run on one block before the next is read. Sums over the devices are
combined block by block along numpy's own pairwise-summation tree (``np.add.reduce`` splits a
contiguous run of ``n > 128`` values at ``n2 = n // 2 - (n // 2) % 8`` and adds the halves),
with each block a node of that tree: the result is bit-identical to ``a.sum(axis=-1)``.
"""

from __future__ import annotations

from collections.abc import Sequence

from sflam_opt.numeric import FloatArray

__all__ = ["CHUNK", "Chunks"]

_PAIRWISE_BLOCK = 128  # numpy's PW_BLOCKSIZE

#: Largest block, devices: 32 Ki doubles (256 KiB) per array keeps a pass's arrays in L2/L3.
CHUNK = 32_768


class Chunks:
    """The blocks of ``range(n)`` that are nodes of numpy's pairwise-summation tree.

    Parameters
    ----------
    n : int
        Number of devices.
    leaf : int
        Largest block (the tree is split until every node is at most this long, or 128).

    Attributes
    ----------
    slices : list of slice
        The blocks, in order.
    """

    def __init__(self, n: int, leaf: int = CHUNK) -> None:
        self.slices: list[slice] = []
        self._tree = self._split(0, n, leaf)

    def _split(self, lo: int, n: int, leaf: int) -> int | tuple:
        if n <= max(leaf, _PAIRWISE_BLOCK):  # numpy sums up to 128 values without splitting
            self.slices.append(slice(lo, lo + n))
            return len(self.slices) - 1
        n2 = n // 2
        n2 -= n2 % 8
        return (self._split(lo, n2, leaf), self._split(lo + n2, n - n2, leaf))

    def total(self, parts: Sequence[FloatArray]) -> FloatArray:
        """Combine per-block sums (one per slice, in order) as numpy's sum would, shape (M,)."""

        def add(node: int | tuple) -> FloatArray:
            if isinstance(node, int):
                return parts[node]
            return add(node[0]) + add(node[1])

        return add(self._tree)
