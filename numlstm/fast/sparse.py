"""Row-sparse gradients: what the embedding's gradient really is.

A batch of B x T words touches at most B * T rows of the (V, E) embedding matrix (400 of
10,000 for PTB small), and every other row of its gradient is exactly zero (dE1 in
``docs/layers.md``). Materialising the dense (V, E) gradient means zeroing it, squaring all of it
for the global norm and sweeping all of it in the update: three passes over 8 MB of which 96 %
are zeros. ``IndexedRows`` keeps only the touched rows, like TensorFlow's ``IndexedSlices``;
``global_norm``, ``clip_by_global_norm`` and ``SGD.step`` work on it directly, and ``Adam``
turns it back into a dense array (``to_dense``) because its moment estimates decay on every row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class IndexedRows:
    """A (V, E) gradient that is zero outside ``rows``.

    rows   (U,)   distinct row indices, in order of first appearance
    values (U, E) the gradient of those rows (repeated ids already summed)
    shape  (V, E) the shape of the dense gradient it stands for
    """

    rows: np.ndarray
    values: np.ndarray
    shape: tuple[int, int]

    @property
    def dtype(self) -> np.dtype:
        return self.values.dtype

    def to_dense(self) -> np.ndarray:
        """The (V, E) array this gradient stands for."""
        dense = np.zeros(self.shape, self.values.dtype)
        dense[self.rows] = self.values  # rows are distinct, so plain assignment is exact
        return dense

    def __imul__(self, factor) -> IndexedRows:
        """Scale in place (as ``clip_by_global_norm`` does to dense gradients)."""
        self.values *= factor
        return self
