"""Tests for the data-parallel step (numlstm.fast.parallel) and its thread team (fast.team)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from numlstm import SGD, LanguageModel
from numlstm.fast import parallel, team
from numlstm.fast.parallel import DataParallel, default_threads, row_blocks
from numlstm.fast.sparse import IndexedRows
from numlstm.fast.team import ThreadTeam
from numlstm.train import train_step

CELLS = [("lstm", True), ("gru", True), ("gru", False), ("rnn", True)]
CELL_IDS = ["lstm", "gru_after", "gru_before", "rnn"]
V, H, T = 23, 6, 4

needs_blas_control = pytest.mark.skipif(
    not team.blas_threads_controllable(), reason="NumPy's BLAS is not an OpenBLAS numlstm finds"
)


def random_model(cell, reset_after, seed, dtype=np.float64):
    model = LanguageModel(V, H, 2, cell=cell, reset_after=reset_after, forget_bias=0.4,
                          dtype=dtype, seed=seed)  # fmt: skip
    rng = np.random.default_rng(100 + seed)
    for p in model.params.values():
        p[...] = 0.4 * rng.standard_normal(p.shape)
    return model


def random_batch(model, seed, B):
    rng = np.random.default_rng(200 + seed)
    x, y = rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T))
    state = [tuple((0.5 * rng.standard_normal(a.shape)).astype(model.dtype) for a in layer)
             for layer in model.init_state(B)]  # fmt: skip
    return x, y, state


def dense(g):
    return g.to_dense() if isinstance(g, IndexedRows) else np.array(g)


# ------------------------------------------------------------------------ row blocks


def test_row_blocks_cover_the_rows_in_order():
    for B in range(1, 30):
        for n in range(1, min(B, 6) + 1):
            blocks = row_blocks(B, n)
            assert len(blocks) == n and blocks[0][0] == 0 and blocks[-1][1] == B
            sizes = [hi - lo for lo, hi in blocks]
            assert all(a[1] == b[0] for a, b in zip(blocks[:-1], blocks[1:], strict=True))
            assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1


def test_default_threads_is_bounded():
    assert default_threads(1) == 1
    n = default_threads(20)
    assert 1 <= n <= min(team.usable_cores(), 20 // parallel.MIN_ROWS)


# ------------------------------------------------------------------------ same numbers


@pytest.mark.parametrize("keep_prob", [1.0, 0.7])
@pytest.mark.parametrize("cell,reset_after", CELLS, ids=CELL_IDS)
def test_rows_hook_parts_add_up_to_the_batch(seed, cell, reset_after, keep_prob):
    """The public hook, one part after the other in one thread (as one process per part
    would run it): the parts' losses and gradients, each divided by the whole batch's B, add
    up to the one-call step's, and the embedding's gradient from all parts' rows equals it."""
    model = random_model(cell, reset_after, seed)
    B = 7
    x, y, state = random_batch(model, seed, B)
    loss1, g1, s1 = model.loss_and_grads(x, y, state, keep_prob, np.random.default_rng(7))
    g1 = {k: np.array(g) for k, g in g1.items()}
    masks = model.draw_masks(T, B, keep_prob, np.random.default_rng(7))
    loss, grads, ids, d, states = 0.0, {}, [], [], []
    for lo, hi in [(0, 3), (3, 6), (6, 7)]:  # two parts of the same size share buffers
        part_masks = None if masks is None else [m[:, lo:hi] for m in masks]
        part_state = [tuple(a[lo:hi] for a in s) for s in state]
        r = model.rows_loss_and_grads(x[lo:hi], y[lo:hi], part_state, B, keep_prob,
                                      masks=part_masks)  # fmt: skip
        loss += r.loss
        for k, g in r.grads.items():
            grads[k] = grads.get(k, 0) + g  # a new array: the model overwrites r.grads next call
        ids.append(r.ids)
        d.append(r.d_embedded.copy())  # also a buffer of the model
        states.append(r.state)
    grads["embedding"] = model.embedding_grad(np.concatenate(ids), np.concatenate(d))
    assert loss == pytest.approx(loss1, rel=1e-12)
    for k in model.params:
        np.testing.assert_allclose(grads[k], g1[k], rtol=1e-12, atol=1e-12, err_msg=k)
    for layer in range(len(s1)):
        for a, b in zip(s1[layer], [np.concatenate([st[layer][i] for st in states])
                                    for i in range(len(s1[layer]))], strict=True):  # fmt: skip
            np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12)


def test_rows_hook_checks_the_batch_size():
    model = random_model("lstm", True, 0)
    x, y, state = random_batch(model, 0, 4)
    with pytest.raises(ValueError, match="batch_size"):
        model.rows_loss_and_grads(x, y, state, 3)


@pytest.mark.parametrize("threads,B", [(2, 11), (3, 12), (2, 3)])
@pytest.mark.parametrize("keep_prob", [1.0, 0.7])
@pytest.mark.parametrize("cell,reset_after", CELLS, ids=CELL_IDS)
def test_data_parallel_equals_one_thread(seed, cell, reset_after, keep_prob, threads, B):
    """Loss, every gradient and the final state equal the one-thread step's (float64), with
    the same dropout masks drawn from the same seeded rng. B = 11 and 12 give blocks of 5-6
    rows (Numba time loops); B = 3 blocks of 1-2 rows (the layers' Python loops)."""
    model = random_model(cell, reset_after, seed)
    x, y, state = random_batch(model, seed, B)
    loss1, g1, s1 = model.loss_and_grads(x, y, state, keep_prob, np.random.default_rng(7),
                                         sparse_embedding=True)  # fmt: skip
    g1 = {k: dense(g) for k, g in g1.items()}
    with DataParallel(model, threads) as dp:
        loss2, g2, s2 = dp.loss_and_grads(x, y, state, keep_prob, np.random.default_rng(7))
        assert isinstance(g2["embedding"], IndexedRows)
        assert loss2 == pytest.approx(loss1, rel=1e-13)
        assert set(g2) == set(model.params)
        for k in g1:
            np.testing.assert_allclose(dense(g2[k]), g1[k], rtol=1e-12, atol=1e-14, err_msg=k)
        for a, b in zip(s1, s2, strict=True):
            for u, v in zip(a, b, strict=True):
                np.testing.assert_allclose(v, u, rtol=1e-13, atol=1e-15)
        # forward only (evaluation): the same loss and state as LanguageModel.loss
        l1, e1 = model.loss(x, y, state)
        l2, e2 = dp.loss(x, y, state)
        assert l2 == pytest.approx(l1, rel=1e-13)
        np.testing.assert_allclose(e2[0][0], e1[0][0], rtol=1e-13, atol=1e-15)


def test_data_parallel_gradients_pass_the_gradient_check(seed, check_grads):
    """The whole model through the data-parallel step, checked against central differences:
    B = 12 in two blocks of 6 rows, so the Numba time loops and matmul_nt are on the path."""
    model = random_model("lstm", True, seed)
    x, y, state = random_batch(model, seed, 12)
    with DataParallel(model, 2) as dp:
        _, grads, _ = dp.loss_and_grads(x, y, state)
        grads = {k: dense(g) for k, g in grads.items()}
    check_grads("model(lstm, 2 threads)", lambda: model.loss(x, y, state)[0], model.params, grads)


@pytest.mark.parametrize("cell,reset_after", CELLS, ids=CELL_IDS)
def test_float32_data_parallel_is_close_to_one_thread(cell, reset_after):
    model = random_model(cell, reset_after, 0, dtype=np.float32)
    x, y, state = random_batch(model, 0, 20)
    loss1, g1, _ = model.loss_and_grads(x, y, state, sparse_embedding=True)
    g1 = {k: dense(g) for k, g in g1.items()}
    with DataParallel(model, 2) as dp:
        loss2, g2, _ = dp.loss_and_grads(x, y, state)
        assert loss2 == pytest.approx(loss1, rel=1e-5)
        for k in g1:
            scale = np.abs(g1[k]).max()
            assert np.abs(dense(g2[k]) - g1[k]).max() <= 1e-5 * scale, k


def test_data_parallel_rejects_bad_input_before_any_kernel(no_kernels):
    model = random_model("lstm", True, 0)
    x, y, state = random_batch(model, 0, 6)
    with DataParallel(model, 2) as dp:
        bad = x.copy()
        bad[0, 0] = V
        with pytest.raises(ValueError, match="x"):
            dp.loss_and_grads(bad, y, state)
        with pytest.raises(ValueError, match="y"):
            dp.loss(x, -y - 1, state)
        with pytest.raises(ValueError, match="rng"):
            dp.loss_and_grads(x, y, state, keep_prob=0.5)
        with pytest.raises(ValueError, match="smaller than threads"):
            dp.loss_and_grads(x[:1], y[:1], [tuple(a[:1] for a in s) for s in state])


def test_threads_must_be_a_positive_integer():
    model = random_model("lstm", True, 0)
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="threads"):
            DataParallel(model, bad)


# ------------------------------------------------------------------------ BLAS threads


@needs_blas_control
def test_blas_threads_sets_and_restores():
    get, _ = team._openblas_thread_api()
    before = get()
    with team.blas_threads(1):
        assert get() == 1
    assert get() == before
    with pytest.raises(KeyError), team.blas_threads(1):
        raise KeyError("restored on the way out of an exception too")
    assert get() == before


@needs_blas_control
def test_data_parallel_restores_blas_threads_on_close():
    get, _ = team._openblas_thread_api()
    before = get()
    dp = DataParallel(random_model("lstm", True, 0), 2)
    assert get() == 1
    dp.close()
    dp.close()  # a second close is harmless
    assert get() == before


# ------------------------------------------------------------------------ the team


def test_team_runs_jobs_on_its_threads_and_keeps_their_order():
    with ThreadTeam(3) as t:
        names = t.run([lambda k=k: (k, threading.current_thread().name) for k in range(3)])
        assert [n[0] for n in names] == [0, 1, 2]
        assert len({n[1] for n in names}) == 3
        assert threading.current_thread().name not in {n[1] for n in names}
        assert t.run([lambda: 5]) == [5]  # fewer jobs than threads


def test_team_reraises_a_job_error_after_all_jobs_and_stays_usable():
    done = []

    def slow_ok():
        done.append(1)
        return 1

    def fails():
        raise ZeroDivisionError("in a worker")

    with ThreadTeam(2) as t:
        with pytest.raises(ZeroDivisionError, match="in a worker"):
            t.run([fails, slow_ok])
        assert done == [1]
        assert t.run([lambda: 1, lambda: 2]) == [1, 2]  # no stale result left behind


def test_team_argument_errors():
    with pytest.raises(ValueError, match="size"):
        ThreadTeam(0)
    t = ThreadTeam(1)
    with pytest.raises(ValueError, match="2 jobs for a team of 1"):
        t.run([lambda: 1, lambda: 2])
    t.close()
    with pytest.raises(RuntimeError, match="closed"):
        t.run([lambda: 1])


# ------------------------------------------------------------------------ the training step


@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("max_grad_norm,keep_prob", [(100.0, 1.0), (0.05, 0.6)])
@pytest.mark.parametrize("cell,reset_after", CELLS, ids=CELL_IDS)
def test_step_equals_train_step(seed, cell, reset_after, max_grad_norm, keep_prob, threads):
    """Parameters after train_step through a DataParallel equal those after the one-thread
    train_step, with clipping inactive (norm < 100) and active (0.05), with and without
    dropout."""
    x, y, state = random_batch(random_model(cell, reset_after, seed), seed, 12)
    after = []
    for par in (False, True):
        model = random_model(cell, reset_after, seed)
        opt = SGD(model.params, 0.7)
        rng = np.random.default_rng(3)
        if par:
            with DataParallel(model, threads) as dp:
                loss, s = train_step(model, opt, x, y, state, max_grad_norm, keep_prob, rng, dp)
        else:
            loss, s = train_step(model, opt, x, y, state, max_grad_norm, keep_prob, rng)
        after.append((loss, s, {k: p.copy() for k, p in model.params.items()}))
    (l1, s1, p1), (l2, s2, p2) = after
    assert l2 == pytest.approx(l1, rel=1e-13)
    np.testing.assert_allclose(s2[-1][0], s1[-1][0], rtol=1e-13, atol=1e-15)
    for k in p1:
        np.testing.assert_allclose(p2[k], p1[k], rtol=1e-12, atol=1e-14, err_msg=k)
        assert not np.array_equal(p1[k], random_model(cell, reset_after, seed).params[k]), k


def test_closed_data_parallel_refuses_work():
    model = random_model("lstm", True, 0)
    x, y, state = random_batch(model, 0, 6)
    dp = DataParallel(model, 2)
    dp.close()
    with pytest.raises(RuntimeError, match="closed"):
        dp.loss(x, y, state)


def test_a_failing_block_does_not_leave_the_others_waiting():
    """Block 1 fails before the softmax barrier: block 0 must not wait forever, the caller
    gets block 1's error (not the broken barrier), and the next call works again."""
    model = random_model("lstm", True, 0)
    x, y, state = random_batch(model, 0, 12)
    with DataParallel(model, 2) as dp:
        want = dp.loss_and_grads(x, y, state)[0]

        def boom(*args, **kwargs):
            raise ArithmeticError("block 1 failed")

        dp.replicas[1].rows_loss_and_grads = boom
        with pytest.raises(ArithmeticError, match="block 1 failed"):
            dp.loss_and_grads(x, y, state)
        del dp.replicas[1].rows_loss_and_grads
        assert dp.loss_and_grads(x, y, state)[0] == pytest.approx(want, rel=1e-14)
