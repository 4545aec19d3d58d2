"""LSTM layer: forward and backward over a whole sequence, written from the gate equations.

Equations L1-L6 and their backward dL6-dL1 are derived in ``docs/lstm.md``; the comments
below cite them. Layout is time-major: x (T, B, D), hs (T, B, H), states (B, H). Gate blocks
in Wx (D, 4H), Wh (H, 4H) and b (4H,) are ordered i, f, g, o.

Speed design: one GEMM for the input projection of all T steps (L1), one GEMM per step for
the recurrence (L2) followed by one fused Numba kernel for every nonlinearity (L3-L6), and in
the backward pass dWx, dWh and dx as single GEMMs over all steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _checks, kernels
from .fast import timeloop
from .fast.blas import matmul_into
from .fast.workspace import FRESH, Workspace


@dataclass
class LSTMCache:
    """What ``lstm_backward`` needs from the forward pass.

    x (T, B, D); Wx (D, 4H); Wh (H, 4H); gates (T, B, 4H) activated [i, f, g, o];
    h (T+1, B, H) with h[0] = h0; c (T+1, B, H) with c[0] = c0; tc (T, B, H) = tanh(c[1:]).
    """

    x: np.ndarray
    Wx: np.ndarray
    Wh: np.ndarray
    gates: np.ndarray
    h: np.ndarray
    c: np.ndarray
    tc: np.ndarray


def _check_lstm(x, h0, c0, Wx, Wh, b):
    x = _checks.float_array("x", x, 3)
    dt = x.dtype
    h0 = _checks.float_array("h0", h0, 2, dt)
    c0 = _checks.float_array("c0", c0, 2, dt)
    Wx = _checks.float_array("Wx", Wx, 2, dt)
    Wh = _checks.float_array("Wh", Wh, 2, dt)
    b = _checks.float_array("b", b, 1, dt)
    T, B, D = x.shape
    _checks.expect_nonempty("x", x, "(T, B, D)")
    H = h0.shape[1]
    if H == 0:
        raise ValueError(f"h0 must have shape (B, H) with H >= 1, got {h0.shape}")
    _checks.expect_shape("h0", h0, (B, H), "(B, H)")
    _checks.expect_shape("c0", c0, (B, H), "(B, H)")
    _checks.expect_shape("Wx", Wx, (D, 4 * H), "(D, 4H)")
    _checks.expect_shape("Wh", Wh, (H, 4 * H), "(H, 4H)")
    _checks.expect_shape("b", b, (4 * H,), "(4H,)")
    _checks.expect_finite(x=x, h0=h0, c0=c0, Wx=Wx, Wh=Wh, b=b)
    return x, h0, c0, Wx, Wh, b


def lstm_forward(
    x: np.ndarray,
    h0: np.ndarray,
    c0: np.ndarray,
    Wx: np.ndarray,
    Wh: np.ndarray,
    b: np.ndarray,
    forget_bias: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, LSTMCache]:
    """Run an LSTM over a whole sequence (L1-L6).

    Parameters
    ----------
    x : (T, B, D) inputs, float32 or float64.
    h0, c0 : (B, H) initial hidden and cell state.
    Wx : (D, 4H), Wh : (H, 4H), b : (4H,) weights, gate blocks ordered i, f, g, o.
    forget_bias : added to the forget-gate pre-activation (TensorFlow BasicLSTMCell).

    Returns
    -------
    hs : (T, B, H) hidden states h_1..h_T (a read-only view into the cache).
    hT, cT : (B, H) final states, to pass as h0/c0 of the next segment.
    cache : LSTMCache for ``lstm_backward``.
    """
    x, h0, c0, Wx, Wh, b = _check_lstm(x, h0, c0, Wx, Wh, b)
    if not np.isfinite(forget_bias):
        raise ValueError(f"forget_bias must be finite, got {forget_bias}")
    return lstm_forward_unchecked(x, h0, c0, Wx, Wh, b, forget_bias)


def lstm_forward_unchecked(
    x, h0, c0, Wx, Wh, b, forget_bias=0.0, ws: Workspace = FRESH, tag: str = "lstm"
):
    """``lstm_forward`` without validation, for callers that already checked the arguments.

    ``ws``/``tag``: where to take the buffers from (see ``workspace.py``).
    """
    T, B, D = x.shape
    H = h0.shape[1]
    dt = x.dtype
    # (L1) input projection of all T steps in one GEMM: (T*B, D) @ (D, 4H); the gate kernel
    # adds the bias b (L2), which saves a pass over ax.
    ax = ws.empty(tag + ".ax", (T, B, 4 * H), dt)
    matmul_into(x.reshape(T * B, D), Wx, ax.reshape(T * B, 4 * H))
    gates = ws.empty(tag + ".gates", (T, B, 4 * H), dt)
    h = ws.empty(tag + ".h", (T + 1, B, H), dt)
    c = ws.empty(tag + ".c", (T + 1, B, H), dt)
    tc = ws.empty(tag + ".tc", (T, B, H), dt)
    ah = ws.empty(tag + ".ah", (B, 4 * H), dt)
    forget_bias = dt.type(forget_bias)  # a Python float would turn float32 math into float64
    h[0] = h0
    c[0] = c0
    if timeloop.use_time_loop(B):  # the T steps in one Numba call (timeloop.py)
        WhT = ws.empty(tag + ".WhT", (4 * H, H), dt)
        np.copyto(WhT, Wh.T)  # matmul_nt reads Wh's columns as contiguous rows
        timeloop.lstm_forward_loop(ax, b, WhT, forget_bias, h, c, gates, tc, ah)  # L2-L6
    else:
        for t in range(T):
            matmul_into(h[t], Wh, ah)  # (L2) recurrent GEMM h_{t-1} Wh
            kernels.lstm_cell_forward(
                ax[t], ah, b, c[t], forget_bias, gates[t], c[t + 1], tc[t], h[t + 1]
            )  # L2 (+ b), L3-L6
    hs = h[1:]
    hs.flags.writeable = False  # a view into the cache: writing to it would corrupt backward
    return hs, h[T].copy(), c[T].copy(), LSTMCache(x, Wx, Wh, gates, h, c, tc)


def lstm_backward(
    dhs: np.ndarray, dhT: np.ndarray, dcT: np.ndarray, cache: LSTMCache
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Full backpropagation through time over all T steps (dL6-dL1).

    Parameters
    ----------
    dhs : (T, B, H) gradient of the loss with respect to each h_t.
    dhT, dcT : (B, H) gradient flowing into the final state from a later segment (often zeros).
    cache : from ``lstm_forward``.

    Returns
    -------
    dx (T, B, D), dh0 (B, H), dc0 (B, H), dWx (D, 4H), dWh (H, 4H), db (4H,)
    """
    if not isinstance(cache, LSTMCache):
        raise TypeError(
            f"cache must be the LSTMCache from lstm_forward, got {type(cache).__name__}"
        )
    T, B, H = cache.tc.shape
    dt = cache.x.dtype
    dhs = _checks.float_array("dhs", dhs, 3, dt)
    dhT = _checks.float_array("dhT", dhT, 2, dt)
    dcT = _checks.float_array("dcT", dcT, 2, dt)
    _checks.expect_shape("dhs", dhs, (T, B, H), "(T, B, H)")
    _checks.expect_shape("dhT", dhT, (B, H), "(B, H)")
    _checks.expect_shape("dcT", dcT, (B, H), "(B, H)")
    _checks.expect_finite(dhs=dhs, dhT=dhT, dcT=dcT)
    return lstm_backward_unchecked(dhs, dhT, dcT, cache)


def lstm_backward_unchecked(
    dhs, dhT, dcT, cache: LSTMCache, ws: Workspace = FRESH, tag="lstm", need_dh0: bool = True
):
    """``lstm_backward`` without validation.

    ``need_dh0=False`` skips the last recurrent GEMM (dh0 = da_0 Wh^T) and returns None for dh0:
    in truncated BPTT nothing uses the gradient on the initial state.
    """
    x, Wx, Wh = cache.x, cache.Wx, cache.Wh
    T, B, D = x.shape
    H = Wh.shape[0]
    dt = x.dtype
    da = ws.empty(tag + ".da", (T, B, 4 * H), dt)
    dh = ws.empty(tag + ".dh", (B, H), dt)  # gradient on h_t arriving from step t+1
    dc = ws.empty(tag + ".dc", (B, H), dt)  # gradient on c_t arriving from step t+1
    dh[...] = dhT
    dc[...] = dcT
    if timeloop.use_time_loop(B):  # the T steps in one Numba call (timeloop.py)
        timeloop.lstm_backward_loop(
            dhs, dh, dc, cache.gates, cache.c, cache.tc, Wh, da, need_dh0
        )  # dL6-dL2
    else:
        WhT = Wh.T  # a transposed view: BLAS reads it without a copy
        for t in range(T - 1, -1, -1):
            # dL6-dL3: da[t] from dh = dhs[t] + dh_next; dc becomes dc_{t-1} in place.
            kernels.lstm_cell_backward(
                dhs[t], dh, dc, cache.gates[t], cache.c[t], cache.tc[t], da[t]
            )
            if t > 0 or need_dh0:
                matmul_into(da[t], WhT, dh)  # (dL2) dh_{t-1} = da_t Wh^T
    dA = da.reshape(T * B, 4 * H)
    dWh = np.matmul(cache.h[:T].reshape(T * B, H).T, dA, out=ws.empty(tag + ".dWh", Wh.shape, dt))
    dWx = np.matmul(x.reshape(T * B, D).T, dA, out=ws.empty(tag + ".dWx", Wx.shape, dt))
    db = np.sum(dA, axis=0, out=ws.empty(tag + ".db", (4 * H,), dt))  # (dL1)
    dx = ws.empty(tag + ".dx", (T, B, D), dt)
    np.matmul(dA, Wx.T, out=dx.reshape(T * B, D))  # (dL1) dX = dA Wx^T
    # (dL2) dWh = sum_t h_{t-1}^T da_t and (dL1) dWx = sum_t x_t^T da_t: one GEMM each.
    return dx, (dh if need_dh0 else None), dc, dWx, dWh, db


def lstm_step_forward(
    x_t: np.ndarray,
    h_prev: np.ndarray,
    c_prev: np.ndarray,
    Wx: np.ndarray,
    Wh: np.ndarray,
    b: np.ndarray,
    forget_bias: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, LSTMCache]:
    """One LSTM step: x_t (B, D), h_prev/c_prev (B, H) -> h (B, H), c (B, H), cache.

    The same computation as ``lstm_forward`` with T = 1 (L1-L6), for reading one step at a time.
    """
    if not isinstance(x_t, np.ndarray) or x_t.ndim != 2:
        raise ValueError(f"x_t must be a (B, D) array, got {getattr(x_t, 'shape', x_t)!r}")
    hs, h, c, cache = lstm_forward(x_t[None], h_prev, c_prev, Wx, Wh, b, forget_bias)
    return h, c, cache


def lstm_step_backward(
    dh: np.ndarray, dc: np.ndarray, cache: LSTMCache
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Backward of ``lstm_step_forward``: dh, dc (B, H) -> dx (B, D), dh_prev, dc_prev, dWx,
    dWh, db."""
    zeros = np.zeros_like(dh)
    dx, dh0, dc0, dWx, dWh, db = lstm_backward(dh[None], zeros, dc, cache)
    return dx[0], dh0, dc0, dWx, dWh, db
