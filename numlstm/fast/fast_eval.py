"""Batch-1 evaluation of a whole token sequence in one compiled call.

The tutorial scores the test set with batch_size 1 and num_steps 1: every word is predicted
from the full history, one step at a time. Through ``LanguageModel.loss`` each word costs a
chain of Python calls (validation, workspace look-ups, one GEMV per layer and one for the
softmax, kernel launches), about 350 µs for the PTB small model. ``evaluate_sequence`` runs
the same arithmetic over the whole sequence inside one Numba function:

    for each block of (up to) ``block`` consecutive words t0 .. t0+R-1:
        X = E[ids[t0 .. t0+R-1]]                                         (E1)
        for each layer:
            A = X Wx + b                 for the R words at once          (L1 / G1)
            for t in the block, in order:
                a_t += h Wh;  gates;  h (and c)                           (L2-L6 / G2-G5, G2c, G4c)
                X[t] = h                 (the next layer's input)
        Z = X Wsm + bsm;  loss += logsumexp(Z[t]) - Z[t, ids[t+1]]        (S1-S3)

The recurrence is inherently word by word, but neither a layer's input projection nor the
softmax feeds back into it, so they are computed for a block of words together: each piece
of Wx and Wsm is then read from memory once per block instead of once per word (for the
small model Wsm alone is 8 MB, and per-word matrix-vector products were bound by reading it).
Because each word's arithmetic is the same whatever the block size, ``block`` changes the
speed, never the result.

The matrix products are explicit loops (``_gemm_acc``) laid out so that the innermost loop
runs over contiguous memory and vectorises: with W (K, N) in C order, ``Z[r, :] += X[r, k] *
W[k, :]``, four rows of W and two rows of Z per pass. No BLAS call is made, which keeps the
whole sequence in one call, and OpenBLAS's threaded small products were erratic on a busy
2-core machine (one 200 x 10000 GEMV took 8 ms there, these loops 0.2 ms). With
``parallel=True`` (the default) the softmax of each block, about 3/4 of the arithmetic of the
small model, is spread over Numba's threads, chunk of columns by chunk: on 2 idle cores it
measured 7,000 -> 9,800 words/s; with the other core busy it made no difference.

The result equals the per-word loop over ``LanguageModel.loss`` up to rounding (the sums are
in another order than BLAS's): ~1e-16 relative in float64, ~1e-9 in float32 for the summed
loss.

A plain RNN model (cell="rnn", docs/rnn.md R1-R2), a model with the LSTMP options
(docs/lstmp.md) or one with an embedding width E != H is scored by
``LanguageModel.loss`` over chunks of words instead (same numbers, Python speed); tied
embeddings alone keep the compiled path, with Wsm = embedding.T copied once (T1).

Equation numbers refer to ``docs/lstm.md``, ``docs/gru.md`` and ``docs/layers.md``.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import njit, prange

from .. import _checks
from ..kernels import _REDUCE
from ..model import LanguageModel, State
from .fastmath import exp_floor, sigmoid, tanh, zero_like

__all__ = ["evaluate_sequence"]

# As in kernels.py: no ZeroDivisionError checks (they block vectorisation), cached on disk.
_JIT = {"cache": True, "error_model": "numpy"}
# Matrix products may fuse each multiply-add into one FMA instruction (one rounding instead of
# two); the order of the additions stays as written.
_MAC = {"contract"}

# Columns of the logits computed together: a block's chunk of logits (64 x 1024 float32,
# 256 KB) stays in the L2 cache while the H rows of Wsm stream through it, and each 4 KB piece
# of a row of Wsm is reused from L1 for all the words of the block. Also the unit of work of
# the threads with parallel=True (10 chunks for V = 10000).
_CHUNK = 1024
# Words whose input projections and softmax are computed together (default of ``block``).
_BLOCK = 64


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------


@njit(**_JIT, fastmath=_MAC)
def _gemm_acc(X, W, Z, c0, c1):
    """Z[r, c0:c1] += X[r] @ W[:, c0:c1] for every row r: (R, K) @ (K, N) on columns c0..c1.

    X (R, K), W (K, N), Z (R, N), C-order. The innermost loop walks contiguous runs of rows
    of W and Z, and vectorises. Each pass folds in four rows of W (so Z is loaded and stored
    K/4 times) for two rows of Z at once (so each load of W serves two rows). For every
    element the products are added in the order of k, as in a plain loop.
    """
    R, K = X.shape
    k = 0
    while k + 4 <= K:
        w0 = W[k, c0:c1]
        w1 = W[k + 1, c0:c1]
        w2 = W[k + 2, c0:c1]
        w3 = W[k + 3, c0:c1]
        r = 0
        while r + 2 <= R:
            a0, a1, a2, a3 = X[r, k], X[r, k + 1], X[r, k + 2], X[r, k + 3]
            b0, b1, b2, b3 = X[r + 1, k], X[r + 1, k + 1], X[r + 1, k + 2], X[r + 1, k + 3]
            za = Z[r, c0:c1]
            zb = Z[r + 1, c0:c1]
            for n in range(c1 - c0):
                u0, u1, u2, u3 = w0[n], w1[n], w2[n], w3[n]
                za[n] = za[n] + a0 * u0 + a1 * u1 + a2 * u2 + a3 * u3
                zb[n] = zb[n] + b0 * u0 + b1 * u1 + b2 * u2 + b3 * u3
            r += 2
        if r < R:
            a0, a1, a2, a3 = X[r, k], X[r, k + 1], X[r, k + 2], X[r, k + 3]
            za = Z[r, c0:c1]
            for n in range(c1 - c0):
                za[n] = za[n] + a0 * w0[n] + a1 * w1[n] + a2 * w2[n] + a3 * w3[n]
        k += 4
    while k < K:
        wk = W[k, c0:c1]
        for r in range(R):
            xk = X[r, k]
            za = Z[r, c0:c1]
            for n in range(c1 - c0):
                za[n] = za[n] + xk * wk[n]
        k += 1


@njit(**_JIT, fastmath=_REDUCE)
def _row_max(z):
    """max of z (a reduction: reassociation lets it vectorise)."""
    m = z[0]
    for k in range(z.shape[0]):
        m = max(m, z[k])
    return m


@njit(**_JIT, fastmath=_REDUCE)
def _row_sum_exp(z, m):
    """sum_k exp(z[k] - m) in z's dtype (S2); m has z's dtype so that exp stays in it."""
    s = zero_like(m)
    for k in range(z.shape[0]):
        s += exp_floor(z[k] - m)
    return s


@njit(**_JIT)
def _logits_chunk(Hb, Wsm, bsm, Z, i):
    """(S1) Z[:, c0:c1] = bsm[c0:c1] + Hb Wsm[:, c0:c1] for the i-th chunk of columns."""
    c0 = i * _CHUNK
    c1 = min(c0 + _CHUNK, Z.shape[1])
    for r in range(Hb.shape[0]):
        Z[r, c0:c1] = bsm[c0:c1]  # the bias, then h Wsm accumulated onto it
    _gemm_acc(Hb, Wsm, Z, c0, c1)


@njit(**_JIT)
def _row_xent(z, y):
    """(S2, S3) -log softmax(z)[y] = logsumexp(z) - z[y], in float64."""
    m = _row_max(z)
    return np.float64(m) + math.log(np.float64(_row_sum_exp(z, m))) - np.float64(z[y])


@njit(**_JIT)
def _xent_block(Hb, Wsm, bsm, y, Z, losses):
    """losses[r] = -log softmax(Hb[r] Wsm + bsm)[y[r]] (S1-S3) for the R rows of Hb.

    The logits of all R rows are computed together, chunk of columns by chunk, so that each
    piece of Wsm is read from memory once per block of words instead of once per word.
    Z (>= R, V) is scratch.
    """
    for i in range((Z.shape[1] + _CHUNK - 1) // _CHUNK):
        _logits_chunk(Hb, Wsm, bsm, Z, i)
    for r in range(Hb.shape[0]):
        losses[r] = _row_xent(Z[r], y[r])


@njit(**_JIT, parallel=True)
def _xent_block_parallel(Hb, Wsm, bsm, y, Z, losses):
    """``_xent_block`` with the chunks of columns, then the rows, spread over threads."""
    for i in prange((Z.shape[1] + _CHUNK - 1) // _CHUNK):
        _logits_chunk(Hb, Wsm, bsm, Z, i)
    for r in prange(Hb.shape[0]):
        losses[r] = _row_xent(Z[r], y[r])


@njit(**_JIT)
def _block_loss(Hb, Wsm, bsm, y, Z, losses, parallel):
    """Sum of the R = len(Hb) losses of a block, added up in order (float64)."""
    R = Hb.shape[0]
    if parallel:
        _xent_block_parallel(Hb, Wsm, bsm, y, Z, losses)
    else:
        _xent_block(Hb, Wsm, bsm, y, Z, losses)
    total = 0.0
    for r in range(R):
        total += losses[r]
    return total


# --------------------------------------------------------------------------------------------
# Whole-sequence kernels, one per cell type
# --------------------------------------------------------------------------------------------


@njit(**_JIT)
def _lstm_sequence(ids, emb, Wxs, Whs, bs, forget_bias, Wsm, bsm, h, c, block, parallel):
    """Sum over t of -log p(ids[t+1] | ids[:t+1]) for a stacked LSTM; h, c (L, H) in/out.

    Wxs, Whs, bs: tuples with one array per layer (Wx (H, 4H), Wh (H, 4H), b (4H,)).
    """
    L, H = h.shape
    n = ids.shape[0] - 1
    X = np.empty((block, H), emb.dtype)  # a layer's inputs, then (in place) its outputs
    A = np.empty((block, 4 * H), emb.dtype)  # gate pre-activations
    Z = np.empty((block, bsm.shape[0]), emb.dtype)  # logits
    losses = np.empty(block)
    total = 0.0
    for t0 in range(0, n, block):
        R = min(block, n - t0)
        for r in range(R):
            X[r] = emb[ids[t0 + r]]  # (E1)
        for layer in range(L):
            hl, cl = h[layer], c[layer]
            for r in range(R):
                A[r] = bs[layer]  # (L1) b ...
            _gemm_acc(X[:R], Wxs[layer], A, 0, 4 * H)  # (L1) ... + x Wx, all R steps at once
            for r in range(R):
                a = A[r]
                _gemm_acc(h[layer : layer + 1], Whs[layer], A[r : r + 1], 0, 4 * H)  # (L2)
                for k in range(H):
                    a[k] = sigmoid(a[k])  # L3: i
                for k in range(H, 2 * H):
                    a[k] = sigmoid(a[k] + forget_bias)  # L3: f
                for k in range(2 * H, 3 * H):
                    a[k] = tanh(a[k])  # L4: g
                for k in range(3 * H, 4 * H):
                    a[k] = sigmoid(a[k])  # L3: o
                for j in range(H):
                    v = a[H + j] * cl[j] + a[j] * a[2 * H + j]  # L5: c = f * c_prev + i * g
                    cl[j] = v
                    hl[j] = a[3 * H + j] * tanh(v)  # L6: h = o * tanh(c)
                X[r] = hl  # the input of the next layer (this step's is no longer needed)
        y = ids[t0 + 1 : t0 + R + 1]
        total += _block_loss(X[:R], Wsm, bsm, y, Z, losses, parallel)  # S1-S3
    return total


@njit(**_JIT)
def _gru_sequence(ids, emb, Wxs, Whs, bxs, bhs, reset_after, Wsm, bsm, h, block, parallel):
    """Sum over t of -log p(ids[t+1] | ids[:t+1]) for a stacked GRU; h (L, H) in/out.

    Wxs, Whs, bxs, bhs: tuples with one array per layer (Wx, Wh (H, 3H); bx, bh (3H,)).
    reset_after: True for the cuDNN form (G1-G5), False for Cho et al. (G2c, G4c).
    """
    L, H = h.shape
    n = ids.shape[0] - 1
    X = np.empty((block, H), emb.dtype)  # a layer's inputs, then (in place) its outputs
    AX = np.empty((block, 3 * H), emb.dtype)  # input projections
    AH = np.empty((1, 3 * H), emb.dtype)  # recurrent product of one step
    RH = np.empty((1, H), emb.dtype)  # r * h_{t-1} (reset-before form)
    ah, rh = AH[0], RH[0]
    Z = np.empty((block, bsm.shape[0]), emb.dtype)  # logits
    losses = np.empty(block)
    total = 0.0
    for t0 in range(0, n, block):
        R = min(block, n - t0)
        for r in range(R):
            X[r] = emb[ids[t0 + r]]  # (E1)
        for layer in range(L):
            hl, Wh, bh = h[layer], Whs[layer], bhs[layer]
            hrow = h[layer : layer + 1]
            for r in range(R):
                AX[r] = bxs[layer]  # (G1) bx ...
            _gemm_acc(X[:R], Wxs[layer], AX, 0, 3 * H)  # (G1) ... + x Wx, all R steps at once
            for r in range(R):
                ax = AX[r]
                ah[:] = bh  # (G2) bh ...
                if reset_after:
                    _gemm_acc(hrow, Wh, AH, 0, 3 * H)  # (G2) ... + h_{t-1} Wh
                    for j in range(H):
                        rg = sigmoid(ax[j] + ah[j])  # G3: r
                        zg = sigmoid(ax[H + j] + ah[H + j])  # G3: z
                        ng = tanh(ax[2 * H + j] + rg * ah[2 * H + j])  # G4: n
                        hl[j] = (1.0 - zg) * ng + zg * hl[j]  # G5
                else:
                    _gemm_acc(hrow, Wh, AH, 0, 2 * H)  # (G2c) ... + h_{t-1} Wh_rz
                    for j in range(H):
                        rg = sigmoid(ax[j] + ah[j])  # G3: r
                        ah[H + j] = sigmoid(ax[H + j] + ah[H + j])  # G3: z, kept in place
                        rh[j] = rg * hl[j]  # r * h_{t-1}, the input of G4c
                    _gemm_acc(RH, Wh, AH, 2 * H, 3 * H)  # (G4c) bh_n + (r * h_{t-1}) Wh_n
                    for j in range(H):
                        zg = ah[H + j]
                        ng = tanh(ax[2 * H + j] + ah[2 * H + j])  # G4c: n
                        hl[j] = (1.0 - zg) * ng + zg * hl[j]  # G5
                X[r] = hl  # the input of the next layer
        y = ids[t0 + 1 : t0 + R + 1]
        total += _block_loss(X[:R], Wsm, bsm, y, Z, losses, parallel)  # S1-S3
    return total


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def _plain_sequence(model: LanguageModel, ids: np.ndarray, state: State | None,
                    block: int) -> tuple[float, State]:  # fmt: skip
    """``evaluate_sequence`` through ``model.loss`` (batch 1, ``block`` words per call): for
    the options the compiled loops do not implement (LSTMP layers, E != H, the plain RNN)."""
    state = model.init_state(1) if state is None else state
    total = 0.0
    for lo in range(0, ids.shape[0] - 1, block):
        hi = min(lo + block, ids.shape[0] - 1)
        loss, state = model.loss(ids[None, lo:hi], ids[None, lo + 1 : hi + 1], state)
        total += loss  # B = 1: the loss is the sum of the chunk's -log p
    return total, state


def _state_arrays(model: LanguageModel, state: State | None) -> list[np.ndarray]:
    """The state as (L, H) arrays (h, then c for LSTM), copied: the kernels update them."""
    L, H, dt = model.num_layers, model.hidden_size, model.dtype
    n = 2 if model.cell == "lstm" else 1
    if state is None:
        return [np.zeros((L, H), dt) for _ in range(n)]
    if not isinstance(state, (list, tuple)) or len(state) != L:
        raise ValueError(f"state must be a list of {L} per-layer tuples "
                         "(use model.init_state(1))")  # fmt: skip
    out = [np.empty((L, H), dt) for _ in range(n)]
    for layer, s in enumerate(state):
        if len(s) != n:
            raise ValueError(f"state[{layer}] must hold {n} arrays for a {model.cell} layer")
        for k, a in enumerate(s):
            if not isinstance(a, np.ndarray) or a.shape != (1, H):
                raise ValueError(f"state[{layer}] arrays must have shape (1, H) = {(1, H)} "
                                 f"(batch size 1), got {getattr(a, 'shape', None)}")  # fmt: skip
            if a.dtype != dt:
                raise TypeError(f"state[{layer}] must be {dt}, got {a.dtype}")
            out[k][layer] = a[0]
    return out


def evaluate_sequence(
    model: LanguageModel,
    ids: np.ndarray,
    state: State | None = None,
    *,
    block: int = _BLOCK,
    parallel: bool = True,
) -> tuple[float, State]:
    """Summed cross-entropy of predicting ids[1:] from ids[:-1], word by word, batch 1.

    Parameters
    ----------
    model : the LanguageModel (LSTM or GRU, any number of layers; a plain RNN, LSTMP layers
        or E != H run through ``model.loss`` in chunks of ``block`` words); no dropout is
        applied.
    ids : (N,) integer token ids in [0, vocab_size), N >= 2.
    state : initial state as from ``model.init_state(1)`` (per layer (h, c) or (h,), each
        (1, H)); None for zeros. It is not modified.
    block : number of consecutive words whose input projections and softmax are computed
        together (the recurrence itself runs word by word). Changes speed, not results.
    parallel : spread each block's softmax over Numba's threads (same result; see the module
        docstring).

    Returns
    -------
    total : sum over the N - 1 predictions of -log p(ids[t+1] | ids[:t+1]) (float);
        perplexity = exp(total / (N - 1)). Up to rounding it equals the sum of ``model.loss``
        over the batches of ``ptb_iterator(ids, 1, 1)``, i.e. ``train.evaluate(model, ids, 1,
        1)`` started from ``state``.
    state : the state after reading ids[:-1] (ids[-1] is only a target), in the format of
        ``model.init_state(1)``. To score a long stream in pieces, let consecutive pieces
        overlap by one token: ``evaluate_sequence(model, ids[a:b + 1], state)``, then
        ``evaluate_sequence(model, ids[b:c + 1], new_state)``.
    """
    # The kernels index with these ids unchecked: validate them before anything else.
    ids = _checks.token_ids("ids", ids, model.vocab_size, ndim=1)
    if ids.shape[0] < 2:
        raise ValueError(
            f"ids must hold at least 2 tokens (an input and a target), got {ids.shape[0]}"
        )
    if int(block) != block or block < 1:
        raise ValueError(f"block must be a positive integer, got {block}")
    ids = ids.astype(np.int64, copy=False)
    block = min(int(block), ids.shape[0] - 1)  # the block buffers need no more rows than words
    # The plain RNN has no compiled loop: its step (R2) is one small GEMV and a tanh, and
    # ``model.loss`` on chunks of ``block`` words gives the same sums (batch 1, in order).
    if model._lstmp or model.embedding_size != model.hidden_size or model.cell == "rnn":
        return _plain_sequence(model, ids, state, block)
    arrays = _state_arrays(model, state)
    p, L = model.params, model.num_layers

    def per_layer(name: str) -> tuple[np.ndarray, ...]:
        return tuple(np.ascontiguousarray(p[f"l{layer}.{name}"]) for layer in range(L))

    # (T1) tied: Wsm = embedding.T, copied to the C order the loops read
    emb, Wsm, bsm = (np.ascontiguousarray(a) for a in (p["embedding"], model.softmax_weight(),
                                                       p["softmax_b"]))  # fmt: skip
    # The kernels call a parallel=True function. Loaded from Numba's on-disk cache, such a
    # caller crashes (segfault) unless Numba's thread pool was started first; compiling it
    # starts the pool, loading it does not. get_num_threads() starts it (idempotent, ~1 µs).
    numba.get_num_threads()
    if model.cell == "lstm":
        h, c = arrays
        fb = model.dtype.type(model.forget_bias)  # a Python float would promote float32 math
        total = _lstm_sequence(ids, emb, per_layer("Wx"), per_layer("Wh"), per_layer("b"), fb,
                               Wsm, bsm, h, c, block, bool(parallel))  # fmt: skip
        new_state: State = [(h[layer][None].copy(), c[layer][None].copy()) for layer in range(L)]
    else:
        (h,) = arrays
        total = _gru_sequence(ids, emb, per_layer("Wx"), per_layer("Wh"), per_layer("bx"),
                              per_layer("bh"), bool(model.reset_after), Wsm, bsm, h, block,
                              bool(parallel))  # fmt: skip
        new_state = [(h[layer][None].copy(),) for layer in range(L)]
    return float(total), new_state
