"""The LanguageModel's LSTMP options (peepholes, cell_clip, proj_size, proj_clip), embedding
width E and tied embeddings (T1, dT1): gradients against central differences, the fast model
against numlstm.reference, the defaults unchanged, bad arguments, DataParallel, saving,
evaluation, generation and a tiny command-line run."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import numlstm
from numlstm import cli
from numlstm import model as model_module
from numlstm import reference as ref
from numlstm.config import Config
from numlstm.generate import _Stepper, generate
from numlstm.io.saving import load_model, save_model
from numlstm.layers import LOCAL

V, H, L = 11, 4, 2
# Named option sets; the clip bounds are small enough that some entries are clipped (checked
# by the gradient check, which also keeps every clipped value away from the kink).
OPTIONS = {
    "peepholes": {"peepholes": True},
    "cell_clip": {"cell_clip": 0.45},
    "proj": {"proj_size": 3},
    "proj_clip": {"proj_size": 3, "proj_clip": 0.35},
    "tied": {"tie_embeddings": True},
    "tied_proj": {"proj_size": 3, "embedding_size": 3, "tie_embeddings": True},
    "embedding_size": {"embedding_size": 5},
    "all": {"peepholes": True, "cell_clip": 0.45, "proj_size": 3, "proj_clip": 0.35,
            "tie_embeddings": True, "embedding_size": 3},
    # tying and the embedding width are not LSTMP options: the GRU takes them too
    "gru_tied": {"cell": "gru", "tie_embeddings": True},
    "gru_embedding_size": {"cell": "gru", "embedding_size": 5},
}  # fmt: skip
NAMES = list(OPTIONS)
LSTM_NAMES = [n for n in NAMES if not n.startswith("gru")]
TOL = {np.float64: 1e-11, np.float32: 2e-5}  # as tests/test_reference.py (its docstring)


def make_model(options: dict, dtype=np.float64, seed: int = 0, **kw) -> numlstm.LanguageModel:
    """A small model with every parameter (biases too) random and O(1)."""
    model = numlstm.LanguageModel(V, H, kw.pop("L", L), forget_bias=0.7, dtype=dtype, seed=seed,
                                  **options, **kw)  # fmt: skip
    rng = np.random.default_rng(100 + seed)
    for p in model.params.values():
        p[...] = 0.5 * rng.standard_normal(p.shape)
    return model


def random_batch(model, seed: int, B: int, T: int):
    rng = np.random.default_rng(200 + seed)
    x, y = rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T))
    state = [tuple((0.5 * rng.standard_normal(a.shape)).astype(model.dtype) for a in layer)
             for layer in model.init_state(B)]  # fmt: skip
    return x, y, state


def as_float64(model: numlstm.LanguageModel) -> numlstm.LanguageModel:
    m = numlstm.LanguageModel(**{**model.config(), "dtype": np.float64})
    for k, p in model.params.items():
        m.params[k][...] = p
    return m


def dense(g) -> np.ndarray:
    return g.to_dense() if isinstance(g, numlstm.IndexedRows) else np.array(g)


def assert_close(got, want, dtype, what: str) -> None:
    """max |got - want| / max |want| <= TOL[dtype]."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    scale = np.abs(want).max()
    assert scale > 0, f"{what}: the reference is all zeros, the comparison would be vacuous"
    err = float(np.abs(got - want).max() / scale)
    assert err <= TOL[dtype], f"{what}: relative difference {err:.3e} > {TOL[dtype]}"


def clip_margins(model, x, state, masks, lengths) -> tuple[int, float]:
    """(number of clipped entries, smallest distance of a pre-clip value to its bound) over
    the reference's forward pass: the gradient check is only valid away from the kinks."""
    _, _, caches = ref.model_forward(model, x, state, 1.0, masks, lengths)
    clipped, margin = 0, np.inf
    for layer in caches[1:]:
        for step in layer["rnn"]:
            for key, bound in (("cu", model.cell_clip), ("hu", model.proj_clip)):
                if bound is not None:
                    v = np.abs(step[key])
                    clipped += int((v > bound).sum())
                    margin = min(margin, float(np.abs(v - bound).min()))
    return clipped, margin


# ============================================================================================
# Gradients of the whole model against central differences (float64)
# ============================================================================================


@pytest.mark.parametrize("T,B,with_lengths", [(1, 1, False), (3, 5, False), (4, 3, True)],
                         ids=["T1B1", "T3B5", "T4B3-lengths"])  # fmt: skip
@pytest.mark.parametrize("name", NAMES)
def test_model_gradcheck(seed, check_grads, name, T, B, with_lengths):
    options = OPTIONS[name]
    model = make_model(options, np.float64, seed)
    x, y, state = random_batch(model, seed, B, T)
    keep_prob = 0.7
    masks = model.draw_masks(T, B, keep_prob, np.random.default_rng(seed))
    lengths = np.array([4, 0, 2])[:B] if with_lengths else None
    if model.cell_clip is not None or model.proj_clip is not None:
        # The first of a few scalings of the bounds that keeps every value > 1e-3 from a
        # bound (a central difference straddling the kink measures neither 0 nor 1).
        for scale in (1.0, 0.93, 1.07, 0.86, 1.14, 0.8, 1.2):
            scaled = {k: v * scale if k.endswith("_clip") else v for k, v in options.items()}
            model = make_model(scaled, np.float64, seed)
            clipped, margin = clip_margins(model, x, state, masks, lengths)
            if margin > 1e-3:
                break
        assert margin > 1e-3, f"every bound tried has a value within {margin:.1e} of it"
        if T * B > 1:
            assert clipped > 0, "no entry is clipped: the test would not cover dP5/dP8"
    loss, grads, _ = model.loss_and_grads(x, y, state, keep_prob, masks=masks, lengths=lengths)
    grads = {k: dense(g).copy() for k, g in grads.items()}
    assert set(grads) == set(model.params)

    def f():
        return model.loss(x, y, state, keep_prob, masks=masks, lengths=lengths)[0]

    assert loss == pytest.approx(f(), rel=1e-13)
    check_grads(f"model {name}", f, model.params, grads)


def test_tied_gradient_is_both_terms():
    """dT1: the tied embedding's gradient is exactly the lookup's scatter plus the softmax's
    dWᵀ: the untied model with softmax_w = embedding.T gives the two terms separately."""
    tied = make_model(OPTIONS["tied_proj"], np.float64, 3)
    untied = make_model({"proj_size": 3, "embedding_size": 3}, np.float64, 3)
    for k in untied.params:
        if k != "softmax_w":
            untied.params[k][...] = tied.params[k]
    untied.params["softmax_w"][...] = tied.params["embedding"].T
    x, y, state = random_batch(tied, 3, 4, 3)
    lt, gt, _ = tied.loss_and_grads(x, y, state)
    lu, gu, _ = untied.loss_and_grads(x, y, state)
    assert lt == pytest.approx(lu, rel=1e-14)
    np.testing.assert_allclose(gt["embedding"], gu["embedding"] + gu["softmax_w"].T, rtol=1e-12)
    assert "softmax_w" not in tied.params and "softmax_w" not in gt


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
    model = make_model(OPTIONS[name], dtype, seed)
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
            for a, b in zip(s, s_r, strict=True):
                assert_close(a, b, dtype, f"state of layer {layer}")
    loss_eval, _ = model.loss(x, y, state, lengths=lengths)
    assert_close(loss_eval, ref.loss(m64, x, y, state64, lengths=lengths)[0], dtype, "loss()")


def test_reference_model_gradcheck_with_every_option(seed, check_grads):
    """The reference's own tied/LSTMP model against central differences."""
    model = make_model(OPTIONS["all"], np.float64, seed)
    x, y, state = random_batch(model, seed, 3, 3)
    masks = ref.draw_masks(model, 3, 3, 0.7, np.random.default_rng(seed))
    _, grads, _ = ref.loss_and_grads(model, x, y, state, 0.7, masks=masks)

    def f():
        return ref.loss(model, x, y, state, 0.7, masks=masks)[0]

    check_grads("reference model (all options)", f, model.params, grads)


# ============================================================================================
# The defaults are today's model
# ============================================================================================


def old_init(V: int, H: int, L: int, seed: int, init_scale: float = 0.1) -> dict:
    """The parameters as LanguageModel drew them before the options existed (LSTM)."""
    rng = np.random.default_rng(seed)

    def uniform(*shape):
        return rng.uniform(-init_scale, init_scale, shape).astype(np.float32)

    p = {"embedding": uniform(V, H)}
    for layer in range(L):
        p[f"l{layer}.Wx"] = uniform(H, 4 * H)
        p[f"l{layer}.Wh"] = uniform(H, 4 * H)
        p[f"l{layer}.b"] = np.zeros(4 * H, np.float32)
    p["softmax_w"] = uniform(H, V)
    p["softmax_b"] = uniform(V)
    return p


def test_defaults_reproduce_the_model_bit_for_bit(monkeypatch):
    old = old_init(V, H, L, seed=5)
    plain = numlstm.LanguageModel(V, H, L, seed=5)
    explicit = numlstm.LanguageModel(V, H, L, seed=5, peepholes=False, cell_clip=None,
                                     proj_size=None, proj_clip=None, tie_embeddings=False,
                                     embedding_size=H)  # fmt: skip
    for m in (plain, explicit):
        assert list(m.params) == list(old)
        for k in old:
            assert m.params[k].dtype == old[k].dtype and np.array_equal(m.params[k], old[k]), k
    # the default path never enters the LSTMP layer
    monkeypatch.setattr(
        model_module,
        "lstmp_forward_unchecked",
        lambda *a, **k: pytest.fail("the default model ran an LSTMP layer"),
    )
    x, y, state = random_batch(plain, 1, 6, 4)
    a = plain.loss_and_grads(x, y, state, 0.5, np.random.default_rng(2))
    a = (a[0], {k: dense(g).copy() for k, g in a[1].items()})
    b = explicit.loss_and_grads(x, y, state, 0.5, np.random.default_rng(2))
    assert a[0] == b[0]
    for k in a[1]:
        assert np.array_equal(a[1][k], dense(b[1][k])), k
    assert plain.num_parameters() == Config(vocab_size=V, hidden_size=H, num_layers=L
                                            ).num_parameters()  # fmt: skip
    c = plain.config()
    assert c["peepholes"] is False and c["tie_embeddings"] is False
    assert c["cell_clip"] is c["proj_size"] is c["proj_clip"] is c["embedding_size"] is None


@pytest.mark.parametrize("name", LSTM_NAMES)
def test_shapes_and_parameter_count(name):
    o = OPTIONS[name]
    m = numlstm.LanguageModel(V, H, L, **o)
    P, E = o.get("proj_size", H), o.get("embedding_size", H)
    assert m.params["embedding"].shape == (V, E)
    assert m.params["l0.Wx"].shape == (E, 4 * H) and m.params["l1.Wx"].shape == (P, 4 * H)
    assert m.params["l1.Wh"].shape == (P, 4 * H)
    assert ("softmax_w" in m.params) != bool(o.get("tie_embeddings"))
    if "softmax_w" in m.params:
        assert m.params["softmax_w"].shape == (P, V)
    assert ("l0.peepholes" in m.params) == bool(o.get("peepholes"))
    assert ("l1.W_proj" in m.params) == ("proj_size" in o)
    state = m.init_state(2)
    assert [a.shape for a in state[1]] == [(2, P), (2, H)]
    masks = m.draw_masks(3, 2, 0.5, np.random.default_rng(0))
    assert [mk.shape for mk in masks] == [(3, 2, E), (3, 2, P), (3, 2, P)]
    config = Config(vocab_size=V, hidden_size=H, num_layers=L, num_proj=o.get("proj_size"),
                    **{k: v for k, v in o.items() if k != "proj_size"})  # fmt: skip
    assert config.validate().num_parameters() == m.num_parameters()
    assert numlstm.LanguageModel(**m.config()).config() == m.config()
    logits, _ = m.logits(np.zeros((2, 3), np.int64), state)
    assert logits.shape == (2, 3, V) and np.isfinite(logits).all()


# ============================================================================================
# Bad arguments: a clear error before any kernel runs
# ============================================================================================

BAD = [
    ({"cell": "gru", "peepholes": True}, ValueError, "peepholes"),
    ({"cell": "gru", "proj_size": 3}, ValueError, "proj_size"),
    ({"cell": "gru", "cell_clip": 1.0}, ValueError, "cell='lstm'"),
    ({"tie_embeddings": True, "proj_size": 3}, ValueError, "3 != 4"),
    ({"tie_embeddings": True, "embedding_size": 5}, ValueError, "4 != 5"),
    ({"cell_clip": -1.0}, ValueError, "cell_clip"),
    ({"cell_clip": 0}, ValueError, "cell_clip"),
    ({"cell_clip": float("nan")}, ValueError, "cell_clip"),
    ({"proj_size": 3, "proj_clip": float("inf")}, ValueError, "proj_clip"),
    ({"proj_clip": 0.5}, ValueError, "needs proj_size"),
    ({"embedding_size": 0}, ValueError, "embedding_size"),
    ({"embedding_size": 2.5}, ValueError, "embedding_size"),
    ({"proj_size": True}, ValueError, "proj_size"),
    ({"proj_size": -2}, ValueError, "proj_size"),
    ({"peepholes": "yes"}, TypeError, "peepholes"),
    ({"tie_embeddings": 1}, TypeError, "tie_embeddings"),
    ({"cell_clip": "1"}, TypeError, "cell_clip"),
]


@pytest.mark.parametrize("kwargs,error,fragment", BAD, ids=[str(b[0]) for b in BAD])
def test_bad_options_are_refused(no_kernels, kwargs, error, fragment):
    with pytest.raises(error, match=None) as info:
        numlstm.LanguageModel(V, H, L, **kwargs)
    assert fragment in str(info.value)


def test_bad_inputs_of_an_lstmp_model(no_kernels):
    m = make_model(OPTIONS["all"])
    x, y, state = random_batch(m, 0, 2, 3)
    wrong = [(np.zeros((2, H)), s[1]) for s in state]  # h must be (B, P) = (2, 3)
    with pytest.raises(ValueError, match=r"\(B, P\) = \(2, 3\)"):
        m.loss_and_grads(x, y, wrong)
    masks = [np.ones((3, 2, H)) for _ in range(L + 1)]  # the widths are E = 3 and P = 3
    with pytest.raises(
        ValueError, match=r"masks\[0\] must be an array of shape \(T, B, W\) = \(3, 2, 3\)"
    ):
        m.loss_and_grads(x, y, state, masks=masks)


def test_embedding_grad_needs_the_softmax_term_exactly_when_tied():
    m = make_model(OPTIONS["all"])
    x, y, state = random_batch(m, 0, 2, 3)
    r = m.rows_loss_and_grads(x, y, state, 2)
    with pytest.raises(ValueError, match="softmax_w_grad is needed"):
        m.embedding_grad(r.ids, r.d_embedded)
    plain = make_model({})
    r = plain.rows_loss_and_grads(*random_batch(plain, 0, 2, 3), 2)
    with pytest.raises(ValueError, match="only for a model with tie_embeddings"):
        plain.embedding_grad(r.ids, r.d_embedded, softmax_w_grad=r.grads["softmax_w"])


def test_config_validate_names_the_field():
    cases = [
        ({"cell_clip": -1.0}, "cell_clip must be > 0"),
        ({"cell_clip": float("nan")}, "cell_clip must be a finite number"),
        ({"proj_clip": 1.0}, "proj_clip clips the projection: it needs num_proj"),
        ({"num_proj": 0}, "num_proj must be a positive integer"),
        ({"embedding_size": 1.5}, "embedding_size must be a positive integer"),
        ({"peepholes": 1}, "peepholes must be True or False"),
        ({"tie_embeddings": True, "num_proj": 50}, "50 != 200"),
    ]
    for changes, fragment in cases:
        with pytest.raises(ValueError) as info:
            Config(**changes).validate()
        assert fragment in str(info.value), (changes, info.value)


# ============================================================================================
# Row blocks: DataParallel and rows_loss_and_grads (the tied sums when rows are split)
# ============================================================================================


@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("name", ["tied_proj", "all"])
def test_data_parallel_equals_one_thread(name, with_lengths):
    B, T = 10, 3
    model = make_model(OPTIONS[name], np.float64, 2)
    x, y, state = random_batch(model, 2, B, T)
    lengths = np.array([3, 1, 0, 2, 3, 2, 1, 3, 3, 2]) if with_lengths else None
    loss, grads, new_state = model.loss_and_grads(x, y, state, 0.6, np.random.default_rng(7),
                                                  lengths=lengths)  # fmt: skip
    grads = {k: dense(g).copy() for k, g in grads.items()}
    with numlstm.DataParallel(model, 2) as dp:
        loss2, grads2, state2 = dp.loss_and_grads(x, y, state, 0.6, np.random.default_rng(7),
                                                  lengths=lengths)  # fmt: skip
        assert isinstance(grads2["embedding"], numlstm.IndexedRows)
        assert loss2 == pytest.approx(loss, rel=1e-12)
        assert set(grads2) == set(grads)
        for k in grads:
            np.testing.assert_allclose(dense(grads2[k]), grads[k], rtol=1e-10, atol=1e-13,
                                       err_msg=k)  # fmt: skip
        for s, s2 in zip(new_state, state2, strict=True):
            for a, b in zip(s, s2, strict=True):
                np.testing.assert_allclose(a, b, rtol=1e-12)
        eval2, _ = dp.loss(x, y, state, lengths=lengths)
    assert eval2 == pytest.approx(model.loss(x, y, state, lengths=lengths)[0], rel=1e-12)


def test_rows_in_parts_sum_to_the_batch_when_tied():
    """Two parts run with the default (local) softmax gradient: their softmax_w terms are
    summed by the caller and handed to embedding_grad with all their rows (dT1)."""
    model = make_model(OPTIONS["all"], np.float64, 1)
    x, y, state = random_batch(model, 1, 5, 3)
    loss, grads, _ = model.loss_and_grads(x, y, state)
    grads = {k: dense(g).copy() for k, g in grads.items()}
    parts = []
    for lo, hi in ((0, 2), (2, 5)):
        part_state = [tuple(a[lo:hi] for a in s) for s in state]
        r = model.replica().rows_loss_and_grads(x[lo:hi], y[lo:hi], part_state, 5,
                                                softmax_grad=LOCAL)  # fmt: skip
        parts.append(r)
    assert sum(r.loss for r in parts) == pytest.approx(loss, rel=1e-12)
    dW = parts[0].grads["softmax_w"] + parts[1].grads["softmax_w"]
    ids = np.concatenate([r.ids for r in parts])
    d = np.concatenate([r.d_embedded for r in parts])
    emb = model.embedding_grad(ids, d, softmax_w_grad=dW)
    np.testing.assert_allclose(emb, grads["embedding"], rtol=1e-11, atol=1e-14)
    k = "l1.W_proj"
    np.testing.assert_allclose(parts[0].grads[k] + parts[1].grads[k], grads[k], rtol=1e-11)


# ============================================================================================
# Saving, batch-1 evaluation and generation
# ============================================================================================


@pytest.mark.parametrize("name", NAMES)
def test_save_load_round_trip(tmp_path, name):
    model = make_model(OPTIONS[name], np.float32, 0)
    words = [f"w{k}" for k in range(V)]
    path = save_model(tmp_path / "m.npz", model, words)
    loaded, vocab, _ = load_model(path)
    assert vocab == words and loaded.config() == model.config()
    assert list(loaded.params) == list(model.params)
    for k in model.params:
        assert np.array_equal(loaded.params[k], model.params[k]), k
    x, y, state = random_batch(model, 0, 3, 4)
    assert loaded.loss(x, y, state)[0] == model.loss(x, y, state)[0]


def test_load_refuses_a_config_that_does_not_match_the_arrays(tmp_path):
    from numlstm.io.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

    model = make_model(OPTIONS["all"], np.float32, 0)
    path = save_model(tmp_path / "m.npz", model, [f"w{k}" for k in range(V)])
    arrays, meta = load_checkpoint(path)
    meta["model"]["peepholes"] = False  # the file holds peephole arrays the config denies
    save_checkpoint(tmp_path / "bad.npz", arrays, meta)
    with pytest.raises(CheckpointError, match="unexpected"):
        load_model(tmp_path / "bad.npz")
    meta["model"]["peepholes"], meta["model"]["proj_size"] = True, "3"
    save_checkpoint(tmp_path / "bad2.npz", arrays, meta)
    with pytest.raises(CheckpointError, match="proj_size must be a positive integer"):
        load_model(tmp_path / "bad2.npz")


@pytest.mark.parametrize("name", ["tied", "all", "embedding_size", "gru_tied",
                                  "gru_embedding_size"])  # fmt: skip
def test_evaluate_sequence_equals_word_by_word_loss(name):
    model = make_model(OPTIONS[name], np.float64, 6)
    ids = np.random.default_rng(0).integers(0, V, 23)
    total, state = numlstm.evaluate_sequence(model, ids, block=5)
    want, s = 0.0, model.init_state(1)
    for t in range(len(ids) - 1):
        loss, s = model.loss(ids[None, t : t + 1], ids[None, t + 1 : t + 2], s)
        want += loss
    assert total == pytest.approx(want, rel=1e-12)
    for a, b in zip(state[-1], s[-1], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12)


@pytest.mark.parametrize("name", ["all", "tied", "proj", "gru_tied", "gru_embedding_size"])
def test_generation_steps_equal_logits(name):
    model = make_model(OPTIONS[name], np.float64, 8)
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
# The command line: a tiny run with every option, its checkpoint, resume and evaluate
# ============================================================================================

REPO = Path(__file__).resolve().parents[1]
PTB_DIR = Path(os.environ.get("NUMLSTM_PTB_DIR", REPO.parent / "shared" / "data" / "ptb"))
needs_ptb = pytest.mark.skipif(
    not (PTB_DIR / "ptb.train.txt").exists(), reason=f"real PTB files not found in {PTB_DIR}"
)
ALL_FLAGS = ["--hidden_size", "8", "--peepholes", "--cell-clip", "3", "--num-proj", "4",
             "--proj-clip", "2", "--tie-embeddings", "--embedding-size", "4"]  # fmt: skip


@needs_ptb
def test_cli_train_with_every_option(capsys, tmp_path):
    run = tmp_path / "run"
    train = ["train", "--config", "test", "--data-dir", str(PTB_DIR), "--progress", "none",
             "--limit-tokens", "3000", "--out", str(run), "--threads", "2"]  # fmt: skip
    assert cli.main([*train, *ALL_FLAGS]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    valid = float(out.split("Valid Perplexity: ")[-1].split()[0])
    assert np.isfinite(valid) and valid < 10000
    model, _, meta = load_model(run / "checkpoint.npz")
    c = model.config()
    assert (
        c["peepholes"],
        c["cell_clip"],
        c["proj_size"],
        c["proj_clip"],
        c["tie_embeddings"],
        c["embedding_size"],
    ) == (True, 3.0, 4, 2.0, True, 4)
    saved = meta["training"]["config"]
    assert saved["num_proj"] == 4 and saved["tie_embeddings"] is True
    # resuming with an option dropped is refused, naming it
    assert cli.main([*train, "--resume", *(f for f in ALL_FLAGS if f != "--peepholes")]) == 2
    err = capsys.readouterr().err
    assert "different config" in err and "peepholes: True -> False" in err, err
    # evaluate rebuilds the model from the checkpoint
    assert cli.main(["evaluate", "--checkpoint", str(run / "checkpoint.npz"), "--split",
                     "valid", "--batch-size", "20", "--num-steps", "2"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert float(out.split("valid perplexity: ")[1].split()[0]) == pytest.approx(valid, rel=1e-4)
    assert cli.main(["generate", "--checkpoint", str(run / "checkpoint.npz"), "--prime", "the",
                     "--words", "5", "--seed", "1"]) == 0  # fmt: skip
    assert capsys.readouterr().out.strip()


# ============================================================================================
# Resuming: runs with the options, and checkpoints written before the options existed
# ============================================================================================


def _tiny_data():
    from numlstm.io import ptb

    ids = np.arange(600, dtype=np.int32) % 50  # each word predicts the next: learnable
    words = [f"w{k}" for k in range(50)]
    return ptb.PTBData(ids, ids[:200], ids[:100], {w: k for k, w in enumerate(words)}, words)


def _tiny_config(**changes) -> Config:
    base = Config(num_layers=2, hidden_size=6, num_steps=5, max_epoch=1, max_max_epoch=1,
                  batch_size=4, vocab_size=50, max_grad_norm=5.0, learning_rate=0.5)  # fmt: skip
    return base.replace(**changes)


QUIET = {"progress": "none", "log": lambda s: None, "threads": 2, "checkpoint_every": None}


def test_resume_keeps_the_options_and_refuses_others(tmp_path):
    from numlstm import train

    options = {"peepholes": True, "cell_clip": 2.0, "num_proj": 4, "proj_clip": 1.5,
               "tie_embeddings": True, "embedding_size": 4}  # fmt: skip
    data = _tiny_data()
    train.train(_tiny_config(**options), data, tmp_path, **QUIET)
    summary = train.train(_tiny_config(max_max_epoch=2, **options), data, tmp_path,
                          resume=True, **QUIET)  # fmt: skip
    assert len(summary["history"]) == 2 and np.isfinite(summary["test_perplexity"])
    model, _, _ = load_model(tmp_path / train.CHECKPOINT)
    assert model.proj_size == 4 and model.tie_embeddings and "softmax_w" not in model.params
    with pytest.raises(ValueError, match="different config.*tie_embeddings: True -> False"):
        changed = {**options, "tie_embeddings": False}
        train.train(_tiny_config(max_max_epoch=3, **changed), data, tmp_path, resume=True,
                    **QUIET)  # fmt: skip
    with pytest.raises(ValueError, match="num_proj: the LSTMP options need cell 'lstm'"):
        train.train(_tiny_config(num_proj=4), data, tmp_path / "gru", cell="gru", **QUIET)
    assert not (tmp_path / "gru").exists()  # refused before the run folder was made


def test_a_checkpoint_from_before_the_options_resumes(tmp_path):
    """A checkpoint whose model and training configs lack the new keys (as every checkpoint
    written before them) loads, and resumes as a run with every option off."""
    from numlstm import train
    from numlstm.config import MODEL_OPTIONS
    from numlstm.io.checkpoint import load_checkpoint, save_checkpoint

    data = _tiny_data()
    train.train(_tiny_config(), data, tmp_path, **QUIET)
    path = tmp_path / train.CHECKPOINT
    arrays, meta = load_checkpoint(path)
    new_model_keys = ("peepholes", "cell_clip", "proj_size", "proj_clip", "tie_embeddings",
                      "embedding_size")  # fmt: skip
    for k in new_model_keys:
        del meta["model"][k]
    for k in MODEL_OPTIONS:
        del meta["training"]["config"][k]
    save_checkpoint(path, arrays, meta)
    model, _, _ = load_model(path)
    assert not model._lstmp and not model.tie_embeddings and model.embedding_size == 6
    summary = train.train(_tiny_config(max_max_epoch=2), data, tmp_path, resume=True, **QUIET)
    assert len(summary["history"]) == 2
