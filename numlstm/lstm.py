"""LSTM layer: forward and backward over a whole sequence, written from the gate equations.

Equations L1-L6 and their backward dL6-dL1 are derived in ``docs/lstm.md``; the comments
below cite them. Layout is time-major: x (T, B, D), hs (T, B, H), states (B, H). Gate blocks
in Wx (D, 4H), Wh (H, 4H) and b (4H,) are ordered i, f, g, o.

Speed design: one GEMM for the input projection of all T steps (L1), one GEMM per step for
the recurrence (L2) followed by one fused Numba kernel for every nonlinearity (L3-L6,
``kernels.py``), and in the backward pass dWx, dWh and dx as single GEMMs over all steps.

Reading order: ``lstm_forward_unchecked`` and ``lstm_backward_unchecked`` are the layer; their
Python loops over t are the plain path, commented with the equations. When BLAS runs on one
thread the same steps run in one Numba call instead (``_forward_steps_numba`` and
``_backward_steps_numba`` at the end of this file, ``fast/timeloop.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _checks, kernels, sequences
from .fast import timeloop
from .fast.blas import matmul_into
from .fast.workspace import FRESH, Workspace


@dataclass
class LSTMCache:
    """What ``lstm_backward`` needs from the forward pass.

    x (T, B, D); Wx (D, 4H); Wh (H, 4H); gates (T, B, 4H) activated [i, f, g, o];
    h (T+1, B, H) with h[0] = h0; c (T+1, B, H) with c[0] = c0; tc (T, B, H) = tanh(c[1:]);
    lengths (B,) or None (all T steps real; with lengths, h is zero past each end, M2).
    """

    x: np.ndarray
    Wx: np.ndarray
    Wh: np.ndarray
    gates: np.ndarray
    h: np.ndarray
    c: np.ndarray
    tc: np.ndarray
    lengths: np.ndarray | None = None


def _forward_buffers(ws: Workspace, tag: str, T: int, B: int, H: int, dt: np.dtype) -> tuple:
    """Every array of the forward pass, taken from ``ws`` under ``tag``."""
    return (
        ws.empty(tag + ".ax", (T, B, 4 * H), dt),  # A^x (L1), all T steps
        ws.empty(tag + ".gates", (T, B, 4 * H), dt),  # i, f, g, o per step (L3, L4)
        ws.empty(tag + ".h", (T + 1, B, H), dt),  # h_0 .. h_T (L6)
        ws.empty(tag + ".c", (T + 1, B, H), dt),  # c_0 .. c_T (L5)
        ws.empty(tag + ".tc", (T, B, H), dt),  # tanh(c_1) .. tanh(c_T) (L6)
        ws.empty(tag + ".ah", (B, 4 * H), dt),  # h_{t-1} Wh of one step (L2)
    )


def _backward_buffers(ws: Workspace, tag: str, T: int, B: int, D: int, H: int, dt) -> tuple:
    """Every array of the backward pass, taken from ``ws`` under ``tag``."""
    return (
        ws.empty(tag + ".da", (T, B, 4 * H), dt),  # da_1 .. da_T, stacked they are dA
        ws.empty(tag + ".dh", (B, H), dt),  # gradient on h_t arriving from step t+1 (dL2)
        ws.empty(tag + ".dc", (B, H), dt),  # gradient on c_t arriving from step t+1 (dL5)
        ws.empty(tag + ".dWx", (D, 4 * H), dt),
        ws.empty(tag + ".dWh", (H, 4 * H), dt),
        ws.empty(tag + ".db", (4 * H,), dt),
        ws.empty(tag + ".dx", (T, B, D), dt),
    )


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
    _checks.expect_time_major(x, h0)
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
    *,
    lengths: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, LSTMCache]:
    """Run an LSTM over a whole sequence (L1-L6 of docs/lstm.md).

    For t = 1..T, with the gate blocks of a_t ordered i, f, g, o and σ the logistic sigmoid:

        (L1)  A^x = X Wx + b                  all T steps in one GEMM, X = x as (T*B, D)
        (L2)  a_t = A^x_t + h_{t-1} Wh
        (L3)  i_t = σ(a^i_t),  f_t = σ(a^f_t + forget_bias),  o_t = σ(a^o_t)
        (L4)  g_t = tanh(a^g_t)
        (L5)  c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t
        (L6)  h_t = o_t ⊙ tanh(c_t)

    Parameters
    ----------
    x : (T, B, D) inputs, float32 or float64.
    h0, c0 : (B, H) initial hidden and cell state.
    Wx : (D, 4H), Wh : (H, 4H), b : (4H,) weights, gate blocks ordered i, f, g, o.
    forget_bias : added to the forget-gate pre-activation (TensorFlow BasicLSTMCell).
    lengths : (B,) integers in [0, T], or None (all T). Sequence b has lengths[b] real steps;
        past them hs is zero and the state is carried (M1-M2 of docs/rnn.md), so hT, cT are
        the state after step lengths[b] (h0, c0 for length 0).

    Returns
    -------
    hs : (T, B, H) hidden states h_1..h_T (a read-only view into the cache).
    hT, cT : (B, H) final states, to pass as h0/c0 of the next segment (M1 with lengths).
    cache : LSTMCache for ``lstm_backward``.
    """
    x, h0, c0, Wx, Wh, b = _check_lstm(x, h0, c0, Wx, Wh, b)
    if not np.isfinite(forget_bias):
        raise ValueError(f"forget_bias must be finite, got {forget_bias}")
    lengths = sequences.prepare_lengths(lengths, x.shape[0], x.shape[1])
    return lstm_forward_unchecked(x, h0, c0, Wx, Wh, b, forget_bias, lengths=lengths)


def lstm_forward_unchecked(
    x, h0, c0, Wx, Wh, b, forget_bias=0.0, ws: Workspace = FRESH, tag: str = "lstm", *, lengths=None
):
    """``lstm_forward`` without validation, for callers that already checked the arguments.

    ``ws``/``tag``: where to take the buffers from (see ``fast/workspace.py``). ``lengths``:
    validated (B,) int64 with some entry < T, or None. The loop below runs every step for every
    row; with lengths, the steps past a sequence's end are computed, then ignored (docs/rnn.md
    section 5.2: M1-M3 without a branch in the loop).
    """
    T, B, D = x.shape
    H = h0.shape[1]
    ax, gates, h, c, tc, ah = _forward_buffers(ws, tag, T, B, H, x.dtype)
    forget_bias = x.dtype.type(forget_bias)  # a Python float would turn float32 math into float64
    # (L1) A^x = X Wx for all T steps in one GEMM; the gate kernel adds b (with L2), which
    # saves a pass over A^x.
    matmul_into(x.reshape(T * B, D), Wx, ax.reshape(T * B, 4 * H))
    h[0] = h0
    c[0] = c0
    if timeloop.use_time_loop(B, H):
        _forward_steps_numba(ax, Wh, b, forget_bias, h, c, gates, tc, ah, ws, tag)  # L2-L6
    else:
        for t in range(T):  # step t+1: h[t], c[t] hold h_{t-1}, c_{t-1} of the equations
            matmul_into(h[t], Wh, ah)  # (L2) the product h_{t-1} Wh
            kernels.lstm_cell_forward(
                ax[t], ah, b, c[t], forget_bias, gates[t], c[t + 1], tc[t], h[t + 1]
            )
            # ... and in the kernel, element by element:
            #   (L2) a = A^x_t + h_{t-1} Wh + b
            #   (L3) i = σ(a^i), f = σ(a^f + forget_bias), o = σ(a^o)
            #   (L4) g = tanh(a^g)
            #   (L5) c_t = f ⊙ c_{t-1} + i ⊙ g
            #   (L6) h_t = o ⊙ tanh(c_t)
    if lengths is None:
        hT, cT = h[T].copy(), c[T].copy()
    else:
        hT, cT = sequences.finish_forward(h, lengths, c)  # M1 (hT, cT), M2 (hs zero past end)
    hs = h[1:]
    hs.flags.writeable = False  # a view into the cache: writing to it would corrupt backward
    return hs, hT, cT, LSTMCache(x, Wx, Wh, gates, h, c, tc, lengths)


def lstm_backward(
    dhs: np.ndarray, dhT: np.ndarray, dcT: np.ndarray, cache: LSTMCache
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Full backpropagation through time over all T steps (dL6-dL1 of docs/lstm.md).

    For t = T..1, with dh = dhs_t + the gradient on h_t from step t+1 (``dhT`` at t = T) and
    dc the gradient on c_t from step t+1 (``dcT`` at t = T):

        (dL6)  do_t = dh ⊙ tanh(c_t);   dc += dh ⊙ o_t ⊙ (1 - tanh²(c_t))
        (dL5)  di_t = dc ⊙ g_t,  df_t = dc ⊙ c_{t-1},  dg_t = dc ⊙ i_t;   dc_{t-1} = dc ⊙ f_t
        (dL4)  da^g_t = dg_t ⊙ (1 - g_t²)
        (dL3)  da^i_t = di_t ⊙ i_t(1 - i_t),  da^f_t = df_t ⊙ f_t(1 - f_t),
               da^o_t = do_t ⊙ o_t(1 - o_t)
        (dL2)  dh_{t-1} = da_t Wh^T
    then, over all steps at once, with dA stacking da_1..da_T and H_prev stacking h_0..h_{T-1}:
        (dL2)  dWh = H_prev^T dA
        (dL1)  dWx = X^T dA,   db = sum of the rows of dA,   dX = dA Wx^T

    With lengths (from the forward pass): dhs past a sequence's end has no effect and dhT, dcT
    flow into the state of step lengths[b] (dM1, dM2, M3 of docs/rnn.md).

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
    da, dh, dc, dWx, dWh, db, dx = _backward_buffers(ws, tag, T, B, D, H, x.dtype)
    lengths = cache.lengths
    if lengths is None:
        dh[...] = dhT
        dc[...] = dcT
    else:
        dhs = sequences.masked_dhs(dhs, lengths)  # (dM2) dhs past the end has no effect
        dh[...] = 0  # (dM1) rows past their end carry no gradient until their last step
        dc[...] = 0
    # Without lengths one segment, t = T-1 .. 0; with them one per distinct length (M3).
    for lo, hi, rows in sequences.backward_segments(lengths, T):
        if lengths is not None:
            dh[rows] += dhT[rows]  # (M3) dhT, dcT flow into the state of step lengths[b]
            dc[rows] += dcT[rows]
        if hi > lo:
            _backward_steps(dhs, dh, dc, cache, da, need_dh0, lo, hi)
    # (dL2) dWh = sum_t h_{t-1}^T da_t and (dL1) dWx = sum_t x_t^T da_t: one GEMM each.
    dA = da.reshape(T * B, 4 * H)
    np.matmul(cache.h[:T].reshape(T * B, H).T, dA, out=dWh)  # (dL2) dWh = H_prev^T dA
    np.matmul(x.reshape(T * B, D).T, dA, out=dWx)  # (dL1) dWx = X^T dA
    np.sum(dA, axis=0, out=db)  # (dL1) db
    np.matmul(dA, Wx.T, out=dx.reshape(T * B, D))  # (dL1) dX = dA Wx^T
    return dx, (dh if need_dh0 else None), dc, dWx, dWh, db


def _backward_steps(dhs, dh, dc, cache: LSTMCache, da, need_dh0: bool, lo: int, hi: int) -> None:
    """dL6-dL2 for the steps hi..lo+1 (0-based t = hi-1 .. lo); dh, dc in: the gradient on
    h_hi, c_hi; out: on h_lo, c_lo (dh only if lo > 0 or need_dh0)."""
    if timeloop.use_time_loop(*dh.shape):
        _backward_steps_numba(dhs, dh, dc, cache, da, lo > 0 or need_dh0, lo, hi)  # dL6-dL2
    else:
        WhT = cache.Wh.T  # a transposed view: BLAS reads it without a copy
        for t in range(hi - 1, lo - 1, -1):  # step t+1: c[t] holds c_{t-1} of the equations
            kernels.lstm_cell_backward(
                dhs[t], dh, dc, cache.gates[t], cache.c[t], cache.tc[t], da[t]
            )
            # ... in the kernel, element by element, with dh = dhs_t + dh:
            #   (dL6) do = dh ⊙ tanh(c_t);  dc += dh ⊙ o ⊙ (1 - tanh²(c_t))
            #   (dL5) di = dc ⊙ g, df = dc ⊙ c_{t-1}, dg = dc ⊙ i;  dc_{t-1} = dc ⊙ f (in dc)
            #   (dL4) da^g = dg ⊙ (1 - g²)
            #   (dL3) da^i = di ⊙ i(1 - i), da^f = df ⊙ f(1 - f), da^o = do ⊙ o(1 - o)
            if t > 0 or need_dh0:
                matmul_into(da[t], WhT, dh)  # (dL2) dh_{t-1} = da_t Wh^T


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


# --------------------------------------------------------------------------------------------
# Speed path: the same T steps in one Numba call (fast/timeloop.py). Used when BLAS runs on one
# thread (``timeloop.use_time_loop``); the results equal the Python loops' up to rounding.
# --------------------------------------------------------------------------------------------


def _forward_steps_numba(ax, Wh, b, forget_bias, h, c, gates, tc, ah, ws, tag) -> None:
    """L2-L6 for t = 1..T: the loop of ``lstm_forward_unchecked`` in one Numba call."""
    WhT = ws.empty(tag + ".WhT", (Wh.shape[1], Wh.shape[0]), Wh.dtype)
    np.copyto(WhT, Wh.T)  # matmul_nt reads Wh's columns as contiguous rows
    timeloop.lstm_forward_loop(ax, b, WhT, forget_bias, h, c, gates, tc, ah)


def _backward_steps_numba(dhs, dh, dc, cache: LSTMCache, da, need: bool, lo: int, hi: int):
    """dL6-dL2 for t = hi-1 .. lo: the loop of ``_backward_steps`` in one Numba call, on the
    steps' slices of the arrays (the whole of them without lengths)."""
    g, c, tc = cache.gates[lo:hi], cache.c[lo:hi], cache.tc[lo:hi]
    timeloop.lstm_backward_loop(dhs[lo:hi], dh, dc, g, c, tc, cache.Wh, da[lo:hi], need)
