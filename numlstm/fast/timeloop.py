"""Numba loops over time: the recurrent product and the fused gate kernel of every step.

``rnn.py``, ``lstm.py`` and ``gru.py`` call one function below per layer and direction instead
of a Python loop of T steps (with ``lengths=``, the backward loop once per group of equal
lengths, on slices of the arrays: docs/rnn.md section 5.2). That matters twice:

- The 20-row recurrent product ``h_{t-1} Wh`` (L2, G2) is the GEMM shape where OpenBLAS is
  slowest (a (B, H) x (H, 4H) product with B = 20; docs/performance.md). ``matmul_nt`` below
  computes it as register-blocked dot products, 5 rows x 2 columns at a time, which on this
  machine ran faster than OpenBLAS on one core for B = 10 and 20.
- The whole loop runs without Python and without the GIL (``nogil``), so two threads can run
  the two halves of a batch side by side (``parallel.py``) without waiting for each other.

The layers use these loops when BLAS is single-threaded (``use_time_loop``), which is the case
inside every block of a ``DataParallel``.

Big products (the input projection of all T steps, the weight gradients, the softmax) still
go to BLAS through NumPy, where BLAS is at its best.

Equation numbers refer to docs/rnn.md (R2, dR2), docs/lstm.md (L2, dL2) and docs/gru.md (G2,
dG2, G2c, G4c).
"""

from __future__ import annotations

from numba import njit

from ..kernels import (
    gru_cell_backward,
    gru_cell_forward,
    gru_cho_cell_backward,
    gru_cho_cell_forward,
    gru_rz_backward,
    gru_rz_forward,
    lstm_cell_backward,
    lstm_cell_forward,
    rnn_cell_backward,
    rnn_cell_forward,
)
from .team import blas_thread_count

_JIT = {"cache": True, "error_model": "numpy", "nogil": True}
# The dot products may be reordered (summed in 8 lanes at once) so that they vectorise.
_REDUCE = {"reassoc", "nsz", "arcp", "contract"}

# Smallest batch for which the loops below are used; with fewer rows the register blocks
# of matmul_nt do not fill, and the layers keep their Python loop with GEMV/GEMM calls.
MIN_ROWS = 5


def use_time_loop(B: int, H: int) -> bool:
    """Whether a layer with B rows and H hidden units runs its T steps with the Numba loops below.

    Yes when B >= MIN_ROWS, H >= 2 (``matmul_nt``'s 5 x 2 blocks must fit: its products have
    B rows and H or more columns) and NumPy's BLAS runs on one thread: inside a
    ``DataParallel`` block, or with OPENBLAS_NUM_THREADS=1. With more BLAS threads the
    per-step product stays with BLAS, whose multithreaded GEMM beats one core's ``matmul_nt``
    at the Medium and Large sizes (docs/performance.md).
    """
    return B >= MIN_ROWS and H >= 2 and blas_thread_count() == 1


@njit(**_JIT, fastmath=_REDUCE)
def matmul_nt(A, BT, out):
    """out = A @ BT.T: A (M, K), BT (N, K), out (M, N), for M >= 5 and N >= 2.

    Both operands are read along K, contiguous in memory, so every output is a dot product
    that vectorises. Blocks of 5 rows x 2 columns keep 10 running sums in registers while
    each loaded element is used 5 or 2 times. The last block of rows (and the last pair of
    columns) is shifted back to end at M (N) when 5 (2) does not divide it: a few outputs are
    computed twice, with the same result, instead of needing remainder loops.

    The column pairs are the outer loop, so each pair of BT rows is read once from memory
    and all of A stays in the first-level cache for K up to a few hundred.
    """
    M, K = A.shape
    N = BT.shape[0]
    if M < 5 or N < 2:  # the shifted last block would index outside A, BT and out
        raise ValueError("matmul_nt needs at least 5 rows (M) and 2 columns (N)")
    zero = A.dtype.type(0)
    for jp in range((N + 1) // 2):
        j = min(2 * jp, N - 2)
        b0, b1 = BT[j], BT[j + 1]
        for ib in range((M + 4) // 5):
            i = min(5 * ib, M - 5)
            a0, a1, a2, a3, a4 = A[i], A[i + 1], A[i + 2], A[i + 3], A[i + 4]
            s00 = s01 = s10 = s11 = s20 = s21 = s30 = s31 = s40 = s41 = zero
            for k in range(K):
                y0 = b0[k]
                y1 = b1[k]
                x = a0[k]
                s00 += x * y0
                s01 += x * y1
                x = a1[k]
                s10 += x * y0
                s11 += x * y1
                x = a2[k]
                s20 += x * y0
                s21 += x * y1
                x = a3[k]
                s30 += x * y0
                s31 += x * y1
                x = a4[k]
                s40 += x * y0
                s41 += x * y1
            out[i, j] = s00
            out[i, j + 1] = s01
            out[i + 1, j] = s10
            out[i + 1, j + 1] = s11
            out[i + 2, j] = s20
            out[i + 2, j + 1] = s21
            out[i + 3, j] = s30
            out[i + 3, j + 1] = s31
            out[i + 4, j] = s40
            out[i + 4, j + 1] = s41


# --------------------------------------------------------------------------------------------
# Plain RNN
# --------------------------------------------------------------------------------------------


@njit(**_JIT)
def rnn_forward_loop(ax, b, WhT, h, ah):
    """T steps of R2. ax (T, B, H) = x Wx (R1); b (H,); WhT (H, H) = Wh transposed; h (T+1,
    B, H) with h[0] set; output h[1:]; ah (B, H) scratch."""
    for t in range(ax.shape[0]):
        matmul_nt(h[t], WhT, ah)  # (R2) h_{t-1} Wh
        rnn_cell_forward(ax[t], ah, b, h[t + 1])  # (R2) tanh


@njit(**_JIT)
def rnn_backward_loop(dhs, dh, hs, Wh, da, need_dh0):
    """dR2 for t = T-1 .. 0. dhs, hs (T, B, H): gradients on and values of h_1..h_T; dh (B, H)
    in: from a later segment, out: dh_0 (if need_dh0). Output da (T, B, H)."""
    for t in range(dhs.shape[0] - 1, -1, -1):
        rnn_cell_backward(dhs[t], dh, hs[t], da[t])  # (dR2) da_t
        if t > 0 or need_dh0:
            matmul_nt(da[t], Wh, dh)  # (dR2) dh_{t-1} = da_t Wh^T


# --------------------------------------------------------------------------------------------
# LSTM
# --------------------------------------------------------------------------------------------


@njit(**_JIT)
def lstm_forward_loop(ax, b, WhT, forget_bias, h, c, gates, tc, ah):
    """T steps of L2-L6. ax (T, B, 4H) = x Wx (L1); b (4H,); WhT (4H, H) = Wh transposed;
    h, c (T+1, B, H) with h[0], c[0] set; outputs gates (T, B, 4H), tc (T, B, H), h[1:],
    c[1:]; ah (B, 4H) scratch."""
    for t in range(ax.shape[0]):
        matmul_nt(h[t], WhT, ah)  # (L2) h_{t-1} Wh
        lstm_cell_forward(ax[t], ah, b, c[t], forget_bias, gates[t], c[t + 1], tc[t], h[t + 1])


@njit(**_JIT)
def lstm_backward_loop(dhs, dh, dc, gates, c, tc, Wh, da, need_dh0):
    """dL6-dL2 for t = T-1 .. 0. dhs (T, B, H); dh, dc (B, H): in, the gradient from a later
    segment; out, dh_0 (if need_dh0) and dc_0. Wh (H, 4H); output da (T, B, 4H)."""
    for t in range(dhs.shape[0] - 1, -1, -1):
        lstm_cell_backward(dhs[t], dh, dc, gates[t], c[t], tc[t], da[t])  # dL6-dL3
        if t > 0 or need_dh0:
            matmul_nt(da[t], Wh, dh)  # (dL2) dh_{t-1} = da_t Wh^T


# --------------------------------------------------------------------------------------------
# GRU
# --------------------------------------------------------------------------------------------


@njit(**_JIT)
def gru_forward_loop(ax, bx, WhT, bh, h, gates, ahn, ahw):
    """T steps of the reset-after GRU (G2-G5). ax (T, B, 3H); WhT (3H, H); h (T+1, B, H)
    with h[0] set; outputs gates (T, B, 3H), ahn (T, B, H), h[1:]; ahw (B, 3H) scratch."""
    for t in range(ax.shape[0]):
        matmul_nt(h[t], WhT, ahw)  # (G2) h_{t-1} Wh
        gru_cell_forward(ax[t], bx, ahw, bh, h[t], gates[t], ahn[t], h[t + 1])  # G3-G5


@njit(**_JIT)
def gru_backward_loop(dhs, dh, gates, ahn, h, Wh, dax, dah, dh_prev, need_dh0):
    """dG5-dG2 of the reset-after GRU for t = T-1 .. 0; dh (B, H) in: from a later segment,
    out: dh_0 (if need_dh0). Outputs dax, dah (T, B, 3H); dh_prev (B, H) scratch."""
    for t in range(dhs.shape[0] - 1, -1, -1):
        gru_cell_backward(dhs[t], dh, gates[t], ahn[t], h[t], dax[t], dah[t], dh_prev)
        if t > 0 or need_dh0:
            matmul_nt(dah[t], Wh, dh)  # (dG2) dh_{t-1} = dah_t Wh^T ...
            dh += dh_prev  # ... + dh * z (dG5)


@njit(**_JIT)
def gru_cho_forward_loop(ax, bx, Wh_rzT, Wh_nT, bh, h, gates, rh, ahw_rz, ahw_n):
    """T steps of the reset-before GRU (G2c, G3, G4c, G5). Wh_rzT (2H, H), Wh_nT (H, H);
    outputs gates (T, B, 3H), rh (T, B, H) = r * h_{t-1}, h[1:]; ahw_rz, ahw_n scratch."""
    for t in range(ax.shape[0]):
        matmul_nt(h[t], Wh_rzT, ahw_rz)  # (G2c) h_{t-1} Wh_rz
        gru_rz_forward(ax[t], bx, ahw_rz, bh, h[t], gates[t], rh[t])  # G3, r * h
        matmul_nt(rh[t], Wh_nT, ahw_n)  # (G4c) (r * h_{t-1}) Wh_n
        gru_cho_cell_forward(ax[t], bx, ahw_n, bh, h[t], gates[t], h[t + 1])  # G4c, G5


@njit(**_JIT)
def gru_cho_backward_loop(dhs, dh, gates, h, Wh_rz, Wh_n, da, drh, dh_prev, need_dh0):
    """Backward of the reset-before GRU for t = T-1 .. 0. Wh_rz (H, 2H), Wh_n (H, H)
    contiguous copies of Wh's blocks; output da (T, B, 3H); drh, dh_prev (B, H) scratch."""
    H = dh.shape[1]
    for t in range(dhs.shape[0] - 1, -1, -1):
        gru_cho_cell_backward(dhs[t], dh, gates[t], h[t], da[t], dh_prev)
        matmul_nt(da[t, :, 2 * H :], Wh_n, drh)  # (dG4c) d(r*h) = da_n Wh_n^T
        gru_rz_backward(drh, gates[t], h[t], da[t], dh_prev)  # dG4c, dG3
        if t > 0 or need_dh0:
            matmul_nt(da[t, :, : 2 * H], Wh_rz, dh)  # (dG2c) da_rz Wh_rz^T ...
            dh += dh_prev  # ... + dh * z + d(r*h) * r
