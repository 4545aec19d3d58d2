"""Tests for numlstm.fast.timeloop: the small GEMM and the Numba time loops of the layers.

The layers use the Numba loops when ``timeloop.use_time_loop(B, H)`` (B >= 5 rows, H >= 2 and
BLAS on one thread, as inside a DataParallel block) and their Python loop of BLAS calls and per-step
kernels otherwise; both must give the same numbers, and both must pass the gradient check.
"""

from __future__ import annotations

import numpy as np
import pytest

from numlstm import gru, lstm
from numlstm.fast import timeloop
from numlstm.fast.timeloop import matmul_nt


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_matmul_nt_matches_numpy_on_random_shapes(seed, dtype):
    rng = np.random.default_rng(seed)
    for _ in range(20):
        M = int(rng.integers(5, 24))
        K = int(rng.integers(1, 40))
        N = int(rng.integers(2, 50))
        A = rng.standard_normal((M, K)).astype(dtype)
        BT = rng.standard_normal((N, K)).astype(dtype)
        out = np.full((M, N), np.nan, dtype)
        matmul_nt(A, BT, out)
        ref = A.astype(np.float64) @ BT.astype(np.float64).T
        tol = 1e-12 if dtype == np.float64 else 2e-5
        scale = np.abs(A).max() * np.abs(BT).max() * K
        assert np.abs(out - ref).max() <= tol * scale, (M, K, N)  # every entry written


def test_matmul_nt_reads_strided_views(seed):
    """The GRU's loops pass a column block of a (B, 3H) array as A: rows contiguous, strided."""
    rng = np.random.default_rng(seed)
    big = rng.standard_normal((7, 30))
    A = big[:, 10:20]
    BT = rng.standard_normal((9, 10))
    out = np.empty((7, 9))
    matmul_nt(A, BT, out)
    np.testing.assert_allclose(out, A @ BT.T, rtol=1e-13, atol=1e-13)


def _lstm_inputs(seed, T, B, D, H):
    rng = np.random.default_rng(seed)
    return dict(
        x=rng.standard_normal((T, B, D)),
        h0=rng.standard_normal((B, H)),
        c0=rng.standard_normal((B, H)),
        Wx=0.5 * rng.standard_normal((D, 4 * H)),
        Wh=0.5 * rng.standard_normal((H, 4 * H)),
        b=0.5 * rng.standard_normal(4 * H),
    )


def _gru_inputs(seed, T, B, D, H):
    rng = np.random.default_rng(seed)
    return dict(
        x=rng.standard_normal((T, B, D)),
        h0=rng.standard_normal((B, H)),
        Wx=0.5 * rng.standard_normal((D, 3 * H)),
        Wh=0.5 * rng.standard_normal((H, 3 * H)),
        bx=0.5 * rng.standard_normal(3 * H),
        bh=0.5 * rng.standard_normal(3 * H),
    )


def _run_lstm(p, R, RT, RC):
    hs, hT, cT, cache = lstm.lstm_forward(**p, forget_bias=0.3)
    return (np.array(hs), hT, cT) + lstm.lstm_backward(R, RT, RC, cache)


def _run_gru(p, R, RT, reset_after):
    hs, hT, cache = gru.gru_forward(**p, reset_after=reset_after)
    return (np.array(hs), hT) + gru.gru_backward(R, RT, cache)


@pytest.mark.parametrize("B,H", [(5, 3), (7, 4), (12, 5)])
def test_lstm_numba_loop_equals_python_loop(seed, B, H, monkeypatch):
    T, D = 4, 3
    p = _lstm_inputs(seed, T, B, D, H)
    rng = np.random.default_rng(seed + 10)
    R = rng.standard_normal((T, B, H))
    RT, RC = rng.standard_normal((B, H)), rng.standard_normal((B, H))
    monkeypatch.setattr(timeloop, "use_time_loop", lambda B, H: True)
    fast = _run_lstm(p, R, RT, RC)
    monkeypatch.setattr(timeloop, "use_time_loop", lambda B, H: False)  # the Python loop
    slow = _run_lstm(p, R, RT, RC)
    for a, b in zip(fast, slow, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
@pytest.mark.parametrize("B,H", [(5, 3), (7, 4), (12, 5)])
def test_gru_numba_loop_equals_python_loop(seed, B, H, reset_after, monkeypatch):
    T, D = 4, 3
    p = _gru_inputs(seed, T, B, D, H)
    rng = np.random.default_rng(seed + 10)
    R, RT = rng.standard_normal((T, B, H)), rng.standard_normal((B, H))
    monkeypatch.setattr(timeloop, "use_time_loop", lambda B, H: True)
    fast = _run_gru(p, R, RT, reset_after)
    monkeypatch.setattr(timeloop, "use_time_loop", lambda B, H: False)
    slow = _run_gru(p, R, RT, reset_after)
    for a, b in zip(fast, slow, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)


def test_numba_loops_pass_the_gradient_check(seed, check_grads, monkeypatch):
    monkeypatch.setattr(timeloop, "use_time_loop", lambda B, H: True)
    T, B, D, H = 3, 6, 4, 5
    rng = np.random.default_rng(seed + 20)
    R, RT, RC = (
        rng.standard_normal((T, B, H)),
        rng.standard_normal((B, H)),
        rng.standard_normal((B, H)),
    )
    p = _lstm_inputs(seed, T, B, D, H)

    def lstm_loss():
        hs, hT, cT, _ = lstm.lstm_forward(**p, forget_bias=0.3)
        return float(np.sum(hs * R) + np.sum(hT * RT) + np.sum(cT * RC))

    grads = dict(zip(p, _run_lstm(p, R, RT, RC)[3:], strict=True))
    check_grads("lstm (Numba time loop)", lstm_loss, p, grads)
    for reset_after in (True, False):
        g = _gru_inputs(seed, T, B, D, H)

        def gru_loss(g=g, reset_after=reset_after):
            hs, hT, _ = gru.gru_forward(**g, reset_after=reset_after)
            return float(np.sum(hs * R) + np.sum(hT * RT))

        grads = dict(zip(g, _run_gru(g, R, RT, reset_after)[2:], strict=True))
        check_grads(f"gru (Numba time loop, reset_after={reset_after})", gru_loss, g, grads)


def test_use_time_loop_follows_the_blas_threads(monkeypatch):
    monkeypatch.setattr(timeloop, "blas_thread_count", lambda: 1)
    assert timeloop.use_time_loop(timeloop.MIN_ROWS, 2) and not timeloop.use_time_loop(4, 200)
    assert not timeloop.use_time_loop(20, 1)  # matmul_nt's 2-column blocks need H >= 2
    monkeypatch.setattr(timeloop, "blas_thread_count", lambda: 2)
    assert not timeloop.use_time_loop(20, 200)
    monkeypatch.setattr(timeloop, "blas_thread_count", lambda: None)  # not an OpenBLAS
    assert not timeloop.use_time_loop(20, 200)


def test_loops_skip_dh0_only_when_asked(seed, monkeypatch):
    monkeypatch.setattr(timeloop, "use_time_loop", lambda B, H: True)
    """need_dh0=False leaves out the last recurrent product and nothing else."""
    T, B, D, H = 3, 6, 2, 4
    p = _lstm_inputs(seed, T, B, D, H)
    R = np.random.default_rng(seed).standard_normal((T, B, H))
    z = np.zeros((B, H))
    _, _, _, cache = lstm.lstm_forward_unchecked(**p)
    full = lstm.lstm_backward_unchecked(R, z, z, cache)
    full = tuple(None if a is None else a.copy() for a in full)
    _, _, _, cache = lstm.lstm_forward_unchecked(**p)
    part = lstm.lstm_backward_unchecked(R, z, z, cache, need_dh0=False)
    assert part[1] is None and full[1] is not None
    for i in (0, 2, 3, 4, 5):
        np.testing.assert_allclose(part[i], full[i], rtol=1e-13, atol=1e-14)


def test_matmul_nt_refuses_shapes_its_blocks_do_not_fit():
    """Its 5 x 2 register blocks would read and write outside the arrays below those sizes."""
    rng = np.random.default_rng(0)
    for M, N in [(4, 8), (1, 8), (6, 1)]:
        A, BT = rng.standard_normal((M, 3)), rng.standard_normal((N, 3))
        with pytest.raises(ValueError, match="at least 5 rows"):
            timeloop.matmul_nt(A, BT, np.empty((M, N)))
