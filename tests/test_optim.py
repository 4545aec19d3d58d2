"""Tests for numlstm.optim: global-norm clipping, SGD, Adam (O1-O8 of docs/optim.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from numlstm import SGD, Adam, clip_by_global_norm, global_norm

DTYPES = pytest.mark.parametrize("dtype", [np.float32, np.float64])


def make_arrays(seed, dtype=np.float64, scale=1.0):
    rng = np.random.default_rng(seed)
    shapes = {"w": (3, 4), "b": (4,), "e": (2, 3, 2)}
    return {k: (scale * rng.standard_normal(s)).astype(dtype) for k, s in shapes.items()}


def reference_norm(arrays):
    return math.sqrt(sum(float(np.sum(a.astype(np.float64) ** 2)) for a in arrays.values()))


# ------------------------------------------------------------------------ clipping


def norm_rtol(dtype):
    # squares are formed and summed in float64 for both dtypes
    return 1e-12


@DTYPES
def test_global_norm_is_the_norm_of_everything_concatenated(seed, dtype):
    g = make_arrays(seed, dtype)
    flat = np.concatenate([a.reshape(-1).astype(np.float64) for a in g.values()])
    assert global_norm(g) == pytest.approx(np.linalg.norm(flat), rel=norm_rtol(dtype))


def test_global_norm_float32_squares_do_not_overflow():
    """docs/optim.md: squares above 1.8e19 must not overflow (accumulated in float64)."""
    g = {"a": np.full(4, 1e20, np.float32)}
    assert global_norm(g) == pytest.approx(2e20, rel=1e-6)
    # and clipping such a (finite) gradient must work instead of reporting divergence
    assert clip_by_global_norm(g, 1.0) == pytest.approx(2e20, rel=1e-6)
    assert reference_norm(g) == pytest.approx(1.0, rel=1e-6)


def test_global_norm_float32_is_exact_to_float64_rounding(seed):
    g = make_arrays(seed, np.float32)
    assert global_norm(g) == pytest.approx(reference_norm(g), rel=1e-12)


@DTYPES
def test_clip_leaves_small_gradients_unchanged(seed, dtype):
    g = make_arrays(seed, dtype)
    before = {k: v.copy() for k, v in g.items()}
    norm = global_norm(g)
    assert norm == pytest.approx(reference_norm(g), rel=norm_rtol(dtype))
    for max_norm in (norm * 1.5, norm):  # at most max_norm: nothing changes
        assert clip_by_global_norm(g, max_norm) == norm
        for k in g:
            np.testing.assert_array_equal(g[k], before[k], err_msg=k)


@DTYPES
@pytest.mark.parametrize("factor", [0.5, 0.01])
def test_clip_scales_to_exactly_max_norm(seed, dtype, factor):
    g = make_arrays(seed, dtype, scale=3.0)
    before = {k: v.astype(np.float64) for k, v in g.items()}
    arrays = dict(g)  # same array objects: clipping is in place
    norm = reference_norm(g)
    max_norm = factor * norm
    returned = clip_by_global_norm(g, max_norm)
    assert returned == pytest.approx(norm, rel=norm_rtol(dtype))  # the norm *before* clipping
    rtol = 1e-6 if dtype == np.float32 else 1e-12
    assert reference_norm(g) == pytest.approx(max_norm, rel=rtol)
    for k in g:
        assert g[k] is arrays[k] and g[k].dtype == np.dtype(dtype)
        # the same factor for every array: the direction is kept
        np.testing.assert_allclose(g[k], before[k] * (max_norm / norm), rtol=rtol, atol=0)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_clip_raises_on_non_finite_norm(bad):
    g = make_arrays(0)
    g["b"][1] = bad
    before = {k: v.copy() for k, v in g.items()}
    with pytest.raises(FloatingPointError):
        clip_by_global_norm(g, 1.0)
    for k in g:  # nothing was scaled
        np.testing.assert_array_equal(g[k], before[k])


@pytest.mark.parametrize("max_norm", [0.0, -1.0, float("nan")])
def test_clip_rejects_non_positive_max_norm(max_norm):
    with pytest.raises(ValueError, match="max_norm"):
        clip_by_global_norm(make_arrays(0), max_norm)


def test_non_contiguous_gradients_are_rejected():
    with pytest.raises(ValueError, match="contiguous"):
        global_norm({"a": np.ones((4, 4))[:, ::2]})


# ------------------------------------------------------------------------ SGD


@DTYPES
def test_sgd_step_is_p_minus_lr_g(seed, dtype):
    params = make_arrays(seed, dtype)
    grads = make_arrays(seed + 100, dtype)
    arrays = dict(params)
    expected = {k: params[k] - dtype(0.37) * grads[k] for k in params}
    SGD(params, lr=0.37).step(grads)
    for k in params:
        assert params[k] is arrays[k], "SGD must update in place"
        rtol = 1e-6 if dtype == np.float32 else 1e-15
        np.testing.assert_allclose(params[k], expected[k], rtol=rtol, atol=0)


def test_sgd_lr_can_change_between_steps():
    params = {"w": np.zeros(3)}
    opt = SGD(params, lr=1.0)
    opt.step({"w": np.ones(3)})
    opt.lr = 0.25
    opt.step({"w": np.ones(3)})
    np.testing.assert_allclose(params["w"], -1.25, rtol=1e-15)


def test_optimisers_reject_mismatched_gradients():
    for opt in (SGD(make_arrays(0), lr=0.1), Adam(make_arrays(0))):
        grads = make_arrays(1)
        del grads["b"]
        with pytest.raises(KeyError, match="b"):
            opt.step(grads)
        grads = make_arrays(1)
        grads["w"] = grads["w"].T.copy()
        with pytest.raises(ValueError, match="w"):
            opt.step(grads)
        grads = make_arrays(1, np.float32)
        with pytest.raises(ValueError, match="float32"):
            opt.step(grads)


# ------------------------------------------------------------------------ Adam


def reference_adam(params, grad_seq, lr, beta1, beta2, eps):
    """O5-O8: bias-corrected moments, eps added to sqrt(v_hat); t starts at 1."""
    p = {k: v.astype(np.float64).copy() for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(a) for k, a in p.items()}
    for t, grads in enumerate(grad_seq, start=1):
        for k in p:
            g = grads[k].astype(np.float64)
            m[k] = beta1 * m[k] + (1 - beta1) * g
            v[k] = beta2 * v[k] + (1 - beta2) * g * g
            m_hat = m[k] / (1 - beta1**t)
            v_hat = v[k] / (1 - beta2**t)
            p[k] = p[k] - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p, m, v


@DTYPES
@pytest.mark.parametrize(
    "hyper", [{}, {"lr": 0.05, "beta1": 0.5, "beta2": 0.9, "eps": 1e-3}], ids=["default", "custom"]
)
def test_adam_matches_reference(seed, dtype, hyper):
    params = make_arrays(seed, dtype)
    start = {k: v.copy() for k, v in params.items()}
    grad_seq = [make_arrays(seed + 10 * i + 1, dtype, scale=0.1 * (i + 1)) for i in range(4)]
    opt = Adam(params, **hyper)
    full = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8} | hyper
    # float32: parameters are O(1), so an absolute floor of a few float32 ulps is needed where
    # an update nearly cancels a parameter.
    rtol, atol = (1e-5, 1e-6) if dtype == np.float32 else (1e-12, 0.0)
    for n in range(1, len(grad_seq) + 1):
        opt.step(grad_seq[n - 1])
        assert opt.t == n
        ref_p, ref_m, ref_v = reference_adam(start, grad_seq[:n], **full)
        for k in params:
            assert params[k].dtype == np.dtype(dtype)
            np.testing.assert_allclose(params[k], ref_p[k], rtol=rtol, atol=atol, err_msg=k)
            np.testing.assert_allclose(opt.m[k], ref_m[k], rtol=rtol, atol=atol, err_msg=k)
            np.testing.assert_allclose(opt.v[k], ref_v[k], rtol=rtol, atol=atol, err_msg=k)


def test_adam_first_step_is_lr_times_sign():
    """At t = 1, m_hat = g and v_hat = g^2: the step is lr * g / (|g| + eps)."""
    params = {"w": np.zeros(4)}
    g = np.array([3.0, -0.02, 1e-3, -50.0])
    Adam(params, lr=0.01).step({"w": g})
    np.testing.assert_allclose(params["w"], -0.01 * g / (np.abs(g) + 1e-8), rtol=1e-12)
    np.testing.assert_allclose(params["w"], -0.01 * np.sign(g), rtol=1e-5)


def test_adam_eps_is_added_to_sqrt_v_hat():
    """With a gradient comparable to eps the two placements of eps differ clearly."""
    params = {"w": np.zeros(1)}
    g = 1e-4
    Adam(params, lr=1.0, eps=1e-4).step({"w": np.array([g])})
    assert params["w"][0] == pytest.approx(-g / (g + 1e-4), rel=1e-12)  # -0.5


def test_adam_state_round_trip(seed):
    params = make_arrays(seed)
    grads = [make_arrays(seed + i + 1) for i in range(5)]
    a = Adam(params, lr=0.01)
    for g in grads[:3]:
        a.step(g)
    saved = {k: v.copy() for k, v in a.state_arrays().items()}
    assert set(saved) == {f"adam.{s}.{k}" for s in "mv" for k in params}
    for k in params:
        np.testing.assert_array_equal(saved[f"adam.m.{k}"], a.m[k])
        np.testing.assert_array_equal(saved[f"adam.v.{k}"], a.v[k])

    params_b = {k: v.copy() for k, v in params.items()}
    b = Adam(params_b, lr=0.01)
    b.load_state_arrays(saved, a.t)
    assert b.t == 3
    for g in grads[3:]:
        a.step(g)
        b.step(g)
    for k in params:
        np.testing.assert_array_equal(params_b[k], params[k], err_msg=k)
        np.testing.assert_array_equal(b.m[k], a.m[k], err_msg=k)
        np.testing.assert_array_equal(b.v[k], a.v[k], err_msg=k)


def test_adam_state_arrays_are_not_shared_after_load():
    """load_state_arrays copies values in; later steps must not write into the loaded arrays."""
    params = make_arrays(0)
    a = Adam(params)
    a.step(make_arrays(1))
    saved = {k: v.copy() for k, v in a.state_arrays().items()}
    frozen = {k: v.copy() for k, v in saved.items()}
    b = Adam({k: v.copy() for k, v in params.items()})
    b.load_state_arrays(saved, a.t)
    b.step(make_arrays(2))
    for k in saved:
        np.testing.assert_array_equal(saved[k], frozen[k], err_msg=k)
