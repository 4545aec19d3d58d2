"""Tests for numlstm.layers: embedding, dropout, fused softmax cross-entropy."""

from __future__ import annotations

import numpy as np
import pytest

from numlstm import (
    dropout_backward,
    dropout_forward,
    dropout_mask,
    embedding_backward,
    embedding_forward,
    softmax_xent_forward_backward,
    softmax_xent_loss,
)

# ============================================================================ embedding


@pytest.mark.parametrize("ids_shape", [(7,), (3, 4), (1, 1)], ids=str)
def test_embedding_gradcheck_with_repeated_ids(seed, ids_shape, check_grads):
    rng = np.random.default_rng(seed)
    V, E = 4, 3
    ids = rng.integers(0, V, ids_shape)
    if ids.size > 1:
        ids.reshape(-1)[:2] = 2  # at least one repeated id
    W = rng.standard_normal((V, E))
    R = rng.standard_normal(ids_shape + (E,))

    def loss():
        out, _ = embedding_forward(ids, W)
        return float(np.sum(out * R))

    out, cache = embedding_forward(ids, W)
    check_grads("embedding", loss, {"W": W}, {"W": embedding_backward(R, cache)})


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_embedding_forward_is_a_row_lookup(seed, dtype):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((6, 5)).astype(dtype)
    ids = rng.integers(0, 6, (3, 4))
    out, _ = embedding_forward(ids, W)
    assert out.shape == (3, 4, 5)
    assert out.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(out, W[ids])


def test_embedding_backward_accumulates_repeated_ids():
    """The docs' example: ids [1, 3, 1, 1] must give row 1 three contributions."""
    ids = np.array([1, 3, 1, 1])
    _, cache = embedding_forward(ids, np.zeros((5, 2)))
    dW = embedding_backward(np.ones((4, 2)), cache)
    np.testing.assert_array_equal(dW[:, 0], [0, 3, 0, 1, 0])
    np.testing.assert_array_equal(dW[:, 1], [0, 3, 0, 1, 0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_embedding_backward_matches_add_at(seed, dtype):
    rng = np.random.default_rng(seed)
    V, E = 5, 3
    ids = rng.integers(0, V, (4, 6))
    _, cache = embedding_forward(ids, np.zeros((V, E), dtype))
    dout = rng.standard_normal((4, 6, E)).astype(dtype)
    dW = embedding_backward(dout, cache)
    ref = np.zeros((V, E))
    np.add.at(ref, ids.reshape(-1), dout.reshape(-1, E).astype(np.float64))
    assert dW.dtype == np.dtype(dtype)
    np.testing.assert_allclose(dW, ref, rtol=1e-6 if dtype == np.float32 else 1e-14, atol=1e-6)


@pytest.mark.usefixtures("no_kernels")
class TestEmbeddingBadInput:
    @pytest.mark.parametrize("bad", [-1, 5, 17])
    def test_out_of_range_id(self, bad):
        ids = np.array([[0, 1], [bad, 2]])
        with pytest.raises(ValueError, match=rf"token id {bad}\b.*\[0, 5\)"):
            embedding_forward(ids, np.zeros((5, 3)))

    @pytest.mark.parametrize(
        "ids",
        [np.array([0.0, 1.0]), np.array([True, False]), [0, 1]],
        ids=["float", "bool", "list"],
    )
    def test_non_integer_ids(self, ids):
        with pytest.raises(TypeError, match="ids"):
            embedding_forward(ids, np.zeros((5, 3)))

    def test_empty_ids(self):
        with pytest.raises(ValueError, match="empty"):
            embedding_forward(np.zeros((0,), np.int64), np.zeros((5, 3)))

    def test_integer_weights(self):
        with pytest.raises(TypeError, match="^W "):
            embedding_forward(np.array([0, 1]), np.zeros((5, 3), np.int64))


def test_embedding_backward_rejects_wrong_dout():
    _, cache = embedding_forward(np.array([[0, 1, 2]]), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="dout"):
        embedding_backward(np.zeros((1, 3, 4)), cache)
    with pytest.raises(TypeError, match="dout"):
        embedding_backward(np.zeros((1, 3, 3), np.float32), cache)


# ============================================================================ dropout


@pytest.mark.parametrize("keep_prob", [0.5, 0.8])
def test_dropout_gradcheck_with_fixed_mask(seed, keep_prob, check_grads):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((3, 2, 4))
    R = rng.standard_normal(x.shape)
    mask = dropout_mask(x.shape, keep_prob, rng, np.float64)

    def loss():
        y, _ = dropout_forward(x, keep_prob, mask=mask)
        return float(np.sum(y * R))

    y, cache = dropout_forward(x, keep_prob, mask=mask)
    np.testing.assert_array_equal(y, x * mask)
    check_grads("dropout", loss, {"x": x}, {"x": dropout_backward(R, cache)})


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("keep_prob", [0.3, 0.75])
def test_dropout_mask_values_and_rate(dtype, keep_prob):
    m = dropout_mask((200, 50), keep_prob, np.random.default_rng(0), dtype)
    assert m.dtype == np.dtype(dtype)
    scaled = np.asarray(1.0 / keep_prob, dtype)
    assert set(np.unique(m).tolist()) == {0.0, float(scaled)}
    kept = np.mean(m != 0)
    sigma = np.sqrt(keep_prob * (1 - keep_prob) / m.size)
    assert abs(kept - keep_prob) < 5 * sigma
    # inverted dropout: the expected value of x * m is x
    assert abs(np.mean(m) - 1.0) < 5 * sigma / keep_prob


def test_dropout_mask_is_reproducible_and_seed_dependent():
    a = dropout_mask((10, 10), 0.5, np.random.default_rng(7))
    b = dropout_mask((10, 10), 0.5, np.random.default_rng(7))
    c = dropout_mask((10, 10), 0.5, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_dropout_forward_with_rng_uses_that_mask_in_backward():
    x = np.random.default_rng(1).standard_normal((4, 5))
    y, mask = dropout_forward(x, 0.6, np.random.default_rng(3))
    assert mask.shape == x.shape and mask.dtype == x.dtype
    np.testing.assert_allclose(y, x * mask, rtol=1e-15)
    dy = np.arange(20.0).reshape(4, 5)
    np.testing.assert_allclose(dropout_backward(dy, mask), dy * mask, rtol=1e-15)


def test_dropout_keep_prob_one_is_identity():
    x = np.ones((2, 3), np.float32)
    y, cache = dropout_forward(x, 1.0)
    assert y is x
    assert cache is None
    dy = np.full((2, 3), 2.0, np.float32)
    assert dropout_backward(dy, cache) is dy


class TestDropoutBadInput:
    @pytest.mark.parametrize("keep_prob", [0.0, -0.5, 1.5, float("nan")])
    def test_keep_prob_out_of_range(self, keep_prob):
        rng = np.random.default_rng(0)
        with pytest.raises(ValueError, match="keep_prob"):
            dropout_mask((2, 2), keep_prob, rng)
        with pytest.raises(ValueError, match="keep_prob"):
            dropout_forward(np.ones((2, 2)), keep_prob, rng)

    def test_keep_prob_below_one_needs_rng(self):
        with pytest.raises(ValueError, match="rng"):
            dropout_forward(np.ones((2, 2)), 0.5)

    def test_rng_must_be_a_generator(self):
        with pytest.raises(TypeError, match="rng"):
            dropout_mask((2, 2), 0.5, np.random.RandomState(0))

    def test_mask_shape(self):
        with pytest.raises(ValueError, match="mask"):
            dropout_forward(np.ones((2, 2)), 0.5, mask=np.ones((2, 3)))

    def test_integer_x(self):
        with pytest.raises(TypeError, match="x"):
            dropout_forward(np.ones((2, 2), np.int64), 0.5, np.random.default_rng(0))


# ============================================================================ softmax


def reference_softmax_xent(h, W, b, targets, batch_size):
    """Straightforward log-softmax; loss = sum over all N rows of -log p / batch_size."""
    z = h @ W + b
    logp = z - z.max(axis=1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(axis=1, keepdims=True))
    N = len(targets)
    loss = -logp[np.arange(N), targets].sum() / batch_size
    dz = np.exp(logp)
    dz[np.arange(N), targets] -= 1.0
    dz /= batch_size
    return loss, dz @ W.T, h.T @ dz, dz.sum(axis=0)


# (T, B, H, V): N = T * B rows, batch_size = B
SM_SHAPES = [(3, 2, 4, 7), (1, 1, 3, 5), (2, 3, 5, 4)]
SM_IDS = [f"T{t}B{b}H{h}V{v}" for t, b, h, v in SM_SHAPES]


def make_softmax(seed, T, B, H, V, dtype=np.float64):
    rng = np.random.default_rng(seed)
    h = rng.standard_normal((T * B, H)).astype(dtype)
    W = rng.standard_normal((H, V)).astype(dtype)
    b = rng.standard_normal(V).astype(dtype)
    targets = rng.integers(0, V, T * B)
    return h, W, b, targets


@pytest.mark.parametrize("shape", SM_SHAPES, ids=SM_IDS)
def test_softmax_gradcheck(seed, shape, check_grads):
    B = shape[1]
    h, W, b, targets = make_softmax(seed, *shape)
    params = {"h": h, "W": W, "b": b}

    def loss():
        return softmax_xent_forward_backward(h, W, b, targets, B)[0]

    _, dh, dW, db = softmax_xent_forward_backward(h, W, b, targets, B)
    check_grads("softmax_xent", loss, params, {"h": dh, "W": dW, "b": db})


@pytest.mark.parametrize("shape", SM_SHAPES, ids=SM_IDS)
def test_softmax_matches_reference(seed, shape):
    B = shape[1]
    h, W, b, targets = make_softmax(seed, *shape)
    ref = reference_softmax_xent(h, W, b, targets, B)
    got = softmax_xent_forward_backward(h, W, b, targets, B)
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-12)
    for name, a, r in zip(("dh", "dW", "db"), got[1:], ref[1:], strict=True):
        np.testing.assert_allclose(a, r, rtol=1e-11, atol=1e-14, err_msg=name)
    assert softmax_xent_loss(h, W, b, targets, B) == pytest.approx(ref[0], rel=1e-12)


def test_softmax_loss_definition_by_hand():
    """Loss = sum over all N = T*B rows of -log p[y] divided by batch_size (not by N)."""
    h = np.eye(3)  # logits are the rows of W (+ b)
    W = np.array([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    b = np.zeros(3)
    targets = np.array([0, 2, 1])
    nll = [
        -(2.0 - np.log(np.exp(2.0) + 2.0)),
        -(0.0 - np.log(np.exp(1.0) + 2.0)),
        -(0.0 - np.log(3.0)),
    ]
    for batch_size in (1, 3):
        loss, *_ = softmax_xent_forward_backward(h, W, b, targets, batch_size)
        assert loss == pytest.approx(sum(nll) / batch_size, rel=1e-14)


@pytest.mark.parametrize("shape", SM_SHAPES, ids=SM_IDS)
def test_softmax_float32_agrees_with_float64(seed, shape):
    B = shape[1]
    h, W, b, targets = make_softmax(seed, *shape)
    out64 = softmax_xent_forward_backward(h, W, b, targets, B)
    args32 = (h.astype(np.float32), W.astype(np.float32), b.astype(np.float32))
    out32 = softmax_xent_forward_backward(*args32, targets, B)
    assert out32[0] == pytest.approx(out64[0], rel=1e-5)
    assert softmax_xent_loss(*args32, targets, B) == pytest.approx(out64[0], rel=1e-5)
    for name, a, r in zip(("dh", "dW", "db"), out32[1:], out64[1:], strict=True):
        assert a.dtype == np.float32, name
        err = np.max(np.abs(a - r)) / np.max(np.abs(r))
        assert err < 1e-5, f"{name}: {err:.2e}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_wide_logit_range_float32_exp(dtype):
    """Float32 uses a polynomial exp: check it over exponents from 0 down to -60 and the
    large-logit example of docs/layers.md (logits 100, 90, 80 must not overflow)."""
    N, V = 64, 9
    rng = np.random.default_rng(0)
    z = rng.uniform(-50.0, 50.0, (N, V))
    h, W, b = z, np.eye(V), np.zeros(V)  # logits = z
    targets = rng.integers(0, V, N)
    ref = reference_softmax_xent(h, W, b, targets, 4)
    loss, dh, _, _ = softmax_xent_forward_backward(
        *(a.astype(dtype) for a in (h, W, b)), targets, 4
    )
    assert loss == pytest.approx(ref[0], rel=1e-6)
    np.testing.assert_allclose(dh, ref[1], rtol=1e-4, atol=1e-7)

    big = np.array([[100.0, 90.0, 80.0]], dtype)
    for target, expected in ((0, 4.54e-5), (1, 10.0000454), (2, 20.0000454)):
        loss, dz, _, _ = softmax_xent_forward_backward(
            big, np.eye(3, dtype=dtype), np.zeros(3, dtype), np.array([target]), 1
        )
        assert np.isfinite(dz).all()
        assert loss == pytest.approx(expected, rel=2e-3 if target == 0 else 1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_very_unlikely_target(dtype):
    """log p of a target 200 below the max is -200 (no log(0) = -inf)."""
    h = np.array([[0.0, -200.0]], dtype)
    loss, dz, _, _ = softmax_xent_forward_backward(
        h, np.eye(2, dtype=dtype), np.zeros(2, dtype), np.array([1]), 1
    )
    assert loss == pytest.approx(200.0, rel=1e-6)
    np.testing.assert_allclose(dz, [[1.0, -1.0]], atol=1e-6)


def test_softmax_gradient_rows_sum_to_zero_and_inputs_untouched(seed):
    h, W, b, targets = make_softmax(seed, 3, 2, 4, 7)
    saved = [a.copy() for a in (h, W, b, targets)]
    _, _, _, db = softmax_xent_forward_backward(h, W, b, targets, 2)
    # db is the column sum of dZ; summing its entries sums every row of dZ (each is 0)
    assert abs(db.sum()) < 1e-14
    for a, s in zip((h, W, b, targets), saved, strict=True):
        np.testing.assert_array_equal(a, s)


@pytest.mark.usefixtures("no_kernels")
class TestSoftmaxBadInput:
    @staticmethod
    def args():
        return list(make_softmax(0, 3, 2, 4, 7)) + [2]

    @pytest.mark.parametrize("bad", [-1, 7, 100])
    @pytest.mark.parametrize("fn", [softmax_xent_forward_backward, softmax_xent_loss])
    def test_out_of_range_target(self, fn, bad):
        a = self.args()
        a[3][4] = bad
        with pytest.raises(ValueError, match=rf"targets holds token id {bad}\b"):
            fn(*a)

    def test_non_integer_targets(self):
        a = self.args()
        a[3] = a[3].astype(np.float64)
        with pytest.raises(TypeError, match="targets"):
            softmax_xent_forward_backward(*a)

    def test_targets_wrong_length_or_ndim(self):
        a = self.args()
        a[3] = a[3][:-1]
        with pytest.raises(ValueError, match="^targets must have shape"):
            softmax_xent_forward_backward(*a)
        a = self.args()
        a[3] = a[3].reshape(3, 2)
        with pytest.raises(ValueError, match="^targets must have 1 dimensions"):
            softmax_xent_forward_backward(*a)

    @pytest.mark.parametrize("index,name,shape", [(1, "W", (5, 7)), (2, "b", (6,))])
    def test_mismatched_shapes(self, index, name, shape):
        a = self.args()
        a[index] = np.zeros(shape)
        with pytest.raises(ValueError, match=rf"^{name} must have shape"):
            softmax_xent_forward_backward(*a)

    @pytest.mark.parametrize("index,name", [(1, "W"), (2, "b")])
    def test_mixed_dtypes(self, index, name):
        a = self.args()
        a[index] = a[index].astype(np.float32)
        with pytest.raises(TypeError, match=rf"^{name} has dtype"):
            softmax_xent_forward_backward(*a)

    @pytest.mark.parametrize("index,name", [(0, "h"), (1, "W"), (2, "b")])
    def test_non_finite(self, index, name):
        a = self.args()
        a[index].reshape(-1)[0] = np.nan
        with pytest.raises(ValueError, match=rf"^{name} contains NaN or inf"):
            softmax_xent_forward_backward(*a)

    def test_empty_h(self):
        a = self.args()
        a[0] = np.zeros((0, 4))
        a[3] = np.zeros(0, np.int64)
        with pytest.raises(ValueError, match="empty"):
            softmax_xent_forward_backward(*a)

    @pytest.mark.parametrize("batch_size", [0, -2, 1.5])
    def test_bad_batch_size(self, batch_size):
        a = self.args()
        a[4] = batch_size
        with pytest.raises(ValueError, match="batch_size"):
            softmax_xent_forward_backward(*a)

    def test_integer_h(self):
        a = self.args()
        a[0] = np.ones((6, 4), np.int64)
        with pytest.raises(TypeError, match="^h must be float32 or float64"):
            softmax_xent_forward_backward(*a)
