"""The model with padded batches: ``lengths=`` (docs/layers.md §4.2: S3m, dS3m; docs/rnn.md
§5: M1-M3) and the sentence batches of ``numlstm.io.ptb.sentence_batches``.

* float64 central-difference checks (``check_grads``, relative error <= 1e-6) of the whole
  model with lengths mixing 0, T and values between, for the LSTM and both GRU forms, with
  dropout by fixed masks, on both loop paths (Python loop of BLAS calls, Numba time loops);
* fast vs reference.py in float32 and float64; lengths=None bit-identical to no argument;
  all lengths = T equal to lengths=None;
* the semantic check: a padded batch's loss is the sum of its sentences' losses, each run
  alone (B = 1, no padding), divided by B, and the state is each sentence's final state;
* DataParallel with lengths equals the one-thread step;
* sentence_batches on a hand-made stream (exact batches) and on real PTB valid;
* bad lengths rejected, naming them, before any kernel runs.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from numlstm import DataParallel, IndexedRows, LanguageModel, dropout_mask
from numlstm import reference as ref
from numlstm.io import ptb

CELLS = [("lstm", True), ("gru", True), ("gru", False), ("rnn", True)]
CELL_IDS = ["lstm", "gru_after", "gru_before", "rnn"]
V, H = 9, 4
REPO = Path(__file__).resolve().parent.parent
PTB_DIR = Path(os.environ.get("NUMLSTM_PTB_DIR", REPO.parent / "shared" / "data" / "ptb"))


def force_loop_path(monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    """As tests/test_varlen.py: "blas" the Python loop, "numba" the time loops where they
    apply (B >= 5, H >= 2: a B = 1 sentence run alone keeps the Python loop)."""
    from numlstm.fast import timeloop

    monkeypatch.setattr(
        timeloop, "use_time_loop", lambda B, H: path == "numba" and B >= timeloop.MIN_ROWS
    )


def random_model(cell, reset_after, num_layers, seed, dtype=np.float64):
    """A model whose parameters (biases included) are generic random values."""
    model = LanguageModel(V, H, num_layers, cell=cell, reset_after=reset_after, forget_bias=0.4,
                          dtype=dtype, seed=seed)  # fmt: skip
    rng = np.random.default_rng(100 + seed)
    for p in model.params.values():
        p[...] = 0.5 * rng.standard_normal(p.shape)
    return model


def random_batch(model, seed, B, T):
    rng = np.random.default_rng(200 + seed)
    x, y = rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T))
    state = [
        tuple((0.5 * rng.standard_normal(a.shape)).astype(model.dtype) for a in layer)
        for layer in model.init_state(B)
    ]
    return x, y, state


def mixed_lengths(seed, B, T):
    """B lengths in [0, T] that include 0 and T (B >= 3) and repeat some values."""
    rng = np.random.default_rng(500 + seed)
    n = rng.integers(0, T + 1, B)
    n[0], n[-1] = 0, T
    if B > 3:
        n[1] = n[2]
    return n


def random_masks(model, keep_prob, seed, B, T):
    rng = np.random.default_rng(400 + seed)
    shape = (T, B, model.hidden_size)
    return [dropout_mask(shape, keep_prob, rng, model.dtype) for _ in range(model.num_layers + 1)]


def copy_grads(grads):
    return {k: np.asarray(g.to_dense() if isinstance(g, IndexedRows) else g).copy()
            for k, g in grads.items()}  # fmt: skip


def assert_states_close(s1, s2, **tol):
    for a, b in zip(s1, s2, strict=True):
        for u, v in zip(a, b, strict=True):
            np.testing.assert_allclose(v, u, **tol)


# ------------------------------------------------------------------------ gradient checks


@pytest.mark.parametrize("path,B,T", [("blas", 4, 4), ("numba", 6, 5)])
@pytest.mark.parametrize("keep_prob", [1.0, 0.6])
@pytest.mark.parametrize("cell,reset_after", CELLS, ids=CELL_IDS)
def test_model_gradcheck_with_lengths(
    seed, cell, reset_after, keep_prob, path, B, T, check_grads, monkeypatch
):
    force_loop_path(monkeypatch, path)
    model = random_model(cell, reset_after, 2, seed)
    x, y, state = random_batch(model, seed, B, T)
    lengths = mixed_lengths(seed, B, T)
    masks = random_masks(model, keep_prob, seed, B, T) if keep_prob < 1 else None
    loss, grads, _ = model.loss_and_grads(x, y, state, keep_prob, masks=masks, lengths=lengths)
    grads = copy_grads(grads)
    f_loss = model.loss(x, y, state, keep_prob, masks=masks, lengths=lengths)[0]
    assert f_loss == pytest.approx(loss, rel=1e-13)

    def f():
        return model.loss(x, y, state, keep_prob, masks=masks, lengths=lengths)[0]

    label = f"model+lengths({cell}{'' if cell == 'lstm' else ', reset_after=' + str(reset_after)})"
    check_grads(label, f, model.params, grads)


@pytest.mark.parametrize("cell,reset_after", CELLS, ids=CELL_IDS)
def test_padded_positions_get_no_gradient(seed, cell, reset_after):
    """Changing the ids at padded positions of x and y changes nothing at all."""
    model = random_model(cell, reset_after, 2, seed)
    B, T = 5, 6
    x, y, state = random_batch(model, seed, B, T)
    lengths = mixed_lengths(seed, B, T)
    loss1, g1, s1 = model.loss_and_grads(x, y, state, lengths=lengths)
    g1 = copy_grads(g1)
    pad = np.arange(T)[None, :] >= lengths[:, None]
    x2, y2 = x.copy(), y.copy()
    x2[pad], y2[pad] = (x[pad] + 3) % V, (y[pad] + 5) % V
    loss2, g2, s2 = model.loss_and_grads(x2, y2, state, lengths=lengths)
    assert loss2 == loss1
    for k in g1:
        np.testing.assert_array_equal(g2[k], g1[k], err_msg=k)
    assert_states_close(s1, s2, rtol=0, atol=0)


# ------------------------------------------------------------------------ semantics


@pytest.mark.parametrize("path,B", [("blas", 4), ("numba", 7)])
@pytest.mark.parametrize("cell,reset_after", CELLS, ids=CELL_IDS)
def test_padded_batch_equals_each_sentence_alone(seed, cell, reset_after, path, B, monkeypatch):
    """The real semantic check: loss * B is the sum of each row's sentence run alone (B = 1,
    T = lengths[b], no padding) from its own initial state; the state is each sentence's
    final state (the initial state for length 0); the gradients add up likewise."""
    force_loop_path(monkeypatch, path)
    model = random_model(cell, reset_after, 2, seed)
    T = 6
    x, y, state = random_batch(model, seed, B, T)
    lengths = mixed_lengths(seed, B, T)
    loss, grads, new_state = model.loss_and_grads(x, y, state, lengths=lengths)
    grads = copy_grads(grads)
    assert model.loss(x, y, state, lengths=lengths)[0] == pytest.approx(loss, rel=1e-13)
    total, summed = 0.0, {k: np.zeros_like(g) for k, g in grads.items()}
    for b, n in enumerate(lengths.tolist()):
        row_state = [tuple(a[b : b + 1] for a in s) for s in state]
        if n == 0:
            alone_state = row_state
        else:
            lb, gb, alone_state = model.loss_and_grads(x[b : b + 1, :n], y[b : b + 1, :n],
                                                       row_state)  # fmt: skip
            total += lb
            for k in summed:
                summed[k] += gb[k]
        for layer, alone in zip(new_state, alone_state, strict=True):
            for u, v in zip(layer, alone, strict=True):
                np.testing.assert_allclose(u[b : b + 1], v, rtol=1e-12, atol=1e-15)
    assert loss * B == pytest.approx(total, rel=1e-12)
    for k in grads:
        np.testing.assert_allclose(grads[k] * B, summed[k], rtol=1e-10, atol=1e-13, err_msg=k)


@pytest.mark.parametrize("cell,reset_after", CELLS, ids=CELL_IDS)
def test_lengths_none_is_bit_identical_and_all_t_equals_it(cell, reset_after):
    """lengths=None is the old call; lengths all T gives the same numbers (here bit for bit,
    since the layers then take their plain path and every position counts)."""
    model = random_model(cell, reset_after, 2, 0, dtype=np.float32)
    B, T = 5, 4
    x, y, state = random_batch(model, 0, B, T)
    rng = np.random.default_rng
    l0, g0, s0 = model.loss_and_grads(x, y, state, 0.7, rng(3))
    g0 = copy_grads(g0)
    for lengths in (None, np.full(B, T), [T] * B):
        l1, g1, s1 = model.loss_and_grads(x, y, state, 0.7, rng(3), lengths=lengths)
        assert l1 == l0
        for k in g0:
            np.testing.assert_array_equal(g1[k], g0[k], err_msg=k)
        assert_states_close(s0, s1, rtol=0, atol=0)
        assert model.loss(x, y, state, lengths=lengths)[0] == model.loss(x, y, state)[0]


def test_all_lengths_zero_give_zero_loss_and_gradients():
    model = random_model("lstm", True, 2, 0)
    x, y, state = random_batch(model, 0, 3, 4)
    loss, grads, new_state = model.loss_and_grads(x, y, state, lengths=np.zeros(3, int))
    assert loss == 0.0
    assert all(not np.any(g) for g in grads.values())
    assert_states_close(state, new_state, rtol=0, atol=0)


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-11), (np.float32, 2e-5)])
@pytest.mark.parametrize("keep_prob", [1.0, 0.7])
@pytest.mark.parametrize("path,B", [("blas", 4), ("numba", 6)])
@pytest.mark.parametrize("cell,reset_after", CELLS, ids=CELL_IDS)
def test_fast_matches_reference(seed, cell, reset_after, path, B, keep_prob, dtype, tol,
                                monkeypatch):  # fmt: skip
    force_loop_path(monkeypatch, path)
    model = random_model(cell, reset_after, 2, seed, dtype=dtype)
    T = 5
    x, y, state = random_batch(model, seed, B, T)
    lengths = mixed_lengths(seed, B, T)
    masks = random_masks(model, keep_prob, seed, B, T) if keep_prob < 1 else None
    l1, g1, s1 = model.loss_and_grads(x, y, state, keep_prob, masks=masks, lengths=lengths)
    l2, g2, s2 = ref.loss_and_grads(model, x, y, state, keep_prob, masks=masks, lengths=lengths)
    assert l1 == pytest.approx(l2, rel=tol)
    for k in g2:
        assert g1[k].dtype == dtype
        scale = max(1.0, float(np.abs(g2[k]).max()))
        np.testing.assert_allclose(g1[k], g2[k], rtol=tol, atol=tol * scale, err_msg=k)
    assert_states_close(s2, s1, rtol=tol, atol=tol)
    e1 = model.loss(x, y, state, keep_prob, masks=masks, lengths=lengths)
    e2 = ref.loss(model, x, y, state, keep_prob, masks=masks, lengths=lengths)
    assert e1[0] == pytest.approx(e2[0], rel=tol)
    assert_states_close(e2[1], e1[1], rtol=tol, atol=tol)


def test_reference_with_lengths_all_t_equals_without():
    model = random_model("gru", False, 2, 1)
    x, y, state = random_batch(model, 1, 3, 4)
    l1, g1, s1 = ref.loss_and_grads(model, x, y, state)
    l2, g2, s2 = ref.loss_and_grads(model, x, y, state, lengths=np.full(3, 4))
    assert l2 == pytest.approx(l1, rel=1e-14)
    for k in g1:
        np.testing.assert_allclose(g2[k], g1[k], rtol=1e-13, atol=1e-16, err_msg=k)


# ------------------------------------------------------------------------ data parallel


@pytest.mark.parametrize("threads,B", [(2, 11), (3, 7)])
@pytest.mark.parametrize("keep_prob", [1.0, 0.7])
@pytest.mark.parametrize("cell,reset_after", CELLS, ids=CELL_IDS)
def test_data_parallel_with_lengths_equals_one_thread(seed, cell, reset_after, keep_prob,
                                                      threads, B):  # fmt: skip
    model = random_model(cell, reset_after, 2, seed)
    T = 6
    x, y, state = random_batch(model, seed, B, T)
    lengths = mixed_lengths(seed, B, T)
    rng = np.random.default_rng
    l1, g1, s1 = model.loss_and_grads(x, y, state, keep_prob, rng(7), lengths=lengths,
                                      sparse_embedding=True)  # fmt: skip
    g1 = copy_grads(g1)
    with DataParallel(model, threads) as dp:
        l2, g2, s2 = dp.loss_and_grads(x, y, state, keep_prob, rng(7), lengths=lengths)
        assert l2 == pytest.approx(l1, rel=1e-12)
        g2 = copy_grads(g2)
        for k in g1:
            np.testing.assert_allclose(g2[k], g1[k], rtol=1e-12, atol=1e-14, err_msg=k)
        assert_states_close(s1, s2, rtol=1e-12, atol=1e-15)
        e1 = model.loss(x, y, state, lengths=lengths)
        e2 = dp.loss(x, y, state, lengths=lengths)
        assert e2[0] == pytest.approx(e1[0], rel=1e-12)
        assert_states_close(e1[1], e2[1], rtol=1e-12, atol=1e-15)


def test_data_parallel_rejects_bad_lengths_before_any_kernel(no_kernels):
    model = random_model("lstm", True, 1, 0)
    x, y, state = random_batch(model, 0, 4, 3)
    with DataParallel(model, 2) as dp:
        with pytest.raises(ValueError, match="lengths"):
            dp.loss_and_grads(x, y, state, lengths=np.array([1, 2, 3, 4]))
        with pytest.raises(ValueError, match="lengths"):
            dp.loss(x, y, state, lengths=np.array([1, 2, 3]))


# ------------------------------------------------------------------------ bad lengths


@pytest.mark.usefixtures("no_kernels")
class TestBadLengths:
    B, T = 3, 4

    @pytest.fixture(params=["lstm", "gru"])
    def calls(self, request):
        model = LanguageModel(V, H, 2, cell=request.param, seed=0)
        x = np.zeros((self.B, self.T), int)
        state = model.init_state(self.B)
        return [
            lambda n: model.loss(x, x, state, lengths=n),
            lambda n: model.loss_and_grads(x, x, state, lengths=n),
            lambda n: model.rows_loss_and_grads(x, x, state, 5, lengths=n),
            lambda n: model.check_batch(x, x, state, lengths=n),
        ]

    @pytest.mark.parametrize(
        "bad, error, match",
        [
            (np.array([1, 2, 5]), ValueError, r"lengths\[2\] = 5 is outside \[0, T\]"),
            (np.array([1, -1, 2]), ValueError, r"lengths\[1\] = -1"),
            (np.array([1, 2]), ValueError, r"lengths must have shape \(B,\) = \(3,\)"),
            (np.array([[1, 2, 3]]), ValueError, "lengths must have shape"),
            (np.array([1.0, 2.0, 3.0]), TypeError, "lengths must hold integers"),
            (np.array([True, False, True]), TypeError, "lengths must hold integers"),
            ("abc", TypeError, "lengths must be a"),
        ],
    )
    def test_rejected_naming_lengths(self, calls, bad, error, match):
        for call in calls:
            with pytest.raises(error, match=match):
                call(bad)


# ------------------------------------------------------------------------ sentence batches


def test_sentence_batches_on_a_hand_made_stream():
    # sentences (eos = 1): [5 6 7 1] [8 1] [5 9 6 7 2 1] [3 1] [4 4 1], then a trailing [6 5]
    ids = np.array([5, 6, 7, 1, 8, 1, 5, 9, 6, 7, 2, 1, 3, 1, 4, 4, 1, 6, 5])
    got = list(ptb.sentence_batches(ids, eos_id=1, batch_size=2, pad_id=0))
    # bucketed: lengths 2 ([8 1]), 2 ([3 1]), 2 ([6 5]), 3, 4, 6 -> batches of 2 in that order
    expected = [
        ([[1, 8], [1, 3]], [[8, 1], [3, 1]], [2, 2]),
        ([[1, 6], [1, 4, 4]], [[6, 5], [4, 4, 1]], [2, 3]),
        ([[1, 5, 6, 7], [1, 5, 9, 6, 7, 2]], [[5, 6, 7, 1], [5, 9, 6, 7, 2, 1]], [4, 6]),
    ]
    assert len(got) == len(expected)
    for (x, y, n), (ex, ey, en) in zip(got, expected, strict=True):
        T = max(en)
        np.testing.assert_array_equal(x, [r + [0] * (T - len(r)) for r in ex])
        np.testing.assert_array_equal(y, [r + [0] * (T - len(r)) for r in ey])
        np.testing.assert_array_equal(n, en)
        assert x.dtype == y.dtype == np.int32 and n.dtype == np.int64
        assert x.flags.c_contiguous and y.flags.c_contiguous
    # in stream order, batch size 4, pad id 9: two batches, the last one smaller
    got = list(ptb.sentence_batches(ids, 1, 4, pad_id=9, bucket=False))
    assert [b[0].shape for b in got] == [(4, 6), (2, 3)]
    np.testing.assert_array_equal(got[1][0], [[1, 4, 4], [1, 6, 9]])
    np.testing.assert_array_equal(got[1][1], [[4, 4, 1], [6, 5, 9]])
    np.testing.assert_array_equal(got[0][2], [4, 2, 6, 2])


def test_sentence_batches_shuffled_cover_every_sentence_once():
    ids = np.random.default_rng(0).integers(0, 6, 200)
    ids[-1] = 0
    plain = list(ptb.sentence_batches(ids, 0, 3))
    a = list(ptb.sentence_batches(ids, 0, 3, shuffle_rng=np.random.default_rng(1)))
    b = list(ptb.sentence_batches(ids, 0, 3, shuffle_rng=np.random.default_rng(1)))
    for u, v in zip(a, b, strict=True):  # seeded: reproducible
        for p, q in zip(u, v, strict=True):
            np.testing.assert_array_equal(p, q)

    def sentences(batches):
        return sorted(tuple(y[r, :n].tolist()) for _, y, ns in batches for r, n in enumerate(ns))

    assert sentences(a) == sentences(plain)
    assert sum(int(ns.sum()) for _, _, ns in a) == len(ids)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"ids": np.array([], int)}, ValueError, "ids must not be empty"),
        ({"ids": np.zeros((2, 2), int)}, ValueError, "ids must be 1-D"),
        ({"ids": np.array([1.0, 2.0])}, TypeError, "ids must have an integer dtype"),
        ({"ids": np.array([1, -2])}, ValueError, "non-negative"),
        ({"eos_id": -1}, ValueError, "eos_id must be a non-negative integer"),
        ({"eos_id": 1.5}, TypeError, "eos_id"),
        ({"pad_id": True}, TypeError, "pad_id"),
        ({"batch_size": 0}, ValueError, "batch_size must be a positive integer"),
        ({"batch_size": "2"}, TypeError, "batch_size"),
        ({"bucket": 1}, TypeError, "bucket must be a bool"),
        ({"shuffle_rng": 3}, TypeError, "shuffle_rng must be a numpy.random.Generator"),
    ],
)
def test_sentence_batches_reject_bad_input_on_call(kwargs, error, match):
    args = {"ids": np.array([3, 4, 1, 2, 1]), "eos_id": 1, "batch_size": 2}
    args.update(kwargs)
    with pytest.raises(error, match=match):
        ptb.sentence_batches(**args)  # raises on the call, before the first next()


@pytest.fixture(scope="module")
def ptb_valid():
    if not (PTB_DIR / "ptb.valid.txt").exists():
        pytest.skip(f"real PTB files not found in {PTB_DIR}")
    word_to_id = ptb.build_vocab(PTB_DIR / "ptb.train.txt")
    return ptb.file_to_word_ids(PTB_DIR / "ptb.valid.txt", word_to_id), word_to_id


def test_sentence_batches_on_ptb_valid(ptb_valid):
    """Every position of PTB valid's id stream is the target of exactly one valid position;
    x is <eos> then the sentence's words; padding is small when bucketed."""
    ids, word_to_id = ptb_valid
    ids = np.asarray(ids)
    eos = word_to_id["<eos>"]
    batches = list(ptb.sentence_batches(ids, eos, 20))
    assert sum(int(n.sum()) for _, _, n in batches) == len(ids) == 73760
    assert sum(len(n) for _, _, n in batches) == int((ids == eos).sum())  # sentences
    seen = []
    for x, y, n in batches:
        for r, m in enumerate(n.tolist()):
            assert y[r, m - 1] == eos and not np.any(y[r, : m - 1] == eos)
            assert x[r, 0] == eos
            np.testing.assert_array_equal(x[r, 1:m], y[r, : m - 1])
            assert not np.any(x[r, m:]) and not np.any(y[r, m:])  # padded with id 0
            seen.append(y[r, :m])
    # bucketed: sorted by length, so the sentences come back as a permutation of the stream's
    stream = np.split(ids, np.flatnonzero(ids == eos)[:-1] + 1)
    key = sorted(tuple(s.tolist()) for s in stream)
    assert sorted(tuple(s.tolist()) for s in seen) == key
    padded = sum(x.size for x, _, _ in batches) - len(ids)
    assert padded < 0.02 * len(ids)  # bucketing keeps padding small


def test_padded_ptb_batch_loss_matches_sentences_alone(ptb_valid):
    """A few real sentences, padded and bucketed, through a float64 model."""
    ids, word_to_id = ptb_valid
    ids = np.asarray(ids[:400])
    ids = ids[: np.flatnonzero(ids == word_to_id["<eos>"])[-1] + 1]
    model = LanguageModel(len(word_to_id), 8, 2, dtype=np.float64, seed=0)
    total_batches = total_alone = 0.0
    for x, y, n in ptb.sentence_batches(ids, word_to_id["<eos>"], 5, bucket=False):
        loss, _ = model.loss(x, y, model.init_state(len(n)), lengths=n)
        total_batches += loss * len(n)
        for r, m in enumerate(n.tolist()):
            total_alone += model.loss(x[r : r + 1, :m], y[r : r + 1, :m], model.init_state(1))[0]
    assert total_batches == pytest.approx(total_alone, rel=1e-12)
