"""GRU layer: forward and backward over a whole sequence, in both published forms.

``reset_after=True`` (default) is the cuDNN / PyTorch form, equations G1-G5 of
``docs/gru.md``: the reset gate multiplies the recurrent product, n = tanh(ax_n + r * (h Wh_n
+ bh_n)). ``reset_after=False`` is the original Cho et al. (2014) form, equations G2c/G4c: the
reset gate multiplies h *before* the recurrent product, n = tanh(ax_n + (r * h) Wh_n + bh_n),
which costs a second GEMM per step. The two are different models: weights do not transfer.

Layout is time-major: x (T, B, D), hs (T, B, H); Wx (D, 3H), Wh (H, 3H), bx and bh (3H,), gate
blocks ordered r, z, n.

Reading order: ``gru_forward_unchecked`` and ``gru_backward_unchecked`` are the layer; their
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
class GRUCache:
    """What ``gru_backward`` needs from the forward pass.

    x (T, B, D); Wx (D, 3H); Wh (H, 3H); gates (T, B, 3H) [r, z, n]; h (T+1, B, H), h[0] = h0;
    reset_after; aux (T, B, H): h Wh_n + bh_n when reset_after, else r * h_{t-1}; lengths (B,)
    or None (all T steps real; with lengths, h is zero past each end, M2).
    """

    x: np.ndarray
    Wx: np.ndarray
    Wh: np.ndarray
    gates: np.ndarray
    h: np.ndarray
    aux: np.ndarray
    reset_after: bool
    lengths: np.ndarray | None = None


def _forward_buffers(ws: Workspace, tag: str, T, B, H, dt, reset_after: bool) -> tuple:
    """Every array of the forward pass, taken from ``ws`` under ``tag``. The last entry holds
    the recurrent product of one step: (ahw,) (G2) or (ahw_rz, ahw_n) (G2c, G4c)."""
    if reset_after:
        ah = (ws.empty(tag + ".ahw", (B, 3 * H), dt),)  # h_{t-1} Wh (G2)
    else:
        ah = (
            ws.empty(tag + ".ahw_rz", (B, 2 * H), dt),  # h_{t-1} Wh_rz (G2c)
            ws.empty(tag + ".ahw_n", (B, H), dt),  # (r ⊙ h_{t-1}) Wh_n (G4c)
        )
    return (
        ws.empty(tag + ".ax", (T, B, 3 * H), dt),  # A^x (G1), all T steps
        ws.empty(tag + ".gates", (T, B, 3 * H), dt),  # r, z, n per step (G3, G4)
        ws.empty(tag + ".h", (T + 1, B, H), dt),  # h_0 .. h_T (G5)
        ws.empty(tag + ".aux", (T, B, H), dt),  # a^{h,n} (G2) or r ⊙ h_{t-1} (G4c)
        ah,
    )


def _backward_buffers(ws: Workspace, tag: str, T, B, D, H, dt, reset_after: bool) -> tuple:
    """Every array of the backward pass, taken from ``ws`` under ``tag``. ``drec`` is dah
    (T, B, 3H), the gradient on a^h (reset-after), or drh (B, H), the gradient on r ⊙ h_{t-1}
    (reset-before, where da^h = dA^x and ``dax`` serves both)."""
    if reset_after:
        drec = ws.empty(tag + ".dah", (T, B, 3 * H), dt)
    else:
        drec = ws.empty(tag + ".drh", (B, H), dt)
    return (
        ws.empty(tag + ".dh", (B, H), dt),  # gradient on h_t arriving from step t+1
        ws.empty(tag + ".dh_prev", (B, H), dt),  # dh_{t-1}'s elementwise paths (dG5, dG4c)
        ws.empty(tag + ".dax", (T, B, 3 * H), dt),  # dA^x_1 .. dA^x_T, stacked they are dA^x
        drec,
        ws.empty(tag + ".dWx", (D, 3 * H), dt),
        ws.empty(tag + ".dWh", (H, 3 * H), dt),
        ws.empty(tag + ".dbx", (3 * H,), dt),
        ws.empty(tag + ".dbh", (3 * H,), dt),
        ws.empty(tag + ".dx", (T, B, D), dt),
    )


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
    _checks.expect_time_major(x, h0)
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
    lengths: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, GRUCache]:
    """Run a GRU over a whole sequence (G1-G5, or G2c/G4c, of docs/gru.md).

    For t = 1..T, with the blocks of A^x and a^h ordered r, z, n and σ the logistic sigmoid;
    reset_after=True (cuDNN, PyTorch):

        (G1)  A^x = X Wx + bx                 all T steps in one GEMM, X = x as (T*B, D)
        (G2)  a^h_t = h_{t-1} Wh + bh
        (G3)  r_t = σ(A^{x,r}_t + a^{h,r}_t),  z_t = σ(A^{x,z}_t + a^{h,z}_t)
        (G4)  n_t = tanh(A^{x,n}_t + r_t ⊙ a^{h,n}_t)
        (G5)  h_t = (1 - z_t) ⊙ n_t + z_t ⊙ h_{t-1}

    reset_after=False (Cho et al. 2014) replaces G2 and G4 by

        (G2c) a^{h,rz}_t = h_{t-1} Wh_rz + bh_rz       (G3 reads its r, z blocks)
        (G4c) n_t = tanh(A^{x,n}_t + (r_t ⊙ h_{t-1}) Wh_n + bh_n)

    Parameters
    ----------
    x : (T, B, D) inputs; h0 : (B, H) initial state.
    Wx : (D, 3H), Wh : (H, 3H), bx : (3H,), bh : (3H,) weights, blocks ordered r, z, n.
    reset_after : True for the cuDNN form (G1-G5), False for Cho et al. 2014 (G2c, G4c).
    lengths : (B,) integers in [0, T], or None (all T). Sequence b has lengths[b] real steps;
        past them hs is zero and the state is carried (M1-M2 of docs/rnn.md), so hT is the
        state after step lengths[b] (h0 for length 0).

    Returns
    -------
    hs : (T, B, H) read-only view of h_1..h_T; hT : (B, H); cache : GRUCache.
    """
    reset_after = _checks.flag("reset_after", reset_after)
    x, h0, Wx, Wh, bx, bh = _check_gru(x, h0, Wx, Wh, bx, bh)
    lengths = sequences.prepare_lengths(lengths, x.shape[0], x.shape[1])
    return gru_forward_unchecked(x, h0, Wx, Wh, bx, bh, reset_after, lengths=lengths)


def gru_forward_unchecked(
    x,
    h0,
    Wx,
    Wh,
    bx,
    bh,
    reset_after=True,
    ws: Workspace = FRESH,
    tag: str = "gru",
    *,
    lengths=None,
):
    """``gru_forward`` without validation; ``ws``/``tag`` say where buffers come from.

    ``lengths``: validated (B,) int64 with some entry < T, or None. As in lstm.py, the loop
    runs every step for every row and the steps past an end are ignored (docs/rnn.md 5.2).
    """
    T, B, D = x.shape
    H = h0.shape[1]
    ax, gates, h, aux, ah = _forward_buffers(ws, tag, T, B, H, x.dtype, reset_after)
    # (G1) A^x = X Wx for all T steps in one GEMM; the gate kernels add bx.
    matmul_into(x.reshape(T * B, D), Wx, ax.reshape(T * B, 3 * H))
    h[0] = h0
    if timeloop.use_time_loop(B, H):
        _forward_steps_numba(ax, Wh, bx, bh, h, gates, aux, ah, reset_after, ws, tag)
    elif reset_after:
        (ahw,) = ah
        for t in range(T):  # step t+1: h[t] holds h_{t-1} of the equations
            matmul_into(h[t], Wh, ahw)  # (G2) the product h_{t-1} Wh
            kernels.gru_cell_forward(ax[t], bx, ahw, bh, h[t], gates[t], aux[t], h[t + 1])
            # ... and in the kernel, element by element (aux[t] keeps a^{h,n} for backward):
            #   (G2) a^h = h_{t-1} Wh + bh
            #   (G3) r = σ(A^{x,r} + bx_r + a^{h,r}), z = σ(A^{x,z} + bx_z + a^{h,z})
            #   (G4) n = tanh(A^{x,n} + bx_n + r ⊙ a^{h,n})
            #   (G5) h_t = (1 - z) ⊙ n + z ⊙ h_{t-1}
    else:
        ahw_rz, ahw_n = ah
        Wh_rz, Wh_n = Wh[:, : 2 * H], Wh[:, 2 * H :]
        for t in range(T):
            matmul_into(h[t], Wh_rz, ahw_rz)  # (G2c) the product h_{t-1} Wh_rz
            kernels.gru_rz_forward(ax[t], bx, ahw_rz, bh, h[t], gates[t], aux[t])
            #   (G2c) a^{h,rz} = h_{t-1} Wh_rz + bh_rz
            #   (G3)  r = σ(A^{x,r} + bx_r + a^{h,r}), z = σ(A^{x,z} + bx_z + a^{h,z});
            #         aux[t] = r ⊙ h_{t-1}
            matmul_into(aux[t], Wh_n, ahw_n)  # (G4c) the product (r ⊙ h_{t-1}) Wh_n
            kernels.gru_cho_cell_forward(ax[t], bx, ahw_n, bh, h[t], gates[t], h[t + 1])
            #   (G4c) n = tanh(A^{x,n} + bx_n + (r ⊙ h_{t-1}) Wh_n + bh_n)
            #   (G5)  h_t = (1 - z) ⊙ n + z ⊙ h_{t-1}
    if lengths is None:
        hT = h[T].copy()
    else:
        (hT,) = sequences.finish_forward(h, lengths)  # M1 (hT), M2 (hs zero past the end)
    hs = h[1:]
    hs.flags.writeable = False  # a view into the cache: writing to it would corrupt backward
    return hs, hT, GRUCache(x, Wx, Wh, gates, h, aux, reset_after, lengths)


def gru_backward(
    dhs: np.ndarray, dhT: np.ndarray, cache: GRUCache
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Full backpropagation through time over all T steps (dG5-dG1 of docs/gru.md).

    For t = T..1, with dh = dhs_t + the gradient on h_t from step t+1 (``dhT`` at t = T),
    reset_after=True:

        (dG5)  dz_t = dh ⊙ (h_{t-1} - n_t),  dn_t = dh ⊙ (1 - z_t);   dh_{t-1} = dh ⊙ z_t
        (dG4)  da^n_t = dn_t ⊙ (1 - n_t²);  dA^{x,n}_t = da^n_t,  dr_t = da^n_t ⊙ a^{h,n}_t,
               da^{h,n}_t = da^n_t ⊙ r_t
        (dG3)  da^r_t = dr_t ⊙ r_t(1 - r_t),  da^z_t = dz_t ⊙ z_t(1 - z_t)  (into dA^x_t, da^h_t)
        (dG2)  dh_{t-1} += da^h_t Wh^T
    then, over all steps at once, with H_prev stacking h_0..h_{T-1}:
        (dG2)  dWh = H_prev^T dA^h,   dbh = sum of the rows of dA^h
        (dG1)  dWx = X^T dA^x,   dbx = sum of the rows of dA^x,   dX = dA^x Wx^T

    reset_after=False, with q_t = r_t ⊙ h_{t-1} and Q stacking q_1..q_T (dG5, dG3, dG1 as
    above; here da^h = dA^x, so dbh = dbx):

        (dG4c) da^n_t = dn_t ⊙ (1 - n_t²);  dq_t = da^n_t Wh_n^T;  dr_t = dq_t ⊙ h_{t-1},
               dh_{t-1} += dq_t ⊙ r_t;   after the loop dWh_n = Q^T dA^{h,n}
        (dG2c) dh_{t-1} += da^{h,rz}_t Wh_rz^T;   after the loop dWh_rz = H_prev^T dA^{h,rz}

    With lengths (from the forward pass): dhs past a sequence's end has no effect and dhT flows
    into the state of step lengths[b] (dM1, dM2, M3 of docs/rnn.md).

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
    bufs = _backward_buffers(ws, tag, T, B, D, H, x.dtype, cache.reset_after)
    dh, dh_prev, dax, drec, dWx, dWh, dbx, dbh, dx = bufs
    lengths = cache.lengths
    if lengths is None:
        dh[...] = dhT
    else:
        dhs = sequences.masked_dhs(dhs, lengths)  # (dM2) dhs past the end has no effect
        dh[...] = 0  # (dM1) rows past their end carry no gradient until their last step
    Hprev = h[:T].reshape(T * B, H)  # H_prev: h_0 .. h_{T-1} stacked
    # Without lengths one segment, t = T-1 .. 0; with them one per distinct length (M3).
    for lo, hi, rows in sequences.backward_segments(lengths, T):
        if lengths is not None:
            dh[rows] += dhT[rows]  # (M3) dhT flows into the state of step lengths[b]
        if hi > lo:
            _backward_steps(dhs, dh, cache, dax, drec, dh_prev, need_dh0, ws, tag, lo, hi)
    dAx = dax.reshape(T * B, 3 * H)
    if cache.reset_after:
        dAh = drec.reshape(T * B, 3 * H)
        np.matmul(Hprev.T, dAh, out=dWh)  # (dG2) dWh = H_prev^T dA^h
        np.sum(dAh, axis=0, out=dbh)  # (dG2) dbh
    else:
        np.matmul(Hprev.T, dAx[:, : 2 * H], out=dWh[:, : 2 * H])  # (dG2c) dWh_rz
        np.matmul(cache.aux.reshape(T * B, H).T, dAx[:, 2 * H :], out=dWh[:, 2 * H :])  # (dG4c)
        np.sum(dAx, axis=0, out=dbh)
    np.matmul(x.reshape(T * B, D).T, dAx, out=dWx)  # (dG1) dWx = X^T dA^x
    if cache.reset_after:
        np.sum(dAx, axis=0, out=dbx)  # (dG1) dbx
    else:
        dbx[...] = dbh  # (dG1) the same gradient in this form
    np.matmul(dAx, Wx.T, out=dx.reshape(T * B, D))  # (dG1) dX = dA^x Wx^T
    return dx, (dh if need_dh0 else None), dWx, dWh, dbx, dbh


def _backward_steps(dhs, dh, cache: GRUCache, dax, drec, dh_prev, need_dh0, ws, tag, lo, hi):
    """The reverse loop for the steps hi..lo+1 (0-based t = hi-1 .. lo); dh in: the gradient
    on h_hi; out: on h_lo (only if lo > 0 or need_dh0)."""
    Wh, h = cache.Wh, cache.h
    H = Wh.shape[0]
    if timeloop.use_time_loop(*dh.shape):
        need = lo > 0 or need_dh0
        _backward_steps_numba(dhs, dh, cache, dax, drec, dh_prev, need, ws, tag, lo, hi)
    elif cache.reset_after:
        dah = drec
        WhT = Wh.T  # a transposed view: BLAS reads it without a copy
        for t in range(hi - 1, lo - 1, -1):  # step t+1: h[t] holds h_{t-1} of the equations
            kernels.gru_cell_backward(
                dhs[t], dh, cache.gates[t], cache.aux[t], h[t], dax[t], dah[t], dh_prev
            )
            # ... in the kernel, element by element, with dh = dhs_t + dh:
            #   (dG5) dz = dh ⊙ (h_{t-1} - n), dn = dh ⊙ (1 - z);  dh_prev = dh ⊙ z
            #   (dG4) da^n = dn ⊙ (1 - n²);  dr = da^n ⊙ a^{h,n};  da^{h,n} = da^n ⊙ r
            #   (dG3) da^r = dr ⊙ r(1 - r), da^z = dz ⊙ z(1 - z)
            if t > 0 or need_dh0:
                matmul_into(dah[t], WhT, dh)  # (dG2) dh_{t-1} = da^h_t Wh^T ...
                dh += dh_prev  # ... + dh ⊙ z (dG5)
    else:
        drh = drec
        Wh_rzT, Wh_nT = Wh[:, : 2 * H].T, Wh[:, 2 * H :].T
        for t in range(hi - 1, lo - 1, -1):
            kernels.gru_cho_cell_backward(dhs[t], dh, cache.gates[t], h[t], dax[t], dh_prev)
            #   (dG5)  dz = dh ⊙ (h_{t-1} - n), dn = dh ⊙ (1 - z);  dh_prev = dh ⊙ z
            #   (dG4c) da^n = dn ⊙ (1 - n²);   (dG3) da^z = dz ⊙ z(1 - z)
            matmul_into(dax[t, :, 2 * H :], Wh_nT, drh)  # (dG4c) dq = da^n Wh_n^T
            kernels.gru_rz_backward(drh, cache.gates[t], h[t], dax[t], dh_prev)
            #   (dG4c) dr = dq ⊙ h_{t-1};  dh_prev += dq ⊙ r;   (dG3) da^r = dr ⊙ r(1 - r)
            if t > 0 or need_dh0:
                matmul_into(dax[t, :, : 2 * H], Wh_rzT, dh)  # (dG2c) da^{h,rz} Wh_rz^T ...
                dh += dh_prev  # ... + dh ⊙ z + dq ⊙ r


# --------------------------------------------------------------------------------------------
# Speed path: the same T steps in one Numba call (fast/timeloop.py). Used when BLAS runs on one
# thread (``timeloop.use_time_loop``); the results equal the Python loops' up to rounding.
# --------------------------------------------------------------------------------------------


def _forward_steps_numba(ax, Wh, bx, bh, h, gates, aux, ah, reset_after, ws, tag) -> None:
    """The loop over t of ``gru_forward_unchecked`` in one Numba call (G2-G5, or G2c-G5)."""
    H = Wh.shape[0]
    WhT = ws.empty(tag + ".WhT", (3 * H, H), Wh.dtype)
    np.copyto(WhT, Wh.T)  # matmul_nt reads Wh's columns as contiguous rows
    if reset_after:
        (ahw,) = ah
        timeloop.gru_forward_loop(ax, bx, WhT, bh, h, gates, aux, ahw)
    else:
        ahw_rz, ahw_n = ah
        timeloop.gru_cho_forward_loop(
            ax, bx, WhT[: 2 * H], WhT[2 * H :], bh, h, gates, aux, ahw_rz, ahw_n
        )


def _backward_steps_numba(dhs, dh, cache: GRUCache, dax, drec, dh_prev, need, ws, tag, lo, hi):
    """The reverse loop of ``_backward_steps`` in one Numba call, on the slices of steps lo..hi-1
    of the arrays (the whole of them without lengths)."""
    Wh, H = cache.Wh, cache.Wh.shape[0]
    dhs, gates, h, dax = dhs[lo:hi], cache.gates[lo:hi], cache.h[lo:hi], dax[lo:hi]
    if cache.reset_after:
        ahn, dah = cache.aux[lo:hi], drec[lo:hi]
        timeloop.gru_backward_loop(dhs, dh, gates, ahn, h, Wh, dax, dah, dh_prev, need)
    else:  # with contiguous copies of Wh's two blocks
        Wh_rz = ws.empty(tag + ".Wh_rz", (H, 2 * H), Wh.dtype)
        Wh_n = ws.empty(tag + ".Wh_n", (H, H), Wh.dtype)
        np.copyto(Wh_rz, Wh[:, : 2 * H])
        np.copyto(Wh_n, Wh[:, 2 * H :])
        timeloop.gru_cho_backward_loop(dhs, dh, gates, h, Wh_rz, Wh_n, dax, drec, dh_prev, need)
