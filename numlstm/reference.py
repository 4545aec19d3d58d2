"""The whole engine written plainly in NumPy, one line per equation: read this first.

Every layer of numlstm, and the loss, forward and backward, written straight from the
equations of the docs, with the equation's label at the end of each line:

* plain RNN: R1-R2 and dR2-dR1 of ``docs/rnn.md``, with the variable-length masking M1-M3,
  dM1-dM2 shared by the three layers, ``reverse_sequence`` (V1) and bidirectional layers
  (V2, dV2) of its sections 5-6;
* LSTM: L1-L6 and dL6-dL1 of ``docs/lstm.md``;
* LSTMP (peepholes, cell clip, projection): P1-P8 and dP8-dP1 of ``docs/lstmp.md``;
* GRU: G1-G5 (``reset_after=True``), G2c/G4c (``reset_after=False``) and their backward
  dG5-dG1, dG4c, dG2c of ``docs/gru.md``;
* embedding E1/dE1, dropout D1/dD1, softmax cross-entropy S1-S3 / dS3·dS2 / dS1 of
  ``docs/layers.md``, and the stacked language model of its section 4, with the LSTMP layers
  and tied embeddings (T1, dT1) of its section 4.3 (its layers LSTM, GRU or plain RNN);
* gradient clipping O1-O2, SGD O3 and Adam O5-O8 of ``docs/optim.md``.

Nothing here is fast: no Numba, no reused buffers, no threads, no fused kernels, no
"GEMM over all steps" tricks. A sequence layer is a Python loop over the step function, as in
cs231n's ``rnn_layers.py``, and each step keeps what its backward pass needs in a plain dict
(its "cache"). The functions take and return the same arguments, in the same order and with
the same shapes, as their fast counterparts in ``numlstm`` (``lstm_forward``,
``gru_backward``, ``softmax_xent_forward_backward``, ...), so either can be called from the
same code and their results compared; ``loss_and_grads(model, ...)`` returns what
``model.loss_and_grads(...)`` returns. ``tests/test_reference.py`` checks this file against
central differences and the fast paths against this file. ``docs/reference.md`` shows how to
step through it in a debugger.

Conventions (``docs/lstm.md`` section 1): time-major sequences x (T, B, D), row vectors
(a = x Wx + h Wh + b), gate blocks i, f, g, o (LSTM) and r, z, n (GRU) side by side in the
columns of the weights. For any array X, dX is the gradient of the scalar loss with respect
to X and has the shape of X. Arrays keep the dtype they are given (float32 or float64).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

Cache = dict[str, Any]
State = list[tuple[np.ndarray, ...]]


def sigmoid(a: np.ndarray) -> np.ndarray:
    """The logistic function 1 / (1 + e^-a), elementwise (lstm.md section 1)."""
    return 1 / (1 + np.exp(-a))


# --------------------------------------------------------------------------------------------
# LSTM (docs/lstm.md)
# --------------------------------------------------------------------------------------------


def lstm_step_forward(
    x_t: np.ndarray,
    h_prev: np.ndarray,
    c_prev: np.ndarray,
    Wx: np.ndarray,
    Wh: np.ndarray,
    b: np.ndarray,
    forget_bias: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, Cache]:
    """One LSTM step: x_t (B, D), h_prev, c_prev (B, H) -> h_t, c_t (B, H), cache.

        a_t = x_t Wx + b + h_{t-1} Wh                    (L1, L2)
        i_t = σ(a_t^i), f_t = σ(a_t^f + b_f), o_t = σ(a_t^o)   (L3)
        g_t = tanh(a_t^g)                                (L4)
        c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t                  (L5)
        h_t = o_t ⊙ tanh(c_t)                            (L6)

    Wx (D, 4H), Wh (H, 4H), b (4H,), blocks i, f, g, o; b_f is ``forget_bias``.
    """
    H = h_prev.shape[1]
    a = x_t @ Wx + b + h_prev @ Wh  # (L1, L2) [B, 4H]
    i = sigmoid(a[:, 0:H])  # (L3)
    f = sigmoid(a[:, H : 2 * H] + forget_bias)  # (L3)
    g = np.tanh(a[:, 2 * H : 3 * H])  # (L4)
    o = sigmoid(a[:, 3 * H : 4 * H])  # (L3)
    c = f * c_prev + i * g  # (L5)
    h = o * np.tanh(c)  # (L6)
    cache = {"x": x_t, "h_prev": h_prev, "c_prev": c_prev, "Wx": Wx, "Wh": Wh,
             "i": i, "f": f, "g": g, "o": o, "c": c}  # fmt: skip
    return h, c, cache


def lstm_step_backward(
    dh: np.ndarray, dc: np.ndarray, cache: Cache
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Backward of one step: dh, dc (B, H) -> dx (B, D), dh_prev, dc_prev, dWx, dWh, db.

    ``dh`` is the total gradient of h_t; ``dc`` the gradient of c_t through c_{t+1} only
    (lstm.md section 3.3). dWx, dWh, db are this step's terms of the sums over time.

        do_t = dh_t ⊙ tanh(c_t);  dc_t += dh_t ⊙ o_t ⊙ (1 - tanh²(c_t))       (dL6)
        di_t = dc_t ⊙ g_t;  df_t = dc_t ⊙ c_{t-1};  dg_t = dc_t ⊙ i_t         (dL5)
        dc_{t-1} = dc_t ⊙ f_t                                                 (dL5)
        da_t^g = dg_t ⊙ (1 - g_t²)                                            (dL4)
        da_t^i = di_t ⊙ i_t(1 - i_t), same for f and o                        (dL3)
        dh_{t-1} = da_t Whᵀ;  dWh = h_{t-1}ᵀ da_t                             (dL2)
        dx_t = da_t Wxᵀ;  dWx = x_tᵀ da_t;  db = Σ_rows da_t                  (dL1)
    """
    x, h_prev, c_prev = cache["x"], cache["h_prev"], cache["c_prev"]
    Wx, Wh = cache["Wx"], cache["Wh"]
    i, f, g, o, c = cache["i"], cache["f"], cache["g"], cache["o"], cache["c"]
    tc = np.tanh(c)
    do = dh * tc  # (dL6)
    dc = dc + dh * o * (1 - tc * tc)  # (dL6) the two paths into c_t add
    di = dc * g  # (dL5)
    df = dc * c_prev  # (dL5)
    dg = dc * i  # (dL5)
    dc_prev = dc * f  # (dL5)
    dag = dg * (1 - g * g)  # (dL4)
    dai = di * i * (1 - i)  # (dL3)
    daf = df * f * (1 - f)  # (dL3) f already includes forget_bias, so nothing changes
    dao = do * o * (1 - o)  # (dL3)
    da = np.concatenate([dai, daf, dag, dao], axis=1)  # [B, 4H], blocks i, f, g, o
    dh_prev = da @ Wh.T  # (dL2)
    dWh = h_prev.T @ da  # (dL2)
    dx = da @ Wx.T  # (dL1)
    dWx = x.T @ da  # (dL1)
    db = da.sum(axis=0)  # (dL1)
    return dx, dh_prev, dc_prev, dWx, dWh, db


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
    state_mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[Cache]]:
    """L1-L6 for t = 1..T: x (T, B, D), h0, c0 (B, H) -> hs (T, B, H), hT, cT, caches.

    ``lengths`` (B,): the masked update M1-M2 of rnn.md section 5 at every step (past its end
    a sequence keeps its state and outputs zeros); None: every step is real.
    ``state_mask``: state dropout (D4 of dropout.md), the scaled mask m / p, (T, B, H) or, the
    same at every step, (B, H) or (1, H) (D5); h_{t-1} ⊙ m_t enters the product h_{t-1} Wh.
    """
    T = x.shape[0]
    h, c = h0, c0
    hs, caches = [], []
    for t in range(T):
        sm = None if state_mask is None else _mask_at(state_mask, t)  # (D5)
        h_in = h if sm is None else h * sm  # (D4) the dropped h_{t-1}; h itself carries on
        h_new, c_new, cache = lstm_step_forward(x[t], h_in, c, Wx, Wh, b, forget_bias)  # L1-L6
        cache["state_mask"] = sm
        m = step_mask(lengths, t, h)  # m_t (B, 1): 1 while step t+1 is real
        h = m * h_new + (1 - m) * h  # (M1) a finished sequence keeps its state
        c = m * c_new + (1 - m) * c  # (M1)
        cache["m"] = m
        hs.append(m * h)  # (M2) and outputs zero
        caches.append(cache)
    return np.stack(hs), h, c, caches  # (M3) h, c: the state after step lengths[b]


def lstm_backward(
    dhs: np.ndarray, dhT: np.ndarray, dcT: np.ndarray, caches: list[Cache]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """dL6-dL1 for t = T..1: -> dx (T, B, D), dh0, dc0 (B, H), dWx, dWh, db.

    ``dhT``, ``dcT`` are the gradients of the final state from a later segment (lstm.md
    section 5; zeros in truncated BPTT). Weights are used at every step, so their gradients
    are sums over the steps (lstm.md section 4). With lengths, dM2 and dM1 at every step.
    """
    T = dhs.shape[0]
    dx = [None] * T
    dh_rec, dc = dhT, dcT  # what flows back into step T from outside the segment
    dWx = dWh = db = 0
    for t in range(T - 1, -1, -1):
        m = caches[t]["m"]
        dh = m * dhs[t] + dh_rec  # total gradient of h_t (lstm.md section 3.3); (dM2)
        # (dM1) the step sees m ⊙ dh, m ⊙ dc; the rest passes to the previous state unchanged
        dx[t], dh_rec, dc_new, dWx_t, dWh_t, db_t = lstm_step_backward(m * dh, m * dc, caches[t])
        if caches[t]["state_mask"] is not None:
            dh_rec = dh_rec * caches[t]["state_mask"]  # (dD4) through h_{t-1} ⊙ m_t
        dh_rec, dc = dh_rec + (1 - m) * dh, dc_new + (1 - m) * dc  # (dM1)
        dWx, dWh, db = dWx + dWx_t, dWh + dWh_t, db + db_t  # (lstm.md section 4)
    return np.stack(dx), dh_rec, dc, dWx, dWh, db


# --------------------------------------------------------------------------------------------
# LSTMP: peepholes, cell clipping, projection (docs/lstmp.md)
# --------------------------------------------------------------------------------------------


def lstmp_step_forward(
    x_t: np.ndarray,
    h_prev: np.ndarray,
    c_prev: np.ndarray,
    Wx: np.ndarray,
    Wh: np.ndarray,
    b: np.ndarray,
    *,
    forget_bias: float = 0.0,
    peepholes: np.ndarray | None = None,
    cell_clip: float | None = None,
    W_proj: np.ndarray | None = None,
    proj_clip: float | None = None,
) -> tuple[np.ndarray, np.ndarray, Cache]:
    """One LSTMP step: x_t (B, D), h_prev (B, P), c_prev (B, H) -> h_t (B, P), c_t (B, H), cache.

    Wx (D, 4H), Wh (P, 4H), b (4H,), blocks i, f, g, o; peepholes (3, H) rows [w_ci, w_cf,
    w_co] or None; W_proj (H, P) or None (then P = H and h_t = m_t). A bound of None: no clip.
    """
    H = c_prev.shape[1]
    w = np.zeros((3, H), x_t.dtype) if peepholes is None else peepholes
    a = x_t @ Wx + h_prev @ Wh + b  # (P1) [B, 4H]
    i = sigmoid(a[:, 0:H] + w[0] * c_prev)  # (P2)
    f = sigmoid(a[:, H : 2 * H] + forget_bias + w[1] * c_prev)  # (P2)
    g = np.tanh(a[:, 2 * H : 3 * H])  # (P3)
    cu = f * c_prev + i * g  # (P4) the cell before the clip
    c = cu if cell_clip is None else np.clip(cu, -cell_clip, cell_clip)  # (P5)
    o = sigmoid(a[:, 3 * H :] + w[2] * c)  # (P6) the output peephole sees the new cell
    m = o * np.tanh(c)  # (P7)
    hu = m if W_proj is None else m @ W_proj  # (P8) the projection
    h = hu if proj_clip is None else np.clip(hu, -proj_clip, proj_clip)  # (P8) its clip
    cache = {"x": x_t, "h_prev": h_prev, "c_prev": c_prev, "Wx": Wx, "Wh": Wh, "w": w,
             "peepholes": peepholes, "W_proj": W_proj, "cell_clip": cell_clip,
             "proj_clip": proj_clip, "i": i, "f": f, "g": g, "o": o, "cu": cu, "c": c,
             "m": m, "hu": hu}  # fmt: skip
    return h, c, cache


def lstmp_step_backward(dh: np.ndarray, dc: np.ndarray, cache: Cache) -> tuple:
    """Backward of one step: dh (B, P), the total gradient of h_t, and dc (B, H), the gradient
    of c_t through step t+1 -> dx, dh_prev, dc_prev, dWx, dWh, db, dpeepholes, dW_proj (this
    step's terms; the last two None when the layer has no peepholes / no projection)."""
    x, h_prev, c_prev, w = cache["x"], cache["h_prev"], cache["c_prev"], cache["w"]
    i, f, g, o, cu, c, m = (cache[k] for k in ("i", "f", "g", "o", "cu", "c", "m"))
    W_proj, cell_clip, proj_clip = cache["W_proj"], cache["cell_clip"], cache["proj_clip"]
    if proj_clip is not None:
        dh = dh * (np.abs(cache["hu"]) <= proj_clip)  # (dP8) the clip passes inside its bound
    dm = dh if W_proj is None else dh @ W_proj.T  # (dP8)
    dW_proj = None if W_proj is None else m.T @ dh  # (dP8)
    tc = np.tanh(c)
    do = dm * tc  # (dP7)
    dc = dc + dm * o * (1 - tc * tc)  # (dP7)
    dao = do * o * (1 - o)  # (dP6)
    dc = dc + dao * w[2]  # (dP6) the output peephole's path into c_t
    if cell_clip is not None:
        dc = dc * (np.abs(cu) <= cell_clip)  # (dP5) the clip passes inside its bound
    di = dc * g  # (dP4)
    df = dc * c_prev  # (dP4)
    dg = dc * i  # (dP4)
    dag = dg * (1 - g * g)  # (dP3)
    dai = di * i * (1 - i)  # (dP2)
    daf = df * f * (1 - f)  # (dP2)
    dc_prev = dc * f + dai * w[0] + daf * w[1]  # (dP4) and (dP2): three paths into c_{t-1}
    dpeep = None
    if cache["peepholes"] is not None:
        # (dP2) dw_ci, dw_cf and (dP6) dw_co: this step's terms
        dpeep = np.stack([(dai * c_prev).sum(0), (daf * c_prev).sum(0), (dao * c).sum(0)])
    da = np.concatenate([dai, daf, dag, dao], axis=1)  # [B, 4H], blocks i, f, g, o
    dh_prev = da @ cache["Wh"].T  # (dP1)
    dWh = h_prev.T @ da  # (dP1)
    dx = da @ cache["Wx"].T  # (dP1)
    dWx = x.T @ da  # (dP1)
    db = da.sum(axis=0)  # (dP1)
    return dx, dh_prev, dc_prev, dWx, dWh, db, dpeep, dW_proj


def lstmp_forward(
    x: np.ndarray,
    h0: np.ndarray,
    c0: np.ndarray,
    Wx: np.ndarray,
    Wh: np.ndarray,
    b: np.ndarray,
    *,
    lengths: np.ndarray | None = None,
    state_mask: np.ndarray | None = None,
    **options: Any,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[Cache]]:
    """P1-P8 for t = 1..T, with M1-M2 when ``lengths`` is given: -> hs (T, B, P), hT, cT,
    caches. ``options``: forget_bias, peepholes, cell_clip, W_proj, proj_clip.
    ``state_mask``: state dropout on h_{t-1} in P1's product, as in ``lstm_forward`` (D4, D5)."""
    h, c = h0, c0
    hs, caches = [], []
    for t in range(x.shape[0]):
        sm = None if state_mask is None else _mask_at(state_mask, t)  # (D5)
        h_in = h if sm is None else h * sm  # (D4) the dropped h_{t-1}; h itself carries on
        h_new, c_new, cache = lstmp_step_forward(x[t], h_in, c, Wx, Wh, b, **options)  # P1-P8
        cache["state_mask"] = sm
        m = step_mask(lengths, t, h)
        h = m * h_new + (1 - m) * h  # (M1)
        c = m * c_new + (1 - m) * c  # (M1)
        cache["mask"] = m
        hs.append(m * h)  # (M2)
        caches.append(cache)
    return np.stack(hs), h, c, caches  # (M3)


def lstmp_backward(dhs: np.ndarray, dhT: np.ndarray, dcT: np.ndarray, caches: list[Cache]):
    """dP8-dP1 for t = T..1, with dM2 and dM1: -> dx, dh0, dc0, dWx, dWh, db, dpeepholes,
    dW_proj (the last two None when not used)."""
    T = dhs.shape[0]
    dx = [None] * T
    dh_rec, dc = dhT, dcT
    sums: list = [0, 0, 0, 0, 0]  # dWx, dWh, db, dpeepholes, dW_proj
    for t in range(T - 1, -1, -1):
        m = caches[t]["mask"]
        dh = m * dhs[t] + dh_rec  # (dM2)
        dx[t], dh_rec, dc_new, *grads = lstmp_step_backward(m * dh, m * dc, caches[t])
        if caches[t]["state_mask"] is not None:
            dh_rec = dh_rec * caches[t]["state_mask"]  # (dD4) through h_{t-1} ⊙ m_t
        dh_rec, dc = dh_rec + (1 - m) * dh, dc_new + (1 - m) * dc  # (dM1)
        sums = [s if gk is None else s + gk for s, gk in zip(sums, grads, strict=True)]
    dWx, dWh, db, dpeep, dW_proj = sums
    dpeep = None if caches[0]["peepholes"] is None else dpeep
    dW_proj = None if caches[0]["W_proj"] is None else dW_proj
    return np.stack(dx), dh_rec, dc, dWx, dWh, db, dpeep, dW_proj


# --------------------------------------------------------------------------------------------
# GRU (docs/gru.md)
# --------------------------------------------------------------------------------------------


def gru_step_forward(
    x_t: np.ndarray,
    h_prev: np.ndarray,
    Wx: np.ndarray,
    Wh: np.ndarray,
    bx: np.ndarray,
    bh: np.ndarray,
    *,
    reset_after: bool = True,
) -> tuple[np.ndarray, Cache]:
    """One GRU step: x_t (B, D), h_prev (B, H) -> h_t (B, H), cache.

    reset_after=True (cuDNN, gru.md section 2):
        A_t^x = x_t Wx + bx                                  (G1)
        a_t^h = h_{t-1} Wh + bh                              (G2)
        r_t = σ(A^{x,r} + a^{h,r}), z_t = σ(A^{x,z} + a^{h,z})   (G3)
        n_t = tanh(A^{x,n} + r_t ⊙ a^{h,n})                  (G4)
        h_t = (1 - z_t) ⊙ n_t + z_t ⊙ h_{t-1}                (G5)
    reset_after=False (Cho et al., gru.md section 3): G2 and G4 become
        a_t^{h,rz} = h_{t-1} Wh^{rz} + bh^{rz}               (G2c)
        n_t = tanh(A^{x,n} + (r_t ⊙ h_{t-1}) Wh^n + bh^n)    (G4c)

    Wx (D, 3H), Wh (H, 3H), bx, bh (3H,), blocks r, z, n.
    """
    H = h_prev.shape[1]
    ax = x_t @ Wx + bx  # (G1) [B, 3H]
    cache = {"x": x_t, "h_prev": h_prev, "Wx": Wx, "Wh": Wh, "reset_after": reset_after}
    if reset_after:
        ah = h_prev @ Wh + bh  # (G2) [B, 3H]
        r = sigmoid(ax[:, 0:H] + ah[:, 0:H])  # (G3)
        z = sigmoid(ax[:, H : 2 * H] + ah[:, H : 2 * H])  # (G3)
        n = np.tanh(ax[:, 2 * H :] + r * ah[:, 2 * H :])  # (G4)
        cache["ahn"] = ah[:, 2 * H :]  # a^{h,n}, needed by dG4
    else:
        ah_rz = h_prev @ Wh[:, : 2 * H] + bh[: 2 * H]  # (G2c) [B, 2H]
        r = sigmoid(ax[:, 0:H] + ah_rz[:, 0:H])  # (G3)
        z = sigmoid(ax[:, H : 2 * H] + ah_rz[:, H : 2 * H])  # (G3)
        q = r * h_prev  # the reset state q_t of dG4c
        n = np.tanh(ax[:, 2 * H :] + q @ Wh[:, 2 * H :] + bh[2 * H :])  # (G4c)
        cache["q"] = q
    h = (1 - z) * n + z * h_prev  # (G5)
    cache.update(r=r, z=z, n=n)
    return h, cache


def gru_step_backward(
    dh: np.ndarray, cache: Cache
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Backward of one step: dh (B, H), the total gradient of h_t -> dx (B, D), dh_prev,
    dWx, dWh, dbx, dbh (this step's terms of the sums over time).

        dz_t = dh_t ⊙ (h_{t-1} - n_t);  dn_t = dh_t ⊙ (1 - z_t);  dh_{t-1} = dh_t ⊙ z_t  (dG5)
    reset_after=True:
        da_t^n = dn_t ⊙ (1 - n_t²);  dr_t = da_t^n ⊙ a_t^{h,n};  da_t^{h,n} = da_t^n ⊙ r_t  (dG4)
        da_t^r = dr_t ⊙ r_t(1 - r_t);  da_t^z = dz_t ⊙ z_t(1 - z_t)                   (dG3)
        dh_{t-1} += da_t^h Whᵀ;  dWh = h_{t-1}ᵀ da_t^h;  dbh = Σ_rows da_t^h          (dG2)
    reset_after=False:
        da_t^n = dn_t ⊙ (1 - n_t²);  dq_t = da_t^n (Wh^n)ᵀ                            (dG4c)
        dr_t = dq_t ⊙ h_{t-1};  dh_{t-1} += dq_t ⊙ r_t;  dWh^n = q_tᵀ da_t^n          (dG4c)
        da_t^r, da_t^z as above                                                       (dG3)
        dh_{t-1} += da_t^{h,rz} (Wh^{rz})ᵀ;  dWh^{rz} = h_{t-1}ᵀ da_t^{h,rz}          (dG2c)
    both:
        dx_t = dA_t^x Wxᵀ;  dWx = x_tᵀ dA_t^x;  dbx = Σ_rows dA_t^x                   (dG1)
    """
    x, h_prev, Wx, Wh = cache["x"], cache["h_prev"], cache["Wx"], cache["Wh"]
    r, z, n = cache["r"], cache["z"], cache["n"]
    H = h_prev.shape[1]
    dz = dh * (h_prev - n)  # (dG5)
    dn = dh * (1 - z)  # (dG5)
    dh_prev = dh * z  # (dG5) the direct path
    dan = dn * (1 - n * n)  # (dG4) / (dG4c) through the tanh
    if cache["reset_after"]:
        dr = dan * cache["ahn"]  # (dG4)
        dahn = dan * r  # (dG4)
        dar = dr * r * (1 - r)  # (dG3)
        daz = dz * z * (1 - z)  # (dG3)
        dah = np.concatenate([dar, daz, dahn], axis=1)  # [B, 3H]
        dh_prev = dh_prev + dah @ Wh.T  # (dG2)
        dWh = h_prev.T @ dah  # (dG2)
        dbh = dah.sum(axis=0)  # (dG2)
    else:
        dq = dan @ Wh[:, 2 * H :].T  # (dG4c)
        dr = dq * h_prev  # (dG4c)
        dh_prev = dh_prev + dq * r  # (dG4c)
        dWh_n = cache["q"].T @ dan  # (dG4c)
        dbh_n = dan.sum(axis=0)  # (dG4c)
        dar = dr * r * (1 - r)  # (dG3)
        daz = dz * z * (1 - z)  # (dG3)
        dah_rz = np.concatenate([dar, daz], axis=1)  # [B, 2H]
        dh_prev = dh_prev + dah_rz @ Wh[:, : 2 * H].T  # (dG2c)
        dWh_rz = h_prev.T @ dah_rz  # (dG2c)
        dbh_rz = dah_rz.sum(axis=0)  # (dG2c)
        dWh = np.concatenate([dWh_rz, dWh_n], axis=1)
        dbh = np.concatenate([dbh_rz, dbh_n])
    dax = np.concatenate([dar, daz, dan], axis=1)  # dA_t^x [B, 3H] (dG3, dG4)
    dx = dax @ Wx.T  # (dG1)
    dWx = x.T @ dax  # (dG1)
    dbx = dax.sum(axis=0)  # (dG1)
    return dx, dh_prev, dWx, dWh, dbx, dbh


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
) -> tuple[np.ndarray, np.ndarray, list[Cache]]:
    """G1-G5 (or G1, G2c, G3, G4c, G5) for t = 1..T: x (T, B, D), h0 (B, H) -> hs (T, B, H),
    hT, caches. ``lengths`` (B,): M1-M2 at every step, as in ``lstm_forward``."""
    h = h0
    hs, caches = [], []
    for t in range(x.shape[0]):
        h_new, cache = gru_step_forward(x[t], h, Wx, Wh, bx, bh, reset_after=reset_after)
        m = step_mask(lengths, t, h)
        h = m * h_new + (1 - m) * h  # (M1)
        cache["m"] = m
        hs.append(m * h)  # (M2)
        caches.append(cache)
    return np.stack(hs), h, caches  # (M3)


def gru_backward(
    dhs: np.ndarray, dhT: np.ndarray, caches: list[Cache]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Backward for t = T..1: -> dx (T, B, D), dh0 (B, H), dWx, dWh, dbx, dbh.

    ``dhT`` is the gradient of h_T from a later segment (gru.md section 5). With lengths, dM2
    and dM1 at every step.
    """
    T = dhs.shape[0]
    dx = [None] * T
    dh_rec = dhT
    dWx = dWh = dbx = dbh = 0
    for t in range(T - 1, -1, -1):
        m = caches[t]["m"]
        dh = m * dhs[t] + dh_rec  # total gradient of h_t (gru.md section 2.2); (dM2)
        dx[t], dh_rec, dWx_t, dWh_t, dbx_t, dbh_t = gru_step_backward(m * dh, caches[t])
        dh_rec = dh_rec + (1 - m) * dh  # (dM1)
        dWx, dWh = dWx + dWx_t, dWh + dWh_t  # sums over the steps (lstm.md section 4)
        dbx, dbh = dbx + dbx_t, dbh + dbh_t
    return np.stack(dx), dh_rec, dWx, dWh, dbx, dbh


# --------------------------------------------------------------------------------------------
# Plain RNN (docs/rnn.md), variable lengths and bidirectional layers (rnn.md sections 5-6)
# --------------------------------------------------------------------------------------------


def step_mask(lengths: np.ndarray | None, t: int, like: np.ndarray) -> np.ndarray:
    """m_t (B, 1) for 0-based step t: 1 where t < lengths[b] (M1), in the dtype of ``like``;
    all ones without lengths."""
    if lengths is None:
        return np.ones((like.shape[0], 1), like.dtype)
    return (t < np.asarray(lengths))[:, None].astype(like.dtype)


def rnn_step_forward(
    x_t: np.ndarray, h_prev: np.ndarray, Wx: np.ndarray, Wh: np.ndarray, b: np.ndarray
) -> tuple[np.ndarray, Cache]:
    """One RNN step: h_t = tanh(x_t Wx + b + h_{t-1} Wh)   (R1, R2). Wx (D, H), Wh (H, H)."""
    h = np.tanh(x_t @ Wx + b + h_prev @ Wh)  # (R1) (R2)
    return h, {"x": x_t, "h_prev": h_prev, "h": h, "Wx": Wx, "Wh": Wh}


def rnn_step_backward(dh: np.ndarray, cache: Cache) -> tuple[np.ndarray, ...]:
    """Backward of one step: dh (B, H), the total gradient of h_t -> dx, dh_prev, dWx, dWh, db.

    da_t = dh_t ⊙ (1 - h_t²);  dh_{t-1} = da_t Whᵀ;  dWh = h_{t-1}ᵀ da_t     (dR2)
    dx_t = da_t Wxᵀ;  dWx = x_tᵀ da_t;  db = Σ_rows da_t                    (dR1)
    """
    h = cache["h"]
    da = dh * (1 - h * h)  # (dR2)
    dh_prev = da @ cache["Wh"].T  # (dR2)
    dWh = cache["h_prev"].T @ da  # (dR2)
    dx = da @ cache["Wx"].T  # (dR1)
    dWx = cache["x"].T @ da  # (dR1)
    return dx, dh_prev, dWx, dWh, da.sum(axis=0)  # (dR1) db


def rnn_forward(
    x: np.ndarray,
    h0: np.ndarray,
    Wx: np.ndarray,
    Wh: np.ndarray,
    b: np.ndarray,
    *,
    lengths: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, list[Cache]]:
    """R1-R2 for t = 1..T, with M1-M2 when ``lengths`` is given: -> hs (T, B, H), hT, caches."""
    h = h0
    hs, caches = [], []
    for t in range(x.shape[0]):
        h_new, cache = rnn_step_forward(x[t], h, Wx, Wh, b)  # R1, R2
        m = step_mask(lengths, t, h)
        h = m * h_new + (1 - m) * h  # (M1)
        cache["m"] = m
        hs.append(m * h)  # (M2)
        caches.append(cache)
    return np.stack(hs), h, caches  # (M3)


def rnn_backward(dhs: np.ndarray, dhT: np.ndarray, caches: list[Cache]) -> tuple[np.ndarray, ...]:
    """dR2-dR1 for t = T..1, with dM2 and dM1: -> dx (T, B, D), dh0, dWx, dWh, db."""
    T = dhs.shape[0]
    dx = [None] * T
    dh_rec = dhT
    dWx = dWh = db = 0
    for t in range(T - 1, -1, -1):
        m = caches[t]["m"]
        dh = m * dhs[t] + dh_rec  # (dM2)
        dx[t], dh_rec, dWx_t, dWh_t, db_t = rnn_step_backward(m * dh, caches[t])
        dh_rec = dh_rec + (1 - m) * dh  # (dM1)
        dWx, dWh, db = dWx + dWx_t, dWh + dWh_t, db + db_t
    return np.stack(dx), dh_rec, dWx, dWh, db


def reverse_sequence(x: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """(V1) y[t, b] = x[lengths[b] - 1 - t, b] for t < lengths[b], else x[t, b]: a loop."""
    y = x.copy()
    for b, n in enumerate(lengths):
        y[:n, b] = x[:n, b][::-1]  # (V1)
    return y


def bidirectional_forward(
    cell: str, x: np.ndarray, params_fw, params_bw, lengths=None, **options
) -> tuple[np.ndarray, tuple, tuple, Cache]:
    """(V2) the forward layer over x, concatenated with the backward layer over
    reverse_sequence(x) reversed back; as ``numlstm.bidirectional_forward``."""
    forward = {"rnn": rnn_forward, "lstm": lstm_forward, "gru": gru_forward}[cell]
    T, B = x.shape[:2]
    n = np.full(B, T) if lengths is None else np.asarray(lengths)
    *out_fw, caches_fw = forward(x, *params_fw, **options, lengths=lengths)
    *out_bw, caches_bw = forward(reverse_sequence(x, n), *params_bw, **options, lengths=lengths)
    hs = np.concatenate([out_fw[0], reverse_sequence(out_bw[0], n)], axis=2)  # (V2)
    cache = {"cell": cell, "n": n, "fw": caches_fw, "bw": caches_bw, "H": out_fw[0].shape[2]}
    return hs, tuple(out_fw[1:]), tuple(out_bw[1:]), cache


def bidirectional_backward(dhs: np.ndarray, cache: Cache) -> tuple[np.ndarray, tuple, tuple]:
    """(dV2) -> dx, grads of the forward layer, grads of the backward layer (after dx each)."""
    backward = {"rnn": rnn_backward, "lstm": lstm_backward, "gru": gru_backward}[cache["cell"]]
    H, n = cache["H"], cache["n"]
    zeros = np.zeros((dhs.shape[1], H), dhs.dtype)
    finals = (zeros, zeros) if cache["cell"] == "lstm" else (zeros,)
    dx_fw, *g_fw = backward(dhs[:, :, :H], *finals, cache["fw"])  # (dV2)
    dx_bw, *g_bw = backward(reverse_sequence(dhs[:, :, H:], n), *finals, cache["bw"])  # (dV2)
    return dx_fw + reverse_sequence(dx_bw, n), tuple(g_fw), tuple(g_bw)  # (dV2)


# --------------------------------------------------------------------------------------------
# Embedding, dropout, softmax cross-entropy (docs/layers.md)
# --------------------------------------------------------------------------------------------


def embedding_forward(ids: np.ndarray, W: np.ndarray) -> tuple[np.ndarray, Cache]:
    """(E1) e_n = W[k_n]: ids of any shape S, W (V, E) -> out of shape S + (E,), cache."""
    out = W[ids]  # (E1)
    return out, {"ids": ids, "shape": W.shape, "dtype": W.dtype}


def embedding_backward(dout: np.ndarray, cache: Cache) -> np.ndarray:
    """(dE1) dW[k] = sum of dout over the positions whose id is k. Returns dW (V, E)."""
    dW = np.zeros(cache["shape"], cache["dtype"])
    # A scatter-add: np.add.at adds once per position, so a word seen c times gets c terms
    # (``dW[ids] += dout`` would keep only one of them; layers.md section 1).
    np.add.at(dW, cache["ids"], dout)  # (dE1)
    return dW


def dropout_mask(
    shape: tuple[int, ...], keep_prob: float, rng: np.random.Generator, dtype=np.float32
) -> np.ndarray:
    """The scaled mask m / p of D1, m ~ Bernoulli(p): entries 0 or 1/keep_prob.

    Drawn exactly as ``numlstm.dropout_mask`` draws it (one ``rng.random`` call of this shape
    and dtype), so the same seeded rng gives the same mask here and there.
    """
    dtype = np.dtype(dtype)
    m = rng.random(shape, dtype=dtype) < keep_prob  # m_j = 1 with probability p
    return m.astype(dtype) * dtype.type(1 / keep_prob)


def dropout_forward(
    x: np.ndarray,
    keep_prob: float,
    rng: np.random.Generator | None = None,
    *,
    mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """(D1) y = x ⊙ m / p. Returns (y, cache), the cache being the scaled mask m / p.

    ``mask`` (already scaled) fixes the mask; otherwise it is drawn from ``rng``. With
    keep_prob = 1 and no mask the layer is the identity: (x, None).
    """
    if mask is None:
        if keep_prob == 1.0:
            return x, None
        mask = dropout_mask(x.shape, keep_prob, rng, x.dtype)
    y = x * mask  # (D1)
    return y, mask


def dropout_backward(dy: np.ndarray, cache: np.ndarray | None) -> np.ndarray:
    """(dD1) dx = dy ⊙ m / p, with the forward pass's mask."""
    if cache is None:
        return dy
    return dy * cache  # (dD1)


def softmax_xent_forward_backward(
    h: np.ndarray, W: np.ndarray, b: np.ndarray, targets: np.ndarray, batch_size: int
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """Linear + softmax + cross-entropy, and its gradients.

        Z = h W + b                                              (S1)
        log p_{n,k} = z_{n,k} - m_n - log Σ_j exp(z_{n,j} - m_n)   (S2), m_n = max_j z_{n,j}
        L = (1/B) Σ_n -log p_{n,y_n}                             (S3)
        dZ = (softmax(Z) - onehot(y)) / B                        (dS3·dS2)
        dW = hᵀ dZ;  db = Σ_n dZ_n;  dh = dZ Wᵀ                  (dS1)

    h (N, H) with N = T * B rows, W (H, V), b (V,), targets (N,) ids, batch_size B.
    Returns (loss, dh (N, H), dW (H, V), db (V,)). The loss is summed over all N positions
    and divided by B only (not by N): layers.md section 3, S3.
    """
    N = h.shape[0]
    rows = np.arange(N)
    Z = h @ W + b  # (S1) [N, V]
    m = Z.max(axis=1, keepdims=True)  # (S2) row maxima, so that exp cannot overflow
    logp = Z - m - np.log(np.exp(Z - m).sum(axis=1, keepdims=True))  # (S2)
    loss = -logp[rows, targets].sum() / batch_size  # (S3)
    dZ = np.exp(logp)  # softmax(Z)
    dZ[rows, targets] -= 1  # (dS3·dS2) softmax(Z) - onehot(y)
    dZ = dZ / batch_size  # (dS3·dS2)
    dW = h.T @ dZ  # (dS1)
    db = dZ.sum(axis=0)  # (dS1)
    dh = dZ @ W.T  # (dS1)
    return float(loss), dh, dW, db


def softmax_xent_loss(
    h: np.ndarray, W: np.ndarray, b: np.ndarray, targets: np.ndarray, batch_size: int
) -> float:
    """The loss alone (S1-S3), as ``softmax_xent_forward_backward`` computes it."""
    Z = h @ W + b  # (S1)
    m = Z.max(axis=1, keepdims=True)
    logp = Z - m - np.log(np.exp(Z - m).sum(axis=1, keepdims=True))  # (S2)
    return float(-logp[np.arange(h.shape[0]), targets].sum() / batch_size)  # (S3)


# --------------------------------------------------------------------------------------------
# The loss of a padded batch: only the valid positions count (docs/layers.md section 4.2)
# --------------------------------------------------------------------------------------------


def valid_positions(lengths: np.ndarray | None, T: int, B: int) -> np.ndarray:
    """w (T*B,) float, time-major like the rows of the softmax: w[t*B + b] = 1 if t < lengths[b]
    (position t of row b is a real word), else 0; all ones without lengths."""
    n = np.full(B, T) if lengths is None else np.asarray(lengths)
    w = np.zeros((T, B))
    for b in range(B):
        w[: n[b], b] = 1.0
    return w.reshape(-1)


def masked_softmax_xent_forward_backward(
    h: np.ndarray, W: np.ndarray, b: np.ndarray, targets: np.ndarray, w: np.ndarray,
    batch_size: int,
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """S1-S3 with the masked sum over valid positions, and its gradients:

        L = (1/B) Σ_n w_n (-log p_{n,y_n})                               (S3m)
        dZ_n = w_n (softmax(Z)_n - onehot(y_n)) / B                       (dS3m)
        dW = hᵀ dZ;  db = Σ_n dZ_n;  dh = dZ Wᵀ                            (dS1)

    w (N,) the 0/1 weights of ``valid_positions``. Returns (loss, dh, dW, db).
    """
    N = h.shape[0]
    rows = np.arange(N)
    Z = h @ W + b  # (S1)
    m = Z.max(axis=1, keepdims=True)
    logp = Z - m - np.log(np.exp(Z - m).sum(axis=1, keepdims=True))  # (S2)
    loss = -(w * logp[rows, targets]).sum() / batch_size  # (S3m) the masked sum
    dZ = np.exp(logp)
    dZ[rows, targets] -= 1  # softmax(Z) - onehot(y)
    dZ = dZ * w[:, None] / batch_size  # (dS3m) the padded rows are zero
    return float(loss), dZ @ W.T, h.T @ dZ, dZ.sum(axis=0)  # (dS1)


# --------------------------------------------------------------------------------------------
# The stacked language model (docs/layers.md section 4)
# --------------------------------------------------------------------------------------------


def _mask_at(mask: np.ndarray, t: int) -> np.ndarray:
    """(D5) step t's mask: mask[t] of a fresh (T, B, W) mask; a variational (B, W) or (1, W)
    mask is the same at every step (and a (1, W) one for every row: broadcasting)."""
    return mask[t] if mask.ndim == 3 else mask


def uses_lstmp(model: Any) -> bool:
    """Whether the model's layers are LSTMP layers (P1-P8): any of its LSTMP options is on."""
    return model.peepholes or model.cell_clip is not None or model.proj_size is not None


def softmax_weight(model: Any) -> np.ndarray:
    """The softmax's W (P, V): its own "softmax_w", or tied, the embedding's transpose."""
    p = model.params
    return p["embedding"].T if model.tie_embeddings else p["softmax_w"]  # (T1) W = Eᵀ


def site_widths(model: Any) -> dict[str, int]:
    """Each dropout site's width: E for the embedding and layer 0's input, P (the layers'
    output width) for the other inputs, the states h_{t-1} and the outputs."""
    E, P = model.embedding_size, model.output_size
    widths = {"embedding": E}
    for layer in range(model.num_layers):
        widths[f"l{layer}.input"] = E if layer == 0 else P
        widths[f"l{layer}.state"] = widths[f"l{layer}.output"] = P
    return widths


def site_keep_probs(model: Any, keep_prob: Any) -> dict[str, float]:
    """Every dropout site's keep probability, in drawing order (dropout.md): "embedding", then
    per layer l "l{l}.input", "l{l}.state", "l{l}.output". ``keep_prob`` a float k: the
    tutorial's dropout (k on the embedding and on every layer's output, D1); or a
    ``numlstm.Dropout`` (its ``*_keep_prob`` fields)."""
    if isinstance(keep_prob, int | float):
        k = float(keep_prob)
        probs = {"embedding": k}
        for layer in range(model.num_layers):
            probs.update({f"l{layer}.input": 1.0, f"l{layer}.state": 1.0, f"l{layer}.output": k})
        return probs
    probs = {"embedding": keep_prob.embedding_keep_prob}
    for layer in range(model.num_layers):
        for kind in ("input", "state", "output"):
            probs[f"l{layer}.{kind}"] = getattr(keep_prob, f"{kind}_keep_prob")
    return probs


def draw_masks(model: Any, T: int, B: int, keep_prob: Any, rng: np.random.Generator):
    """The dropout masks of a (B, T) batch, drawn from ``rng`` in the order in which
    ``model.loss_and_grads`` draws them: the same seeded rng gives the same masks.

    A float ``keep_prob``: the L + 1 masks of D1, the embedding's, then each layer's
    output's, each (T, B, H), as a list (with keep_prob = 1 there is no dropout: a list of
    None). A ``numlstm.Dropout``: a dict {site: mask or None} over every site, each mask of
    the shape D5 gives it: (T, B, W) fresh, (B, W) per sequence, (1, W) per batch. The width
    W is H, or with the model's embedding_size E and proj_size P: E for the embedding and
    layer 0's input, P for the other sites.
    """
    widths = site_widths(model)
    if isinstance(keep_prob, int | float):
        if keep_prob == 1.0:
            return [None] * (model.num_layers + 1)
        sites = ["embedding"] + [f"l{layer}.output" for layer in range(model.num_layers)]
        return [dropout_mask((T, B, widths[s]), keep_prob, rng, model.dtype) for s in sites]
    variational = keep_prob.variational

    def shape(w: int) -> tuple[int, ...]:  # (D5)
        return {None: (T, B, w), "sequence": (B, w), "batch": (1, w)}[variational]

    return {site: None if p == 1.0 else dropout_mask(shape(widths[site]), p, rng, model.dtype)
            for site, p in site_keep_probs(model, keep_prob).items()}  # fmt: skip


def site_masks(model: Any, masks: Any) -> dict:
    """Masks as a dict {site: mask or None}: the list form [embedding, each layer's output]
    of D1 as it is, a dict filled with None at the sites it leaves out."""
    names = list(site_keep_probs(model, 1.0))
    if isinstance(masks, dict):
        return {site: masks.get(site) for site in names}
    out = dict.fromkeys(names)
    out["embedding"] = masks[0]
    for layer in range(model.num_layers):
        out[f"l{layer}.output"] = masks[layer + 1]
    return out


def drop(x: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """(D1, D2, D3) x ⊙ m / p with the scaled mask (broadcast over the steps and rows for a
    variational (B, W) or (1, W) mask, D5); no mask: x."""
    return x if mask is None else x * mask


def model_forward(
    model: Any, x: np.ndarray, state: State, keep_prob: Any, masks: Any,
    lengths: np.ndarray | None = None,
) -> tuple[np.ndarray, State, list[Cache]]:  # fmt: skip
    """Embedding -> dropout -> L x (input dropout -> recurrent layer with state dropout ->
    output dropout) (layers.md section 4, dropout.md). x (B, T) ids; ``masks`` from
    ``draw_masks`` (list or dict; None entries: no dropout there); ``keep_prob`` is not used
    (the masks say everything); ``lengths`` (B,) or None: every layer runs the masked update
    M1-M2.

    Returns (top-layer outputs (T, B, H) after their dropout, final state, caches: first
    {"emb", "drop"}, then one per layer {"rnn", "in", "out"}, the masks of D2 and D3).
    """
    p = model.params
    m = site_masks(model, masks)
    ids = x.T  # (T, B): the layers are time-major
    e, emb_cache = embedding_forward(ids, p["embedding"])  # (E1)
    inp = drop(e, m["embedding"])  # (D1)
    caches: list[Cache] = [{"emb": emb_cache, "drop": m["embedding"]}]
    new_state: State = []
    for layer in range(model.num_layers):
        Wx, Wh = p[f"l{layer}.Wx"], p[f"l{layer}.Wh"]
        inp = drop(inp, m[f"l{layer}.input"])  # (D2)
        state_mask = m[f"l{layer}.state"]
        if uses_lstmp(model):
            h0, c0 = state[layer]
            hs, hT, cT, rnn_cache = lstmp_forward(
                inp, h0, c0, Wx, Wh, p[f"l{layer}.b"], lengths=lengths,
                forget_bias=model.forget_bias, peepholes=p.get(f"l{layer}.peepholes"),
                cell_clip=model.cell_clip, W_proj=p.get(f"l{layer}.W_proj"),
                proj_clip=model.proj_clip, state_mask=state_mask,
            )  # P1-P8, with (D4) in P1's product  # fmt: skip
            new_state.append((hT, cT))
        elif model.cell == "lstm":
            h0, c0 = state[layer]
            b = p[f"l{layer}.b"]
            # L1-L6, with (D4) h_{t-1} ⊙ m_t in L2's product when there is a state mask
            hs, hT, cT, rnn_cache = lstm_forward(
                inp, h0, c0, Wx, Wh, b, model.forget_bias, lengths=lengths,
                state_mask=state_mask)  # fmt: skip
            new_state.append((hT, cT))
        elif model.cell == "rnn":
            if state_mask is not None:
                raise ValueError("state dropout (D4) is for LSTM layers, not cell='rnn'")
            (h0,) = state[layer]
            hs, hT, rnn_cache = rnn_forward(inp, h0, Wx, Wh, p[f"l{layer}.b"], lengths=lengths)
            new_state.append((hT,))  # R1-R2, with M1-M2
        else:
            if state_mask is not None:
                raise ValueError("state dropout (D4) is for LSTM layers, not cell='gru'")
            (h0,) = state[layer]
            bx, bh = p[f"l{layer}.bx"], p[f"l{layer}.bh"]
            hs, hT, rnn_cache = gru_forward(
                inp, h0, Wx, Wh, bx, bh, reset_after=model.reset_after, lengths=lengths
            )
            new_state.append((hT,))
        inp = drop(hs, m[f"l{layer}.output"])  # (D3)
        caches.append({"rnn": rnn_cache, "in": m[f"l{layer}.input"],
                       "out": m[f"l{layer}.output"]})  # fmt: skip
    return inp, new_state, caches


def loss(
    model: Any,
    x: np.ndarray,
    y: np.ndarray,
    state: State,
    keep_prob: Any = 1.0,
    rng: np.random.Generator | None = None,
    *,
    masks: Sequence[np.ndarray | None] | dict | None = None,
    lengths: np.ndarray | None = None,
) -> tuple[float, State]:
    """What ``model.loss(x, y, state, keep_prob, rng, masks=masks, lengths=lengths)`` returns:
    (loss, state).

    x, y (B, T) ids (y is x shifted by one word); state as from ``model.init_state(B)``.
    ``lengths`` (B,): only the first lengths[b] positions of row b count (S3m).
    """
    B, T = x.shape
    if masks is None:
        masks = draw_masks(model, T, B, keep_prob, rng)
    top, new_state, _ = model_forward(model, x, state, keep_prob, masks, lengths)
    p = model.params
    targets = y.T.reshape(-1)  # time-major, like the rows of top
    h = top.reshape(T * B, model.output_size)
    W = softmax_weight(model)  # (T1) when tied
    if lengths is not None:  # (S3m) the masked sum
        w = valid_positions(lengths, T, B)
        loss = masked_softmax_xent_forward_backward(h, W, p["softmax_b"], targets, w, B)[0]
        return loss, new_state
    return softmax_xent_loss(h, W, p["softmax_b"], targets, B), new_state  # S1-S3


def loss_and_grads(
    model: Any,
    x: np.ndarray,
    y: np.ndarray,
    state: State,
    keep_prob: Any = 1.0,
    rng: np.random.Generator | None = None,
    *,
    masks: Sequence[np.ndarray | None] | dict | None = None,
    lengths: np.ndarray | None = None,
) -> tuple[float, dict[str, np.ndarray], State]:
    """What ``model.loss_and_grads(x, y, state, keep_prob, rng, masks=masks, lengths=lengths)``
    returns, from a ``numlstm.LanguageModel``'s parameters: (loss, grads, final state).

    x, y (B, T) ids; state as from ``model.init_state(B)``. ``keep_prob`` a float or a
    ``numlstm.Dropout`` (dropout.md); with dropout the masks are drawn from ``rng`` as the
    model draws them (``draw_masks``), or given in ``masks`` (list or dict).
    ``grads`` has the keys of ``model.params``; the embedding's gradient is a dense (V, H)
    array (the model's ``sparse_embedding=True`` holds the same numbers row-sparse). No
    gradient flows into ``state``: truncated BPTT (layers.md section 4). ``lengths`` (B,):
    a padded batch, S3m and dS3m in the softmax and M1-M2, dM2-dM1 in the layers.
    """
    B, T = x.shape
    H, L, p = model.hidden_size, model.num_layers, model.params
    P = model.output_size  # the top layer's width: H, or proj_size
    if masks is None:
        masks = draw_masks(model, T, B, keep_prob, rng)
    # E1, D1, then per layer D2, L1-L6 / P1-P8 (with D4 inside), G1-G5 or R1-R2, D3
    top, new_state, caches = model_forward(model, x, state, keep_prob, masks, lengths)
    targets = y.T.reshape(-1)  # time-major, like the rows of top
    W = softmax_weight(model)  # (T1) when tied
    if lengths is None:
        loss, dh, dW, db = softmax_xent_forward_backward(
            top.reshape(T * B, P), W, p["softmax_b"], targets, B
        )  # S1-S3, dS3·dS2, dS1
    else:  # S3m, dS3m, dS1: only the valid positions count
        w = valid_positions(lengths, T, B)
        loss, dh, dW, db = masked_softmax_xent_forward_backward(
            top.reshape(T * B, P), W, p["softmax_b"], targets, w, B
        )
    grads = {"softmax_w": dW, "softmax_b": db}
    d = dh.reshape(T, B, P)
    zeros = np.zeros((B, H), model.dtype)  # dhT = dcT = 0: truncated BPTT
    for layer in range(L - 1, -1, -1):
        d = dropout_backward(d, caches[layer + 1]["out"])  # (dD3) = dD1 with D3's mask
        if uses_lstmp(model):
            d, _, _, dWx, dWh, db, dpeep, dW_proj = lstmp_backward(
                d, np.zeros((B, P), model.dtype), zeros, caches[layer + 1]["rnn"]
            )  # dP8-dP1
            grads[f"l{layer}.b"] = db
            grads[f"l{layer}.peepholes"], grads[f"l{layer}.W_proj"] = dpeep, dW_proj
        elif model.cell == "lstm":
            d, _, _, dWx, dWh, db = lstm_backward(d, zeros, zeros, caches[layer + 1]["rnn"])
            grads[f"l{layer}.b"] = db
        elif model.cell == "rnn":
            d, _, dWx, dWh, db = rnn_backward(d, zeros, caches[layer + 1]["rnn"])  # dR2-dR1
            grads[f"l{layer}.b"] = db
        else:
            d, _, dWx, dWh, dbx, dbh = gru_backward(d, zeros, caches[layer + 1]["rnn"])
            grads[f"l{layer}.bx"], grads[f"l{layer}.bh"] = dbx, dbh
        grads[f"l{layer}.Wx"], grads[f"l{layer}.Wh"] = dWx, dWh
        d = dropout_backward(d, caches[layer + 1]["in"])  # (dD2) = dD1 with D2's mask
    d = dropout_backward(d, caches[0]["drop"])  # (dD1)
    grads["embedding"] = embedding_backward(d, caches[0]["emb"])  # (dE1)
    if model.tie_embeddings:
        grads["embedding"] = grads["embedding"] + dW.T  # (dT1) both uses of E add
    return loss, {k: grads[k] for k in p}, new_state


# --------------------------------------------------------------------------------------------
# Clipping and optimisers (docs/optim.md)
# --------------------------------------------------------------------------------------------


def global_norm(grads: dict[str, np.ndarray]) -> float:
    """(O1) the Euclidean norm of all gradients together, summed in float64."""
    return math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads.values()))


def clip_by_global_norm(grads: dict[str, np.ndarray], max_norm: float) -> float:
    """(O1, O2) scale every gradient in place by τ / max(‖g‖, τ); returns the pre-clip norm."""
    norm = global_norm(grads)  # (O1)
    factor = max_norm / max(norm, max_norm)  # (O2)
    for g in grads.values():
        g *= g.dtype.type(factor)  # (O2)
    return norm


def sgd_step(params: dict[str, np.ndarray], grads: dict[str, np.ndarray], lr: float) -> None:
    """(O3) θ ← θ - η g for every array, in place."""
    for name, theta in params.items():
        theta -= theta.dtype.type(lr) * grads[name]  # (O3)


def adam_step(
    params: dict[str, np.ndarray],
    grads: dict[str, np.ndarray],
    m: dict[str, np.ndarray],
    v: dict[str, np.ndarray],
    t: int,
    lr: float = 1e-3,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
) -> None:
    """(O5-O8) one Adam update, in place; ``t`` is this step's number (1 for the first);
    m and v start as zeros of the parameters' shapes."""
    for name, theta in params.items():
        g = grads[name]
        m[name] = beta1 * m[name] + (1 - beta1) * g  # (O5)
        v[name] = beta2 * v[name] + (1 - beta2) * g * g  # (O6)
        m_hat = m[name] / (1 - beta1**t)  # (O7)
        v_hat = v[name] / (1 - beta2**t)  # (O7)
        theta -= (lr * m_hat / (np.sqrt(v_hat) + eps)).astype(theta.dtype)  # (O8)
