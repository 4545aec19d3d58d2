"""numlstm.reference: the plain-NumPy engine, and the fast paths checked against it.

Part 1 checks the reference itself against central differences (float64, the ``check_grads``
fixture: worst relative error per array <= 1e-6), for every layer and option.

Part 2 runs the fast public functions and the reference on the same inputs and compares every
output of the forward and the backward pass, in float64 and float32, on both of the layers'
loop paths (the Python loop of BLAS calls, and the Numba time loops of fast/timeloop.py), for the
layers, the whole model (dense and row-sparse embedding gradient), ``DataParallel`` and
``evaluate_sequence``.

Tolerances of part 2, as max |fast - reference| / max |reference| over each array:

* float64: 1e-11. Both sides compute the same formulas in float64; they differ only in the
  order of the additions (BLAS blocking, Numba's reassociated dot products, one GEMM over all
  steps instead of a sum of per-step products). Each of those sums has at most a few hundred
  terms, so the rounding differences are ~1e-15 (measured worst: 3.4e-15); 1e-11
  leaves room for unlucky cancellation while any wrong term (an O(1) error) still fails.
* float32: 2e-5. The fast path runs in float32 and the reference in float64 on the same
  (float32) values, so this measures the fast path's own rounding error against exact math:
  unit roundoff 6e-8, sums of up to ~100 terms, the float32 exp/sigmoid/tanh approximations of
  numlstm/fastmath.py (<= 2e-7 absolute) and their growth through T steps and 2 layers.
  Measured worst: 1.6e-6 (lstm hs); 2e-5 is ~300 float32 ulps, far below any real error.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

import numlstm
from numlstm import reference as ref

DTYPES = [np.float64, np.float32]
TOL = {np.float64: 1e-11, np.float32: 2e-5}
CELLS = [("lstm", True), ("gru", True), ("gru", False), ("rnn", True)]
CELL_IDS = ["lstm", "gru_after", "gru_before", "rnn"]

# worst fast-vs-reference difference per dtype: dtype name -> (error, what); printed at the end
_WORST: dict[str, tuple[float, str]] = {}


# ============================================================================================
# The one place that reaches numlstm's private machinery: forcing the layers' loop path.
# lstm.py / gru.py run their T steps in the Numba loops of fast/timeloop.py when
# timeloop.use_time_loop(B, H) is true (B >= 5, H >= 2 and BLAS on one thread), otherwise in
# a Python loop of BLAS calls. tests/test_timeloop.py forces it the same way. If timeloop
# moves, change here.
# ============================================================================================
def force_loop_path(monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    """path "blas": the Python loop; "numba": the Numba time loops (needs B >= 5)."""
    from numlstm.fast import timeloop  # private: see the banner above

    monkeypatch.setattr(timeloop, "use_time_loop", lambda B, H: path == "numba")


# ============================================================================================
# Helpers
# ============================================================================================


@pytest.fixture(scope="module", autouse=True)
def _print_worst() -> Iterator[None]:
    yield
    for dt, (err, what) in sorted(_WORST.items()):
        print(f"\nworst fast-vs-reference difference, {dt}: {err:.2e} ({what})")


def assert_close(got, want, dtype, what: str) -> float:
    """max |got - want| / max |want| <= TOL[dtype]; records the worst per dtype."""
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    scale = np.abs(want).max()
    assert scale > 0, f"{what}: the reference is all zeros, the comparison would be vacuous"
    err = float(np.abs(got - want).max() / scale)
    name = np.dtype(dtype).name
    if err > _WORST.get(name, (-1.0, ""))[0]:
        _WORST[name] = (err, what)
    assert err <= TOL[dtype], f"{what} ({name}): relative difference {err:.3e} > {TOL[dtype]}"
    return err


def f64(a: np.ndarray, dtype) -> np.ndarray:
    """a rounded to dtype, then held in float64: the values the fast path sees, exactly."""
    return np.asarray(a).astype(dtype).astype(np.float64)


def lstm_inputs(rng, T, B, D, H) -> dict[str, np.ndarray]:
    return {
        "x": rng.standard_normal((T, B, D)),
        "h0": 0.5 * rng.standard_normal((B, H)),
        "c0": 0.5 * rng.standard_normal((B, H)),
        "Wx": 0.5 * rng.standard_normal((D, 4 * H)),
        "Wh": 0.5 * rng.standard_normal((H, 4 * H)),
        "b": 0.5 * rng.standard_normal(4 * H),
    }


def gru_inputs(rng, T, B, D, H) -> dict[str, np.ndarray]:
    return {
        "x": rng.standard_normal((T, B, D)),
        "h0": 0.5 * rng.standard_normal((B, H)),
        "Wx": 0.5 * rng.standard_normal((D, 3 * H)),
        "Wh": 0.5 * rng.standard_normal((H, 3 * H)),
        "bx": 0.5 * rng.standard_normal(3 * H),
        "bh": 0.5 * rng.standard_normal(3 * H),
    }


def make_model(cell, reset_after, dtype, seed, V=11, H=4, L=2) -> numlstm.LanguageModel:
    """A small model with every parameter (biases too) random and O(1)."""
    model = numlstm.LanguageModel(V, H, L, cell=cell, reset_after=reset_after, forget_bias=0.7,
                                  dtype=dtype, seed=seed)  # fmt: skip
    rng = np.random.default_rng(100 + seed)
    for p in model.params.values():
        p[...] = 0.5 * rng.standard_normal(p.shape)
    return model


def as_float64(model: numlstm.LanguageModel) -> numlstm.LanguageModel:
    """The same model (same parameter values) in float64, for the float32 comparisons."""
    c = model.config()
    m = numlstm.LanguageModel(c["vocab_size"], c["hidden_size"], c["num_layers"], cell=c["cell"],
                              forget_bias=c["forget_bias"], reset_after=c["reset_after"],
                              dtype=np.float64)  # fmt: skip
    for k, p in model.params.items():
        m.params[k][...] = p
    return m


def random_batch(model, seed, B, T):
    rng = np.random.default_rng(200 + seed)
    V = model.vocab_size
    x, y = rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T))
    state = [tuple((0.5 * rng.standard_normal(a.shape)).astype(model.dtype) for a in layer)
             for layer in model.init_state(B)]  # fmt: skip
    return x, y, state


def state64(state):
    return [tuple(a.astype(np.float64) for a in layer) for layer in state]


def dense(g) -> np.ndarray:
    return g.to_dense() if isinstance(g, numlstm.IndexedRows) else np.array(g)


# ============================================================================================
# Part 1: the reference against central differences (float64)
# ============================================================================================

SEQ_SHAPES = [(1, 1, 3, 2), (4, 5, 2, 3)]  # (T, B, D, H): T = B = 1, and B >= 5 with D != H
SEQ_IDS = ["T1B1", "T4B5"]


@pytest.mark.parametrize("B,D,H", [(1, 3, 2), (5, 2, 4)], ids=["B1", "B5"])
def test_reference_lstm_step_gradcheck(seed, check_grads, B, D, H):
    rng = np.random.default_rng(seed)
    p = lstm_inputs(rng, 1, B, D, H)
    p["x"] = p["x"][0]
    R1, R2 = rng.standard_normal((B, H)), rng.standard_normal((B, H))

    def f():
        h, c, _ = ref.lstm_step_forward(p["x"], p["h0"], p["c0"], p["Wx"], p["Wh"], p["b"], 0.7)
        return float(np.sum(h * R1) + np.sum(c * R2))

    _, _, cache = ref.lstm_step_forward(p["x"], p["h0"], p["c0"], p["Wx"], p["Wh"], p["b"], 0.7)
    grads = dict(zip(p, ref.lstm_step_backward(R1, R2, cache), strict=True))
    check_grads("reference lstm step", f, p, grads)


@pytest.mark.parametrize("forget_bias", [0.0, 0.7])
@pytest.mark.parametrize("T,B,D,H", SEQ_SHAPES, ids=SEQ_IDS)
def test_reference_lstm_gradcheck(seed, check_grads, T, B, D, H, forget_bias):
    rng = np.random.default_rng(seed)
    p = lstm_inputs(rng, T, B, D, H)
    R, RT, RC = (rng.standard_normal(s) for s in [(T, B, H), (B, H), (B, H)])

    def f():
        hs, hT, cT, _ = ref.lstm_forward(**p, forget_bias=forget_bias)
        return float(np.sum(hs * R) + np.sum(hT * RT) + np.sum(cT * RC))

    _, _, _, caches = ref.lstm_forward(**p, forget_bias=forget_bias)
    grads = dict(zip(p, ref.lstm_backward(R, RT, RC, caches), strict=True))
    check_grads("reference lstm", f, p, grads)


@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
@pytest.mark.parametrize("B,D,H", [(1, 3, 2), (5, 2, 4)], ids=["B1", "B5"])
def test_reference_gru_step_gradcheck(seed, check_grads, B, D, H, reset_after):
    rng = np.random.default_rng(seed)
    p = gru_inputs(rng, 1, B, D, H)
    p["x"] = p["x"][0]
    R = rng.standard_normal((B, H))

    def f():
        h, _ = ref.gru_step_forward(*p.values(), reset_after=reset_after)
        return float(np.sum(h * R))

    _, cache = ref.gru_step_forward(*p.values(), reset_after=reset_after)
    grads = dict(zip(p, ref.gru_step_backward(R, cache), strict=True))
    check_grads(f"reference gru step (reset_after={reset_after})", f, p, grads)


@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
@pytest.mark.parametrize("T,B,D,H", SEQ_SHAPES, ids=SEQ_IDS)
def test_reference_gru_gradcheck(seed, check_grads, T, B, D, H, reset_after):
    rng = np.random.default_rng(seed)
    p = gru_inputs(rng, T, B, D, H)
    R, RT = rng.standard_normal((T, B, H)), rng.standard_normal((B, H))

    def f():
        hs, hT, _ = ref.gru_forward(**p, reset_after=reset_after)
        return float(np.sum(hs * R) + np.sum(hT * RT))

    _, _, caches = ref.gru_forward(**p, reset_after=reset_after)
    grads = dict(zip(p, ref.gru_backward(R, RT, caches), strict=True))
    check_grads(f"reference gru (reset_after={reset_after})", f, p, grads)


def test_reference_embedding_dropout_softmax_gradcheck(seed, check_grads):
    rng = np.random.default_rng(seed)
    T, B, V, H = 3, 5, 7, 4
    ids = rng.integers(0, V, (T, B))
    ids[0, :3] = 2  # a repeated word: dE1 must add, not overwrite
    p = {"W": rng.standard_normal((V, H))}
    R = rng.standard_normal((T, B, H))
    _, cache = ref.embedding_forward(ids, p["W"])

    def f_emb():
        return float(np.sum(ref.embedding_forward(ids, p["W"])[0] * R))

    check_grads("reference embedding", f_emb, p, {"W": ref.embedding_backward(R, cache)})

    p = {"x": rng.standard_normal((T, B, H))}
    mask = ref.dropout_mask((T, B, H), 0.6, rng, np.float64)
    assert 0 < np.count_nonzero(mask) < mask.size  # both kept and dropped entries

    def f_drop():
        return float(np.sum(ref.dropout_forward(p["x"], 0.6, mask=mask)[0] * R))

    check_grads("reference dropout", f_drop, p, {"x": ref.dropout_backward(R, mask)})

    N, Vs = T * B, 6
    p = {"h": rng.standard_normal((N, H)), "W": rng.standard_normal((H, Vs)),
         "b": rng.standard_normal(Vs)}  # fmt: skip
    targets = rng.integers(0, Vs, N)
    _, dh, dW, db = ref.softmax_xent_forward_backward(p["h"], p["W"], p["b"], targets, B)

    def f_softmax():
        return ref.softmax_xent_loss(p["h"], p["W"], p["b"], targets, B)

    check_grads("reference softmax", f_softmax, p, {"h": dh, "W": dW, "b": db})


@pytest.mark.parametrize("T,B", [(1, 1), (3, 5)], ids=["T1B1", "T3B5"])
@pytest.mark.parametrize("keep_prob", [1.0, 0.6], ids=["no_dropout", "dropout"])
@pytest.mark.parametrize("cell,reset_after", CELLS, ids=CELL_IDS)
def test_reference_model_gradcheck(seed, check_grads, cell, reset_after, keep_prob, T, B):
    """The whole model: 2 layers, non-zero initial state, dropout masks drawn once and fixed."""
    model = make_model(cell, reset_after, np.float64, seed)
    x, y, state = random_batch(model, seed, B, T)
    masks = ref.draw_masks(model, T, B, keep_prob, np.random.default_rng(seed))
    loss, grads, _ = ref.loss_and_grads(model, x, y, state, keep_prob, masks=masks)
    assert loss == pytest.approx(ref.loss(model, x, y, state, keep_prob, masks=masks)[0], rel=1e-14)

    def f():
        return ref.loss(model, x, y, state, keep_prob, masks=masks)[0]

    check_grads(f"reference model ({CELL_IDS[CELLS.index((cell, reset_after))]})", f,
                model.params, grads)  # fmt: skip


# ============================================================================================
# Part 2: the fast public paths against the reference
# ============================================================================================

# (T, B, D, H, loop paths): B = 1 exists only on the BLAS path (the Numba loops need B >= 5)
FAST_SHAPES = [((1, 1, 3, 2), "blas"), ((4, 6, 3, 5), "blas"), ((4, 6, 3, 5), "numba")]
FAST_IDS = ["T1B1-blas", "T4B6-blas", "T4B6-numba"]


@pytest.mark.parametrize("forget_bias", [0.0, 0.7])
@pytest.mark.parametrize("shape,path", FAST_SHAPES, ids=FAST_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_fast_lstm_matches_reference(seed, dtype, shape, path, forget_bias, monkeypatch):
    force_loop_path(monkeypatch, path)
    T, B, D, H = shape
    rng = np.random.default_rng(seed)
    p = lstm_inputs(rng, T, B, D, H)
    dhs, dhT, dcT = (rng.standard_normal(s) for s in [(T, B, H), (B, H), (B, H)])
    fast = numlstm.lstm_forward(**{k: v.astype(dtype) for k, v in p.items()},
                                forget_bias=forget_bias)  # fmt: skip
    want = ref.lstm_forward(**{k: f64(v, dtype) for k, v in p.items()}, forget_bias=forget_bias)
    for name, a, b in zip(["hs", "hT", "cT"], fast[:3], want[:3], strict=True):
        assert a.dtype == dtype
        assert_close(a, b, dtype, f"lstm {name}")
    fast_b = numlstm.lstm_backward(dhs.astype(dtype), dhT.astype(dtype), dcT.astype(dtype),
                                   fast[3])  # fmt: skip
    want_b = ref.lstm_backward(f64(dhs, dtype), f64(dhT, dtype), f64(dcT, dtype), want[3])
    for name, a, b in zip(["dx", "dh0", "dc0", "dWx", "dWh", "db"], fast_b, want_b, strict=True):
        assert_close(a, b, dtype, f"lstm {name}")


@pytest.mark.parametrize("B,path", [(1, "blas"), (6, "blas"), (6, "numba")])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_fast_lstm_step_matches_reference(seed, dtype, B, path, monkeypatch):
    force_loop_path(monkeypatch, path)
    D, H = 3, 4
    rng = np.random.default_rng(seed)
    p = lstm_inputs(rng, 1, B, D, H)
    p["x"] = p["x"][0]
    dh, dc = rng.standard_normal((B, H)), rng.standard_normal((B, H))
    h, c, cache = numlstm.lstm_step_forward(*(v.astype(dtype) for v in p.values()), 0.7)
    h_r, c_r, cache_r = ref.lstm_step_forward(*(f64(v, dtype) for v in p.values()), 0.7)
    assert_close(h, h_r, dtype, "lstm step h")
    assert_close(c, c_r, dtype, "lstm step c")
    fast_b = numlstm.lstm_step_backward(dh.astype(dtype), dc.astype(dtype), cache)
    want_b = ref.lstm_step_backward(f64(dh, dtype), f64(dc, dtype), cache_r)
    for name, a, b in zip(["dx", "dh", "dc", "dWx", "dWh", "db"], fast_b, want_b, strict=True):
        assert_close(a, b, dtype, f"lstm step {name}")


@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
@pytest.mark.parametrize("shape,path", FAST_SHAPES, ids=FAST_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_fast_gru_matches_reference(seed, dtype, shape, path, reset_after, monkeypatch):
    force_loop_path(monkeypatch, path)
    T, B, D, H = shape
    rng = np.random.default_rng(seed)
    p = gru_inputs(rng, T, B, D, H)
    dhs, dhT = rng.standard_normal((T, B, H)), rng.standard_normal((B, H))
    fast = numlstm.gru_forward(**{k: v.astype(dtype) for k, v in p.items()},
                               reset_after=reset_after)  # fmt: skip
    want = ref.gru_forward(**{k: f64(v, dtype) for k, v in p.items()}, reset_after=reset_after)
    for name, a, b in zip(["hs", "hT"], fast[:2], want[:2], strict=True):
        assert a.dtype == dtype
        assert_close(a, b, dtype, f"gru {name}")
    fast_b = numlstm.gru_backward(dhs.astype(dtype), dhT.astype(dtype), fast[2])
    want_b = ref.gru_backward(f64(dhs, dtype), f64(dhT, dtype), want[2])
    for name, a, b in zip(["dx", "dh0", "dWx", "dWh", "dbx", "dbh"], fast_b, want_b, strict=True):
        assert_close(a, b, dtype, f"gru(reset_after={reset_after}) {name}")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_fast_embedding_dropout_softmax_match_reference(seed, dtype):
    rng = np.random.default_rng(seed)
    T, B, V, H = 3, 5, 9, 4
    ids = rng.integers(0, V, (T, B))
    ids[1, :] = 4  # a word used five times
    W = rng.standard_normal((V, H))
    dout = rng.standard_normal((T, B, H))
    out, cache = numlstm.embedding_forward(ids, W.astype(dtype))
    out_r, cache_r = ref.embedding_forward(ids, f64(W, dtype))
    assert_close(out, out_r, dtype, "embedding out")
    dW = numlstm.embedding_backward(dout.astype(dtype), cache)
    dW_r = ref.embedding_backward(f64(dout, dtype), cache_r)
    assert_close(dW, dW_r, dtype, "embedding dW")

    # Dropout: the same seeded rng must give the very same mask (exact equality).
    x = rng.standard_normal((T, B, H)).astype(dtype)
    y, mask = numlstm.dropout_forward(x, 0.6, np.random.default_rng(seed + 5))
    y_r, mask_r = ref.dropout_forward(x, 0.6, np.random.default_rng(seed + 5))
    assert mask.dtype == mask_r.dtype == dtype
    np.testing.assert_array_equal(mask, mask_r)
    assert 0 < np.count_nonzero(mask) < mask.size
    np.testing.assert_array_equal(y, y_r)
    np.testing.assert_array_equal(numlstm.dropout_backward(dout.astype(dtype), mask),
                                  ref.dropout_backward(dout.astype(dtype), mask_r))  # fmt: skip

    N, Vs = T * B, 13
    h = rng.standard_normal((N, H))
    Ws, bs = rng.standard_normal((H, Vs)), rng.standard_normal(Vs)
    targets = rng.integers(0, Vs, N)
    loss, dh, dWs, dbs = numlstm.softmax_xent_forward_backward(
        h.astype(dtype), Ws.astype(dtype), bs.astype(dtype), targets, B)  # fmt: skip
    want = ref.softmax_xent_forward_backward(f64(h, dtype), f64(Ws, dtype), f64(bs, dtype),
                                             targets, B)  # fmt: skip
    assert_close(loss, want[0], dtype, "softmax loss")
    for name, a, b in zip(["dh", "dW", "db"], (dh, dWs, dbs), want[1:], strict=True):
        assert_close(a, b, dtype, f"softmax {name}")
    loss_only = numlstm.softmax_xent_loss(h.astype(dtype), Ws.astype(dtype), bs.astype(dtype),
                                          targets, B)  # fmt: skip
    assert_close(loss_only, want[0], dtype, "softmax_xent_loss")


def reference_for(model, x, y, state, keep_prob, rng_seed):
    """The reference's (loss, grads, state) for a fast model's call with rng(rng_seed).

    float64: the reference draws its own masks from the same seeded rng. float32: the masks
    are drawn as the float32 model draws them (``ref.draw_masks`` with the float32 model),
    then the reference runs in float64 on the same values.
    """
    B, T = x.shape
    if model.dtype == np.float64:
        return ref.loss_and_grads(model, x, y, state, keep_prob, np.random.default_rng(rng_seed))
    masks = ref.draw_masks(model, T, B, keep_prob, np.random.default_rng(rng_seed))
    masks = [None if m is None else m.astype(np.float64) for m in masks]
    return ref.loss_and_grads(as_float64(model), x, y, state64(state), keep_prob, masks=masks)


def compare_model_results(fast, want, dtype, what):
    loss, grads, state = fast
    loss_r, grads_r, state_r = want
    assert_close(loss, loss_r, dtype, f"{what} loss")
    assert set(grads) == set(grads_r)
    for k in grads_r:
        assert_close(dense(grads[k]), grads_r[k], dtype, f"{what} d{k}")
    for layer, (s, s_r) in enumerate(zip(state, state_r, strict=True)):
        for name, a, b in zip("hc"[: len(s_r)], s, s_r, strict=True):
            assert_close(a, b, dtype, f"{what} state l{layer}.{name}T")


@pytest.mark.parametrize("B,path", [(1, "blas"), (6, "blas"), (6, "numba")])
@pytest.mark.parametrize("keep_prob", [1.0, 0.6], ids=["no_dropout", "dropout"])
@pytest.mark.parametrize("cell,reset_after", CELLS, ids=CELL_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_fast_model_matches_reference(seed, dtype, cell, reset_after, keep_prob, B, path,
                                      monkeypatch):  # fmt: skip
    """LanguageModel.loss_and_grads (dense and sparse_embedding=True) and .loss."""
    force_loop_path(monkeypatch, path)
    T = 3
    model = make_model(cell, reset_after, dtype, seed)
    x, y, state = random_batch(model, seed, B, T)
    want = reference_for(model, x, y, state, keep_prob, seed + 7)
    loss, grads, new_state = model.loss_and_grads(x, y, state, keep_prob,
                                                  np.random.default_rng(seed + 7))  # fmt: skip
    grads = {k: g.copy() for k, g in grads.items()}  # the model reuses these buffers
    compare_model_results((loss, grads, new_state), want, dtype, "model")
    sparse = model.loss_and_grads(x, y, state, keep_prob, np.random.default_rng(seed + 7),
                                  sparse_embedding=True)  # fmt: skip
    assert isinstance(sparse[1]["embedding"], numlstm.IndexedRows)
    compare_model_results(sparse, want, dtype, "model(sparse)")
    # forward only, no dropout: model.loss against the reference's loss
    loss_eval, state_eval = model.loss(x, y, state)
    x64 = as_float64(model) if dtype == np.float32 else model
    loss_r, state_r = ref.loss(x64, x, y, state64(state))
    assert_close(loss_eval, loss_r, dtype, "model.loss")
    assert_close(state_eval[-1][0], state_r[-1][0], dtype, "model.loss state")


@pytest.mark.parametrize("keep_prob", [1.0, 0.6], ids=["no_dropout", "dropout"])
@pytest.mark.parametrize("cell,reset_after", CELLS, ids=CELL_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_data_parallel_matches_reference(dtype, cell, reset_after, keep_prob):
    """numlstm.DataParallel, 2 threads, B = 10: two blocks of 5 rows (the Numba time loops
    when numlstm can set BLAS to one thread). Its masks are drawn for the whole batch in the
    one-thread order, so the reference drawing from the same seed must match."""
    seed, T, B = 3, 3, 10
    model = make_model(cell, reset_after, dtype, seed)
    x, y, state = random_batch(model, seed, B, T)
    want = reference_for(model, x, y, state, keep_prob, 11)
    with numlstm.DataParallel(model, 2) as dp:
        loss, grads, new_state = dp.loss_and_grads(x, y, state, keep_prob,
                                                   np.random.default_rng(11))  # fmt: skip
        assert isinstance(grads["embedding"], numlstm.IndexedRows)
        compare_model_results((loss, grads, new_state), want, dtype, "DataParallel")
        loss_eval, _ = dp.loss(x, y, state)
    x64 = as_float64(model) if dtype == np.float32 else model
    assert_close(loss_eval, ref.loss(x64, x, y, state64(state))[0], dtype, "DataParallel.loss")


@pytest.mark.parametrize("cell,reset_after", CELLS, ids=CELL_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_evaluate_sequence_matches_reference_word_by_word(dtype, cell, reset_after):
    """evaluate_sequence (batch 1, whole sequence in one Numba call) against the reference
    model run one word at a time (B = T = 1), the state carried from word to word."""
    model = make_model(cell, reset_after, dtype, 4, V=37, H=5)
    rng = np.random.default_rng(9)
    ids = rng.integers(0, model.vocab_size, 30)
    state = [tuple((0.5 * rng.standard_normal(a.shape)).astype(dtype) for a in layer)
             for layer in model.init_state(1)]  # fmt: skip
    total, new_state = numlstm.evaluate_sequence(model, ids, state, block=8)
    m64 = as_float64(model) if dtype == np.float32 else model
    total_r, s = 0.0, state64(state)
    for t in range(len(ids) - 1):
        loss_t, s = ref.loss(m64, ids[None, t : t + 1], ids[None, t + 1 : t + 2], s)
        total_r += loss_t
    assert total_r > 0
    assert_close(total, total_r, dtype, "evaluate_sequence total")
    for layer, (a, b) in enumerate(zip(new_state, s, strict=True)):
        for name, u, v in zip("hc"[: len(b)], a, b, strict=True):
            assert_close(u, v, dtype, f"evaluate_sequence state l{layer}.{name}")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_fast_optimisers_match_reference(seed, dtype):
    """clip_by_global_norm (O1, O2), SGD (O3) and three Adam steps (O5-O8)."""
    rng = np.random.default_rng(seed)
    shapes = {"a": (4, 3), "b": (5,)}
    params = {k: rng.standard_normal(s) for k, s in shapes.items()}
    steps = [{k: rng.standard_normal(s) for k, s in shapes.items()} for _ in range(3)]

    g_fast = {k: g.astype(dtype) for k, g in steps[0].items()}
    g_ref = {k: f64(g, dtype) for k, g in steps[0].items()}
    norm = numlstm.clip_by_global_norm(g_fast, 1.0)
    norm_r = ref.clip_by_global_norm(g_ref, 1.0)
    assert norm_r > 1.0  # the clip is active
    assert_close(norm, norm_r, dtype, "global norm")
    for k in shapes:
        assert_close(g_fast[k], g_ref[k], dtype, f"clipped {k}")

    p_fast = {k: v.astype(dtype) for k, v in params.items()}
    p_ref = {k: f64(v, dtype) for k, v in params.items()}
    numlstm.SGD(p_fast, 0.3).step(g_fast)
    ref.sgd_step(p_ref, g_ref, 0.3)
    for k in shapes:
        assert_close(p_fast[k], p_ref[k], dtype, f"SGD {k}")

    adam = numlstm.Adam(p_fast, lr=0.01)
    m = {k: np.zeros(s) for k, s in shapes.items()}
    v = {k: np.zeros(s) for k, s in shapes.items()}
    for t, g in enumerate(steps, start=1):
        adam.step({k: a.astype(dtype) for k, a in g.items()})
        ref.adam_step(p_ref, {k: f64(a, dtype) for k, a in g.items()}, m, v, t, lr=0.01)
    for k in shapes:
        assert_close(p_fast[k], p_ref[k], dtype, f"Adam {k}")
