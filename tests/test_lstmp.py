"""Tests for numlstm.lstmp (peepholes, cell clip, projection): gradient checks of every option
alone and together (with clips that bite), the fast path against numlstm.reference, the
options-off layer against lstm_forward, the zero gradient of a clip, bad input."""

from __future__ import annotations

import numpy as np
import pytest

import numlstm
from numlstm import lstmp_backward, lstmp_forward
from numlstm import reference as ref

# (T, B, D, H, P): T = 1 and B = 1 included; D != H; P < H, P > H and P = H.
SHAPES = [(3, 2, 4, 5, 3), (1, 1, 3, 2, 4), (4, 3, 2, 3, 3), (3, 6, 4, 5, 2)]
SHAPE_IDS = [f"T{t}B{b}D{d}H{h}P{p}" for t, b, d, h, p in SHAPES]
# Which options are on: peepholes, cell clip, projection, projection clip.
OPTIONS = {
    "plain": (),
    "peep": ("peep",),
    "cellclip": ("cell_clip",),
    "proj": ("proj",),
    "projclip": ("proj", "proj_clip"),
    "peep_cellclip": ("peep", "cell_clip"),
    "all": ("peep", "cell_clip", "proj", "proj_clip"),
}
MARGIN = 2e-3  # every clipped value stays this far from its bound (central differences)
TOL = {np.float64: 1e-11, np.float32: 2e-5}


def make_inputs(seed, T, B, D, H, P, on=(), dtype=np.float64, scale=0.7):
    """Arrays of lstmp_forward (h0 and Wh P wide only when projecting); scale 0.7 and a cell
    start c0 of scale 1.5 make |c| large enough for a clip to bite."""
    rng = np.random.default_rng(seed)
    P = P if "proj" in on else H

    def r(*shape, s=scale):
        return (s * rng.standard_normal(shape)).astype(dtype)

    p = {"x": r(T, B, D), "h0": r(B, P), "c0": r(B, H, s=1.5),
         "Wx": r(D, 4 * H), "Wh": r(P, 4 * H), "b": r(4 * H)}  # fmt: skip
    if "peep" in on:
        p["peepholes"] = r(3, H)
    if "proj" in on:
        p["W_proj"] = r(H, P, s=1.0)
    return p


def pick_clips(p, on, forget_bias=0.0, lengths=None):
    """Bounds that clip some values and leave others, none within MARGIN of its bound.

    Tried from a list of quantiles of the unclipped magnitudes; each try reruns the forward
    pass, since a clip changes every later step."""
    kw = {"forget_bias": forget_bias, "lengths": lengths}
    if "cell_clip" not in on and "proj_clip" not in on:
        return {}
    _, _, _, cache = lstmp_forward(**p, **kw)
    cells = np.abs(cache.cu).ravel()  # every step's cell, padding steps included
    for q in (0.6, 0.5, 0.7, 0.55, 0.65, 0.45, 0.75, 0.4, 0.8):
        clips = {}
        if "cell_clip" in on:
            clips["cell_clip"] = float(np.round(np.quantile(cells, q), 3))
        if "proj_clip" in on:  # from the projections under this cell clip
            _, _, _, cache = lstmp_forward(**p, **kw, **clips)
            outs = np.abs(cache.m @ p["W_proj"]).ravel()
            clips["proj_clip"] = float(np.round(np.quantile(outs, q), 3))
        _, _, _, cache = lstmp_forward(**p, **kw, **clips)
        ok = True
        if "cell_clip" in on:
            d = np.abs(cache.cu) - clips["cell_clip"]
            ok &= bool(np.abs(d).min() > MARGIN and (d > 0).any() and (d < 0).any())
        if "proj_clip" in on:
            d = np.abs(cache.hu) - clips["proj_clip"]
            ok &= bool(np.abs(d).min() > MARGIN and (d > 0).any() and (d < 0).any())
        if ok:
            return clips
    raise AssertionError("no clip bound away from every value; change the test inputs")


def make_upstream(seed, T, B, P, H, dtype=np.float64):
    rng = np.random.default_rng(1000 + seed)
    return tuple(rng.standard_normal(s).astype(dtype) for s in ((T, B, P), (B, P), (B, H)))


def grad_names(p):
    """The names of lstmp_backward's outputs, in order."""
    return ["x", "h0", "c0", "Wx", "Wh", "b", "peepholes", "W_proj"]


def run_gradcheck(seed, shape, on, check_grads, forget_bias=0.0, lengths=None):
    T, B, D, H, P = shape
    p = make_inputs(seed, T, B, D, H, P, on)
    clips = pick_clips(p, on, forget_bias, lengths)
    kw = {"forget_bias": forget_bias, "lengths": lengths, **clips}
    P = p["h0"].shape[1]
    R, RT, RC = make_upstream(seed, T, B, P, H)

    def loss():
        hs, hT, cT, _ = lstmp_forward(**p, **kw)
        return float(np.sum(hs * R) + np.sum(hT * RT) + np.sum(cT * RC))

    hs, _, _, cache = lstmp_forward(**p, **kw)
    out = lstmp_backward(R, RT, RC, cache)
    grads = dict(zip(grad_names(p), out, strict=True))
    assert (grads["peepholes"] is None) == ("peep" not in on)
    assert (grads["W_proj"] is None) == ("proj" not in on)
    grads = {k: v for k, v in grads.items() if v is not None}
    assert set(grads) == set(p)
    if "cell_clip" in on:
        assert np.abs(cache.c[1:]).max() <= clips["cell_clip"]  # c[0] = c0 is not clipped
    if "proj_clip" in on:
        assert np.abs(hs).max() <= clips["proj_clip"]
    return check_grads("lstmp", loss, p, grads)


# ------------------------------------------------------------------------ gradient checks


@pytest.mark.parametrize("on", OPTIONS.values(), ids=OPTIONS.keys())
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_gradcheck(seed, shape, on, check_grads):
    run_gradcheck(seed, shape, on, check_grads, forget_bias=0.0 if seed else 1.0)


@pytest.mark.parametrize("on", [OPTIONS["all"], OPTIONS["peep_cellclip"]], ids=["all", "peep_cc"])
@pytest.mark.parametrize("shape", SHAPES[:3] + [SHAPES[3]], ids=SHAPE_IDS)
def test_gradcheck_lengths(seed, shape, on, check_grads):
    T, B = shape[:2]
    lengths = np.random.default_rng(seed).integers(0, T + 1, size=B)
    lengths[0] = max(1, min(T - 1, lengths[0]))  # at least one real step, and padding if T > 1
    run_gradcheck(seed, shape, on, check_grads, forget_bias=0.5, lengths=lengths)


@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("shape", SHAPES[:3], ids=SHAPE_IDS[:3])
def test_reference_gradcheck(seed, shape, with_lengths, check_grads):
    """numlstm.reference's lstmp_forward/backward (every option on) against central
    differences: the oracle the fast path is compared with is itself checked."""
    T, B, D, H, P = shape
    on = OPTIONS["all"]
    p = make_inputs(seed, T, B, D, H, P, on)
    lengths = None
    if with_lengths:
        lengths = np.random.default_rng(seed).integers(0, T + 1, size=B)
    fb = 0.0 if seed else 1.0  # as test_gradcheck (T1B1H2 at 0.4: two cells 3e-3 apart)
    kw = {"forget_bias": fb, "lengths": lengths, **pick_clips(p, on, fb, lengths)}
    R, RT, RC = make_upstream(seed, T, B, P, H)

    def loss():
        hs, hT, cT, _ = ref.lstmp_forward(**p, **kw)
        return float(np.sum(hs * R) + np.sum(hT * RT) + np.sum(cT * RC))

    _, _, _, caches = ref.lstmp_forward(**p, **kw)
    grads = dict(zip(grad_names(p), ref.lstmp_backward(R, RT, RC, caches), strict=True))
    check_grads("reference lstmp", loss, p, grads)


# ------------------------------------------------------------------------ the clips' gradient


def test_cell_clip_passes_no_gradient():
    """Upstream gradient only on the final cells that were clipped: every gradient is zero
    (dP5), and on the cells that were not clipped it is not."""
    T, B, D, H = 1, 4, 3, 5
    on = ("peep", "cell_clip")
    p = make_inputs(3, T, B, D, H, H, on)
    clips = pick_clips(p, on)
    _, _, _, cache = lstmp_forward(**p, **clips)
    clipped = np.abs(cache.cu[-1]) > clips["cell_clip"]
    assert clipped.any() and (~clipped).any()
    zeros = np.zeros((T, B, H)), np.zeros((B, H))
    for mask, expect_zero in ((clipped, True), (~clipped, False)):
        dcT = np.where(mask, 1.0, 0.0)
        grads = lstmp_backward(*zeros, dcT, cache)
        for name, g in zip(grad_names(p), grads, strict=True):
            if g is None:
                continue
            assert np.all(g == 0) if expect_zero else np.any(g != 0), name


def test_proj_clip_passes_no_gradient():
    """Upstream gradient only on outputs beyond proj_clip: every gradient is zero (dP8)."""
    T, B, D, H, P = 3, 3, 4, 5, 3
    on = ("proj", "proj_clip")
    p = make_inputs(4, T, B, D, H, P, on)
    clips = pick_clips(p, on)
    _, _, _, cache = lstmp_forward(**p, **clips)
    clipped = np.abs(cache.hu) > clips["proj_clip"]
    assert clipped.any() and (~clipped).any()
    for mask, expect_zero in ((clipped, True), (~clipped, False)):
        dhs = np.where(mask, 1.0, 0.0)
        grads = lstmp_backward(dhs, np.zeros((B, P)), np.zeros((B, H)), cache)
        for name, g in zip(grad_names(p), grads, strict=True):
            if g is None:
                continue
            assert np.all(g == 0) if expect_zero else np.any(g != 0), name


# ------------------------------------------------------------------------ fast vs reference


def max_rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("on", OPTIONS.values(), ids=OPTIONS.keys())
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_fast_matches_reference(shape, on, with_lengths, dtype):
    T, B, D, H, P = shape
    p64 = make_inputs(7, T, B, D, H, P, on)
    lengths = None
    if with_lengths:
        lengths = np.random.default_rng(T * B).integers(0, T + 1, size=B)
    clips = pick_clips(p64, on, 0.8, lengths)
    kw = {"forget_bias": 0.8, "lengths": lengths, **clips}
    p = {k: v.astype(dtype) for k, v in p64.items()}
    P = p["h0"].shape[1]
    up = make_upstream(7, T, B, P, H, dtype)
    hs, hT, cT, cache = lstmp_forward(**p, **kw)
    # the reference in float64 on the same (rounded) values: float32 measures the fast
    # path's own rounding
    p_ref = {k: v.astype(np.float64) for k, v in p.items()}
    up_ref = tuple(u.astype(np.float64) for u in up)
    rhs, rhT, rcT, caches = ref.lstmp_forward(**p_ref, **kw)
    for name, a, b in (("hs", hs, rhs), ("hT", hT, rhT), ("cT", cT, rcT)):
        assert a.dtype == dtype, name
        assert max_rel(a, b) <= TOL[dtype], name
    grads = lstmp_backward(*up, cache)
    rgrads = ref.lstmp_backward(*up_ref, caches)
    for name, a, b in zip(grad_names(p), grads, rgrads, strict=True):
        assert (a is None) == (b is None), name
        if a is not None:
            assert a.dtype == dtype, name
            assert max_rel(a, b) <= TOL[dtype], name


def test_lengths_outputs_and_final_state():
    """Past a sequence's end hs is zero and hT, cT are the state after step lengths[b]."""
    T, B, D, H, P = 4, 3, 3, 4, 2
    on = OPTIONS["all"]
    p = make_inputs(5, T, B, D, H, P, on)
    lengths = np.array([4, 2, 0])
    clips = pick_clips(p, on, lengths=lengths)
    hs, hT, cT, _ = lstmp_forward(**p, **clips, lengths=lengths)
    full, _, _, cache = lstmp_forward(**p, **clips)
    for b, n in enumerate(lengths):
        assert np.all(hs[n:, b] == 0)
        np.testing.assert_array_equal(hs[:n, b], full[:n, b])
        np.testing.assert_array_equal(hT[b], cache.h[n, b])
        np.testing.assert_array_equal(cT[b], cache.c[n, b])


# ------------------------------------------------------------------------ options off = LSTM


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_options_off_is_lstm(shape, dtype):
    """Every option off, the numbers are lstm_forward's/lstm_backward's: the same kernel math
    with exact zeros added and an infinite clip, so equal bit for bit (allclose at 1e-12 when
    lstm_forward takes its Numba time loop, which sums in another order)."""
    T, B, D, H, _ = shape
    p = make_inputs(11, T, B, D, H, H, (), dtype)
    lengths = np.arange(B) % (T + 1)
    for kw in ({"forget_bias": 0.0}, {"forget_bias": 1.0, "lengths": lengths}):
        out = lstmp_forward(**p, **kw)
        lout = numlstm.lstm_forward(**p, **kw)
        up = make_upstream(11, T, B, H, H, dtype)
        grads = lstmp_backward(*up, out[3])
        lgrads = numlstm.lstm_backward(*up, lout[3])
        assert grads[6] is None and grads[7] is None
        tol = 1e-12 if dtype == np.float64 else 1e-5
        for a, b in zip(
            list(out[:3]) + list(grads[:6]), list(lout[:3]) + list(lgrads), strict=True
        ):
            np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


def test_options_off_is_lstm_exactly():
    """Small batches (the LSTM's Python loop of BLAS calls): bit for bit."""
    p = make_inputs(2, 3, 2, 4, 5, 5, ())
    out = lstmp_forward(**p, forget_bias=0.3)
    lout = numlstm.lstm_forward(**p, forget_bias=0.3)
    for a, b in zip(out[:3], lout[:3], strict=True):
        np.testing.assert_array_equal(a, b)
    up = make_upstream(2, 3, 2, 5, 5)
    grads = lstmp_backward(*up, out[3])
    lgrads = numlstm.lstm_backward(*up, lout[3])
    for a, b in zip(grads[:6], lgrads, strict=True):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------ bad input

T0, B0, D0, H0, P0 = 3, 2, 4, 5, 3


def good(on=("peep", "proj")):
    return make_inputs(0, T0, B0, D0, H0, P0, on)


BAD = [
    # (description, changes to the arguments, error, text in the message)
    ("peepholes shape", {"peepholes": np.zeros((4, H0))}, ValueError, "peepholes"),
    ("peepholes width", {"peepholes": np.zeros((3, H0 + 1))}, ValueError, "peepholes"),
    ("peepholes 1-D", {"peepholes": np.zeros(3 * H0)}, ValueError, "peepholes"),
    ("peepholes dtype", {"peepholes": np.zeros((3, H0), np.float32)}, TypeError, "peepholes"),
    ("peepholes int", {"peepholes": np.zeros((3, H0), np.int64)}, TypeError, "peepholes"),
    ("peepholes list", {"peepholes": [[0.0] * H0] * 3}, TypeError, "peepholes"),
    ("peepholes nan", {"peepholes": np.full((3, H0), np.nan)}, ValueError, "peepholes"),
    ("W_proj rows", {"W_proj": np.zeros((H0 + 1, P0))}, ValueError, "W_proj"),
    ("W_proj zero width", {"W_proj": np.zeros((H0, 0))}, ValueError, "W_proj"),
    ("W_proj dtype", {"W_proj": np.zeros((H0, P0), np.float32)}, TypeError, "W_proj"),
    ("W_proj 3-D", {"W_proj": np.zeros((H0, P0, 1))}, ValueError, "W_proj"),
    ("W_proj inf", {"W_proj": np.full((H0, P0), np.inf)}, ValueError, "W_proj"),
    ("h0 width H with projection", {"h0": np.zeros((B0, H0))}, ValueError, "h0"),
    ("Wh rows H with projection", {"Wh": np.zeros((H0, 4 * H0))}, ValueError, "Wh"),
    ("cell_clip zero", {"cell_clip": 0.0}, ValueError, "cell_clip"),
    ("cell_clip negative", {"cell_clip": -1.0}, ValueError, "cell_clip"),
    ("cell_clip inf", {"cell_clip": np.inf}, ValueError, "cell_clip"),
    ("cell_clip nan", {"cell_clip": np.nan}, ValueError, "cell_clip"),
    ("cell_clip string", {"cell_clip": "3"}, TypeError, "cell_clip"),
    ("cell_clip bool", {"cell_clip": True}, TypeError, "cell_clip"),
    ("cell_clip array", {"cell_clip": np.ones(2)}, TypeError, "cell_clip"),
    ("proj_clip zero", {"proj_clip": 0}, ValueError, "proj_clip"),
    ("proj_clip negative", {"proj_clip": -0.5}, ValueError, "proj_clip"),
    ("proj_clip inf", {"proj_clip": float("inf")}, ValueError, "proj_clip"),
    ("proj_clip nan", {"proj_clip": float("nan")}, ValueError, "proj_clip"),
    (
        "proj_clip without W_proj",
        {"W_proj": None, "h0": np.zeros((B0, H0)), "Wh": np.zeros((H0, 4 * H0)), "proj_clip": 1.0},
        ValueError,
        "proj_clip",
    ),  # fmt: skip
    ("forget_bias nan", {"forget_bias": float("nan")}, ValueError, "forget_bias"),
    ("forget_bias string", {"forget_bias": "1"}, TypeError, "forget_bias"),
    ("c0 width", {"c0": np.zeros((B0, H0 + 1))}, ValueError, "W_proj"),
    ("lengths too long", {"lengths": np.array([T0 + 1, 1])}, ValueError, "lengths"),
    ("lengths float", {"lengths": np.array([1.0, 2.0])}, TypeError, "lengths"),
]


ARRAYS = ("x", "h0", "c0", "Wx", "Wh", "b", "peepholes", "W_proj")


@pytest.mark.usefixtures("no_kernels")
@pytest.mark.parametrize("change,error,text", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input(change, error, text):
    p, kw = good(), {}
    for name, value in change.items():
        if name not in ARRAYS:
            kw[name] = value
        elif value is None:
            del p[name]
        else:
            p[name] = value
    with pytest.raises(error, match=text):
        lstmp_forward(**p, **kw)


@pytest.fixture
def cache_and_upstream():
    p = good(OPTIONS["all"])
    _, _, _, cache = lstmp_forward(**p, cell_clip=1.0, proj_clip=1.0)
    return cache, make_upstream(0, T0, B0, P0, H0)


@pytest.mark.parametrize(
    "index,name,shape",
    [(0, "dhs", (T0, B0, H0)), (1, "dhT", (B0, H0)), (2, "dcT", (B0, P0))],
)
def test_upstream_shapes(cache_and_upstream, index, name, shape, no_kernels):
    cache, up = cache_and_upstream
    up = list(up)
    up[index] = np.zeros(shape)
    with pytest.raises(ValueError, match=name):
        lstmp_backward(*up, cache)


def test_wrong_cache(cache_and_upstream, monkeypatch):
    _, up = cache_and_upstream
    lstm_cache = numlstm.lstm_forward(**good(()))[3]
    monkeypatch.setattr(numlstm.kernels, "lstmp_cell_backward", None)  # not reached
    with pytest.raises(TypeError, match="LSTMPCache"):
        lstmp_backward(*up, lstm_cache)
