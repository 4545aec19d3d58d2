"""GRU layer: forward and backward over a whole sequence, in both published forms.

``reset_after=True`` (default) is the cuDNN / PyTorch form, equations G1-G5 of
``docs/gru.md``: the reset gate multiplies the recurrent product, n = tanh(ax_n + r * (h Wh_n
+ bh_n)). ``reset_after=False`` is the original Cho et al. (2014) form, equations G2c/G4c: the
reset gate multiplies h *before* the recurrent product, n = tanh(ax_n + (r * h) Wh_n + bh_n),
which costs a second GEMM per step. The two are different models: weights do not transfer.

Layout is time-major: x (T, B, D), hs (T, B, H); Wx (D, 3H), Wh (H, 3H), bx and bh (3H,), gate
blocks ordered r, z, n.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _checks, kernels
from .fast import timeloop
from .fast.blas import matmul_into
from .fast.workspace import FRESH, Workspace


@dataclass
class GRUCache:
    """What ``gru_backward`` needs from the forward pass.

    x (T, B, D); Wx (D, 3H); Wh (H, 3H); gates (T, B, 3H) [r, z, n]; h (T+1, B, H), h[0] = h0;
    reset_after; aux (T, B, H): h Wh_n + bh_n when reset_after, else r * h_{t-1}.
    """

    x: np.ndarray
    Wx: np.ndarray
    Wh: np.ndarray
    gates: np.ndarray
    h: np.ndarray
    aux: np.ndarray
    reset_after: bool


def _check_gru(x, h0, Wx, Wh, bx, bh):
    x = _checks.float_array("x", x, 3)
    dt = x.dtype
    h0 = _checks.float_array("h0", h0, 2, dt)
    Wx = _checks.float_array("Wx", Wx, 2, dt)
    Wh = _checks.float_array("Wh", Wh, 2, dt)
    bx = _checks.float_array("bx", bx, 1, dt)
    bh = _checks.float_array("bh", bh, 1, dt)
    T, B, D = x.shape
    _checks.expect_nonempty("x", x, "(T, B, D)")
    H = h0.shape[1]
    if H == 0:
        raise ValueError(f"h0 must have shape (B, H) with H >= 1, got {h0.shape}")
    _checks.expect_shape("h0", h0, (B, H), "(B, H)")
    _checks.expect_shape("Wx", Wx, (D, 3 * H), "(D, 3H)")
    _checks.expect_shape("Wh", Wh, (H, 3 * H), "(H, 3H)")
    _checks.expect_shape("bx", bx, (3 * H,), "(3H,)")
    _checks.expect_shape("bh", bh, (3 * H,), "(3H,)")
    _checks.expect_finite(x=x, h0=h0, Wx=Wx, Wh=Wh, bx=bx, bh=bh)
    return x, h0, Wx, Wh, bx, bh


def gru_forward(
    x: np.ndarray,
    h0: np.ndarray,
    Wx: np.ndarray,
    Wh: np.ndarray,
    bx: np.ndarray,
    bh: np.ndarray,
    *,
    reset_after: bool = True,
) -> tuple[np.ndarray, np.ndarray, GRUCache]:
    """Run a GRU over a whole sequence.

    Parameters
    ----------
    x : (T, B, D) inputs; h0 : (B, H) initial state.
    Wx : (D, 3H), Wh : (H, 3H), bx : (3H,), bh : (3H,) weights, blocks ordered r, z, n.
    reset_after : True for the cuDNN form (G1-G5), False for Cho et al. 2014 (G2c, G4c).

    Returns
    -------
    hs : (T, B, H) read-only view of h_1..h_T; hT : (B, H); cache : GRUCache.
    """
    x, h0, Wx, Wh, bx, bh = _check_gru(x, h0, Wx, Wh, bx, bh)
    return gru_forward_unchecked(x, h0, Wx, Wh, bx, bh, bool(reset_after))


def gru_forward_unchecked(
    x, h0, Wx, Wh, bx, bh, reset_after=True, ws: Workspace = FRESH, tag: str = "gru"
):
    """``gru_forward`` without validation; ``ws``/``tag`` say where buffers come from."""
    T, B, D = x.shape
    H = h0.shape[1]
    dt = x.dtype
    # (G1) input projection of all T steps in one GEMM; the gate kernels add bx.
    ax = ws.empty(tag + ".ax", (T, B, 3 * H), dt)
    matmul_into(x.reshape(T * B, D), Wx, ax.reshape(T * B, 3 * H))
    gates = ws.empty(tag + ".gates", (T, B, 3 * H), dt)
    h = ws.empty(tag + ".h", (T + 1, B, H), dt)
    aux = ws.empty(tag + ".aux", (T, B, H), dt)
    h[0] = h0
    loop = timeloop.use_time_loop(B)  # the T steps in one Numba call (timeloop.py)
    if loop:
        WhT = ws.empty(tag + ".WhT", (3 * H, H), dt)
        np.copyto(WhT, Wh.T)  # matmul_nt reads Wh's columns as contiguous rows
    if reset_after:
        ahw = ws.empty(tag + ".ahw", (B, 3 * H), dt)
        if loop:
            timeloop.gru_forward_loop(ax, bx, WhT, bh, h, gates, aux, ahw)  # G2-G5
        else:
            for t in range(T):
                matmul_into(h[t], Wh, ahw)  # (G2) h_{t-1} Wh; bh is added in the kernel
                kernels.gru_cell_forward(
                    ax[t], bx, ahw, bh, h[t], gates[t], aux[t], h[t + 1]
                )  # G3-G5
    else:
        Wh_rz, Wh_n = Wh[:, : 2 * H], Wh[:, 2 * H :]
        ahw_rz = ws.empty(tag + ".ahw_rz", (B, 2 * H), dt)
        ahw_n = ws.empty(tag + ".ahw_n", (B, H), dt)
        if loop:  # G2c, G3, G4c, G5
            timeloop.gru_cho_forward_loop(
                ax, bx, WhT[: 2 * H], WhT[2 * H :], bh, h, gates, aux, ahw_rz, ahw_n
            )
        else:
            for t in range(T):
                matmul_into(h[t], Wh_rz, ahw_rz)  # (G2c) h_{t-1} Wh_rz
                kernels.gru_rz_forward(ax[t], bx, ahw_rz, bh, h[t], gates[t], aux[t])  # G3, r * h
                matmul_into(aux[t], Wh_n, ahw_n)  # (G4c) (r * h_{t-1}) Wh_n
                kernels.gru_cho_cell_forward(
                    ax[t], bx, ahw_n, bh, h[t], gates[t], h[t + 1]
                )  # G4c, G5
    hs = h[1:]
    hs.flags.writeable = False  # a view into the cache: writing to it would corrupt backward
    return hs, h[T].copy(), GRUCache(x, Wx, Wh, gates, h, aux, reset_after)


def gru_backward(
    dhs: np.ndarray, dhT: np.ndarray, cache: GRUCache
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Full backpropagation through time over all T steps.

    Parameters
    ----------
    dhs : (T, B, H) gradient on each h_t; dhT : (B, H) gradient on h_T from a later segment.
    cache : from ``gru_forward``.

    Returns
    -------
    dx (T, B, D), dh0 (B, H), dWx (D, 3H), dWh (H, 3H), dbx (3H,), dbh (3H,)
    """
    if not isinstance(cache, GRUCache):
        raise TypeError(f"cache must be the GRUCache from gru_forward, got {type(cache).__name__}")
    T, B, H = cache.aux.shape
    dt = cache.x.dtype
    dhs = _checks.float_array("dhs", dhs, 3, dt)
    dhT = _checks.float_array("dhT", dhT, 2, dt)
    _checks.expect_shape("dhs", dhs, (T, B, H), "(T, B, H)")
    _checks.expect_shape("dhT", dhT, (B, H), "(B, H)")
    _checks.expect_finite(dhs=dhs, dhT=dhT)
    return gru_backward_unchecked(dhs, dhT, cache)


def gru_backward_unchecked(
    dhs, dhT, cache: GRUCache, ws: Workspace = FRESH, tag: str = "gru", need_dh0: bool = True
):
    """``gru_backward`` without validation.

    ``need_dh0=False`` skips the last recurrent GEMM of dh0 and returns None for dh0 (truncated
    BPTT does not use the gradient on the initial state).
    """
    x, Wx, Wh, h = cache.x, cache.Wx, cache.Wh, cache.h
    T, B, D = x.shape
    H = Wh.shape[0]
    dt = x.dtype
    dh = ws.empty(tag + ".dh", (B, H), dt)  # gradient on h_t arriving from step t+1
    dh[...] = dhT
    dh_prev = ws.empty(tag + ".dh_prev", (B, H), dt)
    dax = ws.empty(tag + ".dax", (T, B, 3 * H), dt)
    Hprev = h[:T].reshape(T * B, H)
    loop = timeloop.use_time_loop(B)  # the T steps in one Numba call (timeloop.py)
    if cache.reset_after:
        dah = ws.empty(tag + ".dah", (T, B, 3 * H), dt)
        if loop:  # dG5-dG2
            timeloop.gru_backward_loop(
                dhs, dh, cache.gates, cache.aux, h, Wh, dax, dah, dh_prev, need_dh0
            )
        else:
            WhT = Wh.T  # a transposed view: BLAS reads it without a copy
            for t in range(T - 1, -1, -1):
                # dG5-dG3: gradients on the pre-activations, and dh_{t-1}'s direct part dh * z.
                kernels.gru_cell_backward(
                    dhs[t], dh, cache.gates[t], cache.aux[t], h[t], dax[t], dah[t], dh_prev
                )
                if t > 0 or need_dh0:
                    matmul_into(dah[t], WhT, dh)  # (dG2) dh_{t-1} = dah_t Wh^T ...
                    dh += dh_prev  # ... + dh * z (dG5)
        dAh = dah.reshape(T * B, 3 * H)
        dWh = np.matmul(Hprev.T, dAh, out=ws.empty(tag + ".dWh", Wh.shape, dt))  # (dG2)
        dbh = np.sum(dAh, axis=0, out=ws.empty(tag + ".dbh", (3 * H,), dt))  # (dG2)
    else:
        # In this form dAx = dAh for every gate block, so one buffer (dax) serves both.
        drh = ws.empty(tag + ".drh", (B, H), dt)
        if loop:  # the loop below, in Numba, with contiguous copies of Wh's two blocks
            Wh_rz = ws.empty(tag + ".Wh_rz", (H, 2 * H), dt)
            Wh_n = ws.empty(tag + ".Wh_n", (H, H), dt)
            np.copyto(Wh_rz, Wh[:, : 2 * H])
            np.copyto(Wh_n, Wh[:, 2 * H :])
            timeloop.gru_cho_backward_loop(
                dhs, dh, cache.gates, h, Wh_rz, Wh_n, dax, drh, dh_prev, need_dh0
            )
        else:
            Wh_rzT, Wh_nT = Wh[:, : 2 * H].T, Wh[:, 2 * H :].T
            for t in range(T - 1, -1, -1):
                kernels.gru_cho_cell_backward(dhs[t], dh, cache.gates[t], h[t], dax[t], dh_prev)
                matmul_into(dax[t, :, 2 * H :], Wh_nT, drh)  # (dG4c) d(r*h) = da_n Wh_n^T
                kernels.gru_rz_backward(drh, cache.gates[t], h[t], dax[t], dh_prev)  # dG4c, dG3
                if t > 0 or need_dh0:
                    matmul_into(dax[t, :, : 2 * H], Wh_rzT, dh)  # (dG2c) da_rz Wh_rz^T ...
                    dh += dh_prev  # ... + dh * z + d(r*h) * r
        dA = dax.reshape(T * B, 3 * H)
        dWh = ws.empty(tag + ".dWh", Wh.shape, dt)
        np.matmul(Hprev.T, dA[:, : 2 * H], out=dWh[:, : 2 * H])  # (dG2c)
        np.matmul(cache.aux.reshape(T * B, H).T, dA[:, 2 * H :], out=dWh[:, 2 * H :])  # (dG4c)
        dbh = np.sum(dA, axis=0, out=ws.empty(tag + ".dbh", (3 * H,), dt))
    dAx = dax.reshape(T * B, 3 * H)
    dWx = np.matmul(x.reshape(T * B, D).T, dAx, out=ws.empty(tag + ".dWx", Wx.shape, dt))  # dG1
    dbx = ws.empty(tag + ".dbx", (3 * H,), dt)
    if cache.reset_after:
        np.sum(dAx, axis=0, out=dbx)  # (dG1)
    else:
        dbx[...] = dbh  # (dG1) the same gradient in this form
    dx = ws.empty(tag + ".dx", (T, B, D), dt)
    np.matmul(dAx, Wx.T, out=dx.reshape(T * B, D))  # (dG1)
    return dx, (dh if need_dh0 else None), dWx, dWh, dbx, dbh
