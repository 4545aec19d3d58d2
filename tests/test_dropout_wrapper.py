"""Dropout in TensorFlow's DropoutWrapper sense with variational masks (numlstm.Dropout,
docs/dropout.md D2-D5): float64 gradient checks with fixed masks (the layer's state mask, the
model with each site alone and all together, each variational mode, lengths), the fast paths
against numlstm.reference in float32 and float64, the masks' structure and keep rate, the
float keep_prob unchanged, DataParallel against one thread, bad input, a CLI run."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest

from numlstm import Dropout, LanguageModel, cli, dropout_mask, lstmp_backward, lstmp_forward
from numlstm import reference as ref
from numlstm.config import Config, MediumConfig, SmallConfig
from numlstm.dropout import slice_rows
from numlstm.fast.parallel import DataParallel
from numlstm.train import train

V, H, T, B = 7, 4, 3, 2
# Parameter scale of the model checks: N(0, 0.35^2) keeps the gates off saturation. With 0.5
# (test_model.py's) one GRU case, its analytic gradient equal to reference.py's to 2e-16, had
# central-difference errors 2.2e-5, 2.0e-6, 2.9e-7 at eps = 1e-4, 3e-5, 1e-5: truncation
# (a mask entry 1/p scales a layer's input up), while at 1e-5 round-off reaches 1e-6 elsewhere.
PARAM_SCALE = 0.35
VARIATIONAL = [None, "sequence", "batch"]
VAR_IDS = ["fresh", "sequence", "batch"]
# Each site alone, then all together (keep probabilities low enough that masks have zeros).
SITES = {
    "embedding": Dropout(embedding_keep_prob=0.6),
    "input": Dropout(input_keep_prob=0.6),
    "output": Dropout(output_keep_prob=0.6),
    "state": Dropout(state_keep_prob=0.6),
    "all": Dropout(embedding_keep_prob=0.7, input_keep_prob=0.6, output_keep_prob=0.8,
                   state_keep_prob=0.6),
}  # fmt: skip


def with_mode(dropout: Dropout, variational: str | None) -> Dropout:
    return Dropout(**{**dropout.to_dict(), "variational": variational})


def random_model(cell, num_layers, seed, dtype=np.float64, scale=PARAM_SCALE):
    """A model whose parameters (biases included) are generic random values."""
    model = LanguageModel(V, H, num_layers, cell=cell, forget_bias=0.6, dtype=dtype, seed=seed)
    rng = np.random.default_rng(100 + seed)
    for p in model.params.values():
        p[...] = scale * rng.standard_normal(p.shape)
    return model


def random_batch(seed, batch=B, steps=T):
    rng = np.random.default_rng(200 + seed)
    return rng.integers(0, V, (batch, steps)), rng.integers(0, V, (batch, steps))


def random_state(model, seed, batch=B):
    rng = np.random.default_rng(300 + seed)
    return [tuple((0.5 * rng.standard_normal(a.shape)).astype(model.dtype) for a in layer)
            for layer in model.init_state(batch)]  # fmt: skip


def as_float64(model):
    m = LanguageModel(V, model.hidden_size, model.num_layers, cell=model.cell,
                      forget_bias=model.forget_bias, dtype=np.float64)  # fmt: skip
    for k, p in model.params.items():
        m.params[k][...] = p
    return m


def to64(masks):
    if isinstance(masks, dict):
        return {k: None if m is None else m.astype(np.float64) for k, m in masks.items()}
    return [None if m is None else m.astype(np.float64) for m in masks]


def dense(g):
    return g.to_dense() if hasattr(g, "to_dense") else np.asarray(g)


def assert_close(a, b, tol, what):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(float(np.abs(b).max(initial=0.0)), 1.0)
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol * scale, err_msg=what)


# ------------------------------------------------------------------------ the layer (D4)


def scaled_mask(shape, keep, rng):
    """A scaled mask with at least one dropped and one kept entry (never vacuous)."""
    m = dropout_mask(shape, keep, rng, np.float64)
    m.reshape(-1)[0] = 0.0
    m.reshape(-1)[-1] = 1.0 / keep
    return m


def layer_inputs(seed, T_, B_, D, H_):
    rng = np.random.default_rng(seed)
    p = {"x": rng.standard_normal((T_, B_, D)), "h0": rng.standard_normal((B_, H_)),
         "c0": rng.standard_normal((B_, H_)), "Wx": 0.7 * rng.standard_normal((D, 4 * H_)),
         "Wh": 0.7 * rng.standard_normal((H_, 4 * H_)),
         "b": 0.5 * rng.standard_normal(4 * H_)}  # fmt: skip
    up = (rng.standard_normal((T_, B_, H_)), rng.standard_normal((B_, H_)),
          rng.standard_normal((B_, H_)))  # fmt: skip
    return p, up, rng


@pytest.mark.parametrize("lengths_on", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("mode", VARIATIONAL, ids=VAR_IDS)
@pytest.mark.parametrize("T_,B_,D,H_", [(3, 2, 4, 5), (1, 1, 3, 2), (4, 3, 2, 3)])
def test_lstmp_state_mask_gradcheck(seed, T_, B_, D, H_, mode, lengths_on, check_grads):
    p, (dhs, dhT, dcT), rng = layer_inputs(seed, T_, B_, D, H_)
    shape = {None: (T_, B_, H_), "sequence": (B_, H_), "batch": (1, H_)}[mode]  # D5
    mask = scaled_mask(shape, 0.6, rng)
    lengths = rng.integers(0, T_ + 1, B_) if lengths_on else None
    kw = {"forget_bias": 0.4, "lengths": lengths, "state_mask": mask}

    def f():
        hs, hT, cT, _ = lstmp_forward(**p, **kw)
        return float((hs * dhs).sum() + (hT * dhT).sum() + (cT * dcT).sum())

    hs, hT, cT, cache = lstmp_forward(**p, **kw)
    dx, dh0, dc0, dWx, dWh, db, _, _ = lstmp_backward(dhs, dhT, dcT, cache)
    grads = {"x": dx, "h0": dh0, "c0": dc0, "Wx": dWx, "Wh": dWh, "b": db}
    check_grads("lstmp state dropout (D4)", f, p, grads)
    # The plain reference with the same mask: the same numbers.
    hs_r, hT_r, cT_r, caches = ref.lstmp_forward(**p, **kw)
    want = ref.lstmp_backward(dhs, dhT, dcT, caches)
    for a, b_, what in zip((hs, hT, cT, dx, dh0, dc0, dWx, dWh, db),
                           (hs_r, hT_r, cT_r, *want[:6]), "hs hT cT dx dh0 dc0 dWx dWh db".split(),
                           strict=True):  # fmt: skip
        assert_close(a, b_, 1e-11, what)


def test_lstmp_state_mask_acts_only_on_the_recurrent_product():
    p, _, rng = layer_inputs(0, 3, 2, 4, 5)
    plain = lstmp_forward(**p)
    ones = lstmp_forward(**p, state_mask=np.ones((2, 5)))
    for a, b_ in zip(plain[:3], ones[:3], strict=True):
        np.testing.assert_array_equal(a, b_)  # m = 1: exactly the layer without dropout
    # m = 0: h_{t-1} never reaches the gates, so Wh does not matter at all, and the state
    # carried on (hT) is the undropped h_T, not zero.
    zeros = np.zeros((3, 2, 5))
    hs0, hT0, cT0, _ = lstmp_forward(**p, state_mask=zeros)
    q = dict(p, Wh=rng.standard_normal(p["Wh"].shape))
    hs1, hT1, cT1, _ = lstmp_forward(**q, state_mask=zeros)
    np.testing.assert_array_equal(hs0, hs1)
    np.testing.assert_array_equal(hT0, hs0[-1])
    assert np.abs(hT0).min() > 0
    assert not np.allclose(lstmp_forward(**q)[0], hs1)  # without the mask Wh matters


# ------------------------------------------------------------------------ the model


MODEL_CASES = [(cell, site) for cell in ("lstm", "gru", "rnn") for site in SITES
               if not (cell != "lstm" and site == "state")]  # fmt: skip


def gru_safe(dropout, cell):
    """The dropout without its state site (D4) for the cells that refuse it (GRU, RNN)."""
    return Dropout(**{**dropout.to_dict(), "state_keep_prob": 1.0}) if cell != "lstm" else dropout


@pytest.mark.parametrize("mode", VARIATIONAL, ids=VAR_IDS)
@pytest.mark.parametrize("cell,site", MODEL_CASES, ids=[f"{c}-{s}" for c, s in MODEL_CASES])
def test_model_gradcheck_each_site(seed, cell, site, mode, check_grads):
    model = random_model(cell, 2, seed)
    dropout = with_mode(gru_safe(SITES[site], cell), mode)
    x, y = random_batch(seed)
    state = random_state(model, seed)
    masks = model.draw_masks(T, B, dropout, np.random.default_rng(400 + seed))
    assert isinstance(masks, dict) and any(m is not None for m in masks.values())
    loss, grads, _ = model.loss_and_grads(x, y, state, dropout, masks=masks)
    grads = {k: g.copy() for k, g in grads.items()}
    assert model.loss(x, y, state, dropout, masks=masks)[0] == pytest.approx(loss, rel=1e-13)

    def f():
        return model.loss(x, y, state, dropout, masks=masks)[0]

    check_grads(f"model dropout ({cell}, {site})", f, model.params, grads)


@pytest.mark.parametrize("mode", VARIATIONAL, ids=VAR_IDS)
@pytest.mark.parametrize("case", ["T1B1", "lengths"])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_model_gradcheck_all_sites_small_and_padded(seed, cell, case, mode, check_grads):
    model = random_model(cell, 2, seed)
    dropout = with_mode(gru_safe(SITES["all"], cell), mode)
    batch, steps = (1, 1) if case == "T1B1" else (3, 4)
    x, y = random_batch(seed, batch, steps)
    state = random_state(model, seed, batch)
    lengths = None if case == "T1B1" else np.array([4, 0, 2])
    masks = model.draw_masks(steps, batch, dropout, np.random.default_rng(400 + seed))
    loss, grads, _ = model.loss_and_grads(x, y, state, dropout, masks=masks, lengths=lengths)
    grads = {k: g.copy() for k, g in grads.items()}

    def f():
        return model.loss(x, y, state, dropout, masks=masks, lengths=lengths)[0]

    check_grads(f"model dropout ({cell}, all, {case})", f, model.params, grads)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("mode", VARIATIONAL, ids=VAR_IDS)
@pytest.mark.parametrize("cell,site", MODEL_CASES, ids=[f"{c}-{s}" for c, s in MODEL_CASES])
def test_fast_model_matches_reference(cell, site, mode, dtype):
    """The engine's step with masks drawn from a seeded rng against reference.py with the
    same masks (the reference draws its own in float64: the same draws in the same order)."""
    model = random_model(cell, 2, 3, dtype)
    dropout = with_mode(gru_safe(SITES[site], cell), mode)
    x, y = random_batch(3, 5, 4)
    state = random_state(model, 3, 5)
    lengths = np.array([4, 1, 0, 3, 4])
    fast = model.loss_and_grads(x, y, state, dropout, np.random.default_rng(9), lengths=lengths)
    loss, grads, new_state = fast[0], {k: dense(g).copy() for k, g in fast[1].items()}, fast[2]
    if dtype == np.float64:
        want = ref.loss_and_grads(model, x, y, state, dropout, np.random.default_rng(9),
                                  lengths=lengths)  # fmt: skip
        tol = 1e-10
    else:
        masks = ref.draw_masks(model, 4, 5, dropout, np.random.default_rng(9))
        state64 = [tuple(a.astype(np.float64) for a in s) for s in state]
        want = ref.loss_and_grads(as_float64(model), x, y, state64, dropout, masks=to64(masks),
                                  lengths=lengths)  # fmt: skip
        tol = 2e-4
    assert_close(loss, want[0], tol, "loss")
    for k in model.params:
        assert_close(grads[k], want[1][k], tol, f"d{k}")
    for layer, (s, s_r) in enumerate(zip(new_state, want[2], strict=True)):
        for a, b_ in zip(s, s_r, strict=True):
            assert_close(a, b_, tol, f"state of layer {layer}")
    ev = model.loss(x, y, state, dropout, np.random.default_rng(9), lengths=lengths)[0]
    assert_close(ev, want[0], tol, "loss()")


# ------------------------------------------------------------------------ the masks (D5)


def test_mask_structure_and_keep_rate():
    model = LanguageModel(V, 64, 2, dtype=np.float32, seed=0)
    T_, B_ = 40, 32
    for mode in VARIATIONAL:
        p = 0.7
        dropout = Dropout(0.7, 0.7, 0.7, 0.7, mode)
        masks = model.draw_masks(T_, B_, dropout, np.random.default_rng(1))
        assert list(masks) == ["embedding", "l0.input", "l0.state", "l0.output", "l1.input",
                               "l1.state", "l1.output"]  # fmt: skip
        want_shape = {None: (T_, B_, 64), "sequence": (B_, 64), "batch": (1, 64)}[mode]
        for site, m in masks.items():
            assert m.shape == want_shape and m.dtype == np.float32, site
            # entries are 0 or 1/p exactly (inverted dropout: the scale is in the mask)
            assert set(np.unique(m).tolist()) == {0.0, float(np.float32(1 / p))}, site
            kept = (m > 0).mean()
            assert abs(kept - p) < 4 * math.sqrt(p * (1 - p) / m.size) + 1e-3, (site, kept)
            if mode is None:  # a fresh mask at every step
                assert not all(np.array_equal(m[0], m[t]) for t in range(1, T_)), site
            elif mode == "sequence":  # one per row, the same at every step, rows differ
                assert not all(np.array_equal(m[0], m[b]) for b in range(1, B_)), site
        sites = list(masks.values())
        assert not np.array_equal(sites[0], sites[1])  # each site its own mask


def test_the_forward_pass_draws_what_draw_masks_draws():
    """loss_and_grads with a seeded rng = with the masks draw_masks gives for that seed, for
    every mode (so the variational masks above are the ones the forward pass uses)."""
    model = random_model("lstm", 2, 0)
    x, y = random_batch(0, 4, 5)
    state = random_state(model, 0, 4)
    for mode in VARIATIONAL:
        dropout = with_mode(SITES["all"], mode)
        rng = np.random.default_rng(5)
        a = model.loss_and_grads(x, y, state, dropout, rng)
        after = rng.bit_generator.state
        a = (a[0], {k: np.array(g) for k, g in a[1].items()})
        rng = np.random.default_rng(5)
        masks = model.draw_masks(5, 4, dropout, rng)
        assert rng.bit_generator.state == after  # the same draws, no more, no fewer
        b_ = model.loss_and_grads(x, y, state, dropout, masks=masks)
        assert a[0] == b_[0]
        for k in model.params:
            np.testing.assert_array_equal(a[1][k], b_[1][k], err_msg=k)


def test_variational_masks_are_the_same_at_every_step():
    """With output dropout only and a 'sequence' mask, the top layer's dropped outputs equal
    its undropped outputs times one (B, H) mask at every step; a (T, B, H) mask equal to that
    mask at every step gives the same loss."""
    model = random_model("lstm", 1, 1)
    x, y = random_batch(1, 3, 4)
    state = random_state(model, 1, 3)
    dropout = Dropout(output_keep_prob=0.5, variational="sequence")
    masks = model.draw_masks(4, 3, dropout, np.random.default_rng(2))
    m = masks["l0.output"]
    tiled = dict(masks, **{"l0.output": np.ascontiguousarray(np.broadcast_to(m, (4, 3, H)))})
    assert model.loss(x, y, state, dropout, masks=masks)[0] == pytest.approx(
        model.loss(x, y, state, dropout, masks=tiled)[0], rel=1e-15)  # fmt: skip


# ------------------------------------------------------------------------ defaults unchanged


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_float_keep_prob_is_todays_dropout(cell, dtype):
    """A float keep_prob and Dropout.from_keep_prob give the same bits as each other and as the
    list of L + 1 (T, B, H) masks drawn in the tutorial's order (the only masks the model drew
    before Dropout existed), and consume the generator exactly as far."""
    model = random_model(cell, 2, 0, dtype)
    x, y = random_batch(0, 3, 4)
    state = random_state(model, 0, 3)
    rng = np.random.default_rng(11)
    today = [dropout_mask((4, 3, H), 0.5, rng, dtype) for _ in range(3)]  # embedding, l0, l1
    after = rng.bit_generator.state
    want = model.loss_and_grads(x, y, state, 0.5, masks=today)
    want = (want[0], {k: np.array(g) for k, g in want[1].items()}, want[2])
    for keep in (0.5, Dropout.from_keep_prob(0.5)):
        rng = np.random.default_rng(11)
        got = model.loss_and_grads(x, y, state, keep, rng)
        assert rng.bit_generator.state == after
        assert got[0] == want[0]
        for k in model.params:
            np.testing.assert_array_equal(got[1][k], want[1][k], err_msg=k)
        for s, s_w in zip(got[2], want[2], strict=True):
            for a, b_ in zip(s, s_w, strict=True):
                np.testing.assert_array_equal(a, b_)
    # The float's draw_masks is still the list of D1, the same masks.
    listed = model.draw_masks(4, 3, 0.5, np.random.default_rng(11))
    assert isinstance(listed, list)
    for a, b_ in zip(listed, today, strict=True):
        np.testing.assert_array_equal(a, b_)
    if dtype == np.float64:  # and the reference with those masks agrees
        r = ref.loss_and_grads(model, x, y, state, 0.5, masks=today)
        assert r[0] == pytest.approx(want[0], rel=1e-12)


def test_no_dropout_draws_nothing_and_configs_mean_what_they_meant():
    model = random_model("lstm", 1, 0)
    x, y = random_batch(0)
    state = random_state(model, 0)
    rng = np.random.default_rng(3)
    before = rng.bit_generator.state
    a = model.loss(x, y, state, Dropout(), rng)[0]
    assert rng.bit_generator.state == before
    assert a == model.loss(x, y, state)[0]
    assert model.draw_masks(T, B, Dropout(), rng) is None
    assert SmallConfig().dropout() == Dropout.from_keep_prob(1.0) == Dropout()
    assert MediumConfig().dropout() == Dropout.from_keep_prob(0.5)
    c = MediumConfig().replace(state_keep_prob=0.8, input_keep_prob=0.9, variational="batch")
    assert c.validate().dropout() == Dropout(0.5, 0.9, 0.5, 0.8, "batch")
    assert c.replace(output_keep_prob=0.7).dropout().output_keep_prob == 0.7


# ------------------------------------------------------------------------ split batches


def test_slice_rows_keeps_a_batch_mask_whole():
    masks = {"a": np.arange(24.0).reshape(2, 3, 4), "b": np.arange(12.0).reshape(3, 4),
             "c": np.arange(4.0).reshape(1, 4), "d": None}  # fmt: skip
    part = slice_rows(masks, 1, 3, 3)
    np.testing.assert_array_equal(part["a"], masks["a"][:, 1:3])
    np.testing.assert_array_equal(part["b"], masks["b"][1:3])
    assert part["c"] is masks["c"] and part["d"] is None
    assert slice_rows(None, 0, 1, 3) is None
    listed = slice_rows([masks["a"], None], 0, 2, 3)
    assert isinstance(listed, list) and listed[0].shape == (2, 2, 4) and listed[1] is None


@pytest.mark.parametrize("mode", VARIATIONAL, ids=VAR_IDS)
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_data_parallel_equals_one_thread(cell, mode):
    model = random_model(cell, 2, 4)
    dropout = with_mode(gru_safe(SITES["all"], cell), mode)
    Bp = 5
    x, y = random_batch(4, Bp, T)
    state = random_state(model, 4, Bp)
    one = model.loss_and_grads(x, y, state, dropout, np.random.default_rng(7),
                               sparse_embedding=True)  # fmt: skip
    one = (one[0], {k: dense(g).copy() for k, g in one[1].items()}, one[2])
    with DataParallel(model, 2) as par:
        two = par.loss_and_grads(x, y, state, dropout, np.random.default_rng(7))
        assert two[0] == pytest.approx(one[0], rel=1e-12)
        for k in model.params:
            np.testing.assert_allclose(dense(two[1][k]), one[1][k], rtol=1e-11, atol=1e-12,
                                       err_msg=k)  # fmt: skip
        for s, s1 in zip(two[2], one[2], strict=True):
            for a, b_ in zip(s, s1, strict=True):
                np.testing.assert_allclose(a, b_, rtol=1e-12, atol=1e-14)


# ------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "kwargs, error, fragment",
    [
        ({"input_keep_prob": 0.0}, ValueError, "input_keep_prob must be in (0, 1]"),
        ({"state_keep_prob": 1.5}, ValueError, "state_keep_prob must be in (0, 1]"),
        ({"output_keep_prob": float("nan")}, ValueError, "output_keep_prob must be in"),
        ({"embedding_keep_prob": -0.5}, ValueError, "embedding_keep_prob must be in"),
        ({"embedding_keep_prob": True}, TypeError, "embedding_keep_prob must be a number"),
        ({"input_keep_prob": "0.5"}, TypeError, "input_keep_prob must be a number"),
        ({"variational": "time"}, ValueError, "variational must be None, 'sequence' or"),
        ({"variational": "Sequence"}, ValueError, "variational must be"),
    ],
)
def test_bad_dropout_spec(kwargs, error, fragment):
    with pytest.raises(error, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        Dropout(**kwargs)


@pytest.mark.parametrize("keep", [0.0, 1.5, float("nan"), -1.0])
def test_bad_float_keep_prob_raises_before_any_kernel(keep, no_kernels):
    model = random_model("lstm", 1, 0)
    x, y = random_batch(0)
    with pytest.raises(ValueError, match="keep_prob"):
        model.loss_and_grads(x, y, random_state(model, 0), keep, np.random.default_rng(0))
    with pytest.raises(ValueError, match="keep_prob"):
        Dropout.from_keep_prob(keep)


def test_state_dropout_with_a_gru_is_refused_before_any_kernel(no_kernels):
    model = random_model("gru", 2, 0)
    x, y = random_batch(0)
    state = random_state(model, 0)
    with pytest.raises(ValueError, match="state_keep_prob=0.5 < 1.*cell='gru'"):
        model.loss_and_grads(x, y, state, Dropout(state_keep_prob=0.5), np.random.default_rng(0))
    with pytest.raises(ValueError, match="state_keep_prob"):
        model.draw_masks(T, B, Dropout(state_keep_prob=0.5), np.random.default_rng(0))
    with pytest.raises(ValueError, match="state mask.*cell='gru'"):
        model.loss(x, y, state, masks={"l0.state": np.ones((B, H))})
    with pytest.raises(ValueError, match="state_keep_prob"):
        train(Config(state_keep_prob=0.5), None, "unused", cell="gru")


def test_bad_fixed_masks_are_refused_before_any_kernel(no_kernels):
    model = random_model("lstm", 2, 0)
    x, y = random_batch(0)
    state = random_state(model, 0)
    with pytest.raises(ValueError, match="unknown site 'l2.input'"):
        model.loss(x, y, state, masks={"l2.input": np.ones((B, H))})
    with pytest.raises(ValueError, match=r"masks\['l0.state'\] must be an array of shape"):
        model.loss(x, y, state, masks={"l0.state": np.ones((T, H))})
    with pytest.raises(TypeError, match=r"masks\['l1.input'\] must be float64"):
        model.loss(x, y, state, masks={"l1.input": np.ones((1, H), np.float32)})
    with pytest.raises(ValueError, match="NaN"):
        model.loss(x, y, state, masks={"embedding": np.full((B, H), np.nan)})
    with pytest.raises(ValueError, match="masks must hold 3 entries"):
        model.loss(x, y, state, masks=[None])
    p, _, _ = layer_inputs(0, 3, 2, 4, 5)
    with pytest.raises(ValueError, match="state_mask must have shape"):
        lstmp_forward(**p, state_mask=np.ones((3, 5)))
    with pytest.raises(TypeError, match="state_mask"):
        lstmp_forward(**p, state_mask=np.ones((2, 5), np.float32))


@pytest.mark.parametrize(
    "field, value, fragment",
    [
        ("state_keep_prob", 0.0, "state_keep_prob must be a number in (0, 1]"),
        ("input_keep_prob", 1.5, "input_keep_prob must be a number in (0, 1]"),
        ("output_keep_prob", float("nan"), "output_keep_prob must be a number"),
        ("embedding_keep_prob", True, "embedding_keep_prob must be a number"),
        ("variational", "gal", "variational must be None, 'sequence' or 'batch'"),
    ],
)
def test_config_validate_names_the_field(field, value, fragment):
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        Config(**{field: value}).validate()


# ------------------------------------------------------------------------ the CLI

REPO = Path(__file__).resolve().parents[1]
PTB_DIR = Path(os.environ.get("NUMLSTM_PTB_DIR", REPO.parent / "shared" / "data" / "ptb"))
needs_ptb = pytest.mark.skipif(
    not (PTB_DIR / "ptb.train.txt").exists(), reason=f"real PTB files not found in {PTB_DIR}"
)
TRAIN = ["train", "--config", "test", "--data-dir", str(PTB_DIR), "--progress", "none",
         "--limit-tokens", "3000", "--hidden_size", "8"]  # fmt: skip


@needs_ptb
def test_cli_trains_with_variational_state_dropout_and_resumes_only_with_it(capsys, tmp_path):
    from numlstm.io.saving import load_model

    run = tmp_path / "run"
    flags = ["--variational", "sequence", "--state-keep-prob", "0.8", "--keep-prob", "0.9",
             "--input-keep-prob", "0.9"]  # fmt: skip
    assert cli.main([*TRAIN, "--out", str(run), *flags]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "variational='sequence'" in out and "state_keep_prob=0.8" in out
    _, _, meta = load_model(run / "checkpoint.npz")
    training = meta["training"]
    assert training["config"]["variational"] == "sequence"
    assert training["config"]["state_keep_prob"] == 0.8
    assert training["dropout"] == Dropout(0.9, 0.9, 0.9, 0.8, "sequence").to_dict()
    # --resume with other dropout settings is refused, naming the field
    code = cli.main([*TRAIN, "--out", str(run), "--resume", "--max_max_epoch", "2",
                     "--variational", "sequence", "--keep-prob", "0.9",
                     "--input-keep-prob", "0.9"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "state_keep_prob: 0.8 -> None" in err, err
    # ... and accepted with the same ones
    assert cli.main([*TRAIN, "--out", str(run), "--resume", "--max_max_epoch", "2",
                     *flags]) == 0  # fmt: skip
    assert "Epoch: 2 Valid Perplexity" in capsys.readouterr().out
