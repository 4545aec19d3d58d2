"""LSTMP layer: the LSTM with peepholes, cell clipping and a recurrent projection.

The full LSTMCell of TensorFlow (``use_peepholes``, ``cell_clip``, ``num_proj``,
``proj_clip``) and the ``proj_size`` of PyTorch's ``nn.LSTM``, from Sak, Senior and Beaufays
(2014). Equations P1-P8 and their backward dP8-dP1 are derived in ``docs/lstmp.md``; the
comments below cite them. Every option off, the layer is the LSTM of ``lstm.py`` (L1-L6).

Layout is time-major: x (T, B, D), hs (T, B, P), h states (B, P), cell states (B, H), with
P = W_proj.shape[1] when the layer projects and P = H otherwise. Gate blocks in Wx (D, 4H),
Wh (P, 4H) and b (4H,) are ordered i, f, g, o; peepholes (3, H) holds the rows w_ci, w_cf, w_co.

Speed design, as in ``lstm.py``: one GEMM for the input projection of all T steps (P1), one
GEMM per step for the recurrence (P1) and one for the projection (P8), one fused Numba kernel
for the gates, peepholes and cell clip (P2-P7, ``kernels.lstmp_cell_forward``); backward, the
weight gradients are single GEMMs over all steps. The projection's clip (P8, dP8) is NumPy.
There is no Numba time loop (``fast/timeloop.py``) for this layer.

``state_mask=`` adds state dropout on h_{t-1} where it enters the recurrent product (D4 of
``docs/dropout.md``, with the variational mask shapes of D5); the language model runs an LSTM
layer with state dropout through this file.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Real

import numpy as np

from . import _checks, dropout, kernels, sequences
from .fast.blas import matmul_into


@dataclass
class LSTMPCache:
    """What ``lstmp_backward`` needs from the forward pass.

    x (T, B, D); Wx (D, 4H); Wh (P, 4H); peep (3, H) (zeros when the layer has none);
    W_proj (H, P) or None; cell_clip, proj_clip: the bounds (inf when not clipping);
    gates (T, B, 4H) activated [i, f, g, o]; h (T+1, B, P) with h[0] = h0; c (T+1, B, H) with
    c[0] = c0, clipped (P5); cu (T, B, H) the cells before the clip (P4; a view of c[1:] when
    there is no cell clip); tc (T, B, H) = tanh(c[1:]); m (T, B, H) = o ⊙ tanh(c) (P7) when
    projecting, else None (then m = h[1:]); hu (T, B, P) the projection before its clip (P8)
    or None; has_peepholes: whether to return dpeepholes; lengths (B,) or None; state_mask and
    hd: the state dropout's mask and the dropped h_{t-1} (D4), or None.
    """

    x: np.ndarray
    Wx: np.ndarray
    Wh: np.ndarray
    peep: np.ndarray
    W_proj: np.ndarray | None
    cell_clip: float
    proj_clip: float
    gates: np.ndarray
    h: np.ndarray
    c: np.ndarray
    cu: np.ndarray
    tc: np.ndarray
    m: np.ndarray | None
    hu: np.ndarray | None
    has_peepholes: bool
    lengths: np.ndarray | None = None
    state_mask: np.ndarray | None = None  # (T, B, P), (B, P) or (1, P): D4 with D5
    hd: np.ndarray | None = None  # (T, B, P) the dropped h_{t-1} ⊙ m_t that entered P1 (D4)


def _bound(name: str, value: object) -> float | None:
    """A clip bound: None, or a finite number > 0 (not a bool)."""
    if value is None:
        return None
    if isinstance(value, bool | np.bool_) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a positive number or None, got {value!r}")
    value = float(value)
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be finite and > 0 (or None for no clip), got {value}")
    return value


def _check_state_mask(state_mask, T: int, B: int, P: int, dt: np.dtype):
    """(D5) A state dropout mask: (T, B, P) fresh per step, (B, P) per sequence or (1, P) per
    batch, of x's dtype and finite; None for no state dropout."""
    if state_mask is None:
        return None
    if not isinstance(state_mask, np.ndarray):
        raise TypeError(f"state_mask must be a numpy array, got {type(state_mask).__name__}")
    state_mask = _checks.float_array("state_mask", state_mask, state_mask.ndim, dt)
    if state_mask.shape not in ((T, B, P), (B, P), (1, P)):
        raise ValueError(f"state_mask must have shape (T, B, P) = {(T, B, P)}, (B, P) = "
                         f"{(B, P)} or (1, P) = {(1, P)}, got {state_mask.shape}")  # fmt: skip
    _checks.expect_finite(state_mask=state_mask)
    return state_mask


def _check_lstmp(x, h0, c0, Wx, Wh, b, forget_bias, peepholes, cell_clip, W_proj, proj_clip):
    x = _checks.float_array("x", x, 3)
    dt = x.dtype
    h0 = _checks.float_array("h0", h0, 2, dt)
    c0 = _checks.float_array("c0", c0, 2, dt)
    Wx = _checks.float_array("Wx", Wx, 2, dt)
    Wh = _checks.float_array("Wh", Wh, 2, dt)
    b = _checks.float_array("b", b, 1, dt)
    if peepholes is not None:
        peepholes = _checks.float_array("peepholes", peepholes, 2, dt)
    if W_proj is not None:
        W_proj = _checks.float_array("W_proj", W_proj, 2, dt)
    T, B, D = x.shape
    _checks.expect_nonempty("x", x, "(T, B, D)")
    H = c0.shape[1]
    if H == 0:
        raise ValueError(f"c0 must have shape (B, H) with H >= 1, got {c0.shape}")
    _checks.expect_time_major(x, h0)
    _checks.expect_shape("c0", c0, (B, H), "(B, H)")
    if W_proj is not None:
        P = W_proj.shape[1]
        if P == 0:
            raise ValueError(f"W_proj must have shape (H, P) with P >= 1, got {W_proj.shape}")
        _checks.expect_shape("W_proj", W_proj, (H, P), "(H, P)")
        _checks.expect_shape("h0", h0, (B, P), "(B, P), P = W_proj.shape[1]")
        _checks.expect_shape("Wh", Wh, (P, 4 * H), "(P, 4H)")
    else:
        _checks.expect_shape("h0", h0, (B, H), "(B, H)")
        _checks.expect_shape("Wh", Wh, (H, 4 * H), "(H, 4H)")
    _checks.expect_shape("Wx", Wx, (D, 4 * H), "(D, 4H)")
    _checks.expect_shape("b", b, (4 * H,), "(4H,)")
    if peepholes is not None:
        _checks.expect_shape("peepholes", peepholes, (3, H), "(3, H)")
    _checks.expect_finite(x=x, h0=h0, c0=c0, Wx=Wx, Wh=Wh, b=b)
    if peepholes is not None:
        _checks.expect_finite(peepholes=peepholes)
    if W_proj is not None:
        _checks.expect_finite(W_proj=W_proj)
    if isinstance(forget_bias, bool | np.bool_) or not isinstance(forget_bias, Real):
        raise TypeError(f"forget_bias must be a number, got {forget_bias!r}")
    if not np.isfinite(forget_bias):
        raise ValueError(f"forget_bias must be finite, got {forget_bias}")
    cell_clip = _bound("cell_clip", cell_clip)
    proj_clip = _bound("proj_clip", proj_clip)
    if proj_clip is not None and W_proj is None:
        raise ValueError("proj_clip clips the projection: it needs W_proj (got W_proj=None)")
    return x, h0, c0, Wx, Wh, b, peepholes, cell_clip, W_proj, proj_clip


def lstmp_forward(
    x: np.ndarray,
    h0: np.ndarray,
    c0: np.ndarray,
    Wx: np.ndarray,
    Wh: np.ndarray,
    b: np.ndarray,
    *,
    forget_bias: float = 0.0,
    peepholes: np.ndarray | None = None,
    cell_clip: float | None = None,
    W_proj: np.ndarray | None = None,
    proj_clip: float | None = None,
    lengths: np.ndarray | None = None,
    state_mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, LSTMPCache]:
    """Run an LSTMP layer over a whole sequence (P1-P8 of docs/lstmp.md).

    For t = 1..T, with the gate blocks of a_t ordered i, f, g, o:

        (P1)  a_t = x_t Wx + h_{t-1} Wh + b
        (P2)  i_t = σ(a^i_t + w_ci ⊙ c_{t-1}),  f_t = σ(a^f_t + forget_bias + w_cf ⊙ c_{t-1})
        (P3)  g_t = tanh(a^g_t)
        (P4)  c̃_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t
        (P5)  c_t = clip(c̃_t, -cell_clip, cell_clip)
        (P6)  o_t = σ(a^o_t + w_co ⊙ c_t)
        (P7)  m_t = o_t ⊙ tanh(c_t)
        (P8)  h_t = clip(m_t W_proj, -proj_clip, proj_clip)   (h_t = m_t without W_proj)

    Parameters
    ----------
    x : (T, B, D) inputs, float32 or float64.
    h0 : (B, P) initial output state; c0 : (B, H) initial cell state (H = c0.shape[1]).
    Wx : (D, 4H), Wh : (P, 4H), b : (4H,) weights, gate blocks ordered i, f, g, o.
    forget_bias : added to the forget-gate pre-activation.
    peepholes : (3, H) rows [w_ci, w_cf, w_co], or None (no peephole connections).
    cell_clip : bound of P5 (> 0, finite), or None.
    W_proj : (H, P) projection, or None (P = H, h_t = m_t).
    proj_clip : bound of P8 (> 0, finite; needs W_proj), or None.
    lengths : (B,) integers in [0, T], or None: as in ``lstm_forward`` (M1-M2 of docs/rnn.md).
    state_mask : the scaled mask m / p of state dropout (D4 of docs/dropout.md), or None:
        h_{t-1} ⊙ m_t replaces h_{t-1} in P1's product h_{t-1} Wh (and nowhere else: the
        state carried on, hT, is not dropped). (T, B, P): a fresh mask m_t per step;
        (B, P) or (1, P): the same mask at every step (variational, D5).

    Returns
    -------
    hs : (T, B, P) outputs h_1..h_T (a read-only view into the cache).
    hT : (B, P), cT : (B, H) final states (the state after step lengths[b] with lengths).
    cache : LSTMPCache for ``lstmp_backward``.
    """
    args = _check_lstmp(x, h0, c0, Wx, Wh, b, forget_bias, peepholes, cell_clip, W_proj, proj_clip)
    x, h0, c0, Wx, Wh, b, peepholes, cell_clip, W_proj, proj_clip = args
    T, B = x.shape[:2]
    state_mask = _check_state_mask(state_mask, T, B, h0.shape[1], x.dtype)
    lengths = sequences.prepare_lengths(lengths, T, B)
    return lstmp_forward_unchecked(
        x, h0, c0, Wx, Wh, b, forget_bias, peepholes, cell_clip, W_proj, proj_clip, lengths,
        state_mask=state_mask,
    )  # fmt: skip


def lstmp_forward_unchecked(
    x, h0, c0, Wx, Wh, b, forget_bias, peepholes, cell_clip, W_proj, proj_clip, lengths, *,
    state_mask=None,
):  # fmt: skip
    """``lstmp_forward`` without validation; ``lengths`` validated (``prepare_lengths``),
    ``state_mask`` of a shape D5 allows, or None."""
    T, B, D = x.shape
    H = c0.shape[1]
    P = h0.shape[1]
    dt = x.dtype
    inf = dt.type(np.inf)
    has_peepholes = peepholes is not None
    # Zero peepholes and an infinite bound make P2, P5 and P6 the LSTM's L3, L5 exactly.
    peep = peepholes if has_peepholes else np.zeros((3, H), dt)
    cclip = inf if cell_clip is None else dt.type(cell_clip)
    pclip = inf if proj_clip is None else dt.type(proj_clip)
    forget_bias = dt.type(forget_bias)  # a Python float would turn float32 math into float64
    ax = np.empty((T, B, 4 * H), dt)
    gates = np.empty((T, B, 4 * H), dt)
    h = np.empty((T + 1, B, P), dt)
    c = np.empty((T + 1, B, H), dt)
    cu = np.empty((T, B, H), dt) if cell_clip is not None else c[1:]
    tc = np.empty((T, B, H), dt)
    m = np.empty((T, B, H), dt) if W_proj is not None else h[1:]
    hu = np.empty((T, B, P), dt) if proj_clip is not None else None
    ah = np.empty((B, 4 * H), dt)
    hd = np.empty((T, B, P), dt) if state_mask is not None else None  # D4: h_{t-1} ⊙ m_t
    # (P1) x_t Wx for all T steps in one GEMM; the kernel adds b and h_{t-1} Wh.
    matmul_into(x.reshape(T * B, D), Wx, ax.reshape(T * B, 4 * H))
    h[0] = h0
    c[0] = c0
    for t in range(T):  # step t+1: h[t], c[t] hold h_{t-1}, c_{t-1} of the equations
        if state_mask is None:
            matmul_into(h[t], Wh, ah)  # (P1) the product h_{t-1} Wh
        else:  # (D4) the product takes the dropped (h_{t-1} ⊙ m_t) Wh; D5: m_t of a mask
            np.multiply(h[t], dropout.step_mask(state_mask, t), out=hd[t])
            matmul_into(hd[t], Wh, ah)
        kernels.lstmp_cell_forward(
            ax[t], ah, b, c[t], forget_bias, peep, cclip, gates[t], cu[t], c[t + 1], tc[t], m[t]
        )
        # ... and in the kernel, element by element:
        #   (P1) a = x_t Wx + h_{t-1} Wh + b
        #   (P2) i = σ(a^i + w_ci ⊙ c_{t-1}), f = σ(a^f + forget_bias + w_cf ⊙ c_{t-1})
        #   (P3) g = tanh(a^g);  (P4) c̃ = f ⊙ c_{t-1} + i ⊙ g;  (P5) c_t = clip(c̃)
        #   (P6) o = σ(a^o + w_co ⊙ c_t);  (P7) m_t = o ⊙ tanh(c_t)  (into h[t+1] if P = H)
        if W_proj is not None:
            if hu is None:
                matmul_into(m[t], W_proj, h[t + 1])  # (P8) h_t = m_t W_proj
            else:
                matmul_into(m[t], W_proj, hu[t])  # (P8) m_t W_proj, then its clip
                np.clip(hu[t], -pclip, pclip, out=h[t + 1])
    if lengths is None:
        hT, cT = h[T].copy(), c[T].copy()
    else:
        hT, cT = sequences.finish_forward(h, lengths, c)  # M1 (hT, cT), M2 (hs zero past end)
    hs = h[1:]
    hs.flags.writeable = False  # a view into the cache: writing to it would corrupt backward
    cache = LSTMPCache(
        x, Wx, Wh, peep, W_proj, cclip, pclip, gates, h, c, cu, tc,
        m if W_proj is not None else None, hu, has_peepholes, lengths, state_mask, hd,
    )  # fmt: skip
    return hs, hT, cT, cache


def lstmp_backward(
    dhs: np.ndarray, dhT: np.ndarray, dcT: np.ndarray, cache: LSTMPCache
) -> tuple[np.ndarray, ...]:
    """Full backpropagation through time (dP8-dP1 of docs/lstmp.md).

    For t = T..1, with dh = dhs_t + the gradient on h_t from step t+1 (``dhT`` at t = T) and
    dc the gradient on c_t from step t+1 (``dcT`` at t = T):

        (dP8)  dh̃ = dh ⊙ [|m_t W_proj| <= proj_clip];  dm = dh̃ W_projᵀ  (dm = dh without W_proj)
        (dP7)  do = dm ⊙ tanh(c_t);  dc += dm ⊙ o ⊙ (1 - tanh²(c_t))
        (dP6)  da^o = do ⊙ o(1 - o);  dc += da^o ⊙ w_co
        (dP5)  dc̃ = dc ⊙ [|c̃_t| <= cell_clip]
        (dP4)  di = dc̃ ⊙ g, df = dc̃ ⊙ c_{t-1}, dg = dc̃ ⊙ i;  dc_{t-1} = dc̃ ⊙ f + ...
        (dP3)  da^g = dg ⊙ (1 - g²)
        (dP2)  da^i = di ⊙ i(1 - i), da^f = df ⊙ f(1 - f);  dc_{t-1} += da^i ⊙ w_ci + da^f ⊙ w_cf
        (dP1)  dh_{t-1} = da_t Whᵀ
    then over all steps at once: dW_proj = Σ m_tᵀ dh̃_t (dP8), dw_ci = Σ da^i ⊙ c_{t-1},
    dw_cf = Σ da^f ⊙ c_{t-1} (dP2), dw_co = Σ da^o ⊙ c_t (dP6), dWh, dWx, db, dx (dP1).
    With lengths: as ``lstm_backward`` (dM1, dM2, M3 of docs/rnn.md).

    Returns
    -------
    dx (T, B, D), dh0 (B, P), dc0 (B, H), dWx (D, 4H), dWh (P, 4H), db (4H,),
    dpeepholes (3, H) or None, dW_proj (H, P) or None (None when that part is not used).
    """
    if not isinstance(cache, LSTMPCache):
        raise TypeError(
            f"cache must be the LSTMPCache from lstmp_forward, got {type(cache).__name__}"
        )
    T, B, H = cache.tc.shape
    P = cache.h.shape[2]
    dt = cache.x.dtype
    dhs = _checks.float_array("dhs", dhs, 3, dt)
    dhT = _checks.float_array("dhT", dhT, 2, dt)
    dcT = _checks.float_array("dcT", dcT, 2, dt)
    _checks.expect_shape("dhs", dhs, (T, B, P), "(T, B, P)")
    _checks.expect_shape("dhT", dhT, (B, P), "(B, P)")
    _checks.expect_shape("dcT", dcT, (B, H), "(B, H)")
    _checks.expect_finite(dhs=dhs, dhT=dhT, dcT=dcT)
    return lstmp_backward_unchecked(dhs, dhT, dcT, cache)


def lstmp_backward_unchecked(dhs, dhT, dcT, cache: LSTMPCache) -> tuple:
    """``lstmp_backward`` without validation."""
    x, Wx, Wh, W_proj = cache.x, cache.Wx, cache.Wh, cache.W_proj
    T, B, D = x.shape
    H = cache.c.shape[2]
    P = cache.h.shape[2]
    dt = x.dtype
    da = np.empty((T, B, 4 * H), dt)
    dh = np.empty((B, P), dt)
    dc = np.empty((B, H), dt)
    # With a projection: dh̃_t of every step (dP8), for dW_proj as one GEMM; dm of one step.
    dhp = np.empty((T, B, P), dt) if W_proj is not None else None
    dm = np.empty((B, H), dt) if W_proj is not None else None
    zeros = np.zeros((B, H), dt) if W_proj is not None else None
    lengths = cache.lengths
    if lengths is None:
        dh[...] = dhT
        dc[...] = dcT
    else:
        dhs = sequences.masked_dhs(dhs, lengths)  # (dM2) dhs past the end has no effect
        dh[...] = 0  # (dM1) rows past their end carry no gradient until their last step
        dc[...] = 0
    WhT = Wh.T
    for lo, hi, rows in sequences.backward_segments(lengths, T):  # one segment without lengths
        if lengths is not None:
            dh[rows] += dhT[rows]  # (M3) dhT, dcT flow into the state of step lengths[b]
            dc[rows] += dcT[rows]
        for t in range(hi - 1, lo - 1, -1):  # step t+1: c[t] holds c_{t-1} of the equations
            if W_proj is None:
                up, nxt = dhs[t], dh  # m_t = h_t: the kernel adds the two
            else:
                np.add(dhs[t], dh, out=dhp[t])  # the total gradient on h_t
                if cache.hu is not None:
                    dhp[t][np.abs(cache.hu[t]) > cache.proj_clip] = 0  # (dP8) the clip
                matmul_into(dhp[t], W_proj.T, dm)  # (dP8) dm = dh̃ W_projᵀ
                up, nxt = dm, zeros
            kernels.lstmp_cell_backward(
                up, nxt, dc, cache.gates[t], cache.c[t], cache.cu[t], cache.tc[t], cache.peep,
                cache.cell_clip, da[t],
            )  # fmt: skip
            # ... in the kernel, element by element, with dm the gradient on m_t:
            #   (dP7) do = dm ⊙ tanh(c_t);  dc += dm ⊙ o ⊙ (1 - tanh²(c_t))
            #   (dP6) da^o = do ⊙ o(1 - o);  dc += da^o ⊙ w_co
            #   (dP5) dc̃ = dc where |c̃_t| <= cell_clip, else 0
            #   (dP4) di = dc̃ ⊙ g, df = dc̃ ⊙ c_{t-1}, dg = dc̃ ⊙ i;  dc_{t-1} = dc̃ ⊙ f
            #   (dP3) da^g = dg ⊙ (1 - g²)
            #   (dP2) da^i = di ⊙ i(1 - i), da^f = df ⊙ f(1 - f);
            #         dc_{t-1} += da^i ⊙ w_ci + da^f ⊙ w_cf
            matmul_into(da[t], WhT, dh)  # (dP1) dh_{t-1} = da_t Whᵀ
            if cache.state_mask is not None:
                dh *= dropout.step_mask(cache.state_mask, t)  # (dD4) dh_{t-1} = (da_t Whᵀ) ⊙ m_t
    dA = da.reshape(T * B, 4 * H)
    h_in = cache.h[:T] if cache.hd is None else cache.hd  # (dD4) the h_{t-1} ⊙ m_t of P1
    dWh = h_in.reshape(T * B, P).T @ dA  # (dP1) dWh = Σ h_{t-1}ᵀ da_t
    dWx = x.reshape(T * B, D).T @ dA  # (dP1) dWx = Σ x_tᵀ da_t
    db = dA.sum(axis=0)  # (dP1) db
    dx = (dA @ Wx.T).reshape(T, B, D)  # (dP1) dx_t = da_t Wxᵀ
    dpeep = None
    if cache.has_peepholes:
        dpeep = np.empty((3, H), dt)
        c_prev, c_new = cache.c[:T], cache.c[1:]
        dpeep[0] = np.einsum("tbh,tbh->h", da[:, :, :H], c_prev)  # (dP2) dw_ci
        dpeep[1] = np.einsum("tbh,tbh->h", da[:, :, H : 2 * H], c_prev)  # (dP2) dw_cf
        dpeep[2] = np.einsum("tbh,tbh->h", da[:, :, 3 * H :], c_new)  # (dP6) dw_co
    dW_proj = None
    if W_proj is not None:
        # (dP8) dW_proj = Σ m_tᵀ dh̃_t; rows past their end have dh̃ = 0
        dW_proj = cache.m.reshape(T * B, H).T @ dhp.reshape(T * B, P)
    return dx, dh, dc, dWx, dWh, db, dpeep, dW_proj
