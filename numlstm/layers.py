"""Embedding, dropout and the fused linear + softmax + cross-entropy layer.

Equations E1, D1 and S1-S3 are derived in ``docs/layers.md``; each public function's
docstring states the equations it computes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _checks, kernels
from .fast.blas import matmul_into
from .fast.workspace import FRESH, Workspace

# --------------------------------------------------------------------------------------------
# Embedding
# --------------------------------------------------------------------------------------------


@dataclass
class EmbeddingCache:
    """ids (any shape) and the embedding matrix's shape and dtype."""

    ids: np.ndarray
    shape: tuple[int, int]
    dtype: np.dtype


def embedding_forward(ids: np.ndarray, W: np.ndarray) -> tuple[np.ndarray, EmbeddingCache]:
    """(E1) Look up rows of W: ids of any shape S, W (V, E) -> out of shape S + (E,).

        (E1)  e_n = W[k_n, :]          k_n the id at position n

    Raises ``ValueError`` for an id outside [0, V) before any memory is read.
    """
    W = _checks.float_array("W", W, 2)
    ids = _checks.token_ids("ids", ids, W.shape[0])
    return np.take(W, ids, axis=0), EmbeddingCache(ids, W.shape, W.dtype)  # (E1)


def embedding_backward(dout: np.ndarray, cache: EmbeddingCache) -> np.ndarray:
    """(dE1) Scatter-add: dW[k] = sum of dout over positions whose id is k. Returns dW (V, E).

    With de_n = dout at position n (docs/layers.md):

        (dE1)  dW[k, :] = sum over n with k_n = k of de_n
    """
    V, E = cache.shape
    dout = _checks.float_array("dout", dout, cache.ids.ndim + 1, cache.dtype)
    _checks.expect_shape("dout", dout, cache.ids.shape + (E,), "ids.shape + (E,)")
    dW = np.zeros((V, E), cache.dtype)
    # (dE1) dW[k_n] += de_n for every n; a repeated id adds up (np.add.at semantics)
    kernels.embedding_scatter_add(dW, cache.ids.reshape(-1), dout.reshape(-1, E))
    return dW


# --------------------------------------------------------------------------------------------
# Dropout (inverted)
# --------------------------------------------------------------------------------------------


def dropout_mask(
    shape: tuple[int, ...], keep_prob: float, rng: np.random.Generator, dtype=np.float32
) -> np.ndarray:
    """m / p with m ~ Bernoulli(p): the scaled mask of D1 (entries 0 or 1/keep_prob)."""
    if not 0.0 < keep_prob <= 1.0:
        raise ValueError(f"keep_prob must be in (0, 1], got {keep_prob}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError("rng must be a numpy.random.Generator (e.g. np.random.default_rng(0))")
    dtype = np.dtype(dtype)
    keep = rng.random(shape, dtype=dtype) < keep_prob
    return keep.astype(dtype) * dtype.type(1.0 / keep_prob)


def dropout_forward(
    x: np.ndarray,
    keep_prob: float,
    rng: np.random.Generator | None = None,
    *,
    mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """(D1) Inverted dropout. Returns (y, cache) where cache is the scaled mask m / p.

        (D1)  y = x ⊙ m / p          m ~ Bernoulli(p) elementwise, p = keep_prob

    keep_prob = 1 returns x itself and cache None. Pass ``mask`` (already scaled, same shape as
    x) to reuse a fixed mask, e.g. for a gradient check; otherwise it is drawn from ``rng``.
    """
    if not isinstance(x, np.ndarray) or x.dtype not in _checks.FLOAT_DTYPES:
        raise TypeError("x must be a float32 or float64 numpy array")
    if not 0.0 < keep_prob <= 1.0:
        raise ValueError(f"keep_prob must be in (0, 1], got {keep_prob}")
    if mask is None:
        if keep_prob == 1.0:
            return x, None
        if rng is None:
            raise ValueError("dropout with keep_prob < 1 needs rng (a numpy.random.Generator)")
        mask = dropout_mask(x.shape, keep_prob, rng, x.dtype)
    elif mask.shape != x.shape:
        raise ValueError(f"mask must have the shape of x {x.shape}, got {mask.shape}")
    return x * mask, mask  # (D1) y = x ⊙ (m / p)


def dropout_backward(dy: np.ndarray, cache: np.ndarray | None) -> np.ndarray:
    """(dD1) Backward of dropout, with the mask kept by ``dropout_forward``.

    With m / p the scaled mask held in ``cache`` (docs/layers.md):

        (dD1)  dx = dy ⊙ m / p
    """
    return dy if cache is None else dy * cache  # (dD1)


# --------------------------------------------------------------------------------------------
# Fused linear + softmax + cross-entropy
# --------------------------------------------------------------------------------------------


def _check_softmax(h, W, b, targets, batch_size):
    h = _checks.float_array("h", h, 2)
    W = _checks.float_array("W", W, 2, h.dtype)
    b = _checks.float_array("b", b, 1, h.dtype)
    N, H = h.shape
    _checks.expect_nonempty("h", h, "(N, H)")
    V = W.shape[1]
    _checks.expect_shape("W", W, (H, V), "(H, V)")
    _checks.expect_shape("b", b, (V,), "(V,)")
    targets = _checks.token_ids("targets", targets, V, ndim=1)
    _checks.expect_shape("targets", targets, (N,), "(N,)")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    _checks.expect_finite(h=h, W=W, b=b)
    return h, W, b, targets


def softmax_xent_forward_backward(
    h: np.ndarray, W: np.ndarray, b: np.ndarray, targets: np.ndarray, batch_size: int
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """Loss (S1-S3) and its gradients in one pass.

        (S1)   Z = h W + b
        (S2)   log p_{n,k} = z_{n,k} - m_n - log sum_j exp(z_{n,j} - m_n),   m_n = max_j z_{n,j}
        (S3)   loss = sum_n -log p_{n,y_n} / batch_size
        (dS2f) dZ = diag(q) Ẽ,   Ẽ_{n,k} = exp(z_{n,k} - m_n) - s_n [k = y_n],
               s_n = sum_k exp(z_{n,k} - m_n),   q_n = 1 / (batch_size s_n)
        (dS1)  [dW; db] = (diag(q) [h 1])^T Ẽ,   dh = diag(q) (Ẽ W^T)

    h (N, H) hidden states, W (H, V), b (V,), targets (N,) int ids, N = T * B.
    Loss = sum_n -log softmax(h W + b)[n, y_n] / batch_size, TensorFlow's
    ``sequence_loss_by_example`` summed over time and divided by the batch size.

    Returns (loss, dh (N, H), dW (H, V), db (V,)); dW and db are views of one (H + 1, V) array
    (db is the last row of the GEMM [h 1]^T dZ, docs/layers.md dS1).
    """
    h, W, b, targets = _check_softmax(h, W, b, targets, batch_size)
    return softmax_xent_forward_backward_unchecked(h, W, b, targets, batch_size)


class SoftmaxGrad:
    """Where the fused softmax layer keeps its two (N, .) buffers and how it forms [dW; db].

    This class is the plain, one-process way (dS1): the buffers come from the workspace and
    [dW; db] = (diag(q) [h 1])^T Ẽ is one GEMM over the N rows at hand. A step that splits a
    batch's rows among threads or processes passes a subclass that shares the work instead
    (``numlstm/fast/parallel.py``: ``SharedSoftmaxGrad``); the layer's arithmetic is the same.
    """

    def buffers(
        self, ws: Workspace, tag: str, N: int, H: int, V: int, dt: np.dtype
    ) -> tuple[np.ndarray, np.ndarray]:
        """z (N, V), the logits turned into Ẽ in place, and hq (N, H + 1), diag(q) [h 1]."""
        return ws.empty(tag + ".z", (N, V), dt), ws.empty(tag + ".hq", (N, H + 1), dt)

    def weight_grad(self, hq: np.ndarray, z: np.ndarray, ws: Workspace, tag: str) -> np.ndarray:
        """(dS1) [dW; db] = (diag(q) [h 1])^T Ẽ, one (H + 1, V) array."""
        return np.matmul(hq.T, z, out=ws.empty(tag + ".dWb", (hq.shape[1], z.shape[1]), z.dtype))


LOCAL = SoftmaxGrad()  # the default: this call's rows are the whole batch


def softmax_xent_forward_backward_unchecked(
    h, W, b, targets, batch_size, ws: Workspace = FRESH, tag: str = "softmax",
    grad: SoftmaxGrad = LOCAL, *, valid: np.ndarray | None = None,
):  # fmt: skip
    """``softmax_xent_forward_backward`` without validation.

    dW and db are returned as two views of one (H + 1, V) array: db is the last row of the
    GEMM [h 1]^T dZ (dS1), so no separate pass over dZ sums its columns. ``grad`` says where
    the buffers live and who forms [dW; db] (see ``SoftmaxGrad``). ``valid`` (N,) bool, or
    None for all rows: only valid rows count in the loss (S3m) and padded rows of dZ are zero
    (dS3m), by setting their q_n to 0.
    """
    N, H = h.shape
    V = W.shape[1]
    dt = h.dtype
    z, hq = grad.buffers(ws, tag, N, H, V, dt)
    matmul_into(h, W, z)  # (S1) Z = h W; the kernel adds b and turns z into Ẽ in place
    losses = ws.empty(tag + ".losses", (N,), np.dtype(np.float64))
    q = ws.empty(tag + ".q", (N,), dt)
    kernels.softmax_xent_rows(z, b, targets, dt.type(1.0 / batch_size), losses, q)
    # ... in the kernel, row by row: (S1) + b;  (S2) m_n, s_n;  (S3) losses_n = -log p_{n,y_n};
    # (dS2f) z becomes Ẽ in place and q_n = 1 / (batch_size s_n)
    if valid is not None:
        _mask_rows(valid, losses, q)  # (S3m) drop the padded rows' losses; (dS3m) their q_n = 0
    # (dS1) with dZ = diag(q) Ẽ (dS2f): [dW; db] = [h 1]^T dZ = (diag(q) [h 1])^T Ẽ.
    np.multiply(h, q[:, None], out=hq[:, :H])
    hq[:, H] = q
    dWb = grad.weight_grad(hq, z, ws, tag)  # (dS1) [dW; db] = hq^T Ẽ
    # (dS1) dh = dZ W^T = diag(q) (Ẽ W^T)
    dh = np.matmul(z, W.T, out=ws.empty(tag + ".dh", (N, H), dt))
    dh *= q[:, None]
    return float(losses.sum()) / batch_size, dh, dWb[:H], dWb[H]  # (S3) loss


def softmax_xent_loss(
    h: np.ndarray, W: np.ndarray, b: np.ndarray, targets: np.ndarray, batch_size: int
) -> float:
    """The loss of ``softmax_xent_forward_backward`` alone (S1-S3), for evaluation.

    For N rows h (N, H), weights W (H, V), b (V,) and targets y (N,) (docs/layers.md):

        (S1)  Z = h W + b
        (S2)  log p_{n,k} = z_{n,k} - m_n - log sum_j exp(z_{n,j} - m_n),   m_n = max_j z_{n,j}
        (S3)  loss = sum_n -log p_{n,y_n} / batch_size
    """
    h, W, b, targets = _check_softmax(h, W, b, targets, batch_size)
    return softmax_xent_loss_unchecked(h, W, b, targets, batch_size)


def softmax_xent_loss_unchecked(
    h, W, b, targets, batch_size, ws: Workspace = FRESH, tag: str = "softmax", *,
    valid: np.ndarray | None = None,
):  # fmt: skip
    """``softmax_xent_loss`` without validation; ``valid`` (N,) bool: only those rows count
    (S3m), or None for all."""
    z = matmul_into(h, W, ws.empty(tag + ".z", (h.shape[0], W.shape[1]), h.dtype))  # (S1)
    losses = ws.empty(tag + ".losses", (h.shape[0],), np.dtype(np.float64))
    kernels.softmax_xent_loss_rows(z, b, targets, losses)  # S1 bias, S2, S3
    if valid is not None:
        _mask_rows(valid, losses)  # (S3m) the padded rows' losses do not count
    return float(losses.sum()) / batch_size


def _mask_rows(valid: np.ndarray, *rows: np.ndarray) -> None:
    """Zero the entries of padded rows (valid[n] False) of each (N,) array, in place: the row
    losses (S3m) and the row factors q_n of dZ = diag(q) Ẽ (dS3m)."""
    padded = ~valid
    for a in rows:
        a[padded] = 0
