"""Plain (Elman) RNN layer: forward and backward over a whole sequence. Read it before lstm.py:
it has the same structure with one nonlinearity instead of four gates.

Equations R1-R2 and their backward dR2-dR1 are derived in ``docs/rnn.md``, with the reason
its gradients vanish (dR3) and the variable-length masking M1-M3 shared with the LSTM and GRU.
Layout is time-major: x (T, B, D), hs (T, B, H), h0 (B, H); Wx (D, H), Wh (H, H), b (H,).

Speed design, as in lstm.py: one GEMM for the input projection of all T steps (R1), one GEMM
per step for the recurrence followed by one Numba kernel for the tanh (R2, ``kernels.py``);
dWx, dWh and dx as single GEMMs over all steps. When BLAS runs on one thread the T steps run
in one Numba call instead (``fast/timeloop.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _checks, kernels, sequences
from .fast import timeloop
from .fast.blas import matmul_into
from .fast.workspace import FRESH, Workspace


@dataclass
class RNNCache:
    """What ``rnn_backward`` needs: x (T, B, D); Wx (D, H); Wh (H, H); h (T+1, B, H) with
    h[0] = h0 (zero past each sequence's end, M2); lengths (B,) or None (all T)."""

    x: np.ndarray
    Wx: np.ndarray
    Wh: np.ndarray
    h: np.ndarray
    lengths: np.ndarray | None = None


def _check_rnn(x, h0, Wx, Wh, b):
    x = _checks.float_array("x", x, 3)
    dt = x.dtype
    h0 = _checks.float_array("h0", h0, 2, dt)
    Wx = _checks.float_array("Wx", Wx, 2, dt)
    Wh = _checks.float_array("Wh", Wh, 2, dt)
    b = _checks.float_array("b", b, 1, dt)
    T, B, D = x.shape
    _checks.expect_nonempty("x", x, "(T, B, D)")
    H = h0.shape[1]
    if H == 0:
        raise ValueError(f"h0 must have shape (B, H) with H >= 1, got {h0.shape}")
    _checks.expect_time_major(x, h0)
    _checks.expect_shape("h0", h0, (B, H), "(B, H)")
    _checks.expect_shape("Wx", Wx, (D, H), "(D, H)")
    _checks.expect_shape("Wh", Wh, (H, H), "(H, H)")
    _checks.expect_shape("b", b, (H,), "(H,)")
    _checks.expect_finite(x=x, h0=h0, Wx=Wx, Wh=Wh, b=b)
    return x, h0, Wx, Wh, b


def rnn_forward(
    x: np.ndarray,
    h0: np.ndarray,
    Wx: np.ndarray,
    Wh: np.ndarray,
    b: np.ndarray,
    *,
    lengths: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, RNNCache]:
    """Run a plain RNN over a whole sequence (R1-R2 of docs/rnn.md):

        (R1)  A^x = X Wx + b              all T steps in one GEMM, X = x as (T*B, D)
        (R2)  h_t = tanh(A^x_t + h_{t-1} Wh)

    x (T, B, D); h0 (B, H); Wx (D, H), Wh (H, H), b (H,). ``lengths`` (B,) integers in [0, T]:
    sequence b has lengths[b] real steps; past them its output is zero and its state is
    carried (M1-M2); None means all T.

    Returns hs (T, B, H) read-only, hT (B, H) (the state after step lengths[b]), cache.
    """
    x, h0, Wx, Wh, b = _check_rnn(x, h0, Wx, Wh, b)
    lengths = sequences.prepare_lengths(lengths, x.shape[0], x.shape[1])
    return rnn_forward_unchecked(x, h0, Wx, Wh, b, lengths)


def rnn_forward_unchecked(x, h0, Wx, Wh, b, lengths=None, ws: Workspace = FRESH, tag="rnn"):
    """``rnn_forward`` without validation; ``ws``/``tag`` say where buffers come from."""
    T, B, D = x.shape
    H = h0.shape[1]
    ax = ws.empty(tag + ".ax", (T, B, H), x.dtype)  # A^x (R1), all T steps
    h = ws.empty(tag + ".h", (T + 1, B, H), x.dtype)  # h_0 .. h_T (R2)
    ah = ws.empty(tag + ".ah", (B, H), x.dtype)  # h_{t-1} Wh of one step (R2)
    matmul_into(x.reshape(T * B, D), Wx, ax.reshape(T * B, H))  # (R1); the kernel adds b
    h[0] = h0
    if timeloop.use_time_loop(B, H):
        WhT = ws.empty(tag + ".WhT", (H, H), Wh.dtype)
        np.copyto(WhT, Wh.T)  # matmul_nt reads Wh's columns as contiguous rows
        timeloop.rnn_forward_loop(ax, b, WhT, h, ah)  # R2 for all T steps
    else:
        for t in range(T):  # step t+1: h[t] holds h_{t-1} of the equations
            matmul_into(h[t], Wh, ah)  # (R2) the product h_{t-1} Wh
            kernels.rnn_cell_forward(ax[t], ah, b, h[t + 1])  # (R2) h_t = tanh(A^x_t + ah + b)
    if lengths is None:
        hT = h[T].copy()
    else:
        (hT,) = sequences.finish_forward(h, lengths)  # M1 (hT), M2 (hs zero past the end)
    hs = h[1:]
    hs.flags.writeable = False  # a view into the cache: writing to it would corrupt backward
    return hs, hT, RNNCache(x, Wx, Wh, h, lengths)


def rnn_backward(
    dhs: np.ndarray, dhT: np.ndarray, cache: RNNCache
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Backpropagation through time over all T steps (dR2-dR1 of docs/rnn.md).

    For t = T..1, with dh = dhs_t + the gradient on h_t from step t+1 (``dhT`` at t = T):

        (dR2)  da_t = dh ⊙ (1 - h_t²);   dh_{t-1} = da_t Wh^T
    then, over all steps at once, with dA stacking da_1..da_T and H_prev stacking h_0..h_{T-1}:
        (dR2)  dWh = H_prev^T dA
        (dR1)  dWx = X^T dA,   db = sum of the rows of dA,   dX = dA Wx^T

    Each step multiplies the gradient by diag(1 - h_t²) Wh^T, whose norm is at most the
    largest singular value of Wh: why the gradient of a far step vanishes (dR3).
    With lengths (from the forward pass), dhs past a sequence's end is ignored and dhT enters
    at step lengths[b] (dM1, dM2, M3).

    Returns dx (T, B, D), dh0 (B, H), dWx (D, H), dWh (H, H), db (H,).
    """
    if not isinstance(cache, RNNCache):
        raise TypeError(f"cache must be the RNNCache from rnn_forward, got {type(cache).__name__}")
    T, B, _ = cache.x.shape
    H = cache.Wh.shape[0]
    dt = cache.x.dtype
    dhs = _checks.float_array("dhs", dhs, 3, dt)
    dhT = _checks.float_array("dhT", dhT, 2, dt)
    _checks.expect_shape("dhs", dhs, (T, B, H), "(T, B, H)")
    _checks.expect_shape("dhT", dhT, (B, H), "(B, H)")
    _checks.expect_finite(dhs=dhs, dhT=dhT)
    return rnn_backward_unchecked(dhs, dhT, cache)


def rnn_backward_unchecked(
    dhs, dhT, cache: RNNCache, ws: Workspace = FRESH, tag: str = "rnn", need_dh0: bool = True
):
    """``rnn_backward`` without validation; ``need_dh0=False`` skips dh0 (returns None)."""
    x, Wx, Wh, h, lengths = cache.x, cache.Wx, cache.Wh, cache.h, cache.lengths
    T, B, D = x.shape
    H = Wh.shape[0]
    da = ws.empty(tag + ".da", (T, B, H), x.dtype)  # da_1 .. da_T, stacked they are dA
    dh = ws.empty(tag + ".dh", (B, H), x.dtype)  # gradient on h_t arriving from step t+1
    if lengths is None:
        dh[...] = dhT
    else:
        dhs = sequences.masked_dhs(dhs, lengths)  # (dM2) dhs past the end has no effect
        dh[...] = 0  # (dM1) rows past their end carry no gradient until their last step
    for lo, hi, rows in sequences.backward_segments(lengths, T):
        if lengths is not None:
            dh[rows] += dhT[rows]  # (M3) dhT flows into the state of step lengths[b]
        if hi == lo:
            continue
        if timeloop.use_time_loop(B, H):
            need = lo > 0 or need_dh0
            timeloop.rnn_backward_loop(dhs[lo:hi], dh, h[lo + 1 : hi + 1], Wh, da[lo:hi], need)
        else:
            WhT = Wh.T  # a transposed view: BLAS reads it without a copy
            for t in range(hi - 1, lo - 1, -1):  # step t+1: h[t+1] holds h_t
                kernels.rnn_cell_backward(dhs[t], dh, h[t + 1], da[t])  # (dR2) da_t
                if t > 0 or need_dh0:
                    matmul_into(da[t], WhT, dh)  # (dR2) dh_{t-1} = da_t Wh^T
    dA = da.reshape(T * B, H)
    dWh = h[:T].reshape(T * B, H).T @ dA  # (dR2) dWh = H_prev^T dA
    dWx = x.reshape(T * B, D).T @ dA  # (dR1) dWx = X^T dA
    db = dA.sum(axis=0)  # (dR1) db
    dx = (dA @ Wx.T).reshape(T, B, D)  # (dR1) dX = dA Wx^T
    return dx, (dh if need_dh0 else None), dWx, dWh, db
