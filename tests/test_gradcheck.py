"""Tests for numlstm.gradcheck: relative_error, numeric_gradient, gradcheck."""

from __future__ import annotations

import numpy as np
import pytest

from numlstm import gradcheck, numeric_gradient, relative_error


def test_relative_error_is_relative_above_the_floor():
    a = np.array([1.0, -2.0, 10.0])
    n = np.array([1.0, -2.0, 10.5])
    assert relative_error(a, n) == pytest.approx(0.5 / 10.5, rel=1e-15)
    assert relative_error(a, a) == 0.0
    # symmetric: the denominator is max(|a|, |n|)
    assert relative_error(n, a) == relative_error(a, n)


def test_relative_error_atol_floor():
    a = np.array([1e-6])
    n = np.array([2e-6])
    assert relative_error(a, n) == pytest.approx(1e-6 / 1e-4, rel=1e-12)  # floor 1e-4
    assert relative_error(a, n, atol=1e-12) == pytest.approx(0.5, rel=1e-12)
    assert relative_error(np.zeros(3), np.zeros(3)) == 0.0  # no 0/0
    assert relative_error(np.zeros(1), np.array([3e-5])) == pytest.approx(0.3, rel=1e-12)


def test_relative_error_takes_the_maximum_over_entries():
    a = np.array([[1.0, 1.0], [1.0, 1.0]])
    n = np.array([[1.0, 1.1], [1.0, 1.0 + 1e-9]])
    assert relative_error(a, n) == pytest.approx(0.1 / 1.1, rel=1e-12)


def test_relative_error_rejects_shape_mismatch_and_handles_empty():
    with pytest.raises(ValueError, match="shape"):
        relative_error(np.zeros(3), np.zeros(4))
    assert relative_error(np.zeros(0), np.zeros(0)) == 0.0


def test_numeric_gradient_of_sum_sin_is_cos(seed):
    x = np.random.default_rng(seed).uniform(-3, 3, (3, 4))
    saved = x.copy()
    num = numeric_gradient(lambda: float(np.sum(np.sin(x))), x)
    # central differences: error ~ eps^2 / 6 |f'''| = 1.7e-9
    np.testing.assert_allclose(num, np.cos(x), rtol=0, atol=5e-9)
    np.testing.assert_array_equal(x, saved)  # restored exactly


def test_numeric_gradient_is_central_not_one_sided():
    """For f = x^2 central differences are exact up to round-off; one-sided is off by eps."""
    x = np.array([0.7])
    num = numeric_gradient(lambda: float(x[0] ** 2), x, eps=1e-3)
    assert num[0] == pytest.approx(1.4, abs=1e-10)


def test_numeric_gradient_indices():
    x = np.arange(6.0)
    num = numeric_gradient(lambda: float(np.sum(x**3)), x, indices=np.array([1, 4]))
    assert np.isnan(num[[0, 2, 3, 5]]).all()
    np.testing.assert_allclose(num[[1, 4]], 3 * x[[1, 4]] ** 2, rtol=1e-7)


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.int64])
def test_numeric_gradient_rejects_non_float64(dtype):
    x = np.ones(3, dtype)
    with pytest.raises(TypeError, match="float64"):
        numeric_gradient(lambda: float(np.sum(x)), x)


def test_numeric_gradient_rejects_arrays_it_cannot_perturb_in_place():
    x = np.ones((4, 4))[:, :2]  # reshape(-1) would be a copy
    with pytest.raises(ValueError, match="contiguous"):
        numeric_gradient(lambda: float(np.sum(x)), x)


def test_numeric_gradient_on_an_evenly_strided_view():
    """A view that flattens without a copy is perturbed in place correctly."""
    base = np.linspace(-1.0, 1.0, 16).reshape(4, 4)
    saved = base.copy()
    x = base[:, ::2]
    num = numeric_gradient(lambda: float(np.sum(x**3)), x)
    np.testing.assert_allclose(num, 3 * x**2, rtol=0, atol=2e-8)  # eps^2 * 6 / 6 = 1e-8
    np.testing.assert_array_equal(base, saved)


def quadratic_problem(seed):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((4, 4))
    x = rng.standard_normal(4)
    w = rng.standard_normal((2, 3))

    def f():
        return float(x @ A @ x + np.sum(np.tanh(w) ** 2))

    grads = {"x": (A + A.T) @ x, "w": 2 * np.tanh(w) * (1 - np.tanh(w) ** 2)}
    return f, {"x": x, "w": w}, grads


def test_gradcheck_accepts_correct_gradients(seed):
    f, params, grads = quadratic_problem(seed)
    saved = {k: v.copy() for k, v in params.items()}
    errors = gradcheck(f, params, grads)
    assert set(errors) == {"x", "w"}
    assert max(errors.values()) <= 1e-6, errors
    for k in params:
        np.testing.assert_array_equal(params[k], saved[k])


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda g: g * 1.01,  # 1% scale error
        lambda g: -g,  # sign error
        lambda g: g[::-1].copy(),  # entries in the wrong places
        lambda g: g + 1e-3,  # small additive error
    ],
    ids=["scaled", "negated", "reversed", "offset"],
)
def test_gradcheck_detects_a_wrong_gradient(seed, corrupt):
    f, params, grads = quadratic_problem(seed)
    grads["x"] = corrupt(grads["x"])
    errors = gradcheck(f, params, grads)
    assert errors["x"] > 1e-3, errors  # >> 1e-6
    assert errors["w"] <= 1e-6, errors  # only the corrupted one is flagged


def test_gradcheck_max_checks_samples_entries():
    calls = []
    x = np.linspace(-1, 1, 50)

    def f():
        calls.append(1)
        return float(np.sum(x**2))

    wrong = 2 * x + 1.0  # every entry wrong: any sample finds it
    errors = gradcheck(f, {"x": x}, {"x": wrong}, max_checks=5)
    assert len(calls) == 10  # two evaluations per sampled entry
    assert errors["x"] > 0.1
    calls.clear()
    assert gradcheck(f, {"x": x}, {"x": 2 * x}, max_checks=5)["x"] <= 1e-6
    assert len(calls) == 10


def test_gradcheck_argument_errors():
    f, params, grads = quadratic_problem(0)
    with pytest.raises(KeyError, match="w"):
        gradcheck(f, params, {"x": grads["x"]})
    with pytest.raises(ValueError, match="shape"):
        gradcheck(f, params, {"x": grads["x"], "w": grads["w"].T})
    f32 = {"x": params["x"].astype(np.float32)}
    with pytest.raises(TypeError, match="float64"):
        gradcheck(lambda: float(np.sum(f32["x"])), f32, {"x": np.ones(4, np.float32)})
