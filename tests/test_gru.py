"""Tests for numlstm.gru, both forms: gradient checks, NumPy references, properties, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from numlstm import GRUCache, gru_backward, gru_forward, lstm_backward, lstm_forward

# (T, B, D, H): T = 1 and B = 1 included; D != H everywhere.
# The last shape has B >= timeloop.MIN_ROWS (the Numba time loops run it when BLAS has one
# thread; tests/test_timeloop.py forces them).
SHAPES = [(3, 2, 4, 5), (1, 1, 3, 2), (4, 3, 2, 3), (3, 6, 4, 5)]
SHAPE_IDS = [f"T{t}B{b}D{d}H{h}" for t, b, d, h in SHAPES]
NAMES = ("x", "h0", "Wx", "Wh", "bx", "bh")
FORMS = pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])


def make_inputs(seed, T, B, D, H, dtype=np.float64, scale=0.5):
    rng = np.random.default_rng(seed)

    def r(*shape):
        return (scale * rng.standard_normal(shape)).astype(dtype)

    return {
        "x": r(T, B, D), "h0": r(B, H), "Wx": r(D, 3 * H), "Wh": r(H, 3 * H),
        "bx": r(3 * H), "bh": r(3 * H),
    }  # fmt: skip


def make_upstream(seed, T, B, H, dtype=np.float64):
    """Random weights R, RT of the loss sum(hs*R) + sum(hT*RT)."""
    rng = np.random.default_rng(2000 + seed)
    return rng.standard_normal((T, B, H)).astype(dtype), rng.standard_normal((B, H)).astype(dtype)


def sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def reference_gru(x, h0, Wx, Wh, bx, bh, reset_after=True):
    """Blocks r, z, n; h = (1 - z) n + z h_prev.

    reset_after:  n = tanh(x Wx_n + bx_n + r * (h Wh_n + bh_n))      (cuDNN / PyTorch)
    reset_before: n = tanh(x Wx_n + bx_n + (r * h) Wh_n + bh_n)      (Cho et al. 2014)
    """
    H = h0.shape[1]
    h, hs = h0, []
    for x_t in x:
        ax = x_t @ Wx + bx
        r = sigmoid(ax[:, :H] + h @ Wh[:, :H] + bh[:H])
        z = sigmoid(ax[:, H : 2 * H] + h @ Wh[:, H : 2 * H] + bh[H : 2 * H])
        if reset_after:
            n = np.tanh(ax[:, 2 * H :] + r * (h @ Wh[:, 2 * H :] + bh[2 * H :]))
        else:
            n = np.tanh(ax[:, 2 * H :] + (r * h) @ Wh[:, 2 * H :] + bh[2 * H :])
        h = (1.0 - z) * n + z * h
        hs.append(h)
    return np.stack(hs), h


def max_rel(a, ref):
    return float(np.max(np.abs(np.asarray(a, np.float64) - ref)) / max(np.max(np.abs(ref)), 1e-30))


# ------------------------------------------------------------------------ gradient checks


@FORMS
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_gru_gradcheck(seed, shape, reset_after, check_grads):
    T, B, D, H = shape
    p = make_inputs(seed, T, B, D, H)
    R, RT = make_upstream(seed, T, B, H)

    def loss():
        hs, hT, _ = gru_forward(**p, reset_after=reset_after)
        return float(np.sum(hs * R) + np.sum(hT * RT))

    _, _, cache = gru_forward(**p, reset_after=reset_after)
    grads = dict(zip(NAMES, gru_backward(R, RT, cache), strict=True))
    form = "gru(reset_after)" if reset_after else "gru(reset_before)"
    check_grads(form, loss, p, grads)


# ------------------------------------------------------------------------ reference


@FORMS
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_gru_forward_matches_reference(seed, shape, reset_after):
    p = make_inputs(seed, *shape, scale=1.0)
    hs, hT, _ = gru_forward(**p, reset_after=reset_after)
    ref_hs, ref_h = reference_gru(**p, reset_after=reset_after)
    np.testing.assert_allclose(hs, ref_hs, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(hT, ref_h, rtol=1e-12, atol=1e-13)


def test_gru_forms_are_different_models(seed):
    p = make_inputs(seed, 3, 2, 4, 5, scale=1.0)
    hs_after, _, _ = gru_forward(**p, reset_after=True)
    hs_before, _, _ = gru_forward(**p, reset_after=False)
    assert np.max(np.abs(hs_after - hs_before)) > 1e-3


def test_gru_default_is_reset_after():
    p = make_inputs(5, 2, 2, 3, 4, scale=1.0)
    hs, _, cache = gru_forward(**p)
    assert cache.reset_after is True
    np.testing.assert_allclose(hs, reference_gru(**p, reset_after=True)[0], rtol=1e-12)


@FORMS
def test_gru_gate_blocks_by_hand(reset_after):
    """Zero weights, one distinct bias per block: pins r, z, n and h = (1-z) n + z h_prev."""
    B, D, H = 2, 3, 2
    bx = np.repeat([0.2, -0.4, 0.5], H).astype(np.float64)
    bh = np.repeat([0.1, 0.3, -0.9], H).astype(np.float64)
    h0 = np.array([[0.5, -1.0], [0.75, 0.25]])
    x = np.ones((1, B, D))
    _, hT, _ = gru_forward(
        x, h0, np.zeros((D, 3 * H)), np.zeros((H, 3 * H)), bx, bh, reset_after=reset_after
    )
    r, z = sigmoid(0.2 + 0.1), sigmoid(-0.4 + 0.3)
    # With Wh = 0 the two forms differ only in whether bh_n is multiplied by r.
    n = np.tanh(0.5 + (r * -0.9 if reset_after else -0.9))
    np.testing.assert_allclose(hT, (1 - z) * n + z * h0, rtol=1e-14)


# ------------------------------------------------------------------------ properties


@FORMS
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_gru_float32_agrees_with_float64(seed, shape, reset_after):
    T, B, D, H = shape
    p64 = make_inputs(seed, T, B, D, H)
    p32 = {k: v.astype(np.float32) for k, v in p64.items()}
    up64 = make_upstream(seed, T, B, H)
    up32 = tuple(u.astype(np.float32) for u in up64)
    hs64, hT64, c64 = gru_forward(**p64, reset_after=reset_after)
    hs32, hT32, c32 = gru_forward(**p32, reset_after=reset_after)
    assert hs32.dtype == hT32.dtype == np.float32
    assert max_rel(hs32, hs64) < 1e-5
    assert max_rel(hT32, hT64) < 1e-5
    g64 = gru_backward(*up64, c64)
    g32 = gru_backward(*up32, c32)
    for name, a, ref in zip(NAMES, g32, g64, strict=True):
        assert a.dtype == np.float32
        assert max_rel(a, ref) < 1e-5, f"d{name}: {max_rel(a, ref):.2e}"


@FORMS
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gru_forward_equals_t1_calls(seed, reset_after, dtype):
    T, B, D, H = 5, 2, 3, 4
    p = make_inputs(seed, T, B, D, H, dtype)
    w = {k: p[k] for k in ("Wx", "Wh", "bx", "bh")}
    hs, hT, _ = gru_forward(**p, reset_after=reset_after)
    h = p["h0"]
    for t in range(T):
        step_hs, h, _ = gru_forward(p["x"][t : t + 1], h, **w, reset_after=reset_after)
        np.testing.assert_array_equal(step_hs[0], h)
        np.testing.assert_allclose(h, hs[t], rtol=1e-6 if dtype == np.float32 else 1e-13)
    np.testing.assert_allclose(h, hT, rtol=1e-6 if dtype == np.float32 else 1e-13)


@FORMS
@pytest.mark.parametrize("split", [1, 2, 4])
def test_gru_split_backward_equals_unsplit(seed, reset_after, split):
    T, B, D, H = 5, 2, 3, 4
    p = make_inputs(seed, T, B, D, H)
    R, RT = make_upstream(seed, T, B, H)
    w = {k: p[k] for k in ("Wx", "Wh", "bx", "bh")}
    _, hT, cache = gru_forward(**p, reset_after=reset_after)
    full = gru_backward(R, RT, cache)

    _, h1, cache1 = gru_forward(p["x"][:split], p["h0"], **w, reset_after=reset_after)
    _, h2, cache2 = gru_forward(p["x"][split:], h1, **w, reset_after=reset_after)
    np.testing.assert_allclose(h2, hT, rtol=1e-13)
    dx2, dh_mid, *dw2 = gru_backward(R[split:], RT, cache2)
    dx1, dh0, *dw1 = gru_backward(R[:split], dh_mid, cache1)
    np.testing.assert_allclose(np.concatenate([dx1, dx2]), full[0], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dh0, full[1], rtol=1e-12, atol=1e-14)
    for a, b, ref in zip(dw1, dw2, full[2:], strict=True):
        np.testing.assert_allclose(a + b, ref, rtol=1e-12, atol=1e-14)


@FORMS
def test_gru_bias_gradient_redundancy(seed, reset_after):
    """r, z blocks: dbx == dbh in both forms. n block: equal only in the reset-before form."""
    T, B, D, H = 3, 2, 4, 5
    p = make_inputs(seed, T, B, D, H)
    _, _, cache = gru_forward(**p, reset_after=reset_after)
    *_, dbx, dbh = gru_backward(*make_upstream(seed, T, B, H), cache)
    np.testing.assert_allclose(dbx[: 2 * H], dbh[: 2 * H], rtol=1e-12)
    if reset_after:
        assert np.max(np.abs(dbx[2 * H :] - dbh[2 * H :])) > 1e-6
    else:
        np.testing.assert_allclose(dbx, dbh, rtol=1e-12)
        assert not np.shares_memory(dbx, dbh)


@FORMS
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gru_output_dtypes_and_shapes(reset_after, dtype):
    T, B, D, H = 3, 2, 4, 5
    p = make_inputs(0, T, B, D, H, dtype)
    hs, hT, cache = gru_forward(**p, reset_after=reset_after)
    assert isinstance(cache, GRUCache)
    assert (hs.shape, hT.shape) == ((T, B, H), (B, H))
    assert hs.dtype == hT.dtype == np.dtype(dtype)
    grads = gru_backward(*make_upstream(0, T, B, H, dtype), cache)
    for name, g in zip(NAMES, grads, strict=True):
        assert g.shape == p[name].shape, name
        assert g.dtype == np.dtype(dtype), name


@FORMS
def test_gru_hs_is_read_only_and_hT_is_a_copy(reset_after):
    p = make_inputs(0, 3, 2, 4, 5)
    hs, hT, _ = gru_forward(**p, reset_after=reset_after)
    assert not hs.flags.writeable
    with pytest.raises(ValueError):
        hs[0, 0, 0] = 1.0
    np.testing.assert_array_equal(hT, hs[-1])
    before = hs.copy()
    hT[...] = 42.0
    np.testing.assert_array_equal(hs, before)


@FORMS
def test_gru_does_not_modify_its_arguments(reset_after):
    p = make_inputs(3, 3, 2, 4, 5)
    saved = {k: v.copy() for k, v in p.items()}
    up = make_upstream(3, 3, 2, 5)
    up_saved = tuple(u.copy() for u in up)
    _, _, cache = gru_forward(**p, reset_after=reset_after)
    first = [g.copy() for g in gru_backward(*up, cache)]
    second = gru_backward(*up, cache)
    for k in p:
        np.testing.assert_array_equal(p[k], saved[k], err_msg=k)
    for u, s in zip(up, up_saved, strict=True):
        np.testing.assert_array_equal(u, s)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------ bad input

T0, B0, D0, H0 = 3, 2, 4, 5


def good():
    return make_inputs(0, T0, B0, D0, H0)


@pytest.mark.usefixtures("no_kernels")
class TestGRUBadInput:
    @pytest.mark.parametrize(
        "x_shape,h_shape", [((0, B0, D0), (B0, H0)), ((T0, 0, D0), (0, H0))], ids=["T0", "B0"]
    )
    def test_zero_length(self, x_shape, h_shape):
        p = good()
        p["x"] = np.zeros(x_shape)
        p["h0"] = np.zeros(h_shape)
        with pytest.raises(ValueError, match="empty"):
            gru_forward(**p)

    @pytest.mark.parametrize(
        "name,shape",
        [
            ("h0", (B0 + 2, H0)),  # B0 + 1 = T0 would read as a batch-major x
            ("Wx", (D0 + 1, 3 * H0)),
            ("Wx", (D0, 4 * H0)),
            ("Wh", (H0, 4 * H0)),
            ("Wh", (H0 + 1, 3 * H0)),
            ("bx", (3 * H0 + 1,)),
            ("bh", (4 * H0,)),
        ],
    )
    def test_mismatched_shape_names_the_argument(self, name, shape):
        p = good()
        p[name] = np.zeros(shape)
        with pytest.raises(ValueError, match=rf"^{name} must have shape"):
            gru_forward(**p)

    @pytest.mark.parametrize("name", NAMES)
    def test_wrong_ndim(self, name):
        p = good()
        p[name] = p[name][..., None]
        with pytest.raises(ValueError, match=rf"^{name} must have \d dimensions"):
            gru_forward(**p)

    @pytest.mark.parametrize("name", NAMES[1:])
    def test_mixed_dtypes(self, name):
        p = good()
        p[name] = p[name].astype(np.float32)
        with pytest.raises(TypeError, match=rf"^{name} has dtype float32"):
            gru_forward(**p)

    @pytest.mark.parametrize("dtype", [np.int64, np.uint8, np.float16])
    def test_non_float_x(self, dtype):
        p = good()
        p["x"] = np.ones((T0, B0, D0), dtype)
        with pytest.raises(TypeError, match="^x must be float32 or float64"):
            gru_forward(**p)

    @pytest.mark.parametrize("bad", [np.nan, np.inf])
    @pytest.mark.parametrize("name", NAMES)
    def test_non_finite(self, name, bad):
        p = good()
        p[name].reshape(-1)[0] = bad
        with pytest.raises(ValueError, match=rf"^{name} contains NaN or inf"):
            gru_forward(**p)


class TestGRUBackwardBadInput:
    """The forward pass runs first (in a fixture); the kernels are disarmed afterwards."""

    @pytest.fixture
    def cache_and_upstream(self):
        _, _, cache = gru_forward(**good())
        return cache, make_upstream(0, T0, B0, H0)

    @pytest.fixture
    def lstm_cache(self):
        rng = np.random.default_rng(0)
        return lstm_forward(
            rng.standard_normal((T0, B0, D0)), np.zeros((B0, H0)), np.zeros((B0, H0)),
            rng.standard_normal((D0, 4 * H0)), rng.standard_normal((H0, 4 * H0)),
            np.zeros(4 * H0),
        )[3]  # fmt: skip

    @pytest.mark.parametrize("bad", [None, {}, "cache"])
    def test_wrong_cache_type(self, cache_and_upstream, bad, no_kernels):
        _, up = cache_and_upstream
        with pytest.raises(TypeError, match="GRUCache"):
            gru_backward(*up, bad)

    def test_lstm_cache_rejected(self, cache_and_upstream, lstm_cache, no_kernels):
        _, up = cache_and_upstream
        with pytest.raises(TypeError, match="GRUCache"):
            gru_backward(*up, lstm_cache)

    def test_gru_cache_rejected_by_lstm_backward(self, cache_and_upstream, no_kernels):
        cache, (R, RT) = cache_and_upstream
        with pytest.raises(TypeError, match="LSTMCache"):
            lstm_backward(R, RT, RT, cache)

    @pytest.mark.parametrize(
        "index,name,shape", [(0, "dhs", (T0, B0, H0 + 1)), (1, "dhT", (1, H0))]
    )
    def test_upstream_shapes(self, cache_and_upstream, index, name, shape, no_kernels):
        cache, up = cache_and_upstream
        up = list(up)
        up[index] = np.zeros(shape)
        with pytest.raises(ValueError, match=rf"^{name} must have shape"):
            gru_backward(*up, cache)

    @pytest.mark.parametrize("index,name", [(0, "dhs"), (1, "dhT")])
    def test_upstream_dtype_and_finiteness(self, cache_and_upstream, index, name, no_kernels):
        cache, up = cache_and_upstream
        bad = list(up)
        bad[index] = up[index].astype(np.float32)
        with pytest.raises(TypeError, match=rf"^{name} has dtype"):
            gru_backward(*bad, cache)
        bad[index] = up[index].copy()
        bad[index].reshape(-1)[-1] = -np.inf
        with pytest.raises(ValueError, match=rf"^{name} contains NaN or inf"):
            gru_backward(*bad, cache)


@FORMS
def test_no_kernels_fixture_is_armed(reset_after, no_kernels):
    with pytest.raises(AssertionError, match="kernel gru_"):
        gru_forward(**good(), reset_after=reset_after)
