"""Row-sparse embedding gradients (numlstm.IndexedRows) give the dense results exactly."""

from __future__ import annotations

import numpy as np
import pytest

from numlstm import SGD, Adam, IndexedRows, LanguageModel, clip_by_global_norm, global_norm
from numlstm.gru import gru_backward_unchecked, gru_forward_unchecked
from numlstm.lstm import lstm_backward_unchecked, lstm_forward_unchecked
from numlstm.rnn import rnn_backward_unchecked, rnn_forward_unchecked

CELLS = [("lstm", True), ("gru", True), ("gru", False), ("rnn", True)]
CELL_IDS = ["lstm", "gru_after", "gru_before", "rnn"]
SEEDS = pytest.mark.parametrize("seed", [0, 1, 2])


def model_and_batch(cell, reset_after, seed, dtype=np.float64, V=11, H=5, B=3, T=4):
    model = LanguageModel(V, H, 2, cell=cell, reset_after=reset_after, dtype=dtype, seed=seed)
    rng = np.random.default_rng(seed)
    x = rng.integers(0, V, (B, T))
    x[0, :2] = x[1, 0] = 3  # repeated ids must accumulate into one row
    y = rng.integers(0, V, (B, T))
    return model, x, y


@SEEDS
@pytest.mark.parametrize(("cell", "reset_after"), CELLS, ids=CELL_IDS)
def test_sparse_embedding_gradient_equals_the_dense_one(seed, cell, reset_after):
    model, x, y = model_and_batch(cell, reset_after, seed)
    state = model.init_state(x.shape[0])
    loss_d, dense, _ = model.loss_and_grads(x, y, state, 0.7, np.random.default_rng(seed))
    dense = {k: v.copy() for k, v in dense.items()}
    loss_s, sparse, _ = model.loss_and_grads(
        x, y, state, 0.7, np.random.default_rng(seed), sparse_embedding=True
    )
    assert loss_s == loss_d
    g = sparse["embedding"]
    assert isinstance(g, IndexedRows)
    assert g.shape == model.params["embedding"].shape and g.dtype == model.dtype
    assert sorted(g.rows.tolist()) == sorted(set(x.reshape(-1).tolist()))  # distinct, all of them
    np.testing.assert_array_equal(g.to_dense(), dense["embedding"])
    for k in dense:
        if k != "embedding":
            np.testing.assert_array_equal(sparse[k], dense[k], err_msg=k)


@SEEDS
def test_sparse_buffers_are_reused_without_stale_rows(seed):
    """Two calls in a row with different words: the second gradient holds only its own rows."""
    model, x, y = model_and_batch("lstm", True, seed)
    state = model.init_state(x.shape[0])
    model.loss_and_grads(x, y, state, sparse_embedding=True)
    x2 = (x + 1) % model.vocab_size
    _, dense, _ = model.loss_and_grads(x2, y, state)
    dense = dense["embedding"].copy()
    _, sparse, _ = model.loss_and_grads(x2, y, state, sparse_embedding=True)
    np.testing.assert_array_equal(sparse["embedding"].to_dense(), dense)


@SEEDS
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_norm_clip_and_sgd_on_sparse_match_dense(seed, dtype):
    model, x, y = model_and_batch("lstm", True, seed, dtype=dtype)
    state = model.init_state(x.shape[0])
    _, dense, _ = model.loss_and_grads(x, y, state)
    dense = {k: v.copy() for k, v in dense.items()}
    _, sparse, _ = model.loss_and_grads(x, y, state, sparse_embedding=True)
    assert global_norm(sparse) == pytest.approx(global_norm(dense), rel=1e-12)

    max_norm = 0.5 * global_norm(dense)  # so that clipping really scales
    clip_by_global_norm(dense, max_norm)
    clip_by_global_norm(sparse, max_norm)
    np.testing.assert_array_equal(sparse["embedding"].to_dense(), dense["embedding"])

    p_dense = {k: v.copy() for k, v in model.params.items()}
    p_sparse = {k: v.copy() for k, v in model.params.items()}
    SGD(p_dense, 0.3).step(dense, grad_scale=0.7)
    SGD(p_sparse, 0.3).step(sparse, grad_scale=0.7)
    for k in p_dense:
        np.testing.assert_array_equal(p_sparse[k], p_dense[k], err_msg=k)
    untouched = np.setdiff1d(np.arange(model.vocab_size), x.reshape(-1))
    np.testing.assert_array_equal(
        p_sparse["embedding"][untouched], model.params["embedding"][untouched]
    )


@SEEDS
def test_adam_on_sparse_matches_dense(seed):
    model, x, y = model_and_batch("gru", True, seed)
    state = model.init_state(x.shape[0])
    p_dense = {k: v.copy() for k, v in model.params.items()}
    p_sparse = {k: v.copy() for k, v in model.params.items()}
    a_dense, a_sparse = Adam(p_dense, 0.01), Adam(p_sparse, 0.01)
    for _ in range(2):
        _, dense, _ = model.loss_and_grads(x, y, state)
        a_dense.step(dense)
        _, sparse, _ = model.loss_and_grads(x, y, state, sparse_embedding=True)
        a_sparse.step(sparse)
    for k in p_dense:
        np.testing.assert_array_equal(p_sparse[k], p_dense[k], err_msg=k)


def _sparse_grads(rows, values, shape=(6, 2)):
    params = {"embedding": np.zeros(shape)}
    return params, {"embedding": IndexedRows(rows, values, shape)}


@pytest.mark.parametrize(
    ("rows", "values", "error", "match"),
    [
        (np.array([0, 6]), np.ones((2, 2)), ValueError, r"rows must lie in \[0, 6\)"),
        (np.array([-1]), np.ones((1, 2)), ValueError, "rows must lie"),
        (np.array([1.0]), np.ones((1, 2)), TypeError, "1-D integer array"),
        (np.array([1, 2]), np.ones((2, 3)), ValueError, r"values must have shape"),
        (np.array([1, 2]), np.ones((3, 2)), ValueError, r"values must have shape"),
    ],
)
def test_sgd_rejects_bad_indexed_rows_before_any_kernel(rows, values, error, match, no_kernels):
    params, grads = _sparse_grads(rows, values)
    with pytest.raises(error, match=match):
        SGD(params, 0.1).step(grads)


def test_sgd_rejects_indexed_rows_of_the_wrong_shape():
    params = {"embedding": np.zeros((6, 2))}
    grads = {"embedding": IndexedRows(np.array([1]), np.ones((1, 2)), (7, 2))}
    with pytest.raises(ValueError, match="gradient 'embedding'"):
        SGD(params, 0.1).step(grads)


@SEEDS
@pytest.mark.parametrize(("cell", "reset_after"), CELLS, ids=CELL_IDS)
def test_backward_without_dh0_gives_the_same_weight_gradients(seed, cell, reset_after):
    """need_dh0=False only skips the gradient on the initial state."""
    rng = np.random.default_rng(seed)
    T, B, D, H = 4, 3, 5, 6
    G = {"lstm": 4, "gru": 3, "rnn": 1}[cell]
    x = rng.standard_normal((T, B, D))
    h0 = rng.standard_normal((B, H))
    Wx, Wh = rng.standard_normal((D, G * H)), rng.standard_normal((H, G * H))
    dhs = rng.standard_normal((T, B, H))
    zeros = np.zeros((B, H))
    if cell == "lstm":
        b = rng.standard_normal(G * H)
        *_, cache = lstm_forward_unchecked(x, h0, h0.copy(), Wx, Wh, b)
        full = lstm_backward_unchecked(dhs, zeros, zeros, cache)
        short = lstm_backward_unchecked(dhs, zeros, zeros, cache, need_dh0=False)
    elif cell == "rnn":
        b = rng.standard_normal(G * H)
        *_, cache = rnn_forward_unchecked(x, h0, Wx, Wh, b)
        full = rnn_backward_unchecked(dhs, zeros, cache)
        short = rnn_backward_unchecked(dhs, zeros, cache, need_dh0=False)
    else:
        bx, bh = rng.standard_normal(G * H), rng.standard_normal(G * H)
        *_, cache = gru_forward_unchecked(x, h0, Wx, Wh, bx, bh, reset_after)
        full = gru_backward_unchecked(dhs, zeros, cache)
        short = gru_backward_unchecked(dhs, zeros, cache, need_dh0=False)
    assert short[1] is None and full[1] is not None
    for i, (a, b_) in enumerate(zip(full, short, strict=True)):
        if i != 1:
            np.testing.assert_array_equal(a, b_)
