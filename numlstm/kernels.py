"""Numba kernels: the per-element gate math, softmax/cross-entropy rows and scatter-adds.

Matrix products never happen here: they go to BLAS through NumPy in the layer files
(``lstm.py``, ``gru.py``, ``layers.py``). Each kernel below does one fused pass over the
elements of a time step so that no temporaries are created between the GEMMs.

Every kernel is compiled lazily for the dtypes it sees (float32 and float64 both work) and
cached on disk (``cache=True``), so the compile cost is paid once per machine, not per run.
Kernels do **not** bounds-check: callers validate shapes and token ids first.

Equation numbers (L1..L6, G1..G5, S1..S3, E1) refer to ``docs/lstm.md``, ``docs/gru.md`` and
``docs/layers.md``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .fastmath import exp_floor, sigmoid, tanh

# error_model="numpy": no ZeroDivisionError checks in float division, which would stop the
# compiler from vectorising the loops (divisions here never have a zero denominator).
_JIT = {"cache": True, "error_model": "numpy"}
# The softmax reductions (max, sum) may be reordered so that they vectorise.
_REDUCE = {"reassoc", "nsz", "arcp", "contract"}


# --------------------------------------------------------------------------------------------
# LSTM
# --------------------------------------------------------------------------------------------


@njit(**_JIT)
def lstm_cell_forward(ax, ah, c_prev, forget_bias, gates, c, tc, h):
    """One LSTM step, equations L2 (the sum) and L3-L6, fused.

    ax     (B, 4H)  input projection of this step, bias included (L1)
    ah     (B, 4H)  recurrent product h_{t-1} Wh (L2)
    c_prev (B, H)   c_{t-1}
    forget_bias     a scalar of the arrays' dtype
    outputs: gates (B, 4H) activated [i, f, g, o]; c (B, H); tc = tanh(c) (B, H); h (B, H)

    Each gate block is its own simple loop over contiguous memory so that the compiler
    vectorises it (8 float32 lanes with AVX2).
    """
    B = ax.shape[0]
    H = ax.shape[1] // 4
    for n in range(B):
        a, r, gt = ax[n], ah[n], gates[n]
        for k in range(H):
            gt[k] = sigmoid(a[k] + r[k])  # L2 + L3: i
        for k in range(H, 2 * H):
            gt[k] = sigmoid(a[k] + r[k] + forget_bias)  # L2 + L3: f
        for k in range(2 * H, 3 * H):
            gt[k] = tanh(a[k] + r[k])  # L2 + L4: g
        for k in range(3 * H, 4 * H):
            gt[k] = sigmoid(a[k] + r[k])  # L2 + L3: o
        cp, cn, tn, hn = c_prev[n], c[n], tc[n], h[n]
        for j in range(H):
            v = gt[H + j] * cp[j] + gt[j] * gt[2 * H + j]  # L5: c = f * c_prev + i * g
            t = tanh(v)
            cn[j] = v
            tn[j] = t
            hn[j] = gt[3 * H + j] * t  # L6: h = o * tanh(c)


@njit(**_JIT)
def lstm_cell_backward(dh_out, dh_next, dc, gates, c_prev, tc, da):
    """Backward of one LSTM step, equations dL6-dL3, fused.

    dh_out  (B, H)  gradient on h_t from the layer above (dhs[t])
    dh_next (B, H)  gradient on h_t flowing back from step t+1 (dL2 of step t+1)
    dc      (B, H)  in: gradient on c_t from step t+1; out: gradient on c_{t-1} (dL5)
    gates   (B, 4H), c_prev (B, H), tc (B, H): from the forward cache
    da      (B, 4H) out: gradient on the pre-activations a_t
    """
    B = gates.shape[0]
    H = gates.shape[1] // 4
    for n in range(B):
        for j in range(H):
            i = gates[n, j]
            f = gates[n, H + j]
            g = gates[n, 2 * H + j]
            o = gates[n, 3 * H + j]
            t = tc[n, j]
            dh = dh_out[n, j] + dh_next[n, j]
            do = dh * t  # dL6
            dct = dc[n, j] + dh * o * (1.0 - t * t)  # dL6
            da[n, j] = dct * g * i * (1.0 - i)  # dL5 (di) then dL3
            da[n, H + j] = dct * c_prev[n, j] * f * (1.0 - f)  # dL5 (df) then dL3
            da[n, 2 * H + j] = dct * i * (1.0 - g * g)  # dL5 (dg) then dL4
            da[n, 3 * H + j] = do * o * (1.0 - o)  # dL3
            dc[n, j] = dct * f  # dL5: dc_{t-1}


# --------------------------------------------------------------------------------------------
# GRU, reset gate applied after the recurrent product (cuDNN form, the default)
# --------------------------------------------------------------------------------------------


@njit(**_JIT)
def gru_cell_forward(ax, ahw, bh, h_prev, gates, ahn, h):
    """One GRU step (reset-after form), equations G2 (bias), G3-G5, fused.

    ax   (B, 3H)  input projection with bx (G1);  ahw (B, 3H) = h_{t-1} Wh (G2 without bh)
    bh   (3H,)    recurrent bias;                 h_prev (B, H)
    outputs: gates (B, 3H) [r, z, n]; ahn (B, H) = h_{t-1} Wh_n + bh_n (kept for dG4); h (B, H)
    """
    B = ax.shape[0]
    H = ax.shape[1] // 3
    for k in range(B):
        for j in range(H):
            r = sigmoid(ax[k, j] + ahw[k, j] + bh[j])  # G2 + G3
            z = sigmoid(ax[k, H + j] + ahw[k, H + j] + bh[H + j])  # G2 + G3
            an = ahw[k, 2 * H + j] + bh[2 * H + j]  # G2
            n = tanh(ax[k, 2 * H + j] + r * an)  # G4
            gates[k, j] = r
            gates[k, H + j] = z
            gates[k, 2 * H + j] = n
            ahn[k, j] = an
            h[k, j] = (1.0 - z) * n + z * h_prev[k, j]  # G5


@njit(**_JIT)
def gru_cell_backward(dh_out, dh_next, gates, ahn, h_prev, dax, dah, dh_prev):
    """Backward of one GRU step (reset-after form), equations dG5-dG3, fused.

    dh_out, dh_next (B, H): gradient on h_t from above and from step t+1
    outputs: dax (B, 3H) gradient on the input projection; dah (B, 3H) gradient on
    h_{t-1} Wh + bh; dh_prev (B, H) the direct part of dh_{t-1} (dG5), to which the caller adds
    dah Wh^T (dG2).
    """
    B = gates.shape[0]
    H = gates.shape[1] // 3
    for k in range(B):
        for j in range(H):
            r = gates[k, j]
            z = gates[k, H + j]
            n = gates[k, 2 * H + j]
            hp = h_prev[k, j]
            dh = dh_out[k, j] + dh_next[k, j]
            dz = dh * (hp - n)  # dG5
            dn = dh * (1.0 - z)  # dG5
            dan = dn * (1.0 - n * n)  # dG4
            dr = dan * ahn[k, j]  # dG4
            dar = dr * r * (1.0 - r)  # dG3
            daz = dz * z * (1.0 - z)  # dG3
            dax[k, j] = dar
            dax[k, H + j] = daz
            dax[k, 2 * H + j] = dan
            dah[k, j] = dar
            dah[k, H + j] = daz
            dah[k, 2 * H + j] = dan * r  # dG4
            dh_prev[k, j] = dh * z  # dG5 (direct path)


# --------------------------------------------------------------------------------------------
# GRU, reset gate applied before the recurrent product (Cho et al. 2014)
# --------------------------------------------------------------------------------------------


@njit(**_JIT)
def gru_rz_forward(ax, ahw_rz, bh, h_prev, gates, rh):
    """Reset-before form, first half of a step: G2c and G3, then r * h_{t-1} for G4c.

    ax (B, 3H); ahw_rz (B, 2H) = h_{t-1} Wh[:, :2H]; bh (3H,); h_prev (B, H)
    outputs: gates[:, :2H] = [r, z]; rh (B, H) = r * h_{t-1}
    """
    B = ax.shape[0]
    H = ax.shape[1] // 3
    for k in range(B):
        for j in range(H):
            r = sigmoid(ax[k, j] + ahw_rz[k, j] + bh[j])  # G2c + G3
            z = sigmoid(ax[k, H + j] + ahw_rz[k, H + j] + bh[H + j])  # G2c + G3
            gates[k, j] = r
            gates[k, H + j] = z
            rh[k, j] = r * h_prev[k, j]


@njit(**_JIT)
def gru_cho_cell_forward(ax, ahw_n, bh, h_prev, gates, h):
    """Reset-before form, second half of a step: G4c and G5.

    ahw_n (B, H) = (r * h_{t-1}) Wh[:, 2H:]; gates[:, :2H] already hold r, z.
    outputs: gates[:, 2H:] = n; h (B, H)
    """
    B = ax.shape[0]
    H = ax.shape[1] // 3
    for k in range(B):
        for j in range(H):
            z = gates[k, H + j]
            n = tanh(ax[k, 2 * H + j] + ahw_n[k, j] + bh[2 * H + j])  # G4c
            gates[k, 2 * H + j] = n
            h[k, j] = (1.0 - z) * n + z * h_prev[k, j]  # G5


@njit(**_JIT)
def gru_cho_cell_backward(dh_out, dh_next, gates, h_prev, da, dh_prev):
    """Reset-before form, backward of G5 and G4c's tanh: fills da[:, H:] (z and n blocks).

    In this form the input projection and the recurrent product enter every gate the same
    way, so one gradient da (B, 3H) serves both (dAx = dAh). dh_prev (B, H) gets the direct
    part dh * z (dG5).
    """
    B = gates.shape[0]
    H = gates.shape[1] // 3
    for k in range(B):
        for j in range(H):
            z = gates[k, H + j]
            n = gates[k, 2 * H + j]
            dh = dh_out[k, j] + dh_next[k, j]
            da[k, H + j] = dh * (h_prev[k, j] - n) * z * (1.0 - z)  # dG5 (dz) then dG3
            da[k, 2 * H + j] = dh * (1.0 - z) * (1.0 - n * n)  # dG5 (dn) then dG4c
            dh_prev[k, j] = dh * z  # dG5 (direct path)


@njit(**_JIT)
def gru_rz_backward(drh, gates, h_prev, da, dh_prev):
    """Reset-before form, backward through rh = r * h_{t-1} (dG4c) and r's sigmoid (dG3).

    drh (B, H) = da_n Wh_n^T; fills da[:, :H] and adds drh * r to dh_prev.
    """
    B = gates.shape[0]
    H = gates.shape[1] // 3
    for k in range(B):
        for j in range(H):
            r = gates[k, j]
            dr = drh[k, j] * h_prev[k, j]  # dG4c
            da[k, j] = dr * r * (1.0 - r)  # dG3
            dh_prev[k, j] += drh[k, j] * r  # dG4c


# --------------------------------------------------------------------------------------------
# Softmax + cross-entropy, embedding scatter-add, dropout mask, parameter update
# --------------------------------------------------------------------------------------------


@njit(**_JIT, parallel=True, fastmath=_REDUCE)
def softmax_xent_rows(z, b, targets, scale, losses):
    """Fused S1 (bias), S2, S3 and their backward, in place, parallel over rows.

    z (N, V)   in: logits h W (without bias); out: dZ = scale * (softmax(z + b) - onehot(y))
    b (V,)     softmax bias
    targets (N,) int, validated by the caller to lie in [0, V)
    losses  (N,) float64 out: -log p[n, y_n] (unscaled)
    Only this one (N, V) buffer exists: each row is overwritten with its own gradient.
    """
    N, V = z.shape
    for n in prange(N):
        row = z[n]
        m = row[0] + b[0]  # the row max, kept in the array's dtype
        for k in range(V):
            v = row[k] + b[k]  # S1 bias
            row[k] = v
            m = max(m, v)
        zy = row[targets[n]]
        s = 0.0
        for k in range(V):
            e = exp_floor(row[k] - m)  # S2, shifted by the row max
            row[k] = e
            s += e
        losses[n] = m + math.log(s) - zy  # S3: logsumexp - z_y
        inv = scale / s
        for k in range(V):
            row[k] *= inv  # dS2: scale * softmax
        row[targets[n]] -= scale  # dS2: - scale * onehot


@njit(**_JIT, parallel=True, fastmath=_REDUCE)
def softmax_xent_loss_rows(z, b, targets, losses):
    """S1 (bias), S2, S3 without the gradient; z (N, V) is left unchanged."""
    N, V = z.shape
    for n in prange(N):
        row = z[n]
        m = row[0] + b[0]
        for k in range(V):
            m = max(m, row[k] + b[k])
        s = 0.0
        for k in range(V):
            s += exp_floor(row[k] + b[k] - m)
        y = targets[n]
        losses[n] = m + math.log(s) - (row[y] + b[y])


@njit(**_JIT)
def embedding_scatter_add(dW, ids, dout):
    """dE1: dW[ids[n]] += dout[n] for every row n; repeated ids accumulate.

    dW (V, E), ids (N,) int validated to lie in [0, V), dout (N, E). Serial on purpose:
    two rows with the same id would race if the loop ran in parallel.
    """
    N, E = dout.shape
    for n in range(N):
        row = ids[n]
        for j in range(E):
            dW[row, j] += dout[n, j]


@njit(**_JIT)
def scaled_add(p, g, alpha):
    """p += alpha * g over flat contiguous arrays (SGD step O3 with the clip factor folded in)."""
    for k in range(p.size):
        p[k] += alpha * g[k]


@njit(**_JIT)
def adam_update(p, g, m, v, lr, beta1, beta2, eps, c1, c2):
    """Adam O5-O8 over flat arrays; c1 = 1 - beta1^t and c2 = 1 - beta2^t (bias corrections)."""
    for k in range(p.size):
        gk = g[k]
        m[k] = beta1 * m[k] + (1.0 - beta1) * gk  # O5
        v[k] = beta2 * v[k] + (1.0 - beta2) * gk * gk  # O6
        p[k] -= lr * (m[k] / c1) / (math.sqrt(v[k] / c2) + eps)  # O7, O8


@njit(**_JIT, fastmath=_REDUCE)
def sum_of_squares(g):
    """sum_k g_k^2 in float64 over a flat array (for the global norm O1)."""
    s = 0.0
    for k in range(g.size):
        v = np.float64(g[k])  # float() of a float32 stays float32 in Numba
        s += v * v
    return s
