"""Numba kernels: the per-element gate math, softmax/cross-entropy rows and scatter-adds.

Matrix products never happen here: they go to BLAS through NumPy in the layer files
(``lstm.py``, ``gru.py``, ``layers.py``). Each kernel below does one fused pass over the
elements of a time step so that no temporaries are created between the GEMMs.

Every kernel is compiled lazily for the dtypes it sees (float32 and float64 both work) and
cached on disk (``cache=True``), so the compile cost is paid once per machine, not per run.
Kernels do **not** bounds-check: callers validate shapes and token ids first.

Equation numbers (R1, R2, L1..L6, G1..G5, S1..S3, E1) refer to ``docs/rnn.md``, ``docs/lstm.md``,
``docs/gru.md`` and ``docs/layers.md``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .fast.fastmath import exp_floor, sigmoid, tanh, zero_like

# error_model="numpy": no ZeroDivisionError checks in float division, which would stop the
# compiler from vectorising the loops (divisions here never have a zero denominator).
_JIT = {"cache": True, "error_model": "numpy", "nogil": True}
# The softmax reductions (max, sum) may be reordered so that they vectorise.
_REDUCE = {"reassoc", "nsz", "arcp", "contract"}


# --------------------------------------------------------------------------------------------
# LSTM
# --------------------------------------------------------------------------------------------


@njit(**_JIT)
def lstm_cell_forward(ax, ah, b, c_prev, forget_bias, gates, c, tc, h):
    """One LSTM step, equations L2 (the sum) and L3-L6, fused.

    ax     (B, 4H)  input projection x_t Wx of this step (L1)
    ah     (B, 4H)  recurrent product h_{t-1} Wh (L2)
    b      (4H,)    bias, added here (L2) rather than in a separate pass over ax
    c_prev (B, H)   c_{t-1}
    forget_bias     a scalar of the arrays' dtype
    outputs: gates (B, 4H) activated [i, f, g, o]; c (B, H); tc = tanh(c) (B, H); h (B, H)

    The loop runs over one-dimensional views of each gate block so that the compiler
    vectorises it (8 float32 lanes with AVX2); one pass per batch row does L2-L6.
    """
    B = ax.shape[0]
    H = ax.shape[1] // 4
    bi, bf, bg, bo = b[:H], b[H : 2 * H], b[2 * H : 3 * H], b[3 * H :]
    for n in range(B):
        xi, xf, xg, xo = ax[n, :H], ax[n, H : 2 * H], ax[n, 2 * H : 3 * H], ax[n, 3 * H :]
        hi, hf, hg, ho = ah[n, :H], ah[n, H : 2 * H], ah[n, 2 * H : 3 * H], ah[n, 3 * H :]
        gi, gf, gg, go = (
            gates[n, :H],
            gates[n, H : 2 * H],
            gates[n, 2 * H : 3 * H],
            gates[n, 3 * H :],
        )
        cp, cn, tn, hn = c_prev[n], c[n], tc[n], h[n]
        for j in range(H):
            i = sigmoid(xi[j] + hi[j] + bi[j])  # L2 + L3: input gate
            f = sigmoid(xf[j] + hf[j] + bf[j] + forget_bias)  # L2 + L3: forget gate
            g = tanh(xg[j] + hg[j] + bg[j])  # L2 + L4: candidate
            o = sigmoid(xo[j] + ho[j] + bo[j])  # L2 + L3: output gate
            v = f * cp[j] + i * g  # L5: c = f * c_prev + i * g
            t = tanh(v)
            gi[j] = i
            gf[j] = f
            gg[j] = g
            go[j] = o
            cn[j] = v
            tn[j] = t
            hn[j] = o * t  # L6: h = o * tanh(c)


@njit(**_JIT)
def lstm_cell_backward(dh_out, dh_next, dc, gates, c_prev, tc, da):
    """Backward of one LSTM step, equations dL6-dL3, fused.

    dh_out  (B, H)  gradient on h_t from the layer above (dhs[t])
    dh_next (B, H)  gradient on h_t flowing back from step t+1 (dL2 of step t+1)
    dc      (B, H)  in: gradient on c_t from step t+1; out: gradient on c_{t-1} (dL5)
    gates   (B, 4H), c_prev (B, H), tc (B, H): from the forward cache
    da      (B, 4H) out: gradient on the pre-activations a_t

    The loops run over one-dimensional row views (gate blocks of one batch row): written with
    two-dimensional indices the same loop did not vectorise and took 2.4x as long.
    """
    B = gates.shape[0]
    H = gates.shape[1] // 4
    for n in range(B):
        gi, gf, gg, go = (
            gates[n, :H],
            gates[n, H : 2 * H],
            gates[n, 2 * H : 3 * H],
            gates[n, 3 * H :],
        )
        di, df, dg, do = da[n, :H], da[n, H : 2 * H], da[n, 2 * H : 3 * H], da[n, 3 * H :]
        up, nxt, dcn, cp, tcn = dh_out[n], dh_next[n], dc[n], c_prev[n], tc[n]
        for j in range(H):
            i, f, g, o, t = gi[j], gf[j], gg[j], go[j], tcn[j]
            dh = up[j] + nxt[j]
            dct = dcn[j] + dh * o * (1.0 - t * t)  # dL6
            di[j] = dct * g * i * (1.0 - i)  # dL5 (di) then dL3
            df[j] = dct * cp[j] * f * (1.0 - f)  # dL5 (df) then dL3
            dg[j] = dct * i * (1.0 - g * g)  # dL5 (dg) then dL4
            do[j] = dh * t * o * (1.0 - o)  # dL6 (do) then dL3
            dcn[j] = dct * f  # dL5: dc_{t-1}


# --------------------------------------------------------------------------------------------
# LSTM with peepholes, cell clipping and a projection (LSTMP, docs/lstmp.md)
# --------------------------------------------------------------------------------------------


@njit(**_JIT)
def lstmp_cell_forward(ax, ah, b, c_prev, forget_bias, peep, cell_clip, gates, cu, c, tc, m):
    """One LSTMP step up to the projection, equations P1 (the sum) and P2-P7, fused.

    ax, ah (B, 4H), b (4H,), c_prev (B, H), forget_bias: as in ``lstm_cell_forward``
    peep   (3, H)   peephole rows [w_ci, w_cf, w_co]; zeros when the layer has none
    cell_clip       the bound of P5, a scalar of the arrays' dtype; inf when there is none
    outputs: gates (B, 4H) [i, f, g, o]; cu (B, H) the cell before the clip (may be ``c``
    itself when there is no clip); c (B, H) clipped; tc = tanh(c); m = o * tanh(c) (B, H)

    With zero peepholes and an infinite bound every added term is an exact zero and the clip
    returns its argument, so the numbers are those of ``lstm_cell_forward``.
    """
    B = ax.shape[0]
    H = ax.shape[1] // 4
    bi, bf, bg, bo = b[:H], b[H : 2 * H], b[2 * H : 3 * H], b[3 * H :]
    wci, wcf, wco = peep[0], peep[1], peep[2]
    for n in range(B):
        xi, xf, xg, xo = ax[n, :H], ax[n, H : 2 * H], ax[n, 2 * H : 3 * H], ax[n, 3 * H :]
        hi, hf, hg, ho = ah[n, :H], ah[n, H : 2 * H], ah[n, 2 * H : 3 * H], ah[n, 3 * H :]
        gi, gf, gg, go = (
            gates[n, :H],
            gates[n, H : 2 * H],
            gates[n, 2 * H : 3 * H],
            gates[n, 3 * H :],
        )
        cp, un, cn, tn, mn = c_prev[n], cu[n], c[n], tc[n], m[n]
        for j in range(H):
            i = sigmoid(xi[j] + hi[j] + bi[j] + wci[j] * cp[j])  # P1 + P2: input gate
            f = sigmoid(xf[j] + hf[j] + bf[j] + forget_bias + wcf[j] * cp[j])  # P1 + P2
            g = tanh(xg[j] + hg[j] + bg[j])  # P1 + P3: candidate
            u = f * cp[j] + i * g  # P4: the cell before the clip
            v = min(max(u, -cell_clip), cell_clip)  # P5: clip to [-cell_clip, cell_clip]
            o = sigmoid(xo[j] + ho[j] + bo[j] + wco[j] * v)  # P1 + P6: sees the new cell
            t = tanh(v)
            gi[j] = i
            gf[j] = f
            gg[j] = g
            go[j] = o
            un[j] = u
            cn[j] = v
            tn[j] = t
            mn[j] = o * t  # P7: m = o * tanh(c)


@njit(**_JIT)
def lstmp_cell_backward(dh_out, dh_next, dc, gates, c_prev, cu, tc, peep, cell_clip, da):
    """Backward of one LSTMP step from m_t down, equations dP7-dP2, fused.

    dh_out + dh_next (B, H): the gradient on m_t (dP8 already applied by the caller when the
    layer projects, then dh_next is zeros)
    dc      (B, H)  in: gradient on c_t from step t+1; out: gradient on c_{t-1} (dP4, dP2)
    gates (B, 4H), c_prev, cu (pre-clip cell), tc (B, H): from the forward cache
    peep (3, H), cell_clip: as in ``lstmp_cell_forward``
    da      (B, 4H) out: gradient on the pre-activations a_t (P1)
    """
    B = gates.shape[0]
    H = gates.shape[1] // 4
    wci, wcf, wco = peep[0], peep[1], peep[2]
    for n in range(B):
        gi, gf, gg, go = (
            gates[n, :H],
            gates[n, H : 2 * H],
            gates[n, 2 * H : 3 * H],
            gates[n, 3 * H :],
        )
        di, df, dg, do = da[n, :H], da[n, H : 2 * H], da[n, 2 * H : 3 * H], da[n, 3 * H :]
        up, nxt, dcn, cp, un, tcn = dh_out[n], dh_next[n], dc[n], c_prev[n], cu[n], tc[n]
        for j in range(H):
            i, f, g, o, t = gi[j], gf[j], gg[j], go[j], tcn[j]
            dm = up[j] + nxt[j]
            dao = dm * t * o * (1.0 - o)  # dP7 (do) then dP6
            dct = dcn[j] + dm * o * (1.0 - t * t) + dao * wco[j]  # dP7 + dP6 (peephole)
            if abs(un[j]) > cell_clip:
                dct = zero_like(dct)  # dP5: no gradient through a clipped cell
            dai = dct * g * i * (1.0 - i)  # dP4 (di) then dP2
            daf = dct * cp[j] * f * (1.0 - f)  # dP4 (df) then dP2
            di[j] = dai
            df[j] = daf
            dg[j] = dct * i * (1.0 - g * g)  # dP4 (dg) then dP3
            do[j] = dao
            dcn[j] = dct * f + dai * wci[j] + daf * wcf[j]  # dP4 + dP2: dc_{t-1}


# --------------------------------------------------------------------------------------------
# Plain (Elman) RNN
# --------------------------------------------------------------------------------------------


@njit(**_JIT)
def rnn_cell_forward(ax, ah, b, h):
    """One RNN step, equation R2: h = tanh(ax + ah + b). ax (B, H) = x_t Wx (R1); ah (B, H) =
    h_{t-1} Wh; b (H,), added here rather than in a pass over ax; output h (B, H)."""
    for n in range(ax.shape[0]):
        xn, an, hn = ax[n], ah[n], h[n]
        for j in range(ax.shape[1]):
            hn[j] = tanh(xn[j] + an[j] + b[j])  # R2


@njit(**_JIT)
def rnn_cell_backward(dh_out, dh_next, h, da):
    """Backward of one RNN step, dR2: da = (dhs_t + dh_t^rec) * (1 - h_t^2). dh_out, dh_next,
    h (B, H): dhs[t], the gradient from step t+1 and h_t; output da (B, H)."""
    for n in range(h.shape[0]):
        up, nxt, hn, dn = dh_out[n], dh_next[n], h[n], da[n]
        for j in range(h.shape[1]):
            y = hn[j]
            dn[j] = (up[j] + nxt[j]) * (1.0 - y * y)  # dR2


# --------------------------------------------------------------------------------------------
# GRU, reset gate applied after the recurrent product (cuDNN form, the default)
# The loops run over one-dimensional row views, as in lstm_cell_backward, so that they vectorise.
# --------------------------------------------------------------------------------------------


@njit(**_JIT)
def gru_cell_forward(ax, bx, ahw, bh, h_prev, gates, ahn, h):
    """One GRU step (reset-after form), the biases of G1 and G2, and G3-G5, fused.

    ax   (B, 3H)  input projection x_t Wx (G1 without bx);  bx (3H,) input bias
    ahw  (B, 3H)  h_{t-1} Wh (G2 without bh);  bh (3H,) recurrent bias;  h_prev (B, H)
    outputs: gates (B, 3H) [r, z, n]; ahn (B, H) = h_{t-1} Wh_n + bh_n (kept for dG4); h (B, H)
    """
    B = ax.shape[0]
    H = ax.shape[1] // 3
    bxr, bxz, bxn = bx[:H], bx[H : 2 * H], bx[2 * H :]
    bhr, bhz, bhn = bh[:H], bh[H : 2 * H], bh[2 * H :]
    for k in range(B):
        xr, xz, xn = ax[k, :H], ax[k, H : 2 * H], ax[k, 2 * H :]
        hr, hz, hn = ahw[k, :H], ahw[k, H : 2 * H], ahw[k, 2 * H :]
        gr, gz, gn = gates[k, :H], gates[k, H : 2 * H], gates[k, 2 * H :]
        an_, hp, hk = ahn[k], h_prev[k], h[k]
        for j in range(H):
            r = sigmoid(xr[j] + bxr[j] + hr[j] + bhr[j])  # G1 + G2 + G3
            z = sigmoid(xz[j] + bxz[j] + hz[j] + bhz[j])  # G1 + G2 + G3
            an = hn[j] + bhn[j]  # G2
            n = tanh(xn[j] + bxn[j] + r * an)  # G1 + G4
            gr[j] = r
            gz[j] = z
            gn[j] = n
            an_[j] = an
            hk[j] = (1.0 - z) * n + z * hp[j]  # G5


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
        gr, gz, gn = gates[k, :H], gates[k, H : 2 * H], gates[k, 2 * H :]
        xr, xz, xn = dax[k, :H], dax[k, H : 2 * H], dax[k, 2 * H :]
        hr, hz, hn = dah[k, :H], dah[k, H : 2 * H], dah[k, 2 * H :]
        up, nxt, an_, hp, dhp = dh_out[k], dh_next[k], ahn[k], h_prev[k], dh_prev[k]
        for j in range(H):
            r, z, n = gr[j], gz[j], gn[j]
            dh = up[j] + nxt[j]
            dz = dh * (hp[j] - n)  # dG5
            dn = dh * (1.0 - z)  # dG5
            dan = dn * (1.0 - n * n)  # dG4
            dr = dan * an_[j]  # dG4
            dar = dr * r * (1.0 - r)  # dG3
            daz = dz * z * (1.0 - z)  # dG3
            xr[j] = dar
            xz[j] = daz
            xn[j] = dan
            hr[j] = dar
            hz[j] = daz
            hn[j] = dan * r  # dG4
            dhp[j] = dh * z  # dG5 (direct path)


# --------------------------------------------------------------------------------------------
# GRU, reset gate applied before the recurrent product (Cho et al. 2014)
# --------------------------------------------------------------------------------------------


@njit(**_JIT)
def gru_rz_forward(ax, bx, ahw_rz, bh, h_prev, gates, rh):
    """Reset-before form, first half of a step: G2c and G3, then r * h_{t-1} for G4c.

    ax (B, 3H) = x_t Wx; bx (3H,); ahw_rz (B, 2H) = h_{t-1} Wh[:, :2H]; bh (3H,); h_prev (B, H)
    outputs: gates[:, :2H] = [r, z]; rh (B, H) = r * h_{t-1}
    """
    B = ax.shape[0]
    H = ax.shape[1] // 3
    bxr, bxz, bhr, bhz = bx[:H], bx[H : 2 * H], bh[:H], bh[H : 2 * H]
    for k in range(B):
        xr, xz, hr, hz = ax[k, :H], ax[k, H : 2 * H], ahw_rz[k, :H], ahw_rz[k, H : 2 * H]
        gr, gz, hp, rhk = gates[k, :H], gates[k, H : 2 * H], h_prev[k], rh[k]
        for j in range(H):
            r = sigmoid(xr[j] + bxr[j] + hr[j] + bhr[j])  # G1 + G2c + G3
            z = sigmoid(xz[j] + bxz[j] + hz[j] + bhz[j])  # G1 + G2c + G3
            gr[j] = r
            gz[j] = z
            rhk[j] = r * hp[j]


@njit(**_JIT)
def gru_cho_cell_forward(ax, bx, ahw_n, bh, h_prev, gates, h):
    """Reset-before form, second half of a step: G4c and G5.

    ahw_n (B, H) = (r * h_{t-1}) Wh[:, 2H:]; gates[:, :2H] already hold r, z.
    outputs: gates[:, 2H:] = n; h (B, H)
    """
    B = ax.shape[0]
    H = ax.shape[1] // 3
    bxn, bhn = bx[2 * H :], bh[2 * H :]
    for k in range(B):
        xn, hn, gz, gn = ax[k, 2 * H :], ahw_n[k], gates[k, H : 2 * H], gates[k, 2 * H :]
        hp, hk = h_prev[k], h[k]
        for j in range(H):
            z = gz[j]
            n = tanh(xn[j] + bxn[j] + hn[j] + bhn[j])  # G1 + G4c
            gn[j] = n
            hk[j] = (1.0 - z) * n + z * hp[j]  # G5


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
        gz, gn, dz_, dn_ = gates[k, H : 2 * H], gates[k, 2 * H :], da[k, H : 2 * H], da[k, 2 * H :]
        up, nxt, hp, dhp = dh_out[k], dh_next[k], h_prev[k], dh_prev[k]
        for j in range(H):
            z, n = gz[j], gn[j]
            dh = up[j] + nxt[j]
            dz_[j] = dh * (hp[j] - n) * z * (1.0 - z)  # dG5 (dz) then dG3
            dn_[j] = dh * (1.0 - z) * (1.0 - n * n)  # dG5 (dn) then dG4c
            dhp[j] = dh * z  # dG5 (direct path)


@njit(**_JIT)
def gru_rz_backward(drh, gates, h_prev, da, dh_prev):
    """Reset-before form, backward through rh = r * h_{t-1} (dG4c) and r's sigmoid (dG3).

    drh (B, H) = da_n Wh_n^T; fills da[:, :H] and adds drh * r to dh_prev.
    """
    B = gates.shape[0]
    H = gates.shape[1] // 3
    for k in range(B):
        gr, dr_, d, hp, dhp = gates[k, :H], da[k, :H], drh[k], h_prev[k], dh_prev[k]
        for j in range(H):
            r = gr[j]
            dr = d[j] * hp[j]  # dG4c
            dr_[j] = dr * r * (1.0 - r)  # dG3
            dhp[j] += d[j] * r  # dG4c


# --------------------------------------------------------------------------------------------
# Softmax + cross-entropy, embedding scatter-add, dropout mask, parameter update
# --------------------------------------------------------------------------------------------


@njit(**_JIT, fastmath=_REDUCE)
def softmax_xent_rows(z, b, targets, scale, losses, q):
    """Fused S1 (bias), S2, S3 and dS3·dS2 in factored form, in place, one row at a time.

    z (N, V)   in: logits h W (without bias); out: the factor Ẽ of dZ = diag(q) Ẽ, i.e.
               Ẽ[n, k] = exp(z[n, k] + b[k] - m_n) - s_n [k = y_n]   (see docs/layers.md, dS2f)
    b (V,)     softmax bias
    targets (N,) int, validated by the caller to lie in [0, V)
    scale      1 / B, in the arrays' dtype
    losses (N,) float64 out: -log p[n, y_n] (unscaled)
    q (N,)     out: scale / s_n, the row factor; s_n = sum_k exp(z[n, k] + b[k] - m_n)
    Only this one (N, V) buffer exists; two passes per row: the max, then the exponentials.
    Serial: the training step runs it on row blocks in threads (fast/parallel.py), and a
    parallel=True loop right after an OpenBLAS call gained little (docs/performance.md).
    """
    N, V = z.shape
    for n in range(N):
        row = z[n]
        m = row[0] + b[0]  # the row max of S1's z + b, kept in the array's dtype
        for k in range(V):
            m = max(m, row[k] + b[k])
        y = targets[n]
        zy = row[y] + b[y]
        s = zero_like(m)  # in the arrays' dtype: a float64 sum halved the speed of this loop
        for k in range(V):
            e = exp_floor(row[k] + b[k] - m)  # S1 bias, S2 shifted by the row max
            row[k] = e
            s += e
        losses[n] = np.float64(m) + math.log(np.float64(s)) - zy  # S3: logsumexp - z_y
        row[y] -= s  # dS2f: (e - s onehot) / s = softmax - onehot
        q[n] = scale / s  # dS2f: the row factor, applied to the GEMMs' small operands


@njit(**_JIT, fastmath=_REDUCE)
def softmax_xent_loss_rows(z, b, targets, losses):
    """S1 (bias), S2, S3 without the gradient; z (N, V) is left unchanged. Serial, as above."""
    N, V = z.shape
    for n in range(N):
        row = z[n]
        m = row[0] + b[0]
        for k in range(V):
            m = max(m, row[k] + b[k])
        s = zero_like(m)
        for k in range(V):
            s += exp_floor(row[k] + b[k] - m)
        y = targets[n]
        losses[n] = np.float64(m) + math.log(np.float64(s)) - (row[y] + b[y])


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
def embedding_rows_grad(ids, dout, slot, rows, values):
    """dE1 in row-sparse form (fast/sparse.py): values[u] = sum of dout[n] over ids[n] == rows[u].

    ids (N,) int validated to lie in [0, V); dout (N, E); rows (N,) and values (N, E) out, of
    which the first U (the return value) are filled. slot (V,) int scratch: -1 everywhere on
    entry, restored to -1 on exit (slot[id] = u while id's row is being summed).
    """
    N, E = dout.shape
    U = 0
    for n in range(N):
        r = ids[n]
        u = slot[r]
        if u < 0:  # first time this id appears: a new row
            u = U
            slot[r] = u
            rows[u] = r
            for j in range(E):
                values[u, j] = 0.0
            U += 1
        for j in range(E):
            values[u, j] += dout[n, j]  # repeated ids accumulate
    for u in range(U):
        slot[rows[u]] = -1
    return U


@njit(**_JIT)
def scatter_scaled_add(p, rows, values, alpha):
    """p[rows[u]] += alpha * values[u]: the SGD step O3 on a row-sparse gradient."""
    U, E = values.shape
    for u in range(U):
        r = rows[u]
        for j in range(E):
            p[r, j] += alpha * values[u, j]


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
