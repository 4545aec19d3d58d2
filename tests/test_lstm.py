"""Tests for numlstm.lstm: gradient checks, a plain-NumPy reference, properties, bad input."""

from __future__ import annotations

import numpy as np
import pytest

import numlstm
from numlstm import LSTMCache, lstm_backward, lstm_forward, lstm_step_backward, lstm_step_forward

# (T, B, D, H): T = 1 and B = 1 included; D != H everywhere.
# The last shape has B >= timeloop.MIN_ROWS (the Numba time loops run it when BLAS has one
# thread; tests/test_timeloop.py forces them).
SHAPES = [(3, 2, 4, 5), (1, 1, 3, 2), (4, 3, 2, 3), (3, 6, 4, 5)]
SHAPE_IDS = [f"T{t}B{b}D{d}H{h}" for t, b, d, h in SHAPES]
NAMES = ("x", "h0", "c0", "Wx", "Wh", "b")


def make_inputs(seed, T, B, D, H, dtype=np.float64, scale=0.5):
    rng = np.random.default_rng(seed)

    def r(*shape):
        return (scale * rng.standard_normal(shape)).astype(dtype)

    return {
        "x": r(T, B, D), "h0": r(B, H), "c0": r(B, H),
        "Wx": r(D, 4 * H), "Wh": r(H, 4 * H), "b": r(4 * H),
    }  # fmt: skip


def make_upstream(seed, T, B, H, dtype=np.float64):
    """Random weights R, RT, RC of the loss sum(hs*R) + sum(hT*RT) + sum(cT*RC)."""
    rng = np.random.default_rng(1000 + seed)
    return tuple(rng.standard_normal(s).astype(dtype) for s in ((T, B, H), (B, H), (B, H)))


def sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def reference_lstm(x, h0, c0, Wx, Wh, b, forget_bias=0.0):
    """Straight from the equations: blocks i, f, g, o; f = sigma(a_f + forget_bias)."""
    H = h0.shape[1]
    h, c, hs = h0, c0, []
    for x_t in x:
        a = x_t @ Wx + h @ Wh + b
        i = sigmoid(a[:, :H])
        f = sigmoid(a[:, H : 2 * H] + forget_bias)
        g = np.tanh(a[:, 2 * H : 3 * H])
        o = sigmoid(a[:, 3 * H :])
        c = f * c + i * g
        h = o * np.tanh(c)
        hs.append(h)
    return np.stack(hs), h, c


def max_rel(a, ref):
    """Largest absolute difference relative to the largest reference magnitude."""
    return float(np.max(np.abs(np.asarray(a, np.float64) - ref)) / max(np.max(np.abs(ref)), 1e-30))


# ------------------------------------------------------------------------ gradient checks


@pytest.mark.parametrize("forget_bias", [0.0, 1.3])
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_lstm_gradcheck(seed, shape, forget_bias, check_grads):
    T, B, D, H = shape
    p = make_inputs(seed, T, B, D, H)
    R, RT, RC = make_upstream(seed, T, B, H)

    def loss():
        hs, hT, cT, _ = lstm_forward(**p, forget_bias=forget_bias)
        return float(np.sum(hs * R) + np.sum(hT * RT) + np.sum(cT * RC))

    _, _, _, cache = lstm_forward(**p, forget_bias=forget_bias)
    grads = dict(zip(NAMES, lstm_backward(R, RT, RC, cache), strict=True))
    check_grads("lstm", loss, p, grads)


@pytest.mark.parametrize("shape", SHAPES[:2], ids=SHAPE_IDS[:2])
def test_lstm_step_gradcheck(seed, shape, check_grads):
    _, B, D, H = shape
    p = make_inputs(seed, 1, B, D, H)
    p["x"] = p["x"][0]
    _, RT, RC = make_upstream(seed, 1, B, H)

    def loss():
        h, c, _ = lstm_step_forward(*p.values(), forget_bias=0.4)
        return float(np.sum(h * RT) + np.sum(c * RC))

    _, _, cache = lstm_step_forward(*p.values(), forget_bias=0.4)
    grads = dict(zip(NAMES, lstm_step_backward(RT, RC, cache), strict=True))
    check_grads("lstm_step", loss, p, grads)


# ------------------------------------------------------------------------ reference


@pytest.mark.parametrize("forget_bias", [0.0, -0.7, 1.0])
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_lstm_forward_matches_reference(seed, shape, forget_bias):
    p = make_inputs(seed, *shape, scale=1.0)
    hs, hT, cT, _ = lstm_forward(**p, forget_bias=forget_bias)
    ref_hs, ref_h, ref_c = reference_lstm(**p, forget_bias=forget_bias)
    np.testing.assert_allclose(hs, ref_hs, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(hT, ref_h, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(cT, ref_c, rtol=1e-12, atol=1e-13)


def test_lstm_gate_blocks_by_hand():
    """Zero weights, one distinct bias per gate block: pins i, f, g, o and forget_bias."""
    B, D, H = 2, 3, 2
    b = np.repeat([0.3, -0.5, 0.8, 1.1], H).astype(np.float64)  # i, f, g, o
    c0 = np.array([[0.5, -1.0], [2.0, 0.25]])
    x = np.ones((1, B, D))
    zeros_x, zeros_h = np.zeros((D, 4 * H)), np.zeros((H, 4 * H))
    fb = 0.9
    _, hT, cT, _ = lstm_forward(x, np.ones((B, H)), c0, zeros_x, zeros_h, b, forget_bias=fb)
    i, f, g, o = sigmoid(0.3), sigmoid(-0.5 + fb), np.tanh(0.8), sigmoid(1.1)
    np.testing.assert_allclose(cT, f * c0 + i * g, rtol=1e-14)
    np.testing.assert_allclose(hT, o * np.tanh(f * c0 + i * g), rtol=1e-14)


# ------------------------------------------------------------------------ properties


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_lstm_float32_agrees_with_float64(seed, shape):
    T, B, D, H = shape
    p64 = make_inputs(seed, T, B, D, H)
    p32 = {k: v.astype(np.float32) for k, v in p64.items()}
    up64 = make_upstream(seed, T, B, H)
    up32 = tuple(u.astype(np.float32) for u in up64)
    *out64, cache64 = lstm_forward(**p64, forget_bias=0.5)
    *out32, cache32 = lstm_forward(**p32, forget_bias=0.5)
    for name, a, ref in zip(("hs", "hT", "cT"), out32, out64, strict=True):
        assert a.dtype == np.float32
        assert max_rel(a, ref) < 1e-5, name
    g64 = lstm_backward(*up64, cache64)
    g32 = lstm_backward(*up32, cache32)
    for name, a, ref in zip(NAMES, g32, g64, strict=True):
        assert a.dtype == np.float32
        assert max_rel(a, ref) < 1e-5, f"d{name}: {max_rel(a, ref):.2e}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lstm_forward_equals_steps(seed, dtype):
    T, B, D, H = 5, 2, 3, 4
    p = make_inputs(seed, T, B, D, H, dtype)
    hs, hT, cT, _ = lstm_forward(**p, forget_bias=0.3)
    h, c = p["h0"], p["c0"]
    for t in range(T):
        h, c, _ = lstm_step_forward(p["x"][t], h, c, p["Wx"], p["Wh"], p["b"], forget_bias=0.3)
        np.testing.assert_allclose(h, hs[t], rtol=1e-6 if dtype == np.float32 else 1e-13)
    np.testing.assert_array_equal(h, hT)
    np.testing.assert_array_equal(c, cT)


def test_lstm_step_backward_equals_t1_backward(seed):
    B, D, H = 3, 2, 4
    p = make_inputs(seed, 1, B, D, H)
    _, dh, dc = make_upstream(seed, 1, B, H)
    _, _, _, cache = lstm_forward(**p)
    full = lstm_backward(dh[None], np.zeros_like(dh), dc, cache)
    _, _, step_cache = lstm_step_forward(p["x"][0], p["h0"], p["c0"], p["Wx"], p["Wh"], p["b"])
    step = lstm_step_backward(dh, dc, step_cache)
    np.testing.assert_allclose(step[0], full[0][0], rtol=1e-14)
    for a, ref in zip(step[1:], full[1:], strict=True):
        np.testing.assert_allclose(a, ref, rtol=1e-14)


@pytest.mark.parametrize("split", [1, 2, 4])
def test_lstm_split_backward_equals_unsplit(seed, split):
    """Chaining dh0/dc0 of the later segment as dhT/dcT of the earlier one loses nothing."""
    T, B, D, H = 5, 2, 3, 4
    p = make_inputs(seed, T, B, D, H)
    R, RT, RC = make_upstream(seed, T, B, H)
    w = (p["Wx"], p["Wh"], p["b"])
    _, hT, cT, cache = lstm_forward(**p, forget_bias=0.2)
    full = lstm_backward(R, RT, RC, cache)

    _, h1, c1, cache1 = lstm_forward(p["x"][:split], p["h0"], p["c0"], *w, forget_bias=0.2)
    _, h2, c2, cache2 = lstm_forward(p["x"][split:], h1, c1, *w, forget_bias=0.2)
    np.testing.assert_allclose(h2, hT, rtol=1e-13)
    np.testing.assert_allclose(c2, cT, rtol=1e-13)
    dx2, dh_mid, dc_mid, dWx2, dWh2, db2 = lstm_backward(R[split:], RT, RC, cache2)
    dx1, dh0, dc0, dWx1, dWh1, db1 = lstm_backward(R[:split], dh_mid, dc_mid, cache1)

    np.testing.assert_allclose(np.concatenate([dx1, dx2]), full[0], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dh0, full[1], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dc0, full[2], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dWx1 + dWx2, full[3], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dWh1 + dWh2, full[4], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(db1 + db2, full[5], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lstm_output_dtypes_and_shapes(dtype):
    T, B, D, H = 3, 2, 4, 5
    p = make_inputs(0, T, B, D, H, dtype)
    hs, hT, cT, cache = lstm_forward(**p)
    assert isinstance(cache, LSTMCache)
    assert (hs.shape, hT.shape, cT.shape) == ((T, B, H), (B, H), (B, H))
    assert hs.dtype == hT.dtype == cT.dtype == np.dtype(dtype)
    grads = lstm_backward(*make_upstream(0, T, B, H, dtype), cache)
    for name, g in zip(NAMES, grads, strict=True):
        assert g.shape == p[name].shape, name
        assert g.dtype == np.dtype(dtype), name


def test_lstm_hs_is_read_only_and_final_states_are_copies():
    p = make_inputs(0, 3, 2, 4, 5)
    hs, hT, cT, cache = lstm_forward(**p)
    assert not hs.flags.writeable
    with pytest.raises(ValueError):
        hs[0, 0, 0] = 1.0
    np.testing.assert_array_equal(hT, hs[-1])
    before = hs.copy()
    hT[...] = 123.0  # the returned final states must not alias the cache
    cT[...] = 123.0
    np.testing.assert_array_equal(hs, before)
    np.testing.assert_allclose(cache.c[-1], reference_lstm(**p)[2], rtol=1e-13)


def test_lstm_does_not_modify_its_arguments():
    p = make_inputs(3, 3, 2, 4, 5)
    saved = {k: v.copy() for k, v in p.items()}
    up = make_upstream(3, 3, 2, 5)
    up_saved = tuple(u.copy() for u in up)
    _, _, _, cache = lstm_forward(**p, forget_bias=1.0)
    lstm_backward(*up, cache)
    for k in p:
        np.testing.assert_array_equal(p[k], saved[k], err_msg=k)
    for u, s in zip(up, up_saved, strict=True):
        np.testing.assert_array_equal(u, s)


def test_lstm_backward_twice_gives_the_same_result():
    p = make_inputs(4, 3, 2, 4, 5)
    up = make_upstream(4, 3, 2, 5)
    _, _, _, cache = lstm_forward(**p)
    first = [g.copy() for g in lstm_backward(*up, cache)]
    second = lstm_backward(*up, cache)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------ bad input

T0, B0, D0, H0 = 3, 2, 4, 5


def good():
    return make_inputs(0, T0, B0, D0, H0)


@pytest.mark.usefixtures("no_kernels")
class TestLSTMBadInput:
    @pytest.mark.parametrize(
        "x_shape,h_shape", [((0, B0, D0), (B0, H0)), ((T0, 0, D0), (0, H0))], ids=["T0", "B0"]
    )
    def test_zero_length(self, x_shape, h_shape):
        p = good()
        p["x"] = np.zeros(x_shape)
        p["h0"] = np.zeros(h_shape)
        p["c0"] = np.zeros(h_shape)
        with pytest.raises(ValueError, match="empty"):
            lstm_forward(**p)

    def test_zero_hidden(self):
        p = good()
        p["h0"] = np.zeros((B0, 0))
        with pytest.raises(ValueError, match="h0"):
            lstm_forward(**p)

    @pytest.mark.parametrize(
        "name,shape",
        [
            ("h0", (B0 + 2, H0)),  # B0 + 1 = T0 would read as a batch-major x
            ("c0", (B0, H0 + 1)),
            ("c0", (B0 + 1, H0)),
            ("Wx", (D0 + 1, 4 * H0)),
            ("Wx", (D0, 3 * H0)),
            ("Wh", (H0, 3 * H0)),
            ("Wh", (H0 + 1, 4 * H0)),
            ("b", (4 * H0 + 1,)),
            ("b", (3 * H0,)),
        ],
    )
    def test_mismatched_shape_names_the_argument(self, name, shape):
        p = good()
        p[name] = np.zeros(shape)
        with pytest.raises(ValueError, match=rf"^{name} must have shape"):
            lstm_forward(**p)

    @pytest.mark.parametrize("name", NAMES)
    def test_wrong_ndim(self, name):
        p = good()
        p[name] = p[name][..., None]
        with pytest.raises(ValueError, match=rf"^{name} must have \d dimensions"):
            lstm_forward(**p)

    @pytest.mark.parametrize("name", NAMES[1:])
    def test_mixed_dtypes(self, name):
        p = good()
        p[name] = p[name].astype(np.float32)
        with pytest.raises(TypeError, match=rf"^{name} has dtype float32"):
            lstm_forward(**p)

    @pytest.mark.parametrize("dtype", [np.int64, np.int32, np.float16, np.complex128])
    def test_non_float_x(self, dtype):
        p = good()
        p["x"] = np.ones((T0, B0, D0), dtype)
        with pytest.raises(TypeError, match="^x must be float32 or float64"):
            lstm_forward(**p)

    def test_list_input(self):
        p = good()
        p["Wh"] = p["Wh"].tolist()
        with pytest.raises(TypeError, match="^Wh must be a numpy array"):
            lstm_forward(**p)

    @pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
    @pytest.mark.parametrize("name", NAMES)
    def test_non_finite(self, name, bad):
        p = good()
        p[name].reshape(-1)[-1] = bad
        with pytest.raises(ValueError, match=rf"^{name} contains NaN or inf"):
            lstm_forward(**p)

    def test_step_forward_rejects_3d_x(self):
        p = good()
        with pytest.raises(ValueError, match="x_t"):
            lstm_step_forward(p["x"], p["h0"], p["c0"], p["Wx"], p["Wh"], p["b"])


class TestLSTMBackwardBadInput:
    """The forward pass runs first (in a fixture); the kernels are disarmed afterwards."""

    @pytest.fixture
    def cache_and_upstream(self):
        p = good()
        _, _, _, cache = lstm_forward(**p)
        return cache, make_upstream(0, T0, B0, H0)

    @pytest.mark.parametrize("bad", [None, (1, 2, 3), "cache"])
    def test_wrong_cache_type(self, cache_and_upstream, bad, no_kernels):
        _, up = cache_and_upstream
        with pytest.raises(TypeError, match="LSTMCache"):
            lstm_backward(*up, bad)

    @pytest.fixture
    def gru_cache(self):
        rng = np.random.default_rng(0)
        return numlstm.gru_forward(
            rng.standard_normal((T0, B0, D0)), np.zeros((B0, H0)),
            rng.standard_normal((D0, 3 * H0)), rng.standard_normal((H0, 3 * H0)),
            np.zeros(3 * H0), np.zeros(3 * H0),
        )[2]  # fmt: skip

    def test_gru_cache_rejected(self, cache_and_upstream, gru_cache, no_kernels):
        _, up = cache_and_upstream
        gcache = gru_cache
        with pytest.raises(TypeError, match="LSTMCache"):
            lstm_backward(*up, gcache)

    @pytest.mark.parametrize(
        "index,name,shape",
        [(0, "dhs", (T0 + 1, B0, H0)), (1, "dhT", (B0, H0 + 1)), (2, "dcT", (B0 + 1, H0))],
    )
    def test_upstream_shapes(self, cache_and_upstream, index, name, shape, no_kernels):
        cache, up = cache_and_upstream
        up = list(up)
        up[index] = np.zeros(shape)
        with pytest.raises(ValueError, match=rf"^{name} must have shape"):
            lstm_backward(*up, cache)

    @pytest.mark.parametrize("index,name", [(0, "dhs"), (1, "dhT"), (2, "dcT")])
    def test_upstream_dtype_and_finiteness(self, cache_and_upstream, index, name, no_kernels):
        cache, up = cache_and_upstream
        bad = list(up)
        bad[index] = up[index].astype(np.float32)
        with pytest.raises(TypeError, match=rf"^{name} has dtype"):
            lstm_backward(*bad, cache)
        bad[index] = up[index].copy()
        bad[index].reshape(-1)[0] = np.nan
        with pytest.raises(ValueError, match=rf"^{name} contains NaN"):
            lstm_backward(*bad, cache)


def test_no_kernels_fixture_is_armed(no_kernels):
    """Guards the bad-input tests above: with the tripwire on, valid input reaches a kernel."""
    with pytest.raises(AssertionError, match="lstm_cell_forward"):
        lstm_forward(**good())
