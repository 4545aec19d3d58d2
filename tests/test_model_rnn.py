"""The LanguageModel with cell="rnn": stacked plain tanh layers (R1-R2 of docs/rnn.md).

Gradients of the whole model against central differences (float64), the fast model against
numlstm.reference (float32 and float64), the parameters and their draw order, the options
it shares with the LSTM and GRU (tied embeddings, embedding width, lengths, dropout sites),
what it refuses (LSTMP options, state dropout), DataParallel, saving, batch-1 evaluation,
generation and a tiny command-line run."""

from __future__ import annotations

import numpy as np
import pytest
from test_model_lstmp import (
    PTB_DIR,
    QUIET,
    _tiny_config,
    _tiny_data,
    as_float64,
    assert_close,
    dense,
    needs_ptb,
    random_batch,
)

import numlstm
from numlstm import cli
from numlstm import model as model_module
from numlstm import reference as ref
from numlstm import train as train_module
from numlstm.config import Config
from numlstm.generate import _Stepper, generate
from numlstm.io.saving import load_model, save_model
from numlstm.layers import LOCAL

V, H, L = 11, 4, 2
OPTIONS = {
    "plain": {},
    "one_layer": {"L": 1},
    "tied": {"tie_embeddings": True},
    "embedding_size": {"embedding_size": 5},  # E != H (tying needs E = H for this cell)
}
NAMES = list(OPTIONS)


def make_model(name: str, dtype=np.float64, seed: int = 0) -> numlstm.LanguageModel:
    """A small RNN model with every parameter (biases too) random: large enough that dR2's
    (1 - h²) is far from 1 in places, small enough that central differences with the shared
    eps stay well inside 1e-6 (their error grows as eps² times tanh's third derivative)."""
    options = dict(OPTIONS[name])
    layers = options.pop("L", L)
    model = numlstm.LanguageModel(V, H, layers, cell="rnn", dtype=dtype, seed=seed, **options)
    rng = np.random.default_rng(100 + seed)
    for p in model.params.values():
        p[...] = 0.4 * rng.standard_normal(p.shape)
    return model


# ============================================================================================
# Gradients of the whole model against central differences (float64)
# ============================================================================================


@pytest.mark.parametrize("T,B,with_lengths", [(1, 1, False), (3, 5, False), (4, 3, True)],
                         ids=["T1B1", "T3B5", "T4B3-lengths"])  # fmt: skip
@pytest.mark.parametrize("name", NAMES)
def test_model_gradcheck(seed, check_grads, name, T, B, with_lengths):
    model = make_model(name, np.float64, seed)
    x, y, state = random_batch(model, seed, B, T)
    keep_prob = 0.7  # the tutorial's dropout (D1), with masks fixed for the check
    masks = model.draw_masks(T, B, keep_prob, np.random.default_rng(seed))
    lengths = np.array([4, 0, 2])[:B] if with_lengths else None
    loss, grads, _ = model.loss_and_grads(x, y, state, keep_prob, masks=masks, lengths=lengths)
    grads = {k: dense(g).copy() for k, g in grads.items()}
    assert set(grads) == set(model.params)
    # the check must be able to fail: every recurrent weight gets a gradient
    for layer in range(model.num_layers):
        assert np.abs(grads[f"l{layer}.Wx"]).max() > 0, f"l{layer}.Wx has a zero gradient"

    def f():
        return model.loss(x, y, state, keep_prob, masks=masks, lengths=lengths)[0]

    assert loss == pytest.approx(f(), rel=1e-13)
    check_grads(f"model rnn {name}", f, model.params, grads)


@pytest.mark.parametrize("variational", [None, "sequence"])
def test_model_gradcheck_with_dropout_sites(seed, check_grads, variational):
    """A numlstm.Dropout with the embedding, input (D2) and output (D3) sites, masks fixed
    (fresh per step, or one per sequence, D5)."""
    model = make_model("plain", np.float64, seed)
    T, B = 3, 4
    x, y, state = random_batch(model, seed, B, T)
    dropout = numlstm.Dropout(embedding_keep_prob=0.8, input_keep_prob=0.7,
                              output_keep_prob=0.6, variational=variational)  # fmt: skip
    masks = model.draw_masks(T, B, dropout, np.random.default_rng(seed))
    assert {k for k, m in masks.items() if m is not None} == {
        "embedding",
        "l0.input",
        "l0.output",
        "l1.input",
        "l1.output",
    }
    loss, grads, _ = model.loss_and_grads(x, y, state, dropout, masks=masks)
    grads = {k: dense(g).copy() for k, g in grads.items()}

    def f():
        return model.loss(x, y, state, dropout, masks=masks)[0]

    assert loss == pytest.approx(f(), rel=1e-13)
    assert loss != pytest.approx(model.loss(x, y, state)[0], rel=1e-6)  # the masks act
    check_grads(f"model rnn dropout {variational}", f, model.params, grads)


def test_reference_model_gradcheck(check_grads):
    """numlstm.reference's own RNN model against central differences (with lengths)."""
    model = make_model("embedding_size", np.float64, 3)
    T, B = 4, 3
    x, y, state = random_batch(model, 3, B, T)
    lengths = np.array([4, 1, 3])
    masks = model.draw_masks(T, B, 0.8, np.random.default_rng(1))
    loss, grads, _ = ref.loss_and_grads(model, x, y, state, masks=masks, lengths=lengths)

    def f():
        return ref.loss(model, x, y, state, masks=masks, lengths=lengths)[0]

    assert loss == pytest.approx(f(), rel=1e-13)
    check_grads("reference model rnn", f, model.params, grads)


# ============================================================================================
# The fast model against the plain NumPy reference, float64 and float32
# ============================================================================================


@pytest.mark.parametrize("B,keep_prob,with_lengths",
                         [(1, 1.0, False), (6, 0.6, False), (6, 1.0, True)],
                         ids=["B1", "B6-dropout", "B6-lengths"])  # fmt: skip
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_fast_model_matches_reference(dtype, name, B, keep_prob, with_lengths):
    seed, T = 4, 3
    model = make_model(name, dtype, seed)
    x, y, state = random_batch(model, seed, B, T)
    lengths = np.array([3, 1, 0, 2, 3, 2])[:B] if with_lengths else None
    masks = ref.draw_masks(model, T, B, keep_prob, np.random.default_rng(9))
    m64 = as_float64(model)
    masks64 = [None if m is None else m.astype(np.float64) for m in masks]
    state64 = [tuple(a.astype(np.float64) for a in s) for s in state]
    want = ref.loss_and_grads(m64, x, y, state64, keep_prob, masks=masks64, lengths=lengths)
    for sparse in (False, True):
        loss, grads, new_state = model.loss_and_grads(
            x, y, state, keep_prob, np.random.default_rng(9), sparse_embedding=sparse,
            lengths=lengths)  # fmt: skip
        assert_close(loss, want[0], dtype, "loss")
        assert set(grads) == set(want[1]) == set(model.params)
        for k, g in want[1].items():
            assert_close(dense(grads[k]), g, dtype, f"d{k} (sparse={sparse})")
        for layer, (s, s_r) in enumerate(zip(new_state, want[2], strict=True)):
            assert len(s) == 1  # (h,): no cell state
            assert_close(s[0], s_r[0], dtype, f"state of layer {layer}")
    loss_eval, _ = model.loss(x, y, state, lengths=lengths)
    assert_close(loss_eval, ref.loss(m64, x, y, state64, lengths=lengths)[0], dtype, "loss()")


def test_the_model_runs_the_rnn_layer(monkeypatch):
    """Each layer is rnn.py's R1-R2 (not an LSTM or GRU with some gates switched off): the
    model's loss is the one computed here from rnn_forward and the softmax by hand."""
    model = make_model("plain", np.float64, 2)
    x, y, state = random_batch(model, 2, 3, 5)
    p = model.params
    inp = p["embedding"][x.T]  # (E1) time-major
    for layer in range(L):
        inp, _, _ = numlstm.rnn_forward(inp, state[layer][0], p[f"l{layer}.Wx"],
                                        p[f"l{layer}.Wh"], p[f"l{layer}.b"])  # fmt: skip
    z = inp @ p["softmax_w"] + p["softmax_b"]  # (S1)
    z -= z.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))  # (S2)
    want = -np.take_along_axis(logp, y.T[..., None], -1).sum() / 3  # (S3)
    assert model.loss(x, y, state)[0] == pytest.approx(want, rel=1e-12)
    for name in ("lstm_forward_unchecked", "gru_forward_unchecked", "lstmp_forward_unchecked"):
        monkeypatch.setattr(model_module, name, lambda *a, **k: pytest.fail("wrong layer"))
    model.loss_and_grads(x, y, state)


# ============================================================================================
# Parameters, state, options shared with the other cells, and what is refused
# ============================================================================================


def test_parameters_shapes_and_draw_order():
    E = 5
    m = numlstm.LanguageModel(V, H, L, cell="rnn", seed=7, init_scale=0.3, embedding_size=E)
    assert list(m.params) == ["embedding", "l0.Wx", "l0.Wh", "l0.b", "l1.Wx", "l1.Wh", "l1.b",
                              "softmax_w", "softmax_b"]  # fmt: skip
    # Drawn uniformly in the order embedding, per layer Wx, Wh, softmax_w, softmax_b; b zero
    rng = np.random.default_rng(7)
    shapes = {"embedding": (V, E), "l0.Wx": (E, H), "l0.Wh": (H, H), "l1.Wx": (H, H),
              "l1.Wh": (H, H), "softmax_w": (H, V), "softmax_b": (V,)}  # fmt: skip
    for k, shape in shapes.items():
        want = rng.uniform(-0.3, 0.3, shape).astype(np.float32)
        assert m.params[k].dtype == np.float32 and np.array_equal(m.params[k], want), k
    for layer in range(L):
        assert np.array_equal(m.params[f"l{layer}.b"], np.zeros(H, np.float32))
    assert m.num_parameters() == V * E + H * (E + H + 1) + H * (2 * H + 1) + H * V + V
    config = Config(vocab_size=V, hidden_size=H, num_layers=L, embedding_size=E)
    assert config.num_parameters("rnn") == m.num_parameters()
    state = m.init_state(3)
    assert [[a.shape for a in s] for s in state] == [[(3, H)], [(3, H)]]
    assert m.config()["cell"] == "rnn"
    assert numlstm.LanguageModel(**m.config()).config() == m.config()
    logits, new_state = m.logits(np.zeros((3, 2), np.int64), state)
    assert logits.shape == (3, 2, V) and np.isfinite(logits).all()
    assert [a.shape for a in new_state[1]] == [(3, H)]


def test_config_num_parameters_per_cell():
    """Config.num_parameters counts what LanguageModel draws, for every cell; the LSTM's count
    (the default, used by validate as a bound) is unchanged."""
    c = Config(vocab_size=V, hidden_size=H, num_layers=3, embedding_size=6)
    for cell in model_module.CELLS:
        m = numlstm.LanguageModel(V, H, 3, cell=cell, embedding_size=6)
        assert c.num_parameters(cell) == m.num_parameters(), cell
    assert c.num_parameters() == c.num_parameters("lstm")
    with pytest.raises(ValueError, match="cell must be one of"):
        c.num_parameters("elman")


def test_tied_gradient_is_both_terms():
    """dT1 for the RNN model: the untied model with softmax_w = embedding.T gives the two
    terms separately."""
    tied = make_model("tied", np.float64, 3)
    untied = numlstm.LanguageModel(V, H, L, cell="rnn", dtype=np.float64)
    for k, v in tied.params.items():
        untied.params[k][...] = v
    untied.params["softmax_w"][...] = tied.params["embedding"].T
    x, y, state = random_batch(tied, 3, 4, 3)
    loss_t, g_t, _ = tied.loss_and_grads(x, y, state)
    g_t = {k: dense(g).copy() for k, g in g_t.items()}
    loss_u, g_u, _ = untied.loss_and_grads(x, y, state)
    assert loss_t == pytest.approx(loss_u, rel=1e-13)
    np.testing.assert_allclose(g_t["embedding"], dense(g_u["embedding"]) + g_u["softmax_w"].T,
                               rtol=1e-12, atol=1e-15)  # fmt: skip


BAD = [
    ({"peepholes": True}, "peepholes"),
    ({"proj_size": 3}, "proj_size"),
    ({"cell_clip": 1.0}, "cell_clip"),
    ({"tie_embeddings": True, "embedding_size": 5}, "4 != 5"),
]


@pytest.mark.parametrize("kwargs,fragment", BAD, ids=[str(b[0]) for b in BAD])
def test_bad_options_are_refused(no_kernels, kwargs, fragment):
    with pytest.raises(ValueError) as info:
        numlstm.LanguageModel(V, H, L, cell="rnn", **kwargs)
    assert fragment in str(info.value)
    if "tie_embeddings" not in kwargs:  # the LSTMP options: the message names the cell
        assert "cell='lstm'" in str(info.value) and "'rnn'" in str(info.value)


def test_state_dropout_is_refused_before_any_kernel(no_kernels):
    model = make_model("plain")
    x, y, state = random_batch(model, 0, 2, 3)
    dropout = numlstm.Dropout(state_keep_prob=0.5)
    rng = np.random.default_rng(0)
    for call in (lambda: model.loss_and_grads(x, y, state, dropout, rng),
                 lambda: model.loss(x, y, state, dropout, rng),
                 lambda: model.draw_masks(3, 2, dropout, rng)):  # fmt: skip
        with pytest.raises(ValueError, match="state_keep_prob") as info:
            call()
        assert "cell='rnn'" in str(info.value) and "plain RNN" in str(info.value)
    # a fixed state mask is refused too, naming the site
    masks = {"l0.state": np.ones((3, 2, H))}
    with pytest.raises(ValueError, match=r"l\*\.state.*cell='rnn'"):
        model.loss_and_grads(x, y, state, masks=masks)
    with pytest.raises(ValueError, match="state_keep_prob"):
        ref_dropout = Config(state_keep_prob=0.5)
        train_module.train(ref_dropout, None, "unused", cell="rnn")


def test_bad_state_is_refused(no_kernels):
    model = make_model("plain")
    x, y, state = random_batch(model, 0, 2, 3)
    lstm_like = [(s[0], s[0]) for s in state]  # (h, c) is an LSTM's state
    with pytest.raises(ValueError, match=r"state\[0\] must hold 1 arrays for a rnn layer"):
        model.loss_and_grads(x, y, lstm_like)
    with pytest.raises(ValueError, match="cell must be one of"):
        numlstm.LanguageModel(V, H, L, cell="elman")


# ============================================================================================
# DataParallel, rows in parts, saving, batch-1 evaluation and generation
# ============================================================================================


@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("name", ["plain", "tied"])
def test_data_parallel_equals_one_thread(name, with_lengths):
    B, T = 10, 3
    model = make_model(name, np.float64, 2)
    x, y, state = random_batch(model, 2, B, T)
    lengths = np.array([3, 1, 0, 2, 3, 2, 1, 3, 3, 2]) if with_lengths else None
    loss, grads, new_state = model.loss_and_grads(x, y, state, 0.6, np.random.default_rng(7),
                                                  lengths=lengths)  # fmt: skip
    grads = {k: dense(g).copy() for k, g in grads.items()}
    with numlstm.DataParallel(model, 2) as dp:
        loss2, grads2, state2 = dp.loss_and_grads(x, y, state, 0.6, np.random.default_rng(7),
                                                  lengths=lengths)  # fmt: skip
        assert loss2 == pytest.approx(loss, rel=1e-12)
        assert set(grads2) == set(grads)
        for k in grads:
            np.testing.assert_allclose(dense(grads2[k]), grads[k], rtol=1e-10, atol=1e-13,
                                       err_msg=k)  # fmt: skip
        for s, s2 in zip(new_state, state2, strict=True):
            assert len(s2) == 1
            np.testing.assert_allclose(s[0], s2[0], rtol=1e-12)
        eval2, _ = dp.loss(x, y, state, lengths=lengths)
    assert eval2 == pytest.approx(model.loss(x, y, state, lengths=lengths)[0], rel=1e-12)


def test_rows_in_parts_sum_to_the_batch():
    model = make_model("plain", np.float64, 1)
    x, y, state = random_batch(model, 1, 5, 3)
    loss, grads, _ = model.loss_and_grads(x, y, state)
    grads = {k: dense(g).copy() for k, g in grads.items()}
    parts = []
    for lo, hi in ((0, 2), (2, 5)):
        part_state = [tuple(a[lo:hi] for a in s) for s in state]
        parts.append(model.replica().rows_loss_and_grads(x[lo:hi], y[lo:hi], part_state, 5,
                                                         softmax_grad=LOCAL))  # fmt: skip
    assert sum(r.loss for r in parts) == pytest.approx(loss, rel=1e-12)
    for k in ("l0.Wx", "l0.Wh", "l0.b", "l1.Wh", "softmax_w"):
        np.testing.assert_allclose(parts[0].grads[k] + parts[1].grads[k], grads[k],
                                   rtol=1e-11, atol=1e-15, err_msg=k)  # fmt: skip
    ids = np.concatenate([r.ids for r in parts])
    d = np.concatenate([r.d_embedded for r in parts])
    np.testing.assert_allclose(model.embedding_grad(ids, d), grads["embedding"], rtol=1e-11)


@pytest.mark.parametrize("name", NAMES)
def test_save_load_round_trip(tmp_path, name):
    model = make_model(name, np.float32, 0)
    words = [f"w{k}" for k in range(V)]
    path = save_model(tmp_path / "m.npz", model, words)
    loaded, vocab, _ = load_model(path)
    assert vocab == words and loaded.config() == model.config()
    assert loaded.cell == "rnn" and list(loaded.params) == list(model.params)
    for k in model.params:
        assert np.array_equal(loaded.params[k], model.params[k]), k
    x, y, state = random_batch(model, 0, 3, 4)
    assert loaded.loss(x, y, state)[0] == model.loss(x, y, state)[0]


def test_load_refuses_rnn_arrays_under_another_cell(tmp_path):
    from numlstm.io.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

    model = make_model("plain", np.float32, 0)
    path = save_model(tmp_path / "m.npz", model, [f"w{k}" for k in range(V)])
    arrays, meta = load_checkpoint(path)
    meta["model"]["cell"] = "lstm"  # an (H, H) Wh where an LSTM has (H, 4H)
    save_checkpoint(tmp_path / "bad.npz", arrays, meta)
    with pytest.raises(CheckpointError, match="l0.Wx"):
        load_model(tmp_path / "bad.npz")


@pytest.mark.parametrize("name", NAMES)
def test_evaluate_sequence_equals_word_by_word_loss(name):
    model = make_model(name, np.float64, 6)
    ids = np.random.default_rng(0).integers(0, V, 23)
    start = random_batch(model, 6, 1, 1)[2]
    total, state = numlstm.evaluate_sequence(model, ids, start, block=5)
    want, s = 0.0, start
    for t in range(len(ids) - 1):
        loss, s = model.loss(ids[None, t : t + 1], ids[None, t + 1 : t + 2], s)
        want += loss
    assert total == pytest.approx(want, rel=1e-12)
    for got, ref_state in zip(state, s, strict=True):
        np.testing.assert_allclose(got[0], ref_state[0], rtol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_generation_steps_equal_logits(name):
    model = make_model(name, np.float64, 8)
    ids = [3, 1, 4, 1, 5]
    logits, _ = model.logits(np.array([ids]), model.init_state(1))
    stepper, state = _Stepper(model), model.init_state(1)
    for t, tok in enumerate(ids):
        z, state = stepper.step(tok, state)
        np.testing.assert_allclose(z, logits[0, t], rtol=1e-12, atol=1e-14)
    a = generate(model, [1, 2], 6, seed=3)
    assert len(a) == 6 and all(0 <= k < V for k in a)
    assert a == generate(model, [1, 2], 6, seed=3)


# ============================================================================================
# Training: the library's train() and the command line
# ============================================================================================


def test_train_and_resume(tmp_path):
    """train(..., cell="rnn") with input and output dropout, then resumed for a second epoch:
    the checkpoint holds the RNN's parameters, and resuming as another cell is refused."""
    options = {"input_keep_prob": 0.9, "output_keep_prob": 0.8, "tie_embeddings": True,
               "learning_rate": 0.25}  # fmt: skip
    data = _tiny_data()
    train_module.train(_tiny_config(**options), data, tmp_path, cell="rnn", **QUIET)
    summary = train_module.train(_tiny_config(max_max_epoch=2, **options), data, tmp_path,
                                 cell="rnn", resume=True, **QUIET)  # fmt: skip
    assert len(summary["history"]) == 2 and np.isfinite(summary["test_perplexity"])
    model, _, _ = load_model(tmp_path / train_module.CHECKPOINT)
    assert model.cell == "rnn" and model.tie_embeddings
    assert {k for k in model.params if k.startswith("l1.")} == {"l1.Wx", "l1.Wh", "l1.b"}
    assert model.params["l1.Wh"].shape == (6, 6)
    with pytest.raises(ValueError, match="holds an RNN run, not a GRU"):
        train_module.train(_tiny_config(max_max_epoch=3, **options), data, tmp_path,
                           cell="gru", resume=True, **QUIET)  # fmt: skip
    with pytest.raises(ValueError, match="cell must be one of"):
        train_module.train(_tiny_config(), data, tmp_path / "x", cell="elman", **QUIET)


@needs_ptb
def test_cli_train_rnn(capsys, tmp_path):
    run = tmp_path / "run"
    train = ["train", "--config", "test", "--data-dir", str(PTB_DIR), "--progress", "none",
             "--limit-tokens", "3000", "--out", str(run), "--threads", "2", "--cell", "rnn",
             "--hidden_size", "8", "--input-keep-prob", "0.9"]  # fmt: skip
    assert cli.main(train) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    # the tutorial's 1.0 diverges for the RNN: --cell rnn defaults to 0.25 (docs/rnn.md)
    assert "learning_rate=0.25" in out and "RNN: learning_rate 0.25" in out
    valid = float(out.split("Valid Perplexity: ")[-1].split()[0])
    assert np.isfinite(valid) and valid < 10000
    model, _, _ = load_model(run / "checkpoint.npz")
    assert model.cell == "rnn" and model.params["l0.Wh"].shape == (8, 8)
    assert cli.main(["evaluate", "--checkpoint", str(run / "checkpoint.npz"), "--split",
                     "valid", "--batch-size", "20", "--num-steps", "2"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert float(out.split("valid perplexity: ")[1].split()[0]) == pytest.approx(valid, rel=1e-4)
    assert cli.main(["generate", "--checkpoint", str(run / "checkpoint.npz"), "--prime", "the",
                     "--words", "5", "--seed", "1"]) == 0  # fmt: skip
    assert capsys.readouterr().out.strip()


def test_cli_refuses_state_dropout_and_lstmp_options_for_rnn(capsys, tmp_path):
    """Refused before any data is read (the data folder does not exist)."""
    base = ["train", "--config", "test", "--data-dir", str(tmp_path / "nowhere"), "--cell",
            "rnn", "--out", str(tmp_path / "run")]  # fmt: skip
    assert cli.main([*base, "--state-keep-prob", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "state_keep_prob" in err and "cell='rnn'" in err, err
    assert cli.main([*base, "--peepholes"]) == 2
    err = capsys.readouterr().err
    assert "peepholes" in err and "--cell lstm" in err, err
    assert not (tmp_path / "run").exists()


def test_divergence_advice_names_the_cells_learning_rate():
    """A diverged run's message suggests the rate the cell trains with (the GRU's unchanged)."""
    rnn = train_module._advice(Config(learning_rate=1.0), "rnn")
    assert "--learning_rate 0.25 " in rnn and "the RNN trains with 0.25, docs/rnn.md" in rnn
    assert "--learning_rate 0.125 " in train_module._advice(Config(learning_rate=0.25), "rnn")
    gru = train_module._advice(Config(learning_rate=1.0), "gru")
    assert "--learning_rate 0.5 " in gru and "the GRU trains with 0.5, docs/results.md" in gru
    assert "--learning_rate 0.35 " in train_module._advice(Config(learning_rate=0.7), "gru")
    lstm = train_module._advice(Config(learning_rate=1.0), "lstm")
    assert "--learning_rate 0.5 " in lstm and "trains with" not in lstm


_DISTRIBUTED_SCRIPT = """
import numpy as np
from numlstm import LanguageModel
from numlstm.fast import distributed
from mpi4py import MPI

model = LanguageModel(50, 6, 2, cell="rnn", dtype=np.float64, seed=3)
rng = np.random.default_rng(5)
x, y = rng.integers(0, 50, (6, 4)), rng.integers(0, 50, (6, 4))
lengths = np.array([0, 4, 2, 3, 4, 1])
want = model.loss_and_grads(x, y, model.init_state(6), 0.5, np.random.default_rng(6),
                            lengths=lengths)
want_grads = {k: (g.to_dense() if hasattr(g, "to_dense") else g).copy()
              for k, g in want[1].items()}
dist = distributed.start(MPI.COMM_SELF)
with distributed.DistributedStep(model, dist, 2, embedding_mode="{mode}") as step:
    loss, grads, state = step.loss_and_grads(x, y, model.init_state(6), 0.5,
                                             np.random.default_rng(6), lengths=lengths)
    assert abs(loss - want[0]) <= 1e-12 * abs(want[0]), (loss, want[0])
    for k, g in grads.items():
        g = g.to_dense() if hasattr(g, "to_dense") else g
        np.testing.assert_allclose(g, want_grads[k], rtol=1e-11, atol=1e-15, err_msg=k)
    assert [len(s) for s in state] == [1, 1]
    np.testing.assert_allclose(state[1][0], want[2][1][0], rtol=1e-12)
print("distributed rnn ok")
"""


@pytest.mark.parametrize("mode", ["dense", "gather"])
def test_distributed_step_on_one_rank_equals_the_model(tmp_path, mode):
    """DistributedStep (fast/distributed.py) with an RNN model, on MPI's one-process
    communicator in a child process (MPI is never initialised in the test process itself):
    the same loss, gradients and (h,) state as the model's own step."""
    import importlib.util
    import subprocess
    import sys
    from pathlib import Path

    if importlib.util.find_spec("mpi4py") is None:
        pytest.skip("mpi4py not installed")
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", _DISTRIBUTED_SCRIPT.replace("{mode}", mode)],
                          cwd=repo, capture_output=True, text=True, timeout=300)  # fmt: skip
    if proc.returncode != 0 and "MPI" in proc.stderr and "Traceback" not in proc.stderr:
        pytest.skip(f"MPI cannot start here: {proc.stderr.strip()[:200]}")
    assert proc.returncode == 0 and "distributed rnn ok" in proc.stdout, proc.stderr
