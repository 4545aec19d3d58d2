"""Matrix products into preallocated arrays, with the one-row case sent to GEMV."""

from __future__ import annotations

import numpy as np


def matmul_into(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> np.ndarray:
    """out = a @ b for a (M, K), b (K, N) and a preallocated out (M, N); returns out.

    With M = 1 (batch-1 evaluation, generation) the product goes through GEMV: OpenBLAS's
    multithreaded GEMM with a single row measured 10-50x slower than GEMV on 2 cores.
    """
    if a.shape[0] == 1:
        np.dot(a[0], b, out=out[0])
    else:
        np.matmul(a, b, out=out)
    return out
