"""Tests for numlstm.LanguageModel: whole-model gradient checks, composition, state, training."""

from __future__ import annotations

import math

import numpy as np
import pytest

from numlstm import (
    SGD,
    Adam,
    LanguageModel,
    clip_by_global_norm,
    dropout_mask,
    embedding_forward,
    gru_forward,
    lstm_forward,
    rnn_forward,
    softmax_xent_loss,
)

CELLS = [("lstm", True), ("gru", True), ("gru", False), ("rnn", True)]
CELL_IDS = ["lstm", "gru_after", "gru_before", "rnn"]
V, H, B, T = 7, 4, 2, 3


def random_model(cell, reset_after, num_layers, seed, dtype=np.float64, forget_bias=0.6):
    """A float64 model whose parameters (biases included) are generic random values."""
    model = LanguageModel(
        V, H, num_layers, cell=cell, reset_after=reset_after, forget_bias=forget_bias,
        dtype=dtype, seed=seed,
    )  # fmt: skip
    rng = np.random.default_rng(100 + seed)
    for p in model.params.values():
        p[...] = 0.5 * rng.standard_normal(p.shape)
    return model


def random_batch(seed, batch=B, steps=T, vocab=V):
    rng = np.random.default_rng(200 + seed)
    return rng.integers(0, vocab, (batch, steps)), rng.integers(0, vocab, (batch, steps))


def random_state(model, seed, batch=B):
    rng = np.random.default_rng(300 + seed)
    return [
        tuple((0.5 * rng.standard_normal(a.shape)).astype(model.dtype) for a in layer)
        for layer in model.init_state(batch)
    ]


def random_masks(model, keep_prob, seed, batch=B, steps=T):
    rng = np.random.default_rng(400 + seed)
    shape = (steps, batch, model.hidden_size)  # time-major, as the layers see them
    return [dropout_mask(shape, keep_prob, rng, model.dtype) for _ in range(model.num_layers + 1)]


# ------------------------------------------------------------------------ gradient checks


@pytest.mark.parametrize("keep_prob", [1.0, 0.6])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("cell,reset_after", CELLS, ids=CELL_IDS)
def test_model_gradcheck(seed, cell, reset_after, num_layers, keep_prob, check_grads):
    model = random_model(cell, reset_after, num_layers, seed)
    x, y = random_batch(seed)
    state = random_state(model, seed)  # non-zero carried state, treated as a constant
    masks = random_masks(model, keep_prob, seed) if keep_prob < 1 else None
    loss, grads, _ = model.loss_and_grads(x, y, state, keep_prob, masks=masks)
    # The gradient arrays are buffers reused by the next loss_and_grads call: keep copies.
    grads = {k: g.copy() for k, g in grads.items()}
    assert model.loss(x, y, state, keep_prob, masks=masks)[0] == pytest.approx(loss, rel=1e-13)

    def f():
        return model.loss(x, y, state, keep_prob, masks=masks)[0]

    label = f"model({cell}{'' if cell == 'lstm' else ', reset_after=' + str(reset_after)})"
    check_grads(label, f, model.params, grads)


@pytest.mark.parametrize("cell,reset_after", CELLS, ids=CELL_IDS)
def test_model_gradcheck_t1_b1(seed, cell, reset_after, check_grads):
    model = random_model(cell, reset_after, 2, seed)
    x, y = random_batch(seed, batch=1, steps=1)
    state = random_state(model, seed, batch=1)
    masks = random_masks(model, 0.7, seed, batch=1, steps=1)
    _, grads, _ = model.loss_and_grads(x, y, state, 0.7, masks=masks)
    grads = {k: g.copy() for k, g in grads.items()}

    def f():
        return model.loss(x, y, state, 0.7, masks=masks)[0]

    label = f"model({cell}{'' if cell == 'lstm' else ', reset_after=' + str(reset_after)})"
    check_grads(label, f, model.params, grads)


@pytest.mark.parametrize("cell,reset_after", CELLS, ids=CELL_IDS)
def test_model_float32_agrees_with_float64(seed, cell, reset_after):
    m64 = random_model(cell, reset_after, 2, seed)
    m32 = random_model(cell, reset_after, 2, seed, dtype=np.float32)
    for k in m64.params:
        m32.params[k][...] = m64.params[k]
    x, y = random_batch(seed, batch=3, steps=4)
    loss64, g64, _ = m64.loss_and_grads(x, y, m64.init_state(3))
    loss32, g32, _ = m32.loss_and_grads(x, y, m32.init_state(3))
    assert loss32 == pytest.approx(loss64, rel=1e-5)
    for k in g64:
        assert g32[k].dtype == np.float32, k
        err = np.max(np.abs(g32[k] - g64[k])) / np.max(np.abs(g64[k]))
        assert err < 1e-5, f"{k}: {err:.2e}"


# ------------------------------------------------------------------------ composition


def compose_loss(model, x, y, state, masks):
    """The model's loss rebuilt from the public layer functions (docs/layers.md §4)."""
    p = model.params
    ids = x.T  # (T, B): the layers are time-major
    inp, _ = embedding_forward(ids, p["embedding"])
    if masks is not None:
        inp = inp * masks[0]
    for layer in range(model.num_layers):
        if model.cell == "lstm":
            hs, _, _, _ = lstm_forward(
                inp, *state[layer], p[f"l{layer}.Wx"], p[f"l{layer}.Wh"], p[f"l{layer}.b"],
                forget_bias=model.forget_bias,
            )  # fmt: skip
        elif model.cell == "rnn":
            hs, _, _ = rnn_forward(inp, state[layer][0], p[f"l{layer}.Wx"], p[f"l{layer}.Wh"],
                                   p[f"l{layer}.b"])  # fmt: skip
        else:
            hs, _, _ = gru_forward(
                inp, state[layer][0], p[f"l{layer}.Wx"], p[f"l{layer}.Wh"], p[f"l{layer}.bx"],
                p[f"l{layer}.bh"], reset_after=model.reset_after,
            )  # fmt: skip
        inp = hs if masks is None else hs * masks[layer + 1]
    top = np.ascontiguousarray(inp).reshape(-1, model.hidden_size)
    return softmax_xent_loss(top, p["softmax_w"], p["softmax_b"], y.T.reshape(-1), x.shape[0])


@pytest.mark.parametrize("keep_prob", [1.0, 0.5])
@pytest.mark.parametrize("cell,reset_after", CELLS, ids=CELL_IDS)
def test_model_loss_matches_layer_composition(seed, cell, reset_after, keep_prob):
    model = random_model(cell, reset_after, 2, seed)
    x, y = random_batch(seed, batch=3, steps=4)
    state = random_state(model, seed, batch=3)
    masks = random_masks(model, keep_prob, seed, 3, 4) if keep_prob < 1 else None
    expected = compose_loss(model, x, y, state, masks)
    assert model.loss(x, y, state, keep_prob, masks=masks)[0] == pytest.approx(expected, rel=1e-12)
    loss, _, _ = model.loss_and_grads(x, y, state, keep_prob, masks=masks)
    assert loss == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("cell,reset_after", CELLS, ids=CELL_IDS)
def test_logits_match_loss(seed, cell, reset_after):
    model = random_model(cell, reset_after, 2, seed)
    x, y = random_batch(seed, batch=3, steps=4)
    state = random_state(model, seed, batch=3)
    z, new_state = model.logits(x, state)
    assert z.shape == (3, 4, V)
    logp = z - z.max(axis=-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(axis=-1, keepdims=True))
    xent = -np.take_along_axis(logp, y[..., None], axis=-1).sum() / 3
    loss, loss_state = model.loss(x, y, state)
    assert loss == pytest.approx(xent, rel=1e-12)
    for a, b in zip(new_state, loss_state, strict=True):
        for u, v in zip(a, b, strict=True):
            np.testing.assert_array_equal(u, v)


# ------------------------------------------------------------------------ state


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("cell,reset_after", CELLS, ids=CELL_IDS)
def test_state_shapes_and_init_state(cell, reset_after, num_layers):
    model = LanguageModel(V, H, num_layers, cell=cell, reset_after=reset_after, seed=0)
    n = 2 if cell == "lstm" else 1
    state = model.init_state(5)
    assert len(state) == num_layers
    for layer in state:
        assert len(layer) == n
        for a in layer:
            assert a.shape == (5, H) and a.dtype == np.float32
            assert not a.any()
    x, y = random_batch(0, batch=5, steps=3)
    for out in (model.loss(x, y, state)[1], model.loss_and_grads(x, y, state)[2]):
        assert len(out) == num_layers
        for layer in out:
            assert len(layer) == n
            for a in layer:
                assert a.shape == (5, H) and a.dtype == np.float32
                assert np.abs(a).max() > 0  # the state moved away from zero


@pytest.mark.parametrize("cell,reset_after", CELLS, ids=CELL_IDS)
def test_carried_state_changes_the_loss(seed, cell, reset_after):
    model = random_model(cell, reset_after, 2, seed)
    x1, y1 = random_batch(seed)
    x2, y2 = random_batch(seed + 10)
    _, state = model.loss(x1, y1, model.init_state(B))
    zero_loss = model.loss(x2, y2, model.init_state(B))[0]
    carried_loss = model.loss(x2, y2, state)[0]
    assert abs(carried_loss - zero_loss) > 1e-6
    # loss_and_grads carries it the same way
    assert model.loss_and_grads(x2, y2, state)[0] == pytest.approx(carried_loss, rel=1e-12)


@pytest.mark.parametrize("cell,reset_after", CELLS, ids=CELL_IDS)
def test_two_segments_with_carried_state_equal_one_long_batch(seed, cell, reset_after):
    """The loss sums over time, so loss(x[:, :k]) + loss(x[:, k:] | carried state) equals the
    loss of the whole sequence, and the final states agree."""
    model = random_model(cell, reset_after, 2, seed)
    x, y = random_batch(seed, batch=3, steps=6)
    state0 = random_state(model, seed, batch=3)
    full, full_state = model.loss(x, y, state0)
    first, mid_state = model.loss(x[:, :2], y[:, :2], state0)
    second, end_state = model.loss(x[:, 2:], y[:, 2:], mid_state)
    assert first + second == pytest.approx(full, rel=1e-12)
    for a, b in zip(end_state, full_state, strict=True):
        for u, v in zip(a, b, strict=True):
            np.testing.assert_allclose(u, v, rtol=1e-12, atol=1e-15)


def test_loss_and_grads_does_not_modify_params_or_state(seed):
    model = random_model("lstm", True, 2, seed)
    params = {k: v.copy() for k, v in model.params.items()}
    state = random_state(model, seed)
    saved_state = [tuple(a.copy() for a in layer) for layer in state]
    x, y = random_batch(seed)
    model.loss_and_grads(x, y, state, 0.5, np.random.default_rng(0))
    for k in params:
        np.testing.assert_array_equal(model.params[k], params[k], err_msg=k)
    for layer, saved in zip(state, saved_state, strict=True):
        for a, s in zip(layer, saved, strict=True):
            np.testing.assert_array_equal(a, s)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_loss_does_not_touch_gradient_buffers(cell):
    """Documented contract the gradient checks rely on: loss() uses its own buffers."""
    model = random_model(cell, True, 2, 0)
    x, y = random_batch(0)
    _, grads, _ = model.loss_and_grads(x, y, model.init_state(B))
    saved = {k: g.copy() for k, g in grads.items()}
    x2, y2 = random_batch(1, batch=3, steps=5)
    model.loss(x2, y2, model.init_state(3))
    model.loss(x, y, random_state(model, 1), 0.5, np.random.default_rng(1))
    model.logits(x2, model.init_state(3))
    for k in saved:
        np.testing.assert_array_equal(grads[k], saved[k], err_msg=k)


def test_grads_have_the_params_keys_shapes_and_dtypes():
    for cell in ("lstm", "gru"):
        model = LanguageModel(V, H, 2, cell=cell, seed=0)
        _, grads, _ = model.loss_and_grads(*random_batch(0), model.init_state(B))
        assert list(grads) == list(model.params)
        for k, g in grads.items():
            assert g.shape == model.params[k].shape and g.dtype == np.float32, k
            assert np.isfinite(g).all(), k


def test_parameter_names_and_count():
    lstm = LanguageModel(V, H, 2, cell="lstm", seed=0)
    assert sorted(lstm.params) == sorted(
        ["embedding", "softmax_w", "softmax_b"]
        + [f"l{i}.{n}" for i in range(2) for n in ("Wx", "Wh", "b")]
    )
    assert lstm.num_parameters() == V * H + 2 * (8 * H * H + 4 * H) + H * V + V
    gru = LanguageModel(V, H, 1, cell="gru", seed=0)
    assert {"l0.bx", "l0.bh"} <= set(gru.params)
    assert gru.num_parameters() == V * H + 6 * H * H + 6 * H + H * V + V
    assert not lstm.params["l0.b"].any()  # biases start at zero


def test_same_seed_same_init_and_init_scale():
    a = LanguageModel(V, H, 1, seed=3, init_scale=0.05)
    b = LanguageModel(V, H, 1, seed=3, init_scale=0.05)
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])
    assert max(np.abs(p).max() for p in a.params.values()) <= 0.05
    c = LanguageModel(V, H, 1, seed=4, init_scale=0.05)
    assert not np.array_equal(a.params["embedding"], c.params["embedding"])


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_initial_loss_is_log_v_per_word(cell):
    vocab, steps, batch = 50, 6, 4
    model = LanguageModel(vocab, 8, 2, cell=cell, init_scale=1e-3, seed=0)
    x, y = random_batch(0, batch, steps, vocab)
    loss, _ = model.loss(x, y, model.init_state(batch))
    assert loss / steps == pytest.approx(math.log(vocab), rel=1e-3)


# ------------------------------------------------------------------------ dropout


def test_dropout_with_seeded_rng_is_reproducible():
    model = LanguageModel(V, H, 2, cell="lstm", seed=0, dtype=np.float64)
    x, y = random_batch(0)
    s = model.init_state(B)
    l1, g1, _ = model.loss_and_grads(x, y, s, 0.5, np.random.default_rng(11))
    g1 = {k: v.copy() for k, v in g1.items()}
    l2, g2, _ = model.loss_and_grads(x, y, s, 0.5, np.random.default_rng(11))
    assert l1 == l2
    for k in g1:
        np.testing.assert_array_equal(g1[k], g2[k], err_msg=k)
    l3, _, _ = model.loss_and_grads(x, y, s, 0.5, np.random.default_rng(12))
    assert l3 != l1
    assert model.loss(x, y, s, 0.5, np.random.default_rng(11))[0] == pytest.approx(l1, rel=1e-13)
    assert model.loss(x, y, s)[0] != l1  # no dropout by default at evaluation


# ------------------------------------------------------------------------ training


def training_data(vocab, batch, steps, n_batches):
    """A deterministic sequence: each stream counts up modulo vocab (next = current + 1)."""
    start = np.arange(batch)[:, None] * 5
    t = np.arange(n_batches * steps + 1)[None, :]
    stream = (start + t) % vocab
    return [
        (stream[:, i * steps : (i + 1) * steps], stream[:, i * steps + 1 : (i + 1) * steps + 1])
        for i in range(n_batches)
    ]


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_training_lowers_the_loss(cell, optimizer):
    vocab, hidden, batch, steps = 20, 16, 4, 8
    model = LanguageModel(vocab, hidden, 1, cell=cell, init_scale=0.1, seed=0)
    opt = SGD(model.params, lr=1.0) if optimizer == "sgd" else Adam(model.params, lr=0.02)
    data = training_data(vocab, batch, steps, 5)
    state = model.init_state(batch)
    losses = []
    for step in range(100):
        if step % len(data) == 0:
            state = model.init_state(batch)
        x, y = data[step % len(data)]
        loss, grads, state = model.loss_and_grads(x, y, state)
        norm = clip_by_global_norm(grads, 5.0)
        assert math.isfinite(norm)
        opt.step(grads)
        losses.append(loss)
    initial = np.mean(losses[:5])
    final = np.mean(losses[-5:])
    assert initial == pytest.approx(steps * math.log(vocab), rel=0.05)
    assert final < 0.1 * initial, (initial, final)


# ------------------------------------------------------------------------ bad input


@pytest.mark.usefixtures("no_kernels")
class TestModelBadInput:
    @pytest.fixture(params=["lstm", "gru"])
    def model(self, request):
        return LanguageModel(V, H, 2, cell=request.param, seed=0)

    @staticmethod
    def calls(model):
        state = model.init_state(B)
        return [
            lambda x, y: model.loss(x, y, state),
            lambda x, y: model.loss_and_grads(x, y, state),
        ]

    @pytest.mark.parametrize("bad", [-1, V, V + 3])
    @pytest.mark.parametrize("which", ["x", "y"])
    def test_out_of_range_ids(self, model, which, bad):
        x, y = random_batch(0)
        (x if which == "x" else y)[1, 2] = bad
        for call in self.calls(model):
            with pytest.raises(ValueError, match=rf"^{which} holds token id {bad}\b"):
                call(x, y)
        if which == "x":
            with pytest.raises(ValueError, match=rf"token id {bad}\b"):
                model.logits(x, model.init_state(B))

    @pytest.mark.parametrize("which", ["x", "y"])
    def test_non_integer_ids(self, model, which):
        x, y = random_batch(0)
        if which == "x":
            x = x.astype(np.float64)
        else:
            y = y.astype(np.float32)
        for call in self.calls(model):
            with pytest.raises(TypeError, match=rf"^{which} must hold integer token ids"):
                call(x, y)

    def test_ids_as_list(self, model):
        x, y = random_batch(0)
        for call in self.calls(model):
            with pytest.raises(TypeError, match="^x must be a numpy integer array"):
                call(x.tolist(), y)

    def test_y_shape_must_match_x(self, model):
        x, y = random_batch(0)
        for call in self.calls(model):
            with pytest.raises(ValueError, match="^y must have the shape of x"):
                call(x, y[:, :-1])

    def test_ids_must_be_2d(self, model):
        x, y = random_batch(0)
        for call in self.calls(model):
            with pytest.raises(ValueError, match="^x must have 2 dimensions"):
                call(x.reshape(-1), y.reshape(-1))

    def test_zero_length(self, model):
        for shape in ((B, 0), (0, T)):
            x = np.zeros(shape, np.int64)
            with pytest.raises(ValueError, match="empty"):
                model.loss(x, x, model.init_state(B))

    def test_state_with_wrong_batch_size(self, model):
        x, y = random_batch(0)
        for state in (model.init_state(B + 1), model.init_state(1)):
            with pytest.raises(ValueError, match="batch size"):
                model.loss(x, y, state)
            with pytest.raises(ValueError, match="batch size"):
                model.loss_and_grads(x, y, state)

    def test_state_with_wrong_structure(self, model):
        x, y = random_batch(0)
        with pytest.raises(ValueError, match="state"):
            model.loss(x, y, model.init_state(B)[:1])
        bad = model.init_state(B)
        bad[1] = bad[1] + (np.zeros((B, H), np.float32),)
        with pytest.raises(ValueError, match=r"state\[1\]"):
            model.loss(x, y, bad)

    def test_state_with_wrong_dtype(self, model):
        x, y = random_batch(0)
        state = [tuple(a.astype(np.float64) for a in layer) for layer in model.init_state(B)]
        with pytest.raises(TypeError, match=r"state\[0\]"):
            model.loss(x, y, state)

    @pytest.mark.parametrize("keep_prob", [0.0, -0.1, 1.01, float("nan")])
    def test_keep_prob_out_of_range(self, model, keep_prob):
        x, y = random_batch(0)
        rng = np.random.default_rng(0)
        with pytest.raises(ValueError, match="keep_prob"):
            model.loss_and_grads(x, y, model.init_state(B), keep_prob, rng)
        with pytest.raises(ValueError, match="keep_prob"):
            model.loss(x, y, model.init_state(B), keep_prob, rng)

    def test_keep_prob_below_one_needs_rng(self, model):
        x, y = random_batch(0)
        with pytest.raises(ValueError, match="rng"):
            model.loss_and_grads(x, y, model.init_state(B), 0.5)
        with pytest.raises(ValueError, match="rng"):
            model.loss(x, y, model.init_state(B), 0.5)

    def test_masks_with_wrong_shape(self, model):
        x, y = random_batch(0)
        masks = [np.ones((B, T, H), np.float32)] * 3  # (B, T, H) instead of time-major
        shape = rf"masks\[0\] must be an array of shape \(T, B, W\) = \({T}, {B}, {H}\)"
        with pytest.raises(ValueError, match=shape):
            model.loss(x, y, model.init_state(B), 0.5, masks=masks)

    def test_masks_with_wrong_count(self, model):
        x, y = random_batch(0)
        masks = [np.ones((T, B, H), np.float32)]  # a 2-layer model needs 3
        with pytest.raises(ValueError, match="masks"):
            model.loss(x, y, model.init_state(B), 0.5, masks=masks)
        with pytest.raises(ValueError, match="masks"):
            model.loss_and_grads(x, y, model.init_state(B), 0.5, masks=masks)

    def test_init_state_bad_batch_size(self, model):
        for bad in (0, -1, 2.5):
            with pytest.raises(ValueError, match="batch_size"):
                model.init_state(bad)


@pytest.mark.parametrize(
    "kwargs,error",
    [
        ({"cell": "elman"}, ValueError),
        ({"vocab_size": 0}, ValueError),
        ({"hidden_size": 2.5}, ValueError),
        ({"num_layers": 0}, ValueError),
        ({"dtype": np.int32}, TypeError),
        ({"dtype": np.float16}, TypeError),
    ],
)
def test_constructor_rejects_bad_arguments(kwargs, error):
    args = {"vocab_size": V, "hidden_size": H, "num_layers": 1} | kwargs
    with pytest.raises(error):
        LanguageModel(**args)


def test_config_round_trips_through_the_constructor():
    model = LanguageModel(
        V, H, 2, cell="gru", reset_after=False, forget_bias=0.5, dtype=np.float64,
        init_scale=0.2, seed=1,
    )  # fmt: skip
    config = model.config()
    dtype = config.pop("dtype")
    clone = LanguageModel(**config, dtype=dtype, seed=1)
    assert clone.config() == model.config()
    for k in model.params:  # same config and seed: the same initial parameters
        np.testing.assert_array_equal(clone.params[k], model.params[k], err_msg=k)
