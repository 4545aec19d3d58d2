"""fast_eval.evaluate_sequence against the per-word loop over LanguageModel.loss.

The reference is what ``train.evaluate(model, data, 1, 1)`` does: one ``model.loss`` call per
word, batch 1, the state carried from word to word. The fast path must give the same summed
loss and final state (to rounding) for every cell type, 1 and 2 layers, both dtypes, and a
non-zero initial state.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from numlstm import LanguageModel, train
from numlstm.fast.fast_eval import evaluate_sequence
from numlstm.io import ptb

V, H = 61, 7  # H not a multiple of 4 and V odd: the remainder loops of the kernels run too

CELLS = {
    "lstm": {"cell": "lstm", "forget_bias": 1.0},
    "gru": {"cell": "gru", "reset_after": True},
    "gru-cho": {"cell": "gru", "reset_after": False},
    "rnn": {"cell": "rnn"},  # no compiled loop: evaluate_sequence runs model.loss in chunks
}
TOL = {np.float64: 1e-10, np.float32: 1e-4}  # relative, on the summed loss


def make_model(kind: str, num_layers: int, dtype, vocab_size: int = V, seed: int = 0):
    model = LanguageModel(vocab_size, H, num_layers, dtype=dtype, seed=seed, init_scale=0.5,
                          **CELLS[kind])  # fmt: skip
    rng = np.random.default_rng(seed + 100)
    for p in model.params.values():
        if p.ndim == 1:  # the biases start at zero: make them matter
            p[...] = rng.uniform(-0.5, 0.5, p.shape)
    return model


def random_state(model: LanguageModel, seed: int = 1):
    rng = np.random.default_rng(seed)
    return [
        tuple(rng.uniform(-0.8, 0.8, a.shape).astype(model.dtype) for a in s)
        for s in model.init_state(1)
    ]


def loop_reference(model: LanguageModel, ids: np.ndarray, state):
    """Sum of model.loss over the words of ids, batch 1, num_steps 1 (train.evaluate's loop)."""
    total = 0.0
    for x, y in ptb.ptb_iterator(ids, 1, 1):
        loss, state = model.loss(x, y, state)
        total += loss
    return total, state


def assert_states_close(got, want, atol):
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert len(g) == len(w)
        for a, b in zip(g, w, strict=True):
            assert a.shape == b.shape and a.dtype == b.dtype
            np.testing.assert_allclose(a, b, rtol=0, atol=atol)


@pytest.mark.parametrize("kind", list(CELLS))
@pytest.mark.parametrize(
    "num_layers, dtype",
    [(1, np.float64), (2, np.float64), (2, np.float32)],
    ids=["1layer-f64", "2layers-f64", "2layers-f32"],
)
def test_matches_model_loss_loop(kind, num_layers, dtype):
    model = make_model(kind, num_layers, dtype)
    ids = np.random.default_rng(2).integers(0, V, 40)
    state = random_state(model)
    before = [tuple(a.copy() for a in s) for s in state]
    total, new_state = evaluate_sequence(model, ids, state)
    want, want_state = loop_reference(model, ids, state)
    assert isinstance(total, float)
    assert total == pytest.approx(want, rel=TOL[dtype])
    assert_states_close(new_state, want_state, atol=10 * TOL[dtype])
    assert_states_close(state, before, atol=0)  # the caller's state is left alone


@pytest.mark.parametrize("kind", list(CELLS))
def test_perplexity_equals_train_evaluate(kind):
    model = make_model(kind, 2, np.float64)
    data = np.random.default_rng(3).integers(0, V, 30).astype(np.int32)
    total, _ = evaluate_sequence(model, data)
    result = train.evaluate(model, data, 1, 1)
    assert math.exp(total / (len(data) - 1)) == pytest.approx(result.perplexity, rel=1e-10)


@pytest.mark.parametrize("kind", list(CELLS))
def test_blocks_pieces_and_threads_agree(kind):
    """Block size, splitting the stream (overlap of one token) and threads only change how
    the work is cut, not the arithmetic of any word."""
    model = make_model(kind, 2, np.float64)
    ids = np.random.default_rng(4).integers(0, V, 50)
    state = random_state(model)
    total, final = evaluate_sequence(model, ids, state)
    for block in (1, 3, 49, 1000):
        t, s = evaluate_sequence(model, ids, state, block=block)
        assert t == pytest.approx(total, rel=1e-13)
        assert_states_close(s, final, atol=1e-13)
    t, s = evaluate_sequence(model, ids, state, parallel=False)
    assert t == pytest.approx(total, rel=1e-13)
    assert_states_close(s, final, atol=1e-13)
    t1, s1 = evaluate_sequence(model, ids[:21], state)
    t2, s2 = evaluate_sequence(model, ids[20:], s1)
    assert t1 + t2 == pytest.approx(total, rel=1e-13)
    assert_states_close(s2, final, atol=1e-13)


def test_vocabulary_larger_than_one_chunk():
    """The logits are computed in chunks of columns; V > chunk exercises several of them."""
    model = make_model("lstm", 1, np.float64, vocab_size=2500)
    ids = np.random.default_rng(5).integers(0, 2500, 12)
    total, _ = evaluate_sequence(model, ids)
    want, _ = loop_reference(model, ids, model.init_state(1))
    assert total == pytest.approx(want, rel=1e-10)


@pytest.mark.parametrize(
    "ids, error",
    [
        (np.array([1, 2, V]), ValueError),  # id == vocab_size
        (np.array([1, -1, 2]), ValueError),  # negative id
        (np.array([3]), ValueError),  # no target to predict
        (np.array([[1, 2], [3, 4]]), ValueError),  # not 1-D
        (np.array([1.0, 2.0]), TypeError),  # not integers
    ],
)
def test_bad_ids_are_rejected(ids, error):
    model = make_model("lstm", 1, np.float64)
    with pytest.raises(error):
        evaluate_sequence(model, ids)


def test_bad_state_is_rejected():
    model = make_model("lstm", 2, np.float64)
    ids = np.array([1, 2, 3])
    with pytest.raises(ValueError, match="batch size 1"):
        evaluate_sequence(model, ids, model.init_state(2))
    with pytest.raises(ValueError, match="2 per-layer"):
        evaluate_sequence(model, ids, model.init_state(1)[:1])
    with pytest.raises(TypeError, match="float64"):
        evaluate_sequence(model, ids, [(h.astype(np.float32), c) for h, c in model.init_state(1)])
    with pytest.raises(ValueError, match="block"):
        evaluate_sequence(model, ids, block=0)
